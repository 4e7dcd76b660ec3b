//! Server-Sent Events transport (`sse`, at `sse_path`): a client that cannot or will not open a WebSocket
//! (an `EventSource`, `curl -N`) gets the same session as a WebSocket client — the same Connect call or JWT,
//! state, streams, broadcasts and history — over a streamed `text/event-stream` response.
//!
//! A GET names one subscription in its query (`identifier`, `channel`, `stream`, `signed_stream` or
//! `turbo_signed_stream_name`, optionally `history_since`), and resumes from the `Last-Event-ID` header an
//! `EventSource` sends when it reconnects; a POST brings its subscribe commands as JSON lines. The response
//! is answered only once Connect and the subscriptions are settled: 401 when the connection is rejected, 400
//! for a rejected subscription or a request that names none, as AnyCable-Go answers them.
//!
//! Frames are turned into events as AnyCable-Go writes them: `event: <type>` for protocol frames, the
//! broadcast `message` alone as `data` for a GET (the whole frame for a POST), `id: <offset>/<epoch>/<stream>`
//! when the broadcast has a stream position, `retry` far in the future for a disconnect without reconnect. With
//! `raw=1` only broadcasts are sent, and pings become SSE comments, which keep proxies from timing the
//! response out without waking the client.
//!
//! The response body *is* the connection: polling it drains the client's queue and drives the session's
//! calls, so an idle SSE client costs what an idle WebSocket client costs. When the body is dropped (the
//! client went away, the session was closed) the session ends in a task of the server's: the Disconnect call
//! runs and the `max_conn` place is given back. This module never decodes commands after the request.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, BytesMut};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::ws::{self, ConnectionSlot, WsState, percent_decode, query_param};
use crate::client::{ClientHandle, CloseRequest, TOO_SLOW, close_code, generate_sid};
use crate::metrics::Metrics;
use crate::protocol::{self, ClientCommand, HistoryRequest, Protocol, StreamCursor};
use crate::session::{PendingCall, RequestEnv, Session};

/// Largest POST body of subscribe commands (AnyCable-Go's limit).
pub(crate) const MAX_BODY: usize = 64 * 1024;

/// Time a POST body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// `retry` of a disconnect that must not be followed by a reconnect: a year, as AnyCable-Go sends it.
const NO_RECONNECT_RETRY_MS: u64 = 31_536_000_000;

/// A refused request: its status and a message for the client (also logged).
pub(super) struct Refusal(pub(super) StatusCode, pub(super) Cow<'static, str>);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, format!("{}\n", self.1)).into_response()
    }
}

/// How frames become events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Encoding {
    /// GET: a broadcast's data is its `message` alone. POST: the whole frame.
    unwrap: bool,
    /// `raw=1` (GET): broadcasts only; pings as comments.
    raw: bool,
}

/// Serves `sse_path`: GET and POST open a stream, OPTIONS answers a CORS preflight.
pub(crate) async fn handle(
    State(state): State<Arc<WsState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let origin = match request_origin(&state, &headers, "SSE") {
        Ok(origin) => origin,
        Err(refused) => return refused,
    };
    let mut response = if method == Method::OPTIONS {
        preflight(&headers)
    } else {
        match open(&state, peer, &method, &uri, &headers, body).await {
            Ok(response) => response,
            Err(refusal) => refusal.into_response(),
        }
    };
    response.headers_mut().insert(header::VARY, HeaderValue::from_static("Origin"));
    with_cors(response, origin)
}
/// The request's `Origin` (HTTP clients without one are let through), or the 403 answer when `allowed_origins`
/// does not list it; `what` names the transport in the log line.
pub(super) fn request_origin<'h>(
    state: &WsState,
    headers: &'h HeaderMap,
    what: &str,
) -> Result<Option<&'h str>, Response> {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    match origin {
        Some(origin) if !state.origin_allowed(origin) => {
            tracing::warn!(%origin, "{what} request refused: origin not allowed");
            Err(with_cors(Refusal(StatusCode::FORBIDDEN, "origin not allowed".into()).into_response(), None))
        }
        _ => Ok(origin),
    }
}

