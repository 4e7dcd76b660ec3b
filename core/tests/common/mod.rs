//! Test harness: a small channel application (as a gRPC backend or an in-process handler), the server on a
//! free port, and a WebSocket client that speaks Action Cable.

#![allow(dead_code)]

pub mod engines;
pub mod raw;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ferrocable::handler::{
    CallContext, CommandMessage, CommandResponse, ConnectionRequest, ConnectionResponse, DisconnectRequest,
    DisconnectResponse, EnvResponse, Handler, HandlerError, Status,
};
use ferrocable::rpc::rpc_server::{Rpc, RpcServer};
use ferrocable::{Config, Server};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Every call the application received, in order.
#[derive(Default, Clone)]
pub struct Calls {
    pub connects: Arc<Mutex<Vec<(String, ConnectionRequest)>>>,
    pub commands: Arc<Mutex<Vec<(String, CommandMessage)>>>,
    pub disconnects: Arc<Mutex<Vec<(String, DisconnectRequest)>>>,
}

/// A channel application: `user=<name>` cookie authenticates; `ChatChannel` streams from `chat_<room>`.
#[derive(Default, Clone)]
pub struct ChatApp {
    pub calls: Calls,
}

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

impl ChatApp {
    pub fn connect(&self, sid: &str, req: ConnectionRequest) -> ConnectionResponse {
        self.calls.connects.lock().unwrap().push((sid.to_owned(), req.clone()));
        let env = req.env.unwrap_or_default();
        let cookie = env.headers.get("cookie").cloned().unwrap_or_default();
        let user = cookie.split("; ").find_map(|c| c.strip_prefix("user=")).unwrap_or("");
        if user.is_empty() || user == "bad" {
            return ConnectionResponse {
                status: Status::Failure as i32,
                transmissions: vec![json!({"type":"disconnect","reason":"unauthorized","reconnect":false}).to_string()],
                ..Default::default()
            };
        }
        ConnectionResponse {
            status: Status::Success as i32,
            identifiers: json!({ "current_user": user }).to_string(),
            transmissions: vec![json!({"type":"welcome","sid":sid}).to_string()],
            env: Some(EnvResponse { cstate: map(&[("user", user)]), istate: HashMap::new() }),
            ..Default::default()
        }
    }

    pub fn command(&self, sid: &str, req: CommandMessage) -> CommandResponse {
        self.calls.commands.lock().unwrap().push((sid.to_owned(), req.clone()));
        let id: Value = serde_json::from_str(&req.identifier).unwrap_or(Value::Null);
        let room = id["room"].as_str().unwrap_or("lobby").to_owned();
        let env = req.env.clone().unwrap_or_default();
        let mut resp = CommandResponse { status: Status::Success as i32, ..Default::default() };
        match req.command.as_str() {
            "subscribe" if room == "secret" => {
                resp.status = Status::Failure as i32;
                resp.transmissions =
                    vec![json!({"identifier": req.identifier, "type": "reject_subscription"}).to_string()];
            }
            "subscribe" => {
                resp.streams = vec![format!("chat_{room}")];
                resp.transmissions =
                    vec![json!({"identifier": req.identifier, "type": "confirm_subscription"}).to_string()];
                resp.env = Some(EnvResponse { cstate: HashMap::new(), istate: map(&[("room", &room)]) });
            }
            "unsubscribe" => {}
            "message" => {
                let data: Value = serde_json::from_str(&req.data).unwrap_or(Value::Null);
                match data["action"].as_str().unwrap_or("") {
                    "set_state" => {
                        resp.env = Some(EnvResponse {
                            cstate: map(&[("mood", data["mood"].as_str().unwrap_or("")), ("user", "")]),
                            istate: map(&[("count", data["count"].as_str().unwrap_or(""))]),
                        });
                    }
                    "whoami" => {
                        let msg =
                            json!({"cstate": env.cstate, "istate": env.istate, "ids": req.connection_identifiers});
                        resp.transmissions = vec![json!({"identifier": req.identifier, "message": msg}).to_string()];
                    }
                    // A transmission that is not JSON, then a good one.
                    "garble" => {
                        resp.transmissions = vec![
                            "<not json>".to_owned(),
                            json!({"identifier": req.identifier, "message": "after the garbage"}).to_string(),
                        ];
                    }
                    "follow" => resp.streams = vec![data["stream"].as_str().unwrap_or("").to_owned()],
                    "unfollow" => resp.stopped_streams = vec![data["stream"].as_str().unwrap_or("").to_owned()],
                    "stop_all" => resp.stop_streams = true,
                    "kick" => {
                        resp.disconnect = true;
                        resp.transmissions =
                            vec![json!({"type":"disconnect","reason":"kicked","reconnect":false}).to_string()];
                    }
                    "fail" => {
                        resp.status = Status::Error as i32;
                        resp.error_msg = "boom".into();
                    }
                    _ => {}
                }
            }
            _ => resp.status = Status::Error as i32,
        }
        resp
    }

