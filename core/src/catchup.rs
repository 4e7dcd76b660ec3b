//! The catch-up of one connection: replaying a subscription's missed broadcasts from the broker's history
//! without losing, duplicating or reordering the live broadcasts that arrive meanwhile.
//!
//! While the history of a stream is being fetched, the stream is *held*: live broadcasts of it that the
//! connection finds in its queue are parked instead of written. The session then queues, in one batch, a
//! begin marker, the replayed frames, an end marker and `confirm_history` (or `reject_history`). When the
//! writer meets the end marker, the parked frames the replay already covered are dropped, the others are
//! written in their order, and until the first live frame past the replay arrives, older duplicates (a
//! broadcast registered before the fetch but delivered after it) are dropped too. Then the hold is gone, and
//! frames are no longer looked at.
//!
//! Markers are frames starting with a NUL byte (no JSON frame does); they exist only while a hold does and
//! are consumed here, never written. Only held streams cost anything: frames are read back (their position)
//! only while a hold exists, which is during a replay or just after a session was restored.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol;

const BEGIN: u8 = b'B';
const END: u8 = b'E';

/// The frame that starts the replay of `stream`.
pub(crate) fn begin_marker(stream: &str) -> Bytes {
    marker(BEGIN, stream)
}

/// The frame that ends the replay of `stream`.
pub(crate) fn end_marker(stream: &str) -> Bytes {
    marker(END, stream)
}

fn marker(kind: u8, stream: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(2 + stream.len());
    buf.put_u8(0);
    buf.put_u8(kind);
    buf.put_slice(stream.as_bytes());
    buf.freeze()
}

enum HoldState {
    /// The history is being fetched (or, after a restore, has not been asked for yet): live frames are parked.
    /// A hold with a deadline is released as it is when no request came by then.
    Holding { deadline: Option<Instant> },
    /// Between the markers: these are the replayed frames.
    Replaying,
    /// Replayed up to this position: live frames at or below it are duplicates.
    Replayed { epoch: String, offset: u64 },
}

struct Hold {
    stream: Arc<str>,
    state: HoldState,
    /// Live frames of the stream held back, in arrival order, with their positions.
    parked: Vec<(Bytes, String, u64)>,
    /// Set once a replay (or a refusal) was queued for the stream.
    answered: bool,
    /// Where the replay that was queued ends, applied when the end marker is met.
    replayed_to: Option<(String, u64)>,
}

/// The holds of one connection.
#[derive(Default)]
pub(crate) struct Catchup {
    holds: Vec<Hold>,
    parked: usize,
}

/// What filtering a batch of queued frames gave.
pub(crate) struct Filtered {
    pub frames: VecDeque<Bytes>,
    /// More frames are parked than a client queue may hold: the client is too slow for its catch-up.
    pub overflow: bool,
}

impl Catchup {
    /// Starts holding `stream` (a no-op when it already is held). `deadline`: release it by then when no
    /// replay was queued for it.
    pub(crate) fn hold(&mut self, stream: &Arc<str>, deadline: Option<Instant>) {
        if !self.is_held(stream) {
            self.holds.push(Hold {
                stream: stream.clone(),
                state: HoldState::Holding { deadline },
                parked: Vec::new(),
                answered: false,
                replayed_to: None,
            });
        }
    }

    /// Whether `stream` is held or its replay is still under way.
    pub(crate) fn is_held(&self, stream: &str) -> bool {
        self.holds.iter().any(|h| *h.stream == *stream)
    }

    /// Whether `stream` waits for a replay to be queued (held, no replay queued yet).
    pub(crate) fn awaits_replay(&self, stream: &str) -> bool {
        self.holds.iter().any(|h| *h.stream == *stream && matches!(h.state, HoldState::Holding { .. }) && !h.answered)
    }

    /// Records where the replay queued for `stream` ends (`None`: nothing was replayed). The hold keeps
    /// parking until the writer meets the replay's end marker.
    pub(crate) fn replay_queued(&mut self, stream: &str, replayed_to: Option<(String, u64)>) {
        if let Some(hold) = self.holds.iter_mut().find(|h| *h.stream == *stream) {
            hold.answered = true;
            hold.replayed_to = replayed_to;
        }
    }

