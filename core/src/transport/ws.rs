//! WebSocket transport: the upgrade (origin check, sub-protocol, connection cap, request env, the JWT
//! token a client brings) and the one task per connection that reads client frames, runs commands in
//! arrival order and writes every queued frame.
//!
//! While a handler call is in flight the task stops reading (commands are strictly ordered per
//! connection) but keeps writing, so broadcasts and pings never wait for a slow handler.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use std::task::Poll;

use crate::client::{ClientHandle, CloseRequest, TOO_SLOW, close_code, generate_sid};
use crate::config::{Config, PingPrecision};
use crate::metrics::Metrics;
use crate::protocol::{self, Protocol, SUPPORTED_PROTOCOLS};
use crate::session::{PendingCall, RequestEnv, Session, SessionDeps};
use crate::transport::websocket::{self, Message, ReadError, WebSocket};

/// What the upgrade handler needs; shared by all connections.
pub(crate) struct WsState {
    pub(crate) deps: Arc<SessionDeps>,
    pub(crate) config: Arc<Config>,
    pub(crate) next_id: AtomicU64,
    /// Connections holding a [`ConnectionSlot`]: upgrades under way and connections not yet ended.
    pub(crate) connections: Arc<AtomicUsize>,
    pub(crate) tracker: tokio_util::task::TaskTracker,
    pub(crate) shutdown: tokio_util::sync::CancellationToken,
    /// `X-<jwt_param>`, the header a client may bring its JWT token in.
    pub(crate) token_header: Option<HeaderName>,
    /// The `headers` option as header names, in order (names that cannot be header names never match).
    pub(crate) forwarded: Box<[HeaderName]>,
}

impl WsState {
    pub(crate) fn new(
        deps: Arc<SessionDeps>,
        config: Arc<Config>,
        tracker: tokio_util::task::TaskTracker,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Self {
        // Parsed once here rather than for every connection.
        let token_header = HeaderName::try_from(format!("x-{}", config.jwt_param)).ok();
        let forwarded = config.headers.iter().filter_map(|name| HeaderName::try_from(name.as_str()).ok()).collect();
        Self {
            deps,
            config,
            next_id: AtomicU64::new(1),
            connections: Arc::default(),
            tracker,
            shutdown,
            token_header,
            forwarded,
        }
    }
}

impl WsState {
    pub(crate) fn config(&self) -> &Arc<Config> {
        &self.config
    }

    pub(crate) fn deps(&self) -> &Arc<SessionDeps> {
        &self.deps
    }

    /// Tracks every client's work, so shutdown waits for it.
    pub(crate) fn tracker(&self) -> &tokio_util::task::TaskTracker {
        &self.tracker
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Whether `origin` is one of `allowed_origins` (any origin when the option is empty).
    pub(crate) fn origin_allowed(&self, origin: &str) -> bool {
        self.config.allowed_origins.is_empty() || origin_allowed(origin, &self.config.allowed_origins)
    }

    /// Whether the request's `Origin` header is allowed (a missing one is not, once `allowed_origins` is set).
    pub(crate) fn origin_allowed_header(&self, headers: &HeaderMap) -> bool {
        self.origin_allowed(headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()).unwrap_or(""))
    }

    /// A place under `max_conn` for a new client of any transport (`None` when there is no cap); `Err` (logged)
    /// when the cap is reached.
    pub(crate) fn take_slot(&self) -> Result<Option<ConnectionSlot>, ()> {
        if self.config.max_conn == 0 {
            return Ok(None);
        }
        match ConnectionSlot::take(&self.connections, self.config.max_conn) {
            Some(slot) => Ok(Some(slot)),
            None => {
                tracing::warn!(max_conn = self.config.max_conn, "connection refused: max_conn reached");
                Err(())
            }
        }
    }

    /// The env handler calls get for this request (URL, forwarded headers), and the JWT token it brings when
    /// JWT identification is on.
    pub(crate) fn request_env(&self, peer: SocketAddr, uri: &Uri, headers: &HeaderMap) -> (RequestEnv, Option<String>) {
        let url = request_url(headers, uri, self.config.tls_listener());
        let forwarded = forwarded_headers(headers, &self.forwarded, &self.config.proxy_cookies, peer);
        let env = RequestEnv::new(&url, &forwarded);
        // Only read when JWT identification is on; the token is handed to Connect and dropped after it.
        let token = match &self.token_header {
            Some(header) if self.deps.controller.reads_tokens() => {
                connection_token(headers, uri.query().unwrap_or(""), header, &self.config.jwt_param)
            }
            _ => None,
        };
        (env, token)
    }

    /// A client handle for a connection of another transport (a new sid, the configured queue size).
    pub(crate) fn new_client(&self, protocol: Protocol) -> Arc<ClientHandle> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let sid: Arc<str> = generate_sid().into();
        let precision = self.config.ping_timestamp_precision;
        Arc::new(ClientHandle::new(id, sid, self.config.client_queue_size, None, precision, protocol))
    }
}

