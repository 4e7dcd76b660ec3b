//! Hostile input through real sockets: WebSocket frames no client library would send (invalid UTF-8, bad
//! framing, oversized control frames, a header promising 10 MB), JSON built to hurt a parser, identifiers that
//! are not JSON or as big as a frame may be, thousands of subscriptions from one client, and hostile requests to
//! the HTTP broadcast endpoint.
//!
//! Every test checks the documented outcome (see docs/architecture.md, "Refused input"), then that a bystander
//! on the same server still gets its broadcasts and a new client is still served, and that no server task
//! panicked on the way.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, Once};
use std::thread::ThreadId;
use std::time::Duration;

use common::raw::{self, RawClient};
use common::{Client, Fixture, Mode, eventually};
use ferrocable::Publication;
use serde_json::{Value, json};

const CHAT_A: &str = r#"{"channel":"ChatChannel","room":"a"}"#;

/// Threads on which something panicked. Tests run on tokio's current-thread runtime, so the server a test
/// starts runs every task on the test's own thread: a panic in a connection task, which tokio would swallow,
/// is recorded against that thread.
static PANICKED: Mutex<Vec<ThreadId>> = Mutex::new(Vec::new());

fn watch_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.lock().unwrap_or_else(|e| e.into_inner()).push(std::thread::current().id());
            previous(info);
        }));
    });
}

/// A server under attack and a bystander subscribed to `chat_a` on it.
struct Scene {
    fx: Fixture,
    bystander: Client,
    broadcasts: u32,
}

impl Scene {
    async fn start(mode: Mode, extra: &[(&str, &str)]) -> Self {
        watch_panics();
        let fx = Fixture::start(mode, extra).await;
        let mut bystander = fx.client("bystander").await;
        assert_eq!(bystander.recv().await["type"], "welcome");
        assert_eq!(bystander.subscribe(CHAT_A).await["type"], "confirm_subscription");
        Self { fx, bystander, broadcasts: 0 }
    }

    /// A raw connection, welcomed.
    async fn attacker(&self) -> RawClient {
        let mut attacker = RawClient::connect(self.fx.server.local_addr(), "/cable", "mallory").await;
        assert_eq!(attacker.recv().await["type"], "welcome");
        attacker
    }

    /// The bystander still gets broadcasts, a new client is still served, and nothing panicked.
    async fn assert_unaffected(&mut self) {
        self.broadcasts += 1;
        self.fx.server.broadcast(Publication::new("chat_a", json!({"n": self.broadcasts}).to_string())).await;
        let got = self.bystander.recv().await;
        assert_eq!(got, json!({"identifier": CHAT_A, "message": {"n": self.broadcasts}}));
        let mut newcomer = self.fx.client("newcomer").await;
        assert_eq!(newcomer.recv().await["type"], "welcome");
        assert_eq!(newcomer.subscribe(CHAT_A).await["type"], "confirm_subscription");
        newcomer.close().await;
        let panicked = PANICKED.lock().unwrap_or_else(|e| e.into_inner()).contains(&std::thread::current().id());
        assert!(!panicked, "a server task panicked (see the output above)");
    }

    async fn finish(mut self) {
        self.assert_unaffected().await;
        self.fx.server.shutdown().await;
    }

    /// (command, identifier) of every call the attackers' connections made.
    fn attacker_calls(&self) -> Vec<(String, String)> {
        let calls = self.fx.app.calls.commands.lock().unwrap();
        calls
            .iter()
            .filter(|(_, m)| m.connection_identifiers.contains("mallory"))
            .map(|(_, m)| (m.command.clone(), m.identifier.clone()))
            .collect()
    }
}

