//! The client frame decoder and the frames built from what a client sends: any text the WebSocket layer lets
//! through (it refuses non-UTF-8 text itself) is decoded without a panic, a decoded command encodes back to
//! itself, and the identifier comes back out of every server frame byte for byte.

#![no_main]

use ferrocable::protocol::{
    broadcast_payload, confirm_frame, decode_command, json_string, message_frame, reject_frame,
};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde::de::IgnoredAny;

/// A server frame as a client reads it. `message` is only checked to be JSON: a `\ud800` escape is valid JSON
/// text that serde_json's own `Value` refuses, and clients (JSON.parse) accept it.
#[derive(Deserialize)]
struct ServerFrame {
    identifier: String,
    #[serde(rename = "message")]
    _message: Option<IgnoredAny>,
}

fn identifier_of(frame: &[u8]) -> String {
    match serde_json::from_slice::<ServerFrame>(frame) {
        Ok(parsed) => parsed.identifier,
        Err(error) => panic!("server frame is not JSON ({error}): {}", String::from_utf8_lossy(frame)),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(command) = decode_command(text) {
        assert_eq!(decode_command(&command.encode()).as_ref(), Ok(&command));
    }
    // The same text as a channel identifier and as broadcast data.
    assert_eq!(identifier_of(&confirm_frame(text)), text);
    assert_eq!(identifier_of(&reject_frame(text)), text);
    assert_eq!(identifier_of(&message_frame(json_string(text).as_bytes(), &broadcast_payload(text))), text);
});