/// Upgrades a request that reached the router (through hyper) to a WebSocket connection, or refuses it with an
/// HTTP status and a message. Most upgrades do not come this way: the listener answers them itself
/// ([`serve_upgrade`]); this handler serves those it leaves to hyper (an HTTP/1.0 request, a head it does not
/// parse, a later request on a keep-alive connection).
pub(crate) async fn upgrade(
    State(state): State<Arc<WsState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: axum::extract::Request,
) -> Response {
    let admitted = match admit(&state, peer, &request) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal,
    };
    let Some(on_upgrade) = request.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return (StatusCode::UPGRADE_REQUIRED, "this connection cannot be upgraded\n").into_response();
    };
    let mut response = Response::new(axum::body::Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for (name, value) in admitted.answer_fields() {
        let value = HeaderValue::try_from(value).expect("upgrade answer fields are header values");
        response.headers_mut().insert(name, value);
    }
    let tracker = state.tracker.clone();
    // Waits for hyper to hand the connection over once the 101 is written; a failed upgrade drops the slot.
    tracker.spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => return tracing::debug!(%error, "WebSocket upgrade failed"),
        };
        let max = state.config.max_message_size;
        let socket = WebSocket::new(TokioIo::new(upgraded), max);
        let (conn, slot) = open_connection(socket, admitted, &state);
        // The connection gets a task of its own, sized for what it holds while idle; this one ends.
        state.tracker.spawn(run_connection(conn, slot));
    });
    response
}

/// Serves an upgrade request the listener read itself: refuses it (the answer is returned for the listener to
/// write), or answers it and starts the connection on `io`, whose client already sent `input` after the request.
///
/// The answer to the upgrade and the first frames go out in one write: a connection accepted without a handler
/// call (a JWT, no identification) gets its 101 and its welcome in the same packet, which saves a write and a
/// wake-up on each side. When a Connect call is under way, the 101 goes out at once and the welcome after it.
pub(crate) async fn serve_upgrade<IO>(
    state: Arc<WsState>,
    peer: SocketAddr,
    request: Box<axum::http::Request<axum::body::Body>>,
    io: IO,
    input: Bytes,
) -> Result<(), (Response, IO)>
where
    IO: websocket::Socket + Send + 'static,
{
    let admitted = match admit(&state, peer, &request) {
        Ok(admitted) => admitted,
        Err(refusal) => return Err((refusal, io)),
    };
    drop(request);
    let mut head = Vec::with_capacity(160);
    head.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
    for (name, value) in admitted.answer_fields() {
        for part in [name.as_str(), ": ", value, "\r\n"] {
            head.extend_from_slice(part.as_bytes());
        }
    }
    head.extend_from_slice(b"\r\n");
    let socket = WebSocket::with_input(io, state.config.max_message_size, &input);
    drop(input);
    let (mut conn, slot) = open_connection(socket, admitted, &state);
    let answering = Box::pin(answer_upgrade(&mut conn, &head));
    if let Err(error) = answering.await {
        // The connection's task finds the socket broken at once and ends the session as for any failed write.
        tracing::debug!(sid = %conn.session.client().sid, %error, "writing the upgrade answer failed");
    }
    state.tracker.spawn(run_connection(conn, slot));
    Ok(())
}

/// Writes the answer to the upgrade, with the frames already queued when no handler call is under way.
async fn answer_upgrade<IO: websocket::Socket>(conn: &mut Connection<IO>, head: &[u8]) -> std::io::Result<()> {
    let Connection { socket, session, pending, .. } = conn;
    let frames = match pending {
        None => session.client().take_frames().map(|frames| session.outbound(frames)),
        Some(_) => None,
    };
    let (client, metrics) = (&**session.client(), &*session.deps().metrics);
    bounded(write_frames(socket, head, frames.unwrap_or_default(), client, metrics), metrics).await
}

/// A client that passed every check of the upgrade, with what its connection starts from.
struct Admitted {
    /// `Sec-WebSocket-Accept`.
    accept: String,
    /// The sub-protocol to name in the answer: only when the client offered one we speak.
    echoed: Option<&'static str>,
    client: Arc<ClientHandle>,
    env: RequestEnv,
    token: Option<String>,
    previous_sid: Option<String>,
    slot: Option<ConnectionSlot>,
}

impl Admitted {
    /// The header fields of the `101` that accepts the upgrade.
    fn answer_fields(&self) -> impl Iterator<Item = (HeaderName, &str)> {
        let fields = [
            (header::CONNECTION, "upgrade"),
            (header::UPGRADE, "websocket"),
            (header::SEC_WEBSOCKET_ACCEPT, self.accept.as_str()),
        ];
        fields.into_iter().chain(self.echoed.map(|name| (header::SEC_WEBSOCKET_PROTOCOL, name)))
    }
}

