//! Cluster fan-out (`pubsub=redis|nats`): carries every publication and remote disconnect accepted by one
//! node to every other node, through Redis Pub/Sub (`redis.rs`) or NATS (`nats.rs`).
//!
//! Delivery rule: the node that accepted a message delivers it locally at once (through the same ordered
//! workers as always) and publishes it with its node id; other nodes deliver what they receive, and a node
//! ignores its own messages. So each node delivers each message exactly once, local clients keep getting
//! local publications while the engine is down, and per-stream order from one publisher is kept: local
//! delivery and publishing both happen in acceptance order, over one ordered engine connection.
//!
//! Subscriptions (`pubsub_subscribe`): with `all` (default) a node subscribes once to every stream's channel
//! and drops what it has no subscriber for, so a subscription confirmed before a publication was accepted
//! anywhere always gets it; with `stream` it subscribes to the channel of each stream it has subscribers for,
//! following the hub's [`StreamWatcher`] notes — cheaper with many nodes and busy streams, but a publication
//! made elsewhere just after a first local subscriber was confirmed can precede the engine subscription.
//! Publishers always publish to the stream's channel; remote commands use one channel of their own.
//!
//! Outages: the pub/sub is at-most-once. A message that cannot be published is counted in
//! `pubsub_lost_total` and reported when the engine is back; what other nodes publish while this node is
//! disconnected is not received. Engines reconnect with backoff and resubscribe; the node keeps serving.
//! This module never touches sessions: it hands received messages to an [`IngressSink`].

mod nats;
mod redis;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broadcast::{IngressMessage, IngressSink, Reach, encode_node_message, parse_node_message};
use crate::config::{Config, PubSubAdapter, PubSubSubscribe};
use crate::hub::{Hub, StreamWatcher};
use crate::metrics::Metrics;

/// The publishing side of the cluster pub/sub, held by the server.
pub(crate) struct PubSub {
    node_id: Arc<str>,
    names: Names,
    publisher: Publisher,
}

enum Publisher {
    Redis(redis::Publisher),
    Nats(nats::Publisher),
}

/// The receiving side, started once the server exists (it delivers into the server).
pub(crate) struct Receiver {
    node_id: Arc<str>,
    names: Names,
    mode: PubSubSubscribe,
    engine: ReceiverEngine,
    metrics: Arc<Metrics>,
}

enum ReceiverEngine {
    Redis(::redis::Client),
    Nats(async_nats::Client),
}

impl PubSub {
    /// Prepares the pub/sub named by `pubsub`, or `None` for a single node. Connections are opened in the
    /// background; only an invalid engine address is an error.
    pub(crate) async fn new(
        config: &Config,
        metrics: Arc<Metrics>,
        tasks: &TaskTracker,
        stop: &CancellationToken,
    ) -> Result<Option<(Self, Receiver)>, String> {
        let node_id: Arc<str> = node_id().into();
        let losses = Arc::new(Losses::default());
        let (names, publisher, engine) = match config.pubsub {
            PubSubAdapter::None => return Ok(None),
            PubSubAdapter::Redis => {
                let client = crate::engine::redis::client(&config.redis_url)?;
                let names = Names::redis(&config.redis_channel);
                let publisher = redis::Publisher::new(client.clone(), metrics.clone(), losses.clone());
                (names, Publisher::Redis(publisher), ReceiverEngine::Redis(client))
            }
            PubSubAdapter::Nats => {
                let (publisher, client) = nats::Publisher::connect(
                    &config.nats_servers,
                    metrics.clone(),
                    losses.clone(),
                    tasks.clone(),
                    stop.clone(),
                )
                .await?;
                (Names::nats(&config.nats_channel), Publisher::Nats(publisher), ReceiverEngine::Nats(client))
            }
        };
        tracing::info!(
            node = %node_id,
            "cluster pub/sub: {} ({}), subscribing per {}",
            match config.pubsub {
                PubSubAdapter::Redis => crate::config::redact_url(&config.redis_url),
                _ => crate::broadcast::nats::redacted(&config.nats_servers),
            },
            names.commands,
            match config.pubsub_subscribe {
                PubSubSubscribe::Stream => "stream",
                PubSubSubscribe::All => "node (every stream)",
            }
        );
        let receiver = Receiver {
            node_id: node_id.clone(),
            names: names.clone(),
            mode: config.pubsub_subscribe,
            engine,
            metrics: metrics.clone(),
        };
        Ok(Some((Self { node_id, names, publisher }, receiver)))
    }

