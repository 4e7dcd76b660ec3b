//! Broadcast ingress: the publication format shared by every broadcaster, and the broadcasters themselves:
//! HTTP (`http.rs`), Redis Pub/Sub (`redis.rs`), Redis Streams (`redisx.rs`) and NATS (`nats.rs`).
//!
//! A broadcaster only turns bytes from the outside world into [`IngressMessage`]s and hands them to the
//! server through an [`IngressSink`], saying whether they reached this node only or every node
//! ([`Reach`]); it never touches sessions, the hub or the cluster pub/sub directly.

pub mod http;
pub(crate) mod nats;
pub(crate) mod redis;
pub(crate) mod redisx;

use std::future::Future;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::broker::StreamPosition;
use crate::metrics::Metrics;

/// One publication: deliver `data` to every subscription streaming from `stream`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    pub stream: String,
    /// The payload as the application sent it (usually JSON text).
    pub data: String,
    /// Session id that must not receive this publication.
    pub exclude_socket: Option<String>,
    /// Not kept in stream history (`meta.transient`; whispers): delivered to whoever is subscribed now.
    pub transient: bool,
    /// A presence event (`meta.broadcast_type = "presence"`): delivered as `{"type":"presence",…}` frames.
    pub presence: bool,
    /// Where the broker registered it: set once registered, or as the registering node published it.
    pub position: Option<StreamPosition>,
}

impl Publication {
    /// A publication with no meta.
    pub fn new(stream: impl Into<String>, data: impl Into<String>) -> Self {
        Self {
            stream: stream.into(),
            data: data.into(),
            exclude_socket: None,
            transient: false,
            presence: false,
            position: None,
        }
    }
}

/// The `meta.broadcast_type` of presence events.
const PRESENCE_BROADCAST_TYPE: &str = "presence";

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

/// Whether messages handed to the server reached this node only, or every node of a cluster on their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reach {
    /// Only this node got them (HTTP, redisx, a binding's direct broadcast): with a cluster pub/sub, the
    /// server also publishes them there for the other nodes.
    ThisNode,
    /// Every node gets them by itself (the Redis and NATS broadcast channels, the cluster pub/sub): they
    /// are delivered locally only.
    EveryNode,
}

/// Where broadcasters hand accepted messages.
pub(crate) trait IngressSink: Send + Sync + 'static {
    /// Queues `messages` in order; returns once they are queued, not delivered.
    fn accept(&self, messages: Vec<IngressMessage>, reach: Reach) -> impl Future<Output = ()> + Send;

    /// Where broadcasters count what they receive (`publications_total`, `failed_broadcast_msg_total`).
    fn metrics(&self) -> Option<&Metrics> {
        None
    }
}

/// Parses a body that came from a broadcast channel and hands it on; a malformed one is logged and dropped.
pub(crate) async fn accept_body<S: IngressSink>(sink: &S, body: &[u8], reach: Reach, source: &str) -> bool {
    match parse_ingress(body) {
        Ok(messages) => {
            sink.metrics().inspect(|m| Metrics::inc(&m.publications_total));
            sink.accept(messages, reach).await;
            true
        }
        Err(error) => {
            sink.metrics().inspect(|m| Metrics::inc(&m.failed_broadcast_msg_total));
            tracing::warn!(%error, body = %String::from_utf8_lossy(&body[..body.len().min(200)]), "{source}: malformed broadcast dropped");
            false
        }
    }
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
    /// The node that published it to the cluster pub/sub (not part of the ingress format).
    node: Option<String>,
    /// The stream position the publishing node's broker gave it (cluster pub/sub only).
    offset: Option<u64>,
    epoch: Option<String>,
}

