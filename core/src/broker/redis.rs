//! The `redis` broker: stream history and the session cache in Redis, shared by every node of a cluster.
//!
//! Works with Redis 6.2 and later (GETDEL, Lua scripts, Streams with MAXLEN; nothing of Redis 7.4 such as
//! per-field expiry), so Debian's Redis 7.0 serves it; a single Redis server or a primary with replicas,
//! not Redis Cluster (a stream's keys are used together in one script). Keys, `ferrocable:` first:
//!
//! - `ferrocable:epoch`: the epoch of every node, created once by whichever node needs it first. It has no
//!   expiry: when Redis loses its data (a restart without persistence, FLUSHDB) the next node to use it
//!   creates a new epoch, and every position from before is refused (`UnknownEpoch`) instead of being
//!   mistaken for a position in the new history.
//! - `ferrocable:offset:<stream>`: the stream's last offset (INCR), kept for ten `history_ttl` after the
//!   stream's last message, so a stream that goes quiet continues its offsets like the memory broker's.
//! - `ferrocable:history:<stream>`: a Redis Stream of the kept messages, entry id `<offset>-0`, fields `t`
//!   (registration time, Unix seconds of the Redis server's clock) and `d` (the data), trimmed to
//!   `history_limit` entries (MAXLEN) on every registration.
//! - `ferrocable:session:<sid>`: a cached session, `SET .. EX sessions_ttl`; restored with GETDEL (at most
//!   once, even when two nodes try at the same moment); touched with EXPIRE.
//!
//! A registration is one Lua script (epoch, INCR, XADD, EXPIRE), so nodes registering on the same stream
//! at the same time get unique, contiguous offsets. Redis cannot expire single stream entries, so
//! `history_ttl` means: the whole history key expires `history_ttl` seconds after the stream's last
//! message, and reads skip entries registered more than `history_ttl` seconds ago (by the Redis clock), so a
//! client never receives a message older than that. History reads are one script too (epoch, last offset,
//! entries), so they see one consistent state.
//!
//! Memory on Redis 7.0 (`MEMORY USAGE`, docs/cluster.md "Broker costs"): a cached message of 100 bytes
//! takes 145 bytes in its stream's history key, a stream's offset key 72 bytes, a cached session with a
//! 200-byte snapshot 312 bytes.
//!
//! Redis being down never blocks a node: every call fails at once with `BrokerError::Unavailable` while
//! the connection is being re-established with backoff (a call waits at most for one connection attempt),
//! and the outage is logged once when it starts and once when it ends. Keys must not be evicted: run the
//! broker's Redis with `maxmemory-policy noeviction` (the default) or `volatile-*` policies only when the
//! history and sessions may be lost early.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::RwLock;
use tokio::time::Instant;

use super::{Broker, BrokerError, History, HistoryEntry, HistoryError, Limits, StreamPosition};
use crate::engine::{self, Backoff, Outage};

/// The prefix of every key the broker writes.
pub const KEY_PREFIX: &str = "ferrocable:";
/// The key of the epoch.
const EPOCH_KEY: &str = "ferrocable:epoch";
/// A command Redis does not answer in this time counts as a lost connection.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
/// What an outage means for clients, for the log.
const CONSEQUENCE: &str =
    "broadcasts are delivered without stream positions and sessions are not cached until it is back";

/// The start of both scripts (KEYS[1] is the epoch, ARGV[1] a new epoch used when there is none): the
/// epoch, created by whichever node needs it first.
const EPOCH_PRELUDE: &str = r"
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
end
";

/// KEYS: epoch, offset, history. ARGV: a new epoch, data, history_limit, history_ttl.
/// Returns the epoch and the message's offset.
const REGISTER: &str = r"
local offset = redis.call('INCR', KEYS[2])
local ttl = tonumber(ARGV[4])
redis.call('EXPIRE', KEYS[2], math.max(ttl * 10, 1))
if offset == 1 then
  -- A counter that starts over means the stream's history is gone too: drop whatever is left of it.
  redis.call('DEL', KEYS[3])
end
local limit = tonumber(ARGV[3])
if limit > 0 then
  local now = redis.call('TIME')[1]
  redis.call('XADD', KEYS[3], 'MAXLEN', limit, string.format('%d-0', offset), 't', now, 'd', ARGV[2])
  redis.call('EXPIRE', KEYS[3], math.max(ttl, 1))
end
return {epoch, offset}
";

