//! Routes each call either to the server's own standalone rules or to the application's handler.
//!
//! Standalone rules answer without the application, in this order:
//! - Connect: a JWT token (when a JWT key is set) identifies the client by its `ext` claim; `enforce_jwt`
//!   refuses clients without one; `noauth` accepts every other client with `{"sid":…}` as identifiers. In
//!   each case the server writes the welcome frame itself.
//! - Command: `$pubsub` subscriptions to a public name (`public_streams`) or a signed name (`streams_secret`),
//!   and signed `Turbo::StreamsChannel` subscriptions (`turbo_streams`), are confirmed or rejected here.
//! - Whisper: whether a subscription may whisper, how often, and the broadcast it becomes.
//!
//! Everything else goes to the backend [`Handler`]. Each answer says whether the backend was involved, which
//! decides whether a Disconnect call is owed in `disconnect_mode=auto`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::jwt::{JwtError, JwtVerifier};
use super::streams::{
    MessageVerifier, StandaloneSubscription, StreamRequest, WHISPER_STREAM_STATE, WhisperBudget,
    standalone_subscription,
};
use super::{
    CallContext, CommandMessage, CommandResponse, ConnectionRequest, ConnectionResponse, DisconnectRequest,
    EnvResponse, Handler, HandlerError, Status,
};
use crate::broadcast::Publication;
use crate::config::Config;
use crate::metrics::{Histogram, Metrics};
use crate::presence::PRESENCE_STREAM_STATE;
use crate::protocol;

pub use super::streams::PUBSUB_CHANNEL;

/// An answer and whether the backend produced it.
pub struct Routed<T> {
    pub result: Result<T, HandlerError>,
    pub via_backend: bool,
}

impl<T> Routed<T> {
    fn local(value: T) -> Self {
        Self { result: Ok(value), via_backend: false }
    }
}

/// The standalone rules, built once from the configuration.
#[derive(Debug, Default)]
pub struct StandaloneRules {
    /// Accept clients without credentials (after JWT, which still applies when a token is given).
    pub noauth: bool,
    /// Verifies identification tokens; `None` turns JWT identification off.
    pub jwt: Option<JwtVerifier>,
    /// Refuse clients without a token (needs `jwt`).
    pub enforce_jwt: bool,
    /// Confirm `$pubsub` subscriptions to unsigned names.
    pub public_streams: bool,
    /// Verifies signed `$pubsub` names; `None` rejects them.
    pub streams: Option<MessageVerifier>,
    /// Signed `$pubsub` subscriptions may whisper.
    pub streams_whisper: bool,
    /// Signed `$pubsub` subscriptions may join presence sets.
    pub streams_presence: bool,
    /// Verifies signed `Turbo::StreamsChannel` names; `None` leaves that channel to the backend.
    pub turbo_streams: Option<MessageVerifier>,
    /// Whispers per second per connection; 0 means no limit.
    pub whisper_rate: u32,
}

impl StandaloneRules {
    pub fn from_config(config: &Config) -> Self {
        Self {
            noauth: config.noauth,
            jwt: config.jwt_secret().map(JwtVerifier::new),
            enforce_jwt: config.enforce_jwt,
            public_streams: config.public_streams,
            streams: config.streams_secret().map(MessageVerifier::new),
            streams_whisper: config.streams_whisper,
            streams_presence: config.streams_presence,
            turbo_streams: config
                .turbo_streams
                .then(|| config.turbo_streams_secret().map(MessageVerifier::new))
                .flatten(),
            whisper_rate: config.whisper_rate,
        }
    }
}

/// A standalone subscription's verified stream and what it may do there.
struct Verified {
    stream: String,
    whisper: bool,
    presence: bool,
}

/// Why a whisper was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WhisperRefused {
    #[error("this subscription may not whisper")]
    NotAllowed,
    #[error("whisper rate exceeded")]
    OverRate,
}

/// The standalone rules in front of an optional backend handler.
pub struct Controller {
    rules: StandaloneRules,
    backend: Option<Arc<dyn Handler>>,
    metrics: Arc<Metrics>,
}

/// Times a backend call into `histogram`.
async fn timed<T>(histogram: &Histogram, call: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let result = call.await;
    histogram.observe(started.elapsed());
    result
}

