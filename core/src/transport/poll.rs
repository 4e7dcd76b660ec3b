//! Long polling (`poll`, at `poll_path`), AnyCable Pro's HTTP transport as its docs/long_polling.md describes it:
//! every request is a `POST` whose body holds client commands as JSON lines; the answer holds the frames the
//! server has for the client, as JSON lines. The first request (without `X-Anycable-Poll-ID`) authenticates
//! like a WebSocket connection and is answered with the poll session's id in `X-Anycable-Poll-ID` (401 when
//! rejected); each later request brings that id and is answered once there is something to send (then after
//! `poll_flush_interval`, to gather more) or after `poll_interval`. A session that is not polled for
//! `poll_keepalive_timeout` ends (its Disconnect call runs) and its id is answered 401 from then on.
//!
//! Each poll session is one task of the server's that owns the session, runs its commands in order and keeps
//! the frames waiting for the next poll (at most `client_queue_size`, beyond which the client is too slow).
//! Sessions are kept on the node that created them (sticky sessions are needed behind a load balancer).
//! Pings are not sent to polling clients: each poll is their liveness.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::sse::{Refusal, new_client, preflight, read_commands, request_origin, with_cors};
use super::ws::{ConnectionSlot, WsState};
use crate::client::{ClientHandle, CloseRequest, TOO_SLOW, close_code, generate_sid};
use crate::metrics::Metrics;
use crate::protocol::ClientCommand;
use crate::session::{PendingCall, Session};

/// The header carrying a poll session's id, both ways.
pub(crate) const POLL_ID: HeaderName = HeaderName::from_static("x-anycable-poll-id");

/// What the long-polling endpoint shares: the connection state, and the live poll sessions by id.
pub(crate) struct PollState {
    ws: Arc<WsState>,
    sessions: Mutex<HashMap<Arc<str>, mpsc::Sender<Poll>>>,
    /// `poll_interval`, `poll_flush_interval`, `poll_keepalive_timeout`.
    wait: Duration,
    flush: Duration,
    keepalive: Duration,
}

impl PollState {
    pub(crate) fn new(ws: Arc<WsState>) -> Self {
        let config = &ws.config;
        Self {
            wait: Duration::from_secs(config.poll_interval),
            flush: Duration::from_millis(config.poll_flush_interval),
            keepalive: Duration::from_secs(config.poll_keepalive_timeout),
            sessions: Mutex::default(),
            ws,
        }
    }
}

/// One poll request handed to its session's task.
struct Poll {
    commands: Vec<ClientCommand>,
    reply: oneshot::Sender<Reply>,
}

/// The answer to a poll.
struct Reply {
    frames: Vec<Bytes>,
    /// The connection was rejected (401).
    rejected: bool,
}

/// Serves `poll_path`.
pub(crate) async fn handle(
    State(state): State<Arc<PollState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let origin = match request_origin(&state.ws, &headers, "poll") {
        Ok(origin) => origin,
        Err(refused) => return refused,
    };
    let mut response = match method {
        Method::OPTIONS => preflight(&headers),
        Method::POST => match poll(&state, peer, &uri, &headers, body).await {
            Ok(response) => response,
            Err(refusal) => refusal.into_response(),
        },
        _ => Refusal(StatusCode::METHOD_NOT_ALLOWED, "long polling takes POST".into()).into_response(),
    };
    response
        .headers_mut()
        .insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("X-Anycable-Poll-ID"));
    with_cors(response, origin)
}

