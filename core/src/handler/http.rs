//! [`Handler`] over AnyCable's HTTP RPC, for backends that cannot run a gRPC server (serverless functions,
//! any web framework): each call is a JSON `POST <rpc_host>/connect`, `/command` or `/disconnect`.
//!
//! The bodies are the rpc.proto messages as JSON with their proto field names (`connection_identifiers`,
//! `stop_streams`…), empty fields left out as AnyCable-Go does; answers may name fields either way
//! (`error_msg` or `errorMsg`) and give the status as a number or its name. Requests carry `Authorization:
//! Bearer <http_rpc_secret>` and the session id and protocol version as `x-anycable-meta-sid` and
//! `x-anycable-meta-protov`. Calls go through the shared [`CallPolicy`]; only a connection that cannot be
//! opened is retried (the request was never sent). Any other failure — a non-200 status, a body that is not
//! the expected JSON or is larger than [`MAX_RESPONSE_BYTES`], the time limit — fails that one call with one
//! warning naming the reason; it never touches other calls or the pooled connections. Connections are kept
//! alive and reused; over https:// ALPN picks HTTP/2 when the backend offers it, else HTTP/1.1.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::pki_types::ServerName;

use super::calls::{AttemptError, CallPolicy};
use super::{
    CallContext, CommandMessage, CommandResponse, ConnectionRequest, ConnectionResponse, DisconnectRequest,
    DisconnectResponse, Env, EnvResponse, Handler, HandlerError,
};
use crate::metrics::Metrics;

/// Protocol versions announced to the backend in `x-anycable-meta-protov`.
const PROTO_VERSIONS: HeaderValue = HeaderValue::from_static("v1");
/// The largest answer accepted; a larger one fails the call.
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;
/// Base backoff while the backend cannot be reached.
const UNAVAILABLE_BACKOFF: Duration = Duration::from_millis(100);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an idle pooled connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Settings of the HTTP RPC client.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// The base URL (`http://` or `https://`); the call name is appended as a path segment.
    pub url: String,
    /// Sent as `Authorization: Bearer <secret>` when set.
    pub secret: Option<String>,
    pub concurrency: usize,
    pub request_timeout: Duration,
    /// Trust settings for https:// (`rpc_tls_root_ca`, `rpc_tls_verify`); required for an https:// URL.
    pub tls: Option<Arc<ClientConfig>>,
}

/// The HTTP RPC backend client.
pub struct HttpHandler {
    client: Client<Connector, Full<Bytes>>,
    connect_uri: Uri,
    command_uri: Uri,
    disconnect_uri: Uri,
    authorization: Option<HeaderValue>,
    policy: CallPolicy,
    shown_url: String,
}

