//! Guards for handlers that run inside the host process (the Node and Ruby bindings).
//!
//! An in-process handler is application code: it can fail, or never answer at all. [`Guarded`] bounds every
//! call by a time limit and turns a failed or late call into an ERROR answer for that one call, whose
//! `error_msg` names the channel and the action, so the session logs it once and every other client is
//! unaffected; the failure is also handed to the host (an `'error'` event in Node). `Metered` counts the
//! calls the way the gRPC client counts its RPCs. Neither touches sessions: they only wrap a [`Handler`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{
    CallContext, CommandMessage, CommandResponse, ConnectionRequest, ConnectionResponse, DisconnectRequest,
    DisconnectResponse, Handler, HandlerError, Status,
};
use crate::config::Config;
use crate::metrics::Metrics;

/// Time limit of an in-process call when `rpc_request_timeout` is 0 (unset).
pub const DEFAULT_IN_PROCESS_TIMEOUT: Duration = Duration::from_secs(5);

/// The time limit of one in-process handler call: `rpc_request_timeout`, or [`DEFAULT_IN_PROCESS_TIMEOUT`].
pub fn in_process_timeout(config: &Config) -> Duration {
    config.rpc_timeout().unwrap_or(DEFAULT_IN_PROCESS_TIMEOUT)
}

/// Which handler method a call went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    Connect,
    Command,
    Disconnect,
}

impl CallKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Command => "command",
            Self::Disconnect => "disconnect",
        }
    }
}

/// Why a call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The handler did not answer within the time limit.
    Timeout,
    /// The handler returned an error (it threw, rejected, or answered something that is not a response).
    Failed,
}

/// One failed in-process call, with what is known about where it failed.
#[derive(Debug, Clone)]
pub struct HandlerFailure {
    pub call: CallKind,
    pub kind: FailureKind,
    pub sid: Arc<str>,
    /// `subscribe`, `unsubscribe` or `message` (Command only).
    pub command: Option<String>,
    /// The channel identifier (Command only).
    pub identifier: Option<String>,
    /// The `channel` of the identifier, when it is JSON with one.
    pub channel: Option<String>,
    /// The `action` of a `message`, or the command itself for `subscribe` / `unsubscribe`.
    pub action: Option<String>,
    pub message: String,
}

impl HandlerFailure {
    /// Where the call failed, e.g. `ChatChannel#speak`, `connect`.
    pub fn location(&self) -> String {
        location(self.call, self.channel.as_deref(), self.action.as_deref())
    }
}

/// `ChatChannel#speak` for commands, the call name otherwise (the Node package names failures it catches
/// itself the same way).
fn location(call: CallKind, channel: Option<&str>, action: Option<&str>) -> String {
    match call {
        CallKind::Command => {
            format!("{}#{}", channel.unwrap_or("(unknown channel)"), action.unwrap_or("(unknown action)"))
        }
        other => other.as_str().to_owned(),
    }
}

/// The channel and action of a Command, read from its identifier and data (both JSON by convention).
pub fn channel_and_action(request: &CommandMessage) -> (Option<String>, Option<String>) {
    let field = |json: &str, name: &str| {
        serde_json::from_str::<serde_json::Value>(json)
            .ok()
            .and_then(|v| v.get(name).and_then(|f| f.as_str()).map(str::to_owned))
    };
    let channel = field(&request.identifier, "channel");
    let action =
        if request.command == "message" { field(&request.data, "action") } else { Some(request.command.clone()) };
    (channel, action)
}

/// Receives every failure [`Guarded`] turns into an ERROR answer.
pub type FailureReporter = Arc<dyn Fn(HandlerFailure) + Send + Sync>;

/// Wraps an in-process handler: a time limit per call, failures become ERROR answers and are reported.
pub struct Guarded {
    inner: Arc<dyn Handler>,
    timeout: Duration,
    report: Option<FailureReporter>,
}

impl Guarded {
    pub fn new(inner: Arc<dyn Handler>, timeout: Duration, report: Option<FailureReporter>) -> Self {
        Self { inner, timeout, report }
    }

