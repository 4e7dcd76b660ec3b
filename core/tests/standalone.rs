//! Standalone pub/sub mode end to end: JWT identification, signed `$pubsub` streams, signed Turbo Streams,
//! whispers, and Disconnect calls skipped for sessions that never used the backend. The chat application
//! still sits behind gRPC, so every test also proves the backend was not called when it must not be.
//!
//! Tokens and signed names were made outside this code with Python's standard library:
//! `base64url(header) + "." + base64url(claims) + "." + base64url(HMAC-SHA256(key, those two))` for tokens, and
//! `base64(json.dumps(name)) + "--" + hmac.new(key, that, sha256).hexdigest()` for signed names.

mod common;

use std::time::Duration;

use common::{Client, Fixture, Mode, eventually};
use ferrocable::Publication;
use serde_json::{Value, json};

const KEY: &str = "s3cr3t";
/// HS256, key `s3cr3t`, claims `{"ext":"{\"user\":\"alice\"}"}` (no `exp`).
const ALICE: &str =
    "eyJhbGciOiJIUzI1NiJ9.eyJleHQiOiJ7XCJ1c2VyXCI6XCJhbGljZVwifSJ9.D3-2t5UrbLA7Q8TSnH7OyzsJooR6OXMDkUoUfmG4Xi8";
/// The same claims with `exp` = 1000000000 (2001).
const EXPIRED: &str = "eyJhbGciOiJIUzI1NiJ9.eyJleHQiOiJ7XCJ1c2VyXCI6XCJhbGljZVwifSIsImV4cCI6MTAwMDAwMDAwMH0.ehLr4MmOrxS03g3n0vLK9s7mBxLIWSM6srGfDwAlIuY";
/// `exp` = 2000000000, signed with key `other`.
const WRONG_KEY: &str = "eyJhbGciOiJIUzI1NiJ9.eyJleHQiOiJ7XCJ1c2VyXCI6XCJhbGljZVwifSIsImV4cCI6MjAwMDAwMDAwMH0.c_SFKPuZpdY5efOdvFQ6HnHcIDk47AYNu3PSKfEqVZQ";
/// `{"alg":"none"}` with an empty signature.
const ALG_NONE: &str =
    "eyJhbGciOiAibm9uZSIsICJ0eXAiOiAiSldUIn0.eyJleHQiOiAie1widXNlclwiOlwiYWxpY2VcIn0iLCAiZXhwIjogMjAwMDAwMDAwMH0.";
/// "chat/2024" signed with `s3cr3t`.
const SIGNED_CHAT: &str = "ImNoYXQvMjAyNCI=--42d0afce518d9b9586c82df74dace6e0791f2559caf8f352747f98f8e2d7f56c";
/// "turbo:room:1" signed with `turbo-key`.
const SIGNED_TURBO: &str = "InR1cmJvOnJvb206MSI=--c0e3e1599c37743e20603fbf274adcc5dd4911173dfea4d1917b92de99c5735a";
/// "turbo:room:1" signed with `s3cr3t` (the streams secret, not the Turbo one).
const SIGNED_TURBO_WRONG_KEY: &str =
    "InR1cmJvOnJvb206MSI=--0e666aa1eaeef10d732c316811eba5fbfbae06cc2c802dee1d5d05eca1902590";

const CHAT_A: &str = r#"{"channel":"ChatChannel","room":"a"}"#;

fn pubsub_public(stream: &str) -> String {
    json!({"channel": "$pubsub", "stream_name": stream}).to_string()
}

fn pubsub_signed(signed: &str) -> String {
    json!({"channel": "$pubsub", "signed_stream_name": signed}).to_string()
}

async fn with_token(fx: &Fixture, token: &str) -> Client {
    Client::connect(&fx.url(&format!("?jid={token}")), None).await
}

async fn welcomed_with_token(fx: &Fixture, token: &str) -> (Client, String) {
    let mut c = with_token(fx, token).await;
    let welcome = c.recv().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (c, welcome["sid"].as_str().unwrap().to_owned())
}