impl HttpHandler {
    /// Creates the client; no connection is made until the first call.
    pub fn new(options: HttpOptions, metrics: Arc<Metrics>) -> Result<Self, HandlerError> {
        let invalid = |reason: String| HandlerError::Failed(format!("invalid rpc_host {:?}: {reason}", options.url));
        let base: Uri = options.url.parse().map_err(|e| invalid(format!("{e}")))?;
        let https = match base.scheme_str().map(str::to_ascii_lowercase).as_deref() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(invalid("expected an http:// or https:// URL".into())),
        };
        let host = base.host().ok_or_else(|| invalid("no host".into()))?;
        let tls = match (https, options.tls) {
            (false, _) => None,
            (true, None) => return Err(invalid("an https:// URL needs a TLS configuration".into())),
            (true, Some(config)) => {
                let mut config = (*config).clone();
                // The same trust settings as gRPC, but either protocol: HTTP/2 when the backend offers it.
                config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
                let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
                let server_name = ServerName::try_from(host.clone())
                    .map_err(|e| invalid(format!("{host:?} cannot be checked against a certificate: {e}")))?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(config)), server_name))
            }
        };
        let uri = |call: &str| -> Result<Uri, HandlerError> {
            let mut url = options.url.trim_end_matches('/').to_owned();
            url.push('/');
            url.push_str(call);
            url.parse().map_err(|e| invalid(format!("{e}")))
        };
        let authorization = match &options.secret {
            Some(secret) => Some(
                HeaderValue::from_str(&format!("Bearer {secret}"))
                    .map_err(|_| HandlerError::Failed("http_rpc_secret cannot be sent in an HTTP header".into()))?,
            ),
            None => None,
        };
        // Logs name the backend without a password the URL may hold.
        let shown_url = crate::config::redact_url(&options.url);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(options.concurrency.max(1))
            .build(Connector { tls: tls.map(Arc::new) });
        Ok(Self {
            client,
            connect_uri: uri("connect")?,
            command_uri: uri("command")?,
            disconnect_uri: uri("disconnect")?,
            authorization,
            policy: CallPolicy::new(shown_url.clone(), options.concurrency, Some(options.request_timeout), metrics),
            shown_url,
        })
    }

    /// POSTs `request` as JSON to `uri` and reads the answer, through the shared call policy.
    async fn call<Req, Json, Resp>(
        &self,
        name: &'static str,
        uri: &Uri,
        ctx: &CallContext,
        request: &Req,
    ) -> Result<Resp, HandlerError>
    where
        Req: Serialize,
        Json: DeserializeOwned + Into<Resp>,
    {
        let body = Bytes::from(serde_json::to_vec(request).map_err(|e| HandlerError::Failed(e.to_string()))?);
        let result = self.policy.run(|| self.attempt::<Json>(uri, ctx, body.clone())).await;
        if let Err(error @ (HandlerError::Failed(_) | HandlerError::Timeout)) = &result {
            tracing::warn!(call = name, sid = %ctx.sid, backend = %self.shown_url, %error, "HTTP RPC call failed");
        }
        result.map(Into::into)
    }

    async fn attempt<Json: DeserializeOwned>(
        &self,
        uri: &Uri,
        ctx: &CallContext,
        body: Bytes,
    ) -> Result<Json, AttemptError> {
        let fail = |reason: String| AttemptError::Fail(HandlerError::Failed(reason));
        let mut request = Request::builder().method(Method::POST).uri(uri.clone());
        let headers = request.headers_mut().ok_or_else(|| fail("cannot build the request".into()))?;
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(authorization) = &self.authorization {
            headers.insert(AUTHORIZATION, authorization.clone());
        }
        if let Ok(mut sid) = HeaderValue::from_str(&ctx.sid) {
            // Over HTTP/2, a sensitive value stays out of HPACK's table, which a new sid per session would only
            // fill with entries no later call uses.
            sid.set_sensitive(true);
            headers.insert("x-anycable-meta-sid", sid);
        }
        headers.insert("x-anycable-meta-protov", PROTO_VERSIONS);
        let request = request.body(Full::new(body)).map_err(|e| fail(format!("cannot build the request: {e}")))?;
        let response = match self.client.request(request).await {
            Ok(response) => response,
            Err(error) if error.is_connect() => {
                let reason = std::error::Error::source(&error).map_or_else(|| error.to_string(), ToString::to_string);
                return Err(AttemptError::Retry { backoff: UNAVAILABLE_BACKOFF, reason });
            }
            Err(error) => {
                let reason = std::error::Error::source(&error).map_or_else(|| error.to_string(), ToString::to_string);
                return Err(fail(format!("request failed: {reason}")));
            }
        };
        let status = response.status();
        let declared = response.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|len| len > MAX_RESPONSE_BYTES as u64) {
            return Err(fail(format!("HTTP {status} with a body larger than {MAX_RESPONSE_BYTES} bytes")));
        }
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES).collect().await.map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                fail(format!("HTTP {status} with a body larger than {MAX_RESPONSE_BYTES} bytes"))
            } else {
                fail(format!("HTTP {status}, reading the body failed: {e}"))
            }
        })?;
        let body = body.to_bytes();
        match status {
            StatusCode::OK => serde_json::from_slice(&body)
                .map_err(|e| fail(format!("the answer is not the expected JSON ({e}): {}", excerpt(&body)))),
            StatusCode::UNAUTHORIZED => Err(fail(
                "HTTP 401: the backend refused the key; check http_rpc_secret (or secret) on both sides".into(),
            )),
            status => Err(fail(format!("HTTP {status}: {}", excerpt(&body)))),
        }
    }
}

