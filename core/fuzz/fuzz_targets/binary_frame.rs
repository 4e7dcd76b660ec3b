//! The MessagePack and Protobuf client frame decoders and the re-encoding of server frames for binary clients:
//! any bytes are decoded or refused without a panic; a MessagePack value the reader accepts is written back to
//! the same value; and any text, as a channel identifier or as broadcast data, comes back out of the binary
//! broadcast frames unchanged.

#![no_main]

use bytes::Bytes;
use ferrocable::protocol::{
    Encoding, Protocol, binary_message_frame, broadcast_payload, confirm_frame, decode_binary_command, encode_for,
    msgpack, protobuf,
};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let _ = decode_binary_command(Encoding::Msgpack, data);
    let _ = decode_binary_command(Encoding::Protobuf, data);
    if let Ok(value) = msgpack::read_value(data) {
        let mut written = Vec::new();
        msgpack::write_value(&mut written, &value);
        assert_eq!(msgpack::read_value(&written).as_ref(), Ok(&value), "a value reads back as itself");
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    let packed = msgpack::pack_json(&broadcast_payload(text));
    let frame = binary_message_frame(Encoding::Msgpack, text, &packed, None);
    let read = msgpack::read_value(&frame).expect("a MessagePack broadcast frame reads back");
    assert_eq!(read["identifier"].as_str(), Some(text));
    let frame = binary_message_frame(Encoding::Protobuf, text, &packed, Some((text, text, 1)));
    let reply = protobuf::Reply::decode(&frame[..]).expect("a Protobuf broadcast frame decodes");
    assert_eq!((reply.identifier.as_str(), reply.stream_id.as_str()), (text, text));
    for protocol in [Protocol::Msgpack, Protocol::ExtProtobuf] {
        encode_for(protocol, confirm_frame(text)).expect("a confirmation has a binary form");
        let _ = encode_for(protocol, Bytes::copy_from_slice(data));
    }
});
