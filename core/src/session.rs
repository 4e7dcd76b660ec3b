//! One client's session: identifiers, connection state (cstate), subscriptions with their channel state
//! (istate) and streams, and the protocol rules that apply handler answers to them.
//!
//! A session is owned by its connection task and mutated only there, one command at a time, so there is
//! no lock on session state. It builds each handler request with exactly the state that call needs, and
//! merges what comes back: a returned key with a non-empty value sets it, an empty value deletes it.
//! It never reads or writes the socket: frames go out through the client's queue.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use crate::client::{ClientHandle, CloseRequest, close_code};
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
use crate::protocol::{self, ClientCommand};
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
}

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

/// A finished handler call.
pub(crate) enum CallOutcome {
    Connect(Routed<ConnectionResponse>),
    Command { kind: CommandKind, identifier: Arc<str>, routed: Routed<CommandResponse> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommandKind {
    Subscribe,
    Unsubscribe,
    Message,
}

impl CommandKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Subscribe => "subscribe",
            Self::Unsubscribe => "unsubscribe",
            Self::Message => "message",
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
    /// Allocated on the first whisper: most clients never whisper.
    whisper_budget: Option<Box<WhisperBudget>>,
    /// Allocated on the first command when commands are limited, so idle connections do not pay for it.
    command_budget: Option<Box<CommandBudget>>,
}

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
            whisper_budget: None,
            command_budget: None,
        }
    }

    fn call_context(&self) -> CallContext {
        CallContext { sid: self.client.sid.clone() }
    }

    fn request_env(&self, istate: HashMap<String, String>) -> Env {
        Env { url: self.env.url().to_owned(), headers: self.env.headers_map(), cstate: self.cstate.to_map(), istate }
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
        let (kind, identifier, data) = match command {
            ClientCommand::Subscribe { identifier } => (CommandKind::Subscribe, identifier, String::new()),
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
            self.finish_command(kind, identifier, Routed { result: Ok(response), via_backend: false });
            return None;
        }
        let request = CommandMessage {
            command: kind.as_str().into(),
            identifier: identifier.to_string(),
            connection_identifiers: self.identifiers.as_deref().unwrap_or_default().to_owned(),
            data,
            env: Some(self.request_env(istate)),
        };
        let controller = self.deps.controller.clone();
        let ctx = self.call_context();
        Some(Box::pin(async move {
            let routed = controller.command_via_backend(&ctx, request).await;
            CallOutcome::Command { kind, identifier, routed }
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
        let budget = self.command_budget.get_or_insert_with(Default::default);
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

    /// Hands a whisper to the broadcast path, addressed to the subscription's whisper stream without this
    /// client, when the controller allows it. Whispers are transient: nothing waits for them, and one that
    /// finds the whisper queue full is dropped.
    fn whisper(&mut self, identifier: &str, data: String) {
        let Some(sub) = self.subscriptions.get(identifier) else {
            self.refuse("whisper", identifier, "unknown subscription");
            return;
        };
        let budget = self.whisper_budget.get_or_insert_with(Default::default);
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

    /// Applies a finished call to the session and queues its transmissions.
    pub(crate) fn finish(&mut self, outcome: CallOutcome) {
        match outcome {
            CallOutcome::Connect(routed) => self.finish_connect(routed),
            CallOutcome::Command { kind, identifier, routed } => self.finish_command(kind, identifier, routed),
        }
    }

    fn finish_connect(&mut self, routed: Routed<ConnectionResponse>) {
        self.used_backend |= routed.via_backend;
        let mut response = match routed.result {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(sid = %self.client.sid, %error, "Connect failed");
                self.client.close(CloseRequest { frame: None, code: close_code::INTERNAL_ERROR, reason: "Auth Error" });
                return;
            }
        };
        if let Some(env) = response.env.take() {
            self.cstate.merge(env.cstate);
        }
        self.transmit(std::mem::take(&mut response.transmissions));
        match Status::try_from(response.status) {
            Ok(Status::Success) => {
                let identifiers: Arc<str> = response.identifiers.into();
                self.deps.hub.identify(&self.client, &identifiers);
                self.identifiers = Some(identifiers);
                self.client.mark_welcomed();
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
    }

    fn finish_command(&mut self, kind: CommandKind, identifier: Arc<str>, routed: Routed<CommandResponse>) {
        self.used_backend |= routed.via_backend;
        let mut response = match routed.result {
            Ok(response) => response,
            Err(error) => {
                Metrics::inc(&self.deps.metrics.failed_client_msg_total);
                tracing::warn!(sid = %self.client.sid, command = kind.as_str(), %identifier, %error, "command failed");
                return;
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
        match (kind, status) {
            (CommandKind::Subscribe, Status::Success) => {
                self.subscriptions.insert(identifier.clone(), Subscription::default());
                Metrics::up(&self.deps.metrics.subscriptions_num);
            }
            (CommandKind::Unsubscribe, Status::Success | Status::Failure) => {
                self.remove_subscription(&identifier);
            }
            _ => {}
        }
        self.apply_streams_and_istate(&identifier, &mut response);
        if let Some(env) = response.env.take() {
            self.cstate.merge(env.cstate);
        }
        self.transmit(std::mem::take(&mut response.transmissions));
        if response.disconnect {
            self.client.close(CloseRequest { frame: None, code: close_code::NORMAL, reason: "Command Failed" });
        }
    }

    /// `stop_streams` first, then `stopped_streams`, then new `streams`; then the istate changes (taken out of
    /// the response).
    fn apply_streams_and_istate(&mut self, identifier: &Arc<str>, response: &mut CommandResponse) {
        let Some(sub) = self.subscriptions.get_mut(identifier) else { return };
        let hub = &self.deps.hub;
        let client_id = self.client.id;
        if response.stop_streams {
            for stream in sub.streams.drain(..) {
                hub.unsubscribe(&stream, identifier, client_id);
            }
        }
        for stopped in &response.stopped_streams {
            if let Some(pos) = sub.streams.iter().position(|s| **s == **stopped) {
                let stream = sub.streams.swap_remove(pos);
                hub.unsubscribe(&stream, identifier, client_id);
            }
        }
        for stream in &response.streams {
            if !sub.streams.iter().any(|s| **s == **stream) {
                let stream: Arc<str> = stream.as_str().into();
                hub.subscribe(&stream, identifier, &self.client);
                sub.add_stream(stream);
            }
        }
        if let Some(env) = &mut response.env {
            sub.istate.merge(std::mem::take(&mut env.istate));
        }
    }

    fn remove_subscription(&mut self, identifier: &str) {
        if let Some(sub) = self.subscriptions.remove(identifier) {
            for stream in &sub.streams {
                self.deps.hub.unsubscribe(stream, identifier, self.client.id);
            }
            Metrics::down(&self.deps.metrics.subscriptions_num);
        }
    }

    fn transmit(&self, transmissions: Vec<String>) {
        for t in transmissions {
            self.client.send(Bytes::from(t));
        }
    }

    /// Cleans up after the connection closed and queues the Disconnect call when one is owed.
    pub(crate) async fn end(mut self) {
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