#[tokio::test]
async fn invalid_utf8_in_a_text_message_closes_with_1007() {
    let mut scene = Scene::start(Mode::InProcess, &[]).await;
    let mut whole = scene.attacker().await;
    whole.send_frame(true, raw::TEXT, b"{\"command\":\"subscribe\",\"identifier\":\"\xff\xfe\"}").await;
    assert_eq!(whole.closed().await, 1007);
    scene.assert_unaffected().await;

    // A character split across two fragments is fine; a sequence that turns out invalid in the second is not.
    let mut split = scene.attacker().await;
    let frame = json!({"command":"subscribe","identifier":"{\"channel\":\"ChatChannel\",\"room\":\"€\"}"}).to_string();
    let cut = frame.find('€').unwrap() + 1;
    split.send_frame(false, raw::TEXT, &frame.as_bytes()[..cut]).await;
    split.send_frame(true, raw::CONTINUATION, &frame.as_bytes()[cut..]).await;
    assert_eq!(split.recv().await["type"], "confirm_subscription");
    split.send_frame(false, raw::TEXT, b"{\"command\":\"pong\",\"x\":\"\xe2\x82").await;
    split.send_frame(true, raw::CONTINUATION, b"\xff\"}").await;
    assert_eq!(split.closed().await, 1007);
    scene.finish().await;
}

#[tokio::test]
async fn binary_frames_are_ignored_and_the_connection_keeps_working() {
    let mut scene = Scene::start(Mode::Grpc, &[]).await;
    let mut attacker = scene.attacker().await;
    let subscribe = json!({"command":"subscribe","identifier":CHAT_A}).to_string();
    attacker.send_frame(true, raw::BINARY, subscribe.as_bytes()).await;
    attacker.send_frame(false, raw::BINARY, &[0xff, 0x00]).await;
    attacker.send_frame(true, raw::CONTINUATION, &[0xfe]).await;
    attacker.send_frame(true, raw::TEXT, subscribe.as_bytes()).await;
    assert_eq!(attacker.recv().await, json!({"identifier": CHAT_A, "type": "confirm_subscription"}));
    scene.assert_unaffected().await;
    assert_eq!(scene.attacker_calls(), [("subscribe".to_owned(), CHAT_A.to_owned())], "binary frames make no calls");
    scene.finish().await;
}

#[tokio::test]
async fn fragmented_text_is_reassembled_with_a_ping_in_between() {
    let scene = Scene::start(Mode::Grpc, &[]).await;
    let mut attacker = scene.attacker().await;
    let frame = json!({"command":"subscribe","identifier":CHAT_A}).to_string();
    let (head, rest) = frame.as_bytes().split_at(10);
    let (middle, tail) = rest.split_at(12);
    attacker.send_frame(false, raw::TEXT, head).await;
    attacker.send_frame(false, raw::CONTINUATION, middle).await;
    attacker.send_frame(true, raw::PING, b"between fragments").await;
    attacker.send_frame(true, raw::CONTINUATION, tail).await;
    assert_eq!(attacker.pong().await, b"between fragments");
    assert_eq!(attacker.recv().await, json!({"identifier": CHAT_A, "type": "confirm_subscription"}));
    scene.finish().await;
}

#[tokio::test]
async fn fragments_adding_up_past_max_message_size_close_with_1009() {
    let scene = Scene::start(Mode::InProcess, &[("max_message_size", "1024")]).await;
    let mut attacker = scene.attacker().await;
    let fragment = [b' '; 500];
    attacker.send_frame(false, raw::TEXT, b"{").await;
    attacker.send_frame(false, raw::CONTINUATION, &fragment).await;
    attacker.send_frame(false, raw::CONTINUATION, &fragment).await;
    attacker.send_frame(false, raw::CONTINUATION, &fragment).await;
    assert_eq!(attacker.closed().await, 1009, "each fragment fits, the message does not");
    scene.finish().await;
}

