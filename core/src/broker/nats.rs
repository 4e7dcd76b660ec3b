//! The `nats` broker: stream history in NATS JetStream and the session cache in a JetStream key-value
//! bucket, shared by every node connected to the same NATS (cluster).
//!
//! Needs a `nats-server` with JetStream enabled (`-js`, or `jetstream` in its config; the embedded server
//! enables it when `broker=nats`), 2.9 or later, so Debian's serves it. Layout, as AnyCable-Go lays out
//! its own (one JetStream stream per stream, key-value buckets for the epoch and the sessions), with our
//! own names so that the two never share data by accident:
//!
//! - A JetStream stream per stream, named (and subscribed to the subject) `_fc_h_<hex>`, where `<hex>` is
//!   the first 16 bytes of the SHA-256 of the stream's name (JetStream names cannot hold `.`, `*`, `>`,
//!   `/` or spaces, which stream names can). Its sequence is the offset, so offsets are unique and
//!   contiguous whichever node registers. It keeps `history_limit` messages (`max_messages`) for
//!   `history_ttl` seconds (`max_age`, expired by the NATS server to the second); an emptied stream keeps
//!   its last sequence. Created on first registration with the limits of that moment: a later change of
//!   `history_limit` or `history_ttl` applies to streams created afterwards.
//! - Bucket `ferrocable_epoch`, key `epoch`: the epoch of every node, created once. When JetStream loses
//!   its storage the bucket is gone and the next node to notice creates a new epoch; earlier positions are
//!   then refused. A node re-reads the epoch before a history read, when it creates a stream, and at most
//!   once a second while registering.
//! - Bucket `ferrocable_sessions` (`max_age` = `sessions_ttl`; not created when it is 0), key = the session
//!   id: commit is a put (which restarts the ttl), restore reads the entry and purges it only if it was not
//!   changed meanwhile (so a session is restored at most once across nodes), touch writes it again.
//! - Buckets `ferrocable_presence` and `ferrocable_presence_sessions`: the presence sets and the sessions
//!   present in them (`crate::presence::nats`).
//!
//! Each stream is a JetStream stream of its own, and JetStream keeps an emptied stream: a deployment with
//! very many short-lived streams grows NATS' stream count (see docs/cluster.md).
//!
//! NATS being down never blocks a node: the client reconnects by itself (with backoff, logged once per
//! outage), and meanwhile every call fails at once with `BrokerError::Unavailable`; requests that reach a
//! server which does not answer fail within three seconds (the first calls after JetStream lost its storage
//! do, until the node has set up its buckets again). One registration made in the instant NATS dies,
//! before the client notices, fails for the caller but may still be stored when NATS is back (the client
//! sends what it had queued on reconnect): a restored client can then receive that one message again.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use async_trait::async_trait;
use parking_lot::RwLock;
use sha2::Digest;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Broker, BrokerError, History, HistoryEntry, HistoryError, Limits, StreamPosition};

/// The prefix of every stream's JetStream stream and subject.
pub const STREAM_PREFIX: &str = "_fc_h_";
/// The bucket of the epoch.
pub const EPOCH_BUCKET: &str = "ferrocable_epoch";
/// The bucket of the cached sessions.
pub const SESSIONS_BUCKET: &str = "ferrocable_sessions";
const EPOCH_KEY: &str = "epoch";
/// A JetStream request not answered in this time fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a registering node trusts the epoch it read.
const EPOCH_CHECK: Duration = Duration::from_secs(1);

/// JetStream handles, set up once connected (and again after JetStream lost its storage).
pub(crate) struct Ready {
    js: jetstream::Context,
    epochs: kv::Store,
    sessions: Option<kv::Store>,
    /// The presence buckets (crate::presence::nats).
    pub(crate) presence_members: kv::Store,
    pub(crate) presence_sessions: kv::Store,
}

/// The NATS JetStream broker.
pub struct NatsBroker {
    limits: Limits,
    servers: String,
    client: async_nats::Client,
    ready: RwLock<Option<Arc<Ready>>>,
    /// Serializes setting up `ready`.
    setup: tokio::sync::Mutex<()>,
    /// The epoch read last (empty until then) and when.
    epoch: RwLock<(Arc<str>, Option<Instant>)>,
}