/// Lets the page of another origin read the stream (`allowed_origins` was checked before).
pub(super) fn with_cors(mut response: Response, origin: Option<&str>) -> Response {
    if let Some(origin) = origin.and_then(|o| HeaderValue::from_str(o).ok()) {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    }
    response
}

pub(super) fn preflight(headers: &HeaderMap) -> Response {
    let mut response = StatusCode::OK.into_response();
    let out = response.headers_mut();
    out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
    if let Some(asked) = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    response
}

/// Checks the request, connects and subscribes the session, and answers with its event stream.
async fn open(
    state: &Arc<WsState>,
    peer: SocketAddr,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    let config = &state.config;
    if state.shutdown.is_cancelled() {
        return Err(Refusal(StatusCode::SERVICE_UNAVAILABLE, "server is shutting down".into()));
    }
    let query = uri.query().unwrap_or("");
    let (commands, encoding) = match *method {
        Method::GET => {
            let raw = query_param(query, "raw").is_some_and(|v| matches!(v, "1" | "true" | "t" | "y"));
            (vec![subscribe_command_from_query(query, headers)?], Encoding { unwrap: true, raw })
        }
        Method::POST => (subscribe_commands_from_body(body).await?, Encoding { unwrap: false, raw: false }),
        _ => return Err(Refusal(StatusCode::METHOD_NOT_ALLOWED, "SSE takes GET or POST".into())),
    };
    let slot = match config.max_conn {
        0 => None,
        max => match ConnectionSlot::take(&state.connections, max) {
            Some(slot) => Some(slot),
            None => {
                tracing::warn!(max_conn = max, "SSE request refused: max_conn reached");
                return Err(Refusal(StatusCode::SERVICE_UNAVAILABLE, "too many connections: max_conn reached".into()));
            }
        },
    };

    let (client, env, token) = new_client(state, peer, uri, headers);
    let mut connection = SseConnection::register(state, client, env, encoding, slot);
    connection.pending = connection.session().start(token, None);
    connection.settle().await;
    if !connection.client.is_welcomed() {
        tracing::debug!(sid = %connection.client.sid, "SSE connection rejected");
        return Err(Refusal(StatusCode::UNAUTHORIZED, "unauthorized".into()));
    }
    for command in commands {
        let ClientCommand::Subscribe { identifier, .. } = &command else { continue };
        let identifier = identifier.clone();
        connection.pending = connection.session().start_command(command);
        connection.settle().await;
        if !connection.session().is_subscribed(&identifier) {
            tracing::debug!(sid = %connection.client.sid, %identifier, "SSE subscription rejected");
            return Err(Refusal(StatusCode::BAD_REQUEST, format!("subscription rejected: {identifier}").into()));
        }
    }

    let mut response = Response::new(Body::from_stream(connection));
    let out = response.headers_mut();
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
    out.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache, no-store, must-revalidate, max-age=0"),
    );
    out.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    out.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    out.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The client of an HTTP request and what its session starts with: the env and the JWT token it brought. With a
/// broker it speaks the extended protocol, so that broadcasts carry their stream position.
pub(super) fn new_client(
    state: &WsState,
    peer: SocketAddr,
    uri: &Uri,
    headers: &HeaderMap,
) -> (Arc<ClientHandle>, RequestEnv, Option<String>) {
    let config = &state.config;
    let query = uri.query().unwrap_or("");
    let sid: Arc<str> =
        match headers.get("x-request-id").and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty() && v.len() <= 128) {
            Some(id) => id.into(),
            None => generate_sid().into(),
        };
    let url = ws::request_url(headers, uri, config.tls_listener());
    let forwarded = ws::forwarded_headers(headers, &state.forwarded, &config.proxy_cookies, peer);
    let env = RequestEnv::new(&url, &forwarded);
    let token = match &state.token_header {
        Some(header) if state.deps.controller.reads_tokens() => {
            ws::connection_token(headers, query, header, &config.jwt_param)
        }
        _ => None,
    };
    let protocol = if state.deps.broker.is_some() { Protocol::ExtJson } else { Protocol::Json };
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let client = ClientHandle::new(id, sid, config.client_queue_size, None, config.ping_timestamp_precision, protocol);
    (Arc::new(client), env, token)
}

