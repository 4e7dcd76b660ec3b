//! The memory presence store: presence records in this process, for a single node (`broker=memory`).
//!
//! One lock over two indexes: stream -> id -> the member's info and sessions, and session -> its deadline and
//! the (stream, id) records it holds. A sweep looks at every session with records once (the sweeper runs every
//! second), which is cheap next to the connections those sessions are. Memory per member: measured in
//! docs/benchmarks.md ("Presence").

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{Added, Member, PresenceError, PresenceInfo, PresenceStore};
use crate::broker::BrokerError;

struct Entry {
    info: Option<Box<str>>,
    /// Sessions present under this id; nearly always one.
    sids: Vec<Arc<str>>,
}

struct SessionRecords {
    deadline: Instant,
    /// (stream, id) for each stream the session is present in.
    records: Vec<(Arc<str>, Box<str>)>,
}

#[derive(Default)]
struct State {
    streams: HashMap<Arc<str>, HashMap<Box<str>, Entry>>,
    sessions: HashMap<Arc<str>, SessionRecords>,
}

impl State {
    /// Removes the record of `sid` as `id` in `stream`; the id when it was its last session there.
    fn unlink(&mut self, stream: &str, id: &str, sid: &str) -> Option<String> {
        let members = self.streams.get_mut(stream)?;
        let entry = members.get_mut(id)?;
        entry.sids.retain(|s| **s != *sid);
        if !entry.sids.is_empty() {
            return None;
        }
        members.remove(id);
        if members.is_empty() {
            self.streams.remove(stream);
        }
        Some(id.to_owned())
    }
}

/// Presence records in memory.
#[derive(Default)]
pub struct MemoryPresence {
    state: Mutex<State>,
}

impl MemoryPresence {
    pub(crate) fn add_at(
        &self,
        stream: &str,
        sid: &str,
        member: &Member,
        deadline: Instant,
    ) -> Result<Added, PresenceError> {
        let mut state = self.state.lock();
        let state = &mut *state;
        let sid: Arc<str> = match state.sessions.get_key_value(sid) {
            Some((sid, _)) => sid.clone(),
            None => sid.into(),
        };
        let session =
            state.sessions.entry(sid.clone()).or_insert_with(|| SessionRecords { deadline, records: Vec::new() });
        session.deadline = deadline;
        let info = member.info.as_deref().map(Box::from);
        if let Some((_, current)) = session.records.iter().find(|(s, _)| **s == *stream) {
            if **current != *member.id {
                return Err(PresenceError::IdMismatch { current: current.to_string() });
            }
            // The same session again: its info is refreshed, nobody joined.
            if let Some(entry) = state.streams.get_mut(stream).and_then(|m| m.get_mut(member.id.as_str())) {
                entry.info = info;
            }
            return Ok(Added::Present);
        }
        let stream: Arc<str> = match state.streams.get_key_value(stream) {
            Some((stream, _)) => stream.clone(),
            None => stream.into(),
        };
        session.records.push((stream.clone(), member.id.as_str().into()));
        let members = state.streams.entry(stream).or_default();
        match members.get_mut(member.id.as_str()) {
            Some(entry) => {
                entry.info = info;
                entry.sids.push(sid);
                Ok(Added::Present)
            }
            None => {
                members.insert(member.id.as_str().into(), Entry { info, sids: vec![sid] });
                Ok(Added::Joined)
            }
        }
    }

    pub(crate) fn remove_now(&self, stream: &str, sid: &str) -> Option<String> {
        let mut state = self.state.lock();
        let session = state.sessions.get_mut(sid)?;
        let at = session.records.iter().position(|(s, _)| **s == *stream)?;
        let (stream, id) = session.records.swap_remove(at);
        if session.records.is_empty() {
            state.sessions.remove(sid);
        }
        state.unlink(&stream, &id, sid)
    }

    pub(crate) fn info_now(&self, stream: &str, records: bool) -> PresenceInfo {
        let state = self.state.lock();
        let Some(members) = state.streams.get(stream) else {
            return PresenceInfo { total: 0, records: records.then(Vec::new) };
        };
        PresenceInfo {
            total: members.len(),
            records: records.then(|| {
                members
                    .iter()
                    .map(|(id, entry)| Member { id: id.to_string(), info: entry.info.as_deref().map(str::to_owned) })
                    .collect()
            }),
        }
    }

    pub(crate) fn touch_at(&self, sids: &[Arc<str>], deadline: Instant) {
        let mut state = self.state.lock();
        for sid in sids {
            if let Some(session) = state.sessions.get_mut(&**sid) {
                session.deadline = deadline;
            }
        }
    }

