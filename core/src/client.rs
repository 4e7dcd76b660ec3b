//! The handle every other part of the server holds for one connected client.
//!
//! Its bounded outbound queue is the only way to talk to a client: transmissions, broadcasts, pings and
//! disconnect frames all go through [`ClientHandle::send`], and the connection's own task is the only
//! writer of the socket. Sending never waits: a client whose queue is full is marked too slow and closed.
//! The queue allocates only while frames are waiting, so an idle client costs a few dozen bytes here.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;

use crate::config::PingPrecision;
use crate::protocol::{self, Protocol};

/// WebSocket close codes the server uses.
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    /// A violation of the WebSocket framing rules (RFC 6455 section 7.4.1).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text message that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY_VIOLATION: u16 = 1008;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const INTERNAL_ERROR: u16 = 1011;
}

/// The close reason of a client whose queue overflowed.
pub(crate) const TOO_SLOW: &str = "too_slow";

/// How and why a client is to be closed.
#[derive(Debug, Clone)]
pub struct CloseRequest {
    /// A last frame to write before closing (a `disconnect` frame), if any.
    pub frame: Option<Bytes>,
    pub code: u16,
    /// Logged, and sent as the close reason.
    pub reason: &'static str,
}

impl CloseRequest {
    /// Close after a `{"type":"disconnect"}` frame with the given reason.
    pub fn with_disconnect_frame(reason: &'static str, reconnect: bool, code: u16) -> Self {
        Self { frame: Some(protocol::disconnect_frame(reason, reconnect)), code, reason }
    }
}

/// A publication for a subscription whose handler runs a callback per broadcast (Action Cable's `stream_from`
/// with a block): the session turns it into a `stream` handler call instead of writing a frame.
#[derive(Debug, Clone)]
pub(crate) struct StreamMessage {
    pub identifier: Arc<str>,
    pub stream: Arc<str>,
    pub data: Arc<str>,
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<Bytes>,
    /// Allocated on the first one: only subscriptions with stream callbacks get any.
    stream_messages: Option<Box<VecDeque<StreamMessage>>>,
    /// Boxed: every client holds the place, few ever fill it.
    close: Option<Box<CloseRequest>>,
}

impl Queue {
    fn len(&self) -> usize {
        self.frames.len() + self.stream_messages.as_ref().map_or(0, |m| m.len())
    }
}

/// What the writer finds when it drains the queue.
pub(crate) struct Drained {
    pub frames: VecDeque<Bytes>,
    pub stream_messages: Option<Box<VecDeque<StreamMessage>>>,
    pub close: Option<CloseRequest>,
}

/// One connected client as seen from the hub and the server.
pub struct ClientHandle {
    /// Process-unique number, cheaper than the sid as a map key.
    pub(crate) id: u64,
    /// The session id sent in the welcome frame and to the backend.
    pub(crate) sid: Arc<str>,
    capacity: usize,
    queue: Mutex<Queue>,
    /// Set when something was queued or a close requested since the connection task last drained.
    ready: AtomicBool,
    wake: AtomicWaker,
    /// Set once the connection is accepted; only then does it get pings.
    pub(crate) welcomed: AtomicBool,
    /// `Some` when the client asked for its own ping interval (`pi`), so the shared ticker skips it.
    pub(crate) own_ping_interval: Option<std::time::Duration>,
    pub(crate) ping_precision: PingPrecision,
    /// The protocol negotiated at the upgrade: what broadcast frames this client gets.
    pub(crate) protocol: Protocol,
}

impl ClientHandle {
    pub(crate) fn new(
        id: u64,
        sid: Arc<str>,
        capacity: usize,
        own_ping_interval: Option<std::time::Duration>,
        ping_precision: PingPrecision,
        protocol: Protocol,
    ) -> Self {
        Self {
            id,
            sid,
            capacity,
            queue: Mutex::new(Queue::default()),
            ready: AtomicBool::new(false),
            wake: AtomicWaker::new(),
            welcomed: AtomicBool::new(false),
            own_ping_interval,
            ping_precision,
            protocol,
        }
    }