impl Controller {
    pub fn new(rules: StandaloneRules, backend: Option<Arc<dyn Handler>>, metrics: Arc<Metrics>) -> Self {
        Self { rules, backend, metrics }
    }

    /// Whether Disconnect calls can go anywhere.
    pub fn has_backend(&self) -> bool {
        self.backend.is_some()
    }

    /// Whether a connection token is looked at (a JWT key is set).
    pub fn reads_tokens(&self) -> bool {
        self.rules.jwt.is_some()
    }

    /// Authenticates a connection; `token` is the JWT the client brought, if any.
    pub async fn connect(
        &self,
        ctx: &CallContext,
        request: ConnectionRequest,
        token: Option<&str>,
    ) -> Routed<ConnectionResponse> {
        match self.connect_locally(ctx, token) {
            Some(response) => Routed::local(response),
            None => self.connect_via_backend(ctx, request).await,
        }
    }

    /// Connect as the standalone rules answer it, at once, or `None` when it is the backend's to answer (then
    /// [`Controller::connect_via_backend`]). Lets a session skip building a request nobody reads.
    pub fn connect_locally(&self, ctx: &CallContext, token: Option<&str>) -> Option<ConnectionResponse> {
        if let Some(jwt) = &self.rules.jwt {
            match token {
                Some(token) => return Some(identify(jwt, ctx, token)),
                None if self.rules.enforce_jwt => {
                    return Some(refused("unauthorized", "no token: enforce_jwt requires one".into()));
                }
                None => {}
            }
        }
        if self.rules.noauth {
            return Some(welcomed(ctx, format!("{{\"sid\":{}}}", protocol::json_string(&ctx.sid))));
        }
        match &self.backend {
            Some(_) => None,
            None => {
                Some(refused("unauthorized", "no way to authenticate: enable noauth, JWT or an RPC backend".into()))
            }
        }
    }

    /// Connect through the backend, for a connection [`Controller::connect_locally`] left to it.
    pub async fn connect_via_backend(
        &self,
        ctx: &CallContext,
        request: ConnectionRequest,
    ) -> Routed<ConnectionResponse> {
        match &self.backend {
            Some(backend) => Routed {
                result: timed(&self.metrics.connect_duration, backend.connect(ctx, request)).await,
                via_backend: true,
            },
            None => Routed::local(refused(
                "unauthorized",
                "no way to authenticate: enable noauth, JWT or an RPC backend".into(),
            )),
        }
    }

    pub async fn command(&self, ctx: &CallContext, request: CommandMessage) -> Routed<CommandResponse> {
        match self.command_locally(&request.command, &request.identifier) {
            Some(response) => Routed::local(response),
            None => self.command_via_backend(ctx, request).await,
        }
    }

    /// A command on a subscription the server answers itself (see the module notes), at once, or `None` when
    /// it is the backend's (then [`Controller::command_via_backend`]).
    pub fn command_locally(&self, command: &str, identifier: &str) -> Option<CommandResponse> {
        let subscription = standalone_subscription(identifier, self.rules.turbo_streams.is_some())?;
        Some(self.standalone_command(command, identifier, subscription))
    }

    /// A command through the backend, for one [`Controller::command_locally`] left to it.
    pub async fn command_via_backend(&self, ctx: &CallContext, request: CommandMessage) -> Routed<CommandResponse> {
        match &self.backend {
            Some(backend) => Routed {
                result: timed(&self.metrics.command_duration, backend.command(ctx, request)).await,
                via_backend: true,
            },
            None => Routed::local(no_backend_command(&request)),
        }
    }

    pub async fn disconnect(&self, ctx: &CallContext, request: DisconnectRequest) -> Result<(), HandlerError> {
        let Some(backend) = &self.backend else { return Ok(()) };
        let response = timed(&self.metrics.disconnect_duration, backend.disconnect(ctx, request)).await?;
        if response.status != Status::Success as i32 {
            return Err(HandlerError::Failed(format!(
                "Disconnect returned {}: {}",
                super::status_name(response.status),
                response.error_msg
            )));
        }
        Ok(())
    }

