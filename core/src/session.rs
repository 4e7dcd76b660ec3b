//! One client's session: identifiers, connection state (cstate), subscriptions with their channel state
//! (istate) and streams, and the protocol rules that apply handler answers to them.
//!
//! A session is owned by its connection task and mutated only there, one command at a time, so there is
//! no lock on session state. It builds each handler request with exactly the state that call needs, and
//! merges what comes back: a returned key with a non-empty value sets it, an empty value deletes it.
//! It never reads or writes the socket: frames go out through the client's queue.
//!
//! With a broker, extended-protocol sessions are also kept in the broker's session cache (committed after
//! every change, kept `sessions_ttl` after the connection ends) and restored from it by a reconnecting
//! client's previous sid, without any handler call; their history requests are replayed through the
//! connection's catch-up (`catchup.rs`).
//!
//! Presence commands (`join`, `leave`, `presence`, and the `presence` of a subscribe or of a Command answer) go to
//! the node's [`Presence`] for the subscription's presence stream (istate `$p`); the member a subscription joined
//! as is kept with it, so a restored session takes its records over.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::broker::{Broker, History, HistoryError};
use crate::catchup::{self, Catchup};
use crate::client::{ClientHandle, CloseRequest, StreamMessage, TOO_SLOW, close_code};
use crate::config::DisconnectMode;
use crate::disconnect::DisconnectQueue;
use crate::handler::controller::{Controller, Routed};
use crate::handler::streams::{WHISPER_STREAM_STATE, WhisperBudget};
use crate::handler::{
    CallContext, CommandMessage, CommandResponse, ConnectionRequest, ConnectionResponse, DisconnectRequest, Env,
    Status, status_name,
};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::periodic::{PERIODIC_COMMAND, PeriodicTimers};
use crate::presence::{Member, PRESENCE_STREAM_STATE, Presence, PresenceError, PresenceInfo};
use crate::protocol::presence::PresenceJoin;
use crate::protocol::{self, ClientCommand, HistoryRequest};
use crate::rate_limit::{CommandBudget, CommandRate, CommandVerdict};
use crate::subscriptions::{StateMap, Subscription, Subscriptions};

/// What every session shares.
pub(crate) struct SessionDeps {
    pub hub: Arc<Hub>,
    pub controller: Arc<Controller>,
    pub metrics: Arc<Metrics>,
    pub disconnects: DisconnectQueue,
    pub disconnect_mode: DisconnectMode,
    /// Most subscriptions one connection may hold (`max_subscriptions`); 0 means no limit.
    pub max_subscriptions: usize,
    /// Where whispers enter the broadcast path (see `Server::start`).
    pub whispers: tokio::sync::mpsc::Sender<crate::broadcast::Publication>,
    /// `command_rate_limit` / `command_rate_burst`; `None` when commands are not limited.
    pub command_rate: Option<CommandRate>,
    /// Stream history and the session cache (`broker`); `None` without one.
    pub broker: Option<Arc<dyn Broker>>,
    /// Whether sessions are cached for recovery (a broker, and `sessions_ttl` > 0).
    pub sessions_cache: bool,
    /// Presence sets (`None` without a broker that keeps them).
    pub presence: Option<Arc<Presence>>,
}

/// How long the streams of a restored session are held for the client's history request before their live
/// broadcasts are released as they are. The extended client asks at once, right after the welcome.
const RESTORE_HOLD: std::time::Duration = std::time::Duration::from_secs(5);

/// The request a connection was opened with, forwarded to every handler call.
///
/// Every idle connection holds one and a call is rare in comparison, so it is one allocation: the URL, then
/// each header's name and value, each ended by a newline, which none of them can contain (parsed HTTP
/// header values and request targets have no control characters). Calls turn it into the request map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestEnv {
    text: Box<str>,
}

impl RequestEnv {
    /// The env of a request to `url` with the given forwarded headers. Newlines (not possible in parsed HTTP)
    /// are dropped rather than allowed to shift the entries after them.
    pub fn new(url: &str, headers: &[(impl AsRef<str>, impl AsRef<str>)]) -> Self {
        let parts = || {
            let headers = headers.iter().flat_map(|(name, value)| [name.as_ref(), value.as_ref()]);
            std::iter::once(url).chain(headers)
        };
        let mut text = String::with_capacity(parts().map(|part| part.len() + 1).sum());
        for part in parts() {
            if part.contains('\n') {
                text.extend(part.chars().filter(|c| *c != '\n'));
            } else {
                text.push_str(part);
            }
            text.push('\n');
        }
        Self { text: text.into_boxed_str() }
    }

    /// The URL as the client used it.
    pub fn url(&self) -> &str {
        self.text.split('\n').next().unwrap_or("")
    }

    /// The forwarded headers (lower-case names) in the order they were given.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut parts = self.text.split_terminator('\n').skip(1);
        std::iter::from_fn(move || Some((parts.next()?, parts.next()?)))
    }

    /// The headers as the map handler requests carry.
    pub fn headers_map(&self) -> HashMap<String, String> {
        self.headers().map(|(name, value)| (name.to_owned(), value.to_owned())).collect()
    }
}

/// A handler call in flight, resolved by the connection task.
pub(crate) type PendingCall = Pin<Box<dyn Future<Output = CallOutcome> + Send>>;

/// A finished handler call or broker request.
pub(crate) enum CallOutcome {
    Connect(Routed<ConnectionResponse>),
    Command {
        kind: CommandKind,
        identifier: Arc<str>,
        routed: Routed<CommandResponse>,
        /// A subscribe's history request, replayed once it is confirmed.
        history: Option<Box<HistoryRequest>>,
        /// A subscribe's presence, joined once it is confirmed.
        presence: Option<Box<PresenceJoin>>,
    },
    /// The session cache's answer for the previous sid a client brought.
    Restore {
        /// The sid the client brought.
        previous: String,
        snapshot: Option<Vec<u8>>,
        token: Option<String>,
    },
    /// The history of a subscription's streams.
    History {
        identifier: Arc<str>,
        results: Vec<(Arc<str>, Result<History, HistoryError>)>,
    },
    /// The session was written to the cache.
    Committed,
    /// A presence change of a subscription: `joined` is the member it joined as, `None` for a leave.
    Presence {
        identifier: Arc<str>,
        joined: Option<Member>,
        result: Result<(), PresenceError>,
    },
    /// The presence set a `presence` command asked for.
    PresenceInfo {
        identifier: Arc<str>,
        result: Result<PresenceInfo, PresenceError>,
    },
    /// Two calls that ran one after the other.
    Both(Box<CallOutcome>, Box<CallOutcome>),
}

