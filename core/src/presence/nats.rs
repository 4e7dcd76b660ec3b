//! Presence records in NATS JetStream, for every node of a cluster on one NATS (`broker=nats`).
//!
//! AnyCable-Go's NATS broker keeps no presence; this store does, on the NATS 2.9 Debian ships (no per-message
//! TTL, no atomic batches). Every change is a compare-and-set on one key-value entry: a write that names the
//! revision it read (`update`), or a delete of the very message it read (`delete_message(revision)`), each
//! refused when another node wrote in between, which then reads again and retries. Two buckets (created with the
//! broker's others; they allow deleting single messages, so an emptied entry leaves no marker behind):
//!
//! - `ferrocable_presence`, key `<stream>.<id>` (each the hex of the first 16 bytes of its SHA-256): one member of
//!   one stream, `{"id":…,"info":…,"sids":{<sid>:<revision>,…}}`, the sessions present under that id with the
//!   revision of their session entry when they were added. The write that creates it reports the join, the delete
//!   that takes its last session out reports the leave, so each is reported by exactly one node. A stream's set is
//!   the keys under `<stream>.`; `info` counts them (stream info by subject) or reads them (a consumer of the
//!   last message of each).
//! - `ferrocable_presence_sessions`, key `s.<sid>` (hashed the same way): a session's entry,
//!   `{"sid":…,"ttl":<ms>,"records":[[stream,id],…],"expiring":[[stream,id],…]}`. Every add and touch rewrites it,
//!   and a bucket keeps one message per key in the order they were written: its first messages are the sessions
//!   touched longest ago, and a message's time (the NATS server's clock) is when its session was last touched.
//!   Key `clock`: written by every sweep to read the time of the server that stamps those messages.
//!
//! Expiry reads the sessions bucket from its first message while messages are older than their `ttl`. A sweeper
//! claims a late session by rewriting its entry with its records moved to `expiring` (refused if the session was
//! touched meanwhile), unlinks them from their members (only sessions added before the claim: a session that came
//! back and joined again stays), then drops them from the entry, deleting it when nothing is left. A sweeper that
//! dies halfway leaves the claimed entry, which is late again one `ttl` later and finished by the next sweep (unless
//! its session, cut off from NATS for longer than its `ttl`, is back and touching it: then when it ends).
//! Nodes of a cluster are meant to share one `presence_ttl`: the sweep stops at the first session still in time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{consumer, kv};
use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt};
use sha2::Digest;

use super::{Added, Member, PresenceError, PresenceInfo, PresenceStore};
use crate::broker::BrokerError;
use crate::broker::nats::{NatsBroker, Ready};

/// The bucket of members.
pub const MEMBERS_BUCKET: &str = "ferrocable_presence";
/// The bucket of presence sessions.
pub const SESSIONS_BUCKET: &str = "ferrocable_presence_sessions";
const CLOCK_KEY: &str = "clock";
/// Compare-and-set attempts before an operation gives up (each conflict means another node made progress).
const ATTEMPTS: usize = 100;
/// Sessions touched at once.
const TOUCH_CONCURRENCY: usize = 32;

/// `<hex>` of the first 16 bytes of the SHA-256 of `name`: a key token whatever the name holds.
fn hashed(name: &str) -> String {
    hex::encode(&sha2::Sha256::digest(name.as_bytes())[..16])
}

/// The key of a session in the sessions bucket: `s.<hex>`.
pub fn session_key(sid: &str) -> String {
    format!("s.{}", hashed(sid))
}

fn member_key(stream: &str, id: &str) -> String {
    format!("{}.{}", hashed(stream), hashed(id))
}

