//! The broker: stream history and the session cache behind reliable streams and resumable sessions.
//!
//! Every publication that reaches the server through a single-node ingress (HTTP, Redis Streams, a
//! binding's direct broadcast) is *registered* once: the broker gives it the next offset of its stream
//! within the broker's epoch and keeps it for `history_limit` messages and `history_ttl` seconds. Clients of
//! the extended protocol receive that position with every broadcast and ask for what they missed by it (or
//! by time) when they come back. The session cache keeps what a connection holds (identifiers, cstate,
//! subscriptions with their istate and streams) for `sessions_ttl` after it was last touched, so a client
//! that reconnects with its previous session id gets it back without a Connect or Subscribe call.
//!
//! Implementations: `memory` (one node), `redis` and `nats` (shared by every node of a cluster). A broker
//! only stores and answers: it never touches sessions, the hub or sockets; the broadcast workers register
//! through it and the session consults it.

pub mod memory;
pub mod nats;
pub mod redis;

use std::sync::Arc;

use async_trait::async_trait;

/// Where a registered message sits in its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPosition {
    pub offset: u64,
    pub epoch: Arc<str>,
}

/// One message kept in a stream's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub offset: u64,
    /// When it was registered, in Unix seconds.
    pub timestamp: u64,
    pub data: Arc<str>,
}

/// What a history request returns: the entries after the requested position, oldest first, all of one epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub epoch: Arc<str>,
    pub entries: Vec<HistoryEntry>,
}

/// Why a history request cannot be answered; the client is told `reject_history`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// The position was given in another epoch: the history it refers to is gone (the broker restarted or
    /// its storage was reset).
    #[error("epoch {requested:?} is not the current one ({current:?})")]
    UnknownEpoch { requested: String, current: String },
    /// Messages after the position were trimmed (`history_limit`, `history_ttl`), so some cannot be replayed.
    #[error("offset {requested} is no longer in the history (oldest kept: {oldest})")]
    Trimmed { requested: u64, oldest: u64 },
    /// The position is past the last message of the stream.
    #[error("offset {requested} is ahead of the stream (latest: {latest})")]
    Ahead { requested: u64, latest: u64 },
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// A failure of the broker's storage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// Stream history and session cache, shared by every session and broadcast worker of a node.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// One line for the startup log: the adapter, its epoch and limits.
    fn describe(&self) -> String;

    /// Registers a message: assigns the next offset of `stream` and keeps the message in its history.
    /// Called for one stream from one task at a time, in delivery order.
    async fn register(&self, stream: &str, data: &str) -> Result<StreamPosition, BrokerError>;

    /// The messages of `stream` after `offset`, which the client received in `epoch`. Asking for the latest
    /// offset returns nothing; asking for a position whose successors were trimmed is an error.
    async fn history_from(&self, stream: &str, epoch: &str, offset: u64) -> Result<History, HistoryError>;

    /// The messages of `stream` registered at or after `since` (Unix seconds).
    async fn history_since(&self, stream: &str, since: u64) -> Result<History, HistoryError>;

    /// Stores (or replaces) the cached session `sid` and restarts its `sessions_ttl`.
    async fn commit_session(&self, sid: &str, snapshot: &[u8]) -> Result<(), BrokerError>;

    /// Takes the cached session `sid` out of the cache: a session is restored at most once.
    async fn restore_session(&self, sid: &str) -> Result<Option<Vec<u8>>, BrokerError>;

    /// Restarts the `sessions_ttl` of a cached session (a connected client's, so it outlives its connection).
    async fn touch_session(&self, sid: &str) -> Result<(), BrokerError>;
}

/// The limits every broker applies, from the `history_limit`, `history_ttl` and `sessions_ttl` options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Messages kept per stream.
    pub history_limit: usize,
    /// Seconds a message is kept.
    pub history_ttl: u64,
    /// Seconds a session is kept after it was last committed or touched.
    pub sessions_ttl: u64,
}

impl Limits {
    pub fn from_config(config: &crate::Config) -> Self {
        Self { history_limit: config.history_limit, history_ttl: config.history_ttl, sessions_ttl: config.sessions_ttl }
    }
}

/// The current time in Unix seconds.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A new random epoch: four characters of `[A-Za-z0-9]`, like AnyCable's.
pub(crate) fn generate_epoch() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..4).map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())])).collect()
}

/// Whether a client that received everything up to `offset` can be caught up from a history that holds
/// `oldest..=latest` (`oldest` is `latest + 1` when nothing is held): not when the position is past the
/// stream, nor when what follows it was trimmed.
pub(crate) fn check_position(offset: u64, oldest: u64, latest: u64) -> Result<(), HistoryError> {
    if offset > latest {
        return Err(HistoryError::Ahead { requested: offset, latest });
    }
    if offset + 1 < oldest {
        return Err(HistoryError::Trimmed { requested: offset, oldest });
    }
    Ok(())
}

/// The entries of a stream's history (oldest first) registered at or after `since`, as `history_since` answers.
pub(crate) fn history_since(epoch: Arc<str>, mut entries: Vec<HistoryEntry>, since: u64) -> History {
    let start = entries.partition_point(|e| e.timestamp < since);
    entries.drain(..start);
    History { epoch, entries }
}

/// `history limit: 100, history ttl: 300s, sessions ttl: 300s`, for the startup line.
impl std::fmt::Display for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "history limit: {}, history ttl: {}s, sessions ttl: {}s",
            self.history_limit, self.history_ttl, self.sessions_ttl
        )
    }
}

/// A started broker and its presence store (every adapter keeps presence).
pub(crate) struct Started {
    pub broker: Arc<dyn Broker>,
    pub presence: Arc<dyn crate::presence::PresenceStore>,
}

/// Starts the broker named by `broker`, with its background work on `tasks` until `stop`; `None` for `none`.
pub(crate) async fn start(
    config: &crate::Config,
    tasks: &tokio_util::task::TaskTracker,
    stop: tokio_util::sync::CancellationToken,
) -> Result<Option<Started>, BrokerError> {
    use crate::config::BrokerAdapter;
    let limits = Limits::from_config(config);
    let started = match config.broker {
        BrokerAdapter::None => return Ok(None),
        BrokerAdapter::Memory => {
            let memory = Arc::new(memory::MemoryBroker::new(limits));
            memory.start_sweeper(tasks, stop);
            let presence: Arc<dyn crate::presence::PresenceStore> =
                Arc::new(crate::presence::memory::MemoryPresence::default());
            Started { broker: memory, presence }
        }
        BrokerAdapter::Redis => {
            let redis = redis::RedisBroker::connect(config, limits).await?;
            Started { broker: redis.clone(), presence: redis }
        }
        BrokerAdapter::Nats => {
            let nats = nats::NatsBroker::connect(config, limits, stop).await?;
            Started { broker: nats.clone(), presence: nats }
        }
    };
    tracing::info!("Using {}", started.broker.describe());
    let legacy: Vec<&str> =
        config.broadcast_adapter.iter().map(String::as_str).filter(|a| matches!(*a, "redis" | "nats")).collect();
    if !legacy.is_empty() {
        tracing::warn!(
            adapters = %legacy.join(","),
            "broadcasts from these adapters reach every node by themselves, so they are not registered: they carry no \
             stream position and are not kept in history (use http or redisx for reliable streams)"
        );
    }
    Ok(Some(started))
}