#[tokio::test]
async fn framing_violations_close_with_1002() {
    let mut scene = Scene::start(Mode::InProcess, &[]).await;
    let big = [b'p'; 126];
    let unmasked_text = [&[0x81u8, 0x02][..], b"{}"].concat();
    let rsv1_text = [&[0xc1u8, 0x82, 1, 2, 3, 4][..], &[b'{' ^ 1, b'}' ^ 2]].concat();
    // (what, frames as (fin, opcode, payload), then raw bytes)
    type Frames<'a> = Vec<(bool, u8, &'a [u8])>;
    let cases: [(&str, Frames, &[u8]); 9] = [
        ("ping over 125 bytes", vec![(true, raw::PING, &big)], b""),
        ("pong over 125 bytes", vec![(true, raw::PONG, &big)], b""),
        ("close over 125 bytes", vec![(true, raw::CLOSE, &big)], b""),
        ("fragmented ping", vec![(false, raw::PING, b"a"), (true, raw::CONTINUATION, b"b")], b""),
        ("continuation with nothing to continue", vec![(true, raw::CONTINUATION, b"{}")], b""),
        ("new message inside a fragmented one", vec![(false, raw::TEXT, b"{"), (true, raw::TEXT, b"{}")], b""),
        ("reserved data opcode", vec![(true, 0x3, b"{}")], b""),
        ("unmasked frame", vec![], &unmasked_text),
        ("reserved bit set", vec![], &rsv1_text),
    ];
    for (what, frames, bytes) in cases {
        let mut attacker = scene.attacker().await;
        for (fin, opcode, payload) in frames {
            attacker.send_frame(fin, opcode, payload).await;
        }
        attacker.send_bytes(bytes).await;
        assert_eq!(attacker.closed().await, 1002, "{what}");
        scene.assert_unaffected().await;
    }
    scene.finish().await;
}

#[tokio::test]
async fn a_frame_promising_10_mb_is_refused_from_its_header_with_1009() {
    let mut scene = Scene::start(Mode::InProcess, &[]).await;
    // The close comes while nearly all of the promised payload is still unsent: the server decided on the
    // header and never waited for (or made room for) the 10 MB.
    let mut attacker = scene.attacker().await;
    attacker.send_partial_frame(raw::TEXT, 10 * 1024 * 1024, &[b' '; 100]).await;
    assert_eq!(attacker.closed().await, 1009);
    scene.assert_unaffected().await;
    // The largest length a header can carry: a server that reserved it up front would abort.
    let mut attacker = scene.attacker().await;
    attacker.send_partial_frame(raw::BINARY, u64::MAX >> 1, b"").await;
    assert_eq!(attacker.closed().await, 1009);
    scene.finish().await;
}