    /// Drops the holds of streams a subscription no longer has, with what they parked.
    pub(crate) fn forget(&mut self, stream: &str) {
        if let Some(at) = self.holds.iter().position(|h| *h.stream == *stream) {
            let hold = self.holds.swap_remove(at);
            self.parked -= hold.parked.len();
        }
    }

    /// Whether nothing is held any more.
    pub(crate) fn is_empty(&self) -> bool {
        self.holds.is_empty()
    }

    /// Filters frames taken from the client queue, in order: parks live frames of held streams, consumes
    /// markers, releases what a finished replay did not cover, drops duplicates. `capacity` bounds what may be
    /// parked.
    pub(crate) fn filter(&mut self, frames: VecDeque<Bytes>, now: Instant, capacity: usize) -> Filtered {
        let mut out = VecDeque::with_capacity(frames.len());
        for frame in frames {
            if frame.first() == Some(&0) {
                self.marker(&frame, &mut out);
                continue;
            }
            let Some((stream, epoch, offset)) = protocol::frame_position(&frame) else {
                out.push_back(frame);
                continue;
            };
            let Some(at) = self.holds.iter().position(|h| *h.stream == *stream) else {
                out.push_back(frame);
                continue;
            };
            let hold = &mut self.holds[at];
            match &hold.state {
                HoldState::Holding { .. } => {
                    hold.parked.push((frame, epoch, offset));
                    self.parked += 1;
                }
                HoldState::Replaying => out.push_back(frame),
                HoldState::Replayed { epoch: replayed_epoch, offset: replayed } => {
                    if *replayed_epoch != epoch || offset > *replayed {
                        // The first live frame past the replay: everything after it is new as well.
                        out.push_back(frame);
                        self.holds.swap_remove(at);
                    }
                }
            }
        }
        // Holds nobody asked to replay in time are released as they are.
        let mut at = 0;
        while at < self.holds.len() {
            let hold = &self.holds[at];
            let expired = matches!(hold.state, HoldState::Holding { deadline: Some(d) } if d <= now) && !hold.answered;
            if expired {
                let hold = self.holds.swap_remove(at);
                self.parked -= hold.parked.len();
                out.extend(hold.parked.into_iter().map(|(frame, _, _)| frame));
            } else {
                at += 1;
            }
        }
        Filtered { frames: out, overflow: self.parked > capacity }
    }