    pub fn disconnect(&self, sid: &str, req: DisconnectRequest) -> DisconnectResponse {
        self.calls.disconnects.lock().unwrap().push((sid.to_owned(), req));
        DisconnectResponse { status: Status::Success as i32, error_msg: String::new() }
    }
}

/// The app as an in-process handler.
#[async_trait]
impl Handler for ChatApp {
    async fn connect(&self, ctx: &CallContext, r: ConnectionRequest) -> Result<ConnectionResponse, HandlerError> {
        Ok(ChatApp::connect(self, &ctx.sid, r))
    }
    async fn command(&self, ctx: &CallContext, r: CommandMessage) -> Result<CommandResponse, HandlerError> {
        Ok(ChatApp::command(self, &ctx.sid, r))
    }
    async fn disconnect(&self, ctx: &CallContext, r: DisconnectRequest) -> Result<DisconnectResponse, HandlerError> {
        Ok(ChatApp::disconnect(self, &ctx.sid, r))
    }
}

fn sid_of<T>(req: &tonic::Request<T>) -> String {
    req.metadata().get("sid").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

/// The app as a gRPC backend.
#[tonic::async_trait]
impl Rpc for ChatApp {
    async fn connect(
        &self,
        r: tonic::Request<ConnectionRequest>,
    ) -> Result<tonic::Response<ConnectionResponse>, tonic::Status> {
        let sid = sid_of(&r);
        Ok(tonic::Response::new(ChatApp::connect(self, &sid, r.into_inner())))
    }
    async fn command(
        &self,
        r: tonic::Request<CommandMessage>,
    ) -> Result<tonic::Response<CommandResponse>, tonic::Status> {
        let sid = sid_of(&r);
        Ok(tonic::Response::new(ChatApp::command(self, &sid, r.into_inner())))
    }
    async fn disconnect(
        &self,
        r: tonic::Request<DisconnectRequest>,
    ) -> Result<tonic::Response<DisconnectResponse>, tonic::Status> {
        let sid = sid_of(&r);
        Ok(tonic::Response::new(ChatApp::disconnect(self, &sid, r.into_inner())))
    }
}

/// Serves the app over gRPC on a free loopback port until the returned guard is dropped.
pub async fn start_grpc_backend(app: ChatApp) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (addr, serve_grpc(app, tokio_stream::wrappers::TcpListenerStream::new(listener)))
}

/// Serves the app over gRPC on the connections `incoming` yields, until the returned task is aborted.
pub fn serve_grpc<IO, IE>(
    app: ChatApp,
    incoming: impl futures_util::Stream<Item = Result<IO, IE>> + Send + 'static,
) -> tokio::task::JoinHandle<()>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + tonic::transport::server::Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(RpcServer::new(app))
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    })
}

/// A config for tests: loopback, free ports, fast pings.
pub fn test_config(extra: &[(&str, &str)]) -> Config {
    let mut config = Config::default();
    for (k, v) in [("host", "127.0.0.1"), ("port", "0"), ("http_broadcast_port", "0"), ("shutdown_timeout", "5")] {
        config.set(k, v).unwrap();
    }
    for (k, v) in extra {
        config.set(k, v).unwrap();
    }
    config
}