/// KEYS: epoch, offset, history. ARGV: a new epoch.
/// Returns the epoch, the last offset, the Redis clock (Unix seconds), then offset, time and data of each
/// kept entry, oldest first.
const READ: &str = r"
local reply = {epoch, redis.call('GET', KEYS[2]) or '0', redis.call('TIME')[1]}
for _, entry in ipairs(redis.call('XRANGE', KEYS[3], '-', '+')) do
  reply[#reply + 1] = string.match(entry[1], '^%d+')
  reply[#reply + 1] = entry[2][2]
  reply[#reply + 1] = entry[2][4]
end
return reply
";

/// The connection and its reconnect state.
struct Link {
    conn: Option<redis::aio::MultiplexedConnection>,
    /// While disconnected: no new attempt before this moment.
    retry_at: Option<Instant>,
    backoff: Backoff,
    outage: Outage,
}

/// The Redis broker.
pub struct RedisBroker {
    limits: Limits,
    client: redis::Client,
    link: tokio::sync::Mutex<Link>,
    /// The epoch Redis answered last (empty until the first answer).
    epoch: RwLock<Arc<str>>,
    register: redis::Script,
    read: redis::Script,
}

/// One stream's state as a history read sees it.
struct StreamState {
    epoch: Arc<str>,
    last_offset: u64,
    /// The Redis clock, Unix seconds.
    now: u64,
    entries: Vec<HistoryEntry>,
}

impl RedisBroker {
    /// A broker on `redis_url`. Tries to connect and to learn the epoch once (a Redis that is down only
    /// delays that to the first call); fails only when the URL is invalid.
    pub async fn connect(config: &crate::Config, limits: Limits) -> Result<Arc<Self>, BrokerError> {
        let client = engine::redis::client(&config.redis_url).map_err(BrokerError::Unavailable)?;
        let what = format!("Redis broker ({})", client.get_connection_info().addr());
        let broker = Arc::new(Self {
            limits,
            client,
            link: tokio::sync::Mutex::new(Link {
                conn: None,
                retry_at: None,
                backoff: Backoff::default(),
                outage: Outage::new(what),
            }),
            epoch: RwLock::new("".into()),
            register: redis::Script::new(&format!("{EPOCH_PRELUDE}{REGISTER}")),
            read: redis::Script::new(&format!("{EPOCH_PRELUDE}{READ}")),
        });
        // Learns the epoch for the startup line; an error was logged and the next call retries.
        let _ = broker.read_stream("").await;
        Ok(broker)
    }

    /// The epoch Redis answered last; empty before the first answer.
    pub fn epoch(&self) -> Arc<str> {
        self.epoch.read().clone()
    }

    fn key(kind: &str, name: &str) -> String {
        format!("{KEY_PREFIX}{kind}:{name}")
    }

    /// The epoch as an `Arc`, reusing the cached one while it does not change.
    fn remember_epoch(&self, epoch: String) -> Arc<str> {
        let cached = self.epoch.read().clone();
        if *cached == *epoch {
            return cached;
        }
        if !cached.is_empty() {
            tracing::warn!(
                "Redis broker: the epoch changed from {cached} to {epoch} (Redis lost its data?); earlier stream positions are refused"
            );
        }
        let epoch: Arc<str> = epoch.into();
        *self.epoch.write() = epoch.clone();
        epoch
    }

    /// The open connection, or a new one when the backoff allows an attempt.
    pub(crate) async fn connection(&self) -> Result<redis::aio::MultiplexedConnection, BrokerError> {
        let mut link = self.link.lock().await;
        if let Some(conn) = &link.conn {
            return Ok(conn.clone());
        }
        if link.retry_at.is_some_and(|at| Instant::now() < at) {
            return Err(BrokerError::Unavailable("Redis is unreachable; reconnecting".into()));
        }
        match engine::redis::connect(&self.client, RESPONSE_TIMEOUT).await {
            Ok(conn) => {
                link.outage.up();
                link.backoff.reset();
                link.retry_at = None;
                link.conn = Some(conn.clone());
                Ok(conn)
            }
            Err(error) => {
                link.outage.down(&error, CONSEQUENCE);
                link.retry_at = Some(Instant::now() + link.backoff.next_delay());
                Err(BrokerError::Unavailable(format!("Redis: {error}")))
            }
        }
    }

    /// Maps a command's error; a lost connection is dropped so that the next call reconnects.
    pub(crate) async fn failed(&self, error: redis::RedisError) -> BrokerError {
        if error.is_io_error() || error.is_timeout() || error.is_connection_dropped() || error.is_connection_refusal() {
            let mut link = self.link.lock().await;
            if link.conn.take().is_some() {
                link.outage.down(&error, CONSEQUENCE);
                link.retry_at = Some(Instant::now() + link.backoff.next_delay());
            }
        } else {
            tracing::debug!(%error, "Redis broker: command failed");
        }
        BrokerError::Unavailable(format!("Redis: {error}"))
    }

    async fn read_stream(&self, stream: &str) -> Result<StreamState, BrokerError> {
        let mut conn = self.connection().await?;
        let reply: redis::RedisResult<Vec<String>> = self
            .read
            .key(EPOCH_KEY)
            .key(Self::key("offset", stream))
            .key(Self::key("history", stream))
            .arg(super::generate_epoch())
            .invoke_async(&mut conn)
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(error) => return Err(self.failed(error).await),
        };
        let malformed = || BrokerError::Unavailable("Redis: unexpected reply to the history script".into());
        let number = |s: &str| s.parse::<u64>().map_err(|_| malformed());
        let [epoch, last, now, rest @ ..] = &reply[..] else { return Err(malformed()) };
        let mut entries = Vec::with_capacity(rest.len() / 3);
        for entry in rest.chunks(3) {
            let [offset, timestamp, data] = entry else { return Err(malformed()) };
            entries.push(HistoryEntry {
                offset: number(offset)?,
                timestamp: number(timestamp)?,
                data: data.as_str().into(),
            });
        }
        Ok(StreamState {
            epoch: self.remember_epoch(epoch.clone()),
            last_offset: number(last)?,
            now: number(now)?,
            entries,
        })
    }

    /// The entries of `state` that `history_ttl` still allows.
    fn fresh(&self, state: StreamState) -> (Arc<str>, u64, Vec<HistoryEntry>) {
        let ttl = self.limits.history_ttl;
        let mut entries = state.entries;
        let expired = entries.partition_point(|e| e.timestamp.saturating_add(ttl) < state.now);
        entries.drain(..expired);
        (state.epoch, state.last_offset, entries)
    }
}

#[async_trait]
impl Broker for RedisBroker {
    fn describe(&self) -> String {
        let epoch = self.epoch();
        let epoch = if epoch.is_empty() { "not known yet" } else { &epoch };
        format!(
            "Redis broker at {} (epoch: {epoch}, {}); shared by every node on this Redis",
            self.client.get_connection_info().addr(),
            self.limits
        )
    }

    async fn register(&self, stream: &str, data: &str) -> Result<StreamPosition, BrokerError> {
        let mut conn = self.connection().await?;
        let reply: redis::RedisResult<(String, u64)> = self
            .register
            .key(EPOCH_KEY)
            .key(Self::key("offset", stream))
            .key(Self::key("history", stream))
            .arg(super::generate_epoch())
            .arg(data)
            .arg(self.limits.history_limit)
            .arg(self.limits.history_ttl)
            .invoke_async(&mut conn)
            .await;
        match reply {
            Ok((epoch, offset)) => Ok(StreamPosition { offset, epoch: self.remember_epoch(epoch) }),
            Err(error) => Err(self.failed(error).await),
        }
    }

    async fn history_from(&self, stream: &str, epoch: &str, offset: u64) -> Result<History, HistoryError> {
        let (current, last_offset, mut entries) = self.fresh(self.read_stream(stream).await?);
        if epoch != &*current {
            return Err(HistoryError::UnknownEpoch { requested: epoch.into(), current: current.to_string() });
        }
        let oldest = entries.first().map_or(last_offset + 1, |e| e.offset);
        super::check_position(offset, oldest, last_offset)?;
        entries.drain(..(offset + 1 - oldest) as usize);
        Ok(History { epoch: current, entries })
    }

    async fn history_since(&self, stream: &str, since: u64) -> Result<History, HistoryError> {
        let (epoch, _, entries) = self.fresh(self.read_stream(stream).await?);
        Ok(super::history_since(epoch, entries, since))
    }

    async fn commit_session(&self, sid: &str, snapshot: &[u8]) -> Result<(), BrokerError> {
        if self.limits.sessions_ttl == 0 {
            return Ok(());
        }
        let mut conn = self.connection().await?;
        let set = redis::cmd("SET")
            .arg(Self::key("session", sid))
            .arg(snapshot)
            .arg("EX")
            .arg(self.limits.sessions_ttl)
            .query_async::<()>(&mut conn)
            .await;
        match set {
            Ok(()) => Ok(()),
            Err(error) => Err(self.failed(error).await),
        }
    }

    async fn restore_session(&self, sid: &str) -> Result<Option<Vec<u8>>, BrokerError> {
        if self.limits.sessions_ttl == 0 {
            return Ok(None);
        }
        let mut conn = self.connection().await?;
        match redis::cmd("GETDEL").arg(Self::key("session", sid)).query_async(&mut conn).await {
            Ok(snapshot) => Ok(snapshot),
            Err(error) => Err(self.failed(error).await),
        }
    }

    async fn touch_session(&self, sid: &str) -> Result<(), BrokerError> {
        if self.limits.sessions_ttl == 0 {
            return Ok(());
        }
        let mut conn = self.connection().await?;
        let expire = redis::cmd("EXPIRE")
            .arg(Self::key("session", sid))
            .arg(self.limits.sessions_ttl)
            .query_async::<()>(&mut conn)
            .await;
        match expire {
            Ok(()) => Ok(()),
            Err(error) => Err(self.failed(error).await),
        }
    }
}
