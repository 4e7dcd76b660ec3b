//! The hub: which clients stream from which stream, and the fan-out of broadcasts to them.
//!
//! Streams are spread over shards so that subscribing and broadcasting never share one global lock.
//! Subscribers of a stream are grouped by channel identifier, because the frame a subscriber receives
//! depends only on (stream, identifier, the client's protocol): it is encoded once per group and protocol and
//! the same bytes go to every member speaking it. Fan-out works on an immutable snapshot of the subscribers, rebuilt only after a change, so no
//! lock is held while frames are queued. Publications of one stream always go through the same worker,
//! which keeps them in order. A subscription whose application handles the stream's broadcasts itself (Action
//! Cable's `stream_from` with a block, in-process handlers only) is a callback member of its group: it gets the
//! publication's data, not a frame, and its session hands it to the handler. The hub also keeps the registry
//! of connected clients (for pings, remote disconnects and shutdown). It knows nothing of RPC or sockets.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;

use crate::broadcast::Publication;
use crate::client::{ClientHandle, CloseRequest, StreamMessage};
use crate::metrics::Metrics;
use crate::protocol::{self, Encoding, Protocol};

const SHARDS: usize = 64;

/// How many protocols a client can speak (the variants of [`Protocol`]): a broadcast has one frame per
/// protocol and group.
const PROTOCOLS: usize = 6;
const _: () = assert!(Protocol::ExtProtobuf as usize + 1 == PROTOCOLS);

type Shards<K, V, S = std::collections::hash_map::RandomState> = Box<[RwLock<HashMap<K, V, S>>]>;

fn new_shards<K, V, S: Default>() -> Shards<K, V, S> {
    (0..SHARDS).map(|_| RwLock::new(HashMap::default())).collect()
}

/// Hashes client ids. They are numbers the server hands out in sequence, never chosen by a client, so no
/// one can pick ids that collide: a bit mixer (SplitMix64's finalizer) does instead of SipHash, which costs
/// several times as much on the connect and teardown path.
#[derive(Default)]
struct ClientIdHasher(u64);

