//! The Redis engine of the cluster pub/sub: `PUBLISH` over one multiplexed connection (pipelined, in
//! order) and `SUBSCRIBE` / `PSUBSCRIBE` over one dedicated connection.
//!
//! Both connections reconnect with backoff on their own. While the publisher is disconnected, what it is
//! given is counted as lost instead of queued, so publishers never wait on a dead engine; after the
//! subscriber reconnects it resubscribes to every stream the hub has at that moment.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Delivery, Losses, ReceiverContext};
use crate::broadcast::IngressSink;
use crate::config::PubSubSubscribe;
use crate::engine::{self, Backoff, CONNECT_TIMEOUT, Outage, sleep_or_stop};
use crate::metrics::Metrics;

/// Messages waiting for the publisher connection before publishers wait.
const QUEUE: usize = 8192;
/// Most PUBLISH commands sent in one pipeline.
const BATCH: usize = 256;
/// Channels per SUBSCRIBE command when (re)subscribing many streams.
const SUBSCRIBE_BATCH: usize = 256;
/// A command the server does not answer in this time counts as a lost connection.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the subscriber connection is pinged: a silent subscriber cannot otherwise tell a quiet
/// cluster from a dead connection (a half-open TCP connection never reports an error).
const KEEPALIVE: Duration = Duration::from_secs(10);

struct Outgoing {
    channel: String,
    payload: Vec<u8>,
}

/// Publishes in acceptance order through one background task.
pub(super) struct Publisher {
    tx: mpsc::Sender<Outgoing>,
    /// Taken by [`Publisher::spawn`].
    pending: Mutex<Option<(mpsc::Receiver<Outgoing>, redis::Client)>>,
    metrics: Arc<Metrics>,
    losses: Arc<Losses>,
}

impl Publisher {
    pub(super) fn new(client: redis::Client, metrics: Arc<Metrics>, losses: Arc<Losses>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self { tx, pending: Mutex::new(Some((rx, client))), metrics, losses }
    }

    pub(super) async fn publish(&self, channel: String, payload: Vec<u8>) {
        if self.tx.send(Outgoing { channel, payload }).await.is_err() {
            // The publisher task is gone: the server is shutting down.
            self.losses.lost(&self.metrics, 1);
        }
    }

    pub(super) fn try_publish(&self, channel: String, payload: Vec<u8>) {
        if let Err(error) = self.tx.try_send(Outgoing { channel, payload }) {
            tracing::warn!("cluster pub/sub: a remote command could not be queued for publishing ({error})");
            self.losses.lost(&self.metrics, 1);
        }
    }

    pub(super) fn spawn(&self, tasks: &TaskTracker, stop: CancellationToken) {
        if let Some((rx, client)) = self.pending.lock().take() {
            tasks.spawn(run_publisher(client, rx, self.metrics.clone(), self.losses.clone(), stop));
        }
    }
}

async fn run_publisher(
    client: redis::Client,
    mut rx: mpsc::Receiver<Outgoing>,
    metrics: Arc<Metrics>,
    losses: Arc<Losses>,
    stop: CancellationToken,
) {
    let mut outage = Outage::new(format!("Redis pub/sub publisher ({})", client.get_connection_info().addr()));
    let mut backoff = Backoff::default();
    let consequence = "publications reach this node's clients only until it is back";
    let mut batch: Vec<Outgoing> = Vec::with_capacity(BATCH);
    loop {
        // Connect. Publishers wait for an attempt in progress (the queue holds them); after a failed one,
        // while the engine is known to be down, whatever arrives is counted as lost instead.
        let mut conn = loop {
            let result = tokio::select! {
                r = engine::redis::connect(&client, RESPONSE_TIMEOUT) => r,
                () = stop.cancelled() => return,
            };
            match result {
                Ok(conn) => break conn,
                Err(error) => {
                    losses.outage_started(&metrics);
                    outage.down(&error, consequence);
                    let pause = tokio::time::sleep(backoff.next_delay());
                    tokio::pin!(pause);
                    loop {
                        tokio::select! {
                            () = &mut pause => break,
                            m = rx.recv() => match m {
                                Some(_) => losses.lost(&metrics, 1),
                                None => return,
                            },
                            () = stop.cancelled() => return,
                        }
                    }
                }
            }
        };
        outage.up();
        losses.outage_ended(&metrics, "Redis");
        backoff.reset();
        // Publish in order, pipelining whatever is already waiting.
        loop {
            let first = tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => m,
                    None => return,
                },
                () = stop.cancelled() => return,
            };
            batch.push(first);
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let mut pipe = redis::pipe();
            for m in &batch {
                pipe.cmd("PUBLISH").arg(&m.channel).arg(&m.payload).ignore();
            }
            let sent = pipe.query_async::<()>(&mut conn).await;
            let n = batch.len() as u64;
            batch.clear();
            match sent {
                Ok(()) => Metrics::add(&metrics.pubsub_published_total, n),
                Err(error) => {
                    // Some of them may have been published: at most once.
                    losses.lost(&metrics, n);
                    outage.down(&error, consequence);
                    break;
                }
            }
        }
    }
}