/// Runs `first`, then `then`; their outcomes are applied in that order.
fn both(first: Option<PendingCall>, then: Option<PendingCall>) -> Option<PendingCall> {
    match (first, then) {
        (Some(first), Some(then)) => Some(Box::pin(async move {
            let first = first.await;
            CallOutcome::Both(Box::new(first), Box::new(then.await))
        })),
        (first, then) => first.or(then),
    }
}

/// What a presence command asks.
enum PresenceRequest {
    Join(PresenceJoin),
    Leave,
    Info { records: bool },
}

impl PresenceRequest {
    fn command(&self) -> &'static str {
        match self {
            Self::Join(_) => "join",
            Self::Leave => "leave",
            Self::Info { .. } => "presence",
        }
    }
}

/// What the session cache keeps of a session: everything a restore needs, nothing else.
#[derive(Serialize)]
struct SnapshotRef<'a> {
    identifiers: &'a str,
    cstate: &'a StateMap,
    subscriptions: Vec<SubscriptionRef<'a>>,
    used_backend: bool,
}

#[derive(Serialize)]
struct SubscriptionRef<'a> {
    identifier: &'a str,
    streams: Vec<&'a str>,
    istate: &'a StateMap,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence: Option<&'a Member>,
}

#[derive(Deserialize)]
struct Snapshot {
    identifiers: String,
    cstate: HashMap<String, String>,
    subscriptions: Vec<CachedSubscription>,
    used_backend: bool,
}

#[derive(Deserialize)]
struct CachedSubscription {
    identifier: String,
    streams: Vec<String>,
    istate: HashMap<String, String>,
    #[serde(default)]
    presence: Option<Member>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommandKind {
    Subscribe,
    Unsubscribe,
    Message,
    /// A periodic timer of the subscription is due (see `periodic.rs`).
    Periodic,
    /// A publication for a subscription that handles its stream's broadcasts itself (a stream callback).
    Stream,
}

impl CommandKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Subscribe => "subscribe",
            Self::Unsubscribe => "unsubscribe",
            Self::Message => "message",
            Self::Periodic => PERIODIC_COMMAND,
            Self::Stream => STREAM_COMMAND,
        }
    }
}

/// State of one connected client.
pub(crate) struct Session {
    client: Arc<ClientHandle>,
    deps: Arc<SessionDeps>,
    env: RequestEnv,
    identifiers: Option<Arc<str>>,
    cstate: StateMap,
    subscriptions: Subscriptions,
    used_backend: bool,
    /// Set once the connection was told about `max_subscriptions`, so a client that keeps trying is logged once.
    warned_subscription_limit: bool,
    /// What few connections ever need, in one allocation made on first use (an idle connection's task holds
    /// the session, so every pointer here is paid by every connection).
    rare: Option<Box<Rare>>,
}

/// The parts of a session most connections never use; each is allocated on its own when first needed.
#[derive(Default)]
struct Rare {
    /// Allocated on the first whisper: most clients never whisper.
    whisper_budget: Option<Box<WhisperBudget>>,
    /// Allocated on the first command when commands are limited, so idle connections do not pay for it.
    command_budget: Option<Box<CommandBudget>>,
    /// Streams whose history is being replayed (or awaited after a restore); only while there are any.
    catchup: Option<Box<Catchup>>,
    /// Periodic timers of subscriptions whose handler asked for them; only while there are any.
    timers: Option<Box<PeriodicTimers>>,
    /// Publications waiting for their `stream` handler call (subscriptions with stream callbacks); only while
    /// there are any.
    stream_messages: Option<Box<std::collections::VecDeque<StreamMessage>>>,
    /// Allocated on the first presence command: most clients never send one.
    presence_budget: Option<Box<crate::presence::PresenceBudget>>,
}

impl Rare {
    /// The catch-up under way, if any. Takes the session's field rather than the session, so the rest of the
    /// session stays free to borrow.
    fn catchup(rare: &mut Option<Box<Rare>>) -> Option<&mut Catchup> {
        rare.as_mut().and_then(|r| r.catchup.as_deref_mut())
    }

    fn is_empty(&self) -> bool {
        self.whisper_budget.is_none()
            && self.command_budget.is_none()
            && self.catchup.is_none()
            && self.timers.is_none()
            && self.stream_messages.is_none()
            && self.presence_budget.is_none()
    }
}

/// The command a subscription's stream callback runs as: data is `{"stream": name, "data": payload}`.
pub const STREAM_COMMAND: &str = "stream";

impl Session {
    pub(crate) fn new(client: Arc<ClientHandle>, deps: Arc<SessionDeps>, env: RequestEnv) -> Self {
        Self {
            client,
            deps,
            env,
            identifiers: None,
            cstate: StateMap::default(),
            subscriptions: Subscriptions::default(),
            used_backend: false,
            warned_subscription_limit: false,
            rare: None,
        }
    }

    /// The client this session belongs to.
    pub(crate) fn client(&self) -> &Arc<ClientHandle> {
        &self.client
    }

    pub(crate) fn deps(&self) -> &Arc<SessionDeps> {
        &self.deps
    }

    /// Clears one of the rarely used parts; the allocation goes with the last of them.
    fn clear_rare(&mut self, clear: impl FnOnce(&mut Rare)) {
        if let Some(rare) = &mut self.rare {
            clear(rare);
            if rare.is_empty() {
                self.rare = None;
            }
        }
    }

    fn call_context(&self) -> CallContext {
        CallContext { sid: self.client.sid.clone() }
    }

    fn request_env(&self, istate: HashMap<String, String>) -> Env {
        Env { url: self.env.url().to_owned(), headers: self.env.headers_map(), cstate: self.cstate.to_map(), istate }
    }

    /// Whether the client holds a subscription to `identifier`: how a transport that subscribes on the client's
    /// behalf (Server-Sent Events) learns the answer.
    pub(crate) fn is_subscribed(&self, identifier: &str) -> bool {
        self.subscriptions.get(identifier).is_some()
    }

    /// Whether this session is kept in the session cache.
    fn cached(&self) -> bool {
        self.deps.sessions_cache && self.client.protocol.is_extended()
    }

    /// Starts a connection: by restoring the session `previous_sid` from the cache when the client brought one
    /// (extended protocol, with a session cache), else by [`Session::start_connect`].
    pub(crate) fn start(&mut self, token: Option<String>, previous_sid: Option<String>) -> Option<PendingCall> {
        let broker = self.deps.broker.clone().filter(|_| self.cached());
        match (broker, previous_sid) {
            (Some(broker), Some(previous)) => Some(Box::pin(async move {
                let snapshot = match broker.restore_session(&previous).await {
                    Ok(snapshot) => snapshot,
                    Err(error) => {
                        tracing::warn!(%error, "session cache unavailable: connecting without restoring");
                        None
                    }
                };
                CallOutcome::Restore { previous, snapshot, token }
            })),
            _ => self.start_connect(token),
        }
    }