/// The checks of an upgrade request (the handshake headers, shutdown, origin, `max_conn`) and what its connection
/// needs; `Err` is the answer to a refused one.
fn admit(
    state: &WsState,
    peer: SocketAddr,
    request: &axum::http::Request<axum::body::Body>,
) -> Result<Admitted, Response> {
    let (uri, headers) = (request.uri(), request.headers());
    let config = &state.config;
    let accept = match websocket::handshake_key(request.method(), headers) {
        Ok(key) => websocket::accept_key(key.as_bytes()),
        Err(refusal) => return Err(refusal.into_response()),
    };
    if state.is_shutting_down() {
        return Err((StatusCode::SERVICE_UNAVAILABLE, "server is shutting down\n").into_response());
    }
    if !state.origin_allowed_header(headers) {
        tracing::warn!(origin = ?headers.get(header::ORIGIN), "connection refused: origin not allowed");
        return Err((StatusCode::FORBIDDEN, "origin not allowed\n").into_response());
    }
    // Taken before the upgrade is answered, so concurrent upgrades cannot overshoot the cap between the check
    // and the connection's start.
    let Ok(slot) = state.take_slot() else {
        return Err((StatusCode::SERVICE_UNAVAILABLE, "too many connections: max_conn reached\n").into_response());
    };

    let query = uri.query().unwrap_or("");
    let own_ping_interval = query_param(query, "pi")
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|secs| *secs >= 0.1 && *secs <= 3600.0)
        .map(Duration::from_secs_f64)
        .filter(|d| *d != Duration::from_secs(config.ping_interval));
    let ping_precision =
        query_param(query, "ptp").and_then(PingPrecision::parse).unwrap_or(config.ping_timestamp_precision);
    let sid: Arc<str> =
        match headers.get("x-request-id").and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty() && v.len() <= 128) {
            Some(id) => id.into(),
            None => generate_sid().into(),
        };
    let (env, token) = state.request_env(peer, uri, headers);

    // The sub-protocol answered with and spoken: the first one the client offered that we speak.
    let offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find(|p| SUPPORTED_PROTOCOLS.contains(p));
    let protocol = Protocol::from_name(offered);
    // Echoed only when the client offered one: a client offering nothing known is served JSON without a header.
    let echoed = offered.map(|_| protocol.name());
    // The session a reconnecting extended-protocol client asks to have back, as AnyCable's clients send it.
    let previous_sid = protocol
        .is_extended()
        .then(|| {
            let from_header = headers.get("x-anycable-restore-sid").and_then(|v| v.to_str().ok()).map(str::to_owned);
            from_header.or_else(|| query_param(query, "sid").and_then(percent_decode))
        })
        .flatten()
        .filter(|sid| !sid.is_empty() && sid.len() <= 128);

    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let client =
        Arc::new(ClientHandle::new(id, sid, config.client_queue_size, own_ping_interval, ping_precision, protocol));
    Ok(Admitted { accept, echoed, client, env, token, previous_sid, slot })
}

/// hyper's upgraded connection as the socket under a WebSocket (it lingers, if at all, inside hyper's box).
impl websocket::Socket for TokioIo<hyper::upgrade::Upgraded> {}

/// One place under `max_conn`, held from the upgrade until the connection has ended; given back on drop.
pub(crate) struct ConnectionSlot(Arc<AtomicUsize>);