    /// Runs `call` within the limit; on failure reports it and returns the message for the ERROR answer.
    async fn run<T>(
        &self,
        ctx: &CallContext,
        describe: impl FnOnce() -> (CallKind, Option<String>, Option<String>, Option<String>, Option<String>),
        call: impl Future<Output = Result<T, HandlerError>>,
    ) -> Result<T, String> {
        let (kind, message) = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(error)) => (FailureKind::Failed, error.to_string()),
            Err(_) => (FailureKind::Timeout, format!("handler did not answer within {} ms", self.timeout.as_millis())),
        };
        let (call, command, identifier, channel, action) = describe();
        let failure =
            HandlerFailure { call, kind, sid: ctx.sid.clone(), command, identifier, channel, action, message };
        let error_msg = format!("{}: {}", failure.location(), failure.message);
        if let Some(report) = &self.report {
            report(failure);
        }
        Err(error_msg)
    }
}

#[async_trait]
impl Handler for Guarded {
    async fn connect(&self, ctx: &CallContext, request: ConnectionRequest) -> Result<ConnectionResponse, HandlerError> {
        let describe = || (CallKind::Connect, None, None, None, None);
        Ok(match self.run(ctx, describe, self.inner.connect(ctx, request)).await {
            Ok(response) => response,
            Err(error_msg) => ConnectionResponse { status: Status::Error as i32, error_msg, ..Default::default() },
        })
    }

    async fn command(&self, ctx: &CallContext, request: CommandMessage) -> Result<CommandResponse, HandlerError> {
        // The request moves into the call; keep what a failure report needs, and parse it only on failure.
        let kept = CommandMessage {
            command: request.command.clone(),
            identifier: request.identifier.clone(),
            data: request.data.clone(),
            ..Default::default()
        };
        let describe = move || {
            let (channel, action) = channel_and_action(&kept);
            (CallKind::Command, Some(kept.command), Some(kept.identifier), channel, action)
        };
        Ok(match self.run(ctx, describe, self.inner.command(ctx, request)).await {
            Ok(response) => response,
            Err(error_msg) => CommandResponse { status: Status::Error as i32, error_msg, ..Default::default() },
        })
    }

    async fn disconnect(
        &self,
        ctx: &CallContext,
        request: DisconnectRequest,
    ) -> Result<DisconnectResponse, HandlerError> {
        let describe = || (CallKind::Disconnect, None, None, None, None);
        Ok(match self.run(ctx, describe, self.inner.disconnect(ctx, request)).await {
            Ok(response) => response,
            Err(error_msg) => DisconnectResponse { status: Status::Error as i32, error_msg },
        })
    }
}

/// Counts in-process calls in `rpc_call_total`, `rpc_error_total` and `rpc_pending_num`.
pub(crate) struct Metered {
    inner: Arc<dyn Handler>,
    metrics: Arc<Metrics>,
}

impl Metered {
    pub(crate) fn new(inner: Arc<dyn Handler>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    async fn count<T>(
        &self,
        call: impl Future<Output = Result<T, HandlerError>>,
        status: impl Fn(&T) -> i32,
    ) -> Result<T, HandlerError> {
        Metrics::inc(&self.metrics.rpc_call_total);
        Metrics::up(&self.metrics.rpc_pending_num);
        let result = call.await;
        Metrics::down(&self.metrics.rpc_pending_num);
        if result.as_ref().map_or(true, |answer| status(answer) == Status::Error as i32) {
            Metrics::inc(&self.metrics.rpc_error_total);
        }
        result
    }
}

#[async_trait]
impl Handler for Metered {
    async fn connect(&self, ctx: &CallContext, request: ConnectionRequest) -> Result<ConnectionResponse, HandlerError> {
        self.count(self.inner.connect(ctx, request), |r| r.status).await
    }

    async fn command(&self, ctx: &CallContext, request: CommandMessage) -> Result<CommandResponse, HandlerError> {
        self.count(self.inner.command(ctx, request), |r| r.status).await
    }