    /// Runs Connect: at once when the standalone rules answer it (`None`), otherwise by starting the backend
    /// call, returned for the connection task to drive. `token` is the JWT the client brought, if any; it
    /// lives only until Connect.
    pub(crate) fn start_connect(&mut self, token: Option<String>) -> Option<PendingCall> {
        let ctx = self.call_context();
        if let Some(response) = self.deps.controller.connect_locally(&ctx, token.as_deref()) {
            self.finish_connect(Routed { result: Ok(response), via_backend: false });
            return None;
        }
        let controller = self.deps.controller.clone();
        // No state exists before Connect: the env carries the URL and headers only.
        let request = ConnectionRequest { env: Some(self.request_env(HashMap::new())) };
        Some(Box::pin(async move { CallOutcome::Connect(controller.connect_via_backend(&ctx, request).await) }))
    }

    /// Runs a client command: at once when the server answers it itself or refuses it (logged), otherwise by
    /// starting the handler call, returned for the connection task to drive.
    pub(crate) fn start_command(&mut self, command: ClientCommand) -> Option<PendingCall> {
        let (mut history, mut presence) = (None, None);
        let (kind, identifier, data) = match command {
            ClientCommand::Subscribe { identifier, history: requested, presence: joining } => {
                history = requested.map(Box::new);
                presence = joining.map(Box::new);
                (CommandKind::Subscribe, identifier, String::new())
            }
            ClientCommand::Join { identifier, presence } => {
                return self.start_presence(identifier, PresenceRequest::Join(presence));
            }
            ClientCommand::Leave { identifier } => return self.start_presence(identifier, PresenceRequest::Leave),
            ClientCommand::Presence { identifier, records } => {
                return self.start_presence(identifier, PresenceRequest::Info { records });
            }
            ClientCommand::History { identifier, history } => return self.start_history(&identifier, history),
            ClientCommand::Unsubscribe { identifier } => (CommandKind::Unsubscribe, identifier, String::new()),
            ClientCommand::Message { identifier, data } => (CommandKind::Message, identifier, data),
            ClientCommand::Pong => return None,
            ClientCommand::Whisper { identifier, data } => {
                self.whisper(&identifier, data);
                return None;
            }
        };
        // Counted before anything else about the command is checked: a client flooding commands that would be
        // refused anyway still costs a log line each.
        if !self.within_command_rate(kind, &identifier) {
            return None;
        }
        let existing = self.subscriptions.get_key_value(identifier.as_str());
        let istate = match (kind, existing) {
            (CommandKind::Subscribe, Some(_)) => {
                self.refuse(kind.as_str(), &identifier, "already subscribed");
                return None;
            }
            (CommandKind::Subscribe, None) if self.at_subscription_limit() => {
                self.reject_over_limit(&identifier);
                return None;
            }
            (CommandKind::Subscribe, None) => HashMap::new(),
            (_, None) => {
                self.refuse(kind.as_str(), &identifier, "unknown subscription");
                return None;
            }
            (_, Some((_, sub))) => sub.istate.to_map(),
        };
        // Share the identifier with the subscription map when we already hold it.
        let identifier: Arc<str> = existing.map(|(k, _)| k.clone()).unwrap_or_else(|| identifier.into());
        if let Some(response) = self.deps.controller.command_locally(kind.as_str(), &identifier) {
            let routed = Routed { result: Ok(response), via_backend: false };
            return self.finish_command(kind, identifier, routed, history, presence);
        }
        Some(self.call_command(kind, identifier, data, istate, history, presence))
    }

