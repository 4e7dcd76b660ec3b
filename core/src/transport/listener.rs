//! Serving HTTP on one listening socket: the accept loop, the bound on connections still in their handshake, the
//! deadline for a request head, the keep-alive idle timeout, and the lingering close of client sockets.
//!
//! Every listener the server opens (main, HTTP broadcast, metrics) is served here, over TLS when the listeners have
//! a certificate. A connection is *pending* from its accept until the head of its first request has been read
//! (the TLS handshake included); a WebSocket is no longer pending once its upgrade request has arrived. Each
//! connection gets `read_header_timeout` to stop being pending, as AnyCable-Go's HTTP server gives it 5 s: a
//! socket that sends nothing, or a request line and some headers and then nothing, is closed at that deadline and
//! counted. Between two requests of a keep-alive connection the next head must be complete within
//! `http_idle_timeout`. At most `max_pending_conn` connections of one listener may be pending at once; beyond it a
//! new connection is closed at once (one warning per burst), while established clients are not affected.
//!
//! Closing a TCP socket whose peer is still sending makes the kernel answer with a reset, which can reach the
//! client before it has read the server's last bytes (a close frame with its code, an HTTP error): client
//! libraries then report a network failure (1006) instead of the reason. So a client socket the server wrote to
//! is not simply closed: its write side is shut (FIN after the last bytes) and what the peer still sends is read
//! and dropped until it closes too, for at most [`LINGER`].
//!
//! A WebSocket client that sent its close frame sends nothing more, so its socket is closed outright once the
//! server has answered. On Linux that answer is written with `MSG_MORE`: the kernel holds it until the close that
//! follows, and it leaves with the FIN in one segment instead of two.
//!
//! This module never looks at what is served: it hands requests to the router with the peer address, and the
//! upgrade requests of WebSocket paths to `ws::serve_upgrade`.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::transport::held::{self, Head, HeldPaths, Rewind};
use crate::transport::tcp::ClientSocketOptions;
use crate::transport::websocket::Socket;
use crate::transport::ws::{self, WsState};

/// Longest time a closed client socket keeps reading (and dropping) what its peer still sends.
pub(crate) const LINGER: Duration = Duration::from_secs(1);

/// The deadlines and bounds every listener applies to its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ListenerLimits {
    /// From the accept to a complete request head (TLS handshake included): `read_header_timeout`.
    pub(crate) read_header_timeout: Duration,
    /// From a response to the next complete request head on a keep-alive connection: `http_idle_timeout`.
    pub(crate) idle_timeout: Duration,
    /// Connections of one listener pending at once; 0 for no bound: `max_pending_conn`.
    pub(crate) max_pending: usize,
}

impl ListenerLimits {
    pub(crate) fn from_config(config: &Config) -> Self {
        Self {
            read_header_timeout: Duration::from_secs(config.read_header_timeout),
            idle_timeout: Duration::from_secs(config.http_idle_timeout),
            max_pending: config.max_pending_conn,
        }
    }
}

/// One listening socket and how to serve it.
pub(crate) struct HttpListener {
    pub(crate) listener: TcpListener,
    pub(crate) tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    pub(crate) router: Router,
    /// Options set on each accepted socket (`None` when it inherits all it needs from the listener).
    pub(crate) client_sockets: Option<ClientSocketOptions>,
    pub(crate) limits: ListenerLimits,
    pub(crate) metrics: Arc<Metrics>,
    /// Paths whose `GET` requests are answered outside hyper (see [`held`]); none on most listeners.
    pub(crate) held: Arc<HeldPaths>,
    /// What serves the upgrade requests of the WebSocket paths among `held` (on the main listener).
    pub(crate) websocket: Option<Arc<WsState>>,
    /// The listener's name in logs: `main`, `broadcast`, `metrics`.
    pub(crate) what: &'static str,
}

impl HttpListener {
    /// Accepts connections on `tasks` until `stop`; then open HTTP connections finish their request in flight and
    /// close. Connections already upgraded to WebSocket are not this loop's: the session tasks own them.
    pub(crate) fn spawn(self, tasks: &TaskTracker, stop: CancellationToken) {
        let connections = tasks.clone();
        tasks.spawn(self.accept_loop(connections, stop));
    }

