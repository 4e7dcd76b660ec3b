//! Routes each call either to the server's own standalone rules or to the application's handler.
//!
//! Standalone rules answer without the application: `noauth` accepts every connection with a welcome
//! frame written by the server, `public_streams` confirms `$pubsub` subscriptions to a named stream.
//! Everything else goes to the backend [`Handler`]. Each answer says whether the backend was involved,
//! which decides whether a Disconnect call is owed in `disconnect_mode=auto`.

use std::sync::Arc;
use std::time::Instant;

use super::{
    CallContext, CommandMessage, CommandResponse, ConnectionRequest, ConnectionResponse, DisconnectRequest, Handler,
    HandlerError, Status,
};
use crate::metrics::{Histogram, Metrics};
use crate::protocol;

/// The identifier channel of standalone pub/sub subscriptions.
pub const PUBSUB_CHANNEL: &str = "$pubsub";

/// An answer and whether the backend produced it.
pub struct Routed<T> {
    pub result: Result<T, HandlerError>,
    pub via_backend: bool,
}

impl<T> Routed<T> {
    fn local(value: T) -> Self {
        Self { result: Ok(value), via_backend: false }
    }
}

/// The standalone rules in front of an optional backend handler.
pub struct Controller {
    noauth: bool,
    public_streams: bool,
    backend: Option<Arc<dyn Handler>>,
    metrics: Arc<Metrics>,
}

/// Times a backend call into `histogram`.
async fn timed<T>(histogram: &Histogram, call: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let result = call.await;
    histogram.observe(started.elapsed());
    result
}

impl Controller {
    pub fn new(noauth: bool, public_streams: bool, backend: Option<Arc<dyn Handler>>, metrics: Arc<Metrics>) -> Self {
        Self { noauth, public_streams, backend, metrics }
    }

    /// Whether Disconnect calls can go anywhere.
    pub fn has_backend(&self) -> bool {
        self.backend.is_some()
    }

    pub async fn connect(&self, ctx: &CallContext, request: ConnectionRequest) -> Routed<ConnectionResponse> {
        if self.noauth {
            return Routed::local(ConnectionResponse {
                status: Status::Success as i32,
                identifiers: format!("{{\"sid\":{}}}", protocol::json_string(&ctx.sid)),
                transmissions: vec![String::from_utf8_lossy(&protocol::welcome_frame(&ctx.sid)).into_owned()],
                ..Default::default()
            });
        }
        match &self.backend {
            Some(backend) => Routed {
                result: timed(&self.metrics.connect_duration, backend.connect(ctx, request)).await,
                via_backend: true,
            },
            None => Routed::local(ConnectionResponse {
                status: Status::Failure as i32,
                transmissions: vec![
                    String::from_utf8_lossy(&protocol::disconnect_frame("unauthorized", false)).into_owned(),
                ],
                error_msg: "no way to authenticate: enable noauth or an RPC backend".into(),
                ..Default::default()
            }),
        }
    }

    pub async fn command(&self, ctx: &CallContext, request: CommandMessage) -> Routed<CommandResponse> {
        if let Some(stream) = pubsub_stream(&request.identifier) {
            return Routed::local(self.pubsub_command(&request, stream));
        }
        match &self.backend {
            Some(backend) => Routed {
                result: timed(&self.metrics.command_duration, backend.command(ctx, request)).await,
                via_backend: true,
            },
            None => Routed::local(no_backend_command(&request)),
        }
    }

    pub async fn disconnect(&self, ctx: &CallContext, request: DisconnectRequest) -> Result<(), HandlerError> {
        let Some(backend) = &self.backend else { return Ok(()) };
        let response = timed(&self.metrics.disconnect_duration, backend.disconnect(ctx, request)).await?;
        if response.status != Status::Success as i32 {
            return Err(HandlerError::Failed(format!(
                "Disconnect returned {}: {}",
                super::status_name(response.status),
                response.error_msg
            )));
        }
        Ok(())
    }

    fn pubsub_command(&self, request: &CommandMessage, stream: PubsubStream) -> CommandResponse {
        match (request.command.as_str(), stream) {
            ("subscribe", PubsubStream::Public(name)) if self.public_streams => CommandResponse {
                status: Status::Success as i32,
                streams: vec![name],
                transmissions: vec![text(protocol::confirm_frame(&request.identifier))],
                ..Default::default()
            },
            ("subscribe", _) => CommandResponse {
                status: Status::Failure as i32,
                transmissions: vec![text(protocol::reject_frame(&request.identifier))],
                error_msg: "stream subscription is not allowed".into(),
                ..Default::default()
            },
            ("unsubscribe", _) => CommandResponse { status: Status::Success as i32, ..Default::default() },
            _ => CommandResponse {
                status: Status::Error as i32,
                error_msg: format!("{PUBSUB_CHANNEL} subscriptions accept no {:?} command", request.command),
                ..Default::default()
            },
        }
    }
}

