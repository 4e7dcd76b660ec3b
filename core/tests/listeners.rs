//! What the listeners do with connections that do not play along: a broadcast body trickling in, keep-alive
//! connections left idle, more connections in their handshake than `max_pending_conn`, and clients that keep
//! writing after the server refused one of their frames (they must still read the close frame and its code).

mod common;

use std::time::Duration;

use common::raw::{CONTINUATION, RawClient, TEXT};
use common::{Fixture, Mode, http, logs, welcomed};
use ferrocable::Publication;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const CHAT_A: &str = r#"{"channel":"ChatChannel","room":"a"}"#;

/// Reads until the peer closes (or resets); returns what was read and when the connection ended.
async fn read_until_closed(stream: &mut TcpStream) -> (String, Instant) {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        while matches!(stream.read_buf(&mut answer).await, Ok(n) if n > 0) {}
    });
    read.await.expect("the server did not close the connection within 10 s");
    (String::from_utf8_lossy(&answer).into_owned(), Instant::now())
}

/// Reads one HTTP response head (the answers here have no body).
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = tokio::time::timeout(Duration::from_secs(5), stream.read_u8()).await.unwrap().unwrap();
        head.push(byte);
    }
    String::from_utf8(head).unwrap()
}

fn broadcast_request(n: u64) -> String {
    let body = json!({"stream": "chat_a", "data": json!({"n": n}).to_string()}).to_string();
    format!("POST /_broadcast HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}", body.len())
}

#[tokio::test]
async fn a_broadcast_body_sent_a_byte_a_second_gets_408_at_the_bound_while_other_broadcasts_land() {
    let fx = Fixture::start(Mode::InProcess, &[("http_broadcast_body_timeout", "2")]).await;
    let addr = fx.server.broadcast_addr().unwrap();
    let (mut reader, _) = welcomed(&fx, "reader").await;
    reader.subscribe(CHAT_A).await;

    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"POST /_broadcast HTTP/1.1\r\nHost: x\r\nContent-Length: 64\r\n\r\n").await.unwrap();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        let mut answer = Vec::new();
        loop {
            tokio::select! {
                read = slow.read_buf(&mut answer) => if !matches!(read, Ok(n) if n > 0) { break },
                () = tokio::time::sleep(Duration::from_secs(1)) => { let _ = slow.write_all(b"{").await; }
            }
        }
        (String::from_utf8_lossy(&answer).into_owned(), started.elapsed())
    });
    for n in 0..12 {
        let body = json!({"stream": "chat_a", "data": json!({"n": n}).to_string()}).to_string();
        let (status, _) = http(addr, "POST", "/_broadcast", &[], &body).await;
        assert_eq!(status, 201);
        assert_eq!(reader.recv().await["message"]["n"], n);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (answer, elapsed) = trickle.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("broadcast body not received within 2 s"), "{answer}");
    assert!(elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(3), "closed after {elapsed:?}");
    let stats = fx.server.stats();
    assert_eq!(stats.broadcast_body_timeout_total, 1);
    assert_eq!(stats.publications_total, 12);
    fx.server.shutdown().await;
}

