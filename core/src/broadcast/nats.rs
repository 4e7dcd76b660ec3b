//! The NATS broadcaster (`broadcast_adapter=nats`): subscribes to the subject `nats_channel`, and every
//! message on it is a publication, a batch or a remote command in the ingress format (AnyCable's NATS
//! convention).
//!
//! Every node subscribes, so every node gets every message by itself ([`Reach::EveryNode`]). NATS core is
//! at-most-once: messages published while this node is disconnected are not received. The client
//! reconnects and resubscribes by itself; this task only reads.

use std::sync::Arc;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{IngressSink, Reach, accept_body};

/// A connected (or connecting) NATS broadcaster, ready to [`run`].
pub(crate) struct NatsBroadcaster {
    /// Kept so the connection lives as long as the subscription.
    _client: async_nats::Client,
    subscriber: async_nats::Subscriber,
}

/// Connects (in the background) and subscribes; fails only on an invalid server list.
pub(crate) async fn start(
    servers: &[String],
    subject: &str,
    stop: CancellationToken,
) -> Result<NatsBroadcaster, String> {
    let what = format!("NATS broadcaster (subject {subject:?} at {})", redacted(servers));
    let client = crate::engine::nats::connect(servers, what.clone(), true, stop, |_| {}).await?;
    let subscriber =
        client.subscribe(subject.to_owned()).await.map_err(|e| format!("{what}: cannot subscribe: {e}"))?;
    Ok(NatsBroadcaster { _client: client, subscriber })
}

/// Reads the subscription until `stop`.
pub(crate) async fn run<S: IngressSink>(broadcaster: NatsBroadcaster, sink: Arc<S>, stop: CancellationToken) {
    let NatsBroadcaster { _client, mut subscriber } = broadcaster;
    loop {
        let message = tokio::select! {
            m = subscriber.next() => m,
            () = stop.cancelled() => break,
        };
        let Some(message) = message else {
            tracing::error!("NATS broadcaster: the subscription ended; NATS broadcasts are no longer received");
            return;
        };
        accept_body(&*sink, &message.payload, Reach::EveryNode, "NATS broadcaster").await;
    }
    let _ = subscriber.unsubscribe().await;
}

/// Server URLs for logs, passwords hidden.
pub(crate) fn redacted(servers: &[String]) -> String {
    servers.iter().map(|s| crate::config::redact_url(s)).collect::<Vec<_>>().join(",")
}