/// The subscribe command a GET names in its query, with the history it asks for: from the position in
/// `Last-Event-ID` (`<offset>/<epoch>/<stream>`), and/or since `history_since` (Unix seconds).
fn subscribe_command_from_query(query: &str, headers: &HeaderMap) -> Result<ClientCommand, Refusal> {
    let bad = |what: String| Refusal(StatusCode::BAD_REQUEST, what.into());
    let param = |name: &str| -> Result<Option<String>, Refusal> {
        match query_param(query, name) {
            None | Some("") => Ok(None),
            Some(raw) => {
                percent_decode(raw).map(Some).ok_or_else(|| bad(format!("query parameter {name} is not UTF-8")))
            }
        }
    };
    let pubsub = |key: &str, stream: String| serde_json::json!({ "channel": "$pubsub", key: stream }).to_string();
    let identifier = if let Some(identifier) = param("identifier")? {
        identifier
    } else if let Some(channel) = param("channel")? {
        serde_json::json!({ "channel": channel }).to_string()
    } else if let Some(stream) = param("stream")? {
        pubsub("stream_name", stream)
    } else if let Some(stream) = param("signed_stream")? {
        pubsub("signed_stream_name", stream)
    } else if let Some(stream) = param("turbo_signed_stream_name")? {
        serde_json::json!({ "channel": "Turbo::StreamsChannel", "signed_stream_name": stream }).to_string()
    } else {
        return Err(bad(
            "no channel: give identifier, channel, stream, signed_stream or turbo_signed_stream_name".into()
        ));
    };
    let mut history = HistoryRequest::default();
    if let Some(last) = headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        if let Some(cursor) =
            parse_event_id(last).map_err(|_| bad(format!("Last-Event-ID {last:?} has no numeric offset")))?
        {
            history.streams.push(cursor);
        }
    }
    if let Some(since) = param("history_since")? {
        let since = since.parse::<u64>().map_err(|_| bad(format!("history_since {since:?} is not Unix seconds")))?;
        history.since = Some(since);
    }
    let history = (history.since.is_some() || !history.streams.is_empty()).then_some(history);
    Ok(ClientCommand::Subscribe { identifier, history, presence: None })
}

/// Reads an event id: `None` when it is not one of ours (fewer than three parts), an error when its offset is
/// not a number.
fn parse_event_id(id: &str) -> Result<Option<StreamCursor>, std::num::ParseIntError> {
    let mut parts = id.splitn(3, '/');
    let (Some(offset), Some(epoch), Some(stream)) = (parts.next(), parts.next(), parts.next()) else { return Ok(None) };
    let offset = offset.parse::<u64>()?;
    Ok(Some(StreamCursor { stream: stream.to_owned(), epoch: epoch.to_owned(), offset }))
}

/// The subscribe commands of a POST body. Other commands have no place here: this transport has no way to send
/// them later either.
async fn subscribe_commands_from_body(body: Body) -> Result<Vec<ClientCommand>, Refusal> {
    let commands = read_commands(body, MAX_BODY).await?;
    if let Some(n) = commands.iter().position(|c| !matches!(c, ClientCommand::Subscribe { .. })) {
        let reason = format!("command {}: only subscribe commands can open an SSE stream", n + 1);
        return Err(Refusal(StatusCode::BAD_REQUEST, reason.into()));
    }
    Ok(commands)
}

/// The commands of a request body of at most `max` bytes, one JSON command per line (blank lines skipped).
pub(super) async fn read_commands(body: Body, max: usize) -> Result<Vec<ClientCommand>, Refusal> {
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, max)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => return Err(Refusal(StatusCode::PAYLOAD_TOO_LARGE, format!("commands over {max} bytes").into())),
        Err(_) => return Err(Refusal(StatusCode::REQUEST_TIMEOUT, "request body not received in time".into())),
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| Refusal(StatusCode::BAD_REQUEST, "body is not UTF-8".into()))?;
    let mut commands = Vec::new();
    for (n, line) in text.lines().map(str::trim).enumerate().filter(|(_, line)| !line.is_empty()) {
        match protocol::decode_command(line) {
            Ok(command) => commands.push(command),
            Err(error) => return Err(Refusal(StatusCode::BAD_REQUEST, format!("line {}: {error}", n + 1).into())),
        }
    }
    Ok(commands)
}

