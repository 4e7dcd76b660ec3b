//! The `memory` broker: stream history and the session cache in this process, for a single node.
//!
//! Both live in 64 shards keyed by hash, each behind its own lock, so registering on one stream never waits
//! for another's reader. A stream's history is a ring of at most `history_limit` entries; entries older
//! than `history_ttl` are dropped from its front whenever the stream is written or read (amortized: each
//! entry is dropped once), and a sweeper visits one shard per tick to drop idle streams and expired
//! sessions, so no broadcast ever pays for a scan. An emptied stream keeps its last offset for ten times
//! `history_ttl`, so a stream that goes quiet and speaks again continues its offsets instead of restarting
//! them under the same epoch. The epoch is new at every start: positions from before a restart are refused.
//!
//! Memory: an entry costs its data plus 56 bytes (offset, timestamp, the shared string's header and
//! pointer); a stream costs its name plus about 100 bytes; a session its snapshot plus about 80 bytes.
//! Measured in the binary (`tests/load/broker-memory.sh`, docs/benchmarks.md): 161 bytes of RSS per cached
//! 100-byte message over 1,000 streams, the allocator's rounding included (1,189 bytes per 1,000-byte message:
//! about 130 bytes above the estimate at that size).

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{Broker, BrokerError, History, HistoryEntry, HistoryError, Limits, StreamPosition, unix_now};

const SHARDS: usize = 64;

/// Streams that were emptied stay (with their last offset) this many history TTLs.
const IDLE_STREAM_TTLS: u64 = 10;

struct StreamHistory {
    last_offset: u64,
    /// When the last message was registered (Unix seconds).
    last_write: u64,
    entries: VecDeque<HistoryEntry>,
}

impl StreamHistory {
    /// Drops entries older than `ttl` from the front.
    fn expire(&mut self, now: u64, ttl: u64) {
        while self.entries.front().is_some_and(|e| e.timestamp.saturating_add(ttl) < now) {
            self.entries.pop_front();
        }
        if self.entries.is_empty() && self.entries.capacity() > 0 {
            self.entries = VecDeque::new();
        }
    }
}

struct CachedSession {
    snapshot: Box<[u8]>,
    /// Unix seconds after which the session is gone.
    expires: u64,
}

/// The in-memory broker.
pub struct MemoryBroker {
    limits: Limits,
    epoch: Arc<str>,
    streams: Box<[Mutex<HashMap<Box<str>, StreamHistory>>]>,
    sessions: Box<[Mutex<HashMap<Box<str>, CachedSession>>]>,
    hasher: std::collections::hash_map::RandomState,
}

impl MemoryBroker {
    /// A broker with a new epoch. Call [`MemoryBroker::sweep`] periodically (the server does, see
    /// [`MemoryBroker::start_sweeper`]) to reclaim idle streams and expired sessions.
    pub fn new(limits: Limits) -> Self {
        Self::with_epoch(limits, super::generate_epoch())
    }

    pub(crate) fn with_epoch(limits: Limits, epoch: String) -> Self {
        Self {
            limits,
            epoch: epoch.into(),
            streams: (0..SHARDS).map(|_| Mutex::default()).collect(),
            sessions: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: Default::default(),
        }
    }

