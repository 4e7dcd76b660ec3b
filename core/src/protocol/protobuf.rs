//! Protocol Buffers for the `actioncable-v1-protobuf` and `actioncable-v1-ext-protobuf` sub-protocols, with
//! AnyCable's `action_cable` schema (docs/protocol.md has it whole): clients send `Message`; the server answers
//! with `Message` on the plain protocol and `Reply` on the extended one. The free-form `message` field holds a
//! MessagePack value. Pure functions; no I/O.

use std::collections::HashMap;

use bytes::Bytes;
use prost::Message as _;
use serde_json::{Map, Value};

use super::msgpack;

/// `action_cable.Type`: what a server frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Type {
    NoType = 0,
    Welcome = 1,
    Disconnect = 2,
    Ping = 3,
    ConfirmSubscription = 4,
    RejectSubscription = 5,
    ConfirmHistory = 6,
    RejectHistory = 7,
}

impl Type {
    const NAMES: [(Self, &'static str); 8] = [
        (Self::NoType, "no_type"),
        (Self::Welcome, "welcome"),
        (Self::Disconnect, "disconnect"),
        (Self::Ping, "ping"),
        (Self::ConfirmSubscription, "confirm_subscription"),
        (Self::RejectSubscription, "reject_subscription"),
        (Self::ConfirmHistory, "confirm_history"),
        (Self::RejectHistory, "reject_history"),
    ];

    /// The type named by a JSON frame's `type`; a name the schema does not have is `no_type`.
    pub fn from_name(name: &str) -> Self {
        Self::NAMES.iter().find(|(_, n)| *n == name).map_or(Self::NoType, |(t, _)| *t)
    }

    /// The type's name in the schema, which is its `type` in the JSON protocol.
    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize].1
    }
}

/// `action_cable.Command`: what a client asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Command {
    UnknownCommand = 0,
    Subscribe = 1,
    Unsubscribe = 2,
    Message = 3,
    History = 4,
    Pong = 5,
}

impl Command {
    const NAMES: [(Self, &'static str); 5] = [
        (Self::Subscribe, "subscribe"),
        (Self::Unsubscribe, "unsubscribe"),
        (Self::Message, "message"),
        (Self::History, "history"),
        (Self::Pong, "pong"),
    ];

    /// The command's name in the JSON protocol (`unknown_command` has none).
    pub fn name(self) -> Option<&'static str> {
        Self::NAMES.iter().find(|(c, _)| *c == self).map(|(_, n)| *n)
    }

    /// The command a JSON command name stands for; `unknown_command` for any other name.
    pub fn from_name(name: &str) -> Self {
        Self::NAMES.iter().find(|(_, n)| *n == name).map_or(Self::UnknownCommand, |(c, _)| *c)
    }
}

/// `action_cable.StreamHistoryRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamHistoryRequest {
    #[prost(string, tag = "2")]
    pub epoch: String,
    #[prost(int64, tag = "3")]
    pub offset: i64,
}

/// `action_cable.HistoryRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HistoryRequest {
    #[prost(int64, tag = "1")]
    pub since: i64,
    #[prost(map = "string, message", tag = "2")]
    pub streams: HashMap<String, StreamHistoryRequest>,
}

/// `action_cable.Message`: every client frame, and the server's frames on the plain protocol.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Message {
    #[prost(enumeration = "Type", tag = "1")]
    pub r#type: i32,
    #[prost(enumeration = "Command", tag = "2")]
    pub command: i32,
    #[prost(string, tag = "3")]
    pub identifier: String,
    /// JSON text, as in the JSON protocol.
    #[prost(string, tag = "4")]
    pub data: String,
    /// A MessagePack value.
    #[prost(bytes = "bytes", tag = "5")]
    pub message: Bytes,
    #[prost(string, tag = "6")]
    pub reason: String,
    #[prost(bool, tag = "7")]
    pub reconnect: bool,
    #[prost(message, optional, tag = "8")]
    pub history: Option<HistoryRequest>,
}

