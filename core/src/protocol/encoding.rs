//! The encodings a client can negotiate (JSON text, MessagePack, Protocol Buffers) and the crossing between
//! them. Everything the server builds is a JSON frame; a client speaking a binary encoding gets each one
//! re-encoded on its way to the socket ([`encode_for`]), except broadcasts, which the hub encodes once per
//! (stream, identifier, encoding) with [`binary_message_frame`] and queues as they are. Binary client frames
//! are read into the JSON object a JSON client would have sent, so one set of command rules applies to all.
//!
//! Frames already in a binary encoding never start with `{` (a MessagePack map starts with 0x80-0x8f or
//! 0xde/0xdf, a Protobuf frame with a field tag below 0x60), which is how the two kinds are told apart.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::{ClientCommand, DecodeError, Protocol, msgpack, protobuf};

/// How a client's frames are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// JSON text frames.
    Json,
    /// MessagePack in binary frames.
    Msgpack,
    /// AnyCable's `action_cable` Protocol Buffers schema in binary frames, `message` fields in MessagePack.
    Protobuf,
}

impl Encoding {
    /// Whether frames travel as binary WebSocket messages.
    pub fn is_binary(self) -> bool {
        self != Self::Json
    }

    /// The encoding's name, as in the sub-protocol and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Msgpack => "msgpack",
            Self::Protobuf => "protobuf",
        }
    }
}

/// Why a server frame could not be put into a client's binary encoding (a handler's transmission that is not
/// a JSON object). The frame is skipped; the connection stays.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("frame is not a JSON object, so it has no {encoding} form: {reason}")]
pub struct EncodeError {
    pub encoding: &'static str,
    pub reason: String,
}

/// Decodes one binary frame from a client speaking `encoding`.
pub fn decode_binary_command(encoding: Encoding, bytes: &[u8]) -> Result<ClientCommand, DecodeError> {
    let command = match encoding {
        Encoding::Json => return Err(DecodeError::UnexpectedBinary),
        Encoding::Msgpack => match msgpack::read_value(bytes) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err(DecodeError::NotMsgpack("a command must be a map".into())),
            Err(error) => return Err(DecodeError::NotMsgpack(error.to_string())),
        },
        Encoding::Protobuf => protobuf::command_as_json(bytes).map_err(DecodeError::NotProtobuf)?,
    };
    super::decode_command(&Value::Object(command).to_string())
}

/// A frame on its way to the socket, in the encoding `protocol` uses: server frames built as JSON (pings,
/// confirmations, disconnects) are re-encoded for binary clients; frames already in the client's encoding (and
/// every frame for a JSON client) pass as they are. Handler transmissions are not JSON objects by construction,
/// so they are encoded when queued ([`encode_json_frame`]), never here.
pub fn encode_for(protocol: Protocol, frame: Bytes) -> Result<Bytes, EncodeError> {
    if !protocol.encoding().is_binary() || frame.first() != Some(&b'{') {
        return Ok(frame);
    }
    encode_json_frame(protocol, &frame)
}

/// JSON text (a handler's transmission, or a frame the server built) in a binary client's encoding; an error
/// when it is not a JSON object. For a JSON client the text is taken as it is.
pub fn encode_json_frame(protocol: Protocol, json: &[u8]) -> Result<Bytes, EncodeError> {
    let encoding = protocol.encoding();
    if !encoding.is_binary() {
        return Ok(Bytes::copy_from_slice(json));
    }
    let object: Map<String, Value> = serde_json::from_slice(json)
        .map_err(|error| EncodeError { encoding: encoding.name(), reason: error.to_string() })?;
    Ok(match encoding {
        Encoding::Protobuf => protobuf::encode_frame(&object, protocol.is_extended()),
        _ => {
            let mut out = Vec::with_capacity(json.len());
            msgpack::write_value(&mut out, &Value::Object(object));
            Bytes::from(out)
        }
    })
}

/// A broadcast frame in a binary encoding: `identifier`, the payload already packed as one MessagePack value
/// ([`msgpack::pack_json`], once per broadcast), and the stream position for extended-protocol clients.
pub fn binary_message_frame(
    encoding: Encoding,
    identifier: &str,
    packed: &Bytes,
    position: Option<(&str, &str, u64)>,
) -> Bytes {
    if encoding == Encoding::Protobuf {
        return protobuf::message_frame(identifier, packed, position);
    }
    let mut out = Vec::with_capacity(identifier.len() + packed.len() + 64);
    msgpack::write_map_len(&mut out, if position.is_some() { 5 } else { 2 });
    msgpack::write_str(&mut out, "identifier");
    msgpack::write_str(&mut out, identifier);
    msgpack::write_str(&mut out, "message");
    out.extend_from_slice(packed);
    if let Some((stream, epoch, offset)) = position {
        msgpack::write_str(&mut out, "stream_id");
        msgpack::write_str(&mut out, stream);
        msgpack::write_str(&mut out, "epoch");
        msgpack::write_str(&mut out, epoch);
        msgpack::write_str(&mut out, "offset");
        msgpack::write_uint(&mut out, offset);
    }
    Bytes::from(out)
}