impl NatsBroker {
    /// A broker on `nats_servers`. The connection is made in the background (a NATS that is down only
    /// delays the broker until it is up); `stop` silences connection logs during shutdown.
    pub async fn connect(
        config: &crate::Config,
        limits: Limits,
        stop: CancellationToken,
    ) -> Result<Arc<Self>, BrokerError> {
        let servers = crate::broadcast::nats::redacted(&config.nats_servers);
        let what = format!("NATS broker ({servers})");
        let client = crate::engine::nats::connect(&config.nats_servers, what, false, stop, |_| {})
            .await
            .map_err(BrokerError::Unavailable)?;
        let broker = Arc::new(Self {
            limits,
            servers,
            client,
            ready: RwLock::new(None),
            setup: tokio::sync::Mutex::new(()),
            epoch: RwLock::new(("".into(), None)),
        });
        // Learns the epoch for the startup line when NATS is already there; otherwise the first call does.
        let deadline = Instant::now() + crate::engine::CONNECT_TIMEOUT;
        while broker.client.connection_state() != async_nats::connection::State::Connected && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Err(error) = broker.ready().await {
            tracing::debug!(%error, "NATS broker: JetStream not ready at start");
        }
        Ok(broker)
    }

    /// The epoch read last; empty before the first read.
    pub fn epoch(&self) -> Arc<str> {
        self.epoch.read().0.clone()
    }

    /// The JetStream stream (and subject) of `stream`.
    pub fn stream_name(stream: &str) -> String {
        let digest = sha2::Sha256::digest(stream.as_bytes());
        format!("{STREAM_PREFIX}{}", hex::encode(&digest[..16]))
    }

    /// The JetStream handles, set up on first use; fails at once while NATS is not connected.
    pub(crate) async fn ready(&self) -> Result<Arc<Ready>, BrokerError> {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(BrokerError::Unavailable(format!("NATS ({}) is not connected", self.servers)));
        }
        if let Some(ready) = self.ready.read().clone() {
            return Ok(ready);
        }
        let _setup = self.setup.lock().await;
        if let Some(ready) = self.ready.read().clone() {
            return Ok(ready);
        }
        let js = jetstream::ContextBuilder::new()
            .timeout(REQUEST_TIMEOUT)
            .ack_timeout(REQUEST_TIMEOUT)
            .build(self.client.clone());
        let epochs = bucket(&js, EPOCH_BUCKET, Duration::ZERO, true).await?;
        let sessions = match self.limits.sessions_ttl {
            0 => None,
            ttl => Some(bucket(&js, SESSIONS_BUCKET, Duration::from_secs(ttl), true).await?),
        };
        // Presence removes entries by sequence (a compare-and-delete), so its buckets allow deleting messages.
        let presence_members = bucket(&js, crate::presence::nats::MEMBERS_BUCKET, Duration::ZERO, false).await?;
        let presence_sessions = bucket(&js, crate::presence::nats::SESSIONS_BUCKET, Duration::ZERO, false).await?;
        let ready = Arc::new(Ready { js, epochs, sessions, presence_members, presence_sessions });
        self.load_epoch(&ready).await?;
        *self.ready.write() = Some(ready.clone());
        Ok(ready)
    }

    /// Forgets the JetStream handles after an error that may mean JetStream lost its storage: the next call
    /// sets them up again (recreating what is missing, with a new epoch if the epoch is gone).
    pub(crate) fn reset(&self, error: impl std::fmt::Display) -> BrokerError {
        *self.ready.write() = None;
        BrokerError::Unavailable(format!("NATS JetStream: {error}"))
    }

    /// Reads the epoch, creating it when there is none.
    async fn load_epoch(&self, ready: &Ready) -> Result<Arc<str>, BrokerError> {
        let stored = match ready.epochs.get(EPOCH_KEY).await {
            Ok(stored) => stored,
            Err(error) => return Err(self.reset(error)),
        };
        let epoch = match stored {
            Some(value) => String::from_utf8_lossy(&value).into_owned(),
            None => {
                let candidate = super::generate_epoch();
                match ready.epochs.create(EPOCH_KEY, candidate.clone().into()).await {
                    Ok(_) => candidate,
                    // Another node created it meanwhile.
                    Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {
                        match ready.epochs.get(EPOCH_KEY).await {
                            Ok(Some(value)) => String::from_utf8_lossy(&value).into_owned(),
                            Ok(None) => return Err(self.reset("the epoch key was deleted")),
                            Err(error) => return Err(self.reset(error)),
                        }
                    }
                    Err(error) => return Err(self.reset(error)),
                }
            }
        };
        let mut current = self.epoch.write();
        if *current.0 != *epoch {
            if !current.0.is_empty() {
                tracing::warn!(
                    "NATS broker: the epoch changed from {} to {epoch} (JetStream lost its storage?); earlier stream positions are refused",
                    current.0
                );
            }
            current.0 = epoch.into();
        }
        current.1 = Some(Instant::now());
        Ok(current.0.clone())
    }

    /// The epoch, re-read when `refresh` or when it was read more than [`EPOCH_CHECK`] ago.
    async fn current_epoch(&self, ready: &Ready, refresh: bool) -> Result<Arc<str>, BrokerError> {
        {
            let (epoch, checked) = &*self.epoch.read();
            if !refresh && checked.is_some_and(|at| at.elapsed() < EPOCH_CHECK) {
                return Ok(epoch.clone());
            }
        }
        self.load_epoch(ready).await
    }

    /// Creates the JetStream stream of a stream (or finds it, when another node was first).
    async fn create_stream(&self, ready: &Ready, name: &str) -> Result<(), BrokerError> {
        let config = jetstream::stream::Config {
            name: name.to_owned(),
            subjects: vec![name.to_owned()],
            // JetStream cannot keep nothing: with history_limit 0 one message is kept and never read.
            max_messages: self.limits.history_limit.max(1) as i64,
            max_age: Duration::from_secs(self.limits.history_ttl),
            storage: jetstream::stream::StorageType::File,
            num_replicas: 1,
            ..Default::default()
        };
        match ready.js.get_or_create_stream(config).await {
            Ok(_) => Ok(()),
            Err(error) => Err(self.reset(error)),
        }
    }

    /// The last offset, and the kept entries after `after` (all when `None`), oldest first.
    async fn read(
        &self,
        ready: &Ready,
        stream: &str,
        after: Option<u64>,
    ) -> Result<(u64, Vec<HistoryEntry>), HistoryError> {
        let name = Self::stream_name(stream);
        // Nothing registered yet: no stream, and only "nothing yet" (offset 0) is a known position.
        let (first, last) = match ready.js.get_stream(&name).await {
            Ok(found) => (found.cached_info().state.first_sequence, found.cached_info().state.last_sequence),
            Err(error) if stream_not_found(&error) => (1, 0),
            Err(error) => return Err(self.reset(error).into()),
        };
        let limit = self.limits.history_limit as u64;
        let oldest = first.max(last.saturating_sub(limit) + 1);
        let from = after.map_or(oldest, |a| a.saturating_add(1)).max(oldest);
        if let Some(after) = after {
            super::check_position(after, oldest, last)?;
        }
        if from > last {
            return Ok((last, Vec::new()));
        }
        let stream_handle = match ready.js.get_stream_no_info(&name).await {
            Ok(handle) => handle,
            Err(error) => return Err(self.reset(error).into()),
        };
        let gets = (from..=last).map(|seq| stream_handle.get_raw_message(seq));
        let mut entries = Vec::with_capacity((last + 1).saturating_sub(from) as usize);
        for (seq, message) in (from..=last).zip(futures_util::future::join_all(gets).await) {
            match message {
                Ok(message) => entries.push(HistoryEntry {
                    offset: message.sequence,
                    timestamp: message.time.unix_timestamp().max(0) as u64,
                    data: String::from_utf8_lossy(&message.payload).into(),
                }),
                // Expired between the stream's info and this read.
                Err(_) if after.is_some() && entries.is_empty() => {
                    return Err(HistoryError::Trimmed { requested: after.unwrap_or(0), oldest: seq + 1 });
                }
                Err(_) if after.is_none() && entries.is_empty() => {}
                Err(error) => return Err(self.reset(error).into()),
            }
        }
        Ok((last, entries))
    }
}