#[tokio::test]
async fn deeply_nested_json_never_breaks_the_decoder() {
    let mut scene = Scene::start(Mode::Grpc, &[("max_message_size", "1048576")]).await;
    let mut attacker = scene.attacker().await;
    let deep = |open: &str, close: &str| format!("{}{}", open.repeat(100_000), close.repeat(100_000));
    // Not commands: ignored, no call.
    for frame in [
        "[".repeat(100_000),
        deep("[", "]"),
        deep("{\"a\":", "}"),
        format!(r#"{{"command":"subscribe","identifier":{}}}"#, deep("[", "]")),
        format!(r#"{{"command":{},"identifier":"x"}}"#, deep("[", "]")),
    ] {
        attacker.send_frame(true, raw::TEXT, frame.as_bytes()).await;
    }
    // A field the server does not read is skipped whatever its depth (in one pass, without recursion), so
    // this is a good command.
    let extra = format!(r#"{{"command":"subscribe","identifier":"x","extra":{}}}"#, deep("[", "]"));
    attacker.send_frame(true, raw::TEXT, extra.as_bytes()).await;
    assert_eq!(attacker.recv().await, json!({"identifier": "x", "type": "confirm_subscription"}));
    // Nesting inside the identifier string is only text: it is passed on, and the application decides.
    let deep_identifier = deep("[", "]");
    attacker.send_json(&json!({"command":"subscribe","identifier":deep_identifier})).await;
    assert_eq!(attacker.recv().await, json!({"identifier": deep_identifier, "type": "confirm_subscription"}));
    scene.assert_unaffected().await;
    let identifiers: Vec<String> = scene.attacker_calls().into_iter().map(|(_, identifier)| identifier).collect();
    assert_eq!(identifiers, ["x".to_owned(), deep_identifier], "frames that are not commands make no calls");
    scene.finish().await;
}

#[tokio::test]
async fn identifiers_that_are_not_json_reach_the_application_byte_for_byte() {
    let mut scene = Scene::start(Mode::Grpc, &[]).await;
    let mut attacker = scene.attacker().await;
    let identifiers = [
        "not json at all",
        r#"{"channel":"#,
        "",
        "\u{0}nul \u{1f} control",
        "emoji 😀, quote \", backslash \\, \u{2028}",
        r#"  { "channel" : "ChatChannel" , "room":"lobby" }  "#,
        r#"{"channel":"ChatChannel","room":"a\u0062"}"#,
    ];
    for identifier in identifiers {
        attacker.send_json(&json!({"command":"subscribe","identifier":identifier})).await;
        assert_eq!(attacker.recv().await, json!({"identifier": identifier, "type": "confirm_subscription"}));
    }
    // Not a string: not a command, no call.
    for identifier in [json!({"channel":"ChatChannel"}), json!(42), Value::Null, json!(["a"])] {
        attacker.send_json(&json!({"command":"subscribe","identifier":identifier})).await;
    }
    attacker.send_json(&json!({"command":"subscribe"})).await;
    // Every subscription but the last streams from `chat_lobby` (the application's room when the identifier
    // names none); a broadcast names each by its identifier exactly as the client wrote it.
    scene.fx.server.broadcast(Publication::new("chat_lobby", "\"hi\"")).await;
    let mut got: Vec<String> = Vec::new();
    for _ in 1..identifiers.len() {
        let frame = attacker.recv().await;
        assert_eq!(frame["message"], "hi");
        got.push(frame["identifier"].as_str().unwrap().to_owned());
    }
    let mut expected = identifiers[..identifiers.len() - 1].to_vec();
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
    scene.assert_unaffected().await;
    let calls: Vec<String> = scene.attacker_calls().into_iter().map(|(_, identifier)| identifier).collect();
    assert_eq!(calls, identifiers, "the application got each identifier unchanged, and nothing else");
    scene.finish().await;
}

#[tokio::test]
async fn identifiers_as_big_as_max_message_size_are_served_and_bigger_frames_close_with_1009() {
    let mut scene = Scene::start(Mode::InProcess, &[]).await;
    let mut attacker = scene.attacker().await;
    let frame_for = |identifier: &str| json!({"command":"subscribe","identifier":identifier}).to_string();
    let overhead = frame_for("").len();
    let huge = format!("{{\"channel\":\"ChatChannel\",\"pad\":\"{}\"}}", "x".repeat(65_536 - overhead - 60));
    let huge = format!("{huge}{}", " ".repeat(65_536 - frame_for(&huge).len()));
    assert_eq!(frame_for(&huge).len(), 65_536, "exactly max_message_size");
    attacker.send_frame(true, raw::TEXT, frame_for(&huge).as_bytes()).await;
    assert_eq!(attacker.recv().await, json!({"identifier": huge, "type": "confirm_subscription"}));
    scene.fx.server.broadcast(Publication::new("chat_lobby", "1")).await;
    assert_eq!(attacker.recv().await, json!({"identifier": huge, "message": 1}));
    scene.assert_unaffected().await;

    let one_more = format!("{huge}x");
    attacker.send_frame(true, raw::TEXT, frame_for(&one_more).as_bytes()).await;
    assert_eq!(attacker.closed().await, 1009);
    scene.finish().await;
}

/// Log lines written on this thread while the guard lives (the server's tasks run on it too).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || logs.clone()).finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn count(&self, text: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap()).lines().filter(|l| l.contains(text)).count()
    }
}

impl Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Subscribes to `identifiers` in one burst and returns the frame type each one got, in order.
async fn subscribe_all(client: &mut RawClient, identifiers: &[String]) -> Vec<String> {
    for identifier in identifiers {
        client.send_json(&json!({"command":"subscribe","identifier":identifier})).await;
    }
    let mut kinds = Vec::with_capacity(identifiers.len());
    for identifier in identifiers {
        let frame = client.recv().await;
        assert_eq!(frame["identifier"], identifier.as_str());
        kinds.push(frame["type"].as_str().unwrap_or_default().to_owned());
    }
    kinds
}

/// 2,000 subscribes from one connection against `max_subscriptions=50`: 50 confirmed, the rest rejected
/// without a call, one log line per connection; an unsubscribe makes room for one more.
async fn thousands_of_subscriptions_stop_at_max_subscriptions(mode: Mode, standalone: bool) {
    let logs = Logs::default();
    let _capture = logs.capture();
    let extra: &[(&str, &str)] = if standalone {
        &[("max_subscriptions", "50"), ("public_streams", "true")]
    } else {
        &[("max_subscriptions", "50")]
    };
    let scene = Scene::start(mode, extra).await;
    let identifier = |i: usize| {
        if standalone {
            json!({"channel": "$pubsub", "stream_name": format!("s{i}")}).to_string()
        } else {
            json!({"channel": "ChatChannel", "room": format!("r{i}")}).to_string()
        }
    };
    let mut attacker = scene.attacker().await;
    let identifiers: Vec<String> = (0..2000).map(identifier).collect();
    let kinds = subscribe_all(&mut attacker, &identifiers).await;
    assert!(kinds[..50].iter().all(|k| k == "confirm_subscription"), "{:?}", &kinds[..50]);
    assert!(kinds[50..].iter().all(|k| k == "reject_subscription"), "{:?}", &kinds[50..60]);
    let expected_calls = if standalone { 0 } else { 50 };
    assert_eq!(scene.attacker_calls().len(), expected_calls, "rejected subscribes make no calls");
    assert_eq!(logs.count("max_subscriptions reached"), 1, "logged once for the connection, not per frame");

    // The limit counts the subscriptions held now.
    attacker.send_json(&json!({"command":"unsubscribe","identifier":identifiers[0]})).await;
    let kinds = subscribe_all(&mut attacker, &[identifier(5000), identifier(5001)]).await;
    assert_eq!(kinds, ["confirm_subscription", "reject_subscription"]);
    scene.fx.server.broadcast(Publication::new(if standalone { "s49" } else { "chat_r49" }, "7")).await;
    assert_eq!(attacker.recv().await, json!({"identifier": identifiers[49], "message": 7}));

    // The limit is per connection.
    let mut second = scene.attacker().await;
    let kinds = subscribe_all(&mut second, &identifiers[..60]).await;
    assert_eq!(kinds.iter().filter(|k| *k == "confirm_subscription").count(), 50);
    assert_eq!(logs.count("max_subscriptions reached"), 2);
    scene.finish().await;
}

#[tokio::test]
async fn grpc_thousands_of_subscriptions_stop_at_max_subscriptions() {
    thousands_of_subscriptions_stop_at_max_subscriptions(Mode::Grpc, false).await;
}

#[tokio::test]
async fn in_process_thousands_of_subscriptions_stop_at_max_subscriptions() {
    thousands_of_subscriptions_stop_at_max_subscriptions(Mode::InProcess, false).await;
}

#[tokio::test]
async fn standalone_thousands_of_subscriptions_stop_at_max_subscriptions() {
    thousands_of_subscriptions_stop_at_max_subscriptions(Mode::Grpc, true).await;
}

const KEY: &str = "k3y";

/// A POST to the broadcast endpoint with the right key and `head` as extra header lines.
fn broadcast_request(head: &str, body: &[u8]) -> Vec<u8> {
    let head = format!(
        "POST /_broadcast HTTP/1.1\r\nHost: test\r\nConnection: close\r\nAuthorization: Bearer {KEY}\r\n{head}\r\n"
    );
    [head.as_bytes(), body].concat()
}

#[tokio::test]
async fn http_broadcasts_are_read_as_json_whatever_their_content_type() {
    let mut scene = Scene::start(Mode::InProcess, &[("broadcast_key", KEY)]).await;
    let addr = scene.fx.server.broadcast_addr().unwrap();
    for (i, content_type) in [
        "",
        "Content-Type: text/plain\r\n",
        "Content-Type: application/x-www-form-urlencoded\r\n",
        "Content-Type: application/json; charset=utf-8\r\n",
    ]
    .into_iter()
    .enumerate()
    {
        let body = json!({"stream": "chat_a", "data": json!({"ct": i}).to_string()}).to_string();
        let request = broadcast_request(&format!("{content_type}Content-Length: {}\r\n", body.len()), body.as_bytes());
        assert_eq!(common::http_raw(addr, &request).await.0, 201, "{content_type:?}");
        assert_eq!(scene.bystander.recv().await["message"], json!({"ct": i}));
    }
    scene.finish().await;
}

#[tokio::test]
async fn http_broadcasts_with_hostile_bodies_or_keys_are_refused_with_a_message() {
    let mut scene =
        Scene::start(Mode::InProcess, &[("broadcast_key", KEY), ("http_broadcast_max_body", "300000")]).await;
    let addr = scene.fx.server.broadcast_addr().unwrap();
    let sized = |body: &[u8]| broadcast_request(&format!("Content-Length: {}\r\n", body.len()), body);

    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    for (what, body) in [
        ("empty", Vec::new()),
        ("not UTF-8", b"{\"stream\":\"chat_a\",\"data\":\"\xff\"}".to_vec()),
        ("deeply nested", deep.into_bytes()),
        ("a string", b"\"chat_a\"".to_vec()),
        ("no stream", br#"{"data":"x"}"#.to_vec()),
        ("a bad entry in a batch", br#"[{"stream":"chat_a","data":"1"},{"stream":7,"data":"2"}]"#.to_vec()),
    ] {
        let (status, message) = common::http_raw(addr, &sized(&body)).await;
        assert_eq!(status, 400, "{what}: {message}");
        assert!(message.starts_with("malformed broadcast: "), "{what}: {message}");
    }

    // Over the limit, whether announced by Content-Length or streamed in chunks.
    let big = format!(r#"{{"stream":"chat_a","data":"{}"}}"#, "x".repeat(300_000));
    let (status, message) = common::http_raw(addr, &sized(big.as_bytes())).await;
    assert_eq!((status, message.is_empty()), (413, false), "{message}");
    let mut chunked = broadcast_request("Transfer-Encoding: chunked\r\n", b"");
    for chunk in big.as_bytes().chunks(50_000) {
        chunked.extend(format!("{:x}\r\n", chunk.len()).into_bytes());
        chunked.extend_from_slice(chunk);
        chunked.extend(b"\r\n");
    }
    chunked.extend(b"0\r\n\r\n");
    let (status, message) = common::http_raw(addr, &chunked).await;
    assert_eq!((status, message.is_empty()), (413, false), "{message}");

    let body = r#"{"stream":"chat_a","data":"\"keyed\""}"#;
    for authorization in
        ["", "Bearer", "Bearer ", "bearer k3y", "Basic k3y", "Bearer k3", "Bearer k3yy", "Bearer  k3y", "Bearer K3Y"]
    {
        let head = format!("Authorization: {authorization}\r\nContent-Length: {}\r\n", body.len());
        let request = format!("POST /_broadcast HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{head}\r\n{body}");
        let (status, message) = common::http_raw(addr, request.as_bytes()).await;
        assert_eq!(status, 401, "{authorization:?}");
        assert!(message.contains("broadcast key"), "{message}");
    }
    scene.bystander.expect_silence(Duration::from_millis(200)).await;
    // Only after all of that: a good one, which the bystander gets first.
    assert_eq!(common::http_raw(addr, &sized(body.as_bytes())).await.0, 201);
    assert_eq!(scene.bystander.recv().await["message"], "keyed");
    scene.finish().await;
}

#[tokio::test]
async fn a_panic_in_a_connection_task_would_be_seen() {
    // The panic watch itself: a panic on this thread inside a spawned task is recorded, though tokio swallows it.
    watch_panics();
    let task = tokio::spawn(async { panic!("a deliberate panic, to check that the panic watch sees it") });
    assert!(task.await.is_err());
    eventually("the panic is recorded", || PANICKED.lock().unwrap().contains(&std::thread::current().id())).await;
}