    /// Publishes a message this node accepted, in order with earlier ones. Never fails: a message the
    /// engine cannot take is counted as lost.
    pub(crate) async fn publish(&self, message: &IngressMessage) {
        let (channel, payload) = self.encode(message);
        match &self.publisher {
            Publisher::Redis(p) => p.publish(channel, payload).await,
            Publisher::Nats(p) => p.publish(channel, payload).await,
        }
    }

    /// Like [`publish`](Self::publish) for callers that cannot wait; a full queue counts as a loss.
    pub(crate) fn try_publish(&self, message: &IngressMessage) {
        let (channel, payload) = self.encode(message);
        match &self.publisher {
            Publisher::Redis(p) => p.try_publish(channel, payload),
            Publisher::Nats(p) => p.try_publish(channel, payload),
        }
    }

    fn encode(&self, message: &IngressMessage) -> (String, Vec<u8>) {
        let channel = match message {
            IngressMessage::Broadcast(p) => self.names.for_stream(&p.stream),
            IngressMessage::Disconnect(_) => self.names.commands.clone(),
        };
        (channel, encode_node_message(&self.node_id, message))
    }

    /// Starts the publisher's background work (Redis keeps its own connection task).
    pub(crate) fn spawn(&self, tasks: &TaskTracker, stop: CancellationToken) {
        if let Publisher::Redis(p) = &self.publisher {
            p.spawn(tasks, stop);
        }
    }

    /// This node's id in the cluster.
    pub(crate) fn node_id(&self) -> &str {
        &self.node_id
    }
}

impl Receiver {
    /// Starts receiving: messages from other nodes go to `sink` as [`Reach::EveryNode`].
    pub(crate) fn spawn<S: IngressSink>(
        self,
        sink: Arc<S>,
        hub: &Arc<Hub>,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) {
        let changes = Arc::new(StreamChanges::default());
        if self.mode == PubSubSubscribe::Stream {
            hub.watch_streams(changes.clone());
        }
        let delivery = Delivery { node_id: self.node_id, sink, metrics: self.metrics.clone() };
        let ctx =
            ReceiverContext { names: self.names, mode: self.mode, hub: hub.clone(), changes, metrics: self.metrics };
        match self.engine {
            ReceiverEngine::Redis(client) => {
                tasks.spawn(redis::receive(client, ctx, delivery, stop));
            }
            ReceiverEngine::Nats(client) => {
                tasks.spawn(nats::receive(client, ctx, delivery, tasks.clone(), stop));
            }
        }
    }
}

/// What both receivers need besides their engine.
struct ReceiverContext {
    names: Names,
    mode: PubSubSubscribe,
    hub: Arc<Hub>,
    changes: Arc<StreamChanges>,
    metrics: Arc<Metrics>,
}

impl ReceiverContext {
    /// The engine channels that should be subscribed right now, commands channel excluded.
    fn wanted_streams(&self) -> Vec<Arc<str>> {
        match self.mode {
            PubSubSubscribe::Stream => self.hub.stream_names(),
            PubSubSubscribe::All => Vec::new(),
        }
    }

    /// Splits the streams noted since the last call into (to subscribe, to unsubscribe).
    fn changed_streams(&self, is_subscribed: impl Fn(&Arc<str>) -> bool) -> (Vec<Arc<str>>, Vec<Arc<str>>) {
        let mut add = Vec::new();
        let mut drop = Vec::new();
        for stream in self.changes.take() {
            match (self.hub.has_stream(&stream), is_subscribed(&stream)) {
                (true, false) => add.push(stream),
                (false, true) => drop.push(stream),
                _ => {}
            }
        }
        (add, drop)
    }