/// The key-value bucket `name`, created when missing. The bucket's stream is created here with the
/// key-value conventions (what `create_key_value` would make) because the client's own bucket creation
/// first asks for account details in a shape that NATS 2.9 does not answer. `deny_delete`: whether single
/// messages may not be deleted through the stream API (the key-value default).
async fn bucket(
    js: &jetstream::Context,
    name: &str,
    max_age: Duration,
    deny_delete: bool,
) -> Result<kv::Store, BrokerError> {
    let config = jetstream::stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age,
        storage: jetstream::stream::StorageType::File,
        num_replicas: 1,
        allow_rollup: true,
        deny_delete,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    };
    let failed =
        |error: &dyn std::fmt::Display| BrokerError::Unavailable(format!("NATS JetStream: bucket {name}: {error}"));
    js.get_or_create_stream(config).await.map_err(|e| failed(&e))?;
    js.get_key_value(name).await.map_err(|e| failed(&e))
}

fn stream_not_found(error: &jetstream::context::GetStreamError) -> bool {
    matches!(error.kind(), jetstream::context::GetStreamErrorKind::JetStream(e)
        if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

/// The longest session id looked up: a subject longer than NATS' control line (4 KiB) would make the server
/// close the whole connection.
const MAX_KEY: usize = 256;

/// Whether `sid` can be a key of the sessions bucket (NATS keys are `[-/_=.a-zA-Z0-9]`, no leading or
/// trailing dot; we also bound the length). Session ids the server generates always can; a client's
/// forged one may not, and is simply not found.
fn valid_key(sid: &str) -> bool {
    !sid.is_empty()
        && sid.len() <= MAX_KEY
        && !sid.starts_with('.')
        && !sid.ends_with('.')
        && sid.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'=' | b'.'))
}

