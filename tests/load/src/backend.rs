//! A trivial AnyCable gRPC backend serving the benchmark channel, so every server under test calls the same
//! application: Connect accepts everyone, `BenchmarkChannel` streams from its `stream` parameter (default
//! `all`), `echo` transmits the data back, `broadcast` publishes the data to the stream over HTTP.

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

#[tonic::async_trait]
impl Rpc for BenchBackend {
    async fn connect(
        &self,
        r: tonic::Request<ConnectionRequest>,
    ) -> Result<tonic::Response<ConnectionResponse>, tonic::Status> {
        let sid = r.metadata().get("sid").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        Ok(tonic::Response::new(ConnectionResponse {
            status: Status::Success as i32,
            identifiers: json!({ "id": id.to_string() }).to_string(),
            transmissions: vec![json!({"type":"welcome","sid":sid}).to_string()],
            ..Default::default()
        }))
    }

    async fn command(
        &self,
        r: tonic::Request<CommandMessage>,
    ) -> Result<tonic::Response<CommandResponse>, tonic::Status> {
        let m = r.into_inner();
        let mut resp = CommandResponse { status: Status::Success as i32, ..Default::default() };
        match m.command.as_str() {
            "subscribe" => {
                resp.streams = vec![stream_of(&m.identifier)];
                resp.transmissions =
                    vec![json!({"identifier": m.identifier, "type": "confirm_subscription"}).to_string()];
            }
            "unsubscribe" => {}
            "message" => {
                let mut data: Value = serde_json::from_str(&m.data).unwrap_or(Value::Null);
                match data.get("action").and_then(|a| a.as_str()).unwrap_or("") {
                    "echo" => {
                        resp.transmissions = vec![json!({"identifier": m.identifier, "message": data}).to_string()]
                    }
                    "broadcast" => {
                        if let Err(e) = self.publish(&stream_of(&m.identifier), &m.data).await {
                            resp.status = Status::Error as i32;
                            resp.error_msg = e;
                        }
                        data["action"] = "broadcastResult".into();
                        resp.transmissions = vec![json!({"identifier": m.identifier, "message": data}).to_string()];
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
        Ok(tonic::Response::new(resp))
    }

    async fn disconnect(
        &self,
        _r: tonic::Request<DisconnectRequest>,
    ) -> Result<tonic::Response<DisconnectResponse>, tonic::Status> {
        Ok(tonic::Response::new(DisconnectResponse { status: Status::Success as i32, error_msg: String::new() }))
    }
}

/// Serves the benchmark backend until Ctrl-C / SIGTERM.
pub async fn serve(
    listen: SocketAddr,
    broadcast_url: Option<String>,
    broadcast_key: Option<String>,
) -> anyhow::Result<()> {
    if !listen.ip().is_loopback() {
        anyhow::bail!("the benchmark backend only listens on loopback, not {listen}");
    }
    let backend = Arc::new(BenchBackend::new(broadcast_url, broadcast_key));
    eprintln!("benchmark backend listening on {listen}");
    tonic::transport::Server::builder()
        .add_service(RpcServer::from_arc(backend))
        .serve_with_shutdown(listen, async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { if let Some(t) = term.as_mut() { t.recv().await; } else { std::future::pending::<()>().await } } => {}
            }
        })
        .await?;
    Ok(())
}