    async fn disconnect(
        &self,
        ctx: &CallContext,
        request: DisconnectRequest,
    ) -> Result<DisconnectResponse, HandlerError> {
        self.count(self.inner.disconnect(ctx, request), |r| r.status).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Answers SUCCESS, fails, or never answers, depending on the action / call.
    struct Flaky;

    #[async_trait]
    impl Handler for Flaky {
        async fn connect(&self, _: &CallContext, _: ConnectionRequest) -> Result<ConnectionResponse, HandlerError> {
            std::future::pending().await
        }
        async fn command(&self, _: &CallContext, r: CommandMessage) -> Result<CommandResponse, HandlerError> {
            match channel_and_action(&r).1.as_deref() {
                Some("boom") => Err(HandlerError::Failed("it broke".into())),
                _ => Ok(CommandResponse { status: Status::Success as i32, ..Default::default() }),
            }
        }
        async fn disconnect(&self, _: &CallContext, _: DisconnectRequest) -> Result<DisconnectResponse, HandlerError> {
            Err(HandlerError::Failed("gone wrong".into()))
        }
    }

    fn guarded() -> (Guarded, Arc<Mutex<Vec<HandlerFailure>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let report: FailureReporter = Arc::new(move |f| sink.lock().unwrap().push(f));
        (Guarded::new(Arc::new(Flaky), Duration::from_millis(20), Some(report)), seen)
    }

    fn ctx() -> CallContext {
        CallContext { sid: "s1".into() }
    }

    fn message(action: &str) -> CommandMessage {
        CommandMessage {
            command: "message".into(),
            identifier: r#"{"channel":"ChatChannel","room":1}"#.into(),
            data: format!(r#"{{"action":"{action}"}}"#),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_failed_command_becomes_an_error_answer_naming_channel_and_action() {
        let (handler, seen) = guarded();
        let answer = handler.command(&ctx(), message("boom")).await.unwrap();
        assert_eq!(answer.status, Status::Error as i32);
        assert_eq!(answer.error_msg, "ChatChannel#boom: handler failed: it broke");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(
            (seen[0].kind, seen[0].channel.as_deref(), seen[0].action.as_deref()),
            (FailureKind::Failed, Some("ChatChannel"), Some("boom"))
        );
    }

    #[tokio::test]
    async fn a_call_that_never_answers_times_out_into_an_error_answer() {
        let (handler, seen) = guarded();
        let answer = handler.connect(&ctx(), ConnectionRequest::default()).await.unwrap();
        assert_eq!(answer.status, Status::Error as i32);
        assert_eq!(answer.error_msg, "connect: handler did not answer within 20 ms");
        assert_eq!(seen.lock().unwrap()[0].kind, FailureKind::Timeout);
    }

    #[tokio::test]
    async fn successful_calls_pass_through_unreported() {
        let (handler, seen) = guarded();
        let answer = handler.command(&ctx(), message("speak")).await.unwrap();
        assert_eq!(answer.status, Status::Success as i32);
        let answer = handler.disconnect(&ctx(), DisconnectRequest::default()).await.unwrap();
        assert_eq!(
            (answer.status, answer.error_msg.as_str()),
            (Status::Error as i32, "disconnect: handler failed: gone wrong")
        );
        assert_eq!(seen.lock().unwrap().len(), 1, "only the failed disconnect was reported");
    }

    #[tokio::test]
    async fn metered_counts_calls_errors_and_pending() {
        let metrics = Arc::new(Metrics::default());
        let (guarded, _) = guarded();
        let handler = Metered::new(Arc::new(guarded), metrics.clone());
        handler.command(&ctx(), message("speak")).await.unwrap();
        handler.command(&ctx(), message("boom")).await.unwrap();
        let s = metrics.snapshot();
        assert_eq!((s.rpc_call_total, s.rpc_error_total, s.rpc_pending_num), (2, 1, 0));
    }
}