/// The stream position of a binary broadcast frame (see [`super::frame_position`]).
pub(super) fn binary_frame_position(frame: &[u8]) -> Option<(String, String, u64)> {
    match frame.first()? {
        0x80..=0x8f | 0xde | 0xdf => {
            let Ok(Value::Object(map)) = msgpack::read_value(frame) else { return None };
            let text = |key: &str| map.get(key).and_then(Value::as_str).map(str::to_owned);
            Some((text("stream_id")?, text("epoch")?, map.get("offset")?.as_u64()?))
        }
        _ => protobuf::frame_position(frame),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{self, HistoryRequest, StreamCursor};
    use prost::Message as _;
    use serde_json::json;

    const ALL: [Protocol; 6] = [
        Protocol::Json,
        Protocol::ExtJson,
        Protocol::Msgpack,
        Protocol::ExtMsgpack,
        Protocol::Protobuf,
        Protocol::ExtProtobuf,
    ];

    fn packed(value: &Value) -> Bytes {
        let mut out = Vec::new();
        msgpack::write_value(&mut out, value);
        Bytes::from(out)
    }

    /// A binary server frame read back as the JSON object it stands for.
    fn read_back(protocol: Protocol, frame: &[u8]) -> Value {
        match protocol.encoding() {
            Encoding::Json => serde_json::from_slice(frame).unwrap(),
            Encoding::Msgpack => msgpack::read_value(frame).unwrap(),
            Encoding::Protobuf => {
                let message = |bytes: &Bytes| {
                    if bytes.is_empty() { Value::Null } else { msgpack::read_value(bytes).unwrap() }
                };
                if protocol.is_extended() {
                    let r = protobuf::Reply::decode(frame).unwrap();
                    json!({"type": r.r#type, "identifier": r.identifier, "message": message(&r.message),
                        "reason": r.reason, "reconnect": r.reconnect, "stream_id": r.stream_id, "epoch": r.epoch,
                        "offset": r.offset, "sid": r.sid, "restored": r.restored, "restored_ids": r.restored_ids})
                } else {
                    let m = protobuf::Message::decode(frame).unwrap();
                    json!({"type": m.r#type, "identifier": m.identifier, "message": message(&m.message),
                        "reason": m.reason, "reconnect": m.reconnect})
                }
            }
        }
    }

    #[test]
    fn protocols_are_named_by_their_sub_protocols() {
        for protocol in ALL {
            assert_eq!(Protocol::from_name(Some(protocol.name())), protocol);
            assert!(protocol::SUPPORTED_PROTOCOLS.contains(&protocol.name()));
        }
        assert_eq!(Protocol::from_name(Some("actioncable-v1-ext-msgpack")).encoding(), Encoding::Msgpack);
        assert!(Protocol::from_name(Some("actioncable-v1-ext-protobuf")).is_extended());
        assert!(!Protocol::Protobuf.is_extended());
    }

    #[test]
    fn msgpack_commands_decode_like_their_json_form() {
        let subscribe = json!({"command": "subscribe", "identifier": "{\"channel\":\"Chat\"}",
            "history": {"since": 1_700_000_000, "streams": {"chat": {"epoch": "e", "offset": 3}}}});
        assert_eq!(
            decode_binary_command(Encoding::Msgpack, &packed(&subscribe)),
            Ok(ClientCommand::Subscribe {
                identifier: r#"{"channel":"Chat"}"#.into(),
                history: Some(HistoryRequest {
                    since: Some(1_700_000_000),
                    streams: vec![StreamCursor { stream: "chat".into(), epoch: "e".into(), offset: 3 }]
                }),
                presence: None,
            })
        );
        let whisper = json!({"command": "whisper", "identifier": "x", "data": {"typing": true}});
        assert_eq!(
            decode_binary_command(Encoding::Msgpack, &packed(&whisper)),
            Ok(ClientCommand::Whisper { identifier: "x".into(), data: r#"{"typing":true}"#.into() })
        );
        let perform = json!({"command": "message", "identifier": "x", "data": "{\"action\":\"speak\"}"});
        assert_eq!(
            decode_binary_command(Encoding::Msgpack, &packed(&perform)),
            Ok(ClientCommand::Message { identifier: "x".into(), data: r#"{"action":"speak"}"#.into() })
        );
    }

    #[test]
    fn protobuf_commands_decode_like_their_json_form() {
        let subscribe = protobuf::Message {
            command: protobuf::Command::Subscribe as i32,
            identifier: "id".into(),
            history: Some(protobuf::HistoryRequest {
                since: 0,
                streams: [("s".to_owned(), protobuf::StreamHistoryRequest { epoch: "e".into(), offset: 7 })].into(),
            }),
            ..Default::default()
        };
        assert_eq!(
            decode_binary_command(Encoding::Protobuf, &subscribe.encode_to_vec()),
            Ok(ClientCommand::Subscribe {
                identifier: "id".into(),
                history: Some(HistoryRequest {
                    since: None,
                    streams: vec![StreamCursor { stream: "s".into(), epoch: "e".into(), offset: 7 }]
                }),
                presence: None,
            })
        );
        let perform = protobuf::Message {
            command: protobuf::Command::Message as i32,
            identifier: "id".into(),
            data: "{\"action\":\"x\"}".into(),
            ..Default::default()
        };
        assert_eq!(
            decode_binary_command(Encoding::Protobuf, &perform.encode_to_vec()),
            Ok(ClientCommand::Message { identifier: "id".into(), data: "{\"action\":\"x\"}".into() })
        );
        let pong = protobuf::Message { command: protobuf::Command::Pong as i32, ..Default::default() };
        assert_eq!(decode_binary_command(Encoding::Protobuf, &pong.encode_to_vec()), Ok(ClientCommand::Pong));
    }

    #[test]
    fn bad_binary_commands_are_refused_with_the_json_rules() {
        assert!(matches!(decode_binary_command(Encoding::Msgpack, &[0x92, 1]), Err(DecodeError::NotMsgpack(_))));
        assert!(matches!(decode_binary_command(Encoding::Msgpack, &[0x01]), Err(DecodeError::NotMsgpack(_))));
        assert!(matches!(
            decode_binary_command(Encoding::Protobuf, &[0x1a, 0x05, b'a']),
            Err(DecodeError::NotProtobuf(_))
        ));
        assert!(matches!(decode_binary_command(Encoding::Protobuf, &[0xff]), Err(DecodeError::NotProtobuf(_))));
        assert_eq!(decode_binary_command(Encoding::Json, b"{}"), Err(DecodeError::UnexpectedBinary));
        let unknown = protobuf::Message { command: 42, identifier: "x".into(), ..Default::default() };
        assert_eq!(
            decode_binary_command(Encoding::Protobuf, &unknown.encode_to_vec()),
            Err(DecodeError::UnknownCommand(String::new()))
        );
        let no_identifier = protobuf::Message { command: protobuf::Command::Subscribe as i32, ..Default::default() };
        assert_eq!(
            decode_binary_command(Encoding::Protobuf, &no_identifier.encode_to_vec()),
            Err(DecodeError::MissingIdentifier("subscribe"))
        );
        let object_data = json!({"command": "message", "identifier": "x", "data": {"action": "x"}});
        assert_eq!(decode_binary_command(Encoding::Msgpack, &packed(&object_data)), Err(DecodeError::BadData));
        let negative_offset = protobuf::Message {
            command: protobuf::Command::History as i32,
            identifier: "x".into(),
            history: Some(protobuf::HistoryRequest {
                since: 0,
                streams: [("s".to_owned(), protobuf::StreamHistoryRequest { epoch: "e".into(), offset: -1 })].into(),
            }),
            ..Default::default()
        };
        assert!(matches!(
            decode_binary_command(Encoding::Protobuf, &negative_offset.encode_to_vec()),
            Err(DecodeError::BadHistory(_))
        ));
    }

    #[test]
    fn every_server_frame_has_its_binary_form() {
        let id = r#"{"channel":"Chat"}"#;
        for protocol in [Protocol::Msgpack, Protocol::ExtMsgpack] {
            for frame in [
                protocol::welcome_frame("sid1"),
                protocol::ping_frame(1_700_000_000),
                protocol::confirm_frame(id),
                protocol::reject_frame(id),
                protocol::confirm_history_frame(id),
                protocol::reject_history_frame(id),
                protocol::disconnect_frame("unauthorized", false),
                protocol::restored_welcome_frame("sid2", &["a", "b"]),
                protocol::message_frame(protocol::json_string(id).as_bytes(), br#"{"text":"hi","n":[1,2.5]}"#),
            ] {
                let json: Value = serde_json::from_slice(&frame).unwrap();
                assert_eq!(read_back(protocol, &encode_for(protocol, frame).unwrap()), json);
            }
        }
        let v1 = Protocol::Protobuf;
        let welcome = read_back(v1, &encode_for(v1, protocol::welcome_frame("sid1")).unwrap());
        assert_eq!(welcome["type"], json!(protobuf::Type::Welcome as i32));
        let ping = read_back(v1, &encode_for(v1, protocol::ping_frame(17)).unwrap());
        assert_eq!((ping["type"].clone(), ping["message"].clone()), (json!(3), json!(17)));
        let disconnect = read_back(v1, &encode_for(v1, protocol::disconnect_frame("server_restart", true)).unwrap());
        assert_eq!(
            disconnect,
            json!({"type": 2, "identifier": "", "message": null, "reason": "server_restart", "reconnect": true})
        );
        for (frame, kind) in [
            (protocol::confirm_frame(id), protobuf::Type::ConfirmSubscription),
            (protocol::reject_frame(id), protobuf::Type::RejectSubscription),
        ] {
            let read = read_back(v1, &encode_for(v1, frame).unwrap());
            assert_eq!((read["type"].clone(), read["identifier"].clone()), (json!(kind as i32), json!(id)));
        }
        let ext = Protocol::ExtProtobuf;
        let restored = read_back(ext, &encode_for(ext, protocol::restored_welcome_frame("s", &["a"])).unwrap());
        assert_eq!(
            (restored["sid"].clone(), restored["restored"].clone(), restored["restored_ids"].clone()),
            (json!("s"), json!(true), json!(["a"]))
        );
        for (frame, kind) in [
            (protocol::confirm_history_frame(id), protobuf::Type::ConfirmHistory),
            (protocol::reject_history_frame(id), protobuf::Type::RejectHistory),
        ] {
            assert_eq!(read_back(ext, &encode_for(ext, frame).unwrap())["type"], json!(kind as i32));
        }
    }

    #[test]
    fn json_clients_and_frames_already_encoded_pass_unchanged() {
        let frame = protocol::confirm_frame("x");
        assert_eq!(encode_for(Protocol::Json, frame.clone()), Ok(frame.clone()));
        assert_eq!(encode_for(Protocol::ExtJson, frame.clone()), Ok(frame));
        let binary = binary_message_frame(Encoding::Msgpack, "x", &packed(&json!(1)), None);
        assert_eq!(encode_for(Protocol::Msgpack, binary.clone()), Ok(binary));
        assert!(encode_for(Protocol::Msgpack, Bytes::from_static(b"{not json")).is_err());
        assert!(encode_for(Protocol::Protobuf, Bytes::from_static(br#"{"a":"\ud800"}"#)).is_err());
        for text in ["<not json>", "[1,2]", "\"text\"", " "] {
            assert!(encode_json_frame(Protocol::Msgpack, text.as_bytes()).is_err(), "{text}");
            assert!(encode_json_frame(Protocol::ExtProtobuf, text.as_bytes()).is_err(), "{text}");
        }
        let spaced = encode_json_frame(Protocol::Msgpack, b" {\"type\":\"welcome\"} ").unwrap();
        assert_eq!(msgpack::read_value(&spaced), Ok(json!({"type": "welcome"})));
    }

    #[test]
    fn broadcast_frames_match_the_re_encoded_json_frame_and_carry_their_position() {
        let id = r#"{"channel":"Chat"}"#;
        let payload = protocol::broadcast_payload(r#"{"text":"hi"}"#);
        let packed = msgpack::pack_json(&payload);
        for protocol in [Protocol::Msgpack, Protocol::Protobuf] {
            let json = protocol::message_frame(protocol::json_string(id).as_bytes(), &payload);
            assert_eq!(
                read_back(protocol, &binary_message_frame(protocol.encoding(), id, &packed, None)),
                read_back(protocol, &encode_for(protocol, json).unwrap())
            );
        }
        for protocol in [Protocol::ExtMsgpack, Protocol::ExtProtobuf] {
            let json = protocol::positioned_message_frame(
                protocol::json_string(id).as_bytes(),
                &payload,
                protocol::json_string("chat").as_bytes(),
                protocol::json_string("ep").as_bytes(),
                9,
            );
            let binary = binary_message_frame(protocol.encoding(), id, &packed, Some(("chat", "ep", 9)));
            assert_eq!(read_back(protocol, &binary), read_back(protocol, &encode_for(protocol, json).unwrap()));
            assert_eq!(protocol::frame_position(&binary), Some(("chat".into(), "ep".into(), 9)));
            let plain = binary_message_frame(protocol.encoding(), id, &packed, None);
            assert_eq!(protocol::frame_position(&plain), None);
        }
    }
}
