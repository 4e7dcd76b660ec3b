//! Socket options of accepted client connections: no Nagle delay, timers so that a peer that vanished is
//! noticed, and (`client_send_buffer_size`) a cap on what the kernel buffers for a client that stops reading.
//!
//! Frames are small and each is meant to leave at once: with Nagle's algorithm a frame written while an earlier
//! one is still unacknowledged waits for that ACK, which a client may delay by up to 40 ms. So `TCP_NODELAY` is
//! set on every client socket, as Go's network stack (and with it AnyCable-Go) does by default.
//!
//! A client whose network path disappears (cable pulled, Wi-Fi gone, a NAT entry dropped, a laptop put to
//! sleep) sends no close frame, no FIN and no RST. Left alone, the kernel keeps retransmitting the pings
//! written to it for about 15 minutes before it gives up, and all that time the session, its subscriptions
//! and its owed Disconnect call hang around. Two kernel timers bound that:
//!
//! - `TCP_USER_TIMEOUT`: once data the server sent (a ping, at least every `ping_interval`) has stayed
//!   unacknowledged for the dead-peer timeout, the kernel aborts the connection;
//! - TCP keepalive: a connection the server sends nothing to (a client that asked for a long `pi`, or one
//!   whose Connect call is still running) is probed after half the timeout of silence, a quarter of it
//!   apart, and aborted once it has been silent for the whole timeout.
//!
//! Either abort wakes the connection's read with an error, so the session ends and its Disconnect call runs
//! like for any other close. Worst case from the moment the peer vanished: `ping_interval` + the timeout for
//! a pinged client, the timeout + a quarter of it for one that gets no pings.
//!
//! On Linux the timers are set once, on the listening socket: every socket it accepts inherits them (keepalive
//! on, its three times, and the user timeout), which saves five system calls per connection. Elsewhere they
//! are set on each accepted socket.
//!
//! This module never fails a connection: an option the system refuses is logged once and the client served.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpStream};

use crate::config::Config;

/// The dead-peer timers set on every accepted client socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeadPeerDetection {
    /// How long sent data may stay unacknowledged (`TCP_USER_TIMEOUT`).
    pub(crate) user_timeout: Duration,
    /// Silence before the first keepalive probe.
    pub(crate) keepalive_idle: Duration,
    /// Time between keepalive probes.
    pub(crate) keepalive_interval: Duration,
}

/// Probes before a silent connection is dropped when the system has no `TCP_USER_TIMEOUT` (4 probes a
/// quarter of the timeout apart after half of it: the same 1.5 × bound).
const KEEPALIVE_PROBES: u32 = 4;

static OPTION_REFUSED_LOGGED: AtomicBool = AtomicBool::new(false);
static SEND_BUFFER_REFUSED_LOGGED: AtomicBool = AtomicBool::new(false);
static NODELAY_REFUSED_LOGGED: AtomicBool = AtomicBool::new(false);

/// Whether sockets accepted from a listener inherit its `TCP_NODELAY` and dead-peer timers.
const INHERITED_FROM_LISTENER: bool = cfg!(target_os = "linux");

/// What is set on each accepted client socket beyond what it inherits from its listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientSocketOptions {
    /// Where sockets do not inherit them from the listener: the dead-peer timers, set with `TCP_NODELAY`.
    pub(crate) not_inherited: Option<DeadPeerDetection>,
    /// `client_send_buffer_size`, when set. Left to itself, Linux grows a socket's send buffer with its
    /// congestion window, to megabytes over loopback: bytes a client that stopped reading holds in kernel
    /// memory, and that the server spends time copying, before the writes block and the client's queue can
    /// find it too slow.
    pub(crate) send_buffer: Option<usize>,
}

impl ClientSocketOptions {
    /// Sets on `listener` what its accepted sockets inherit, and returns what is left to set on each of them
    /// (`None` when nothing is).
    pub(crate) fn for_listener(config: &Config, listener: &TcpListener) -> Option<Self> {
        set_nodelay(SockRef::from(listener));
        let timers = DeadPeerDetection::from_config(config);
        timers.apply_to_listener(listener);
        let not_inherited = (!INHERITED_FROM_LISTENER).then_some(timers);
        let send_buffer = (config.client_send_buffer_size > 0).then_some(config.client_send_buffer_size);
        (not_inherited.is_some() || send_buffer.is_some()).then_some(Self { not_inherited, send_buffer })
    }

    /// Sets the options on one accepted socket.
    pub(crate) fn apply(&self, stream: &TcpStream) {
        if let Some(timers) = &self.not_inherited {
            set_nodelay(SockRef::from(stream));
            timers.apply(stream);
        }
        let Some(bytes) = self.send_buffer else { return };
        if let Err(error) = SockRef::from(stream).set_send_buffer_size(bytes) {
            if !SEND_BUFFER_REFUSED_LOGGED.swap(true, Ordering::Relaxed) {
                tracing::warn!(%error, "cannot set the send buffer size of client sockets (client_send_buffer_size)");
            }
        }
    }
}