    /// Polls the session's periodic timers: the subscription and timer index of one that is due. The connection
    /// task polls it only while no call is in flight.
    pub(crate) fn poll_timer(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<(Arc<str>, u32)> {
        match self.rare.as_mut().and_then(|r| r.timers.as_mut()) {
            Some(timers) => timers.poll_due(cx),
            None => std::task::Poll::Pending,
        }
    }

    /// Runs one tick of a subscription's periodic timer: a `periodic` command with the timer's index as data.
    pub(crate) fn start_tick(&mut self, identifier: Arc<str>, index: u32) -> Option<PendingCall> {
        let istate = self.subscriptions.get(&*identifier)?.istate.to_map();
        Some(self.call_command(CommandKind::Periodic, identifier, index.to_string(), istate, None, None))
    }

    /// Takes publications for stream callbacks off the client's queue. More waiting than the client's queue holds
    /// means the handler cannot keep up with the stream: the client is then too slow.
    pub(crate) fn queue_stream_messages(&mut self, messages: std::collections::VecDeque<StreamMessage>) {
        let queue = self.rare.get_or_insert_default().stream_messages.get_or_insert_default();
        queue.extend(messages);
        if queue.len() > self.client.capacity() {
            self.clear_rare(|r| r.stream_messages = None);
            tracing::info!(sid = %self.client.sid, "stream callbacks cannot keep up with their streams; disconnecting");
            self.client.close(CloseRequest::with_disconnect_frame(TOO_SLOW, true, close_code::NORMAL));
        }
    }

    pub(crate) fn has_stream_messages(&self) -> bool {
        self.rare.as_ref().is_some_and(|r| r.stream_messages.is_some())
    }

    /// Runs the stream callback of the next waiting publication, unless its subscription stopped streaming it.
    pub(crate) fn start_stream_message(&mut self) -> Option<PendingCall> {
        let queue = self.rare.as_mut().and_then(|r| r.stream_messages.as_mut())?;
        let message = queue.pop_front()?;
        if queue.is_empty() {
            self.clear_rare(|r| r.stream_messages = None);
        }
        let sub = self.subscriptions.get(&*message.identifier)?;
        if !sub.streams.iter().any(|stream| **stream == *message.stream) {
            return None;
        }
        let istate = sub.istate.to_map();
        let data = serde_json::json!({"stream": &*message.stream, "data": &*message.data}).to_string();
        Some(self.call_command(CommandKind::Stream, message.identifier, data, istate, None, None))
    }

    /// The handler call of a command, with the connection's state and this subscription's istate.
    fn call_command(
        &self,
        kind: CommandKind,
        identifier: Arc<str>,
        data: String,
        istate: HashMap<String, String>,
        history: Option<Box<HistoryRequest>>,
        presence: Option<Box<PresenceJoin>>,
    ) -> PendingCall {
        let request = CommandMessage {
            command: kind.as_str().into(),
            identifier: identifier.to_string(),
            connection_identifiers: self.identifiers.as_deref().unwrap_or_default().to_owned(),
            data,
            env: Some(self.request_env(istate)),
        };
        let controller = self.deps.controller.clone();
        let ctx = self.call_context();
        Box::pin(async move {
            let routed = controller.command_via_backend(&ctx, request).await;
            CallOutcome::Command { kind, identifier, routed, history, presence }
        })
    }

    /// Runs a `history` command: replays what the client missed on a subscription's streams, holding their
    /// live broadcasts meanwhile.
    fn start_history(&mut self, identifier: &str, request: HistoryRequest) -> Option<PendingCall> {
        let Some((identifier, sub)) = self.subscriptions.get_key_value(identifier) else {
            self.refuse("history", identifier, "unknown subscription");
            return None;
        };
        let (identifier, streams) = (identifier.clone(), sub.streams.to_vec());
        if streams.iter().any(|s| {
            self.rare.as_ref().and_then(|r| r.catchup.as_ref()).is_some_and(|c| c.is_held(s) && !c.awaits_replay(s))
        }) {
            self.refuse("history", &identifier, "a replay of this subscription is under way");
            return None;
        }
        self.fetch_history(identifier, streams, request)
    }

    /// Holds `streams` and starts fetching their history; answers `reject_history` at once without a broker.
    fn fetch_history(
        &mut self,
        identifier: Arc<str>,
        streams: Vec<Arc<str>>,
        request: HistoryRequest,
    ) -> Option<PendingCall> {
        let Some(broker) = self.deps.broker.clone() else {
            tracing::debug!(sid = %self.client.sid, %identifier, "history asked for without a broker");
            self.client.send(protocol::reject_history_frame(&identifier));
            return None;
        };
        let catchup = self.rare.get_or_insert_default().catchup.get_or_insert_default();
        for stream in &streams {
            catchup.hold(stream, None);
        }
        Some(Box::pin(async move {
            let mut results = Vec::with_capacity(streams.len());
            for stream in streams {
                let result = match (request.cursor(&stream), request.since) {
                    (Some(cursor), _) => broker.history_from(&stream, &cursor.epoch, cursor.offset).await,
                    (None, Some(since)) => broker.history_since(&stream, since).await,
                    // No position and no time: nothing to replay for this stream.
                    (None, None) => Ok(History::default()),
                };
                results.push((stream, result));
            }
            CallOutcome::History { identifier, results }
        }))
    }

    /// Whether a new subscription would go beyond `max_subscriptions`. Commands of one connection run one at a
    /// time, so the subscriptions held are all there is to count.
    fn at_subscription_limit(&self) -> bool {
        let max = self.deps.max_subscriptions;
        max > 0 && self.subscriptions.len() >= max
    }

    /// Answers a subscribe beyond `max_subscriptions` with `reject_subscription`, as the backend would answer a
    /// refused one, without calling it. Logged once per connection: a client looping on subscribe must not
    /// flood the log.
    fn reject_over_limit(&mut self, identifier: &str) {
        Metrics::inc(&self.deps.metrics.failed_client_msg_total);
        if !self.warned_subscription_limit {
            self.warned_subscription_limit = true;
            tracing::warn!(
                sid = %self.client.sid,
                max_subscriptions = self.deps.max_subscriptions,
                identifier,
                "max_subscriptions reached; further subscriptions of this connection are rejected"
            );
        }
        self.client.send(protocol::reject_frame(identifier));
    }

    /// Applies `command_rate_limit` to one command: `false` when it is to be dropped. The first drop of a
    /// stretch over the limit is logged; a client that stays over it long enough is disconnected with
    /// `rate_limited` (no reconnect: an automatic reconnect would only bring the same flood back).
    fn within_command_rate(&mut self, kind: CommandKind, identifier: &str) -> bool {
        let Some(rate) = self.deps.command_rate else { return true };
        let budget = self.rare.get_or_insert_default().command_budget.get_or_insert_default();
        let verdict = budget.check(rate, std::time::Instant::now());
        if verdict == CommandVerdict::Allowed {
            return true;
        }
        Metrics::inc(&self.deps.metrics.rate_limited_client_msg_total);
        match verdict {
            CommandVerdict::Dropped { first: true } => tracing::warn!(
                sid = %self.client.sid,
                command = kind.as_str(),
                identifier,
                per_second = rate.per_second,
                burst = rate.burst,
                "over command_rate_limit: commands are dropped until the client slows down"
            ),
            CommandVerdict::Disconnect => {
                tracing::warn!(
                    sid = %self.client.sid,
                    dropped = rate.disconnect_after(),
                    "over command_rate_limit for too long; disconnecting"
                );
                self.client.close(CloseRequest::with_disconnect_frame(
                    "rate_limited",
                    false,
                    close_code::POLICY_VIOLATION,
                ));
            }
            CommandVerdict::Dropped { first: false } | CommandVerdict::Allowed => {}
        }
        false
    }

    fn refuse(&self, command: &str, identifier: &str, why: &str) {
        Metrics::inc(&self.deps.metrics.failed_client_msg_total);
        tracing::warn!(sid = %self.client.sid, command, identifier, "{why}; command ignored");
    }

    /// Runs a presence command on a subscription's presence set: refused (logged, and answered with a presence
    /// error for `presence`) without a presence store, an unknown subscription, a subscription without a
    /// presence stream, a bad member, or a connection over its presence rate.
    fn start_presence(&mut self, identifier: String, request: PresenceRequest) -> Option<PendingCall> {
        let command = request.command();
        let checked = self.presence_target(&identifier).and_then(|target| {
            match self
                .rare
                .get_or_insert_default()
                .presence_budget
                .get_or_insert_default()
                .take(std::time::Instant::now())
            {
                Ok(()) => Ok(target),
                Err(first) => Err(PresenceError::OverRate { first }),
            }
        });
        let (presence, identifier, stream) = match checked {
            Ok(target) => target,
            Err(error) => {
                match error {
                    // One line per stretch over the rate: a flood must not flood the log.
                    PresenceError::OverRate { first: false } => {
                        Metrics::inc(&self.deps.metrics.failed_client_msg_total)
                    }
                    _ => self.refuse(command, &identifier, &error.to_string()),
                }
                if matches!(request, PresenceRequest::Info { .. }) {
                    self.client.send(protocol::presence::presence_error_frame(&identifier));
                }
                return None;
            }
        };
        let sid = self.client.sid.clone();
        match request {
            PresenceRequest::Join(join) => match Member::checked(join.id, join.info) {
                Ok(member) => Some(Box::pin(async move {
                    let result = presence.join(&stream, &sid, &member).await.map(drop);
                    CallOutcome::Presence { identifier, joined: Some(member), result }
                })),
                Err(error) => {
                    self.refuse(command, &identifier, &error.to_string());
                    None
                }
            },
            PresenceRequest::Leave => Some(Box::pin(async move {
                let result = presence.leave(&stream, &sid).await.map(drop);
                CallOutcome::Presence { identifier, joined: None, result }
            })),
            PresenceRequest::Info { records } => Some(Box::pin(async move {
                let result = presence.info(&stream, records).await;
                CallOutcome::PresenceInfo { identifier, result }
            })),
        }
    }

    /// The presence sets, the subscription's identifier and its presence stream.
    fn presence_target(&self, identifier: &str) -> Result<(Arc<Presence>, Arc<str>, String), PresenceError> {
        let presence = self.deps.presence.clone().ok_or(PresenceError::NoBroker)?;
        let Some((identifier, sub)) = self.subscriptions.get_key_value(identifier) else {
            return Err(PresenceError::UnknownSubscription);
        };
        let stream =
            sub.istate.get(PRESENCE_STREAM_STATE).filter(|s| !s.is_empty()).ok_or(PresenceError::NotEnabled)?;
        Ok((presence, identifier.clone(), stream.to_owned()))
    }

    /// The leave owed when a member unsubscribes.
    fn leave_on_unsubscribe(&mut self, identifier: &str) -> Option<PendingCall> {
        let sub = self.subscriptions.get(identifier)?;
        sub.presence.as_ref()?;
        let stream = sub.istate.get(PRESENCE_STREAM_STATE)?.to_owned();
        let presence = self.deps.presence.clone()?;
        let sid = self.client.sid.clone();
        Some(Box::pin(async move {
            if let Err(error) = presence.leave(&stream, &sid).await {
                tracing::warn!(%sid, %stream, %error, "presence record not removed on unsubscribe: it expires after presence_ttl");
            }
            CallOutcome::Committed
        }))
    }

    /// Applies the `presence` of a Command answer (the application joining or leaving on the client's behalf).
    /// Its stream is the subscription's `$p`, or else its first stream, which becomes its `$p` so the client can
    /// read the set too.
    fn apply_answered_presence(
        &mut self,
        identifier: &Arc<str>,
        answered: crate::handler::PresenceResponse,
    ) -> Option<PendingCall> {
        let request = match answered.r#type.as_str() {
            "join" => {
                let info = (!answered.info.is_empty()).then(|| {
                    // The info is JSON text as the application wrote it; anything else is taken as a string.
                    if serde_json::from_str::<serde::de::IgnoredAny>(&answered.info).is_ok() {
                        answered.info
                    } else {
                        protocol::json_string(&answered.info)
                    }
                });
                PresenceRequest::Join(PresenceJoin { id: answered.id, info })
            }
            "leave" => PresenceRequest::Leave,
            other => {
                tracing::warn!(sid = %self.client.sid, %identifier, kind = other, "unknown presence type in a Command answer; ignored");
                return None;
            }
        };
        let sub = self.subscriptions.get_mut(identifier)?;
        if sub.istate.get(PRESENCE_STREAM_STATE).is_none() {
            let stream = sub.streams.first()?.to_string();
            sub.istate.merge(HashMap::from([(PRESENCE_STREAM_STATE.to_owned(), stream)]));
        }
        // The application's changes are not the client's: they do not count against its presence rate.
        let budget = self.rare.as_mut().and_then(|r| r.presence_budget.take());
        let call = self.start_presence(identifier.to_string(), request);
        if let Some(rare) = &mut self.rare {
            rare.presence_budget = budget;
        }
        call
    }