#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
struct MemberEntry {
    id: String,
    info: Option<String>,
    /// Session -> the revision of its session entry when it was added.
    sids: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
struct SessionEntry {
    sid: String,
    /// Milliseconds the session lives after its entry was last written.
    ttl: u64,
    /// (stream, id) the session is present as.
    records: Vec<(String, String)>,
    /// (stream, id) a sweeper is taking out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    expiring: Vec<(String, String)>,
}

/// What a compare-and-set step does with the entry it read.
enum Step<T> {
    Keep,
    Write(T),
    Delete,
}

/// Why one compare-and-set attempt did not go through.
enum Failed {
    /// Another writer was first: read again.
    Conflict,
    Broker(BrokerError),
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

impl NatsBroker {
    /// Reads `key` of `store` (its value and revision, 0 when absent), lets `step` decide, and applies the decision
    /// only if nobody wrote the entry meanwhile, else starts over. Returns what `step` returned with the revision
    /// written (that of the entry read when kept, 0 when deleted).
    async fn cas<T, R>(
        &self,
        store: &kv::Store,
        key: &str,
        mut step: impl FnMut(Option<T>) -> Result<(Step<T>, R), PresenceError>,
    ) -> Result<(R, u64), PresenceError>
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
    {
        for attempt in 0..ATTEMPTS {
            let (current, revision) = match store.entry(key).await {
                Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
                    match serde_json::from_slice::<T>(&entry.value) {
                        Ok(value) => (Some(value), entry.revision),
                        Err(error) => {
                            // Not ours (or from an incompatible version): treated as absent and overwritten.
                            tracing::warn!(%error, key, bucket = store.name, "unreadable presence entry replaced");
                            (None, entry.revision)
                        }
                    }
                }
                Ok(Some(marker)) => (None, marker.revision),
                Ok(None) => (None, 0),
                Err(error) => return Err(self.reset(error).into()),
            };
            let existed = current.is_some();
            let (decision, result) = step(current)?;
            let applied = match decision {
                Step::Keep => Ok(revision),
                Step::Write(value) => self.write(store, key, &value, revision).await,
                Step::Delete if !existed => Ok(0),
                Step::Delete => self.delete(store, revision).await.map(|()| 0),
            };
            match applied {
                Ok(written) => return Ok((result, written)),
                Err(Failed::Conflict) => {
                    if attempt > 3 {
                        tokio::time::sleep(Duration::from_millis(fastrand::u64(1..=5 * attempt as u64))).await;
                    }
                }
                Err(Failed::Broker(error)) => return Err(error.into()),
            }
        }
        Err(BrokerError::Unavailable(format!("NATS JetStream: presence entry {key} kept changing; gave up")).into())
    }

    async fn write<T: serde::Serialize>(
        &self,
        store: &kv::Store,
        key: &str,
        value: &T,
        revision: u64,
    ) -> Result<u64, Failed> {
        let bytes = serde_json::to_vec(value).map_err(|e| Failed::Broker(BrokerError::Unavailable(e.to_string())))?;
        match store.update(key, bytes.into(), revision).await {
            Ok(written) => Ok(written),
            Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => Err(Failed::Conflict),
            Err(error) => Err(Failed::Broker(self.reset(error))),
        }
    }

    /// Deletes the message `revision` of a bucket: refused (a conflict) when it is no longer there, because the
    /// key was written or deleted since.
    async fn delete(&self, store: &kv::Store, revision: u64) -> Result<(), Failed> {
        use async_nats::jetstream::stream::DeleteMessageErrorKind;
        match store.stream.delete_message(revision).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Failed::Conflict),
            Err(error) if matches!(error.kind(), DeleteMessageErrorKind::JetStream(_)) => Err(Failed::Conflict),
            Err(error) => Err(Failed::Broker(self.reset(error))),
        }
    }

    /// Takes `sid` out of the member `id` of `stream` — when `before` is given, only if it was added before that
    /// revision of its session entry; the id when that was its last session (it left).
    async fn unlink(
        &self,
        ready: &Ready,
        stream: &str,
        id: &str,
        sid: &str,
        before: Option<u64>,
    ) -> Result<Option<String>, PresenceError> {
        let key = member_key(stream, id);
        let (left, _) = self
            .cas(&ready.presence_members, &key, |current: Option<MemberEntry>| {
                let Some(mut entry) = current else { return Ok((Step::Keep, None)) };
                match entry.sids.get(sid) {
                    Some(&added) if before.is_none_or(|before| added < before) => {}
                    _ => return Ok((Step::Keep, None)),
                }
                entry.sids.remove(sid);
                if entry.sids.is_empty() {
                    let id = std::mem::take(&mut entry.id);
                    Ok((Step::Delete, Some(id)))
                } else {
                    Ok((Step::Write(entry), None))
                }
            })
            .await?;
        Ok(left)
    }

    /// The time of the NATS server (Unix nanoseconds): the time of a message written now to the sessions bucket,
    /// whose stream's server stamps the sessions' messages too (in a NATS cluster, servers' clocks may differ).
    async fn server_now(&self, ready: &Ready) -> Result<i128, BrokerError> {
        let sessions = &ready.presence_sessions;
        if let Err(error) = sessions.put(CLOCK_KEY, bytes::Bytes::new()).await {
            return Err(self.reset(error));
        }
        match sessions.entry(CLOCK_KEY).await {
            Ok(Some(entry)) => Ok(entry.created.unix_timestamp_nanos()),
            Ok(None) => Err(self.reset("the presence clock entry vanished")),
            Err(error) => Err(self.reset(error)),
        }
    }

    /// Finishes the expiry of a claimed session: unlinks the records its entry lists as expiring (added before
    /// `claim`), then drops them from the entry. The members that left are pushed to `left` as they go, so a
    /// failure halfway loses none of them.
    async fn finish_expiry(
        &self,
        ready: &Ready,
        key: &str,
        sid: &str,
        claim: u64,
        expiring: &[(String, String)],
        left: &mut Vec<(String, String)>,
    ) -> Result<(), PresenceError> {
        for (stream, id) in expiring {
            if let Some(id) = self.unlink(ready, stream, id, sid, Some(claim)).await? {
                left.push((stream.clone(), id));
            }
        }
        self.cas(&ready.presence_sessions, key, |current: Option<SessionEntry>| {
            let Some(mut entry) = current else { return Ok((Step::Keep, ())) };
            entry.expiring.retain(|record| !expiring.contains(record));
            if entry.records.is_empty() && entry.expiring.is_empty() {
                Ok((Step::Delete, ()))
            } else {
                Ok((Step::Write(entry), ()))
            }
        })
        .await?;
        Ok(())
    }
}