    /// The epoch positions of this broker are given in.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    fn shard(&self, key: &str) -> usize {
        (self.hasher.hash_one(key) as usize) % SHARDS
    }

    /// Runs the sweeper on the current runtime until `stop`: every shard is visited once per
    /// `min(history_ttl, sessions_ttl)` seconds (at least once a second per shard group).
    pub(crate) fn start_sweeper(
        self: &Arc<Self>,
        tracker: &tokio_util::task::TaskTracker,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let ttl = self.limits.history_ttl.min(self.limits.sessions_ttl.max(1)).max(1);
        let tick = std::time::Duration::from_millis((ttl * 1000 / SHARDS as u64).clamp(50, 1000));
        let broker = Arc::downgrade(self);
        tracker.spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut shard = 0;
            loop {
                tokio::select! {
                    _ = interval.tick() => {}
                    () = stop.cancelled() => break,
                }
                let Some(broker) = broker.upgrade() else { break };
                broker.sweep(shard, unix_now());
                shard = (shard + 1) % SHARDS;
            }
        });
    }

    /// Drops expired entries, long-idle streams and expired sessions of one shard.
    pub(crate) fn sweep(&self, shard: usize, now: u64) {
        let ttl = self.limits.history_ttl;
        self.streams[shard].lock().retain(|_, stream| {
            stream.expire(now, ttl);
            !stream.entries.is_empty() || stream.last_write.saturating_add(ttl * IDLE_STREAM_TTLS) >= now
        });
        self.sessions[shard].lock().retain(|_, session| session.expires >= now);
    }

    pub(crate) fn register_at(&self, stream: &str, data: &str, now: u64) -> StreamPosition {
        let mut shard = self.streams[self.shard(stream)].lock();
        let history = match shard.get_mut(stream) {
            Some(history) => history,
            None => shard.entry(stream.into()).or_insert(StreamHistory {
                last_offset: 0,
                last_write: now,
                entries: VecDeque::new(),
            }),
        };
        history.expire(now, self.limits.history_ttl);
        history.last_offset += 1;
        history.last_write = now;
        if self.limits.history_limit > 0 {
            if history.entries.len() >= self.limits.history_limit {
                history.entries.pop_front();
            }
            history.entries.push_back(HistoryEntry { offset: history.last_offset, timestamp: now, data: data.into() });
        }
        StreamPosition { offset: history.last_offset, epoch: self.epoch.clone() }
    }

    pub(crate) fn history_from_at(
        &self,
        stream: &str,
        epoch: &str,
        offset: u64,
        now: u64,
    ) -> Result<History, HistoryError> {
        if epoch != &*self.epoch {
            return Err(HistoryError::UnknownEpoch { requested: epoch.into(), current: self.epoch.to_string() });
        }
        let mut shard = self.streams[self.shard(stream)].lock();
        let Some(history) = shard.get_mut(stream) else {
            // Nothing was ever registered (or it was forgotten long ago): only "nothing yet" is a known position.
            return if offset == 0 {
                Ok(History { epoch: self.epoch.clone(), entries: Vec::new() })
            } else {
                Err(HistoryError::Ahead { requested: offset, latest: 0 })
            };
        };
        history.expire(now, self.limits.history_ttl);
        // The client has everything up to `offset`: what follows must all still be here.
        let oldest = history.entries.front().map_or(history.last_offset + 1, |e| e.offset);
        super::check_position(offset, oldest, history.last_offset)?;
        let skip = (offset + 1 - oldest) as usize;
        let entries = history.entries.iter().skip(skip).cloned().collect();
        Ok(History { epoch: self.epoch.clone(), entries })
    }

    pub(crate) fn history_since_at(&self, stream: &str, since: u64, now: u64) -> History {
        let mut shard = self.streams[self.shard(stream)].lock();
        let entries = match shard.get_mut(stream) {
            Some(history) => {
                history.expire(now, self.limits.history_ttl);
                let start = history.entries.partition_point(|e| e.timestamp < since);
                history.entries.range(start..).cloned().collect()
            }
            None => Vec::new(),
        };
        History { epoch: self.epoch.clone(), entries }
    }

    pub(crate) fn commit_session_at(&self, sid: &str, snapshot: &[u8], now: u64) {
        if self.limits.sessions_ttl == 0 {
            return;
        }
        let session = CachedSession { snapshot: snapshot.into(), expires: now + self.limits.sessions_ttl };
        self.sessions[self.shard(sid)].lock().insert(sid.into(), session);
    }

    pub(crate) fn restore_session_at(&self, sid: &str, now: u64) -> Option<Vec<u8>> {
        let session = self.sessions[self.shard(sid)].lock().remove(sid)?;
        (session.expires >= now).then(|| session.snapshot.into_vec())
    }

    pub(crate) fn touch_session_at(&self, sid: &str, now: u64) {
        if let Some(session) = self.sessions[self.shard(sid)].lock().get_mut(sid) {
            session.expires = now + self.limits.sessions_ttl;
        }
    }

    /// Streams with a history (or a remembered offset), and the entries held, for tests and measurements.
    pub fn counts(&self) -> (usize, usize) {
        self.streams.iter().fold((0, 0), |(streams, entries), shard| {
            let shard = shard.lock();
            (streams + shard.len(), entries + shard.values().map(|s| s.entries.len()).sum::<usize>())
        })
    }

    /// Cached sessions, for tests and measurements.
    pub fn sessions_count(&self) -> usize {
        self.sessions.iter().map(|s| s.lock().len()).sum()
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    fn describe(&self) -> String {
        format!("in-memory broker (epoch: {}, {}); one node only", self.epoch, self.limits)
    }

    async fn register(&self, stream: &str, data: &str) -> Result<StreamPosition, BrokerError> {
        Ok(self.register_at(stream, data, unix_now()))
    }

    async fn history_from(&self, stream: &str, epoch: &str, offset: u64) -> Result<History, HistoryError> {
        self.history_from_at(stream, epoch, offset, unix_now())
    }

    async fn history_since(&self, stream: &str, since: u64) -> Result<History, HistoryError> {
        Ok(self.history_since_at(stream, since, unix_now()))
    }

    async fn commit_session(&self, sid: &str, snapshot: &[u8]) -> Result<(), BrokerError> {
        self.commit_session_at(sid, snapshot, unix_now());
        Ok(())
    }

    async fn restore_session(&self, sid: &str) -> Result<Option<Vec<u8>>, BrokerError> {
        Ok(self.restore_session_at(sid, unix_now()))
    }

    async fn touch_session(&self, sid: &str) -> Result<(), BrokerError> {
        self.touch_session_at(sid, unix_now());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(history_limit: usize) -> MemoryBroker {
        MemoryBroker::with_epoch(Limits { history_limit, history_ttl: 300, sessions_ttl: 300 }, "ep".into())
    }

    fn offsets(history: &History) -> Vec<u64> {
        history.entries.iter().map(|e| e.offset).collect()
    }

    #[test]
    fn offsets_count_up_per_stream_within_the_epoch() {
        let b = broker(10);
        assert_eq!(b.register_at("a", "1", 100), StreamPosition { offset: 1, epoch: "ep".into() });
        assert_eq!(b.register_at("a", "2", 100).offset, 2);
        assert_eq!(b.register_at("b", "1", 100).offset, 1);
        assert_eq!(b.register_at("a", "3", 100).offset, 3);
    }

    #[test]
    fn history_from_returns_what_follows_the_position_in_order() {
        let b = broker(10);
        for n in 1..=5 {
            b.register_at("s", &n.to_string(), 100);
        }
        let h = b.history_from_at("s", "ep", 2, 100).unwrap();
        assert_eq!(offsets(&h), [3, 4, 5]);
        assert_eq!(h.entries.iter().map(|e| &*e.data).collect::<Vec<_>>(), ["3", "4", "5"]);
        assert!(b.history_from_at("s", "ep", 5, 100).unwrap().entries.is_empty(), "up to date");
        assert_eq!(offsets(&b.history_from_at("s", "ep", 0, 100).unwrap()), [1, 2, 3, 4, 5]);
    }

    #[test]
    fn history_from_refuses_other_epochs_trimmed_and_future_positions() {
        let b = broker(3);
        for n in 1..=5 {
            b.register_at("s", &n.to_string(), 100);
        }
        // Entries 3..=5 are kept: a client at 2 misses nothing, a client at 1 would miss 2.
        assert_eq!(offsets(&b.history_from_at("s", "ep", 2, 100).unwrap()), [3, 4, 5]);
        assert_eq!(b.history_from_at("s", "ep", 1, 100), Err(HistoryError::Trimmed { requested: 1, oldest: 3 }));
        assert_eq!(b.history_from_at("s", "ep", 6, 100), Err(HistoryError::Ahead { requested: 6, latest: 5 }));
        assert_eq!(
            b.history_from_at("s", "ep", u64::MAX, 100),
            Err(HistoryError::Ahead { requested: u64::MAX, latest: 5 })
        );
        assert!(matches!(b.history_from_at("s", "other", 2, 100), Err(HistoryError::UnknownEpoch { .. })));
        assert!(b.history_from_at("unknown", "ep", 0, 100).unwrap().entries.is_empty());
        assert!(b.history_from_at("unknown", "ep", 3, 100).is_err());
    }

    #[test]
    fn history_since_filters_by_registration_time() {
        let b = broker(10);
        b.register_at("s", "old", 100);
        b.register_at("s", "mid", 110);
        b.register_at("s", "new", 120);
        assert_eq!(offsets(&b.history_since_at("s", 110, 120)), [2, 3]);
        assert!(b.history_since_at("s", 121, 121).entries.is_empty());
        assert!(b.history_since_at("nothing", 0, 121).entries.is_empty());
    }

    #[test]
    fn entries_expire_after_the_ttl_and_idle_streams_are_swept_keeping_offsets_meanwhile() {
        let b = broker(10);
        b.register_at("s", "1", 100);
        b.register_at("s", "2", 200);
        // At 401 the first entry is older than 300 s: gone; the second is still there.
        assert_eq!(offsets(&b.history_since_at("s", 0, 401)), [2]);
        assert_eq!(b.history_from_at("s", "ep", 0, 401), Err(HistoryError::Trimmed { requested: 0, oldest: 2 }));
        // Everything expired, but the stream remembers its offset...
        for shard in 0..SHARDS {
            b.sweep(shard, 600);
        }
        assert_eq!(b.counts(), (1, 0));
        assert_eq!(b.register_at("s", "3", 600).offset, 3);
        // ...until it has been idle for ten TTLs.
        for shard in 0..SHARDS {
            b.sweep(shard, 600 + 300 * IDLE_STREAM_TTLS + 301);
        }
        assert_eq!(b.counts(), (0, 0));
    }

    #[test]
    fn history_limit_bounds_every_stream() {
        let b = broker(100);
        for n in 0..10_000 {
            b.register_at(&format!("s{}", n % 10), "x", 100);
        }
        assert_eq!(b.counts(), (10, 1000));
    }

    #[test]
    fn a_session_is_restored_once_and_only_before_it_expires() {
        let b = broker(10);
        b.commit_session_at("sid1", b"state", 100);
        assert_eq!(b.restore_session_at("sid1", 150).as_deref(), Some(&b"state"[..]));
        assert_eq!(b.restore_session_at("sid1", 150), None, "taken");
        b.commit_session_at("sid2", b"state", 100);
        assert_eq!(b.restore_session_at("sid2", 401), None, "expired");
        b.commit_session_at("sid3", b"state", 100);
        b.touch_session_at("sid3", 300);
        assert!(b.restore_session_at("sid3", 500).is_some(), "touched at 300, so kept until 600");
        b.commit_session_at("sid4", b"state", 100);
        for shard in 0..SHARDS {
            b.sweep(shard, 401);
        }
        assert_eq!(b.sessions_count(), 0);
    }

    #[test]
    fn sessions_ttl_zero_disables_the_cache() {
        let b = MemoryBroker::with_epoch(Limits { history_limit: 10, history_ttl: 300, sessions_ttl: 0 }, "ep".into());
        b.commit_session_at("sid", b"state", 100);
        assert_eq!(b.restore_session_at("sid", 100), None);
    }
}