#[tokio::test]
async fn keep_alive_connections_idle_for_http_idle_timeout_are_closed() {
    let fx = Fixture::start(Mode::InProcess, &[("http_idle_timeout", "1")]).await;
    let addr = fx.server.broadcast_addr().unwrap();
    // One that says nothing more after its answer.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(broadcast_request(1).as_bytes()).await.unwrap();
    assert!(read_head(&mut idle).await.starts_with("HTTP/1.1 201"));
    let answered = Instant::now();
    // One that starts its next request and never finishes it.
    let mut partial = TcpStream::connect(addr).await.unwrap();
    partial.write_all(broadcast_request(2).as_bytes()).await.unwrap();
    assert!(read_head(&mut partial).await.starts_with("HTTP/1.1 201"));
    partial.write_all(b"POST /_broadcast HTTP/1.1\r\nHost:").await.unwrap();
    let partial_answered = Instant::now();
    let watch = |mut stream: TcpStream, since: Instant| {
        tokio::spawn(async move {
            let (rest, closed) = read_until_closed(&mut stream).await;
            assert_eq!(rest, "", "closed without an answer");
            closed - since
        })
    };
    let idle = watch(idle, answered);
    let partial = watch(partial, partial_answered);
    // One that keeps sending requests well within the timeout stays open.
    let mut busy = TcpStream::connect(addr).await.unwrap();
    for n in 0..4 {
        busy.write_all(broadcast_request(n).as_bytes()).await.unwrap();
        assert!(read_head(&mut busy).await.starts_with("HTTP/1.1 201"), "request {n} on the same connection");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for closed in [idle, partial] {
        let after = closed.await.unwrap();
        assert!(after >= Duration::from_secs(1) && after < Duration::from_secs(2), "closed {after:?} after the answer");
    }
    assert_eq!(fx.server.stats().http_idle_timeout_total, 2);
    fx.server.shutdown().await;
}

#[tokio::test]
async fn over_max_pending_conn_new_connections_are_closed_at_once_and_established_clients_are_served() {
    logs();
    let fx = Fixture::start(Mode::InProcess, &[("max_pending_conn", "50"), ("read_header_timeout", "3")]).await;
    let addr = fx.server.local_addr();
    let (mut established, _) = welcomed(&fx, "established").await;
    established.subscribe(CHAT_A).await;

    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    common::eventually("50 pending connections", || fx.server.stats().pending_conn_num == 50).await;
    for _ in 0..20 {
        let mut refused = TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        let (answer, closed) = read_until_closed(&mut refused).await;
        assert_eq!(answer, "");
        assert!(closed - started < Duration::from_millis(500), "closed after {:?}", closed - started);
    }
    assert_eq!(fx.server.stats().pending_conn_refused_total, 20);
    // Clients that completed their handshake are not pending: they keep being served.
    fx.server.broadcast(Publication::new("chat_a", r#"{"during":"the burst"}"#)).await;
    assert_eq!(established.recv().await["message"]["during"], "the burst");
    established.perform(CHAT_A, json!({"action": "whoami"})).await;
    let answer = established.recv().await;
    assert!(answer["message"]["ids"].as_str().unwrap().contains("established"), "{answer}");
    let warned = || logs().matches("max_pending_conn reached").count();
    assert_eq!(warned(), 1, "one warning for the whole burst");

    // The silent ones time out, and new clients get in again.
    common::eventually("the pending connections timed out", || fx.server.stats().pending_conn_num == 0).await;
    let (mut late, _) = welcomed(&fx, "late").await;
    late.subscribe(CHAT_A).await;
    assert!(logs().contains("refused=20"), "the end of the burst is logged with its count");
    drop(silent);
    fx.server.shutdown().await;
}

/// Writes `chunk` every 10 ms for `duration`; every write must be taken (a reset fails one).
async fn keep_writing(client: &mut RawClient, chunk: &[u8], duration: Duration) {
    let until = Instant::now() + duration;
    while Instant::now() < until {
        client.try_send_bytes(chunk).await.expect("the server reset the connection instead of draining it");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn welcomed_raw(fx: &Fixture, user: &str) -> RawClient {
    let mut client = RawClient::connect(fx.server.local_addr(), "/cable", user).await;
    assert_eq!(client.recv().await["type"], "welcome");
    client
}

#[tokio::test]
async fn an_oversize_message_followed_by_more_writes_still_gets_its_1009_close_frame() {
    let fx = Fixture::start(Mode::InProcess, &[("max_message_size", "1024")]).await;
    let mut attacker = welcomed_raw(&fx, "mallory").await;
    attacker.send_partial_frame(TEXT, 10_000_000, &[b'x'; 4096]).await;
    keep_writing(&mut attacker, &[b'x'; 4096], Duration::from_millis(500)).await;
    assert_eq!(attacker.closed().await, 1009);
    assert_eq!(fx.server.stats().failed_client_msg_total, 1);
    fx.server.shutdown().await;
}

#[tokio::test]
async fn invalid_frames_followed_by_more_writes_still_get_their_close_frames() {
    let fx = Fixture::start(Mode::InProcess, &[]).await;
    // A continuation with no message to continue breaks the framing rules (1002).
    let mut stray = welcomed_raw(&fx, "stray").await;
    stray.send_frame(true, CONTINUATION, b"orphan").await;
    keep_writing(&mut stray, &RawClient::text_frame(b"{}"), Duration::from_millis(500)).await;
    assert_eq!(stray.closed().await, 1002);
    // A text message that is not UTF-8 (1007).
    let mut garbled = welcomed_raw(&fx, "garbled").await;
    garbled.send_frame(true, TEXT, &[0xff, 0xfe, 0xfd]).await;
    keep_writing(&mut garbled, &RawClient::text_frame(b"{}"), Duration::from_millis(500)).await;
    assert_eq!(garbled.closed().await, 1007);
    fx.server.shutdown().await;
}

#[tokio::test]
async fn a_rate_limited_client_that_keeps_writing_still_gets_its_1008_close_frame() {
    let fx = Fixture::start(Mode::InProcess, &[("command_rate_limit", "5"), ("command_rate_burst", "2")]).await;
    let mut noisy = welcomed_raw(&fx, "noisy").await;
    noisy.send_json(&json!({"command": "subscribe", "identifier": CHAT_A})).await;
    assert_eq!(noisy.recv().await["type"], "confirm_subscription");
    let command = json!({"command": "message", "identifier": CHAT_A, "data": "{\"action\":\"noop\"}"}).to_string();
    // Well past the point where it is disconnected (20 dropped commands), and on after it.
    keep_writing(&mut noisy, &RawClient::text_frame(command.as_bytes()), Duration::from_millis(1500)).await;
    assert_eq!(noisy.closed().await, 1008);
    assert!(fx.server.stats().rate_limited_client_msg_total >= 20);
    fx.server.shutdown().await;
}