#[async_trait]
impl PresenceStore for NatsBroker {
    async fn add(&self, stream: &str, sid: &str, member: &Member, ttl: Duration) -> Result<Added, PresenceError> {
        let ready = self.ready().await?;
        let session_key = session_key(sid);
        // The session's entry first: it says which id the session is in the stream as, and its new revision marks
        // the member's session as added after any claim a sweeper made before.
        let ((), revision) = self
            .cas(&ready.presence_sessions, &session_key, |current: Option<SessionEntry>| {
                let mut entry = current.unwrap_or_else(|| SessionEntry { sid: sid.to_owned(), ..Default::default() });
                entry.ttl = millis(ttl);
                match entry.records.iter().find(|(s, _)| s == stream) {
                    Some((_, current)) if *current != member.id => {
                        return Err(PresenceError::IdMismatch { current: current.clone() });
                    }
                    Some(_) => {}
                    None => entry.records.push((stream.to_owned(), member.id.clone())),
                }
                Ok((Step::Write(entry), ()))
            })
            .await?;
        let key = member_key(stream, &member.id);
        let (added, _) = self
            .cas(&ready.presence_members, &key, |current: Option<MemberEntry>| {
                let mut entry = current.unwrap_or_else(|| MemberEntry { id: member.id.clone(), ..Default::default() });
                let added = if entry.sids.is_empty() { Added::Joined } else { Added::Present };
                entry.info.clone_from(&member.info);
                entry.sids.insert(sid.to_owned(), revision);
                Ok((Step::Write(entry), added))
            })
            .await?;
        Ok(added)
    }

