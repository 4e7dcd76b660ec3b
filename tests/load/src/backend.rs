//! A trivial AnyCable backend serving the benchmark channel, so every server under test calls the same
//! application: Connect accepts everyone, `BenchmarkChannel` streams from its `stream` parameter (default
//! `all`), `echo` transmits the data back, `broadcast` publishes the data to the stream over HTTP. It answers
//! over gRPC, and with `--http-listen` also over AnyCable's HTTP RPC (JSON POSTs to `/connect`, `/command`,
//! `/disconnect`), the same answers from the same code either way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ferrocable::rpc::rpc_server::{Rpc, RpcServer};
use ferrocable::rpc::{
    CommandMessage, CommandResponse, ConnectionRequest, ConnectionResponse, DisconnectRequest, DisconnectResponse,
    Status,
};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::client::HttpClient;

pub struct BenchBackend {
    next_id: AtomicU64,
    broadcaster: Option<(String, Option<String>)>,
    /// A small pool of keep-alive broadcast connections.
    pool: Vec<Mutex<Option<HttpClient>>>,
    next_conn: AtomicU64,
}

impl BenchBackend {
    pub fn new(broadcast_url: Option<String>, broadcast_key: Option<String>) -> Self {
        Self {
            next_id: AtomicU64::new(1),
            broadcaster: broadcast_url.map(|u| (u, broadcast_key)),
            pool: (0..16).map(|_| Mutex::new(None)).collect(),
            next_conn: AtomicU64::new(0),
        }
    }

    async fn publish(&self, stream: &str, data: &str) -> Result<(), String> {
        let Some((url, key)) = &self.broadcaster else { return Err("no broadcast URL configured".into()) };
        let slot = &self.pool[(self.next_conn.fetch_add(1, Ordering::Relaxed) as usize) % self.pool.len()];
        let mut guard = slot.lock().await;
        if guard.is_none() {
            *guard = Some(HttpClient::new(url, key.as_deref()).map_err(|e| e.to_string())?);
        }
        let body = json!({"stream": stream, "data": data}).to_string();
        let client = guard.as_mut().ok_or("no client")?;
        match client.post(&body).await {
            Ok(200 | 201) => Ok(()),
            Ok(status) => Err(format!("broadcast answered {status}")),
            Err(e) => Err(e.to_string()),
        }
    }
}