impl ConnectionSlot {
    /// Takes a place when fewer than `max` are taken.
    pub(crate) fn take(taken: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| Self(taken.clone()))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Registers one upgraded connection and starts its Connect call: the connection with the call under way (or
/// its welcome queued), and its place under `max_conn`.
fn open_connection<IO: websocket::Socket>(
    socket: WebSocket<IO>,
    admitted: Admitted,
    state: &WsState,
) -> (Connection<IO>, Option<ConnectionSlot>) {
    let Admitted { client, env, token, previous_sid, slot, .. } = admitted;
    let deps = state.deps.clone();
    Metrics::up(&deps.metrics.clients_num);
    Metrics::inc(&deps.metrics.clients_total);
    deps.hub.add_client(&client);
    // An upgrade that raced with shutdown: the shutdown's sweep over the registered clients may have missed
    // this one, so it tells itself to go. (Either this check or the sweep sees the other's write.)
    if state.is_shutting_down() {
        client.close(CloseRequest::with_disconnect_frame("server_restart", true, close_code::GOING_AWAY));
    }
    let mut session = Session::new(client, deps, env);
    let pending = session.start(token, previous_sid);
    let own_ping = session.client().own_ping_interval.map(|every| {
        let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Box::new(timer)
    });
    (Connection { socket, session, pending, own_ping }, slot)
}

/// The future that drives an open connection until the socket is gone and the session has ended.
///
/// The setup runs before, in [`open_connection`], and the driving loop is an `async move` block rather than an
/// `async fn`: an `async fn` keeps its arguments as well as the locals they are moved into, and every idle
/// connection would pay for both (the socket alone is ~370 bytes). The future holds only the socket, the
/// session and a few pointers.
fn run_connection<IO: websocket::Socket + Send + 'static>(
    mut conn: Connection<IO>,
    slot: Option<ConnectionSlot>,
) -> impl Future<Output = ()> + Send {
    async move {
        // False once reading failed: the stream is then unusable for reading, even for a close frame.
        let mut readable = true;
        // Set once the server has written its close frame on a socket it can still read: the client's answer is
        // then awaited before the socket goes.
        let mut close_sent = false;
        // After writing a batch, the other sources get the first look, so a steady flow of frames to this
        // client cannot keep its commands, its handler answers or its close frame waiting.
        let mut wrote_last = false;

        loop {
            // The event is consumed inside this block, before any write is awaited: a handler answer (hundreds
            // of bytes) must not be part of every idle connection's task.
            let (frames, close, pong) = {
                let outbox_first = !wrote_last;
                let event = std::future::poll_fn(|cx| conn.poll_event(cx, outbox_first)).await;
                wrote_last = matches!(event, Event::Outbox);
                let Connection { session, pending, .. } = &mut conn;
                let client = session.client();
                let metrics = &session.deps().metrics;
                match event {
                    Event::Outbox => {
                        let drained = client.drain();
                        if drained.close.as_ref().is_some_and(|close| close.reason == TOO_SLOW) {
                            Metrics::inc(&metrics.disconnected_slow_clients_total);
                        }
                        if let Some(messages) = drained.stream_messages {
                            session.queue_stream_messages(*messages);
                        }
                        (Some(session.outbound(drained.frames)), drained.close, None)
                    }
                    Event::CallDone(outcome) => {
                        *pending = session.finish(outcome);
                        continue;
                    }
                    Event::StreamMessage => {
                        *pending = session.start_stream_message();
                        continue;
                    }
                    Event::Tick(identifier, index) => {
                        *pending = session.start_tick(identifier, index);
                        continue;
                    }
                    Event::OwnPing => {
                        client.send(protocol::ping_frame(timestamp(client.ping_precision)));
                        continue;
                    }
                    Event::Read(Some(Ok(Message::Ping(data)))) => (None, None, Some(data)),
                    Event::Read(Some(Ok(Message::Close(code)))) => {
                        // Answered with a close frame; the client has said its last word.
                        tracing::debug!(sid = %client.sid, code, "client closed the connection");
                        readable = false;
                        let code = websocket::close_reply_code(code);
                        (None, Some(CloseRequest { frame: None, code, reason: "" }), None)
                    }
                    Event::Read(Some(Ok(message))) => {
                        *pending = handle_frame(session, message);
                        continue;
                    }
                    Event::Read(Some(Err(ReadError::Io(error)))) => {
                        tracing::debug!(sid = %client.sid, %error, "connection read failed");
                        break;
                    }
                    Event::Read(Some(Err(ReadError::Refused(refusal)))) => {
                        readable = false;
                        let close = CloseRequest { frame: None, code: refusal.code(), reason: refusal.reason() };
                        tracing::warn!(sid = %client.sid, error = %refusal, code = close.code, "client frame refused; closing");
                        Metrics::inc(&metrics.failed_client_msg_total);
                        (None, Some(close), None)
                    }
                    Event::Read(None) => break,
                }
            };
            // The write future is boxed and bound by `let` before it is awaited, and it owns the frames and the
            // close request: neither it nor what it writes is part of this task's state, they exist only while
            // writing (held here across the await, they would take ~90 bytes of every idle connection's task).
            let writing = Box::pin(write_out(&mut conn.socket, pong, frames, close, &conn.session));
            match writing.await {
                Written::Open => {}
                Written::Closed { ok } => {
                    close_sent = ok && readable;
                    break;
                }
                Written::Failed(error) => {
                    tracing::debug!(sid = %conn.session.client().sid, %error, "write to the client failed; dropping the connection");
                    break;
                }
            }
        }

        // Everything below runs once per connection; it is boxed (the same way) so that its state does not make
        // every idle connection's task larger.
        let ending = Box::pin(end_connection(conn, close_sent));
        ending.await;
        drop(slot);
    }
}

/// What a connection's task keeps while the connection idles: every byte of it is paid by every connection, so
/// anything else lives in the session's rarely used parts, in the client handle, or only while it is used.
struct Connection<IO> {
    socket: WebSocket<IO>,
    session: Session,
    /// The handler call in flight; the client's next frames wait for it.
    pending: Option<PendingCall>,
    /// Boxed: a timer is large and only clients that asked for their own ping interval have one.
    own_ping: Option<Box<tokio::time::Interval>>,
}

impl<IO: websocket::Socket> Connection<IO> {
    /// One hand-written poll over the event sources keeps the task small: no `select!` futures are stored while
    /// the connection idles.
    fn poll_event(&mut self, cx: &mut std::task::Context<'_>, outbox_first: bool) -> Poll<Event> {
        let client = self.session.client();
        if outbox_first && client.poll_ready(cx).is_ready() {
            return Poll::Ready(Event::Outbox);
        }
        if let Some(call) = self.pending.as_mut() {
            if let Poll::Ready(outcome) = call.as_mut().poll(cx) {
                return Poll::Ready(Event::CallDone(outcome));
            }
        }
        if let Some(timer) = self.own_ping.as_mut() {
            if timer.poll_tick(cx).is_ready() && client.is_welcomed() {
                return Poll::Ready(Event::OwnPing);
            }
        }
        if self.pending.is_none() {
            // The client's own commands first: a timer that is always due (its tick outlasts its interval) must
            // not keep an `unsubscribe` waiting.
            if let Poll::Ready(message) = self.socket.poll_next(cx) {
                return Poll::Ready(Event::Read(message));
            }
            if self.session.has_stream_messages() {
                return Poll::Ready(Event::StreamMessage);
            }
            if let Poll::Ready((identifier, index)) = self.session.poll_timer(cx) {
                return Poll::Ready(Event::Tick(identifier, index));
            }
        }
        if !outbox_first && self.session.client().poll_ready(cx).is_ready() {
            return Poll::Ready(Event::Outbox);
        }
        Poll::Pending
    }
}

/// Ends a connection whose loop has stopped: settles the call in flight, ends the session, and when the server
/// closed the connection, waits for the client's close frame.
async fn end_connection<IO: websocket::Socket>(conn: Connection<IO>, close_sent: bool) {
    let Connection { socket, mut session, pending, .. } = conn;
    // Unless the server still waits for the client's close frame, the socket is done with: it is closed before
    // the session's end (a call in flight, a cache write), so that the client gets its FIN at once and the answer
    // to its close frame, held back until this close, is not delayed.
    let mut socket = close_sent.then_some(socket);
    // A call that was in flight when the client went away still changes backend-side state; apply it so the
    // Disconnect call sees it.
    // What would follow it (a replay, a cache write) is for a client that is still there; the session is
    // cached when it ends anyway.
    if let Some(call) = pending {
        let _ = session.finish(call.await);
    }
    session.client().close(CloseRequest { frame: None, code: close_code::NORMAL, reason: "closed" });
    Metrics::down(&session.deps().metrics.clients_num);
    session.end().await;
    if let Some(socket) = socket.as_mut() {
        await_close_reply(socket).await;
    }
}

/// How long a connection the server closed waits for the client's close frame.
const CLOSE_REPLY_TIMEOUT: Duration = Duration::from_secs(1);

/// Reads and drops what the client still sends until its close frame arrives (or [`CLOSE_REPLY_TIMEOUT`]).
/// Closing a TCP connection with input left unread makes the kernel reset it, and a reset can destroy the
/// disconnect and close frames before the client has read them: a client that floods commands or broadcasts
/// while it is told to leave would never learn why.
async fn await_close_reply<IO: websocket::Socket>(socket: &mut WebSocket<IO>) {
    let _ = tokio::time::timeout(CLOSE_REPLY_TIMEOUT, socket.until_closed()).await;
}

/// What woke the connection task.
enum Event {
    /// Frames were queued or a close was requested.
    Outbox,
    CallDone(crate::session::CallOutcome),
    OwnPing,
    /// A publication waits for its subscription's stream callback (only looked at while no call is in flight).
    StreamMessage,
    /// A periodic timer of a subscription is due (only polled while no call is in flight).
    Tick(Arc<str>, u32),
    Read(Option<Result<Message, ReadError>>),
}

/// Handles one client frame; returns the handler call it started, if any.
fn handle_frame(session: &mut Session, message: Message) -> Option<PendingCall> {
    let (client, metrics) = (session.client(), &session.deps().metrics);
    // A client sends in the encoding it negotiated: text frames for JSON, binary frames otherwise.
    let encoding = client.protocol.encoding();
    let decoded = match message {
        Message::Text(text) if !encoding.is_binary() => {
            Metrics::add(&metrics.data_rcvd_total, text.len() as u64);
            protocol::decode_command(&text)
        }
        Message::Binary(data) if encoding.is_binary() => {
            Metrics::add(&metrics.data_rcvd_total, data.len() as u64);
            protocol::decode_binary_command(encoding, &data)
        }
        Message::Text(text) => {
            Metrics::add(&metrics.data_rcvd_total, text.len() as u64);
            Err(protocol::DecodeError::UnexpectedText(encoding.name()))
        }
        Message::Binary(data) => {
            Metrics::add(&metrics.data_rcvd_total, data.len() as u64);
            Err(protocol::DecodeError::UnexpectedBinary)
        }
        // Pings and close frames are answered by the connection loop.
        Message::Ping(_) | Message::Close(_) => return None,
    };
    Metrics::inc(&metrics.client_msg_total);
    match decoded {
        Ok(command) => session.start_command(command),
        Err(error) => {
            Metrics::inc(&metrics.failed_client_msg_total);
            tracing::warn!(sid = %client.sid, %error, "client frame ignored");
            None
        }
    }
}

/// How long one write may wait for the client to take the bytes. A peer that accepts nothing for this long
/// (a suspended tab, a dead network path) is given up on, so its session ends and its Disconnect runs.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// A socket write bounded by [`WRITE_TIMEOUT`]; a write that runs out of time is counted
/// (`timeout_server_msg_total`, as AnyCable counts its write deadline).
async fn bounded(write: impl Future<Output = std::io::Result<()>>, metrics: &Metrics) -> std::io::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(result) => result,
        Err(_) => {
            Metrics::inc(&metrics.timeout_server_msg_total);
            Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out"))
        }
    }
}