/// The start of a body for a log line, as text.
fn excerpt(body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX)]);
    let text = text.trim();
    match (text.is_empty(), body.len() > MAX) {
        (true, _) => "(empty body)".to_owned(),
        (false, true) => format!("{text}…"),
        (false, false) => text.to_owned(),
    }
}

#[async_trait]
impl Handler for HttpHandler {
    async fn connect(&self, ctx: &CallContext, request: ConnectionRequest) -> Result<ConnectionResponse, HandlerError> {
        let json = ConnectJson { env: request.env.as_ref().map(EnvJson::from) };
        self.call::<_, ConnectAnswer, _>("connect", &self.connect_uri, ctx, &json).await
    }

    async fn command(&self, ctx: &CallContext, request: CommandMessage) -> Result<CommandResponse, HandlerError> {
        let json = CommandJson {
            command: &request.command,
            identifier: &request.identifier,
            connection_identifiers: &request.connection_identifiers,
            data: &request.data,
            env: request.env.as_ref().map(EnvJson::from),
        };
        self.call::<_, CommandAnswer, _>("command", &self.command_uri, ctx, &json).await
    }

    async fn disconnect(
        &self,
        ctx: &CallContext,
        request: DisconnectRequest,
    ) -> Result<DisconnectResponse, HandlerError> {
        let json = DisconnectJson {
            identifiers: &request.identifiers,
            subscriptions: &request.subscriptions,
            env: request.env.as_ref().map(EnvJson::from),
        };
        self.call::<_, DisconnectAnswer, _>("disconnect", &self.disconnect_uri, ctx, &json).await
    }
}

// --- the JSON messages ------------------------------------------------------------------------------

#[derive(Serialize)]
struct EnvJson<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    url: &'a str,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    headers: &'a HashMap<String, String>,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    cstate: &'a HashMap<String, String>,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    istate: &'a HashMap<String, String>,
}

impl<'a> From<&'a Env> for EnvJson<'a> {
    fn from(env: &'a Env) -> Self {
        Self { url: &env.url, headers: &env.headers, cstate: &env.cstate, istate: &env.istate }
    }
}

#[derive(Serialize)]
struct ConnectJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    env: Option<EnvJson<'a>>,
}

#[derive(Serialize)]
struct CommandJson<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    command: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    identifier: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    connection_identifiers: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    data: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    env: Option<EnvJson<'a>>,
}

#[derive(Serialize)]
struct DisconnectJson<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    identifiers: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    subscriptions: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    env: Option<EnvJson<'a>>,
}

