//! The Redis Pub/Sub broadcaster (`broadcast_adapter=redis`): `SUBSCRIBE <redis_channel>`, and every message
//! on it is a publication, a batch or a remote command in the ingress format (AnyCable's Redis convention:
//! `PUBLISH __anycable__ '{"stream":…,"data":…}'`).
//!
//! Every node subscribes, so every node gets every message by itself ([`Reach::EveryNode`]): nothing is
//! republished to the cluster pub/sub. Redis Pub/Sub is at-most-once: messages published while this node is
//! disconnected are not received. The broadcaster reconnects with backoff and never stops the node.

use std::sync::Arc;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{IngressSink, Reach, accept_body};
use crate::engine::{self, Backoff, Outage, sleep_or_stop};

/// Runs the broadcaster until `stop`.
pub(crate) async fn run<S: IngressSink>(
    client: ::redis::Client,
    channel: String,
    sink: Arc<S>,
    stop: CancellationToken,
) {
    let what = format!("Redis broadcaster (channel {channel:?} at {})", client.get_connection_info().addr());
    let mut outage = Outage::new(what.clone());
    let mut backoff = Backoff::default();
    loop {
        let connected = tokio::select! {
            c = engine::redis::pubsub(&client) => c,
            () = stop.cancelled() => return,
        };
        let mut pubsub = match connected {
            Ok(pubsub) => pubsub,
            Err(error) => {
                outage.down(&error, "broadcasts published meanwhile are lost");
                if sleep_or_stop(backoff.next_delay(), &stop).await {
                    return;
                }
                continue;
            }
        };
        if let Err(error) = pubsub.subscribe(&channel).await {
            outage.down(&error, "broadcasts published meanwhile are lost");
            if sleep_or_stop(backoff.next_delay(), &stop).await {
                return;
            }
            continue;
        }
        outage.up();
        backoff.reset();
        let mut messages = pubsub.into_on_message();
        loop {
            let message = tokio::select! {
                m = messages.next() => m,
                () = stop.cancelled() => return,
            };
            let Some(message) = message else {
                outage.down(&"connection closed", "broadcasts published meanwhile are lost");
                break;
            };
            accept_body(&*sink, message.get_payload_bytes(), Reach::EveryNode, &what).await;
        }
        if sleep_or_stop(backoff.next_delay(), &stop).await {
            return;
        }
    }
}