impl Hasher for ClientIdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id;
    }

    fn finish(&self) -> u64 {
        let mut z = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Maps keyed by client id.
type ById<V> = HashMap<u64, V, BuildHasherDefault<ClientIdHasher>>;

/// The registry shard of a client: ids are sequential, so this spreads them evenly.
fn client_shard(id: u64) -> usize {
    (id % SHARDS as u64) as usize
}

/// Subscribers of one stream.
#[derive(Default)]
struct StreamEntry {
    state: Mutex<StreamState>,
}

#[derive(Default)]
struct StreamState {
    /// channel identifier -> its group
    groups: HashMap<Arc<str>, Group>,
    /// What fan-out iterates; `None` after any change until the next broadcast rebuilds it.
    snapshot: Option<Arc<[SnapshotGroup]>>,
}

struct Group {
    /// The identifier already escaped as a JSON string, ready to splice into frames.
    escaped_identifier: Bytes,
    members: ById<Arc<ClientHandle>>,
    /// Members whose handler gets the data of each publication instead of a frame.
    callback_members: ById<Arc<ClientHandle>>,
}

struct SnapshotGroup {
    /// The identifier as it is, for binary frames and callback members.
    identifier: Arc<str>,
    escaped_identifier: Bytes,
    members: Box<[Arc<ClientHandle>]>,
    callback_members: Box<[Arc<ClientHandle>]>,
}

impl StreamState {
    fn snapshot(&mut self) -> Arc<[SnapshotGroup]> {
        self.snapshot
            .get_or_insert_with(|| {
                self.groups
                    .iter()
                    .map(|(identifier, g)| SnapshotGroup {
                        identifier: identifier.clone(),
                        escaped_identifier: g.escaped_identifier.clone(),
                        members: g.members.values().cloned().collect(),
                        callback_members: g.callback_members.values().cloned().collect(),
                    })
                    .collect()
            })
            .clone()
    }
}

/// The clients connected with one set of identifiers: nearly always one (a user's single tab, a `{"sid":…}` of a
/// standalone client), held without a list of its own.
enum Identified {
    One(Arc<ClientHandle>),
    Many(Vec<Arc<ClientHandle>>),
}

impl Identified {
    fn push(&mut self, client: Arc<ClientHandle>) {
        match self {
            Self::One(first) => *self = Self::Many(vec![first.clone(), client]),
            Self::Many(clients) => clients.push(client),
        }
    }

    /// Removes a client; returns whether none is left.
    fn remove(&mut self, client_id: u64) -> bool {
        match self {
            Self::One(client) => client.id == client_id,
            Self::Many(clients) => {
                clients.retain(|c| c.id != client_id);
                clients.is_empty()
            }
        }
    }

    fn to_vec(&self) -> Vec<Arc<ClientHandle>> {
        match self {
            Self::One(client) => vec![client.clone()],
            Self::Many(clients) => clients.clone(),
        }
    }
}

/// Told when a stream gains its first subscriber on this node or loses its last one. The cluster pub/sub
/// uses it to subscribe per stream. Called with the stream's shard locked, so it must only take note.
pub(crate) trait StreamWatcher: Send + Sync {
    fn stream_changed(&self, stream: &Arc<str>);
}

/// The stream index and client registry.
pub struct Hub {
    streams: Shards<Arc<str>, Arc<StreamEntry>>,
    watcher: std::sync::OnceLock<Arc<dyn StreamWatcher>>,
    clients: Shards<u64, Arc<ClientHandle>, BuildHasherDefault<ClientIdHasher>>,
    /// identifiers string -> clients with exactly those identifiers (for remote disconnect)
    by_identifiers: Shards<Arc<str>, Identified>,
    hasher: std::collections::hash_map::RandomState,
    metrics: Arc<Metrics>,
}

impl Hub {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            streams: new_shards(),
            watcher: std::sync::OnceLock::new(),
            clients: new_shards(),
            by_identifiers: new_shards(),
            hasher: Default::default(),
            metrics,
        }
    }

    fn shard_of<T: Hash + ?Sized>(&self, key: &T) -> usize {
        let mut h = self.hasher.build_hasher();
        key.hash(&mut h);
        (h.finish() as usize) % SHARDS
    }

    /// Starts delivering `stream` to `client` under the subscription `identifier`. Returns the hub's own copies of
    /// the stream name and the identifier, for the session to keep instead of its own: thousands of clients on
    /// one stream then hold one string of each, not one per client.
    pub(crate) fn subscribe(
        &self,
        stream: &Arc<str>,
        identifier: &Arc<str>,
        client: &Arc<ClientHandle>,
    ) -> (Arc<str>, Arc<str>) {
        self.add_member(stream, identifier, client, false)
    }

    /// Starts handing the data of `stream`'s publications to `client`'s session, for its handler to run the
    /// subscription `identifier`'s callback (see [`StreamMessage`]). Returns what [`Hub::subscribe`] returns.
    pub(crate) fn subscribe_callback(
        &self,
        stream: &Arc<str>,
        identifier: &Arc<str>,
        client: &Arc<ClientHandle>,
    ) -> (Arc<str>, Arc<str>) {
        self.add_member(stream, identifier, client, true)
    }

    fn add_member(
        &self,
        stream: &Arc<str>,
        identifier: &Arc<str>,
        client: &Arc<ClientHandle>,
        callback: bool,
    ) -> (Arc<str>, Arc<str>) {
        use std::collections::hash_map::Entry;
        let mut shard = self.streams[self.shard_of(&**stream)].write();
        let (stream, entry) = match shard.entry(stream.clone()) {
            Entry::Occupied(found) => (found.key().clone(), found.into_mut()),
            Entry::Vacant(new) => {
                Metrics::up(&self.metrics.broadcast_streams_num);
                if let Some(watcher) = self.watcher.get() {
                    watcher.stream_changed(new.key());
                }
                (new.key().clone(), new.insert(Arc::default()))
            }
        };
        let mut state = entry.state.lock();
        let (identifier, group) = match state.groups.entry(identifier.clone()) {
            Entry::Occupied(found) => (found.key().clone(), found.into_mut()),
            Entry::Vacant(new) => {
                let group = Group {
                    escaped_identifier: Bytes::from(protocol::json_string(new.key())),
                    members: ById::default(),
                    callback_members: ById::default(),
                };
                (new.key().clone(), new.insert(group))
            }
        };
        let (add_to, remove_from) = if callback {
            (&mut group.callback_members, &mut group.members)
        } else {
            (&mut group.members, &mut group.callback_members)
        };
        remove_from.remove(&client.id);
        add_to.insert(client.id, client.clone());
        state.snapshot = None;
        (stream, identifier)
    }

    /// Stops delivering `stream` to `client` under `identifier`.
    pub(crate) fn unsubscribe(&self, stream: &str, identifier: &str, client_id: u64) {
        let mut shard = self.streams[self.shard_of(stream)].write();
        let Some(entry) = shard.get(stream) else { return };
        let mut guard = entry.state.lock();
        let state = &mut *guard;
        if let Some(group) = state.groups.get_mut(identifier) {
            let plain = group.members.remove(&client_id).is_some();
            if plain || group.callback_members.remove(&client_id).is_some() {
                state.snapshot = None;
            }
            if group.members.is_empty() && group.callback_members.is_empty() {
                state.groups.remove(identifier);
            }
        }
        let empty = state.groups.is_empty();
        drop(guard);
        if empty {
            if let Some((name, _)) = shard.remove_entry(stream) {
                if let Some(watcher) = self.watcher.get() {
                    watcher.stream_changed(&name);
                }
            }
            Metrics::down(&self.metrics.broadcast_streams_num);
        }
    }

    /// Installs the stream watcher (once; later calls are ignored).
    pub(crate) fn watch_streams(&self, watcher: Arc<dyn StreamWatcher>) {
        let _ = self.watcher.set(watcher);
    }

    /// Whether `stream` has at least one subscriber on this node.
    pub(crate) fn has_stream(&self, stream: &str) -> bool {
        self.streams[self.shard_of(stream)].read().contains_key(stream)
    }

    /// Every stream with at least one subscriber on this node.
    pub(crate) fn stream_names(&self) -> Vec<Arc<str>> {
        self.streams.iter().flat_map(|shard| shard.read().keys().cloned().collect::<Vec<_>>()).collect()
    }

    /// Delivers one publication to every subscriber of its stream; returns how many clients got it.
    pub(crate) fn deliver(&self, publication: &Publication) -> usize {
        let entry =
            match self.streams[self.shard_of(publication.stream.as_str())].read().get(publication.stream.as_str()) {
                Some(entry) => entry.clone(),
                None => return 0,
            };
        let snapshot = entry.state.lock().snapshot();
        let payload = protocol::broadcast_payload(&publication.data);
        // Extended-protocol clients get the stream position too; escaped once per publication.
        let position = publication
            .position
            .as_ref()
            .map(|p| (protocol::json_string(&publication.stream), protocol::json_string(&p.epoch), p.offset));
        let exclude = publication.exclude_socket.as_deref();
        // The payload as MessagePack, packed once per publication when a binary client is there.
        let mut packed: Option<Bytes> = None;
        let mut delivered = 0;
        let mut refused = 0u64;
        for group in snapshot.iter() {
            // Each encoded once per group, when a member needs it: one slot per protocol.
            let mut frames: [Option<Bytes>; PROTOCOLS] = Default::default();
            for client in group.members.iter() {
                if exclude.is_some_and(|sid| *client.sid == *sid) {
                    continue;
                }
                let protocol = client.protocol;
                let frame = frames[protocol as usize].get_or_insert_with(|| {
                    if publication.presence {
                        // Presence events are JSON frames, re-encoded on the way out for binary clients.
                        return protocol::presence::presence_frame(&group.escaped_identifier, &payload);
                    }
                    let extended = protocol.is_extended();
                    match protocol.encoding() {
                        Encoding::Json => match position.as_ref().filter(|_| extended) {
                            Some((stream, epoch, offset)) => protocol::positioned_message_frame(
                                &group.escaped_identifier,
                                &payload,
                                stream.as_bytes(),
                                epoch.as_bytes(),
                                *offset,
                            ),
                            None => protocol::message_frame(&group.escaped_identifier, &payload),
                        },
                        encoding => {
                            let packed = packed.get_or_insert_with(|| protocol::msgpack::pack_json(&payload));
                            let at = publication
                                .position
                                .as_ref()
                                .filter(|_| extended)
                                .map(|p| (publication.stream.as_str(), &*p.epoch, p.offset));
                            protocol::binary_message_frame(encoding, &group.identifier, packed, at)
                        }
                    }
                });
                if client.send(frame.clone()) {
                    delivered += 1;
                } else {
                    // Closing, or just found too slow: the frame is dropped for this client.
                    refused += 1;
                }
            }
            // Presence events are the server's own frames, not the application's broadcasts.
            if group.callback_members.is_empty() || publication.presence {
                continue;
            }
            let stream: Arc<str> = publication.stream.as_str().into();
            let data: Arc<str> = publication.data.as_str().into();
            for client in group.callback_members.iter() {
                if exclude.is_some_and(|sid| *client.sid == *sid) {
                    continue;
                }
                let message =
                    StreamMessage { identifier: group.identifier.clone(), stream: stream.clone(), data: data.clone() };
                if client.send_stream_message(message) {
                    delivered += 1;
                } else {
                    refused += 1;
                }
            }
        }
        if refused > 0 {
            Metrics::add(&self.metrics.failed_server_msg_total, refused);
        }
        delivered
    }

    /// Adds a client to the registry.
    pub(crate) fn add_client(&self, client: &Arc<ClientHandle>) {
        self.clients[client_shard(client.id)].write().insert(client.id, client.clone());
    }

    /// Records the identifiers a client was accepted with, for remote disconnects.
    pub(crate) fn identify(&self, client: &Arc<ClientHandle>, identifiers: &Arc<str>) {
        let mut shard = self.by_identifiers[self.shard_of(&**identifiers)].write();
        match shard.entry(identifiers.clone()) {
            std::collections::hash_map::Entry::Occupied(mut entry) => entry.get_mut().push(client.clone()),
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(Identified::One(client.clone()));
            }
        }
    }

    /// Removes a client from the registry (and the identifiers index when given).
    pub(crate) fn remove_client(&self, client_id: u64, identifiers: Option<&str>) {
        self.clients[client_shard(client_id)].write().remove(&client_id);
        if let Some(ids) = identifiers {
            let mut shard = self.by_identifiers[self.shard_of(ids)].write();
            if shard.get_mut(ids).is_some_and(|clients| clients.remove(client_id)) {
                shard.remove(ids);
            }
        }
    }

    /// Asks every client with exactly these identifiers to close; returns how many there were.
    pub(crate) fn disconnect_identified(&self, identifiers: &str, request: &CloseRequest) -> usize {
        let clients = self.by_identifiers[self.shard_of(identifiers)].read().get(identifiers).map(Identified::to_vec);
        let clients = clients.unwrap_or_default();
        for client in &clients {
            client.close(request.clone());
        }
        clients.len()
    }

    /// Calls `f` for every registered client, shard by shard (no lock is held across shards).
    pub(crate) fn for_each_client(&self, mut f: impl FnMut(&Arc<ClientHandle>)) {
        for shard in self.clients.iter() {
            let clients: Vec<Arc<ClientHandle>> = shard.read().values().cloned().collect();
            clients.iter().for_each(&mut f);
        }
    }

    /// Number of registered clients.
    pub fn clients_count(&self) -> usize {
        self.clients.iter().map(|s| s.read().len()).sum()
    }

    /// Number of distinct connection identifiers among connected clients.
    pub fn unique_identifiers_count(&self) -> usize {
        self.by_identifiers.iter().map(|s| s.read().len()).sum()
    }

    /// Number of streams with at least one subscriber.
    pub fn streams_count(&self) -> usize {
        self.streams.iter().map(|s| s.read().len()).sum()
    }
}