async fn whisper(c: &mut Client, identifier: &str, data: Value) {
    c.send(json!({"command": "whisper", "identifier": identifier, "data": data})).await;
}

fn rpc_calls(fx: &Fixture) -> (usize, usize, usize) {
    let calls = &fx.app.calls;
    (
        calls.connects.lock().unwrap().len(),
        calls.commands.lock().unwrap().len(),
        calls.disconnects.lock().unwrap().len(),
    )
}

#[tokio::test]
async fn a_token_in_the_query_the_header_or_the_sub_protocol_identifies_without_rpc() {
    let fx = Fixture::start(Mode::Grpc, &[("jwt_secret", KEY)]).await;
    let url = fx.url("");
    let mut clients = vec![
        with_token(&fx, ALICE).await,
        Client::connect_with_headers(&url, &[("X-JID", ALICE)]).await,
        Client::connect_with_headers(
            &url,
            &[("Sec-WebSocket-Protocol", &format!("actioncable-v1-json, anycable-token.{ALICE}"))],
        )
        .await,
    ];
    for c in &mut clients {
        let welcome = c.recv().await;
        assert_eq!(welcome["type"], "welcome");
        assert_eq!(welcome["sid"].as_str().map(str::len), Some(21), "the server writes the sid itself");
    }
    // The `ext` identifiers are the connection's: the backend sees them on channel commands, and remote
    // disconnects find the sessions by them.
    clients[0].subscribe(CHAT_A).await;
    clients[0].perform(CHAT_A, json!({"action": "whoami"})).await;
    assert_eq!(clients[0].recv().await["message"]["ids"], r#"{"user":"alice"}"#);
    assert_eq!(fx.app.calls.connects.lock().unwrap().len(), 0, "no Connect call for token holders");
    assert_eq!(fx.server.disconnect(r#"{"user":"alice"}"#, false), 3);
    fx.server.shutdown().await;
}

#[tokio::test]
async fn bad_tokens_are_refused_with_the_documented_frames_and_a_normal_close() {
    let fx = Fixture::start(Mode::Grpc, &[("jwt_secret", KEY), ("noauth", "true")]).await;
    let mut expired = with_token(&fx, EXPIRED).await;
    assert_eq!(expired.recv().await, json!({"type":"disconnect","reason":"token_expired","reconnect":false}));
    assert_eq!(expired.closed().await, Some(1000));
    let oversize = format!("{ALICE}{}", "A".repeat(9000));
    for token in [WRONG_KEY, ALG_NONE, "not-a-token", oversize.as_str()] {
        let mut c = with_token(&fx, token).await;
        assert_eq!(
            c.recv().await,
            json!({"type":"disconnect","reason":"unauthorized","reconnect":false}),
            "noauth does not rescue a bad token: {:.40}",
            token
        );
        assert_eq!(c.closed().await, Some(1000));
    }
    assert_eq!(fx.server.stats().failed_auths_total, 5);
    assert_eq!(rpc_calls(&fx), (0, 0, 0));
    fx.server.shutdown().await;
}

#[tokio::test]
async fn without_a_token_clients_fall_back_to_rpc_unless_enforce_jwt() {
    let fx = Fixture::start(Mode::Grpc, &[("jwt_secret", KEY)]).await;
    let mut c = fx.client("bob").await;
    assert_eq!(c.recv().await["type"], "welcome");
    assert_eq!(fx.app.calls.connects.lock().unwrap().len(), 1, "the cookie client went through Connect");
    fx.server.shutdown().await;

    let fx = Fixture::start(Mode::Grpc, &[("jwt_secret", KEY), ("enforce_jwt", "true"), ("noauth", "true")]).await;
    let mut c = fx.client("bob").await;
    assert_eq!(c.recv().await, json!({"type":"disconnect","reason":"unauthorized","reconnect":false}));
    assert_eq!(c.closed().await, Some(1000));
    let (mut ok, _) = welcomed_with_token(&fx, ALICE).await;
    assert_eq!(ok.subscribe(CHAT_A).await["type"], "confirm_subscription");
    assert_eq!(fx.app.calls.connects.lock().unwrap().len(), 0);
    fx.server.shutdown().await;
}

#[tokio::test]
async fn signed_stream_names_are_verified_and_streamed_without_rpc() {
    let fx = Fixture::start(Mode::Grpc, &[("jwt_secret", KEY), ("streams_secret", KEY)]).await;
    let (mut c, _) = welcomed_with_token(&fx, ALICE).await;
    let signed = pubsub_signed(SIGNED_CHAT);
    assert_eq!(c.subscribe(&signed).await, json!({"identifier": signed, "type": "confirm_subscription"}));
    fx.server.broadcast(Publication::new("chat/2024", r#"{"text":"hi"}"#)).await;
    assert_eq!(c.recv().await, json!({"identifier": signed, "message": {"text": "hi"}}));

    let forged = pubsub_signed(&SIGNED_CHAT.replacen("ImNoYXQvMjAyNCI=", "ImNoYXQvMjAyNSI=", 1));
    assert_eq!(c.subscribe(&forged).await, json!({"identifier": forged, "type": "reject_subscription"}));
    let malformed = pubsub_signed("%%%--not-hex");
    assert_eq!(c.subscribe(&malformed).await["type"], "reject_subscription");
    let public = pubsub_public("chat/2024");
    assert_eq!(c.subscribe(&public).await["type"], "reject_subscription", "public_streams is off");
    assert_eq!(rpc_calls(&fx), (0, 0, 0));
    fx.server.shutdown().await;
}

#[tokio::test]
async fn turbo_streams_subscriptions_are_confirmed_with_the_turbo_secret() {
    let fx = Fixture::start(
        Mode::Grpc,
        &[
            ("jwt_secret", KEY),
            ("streams_secret", KEY),
            ("turbo_streams", "true"),
            ("turbo_streams_secret", "turbo-key"),
        ],
    )
    .await;
    let (mut c, _) = welcomed_with_token(&fx, ALICE).await;
    let turbo = json!({"channel": "Turbo::StreamsChannel", "signed_stream_name": SIGNED_TURBO}).to_string();
    assert_eq!(c.subscribe(&turbo).await["type"], "confirm_subscription");
    let html = r#"<turbo-stream action="append" target="messages"><template><p>hi</p></template></turbo-stream>"#;
    fx.server.broadcast(Publication::new("turbo:room:1", html)).await;
    assert_eq!(c.recv().await, json!({"identifier": turbo, "message": html}));

    let wrong = json!({"channel": "Turbo::StreamsChannel", "signed_stream_name": SIGNED_TURBO_WRONG_KEY}).to_string();
    assert_eq!(c.subscribe(&wrong).await["type"], "reject_subscription");
    assert_eq!(rpc_calls(&fx), (0, 0, 0));
    fx.server.shutdown().await;
}

#[tokio::test]
async fn whispers_reach_the_other_subscribers_of_a_public_stream_but_not_the_sender() {
    let fx = Fixture::start(Mode::Grpc, &[("jwt_secret", KEY), ("public_streams", "true")]).await;
    let id = pubsub_public("room-1");
    let mut members = Vec::new();
    for _ in 0..3 {
        let (mut c, _) = welcomed_with_token(&fx, ALICE).await;
        assert_eq!(c.subscribe(&id).await["type"], "confirm_subscription");
        members.push(c);
    }
    whisper(&mut members[0], &id, json!({"event": "typing", "name": "alice"})).await;
    for c in &mut members[1..] {
        assert_eq!(c.recv().await, json!({"identifier": id, "message": {"event": "typing", "name": "alice"}}));
    }
    members[0].expect_silence(Duration::from_millis(300)).await;
    // A whisper for a subscription the client does not have goes nowhere.
    whisper(&mut members[0], &pubsub_public("room-2"), json!({"x": 1})).await;
    members[1].expect_silence(Duration::from_millis(200)).await;
    fx.server.shutdown().await;
}

#[tokio::test]
async fn signed_streams_whisper_only_with_streams_whisper() {
    for (enabled, delivered) in [("false", false), ("true", true)] {
        let fx =
            Fixture::start(Mode::Grpc, &[("jwt_secret", KEY), ("streams_secret", KEY), ("streams_whisper", enabled)])
                .await;
        let id = pubsub_signed(SIGNED_CHAT);
        let (mut a, _) = welcomed_with_token(&fx, ALICE).await;
        let (mut b, _) = welcomed_with_token(&fx, ALICE).await;
        a.subscribe(&id).await;
        b.subscribe(&id).await;
        whisper(&mut a, &id, json!({"cursor": [1, 2]})).await;
        match delivered {
            true => assert_eq!(b.recv().await["message"], json!({"cursor": [1, 2]})),
            false => b.expect_silence(Duration::from_millis(300)).await,
        }
        fx.server.shutdown().await;
    }
}

#[tokio::test]
async fn whispers_over_the_rate_are_dropped() {
    let fx =
        Fixture::start(Mode::Grpc, &[("jwt_secret", KEY), ("public_streams", "true"), ("whisper_rate", "3")]).await;
    let id = pubsub_public("rate");
    let (mut a, _) = welcomed_with_token(&fx, ALICE).await;
    let (mut b, _) = welcomed_with_token(&fx, ALICE).await;
    a.subscribe(&id).await;
    b.subscribe(&id).await;
    for n in 0..10 {
        whisper(&mut a, &id, json!(n)).await;
    }
    let mut got = Vec::new();
    while let Some(frame) = b.try_recv(Duration::from_millis(400)).await {
        got.push(frame["message"].clone());
    }
    // A burst of `whisper_rate`, plus at most what refills while the ten are sent.
    assert!(got.len() >= 3 && got.len() <= 4, "{got:?}");
    assert_eq!(got[..3], [json!(0), json!(1), json!(2)]);
    fx.server.shutdown().await;
}

#[tokio::test]
async fn disconnect_mode_auto_calls_disconnect_only_for_sessions_that_used_the_backend() {
    let fx =
        Fixture::start(Mode::Grpc, &[("jwt_secret", KEY), ("public_streams", "true"), ("streams_secret", KEY)]).await;
    let (mut standalone, _) = welcomed_with_token(&fx, ALICE).await;
    standalone.subscribe(&pubsub_public("news")).await;
    standalone.subscribe(&pubsub_signed(SIGNED_CHAT)).await;
    standalone.close().await;
    eventually("the standalone session to end", || fx.server.stats().clients_num == 0).await;

    let (mut mixed, mixed_sid) = welcomed_with_token(&fx, ALICE).await;
    mixed.subscribe(CHAT_A).await;
    mixed.close().await;
    eventually("the Disconnect call of the session that used RPC", || rpc_calls(&fx).2 == 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let disconnects = fx.app.calls.disconnects.lock().unwrap().clone();
    assert_eq!(disconnects.len(), 1, "no Disconnect for the session that never touched RPC");
    assert_eq!(disconnects[0].0, mixed_sid);
    assert_eq!(disconnects[0].1.identifiers, r#"{"user":"alice"}"#);
    fx.server.shutdown().await;

    let fx =
        Fixture::start(Mode::Grpc, &[("jwt_secret", KEY), ("public_streams", "true"), ("disconnect_mode", "always")])
            .await;
    let (mut c, sid) = welcomed_with_token(&fx, ALICE).await;
    c.subscribe(&pubsub_public("news")).await;
    c.close().await;
    eventually("the Disconnect call with disconnect_mode=always", || rpc_calls(&fx).2 == 1).await;
    let (dsid, request) = fx.app.calls.disconnects.lock().unwrap()[0].clone();
    assert_eq!(dsid, sid);
    assert_eq!(request.subscriptions, vec![pubsub_public("news")]);
    fx.server.shutdown().await;
}

/// The upgrade request of a client identified by [`ALICE`]'s token.
fn token_upgrade_request() -> String {
    format!(
        "GET /cable?jid={ALICE} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: actioncable-v1-json\r\n\r\n"
    )
}

/// The kernel's TCP counters of a client socket.
fn tcp_info(tcp: &tokio::net::TcpStream) -> libc::tcp_info {
    use std::os::fd::AsRawFd;
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let info_ptr = (&raw mut info).cast();
    // SAFETY: TCP_INFO into a tcp_info of the size given, on a socket the caller holds.
    let rc = unsafe { libc::getsockopt(tcp.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, info_ptr, &mut len) };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info
}

/// Reads from a raw client socket until `done` holds for what arrived (or the end of input); returns it.
async fn read_until(tcp: &mut tokio::net::TcpStream, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    while !done(&got) {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(common::TIMEOUT, tcp.read(&mut buf)).await.unwrap().unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    got
}

fn has_welcome(got: &[u8]) -> bool {
    String::from_utf8_lossy(got).contains(r#""type":"welcome""#)
}

/// A client identified by its token is accepted without a handler call, so the answer to its upgrade and its
/// welcome leave in one write: the client's socket has received exactly one segment with data once it holds both
/// (written apart, they are two).
#[tokio::test]
async fn a_token_connection_gets_the_upgrade_answer_and_the_welcome_in_one_write() {
    use tokio::io::AsyncWriteExt;
    let fx = Fixture::start(Mode::Grpc, &[("jwt_secret", KEY)]).await;
    for attempt in 0..5 {
        let mut tcp = tokio::net::TcpStream::connect(fx.server.local_addr()).await.unwrap();
        tcp.write_all(token_upgrade_request().as_bytes()).await.unwrap();
        let got = read_until(&mut tcp, has_welcome).await;
        let got = String::from_utf8_lossy(&got);
        assert!(got.contains(r#""type":"welcome""#), "closed before the welcome: {got:?}");
        assert!(got.starts_with("HTTP/1.1 101 Switching Protocols\r\n"), "{got}");
        assert!(got.contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"), "{got}");
        assert!(got.contains("sec-websocket-protocol: actioncable-v1-json\r\n"), "{got}");
        assert_eq!(tcp_info(&tcp).tcpi_data_segs_in, 1, "attempt {attempt}: the 101 and the welcome came apart: {got:?}");
    }
    assert_eq!(rpc_calls(&fx).0, 0, "a token connection makes no Connect call");
}

/// The answer to a client's close frame is the connection's last write: it leaves with the FIN, in one segment
/// (written and closed apart, they are two). A delayed ACK of the close frame may add a segment on a busy
/// machine, so one attempt in five must show the single segment.
#[tokio::test]
async fn the_answer_to_a_close_frame_leaves_with_the_fin() {
    use tokio::io::AsyncWriteExt;
    let fx = Fixture::start(Mode::Grpc, &[("jwt_secret", KEY)]).await;
    let mut segments = Vec::new();
    for _ in 0..5 {
        let mut tcp = tokio::net::TcpStream::connect(fx.server.local_addr()).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        tcp.write_all(token_upgrade_request().as_bytes()).await.unwrap();
        assert!(has_welcome(&read_until(&mut tcp, has_welcome).await), "closed before the welcome");
        let before = tcp_info(&tcp).tcpi_segs_in;
        // A masked close frame with code 1000.
        let mask = [1u8, 2, 3, 4];
        let payload = 1000u16.to_be_bytes().iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m).collect::<Vec<_>>();
        tcp.write_all(&[&[0x88, 0x82][..], &mask, &payload].concat()).await.unwrap();
        let answer = read_until(&mut tcp, |_| false).await;
        assert_eq!(answer, [0x88, 0x02, 0x03, 0xe8], "the close frame answered with code 1000, then the end of input");
        segments.push(tcp_info(&tcp).tcpi_segs_in - before);
    }
    assert!(segments.contains(&1), "segments received after the close frame, per attempt: {segments:?}");
}
