//! Offset order across nodes: each broadcast worker hands registered publications to the hub in the order of
//! their offsets, whichever node registered them.
//!
//! A node delivers what it registered itself at once and what other nodes registered when the cluster pub/sub
//! brings it, so two messages of one stream registered on two nodes a moment apart can arrive out of offset
//! order. A client that saw offset 8 before 7 would then ask, after a reconnect, for what follows 7, and get 8
//! twice. So a positioned publication that arrives ahead of the next expected offset of its stream waits here
//! until the gap is filled, or at most [`GAP_WAIT`] (a message lost by the pub/sub, or a node that only now got
//! the stream), then everything waiting goes out in order. Publications without a position pass at once.
//!
//! What it holds is bounded: at most [`MAX_WAITING`] publications per stream wait, and a stream is forgotten
//! after [`IDLE`] without a positioned publication.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::broadcast::Publication;

/// How long a publication waits for the ones before it.
pub(crate) const GAP_WAIT: Duration = Duration::from_millis(200);
/// Publications of one stream that may wait; one more releases them all.
const MAX_WAITING: usize = 1024;
/// Streams without a positioned publication for this long are forgotten.
const IDLE: Duration = Duration::from_secs(60);

struct StreamOrder {
    epoch: Arc<str>,
    /// The offset that may go out next.
    next: u64,
    waiting: BTreeMap<u64, Publication>,
    /// When the oldest of `waiting` started waiting.
    since: Option<Instant>,
    last_seen: Instant,
}

impl StreamOrder {
    /// Moves what can go out now to `out`: the run of consecutive offsets from `next`, or everything when the
    /// wait is over.
    fn release(&mut self, now: Instant, out: &mut Vec<Publication>) {
        let overdue = self.since.is_some_and(|since| now.duration_since(since) >= GAP_WAIT);
        let overflow = self.waiting.len() > MAX_WAITING;
        while let Some(entry) = self.waiting.first_entry() {
            if *entry.key() != self.next && !overdue && !overflow {
                break;
            }
            let (offset, publication) = entry.remove_entry();
            self.next = offset + 1;
            out.push(publication);
        }
        self.since = if self.waiting.is_empty() { None } else { self.since.or(Some(now)) };
    }
}

/// The per-stream order of one broadcast worker.
#[derive(Default)]
pub(crate) struct Ordering {
    streams: HashMap<String, StreamOrder>,
    /// Streams with publications waiting: while there are none, nothing needs a look per publication.
    waiting_streams: usize,
    last_sweep: Option<Instant>,
}

impl Ordering {
    /// Takes a publication; returns what may be delivered now, in order.
    pub(crate) fn accept(&mut self, publication: Publication, now: Instant) -> Vec<Publication> {
        let Some(position) = publication.position.clone() else { return vec![publication] };
        self.forget_idle(now);
        let mut out = Vec::with_capacity(1);
        match self.streams.get_mut(&publication.stream) {
            Some(order) if order.epoch == position.epoch => {
                order.last_seen = now;
                if position.offset < order.next {
                    // Older than what went out already (it waited too long): deliver it rather than lose it.
                    out.push(publication);
                } else {
                    let was_waiting = order.since.is_some();
                    order.waiting.insert(position.offset, publication);
                    order.release(now, &mut out);
                    let is_waiting = order.since.is_some();
                    self.count_waiting(was_waiting, is_waiting);
                }
            }
            _ => {
                // The first of its stream here (or of a new epoch): nothing to wait for.
                let order = StreamOrder {
                    epoch: position.epoch.clone(),
                    next: position.offset + 1,
                    waiting: BTreeMap::new(),
                    since: None,
                    last_seen: now,
                };
                if let Some(old) = self.streams.insert(publication.stream.clone(), order) {
                    // What still waited in the old epoch goes out first, as it is, rather than being lost.
                    self.count_waiting(old.since.is_some(), false);
                    out.extend(old.waiting.into_values());
                }
                out.push(publication);
            }
        }
        out
    }

    fn count_waiting(&mut self, was_waiting: bool, is_waiting: bool) {
        match (was_waiting, is_waiting) {
            (false, true) => self.waiting_streams += 1,
            (true, false) => self.waiting_streams -= 1,
            _ => {}
        }
    }

