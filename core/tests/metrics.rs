//! The counters AnyCable-Go 1.6 exposes, driven one by one with AnyCable's meanings: publications and remote
//! commands received from the application, broadcasts that could not be parsed, writes that timed out, RPC calls
//! that timed out or were abandoned, open connections to the gRPC backend, and the memory the process holds.

mod common;

use std::time::Duration;

use common::raw::RawClient;
use common::{ChatApp, Fixture, Mode, http, test_config, welcomed, within};
use ferrocable::Server;
use ferrocable::handler::{
    CommandMessage, CommandResponse, ConnectionRequest, ConnectionResponse, DisconnectRequest, DisconnectResponse,
};
use ferrocable::rpc::rpc_server::{Rpc, RpcServer};
use serde_json::json;
use tokio::net::TcpListener;

const CHAT_A: &str = r#"{"channel":"ChatChannel","room":"a"}"#;

#[tokio::test]
async fn publications_remote_commands_and_unparsable_broadcasts_are_counted_as_anycable_counts_them() {
    let fx = Fixture::start(Mode::InProcess, &[]).await;
    let addr = fx.server.broadcast_addr().unwrap();
    let (mut alice, _) = welcomed(&fx, "alice").await;
    alice.subscribe(CHAT_A).await;
    let (mut bob, _) = welcomed(&fx, "bob").await;

    // One publication, then a batch of three: each body is one publication, each entry one broadcast.
    let one = json!({"stream": "chat_a", "data": "1"}).to_string();
    assert_eq!(http(addr, "POST", "/_broadcast", &[], &one).await.0, 201);
    let batch: Vec<_> = (2..5).map(|n| json!({"stream": "chat_a", "data": n.to_string()})).collect();
    assert_eq!(http(addr, "POST", "/_broadcast", &[], &json!(batch).to_string()).await.0, 201);
    for n in 1..5 {
        assert_eq!(alice.recv().await["message"], n);
    }
    assert_eq!(http(addr, "POST", "/_broadcast", &[], "{not json").await.0, 400);
    // A remote command: disconnect every connection of bob.
    let disconnect = json!({"command": "disconnect", "payload": {"identifier": r#"{"current_user":"bob"}"#}});
    assert_eq!(http(addr, "POST", "/_broadcast", &[], &disconnect.to_string()).await.0, 201);
    assert_eq!(bob.recv().await["reason"], "remote");

    let stats = fx.server.stats();
    assert_eq!(stats.publications_total, 3);
    assert_eq!(stats.broadcast_msg_total, 4);
    assert_eq!(stats.failed_broadcast_msg_total, 1);
    assert_eq!(stats.remote_commands_total, 1);
    fx.server.shutdown().await;
}

#[tokio::test]
async fn a_write_that_runs_out_of_time_is_counted_in_timeout_server_msg_total() {
    // A queue that cannot overflow first: the client is given up on by the write timeout, not as too slow.
    let fx =
        Fixture::start(Mode::InProcess, &[("client_queue_size", "100000"), ("client_send_buffer_size", "4096")]).await;
    let mut stalled = RawClient::connect(fx.server.local_addr(), "/cable", "stalled").await;
    assert_eq!(stalled.recv().await["type"], "welcome");
    stalled.send_json(&json!({"command": "subscribe", "identifier": CHAT_A})).await;
    assert_eq!(stalled.recv().await["type"], "confirm_subscription");
    // More than the kernel buffers hold, and then the client reads nothing.
    let big = "x".repeat(256 * 1024);
    for _ in 0..80 {
        fx.server.broadcast(ferrocable::Publication::new("chat_a", big.clone())).await;
    }
    within(Duration::from_secs(15), "a write timeout", || fx.server.stats().timeout_server_msg_total == 1).await;
    within(Duration::from_secs(5), "the stalled client dropped", || fx.server.stats().clients_num == 0).await;
    assert_eq!(fx.server.stats().disconnected_slow_clients_total, 0);
    drop(stalled);
    fx.server.shutdown().await;
}

#[tokio::test]
async fn rpc_calls_that_time_out_are_counted_and_backend_connections_are_gauged() {
    // A backend that accepts connections and never answers.
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rpc_host = backend.local_addr().unwrap().to_string();
    let config = test_config(&[("rpc_host", &rpc_host), ("rpc_request_timeout", "300")]);
    let server = Server::start(config, None).await.unwrap();
    assert_eq!(server.stats().grpc_active_conn_num, 0, "the channel connects lazily");
    let url = format!("ws://{}/cable", server.local_addr());
    let mut client = common::Client::connect(&url, Some("user=alice")).await;
    let (accepted, _) = tokio::time::timeout(Duration::from_secs(5), backend.accept()).await.unwrap().unwrap();
    within(Duration::from_secs(5), "one backend connection", || server.stats().grpc_active_conn_num == 1).await;
    // The Connect call runs out of rpc_request_timeout: the client is told, the timeout counted once.
    assert_eq!(client.closed().await, Some(1011));
    let stats = server.stats();
    assert_eq!(stats.rpc_timeout_total, 1);
    assert_eq!(stats.rpc_canceled_total, 0);
    // The backend goes away: its connection is no longer counted.
    drop(accepted);
    drop(backend);
    within(Duration::from_secs(5), "no backend connection", || server.stats().grpc_active_conn_num == 0).await;
    server.shutdown().await;
}

/// The chat app, except that Disconnect never answers.
#[derive(Clone, Default)]
struct HangingDisconnect(ChatApp);

#[tonic::async_trait]
impl Rpc for HangingDisconnect {
    async fn connect(
        &self,
        r: tonic::Request<ConnectionRequest>,
    ) -> Result<tonic::Response<ConnectionResponse>, tonic::Status> {
        Rpc::connect(&self.0, r).await
    }
    async fn command(
        &self,
        r: tonic::Request<CommandMessage>,
    ) -> Result<tonic::Response<CommandResponse>, tonic::Status> {
        Rpc::command(&self.0, r).await
    }
    async fn disconnect(
        &self,
        _: tonic::Request<DisconnectRequest>,
    ) -> Result<tonic::Response<DisconnectResponse>, tonic::Status> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn a_disconnect_call_abandoned_at_the_shutdown_deadline_is_counted_as_canceled() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rpc_host = listener.local_addr().unwrap().to_string();
    let backend = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RpcServer::new(HangingDisconnect::default()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let config = test_config(&[("rpc_host", &rpc_host), ("shutdown_timeout", "1")]);
    let server = Server::start(config, None).await.unwrap();
    let url = format!("ws://{}/cable", server.local_addr());
    let mut client = common::Client::connect(&url, Some("user=alice")).await;
    assert_eq!(client.recv().await["type"], "welcome");
    assert_eq!(server.stats().grpc_active_conn_num, 1);
    server.shutdown().await;
    // The call still running at the deadline is dropped as its worker stops.
    within(Duration::from_secs(3), "the abandoned Disconnect call", || server.stats().rpc_canceled_total == 1).await;
    assert_eq!(server.stats().rpc_timeout_total, 0);
    backend.abort();
}

#[tokio::test]
async fn mem_sys_bytes_is_the_memory_the_process_holds() {
    let fx = Fixture::start(Mode::InProcess, &[("metrics_http", "/metrics")]).await;
    let (status, body) = http(fx.server.local_addr(), "GET", "/metrics", &[], "").await;
    assert_eq!(status, 200);
    let reported: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("anycable_go_mem_sys_bytes "))
        .expect("mem_sys_bytes exposed")
        .parse()
        .unwrap();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let rss_kib: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB").parse().unwrap();
    let rss = rss_kib * 1024;
    assert!(reported > rss / 2 && reported < rss * 2, "reported {reported}, VmRSS {rss}");
    fx.server.shutdown().await;
}