    fn set_subscribed_gauge(&self, streams: usize) {
        self.metrics.pubsub_streams_num.store(streams as i64, Ordering::Relaxed);
    }
}

/// Hands what other nodes published to the server.
struct Delivery<S> {
    node_id: Arc<str>,
    sink: Arc<S>,
    metrics: Arc<Metrics>,
}

impl<S: IngressSink> Delivery<S> {
    async fn deliver(&self, body: &[u8]) {
        match parse_node_message(body) {
            Ok((Some(origin), _)) if *origin == *self.node_id => {}
            Ok((_, message)) => {
                Metrics::inc(&self.metrics.pubsub_received_total);
                self.sink.accept(vec![message], Reach::EveryNode).await;
            }
            Err(error) => {
                tracing::warn!(%error, "cluster pub/sub: malformed message dropped");
            }
        }
    }
}

/// Engine channel names, all derived from the broadcast channel so that clusters sharing one engine but
/// configured with different `redis_channel` / `nats_channel` never hear each other.
#[derive(Debug, Clone)]
struct Names {
    /// Remote commands.
    commands: String,
    /// How a stream's channel is named.
    kind: NameKind,
}

#[derive(Debug, Clone)]
enum NameKind {
    /// `<redis_channel>:stream:<stream>`: Redis channel names are binary-safe.
    Redis { stream_prefix: String },
    /// `<nats_channel>.stream.<stream>` for stream names that are one plain NATS token, otherwise
    /// `<nats_channel>.streamx.<hex of the name>`.
    Nats { channel: String },
}

impl Names {
    fn redis(channel: &str) -> Self {
        Self {
            commands: format!("{channel}:pubsub"),
            kind: NameKind::Redis { stream_prefix: format!("{channel}:stream:") },
        }
    }

    fn nats(channel: &str) -> Self {
        Self { commands: format!("{channel}.pubsub"), kind: NameKind::Nats { channel: channel.to_owned() } }
    }

    /// The channel a stream's publications are published to. Publishers always use the per-stream
    /// channel; a node subscribed with `all` listens to the pattern / wildcard covering them.
    fn for_stream(&self, stream: &str) -> String {
        match &self.kind {
            NameKind::Redis { stream_prefix } => format!("{stream_prefix}{stream}"),
            NameKind::Nats { channel } => {
                let plain =
                    !stream.is_empty() && stream.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_:=+@/".contains(&b));
                if plain {
                    format!("{channel}.stream.{stream}")
                } else {
                    format!("{channel}.streamx.{}", hex::encode(stream))
                }
            }
        }
    }

    /// The subscription that receives every stream's publications (`pubsub_subscribe=all`).
    fn all_streams(&self) -> String {
        match &self.kind {
            NameKind::Redis { stream_prefix } => {
                // PSUBSCRIBE takes a glob: the prefix must match itself only.
                let mut pattern: String = stream_prefix
                    .chars()
                    .flat_map(|c| if "*?[]\\".contains(c) { vec!['\\', c] } else { vec![c] })
                    .collect();
                pattern.push('*');
                pattern
            }
            NameKind::Nats { channel } => format!("{channel}.*.>"),
        }
    }
}

/// Streams whose local subscriber count went from or to zero since the receiver last looked. A set, not a
/// queue: its size is bounded by the number of streams, however fast they churn.
#[derive(Default)]
struct StreamChanges {
    pending: Mutex<HashSet<Arc<str>>>,
    notify: Notify,
}

impl StreamWatcher for StreamChanges {
    fn stream_changed(&self, stream: &Arc<str>) {
        self.pending.lock().insert(stream.clone());
        self.notify.notify_one();
    }
}

impl StreamChanges {
    fn take(&self) -> Vec<Arc<str>> {
        self.pending.lock().drain().collect()
    }

    /// Forgets pending changes (a full resubscription follows).
    fn clear(&self) {
        self.pending.lock().clear();
    }
}