    /// When the oldest waiting publication is due, if any waits.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        if self.waiting_streams == 0 {
            return None;
        }
        self.streams.values().filter_map(|o| o.since).min().map(|since| since + GAP_WAIT)
    }

    /// Releases what waited long enough; returns what may be delivered, in order.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<Publication> {
        let mut out = Vec::new();
        if self.waiting_streams > 0 {
            for order in self.streams.values_mut() {
                if order.since.is_some() {
                    order.release(now, &mut out);
                    if order.since.is_none() {
                        self.waiting_streams -= 1;
                    }
                }
            }
        }
        self.forget_idle(now);
        out
    }

    /// Forgets streams idle for [`IDLE`] with nothing waiting; looks at most once per [`IDLE`].
    fn forget_idle(&mut self, now: Instant) {
        if self.last_sweep.is_none_or(|at| now.duration_since(at) >= IDLE) {
            self.last_sweep = Some(now);
            self.streams.retain(|_, o| !o.waiting.is_empty() || now.duration_since(o.last_seen) < IDLE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::StreamPosition;

    fn p(offset: u64) -> Publication {
        Publication {
            position: Some(StreamPosition { offset, epoch: "e".into() }),
            ..Publication::new("s", offset.to_string())
        }
    }

    fn data(out: Vec<Publication>) -> Vec<String> {
        out.into_iter().map(|p| p.data).collect()
    }

    #[test]
    fn a_publication_ahead_of_its_stream_waits_for_the_gap_to_fill() {
        let mut o = Ordering::default();
        let now = Instant::now();
        assert_eq!(data(o.accept(p(5), now)), ["5"]);
        assert!(o.accept(p(7), now).is_empty());
        assert!(o.accept(p(8), now).is_empty());
        assert!(o.next_deadline().is_some());
        assert_eq!(data(o.accept(p(6), now)), ["6", "7", "8"]);
        assert_eq!(o.next_deadline(), None);
        assert_eq!(data(o.accept(p(9), now)), ["9"]);
    }

    #[test]
    fn a_gap_that_is_never_filled_is_given_up_after_the_wait() {
        let mut o = Ordering::default();
        let now = Instant::now();
        o.accept(p(1), now);
        assert!(o.accept(p(3), now).is_empty());
        assert!(o.expire(now + GAP_WAIT / 2).is_empty());
        assert_eq!(data(o.expire(now + GAP_WAIT)), ["3"]);
        assert_eq!(data(o.accept(p(2), now + GAP_WAIT)), ["2"], "late: delivered, not lost");
        assert_eq!(data(o.accept(p(4), now + GAP_WAIT)), ["4"]);
    }

    #[test]
    fn unpositioned_publications_and_new_epochs_pass_at_once() {
        let mut o = Ordering::default();
        let now = Instant::now();
        o.accept(p(1), now);
        assert_eq!(data(o.accept(Publication::new("s", "plain"), now)), ["plain"]);
        let other_epoch = Publication {
            position: Some(StreamPosition { offset: 9, epoch: "f".into() }),
            ..Publication::new("s", "9")
        };
        assert_eq!(data(o.accept(other_epoch, now)), ["9"]);
    }

    #[test]
    fn what_waits_when_the_epoch_changes_goes_out_rather_than_being_lost() {
        let mut o = Ordering::default();
        let now = Instant::now();
        o.accept(p(1), now);
        assert!(o.accept(p(3), now).is_empty());
        let new_epoch = Publication {
            position: Some(StreamPosition { offset: 1, epoch: "f".into() }),
            ..Publication::new("s", "f1")
        };
        assert_eq!(data(o.accept(new_epoch, now)), ["3", "f1"]);
        assert_eq!(o.next_deadline(), None, "nothing waits any more");
    }

    #[test]
    fn waiting_is_bounded_per_stream_and_idle_streams_are_forgotten() {
        let mut o = Ordering::default();
        let now = Instant::now();
        o.accept(p(1), now);
        let mut released = Vec::new();
        for offset in 3..(3 + MAX_WAITING as u64 + 1) {
            released.extend(o.accept(p(offset), now));
        }
        assert_eq!(released.len(), MAX_WAITING + 1, "one over the bound releases them all");
        o.expire(now);
        assert_eq!(o.streams.len(), 1);
        o.expire(now + IDLE + Duration::from_secs(1));
        assert!(o.streams.is_empty());
        // Forgotten without any gap too: a stream that never waits is dropped by later publications.
        o.accept(p(1), now + IDLE * 2);
        let other = Publication {
            position: Some(StreamPosition { offset: 1, epoch: "e".into() }),
            ..Publication::new("t", "1")
        };
        o.accept(other, now + IDLE * 4);
        assert_eq!(o.streams.len(), 1);
    }
}