/// What became of a batch of writes.
enum Written {
    /// The frames were written; the connection stays open.
    Open,
    /// The close frame was written (`ok`) or its write failed.
    Closed { ok: bool },
    /// Writing the frames failed.
    Failed(std::io::Error),
}

/// Writes the pong a ping asked for, then queued frames, then the close frame when a close was requested (frames
/// queued after the close request are never written), each write bounded by [`WRITE_TIMEOUT`].
async fn write_out<IO: websocket::Socket>(
    socket: &mut WebSocket<IO>,
    pong: Option<Bytes>,
    frames: Option<VecDeque<Bytes>>,
    close: Option<CloseRequest>,
    session: &Session,
) -> Written {
    let (client, metrics) = (&**session.client(), &*session.deps().metrics);
    if let Some(data) = pong {
        if let Err(error) = bounded(socket.write_pong(&data), metrics).await {
            return Written::Failed(error);
        }
    }
    if let Some(frames) = frames {
        if let Err(error) = bounded(write_frames(socket, &[], frames, client, metrics), metrics).await {
            return Written::Failed(error);
        }
    }
    match close {
        Some(close) => {
            Written::Closed { ok: bounded(write_close(socket, close, client, metrics), metrics).await.is_ok() }
        }
        None => Written::Open,
    }
}