/// Registers publications with the broker before they are delivered, and hands them, with their
/// position, to the cluster pub/sub. Runs inside the stream's worker, so offsets follow delivery order.
pub(crate) struct Registrar {
    pub broker: Arc<dyn crate::broker::Broker>,
    pub pubsub: Option<Arc<crate::pubsub::PubSub>>,
    /// Set while registering fails, so an outage is logged when it starts and when it ends.
    failing: std::sync::atomic::AtomicBool,
}

impl Registrar {
    pub(crate) fn new(broker: Arc<dyn crate::broker::Broker>, pubsub: Option<Arc<crate::pubsub::PubSub>>) -> Self {
        Self { broker, pubsub, failing: Default::default() }
    }

    async fn register(&self, publication: Publication) -> Publication {
        use std::sync::atomic::Ordering::Relaxed;
        let mut publication = publication;
        match self.broker.register(&publication.stream, &publication.data).await {
            Ok(position) => {
                if self.failing.swap(false, Relaxed) {
                    tracing::info!("broker is back: broadcasts are registered again");
                }
                publication.position = Some(position);
            }
            Err(error) => {
                if !self.failing.swap(true, Relaxed) {
                    tracing::warn!(%error, "broker cannot register broadcasts: they are delivered without a position and not kept in history");
                }
            }
        }
        match &self.pubsub {
            Some(pubsub) => {
                let message = crate::broadcast::IngressMessage::Broadcast(publication);
                pubsub.publish(&message).await;
                match message {
                    crate::broadcast::IngressMessage::Broadcast(publication) => publication,
                    crate::broadcast::IngressMessage::Disconnect(_) => unreachable!("built as a broadcast above"),
                }
            }
            None => publication,
        }
    }
}