    async fn accept_loop(self, connections: TaskTracker, stop: CancellationToken) {
        let acceptor = self.tls.clone().map(TlsAcceptor::from);
        let pending = Arc::new(AtomicUsize::new(0));
        // Connections refused since the bound was reached; the burst ends when the pending ones are down to half.
        let mut refused_in_burst = 0u64;
        loop {
            let (tcp, peer) = tokio::select! {
                biased;
                () = stop.cancelled() => return,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        accept_failed(error, self.what).await;
                        continue;
                    }
                },
            };
            let Some(slot) = PendingSlot::take(&pending, self.limits.max_pending, &self.metrics) else {
                Metrics::inc(&self.metrics.pending_conn_refused_total);
                if refused_in_burst == 0 {
                    tracing::warn!(
                        listener = self.what,
                        max_pending_conn = self.limits.max_pending,
                        "max_pending_conn reached: new connections are closed until pending handshakes complete or time out"
                    );
                }
                refused_in_burst += 1;
                drop(tcp);
                continue;
            };
            if refused_in_burst > 0 && pending.load(Ordering::Acquire) <= self.limits.max_pending / 2 {
                tracing::info!(
                    listener = self.what,
                    refused = refused_in_burst,
                    "pending connections back under max_pending_conn"
                );
                refused_in_burst = 0;
            }
            if let Some(options) = &self.client_sockets {
                options.apply(&tcp);
            }
            let connection = Connection {
                router: self.router.clone(),
                peer,
                limits: self.limits,
                metrics: self.metrics.clone(),
                stop: stop.clone(),
                slot: Some(slot),
                held: self.held.clone(),
                websocket: self.websocket.clone(),
            };
            let io = ClientIo::new(tcp, connections.clone());
            // Two kinds of task, so that a plain connection's is not sized for a TLS stream.
            match &acceptor {
                None => connections.spawn(connection.serve(io, Instant::now() + self.limits.read_header_timeout)),
                Some(acceptor) => connections.spawn(connection.serve_tls(io, acceptor.clone())),
            };
        }
    }
}

