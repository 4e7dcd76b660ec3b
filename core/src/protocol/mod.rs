//! The Action Cable v1 JSON protocol (with AnyCable's `whisper`) and AnyCable's extended protocol
//! (`actioncable-v1-ext-json`: stream positions, history, session recovery, presence in `presence.rs`): decoding
//! client commands and encoding server frames. Both also come in MessagePack and Protocol Buffers (see [`encoding`]).
//!
//! Pure functions over bytes and strings; this module never touches sockets, sessions or the hub.
//! The channel identifier is opaque: it is unescaped from its JSON string once on the way in and
//! escaped once on the way out, never parsed as JSON itself.

use std::borrow::Cow;

pub mod presence;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

pub mod encoding;
pub mod msgpack;
pub mod protobuf;

pub use encoding::{EncodeError, Encoding, binary_message_frame, decode_binary_command, encode_for, encode_json_frame};

/// The sub-protocol every Action Cable client speaks.
pub const ACTIONCABLE_V1_JSON: &str = "actioncable-v1-json";

/// AnyCable's extended protocol: broadcasts carry their stream position, clients ask for history and
/// restore their session.
pub const ACTIONCABLE_V1_EXT_JSON: &str = "actioncable-v1-ext-json";

/// Action Cable in MessagePack.
pub const ACTIONCABLE_V1_MSGPACK: &str = "actioncable-v1-msgpack";
/// The extended protocol in MessagePack.
pub const ACTIONCABLE_V1_EXT_MSGPACK: &str = "actioncable-v1-ext-msgpack";
/// Action Cable in Protocol Buffers (AnyCable's `action_cable` schema).
pub const ACTIONCABLE_V1_PROTOBUF: &str = "actioncable-v1-protobuf";
/// The extended protocol in Protocol Buffers.
pub const ACTIONCABLE_V1_EXT_PROTOBUF: &str = "actioncable-v1-ext-protobuf";

/// Sub-protocols this server can speak.
pub const SUPPORTED_PROTOCOLS: &[&str] = &[
    ACTIONCABLE_V1_JSON,
    ACTIONCABLE_V1_EXT_JSON,
    ACTIONCABLE_V1_MSGPACK,
    ACTIONCABLE_V1_EXT_MSGPACK,
    ACTIONCABLE_V1_PROTOBUF,
    ACTIONCABLE_V1_EXT_PROTOBUF,
];

/// Which protocol a client speaks, and in which encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// Action Cable JSON (also what a client that offered nothing known gets).
    #[default]
    Json,
    /// The extended protocol.
    ExtJson,
    Msgpack,
    ExtMsgpack,
    Protobuf,
    ExtProtobuf,
}

impl Protocol {
    /// The protocol a negotiated sub-protocol name stands for.
    pub fn from_name(name: Option<&str>) -> Self {
        match name {
            Some(ACTIONCABLE_V1_EXT_JSON) => Self::ExtJson,
            Some(ACTIONCABLE_V1_MSGPACK) => Self::Msgpack,
            Some(ACTIONCABLE_V1_EXT_MSGPACK) => Self::ExtMsgpack,
            Some(ACTIONCABLE_V1_PROTOBUF) => Self::Protobuf,
            Some(ACTIONCABLE_V1_EXT_PROTOBUF) => Self::ExtProtobuf,
            _ => Self::Json,
        }
    }

    /// The sub-protocol name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Json => ACTIONCABLE_V1_JSON,
            Self::ExtJson => ACTIONCABLE_V1_EXT_JSON,
            Self::Msgpack => ACTIONCABLE_V1_MSGPACK,
            Self::ExtMsgpack => ACTIONCABLE_V1_EXT_MSGPACK,
            Self::Protobuf => ACTIONCABLE_V1_PROTOBUF,
            Self::ExtProtobuf => ACTIONCABLE_V1_EXT_PROTOBUF,
        }
    }

    /// Whether broadcasts carry stream positions and the client may restore its session.
    pub fn is_extended(self) -> bool {
        matches!(self, Self::ExtJson | Self::ExtMsgpack | Self::ExtProtobuf)
    }

    /// How the client's frames are written.
    pub fn encoding(self) -> Encoding {
        match self {
            Self::Json | Self::ExtJson => Encoding::Json,
            Self::Msgpack | Self::ExtMsgpack => Encoding::Msgpack,
            Self::Protobuf | Self::ExtProtobuf => Encoding::Protobuf,
        }
    }
}

/// What a client asks to be replayed: everything since a time, and/or what follows known positions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HistoryRequest {
    /// Unix seconds; messages registered at or after it (for streams without a position below).
    pub since: Option<u64>,
    /// Positions the client has, per stream.
    pub streams: Vec<StreamCursor>,
}

/// The last position a client received on one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamCursor {
    pub stream: String,
    pub epoch: String,
    pub offset: u64,
}

impl HistoryRequest {
    /// The position the client gave for `stream`, if any.
    pub fn cursor(&self, stream: &str) -> Option<&StreamCursor> {
        self.streams.iter().find(|c| c.stream == stream)
    }