/// Per-stream ordered delivery: publications are routed to a fixed worker by stream name.
pub(crate) struct BroadcastQueue {
    /// Each publication with whether it is to be registered first.
    workers: Box<[mpsc::Sender<(Publication, bool)>]>,
    hasher: std::collections::hash_map::RandomState,
}

/// Publications waiting per worker before publishers wait.
const WORKER_QUEUE: usize = 4096;

impl BroadcastQueue {
    /// Starts `count` fan-out workers on the current runtime, tracked by `tracker`, registering through
    /// `registrar` what is published to be registered. Workers stop when `stop` is cancelled or every sender
    /// is gone.
    pub(crate) fn start(
        hub: Arc<Hub>,
        count: usize,
        registrar: Option<Arc<Registrar>>,
        tracker: &tokio_util::task::TaskTracker,
        stop: tokio_util::sync::CancellationToken,
    ) -> Self {
        let workers = (0..count.max(1))
            .map(|_| {
                let (tx, mut rx) = mpsc::channel::<(Publication, bool)>(WORKER_QUEUE);
                let hub = hub.clone();
                let stop = stop.clone();
                let registrar = registrar.clone();
                tracker.spawn(async move {
                    // Registered publications of other nodes arrive later than this node's own: delivered in
                    // offset order per stream (see `ordering.rs`).
                    let mut order = crate::ordering::Ordering::default();
                    loop {
                        let deadline = order.next_deadline();
                        let ready = tokio::select! {
                            biased;
                            p = rx.recv() => match p {
                                Some((publication, register)) => {
                                    let publication = match (&registrar, register) {
                                        (Some(registrar), true) => registrar.register(publication).await,
                                        _ => publication,
                                    };
                                    order.accept(publication, std::time::Instant::now())
                                }
                                None => break,
                            },
                            () = async {
                                match deadline {
                                    Some(at) => tokio::time::sleep_until(at.into()).await,
                                    None => std::future::pending().await,
                                }
                            } => order.expire(std::time::Instant::now()),
                            () = stop.cancelled() => break,
                        };
                        for publication in ready {
                            Metrics::inc(&hub.metrics.broadcast_msg_total);
                            let delivered = hub.deliver(&publication);
                            Metrics::add(&hub.metrics.server_msg_total, delivered as u64);
                        }
                    }
                });
                tx
            })
            .collect();
        Self { workers, hasher: Default::default() }
    }

