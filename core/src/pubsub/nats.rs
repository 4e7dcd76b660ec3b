//! The NATS engine of the cluster pub/sub: one client connection (with `no_echo`, so a node never receives
//! its own messages) for publishing and for one subscription per stream, or one wildcard subscription.
//!
//! The client reconnects and resubscribes by itself. While it is not connected, publications are counted
//! as lost instead of being buffered, so publishers never wait on a dead engine. Each stream subscription
//! is read by its own small task, so one stream's messages stay in order and a busy stream never delays
//! another.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Delivery, Losses, ReceiverContext};
use crate::broadcast::IngressSink;
use crate::config::PubSubSubscribe;
use crate::metrics::Metrics;

pub(super) struct Publisher {
    client: async_nats::Client,
    metrics: Arc<Metrics>,
    losses: Arc<Losses>,
    tasks: TaskTracker,
    /// The server's runtime: `try_publish` may be called from a thread outside it (a binding's).
    runtime: tokio::runtime::Handle,
    /// Until the first connection (or its timeout), publications wait in the client instead of being lost.
    first_connect: Arc<FirstConnect>,
}

/// The window after start in which the client may still be making its first connection.
struct FirstConnect {
    done: AtomicBool,
    deadline: Instant,
}

impl FirstConnect {
    fn in_progress(&self) -> bool {
        !self.done.load(Ordering::Relaxed) && Instant::now() < self.deadline
    }
}

impl Publisher {
    /// Connects in the background; returns the publisher and the client the receiver shares.
    pub(super) async fn connect(
        servers: &[String],
        metrics: Arc<Metrics>,
        losses: Arc<Losses>,
        tasks: TaskTracker,
        stop: CancellationToken,
    ) -> Result<(Self, async_nats::Client), String> {
        let what = format!("NATS pub/sub ({})", crate::broadcast::nats::redacted(servers));
        let (m, l) = (metrics.clone(), losses.clone());
        let first_connect = Arc::new(FirstConnect {
            done: AtomicBool::new(false),
            deadline: Instant::now() + crate::engine::CONNECT_TIMEOUT,
        });
        let first = first_connect.clone();
        let client = crate::engine::nats::connect(servers, what, true, stop, move |connected| {
            first.done.store(true, Ordering::Relaxed);
            if connected {
                l.outage_ended(&m, "NATS");
            } else {
                l.outage_started(&m);
            }
        })
        .await?;
        let runtime = tokio::runtime::Handle::current();
        Ok((Self { client: client.clone(), metrics, losses, tasks, runtime, first_connect }, client))
    }

    pub(super) async fn publish(&self, subject: String, payload: Vec<u8>) {
        publish(&self.client, &self.metrics, &self.losses, &self.first_connect, subject, payload).await;
    }

    pub(super) fn try_publish(&self, subject: String, payload: Vec<u8>) {
        let (client, metrics, losses) = (self.client.clone(), self.metrics.clone(), self.losses.clone());
        let first_connect = self.first_connect.clone();
        let publishing = async move { publish(&client, &metrics, &losses, &first_connect, subject, payload).await };
        self.tasks.spawn_on(publishing, &self.runtime);
    }
}

async fn publish(
    client: &async_nats::Client,
    metrics: &Metrics,
    losses: &Losses,
    first_connect: &FirstConnect,
    subject: String,
    payload: Vec<u8>,
) {
    let state = client.connection_state();
    let connecting = state == async_nats::connection::State::Pending && first_connect.in_progress();
    if state != async_nats::connection::State::Connected && !connecting {
        losses.lost(metrics, 1);
        return;
    }
    match client.publish(subject, payload.into()).await {
        Ok(()) => Metrics::inc(&metrics.pubsub_published_total),
        Err(error) => {
            tracing::debug!(%error, "NATS pub/sub: publish failed");
            losses.lost(metrics, 1);
        }
    }
}

/// Subscribes to the commands subject and, per `pubsub_subscribe`, to every stream subject or to each
/// stream the hub has; follows the hub until `stop`.
pub(super) async fn receive<S: IngressSink>(
    client: async_nats::Client,
    ctx: ReceiverContext,
    delivery: Delivery<S>,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    let delivery = Arc::new(delivery);
    let reader = |subject: String, token: CancellationToken| {
        let (client, delivery) = (client.clone(), delivery.clone());
        async move {
            let mut subscriber = match client.subscribe(subject.clone()).await {
                Ok(subscriber) => subscriber,
                Err(error) => {
                    tracing::error!(%error, "NATS pub/sub: cannot subscribe to {subject}");
                    return;
                }
            };
            loop {
                tokio::select! {
                    message = subscriber.next() => match message {
                        Some(message) => delivery.deliver(&message.payload).await,
                        None => return,
                    },
                    () = token.cancelled() => break,
                }
            }
            let _ = subscriber.unsubscribe().await;
        }
    };
    tasks.spawn(reader(ctx.names.commands.clone(), stop.clone()));
    if ctx.mode == PubSubSubscribe::All {
        tasks.spawn(reader(ctx.names.all_streams(), stop.clone()));
        return;
    }
    let mut subscriptions: HashMap<Arc<str>, CancellationToken> = HashMap::new();
    ctx.changes.clear();
    for stream in ctx.wanted_streams() {
        let token = stop.child_token();
        tasks.spawn(reader(ctx.names.for_stream(&stream), token.clone()));
        subscriptions.insert(stream, token);
    }
    ctx.set_subscribed_gauge(subscriptions.len());
    loop {
        tokio::select! {
            () = ctx.changes.notify.notified() => {}
            () = stop.cancelled() => break,
        }
        let (add, drop) = ctx.changed_streams(|s| subscriptions.contains_key(s));
        for stream in add {
            let token = stop.child_token();
            tasks.spawn(reader(ctx.names.for_stream(&stream), token.clone()));
            subscriptions.insert(stream, token);
        }
        for stream in drop {
            if let Some(token) = subscriptions.remove(&stream) {
                token.cancel();
            }
        }
        ctx.set_subscribed_gauge(subscriptions.len());
    }
    ctx.set_subscribed_gauge(0);
}