    pub(crate) fn expire_at(&self, now: Instant, limit: usize) -> Vec<(String, String)> {
        let mut state = self.state.lock();
        let expired: Vec<Arc<str>> =
            state.sessions.iter().filter(|(_, s)| s.deadline < now).map(|(sid, _)| sid.clone()).take(limit).collect();
        let mut left = Vec::new();
        for sid in expired {
            let Some(session) = state.sessions.remove(&sid) else { continue };
            for (stream, id) in session.records {
                if let Some(id) = state.unlink(&stream, &id, &sid) {
                    left.push((stream.to_string(), id));
                }
            }
        }
        left
    }

    /// Streams with members, members, and sessions with records, for tests and measurements.
    pub fn counts(&self) -> (usize, usize, usize) {
        let state = self.state.lock();
        (state.streams.len(), state.streams.values().map(HashMap::len).sum(), state.sessions.len())
    }
}

#[async_trait]
impl PresenceStore for MemoryPresence {
    async fn add(&self, stream: &str, sid: &str, member: &Member, ttl: Duration) -> Result<Added, PresenceError> {
        self.add_at(stream, sid, member, Instant::now() + ttl)
    }

    async fn remove(&self, stream: &str, sid: &str) -> Result<Option<String>, BrokerError> {
        Ok(self.remove_now(stream, sid))
    }

    async fn info(&self, stream: &str, records: bool) -> Result<PresenceInfo, BrokerError> {
        Ok(self.info_now(stream, records))
    }

    async fn touch(&self, sids: &[Arc<str>], ttl: Duration) -> Result<(), BrokerError> {
        self.touch_at(sids, Instant::now() + ttl);
        Ok(())
    }

    async fn expire(&self, limit: usize) -> Result<Vec<(String, String)>, BrokerError> {
        Ok(self.expire_at(Instant::now(), limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str) -> Member {
        Member { id: id.into(), info: Some(format!("{{\"name\":\"{id}\"}}")) }
    }

    #[test]
    fn an_id_joins_with_its_first_session_and_leaves_with_its_last() {
        let p = MemoryPresence::default();
        let later = Instant::now() + Duration::from_secs(15);
        assert_eq!(p.add_at("room", "s1", &member("ann"), later), Ok(Added::Joined));
        assert_eq!(p.add_at("room", "s2", &member("ann"), later), Ok(Added::Present), "a second tab");
        assert_eq!(p.add_at("room", "s3", &member("bob"), later), Ok(Added::Joined));
        assert_eq!(p.add_at("room", "s1", &member("ann"), later), Ok(Added::Present), "joining again changes nothing");
        let info = p.info_now("room", true);
        assert_eq!(info.total, 2);
        let mut ids: Vec<String> = info.records.unwrap().into_iter().map(|m| m.id).collect();
        ids.sort();
        assert_eq!(ids, ["ann", "bob"]);
        assert_eq!(p.remove_now("room", "s1"), None, "ann has another session");
        assert_eq!(p.remove_now("room", "s2"), Some("ann".into()));
        assert_eq!(p.remove_now("room", "s2"), None, "already gone");
        assert_eq!(p.remove_now("room", "s3"), Some("bob".into()));
        assert_eq!(p.counts(), (0, 0, 0));
        assert_eq!(p.info_now("room", true), PresenceInfo { total: 0, records: Some(vec![]) });
    }

    #[test]
    fn a_session_has_one_id_per_stream() {
        let p = MemoryPresence::default();
        let later = Instant::now() + Duration::from_secs(15);
        p.add_at("room", "s1", &member("ann"), later).unwrap();
        assert_eq!(
            p.add_at("room", "s1", &member("bob"), later),
            Err(PresenceError::IdMismatch { current: "ann".into() })
        );
        assert_eq!(p.add_at("other", "s1", &member("bob"), later), Ok(Added::Joined), "another stream is another set");
        assert_eq!(p.info_now("room", false), PresenceInfo { total: 1, records: None });
    }

    #[test]
    fn untouched_sessions_expire_and_touched_ones_stay() {
        let p = MemoryPresence::default();
        let start = Instant::now();
        let ttl = Duration::from_secs(15);
        p.add_at("room", "gone", &member("ann"), start + ttl).unwrap();
        p.add_at("room", "kept", &member("bob"), start + ttl).unwrap();
        p.add_at("room", "tab", &member("bob"), start + ttl).unwrap();
        p.touch_at(&["kept".into()], start + ttl * 2);
        assert!(p.expire_at(start + ttl, 10).is_empty(), "nothing is late yet");
        let left = p.expire_at(start + ttl + Duration::from_millis(1), 10);
        assert_eq!(left, [("room".to_owned(), "ann".to_owned())], "bob still has a touched session");
        assert_eq!(p.counts(), (1, 1, 1));
        assert_eq!(p.expire_at(start + ttl * 3, 10), [("room".to_owned(), "bob".to_owned())]);
        assert_eq!(p.counts(), (0, 0, 0));
    }
}