    /// Queues a publication, waiting only if its worker is saturated. With `register`, the worker registers it
    /// with the broker (and publishes it to the cluster) before delivering it.
    pub(crate) async fn publish(&self, publication: Publication, register: bool) {
        let mut h = self.hasher.build_hasher();
        publication.stream.hash(&mut h);
        let worker = &self.workers[(h.finish() as usize) % self.workers.len()];
        // A send error means the server is shutting down; the publication has nowhere to go.
        let _ = worker.send((publication, register)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PingPrecision;

    #[test]
    fn client_ids_of_one_shard_spread_over_the_buckets_of_its_map() {
        // One shard holds every 64th id; a map of 1,024 buckets indexes by the low bits of the hash.
        let hash = |id: u64| BuildHasherDefault::<ClientIdHasher>::default().hash_one(id);
        let ids: Vec<u64> = (0..1024).map(|n| 7 + n * SHARDS as u64).collect();
        assert!(ids.iter().all(|id| client_shard(*id) == 7));
        let buckets: std::collections::HashSet<u64> = ids.iter().map(|id| hash(*id) & 1023).collect();
        assert!(buckets.len() > 600, "{} of 1024 buckets used", buckets.len());
        let tags: std::collections::HashSet<u64> = ids.iter().map(|id| hash(*id) >> 57).collect();
        assert!(tags.len() > 100, "{} of 128 control tags used", tags.len());
    }

    fn client(id: u64) -> Arc<ClientHandle> {
        Arc::new(ClientHandle::new(id, format!("sid{id}").into(), 64, None, PingPrecision::Seconds, Protocol::Json))
    }

    fn frames(c: &ClientHandle) -> Vec<String> {
        c.drain().frames.into_iter().map(|b| String::from_utf8(b.to_vec()).unwrap()).collect()
    }

    #[test]
    fn delivers_one_frame_per_identifier_and_honours_exclude_socket() {
        let hub = Hub::new(Arc::default());
        let (a, b, c) = (client(1), client(2), client(3));
        let stream: Arc<str> = "chat".into();
        let id1: Arc<str> = r#"{"channel":"A"}"#.into();
        let id2: Arc<str> = r#"{"channel":"B"}"#.into();
        hub.subscribe(&stream, &id1, &a);
        hub.subscribe(&stream, &id1, &b);
        hub.subscribe(&stream, &id2, &c);
        let mut p = Publication::new("chat", r#"{"n":1}"#);
        p.exclude_socket = Some("sid2".into());
        assert_eq!(hub.deliver(&p), 2);
        assert_eq!(frames(&a), vec![r#"{"identifier":"{\"channel\":\"A\"}","message":{"n":1}}"#]);
        assert!(frames(&b).is_empty());
        assert_eq!(frames(&c), vec![r#"{"identifier":"{\"channel\":\"B\"}","message":{"n":1}}"#]);
    }

    #[test]
    fn subscribers_of_one_stream_and_identifier_get_the_hubs_strings_back() {
        let hub = Hub::new(Arc::default());
        let (a, b) = (client(1), client(2));
        let first: (Arc<str>, Arc<str>) = ("room".into(), r#"{"channel":"Room"}"#.into());
        let second: (Arc<str>, Arc<str>) = ("room".into(), r#"{"channel":"Room"}"#.into());
        let (stream_a, id_a) = hub.subscribe(&first.0, &first.1, &a);
        assert!(Arc::ptr_eq(&stream_a, &first.0) && Arc::ptr_eq(&id_a, &first.1));
        let (stream_b, id_b) = hub.subscribe_callback(&second.0, &second.1, &b);
        assert!(Arc::ptr_eq(&stream_b, &first.0), "the second subscriber gets the first one's stream name");
        assert!(Arc::ptr_eq(&id_b, &first.1), "and its identifier");
        // The strings stay valid for a subscriber after the one that brought them has left.
        hub.unsubscribe("room", r#"{"channel":"Room"}"#, 1);
        drop(first);
        assert_eq!((&*stream_b, &*id_b), ("room", r#"{"channel":"Room"}"#));
        assert_eq!(hub.deliver(&Publication::new("room", "1")), 1);
    }

    #[test]
    fn callback_members_get_the_publication_data_and_everyone_else_the_frame() {
        let hub = Hub::new(Arc::default());
        let (plain, callback) = (client(1), client(2));
        let stream: Arc<str> = "news".into();
        let id: Arc<str> = r#"{"channel":"News"}"#.into();
        hub.subscribe(&stream, &id, &plain);
        hub.subscribe_callback(&stream, &id, &callback);
        assert_eq!(hub.deliver(&Publication::new("news", r#"{"n":1}"#)), 2);
        assert_eq!(frames(&plain), vec![r#"{"identifier":"{\"channel\":\"News\"}","message":{"n":1}}"#]);
        let drained = callback.drain();
        assert!(drained.frames.is_empty());
        let messages = drained.stream_messages.expect("a stream message");
        assert_eq!(messages.len(), 1);
        assert_eq!((&*messages[0].identifier, &*messages[0].stream, &*messages[0].data), (&*id, "news", r#"{"n":1}"#));

        hub.unsubscribe("news", &id, callback.id);
        assert_eq!(hub.deliver(&Publication::new("news", "2")), 1);
        assert!(callback.drain().stream_messages.is_none());
        hub.unsubscribe("news", &id, plain.id);
        assert!(!hub.has_stream("news"));
    }

    #[test]
    fn extended_clients_get_the_stream_position_and_plain_clients_the_same_frame_as_always() {
        let hub = Hub::new(Arc::default());
        let plain = client(1);
        let ext = Arc::new(ClientHandle::new(2, "sid2".into(), 64, None, PingPrecision::Seconds, Protocol::ExtJson));
        let stream: Arc<str> = "chat".into();
        let id: Arc<str> = "i".into();
        hub.subscribe(&stream, &id, &plain);
        hub.subscribe(&stream, &id, &ext);
        let mut p = Publication::new("chat", r#"{"n":1}"#);
        p.position = Some(crate::broker::StreamPosition { offset: 12, epoch: "ep".into() });
        assert_eq!(hub.deliver(&p), 2);
        assert_eq!(frames(&plain), vec![r#"{"identifier":"i","message":{"n":1}}"#]);
        assert_eq!(
            frames(&ext),
            vec![r#"{"identifier":"i","message":{"n":1},"stream_id":"chat","epoch":"ep","offset":12}"#]
        );
        // Not registered (no broker, or transient): both get the plain frame.
        assert_eq!(hub.deliver(&Publication::new("chat", "2")), 2);
        assert_eq!(frames(&plain), frames(&ext));
    }

    #[test]
    fn a_broadcast_is_encoded_once_per_identifier_and_protocol_and_shared_by_its_clients() {
        let hub = Hub::new(Arc::default());
        let protocols =
            [Protocol::Json, Protocol::Msgpack, Protocol::ExtMsgpack, Protocol::Protobuf, Protocol::ExtProtobuf];
        let clients: Vec<Vec<Arc<ClientHandle>>> = protocols
            .iter()
            .enumerate()
            .map(|(n, protocol)| {
                (0..3u64)
                    .map(|k| {
                        let id = n as u64 * 10 + k;
                        Arc::new(ClientHandle::new(
                            id,
                            format!("sid{id}").into(),
                            64,
                            None,
                            PingPrecision::Seconds,
                            *protocol,
                        ))
                    })
                    .collect()
            })
            .collect();
        let stream: Arc<str> = "chat".into();
        let id: Arc<str> = r#"{"channel":"A"}"#.into();
        clients.iter().flatten().for_each(|c| {
            hub.subscribe(&stream, &id, c);
        });
        let mut p = Publication::new("chat", r#"{"n":1}"#);
        p.position = Some(crate::broker::StreamPosition { offset: 3, epoch: "ep".into() });
        assert_eq!(hub.deliver(&p), 15);
        let received: Vec<Vec<Bytes>> =
            clients.iter().map(|group| group.iter().map(|c| c.drain().frames.pop_front().unwrap()).collect()).collect();
        for (protocol, frames) in protocols.iter().zip(&received) {
            // The very same buffer for every client of one protocol: encoded once, not per recipient.
            assert!(frames.iter().all(|f| f.as_ptr() == frames[0].as_ptr()), "{protocol:?}");
            let expected = protocol::binary_message_frame(
                protocol.encoding(),
                &id,
                &protocol::msgpack::pack_json(br#"{"n":1}"#),
                protocol.is_extended().then_some(("chat", "ep", 3)),
            );
            if protocol.encoding().is_binary() {
                assert_eq!(frames[0], expected, "{protocol:?}");
            }
        }
        assert_eq!(&received[0][0][..], br#"{"identifier":"{\"channel\":\"A\"}","message":{"n":1}}"#);
        assert_ne!(received[1][0], received[2][0], "the extended frame carries the position");
    }

    #[test]
    fn unsubscribe_stops_delivery_and_forgets_empty_streams() {
        let hub = Hub::new(Arc::default());
        let a = client(1);
        let stream: Arc<str> = "s".into();
        let id: Arc<str> = "i".into();
        hub.subscribe(&stream, &id, &a);
        assert_eq!(hub.streams_count(), 1);
        hub.unsubscribe("s", "i", 1);
        assert_eq!(hub.streams_count(), 0);
        assert_eq!(hub.deliver(&Publication::new("s", "x")), 0);
        assert!(frames(&a).is_empty());
    }

    #[test]
    fn remote_disconnect_reaches_every_client_with_those_identifiers_only() {
        let hub = Hub::new(Arc::default());
        let (a, b, c) = (client(1), client(2), client(3));
        let ids: Arc<str> = r#"{"user":"1"}"#.into();
        hub.identify(&a, &ids);
        hub.identify(&b, &ids);
        hub.identify(&c, &Arc::from(r#"{"user":"2"}"#));
        let req = CloseRequest::with_disconnect_frame("remote", false, 1000);
        assert_eq!(hub.disconnect_identified(r#"{"user":"1"}"#, &req), 2);
        assert!(a.is_closing() && b.is_closing() && !c.is_closing());
        hub.remove_client(1, Some(&ids));
        assert_eq!(hub.disconnect_identified(r#"{"user":"1"}"#, &req), 1);
        assert_eq!(hub.unique_identifiers_count(), 2);
        hub.remove_client(2, Some(&ids));
        hub.remove_client(3, Some(r#"{"user":"2"}"#));
        assert_eq!(hub.unique_identifiers_count(), 0, "an identity goes with its last client, one or many");
        assert_eq!(hub.disconnect_identified(r#"{"user":"2"}"#, &req), 0);
    }

    #[tokio::test]
    async fn publications_of_one_stream_arrive_in_order() {
        let hub = Arc::new(Hub::new(Arc::default()));
        let a = Arc::new(ClientHandle::new(1, "s".into(), 10_000, None, PingPrecision::Seconds, Protocol::Json));
        hub.subscribe(&Arc::from("s"), &Arc::from("i"), &a);
        let tracker = tokio_util::task::TaskTracker::new();
        let queue = BroadcastQueue::start(hub.clone(), 4, None, &tracker, Default::default());
        for n in 0..1000 {
            queue.publish(Publication::new("s", n.to_string()), false).await;
        }
        drop(queue);
        tracker.close();
        tracker.wait().await;
        let got: Vec<String> = frames(&a);
        let expected: Vec<String> = (0..1000).map(|n| format!(r#"{{"identifier":"i","message":{n}}}"#)).collect();
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn registered_publications_get_offsets_in_delivery_order() {
        let hub = Arc::new(Hub::new(Arc::default()));
        let a = Arc::new(ClientHandle::new(1, "s".into(), 10_000, None, PingPrecision::Seconds, Protocol::ExtJson));
        hub.subscribe(&Arc::from("s"), &Arc::from("i"), &a);
        let broker = Arc::new(crate::broker::memory::MemoryBroker::new(crate::broker::Limits {
            history_limit: 10,
            history_ttl: 60,
            sessions_ttl: 60,
        }));
        let registrar = Arc::new(Registrar::new(broker.clone(), None));
        let tracker = tokio_util::task::TaskTracker::new();
        let queue = BroadcastQueue::start(hub.clone(), 4, Some(registrar), &tracker, Default::default());
        for n in 0..100 {
            queue.publish(Publication::new("s", n.to_string()), true).await;
        }
        queue.publish(Publication { transient: true, ..Publication::new("s", "t") }, false).await;
        drop(queue);
        tracker.close();
        tracker.wait().await;
        let got: Vec<serde_json::Value> = frames(&a).iter().map(|f| serde_json::from_str(f).unwrap()).collect();
        for (n, frame) in got.iter().take(100).enumerate() {
            assert_eq!(frame["message"], n);
            assert_eq!(frame["offset"], n + 1);
            assert_eq!(frame["epoch"], broker.epoch());
        }
        assert_eq!(got[100], serde_json::json!({"identifier": "i", "message": "t"}), "not registered: no position");
        assert_eq!(broker.counts(), (1, 10), "history_limit kept");
    }
}