    /// Records a subscription's presence change once the store applied it.
    fn finish_presence(
        &mut self,
        identifier: &str,
        joined: Option<Member>,
        result: Result<(), PresenceError>,
    ) -> Option<PendingCall> {
        if let Err(error) = result {
            Metrics::inc(&self.deps.metrics.failed_client_msg_total);
            let command = if joined.is_some() { "join" } else { "leave" };
            tracing::warn!(sid = %self.client.sid, command, identifier, %error, "presence command failed");
            return None;
        }
        let sub = self.subscriptions.get_mut(identifier)?;
        sub.presence = joined.map(Box::new);
        self.commit()
    }

    fn finish_presence_info(&mut self, identifier: &str, result: Result<PresenceInfo, PresenceError>) {
        match result {
            Ok(info) => self.client.send(protocol::presence::presence_frame(
                protocol::json_string(identifier).as_bytes(),
                info.to_json().as_bytes(),
            )),
            Err(error) => {
                tracing::warn!(sid = %self.client.sid, identifier, %error, "presence set not read");
                self.client.send(protocol::presence::presence_error_frame(identifier))
            }
        };
    }

    /// Hands a whisper to the broadcast path, addressed to the subscription's whisper stream without this
    /// client, when the controller allows it. Whispers are transient: nothing waits for them, and one that
    /// finds the whisper queue full is dropped.
    fn whisper(&mut self, identifier: &str, data: String) {
        let Some(sub) = self.subscriptions.get(identifier) else {
            self.refuse("whisper", identifier, "unknown subscription");
            return;
        };
        let budget = self.rare.get_or_insert_default().whisper_budget.get_or_insert_default();
        let now = std::time::Instant::now();
        let whisper_stream = sub.istate.get(WHISPER_STREAM_STATE);
        match self.deps.controller.whisper(&self.client.sid, whisper_stream, budget, data, now) {
            Ok(publication) => {
                if self.deps.whispers.try_send(publication).is_err() {
                    Metrics::inc(&self.deps.metrics.failed_client_msg_total);
                    tracing::warn!(sid = %self.client.sid, identifier, "whisper dropped: the whisper queue is full");
                }
            }
            Err(refused) => {
                Metrics::inc(&self.deps.metrics.failed_client_msg_total);
                tracing::debug!(sid = %self.client.sid, identifier, "whisper dropped: {refused}");
            }
        }
    }

    /// Applies a finished call to the session and queues its transmissions; returns the call that follows
    /// from it, if any (a history replay, a write to the session cache, a Connect after a missed restore).
    pub(crate) fn finish(&mut self, outcome: CallOutcome) -> Option<PendingCall> {
        match outcome {
            CallOutcome::Connect(routed) => self.finish_connect(routed),
            CallOutcome::Command { kind, identifier, routed, history, presence } => {
                self.finish_command(kind, identifier, routed, history, presence)
            }
            CallOutcome::Restore { previous, snapshot, token } => self.finish_restore(previous, snapshot, token),
            CallOutcome::History { identifier, results } => {
                self.finish_history(&identifier, results);
                None
            }
            CallOutcome::Committed => None,
            CallOutcome::Presence { identifier, joined, result } => self.finish_presence(&identifier, joined, result),
            CallOutcome::PresenceInfo { identifier, result } => {
                self.finish_presence_info(&identifier, result);
                None
            }
            CallOutcome::Both(first, then) => {
                let first = self.finish(*first);
                let then = self.finish(*then);
                both(first, then)
            }
        }
    }