/// A refused or reset connection concerns one client only; anything else (out of file descriptors) is logged
/// and retried after a pause.
async fn accept_failed(error: io::Error, what: &str) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(error.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset) {
        return;
    }
    tracing::error!(%error, listener = what, "cannot accept connections; retrying in 1s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// One pending connection under `max_pending_conn`; given back when its first request head has been read or the
/// connection is gone.
struct PendingSlot {
    pending: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl PendingSlot {
    fn take(pending: &Arc<AtomicUsize>, max: usize, metrics: &Arc<Metrics>) -> Option<Self> {
        pending.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (max == 0 || n < max).then_some(n + 1)).ok()?;
        Metrics::up(&metrics.pending_conn_num);
        Some(Self { pending: pending.clone(), metrics: metrics.clone() })
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.pending.fetch_sub(1, Ordering::AcqRel);
        Metrics::down(&self.metrics.pending_conn_num);
    }
}

/// One accepted connection until its HTTP exchange is over (or it was upgraded to a WebSocket).
struct Connection {
    router: Router,
    peer: SocketAddr,
    limits: ListenerLimits,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    /// Given back with the first request head.
    slot: Option<PendingSlot>,
    held: Arc<HeldPaths>,
    websocket: Option<Arc<WsState>>,
}

impl Connection {
    /// Completes the TLS handshake within `read_header_timeout`, then serves HTTP on the stream.
    async fn serve_tls(self, io: ClientIo, acceptor: TlsAcceptor) {
        let deadline = Instant::now() + self.limits.read_header_timeout;
        match tokio::time::timeout_at(deadline, acceptor.accept(io)).await {
            Ok(Ok(stream)) => self.serve(stream, deadline).await,
            Ok(Err(error)) => tracing::debug!(peer = %self.peer, %error, "TLS handshake failed"),
            Err(_) => {
                Metrics::inc(&self.metrics.read_header_timeout_total);
                tracing::debug!(peer = %self.peer, "TLS handshake not complete within read_header_timeout; closed");
            }
        }
    }

    /// Serves HTTP/1.1 on `io`, closing it when a request head is not complete by its deadline: `first_deadline`
    /// for the first request, `http_idle_timeout` after each response for the next one. Held requests are answered
    /// here while they come; the first other request hands the connection to hyper for the rest of its life.
    fn serve<IO>(self, io: IO, first_deadline: Instant) -> impl Future<Output = ()> + Send + 'static
    where
        IO: Socket + Send + 'static,
    {
        // A block rather than an `async fn`, whose arguments would take their room in the task twice.
        let (mut this, mut io) = (self, io);
        async move {
            let mut read = bytes::Bytes::new();
            let mut deadline = first_deadline;
            let mut requests = 0u64;
            while !this.held.is_empty() {
                // Boxed (and in its own statement, whose temporaries would otherwise stay across the await): what
                // an idle held response keeps in this task is the socket, its body and this loop's state.
                let next = Box::pin(this.next_held(&mut io, read, deadline, requests));
                let (answer, mut input, close) = match next.await {
                    Next::Held(answer, input, close) => (answer, input, close),
                    Next::Upgrade(request, input, state) => {
                        let close = held::wants_close(request.headers());
                        let after = bytes::BytesMut::from(&input[..]);
                        // Boxed as the rest: nothing of an upgrade stays in this task, which ends with it.
                        let upgrade = Box::pin(ws::serve_upgrade(state, this.peer, request, io, input));
                        match upgrade.await {
                            Ok(()) => return,
                            Err((refusal, back)) => {
                                io = back;
                                (held::respond(refusal, close), after, close)
                            }
                        }
                    }
                    Next::Other(bytes) => {
                        read = bytes;
                        break;
                    }
                    Next::Done => return,
                };
                requests += 1;
                match held::send(&mut io, answer, &mut input).await {
                    Ok(()) if !close && !this.stop.is_cancelled() => {
                        read = input.freeze();
                        deadline = Instant::now() + this.limits.idle_timeout;
                    }
                    Ok(()) => {
                        let closing = Box::pin(tokio::time::timeout(LINGER, io.shutdown()));
                        let _ = closing.await;
                        return;
                    }
                    Err(()) => return,
                }
            }
            let hyper = Box::pin(this.serve_hyper(Rewind::new(read, io), deadline, requests));
            hyper.await;
        }
    }

    /// Reads the next request head (after `read`, due by `deadline`) and, when it is a held request, answers it.
    async fn next_held<IO>(&mut self, io: &mut IO, read: bytes::Bytes, deadline: Instant, requests: u64) -> Next
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let (request, rest) = match held::read_head(io, read, &self.held, self.peer, deadline, &self.stop).await {
            Head::Held(request, rest) => (request, rest),
            Head::Other(bytes) => return Next::Other(bytes),
            Head::Closed | Head::Stopped => return Next::Done,
            Head::Late => {
                head_too_late(&self.metrics, self.peer, requests);
                return Next::Done;
            }
        };
        drop(self.slot.take());
        if let Some(state) = self.websocket.as_ref().filter(|_| held::is_upgrade(&request)) {
            return Next::Upgrade(request, rest, state.clone());
        }
        let close = held::wants_close(request.headers());
        let mut input = bytes::BytesMut::from(rest);
        match held::answer(io, &self.router, *request, &mut input, close).await {
            Some(answer) => Next::Held(answer, input, close),
            None => Next::Done,
        }
    }

    /// Serves the rest of the connection with hyper; the next request head is due by `deadline`.
    async fn serve_hyper<IO>(self, io: IO, deadline: Instant, requests: u64)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Self { router, peer, limits, metrics, stop, slot, held: _, websocket: _ } = self;
        let activity =
            Arc::new(Activity { state: Mutex::new(ActivityState::new(slot, requests)), changed: Notify::new() });
        let service = RequestService { router, peer, activity: activity.clone() };
        let connection =
            hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), service).with_upgrades();
        tokio::pin!(connection);
        let mut deadline = Some(deadline);
        let mut stopping = false;
        loop {
            let sleep_until = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
            tokio::select! {
                biased;
                served = connection.as_mut() => {
                    if let Err(error) = served {
                        tracing::debug!(%peer, %error, "HTTP connection ended with an error");
                    }
                    return;
                }
                () = activity.changed.notified() => {
                    let idle = activity.state.lock().in_flight == 0;
                    deadline = idle.then(|| Instant::now() + limits.idle_timeout);
                }
                () = tokio::time::sleep_until(sleep_until), if deadline.is_some() => {
                    let requests = activity.state.lock().requests;
                    return head_too_late(&metrics, peer, requests);
                }
                () = stop.cancelled(), if !stopping => {
                    // Idle connections close now, a request in flight gets its answer first.
                    stopping = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// What came next on a connection that serves held requests.
enum Next {
    /// A held request's answer to send, what the client sent after it, and whether the connection closes after it.
    Held(held::Answer, bytes::BytesMut, bool),
    /// An upgrade request of a WebSocket path, what the client sent after it, and what serves it.
    Upgrade(Box<axum::http::Request<axum::body::Body>>, bytes::Bytes, Arc<WsState>),
    /// Another request, for hyper, starting with these bytes.
    Other(bytes::Bytes),
    /// The connection is over.
    Done,
}

/// Counts and logs a connection closed because a request head was not complete in time: the first one
/// (`read_header_timeout`) or the next one on a keep-alive connection (`http_idle_timeout`).
fn head_too_late(metrics: &Metrics, peer: SocketAddr, requests: u64) {
    if requests == 0 {
        Metrics::inc(&metrics.read_header_timeout_total);
        tracing::debug!(%peer, "request head not complete within read_header_timeout; closed");
    } else {
        Metrics::inc(&metrics.http_idle_timeout_total);
        tracing::debug!(%peer, "keep-alive connection idle for http_idle_timeout; closed");
    }
}

/// What the deadline of a connection depends on: requests in flight, and whether one arrived at all.
struct Activity {
    state: Mutex<ActivityState>,
    changed: Notify,
}

struct ActivityState {
    in_flight: usize,
    requests: u64,
    /// Given back with the first request head (already given back when held requests came first).
    pending: Option<PendingSlot>,
}

impl ActivityState {
    fn new(slot: Option<PendingSlot>, requests: u64) -> Self {
        Self { in_flight: 0, requests, pending: slot }
    }
}

/// Marks one request in flight from its head to its response.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: &Arc<Activity>) -> Self {
        let slot = {
            let mut state = activity.state.lock();
            state.in_flight += 1;
            state.requests += 1;
            state.pending.take()
        };
        drop(slot);
        activity.changed.notify_one();
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.state.lock().in_flight -= 1;
        self.0.changed.notify_one();
    }
}

/// Hands each request to the router with the peer address (`ConnectInfo`), marking it in flight meanwhile.
struct RequestService {
    router: Router,
    peer: SocketAddr,
    activity: Arc<Activity>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for RequestService {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut request: hyper::Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(ConnectInfo(self.peer));
        let in_flight = InFlight::begin(&self.activity);
        // A router is always ready; each call gets its own clone, as axum's own server does.
        let response = tower_service::Service::call(&mut self.router.clone(), request);
        // A request stays in flight until its body is done (or dropped), not just its head: a streamed
        // response (Server-Sent Events) must not count as an idle keep-alive connection.
        Box::pin(async move {
            let response = match response.await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            Ok(response.map(|body| axum::body::Body::new(InFlightBody { body, _in_flight: in_flight })))
        })
    }
}

/// A response body that keeps its request marked in flight until it is finished or dropped.
struct InFlightBody {
    body: axum::body::Body,
    _in_flight: InFlight,
}

impl http_body::Body for InFlightBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// An accepted client socket that lingers when dropped after the server wrote to it (see the module docs).
pub(crate) struct ClientIo {
    stream: Option<TcpStream>,
    /// Whether anything was written: a socket that never got a byte has nothing for its peer to read.
    wrote: bool,
    /// Cleared once the peer has said it sends nothing more (a WebSocket client's close frame): from then on the
    /// socket is closed outright when dropped, and what is written goes with the FIN.
    lingers: bool,
    /// Where the lingering close runs, so that shutdown waits for it.
    tasks: TaskTracker,
}

impl ClientIo {
    fn new(stream: TcpStream, tasks: TaskTracker) -> Self {
        Self { stream: Some(stream), wrote: false, lingers: true, tasks }
    }

    fn stream(&mut self) -> io::Result<&mut TcpStream> {
        self.stream.as_mut().ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }

    /// Writes the last bytes of a connection (the answer to the client's close frame) with `MSG_MORE`: the kernel
    /// keeps them until the socket is closed, right after, and sends them with the FIN.
    #[cfg(target_os = "linux")]
    fn poll_write_last(&mut self, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let stream = self.stream()?;
        loop {
            std::task::ready!(stream.poll_write_ready(cx))?;
            let flags = libc::MSG_MORE | libc::MSG_NOSIGNAL;
            let sent = stream.try_io(tokio::io::Interest::WRITABLE, || {
                socket2::SockRef::from(&*stream).send_vectored_with_flags(bufs, flags)
            });
            match sent {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                sent => return Poll::Ready(sent),
            }
        }
    }
}

impl Drop for ClientIo {
    fn drop(&mut self) {
        let Some(stream) = self.stream.take().filter(|_| self.wrote && self.lingers) else { return };
        // Outside a runtime (the runtime itself is going away) the socket is just closed.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            self.tasks.spawn_on(linger(stream), &runtime);
        }
    }
}