/// Which way the app is reached.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    Grpc,
    InProcess,
}

/// The server with the chat app behind it.
pub struct Fixture {
    pub server: Server,
    pub app: ChatApp,
    backend: Option<tokio::task::JoinHandle<()>>,
}

impl Fixture {
    pub async fn start(mode: Mode, extra: &[(&str, &str)]) -> Self {
        let app = ChatApp::default();
        match mode {
            Mode::Grpc => {
                let (addr, handle) = start_grpc_backend(app.clone()).await;
                let rpc_host = addr.to_string();
                let mut opts = vec![("rpc_host", rpc_host.as_str())];
                opts.extend_from_slice(extra);
                let server = Server::start(test_config(&opts), None).await.unwrap();
                Self { server, app, backend: Some(handle) }
            }
            Mode::InProcess => {
                let server = Server::start(test_config(extra), Some(Arc::new(app.clone()))).await.unwrap();
                Self { server, app, backend: None }
            }
        }
    }

    pub fn url(&self, query: &str) -> String {
        format!("ws://{}/cable{query}", self.server.local_addr())
    }

    pub async fn client(&self, user: &str) -> Client {
        Client::connect(&self.url(""), Some(&format!("user={user}"))).await
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(h) = self.backend.take() {
            h.abort();
        }
    }
}

/// A raw Action Cable client.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

pub const TIMEOUT: Duration = Duration::from_secs(5);

impl Client {
    pub async fn connect(url: &str, cookie: Option<&str>) -> Self {
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert("Sec-WebSocket-Protocol", "actioncable-v1-json".parse().unwrap());
        if let Some(cookie) = cookie {
            request.headers_mut().insert("Cookie", cookie.parse().unwrap());
        }
        let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        Self { ws }
    }

    /// Connects to a `wss://` URL trusting what `tls` trusts; the error is the handshake's when it fails, and
    /// a handshake that takes longer than [`TIMEOUT`] is a test failure.
    pub async fn connect_tls(
        url: &str,
        cookie: Option<&str>,
        tls: Arc<tokio_rustls::rustls::ClientConfig>,
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        let mut request = url.into_client_request()?;
        request.headers_mut().insert("Sec-WebSocket-Protocol", "actioncable-v1-json".parse().unwrap());
        if let Some(cookie) = cookie {
            request.headers_mut().insert("Cookie", cookie.parse().unwrap());
        }
        let connector = tokio_tungstenite::Connector::Rustls(tls);
        let connect = tokio_tungstenite::connect_async_tls_with_config(request, None, false, Some(connector));
        let (ws, _) =
            tokio::time::timeout(TIMEOUT, connect).await.expect("no TLS and WebSocket handshake within 5s")?;
        Ok(Self { ws })
    }