/// Writes frames in the client's encoding: JSON clients get text frames of the bytes as they are; binary clients
/// get broadcasts as the hub encoded them and everything built as JSON (transmissions, pings, confirmations)
/// re-encoded here.
async fn write_frames<IO: websocket::Socket>(
    socket: &mut WebSocket<IO>,
    before: &[u8],
    frames: VecDeque<Bytes>,
    client: &ClientHandle,
    metrics: &Metrics,
) -> std::io::Result<()> {
    if frames.is_empty() && before.is_empty() {
        return Ok(());
    }
    let (opcode, frames) = if client.protocol.encoding().is_binary() {
        let encoded = frames.into_iter().filter_map(|frame| match protocol::encode_for(client.protocol, frame) {
            Ok(binary) => Some(binary),
            Err(error) => {
                Metrics::inc(&metrics.failed_server_msg_total);
                tracing::warn!(sid = %client.sid, %error, "frame skipped");
                None
            }
        });
        (websocket::BINARY, encoded.collect::<Vec<_>>())
    } else {
        // Every frame is built by the server from JSON it parsed or produced: never anything but UTF-8.
        (websocket::TEXT, Vec::from(frames))
    };
    Metrics::add(&metrics.data_sent_total, frames.iter().map(|f| f.len() as u64).sum());
    socket.write_data_after(before, opcode, &frames).await
}

async fn write_close<IO: websocket::Socket>(
    socket: &mut WebSocket<IO>,
    close: CloseRequest,
    client: &ClientHandle,
    metrics: &Metrics,
) -> std::io::Result<()> {
    if let Some(frame) = close.frame {
        write_frames(socket, &[], VecDeque::from([frame]), client, metrics).await?;
    }
    socket.write_close(close.code, close.reason).await
}

/// Unix time in the requested precision.
pub(crate) fn timestamp(precision: PingPrecision) -> u128 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    match precision {
        PingPrecision::Seconds => now.as_secs() as u128,
        PingPrecision::Millis => now.as_millis(),
        PingPrecision::Nanos => now.as_nanos(),
    }
}

/// The URL as the client used it: `http(s)://host/path?query`.
pub(crate) fn request_url(headers: &HeaderMap, uri: &Uri, tls: bool) -> String {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("localhost");
    let scheme = match headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()) {
        Some("https") | Some("wss") => "https://",
        _ if tls => "https://",
        _ => "http://",
    };
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut url = String::with_capacity(scheme.len() + host.len() + path.len());
    url.push_str(scheme);
    url.push_str(host);
    url.push_str(path);
    url
}

/// The `forwarded` headers (lower-case names), cookies filtered by `proxy_cookies`, plus `REMOTE_ADDR`.
pub(crate) fn forwarded_headers<'a>(
    headers: &'a HeaderMap,
    forwarded: &'a [HeaderName],
    proxy_cookies: &[String],
    peer: SocketAddr,
) -> Vec<(&'a str, Cow<'a, str>)> {
    let mut out = Vec::with_capacity(forwarded.len() + 1);
    for name in forwarded {
        let separator = if *name == header::COOKIE { "; " } else { ", " };
        // Most headers come once: their value is used as it is, without collecting and joining.
        let mut values = headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
        let Some(first) = values.next() else { continue };
        let all = match values.next() {
            None => Cow::Borrowed(first),
            Some(second) => {
                let mut joined = [first, second].join(separator);
                values.for_each(|v| {
                    joined.push_str(separator);
                    joined.push_str(v);
                });
                Cow::Owned(joined)
            }
        };
        let value = if *name == header::COOKIE { filter_cookies(all, proxy_cookies) } else { all };
        if !value.is_empty() {
            out.push((name.as_str(), value));
        }
    }
    out.push(("REMOTE_ADDR", Cow::Owned(ip_text(peer.ip()))));
    out
}

