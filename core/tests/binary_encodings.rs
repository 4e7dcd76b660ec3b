//! The MessagePack and Protobuf sub-protocols through real sockets, with the gRPC backend and in-process: the
//! whole Action Cable conversation in binary frames, binary and JSON clients on one stream, stream positions and
//! history on the extended forms, handler transmissions re-encoded (a bad one skipped, the connection kept), and
//! bad binary input refused as bad JSON is (ignored and counted, 1009 when oversize) without touching anyone else.

mod common;

use std::time::Duration;

use common::{Client, Fixture, Mode};
use ferrocable::Publication;
use ferrocable::protocol::{msgpack, protobuf};
use prost::Message as _;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const CHAT_A: &str = r#"{"channel":"ChatChannel","room":"a"}"#;

/// A client speaking one binary sub-protocol; frames are read back as the JSON objects they stand for.
struct BinaryClient {
    protocol: &'static str,
    client: Client,
}

impl BinaryClient {
    async fn connect(fx: &Fixture, protocol: &'static str, user: &str) -> Self {
        let cookie = format!("user={user}");
        let client =
            Client::connect_with_headers(&fx.url(""), &[("Sec-WebSocket-Protocol", protocol), ("Cookie", &cookie)])
                .await;
        Self { protocol, client }
    }

    fn protobuf(&self) -> bool {
        self.protocol.contains("protobuf")
    }

    fn extended(&self) -> bool {
        self.protocol.contains("-ext-")
    }

    /// Sends a command given as its JSON form.
    async fn send(&mut self, command: Value) {
        let bytes = if self.protobuf() {
            let text = |key: &str| command[key].as_str().unwrap_or_default().to_owned();
            let kind = protobuf::Command::from_name(command["command"].as_str().unwrap_or_default());
            let history = command.get("history").map(|h| protobuf::HistoryRequest {
                since: h["since"].as_i64().unwrap_or(0),
                streams: h["streams"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(stream, at)| {
                        let at = protobuf::StreamHistoryRequest {
                            epoch: at["epoch"].as_str().unwrap_or_default().to_owned(),
                            offset: at["offset"].as_i64().unwrap_or(0),
                        };
                        (stream.clone(), at)
                    })
                    .collect(),
            });
            let message = protobuf::Message {
                command: kind as i32,
                identifier: text("identifier"),
                data: text("data"),
                history,
                ..Default::default()
            };
            message.encode_to_vec()
        } else {
            let mut out = Vec::new();
            msgpack::write_value(&mut out, &command);
            out
        };
        self.client.send_raw(Message::Binary(bytes.into())).await;
    }

    async fn subscribe(&mut self, identifier: &str) -> Value {
        self.send(json!({"command": "subscribe", "identifier": identifier})).await;
        self.recv().await
    }

    async fn perform(&mut self, identifier: &str, data: Value) {
        self.send(json!({"command": "message", "identifier": identifier, "data": data.to_string()})).await;
    }

    /// The next frame that is not a ping, as JSON (Protobuf frames with their empty fields left out and `type`
    /// named as in JSON).
    async fn recv(&mut self) -> Value {
        loop {
            let frame = self.next().await;
            if frame["type"] != "ping" {
                return frame;
            }
        }
    }

