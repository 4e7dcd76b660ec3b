//! Broadcast ingress: the publication format shared by every broadcaster, and the broadcasters themselves.
//!
//! A broadcaster only turns bytes from the outside world into [`IngressMessage`]s and hands them to the
//! server; it never touches sessions or the hub directly.

pub mod http;

use serde::Deserialize;
use serde_json::value::RawValue;

/// One publication: deliver `data` to every subscription streaming from `stream`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    pub stream: String,
    /// The payload as the application sent it (usually JSON text).
    pub data: String,
    /// Session id that must not receive this publication.
    pub exclude_socket: Option<String>,
}

impl Publication {
    /// A publication with no meta.
    pub fn new(stream: impl Into<String>, data: impl Into<String>) -> Self {
        Self { stream: stream.into(), data: data.into(), exclude_socket: None }
    }
}

/// Close every session whose identifiers equal `identifiers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteDisconnect {
    pub identifiers: String,
    pub reconnect: bool,
}

/// What can arrive on the broadcast path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngressMessage {
    Broadcast(Publication),
    Disconnect(RemoteDisconnect),
}

/// Why a broadcast body was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PublicationError {
    #[error("body is not valid JSON: {0}")]
    Json(String),
    #[error("expected a publication object or an array of them")]
    Shape,
    #[error("publication #{0}: `stream` must be a non-empty string")]
    Stream(usize),
    #[error("publication #{0}: `data` is required")]
    Data(usize),
    #[error("publication #{0}: unknown command {1:?} (supported: disconnect)")]
    Command(usize, String),
    #[error("publication #{0}: disconnect needs payload.identifier as a string")]
    DisconnectPayload(usize),
}

#[derive(Deserialize)]
struct RawEntry<'a> {
    stream: Option<serde_json::Value>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    meta: Option<RawMeta>,
    command: Option<String>,
    payload: Option<RawDisconnectPayload>,
}

#[derive(Deserialize)]
struct RawMeta {
    exclude_socket: Option<String>,
}

#[derive(Deserialize)]
struct RawDisconnectPayload {
    identifier: Option<String>,
    reconnect: Option<bool>,
}

/// Parses a broadcast body: one publication, a batch (array, kept in order), or a remote command.
pub fn parse_ingress(body: &[u8]) -> Result<Vec<IngressMessage>, PublicationError> {
    let value: &RawValue = serde_json::from_slice(body).map_err(|e| PublicationError::Json(e.to_string()))?;
    let text = value.get();
    let entries: Vec<RawEntry<'_>> = if text.starts_with('[') {
        serde_json::from_str(text).map_err(|_| PublicationError::Shape)?
    } else if text.starts_with('{') {
        vec![serde_json::from_str(text).map_err(|_| PublicationError::Shape)?]
    } else {
        return Err(PublicationError::Shape);
    };
    entries.into_iter().enumerate().map(|(i, e)| entry_to_message(i, e)).collect()
}

fn entry_to_message(index: usize, entry: RawEntry<'_>) -> Result<IngressMessage, PublicationError> {
    if let Some(command) = entry.command {
        if command != "disconnect" {
            return Err(PublicationError::Command(index, command));
        }
        let payload = entry.payload.ok_or(PublicationError::DisconnectPayload(index))?;
        let identifiers = payload.identifier.ok_or(PublicationError::DisconnectPayload(index))?;
        return Ok(IngressMessage::Disconnect(RemoteDisconnect {
            identifiers,
            reconnect: payload.reconnect.unwrap_or(true),
        }));
    }
    let stream = match entry.stream {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s,
        _ => return Err(PublicationError::Stream(index)),
    };
    let raw = entry.data.ok_or(PublicationError::Data(index))?;
    // `data` is normally a string; an object or array is taken as its JSON text.
    let data = serde_json::from_str::<String>(raw.get()).unwrap_or_else(|_| raw.get().to_owned());
    Ok(IngressMessage::Broadcast(Publication {
        stream,
        data,
        exclude_socket: entry.meta.and_then(|m| m.exclude_socket).filter(|s| !s.is_empty()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_single_publication_with_meta() {
        let body = br#"{"stream":"chat","data":"{\"a\":1}","meta":{"exclude_socket":"s1","other":true}}"#;
        assert_eq!(
            parse_ingress(body).unwrap(),
            vec![IngressMessage::Broadcast(Publication {
                stream: "chat".into(),
                data: r#"{"a":1}"#.into(),
                exclude_socket: Some("s1".into())
            })]
        );
    }

    #[test]
    fn parses_a_batch_in_order() {
        let body = br#"[{"stream":"a","data":"1"},{"stream":"b","data":"2"},{"stream":"a","data":"3"}]"#;
        let got: Vec<String> = parse_ingress(body)
            .unwrap()
            .into_iter()
            .map(|m| match m {
                IngressMessage::Broadcast(p) => format!("{}:{}", p.stream, p.data),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(got, vec!["a:1", "b:2", "a:3"]);
    }

    #[test]
    fn parses_remote_disconnect() {
        let body = br#"{"command":"disconnect","payload":{"identifier":"{\"user\":1}","reconnect":false}}"#;
        assert_eq!(
            parse_ingress(body).unwrap(),
            vec![IngressMessage::Disconnect(RemoteDisconnect { identifiers: r#"{"user":1}"#.into(), reconnect: false })]
        );
    }

    #[test]
    fn object_data_is_taken_as_json_text() {
        let msgs = parse_ingress(br#"{"stream":"s","data":{"x":[1,2]}}"#).unwrap();
        assert_eq!(msgs, vec![IngressMessage::Broadcast(Publication::new("s", r#"{"x":[1,2]}"#))]);
    }

    #[test]
    fn refuses_malformed_bodies_with_a_reason() {
        assert!(matches!(parse_ingress(b"not json"), Err(PublicationError::Json(_))));
        assert_eq!(parse_ingress(b"42"), Err(PublicationError::Shape));
        assert_eq!(parse_ingress(br#"{"data":"x"}"#), Err(PublicationError::Stream(0)));
        assert_eq!(parse_ingress(br#"{"stream":"","data":"x"}"#), Err(PublicationError::Stream(0)));
        assert_eq!(parse_ingress(br#"[{"stream":"a","data":"x"},{"stream":"b"}]"#), Err(PublicationError::Data(1)));
        assert_eq!(parse_ingress(br#"{"command":"explode"}"#), Err(PublicationError::Command(0, "explode".into())));
        assert_eq!(parse_ingress(br#"{"command":"disconnect","payload":{}}"#), Err(PublicationError::DisconnectPayload(0)));
        assert_eq!(parse_ingress(br#"[1]"#), Err(PublicationError::Shape));
    }
}