    async fn remove(&self, stream: &str, sid: &str) -> Result<Option<String>, BrokerError> {
        let ready = self.ready().await?;
        let session_key = session_key(sid);
        let unavailable = |error: PresenceError| match error {
            PresenceError::Broker(error) => error,
            other => BrokerError::Unavailable(other.to_string()),
        };
        let id = match ready.presence_sessions.entry(&session_key).await {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
                serde_json::from_slice::<SessionEntry>(&entry.value)
                    .ok()
                    .and_then(|entry| entry.records.into_iter().find(|(s, _)| s == stream).map(|(_, id)| id))
            }
            Ok(_) => None,
            Err(error) => return Err(self.reset(error)),
        };
        let Some(id) = id else { return Ok(None) };
        // The member first, then the session's entry: a sweeper claiming the session in between finds the session
        // already gone from the member.
        let left = self.unlink(&ready, stream, &id, sid, None).await.map_err(unavailable)?;
        self.cas(&ready.presence_sessions, &session_key, |current: Option<SessionEntry>| {
            let Some(mut entry) = current else { return Ok((Step::Keep, ())) };
            let before = entry.records.len();
            entry.records.retain(|(s, _)| s != stream);
            if entry.records.len() == before {
                Ok((Step::Keep, ()))
            } else if entry.records.is_empty() && entry.expiring.is_empty() {
                Ok((Step::Delete, ()))
            } else {
                Ok((Step::Write(entry), ()))
            }
        })
        .await
        .map_err(unavailable)?;
        Ok(left)
    }

    async fn info(&self, stream: &str, records: bool) -> Result<PresenceInfo, BrokerError> {
        let ready = self.ready().await?;
        let members = &ready.presence_members;
        let filter = format!("{}{}.*", members.prefix, hashed(stream));
        if !records {
            let subjects = match members.stream.info_with_subjects(&filter).await {
                Ok(subjects) => subjects,
                Err(error) => return Err(self.reset(error)),
            };
            return match subjects.try_collect::<Vec<_>>().await {
                Ok(subjects) => Ok(PresenceInfo { total: subjects.len(), records: None }),
                Err(error) => Err(self.reset(error)),
            };
        }
        let config = consumer::pull::Config {
            filter_subject: filter,
            deliver_policy: consumer::DeliverPolicy::LastPerSubject,
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(10),
            memory_storage: true,
            ..Default::default()
        };
        let reader = match members.stream.create_consumer(config).await {
            Ok(reader) => reader,
            Err(error) => return Err(self.reset(error)),
        };
        let name = reader.cached_info().name.clone();
        let pending = usize::try_from(reader.cached_info().num_pending).unwrap_or(usize::MAX);
        let mut found = Vec::with_capacity(pending);
        let read = async {
            if pending == 0 {
                return Ok(());
            }
            let mut batch = reader
                .batch()
                .max_messages(pending)
                .expires(Duration::from_secs(2))
                .messages()
                .await
                .map_err(|e| self.reset(e))?;
            let mut read = 0;
            while let Some(message) = batch.next().await {
                let message = message.map_err(|e| self.reset(e))?;
                if let Ok(entry) = serde_json::from_slice::<MemberEntry>(&message.payload) {
                    found.push(Member { id: entry.id, info: entry.info });
                }
                read += 1;
                if read >= pending {
                    break;
                }
            }
            Ok(())
        };
        let result: Result<(), BrokerError> = read.await;
        if let Err(error) = members.stream.delete_consumer(&name).await {
            tracing::debug!(%error, "presence reader not deleted; the NATS server drops it when idle");
        }
        result?;
        Ok(PresenceInfo { total: found.len(), records: Some(found) })
    }

    async fn touch(&self, sids: &[Arc<str>], ttl: Duration) -> Result<(), BrokerError> {
        if sids.is_empty() {
            return Ok(());
        }
        let ready = self.ready().await?;
        let ttl = millis(ttl);
        let keys: Vec<String> = sids.iter().map(|sid| session_key(sid)).collect();
        let ready = &*ready;
        let touches = futures_util::stream::iter(keys)
            .map(|key: String| async move {
                self.cas(&ready.presence_sessions, &key, |current: Option<SessionEntry>| match current {
                    Some(mut entry) => {
                        entry.ttl = ttl;
                        Ok((Step::Write(entry), ()))
                    }
                    None => Ok((Step::Keep, ())),
                })
                .await
            })
            .buffer_unordered(TOUCH_CONCURRENCY);
        let results: Vec<_> = touches.collect().await;
        for result in results {
            match result {
                Ok(_) => {}
                Err(PresenceError::Broker(error)) => return Err(error),
                Err(other) => return Err(BrokerError::Unavailable(other.to_string())),
            }
        }
        Ok(())
    }

    async fn expire(&self, limit: usize) -> Result<Vec<(String, String)>, BrokerError> {
        let ready = self.ready().await?;
        let now = self.server_now(&ready).await?;
        let sessions = &ready.presence_sessions;
        let filter = format!("{}s.>", sessions.prefix);
        let mut left = Vec::new();
        let mut next = 1;
        let mut claimed = 0;
        while claimed < limit {
            let message = match sessions.stream.direct_get_next_for_subject(filter.as_str(), Some(next)).await {
                Ok(message) => message,
                Err(error) if error.kind() == async_nats::jetstream::stream::DirectGetErrorKind::NotFound => break,
                Err(error) => return Err(self.reset(error)),
            };
            next = message.sequence + 1;
            let Ok(entry) = serde_json::from_slice::<SessionEntry>(&message.payload) else {
                // Not ours (or from an incompatible version): it would stay first in line forever.
                tracing::warn!(subject = %message.subject, "unreadable presence session entry deleted");
                if let Err(error) = sessions.stream.delete_message(message.sequence).await {
                    tracing::debug!(%error, "unreadable presence session entry not deleted");
                }
                continue;
            };
            if message.time.unix_timestamp_nanos() + i128::from(entry.ttl) * 1_000_000 >= now {
                // Later messages were written later: nothing after this one is late.
                break;
            }
            let key = message.subject.trim_start_matches(sessions.prefix.as_str()).to_owned();
            let mut claim = entry.clone();
            claim.expiring.append(&mut claim.records);
            let revision = match self.write(sessions, &key, &claim, message.sequence).await {
                Ok(revision) => revision,
                // Touched, changed or claimed by another node meanwhile.
                Err(Failed::Conflict) => continue,
                Err(Failed::Broker(error)) if left.is_empty() => return Err(error),
                Err(Failed::Broker(error)) => {
                    tracing::debug!(%error, "presence sweep stopped halfway; the rest waits for the next one");
                    break;
                }
            };
            claimed += 1;
            if let Err(error) = self.finish_expiry(&ready, &key, &claim.sid, revision, &claim.expiring, &mut left).await
            {
                // The claimed entry is late again after its ttl, and the next sweep finishes it.
                tracing::debug!(%error, "presence sweep stopped halfway; the rest waits for the next one");
                break;
            }
        }
        Ok(left)
    }
}