/// `action_cable.Reply`: the server's frames on the extended protocol.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Reply {
    #[prost(enumeration = "Type", tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub identifier: String,
    /// A MessagePack value.
    #[prost(bytes = "bytes", tag = "3")]
    pub message: Bytes,
    #[prost(string, tag = "4")]
    pub reason: String,
    #[prost(bool, tag = "5")]
    pub reconnect: bool,
    #[prost(string, tag = "6")]
    pub stream_id: String,
    #[prost(string, tag = "7")]
    pub epoch: String,
    #[prost(int64, tag = "8")]
    pub offset: i64,
    #[prost(string, tag = "9")]
    pub sid: String,
    #[prost(bool, tag = "10")]
    pub restored: bool,
    #[prost(string, repeated, tag = "11")]
    pub restored_ids: Vec<String>,
}

/// A client `Message` as the JSON object a JSON client would have sent for it; the JSON decoder then applies
/// one set of rules to both.
pub fn command_as_json(bytes: &[u8]) -> Result<Map<String, Value>, String> {
    let message = Message::decode(bytes).map_err(|e| e.to_string())?;
    let mut json = Map::new();
    // An unknown number reads as `unknown_command`, as the schema's zero value does.
    if let Some(name) = Command::try_from(message.command).ok().and_then(Command::name) {
        json.insert("command".into(), name.into());
    }
    if !message.identifier.is_empty() {
        json.insert("identifier".into(), message.identifier.into());
    }
    if !message.data.is_empty() {
        json.insert("data".into(), message.data.into());
    }
    if let Some(history) = message.history {
        let streams: Map<String, Value> = history
            .streams
            .into_iter()
            .map(|(stream, at)| (stream, serde_json::json!({"epoch": at.epoch, "offset": at.offset})))
            .collect();
        json.insert("history".into(), serde_json::json!({"since": history.since, "streams": streams}));
    }
    Ok(json)
}

/// A server frame (a JSON object) as `Message` (plain protocol) or `Reply` (extended).
pub fn encode_frame(frame: &Map<String, Value>, extended: bool) -> Bytes {
    let text = |key: &str| frame.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
    let r#type = Type::from_name(frame.get("type").and_then(Value::as_str).unwrap_or_default()) as i32;
    let message = match frame.get("message") {
        None | Some(Value::Null) => Bytes::new(),
        Some(value) => {
            let mut packed = Vec::new();
            msgpack::write_value(&mut packed, value);
            Bytes::from(packed)
        }
    };
    let reconnect = frame.get("reconnect").and_then(Value::as_bool).unwrap_or(false);
    if !extended {
        let reply = Message {
            r#type,
            identifier: text("identifier"),
            message,
            reason: text("reason"),
            reconnect,
            ..Message::default()
        };
        return Bytes::from(reply.encode_to_vec());
    }
    let reply = Reply {
        r#type,
        identifier: text("identifier"),
        message,
        reason: text("reason"),
        reconnect,
        stream_id: text("stream_id"),
        epoch: text("epoch"),
        offset: frame.get("offset").and_then(Value::as_i64).unwrap_or(0),
        sid: text("sid"),
        restored: frame.get("restored").and_then(Value::as_bool).unwrap_or(false),
        restored_ids: frame
            .get("restored_ids")
            .and_then(Value::as_array)
            .map(|ids| ids.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default(),
    };
    Bytes::from(reply.encode_to_vec())
}

/// A broadcast frame: `identifier` and the packed payload, with the stream position on the extended protocol.
pub fn message_frame(identifier: &str, packed: &Bytes, position: Option<(&str, &str, u64)>) -> Bytes {
    let frame = match position {
        None => {
            Message { identifier: identifier.to_owned(), message: packed.clone(), ..Message::default() }.encode_to_vec()
        }
        Some((stream, epoch, offset)) => Reply {
            identifier: identifier.to_owned(),
            message: packed.clone(),
            stream_id: stream.to_owned(),
            epoch: epoch.to_owned(),
            offset: i64::try_from(offset).unwrap_or(i64::MAX),
            ..Reply::default()
        }
        .encode_to_vec(),
    };
    Bytes::from(frame)
}

/// The stream position of a `Reply` carrying one.
pub fn frame_position(frame: &[u8]) -> Option<(String, String, u64)> {
    let reply = Reply::decode(frame).ok()?;
    if reply.stream_id.is_empty() {
        return None;
    }
    Some((reply.stream_id, reply.epoch, u64::try_from(reply.offset).ok()?))
}
