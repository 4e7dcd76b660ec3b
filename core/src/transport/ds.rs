//! Durable Streams reads: `GET`/`HEAD <ds_path>/<stream>`, the read half of the open Durable Streams protocol,
//! served from the broker's stream history and the hub's live broadcasts.
//!
//! Three modes, as AnyCable-Go serves them: a catch-up read (no `live`) answers with the stream's messages after
//! `offset` as one JSON array; `live=long-poll` answers the same way when there is something to read and
//! otherwise waits up to `ds_poll_interval` for the next broadcast (204 when none comes); `live=sse` writes the
//! backlog and then every broadcast as `data`/`control` Server-Sent Events for up to `ds_sse_ttl`.
//!
//! A reader is authenticated like a WebSocket client (the same Connect call, JWT or `noauth`; skipped with
//! `ds_skip_auth`) and then authorized for its stream like a `$pubsub` subscription: a signed name (`signed`
//! query parameter or `X-Signed` header) for exactly this stream, or an unsigned one with `public_streams`.
//!
//! Offsets are `<offset>::<epoch>` with the offset zero-padded to 16 digits, so that they sort as text within
//! an epoch as the protocol asks; `-1` (the start), `0` (an empty stream) and `now` are the sentinels. A live
//! reader is a client of the hub with a bounded queue (a reader that cannot keep up is ended) and counts against
//! `max_conn`. This module never writes to a stream: publishing stays with the broadcast ingress.

use std::borrow::Cow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;
use serde::Deserialize;

use crate::broker::{Broker, History, HistoryError};
use crate::client::{ClientHandle, CloseRequest, close_code};
use crate::config::DisconnectMode;
use crate::handler::controller::PUBSUB_CHANNEL;
use crate::handler::{CallContext, ConnectionRequest, DisconnectRequest, Env, Status};
use crate::metrics::Metrics;
use crate::protocol::{self, Protocol};
use crate::transport::ws::{ConnectionSlot, WsState, percent_decode, query_param};

/// The response header with the offset to read from next.
const NEXT_OFFSET: &str = "stream-next-offset";
/// The response header saying the response reaches the current end of the stream.
const UP_TO_DATE: &str = "stream-up-to-date";
/// The response header with the cursor a client echoes in its next live request (CDN request collapsing).
const CURSOR: &str = "stream-cursor";
/// The request header carrying a signed stream name (the `signed` query parameter wins).
const SIGNED_HEADER: &str = "x-signed";
/// Seconds per cursor interval, counted from [`CURSOR_EPOCH`], as the protocol suggests.
const CURSOR_INTERVAL: u64 = 20;
/// 2024-10-09T00:00:00Z, the cursor epoch of the protocol's reference servers.
const CURSOR_EPOCH: u64 = 1_728_432_000;
/// Digits an offset is padded to, so offsets of one epoch sort as text.
const OFFSET_DIGITS: usize = 16;

/// Why a read request is refused; each maps to one HTTP status and a message for the client.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DsError {
    #[error("stream is missing in the URL: read {0}/<stream>")]
    MissingStream(String),
    #[error("stream name is not valid percent-encoded UTF-8")]
    BadStreamName,
    #[error("live must be long-poll or sse, not {0:?}")]
    BadLiveMode(String),
    #[error("live={0} needs an offset: start with offset=-1 or offset=now")]
    MissingOffset(&'static str),
    #[error("offset {0:?} is not -1, now, 0 or an offset this server returned")]
    BadOffset(String),
    #[error("Durable Streams are read-only here (GET and HEAD); publish with a broadcast")]
    ReadOnly,
    #[error("origin not allowed")]
    OriginNotAllowed,
    #[error("too many connections: max_conn reached")]
    TooManyConnections,
    #[error("server is shutting down")]
    ShuttingDown,
    #[error("unauthorized")]
    Unauthenticated,
    #[error("authentication failed: {0}")]
    AuthError(String),
    #[error("not allowed to read this stream: {0}")]
    Forbidden(String),
    #[error("offset is no longer readable: {0}; read again from offset=-1")]
    Gone(HistoryError),
    #[error("stream history unavailable: {0}")]
    Unavailable(String),
}