    fn to_json(&self) -> serde_json::Value {
        let streams: serde_json::Map<String, serde_json::Value> = self
            .streams
            .iter()
            .map(|c| (c.stream.clone(), serde_json::json!({"epoch": c.epoch, "offset": c.offset})))
            .collect();
        let mut value = serde_json::json!({ "streams": streams });
        if let Some(since) = self.since {
            value["since"] = since.into();
        }
        value
    }
}

/// One command from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCommand {
    Subscribe {
        identifier: String,
        /// Extended protocol: replay history once subscribed.
        history: Option<HistoryRequest>,
        /// Extended protocol: join the subscription's presence set once subscribed.
        presence: Option<presence::PresenceJoin>,
    },
    Unsubscribe {
        identifier: String,
    },
    /// `perform`: `data` is the client's JSON-encoded string, passed on untouched.
    Message {
        identifier: String,
        data: String,
    },
    /// Extended protocol keep-alive; nothing to answer.
    Pong,
    /// A transient broadcast from the client to the other subscribers of one of its subscriptions: `data` is
    /// the JSON value the client sent, as raw JSON text.
    Whisper {
        identifier: String,
        data: String,
    },
    /// Extended protocol: replay what the client missed on a subscription's streams.
    History {
        identifier: String,
        history: HistoryRequest,
    },
    /// Extended protocol: join the presence set of a subscription's stream.
    Join {
        identifier: String,
        presence: presence::PresenceJoin,
    },
    /// Extended protocol: leave it.
    Leave {
        identifier: String,
    },
    /// Extended protocol: read it (`records`: every member, else the total only).
    Presence {
        identifier: String,
        records: bool,
    },
}