/// One SSE client: the response body that drives its session.
struct SseConnection {
    client: Arc<ClientHandle>,
    /// Taken when the connection ends.
    session: Option<Session>,
    pending: Option<PendingCall>,
    encoding: Encoding,
    metrics: Arc<Metrics>,
    /// Set once the close was written: the body ends.
    finished: bool,
    /// Where the session ends, and the token that keeps shutdown waiting until it has.
    ending: Option<(tokio_util::task::TaskTracker, TaskTrackerToken, Option<ConnectionSlot>)>,
}

impl SseConnection {
    fn register(
        state: &Arc<WsState>,
        client: Arc<ClientHandle>,
        env: RequestEnv,
        encoding: Encoding,
        slot: Option<ConnectionSlot>,
    ) -> Self {
        let deps = state.deps.clone();
        let metrics = deps.metrics.clone();
        Metrics::up(&metrics.clients_num);
        Metrics::inc(&metrics.clients_total);
        deps.hub.add_client(&client);
        // As for a WebSocket: a request that raced with shutdown's sweep over the clients tells itself to go.
        if state.shutdown.is_cancelled() {
            client.close(CloseRequest::with_disconnect_frame("server_restart", true, close_code::GOING_AWAY));
        }
        let session = Session::new(client.clone(), deps, env);
        let ending = Some((state.tracker.clone(), state.tracker.token(), slot));
        Self { client, session: Some(session), pending: None, encoding, metrics, finished: false, ending }
    }

    fn session(&mut self) -> &mut Session {
        // Only `Drop` takes it.
        self.session.as_mut().unwrap_or_else(|| unreachable!("the session is there until the connection drops"))
    }

    /// Runs the call in flight and those that follow from it. The call stays in `pending` while it runs, so a
    /// request abandoned meanwhile still settles it when the connection drops.
    async fn settle(&mut self) {
        while let Some(call) = self.pending.as_mut() {
            let outcome = call.await;
            self.pending = self.session().finish(outcome);
        }
    }

    /// The events of a batch of drained frames, and of the close when there is one.
    fn encode(&mut self, frames: impl IntoIterator<Item = Bytes>, close: Option<CloseRequest>) -> BytesMut {
        let mut chunk = BytesMut::new();
        for frame in frames {
            encode_event(&mut chunk, &frame, self.encoding);
        }
        if let Some(close) = close {
            if close.reason == TOO_SLOW {
                Metrics::inc(&self.metrics.disconnected_slow_clients_total);
            }
            if let Some(frame) = close.frame {
                encode_event(&mut chunk, &frame, self.encoding);
            }
            self.finished = true;
        }
        chunk
    }
}

impl Stream for SseConnection {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.finished {
                return Poll::Ready(None);
            }
            if let Some(call) = this.pending.as_mut() {
                if let Poll::Ready(outcome) = call.as_mut().poll(cx) {
                    this.pending = this.session().finish(outcome);
                    continue;
                }
            }
            if this.client.poll_ready(cx).is_pending() {
                return Poll::Pending;
            }
            let drained = this.client.drain();
            let frames = this.session().outbound(drained.frames);
            let chunk = this.encode(frames, drained.close);
            if !chunk.is_empty() {
                Metrics::add(&this.metrics.data_sent_total, chunk.len() as u64);
                return Poll::Ready(Some(Ok(chunk.freeze())));
            }
        }
    }
}

impl Drop for SseConnection {
    /// Ends the session in a task of the server's: settles the call in flight (its effect is what Disconnect
    /// must see), runs the Disconnect call, gives the `max_conn` place back.
    fn drop(&mut self) {
        let (Some(mut session), Some((tracker, token, slot))) = (self.session.take(), self.ending.take()) else {
            return;
        };
        let (client, pending, metrics) = (self.client.clone(), self.pending.take(), self.metrics.clone());
        let ending = async move {
            if let Some(call) = pending {
                let _ = session.finish(call.await);
            }
            client.close(CloseRequest { frame: None, code: close_code::NORMAL, reason: "closed" });
            Metrics::down(&metrics.clients_num);
            session.end().await;
            drop((slot, token));
        };
        // Outside a runtime (the runtime itself is going away) there is nothing left to tell.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            tracker.spawn_on(ending, &runtime);
        }
    }
}

