//! Presence tracking: who is online in a stream, kept by the server so applications need no storage of their own.
//!
//! A subscription whose istate names a presence stream (`$p`: set for `$pubsub` streams when `streams_presence`
//! allows it, or by an application's channel) may join that stream's presence set under a presence id with some
//! info (the client's `join` command, the `presence` field of its `subscribe`, or the `presence` field of a
//! Command answer), leave it, and read it (`presence`). Records are kept per session: several sessions under one
//! id are one member, which joins when its first session is added and leaves when its last one is removed. A
//! `join` / `leave` event then reaches every subscriber of the stream as a transient broadcast.
//!
//! A session that goes away without leaving keeps its records for `presence_ttl` seconds: each node touches the
//! records of its connected sessions every half TTL, and a sweeper removes the records nobody touched in time,
//! broadcasting the leaves that follows. A quick reconnect therefore does not flap, a restored session takes its
//! records over without a leave, and the records of a node that died expire like a dropped connection's.
//!
//! Stores: the memory one (`memory.rs`, one node), Redis's (`redis.rs`, every node on one Redis, Redis 6.2+) and
//! NATS JetStream's (`nats.rs`, every node on one NATS, NATS 2.9+); they only store and answer. This module's [`Presence`] runs the rules (validation, events, touching, the
//! sweeper); it never touches sessions, the hub or sockets.

pub mod memory;
pub mod nats;
pub mod redis;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::broadcast::Publication;
use crate::broker::BrokerError;

/// The istate key naming the stream a subscription's presence set belongs to (AnyCable's name, so an RPC
/// backend can set it for its own channels).
pub const PRESENCE_STREAM_STATE: &str = "$p";
/// Longest presence id, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Largest presence info (its JSON text), in bytes.
pub const MAX_INFO_BYTES: usize = 4096;
/// Presence changes (joins and leaves) one connection may make per second, in bursts of as many.
pub const CHANGES_PER_SECOND: u32 = 10;
/// Expired sessions one sweep removes at most; the rest wait for the next one.
const SWEEP_BATCH: usize = 1000;
/// How long a presence event waits for room in the broadcast queue before it is dropped.
const EVENT_WAIT: Duration = Duration::from_secs(5);

/// A presence record as clients see it: the id and its info (JSON text; `None` when none was given).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    pub id: String,
    pub info: Option<String>,
}

impl Member {
    /// A member from a client or an application: refused when the id is empty or too long, or the info too large.
    pub fn checked(id: String, info: Option<String>) -> Result<Self, PresenceError> {
        if id.is_empty() || id.len() > MAX_ID_BYTES {
            return Err(PresenceError::BadId);
        }
        if info.as_ref().is_some_and(|info| info.len() > MAX_INFO_BYTES) {
            return Err(PresenceError::InfoTooLarge);
        }
        Ok(Self { id, info })
    }
}

/// A stream's presence set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresenceInfo {
    /// Members (distinct ids).
    pub total: usize,
    /// Every member with its info, in no particular order; `None` when only the total was asked for.
    pub records: Option<Vec<Member>>,
}

impl PresenceInfo {
    /// `{"type":"info","total":<n>,"records":[{"id":…,"info":…},…]}`, the message of a `presence` frame.
    pub fn to_json(&self) -> String {
        let mut json = format!("{{\"type\":\"info\",\"total\":{}", self.total);
        if let Some(records) = &self.records {
            json.push_str(",\"records\":[");
            for (n, member) in records.iter().enumerate() {
                if n > 0 {
                    json.push(',');
                }
                json.push('{');
                push_member_fields(&mut json, member);
                json.push('}');
            }
            json.push(']');
        }
        json.push('}');
        json
    }
}

/// `"id":…,"info":…` (no `info` when there is none).
fn push_member_fields(json: &mut String, member: &Member) {
    json.push_str("\"id\":");
    json.push_str(&crate::protocol::json_string(&member.id));
    if let Some(info) = &member.info {
        json.push_str(",\"info\":");
        json.push_str(info);
    }
}

/// A change of a stream's presence set, as broadcast to its subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceEvent {
    Join(Member),
    Leave(String),
}

impl PresenceEvent {
    /// `{"type":"join","id":…,"info":…}` or `{"type":"leave","id":…}`.
    pub fn to_json(&self) -> String {
        match self {
            Self::Join(member) => {
                let mut json = String::from("{\"type\":\"join\",");
                push_member_fields(&mut json, member);
                json.push('}');
                json
            }
            Self::Leave(id) => format!("{{\"type\":\"leave\",\"id\":{}}}", crate::protocol::json_string(id)),
        }
    }
}