impl DsError {
    fn status(&self) -> StatusCode {
        match self {
            Self::MissingStream(_)
            | Self::BadStreamName
            | Self::BadLiveMode(_)
            | Self::MissingOffset(_)
            | Self::BadOffset(_) => StatusCode::BAD_REQUEST,
            Self::ReadOnly => StatusCode::METHOD_NOT_ALLOWED,
            Self::OriginNotAllowed => StatusCode::FORBIDDEN,
            Self::Unauthenticated | Self::Forbidden(_) => StatusCode::UNAUTHORIZED,
            Self::Gone(_) => StatusCode::GONE,
            Self::TooManyConnections | Self::ShuttingDown | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::AuthError(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for DsError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), format!("{self}\n")).into_response();
        if matches!(self, Self::ReadOnly) {
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, OPTIONS"));
        }
        response
    }
}

/// Where a read starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Offset {
    /// `-1`, `0` or none: everything the history holds.
    Start,
    /// `now`: nothing before the current end of the stream.
    Now,
    /// After a message this server handed out.
    After { offset: u64, epoch: String },
}

impl Offset {
    pub(crate) fn parse(text: &str) -> Result<Self, DsError> {
        match text {
            "" | "-1" | "0" => return Ok(Self::Start),
            "now" => return Ok(Self::Now),
            _ => {}
        }
        let bad = || DsError::BadOffset(text.chars().take(64).collect());
        let (digits, epoch) = text.split_once("::").ok_or_else(bad)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || epoch.is_empty() || epoch.len() > 64 {
            return Err(bad());
        }
        let offset = digits.parse().map_err(|_| bad())?;
        Ok(Self::After { offset, epoch: epoch.to_owned() })
    }
}