    /// Restores the cached session when it was found and the connection may have it, else connects as usual.
    fn finish_restore(
        &mut self,
        previous: String,
        bytes: Option<Vec<u8>>,
        token: Option<String>,
    ) -> Option<PendingCall> {
        let Some((snapshot, bytes)) = bytes.and_then(|bytes| match serde_json::from_slice::<Snapshot>(&bytes) {
            Ok(snapshot) => Some((snapshot, bytes)),
            Err(error) => {
                tracing::warn!(sid = %self.client.sid, %error, "cached session unreadable; connecting without it");
                None
            }
        }) else {
            return self.start_connect(token);
        };
        // A connection that authenticates itself must be the one the session belonged to.
        if self.deps.controller.reads_tokens() {
            let ctx = self.call_context();
            match self.deps.controller.connect_locally(&ctx, token.as_deref()) {
                Some(response)
                    if Status::try_from(response.status) == Ok(Status::Success)
                        && response.identifiers == snapshot.identifiers => {}
                Some(response) => {
                    tracing::info!(sid = %self.client.sid, "session not restored: the connection's token does not identify it");
                    // The session stays in the cache for the connection it belongs to.
                    let broker = self.deps.broker.clone()?;
                    let put_back: PendingCall = Box::pin(async move {
                        if let Err(error) = broker.commit_session(&previous, &bytes).await {
                            tracing::warn!(%error, "a cached session could not be put back");
                        }
                        CallOutcome::Committed
                    });
                    let connected = self.finish_connect(Routed { result: Ok(response), via_backend: false });
                    return Some(match connected {
                        Some(commit) => Box::pin(async move {
                            put_back.await;
                            commit.await
                        }),
                        None => put_back,
                    });
                }
                None => {}
            }
        }
        let take_over = self.restore(snapshot, &previous);
        both(self.commit(), take_over)
    }

    /// Restores a cached session; returns the call that moves its presence records to this session's sid.
    fn restore(&mut self, snapshot: Snapshot, previous: &str) -> Option<PendingCall> {
        let identifiers: Arc<str> = snapshot.identifiers.into();
        self.deps.hub.identify(&self.client, &identifiers);
        self.identifiers = Some(identifiers);
        self.cstate.merge(snapshot.cstate);
        self.used_backend = snapshot.used_backend;
        let deadline = std::time::Instant::now() + RESTORE_HOLD;
        let mut restored_ids = Vec::with_capacity(snapshot.subscriptions.len());
        let mut take_over = None;
        for cached in snapshot.subscriptions {
            if self.subscriptions.get(&cached.identifier).is_some() {
                continue;
            }
            let mut identifier: Arc<str> = cached.identifier.into();
            let mut sub = Subscription::default();
            sub.istate.merge(cached.istate);
            if let Some(member) = cached.presence {
                take_over = both(take_over, self.take_over_presence(&identifier, &sub, previous, member));
            }
            for stream in cached.streams {
                let stream: Arc<str> = stream.into();
                if sub.streams.contains(&stream) {
                    continue;
                }
                // Held until the client asks for what it missed, so nothing live overtakes the replay.
                self.rare.get_or_insert_default().catchup.get_or_insert_default().hold(&stream, Some(deadline));
                let (stream, shared) = self.deps.hub.subscribe(&stream, &identifier, &self.client);
                identifier = shared;
                sub.add_stream(stream);
            }
            Metrics::up(&self.deps.metrics.subscriptions_num);
            restored_ids.push(identifier.clone());
            self.subscriptions.insert(identifier, sub);
        }
        let ids: Vec<&str> = restored_ids.iter().map(|id| &**id).collect();
        self.client.send(protocol::restored_welcome_frame(&self.client.sid, &ids));
        self.client.mark_welcomed();
        tracing::debug!(sid = %self.client.sid, subscriptions = ids.len(), "session restored");
        take_over
    }

    /// The call that moves a restored subscription's presence record from the previous sid to this one: the member
    /// stays present throughout (no leave, no join).
    fn take_over_presence(
        &self,
        identifier: &Arc<str>,
        sub: &Subscription,
        previous: &str,
        member: Member,
    ) -> Option<PendingCall> {
        let presence = self.deps.presence.clone()?;
        let stream = sub.istate.get(PRESENCE_STREAM_STATE)?.to_owned();
        let (identifier, previous, sid) = (identifier.clone(), previous.to_owned(), self.client.sid.clone());
        Some(Box::pin(async move {
            let result = presence.take_over(&stream, &previous, &sid, &member).await;
            CallOutcome::Presence { identifier, joined: Some(member), result }
        }))
    }

    /// The session as the cache keeps it.
    fn snapshot(&self) -> Option<Vec<u8>> {
        let identifiers = self.identifiers.as_deref()?;
        let subscriptions = self
            .subscriptions
            .iter()
            .map(|(id, sub)| SubscriptionRef {
                identifier: id,
                streams: sub.streams.iter().map(|s| &**s).collect(),
                istate: &sub.istate,
                presence: sub.presence.as_deref(),
            })
            .collect();
        let snapshot =
            SnapshotRef { identifiers, cstate: &self.cstate, subscriptions, used_backend: self.used_backend };
        serde_json::to_vec(&snapshot).ok()
    }

    /// Writes the session to the cache, as the call that follows the change; `None` when it is not cached.
    fn commit(&self) -> Option<PendingCall> {
        if !self.cached() {
            return None;
        }
        let broker = self.deps.broker.clone()?;
        let snapshot = self.snapshot()?;
        let sid = self.client.sid.clone();
        Some(Box::pin(async move {
            if let Err(error) = broker.commit_session(&sid, &snapshot).await {
                tracing::warn!(%sid, %error, "session not cached: it cannot be restored after a reconnect");
            }
            CallOutcome::Committed
        }))
    }

    /// Queues the replay of a subscription's history (or `reject_history`), each stream's frames between its
    /// markers, as one run the catch-up applies in order.
    fn finish_history(&mut self, identifier: &str, results: Vec<(Arc<str>, Result<History, HistoryError>)>) {
        let Some(catchup) = Rare::catchup(&mut self.rare) else { return };
        let escaped_identifier = protocol::json_string(identifier);
        let refused = results.iter().find_map(|(stream, result)| result.as_ref().err().map(|e| (stream, e)));
        let mut batch = Vec::new();
        if let Some((stream, error)) = refused {
            tracing::debug!(sid = %self.client.sid, identifier, %stream, %error, "history refused");
            for (stream, _) in &results {
                catchup.replay_queued(stream, None);
                batch.extend([catchup::begin_marker(stream), catchup::end_marker(stream)]);
            }
            batch.push(protocol::reject_history_frame(identifier));
        } else {
            for (stream, result) in results {
                let Ok(history) = result else { continue };
                let escaped_stream = protocol::json_string(&stream);
                let escaped_epoch = protocol::json_string(&history.epoch);
                batch.push(catchup::begin_marker(&stream));
                for entry in &history.entries {
                    batch.push(protocol::positioned_message_frame(
                        escaped_identifier.as_bytes(),
                        &protocol::broadcast_payload(&entry.data),
                        escaped_stream.as_bytes(),
                        escaped_epoch.as_bytes(),
                        entry.offset,
                    ));
                }
                batch.push(catchup::end_marker(&stream));
                let last = history.entries.last().map(|e| (history.epoch.to_string(), e.offset));
                catchup.replay_queued(&stream, last);
            }
            batch.push(protocol::confirm_history_frame(identifier));
        }
        self.client.send_batch(batch);
    }