/// An IP address as text; IPv4 without going through the formatting machinery, which is slow for this.
fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else { return ip.to_string() };
    let mut text = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
}

/// The cookies named in `allowed` (`proxy_cookies`); all of them, as they are, when it is empty.
fn filter_cookies<'a>(cookie: Cow<'a, str>, allowed: &[String]) -> Cow<'a, str> {
    if allowed.is_empty() {
        return cookie;
    }
    let kept = cookie
        .split(';')
        .map(str::trim)
        .filter(|pair| pair.split_once('=').is_some_and(|(name, _)| allowed.iter().any(|a| a == name.trim())))
        .collect::<Vec<_>>()
        .join("; ");
    Cow::Owned(kept)
}

/// The sub-protocol prefix a client may carry its JWT token in (browsers cannot set headers).
const TOKEN_PROTOCOL_PREFIX: &str = "anycable-token.";

/// The JWT token a client brought, looked up as AnyCable does: the `X-<jwt_param>` header (`header`), then an
/// `anycable-token.<token>` sub-protocol, then the `<jwt_param>` query parameter. Empty values count as none.
pub(crate) fn connection_token(headers: &HeaderMap, query: &str, header: &HeaderName, param: &str) -> Option<String> {
    let from_header = headers.get(header).and_then(|v| v.to_str().ok()).map(str::trim);
    let from_protocol = || {
        headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .find_map(|p| p.trim().strip_prefix(TOKEN_PROTOCOL_PREFIX))
    };
    let from_query = || query_param(query, param).and_then(percent_decode);
    from_header
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .or_else(|| from_protocol().filter(|t| !t.is_empty()).map(str::to_owned))
        .or_else(|| from_query().filter(|t| !t.is_empty()))
}

/// Decodes `%XX` escapes (and `+` as a space) of a query value; `None` when the result is not UTF-8.
pub(crate) fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    if !bytes.iter().any(|b| matches!(b, b'%' | b'+')) {
        return Some(value.to_owned());
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The raw value of query parameter `name`; the last one when it is repeated (an empty value counts).
pub(crate) fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').rev().find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// Whether an Origin header matches one of the allowed host patterns (`*` matches any run of characters).
pub(crate) fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    let host = origin.split_once("://").map(|(_, rest)| rest).unwrap_or(origin).trim_end_matches('/');
    let host_no_port = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    allowed.iter().any(|pattern| {
        let pattern = pattern.to_ascii_lowercase();
        wildcard_match(&pattern, &host.to_ascii_lowercase())
            || wildcard_match(&pattern, &host_no_port.to_ascii_lowercase())
    })
}