    /// The broadcast a client's whisper becomes: `data` to the subscription's whisper stream (the value of its
    /// istate `$w`), skipping the sender. Refused when the subscription has no whisper stream or the connection
    /// is over `whisper_rate`.
    pub fn whisper(
        &self,
        sid: &str,
        whisper_stream: Option<&str>,
        budget: &mut WhisperBudget,
        data: String,
        now: Instant,
    ) -> Result<Publication, WhisperRefused> {
        let stream = whisper_stream.filter(|s| !s.is_empty()).ok_or(WhisperRefused::NotAllowed)?;
        if !budget.take(self.rules.whisper_rate, now) {
            return Err(WhisperRefused::OverRate);
        }
        // Whispers are transient: they reach who is subscribed now and are never kept in history.
        Ok(Publication { exclude_socket: Some(sid.to_owned()), transient: true, ..Publication::new(stream, data) })
    }

    fn standalone_command(
        &self,
        command: &str,
        identifier: &str,
        subscription: StandaloneSubscription,
    ) -> CommandResponse {
        match command {
            "subscribe" => match self.verified_stream(subscription) {
                Ok(Verified { stream, whisper, presence }) => {
                    let mut istate = HashMap::new();
                    if whisper {
                        istate.insert(WHISPER_STREAM_STATE.to_owned(), stream.clone());
                    }
                    if presence {
                        istate.insert(PRESENCE_STREAM_STATE.to_owned(), stream.clone());
                    }
                    CommandResponse {
                        status: Status::Success as i32,
                        streams: vec![stream],
                        transmissions: vec![protocol::confirm_text(identifier)],
                        env: Some(EnvResponse { cstate: HashMap::new(), istate }),
                        ..Default::default()
                    }
                }
                Err(reason) => CommandResponse {
                    status: Status::Failure as i32,
                    transmissions: vec![protocol::reject_text(identifier)],
                    error_msg: reason,
                    ..Default::default()
                },
            },
            "unsubscribe" => CommandResponse { status: Status::Success as i32, ..Default::default() },
            other => CommandResponse {
                status: Status::Error as i32,
                error_msg: format!("subscriptions the server confirms itself accept no {other:?} command"),
                ..Default::default()
            },
        }
    }

    /// The stream a standalone subscription may stream from, and whether it may whisper and join presence there.
    fn verified_stream(&self, subscription: StandaloneSubscription) -> Result<Verified, String> {
        let (request, verifier, signed_whisper, signed_presence) = match subscription {
            StandaloneSubscription::Pubsub(request) => {
                (request, self.rules.streams.as_ref(), self.rules.streams_whisper, self.rules.streams_presence)
            }
            StandaloneSubscription::Turbo(request) => (request, self.rules.turbo_streams.as_ref(), false, false),
        };
        match request {
            StreamRequest::Public(stream) if self.rules.public_streams => {
                Ok(Verified { stream, whisper: true, presence: true })
            }
            StreamRequest::Public(_) => Err("public streams are not allowed (public_streams is off)".into()),
            StreamRequest::Signed(signed) => {
                let verifier = verifier.ok_or("no key to verify signed stream names: set streams_secret or secret")?;
                let stream = verifier.verified_stream(&signed).map_err(|e| e.to_string())?;
                Ok(Verified { stream, whisper: signed_whisper, presence: signed_presence })
            }
            StreamRequest::Missing => Err("identifier names no stream_name or signed_stream_name string".into()),
        }
    }
}

/// Connect answered from a JWT token: the `ext` identifiers, or `token_expired` / `unauthorized`.
fn identify(jwt: &JwtVerifier, ctx: &CallContext, token: &str) -> ConnectionResponse {
    match jwt.verify(token, super::jwt::unix_now()) {
        Ok(identifiers) => welcomed(ctx, identifiers),
        Err(JwtError::Expired) => refused("token_expired", JwtError::Expired.to_string()),
        Err(error) => refused("unauthorized", error.to_string()),
    }
}

fn welcomed(ctx: &CallContext, identifiers: String) -> ConnectionResponse {
    ConnectionResponse {
        status: Status::Success as i32,
        identifiers,
        transmissions: vec![protocol::welcome_text(&ctx.sid)],
        ..Default::default()
    }
}

fn refused(reason: &str, error_msg: String) -> ConnectionResponse {
    ConnectionResponse {
        status: Status::Failure as i32,
        transmissions: vec![protocol::disconnect_text(reason, false)],
        error_msg,
        ..Default::default()
    }
}