    /// The next frame, pings included; a text frame is a test failure.
    async fn next(&mut self) -> Value {
        match self.client.next_message().await {
            Some(Message::Binary(bytes)) => self.read(&bytes),
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }

    fn read(&self, bytes: &[u8]) -> Value {
        if !self.protobuf() {
            return msgpack::read_value(bytes).unwrap();
        }
        let kind = |n: i32| protobuf::Type::try_from(n).map_or("", |t| if n == 0 { "" } else { t.name() });
        let mut frame = serde_json::Map::new();
        let mut put = |key: &str, value: Value| {
            let empty = value == json!("") || value == json!(0) || value == json!(false) || value == json!([]);
            if !empty && !value.is_null() {
                frame.insert(key.to_owned(), value);
            }
        };
        let message = |m: &[u8]| if m.is_empty() { Value::Null } else { msgpack::read_value(m).unwrap() };
        if self.extended() {
            let r = protobuf::Reply::decode(bytes).unwrap();
            put("type", json!(kind(r.r#type)));
            put("identifier", json!(r.identifier));
            put("message", message(&r.message));
            put("reason", json!(r.reason));
            put("reconnect", json!(r.reconnect));
            put("stream_id", json!(r.stream_id));
            put("epoch", json!(r.epoch));
            put("offset", json!(r.offset));
            put("sid", json!(r.sid));
            put("restored", json!(r.restored));
            put("restored_ids", json!(r.restored_ids));
        } else {
            let m = protobuf::Message::decode(bytes).unwrap();
            put("type", json!(kind(m.r#type)));
            put("identifier", json!(m.identifier));
            put("message", message(&m.message));
            put("reason", json!(m.reason));
            put("reconnect", json!(m.reconnect));
        }
        Value::Object(frame)
    }
}

const PLAIN: [&str; 2] = ["actioncable-v1-msgpack", "actioncable-v1-protobuf"];
const EXTENDED: [&str; 2] = ["actioncable-v1-ext-msgpack", "actioncable-v1-ext-protobuf"];

async fn a_binary_client_holds_the_whole_conversation(mode: Mode) {
    let fx = Fixture::start(mode, &[]).await;
    let mut json_client = fx.client("jay").await;
    assert_eq!(json_client.recv().await["type"], "welcome");
    assert_eq!(json_client.subscribe(CHAT_A).await["type"], "confirm_subscription");
    for protocol in PLAIN {
        let mut c = BinaryClient::connect(&fx, protocol, "bin").await;
        assert_eq!(c.recv().await["type"], "welcome", "{protocol}");
        assert_eq!(c.subscribe(CHAT_A).await, json!({"identifier": CHAT_A, "type": "confirm_subscription"}));
        c.perform(CHAT_A, json!({"action": "whoami"})).await;
        let answer = c.recv().await;
        assert_eq!(answer["identifier"], CHAT_A, "{protocol}");
        assert_eq!(answer["message"]["ids"], json!({"current_user": "bin"}).to_string(), "{protocol}");

        // Objects arrive as native values, other text as a string; the JSON client on the same stream gets JSON.
        for data in [json!({"text": "hi", "n": [1, 2.5, null]}).to_string(), "plain <b>text</b>".to_owned()] {
            fx.server.broadcast(Publication::new("chat_a", data.clone())).await;
            let expected = serde_json::from_str::<Value>(&data).unwrap_or(Value::String(data));
            assert_eq!(c.recv().await, json!({"identifier": CHAT_A, "message": expected}), "{protocol}");
            assert_eq!(json_client.recv().await, json!({"identifier": CHAT_A, "message": expected}));
        }
        assert_eq!(c.subscribe(r#"{"channel":"ChatChannel","room":"secret"}"#).await["type"], "reject_subscription");
        c.perform(CHAT_A, json!({"action": "kick"})).await;
        let bye = c.recv().await;
        assert_eq!((bye["type"].as_str(), bye["reason"].as_str()), (Some("disconnect"), Some("kicked")), "{protocol}");
        assert_ne!(bye["reconnect"], true, "{protocol}");
        assert_eq!(c.client.closed().await, Some(1000));
    }
    fx.server.shutdown().await;
}

#[tokio::test]
async fn a_binary_client_holds_the_whole_conversation_over_grpc() {
    a_binary_client_holds_the_whole_conversation(Mode::Grpc).await;
}

#[tokio::test]
async fn a_binary_client_holds_the_whole_conversation_in_process() {
    a_binary_client_holds_the_whole_conversation(Mode::InProcess).await;
}

#[tokio::test]
async fn pings_come_in_the_negotiated_encoding() {
    let fx = Fixture::start(Mode::InProcess, &[("ping_interval", "1")]).await;
    for protocol in PLAIN {
        let mut c = BinaryClient::connect(&fx, protocol, "pinged").await;
        assert_eq!(c.next().await["type"], "welcome");
        let ping = c.next().await;
        assert_eq!(ping["type"], "ping", "{protocol}");
        assert!(ping["message"].as_u64().unwrap() > 1_600_000_000, "{protocol}: a unix timestamp");
    }
    fx.server.shutdown().await;
}

#[tokio::test]
async fn extended_binary_clients_get_positions_history_and_their_session_back() {
    let fx = Fixture::start(Mode::Grpc, &[("broker", "memory")]).await;
    for protocol in EXTENDED {
        let mut c = BinaryClient::connect(&fx, protocol, "ext").await;
        let welcome = c.recv().await;
        assert_eq!(welcome["type"], "welcome", "{protocol}");
        let sid = welcome["sid"].as_str().expect("the extended welcome has a sid").to_owned();
        assert_eq!(c.subscribe(CHAT_A).await["type"], "confirm_subscription");
        fx.server.broadcast(Publication::new("chat_a", json!({"n": 1}).to_string())).await;
        let first = c.recv().await;
        assert_eq!(first["message"], json!({"n": 1}), "{protocol}");
        assert_eq!(first["stream_id"], "chat_a", "{protocol}");
        let (epoch, offset) = (first["epoch"].as_str().unwrap().to_owned(), first["offset"].as_u64().unwrap());
        fx.server.broadcast(Publication::new("chat_a", json!({"n": 2}).to_string())).await;
        assert_eq!(c.recv().await["offset"], json!(offset + 1));

        // History since the first broadcast: the second is replayed, then confirm_history.
        let history = json!({"streams": {"chat_a": {"epoch": epoch, "offset": offset}}});
        c.send(json!({"command": "history", "identifier": CHAT_A, "history": history})).await;
        let replayed = c.recv().await;
        assert_eq!((replayed["message"].clone(), replayed["offset"].clone()), (json!({"n": 2}), json!(offset + 1)));
        assert_eq!(c.recv().await, json!({"identifier": CHAT_A, "type": "confirm_history"}), "{protocol}");
        c.send(json!({"command": "pong"})).await;
        c.client.close().await;

        // The session comes back on a new connection.
        let cookie = "user=ext".to_owned();
        let headers = [("Sec-WebSocket-Protocol", protocol), ("Cookie", &cookie), ("X-AnyCable-Restore-Sid", &sid)];
        let client = Client::connect_with_headers(&fx.url(""), &headers).await;
        let mut back = BinaryClient { protocol, client };
        let welcome = back.recv().await;
        assert_eq!((welcome["restored"].clone(), welcome["restored_ids"].clone()), (json!(true), json!([CHAT_A])));
        back.client.close().await;
    }
    fx.server.shutdown().await;
}

#[tokio::test]
async fn a_transmission_with_no_binary_form_is_skipped_and_the_connection_stays() {
    let fx = Fixture::start(Mode::InProcess, &[]).await;
    for protocol in PLAIN {
        let mut c = BinaryClient::connect(&fx, protocol, "garbled").await;
        assert_eq!(c.recv().await["type"], "welcome");
        c.subscribe(CHAT_A).await;
        let before = fx.server.stats().failed_server_msg_total;
        c.perform(CHAT_A, json!({"action": "garble"})).await;
        assert_eq!(c.recv().await, json!({"identifier": CHAT_A, "message": "after the garbage"}), "{protocol}");
        assert_eq!(fx.server.stats().failed_server_msg_total, before + 1, "{protocol}: the skipped frame is counted");
        c.perform(CHAT_A, json!({"action": "whoami"})).await;
        assert_eq!(c.recv().await["identifier"], CHAT_A, "{protocol}");
    }
    fx.server.shutdown().await;
}

#[tokio::test]
async fn bad_binary_input_is_ignored_and_counted_like_bad_json() {
    let fx = Fixture::start(Mode::Grpc, &[("max_message_size", "4096")]).await;
    let mut bystander = fx.client("bystander").await;
    assert_eq!(bystander.recv().await["type"], "welcome");
    bystander.subscribe(CHAT_A).await;
    let deep_msgpack = [[0x81, 0xa1, b'k'].repeat(100), vec![0xc0]].concat();
    let subscribe_json = json!({"command": "subscribe", "identifier": CHAT_A}).to_string();
    for protocol in PLAIN.into_iter().chain(EXTENDED) {
        let mut c = BinaryClient::connect(&fx, protocol, "mallory").await;
        assert_eq!(c.recv().await["type"], "welcome");
        let calls_before = fx.app.calls.commands.lock().unwrap().len();
        let failed_before = fx.server.stats().failed_client_msg_total;
        let bad: Vec<Message> = vec![
            Message::Binary(vec![0x83, 0xa7].into()),                   // truncated map
            Message::Binary(deep_msgpack.clone().into()),               // nested past the limit
            Message::Binary(vec![0x92, 0x01, 0x02].into()),             // not a map
            Message::Binary(vec![0xc1].into()),                         // never-used byte
            Message::Binary(vec![0x1a, 0x7f, b'x'].into()),             // protobuf length past the end
            Message::Binary(vec![0x10, 0x2a, 0x1a, 0x01, b'x'].into()), // unknown protobuf command 42
            Message::Text(subscribe_json.clone().into()),               // text on a binary connection
        ];
        let count = bad.len() as u64;
        for message in bad {
            c.client.send_raw(message).await;
        }
        // The connection keeps working, no command reached the app, each bad frame was counted.
        assert_eq!(c.subscribe(CHAT_A).await["type"], "confirm_subscription", "{protocol}");
        let calls: Vec<String> =
            fx.app.calls.commands.lock().unwrap()[calls_before..].iter().map(|(_, m)| m.command.clone()).collect();
        assert_eq!(calls, ["subscribe"], "{protocol}");
        // Some garbage is valid in the other encoding (a protobuf frame may be a msgpack integer, and the
        // reverse); every frame is refused in at least one way, so each is counted once.
        assert_eq!(fx.server.stats().failed_client_msg_total, failed_before + count, "{protocol}");
        // Oversize: closed with 1009, as for JSON.
        c.client.send_raw(Message::Binary(vec![0x90; 8192].into())).await;
        assert_eq!(c.client.closed().await, Some(1009), "{protocol}");
    }
    // A JSON connection ignores binary frames, even well-formed MessagePack.
    let mut packed = Vec::new();
    msgpack::write_value(&mut packed, &json!({"command": "subscribe", "identifier": CHAT_A}));
    bystander.send_raw(Message::Binary(packed.into())).await;
    bystander.expect_silence(Duration::from_millis(200)).await;
    fx.server.broadcast(Publication::new("chat_a", "still here")).await;
    assert_eq!(bystander.recv().await, json!({"identifier": CHAT_A, "message": "still here"}));
    fx.server.shutdown().await;
}