/// A field that may be missing or `null`: its default then.
fn or_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A status as its number (what AnyCable's libraries send) or its name (proto3 JSON).
fn status<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(i32),
        Name(String),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(0),
        Some(Raw::Number(n @ 0..=2)) => Ok(n),
        Some(Raw::Name(name)) => match name.as_str() {
            "ERROR" => Ok(0),
            "SUCCESS" => Ok(1),
            "FAILURE" => Ok(2),
            _ => Err(serde::de::Error::custom(format!("unknown status {name:?}"))),
        },
        Some(Raw::Number(n)) => Err(serde::de::Error::custom(format!("unknown status {n}"))),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct EnvAnswer {
    #[serde(deserialize_with = "or_default")]
    cstate: HashMap<String, String>,
    #[serde(deserialize_with = "or_default")]
    istate: HashMap<String, String>,
}

impl From<EnvAnswer> for EnvResponse {
    fn from(env: EnvAnswer) -> Self {
        Self { cstate: env.cstate, istate: env.istate }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ConnectAnswer {
    #[serde(deserialize_with = "status")]
    status: i32,
    #[serde(deserialize_with = "or_default")]
    identifiers: String,
    #[serde(deserialize_with = "or_default")]
    transmissions: Vec<String>,
    #[serde(deserialize_with = "or_default", alias = "errorMsg")]
    error_msg: String,
    env: Option<EnvAnswer>,
}

impl From<ConnectAnswer> for ConnectionResponse {
    fn from(a: ConnectAnswer) -> Self {
        Self {
            status: a.status,
            identifiers: a.identifiers,
            transmissions: a.transmissions,
            error_msg: a.error_msg,
            env: a.env.map(Into::into),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CommandAnswer {
    #[serde(deserialize_with = "status")]
    status: i32,
    #[serde(deserialize_with = "or_default")]
    disconnect: bool,
    #[serde(deserialize_with = "or_default", alias = "stopStreams")]
    stop_streams: bool,
    #[serde(deserialize_with = "or_default")]
    streams: Vec<String>,
    #[serde(deserialize_with = "or_default", alias = "stoppedStreams")]
    stopped_streams: Vec<String>,
    #[serde(deserialize_with = "or_default")]
    transmissions: Vec<String>,
    #[serde(deserialize_with = "or_default", alias = "errorMsg")]
    error_msg: String,
    env: Option<EnvAnswer>,
    presence: Option<PresenceAnswer>,
}

/// A Command answer's presence change (`type` join / leave, the member's `id` and `info` JSON text).
#[derive(Deserialize, Default)]
#[serde(default)]
struct PresenceAnswer {
    #[serde(deserialize_with = "or_default", rename = "type")]
    kind: String,
    #[serde(deserialize_with = "or_default")]
    id: String,
    #[serde(deserialize_with = "or_default")]
    info: String,
    #[serde(deserialize_with = "or_default")]
    ttl: u32,
}

impl From<CommandAnswer> for CommandResponse {
    fn from(a: CommandAnswer) -> Self {
        Self {
            status: a.status,
            disconnect: a.disconnect,
            stop_streams: a.stop_streams,
            streams: a.streams,
            transmissions: a.transmissions,
            error_msg: a.error_msg,
            env: a.env.map(Into::into),
            stopped_streams: a.stopped_streams,
            presence: a.presence.map(|p| super::PresenceResponse {
                r#type: p.kind,
                id: p.id,
                info: p.info,
                ttl: p.ttl,
            }),
            // Timers and stream callbacks are for in-process handlers only.
            periodic_timers: Vec::new(),
            callback_streams: Vec::new(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DisconnectAnswer {
    #[serde(deserialize_with = "status")]
    status: i32,
    #[serde(deserialize_with = "or_default", alias = "errorMsg")]
    error_msg: String,
}

impl From<DisconnectAnswer> for DisconnectResponse {
    fn from(a: DisconnectAnswer) -> Self {
        Self { status: a.status, error_msg: a.error_msg }
    }
}

// --- connections ------------------------------------------------------------------------------------

/// Opens the pool's connections: TCP to the URL's host and port, then TLS checked against the host of
/// `rpc_host` for https://.
#[derive(Clone)]
struct Connector {
    tls: Option<Arc<(tokio_rustls::TlsConnector, ServerName<'static>)>>,
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<BackendStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let host = uri.host().map(|h| h.trim_start_matches('[').trim_end_matches(']')).unwrap_or_default();
            let port = uri.port_u16().unwrap_or(if tls.is_some() { 443 } else { 80 });
            let tcp =
                tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port))).await.map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, format!("connecting to {host}:{port} timed out"))
                })??;
            tcp.set_nodelay(true)?;
            Ok(TokioIo::new(match tls.as_deref() {
                None => BackendStream::Plain(tcp),
                Some((connector, name)) => BackendStream::Tls(Box::new(connector.connect(name.clone(), tcp).await?)),
            }))
        })
    }
}

/// One connection to the backend, plain or TLS.
enum BackendStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for BackendStream {
    fn connected(&self) -> Connected {
        match self {
            Self::Plain(_) => Connected::new(),
            Self::Tls(tls) if tls.get_ref().1.alpn_protocol() == Some(b"h2") => Connected::new().negotiated_h2(),
            Self::Tls(_) => Connected::new(),
        }
    }
}

impl AsyncRead for BackendStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_use_proto_field_names_and_leave_empty_fields_out() {
        let env = Env {
            url: "ws://example.com/cable".into(),
            headers: HashMap::from([("cookie".into(), "user=ann".into())]),
            cstate: HashMap::new(),
            istate: HashMap::from([("room".into(), "1".into())]),
        };
        let json = serde_json::to_value(CommandJson {
            command: "message",
            identifier: "{\"channel\":\"Chat\"}",
            connection_identifiers: "{\"user\":\"ann\"}",
            data: "",
            env: Some(EnvJson::from(&env)),
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "command": "message",
                "identifier": "{\"channel\":\"Chat\"}",
                "connection_identifiers": "{\"user\":\"ann\"}",
                "env": {"url": "ws://example.com/cable", "headers": {"cookie": "user=ann"}, "istate": {"room": "1"}}
            })
        );
    }

    #[test]
    fn answers_take_numbers_or_names_either_field_spelling_and_nulls() {
        let a: CommandAnswer = serde_json::from_str(
            r#"{"status":1,"stopStreams":true,"stopped_streams":["a"],"streams":null,"errorMsg":"x",
                "env":{"cstate":null,"istate":{"k":"v"}}}"#,
        )
        .unwrap();
        let r = CommandResponse::from(a);
        assert_eq!(r.status, 1);
        assert!(r.stop_streams && !r.disconnect);
        assert_eq!(r.stopped_streams, ["a"]);
        assert!(r.streams.is_empty());
        assert_eq!(r.error_msg, "x");
        assert_eq!(r.env.unwrap().istate["k"], "v");
        assert!(r.presence.is_none());
        let a: CommandAnswer =
            serde_json::from_str(r#"{"status":1,"presence":{"type":"join","id":"7","info":"{\"name\":\"Ann\"}"}}"#)
                .unwrap();
        let presence = CommandResponse::from(a).presence.unwrap();
        assert_eq!(
            (presence.r#type.as_str(), presence.id.as_str(), presence.info.as_str()),
            ("join", "7", r#"{"name":"Ann"}"#)
        );
        let a: ConnectAnswer = serde_json::from_str(r#"{"status":"FAILURE","transmissions":["t"]}"#).unwrap();
        assert_eq!((a.status, a.transmissions.len()), (2, 1));
        assert!(serde_json::from_str::<ConnectAnswer>(r#"{"status":7}"#).is_err());
        assert!(serde_json::from_str::<ConnectAnswer>(r#"{"status":"MAYBE"}"#).is_err());
        assert!(serde_json::from_str::<ConnectAnswer>(r#"{"transmissions":"not a list"}"#).is_err());
        let a: DisconnectAnswer = serde_json::from_str("{}").unwrap();
        assert_eq!(a.status, 0, "a missing status is ERROR, as in proto3");
    }

    #[test]
    fn excerpts_are_short_text() {
        assert_eq!(excerpt(b""), "(empty body)");
        assert_eq!(excerpt(b" oops \n"), "oops");
        assert_eq!(excerpt(&[b'a'; 300]).chars().count(), 201);
    }
}