/// What the SSE encoding reads of a frame.
#[derive(Deserialize)]
struct FrameView<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stream_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    epoch: Option<Cow<'a, str>>,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default)]
    reconnect: Option<bool>,
}

/// Appends one frame as an SSE event.
fn encode_event(out: &mut BytesMut, frame: &[u8], encoding: Encoding) {
    let Ok(view) = serde_json::from_slice::<FrameView>(frame) else {
        // A transmission that is not JSON: passed on as it is.
        if !encoding.raw {
            put_data(out, &String::from_utf8_lossy(frame));
            out.put_u8(b'\n');
        }
        return;
    };
    if let Some(kind) = view.kind.as_deref() {
        if encoding.raw {
            if kind == "ping" {
                out.put_slice(b": ping\n\n");
            }
            return;
        }
        put_line(out, "event: ", kind);
        put_data(out, &String::from_utf8_lossy(frame));
        if kind == "disconnect" && view.reconnect == Some(false) {
            out.put_slice(format!("retry: {NO_RECONNECT_RETRY_MS}\n").as_bytes());
        }
        out.put_u8(b'\n');
        return;
    }
    let data: Cow<str> = match (encoding.unwrap, view.message) {
        (true, Some(message)) => match serde_json::from_str::<Cow<str>>(message.get()) {
            Ok(text) => text,
            Err(_) => Cow::Borrowed(message.get()),
        },
        _ => String::from_utf8_lossy(frame),
    };
    put_data(out, &data);
    if let (Some(offset), Some(epoch), Some(stream)) = (view.offset, view.epoch, view.stream_id) {
        if offset > 0 && !epoch.is_empty() && !stream.is_empty() {
            put_line(out, "id: ", &format!("{offset}/{epoch}/{stream}"));
        }
    }
    out.put_u8(b'\n');
}

/// One `data:` line per line of `text` (CRLF, CR and LF all end a line for an SSE reader).
fn put_data(out: &mut BytesMut, text: &str) {
    let mut rest = text;
    loop {
        let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
        put_line(out, "data: ", &rest[..end]);
        if end == rest.len() {
            return;
        }
        let skip = if rest[end..].starts_with("\r\n") { 2 } else { 1 };
        rest = &rest[end + skip..];
    }
}