    /// Filters frames taken from the client queue through the catch-up, while there is one.
    pub(crate) fn outbound(&mut self, frames: std::collections::VecDeque<Bytes>) -> std::collections::VecDeque<Bytes> {
        let Some(catchup) = Rare::catchup(&mut self.rare) else { return frames };
        let filtered = catchup.filter(frames, std::time::Instant::now(), self.client.capacity());
        if catchup.is_empty() {
            self.clear_rare(|r| r.catchup = None);
        }
        if filtered.overflow {
            tracing::info!(sid = %self.client.sid, "client too slow for its catch-up; disconnecting");
            self.client.close(CloseRequest::with_disconnect_frame(TOO_SLOW, true, close_code::NORMAL));
        }
        filtered.frames
    }

    fn finish_connect(&mut self, routed: Routed<ConnectionResponse>) -> Option<PendingCall> {
        self.used_backend |= routed.via_backend;
        let mut response = match routed.result {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(sid = %self.client.sid, %error, "Connect failed");
                self.client.close(CloseRequest { frame: None, code: close_code::INTERNAL_ERROR, reason: "Auth Error" });
                return None;
            }
        };
        if let Some(env) = response.env.take() {
            self.cstate.merge(env.cstate);
        }
        if self.client.protocol.is_extended() {
            for transmission in &mut response.transmissions {
                if let Some(welcome) = protocol::welcome_with_sid(transmission, &self.client.sid) {
                    *transmission = welcome;
                }
            }
        }
        self.transmit(std::mem::take(&mut response.transmissions));
        match Status::try_from(response.status) {
            Ok(Status::Success) => {
                let identifiers: Arc<str> = response.identifiers.into();
                self.deps.hub.identify(&self.client, &identifiers);
                self.identifiers = Some(identifiers);
                self.client.mark_welcomed();
                return self.commit();
            }
            Ok(Status::Failure) => {
                Metrics::inc(&self.deps.metrics.failed_auths_total);
                tracing::debug!(sid = %self.client.sid, reason = %response.error_msg, "connection rejected");
                self.client.close(CloseRequest { frame: None, code: close_code::NORMAL, reason: "Auth Failed" });
            }
            _ => {
                tracing::error!(sid = %self.client.sid, error = %response.error_msg, "Connect returned ERROR");
                self.client.close(CloseRequest { frame: None, code: close_code::INTERNAL_ERROR, reason: "Auth Error" });
            }
        }
        None
    }

    fn finish_command(
        &mut self,
        kind: CommandKind,
        identifier: Arc<str>,
        routed: Routed<CommandResponse>,
        history: Option<Box<HistoryRequest>>,
        presence: Option<Box<PresenceJoin>>,
    ) -> Option<PendingCall> {
        self.used_backend |= routed.via_backend;
        let mut response = match routed.result {
            Ok(response) => response,
            Err(error) => {
                Metrics::inc(&self.deps.metrics.failed_client_msg_total);
                tracing::warn!(sid = %self.client.sid, command = kind.as_str(), %identifier, %error, "command failed");
                return None;
            }
        };
        let status = Status::try_from(response.status).unwrap_or(Status::Error);
        if status == Status::Error {
            Metrics::inc(&self.deps.metrics.failed_client_msg_total);
            tracing::error!(
                sid = %self.client.sid,
                command = kind.as_str(),
                %identifier,
                error = %response.error_msg,
                "command returned {}",
                status_name(response.status)
            );
        }
        // A confirmed subscribe that asked for history holds its new streams before they are subscribed, so no
        // live broadcast can overtake the replay.
        let replay = match (kind, status, history) {
            (CommandKind::Subscribe, Status::Success, Some(history)) => Some(*history),
            _ => None,
        };
        let mut changed = matches!((kind, status), (CommandKind::Subscribe, Status::Success))
            || matches!((kind, status), (CommandKind::Unsubscribe, Status::Success | Status::Failure));
        let mut presence_call = None;
        match (kind, status) {
            (CommandKind::Subscribe, Status::Success) => {
                self.subscriptions.insert(identifier.clone(), Subscription::default());
                Metrics::up(&self.deps.metrics.subscriptions_num);
                if !response.periodic_timers.is_empty() {
                    self.rare
                        .get_or_insert_default()
                        .timers
                        .get_or_insert_default()
                        .add(&identifier, &response.periodic_timers);
                }
            }
            (CommandKind::Unsubscribe, Status::Success | Status::Failure) => {
                // A member that unsubscribes leaves at once (when it was its id's last session).
                presence_call = self.leave_on_unsubscribe(&identifier);
                self.remove_subscription(&identifier);
            }
            _ => {}
        }
        let answered_presence = response.presence.take();
        changed |= self.apply_streams_and_istate(&identifier, &mut response, replay.is_some());
        if let Some(env) = response.env.take() {
            changed |= !env.cstate.is_empty();
            self.cstate.merge(env.cstate);
        }
        self.transmit(std::mem::take(&mut response.transmissions));
        if response.disconnect {
            self.client.close(CloseRequest { frame: None, code: close_code::NORMAL, reason: "Command Failed" });
            return None;
        }
        if let Some(answered) = answered_presence.filter(|_| status == Status::Success) {
            presence_call = both(presence_call, self.apply_answered_presence(&identifier, answered));
        }
        if let Some(join) = presence.filter(|_| kind == CommandKind::Subscribe && status == Status::Success) {
            presence_call =
                both(presence_call, self.start_presence(identifier.to_string(), PresenceRequest::Join(*join)));
        }
        if let Some(history) = replay {
            let streams = self.subscriptions.get(&identifier).map(|s| s.streams.to_vec()).unwrap_or_default();
            // The replay's call is what follows; the session is cached again once it is done (below, on the next
            // change) or when the connection ends. Committing first keeps a reconnect during the replay safe.
            let commit = self.commit();
            let fetch = self.fetch_history(identifier, streams, history);
            return both(both(commit, fetch), presence_call);
        }
        both(if changed { self.commit() } else { None }, presence_call)
    }

    /// `stop_streams` first, then `stopped_streams`, then new `streams` (held first when `hold`: their history is
    /// replayed next); then the istate changes (taken out of the response). Returns whether anything changed.
    fn apply_streams_and_istate(&mut self, identifier: &Arc<str>, response: &mut CommandResponse, hold: bool) -> bool {
        let Some(sub) = self.subscriptions.get_mut(identifier) else { return false };
        let hub = &self.deps.hub;
        let client_id = self.client.id;
        let mut changed = false;
        let mut shared_identifier = None;
        if response.stop_streams {
            for stream in sub.streams.drain(..) {
                hub.unsubscribe(&stream, identifier, client_id);
                if let Some(catchup) = Rare::catchup(&mut self.rare) {
                    catchup.forget(&stream);
                }
                changed = true;
            }
        }
        for stopped in &response.stopped_streams {
            if let Some(pos) = sub.streams.iter().position(|s| **s == **stopped) {
                let stream = sub.streams.swap_remove(pos);
                hub.unsubscribe(&stream, identifier, client_id);
                if let Some(catchup) = Rare::catchup(&mut self.rare) {
                    catchup.forget(&stream);
                }
                changed = true;
            }
        }
        for stream in &response.streams {
            if !sub.streams.iter().any(|s| **s == **stream) {
                let stream: Arc<str> = stream.as_str().into();
                if hold {
                    self.rare.get_or_insert_default().catchup.get_or_insert_default().hold(&stream, None);
                }
                let (stream, identifier) = if response.callback_streams.iter().any(|callback| **callback == *stream) {
                    hub.subscribe_callback(&stream, identifier, &self.client)
                } else {
                    hub.subscribe(&stream, identifier, &self.client)
                };
                sub.add_stream(stream);
                shared_identifier = Some(identifier);
                changed = true;
            }
        }
        if let Some(env) = &mut response.env {
            changed |= !env.istate.is_empty();
            sub.istate.merge(std::mem::take(&mut env.istate));
        }
        // The hub's copy of the identifier becomes the subscription's key: one string for all its subscribers.
        if let Some(shared) = shared_identifier.filter(|shared| !Arc::ptr_eq(shared, identifier)) {
            self.subscriptions.share_key(shared);
        }
        changed
    }

    fn remove_subscription(&mut self, identifier: &str) {
        if let Some(sub) = self.subscriptions.remove(identifier) {
            for stream in &sub.streams {
                self.deps.hub.unsubscribe(stream, identifier, self.client.id);
                if let Some(catchup) = Rare::catchup(&mut self.rare) {
                    catchup.forget(stream);
                }
            }
            Metrics::down(&self.deps.metrics.subscriptions_num);
        }
        if let Some(timers) = self.rare.as_mut().and_then(|r| r.timers.as_mut()) {
            timers.remove(identifier);
            if timers.is_empty() {
                self.clear_rare(|r| r.timers = None);
            }
        }
    }

    /// Caches the session for `sessions_ttl` from now when the client may come back for it: it went away, or
    /// the server asked it to reconnect (a restart, too slow). A session the server ended on purpose (remote
    /// disconnect, rejected, rate limited, the application's `disconnect`) is taken out of the cache instead.
    async fn keep_for_recovery(&self) {
        let Some(broker) = self.deps.broker.as_ref().filter(|_| self.cached()) else { return };
        let restorable = self
            .client
            .close_request()
            .is_none_or(|close| matches!(close.reason, "closed" | "server_restart" | TOO_SLOW));
        let result = match self.snapshot().filter(|_| restorable) {
            Some(snapshot) => broker.commit_session(&self.client.sid, &snapshot).await,
            None => broker.restore_session(&self.client.sid).await.map(drop),
        };
        if let Err(error) = result {
            tracing::warn!(sid = %self.client.sid, %error, "session cache unavailable when the connection ended");
        }
    }

    /// Queues a handler's transmissions. A binary client gets each in its encoding now: a handler may send any
    /// text, and only JSON objects have a binary form (the rest is logged and skipped, the connection stays).
    fn transmit(&self, transmissions: Vec<String>) {
        let protocol = self.client.protocol;
        for t in transmissions {
            if !protocol.encoding().is_binary() {
                self.client.send(Bytes::from(t));
                continue;
            }
            match protocol::encode_json_frame(protocol, t.as_bytes()) {
                Ok(frame) => {
                    self.client.send(frame);
                }
                Err(error) => {
                    Metrics::inc(&self.deps.metrics.failed_server_msg_total);
                    tracing::warn!(sid = %self.client.sid, %error, "transmission skipped");
                }
            }
        }
    }

    /// Cleans up after the connection closed and queues the Disconnect call when one is owed.
    pub(crate) async fn end(mut self) {
        self.keep_for_recovery().await;
        // Its presence records are no longer touched: they expire after presence_ttl unless a restore takes them.
        if let Some(presence) = &self.deps.presence {
            presence.forget_session(&self.client.sid);
        }
        let identifiers = self.identifiers.take();
        let subscriptions = std::mem::take(&mut self.subscriptions).into_vec();
        for (identifier, sub) in &subscriptions {
            for stream in &sub.streams {
                self.deps.hub.unsubscribe(stream, identifier, self.client.id);
            }
            Metrics::down(&self.deps.metrics.subscriptions_num);
        }
        self.deps.hub.remove_client(self.client.id, identifiers.as_deref());
        let Some(identifiers) = identifiers else { return };
        let owed = match self.deps.disconnect_mode {
            DisconnectMode::Never => false,
            DisconnectMode::Always => true,
            DisconnectMode::Auto => self.used_backend,
        };
        if !owed || !self.deps.controller.has_backend() {
            return;
        }
        let istate = subscriptions
            .iter()
            .map(|(id, sub)| (id.to_string(), serde_json::to_string(&sub.istate).unwrap_or_else(|_| "{}".into())))
            .collect();
        let request = DisconnectRequest {
            identifiers: identifiers.to_string(),
            subscriptions: subscriptions.iter().map(|(k, _)| k.to_string()).collect(),
            env: Some(self.request_env(istate)),
        };
        self.deps.disconnects.push(self.client.sid.clone(), request).await;
    }
}

#[cfg(test)]
mod tests {
    use super::RequestEnv;

    #[test]
    fn request_env_keeps_the_url_and_headers_in_order_including_empty_values() {
        let headers = [("cookie", "a=1; b=2"), ("x-empty", ""), ("REMOTE_ADDR", "::1")];
        let env = RequestEnv::new("http://x/cable?a=1", &headers);
        assert_eq!(env.url(), "http://x/cable?a=1");
        assert_eq!(env.headers().collect::<Vec<_>>(), headers);
        assert_eq!(env.headers_map().len(), 3);
        let bare = RequestEnv::new("", &[] as &[(&str, &str)]);
        assert_eq!((bare.url(), bare.headers().count()), ("", 0));
        assert_eq!(RequestEnv::default().url(), "");
    }

    #[test]
    fn a_newline_cannot_shift_the_entries_after_it() {
        let env = RequestEnv::new("http://x/\nevil", &[("a\nb", "1\n2"), ("c", "3")]);
        assert_eq!(env.url(), "http://x/evil");
        assert_eq!(env.headers().collect::<Vec<_>>(), [("ab", "12"), ("c", "3")]);
    }
}