fn no_backend_command(request: &CommandMessage) -> CommandResponse {
    let transmissions =
        if request.command == "subscribe" { vec![protocol::reject_text(&request.identifier)] } else { vec![] };
    CommandResponse {
        status: if request.command == "subscribe" { Status::Failure } else { Status::Error } as i32,
        transmissions,
        error_msg: "no RPC backend to run channel commands".into(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    //! Tokens and signed names were made outside this code with Python's standard library (see the tests of
    //! `jwt.rs` and `streams.rs` for the recipe), with key `s3cr3t` and `ext` = `{"user":"alice"}`.

    use super::*;
    use crate::handler::DisconnectResponse;
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// No `exp`: valid whenever the test runs.
    const TOKEN: &str =
        "eyJhbGciOiJIUzI1NiJ9.eyJleHQiOiJ7XCJ1c2VyXCI6XCJhbGljZVwifSJ9.D3-2t5UrbLA7Q8TSnH7OyzsJooR6OXMDkUoUfmG4Xi8";
    /// `exp` = 1000000000 (2001).
    const EXPIRED: &str = "eyJhbGciOiJIUzI1NiJ9.eyJleHQiOiJ7XCJ1c2VyXCI6XCJhbGljZVwifSIsImV4cCI6MTAwMDAwMDAwMH0.ehLr4MmOrxS03g3n0vLK9s7mBxLIWSM6srGfDwAlIuY";
    /// "chat/2024"
    const SIGNED: &str = "ImNoYXQvMjAyNCI=--42d0afce518d9b9586c82df74dace6e0791f2559caf8f352747f98f8e2d7f56c";

    /// A backend that accepts everything and counts its calls.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    #[async_trait]
    impl Handler for Counting {
        async fn connect(&self, _: &CallContext, _: ConnectionRequest) -> Result<ConnectionResponse, HandlerError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(ConnectionResponse { status: Status::Success as i32, identifiers: "rpc".into(), ..Default::default() })
        }
        async fn command(&self, _: &CallContext, _: CommandMessage) -> Result<CommandResponse, HandlerError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(CommandResponse { status: Status::Success as i32, ..Default::default() })
        }
        async fn disconnect(&self, _: &CallContext, _: DisconnectRequest) -> Result<DisconnectResponse, HandlerError> {
            Ok(DisconnectResponse { status: Status::Success as i32, error_msg: String::new() })
        }
    }

    fn ctx() -> CallContext {
        CallContext { sid: "abc".into() }
    }

    fn command(command: &str, identifier: &str) -> CommandMessage {
        CommandMessage { command: command.into(), identifier: identifier.into(), ..Default::default() }
    }

    fn controller(rules: StandaloneRules) -> Controller {
        Controller::new(rules, None, Arc::default())
    }

    fn with_backend(rules: StandaloneRules) -> (Controller, Arc<Counting>) {
        let backend = Arc::new(Counting::default());
        (Controller::new(rules, Some(backend.clone()), Arc::default()), backend)
    }

    fn jwt_rules() -> StandaloneRules {
        StandaloneRules { jwt: Some(JwtVerifier::new("s3cr3t")), ..Default::default() }
    }

    #[tokio::test]
    async fn noauth_welcomes_with_the_sid_without_a_backend() {
        let c = controller(StandaloneRules { noauth: true, ..Default::default() });
        let r = c.connect(&ctx(), ConnectionRequest::default(), None).await;
        assert!(!r.via_backend);
        let resp = r.result.unwrap();
        assert_eq!(resp.status, Status::Success as i32);
        assert_eq!(resp.identifiers, r#"{"sid":"abc"}"#);
        assert_eq!(resp.transmissions, vec![r#"{"type":"welcome","sid":"abc"}"#]);
    }

    #[tokio::test]
    async fn without_noauth_jwt_or_backend_connections_are_unauthorized() {
        let c = controller(StandaloneRules { public_streams: true, ..Default::default() });
        let resp = c.connect(&ctx(), ConnectionRequest::default(), Some(TOKEN)).await.result.unwrap();
        assert_eq!(resp.status, Status::Failure as i32);
        assert!(resp.transmissions[0].contains("unauthorized"), "a token means nothing without a JWT key");
    }

    #[tokio::test]
    async fn a_valid_token_identifies_the_client_without_the_backend() {
        let (c, backend) = with_backend(jwt_rules());
        let r = c.connect(&ctx(), ConnectionRequest::default(), Some(TOKEN)).await;
        assert!(!r.via_backend);
        let resp = r.result.unwrap();
        assert_eq!(resp.status, Status::Success as i32);
        assert_eq!(resp.identifiers, r#"{"user":"alice"}"#);
        assert_eq!(resp.transmissions, vec![r#"{"type":"welcome","sid":"abc"}"#]);
        assert_eq!(backend.0.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn expired_tokens_get_token_expired_and_bad_ones_unauthorized_even_with_noauth() {
        let (c, backend) = with_backend(StandaloneRules { noauth: true, ..jwt_rules() });
        let resp = c.connect(&ctx(), ConnectionRequest::default(), Some(EXPIRED)).await.result.unwrap();
        assert_eq!(resp.status, Status::Failure as i32);
        assert_eq!(resp.transmissions, vec![r#"{"type":"disconnect","reason":"token_expired","reconnect":false}"#]);
        let resp = c.connect(&ctx(), ConnectionRequest::default(), Some("not.a.token")).await.result.unwrap();
        assert_eq!(resp.status, Status::Failure as i32);
        assert_eq!(resp.transmissions, vec![r#"{"type":"disconnect","reason":"unauthorized","reconnect":false}"#]);
        assert_eq!(backend.0.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn without_a_token_connect_falls_back_to_the_backend_unless_enforce_jwt() {
        let (c, backend) = with_backend(jwt_rules());
        let r = c.connect(&ctx(), ConnectionRequest::default(), None).await;
        assert!(r.via_backend);
        assert_eq!(r.result.unwrap().identifiers, "rpc");
        assert_eq!(backend.0.load(Ordering::SeqCst), 1);

        let (c, backend) = with_backend(StandaloneRules { enforce_jwt: true, noauth: true, ..jwt_rules() });
        let r = c.connect(&ctx(), ConnectionRequest::default(), None).await;
        assert!(!r.via_backend);
        let resp = r.result.unwrap();
        assert_eq!(resp.status, Status::Failure as i32);
        assert!(resp.transmissions[0].contains("unauthorized"), "enforce_jwt wins over noauth");
        assert_eq!(backend.0.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn public_streams_confirm_pubsub_subscriptions_only_when_enabled() {
        let id = r#"{"channel":"$pubsub","stream_name":"news"}"#;
        let open = controller(StandaloneRules { noauth: true, public_streams: true, ..Default::default() });
        let resp = open.command(&ctx(), command("subscribe", id)).await.result.unwrap();
        assert_eq!(resp.status, Status::Success as i32);
        assert_eq!(resp.streams, vec!["news"]);
        assert!(resp.transmissions[0].contains("confirm_subscription"));
        let istate = resp.env.unwrap().istate;
        assert_eq!(istate.get("$w").map(String::as_str), Some("news"), "public streams whisper");
        assert_eq!(istate.get("$p").map(String::as_str), Some("news"), "and have presence");

        let closed = controller(StandaloneRules { noauth: true, ..Default::default() });
        let resp = closed.command(&ctx(), command("subscribe", id)).await.result.unwrap();
        assert_eq!(resp.status, Status::Failure as i32);
        assert!(resp.transmissions[0].contains("reject_subscription"));
    }

    #[tokio::test]
    async fn signed_pubsub_names_are_verified_with_the_streams_secret() {
        let id = format!(r#"{{"channel":"$pubsub","signed_stream_name":"{SIGNED}"}}"#);
        let (c, backend) =
            with_backend(StandaloneRules { streams: Some(MessageVerifier::new("s3cr3t")), ..Default::default() });
        let r = c.command(&ctx(), command("subscribe", &id)).await;
        assert!(!r.via_backend);
        let resp = r.result.unwrap();
        assert_eq!(resp.status, Status::Success as i32);
        assert_eq!(resp.streams, vec!["chat/2024"]);
        let istate = resp.env.unwrap().istate;
        assert_eq!(istate.get("$w"), None, "signed streams whisper only with streams_whisper");
        assert_eq!(istate.get("$p"), None, "and have presence only with streams_presence");
        let (present, _) = with_backend(StandaloneRules {
            streams: Some(MessageVerifier::new("s3cr3t")),
            streams_presence: true,
            ..Default::default()
        });
        let resp = present.command(&ctx(), command("subscribe", &id)).await.result.unwrap();
        assert_eq!(resp.env.unwrap().istate.get("$p").map(String::as_str), Some("chat/2024"));

        let whispering = controller(StandaloneRules {
            streams: Some(MessageVerifier::new("s3cr3t")),
            streams_whisper: true,
            ..Default::default()
        });
        let resp = whispering.command(&ctx(), command("subscribe", &id)).await.result.unwrap();
        assert_eq!(resp.env.unwrap().istate.get("$w").map(String::as_str), Some("chat/2024"));

        let wrong_key =
            controller(StandaloneRules { streams: Some(MessageVerifier::new("other")), ..Default::default() });
        let resp = wrong_key.command(&ctx(), command("subscribe", &id)).await.result.unwrap();
        assert_eq!(resp.status, Status::Failure as i32);
        assert!(resp.transmissions[0].contains("reject_subscription"));
        assert!(resp.streams.is_empty());

        let no_key = controller(StandaloneRules { public_streams: true, ..Default::default() });
        let resp = no_key.command(&ctx(), command("subscribe", &id)).await.result.unwrap();
        assert_eq!(resp.status, Status::Failure as i32, "a signed name without a key is rejected, never trusted");
        assert_eq!(backend.0.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn turbo_streams_channel_is_answered_locally_only_when_turbo_streams_is_on() {
        let id = format!(r#"{{"channel":"Turbo::StreamsChannel","signed_stream_name":"{SIGNED}"}}"#);
        let (c, backend) =
            with_backend(StandaloneRules { turbo_streams: Some(MessageVerifier::new("s3cr3t")), ..Default::default() });
        let r = c.command(&ctx(), command("subscribe", &id)).await;
        assert!(!r.via_backend);
        let resp = r.result.unwrap();
        assert_eq!(resp.streams, vec!["chat/2024"]);
        assert!(resp.transmissions[0].contains("confirm_subscription"));
        assert!(resp.env.unwrap().istate.is_empty(), "Turbo Streams sources never whisper");
        let unsigned = r#"{"channel":"Turbo::StreamsChannel","stream_name":"chat/2024"}"#;
        let resp = c.command(&ctx(), command("subscribe", unsigned)).await.result.unwrap();
        assert_eq!(resp.status, Status::Failure as i32);
        assert_eq!(backend.0.load(Ordering::SeqCst), 0);

        let (off, backend) = with_backend(StandaloneRules::default());
        assert!(off.command(&ctx(), command("subscribe", &id)).await.via_backend);
        assert_eq!(backend.0.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn channel_subscriptions_without_a_backend_are_rejected() {
        let c = controller(StandaloneRules { noauth: true, public_streams: true, ..Default::default() });
        let r = c.command(&ctx(), command("subscribe", r#"{"channel":"ChatChannel"}"#)).await;
        assert!(!r.via_backend);
        let resp = r.result.unwrap();
        assert_eq!(resp.status, Status::Failure as i32);
        assert!(resp.transmissions[0].contains("reject_subscription"));
    }

    #[test]
    fn whispers_go_to_the_whisper_stream_without_the_sender_within_the_rate() {
        let c = controller(StandaloneRules { whisper_rate: 2, ..Default::default() });
        let istate = Some("room");
        let mut budget = WhisperBudget::new();
        let now = Instant::now();
        let p = c.whisper("abc", istate, &mut budget, r#"{"typing":true}"#.into(), now).unwrap();
        assert_eq!(
            p,
            Publication {
                exclude_socket: Some("abc".into()),
                transient: true,
                ..Publication::new("room", r#"{"typing":true}"#)
            }
        );
        assert!(c.whisper("abc", istate, &mut budget, "1".into(), now).is_ok());
        assert_eq!(c.whisper("abc", istate, &mut budget, "1".into(), now), Err(WhisperRefused::OverRate));
        assert_eq!(c.whisper("abc", None, &mut budget, "1".into(), now), Err(WhisperRefused::NotAllowed));
    }
}