fn stream_of(identifier: &str) -> String {
    serde_json::from_str::<Value>(identifier)
        .ok()
        .and_then(|v| v.get("stream").and_then(|s| s.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "all".to_owned())
}

impl BenchBackend {
    fn connect(&self, sid: &str) -> ConnectionResponse {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        ConnectionResponse {
            status: Status::Success as i32,
            identifiers: json!({ "id": id.to_string() }).to_string(),
            transmissions: vec![json!({"type":"welcome","sid":sid}).to_string()],
            ..Default::default()
        }
    }

    async fn command(&self, command: &str, identifier: &str, data: &str) -> CommandResponse {
        let mut resp = CommandResponse { status: Status::Success as i32, ..Default::default() };
        match command {
            "subscribe" => {
                resp.streams = vec![stream_of(identifier)];
                resp.transmissions =
                    vec![json!({"identifier": identifier, "type": "confirm_subscription"}).to_string()];
            }
            "unsubscribe" => {}
            "message" => {
                let mut data_value: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                match data_value.get("action").and_then(|a| a.as_str()).unwrap_or("") {
                    "echo" => {
                        resp.transmissions = vec![json!({"identifier": identifier, "message": data_value}).to_string()]
                    }
                    "broadcast" => {
                        if let Err(e) = self.publish(&stream_of(identifier), data).await {
                            resp.status = Status::Error as i32;
                            resp.error_msg = e;
                        }
                        data_value["action"] = "broadcastResult".into();
                        resp.transmissions = vec![json!({"identifier": identifier, "message": data_value}).to_string()];
                    }
                    other => {
                        resp.status = Status::Error as i32;
                        resp.error_msg = format!("unknown action {other:?}");
                    }
                }
            }
            other => {
                resp.status = Status::Error as i32;
                resp.error_msg = format!("unknown command {other:?}");
            }
        }
        resp
    }

    fn disconnect(&self) -> DisconnectResponse {
        DisconnectResponse { status: Status::Success as i32, error_msg: String::new() }
    }

    /// One HTTP RPC call: the path names it, the body is its request as JSON; the answer is JSON too.
    async fn http_call(&self, path: &str, sid: &str, body: &[u8]) -> Option<Value> {
        let request: Value = serde_json::from_slice(body).ok()?;
        let field = |name: &str| request.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
        Some(match path.rsplit('/').next()? {
            "connect" => {
                let r = self.connect(sid);
                json!({"status": r.status, "identifiers": r.identifiers, "transmissions": r.transmissions})
            }
            "command" => {
                let r = self.command(&field("command"), &field("identifier"), &field("data")).await;
                json!({"status": r.status, "streams": r.streams, "transmissions": r.transmissions, "error_msg": r.error_msg})
            }
            "disconnect" => json!({"status": self.disconnect().status}),
            _ => return None,
        })
    }
}

#[tonic::async_trait]
impl Rpc for BenchBackend {
    async fn connect(
        &self,
        r: tonic::Request<ConnectionRequest>,
    ) -> Result<tonic::Response<ConnectionResponse>, tonic::Status> {
        let sid = r.metadata().get("sid").and_then(|v| v.to_str().ok()).unwrap_or("");
        Ok(tonic::Response::new(BenchBackend::connect(self, sid)))
    }

    async fn command(
        &self,
        r: tonic::Request<CommandMessage>,
    ) -> Result<tonic::Response<CommandResponse>, tonic::Status> {
        let m = r.into_inner();
        Ok(tonic::Response::new(BenchBackend::command(self, &m.command, &m.identifier, &m.data).await))
    }

    async fn disconnect(
        &self,
        _r: tonic::Request<DisconnectRequest>,
    ) -> Result<tonic::Response<DisconnectResponse>, tonic::Status> {
        Ok(tonic::Response::new(BenchBackend::disconnect(self)))
    }
}

/// Serves the benchmark backend until Ctrl-C / SIGTERM: gRPC on `listen`, and HTTP RPC on `http_listen` when given.
pub async fn serve(
    listen: SocketAddr,
    http_listen: Option<SocketAddr>,
    broadcast_url: Option<String>,
    broadcast_key: Option<String>,
) -> anyhow::Result<()> {
    if let Some(addr) = std::iter::once(listen).chain(http_listen).find(|a| !a.ip().is_loopback()) {
        anyhow::bail!("the benchmark backend only listens on loopback, not {addr}");
    }
    let backend = Arc::new(BenchBackend::new(broadcast_url, broadcast_key));
    let stop = tokio_util::sync::CancellationToken::new();
    let http = match http_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            eprintln!("benchmark backend: HTTP RPC on http://{addr}/");
            Some(tokio::spawn(serve_http(listener, backend.clone(), stop.clone())))
        }
        None => None,
    };
    eprintln!("benchmark backend listening on {listen}");
    let stopped = stop.clone();
    tonic::transport::Server::builder()
        .add_service(RpcServer::from_arc(backend))
        .serve_with_shutdown(listen, async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { if let Some(t) = term.as_mut() { t.recv().await; } else { std::future::pending::<()>().await } } => {}
            }
            stopped.cancel();
        })
        .await?;
    stop.cancel();
    if let Some(http) = http {
        http.await??;
    }
    Ok(())
}

/// The HTTP RPC side: HTTP/1.1 keep-alive connections, one task each, all ended by `stop`.
async fn serve_http(
    listener: tokio::net::TcpListener,
    backend: Arc<BenchBackend>,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = stop.cancelled() => break,
        };
        stream.set_nodelay(true)?;
        let backend = backend.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let backend = backend.clone();
                async move { Ok::<_, std::convert::Infallible>(http_answer(&backend, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = stop.cancelled() => {}
            }
        });
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

async fn http_answer(
    backend: &BenchBackend,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    use http_body_util::BodyExt;
    let path = req.uri().path().to_owned();
    let sid = req.headers().get("x-anycable-meta-sid").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let answer = match req.into_body().collect().await {
        Ok(body) => backend.http_call(&path, &sid, &body.to_bytes()).await,
        Err(_) => None,
    };
    let (status, body) = match answer {
        Some(json) => (200, json.to_string()),
        None => (422, format!("{{\"error\":\"cannot answer {path}\"}}")),
    };
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap_or_default()
}