#[async_trait]
impl Broker for NatsBroker {
    fn describe(&self) -> String {
        let epoch = self.epoch();
        let epoch = if epoch.is_empty() { "not known yet" } else { &epoch };
        format!(
            "NATS JetStream broker at {} (epoch: {epoch}, {}); shared by every node on this NATS",
            self.servers, self.limits
        )
    }

    async fn register(&self, stream: &str, data: &str) -> Result<StreamPosition, BrokerError> {
        let ready = self.ready().await?;
        let mut epoch = self.current_epoch(&ready, false).await?;
        let name = Self::stream_name(stream);
        let payload = bytes::Bytes::copy_from_slice(data.as_bytes());
        let mut created = false;
        loop {
            let acked = match ready.js.publish(name.clone(), payload.clone()).await {
                Ok(ack) => ack.await,
                Err(error) => return Err(self.reset(error)),
            };
            match acked {
                Ok(ack) => return Ok(StreamPosition { offset: ack.sequence, epoch }),
                Err(error) if error.kind() == jetstream::context::PublishErrorKind::StreamNotFound && !created => {
                    self.create_stream(&ready, &name).await?;
                    // A missing stream may mean JetStream lost its storage, and the epoch with it.
                    epoch = self.current_epoch(&ready, true).await?;
                    created = true;
                }
                Err(error) => return Err(self.reset(error)),
            }
        }
    }

    async fn history_from(&self, stream: &str, epoch: &str, offset: u64) -> Result<History, HistoryError> {
        let ready = self.ready().await?;
        let current = self.current_epoch(&ready, true).await?;
        if epoch != &*current {
            return Err(HistoryError::UnknownEpoch { requested: epoch.into(), current: current.to_string() });
        }
        let (_, entries) = self.read(&ready, stream, Some(offset)).await?;
        Ok(History { epoch: current, entries })
    }

    async fn history_since(&self, stream: &str, since: u64) -> Result<History, HistoryError> {
        let ready = self.ready().await?;
        let epoch = self.current_epoch(&ready, true).await?;
        let (_, entries) = self.read(&ready, stream, None).await?;
        Ok(super::history_since(epoch, entries, since))
    }

    async fn commit_session(&self, sid: &str, snapshot: &[u8]) -> Result<(), BrokerError> {
        if self.limits.sessions_ttl == 0 {
            return Ok(());
        }
        if !valid_key(sid) {
            return Err(BrokerError::Unavailable(format!("session id {sid:?} cannot be a NATS key")));
        }
        let ready = self.ready().await?;
        let Some(sessions) = &ready.sessions else { return Ok(()) };
        match sessions.put(sid, bytes::Bytes::copy_from_slice(snapshot)).await {
            Ok(_) => Ok(()),
            Err(error) => Err(self.reset(error)),
        }
    }

    async fn restore_session(&self, sid: &str) -> Result<Option<Vec<u8>>, BrokerError> {
        if self.limits.sessions_ttl == 0 || !valid_key(sid) {
            return Ok(None);
        }
        let ready = self.ready().await?;
        let Some(sessions) = &ready.sessions else { return Ok(None) };
        let entry = match sessions.entry(sid).await {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put => entry,
            Ok(_) => return Ok(None),
            Err(error) => return Err(self.reset(error)),
        };
        // Only the node whose purge matches the revision it read gets the session.
        match sessions.purge_expect_revision(sid, Some(entry.revision)).await {
            Ok(()) => Ok(Some(entry.value.to_vec())),
            Err(error) => {
                tracing::debug!(%error, "NATS broker: session {sid} was taken or changed meanwhile");
                Ok(None)
            }
        }
    }

    async fn touch_session(&self, sid: &str) -> Result<(), BrokerError> {
        if self.limits.sessions_ttl == 0 || !valid_key(sid) {
            return Ok(());
        }
        let ready = self.ready().await?;
        let Some(sessions) = &ready.sessions else { return Ok(()) };
        let entry = match sessions.entry(sid).await {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put => entry,
            Ok(_) => return Ok(()),
            Err(error) => return Err(self.reset(error)),
        };
        match sessions.update(sid, entry.value, entry.revision).await {
            Ok(_) => Ok(()),
            // Committed, restored or touched by someone else meanwhile: that was the newer word.
            Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(()),
            Err(error) => Err(self.reset(error)),
        }
    }
}
