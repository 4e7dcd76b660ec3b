//! The presence part of AnyCable's extended protocol: what `join`, `leave` and `presence` commands (and the
//! `presence` field of `subscribe`) carry, and the `{"type":"presence",…}` frames that answer them.
//!
//! Pure functions over bytes and strings, like the rest of `protocol`.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{DecodeError, json_string};

/// A member a client joins as: its presence id and info (JSON text; `None` for none or `null`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceJoin {
    pub id: String,
    pub info: Option<String>,
}

impl PresenceJoin {
    /// `{"id":…,"info":…}`, as a client sends it.
    pub(crate) fn to_json(&self) -> String {
        match &self.info {
            Some(info) => format!("{{\"id\":{},\"info\":{info}}}", json_string(&self.id)),
            None => format!("{{\"id\":{}}}", json_string(&self.id)),
        }
    }
}

/// Reads a command's `presence` field: `{"id": "<string>", "info": <any JSON>}`. `null` or absent is `None`.
pub(crate) fn decode_join(raw: Option<&RawValue>) -> Result<Option<PresenceJoin>, DecodeError> {
    #[derive(Deserialize)]
    struct RawJoin<'a> {
        #[serde(borrow)]
        id: Option<&'a RawValue>,
        #[serde(borrow)]
        info: Option<&'a RawValue>,
    }
    let Some(raw) = raw.filter(|r| r.get() != "null") else { return Ok(None) };
    let join: RawJoin<'_> =
        serde_json::from_str(raw.get()).map_err(|_| DecodeError::BadPresence("expected an object"))?;
    let id = join
        .id
        .and_then(|id| serde_json::from_str::<String>(id.get()).ok())
        .ok_or(DecodeError::BadPresence("id must be a string"))?;
    let info = join.info.map(RawValue::get).filter(|info| *info != "null").map(str::to_owned);
    Ok(Some(PresenceJoin { id, info }))
}

/// Reads a `presence` command's options (`{"return_records": false}` asks for the total only); anything else
/// asks for the records too.
pub(crate) fn decode_records(raw: Option<&RawValue>) -> bool {
    #[derive(Deserialize)]
    struct Options {
        return_records: Option<bool>,
    }
    raw.and_then(|raw| serde_json::from_str::<Options>(raw.get()).ok())
        .and_then(|options| options.return_records)
        .unwrap_or(true)
}

/// `{"type":"presence","identifier":<identifier>,"message":<message>}` from an already escaped identifier and
/// a message that is JSON text: a presence event broadcast, or the answer to a `presence` command.
pub fn presence_frame(escaped_identifier: &[u8], message: &[u8]) -> Bytes {
    super::identified_frame(b"{\"type\":\"presence\",\"identifier\":", escaped_identifier, message)
}

/// The answer to a `presence` command that could not be read: `{"type":"presence",…,"message":{"type":"error"}}`.
pub fn presence_error_frame(identifier: &str) -> Bytes {
    presence_frame(json_string(identifier).as_bytes(), br#"{"type":"error"}"#)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ClientCommand, decode_command};

    #[test]
    fn decodes_the_presence_commands_of_anycable_clients() {
        // What @anycable/core 1.1 sends for channel.presence.join(42, {name: "Ann"}), leave() and info().
        let join = r#"{"command":"join","identifier":"{\"channel\":\"$pubsub\",\"stream_name\":\"room\"}","presence":{"id":"42","info":{"name":"Ann"}}}"#;
        assert_eq!(
            decode_command(join),
            Ok(ClientCommand::Join {
                identifier: r#"{"channel":"$pubsub","stream_name":"room"}"#.into(),
                presence: PresenceJoin { id: "42".into(), info: Some(r#"{"name":"Ann"}"#.into()) },
            })
        );
        assert_eq!(
            decode_command(r#"{"command":"leave","identifier":"x"}"#),
            Ok(ClientCommand::Leave { identifier: "x".into() })
        );
        assert_eq!(
            decode_command(r#"{"command":"presence","identifier":"x","data":{}}"#),
            Ok(ClientCommand::Presence { identifier: "x".into(), records: true })
        );
        assert_eq!(
            decode_command(r#"{"command":"presence","identifier":"x","data":{"return_records":false}}"#),
            Ok(ClientCommand::Presence { identifier: "x".into(), records: false })
        );
        // A resubscribe after a reconnect carries the presence to restore.
        let subscribe = r#"{"command":"subscribe","identifier":"x","presence":{"id":"1","info":null}}"#;
        assert_eq!(
            decode_command(subscribe),
            Ok(ClientCommand::Subscribe {
                identifier: "x".into(),
                history: None,
                presence: Some(PresenceJoin { id: "1".into(), info: None }),
            })
        );
    }

    #[test]
    fn refuses_joins_without_a_string_id() {
        for frame in [
            r#"{"command":"join","identifier":"x"}"#,
            r#"{"command":"join","identifier":"x","presence":null}"#,
            r#"{"command":"join","identifier":"x","presence":{"id":42}}"#,
            r#"{"command":"join","identifier":"x","presence":{"info":{}}}"#,
            r#"{"command":"join","identifier":"x","presence":"42"}"#,
        ] {
            assert!(matches!(decode_command(frame), Err(DecodeError::BadPresence(_))), "{frame}");
        }
        assert!(matches!(
            decode_command(r#"{"command":"subscribe","identifier":"x","presence":{"id":[]}}"#),
            Err(DecodeError::BadPresence(_))
        ));
    }

    #[test]
    fn encodes_presence_frames() {
        assert_eq!(
            &presence_frame(br#""id""#, br#"{"type":"leave","id":"1"}"#)[..],
            br#"{"type":"presence","identifier":"id","message":{"type":"leave","id":"1"}}"#
        );
        assert_eq!(
            &presence_error_frame("{\"a\":1}")[..],
            br#"{"type":"presence","identifier":"{\"a\":1}","message":{"type":"error"}}"#
        );
    }
}