/// Shuts the write side, then reads and drops what the peer sends until it closes, for at most [`LINGER`].
async fn linger(mut stream: TcpStream) {
    let drained = async {
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 4096];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    let _ = tokio::time::timeout(LINGER, drained).await;
}

impl Socket for ClientIo {
    fn client_closed(&mut self) {
        self.lingers = false;
    }
}

/// A TLS client keeps its lingering close: it may still send its `close_notify` after its close frame.
impl Socket for tokio_rustls::server::TlsStream<ClientIo> {}

impl AsyncRead for ClientIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.stream()?).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.wrote = true;
        #[cfg(target_os = "linux")]
        if !self.lingers {
            return self.poll_write_last(cx, &[io::IoSlice::new(buf)]);
        }
        Pin::new(self.stream()?).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.wrote = true;
        #[cfg(target_os = "linux")]
        if !self.lingers {
            return self.poll_write_last(cx, bufs);
        }
        Pin::new(self.stream()?).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.stream()?).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.stream()?).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every idle WebSocket holds its socket through this wrapper: it may cost no more than the tracker handle, the
    /// flag and the option beside the socket.
    #[test]
    fn the_socket_wrapper_adds_at_most_three_words_to_a_connection() {
        assert!(std::mem::size_of::<ClientIo>() <= std::mem::size_of::<TcpStream>() + 24);
    }

    /// An SSE client's connection task lives as long as the client: neither hyper's connection state, nor a TLS
    /// stream, nor the futures that read and answer a request may be part of a plain connection's task (they made
    /// it 5.8 KB per client; 552 bytes without them).
    #[tokio::test]
    async fn a_plain_connection_task_stays_small() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (accepted, peer) = listener.accept().await.unwrap();
        let metrics = Arc::new(Metrics::default());
        let slot = PendingSlot::take(&Arc::new(AtomicUsize::new(0)), 0, &metrics).unwrap();
        let limits = ListenerLimits {
            read_header_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            max_pending: 0,
        };
        let held = Arc::new(HeldPaths::new(["/events".to_owned()]));
        let stop = CancellationToken::new();
        let connection =
            Connection { router: Router::new(), peer, limits, metrics, stop, slot: Some(slot), held, websocket: None };
        let task = connection.serve(ClientIo::new(accepted, TaskTracker::new()), Instant::now());
        assert!(std::mem::size_of_val(&task) <= 768, "{} bytes", std::mem::size_of_val(&task));
    }

    #[tokio::test]
    async fn a_socket_that_was_written_to_lingers_and_one_that_was_not_closes_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tasks = TaskTracker::new();
        for wrote in [false, true] {
            let mut peer = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
            let (accepted, _) = listener.accept().await.unwrap();
            let mut io = ClientIo::new(accepted, tasks.clone());
            if wrote {
                io.write_all(b"last words").await.unwrap();
            }
            // The peer has sent something the server never read.
            peer.write_all(b"unread").await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(io);
            let mut received = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(2), peer.read_to_end(&mut received)).await.unwrap();
            if wrote {
                // Write side shut after the last bytes: an orderly end, then the peer may still write.
                assert_eq!(read.unwrap(), 10);
                assert_eq!(received, b"last words");
                peer.write_all(b"more").await.expect("still drained, not reset");
            } else {
                // Closed with input unread: the kernel resets the connection.
                assert!(read.is_err() || received.is_empty(), "{read:?}");
            }
        }
        tasks.close();
        tokio::time::timeout(LINGER + Duration::from_secs(1), tasks.wait()).await.expect("the linger ends");
    }
}