/// A field line; a value that holds a line break (a stream name can) has it dropped rather than end the field.
fn put_line(out: &mut BytesMut, field: &str, value: &str) {
    out.put_slice(field.as_bytes());
    if value.contains(['\r', '\n']) {
        out.put_slice(value.replace(['\r', '\n'], "").as_bytes());
    } else {
        out.put_slice(value.as_bytes());
    }
    out.put_u8(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: Encoding = Encoding { unwrap: true, raw: false };
    const POST: Encoding = Encoding { unwrap: false, raw: false };
    const RAW: Encoding = Encoding { unwrap: true, raw: true };

    fn event(frame: &str, encoding: Encoding) -> String {
        let mut out = BytesMut::new();
        encode_event(&mut out, frame.as_bytes(), encoding);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn protocol_frames_are_typed_events_and_raw_streams_leave_them_out() {
        let welcome = r#"{"type":"welcome","sid":"abc"}"#;
        assert_eq!(event(welcome, GET), format!("event: welcome\ndata: {welcome}\n\n"));
        assert_eq!(event(welcome, RAW), "");
        let ping = r#"{"type":"ping","message":1700000000}"#;
        assert_eq!(event(ping, GET), format!("event: ping\ndata: {ping}\n\n"));
        assert_eq!(event(ping, RAW), ": ping\n\n", "a comment keeps the response alive without an event");
    }

    #[test]
    fn a_disconnect_without_reconnect_asks_for_no_retry() {
        let gone = r#"{"type":"disconnect","reason":"remote","reconnect":false}"#;
        assert_eq!(event(gone, GET), format!("event: disconnect\ndata: {gone}\nretry: 31536000000\n\n"));
        let restart = r#"{"type":"disconnect","reason":"server_restart","reconnect":true}"#;
        assert_eq!(event(restart, GET), format!("event: disconnect\ndata: {restart}\n\n"));
    }

    #[test]
    fn a_get_gets_the_message_alone_and_a_post_the_whole_frame() {
        let frame = r#"{"identifier":"{\"channel\":\"C\"}","message":{"text":"hi"}}"#;
        assert_eq!(event(frame, GET), "data: {\"text\":\"hi\"}\n\n");
        assert_eq!(event(frame, POST), format!("data: {frame}\n\n"));
        let text = r#"{"identifier":"x","message":"line 1\nline 2\r\nline 3"}"#;
        assert_eq!(event(text, GET), "data: line 1\ndata: line 2\ndata: line 3\n\n", "a string message unescaped");
    }

    #[test]
    fn positioned_broadcasts_carry_their_position_as_the_event_id() {
        let frame = r#"{"identifier":"x","message":{"n":1},"stream_id":"chat/1","epoch":"e1","offset":7}"#;
        assert_eq!(event(frame, GET), "data: {\"n\":1}\nid: 7/e1/chat/1\n\n");
        assert_eq!(event(frame, RAW), "data: {\"n\":1}\nid: 7/e1/chat/1\n\n");
        let cursor = parse_event_id("7/e1/chat/1").unwrap().unwrap();
        assert_eq!((cursor.offset, cursor.epoch.as_str(), cursor.stream.as_str()), (7, "e1", "chat/1"));
        assert!(parse_event_id("x/e1/s").is_err());
        assert_eq!(parse_event_id("something-else"), Ok(None));
    }

    #[test]
    fn field_values_cannot_break_the_framing() {
        let frame = r#"{"identifier":"x","message":1,"stream_id":"a\nid: 9/x/y","epoch":"e","offset":1}"#;
        assert_eq!(event(frame, GET), "data: 1\nid: 1/e/aid: 9/x/y\n\n");
        assert_eq!(event("not json\nat all", POST), "data: not json\ndata: at all\n\n");
    }

    fn query_command(query: &str, last_event_id: Option<&str>) -> Result<ClientCommand, StatusCode> {
        let mut headers = HeaderMap::new();
        if let Some(id) = last_event_id {
            headers.insert("last-event-id", id.parse().unwrap());
        }
        subscribe_command_from_query(query, &headers).map_err(|refusal| refusal.0)
    }

    #[test]
    fn the_query_names_the_subscription_in_anycable_order() {
        let identifier = |query| match query_command(query, None) {
            Ok(ClientCommand::Subscribe { identifier, history: None, presence: None }) => identifier,
            other => panic!("{query}: {other:?}"),
        };
        assert_eq!(identifier("channel=ChatChannel"), r#"{"channel":"ChatChannel"}"#);
        assert_eq!(identifier("identifier=%7B%22channel%22%3A%22A%22%7D&channel=B"), r#"{"channel":"A"}"#);
        assert_eq!(identifier("stream=news%2F1"), r#"{"channel":"$pubsub","stream_name":"news/1"}"#);
        assert_eq!(identifier("signed_stream=abc--def"), r#"{"channel":"$pubsub","signed_stream_name":"abc--def"}"#);
        assert_eq!(
            identifier("turbo_signed_stream_name=t"),
            r#"{"channel":"Turbo::StreamsChannel","signed_stream_name":"t"}"#
        );
        assert_eq!(query_command("", None), Err(StatusCode::BAD_REQUEST));
        assert_eq!(query_command("channel=", None), Err(StatusCode::BAD_REQUEST));
        assert_eq!(query_command("channel=%ff", None), Err(StatusCode::BAD_REQUEST));
        assert_eq!(query_command("stream=s&history_since=yesterday", None), Err(StatusCode::BAD_REQUEST));
        assert_eq!(query_command("stream=s", Some("x/e/s")), Err(StatusCode::BAD_REQUEST));
    }

    #[test]
    fn last_event_id_and_history_since_become_the_history_request() {
        let Ok(ClientCommand::Subscribe { history: Some(history), .. }) =
            query_command("stream=s&history_since=1700000000", Some("3/ep/s"))
        else {
            panic!("history expected")
        };
        assert_eq!(history.since, Some(1_700_000_000));
        assert_eq!(history.streams, vec![StreamCursor { stream: "s".into(), epoch: "ep".into(), offset: 3 }]);
    }
}
