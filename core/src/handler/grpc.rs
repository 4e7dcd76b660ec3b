//! [`Handler`] over AnyCable's gRPC service `anycable.RPC`, for unchanged AnyCable backends.
//!
//! Calls go through the shared [`CallPolicy`] (`rpc_concurrency`, `rpc_request_timeout`, bounded retries with
//! backoff); Unavailable and ResourceExhausted are the failures worth another attempt. The channel connects
//! lazily, so the server starts and keeps serving while the backend is down and recovers by itself when it
//! returns. With TLS on, each connection of the channel is a rustls session checked against the host of
//! `rpc_host`.
//!
//! Counted as AnyCable-Go counts them (in the call policy and here): `rpc_timeout_total` (a call that ran out of
//! `rpc_request_timeout`, or an attempt the backend answered with DeadlineExceeded), `rpc_canceled_total` (a call
//! abandoned by its caller before it finished, such as a Disconnect still running when `shutdown_timeout` runs
//! out) and `grpc_active_conn_num` (open HTTP/2 connections to the backend).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::pki_types::ServerName;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Request};

use super::calls::{AttemptError, CallPolicy};
use super::{
    CallContext, CommandMessage, CommandResponse, ConnectionRequest, ConnectionResponse, DisconnectRequest,
    DisconnectResponse, Handler, HandlerError,
};
use crate::metrics::Metrics;
use crate::rpc::rpc_client::RpcClient;

/// Protocol versions announced to the backend in metadata `protov`.
const PROTO_VERSIONS: &str = "v1";
/// Base backoff for Unavailable; ResourceExhausted uses a shorter one, as the backend is up but busy.
const UNAVAILABLE_BACKOFF: Duration = Duration::from_millis(100);
const EXHAUSTED_BACKOFF: Duration = Duration::from_millis(10);

/// Settings of the gRPC client.
#[derive(Debug, Clone)]
pub struct GrpcOptions {
    /// `host:port` or a full `http://` / `https://` URI.
    pub host: String,
    pub concurrency: usize,
    pub request_timeout: Option<Duration>,
    /// TLS towards the backend (`rpc_enable_tls`); `None` speaks plain HTTP/2.
    pub tls: Option<Arc<ClientConfig>>,
}

/// The gRPC backend client.
pub struct GrpcHandler {
    client: RpcClient<Channel>,
    policy: CallPolicy,
}

impl GrpcHandler {
    /// Creates the client; no connection is made until the first call.
    pub fn new(options: GrpcOptions, metrics: Arc<Metrics>) -> Result<Self, HandlerError> {
        let scheme = if options.tls.is_some() { "https" } else { "http" };
        let target =
            if options.host.contains("://") { options.host.clone() } else { format!("{scheme}://{}", options.host) };
        let endpoint = Endpoint::from_shared(target.clone())
            .map_err(|e| HandlerError::Failed(format!("invalid rpc_host {:?}: {e}", options.host)))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        let channel = match options.tls {
            None => endpoint.connect_with_connector_lazy(PlainConnector { metrics: metrics.clone() }),
            Some(config) => {
                endpoint.connect_with_connector_lazy(TlsConnector::new(config, endpoint.uri(), metrics.clone())?)
            }
        };
        Ok(Self {
            client: RpcClient::new(channel),
            policy: CallPolicy::new(target, options.concurrency, options.request_timeout, metrics),
        })
    }

    /// Runs one RPC through the shared call policy: Unavailable and ResourceExhausted are retried.
    async fn call<Req, Resp, F, Fut>(&self, ctx: &CallContext, request: Req, send: F) -> Result<Resp, HandlerError>
    where
        Req: Clone,
        F: Fn(RpcClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        self.policy
            .run(|| {
                let mut req = Request::new(request.clone());
                if let Ok(mut sid) = ctx.sid.parse::<tonic::metadata::AsciiMetadataValue>() {
                    // Each session's sid is new. Marked sensitive, HPACK sends it as a literal and keeps it out of
                    // the connection's header table, where every call would add one more dead sid for the next
                    // calls to search and push the constant headers out.
                    sid.set_sensitive(true);
                    req.metadata_mut().insert("sid", sid);
                }
                req.metadata_mut().insert("protov", tonic::metadata::MetadataValue::from_static(PROTO_VERSIONS));
                let sent = send(self.client.clone(), req);
                async move {
                    sent.await.map(tonic::Response::into_inner).map_err(|status| {
                        let backoff = match status.code() {
                            Code::Unavailable => UNAVAILABLE_BACKOFF,
                            Code::ResourceExhausted => EXHAUSTED_BACKOFF,
                            Code::DeadlineExceeded => {
                                return AttemptError::Expired(format!("DeadlineExceeded: {}", status.message()));
                            }
                            code => {
                                return AttemptError::Fail(HandlerError::Failed(format!(
                                    "{code:?}: {}",
                                    status.message()
                                )));
                            }
                        };
                        AttemptError::Retry { backoff, reason: status.message().to_owned() }
                    })
                }
            })
            .await
    }
}