/// The offset text of a position: `0` for an empty stream, else `<padded offset>::<epoch>`.
pub(crate) fn encode_offset(position: Option<(u64, &str)>) -> String {
    match position {
        None => "0".to_owned(),
        Some((offset, epoch)) => format!("{offset:0OFFSET_DIGITS$}::{epoch}"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Live {
    CatchUp,
    LongPoll,
    Sse,
}

/// A read request, parsed.
#[derive(Debug)]
struct ReadRequest {
    stream: String,
    offset: Offset,
    live: Live,
    cursor: Option<String>,
    signed: Option<String>,
}

impl ReadRequest {
    fn parse(prefix: &str, uri: &Uri, headers: &HeaderMap) -> Result<Self, DsError> {
        let raw = uri.path().strip_prefix(prefix).unwrap_or("").trim_start_matches('/');
        if raw.is_empty() {
            return Err(DsError::MissingStream(prefix.to_owned()));
        }
        // A '+' is part of a path, not a space.
        let stream = percent_decode(&raw.replace('+', "%2B")).ok_or(DsError::BadStreamName)?;
        let query = uri.query().unwrap_or("");
        let live = match query_param(query, "live") {
            None | Some("") => Live::CatchUp,
            Some("long-poll") => Live::LongPoll,
            Some("sse") => Live::Sse,
            Some(other) => return Err(DsError::BadLiveMode(other.chars().take(32).collect())),
        };
        let offset = match (query_param(query, "offset"), live) {
            (None, Live::LongPoll) => return Err(DsError::MissingOffset("long-poll")),
            (None, Live::Sse) => return Err(DsError::MissingOffset("sse")),
            (None, Live::CatchUp) => Offset::Start,
            (Some(text), _) => Offset::parse(&percent_decode(text).ok_or_else(|| DsError::BadOffset(text.into()))?)?,
        };
        let cursor = query_param(query, "cursor").and_then(percent_decode).filter(|c| !c.is_empty());
        let signed = query_param(query, "signed")
            .and_then(percent_decode)
            .or_else(|| headers.get(SIGNED_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned))
            .filter(|s| !s.is_empty());
        Ok(Self { stream, offset, live, cursor, signed })
    }

    /// The `$pubsub` identifier a WebSocket client would subscribe to this stream with.
    fn identifier(&self) -> String {
        let mut id = format!(
            r#"{{"channel":{},"stream_name":{}"#,
            protocol::json_string(PUBSUB_CHANNEL),
            protocol::json_string(&self.stream)
        );
        if let Some(signed) = &self.signed {
            id.push_str(&format!(r#","signed_stream_name":{}"#, protocol::json_string(signed)));
        }
        id.push('}');
        id
    }
}

/// What the Durable Streams route needs; shared by every request.
pub(crate) struct DsState {
    ws: Arc<WsState>,
    broker: Arc<dyn Broker>,
    prefix: String,
    skip_auth: bool,
    poll_interval: Duration,
    sse_ttl: Duration,
}

impl DsState {
    pub(crate) fn new(ws: Arc<WsState>, broker: Arc<dyn Broker>) -> Self {
        let config = ws.config();
        Self {
            prefix: config.ds_path.trim_end_matches('/').to_owned(),
            skip_auth: config.ds_skip_auth,
            poll_interval: Duration::from_secs(config.ds_poll_interval),
            sse_ttl: Duration::from_secs(config.ds_sse_ttl),
            broker,
            ws,
        }
    }

    /// The route pattern: `<ds_path>/{*stream}`.
    pub(crate) fn route(&self) -> String {
        format!("{}/{{*stream}}", self.prefix)
    }
}

/// Answers one Durable Streams request.
pub(crate) async fn handle(
    State(state): State<Arc<DsState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let cors = cors_origin(&state, &headers);
    let mut response = match method {
        Method::OPTIONS => preflight(),
        Method::GET | Method::HEAD => match read(&state, peer, &method, &uri, &headers).await {
            Ok(response) => response,
            Err(error) => refuse(error, &uri),
        },
        _ => refuse(DsError::ReadOnly, &uri),
    };
    if let Some(origin) = cors {
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Stream-Next-Offset, Stream-Cursor, Stream-Up-To-Date"),
        );
    }
    response
}

fn refuse(error: DsError, uri: &Uri) -> Response {
    match error.status() {
        s if s.is_server_error() => tracing::warn!(path = uri.path(), %error, "Durable Streams read failed"),
        _ => tracing::debug!(path = uri.path(), %error, "Durable Streams read refused"),
    }
    error.into_response()
}

/// The `Access-Control-Allow-Origin` value for a request with an allowed `Origin`.
fn cors_origin(state: &DsState, headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    state.ws.origin_allowed(origin.to_str().ok()?).then(|| origin.clone())
}

fn preflight() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, HEAD, OPTIONS"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("*"));
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    response
}

async fn read(
    state: &Arc<DsState>,
    peer: SocketAddr,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response, DsError> {
    let request = ReadRequest::parse(&state.prefix, uri, headers)?;
    if state.ws.is_shutting_down() {
        return Err(DsError::ShuttingDown);
    }
    if !state.ws.origin_allowed_header(headers) {
        return Err(DsError::OriginNotAllowed);
    }
    let slot = state.ws.take_slot().map_err(|()| DsError::TooManyConnections)?;
    let reader = Reader::connect(state, peer, uri, headers, slot).await?;
    reader.authorize(&request)?;

    if *method == Method::HEAD {
        let tail = tail(&*state.broker, &request.stream).await?;
        let mut response = StatusCode::OK.into_response();
        let h = response.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        insert(h, NEXT_OFFSET, &tail);
        return Ok(response);
    }
    let cursor = next_cursor(request.cursor.as_deref(), crate::broker::unix_now());
    match request.live {
        Live::CatchUp => {
            let (entries, next) = backlog(&*state.broker, &request).await?;
            Ok(batch_response(&entries, &next, &cursor, request.offset == Offset::Now))
        }
        Live::LongPoll => {
            // Subscribed before the history is read, so nothing published in between is missed.
            let live = reader.subscribe(&request.stream);
            let (entries, next) = backlog(&*state.broker, &request).await?;
            if !entries.is_empty() {
                return Ok(batch_response(&entries, &next, &cursor, false));
            }
            let mut live = live;
            live.after = position_of(&next);
            let deadline = tokio::time::sleep(state.poll_interval);
            tokio::pin!(deadline);
            loop {
                let frames = tokio::select! {
                    frames = live.next_frames() => frames,
                    () = &mut deadline => None,
                };
                let Some(frames) = frames else {
                    // Timed out, or the server or a remote disconnect ended the reader: nothing new.
                    let mut response = StatusCode::NO_CONTENT.into_response();
                    let h = response.headers_mut();
                    insert(h, NEXT_OFFSET, &next);
                    h.insert(UP_TO_DATE, HeaderValue::from_static("true"));
                    insert(h, CURSOR, &cursor);
                    return Ok(response);
                };
                let entries = live.accept(frames);
                if let Some(last) = live.after.as_ref().filter(|_| !entries.is_empty()) {
                    let next = encode_offset(Some((last.0, &last.1)));
                    return Ok(batch_response(&entries, &next, &cursor, false));
                }
            }
        }
        Live::Sse => {
            let mut live = reader.subscribe(&request.stream);
            let (entries, next) = backlog(&*state.broker, &request).await?;
            live.after = position_of(&next);
            let mut first = BytesMut::new();
            if !entries.is_empty() {
                data_event(&mut first, &entries);
            }
            control_event(&mut first, &next, &cursor);
            let body = SseBody {
                live,
                cursor,
                first: Some(first.freeze()),
                deadline: Box::pin(tokio::time::sleep(state.sse_ttl)),
            };
            let mut response = Response::new(Body::from_stream(body));
            let h = response.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, no-cache, no-store, must-revalidate, max-age=0"),
            );
            h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            h.insert("x-accel-buffering", HeaderValue::from_static("no"));
            Ok(response)
        }
    }
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// The cursor of a live response: the current interval, or past the one the client echoed when that is not
/// behind (so a cursor never repeats for one client, as the protocol asks).
fn next_cursor(echoed: Option<&str>, now: u64) -> String {
    let current = now.saturating_sub(CURSOR_EPOCH) / CURSOR_INTERVAL;
    match echoed.and_then(|c| c.parse::<u64>().ok()) {
        Some(client) if client >= current => (client.saturating_add(1 + fastrand::u64(0..60))).to_string(),
        _ => current.to_string(),
    }
}

/// One message to hand out: its payload as JSON.
struct Entry {
    payload: Bytes,
}

/// The messages of the request's stream after its offset, and the offset to read from next.
async fn backlog(broker: &dyn Broker, request: &ReadRequest) -> Result<(Vec<Entry>, String), DsError> {
    let history = match &request.offset {
        Offset::Now => return Ok((Vec::new(), tail(broker, &request.stream).await?)),
        Offset::Start => broker.history_since(&request.stream, 0).await,
        Offset::After { offset, epoch } => broker.history_from(&request.stream, epoch, *offset).await,
    };
    let History { epoch, entries } = history.map_err(|error| match error {
        HistoryError::Broker(error) => DsError::Unavailable(error.to_string()),
        other => DsError::Gone(other),
    })?;
    let next = match (entries.last(), &request.offset) {
        (Some(last), _) => encode_offset(Some((last.offset, &epoch))),
        (None, Offset::After { offset, epoch }) => encode_offset(Some((*offset, epoch))),
        (None, _) => encode_offset(None),
    };
    let entries = entries.iter().map(|e| Entry { payload: protocol::broadcast_payload(&e.data) }).collect();
    Ok((entries, next))
}

/// The offset of the last message of `stream` (`0` when its history holds none).
async fn tail(broker: &dyn Broker, stream: &str) -> Result<String, DsError> {
    let History { epoch, entries } =
        broker.history_since(stream, 0).await.map_err(|e| DsError::Unavailable(e.to_string()))?;
    Ok(encode_offset(entries.last().map(|e| (e.offset, &*epoch))))
}

/// The position an offset text stands for; `None` for the start of a stream.
fn position_of(offset: &str) -> Option<(u64, String)> {
    match Offset::parse(offset) {
        Ok(Offset::After { offset, epoch }) => Some((offset, epoch)),
        _ => None,
    }
}

/// `[payload,payload,…]`
fn json_array(entries: &[Entry]) -> BytesMut {
    let mut body = BytesMut::with_capacity(2 + entries.iter().map(|e| e.payload.len() + 1).sum::<usize>());
    body.put_u8(b'[');
    for (i, entry) in entries.iter().enumerate() {
        if i > 0 {
            body.put_u8(b',');
        }
        body.put_slice(&entry.payload);
    }
    body.put_u8(b']');
    body
}

fn batch_response(entries: &[Entry], next: &str, cursor: &str, tail_only: bool) -> Response {
    let mut response = Response::new(Body::from(json_array(entries).freeze()));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // A read of the tail changes with every publication; a read of a given offset never does.
    let cache = if tail_only { "no-store" } else { "public, max-age=60, stale-while-revalidate=300" };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    insert(h, NEXT_OFFSET, next);
    h.insert(UP_TO_DATE, HeaderValue::from_static("true"));
    insert(h, CURSOR, cursor);
    response
}

/// `event: data` with the entries as one JSON array.
fn data_event(out: &mut BytesMut, entries: &[Entry]) {
    out.put_slice(b"event: data\ndata:");
    out.put_slice(&json_array(entries));
    out.put_slice(b"\n\n");
}

/// `event: control` with the next offset and cursor; every one ends a batch that reaches the end of the stream.
fn control_event(out: &mut BytesMut, next: &str, cursor: &str) {
    out.put_slice(b"event: control\ndata:{\"streamNextOffset\":");
    out.put_slice(protocol::json_string(next).as_bytes());
    out.put_slice(b",\"streamCursor\":");
    out.put_slice(protocol::json_string(cursor).as_bytes());
    out.put_slice(b",\"upToDate\":true}\n\n");
}

/// An authenticated reader: what a Disconnect call needs when it ends, and its place under `max_conn`.
struct Reader {
    ws: Arc<WsState>,
    client: Arc<ClientHandle>,
    env: Env,
    identifiers: Option<Arc<str>>,
    used_backend: bool,
    _slot: Option<ConnectionSlot>,
}

impl Reader {
    async fn connect(
        state: &DsState,
        peer: SocketAddr,
        uri: &Uri,
        headers: &HeaderMap,
        slot: Option<ConnectionSlot>,
    ) -> Result<Self, DsError> {
        let (env, token) = state.ws.request_env(peer, uri, headers);
        let client = state.ws.new_client(Protocol::ExtJson);
        let env = Env {
            url: env.url().to_owned(),
            headers: env.headers_map(),
            cstate: HashMap::new(),
            istate: HashMap::new(),
        };
        let mut reader =
            Self { ws: state.ws.clone(), client, env, identifiers: None, used_backend: false, _slot: slot };
        if state.skip_auth {
            return Ok(reader);
        }
        let ctx = CallContext { sid: reader.client.sid.clone() };
        let request = ConnectionRequest { env: Some(reader.env.clone()) };
        let deps = reader.ws.deps().clone();
        let routed = deps.controller.connect(&ctx, request, token.as_deref()).await;
        reader.used_backend = routed.via_backend;
        let response = routed.result.map_err(|e| DsError::AuthError(e.to_string()))?;
        match Status::try_from(response.status) {
            Ok(Status::Success) => {
                reader.identifiers = Some(response.identifiers.into());
                Ok(reader)
            }
            Ok(Status::Failure) => {
                Metrics::inc(&deps.metrics.failed_auths_total);
                tracing::debug!(sid = %reader.client.sid, reason = %response.error_msg, "Durable Streams reader rejected");
                Err(DsError::Unauthenticated)
            }
            _ => Err(DsError::AuthError(response.error_msg)),
        }
    }

    /// Checks the request's stream the way a `$pubsub` subscription is checked; a signed name must name it.
    fn authorize(&self, request: &ReadRequest) -> Result<(), DsError> {
        let identifier = request.identifier();
        let response = self
            .ws
            .deps()
            .controller
            .command_locally("subscribe", &identifier)
            .ok_or_else(|| DsError::Forbidden("not a stream subscription".into()))?;
        if response.status != Status::Success as i32 {
            return Err(DsError::Forbidden(response.error_msg));
        }
        match response.streams.first() {
            Some(stream) if *stream == request.stream => Ok(()),
            _ => Err(DsError::Forbidden("the signed stream name is for another stream".into())),
        }
    }

    /// Registers the reader with the hub on `stream`.
    fn subscribe(self, stream: &str) -> LiveReader {
        let stream: Arc<str> = stream.into();
        let identifier: Arc<str> = format!("ds:{stream}").into();
        let hub = &self.ws.deps().hub;
        hub.add_client(&self.client);
        if let Some(identifiers) = &self.identifiers {
            hub.identify(&self.client, identifiers);
        }
        if self.ws.is_shutting_down() {
            // Shutdown began after the request was admitted: its sweep over the clients may have missed this one.
            self.client.close(CloseRequest::with_disconnect_frame("server_restart", true, close_code::GOING_AWAY));
        }
        hub.subscribe(&stream, &identifier, &self.client);
        Metrics::up(&self.ws.deps().metrics.clients_num);
        let token = self.ws.tracker().token();
        LiveReader { client: self.client.clone(), reader: self, stream, identifier, after: None, _token: token }
    }
}

impl Drop for Reader {
    /// Runs Disconnect for a reader the backend authenticated, as for a WebSocket client that leaves.
    fn drop(&mut self) {
        let Some(identifiers) = self.identifiers.take() else { return };
        let deps = self.ws.deps().clone();
        let owed = match deps.disconnect_mode {
            DisconnectMode::Never => false,
            DisconnectMode::Always => true,
            DisconnectMode::Auto => self.used_backend,
        };
        if !owed || !deps.controller.has_backend() {
            return;
        }
        let request = DisconnectRequest {
            identifiers: identifiers.to_string(),
            subscriptions: Vec::new(),
            env: Some(std::mem::take(&mut self.env)),
        };
        let sid = self.client.sid.clone();
        self.ws.tracker().spawn(async move { deps.disconnects.push(sid, request).await });
    }
}

/// A reader registered with the hub (and counted in `clients_num`), receiving the broadcasts of its stream until
/// it is dropped.
struct LiveReader {
    client: Arc<ClientHandle>,
    reader: Reader,
    stream: Arc<str>,
    identifier: Arc<str>,
    /// The last position handed out; broadcasts at or before it (also in the backlog) are skipped.
    after: Option<(u64, String)>,
    /// Keeps shutdown waiting until the reader is gone.
    _token: tokio_util::task::task_tracker::TaskTrackerToken,
}

/// The parts of a broadcast frame of an extended-protocol client a reader uses.
#[derive(Deserialize)]
struct PositionedFrame<'a> {
    #[serde(borrow)]
    message: &'a serde_json::value::RawValue,
    #[serde(borrow, default)]
    epoch: Option<Cow<'a, str>>,
    #[serde(default)]
    offset: Option<u64>,
}

impl LiveReader {
    /// The frames queued since the last call; `None` once the reader is to end (shutdown, a remote disconnect,
    /// too slow).
    fn poll_frames(&self, cx: &mut Context<'_>) -> Poll<Option<std::collections::VecDeque<Bytes>>> {
        let client = &self.client;
        if client.poll_ready(cx).is_pending() {
            return Poll::Pending;
        }
        let drained = client.drain();
        match drained.close {
            Some(close) => {
                tracing::debug!(sid = %client.sid, reason = close.reason, "Durable Streams reader ended");
                Poll::Ready(None)
            }
            None => Poll::Ready(Some(drained.frames)),
        }
    }

    async fn next_frames(&mut self) -> Option<std::collections::VecDeque<Bytes>> {
        std::future::poll_fn(|cx| self.poll_frames(cx)).await
    }

    /// The broadcasts among `frames` that come after what was handed out; advances the position.
    fn accept(&mut self, frames: std::collections::VecDeque<Bytes>) -> Vec<Entry> {
        let mut entries = Vec::new();
        for frame in frames {
            // Only registered broadcasts have a place in the stream; the others (transient) are not readable.
            let Ok(parsed) = serde_json::from_slice::<PositionedFrame<'_>>(&frame) else { continue };
            let (Some(offset), Some(epoch)) = (parsed.offset, parsed.epoch) else { continue };
            if let Some((after, after_epoch)) = &self.after {
                if after_epoch.as_str() == epoch.as_ref() && offset <= *after {
                    continue;
                }
            }
            entries.push(Entry { payload: Bytes::copy_from_slice(parsed.message.get().as_bytes()) });
            self.after = Some((offset, epoch.into_owned()));
        }
        entries
    }
}

impl Drop for LiveReader {
    /// Leaves the hub; the reader's own drop then owes the Disconnect call.
    fn drop(&mut self) {
        let hub = &self.reader.ws.deps().hub;
        hub.unsubscribe(&self.stream, &self.identifier, self.client.id);
        hub.remove_client(self.client.id, self.reader.identifiers.as_deref());
        Metrics::down(&self.reader.ws.deps().metrics.clients_num);
    }
}

/// The body of an SSE read: the backlog, then each broadcast, until `ds_sse_ttl` or the reader is ended.
struct SseBody {
    live: LiveReader,
    cursor: String,
    first: Option<Bytes>,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Stream for SseBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        loop {
            if this.deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            let frames = match this.live.poll_frames(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Ready(Some(frames)) => frames,
            };
            let entries = this.live.accept(frames);
            let Some((offset, epoch)) = this.live.after.as_ref().filter(|_| !entries.is_empty()) else { continue };
            let next = encode_offset(Some((*offset, epoch)));
            let mut out = BytesMut::new();
            data_event(&mut out, &entries);
            control_event(&mut out, &next, &this.cursor);
            return Poll::Ready(Some(Ok(out.freeze())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_and_sort_as_text_within_an_epoch() {
        assert_eq!(encode_offset(None), "0");
        let nine = encode_offset(Some((9, "ab")));
        let ten = encode_offset(Some((10, "ab")));
        assert_eq!(ten, "0000000000000010::ab");
        assert!(nine < ten && "0" < nine.as_str());
        assert_eq!(Offset::parse(&ten).unwrap(), Offset::After { offset: 10, epoch: "ab".into() });
        assert_eq!(Offset::parse("10::ab").unwrap(), Offset::After { offset: 10, epoch: "ab".into() });
        for start in ["", "-1", "0"] {
            assert_eq!(Offset::parse(start).unwrap(), Offset::Start);
        }
        assert_eq!(Offset::parse("now").unwrap(), Offset::Now);
    }

    #[test]
    fn malformed_offsets_are_refused() {
        for bad in ["abc", "-2", "12", "12::", "::ep", "x::ep", "99999999999999999999999::ep", "1:ep", " 1::ep"] {
            assert!(matches!(Offset::parse(bad), Err(DsError::BadOffset(_))), "{bad}");
        }
        assert!(matches!(Offset::parse(&format!("1::{}", "e".repeat(65))), Err(DsError::BadOffset(_))));
    }

    fn parse(target: &str) -> Result<ReadRequest, DsError> {
        ReadRequest::parse("/ds", &target.parse().unwrap(), &HeaderMap::new())
    }

    #[test]
    fn requests_name_a_stream_a_mode_and_an_offset() {
        let r = parse("/ds/chat/room%2042?offset=-1&live=sse&signed=a%2Bb").unwrap();
        assert_eq!(
            (r.stream.as_str(), r.live, r.offset, r.signed.as_deref()),
            ("chat/room 42", Live::Sse, Offset::Start, Some("a+b"))
        );
        assert_eq!(parse("/ds/a+b").unwrap().stream, "a+b");
        assert!(matches!(parse("/ds/"), Err(DsError::MissingStream(_))));
        assert!(matches!(parse("/ds/x?live=poll"), Err(DsError::BadLiveMode(_))));
        assert!(matches!(parse("/ds/x?live=long-poll"), Err(DsError::MissingOffset("long-poll"))));
        assert!(matches!(parse("/ds/x?live=sse"), Err(DsError::MissingOffset("sse"))));
        assert!(matches!(parse("/ds/%FF"), Err(DsError::BadStreamName)));
        assert_eq!(parse("/ds/x").unwrap().offset, Offset::Start);
    }

    #[test]
    fn the_identifier_is_a_pubsub_subscription_with_the_signed_name_when_given() {
        let mut r = parse("/ds/a%22b").unwrap();
        assert_eq!(r.identifier(), r#"{"channel":"$pubsub","stream_name":"a\"b"}"#);
        r.signed = Some("s--1".into());
        assert_eq!(r.identifier(), r#"{"channel":"$pubsub","stream_name":"a\"b","signed_stream_name":"s--1"}"#);
    }

    #[test]
    fn cursors_move_past_the_one_a_client_echoes() {
        let now = CURSOR_EPOCH + 100 * CURSOR_INTERVAL;
        assert_eq!(next_cursor(None, now), "100");
        assert_eq!(next_cursor(Some("50"), now), "100");
        let next: u64 = next_cursor(Some("100"), now).parse().unwrap();
        assert!((101..=160).contains(&next));
        assert_eq!(next_cursor(Some("junk"), now), "100");
    }

    #[test]
    fn events_are_data_then_control() {
        let mut out = BytesMut::new();
        let entries =
            [Entry { payload: Bytes::from_static(b"{\"n\":1}") }, Entry { payload: Bytes::from_static(b"\"x\"") }];
        data_event(&mut out, &entries);
        control_event(&mut out, "0000000000000002::ep", "7");
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "event: data\ndata:[{\"n\":1},\"x\"]\n\nevent: control\ndata:{\"streamNextOffset\":\"0000000000000002::ep\",\"streamCursor\":\"7\",\"upToDate\":true}\n\n"
        );
    }
}