/// Publications this node could not publish, reported once per outage.
#[derive(Default)]
struct Losses {
    in_outage: std::sync::atomic::AtomicBool,
    /// `pubsub_lost_total` when the current outage started.
    at_outage_start: AtomicU64,
}

impl Losses {
    /// Notes that the engine cannot take publications (idempotent during one outage).
    fn outage_started(&self, metrics: &Metrics) {
        if !self.in_outage.swap(true, Ordering::AcqRel) {
            self.at_outage_start.store(metrics.pubsub_lost_total.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    /// Logs what the outage that just ended cost, if one was in progress.
    fn outage_ended(&self, metrics: &Metrics, engine: &str) {
        if !self.in_outage.swap(false, Ordering::AcqRel) {
            return;
        }
        let total = metrics.pubsub_lost_total.load(Ordering::Relaxed);
        let lost = total.saturating_sub(self.at_outage_start.load(Ordering::Relaxed));
        if lost == 0 {
            tracing::info!("cluster pub/sub ({engine}) is back; this node lost no publication meanwhile");
            return;
        }
        tracing::warn!(
            lost,
            lost_total = total,
            "cluster pub/sub ({engine}) is back: {lost} publications/commands accepted by this node during the outage \
             reached its local clients only, and what other nodes published meanwhile was not received here"
        );
    }

    fn lost(&self, metrics: &Metrics, n: u64) {
        self.outage_started(metrics);
        Metrics::add(&metrics.pubsub_lost_total, n);
    }
}

/// A random id for this node, carried by everything it publishes.
fn node_id() -> String {
    (0..12).map(|_| fastrand::alphanumeric()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broadcast::Publication;

    #[test]
    fn stream_channels_are_namespaced_and_valid_nats_subjects() {
        let redis = Names::redis("__anycable__");
        assert_eq!(redis.commands, "__anycable__:pubsub");
        assert_eq!(redis.for_stream("chat 1.*"), "__anycable__:stream:chat 1.*");
        assert_eq!(redis.all_streams(), "__anycable__:stream:*");
        assert_eq!(Names::redis("a*b").all_streams(), "a\\*b:stream:*");
        let nats = Names::nats("__anycable__");
        assert_eq!(nats.commands, "__anycable__.pubsub");
        assert_eq!(nats.for_stream("chat_1"), "__anycable__.stream.chat_1");
        assert_eq!(nats.for_stream("user:1/notifications"), "__anycable__.stream.user:1/notifications");
        assert_eq!(nats.for_stream("a.b >"), format!("__anycable__.streamx.{}", hex::encode("a.b >")));
        assert_eq!(nats.all_streams(), "__anycable__.*.>");
    }

    #[test]
    fn stream_changes_are_a_set() {
        let changes = StreamChanges::default();
        let s: Arc<str> = "s".into();
        changes.stream_changed(&s);
        changes.stream_changed(&s);
        assert_eq!(changes.take(), vec![s]);
        assert!(changes.take().is_empty());
    }

    struct Collect(Mutex<Vec<(IngressMessage, Reach)>>);
    impl IngressSink for Collect {
        async fn accept(&self, messages: Vec<IngressMessage>, reach: Reach) {
            self.0.lock().extend(messages.into_iter().map(|m| (m, reach)));
        }
    }

    #[tokio::test]
    async fn a_node_ignores_its_own_messages() {
        let sink = Arc::new(Collect(Mutex::new(Vec::new())));
        let metrics = Arc::new(Metrics::default());
        let delivery = Delivery { node_id: "me".into(), sink: sink.clone(), metrics: metrics.clone() };
        let message = IngressMessage::Broadcast(Publication::new("s", "1"));
        delivery.deliver(&encode_node_message("me", &message)).await;
        delivery.deliver(&encode_node_message("other", &message)).await;
        delivery.deliver(br#"{"stream":"s","data":"2"}"#).await;
        delivery.deliver(b"garbage").await;
        let got = sink.0.lock().clone();
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|(_, reach)| *reach == Reach::EveryNode));
        assert_eq!(metrics.snapshot().pubsub_received_total, 2);
    }
}