    /// The session id.
    pub fn sid(&self) -> &str {
        &self.sid
    }

    /// Frames the queue holds before the client counts as too slow (`client_queue_size`).
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Queues a frame. Returns `false` when the client is closing or was just found too slow.
    pub fn send(&self, frame: Bytes) -> bool {
        self.enqueue(std::iter::once(frame))
    }

    /// Queues frames as one run: nothing another task sends comes in between. Too many for the queue make the
    /// client too slow, as for [`ClientHandle::send`].
    pub(crate) fn send_batch(&self, frames: Vec<Bytes>) -> bool {
        self.enqueue(frames.into_iter())
    }

    fn enqueue(&self, frames: impl ExactSizeIterator<Item = Bytes>) -> bool {
        let mut q = self.queue.lock();
        if !self.has_room(&mut q, frames.len()) {
            return false;
        }
        let first = q.len() == 0;
        if q.frames.capacity() == 0 {
            // An idle client's queue holds nothing between drains: the first frames after one (a ping, one
            // broadcast) get exactly their room instead of the default four slots, and bursts grow from there.
            q.frames.reserve_exact(frames.len());
        }
        q.frames.extend(frames);
        drop(q);
        if first {
            self.notify();
        }
        true
    }

    /// Queues a publication for the handler of a subscription with a stream callback. It counts towards the
    /// queue's capacity like a frame: a session whose handler cannot keep up is too slow.
    pub(crate) fn send_stream_message(&self, message: StreamMessage) -> bool {
        let mut q = self.queue.lock();
        if !self.has_room(&mut q, 1) {
            return false;
        }
        let first = q.len() == 0;
        q.stream_messages.get_or_insert_default().push_back(message);
        drop(q);
        if first {
            self.notify();
        }
        true
    }

    /// Whether `adding` more entries fit; when they do not, the client is closed as too slow.
    fn has_room(&self, q: &mut Queue, adding: usize) -> bool {
        if q.close.is_some() {
            return false;
        }
        if q.len() + adding > self.capacity {
            // The client does not read fast enough: drop what it has not read and close it.
            q.frames = VecDeque::new();
            q.stream_messages = None;
            q.close = Some(Box::new(CloseRequest::with_disconnect_frame(TOO_SLOW, true, close_code::NORMAL)));
            tracing::info!(sid = %self.sid, client_queue_size = self.capacity, "client too slow; disconnecting");
            self.notify();
            return false;
        }
        true
    }

    /// The close requested so far, if any.
    pub(crate) fn close_request(&self) -> Option<CloseRequest> {
        self.queue.lock().close.as_deref().cloned()
    }

    /// Asks the connection to close; the first request wins. Frames already queued are still written.
    pub fn close(&self, request: CloseRequest) {
        let mut q = self.queue.lock();
        if q.close.is_none() {
            q.close = Some(Box::new(request));
            drop(q);
            self.notify();
        }
    }

    /// Whether a close was requested.
    pub fn is_closing(&self) -> bool {
        self.queue.lock().close.is_some()
    }

    fn notify(&self) {
        self.ready.store(true, Ordering::Release);
        self.wake.wake();
    }

    /// Ready once something was queued or a close was requested since the last [`ClientHandle::drain`].
    pub(crate) fn poll_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.ready.load(Ordering::Acquire) {
            return std::task::Poll::Ready(());
        }
        self.wake.register(cx.waker());
        // Checked again after registering, so a notification between the two loads is not lost.
        if self.ready.load(Ordering::Acquire) { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
    }

    /// Takes everything queued.
    pub(crate) fn drain(&self) -> Drained {
        self.ready.store(false, Ordering::Release);
        let mut q = self.queue.lock();
        Drained {
            frames: std::mem::take(&mut q.frames),
            stream_messages: q.stream_messages.take(),
            close: q.close.as_deref().cloned(),
        }
    }