async fn poll(
    state: &Arc<PollState>,
    peer: SocketAddr,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    let commands = read_commands(body, state.ws.config.poll_max_request_size).await?;
    let given = headers.get(POLL_ID).map(|v| v.to_str().unwrap_or_default());
    let (id, sender) = match given {
        Some(id) => {
            let sender = state.sessions.lock().get(id).cloned();
            let Some(sender) = sender else {
                tracing::debug!(poll_id = id, "poll for an unknown or expired session");
                return Err(Refusal(StatusCode::UNAUTHORIZED, "unknown or expired poll session".into()));
            };
            (Arc::from(id), sender)
        }
        None => open(state, peer, uri, headers)?,
    };
    let (reply, answer) = oneshot::channel();
    let expired = || Refusal(StatusCode::UNAUTHORIZED, "unknown or expired poll session".into());
    sender.send(Poll { commands, reply }).await.map_err(|_| expired())?;
    let Reply { frames, rejected } = answer.await.map_err(|_| expired())?;
    let mut body = Vec::with_capacity(frames.iter().map(|f| f.len() + 1).sum());
    for frame in frames {
        // Raw line breaks in a JSON text can only be whitespace (those in strings are escaped): each frame
        // stays one line.
        body.extend(frame.iter().map(|b| if matches!(b, b'\n' | b'\r') { b' ' } else { *b }));
        body.push(b'\n');
    }
    let status = if rejected { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
    let mut response = (status, body).into_response();
    let out = response.headers_mut();
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/jsonl; charset=utf-8"));
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if !rejected {
        if let Ok(value) = HeaderValue::from_str(&id) {
            out.insert(POLL_ID, value);
        }
    }
    Ok(response)
}

/// Starts a poll session: its client (counted in `max_conn`) and the task that drives it.
fn open(
    state: &Arc<PollState>,
    peer: SocketAddr,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<(Arc<str>, mpsc::Sender<Poll>), Refusal> {
    let ws = &state.ws;
    if ws.shutdown.is_cancelled() {
        return Err(Refusal(StatusCode::SERVICE_UNAVAILABLE, "server is shutting down".into()));
    }
    let slot = match ws.config.max_conn {
        0 => None,
        max => match ConnectionSlot::take(&ws.connections, max) {
            Some(slot) => Some(slot),
            None => {
                tracing::warn!(max_conn = max, "poll session refused: max_conn reached");
                return Err(Refusal(StatusCode::SERVICE_UNAVAILABLE, "too many connections: max_conn reached".into()));
            }
        },
    };
    let (client, env, token) = new_client(ws, peer, uri, headers);
    // Two session ids' worth of randomness: the id is all a poll needs to read a session's frames.
    let id: Arc<str> = format!("{}{}", generate_sid(), generate_sid()).into();
    let (sender, polls) = mpsc::channel(1);
    state.sessions.lock().insert(id.clone(), sender.clone());
    let deps = ws.deps.clone();
    Metrics::up(&deps.metrics.clients_num);
    Metrics::inc(&deps.metrics.clients_total);
    deps.hub.add_client(&client);
    if ws.shutdown.is_cancelled() {
        client.close(CloseRequest::with_disconnect_frame("server_restart", true, close_code::GOING_AWAY));
    }
    let mut session = Session::new(client.clone(), deps, env);
    let pending = session.start(token, None);
    let task = PollTask {
        state: state.clone(),
        id: id.clone(),
        client,
        session,
        pending,
        queued: VecDeque::new(),
        mailbox: Vec::new(),
        closed: false,
    };
    ws.tracker.spawn(task.run(polls, slot));
    Ok((id, sender))
}

/// The task of one poll session.
struct PollTask {
    state: Arc<PollState>,
    id: Arc<str>,
    client: Arc<ClientHandle>,
    session: Session,
    pending: Option<PendingCall>,
    /// Commands waiting for the one in flight.
    queued: VecDeque<ClientCommand>,
    /// Frames waiting for the next poll.
    mailbox: Vec<Bytes>,
    /// The close was taken from the queue (its frame is in the mailbox): the session ends after the next answer.
    closed: bool,
}

impl PollTask {
    async fn run(mut self, mut polls: mpsc::Receiver<Poll>, slot: Option<ConnectionSlot>) {
        let metrics = self.session_metrics();
        // The poll waiting for an answer, with the time it must be answered by.
        let mut waiting: Option<(oneshot::Sender<Reply>, Instant)> = None;
        let mut flush_at: Option<Instant> = None;
        let mut expires_at = Instant::now() + self.state.keepalive;
        loop {
            // The next command starts once Connect is done and the previous command is answered.
            if self.pending.is_none() && self.client.is_welcomed() && !self.client.is_closing() {
                if let Some(command) = self.queued.pop_front() {
                    self.pending = self.session.start_command(command);
                    continue;
                }
            }
            let settled = self.pending.is_none() && (self.queued.is_empty() || self.client.is_closing());
            if let Some((_, deadline)) = &waiting {
                let now = Instant::now();
                let due =
                    (self.closed && settled) || (settled && flush_at.is_some_and(|at| at <= now)) || *deadline <= now;
                if due {
                    let (reply, _) = waiting.take().unwrap_or_else(|| unreachable!("checked above"));
                    let rejected = self.closed && !self.client.is_welcomed();
                    let frames = std::mem::take(&mut self.mailbox);
                    if let Err(unsent) = reply.send(Reply { frames, rejected }) {
                        // The poll was abandoned: its frames wait for the next one.
                        self.mailbox = unsent.frames;
                    } else if self.closed {
                        break;
                    }
                    flush_at = None;
                    expires_at = Instant::now() + self.state.keepalive;
                    continue;
                }
            } else if self.closed && self.state.ws.shutdown.is_cancelled() {
                // No new poll can arrive once the server stops accepting: nothing is gained by waiting for one.
                break;
            } else if expires_at <= Instant::now() {
                tracing::debug!(sid = %self.client.sid, "poll session not polled within poll_keepalive_timeout; ended");
                break;
            }
            let wake_at = match &waiting {
                Some((_, deadline)) => flush_at.map_or(*deadline, |at| at.min(*deadline)),
                None => expires_at,
            };
            let (pending, client, closed) = (&mut self.pending, &self.client, self.closed);
            tokio::select! {
                outcome = async {
                    match pending.as_mut() {
                        Some(call) => call.as_mut().await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.pending = self.session.finish(outcome);
                }
                poll = polls.recv(), if waiting.is_none() => {
                    let Some(Poll { commands, reply }) = poll else { break };
                    self.queued.extend(commands);
                    waiting = Some((reply, Instant::now() + self.state.wait));
                    if !self.mailbox.is_empty() {
                        flush_at = Some(Instant::now());
                    }
                }
                () = std::future::poll_fn(|cx| client.poll_ready(cx)), if !closed => {
                    let drained = self.client.drain();
                    let frames = self.session.outbound(drained.frames);
                    self.mailbox.extend(frames.into_iter().filter(|f| !f.starts_with(br#"{"type":"ping""#)));
                    if let Some(close) = drained.close {
                        if close.reason == TOO_SLOW {
                            Metrics::inc(&metrics.disconnected_slow_clients_total);
                        }
                        self.mailbox.extend(close.frame);
                        self.closed = true;
                    } else if self.mailbox.len() > self.client.capacity() {
                        // Nobody polls fast enough to take what arrives: the same rule as a full queue.
                        self.mailbox.clear();
                        self.client.close(CloseRequest::with_disconnect_frame(TOO_SLOW, true, close_code::NORMAL));
                    }
                    if flush_at.is_none() && !self.mailbox.is_empty() {
                        flush_at = Some(Instant::now() + self.state.flush);
                    }
                }
                () = tokio::time::sleep_until(wake_at) => {}
            }
        }
        self.end(slot, metrics).await;
    }

    fn session_metrics(&self) -> Arc<Metrics> {
        self.state.ws.deps.metrics.clone()
    }

    async fn end(mut self, slot: Option<ConnectionSlot>, metrics: Arc<Metrics>) {
        self.state.sessions.lock().remove(&self.id);
        if let Some(call) = self.pending.take() {
            let _ = self.session.finish(call.await);
        }
        self.client.close(CloseRequest { frame: None, code: close_code::NORMAL, reason: "closed" });
        Metrics::down(&metrics.clients_num);
        self.session.end().await;
        drop(slot);
    }
}
