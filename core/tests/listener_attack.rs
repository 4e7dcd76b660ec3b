//! Connections that never finish their HTTP request, against every listener at once: 500 that send a partial
//! request (a request line and one header, then nothing) and 500 that send nothing, per listener. Each must be
//! closed within `read_header_timeout` + 1 s, a new client must be served meanwhile on every listener, and the
//! process must hold no more descriptors afterwards than before. Alone in its test binary, so that the
//! descriptors counted are the attack's and the server's only.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::engines::free_port;
use common::{Fixture, Mode, http, open_descriptors, welcomed};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const CHAT_A: &str = r#"{"channel":"ChatChannel","room":"a"}"#;
const PER_KIND: usize = 500;
const TIMEOUT: Duration = Duration::from_secs(2);

/// Opens one attacking socket (partial request or silence) and returns how long after its opening the server
/// closed it.
async fn attacker(addr: SocketAddr, partial: bool) -> Duration {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    if partial {
        stream.write_all(b"GET /cable HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    }
    let opened = Instant::now();
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buffer)).await;
    match read.expect("the server kept an unfinished request open for 30 s") {
        Ok(0) | Err(_) => opened.elapsed(),
        Ok(n) => panic!("the server answered an unfinished request: {:?}", String::from_utf8_lossy(&buffer[..n])),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listener_closes_unfinished_requests_within_read_header_timeout_and_serves_real_clients() {
    let metrics_port = free_port().to_string();
    let fx = Fixture::start(
        Mode::InProcess,
        &[("metrics_http", "/metrics"), ("metrics_port", &metrics_port), ("read_header_timeout", "2")],
    )
    .await;
    let main = fx.server.local_addr();
    let broadcast = fx.server.broadcast_addr().unwrap();
    let metrics: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let baseline = open_descriptors();

    let mut attack = tokio::task::JoinSet::new();
    for addr in [main, broadcast, metrics] {
        for i in 0..2 * PER_KIND {
            attack.spawn(attacker(addr, i % 2 == 0));
        }
    }
    common::eventually("the attack's connections pending", || {
        fx.server.stats().pending_conn_num as usize >= 3 * 2 * PER_KIND * 9 / 10
    })
    .await;
    let peak = open_descriptors();
    assert!(peak >= baseline + 3 * 2 * PER_KIND, "{peak} descriptors open at the peak, {baseline} before");

    // Meanwhile a new client is served on every listener: a WebSocket client gets a broadcast sent over HTTP,
    // the health check and the metrics answer.
    let (mut client, _) = welcomed(&fx, "alice").await;
    client.subscribe(CHAT_A).await;
    let body = r#"{"stream":"chat_a","data":"{\"during\":\"the attack\"}"}"#;
    assert_eq!(http(broadcast, "POST", "/_broadcast", &[], body).await.0, 201);
    assert_eq!(client.recv().await["message"]["during"], "the attack");
    assert_eq!(http(main, "GET", "/health", &[], "").await, (200, "OK".to_owned()));
    let (status, exposition) = http(metrics, "GET", "/metrics", &[], "").await;
    assert_eq!(status, 200);
    assert!(exposition.contains("anycable_go_pending_conn_num "), "{exposition}");

    let (mut fastest, mut slowest) = (Duration::MAX, Duration::ZERO);
    while let Some(closed_after) = attack.join_next().await {
        let closed_after = closed_after.unwrap();
        (fastest, slowest) = (fastest.min(closed_after), slowest.max(closed_after));
    }
    // The test's clock for a socket starts when its task gets to run after the connect, which under the burst can
    // be a few hundred milliseconds after the server accepted it (and started the server's clock).
    assert!(fastest >= TIMEOUT / 2, "closed long before the timeout: {fastest:?}");
    assert!(slowest >= TIMEOUT - Duration::from_millis(100), "none waited for the timeout: {slowest:?}");
    assert!(slowest <= TIMEOUT + Duration::from_secs(1), "the slowest close came {slowest:?} after the opening");
    assert_eq!(fx.server.stats().read_header_timeout_total, (3 * 2 * PER_KIND) as u64);

    client.close().await;
    common::eventually("the descriptors back to the baseline", || open_descriptors() <= baseline).await;
    assert_eq!(fx.server.stats().pending_conn_num, 0);
    fx.server.shutdown().await;
}