/// Why a presence request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresenceError {
    #[error(
        "presence is not enabled for this subscription (no presence stream: streams_presence, or the channel's `$p`)"
    )]
    NotEnabled,
    #[error("presence is off: it needs a broker that keeps presence (--broker memory, redis or nats)")]
    NoBroker,
    #[error("unknown subscription")]
    UnknownSubscription,
    #[error("presence id must be a non-empty string of at most {MAX_ID_BYTES} bytes")]
    BadId,
    #[error("presence info is larger than {MAX_INFO_BYTES} bytes")]
    InfoTooLarge,
    #[error("this session is present in the stream as {current:?}; leave before joining as another id")]
    IdMismatch { current: String },
    /// `first`: the first refusal since the connection was last within the rate.
    #[error("more than {CHANGES_PER_SECOND} presence commands per second: dropped until the client slows down")]
    OverRate { first: bool },
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// A connection's presence allowance: [`CHANGES_PER_SECOND`] commands a second, in bursts of as many. Only the
/// first refusal of a stretch over it is worth a log line; the rest are counted.
#[derive(Debug, Default)]
pub struct PresenceBudget {
    bucket: crate::rate_limit::TokenBucket,
    over: bool,
}

impl PresenceBudget {
    /// Takes one command out of the budget: `Ok` when allowed, `Err(first)` when over it (`first` for the first
    /// refusal since the connection was last within it).
    pub fn take(&mut self, now: std::time::Instant) -> Result<(), bool> {
        if self.bucket.take(CHANGES_PER_SECOND, CHANGES_PER_SECOND, now) {
            self.over = false;
            return Ok(());
        }
        Err(!std::mem::replace(&mut self.over, true))
    }
}

/// What adding a record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// The id is new to the stream: a member joined.
    Joined,
    /// The id was present already (another session of it, or this one again).
    Present,
}

/// Where presence records are kept. Times are the store's own clock, so nodes need not agree on theirs.
#[async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// Adds (or refreshes) the record of session `sid` as `member` in `stream`, alive for `ttl`. A session has one
    /// id per stream: another id is [`PresenceError::IdMismatch`].
    async fn add(&self, stream: &str, sid: &str, member: &Member, ttl: Duration) -> Result<Added, PresenceError>;

    /// Removes the record of `sid` in `stream`; the member's id when that was its last record (it left).
    async fn remove(&self, stream: &str, sid: &str) -> Result<Option<String>, BrokerError>;

    /// The presence set of `stream`; with `records`, every member and its info.
    async fn info(&self, stream: &str, records: bool) -> Result<PresenceInfo, BrokerError>;

    /// Keeps the records of these sessions alive for `ttl` from now.
    async fn touch(&self, sids: &[Arc<str>], ttl: Duration) -> Result<(), BrokerError>;

    /// Removes the records of sessions not touched in time (at most `limit` sessions); the members that left,
    /// as (stream, id). Each leave is returned to exactly one caller, whichever node sweeps.
    async fn expire(&self, limit: usize) -> Result<Vec<(String, String)>, BrokerError>;
}

/// The presence rules of a node over its store.
pub struct Presence {
    store: Arc<dyn PresenceStore>,
    ttl: Duration,
    /// Where join and leave events enter the broadcast path (transient, to every node).
    events: mpsc::Sender<Publication>,
    /// Sessions of this node that joined something: their records are touched while they are connected.
    local: Mutex<HashSet<Arc<str>>>,
}

impl Presence {
    pub fn new(store: Arc<dyn PresenceStore>, ttl: Duration, events: mpsc::Sender<Publication>) -> Self {
        Self { store, ttl, events, local: Mutex::default() }
    }

    /// Adds `sid` to the presence set of `stream` as `member`; broadcasts `join` when the id is new there.
    pub async fn join(&self, stream: &str, sid: &Arc<str>, member: &Member) -> Result<Added, PresenceError> {
        self.local.lock().insert(sid.clone());
        let added = self.store.add(stream, sid, member, self.ttl).await?;
        if added == Added::Joined {
            self.emit(stream, PresenceEvent::Join(member.clone())).await;
        }
        Ok(added)
    }

    /// Removes `sid` from the presence set of `stream`; broadcasts `leave` when it was its id's last session.
    pub async fn leave(&self, stream: &str, sid: &str) -> Result<Option<String>, PresenceError> {
        let left = self.store.remove(stream, sid).await?;
        if let Some(id) = &left {
            self.emit(stream, PresenceEvent::Leave(id.clone())).await;
        }
        Ok(left)
    }

    /// Moves a restored session's record from its previous sid to the new one: added first, so the member never
    /// looks gone.
    pub async fn take_over(
        &self,
        stream: &str,
        previous: &str,
        sid: &Arc<str>,
        member: &Member,
    ) -> Result<(), PresenceError> {
        self.join(stream, sid, member).await?;
        self.leave(stream, previous).await?;
        Ok(())
    }

    /// The presence set of `stream`.
    pub async fn info(&self, stream: &str, records: bool) -> Result<PresenceInfo, PresenceError> {
        Ok(self.store.info(stream, records).await?)
    }

    /// The session's connection ended: its records are no longer touched and expire after `presence_ttl`.
    pub fn forget_session(&self, sid: &str) {
        self.local.lock().remove(sid);
    }