#[derive(Deserialize)]
struct RawMeta {
    exclude_socket: Option<String>,
    #[serde(default)]
    transient: bool,
    broadcast_type: Option<String>,
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

/// Parses one message from the cluster pub/sub: a publication or remote command in the ingress format, with
/// the id of the node that published it.
pub fn parse_node_message(body: &[u8]) -> Result<(Option<String>, IngressMessage), PublicationError> {
    let mut entry: RawEntry<'_> = serde_json::from_slice(body).map_err(|e| PublicationError::Json(e.to_string()))?;
    let node = entry.node.take();
    let position = match (entry.offset.take(), entry.epoch.take()) {
        (Some(offset), Some(epoch)) => Some(StreamPosition { offset, epoch: epoch.into() }),
        _ => None,
    };
    let mut message = entry_to_message(0, entry)?;
    if let IngressMessage::Broadcast(publication) = &mut message {
        publication.position = position;
    }
    Ok((node, message))
}

/// Encodes one message for the cluster pub/sub: the ingress format plus `node`, the publishing node's id.
/// [`parse_ingress`] reads it as that one message.
pub fn encode_node_message(node: &str, message: &IngressMessage) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Meta<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        exclude_socket: Option<&'a str>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        transient: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        broadcast_type: Option<&'static str>,
    }
    #[derive(serde::Serialize)]
    struct Payload<'a> {
        identifier: &'a str,
        reconnect: bool,
    }
    #[derive(serde::Serialize)]
    #[serde(untagged)]
    enum Wire<'a> {
        Broadcast {
            stream: &'a str,
            data: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            meta: Option<Meta<'a>>,
            node: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            offset: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            epoch: Option<&'a str>,
        },
        Command {
            command: &'static str,
            payload: Payload<'a>,
            node: &'a str,
        },
    }
    let wire = match message {
        IngressMessage::Broadcast(p) => Wire::Broadcast {
            stream: &p.stream,
            data: &p.data,
            meta: (p.exclude_socket.is_some() || p.transient || p.presence).then(|| Meta {
                exclude_socket: p.exclude_socket.as_deref(),
                transient: p.transient,
                broadcast_type: p.presence.then_some(PRESENCE_BROADCAST_TYPE),
            }),
            node,
            offset: p.position.as_ref().map(|pos| pos.offset),
            epoch: p.position.as_ref().map(|pos| &*pos.epoch),
        },
        IngressMessage::Disconnect(d) => Wire::Command {
            command: "disconnect",
            payload: Payload { identifier: &d.identifiers, reconnect: d.reconnect },
            node,
        },
    };
    serde_json::to_vec(&wire).unwrap_or_default()
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
    let (exclude_socket, transient, presence) = match entry.meta {
        Some(meta) => (
            meta.exclude_socket.filter(|s| !s.is_empty()),
            meta.transient,
            meta.broadcast_type.as_deref() == Some(PRESENCE_BROADCAST_TYPE),
        ),
        None => (None, false, false),
    };
    Ok(IngressMessage::Broadcast(Publication { exclude_socket, transient, presence, ..Publication::new(stream, data) }))
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
                exclude_socket: Some("s1".into()),
                ..Publication::new("chat", r#"{"a":1}"#)
            })]
        );
        let body = br#"{"stream":"typing","data":"{}","meta":{"transient":true}}"#;
        assert_eq!(
            parse_ingress(body).unwrap(),
            vec![IngressMessage::Broadcast(Publication { transient: true, ..Publication::new("typing", "{}") })]
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
            vec![IngressMessage::Disconnect(RemoteDisconnect {
                identifiers: r#"{"user":1}"#.into(),
                reconnect: false
            })]
        );
    }

    #[test]
    fn object_data_is_taken_as_json_text() {
        let msgs = parse_ingress(br#"{"stream":"s","data":{"x":[1,2]}}"#).unwrap();
        assert_eq!(msgs, vec![IngressMessage::Broadcast(Publication::new("s", r#"{"x":[1,2]}"#))]);
    }

    #[test]
    fn node_messages_round_trip_with_their_origin() {
        let publication = IngressMessage::Broadcast(Publication {
            exclude_socket: Some("sid-1".into()),
            ..Publication::new("chat \"1\"", r#"{"text":"hi"}"#)
        });
        let disconnect =
            IngressMessage::Disconnect(RemoteDisconnect { identifiers: r#"{"user":1}"#.into(), reconnect: false });
        let transient = IngressMessage::Broadcast(Publication { transient: true, ..Publication::new("t", "x") });
        let presence = IngressMessage::Broadcast(Publication {
            transient: true,
            presence: true,
            ..Publication::new("room", r#"{"type":"leave","id":"1"}"#)
        });
        for message in [
            publication,
            disconnect,
            transient,
            presence,
            IngressMessage::Broadcast(Publication::new("s", "plain text")),
        ] {
            let body = encode_node_message("n1", &message);
            assert_eq!(parse_node_message(&body).unwrap(), (Some("n1".into()), message.clone()));
            assert_eq!(parse_ingress(&body).unwrap(), vec![message], "the wire format is the ingress format");
        }
        // A registered publication carries its position to the other nodes; the ingress format ignores it.
        let registered = Publication {
            position: Some(StreamPosition { offset: 7, epoch: "ep".into() }),
            ..Publication::new("s", "x")
        };
        let body = encode_node_message("n1", &IngressMessage::Broadcast(registered.clone()));
        assert_eq!(parse_node_message(&body).unwrap(), (Some("n1".into()), IngressMessage::Broadcast(registered)));
        assert_eq!(parse_ingress(&body).unwrap(), vec![IngressMessage::Broadcast(Publication::new("s", "x"))]);
        let (node, _) = parse_node_message(br#"{"stream":"s","data":"x"}"#).unwrap();
        assert_eq!(node, None, "messages from other publishers carry no node id");
    }

    #[test]
    fn refuses_malformed_bodies_with_a_reason() {
        assert!(matches!(parse_ingress(b"not json"), Err(PublicationError::Json(_))));
        assert_eq!(parse_ingress(b"42"), Err(PublicationError::Shape));
        assert_eq!(parse_ingress(br#"{"data":"x"}"#), Err(PublicationError::Stream(0)));
        assert_eq!(parse_ingress(br#"{"stream":"","data":"x"}"#), Err(PublicationError::Stream(0)));
        assert_eq!(parse_ingress(br#"[{"stream":"a","data":"x"},{"stream":"b"}]"#), Err(PublicationError::Data(1)));
        assert_eq!(parse_ingress(br#"{"command":"explode"}"#), Err(PublicationError::Command(0, "explode".into())));
        assert_eq!(
            parse_ingress(br#"{"command":"disconnect","payload":{}}"#),
            Err(PublicationError::DisconnectPayload(0))
        );
        assert_eq!(parse_ingress(br#"[1]"#), Err(PublicationError::Shape));
    }
}

#[cfg(test)]
mod properties {
    //! Properties of the publication parser over generated input: never a panic, batches kept in order, and
    //! the cluster wire format carrying every message unchanged.

    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn publication() -> impl Strategy<Value = Publication> {
        (".+", any::<String>(), prop::option::of(".+"))
            .prop_map(|(stream, data, exclude_socket)| Publication { exclude_socket, ..Publication::new(stream, data) })
    }

    fn ingress_message() -> impl Strategy<Value = IngressMessage> {
        prop_oneof![
            publication().prop_map(IngressMessage::Broadcast),
            (any::<String>(), any::<bool>()).prop_map(|(identifiers, reconnect)| IngressMessage::Disconnect(
                RemoteDisconnect { identifiers, reconnect }
            )),
        ]
    }

    /// A message in the ingress format, as a publisher writes it.
    fn to_json(message: &IngressMessage) -> serde_json::Value {
        match message {
            IngressMessage::Broadcast(p) => match &p.exclude_socket {
                Some(sid) => json!({"stream": p.stream, "data": p.data, "meta": {"exclude_socket": sid}}),
                None => json!({"stream": p.stream, "data": p.data}),
            },
            IngressMessage::Disconnect(d) => {
                json!({"command": "disconnect", "payload": {"identifier": d.identifiers, "reconnect": d.reconnect}})
            }
        }
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_bodies_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256), text in any::<String>()) {
            let _ = parse_ingress(&bytes);
            let _ = parse_node_message(&bytes);
            let _ = parse_ingress(text.as_bytes());
        }

        #[test]
        fn a_batch_is_parsed_in_order(messages in prop::collection::vec(ingress_message(), 0..16)) {
            let body = serde_json::Value::Array(messages.iter().map(to_json).collect()).to_string();
            prop_assert_eq!(parse_ingress(body.as_bytes()), Ok(messages));
        }

        #[test]
        fn a_single_message_is_parsed_as_a_batch_of_one(message in ingress_message()) {
            let body = to_json(&message).to_string();
            prop_assert_eq!(parse_ingress(body.as_bytes()), Ok(vec![message]));
        }

        #[test]
        fn node_messages_carry_every_message_unchanged(message in ingress_message(), node in any::<String>()) {
            let body = encode_node_message(&node, &message);
            prop_assert_eq!(parse_node_message(&body), Ok((Some(node), message)));
        }

        #[test]
        fn non_string_data_is_kept_as_its_json_text(stream in ".+", items in prop::collection::vec(any::<i32>(), 0..8)) {
            let data = json!({"items": items}).to_string();
            let body = format!("{{\"stream\":{},\"data\":{data}}}", json!(stream));
            prop_assert_eq!(parse_ingress(body.as_bytes()), Ok(vec![IngressMessage::Broadcast(Publication::new(stream, data))]));
        }
    }
}