fn no_backend_command(request: &CommandMessage) -> CommandResponse {
    let transmissions =
        if request.command == "subscribe" { vec![text(protocol::reject_frame(&request.identifier))] } else { vec![] };
    CommandResponse {
        status: if request.command == "subscribe" { Status::Failure } else { Status::Error } as i32,
        transmissions,
        error_msg: "no RPC backend to run channel commands".into(),
        ..Default::default()
    }
}

fn text(frame: bytes::Bytes) -> String {
    String::from_utf8_lossy(&frame).into_owned()
}

/// The stream a `$pubsub` identifier names.
enum PubsubStream {
    Public(String),
    /// A signed stream name or a malformed identifier: nothing this server verifies yet.
    Unverified,
}

fn pubsub_stream(identifier: &str) -> Option<PubsubStream> {
    if !identifier.contains(PUBSUB_CHANNEL) {
        return None;
    }
    let value: serde_json::Value = serde_json::from_str(identifier).ok()?;
    if value.get("channel")?.as_str()? != PUBSUB_CHANNEL {
        return None;
    }
    Some(match value.get("stream_name").and_then(|s| s.as_str()) {
        Some(name) if !name.is_empty() => PubsubStream::Public(name.to_owned()),
        _ => PubsubStream::Unverified,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> CallContext {
        CallContext { sid: "abc".into() }
    }

    fn command(command: &str, identifier: &str) -> CommandMessage {
        CommandMessage { command: command.into(), identifier: identifier.into(), ..Default::default() }
    }

    #[tokio::test]
    async fn noauth_welcomes_with_the_sid_without_a_backend() {
        let c = Controller::new(true, false, None, Arc::default());
        let r = c.connect(&ctx(), ConnectionRequest::default()).await;
        assert!(!r.via_backend);
        let resp = r.result.unwrap();
        assert_eq!(resp.status, Status::Success as i32);
        assert_eq!(resp.identifiers, r#"{"sid":"abc"}"#);
        assert_eq!(resp.transmissions, vec![r#"{"type":"welcome","sid":"abc"}"#]);
    }

    #[tokio::test]
    async fn without_noauth_or_backend_connections_are_unauthorized() {
        let c = Controller::new(false, true, None, Arc::default());
        let resp = c.connect(&ctx(), ConnectionRequest::default()).await.result.unwrap();
        assert_eq!(resp.status, Status::Failure as i32);
        assert!(resp.transmissions[0].contains("unauthorized"));
    }

    #[tokio::test]
    async fn public_streams_confirm_pubsub_subscriptions_only_when_enabled() {
        let id = r#"{"channel":"$pubsub","stream_name":"news"}"#;
        let open = Controller::new(true, true, None, Arc::default());
        let resp = open.command(&ctx(), command("subscribe", id)).await.result.unwrap();
        assert_eq!(resp.status, Status::Success as i32);
        assert_eq!(resp.streams, vec!["news"]);
        assert!(resp.transmissions[0].contains("confirm_subscription"));

        let closed = Controller::new(true, false, None, Arc::default());
        let resp = closed.command(&ctx(), command("subscribe", id)).await.result.unwrap();
        assert_eq!(resp.status, Status::Failure as i32);
        assert!(resp.transmissions[0].contains("reject_subscription"));

        let signed = r#"{"channel":"$pubsub","signed_stream_name":"x--y"}"#;
        let resp = open.command(&ctx(), command("subscribe", signed)).await.result.unwrap();
        assert_eq!(resp.status, Status::Failure as i32);
    }

    #[tokio::test]
    async fn channel_subscriptions_without_a_backend_are_rejected() {
        let c = Controller::new(true, true, None, Arc::default());
        let r = c.command(&ctx(), command("subscribe", r#"{"channel":"ChatChannel"}"#)).await;
        assert!(!r.via_backend);
        let resp = r.result.unwrap();
        assert_eq!(resp.status, Status::Failure as i32);
        assert!(resp.transmissions[0].contains("reject_subscription"));
    }
}