    /// Hands an event to the broadcast path. While that queue is full the caller (a presence command of one
    /// connection, or the sweeper) waits for room: an event is a change of the set that watchers would otherwise
    /// never learn of, and a burst of store answers (many joins completing at once) must not lose any. Dropped, and
    /// logged, only when no room comes up within [`EVENT_WAIT`].
    async fn emit(&self, stream: &str, event: PresenceEvent) {
        let publication = Publication { transient: true, presence: true, ..Publication::new(stream, event.to_json()) };
        if self.events.send_timeout(publication, EVENT_WAIT).await.is_err() {
            tracing::warn!(stream, "presence event dropped: the broadcast queue stayed full");
        }
    }

    /// Touches the records of this node's sessions every half TTL and sweeps expired records every second (or
    /// every half TTL when that is shorter), until `stop`.
    pub(crate) fn start(
        self: &Arc<Self>,
        tracker: &tokio_util::task::TaskTracker,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let presence = Arc::downgrade(self);
        let half_ttl = (self.ttl / 2).max(Duration::from_millis(100));
        let sweep_every = half_ttl.min(Duration::from_secs(1));
        tracker.spawn(async move {
            let mut sweep = tokio::time::interval(sweep_every);
            sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut touch = tokio::time::interval(half_ttl);
            touch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let touching = tokio::select! {
                    _ = touch.tick() => true,
                    _ = sweep.tick() => false,
                    () = stop.cancelled() => break,
                };
                let Some(presence) = presence.upgrade() else { break };
                if touching {
                    presence.touch_local().await;
                } else {
                    presence.sweep().await;
                }
            }
        });
    }

    async fn touch_local(&self) {
        let sids: Vec<Arc<str>> = self.local.lock().iter().cloned().collect();
        for chunk in sids.chunks(SWEEP_BATCH) {
            if let Err(error) = self.store.touch(chunk, self.ttl).await {
                tracing::debug!(%error, "presence records not touched this round");
                return;
            }
        }
    }

    async fn sweep(&self) {
        match self.store.expire(SWEEP_BATCH).await {
            Ok(left) => {
                for (stream, id) in left {
                    self.emit(&stream, PresenceEvent::Leave(id)).await;
                }
            }
            Err(error) => tracing::debug!(%error, "expired presence records not swept this round"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_info_are_written_as_anycable_clients_read_them() {
        let member = Member { id: "1".into(), info: Some(r#"{"name":"Ann"}"#.into()) };
        assert_eq!(PresenceEvent::Join(member.clone()).to_json(), r#"{"type":"join","id":"1","info":{"name":"Ann"}}"#);
        let bare = Member { id: "2\"".into(), info: None };
        assert_eq!(PresenceEvent::Join(bare.clone()).to_json(), r#"{"type":"join","id":"2\""}"#);
        assert_eq!(PresenceEvent::Leave("1".into()).to_json(), r#"{"type":"leave","id":"1"}"#);
        let info = PresenceInfo { total: 2, records: Some(vec![member, bare]) };
        let parsed: serde_json::Value = serde_json::from_str(&info.to_json()).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"type":"info","total":2,"records":[{"id":"1","info":{"name":"Ann"}},{"id":"2\""}]})
        );
        assert_eq!(PresenceInfo { total: 3, records: None }.to_json(), r#"{"type":"info","total":3}"#);
    }

    #[tokio::test]
    async fn a_burst_of_changes_waits_for_room_in_the_broadcast_queue_rather_than_losing_events() {
        let (events, mut queue) = mpsc::channel(1);
        let presence =
            Arc::new(Presence::new(Arc::new(memory::MemoryPresence::default()), Duration::from_secs(15), events));
        let joins: Vec<_> = (0..5)
            .map(|n| {
                let presence = presence.clone();
                tokio::spawn(async move {
                    let sid: Arc<str> = format!("s{n}").into();
                    presence.join("room", &sid, &Member { id: format!("m{n}"), info: None }).await
                })
            })
            .collect();
        let mut received = Vec::new();
        while received.len() < 5 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let event = tokio::time::timeout(Duration::from_secs(10), queue.recv()).await.expect("an event was lost");
            received.push(event.unwrap().data);
        }
        for join in joins {
            assert_eq!(join.await.unwrap(), Ok(Added::Joined));
        }
        received.sort();
        let expected: Vec<String> =
            (0..5).map(|n| PresenceEvent::Join(Member { id: format!("m{n}"), info: None }).to_json()).collect();
        assert_eq!(received, expected);
    }

    #[test]
    fn members_are_checked() {
        assert_eq!(Member::checked(String::new(), None), Err(PresenceError::BadId));
        assert_eq!(Member::checked("x".repeat(MAX_ID_BYTES + 1), None), Err(PresenceError::BadId));
        assert_eq!(Member::checked("1".into(), Some("1".repeat(MAX_INFO_BYTES + 1))), Err(PresenceError::InfoTooLarge));
        assert!(Member::checked("1".into(), Some("{}".into())).is_ok());
    }
}