fn wildcard_match(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((prefix, rest)) => {
            let Some(remaining) = text.strip_prefix(prefix) else { return false };
            (0..=remaining.len()).any(|i| remaining.is_char_boundary(i) && wildcard_match(rest, &remaining[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn origins_match_hosts_with_wildcards() {
        let allowed = vec!["example.com".to_owned(), "*.test.io".to_owned(), "localhost:3000".to_owned()];
        assert!(origin_allowed("https://example.com", &allowed));
        assert!(origin_allowed("http://example.com:8080", &allowed));
        assert!(origin_allowed("https://a.b.test.io", &allowed));
        assert!(origin_allowed("http://localhost:3000", &allowed));
        assert!(!origin_allowed("http://localhost:4000", &allowed));
        assert!(!origin_allowed("https://evil.com", &allowed));
        assert!(!origin_allowed("https://example.com.evil.com", &allowed));
        assert!(!origin_allowed("", &allowed));
    }

    #[test]
    fn cookies_are_filtered_by_name() {
        assert_eq!(filter_cookies("a=1; b=2; c=3".into(), &["a".into(), "c".into()]), "a=1; c=3");
        assert_eq!(filter_cookies("a=1; b=2".into(), &[]), "a=1; b=2");
        assert_eq!(filter_cookies("b=2".into(), &["a".into()]), "");
    }

    fn forwarded_by(headers: &HeaderMap, names: &str, proxy_cookies: &str, peer: &str) -> HashMap<String, String> {
        let mut config = Config::default();
        config.set("headers", names).unwrap();
        config.set("proxy_cookies", proxy_cookies).unwrap();
        let names: Vec<HeaderName> =
            config.headers.iter().filter_map(|n| HeaderName::try_from(n.as_str()).ok()).collect();
        let forwarded = forwarded_headers(headers, &names, &config.proxy_cookies, peer.parse().unwrap());
        // As every handler call sees them: through the env the session keeps.
        RequestEnv::new("http://localhost/cable", &forwarded).headers_map()
    }

    #[test]
    fn forwarded_headers_are_lower_cased_and_include_remote_addr() {
        let mut headers = HeaderMap::new();
        headers.insert("Cookie", "user=alice; other=1".parse().unwrap());
        headers.insert("X-Api-Token", "t".parse().unwrap());
        headers.insert("X-Other", "no".parse().unwrap());
        let out = forwarded_by(&headers, "Cookie,X-API-Token", "user", "10.1.2.3:5555");
        assert_eq!(out.get("cookie").map(String::as_str), Some("user=alice"));
        assert_eq!(out.get("x-api-token").map(String::as_str), Some("t"));
        assert_eq!(out.get("REMOTE_ADDR").map(String::as_str), Some("10.1.2.3"));
        assert!(!out.contains_key("x-other"));
    }

    #[test]
    fn repeated_headers_are_joined_cookies_with_semicolons() {
        let mut headers = HeaderMap::new();
        headers.append("Cookie", "a=1".parse().unwrap());
        headers.append("Cookie", "b=2".parse().unwrap());
        headers.append("Cookie", "c=3".parse().unwrap());
        headers.append("X-Tag", "x".parse().unwrap());
        headers.append("X-Tag", "y".parse().unwrap());
        let out = forwarded_by(&headers, "cookie,x-tag", "", "127.0.0.1:1");
        assert_eq!(out.get("cookie").map(String::as_str), Some("a=1; b=2; c=3"));
        assert_eq!(out.get("x-tag").map(String::as_str), Some("x, y"));
        let out = forwarded_by(&headers, "cookie", "a,c", "127.0.0.1:1");
        assert_eq!(out.get("cookie").map(String::as_str), Some("a=1; c=3"));
        let out = forwarded_by(&headers, "cookie", "zzz", "127.0.0.1:1");
        assert!(!out.contains_key("cookie"), "no cookie left after filtering");
    }

    #[test]
    fn remote_addr_text_matches_the_standard_formatting() {
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "10.0.100.9",
            "127.0.0.1",
            "255.255.255.255",
            "99.100.101.250",
            "::1",
            "::ffff:1.2.3.4",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }

    #[test]
    fn query_params_are_looked_up_raw_and_the_last_one_wins() {
        assert_eq!(query_param("a=1&b=2", "b"), Some("2"));
        assert_eq!(query_param("a=1&b=2&a=3", "a"), Some("3"));
        assert_eq!(query_param("a&b=", "a"), Some(""));
        assert_eq!(query_param("a&b=", "b"), Some(""));
        assert_eq!(query_param("a=1", "c"), None);
        assert_eq!(query_param("", "a"), None);
        assert_eq!(query_param("x=a=b", "x"), Some("a=b"));
    }

    #[test]
    fn token_comes_from_the_header_then_the_sub_protocol_then_the_query() {
        let query = "jid=from.query&pi=3";
        let jid = HeaderName::from_static("x-jid");
        let x_token = HeaderName::from_static("x-token");
        let mut headers = HeaderMap::new();
        assert_eq!(connection_token(&headers, query, &jid, "jid").as_deref(), Some("from.query"));
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            "actioncable-v1-json, anycable-token.from.protocol".parse().unwrap(),
        );
        assert_eq!(connection_token(&headers, query, &jid, "jid").as_deref(), Some("from.protocol"));
        headers.insert("X-JID", "from.header".parse().unwrap());
        assert_eq!(connection_token(&headers, query, &jid, "jid").as_deref(), Some("from.header"));
        assert_eq!(
            connection_token(&headers, query, &x_token, "token").as_deref(),
            Some("from.protocol"),
            "X-TOKEN is not set"
        );
        assert_eq!(connection_token(&HeaderMap::new(), "jid=", &jid, "jid"), None);
        assert_eq!(connection_token(&HeaderMap::new(), "token=a%2Eb", &x_token, "token").as_deref(), Some("a.b"));
        assert_eq!(connection_token(&HeaderMap::new(), "jid=1&jid=2", &jid, "jid").as_deref(), Some("2"));
    }

    #[test]
    fn percent_decoding_never_panics() {
        assert_eq!(percent_decode("a%20b+c").as_deref(), Some("a b c"));
        assert_eq!(percent_decode("%").as_deref(), Some("%"));
        assert_eq!(percent_decode("%4").as_deref(), Some("%4"));
        assert_eq!(percent_decode("%zz%41").as_deref(), Some("%zzA"));
        assert_eq!(percent_decode("%ff"), None);
        assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
    }

    #[test]
    fn request_url_keeps_host_path_and_query() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "example.com:8080".parse().unwrap());
        let uri: Uri = "/cable?token=1&pi=2".parse().unwrap();
        assert_eq!(request_url(&headers, &uri, false), "http://example.com:8080/cable?token=1&pi=2");
        assert_eq!(request_url(&headers, &uri, true), "https://example.com:8080/cable?token=1&pi=2", "over TLS");
    }
}