#[async_trait]
impl Handler for GrpcHandler {
    async fn connect(&self, ctx: &CallContext, request: ConnectionRequest) -> Result<ConnectionResponse, HandlerError> {
        self.call(ctx, request, |mut c, r| async move { c.connect(r).await }).await
    }

    async fn command(&self, ctx: &CallContext, request: CommandMessage) -> Result<CommandResponse, HandlerError> {
        self.call(ctx, request, |mut c, r| async move { c.command(r).await }).await
    }

    async fn disconnect(
        &self,
        ctx: &CallContext,
        request: DisconnectRequest,
    ) -> Result<DisconnectResponse, HandlerError> {
        self.call(ctx, request, |mut c, r| async move { c.disconnect(r).await }).await
    }
}

/// TCP to the host and port of `uri` (`default_port` when it names none), without Nagle's delay.
async fn connect_tcp(uri: &Uri, default_port: u16) -> io::Result<TcpStream> {
    let host = uri.host().map(|h| h.trim_start_matches('[').trim_end_matches(']')).unwrap_or_default();
    let tcp = TcpStream::connect((host, uri.port_u16().unwrap_or(default_port))).await?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// Opens the channel's connections in plain HTTP/2.
#[derive(Clone)]
struct PlainConnector {
    metrics: Arc<Metrics>,
}

impl tower_service::Service<Uri> for PlainConnector {
    type Response = TokioIo<Counted<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let metrics = self.metrics.clone();
        Box::pin(async move { Ok(TokioIo::new(Counted::new(connect_tcp(&uri, 80).await?, metrics))) })
    }
}

/// Opens the channel's connections over TLS: TCP to the host and port of `rpc_host`, then a rustls handshake
/// that checks the certificate against that host.
#[derive(Clone)]
struct TlsConnector {
    tls: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
    metrics: Arc<Metrics>,
}

impl TlsConnector {
    fn new(config: Arc<ClientConfig>, target: &Uri, metrics: Arc<Metrics>) -> Result<Self, HandlerError> {
        let host = target.host().map(|h| h.trim_start_matches('[').trim_end_matches(']')).unwrap_or_default();
        let server_name = ServerName::try_from(host.to_owned()).map_err(|e| {
            HandlerError::Failed(format!("rpc_host {host:?} cannot be checked against a certificate: {e}"))
        })?;
        Ok(Self { tls: config.into(), server_name, metrics })
    }
}

impl tower_service::Service<Uri> for TlsConnector {
    type Response = TokioIo<Counted<tokio_rustls::client::TlsStream<TcpStream>>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (tls, server_name, metrics) = (self.tls.clone(), self.server_name.clone(), self.metrics.clone());
        Box::pin(async move {
            let tcp = connect_tcp(&uri, 443).await?;
            Ok(TokioIo::new(Counted::new(tls.connect(server_name, tcp).await?, metrics)))
        })
    }
}

/// A connection to the backend, counted in `grpc_active_conn_num` while it is open.
struct Counted<T> {
    io: T,
    metrics: Arc<Metrics>,
}

impl<T> Counted<T> {
    fn new(io: T, metrics: Arc<Metrics>) -> Self {
        Metrics::up(&metrics.grpc_active_conn_num);
        Self { io, metrics }
    }
}

impl<T> Drop for Counted<T> {
    fn drop(&mut self) {
        Metrics::down(&self.metrics.grpc_active_conn_num);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

crate::forward::forward_async_write!(Counted, io);