/// Receives until `stop`, reconnecting and resubscribing after every lost connection.
pub(super) async fn receive<S: IngressSink>(
    client: redis::Client,
    ctx: ReceiverContext,
    delivery: Delivery<S>,
    stop: CancellationToken,
) {
    let mut outage = Outage::new(format!("Redis pub/sub subscriber ({})", client.get_connection_info().addr()));
    let mut backoff = Backoff::default();
    let mut subscribed: HashSet<Arc<str>> = HashSet::new();
    loop {
        let ended = tokio::select! {
            e = session(&client, &ctx, &delivery, &mut subscribed, &mut outage, &mut backoff) => e,
            () = stop.cancelled() => return,
        };
        subscribed.clear();
        ctx.set_subscribed_gauge(0);
        outage.down(&ended, "publications of other nodes are not received until it is back");
        if sleep_or_stop(backoff.next_delay(), &stop).await {
            return;
        }
    }
}

/// One connection: subscribe to everything wanted, then deliver and follow the hub until the connection fails.
async fn session<S: IngressSink>(
    client: &redis::Client,
    ctx: &ReceiverContext,
    delivery: &Delivery<S>,
    subscribed: &mut HashSet<Arc<str>>,
    outage: &mut Outage,
    backoff: &mut Backoff,
) -> redis::RedisError {
    let pubsub = match engine::redis::pubsub(client).await {
        Ok(pubsub) => pubsub,
        Err(error) => return error,
    };
    let (mut sink, mut messages) = pubsub.split();
    if let Err(error) = timed(sink.subscribe(&ctx.names.commands)).await {
        return error;
    }
    match ctx.mode {
        PubSubSubscribe::All => {
            if let Err(error) = timed(sink.psubscribe(ctx.names.all_streams())).await {
                return error;
            }
        }
        PubSubSubscribe::Stream => {
            ctx.changes.clear();
            let wanted = ctx.wanted_streams();
            for chunk in wanted.chunks(SUBSCRIBE_BATCH) {
                let channels: Vec<String> = chunk.iter().map(|s| ctx.names.for_stream(s)).collect();
                if let Err(error) = timed(sink.subscribe(&channels)).await {
                    return error;
                }
                subscribed.extend(chunk.iter().cloned());
            }
            ctx.set_subscribed_gauge(subscribed.len());
        }
    }
    outage.up();
    backoff.reset();
    let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
    loop {
        tokio::select! {
            _ = keepalive.tick() => {
                let ping = async { sink.ping::<redis::Value>().await.map(|_| ()) };
                if let Err(error) = timed(ping).await {
                    return error;
                }
            }
            message = messages.next() => match message {
                Some(message) => delivery.deliver(message.get_payload_bytes()).await,
                None => return closed(),
            },
            () = ctx.changes.notify.notified(), if ctx.mode == PubSubSubscribe::Stream => {
                let (add, drop) = ctx.changed_streams(|s| subscribed.contains(s));
                for chunk in add.chunks(SUBSCRIBE_BATCH) {
                    let channels: Vec<String> = chunk.iter().map(|s| ctx.names.for_stream(s)).collect();
                    if let Err(error) = timed(sink.subscribe(&channels)).await {
                        return error;
                    }
                    subscribed.extend(chunk.iter().cloned());
                }
                for chunk in drop.chunks(SUBSCRIBE_BATCH) {
                    let channels: Vec<String> = chunk.iter().map(|s| ctx.names.for_stream(s)).collect();
                    if let Err(error) = timed(sink.unsubscribe(&channels)).await {
                        return error;
                    }
                    for s in chunk {
                        subscribed.remove(s);
                    }
                }
                ctx.set_subscribed_gauge(subscribed.len());
            }
        }
    }
}

/// A (un)subscribe that the server does not confirm in time fails like a lost connection.
async fn timed(request: impl std::future::Future<Output = redis::RedisResult<()>>) -> redis::RedisResult<()> {
    match tokio::time::timeout(CONNECT_TIMEOUT, request).await {
        Ok(result) => result,
        Err(_) => {
            Err(redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer from Redis")))
        }
    }
}

fn closed() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection closed"))
}