fn set_nodelay(socket: SockRef<'_>) {
    if let Err(error) = socket.set_tcp_nodelay(true) {
        if !NODELAY_REFUSED_LOGGED.swap(true, Ordering::Relaxed) {
            tracing::warn!(%error, "cannot set TCP_NODELAY on client sockets; small frames may wait for ACKs");
        }
    }
}

impl DeadPeerDetection {
    /// The timers for `dead_peer_timeout` (see [`Config::effective_dead_peer_timeout`]).
    pub(crate) fn from_config(config: &Config) -> Self {
        let timeout = config.effective_dead_peer_timeout();
        // The kernel takes keepalive times in whole seconds.
        let fraction = |divisor: u64| Duration::from_secs((timeout.as_secs() / divisor).max(1));
        Self { user_timeout: timeout, keepalive_idle: fraction(2), keepalive_interval: fraction(4) }
    }

    /// Sets the timers on one accepted socket.
    pub(crate) fn apply(&self, stream: &TcpStream) {
        self.set(SockRef::from(stream));
    }

    /// Sets the timers on a listening socket; where [`INHERITED_FROM_LISTENER`], every
    /// socket it accepts from then on has them.
    pub(crate) fn apply_to_listener(&self, listener: &TcpListener) {
        self.set(SockRef::from(listener));
    }

    fn set(&self, socket: SockRef<'_>) {
        let keepalive = TcpKeepalive::new()
            .with_time(self.keepalive_idle)
            .with_interval(self.keepalive_interval)
            .with_retries(KEEPALIVE_PROBES);
        let mut result = socket.set_tcp_keepalive(&keepalive);
        #[cfg(target_os = "linux")]
        {
            result = result.and_then(|()| socket.set_tcp_user_timeout(Some(self.user_timeout)));
        }
        if let Err(error) = result {
            if !OPTION_REFUSED_LOGGED.swap(true, Ordering::Relaxed) {
                tracing::warn!(%error, "cannot set TCP keepalive / user timeout on client sockets; vanished clients are noticed only by the write timeout");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_follow_the_dead_peer_timeout() {
        let mut config = Config::default();
        let d = DeadPeerDetection::from_config(&config);
        assert_eq!(d.user_timeout, Duration::from_secs(10));
        assert_eq!(d.keepalive_idle, Duration::from_secs(5));
        assert_eq!(d.keepalive_interval, Duration::from_secs(2));
        config.set("dead_peer_timeout", "2").unwrap();
        let d = DeadPeerDetection::from_config(&config);
        assert_eq!((d.keepalive_idle, d.keepalive_interval), (Duration::from_secs(1), Duration::from_secs(1)));
    }

    #[tokio::test]
    async fn accepted_sockets_carry_the_timers() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let d = DeadPeerDetection::from_config(&Config::default());
        d.apply(&accepted);
        let socket = SockRef::from(&accepted);
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.tcp_keepalive_time().unwrap(), Duration::from_secs(5));
        assert_eq!(socket.tcp_keepalive_interval().unwrap(), Duration::from_secs(2));
        assert_eq!(socket.tcp_user_timeout().unwrap(), Some(Duration::from_secs(10)));
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn sockets_accepted_from_a_listener_with_the_timers_carry_them() {
        assert!(INHERITED_FROM_LISTENER);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut config = Config::default();
        config.set("dead_peer_timeout", "12").unwrap();
        DeadPeerDetection::from_config(&config).apply_to_listener(&listener);
        let _client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let socket = SockRef::from(&accepted);
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.tcp_keepalive_time().unwrap(), Duration::from_secs(6));
        assert_eq!(socket.tcp_keepalive_interval().unwrap(), Duration::from_secs(3));
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), KEEPALIVE_PROBES);
        assert_eq!(socket.tcp_user_timeout().unwrap(), Some(Duration::from_secs(12)));
    }

    /// What a client socket ends up with, whether inherited from the listener or set after the accept.
    #[tokio::test]
    async fn client_sockets_get_nodelay_the_timers_and_the_send_buffer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut config = Config::default();
        config.set("client_send_buffer_size", "65536").unwrap();
        let options = ClientSocketOptions::for_listener(&config, &listener).expect("the send buffer is left to set");
        let _client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        options.apply(&accepted);
        let socket = SockRef::from(&accepted);
        assert!(socket.tcp_nodelay().unwrap(), "TCP_NODELAY on the client socket");
        assert!(socket.keepalive().unwrap());
        // Linux doubles the value asked for, to leave room for its bookkeeping.
        assert!(socket.send_buffer_size().unwrap() >= 65536);
        assert!(socket.send_buffer_size().unwrap() <= 2 * 65536);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn on_linux_nothing_but_the_send_buffer_is_set_per_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        assert_eq!(ClientSocketOptions::for_listener(&Config::default(), &listener), None);
        let _client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(SockRef::from(&accepted).tcp_nodelay().unwrap(), "TCP_NODELAY inherited from the listener");
    }
}