    /// Takes the frames queued when they are all there is (no close requested, no publications for a stream
    /// callback): what a connection writes with the answer to its upgrade. `None` leaves the queue as it is.
    pub(crate) fn take_frames(&self) -> Option<VecDeque<Bytes>> {
        let mut q = self.queue.lock();
        if q.frames.is_empty() || q.close.is_some() || q.stream_messages.is_some() {
            return None;
        }
        self.ready.store(false, Ordering::Release);
        Some(std::mem::take(&mut q.frames))
    }

    pub(crate) fn mark_welcomed(&self) {
        self.welcomed.store(true, Ordering::Release);
    }

    pub(crate) fn is_welcomed(&self) -> bool {
        self.welcomed.load(Ordering::Acquire)
    }
}

/// A new random session id: 21 characters of `[A-Za-z0-9_-]`, like AnyCable's.
pub fn generate_sid() -> String {
    const ALPHABET: &[u8; 64] = b"ModuleSymbhasOwnPr-0123456789ABCDEFGHNRVfgctiUvz_KqYTJkLxpZXIjQW";
    // 64 symbols: each takes 6 bits of a random word (as uniform as one draw per symbol), so 21 symbols take
    // three words rather than 21 calls into the generator.
    let (mut bits, mut word) = (0, 0u64);
    let mut sid = String::with_capacity(21);
    for _ in 0..21 {
        if bits < 6 {
            (word, bits) = (fastrand::u64(..), 64);
        }
        sid.push(char::from(ALPHABET[(word & 63) as usize]));
        (word, bits) = (word >> 6, bits - 6);
    }
    sid
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(capacity: usize) -> ClientHandle {
        ClientHandle::new(1, "sid".into(), capacity, None, PingPrecision::Seconds, Protocol::Json)
    }

    #[test]
    fn full_queue_marks_the_client_too_slow_and_drops_its_backlog() {
        let c = client(2);
        assert!(c.send(Bytes::from_static(b"1")));
        assert!(c.send(Bytes::from_static(b"2")));
        assert!(!c.send(Bytes::from_static(b"3")));
        let d = c.drain();
        assert!(d.frames.is_empty());
        let close = d.close.unwrap();
        assert_eq!(close.reason, "too_slow");
        assert_eq!(&close.frame.unwrap()[..], br#"{"type":"disconnect","reason":"too_slow","reconnect":true}"#);
        assert!(!c.send(Bytes::from_static(b"4")), "a closing client accepts nothing");
    }

    #[test]
    fn a_batch_is_queued_whole_or_makes_the_client_too_slow() {
        let c = client(4);
        assert!(c.send(Bytes::from_static(b"1")));
        assert!(c.send_batch(vec![Bytes::from_static(b"2"), Bytes::from_static(b"3")]));
        assert_eq!(c.drain().frames.len(), 3);
        assert!(!c.send_batch((0..5).map(|_| Bytes::from_static(b"x")).collect()));
        assert_eq!(c.close_request().unwrap().reason, "too_slow");
    }

    #[test]
    fn first_close_request_wins_and_queued_frames_stay() {
        let c = client(8);
        c.send(Bytes::from_static(b"a"));
        c.close(CloseRequest::with_disconnect_frame("remote", false, close_code::NORMAL));
        c.close(CloseRequest::with_disconnect_frame("server_restart", true, close_code::GOING_AWAY));
        let d = c.drain();
        assert_eq!(d.frames.len(), 1);
        assert_eq!(d.close.unwrap().reason, "remote");
    }

    #[test]
    fn sids_are_21_url_safe_characters_and_differ() {
        let a = generate_sid();
        assert_eq!(a.len(), 21);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(a, generate_sid());
    }

    #[test]
    fn sids_use_every_symbol_in_every_position() {
        // 64 symbols over 2,000 sids: each position sees all of them (a stuck or short bit source would not).
        let sids: Vec<Vec<u8>> = (0..2000).map(|_| generate_sid().into_bytes()).collect();
        for position in 0..21 {
            let seen: std::collections::HashSet<u8> = sids.iter().map(|sid| sid[position]).collect();
            assert_eq!(seen.len(), 64, "position {position}");
        }
    }
}
