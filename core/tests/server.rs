//! The server on a free port in front of a channel application reached over gRPC and in-process, driven by
//! a real WebSocket client. Each scenario runs in both modes: session code must not care which it is.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Client, Fixture, Mode, eventually, welcomed, within};
use ferrocable::Publication;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const CHAT_A: &str = r#"{"channel":"ChatChannel","room":"a"}"#;
const CHAT_B: &str = r#"{"channel":"ChatChannel","room":"b"}"#;

async fn state_round_trip_and_disconnect_carries_every_channel_state(mode: Mode) {
    let fx = Fixture::start(mode, &[]).await;
    let (mut c, sid) = welcomed(&fx, "alice").await;
    let connect = fx.app.calls.connects.lock().unwrap()[0].clone();
    assert_eq!(connect.0, sid, "the sid reaches the application");
    let env = connect.1.env.unwrap();
    assert!(env.url.starts_with("http://127.0.0.1:") && env.url.ends_with("/cable"), "{}", env.url);
    assert_eq!(env.headers.get("cookie").map(String::as_str), Some("user=alice"));

    assert_eq!(c.subscribe(CHAT_A).await, json!({"identifier": CHAT_A, "type": "confirm_subscription"}));
    assert_eq!(c.subscribe(CHAT_B).await["type"], "confirm_subscription");

    c.perform(CHAT_A, json!({"action":"set_state","mood":"happy","count":"1"})).await;
    c.perform(CHAT_A, json!({"action":"whoami"})).await;
    let who = c.recv().await;
    assert_eq!(who["identifier"], CHAT_A);
    // `user` was deleted by the empty value; `mood` was added.
    assert_eq!(who["message"]["cstate"], json!({"mood":"happy"}));
    assert_eq!(who["message"]["istate"], json!({"room":"a","count":"1"}));
    assert_eq!(who["message"]["ids"], r#"{"current_user":"alice"}"#);

    // Another subscription only sees its own istate.
    c.perform(CHAT_B, json!({"action":"whoami"})).await;
    assert_eq!(c.recv().await["message"]["istate"], json!({"room":"b"}));

    c.close().await;
    eventually("Disconnect call", || !fx.app.calls.disconnects.lock().unwrap().is_empty()).await;
    let (dsid, disconnect) = fx.app.calls.disconnects.lock().unwrap()[0].clone();
    assert_eq!(dsid, sid);
    assert_eq!(disconnect.identifiers, r#"{"current_user":"alice"}"#);
    let mut subs = disconnect.subscriptions.clone();
    subs.sort();
    assert_eq!(subs, vec![CHAT_A.to_owned(), CHAT_B.to_owned()]);
    let env = disconnect.env.unwrap();
    assert_eq!(env.cstate, HashMap::from([("mood".to_owned(), "happy".to_owned())]));
    let istate_a: Value = serde_json::from_str(&env.istate[CHAT_A]).unwrap();
    let istate_b: Value = serde_json::from_str(&env.istate[CHAT_B]).unwrap();
    assert_eq!(istate_a, json!({"room":"a","count":"1"}));
    assert_eq!(istate_b, json!({"room":"b"}));
    fx.server.shutdown().await;
}

#[tokio::test]
async fn grpc_state_round_trip_and_disconnect_carries_every_channel_state() {
    state_round_trip_and_disconnect_carries_every_channel_state(Mode::Grpc).await;
}

#[tokio::test]
async fn every_grpc_call_carries_the_sid_of_its_own_session_across_many_sessions() {
    // More sessions than the connection's HPACK table could index sids for: each call must still arrive with
    // its own session's sid however the encoder represents it.
    let fx = Fixture::start(Mode::Grpc, &[]).await;
    let mut sids = Vec::new();
    for n in 0..120 {
        let (mut c, sid) = welcomed(&fx, &format!("user{n}")).await;
        assert_eq!(c.subscribe(CHAT_A).await["type"], "confirm_subscription");
        c.close().await;
        sids.push(sid);
    }
    let connects: Vec<String> = fx.app.calls.connects.lock().unwrap().iter().map(|(sid, _)| sid.clone()).collect();
    let commands: Vec<String> = fx.app.calls.commands.lock().unwrap().iter().map(|(sid, _)| sid.clone()).collect();
    assert_eq!(connects, sids);
    assert_eq!(commands, sids);
    eventually("every Disconnect call", || fx.app.calls.disconnects.lock().unwrap().len() == sids.len()).await;
    let mut disconnects: Vec<String> =
        fx.app.calls.disconnects.lock().unwrap().iter().map(|(sid, _)| sid.clone()).collect();
    disconnects.sort();
    sids.sort();
    assert_eq!(disconnects, sids);
    fx.server.shutdown().await;
}

#[tokio::test]
async fn in_process_state_round_trip_and_disconnect_carries_every_channel_state() {
    state_round_trip_and_disconnect_carries_every_channel_state(Mode::InProcess).await;
}

async fn streams_follow_the_command_responses(mode: Mode) {
    let fx = Fixture::start(mode, &[]).await;
    let (mut c, _) = welcomed(&fx, "bob").await;
    c.subscribe(CHAT_A).await;

    fx.server.broadcast(Publication::new("chat_a", r#"{"text":"one"}"#)).await;
    assert_eq!(c.recv().await, json!({"identifier": CHAT_A, "message": {"text":"one"}}));

    c.perform(CHAT_A, json!({"action":"follow","stream":"extra"})).await;
    c.perform(CHAT_A, json!({"action":"whoami"})).await;
    c.recv().await; // commands run in order: `follow` has been applied once this arrives
    fx.server.broadcast(Publication::new("extra", "plain text")).await;
    assert_eq!(c.recv().await, json!({"identifier": CHAT_A, "message": "plain text"}));

    c.perform(CHAT_A, json!({"action":"unfollow","stream":"extra"})).await;
    c.perform(CHAT_A, json!({"action":"whoami"})).await;
    c.recv().await;
    fx.server.broadcast(Publication::new("extra", "gone")).await;
    fx.server.broadcast(Publication::new("chat_a", r#""still here""#)).await;
    assert_eq!(c.recv().await["message"], "still here");

    c.perform(CHAT_A, json!({"action":"stop_all"})).await;
    c.perform(CHAT_A, json!({"action":"whoami"})).await;
    c.recv().await;
    fx.server.broadcast(Publication::new("chat_a", "nothing")).await;
    c.expect_silence(Duration::from_millis(300)).await;
    fx.server.shutdown().await;
}

#[tokio::test]
async fn grpc_streams_follow_the_command_responses() {
    streams_follow_the_command_responses(Mode::Grpc).await;
}

#[tokio::test]
async fn in_process_streams_follow_the_command_responses() {
    streams_follow_the_command_responses(Mode::InProcess).await;
}

#[tokio::test]
async fn rejected_connection_gets_unauthorized_then_a_normal_close() {
    let fx = Fixture::start(Mode::Grpc, &[]).await;
    let mut c = fx.client("bad").await;
    assert_eq!(c.recv().await, json!({"type":"disconnect","reason":"unauthorized","reconnect":false}));
    assert_eq!(c.closed().await, Some(1000));
    assert_eq!(fx.server.stats().failed_auths_total, 1);
    fx.server.shutdown().await;
}

#[tokio::test]
async fn rejected_subscription_is_not_subscribed_and_unsubscribe_drops_istate() {
    let fx = Fixture::start(Mode::InProcess, &[]).await;
    let (mut c, _) = welcomed(&fx, "carol").await;
    let secret = r#"{"channel":"ChatChannel","room":"secret"}"#;
    assert_eq!(c.subscribe(secret).await, json!({"identifier": secret, "type": "reject_subscription"}));
    // Not subscribed: a perform is refused without a call.
    c.perform(secret, json!({"action":"whoami"})).await;

    c.subscribe(CHAT_A).await;
    c.perform(CHAT_A, json!({"action":"set_state","count":"5"})).await;
    c.send(json!({"command":"unsubscribe","identifier":CHAT_A})).await;
    c.subscribe(CHAT_A).await;
    c.perform(CHAT_A, json!({"action":"whoami"})).await;
    assert_eq!(c.recv().await["message"]["istate"], json!({"room":"a"}), "istate starts over after unsubscribe");
    let performs_on_secret = fx
        .app
        .calls
        .commands
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, m)| m.identifier == secret && m.command == "message")
        .count();
    assert_eq!(performs_on_secret, 0);
    fx.server.shutdown().await;
}

#[tokio::test]
async fn duplicate_subscribe_and_unknown_identifiers_make_no_calls() {
    let fx = Fixture::start(Mode::Grpc, &[]).await;
    let (mut c, _) = welcomed(&fx, "dave").await;
    c.subscribe(CHAT_A).await;
    c.send(json!({"command":"subscribe","identifier":CHAT_A})).await;
    c.send(json!({"command":"unsubscribe","identifier":CHAT_B})).await;
    c.perform(CHAT_B, json!({"action":"whoami"})).await;
    c.send_raw(Message::Text("not json".into())).await;
    c.send(json!({"command":"dance"})).await;
    c.send_raw(Message::Binary(vec![1, 2, 3].into())).await;
    c.perform(CHAT_A, json!({"action":"whoami"})).await;
    assert_eq!(c.recv().await["identifier"], CHAT_A, "the connection keeps working");
    let commands: Vec<String> = fx.app.calls.commands.lock().unwrap().iter().map(|(_, m)| m.command.clone()).collect();
    assert_eq!(commands, vec!["subscribe", "message"]);
    fx.server.shutdown().await;
}

#[tokio::test]
async fn broadcast_reaches_every_subscriber_except_the_excluded_socket() {
    let fx = Fixture::start(Mode::InProcess, &[]).await;
    let (mut a, sid_a) = welcomed(&fx, "a").await;
    let (mut b, _) = welcomed(&fx, "b").await;
    a.subscribe(CHAT_A).await;
    b.subscribe(CHAT_A).await;
    let mut p = Publication::new("chat_a", r#"{"n":1}"#);
    p.exclude_socket = Some(sid_a);
    fx.server.broadcast(p).await;
    fx.server.broadcast(Publication::new("chat_a", r#"{"n":2}"#)).await;
    assert_eq!(b.recv().await["message"], json!({"n":1}));
    assert_eq!(b.recv().await["message"], json!({"n":2}));
    assert_eq!(a.recv().await["message"], json!({"n":2}), "the excluded socket only gets the second");
    fx.server.shutdown().await;
}

#[tokio::test]
async fn remote_disconnect_closes_every_session_of_those_identifiers() {
    let fx = Fixture::start(Mode::Grpc, &[]).await;
    let (mut a1, _) = welcomed(&fx, "eve").await;
    let (mut a2, _) = welcomed(&fx, "eve").await;
    let (mut other, _) = welcomed(&fx, "frank").await;
    assert_eq!(fx.server.disconnect(r#"{"current_user":"eve"}"#, false), 2);
    for c in [&mut a1, &mut a2] {
        assert_eq!(c.recv().await, json!({"type":"disconnect","reason":"remote","reconnect":false}));
        assert_eq!(c.closed().await, Some(1000));
    }
    eventually("two Disconnect calls", || fx.app.calls.disconnects.lock().unwrap().len() == 2).await;
    other.subscribe(CHAT_A).await;
    fx.server.shutdown().await;
}

#[tokio::test]
async fn command_disconnect_closes_after_the_transmissions() {
    let fx = Fixture::start(Mode::InProcess, &[]).await;
    let (mut c, _) = welcomed(&fx, "gina").await;
    c.subscribe(CHAT_A).await;
    c.perform(CHAT_A, json!({"action":"kick"})).await;
    assert_eq!(c.recv().await["reason"], "kicked");
    assert!(c.closed().await.is_some());
    fx.server.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_sends_server_restart_and_flushes_disconnects() {
    let fx = Fixture::start(Mode::Grpc, &[]).await;
    let mut clients = Vec::new();
    for i in 0..20 {
        let (mut c, _) = welcomed(&fx, &format!("u{i}")).await;
        c.subscribe(CHAT_A).await;
        clients.push(c);
    }
    fx.server.shutdown().await;
    for c in &mut clients {
        assert_eq!(c.recv().await, json!({"type":"disconnect","reason":"server_restart","reconnect":true}));
        assert_eq!(c.closed().await, Some(1001));
    }
    assert_eq!(fx.app.calls.disconnects.lock().unwrap().len(), 20, "every Disconnect ran before shutdown returned");
    assert!(fx.server.is_stopped());
}

#[tokio::test]
async fn pings_arrive_with_increasing_timestamps_and_pi_overrides_the_interval() {
    let fx = Fixture::start(Mode::InProcess, &[("ping_interval", "1")]).await;
    let mut c = Client::connect(&fx.url("?pi=0.2&ptp=ms"), Some("user=p")).await;
    assert_eq!(c.recv().await["type"], "welcome");
    let mut stamps = Vec::new();
    let started = std::time::Instant::now();
    while stamps.len() < 3 {
        if let Some(Message::Text(t)) = c.next_message().await {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] == "ping" {
                stamps.push(v["message"].as_u64().unwrap());
            }
        }
    }
    assert!(started.elapsed() < Duration::from_millis(900), "pi=0.2 pings faster than the 1 s default");
    assert!(stamps.windows(2).all(|w| w[1] > w[0]), "{stamps:?}");
    assert!(stamps[0] > 1_000_000_000_000, "ptp=ms gives milliseconds: {}", stamps[0]);
    fx.server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_reads_too_slowly_is_dropped_as_too_slow_and_others_keep_receiving() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let fx = Fixture::start(Mode::InProcess, &[("client_queue_size", "16")]).await;
    let (mut slow, _) = welcomed(&fx, "slow").await;
    let (mut fast, _) = welcomed(&fx, "fast").await;
    slow.subscribe(CHAT_A).await;
    fast.subscribe(CHAT_A).await;
    // The slow client reads one frame every 50 ms: its socket never stalls long enough for the write timeout,
    // but the publications outpace it, so once the kernel buffers (~10 MiB on loopback) and its 16-frame queue
    // are full it must be told `too_slow`, after the frames already in the buffers. Publishing goes on until it
    // is, whatever the machine's speed.
    let told = Arc::new(AtomicBool::new(false));
    let slow_reader = tokio::spawn({
        let told = told.clone();
        async move {
            let mut broadcasts = 0;
            while let Some(m) = slow.next_message().await {
                match m {
                    Message::Text(t) if t.contains("too_slow") => {
                        told.store(true, Ordering::SeqCst);
                        assert!(t.contains(r#""type":"disconnect""#), "{t}");
                    }
                    Message::Text(t) => {
                        assert!(!told.load(Ordering::SeqCst), "nothing is written after too_slow: {t:.80}");
                        broadcasts += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            broadcasts
        }
    });
    // The fast client reads everything published, in order.
    let published = Arc::new(AtomicUsize::new(usize::MAX));
    let fast_reader = tokio::spawn({
        let published = published.clone();
        async move {
            let mut received = 0;
            let mut idle = Duration::ZERO;
            while received < published.load(Ordering::SeqCst) {
                // Short waits: publishing can stop (and `published` be set) while this waits for the frame after
                // the last one.
                let Some(frame) = fast.try_recv(Duration::from_millis(100)).await else {
                    idle += Duration::from_millis(100);
                    assert!(idle < Duration::from_secs(5), "no frame within 5s after {received}");
                    continue;
                };
                idle = Duration::ZERO;
                assert_eq!(frame["identifier"], CHAT_A);
                assert_eq!(frame["message"]["n"], received);
                received += 1;
            }
            received
        }
    });
    let big = "x".repeat(256 * 1024);
    let mut sent = 0;
    while !told.load(Ordering::SeqCst) && sent < 1_000 {
        let data = serde_json::json!({ "n": sent, "pad": big }).to_string();
        fx.server.broadcast(Publication::new("chat_a", data)).await;
        sent += 1;
        // Paced so the reading client keeps up.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    published.store(sent, Ordering::SeqCst);
    let slow_got = slow_reader.await.unwrap();
    assert!(told.load(Ordering::SeqCst), "too_slow after {sent} publications");
    assert!(slow_got < sent, "the slow client's backlog was dropped ({slow_got} of {sent})");
    assert_eq!(fast_reader.await.unwrap(), sent);
    assert_eq!(fx.server.stats().disconnected_slow_clients_total, 1, "counted as AnyCable counts slow clients");
    fx.server.shutdown().await;
}

#[tokio::test]
async fn backend_down_closes_with_internal_error_and_the_server_recovers() {
    // Reserve a port and release it: nothing listens there until the backend starts.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let rpc_host = format!("127.0.0.1:{port}");
    let app = common::ChatApp::default();
    let server = ferrocable::Server::start(common::test_config(&[("rpc_host", &rpc_host)]), None).await.unwrap();
    let url = format!("ws://{}/cable", server.local_addr());
    let mut c = Client::connect(&url, Some("user=x")).await;
    assert_eq!(c.closed().await, Some(1011));

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let backend = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ferrocable::rpc::rpc_server::RpcServer::new(app))
            .serve_with_incoming(incoming),
    );
    let mut c = Client::connect(&url, Some("user=x")).await;
    assert_eq!(c.recv().await["type"], "welcome");
    server.shutdown().await;
    backend.abort();
}

#[tokio::test]
async fn oversize_frames_close_with_1009_and_other_clients_are_unaffected() {
    let fx = Fixture::start(Mode::InProcess, &[("max_message_size", "1024")]).await;
    let (mut big, _) = welcomed(&fx, "big").await;
    let (mut ok, _) = welcomed(&fx, "ok").await;
    big.send_raw(Message::Text("x".repeat(4096).into())).await;
    assert_eq!(big.closed().await, Some(1009));
    assert_eq!(ok.subscribe(CHAT_A).await["type"], "confirm_subscription");
    fx.server.shutdown().await;
}

#[tokio::test]
async fn metrics_endpoint_exposes_prefixed_counters_and_handler_latency() {
    let fx = Fixture::start(Mode::InProcess, &[("metrics_http", "/metrics"), ("metrics_prefix", "fc")]).await;
    let (mut c, _) = welcomed(&fx, "m").await;
    c.subscribe(CHAT_A).await;
    fx.server.broadcast(Publication::new("chat_a", "1")).await;
    c.recv().await;
    let (status, body) = common::http(fx.server.local_addr(), "GET", "/metrics", &[], "").await;
    assert_eq!(status, 200);
    assert!(body.contains("fc_clients_num 1\n"), "{body}");
    assert!(body.contains("fc_clients_uniq_num 1\n"), "{body}");
    assert!(body.contains("fc_broadcast_msg_total 1\n"), "{body}");
    assert!(body.contains("fc_broadcast_streams_num 1\n"), "{body}");
    assert!(body.contains("fc_rpc_duration_seconds_count{method=\"connect\"} 1\n"), "{body}");
    assert!(body.contains("fc_rpc_duration_seconds_count{method=\"command\"} 1\n"), "{body}");
    fx.server.shutdown().await;
}

#[tokio::test]
async fn http_broadcast_answers_201_400_401_and_413_with_messages() {
    let fx = Fixture::start(Mode::InProcess, &[("broadcast_key", "k3y"), ("http_broadcast_max_body", "1000")]).await;
    let addr = fx.server.broadcast_addr().unwrap();
    let (mut c, _) = welcomed(&fx, "h").await;
    c.subscribe(CHAT_A).await;
    let auth = [("Authorization", "Bearer k3y")];
    let ok = r#"[{"stream":"chat_a","data":"{\"n\":1}"},{"stream":"chat_a","data":"\"s\""}]"#;
    assert_eq!(common::http(addr, "POST", "/_broadcast", &auth, ok).await.0, 201);
    assert_eq!(c.recv().await["message"], json!({"n":1}));
    assert_eq!(c.recv().await["message"], "s");
    let (status, body) = common::http(addr, "POST", "/_broadcast", &auth, "{nope").await;
    assert_eq!(status, 400);
    assert!(body.contains("malformed broadcast"), "{body}");
    let (status, _) = common::http(addr, "POST", "/_broadcast", &[], ok).await;
    assert_eq!(status, 401);
    let (status, _) = common::http(addr, "POST", "/_broadcast", &[("Authorization", "Bearer wrong")], ok).await;
    assert_eq!(status, 401);
    let big = format!(r#"{{"stream":"chat_a","data":"{}"}}"#, "x".repeat(2000));
    let (status, body) = common::http(addr, "POST", "/_broadcast", &auth, &big).await;
    assert_eq!(status, 413, "{body}");
    assert!(!body.is_empty());
    let remote = r#"{"command":"disconnect","payload":{"identifier":"{\"current_user\":\"h\"}","reconnect":true}}"#;
    assert_eq!(common::http(addr, "POST", "/_broadcast", &auth, remote).await.0, 201);
    assert_eq!(c.recv().await, json!({"type":"disconnect","reason":"remote","reconnect":true}));
    fx.server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_never_reads_is_given_up_on_and_its_disconnect_runs() {
    let fx = Fixture::start(Mode::InProcess, &[("client_queue_size", "64")]).await;
    let (mut stalled, sid) = welcomed(&fx, "stalled").await;
    stalled.subscribe(CHAT_A).await;
    // More than the kernel buffers hold: the server's writes to this client stop making progress.
    let big = "x".repeat(64 * 1024);
    for _ in 0..600 {
        fx.server.broadcast(Publication::new("chat_a", big.clone())).await;
    }
    within(Duration::from_secs(15), "the stalled session to end with a Disconnect call", || {
        fx.app.calls.disconnects.lock().unwrap().iter().any(|(s, _)| *s == sid)
    })
    .await;
    assert_eq!(fx.server.stats().clients_num, 0);
    drop(stalled);
    fx.server.shutdown().await;
}

#[tokio::test]
async fn shutdown_paces_disconnects_to_finish_them_all_before_the_deadline() {
    // 200 sessions owe a Disconnect, the normal pace is 10 calls/s (20 s for all of them) and the queue holds 20:
    // only a drain that speeds up as soon as shutdown starts gets them all done within the 8 s timeout.
    let fx = Fixture::start(
        Mode::InProcess,
        &[("disconnect_rate", "10"), ("disconnect_backlog_size", "20"), ("shutdown_timeout", "8")],
    )
    .await;
    let mut clients = Vec::new();
    for i in 0..200 {
        let (c, _) = welcomed(&fx, &format!("s{i}")).await;
        clients.push(c);
    }
    let started = std::time::Instant::now();
    fx.server.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(8), "shutdown took {:?}", started.elapsed());
    assert_eq!(fx.app.calls.disconnects.lock().unwrap().len(), 200);
}