    /// Wraps a WebSocket opened by the test itself.
    pub fn from_stream(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Self {
        Self { ws }
    }

    /// The client's own address (the server's side of the connection has it as its peer).
    pub fn local_addr(&self) -> SocketAddr {
        match self.ws.get_ref() {
            MaybeTlsStream::Plain(stream) => stream.local_addr().unwrap(),
            _ => panic!("the test client only speaks plain TCP"),
        }
    }

    /// Connects with extra request headers; a `Sec-WebSocket-Protocol` given here replaces the default one.
    pub async fn connect_with_headers(url: &str, headers: &[(&str, &str)]) -> Self {
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert("Sec-WebSocket-Protocol", "actioncable-v1-json".parse().unwrap());
        for (name, value) in headers {
            let name = tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap();
            request.headers_mut().insert(name, value.parse().unwrap());
        }
        let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        Self { ws }
    }

    pub async fn send(&mut self, frame: Value) {
        self.ws.send(Message::Text(frame.to_string().into())).await.unwrap();
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.ws.send(message).await.unwrap();
    }

    /// The next non-ping JSON frame; panics on close or timeout.
    pub async fn recv(&mut self) -> Value {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next()).await;
            let message = match next {
                Ok(Some(Ok(m))) => Some(m),
                Ok(_) => None,
                Err(_) => panic!("no frame within {TIMEOUT:?}"),
            };
            match message {
                Some(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["type"] != "ping" {
                        return v;
                    }
                }
                Some(Message::Close(frame)) => panic!("closed: {frame:?}"),
                Some(_) => {}
                None => panic!("stream ended"),
            }
        }
    }

    /// The next non-ping JSON frame if one arrives within `wait`; panics on close.
    pub async fn try_recv(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["type"] != "ping" {
                        return Some(v);
                    }
                }
                Ok(Some(Ok(Message::Close(frame)))) => panic!("closed: {frame:?}"),
                Ok(Some(Ok(_))) => {}
                Ok(other) => panic!("stream ended: {other:?}"),
            }
        }
    }

    /// The next frame of any kind (pings included), `None` at end of stream.
    pub async fn next_message(&mut self) -> Option<Message> {
        match tokio::time::timeout(TIMEOUT, self.ws.next()).await {
            Ok(Some(Ok(m))) => Some(m),
            Ok(Some(Err(_))) | Ok(None) => None,
            Err(_) => panic!("no frame within {TIMEOUT:?}"),
        }
    }

    /// Waits for the close frame, skipping anything else; returns its code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            match self.next_message().await {
                Some(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                None => return None,
                Some(_) => {}
            }
        }
    }

    /// Asserts nothing but pings arrives for `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Text(t)))) if t.contains("\"ping\"") => {}
                Ok(other) => panic!("expected silence, got {other:?}"),
            }
        }
    }

    pub async fn subscribe(&mut self, identifier: &str) -> Value {
        self.send(json!({"command":"subscribe","identifier":identifier})).await;
        self.recv().await
    }

    pub async fn perform(&mut self, identifier: &str, data: Value) {
        self.send(json!({"command":"message","identifier":identifier,"data":data.to_string()})).await;
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(TIMEOUT, self.ws.next()).await {}
    }
}

/// A client of `user` past its welcome frame, and its sid.
pub async fn welcomed(fx: &Fixture, user: &str) -> (Client, String) {
    let mut c = fx.client(user).await;
    let welcome = c.recv().await;
    assert_eq!(welcome["type"], "welcome");
    let sid = welcome["sid"].as_str().unwrap().to_owned();
    (c, sid)
}

/// Polls `check` until it is true or the timeout passes.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `check` until it is true or `limit` passes (for waits longer or shorter than [`TIMEOUT`]).
pub async fn within(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A minimal HTTP/1.0 request over loopback; returns (status, body).
pub async fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    http_over(stream, addr, method, path, headers, body).await
}

/// The request of [`http`] over a connection already made (e.g. a TLS session); returns (status, body).
pub async fn http_over(
    stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    exchange(stream, request.as_bytes()).await
}

/// Writes `request` as it is (any framing, any bytes) over loopback; returns (status, body).
pub async fn http_raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    exchange(TcpStream::connect(addr).await.unwrap(), request).await
}

/// Writes `request` and reads the answer until the peer closes. The server may answer and close before taking
/// the whole request (a body over its limit), and a TLS peer may close without close_notify, so neither a
/// failed write nor an error at the end of the read is an error here: the answer is what was read.
async fn exchange(
    mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    request: &[u8],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.write_all(request).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut response)).await.expect("no answer in time");
    let response = String::from_utf8_lossy(&response);
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// Everything the servers of this test binary log, from the first call on (the subscriber is process-wide).
pub fn logs() -> String {
    static LOGS: std::sync::OnceLock<Arc<Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    let buffer = LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        tracing_subscriber::fmt()
            .with_env_filter("debug,h2=warn,hyper=warn,tower=warn,tonic=warn")
            .with_ansi(false)
            .with_writer(move || LogSink(sink.clone()))
            .init();
        buffer
    });
    String::from_utf8_lossy(&buffer.lock().unwrap()).into_owned()
}

struct LogSink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The file descriptors this process has open (the server's and the test's own).
pub fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|dir| dir.count()).unwrap_or(0)
}