    fn marker(&mut self, marker: &[u8], out: &mut VecDeque<Bytes>) {
        let kind = marker.get(1).copied();
        let stream = std::str::from_utf8(marker.get(2..).unwrap_or_default()).unwrap_or_default();
        let Some(at) = self.holds.iter().position(|h| *h.stream == *stream) else { return };
        let hold = &mut self.holds[at];
        match kind {
            Some(BEGIN) => hold.state = HoldState::Replaying,
            Some(END) => {
                let replayed_to = hold.replayed_to.take();
                let parked = std::mem::take(&mut hold.parked);
                self.parked -= parked.len();
                let covered = |epoch: &str, offset: u64| {
                    replayed_to.as_ref().is_some_and(|(e, last)| e == epoch && offset <= *last)
                };
                let mut past_replay = false;
                for (frame, epoch, offset) in parked {
                    if !covered(&epoch, offset) {
                        past_replay = true;
                        out.push_back(frame);
                    }
                }
                match replayed_to {
                    // A live frame past the replay was written: nothing older can follow.
                    Some((epoch, offset)) if !past_replay => {
                        self.holds[at].state = HoldState::Replayed { epoch, offset };
                    }
                    _ => {
                        self.holds.swap_remove(at);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(stream: &str, offset: u64) -> Bytes {
        frame(stream, "ep", offset, "live")
    }

    fn frame(stream: &str, epoch: &str, offset: u64, what: &str) -> Bytes {
        protocol::positioned_message_frame(
            br#""id""#,
            protocol::json_string(&format!("{what}{offset}")).as_bytes(),
            protocol::json_string(stream).as_bytes(),
            protocol::json_string(epoch).as_bytes(),
            offset,
        )
    }

    fn texts(frames: &VecDeque<Bytes>) -> Vec<String> {
        frames
            .iter()
            .map(|f| {
                let v: serde_json::Value = serde_json::from_slice(f).unwrap();
                v.get("message").and_then(|m| m.as_str()).map(str::to_owned).unwrap_or_else(|| v.to_string())
            })
            .collect()
    }

    fn run(catchup: &mut Catchup, frames: Vec<Bytes>) -> Vec<String> {
        let filtered = catchup.filter(frames.into(), Instant::now(), 100);
        assert!(!filtered.overflow);
        texts(&filtered.frames)
    }

    #[test]
    fn live_frames_wait_for_the_replay_and_duplicates_are_dropped() {
        let mut c = Catchup::default();
        let s: Arc<str> = "s".into();
        c.hold(&s, None);
        // Offsets 4 and 5 arrive live while the history (3..=5) is fetched; 1 frame of another stream passes.
        assert_eq!(run(&mut c, vec![live("s", 4), live("other", 9), live("s", 5)]), ["live9"]);
        c.replay_queued("s", Some(("ep".into(), 5)));
        let batch = vec![
            begin_marker("s"),
            frame("s", "ep", 3, "replay"),
            frame("s", "ep", 4, "replay"),
            frame("s", "ep", 5, "replay"),
            end_marker("s"),
            Bytes::from_static(br#"{"type":"confirm_history"}"#),
            // Registered before the fetch, delivered after it: a duplicate.
            live("s", 5),
            live("s", 6),
            live("s", 7),
        ];
        assert_eq!(
            run(&mut c, batch),
            ["replay3", "replay4", "replay5", r#"{"type":"confirm_history"}"#, "live6", "live7"]
        );
        assert!(c.is_empty(), "the hold ends with the first frame past the replay");
        assert_eq!(run(&mut c, vec![live("s", 5)]), ["live5"], "frames are no longer looked at");
    }

    #[test]
    fn parked_frames_past_the_replay_are_released_in_order() {
        let mut c = Catchup::default();
        c.hold(&"s".into(), None);
        assert!(run(&mut c, vec![live("s", 3), live("s", 4)]).is_empty());
        c.replay_queued("s", Some(("ep".into(), 3)));
        let out = run(&mut c, vec![begin_marker("s"), frame("s", "ep", 3, "replay"), end_marker("s"), live("s", 5)]);
        assert_eq!(out, ["replay3", "live4", "live5"]);
        assert!(c.is_empty());
    }

    #[test]
    fn an_empty_or_refused_replay_releases_everything_parked() {
        let mut c = Catchup::default();
        c.hold(&"s".into(), None);
        assert!(run(&mut c, vec![live("s", 8)]).is_empty());
        c.replay_queued("s", None);
        let out = run(&mut c, vec![begin_marker("s"), end_marker("s"), live("s", 9)]);
        assert_eq!(out, ["live8", "live9"]);
        assert!(c.is_empty());
    }

    #[test]
    fn frames_of_another_epoch_are_never_taken_for_duplicates() {
        let mut c = Catchup::default();
        c.hold(&"s".into(), None);
        c.replay_queued("s", Some(("old".into(), 50)));
        let out = run(
            &mut c,
            vec![begin_marker("s"), frame("s", "old", 50, "replay"), end_marker("s"), frame("s", "new", 1, "live")],
        );
        assert_eq!(out, ["replay50", "live1"]);
    }

    #[test]
    fn a_hold_nobody_asks_about_is_released_at_its_deadline() {
        let mut c = Catchup::default();
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        c.hold(&"s".into(), Some(deadline));
        let f = c.filter(vec![live("s", 1)].into(), Instant::now(), 100);
        assert!(f.frames.is_empty());
        let f = c.filter(VecDeque::new(), deadline, 100);
        assert_eq!(texts(&f.frames), ["live1"]);
        assert!(c.is_empty());
    }

    #[test]
    fn parking_more_than_the_queue_holds_is_an_overflow() {
        let mut c = Catchup::default();
        c.hold(&"s".into(), None);
        let f = c.filter((1..=3).map(|n| live("s", n)).collect(), Instant::now(), 2);
        assert!(f.overflow);
        c.forget("s");
        assert!(c.is_empty());
        assert!(!c.filter(VecDeque::new(), Instant::now(), 2).overflow, "forgetting a hold frees what it parked");
    }
}