impl ClientCommand {
    /// The text frame a client sends for this command, as Action Cable clients write it: what
    /// [`decode_command`] reads back as this command. A whisper's `data` must be JSON text other than `null`,
    /// as decoded: the decoder takes `"data":null` for no data.
    pub fn encode(&self) -> String {
        match self {
            Self::Subscribe { identifier, history, presence } => {
                let mut frame = format!(r#"{{"command":"subscribe","identifier":{}"#, json_string(identifier));
                if let Some(history) = history {
                    frame.push_str(&format!(r#","history":{}"#, history.to_json()));
                }
                if let Some(presence) = presence {
                    frame.push_str(&format!(r#","presence":{}"#, presence.to_json()));
                }
                frame.push('}');
                frame
            }
            Self::Join { identifier, presence } => format!(
                r#"{{"command":"join","identifier":{},"presence":{}}}"#,
                json_string(identifier),
                presence.to_json()
            ),
            Self::Leave { identifier } => format!(r#"{{"command":"leave","identifier":{}}}"#, json_string(identifier)),
            Self::Presence { identifier, records } => format!(
                r#"{{"command":"presence","identifier":{},"data":{{"return_records":{records}}}}}"#,
                json_string(identifier)
            ),
            Self::History { identifier, history } => format!(
                r#"{{"command":"history","identifier":{},"history":{}}}"#,
                json_string(identifier),
                history.to_json()
            ),
            Self::Unsubscribe { identifier } => {
                format!(r#"{{"command":"unsubscribe","identifier":{}}}"#, json_string(identifier))
            }
            Self::Message { identifier, data } => {
                format!(
                    r#"{{"command":"message","identifier":{},"data":{}}}"#,
                    json_string(identifier),
                    json_string(data)
                )
            }
            Self::Pong => r#"{"command":"pong"}"#.to_owned(),
            Self::Whisper { identifier, data } => {
                format!(r#"{{"command":"whisper","identifier":{},"data":{data}}}"#, json_string(identifier))
            }
        }
    }
}

/// Why a client frame was not understood. Such frames are logged and ignored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("frame is not a JSON command: {0}")]
    NotJson(String),
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    #[error("command {0:?} requires a string identifier")]
    MissingIdentifier(&'static str),
    #[error("message data must be a JSON-encoded string")]
    BadData,
    #[error("whisper requires `data`")]
    MissingWhisperData,
    #[error("malformed history request: {0}")]
    BadHistory(&'static str),
    #[error("frame is not a MessagePack command: {0}")]
    NotMsgpack(String),
    #[error("frame is not a Protobuf command: {0}")]
    NotProtobuf(String),
    #[error("binary frame on a JSON connection")]
    UnexpectedBinary,
    #[error("text frame on a connection that negotiated {0}")]
    UnexpectedText(&'static str),
    #[error("malformed presence: {0}")]
    BadPresence(&'static str),
}

#[derive(Deserialize)]
struct RawCommand<'a> {
    #[serde(borrow)]
    command: Option<&'a RawValue>,
    #[serde(borrow)]
    identifier: Option<&'a RawValue>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    history: Option<&'a RawValue>,
    #[serde(borrow)]
    presence: Option<&'a RawValue>,
}

/// Positions a client may name in one history request; more is not a client of ours.
const MAX_HISTORY_STREAMS: usize = 1024;

/// Reads `{"since": <unix seconds>, "streams": {"<stream>": {"epoch": "<epoch>", "offset": <n>}}}`; both
/// parts are optional, but one must be there. `null` is no request.
fn decode_history(raw: Option<&RawValue>) -> Result<Option<HistoryRequest>, DecodeError> {
    #[derive(Deserialize)]
    struct RawHistory {
        since: Option<serde_json::Value>,
        streams: Option<serde_json::Map<String, serde_json::Value>>,
    }
    let Some(raw) = raw.filter(|r| r.get() != "null") else { return Ok(None) };
    let history: RawHistory =
        serde_json::from_str(raw.get()).map_err(|_| DecodeError::BadHistory("expected an object"))?;
    let since = match history.since {
        None | Some(serde_json::Value::Null) => None,
        // Seconds; a client may send a float, and 0 means "no time given" (as AnyCable reads it).
        Some(serde_json::Value::Number(n)) => {
            match n.as_u64().or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)) {
                Some(0) => None,
                Some(since) => Some(since),
                None => return Err(DecodeError::BadHistory("since must be a non-negative number of seconds")),
            }
        }
        Some(_) => return Err(DecodeError::BadHistory("since must be a number")),
    };
    let mut streams = Vec::new();
    for (stream, position) in history.streams.unwrap_or_default() {
        if streams.len() == MAX_HISTORY_STREAMS {
            return Err(DecodeError::BadHistory("too many streams"));
        }
        let epoch = position.get("epoch").and_then(|e| e.as_str());
        let offset = position.get("offset").and_then(|o| o.as_u64());
        match (epoch, offset) {
            (Some(epoch), Some(offset)) => streams.push(StreamCursor { stream, epoch: epoch.to_owned(), offset }),
            _ => {
                return Err(DecodeError::BadHistory(
                    "each stream needs a string epoch and a non-negative integer offset",
                ));
            }
        }
    }
    if since.is_none() && streams.is_empty() {
        return Ok(None);
    }
    Ok(Some(HistoryRequest { since, streams }))
}

/// A JSON string value as text (`None` for any other value); borrowed when the string has no escapes.
fn as_text(raw: Option<&RawValue>) -> Option<Cow<'_, str>> {
    let json = raw?.get();
    // Valid JSON (the frame parsed) without a backslash: the text between the quotes is the string itself.
    if let Some(inner) = json.strip_prefix('"').and_then(|rest| rest.strip_suffix('"')) {
        if !inner.contains('\\') {
            return Some(Cow::Borrowed(inner));
        }
    }
    serde_json::from_str::<String>(json).ok().map(Cow::Owned)
}

fn as_string(raw: Option<&RawValue>) -> Option<String> {
    as_text(raw).map(Cow::into_owned)
}

/// Decodes one text frame from a client.
pub fn decode_command(text: &str) -> Result<ClientCommand, DecodeError> {
    let raw: RawCommand<'_> = serde_json::from_str(text).map_err(|e| DecodeError::NotJson(e.to_string()))?;
    let command = as_text(raw.command).ok_or_else(|| DecodeError::UnknownCommand(String::new()))?;
    let identifier = |name| as_string(raw.identifier).ok_or(DecodeError::MissingIdentifier(name));
    match &*command {
        "subscribe" => Ok(ClientCommand::Subscribe {
            identifier: identifier("subscribe")?,
            history: decode_history(raw.history)?,
            presence: presence::decode_join(raw.presence)?,
        }),
        "join" => {
            let identifier = identifier("join")?;
            let presence =
                presence::decode_join(raw.presence)?.ok_or(DecodeError::BadPresence("join needs presence"))?;
            Ok(ClientCommand::Join { identifier, presence })
        }
        "leave" => Ok(ClientCommand::Leave { identifier: identifier("leave")? }),
        "presence" => Ok(ClientCommand::Presence {
            identifier: identifier("presence")?,
            records: presence::decode_records(raw.data),
        }),
        "history" => {
            let identifier = identifier("history")?;
            let history = decode_history(raw.history)?.ok_or(DecodeError::BadHistory("nothing requested"))?;
            Ok(ClientCommand::History { identifier, history })
        }
        "unsubscribe" => Ok(ClientCommand::Unsubscribe { identifier: identifier("unsubscribe")? }),
        "message" => {
            let identifier = identifier("message")?;
            let data = match raw.data {
                None => String::new(),
                Some(v) => serde_json::from_str::<String>(v.get()).map_err(|_| DecodeError::BadData)?,
            };
            Ok(ClientCommand::Message { identifier, data })
        }
        "pong" => Ok(ClientCommand::Pong),
        "whisper" => {
            let identifier = identifier("whisper")?;
            let data = raw.data.ok_or(DecodeError::MissingWhisperData)?.get().to_owned();
            Ok(ClientCommand::Whisper { identifier, data })
        }
        _ => Err(DecodeError::UnknownCommand(command.into_owned())),
    }
}

/// `text` as a JSON string literal, quotes included.
pub fn json_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned())
}

/// A broadcast payload turned into the JSON that goes after `"message":` — the data itself when it is valid
/// JSON, otherwise the data as a JSON string. Computed once per broadcast.
pub fn broadcast_payload(data: &str) -> Bytes {
    if serde_json::from_str::<serde::de::IgnoredAny>(data).is_ok() {
        Bytes::copy_from_slice(data.trim().as_bytes())
    } else {
        Bytes::from(json_string(data))
    }
}

/// `{"identifier":<identifier>,"message":<payload>}` from an already escaped identifier and a prepared payload.
pub fn message_frame(escaped_identifier: &[u8], payload: &[u8]) -> Bytes {
    identified_frame(b"{\"identifier\":", escaped_identifier, payload)
}

/// `<head><identifier>,"message":<payload>}` in one buffer: the frames that differ only in what precedes the
/// identifier.
fn identified_frame(head: &[u8], escaped_identifier: &[u8], payload: &[u8]) -> Bytes {
    const MID: &[u8] = b",\"message\":";
    let mut buf = BytesMut::with_capacity(head.len() + escaped_identifier.len() + MID.len() + payload.len() + 1);
    buf.put_slice(head);
    buf.put_slice(escaped_identifier);
    buf.put_slice(MID);
    buf.put_slice(payload);
    buf.put_u8(b'}');
    buf.freeze()
}

/// `{"identifier":...,"message":...,"stream_id":...,"epoch":...,"offset":...}`: a broadcast with its stream
/// position, for extended-protocol clients. `escaped_stream` and `escaped_epoch` are JSON strings.
pub fn positioned_message_frame(
    escaped_identifier: &[u8],
    payload: &[u8],
    escaped_stream: &[u8],
    escaped_epoch: &[u8],
    offset: u64,
) -> Bytes {
    const HEAD: &[u8] = b"{\"identifier\":";
    const MID: &[u8] = b",\"message\":";
    const STREAM: &[u8] = b",\"stream_id\":";
    const EPOCH: &[u8] = b",\"epoch\":";
    const OFFSET: &[u8] = b",\"offset\":";
    let digits = offset.to_string();
    let len = HEAD.len()
        + escaped_identifier.len()
        + MID.len()
        + payload.len()
        + STREAM.len()
        + escaped_stream.len()
        + EPOCH.len()
        + escaped_epoch.len()
        + OFFSET.len()
        + digits.len()
        + 1;
    let mut buf = BytesMut::with_capacity(len);
    buf.put_slice(HEAD);
    buf.put_slice(escaped_identifier);
    buf.put_slice(MID);
    buf.put_slice(payload);
    buf.put_slice(STREAM);
    buf.put_slice(escaped_stream);
    buf.put_slice(EPOCH);
    buf.put_slice(escaped_epoch);
    buf.put_slice(OFFSET);
    buf.put_slice(digits.as_bytes());
    buf.put_u8(b'}');
    buf.freeze()
}

/// The stream position of a frame written by [`positioned_message_frame`] (or [`binary_message_frame`] with a
/// position), read back; `None` for any other frame. Only the catch-up of one connection reads frames back, and
/// only while it lasts.
pub fn frame_position(frame: &[u8]) -> Option<(String, String, u64)> {
    if frame.first() != Some(&b'{') {
        return encoding::binary_frame_position(frame);
    }
    #[derive(Deserialize)]
    struct Positioned {
        stream_id: String,
        epoch: String,
        offset: u64,
    }
    if !frame.starts_with(b"{\"identifier\":") {
        return None;
    }
    let p: Positioned = serde_json::from_slice(frame).ok()?;
    Some((p.stream_id, p.epoch, p.offset))
}

/// A welcome frame written without a session id (Action Cable's own, as a Rails app writes it) with `sid` added:
/// extended-protocol clients need it to restore their session. `None` for any other frame, or a welcome that
/// has a sid already.
pub fn welcome_with_sid(frame: &str, sid: &str) -> Option<String> {
    if !frame.contains("welcome") {
        return None;
    }
    let mut value: serde_json::Map<String, serde_json::Value> = serde_json::from_str(frame).ok()?;
    if value.get("type").and_then(|t| t.as_str()) != Some("welcome") || value.contains_key("sid") {
        return None;
    }
    value.insert("sid".into(), sid.into());
    Some(serde_json::Value::Object(value).to_string())
}

/// `{"type":"welcome","sid":...,"restored":true,"restored_ids":[...]}`: a session restored from the cache.
pub fn restored_welcome_frame(sid: &str, restored_ids: &[&str]) -> Bytes {
    let value = serde_json::json!({"type": "welcome", "sid": sid, "restored": true, "restored_ids": restored_ids});
    Bytes::from(value.to_string())
}

/// `{"type":"confirm_history","identifier":...}`: the history asked for was replayed.
pub fn confirm_history_frame(identifier: &str) -> Bytes {
    Bytes::from(subscription_text(identifier, "confirm_history"))
}

/// `{"type":"reject_history","identifier":...}`: the history asked for cannot be replayed.
pub fn reject_history_frame(identifier: &str) -> Bytes {
    Bytes::from(subscription_text(identifier, "reject_history"))
}

/// `{"type":"welcome","sid":...}`, written by the server itself when it authenticates on its own.
pub fn welcome_frame(sid: &str) -> Bytes {
    Bytes::from(welcome_text(sid))
}

/// [`welcome_frame`] as the text a handler answer carries.
pub fn welcome_text(sid: &str) -> String {
    format!("{{\"type\":\"welcome\",\"sid\":{}}}", json_string(sid))
}

/// `{"type":"ping","message":<timestamp>}`.
pub fn ping_frame(timestamp: u128) -> Bytes {
    Bytes::from(format!("{{\"type\":\"ping\",\"message\":{timestamp}}}"))
}

/// `{"type":"disconnect","reason":...,"reconnect":...}`.
pub fn disconnect_frame(reason: &str, reconnect: bool) -> Bytes {
    Bytes::from(disconnect_text(reason, reconnect))
}

/// [`disconnect_frame`] as the text a handler answer carries.
pub fn disconnect_text(reason: &str, reconnect: bool) -> String {
    format!("{{\"type\":\"disconnect\",\"reason\":{},\"reconnect\":{reconnect}}}", json_string(reason))
}

/// `{"identifier":...,"type":"confirm_subscription"}`.
pub fn confirm_frame(identifier: &str) -> Bytes {
    Bytes::from(confirm_text(identifier))
}

/// [`confirm_frame`] as the text a handler answer carries.
pub fn confirm_text(identifier: &str) -> String {
    subscription_text(identifier, "confirm_subscription")
}

/// `{"identifier":...,"type":"reject_subscription"}`.
pub fn reject_frame(identifier: &str) -> Bytes {
    Bytes::from(reject_text(identifier))
}

/// [`reject_frame`] as the text a handler answer carries.
pub fn reject_text(identifier: &str) -> String {
    subscription_text(identifier, "reject_subscription")
}

/// `{"identifier":<identifier>,"type":"<kind>"}`, the identifier escaped straight into the frame (one buffer).
fn subscription_text(identifier: &str, kind: &str) -> String {
    const HEAD: &[u8] = b"{\"identifier\":";
    const TYPE: &[u8] = b",\"type\":\"";
    // Escaping lengthens the identifier by its quotes and usually a few backslashes.
    let mut frame = Vec::with_capacity(HEAD.len() + identifier.len() + 16 + TYPE.len() + kind.len() + 2);
    frame.extend_from_slice(HEAD);
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut frame, identifier);
    frame.extend_from_slice(TYPE);
    frame.extend_from_slice(kind.as_bytes());
    frame.extend_from_slice(b"\"}");
    // Only UTF-8 went in: the pieces above and serde_json's escaping of a str.
    String::from_utf8(frame).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_subscribe_keeping_the_identifier_bytes() {
        let id = r#"{"channel":"ChatChannel","id":1,"b":  "x"}"#;
        let frame = format!(r#"{{"command":"subscribe","identifier":{}}}"#, json_string(id));
        assert_eq!(
            decode_command(&frame),
            Ok(ClientCommand::Subscribe { identifier: id.to_owned(), history: None, presence: None })
        );
    }

    #[test]
    fn decodes_message_with_and_without_data() {
        let frame = r#"{"command":"message","identifier":"{\"channel\":\"A\"}","data":"{\"action\":\"speak\"}"}"#;
        assert_eq!(
            decode_command(frame),
            Ok(ClientCommand::Message {
                identifier: r#"{"channel":"A"}"#.into(),
                data: r#"{"action":"speak"}"#.into()
            })
        );
        let frame = r#"{"command":"message","identifier":"x"}"#;
        assert_eq!(decode_command(frame), Ok(ClientCommand::Message { identifier: "x".into(), data: String::new() }));
    }

    #[test]
    fn decodes_whisper_keeping_the_data_as_raw_json() {
        let frame =
            r#"{"command":"whisper","identifier":"{\"channel\":\"$pubsub\"}","data":{"event":"typing","n":[1, 2]}}"#;
        assert_eq!(
            decode_command(frame),
            Ok(ClientCommand::Whisper {
                identifier: r#"{"channel":"$pubsub"}"#.into(),
                data: r#"{"event":"typing","n":[1, 2]}"#.into()
            })
        );
        let frame = r#"{"command":"whisper","identifier":"x","data":"just text"}"#;
        assert_eq!(
            decode_command(frame),
            Ok(ClientCommand::Whisper { identifier: "x".into(), data: r#""just text""#.into() })
        );
        assert_eq!(decode_command(r#"{"command":"whisper","identifier":"x"}"#), Err(DecodeError::MissingWhisperData));
        assert_eq!(
            decode_command(r#"{"command":"whisper","identifier":"x","data":null}"#),
            Err(DecodeError::MissingWhisperData),
            "a whisper of null says nothing"
        );
        assert_eq!(
            decode_command(r#"{"command":"whisper","data":{}}"#),
            Err(DecodeError::MissingIdentifier("whisper"))
        );
    }

    #[test]
    fn escaped_commands_decode_like_plain_ones() {
        let plain = decode_command(r#"{"command":"subscribe","identifier":"{\"channel\":\"A\"}"}"#);
        let escaped = decode_command(r#"{"command":"sub\u0073cribe","identifier":"{\"chan\u006eel\":\"A\"}"}"#);
        assert_eq!(
            plain,
            Ok(ClientCommand::Subscribe { identifier: r#"{"channel":"A"}"#.into(), history: None, presence: None })
        );
        assert_eq!(escaped, plain);
        assert_eq!(decode_command(r#"{"command":""}"#), Err(DecodeError::UnknownCommand(String::new())));
        assert_eq!(decode_command(r#"{"command":"da\"nce"}"#), Err(DecodeError::UnknownCommand("da\"nce".into())));
    }

    #[test]
    fn rejects_what_is_not_a_command() {
        assert!(matches!(decode_command("hello"), Err(DecodeError::NotJson(_))));
        assert!(matches!(decode_command("[1,2]"), Err(DecodeError::NotJson(_))));
        assert_eq!(decode_command(r#"{"command":"dance"}"#), Err(DecodeError::UnknownCommand("dance".into())));
        assert_eq!(decode_command(r#"{"identifier":"x"}"#), Err(DecodeError::UnknownCommand(String::new())));
        assert_eq!(
            decode_command(r#"{"command":"subscribe","identifier":{"channel":"A"}}"#),
            Err(DecodeError::MissingIdentifier("subscribe"))
        );
        assert_eq!(
            decode_command(r#"{"command":"message","identifier":"x","data":{"a":1}}"#),
            Err(DecodeError::BadData)
        );
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(decode_command(&deep), Err(DecodeError::NotJson(_))));
    }

    #[test]
    fn decodes_history_in_subscribe_and_in_the_history_command() {
        let frame = r#"{"command":"subscribe","identifier":"x","history":{"since":1700000000,"streams":{}}}"#;
        assert_eq!(
            decode_command(frame),
            Ok(ClientCommand::Subscribe {
                identifier: "x".into(),
                history: Some(HistoryRequest { since: Some(1_700_000_000), streams: vec![] }),
                presence: None,
            })
        );
        let frame = r#"{"command":"history","identifier":"x","history":{"since":1.5e9,"streams":{"chat":{"epoch":"ab","offset":42}}}}"#;
        assert_eq!(
            decode_command(frame),
            Ok(ClientCommand::History {
                identifier: "x".into(),
                history: HistoryRequest {
                    since: Some(1_500_000_000),
                    streams: vec![StreamCursor { stream: "chat".into(), epoch: "ab".into(), offset: 42 }]
                }
            })
        );
        // No history asked for: a plain subscribe.
        for history in ["null", "{}", r#"{"since":0}"#, r#"{"streams":{}}"#] {
            let frame = format!(r#"{{"command":"subscribe","identifier":"x","history":{history}}}"#);
            assert_eq!(
                decode_command(&frame),
                Ok(ClientCommand::Subscribe { identifier: "x".into(), history: None, presence: None })
            );
        }
    }

    #[test]
    fn refuses_malformed_history_requests() {
        for history in [
            r#""yesterday""#,
            "[]",
            r#"{"since":"x"}"#,
            r#"{"since":-5}"#,
            r#"{"streams":[]}"#,
            r#"{"streams":{"s":{"epoch":"e"}}}"#,
            r#"{"streams":{"s":{"epoch":"e","offset":-1}}}"#,
            r#"{"streams":{"s":{"epoch":1,"offset":1}}}"#,
            r#"{"streams":{"s":{"epoch":"e","offset":1e30}}}"#,
            r#"{"streams":{"s":42}}"#,
        ] {
            for command in ["subscribe", "history"] {
                let frame = format!(r#"{{"command":"{command}","identifier":"x","history":{history}}}"#);
                assert!(matches!(decode_command(&frame), Err(DecodeError::BadHistory(_))), "{frame}");
            }
        }
        assert_eq!(
            decode_command(r#"{"command":"history","identifier":"x"}"#),
            Err(DecodeError::BadHistory("nothing requested"))
        );
        let many: Vec<String> =
            (0..=MAX_HISTORY_STREAMS).map(|n| format!(r#""s{n}":{{"epoch":"e","offset":1}}"#)).collect();
        let frame =
            format!(r#"{{"command":"history","identifier":"x","history":{{"streams":{{{}}}}}}}"#, many.join(","));
        assert_eq!(decode_command(&frame), Err(DecodeError::BadHistory("too many streams")));
    }

    #[test]
    fn a_welcome_without_a_sid_gets_one_and_other_frames_are_left_alone() {
        let with = welcome_with_sid(r#"{"type":"welcome"}"#, "abc").unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&with).unwrap(),
            serde_json::json!({"type":"welcome","sid":"abc"})
        );
        assert_eq!(welcome_with_sid(r#"{"type":"welcome","sid":"x"}"#, "abc"), None);
        assert_eq!(welcome_with_sid(r#"{"type":"disconnect","reason":"welcome"}"#, "abc"), None);
        assert_eq!(welcome_with_sid("welcome", "abc"), None);
    }

    #[test]
    fn extended_frames_carry_positions_and_read_back() {
        let id = r#"{"channel":"Chat"}"#;
        let frame = positioned_message_frame(
            json_string(id).as_bytes(),
            &broadcast_payload(r#"{"text":"hi"}"#),
            json_string("chat_1").as_bytes(),
            json_string("ep").as_bytes(),
            44,
        );
        let v: serde_json::Value = serde_json::from_slice(&frame).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"identifier": id, "message": {"text":"hi"}, "stream_id": "chat_1", "epoch": "ep", "offset": 44})
        );
        assert_eq!(frame_position(&frame), Some(("chat_1".into(), "ep".into(), 44)));
        assert_eq!(frame_position(&message_frame(json_string(id).as_bytes(), b"1")), None);
        assert_eq!(frame_position(br#"{"type":"ping","message":1}"#), None);
        let v: serde_json::Value = serde_json::from_slice(&restored_welcome_frame("new", &["a", "b"])).unwrap();
        assert_eq!(v, serde_json::json!({"type":"welcome","sid":"new","restored":true,"restored_ids":["a","b"]}));
        let v: serde_json::Value = serde_json::from_slice(&confirm_history_frame(id)).unwrap();
        assert_eq!(v, serde_json::json!({"identifier": id, "type": "confirm_history"}));
        let v: serde_json::Value = serde_json::from_slice(&reject_history_frame(id)).unwrap();
        assert_eq!(v, serde_json::json!({"identifier": id, "type": "reject_history"}));
    }

    #[test]
    fn broadcast_payload_passes_json_and_quotes_text() {
        assert_eq!(&broadcast_payload(r#"{"text":"hi"}"#)[..], br#"{"text":"hi"}"#);
        assert_eq!(&broadcast_payload("hello")[..], br#""hello""#);
        assert_eq!(&broadcast_payload(r#""already a string""#)[..], br#""already a string""#);
        assert_eq!(&broadcast_payload("42")[..], b"42");
        assert_eq!(&broadcast_payload("{broken")[..], br#""{broken""#);
    }

    #[test]
    fn frames_are_valid_json_with_the_expected_fields() {
        let id = r#"{"channel":"Chat","room":"a\"b"}"#;
        let frame = message_frame(json_string(id).as_bytes(), &broadcast_payload("plain"));
        let v: serde_json::Value = serde_json::from_slice(&frame).unwrap();
        assert_eq!(v["identifier"], id);
        assert_eq!(v["message"], "plain");

        let v: serde_json::Value = serde_json::from_slice(&disconnect_frame("server_restart", true)).unwrap();
        assert_eq!(v, serde_json::json!({"type":"disconnect","reason":"server_restart","reconnect":true}));
        let v: serde_json::Value = serde_json::from_slice(&welcome_frame("abc")).unwrap();
        assert_eq!(v, serde_json::json!({"type":"welcome","sid":"abc"}));
        let v: serde_json::Value = serde_json::from_slice(&confirm_frame(id)).unwrap();
        assert_eq!(v, serde_json::json!({"identifier":id,"type":"confirm_subscription"}));
        let v: serde_json::Value = serde_json::from_slice(&reject_frame(id)).unwrap();
        assert_eq!(v, serde_json::json!({"identifier":id,"type":"reject_subscription"}));
        assert_eq!(welcome_text("abc").as_bytes(), &welcome_frame("abc")[..]);
        assert_eq!(confirm_text(id).as_bytes(), &confirm_frame(id)[..]);
        assert_eq!(reject_text(id).as_bytes(), &reject_frame(id)[..]);
        assert_eq!(disconnect_text("unauthorized", false).as_bytes(), &disconnect_frame("unauthorized", false)[..]);
        assert_eq!(&ping_frame(17)[..], br#"{"type":"ping","message":17}"#);
    }

    #[test]
    fn subscription_frames_are_byte_for_byte_what_clients_have_always_received() {
        for id in [r#"{"channel":"Chat","room":"a\"b"}"#, "plain", "", "tab\tnew\nline é \u{1}"] {
            let quoted = serde_json::to_string(id).unwrap();
            assert_eq!(confirm_text(id), format!(r#"{{"identifier":{quoted},"type":"confirm_subscription"}}"#));
            assert_eq!(reject_text(id), format!(r#"{{"identifier":{quoted},"type":"reject_subscription"}}"#));
        }
    }
}

#[cfg(test)]
mod properties {
    //! Properties of the decoder and the frame encoders over generated input: never a panic, identifiers kept
    //! byte for byte, and every frame the server writes is JSON that says what it was built from.

    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    /// Arbitrary JSON values, nested a few levels.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn history_request() -> impl Strategy<Value = HistoryRequest> {
        let cursor = (any::<String>(), any::<String>(), any::<u64>())
            .prop_map(|(stream, epoch, offset)| StreamCursor { stream, epoch, offset });
        (prop::option::of(1..u64::MAX / 2), prop::collection::vec(cursor, 0..4))
            .prop_map(|(since, mut streams)| {
                // Stream names are keys of an object: one position per stream.
                let mut seen = std::collections::HashSet::new();
                streams.retain(|c| seen.insert(c.stream.clone()));
                streams.sort_by(|a, b| a.stream.cmp(&b.stream));
                HistoryRequest { since, streams }
            })
            .prop_filter("an empty request is no request", |h| h.since.is_some() || !h.streams.is_empty())
    }

    fn client_command() -> impl Strategy<Value = ClientCommand> {
        prop_oneof![
            (any::<String>(), prop::option::of(history_request()))
                .prop_map(|(identifier, history)| ClientCommand::Subscribe { identifier, history, presence: None }),
            (any::<String>(), history_request())
                .prop_map(|(identifier, history)| ClientCommand::History { identifier, history }),
            any::<String>().prop_map(|identifier| ClientCommand::Unsubscribe { identifier }),
            (any::<String>(), any::<String>())
                .prop_map(|(identifier, data)| ClientCommand::Message { identifier, data }),
            Just(ClientCommand::Pong),
            (any::<String>(), json_value().prop_filter("null is no data", |v| !v.is_null())).prop_map(
                |(identifier, data)| ClientCommand::Whisper {
                    identifier,
                    // The decoder keeps the text the client sent; serde_json's compact form is what `encode` sends.
                    data: data.to_string(),
                }
            ),
            (any::<String>(), presence_join())
                .prop_map(|(identifier, presence)| ClientCommand::Join { identifier, presence }),
            any::<String>().prop_map(|identifier| ClientCommand::Leave { identifier }),
            (any::<String>(), any::<bool>())
                .prop_map(|(identifier, records)| ClientCommand::Presence { identifier, records }),
            (any::<String>(), presence_join()).prop_map(|(identifier, presence)| ClientCommand::Subscribe {
                identifier,
                history: None,
                presence: Some(presence)
            }),
        ]
    }

    fn presence_join() -> impl Strategy<Value = presence::PresenceJoin> {
        (any::<String>(), prop::option::of(json_value().prop_filter("null is no info", |v| !v.is_null())))
            .prop_map(|(id, info)| presence::PresenceJoin { id, info: info.map(|v| v.to_string()) })
    }

    /// Text that looks like JSON often enough to get past the first byte.
    fn json_ish() -> impl Strategy<Value = String> {
        "[\\[\\]{}\",:\\\\ a-z0-9.eE+-]{0,64}".prop_map(|s| format!("{{\"command\":{s}"))
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_text_never_panics(text in any::<String>(), ish in json_ish()) {
            let _ = decode_command(&text);
            let _ = decode_command(&ish);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_command(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn an_encoded_command_decodes_to_itself(command in client_command()) {
            prop_assert_eq!(decode_command(&command.encode()), Ok(command));
        }

        #[test]
        fn the_identifier_is_kept_byte_for_byte(
            channel in "[A-Za-z:]{1,12}",
            spaces in "[ \t\n]{0,3}",
            extra in any::<String>(),
        ) {
            // Key order, spacing and escapes are the client's: the identifier is never re-serialized.
            let identifier = format!("{{{spaces}\"id\":{},\"channel\" :{spaces}{}}}", json_string(&extra), json_string(&channel));
            let frame = format!("{{\"identifier\":{},\"command\":\"subscribe\"}}", json_string(&identifier));
            prop_assert_eq!(decode_command(&frame), Ok(ClientCommand::Subscribe { identifier, history: None, presence: None }));
        }

        #[test]
        fn server_frames_are_json_carrying_the_identifier_unchanged(identifier in any::<String>(), data in any::<String>()) {
            for (frame, kind) in [(confirm_frame(&identifier), "confirm_subscription"), (reject_frame(&identifier), "reject_subscription")] {
                let v: Value = serde_json::from_slice(&frame).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&v, &json!({"identifier": identifier, "type": kind}));
            }
            let frame = message_frame(json_string(&identifier).as_bytes(), &broadcast_payload(&data));
            let v: Value = serde_json::from_slice(&frame).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&v["identifier"], &Value::String(identifier));
            let expected = serde_json::from_str::<Value>(&data).unwrap_or(Value::String(data));
            prop_assert_eq!(&v["message"], &expected);
        }

        #[test]
        fn broadcast_payload_of_json_is_that_json(value in json_value(), pad in "[ \t\r\n]{0,2}") {
            let data = format!("{pad}{value}{pad}");
            let payload = broadcast_payload(&data);
            let parsed: Value = serde_json::from_slice(&payload).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(parsed, value);
        }
    }
}
