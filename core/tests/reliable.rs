//! Reliable streams and session recovery at the frame level, with the memory broker: the extended protocol's
//! frames, history requests good and bad, who may restore a session and how often, and exactly-once replay
//! while broadcasts keep coming. (The real `@anycable/core` client runs the same features against every
//! deployment in tests/node/test/reliable-streams.test.js.)

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Client, Fixture, Mode, eventually};
use ferrocable::Publication;
use serde_json::{Value, json};

const EXT: &str = "actioncable-v1-ext-json";
const CHAT_A: &str = r#"{"channel":"ChatChannel","room":"a"}"#;
/// HS256, key `s3cr3t`, claims `{"ext":"{\"user\":\"alice\"}"}` (see tests/standalone.rs).
const ALICE: &str =
    "eyJhbGciOiJIUzI1NiJ9.eyJleHQiOiJ7XCJ1c2VyXCI6XCJhbGljZVwifSJ9.D3-2t5UrbLA7Q8TSnH7OyzsJooR6OXMDkUoUfmG4Xi8";
/// HS256, key `s3cr3t`, claims `{"ext":"{\"user\":\"mallory\"}"}`, made the same way.
const MALLORY: &str =
    "eyJhbGciOiJIUzI1NiJ9.eyJleHQiOiJ7XCJ1c2VyXCI6XCJtYWxsb3J5XCJ9In0.6x7P37as5VGGm2ASWlc4rQgx1ueuCjp8LCM0akrQXQI";

async fn broker_fixture(extra: &[(&str, &str)]) -> Fixture {
    let mut options = vec![("broker", "memory")];
    options.extend_from_slice(extra);
    Fixture::start(Mode::Grpc, &options).await
}

/// An extended-protocol client of `user` (cookie), with `query` appended to the URL.
async fn ext_client(fx: &Fixture, user: &str, query: &str) -> Client {
    let cookie = format!("user={user}");
    Client::connect_with_headers(&fx.url(query), &[("Sec-WebSocket-Protocol", EXT), ("Cookie", &cookie)]).await
}

/// An extended client past its welcome and subscribed to `CHAT_A`; its sid.
async fn subscribed(fx: &Fixture, user: &str) -> (Client, String) {
    let mut c = ext_client(fx, user, "").await;
    let welcome = c.recv().await;
    let sid = welcome["sid"].as_str().unwrap().to_owned();
    assert_eq!(c.subscribe(CHAT_A).await["type"], "confirm_subscription");
    (c, sid)
}

async fn publish(fx: &Fixture, text: &str) {
    fx.server.broadcast(Publication::new("chat_a", json!({ "text": text }).to_string())).await;
}

fn connects(fx: &Fixture) -> usize {
    fx.app.calls.connects.lock().unwrap().len()
}

/// Frames up to and including the first one `done` accepts.
async fn frames_until(c: &mut Client, done: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let frame = c.recv().await;
        let last = done(&frame);
        frames.push(frame);
        if last {
            return frames;
        }
    }
}

#[tokio::test]
async fn extended_clients_get_positions_and_a_restore_replays_nothing_twice() {
    let fx = broker_fixture(&[]).await;
    let (mut c, sid) = subscribed(&fx, "alice").await;
    publish(&fx, "one").await;
    let first = c.recv().await;
    assert_eq!(first["message"]["text"], "one");
    assert_eq!((first["stream_id"].as_str(), first["offset"].as_u64()), (Some("chat_a"), Some(1)));
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    drop(c);
    publish(&fx, "two").await;
    publish(&fx, "three").await;

    let mut c = ext_client(&fx, "alice", &format!("?sid={sid}")).await;
    let welcome = c.recv().await;
    assert_eq!(welcome["restored"], true, "{welcome}");
    assert_eq!(welcome["restored_ids"], json!([CHAT_A]));
    assert_ne!(welcome["sid"], sid, "a new sid");
    assert_eq!(connects(&fx), 1, "no Connect for a restored session");
    let history = json!({"streams": {"chat_a": {"epoch": epoch, "offset": 1}}});
    c.send(json!({"command": "history", "identifier": CHAT_A, "history": history})).await;
    let frames = frames_until(&mut c, |f| f["type"] == "confirm_history").await;
    let texts: Vec<&Value> = frames.iter().map(|f| &f["message"]["text"]).collect();
    assert_eq!(texts, [&json!("two"), &json!("three"), &Value::Null]);
    publish(&fx, "four").await;
    assert_eq!(c.recv().await["offset"], 4);
}

#[tokio::test]
async fn the_restore_header_works_like_the_query_parameter_and_a_session_is_restored_once() {
    let fx = broker_fixture(&[]).await;
    let (c, sid) = subscribed(&fx, "alice").await;
    drop(c);
    let cookie = "user=alice";
    let headers = [("Sec-WebSocket-Protocol", EXT), ("Cookie", cookie), ("X-AnyCable-Restore-Sid", sid.as_str())];
    let mut c = Client::connect_with_headers(&fx.url(""), &headers).await;
    assert_eq!(c.recv().await["restored"], true);
    // The same sid again: taken already, so this one connects as a new session.
    let mut again = ext_client(&fx, "alice", &format!("?sid={sid}")).await;
    let welcome = again.recv().await;
    assert_eq!(welcome["restored"], Value::Null, "{welcome}");
    assert_eq!(connects(&fx), 2);
}

#[tokio::test]
async fn forged_foreign_and_oversized_sids_connect_as_usual_and_plain_clients_never_restore() {
    let fx = broker_fixture(&[]).await;
    let (c, sid) = subscribed(&fx, "alice").await;
    drop(c);
    for query in ["?sid=nonexistent", "?sid=", &format!("?sid={}", "x".repeat(4000)), "?sid=%00%ff"] {
        let mut c = ext_client(&fx, "bob", query).await;
        let welcome = c.recv().await;
        assert_eq!((welcome["type"].as_str(), welcome.get("restored")), (Some("welcome"), None), "{query}");
    }
    // A plain JSON client bringing a valid sid is not restored either.
    let mut plain = Client::connect(&fx.url(&format!("?sid={sid}")), Some("user=alice")).await;
    assert_eq!(plain.recv().await.get("restored"), None);
    assert_eq!(connects(&fx), 6);
    // And the session is still there for its owner.
    let mut owner = ext_client(&fx, "alice", &format!("?sid={sid}")).await;
    assert_eq!(owner.recv().await["restored"], true);
}

#[tokio::test]
async fn a_restore_flood_restores_one_connection_and_leaves_other_sessions_alone() {
    let fx = Arc::new(broker_fixture(&[]).await);
    let (c, sid) = subscribed(&fx, "alice").await;
    drop(c);
    let (mut bystander, _) = subscribed(&fx, "carol").await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let fx = fx.clone();
            let sid = sid.clone();
            tokio::spawn(async move {
                let mut c = ext_client(&fx, "mallory", &format!("?sid={sid}")).await;
                c.recv().await["restored"] == true
            })
        })
        .collect();
    let mut restored = 0;
    for task in tasks {
        restored += usize::from(task.await.unwrap());
    }
    assert_eq!(restored, 1, "a sid restores one connection at most");
    publish(&fx, "still here").await;
    assert_eq!(bystander.recv().await["message"]["text"], "still here");
}

#[tokio::test]
async fn a_token_must_identify_the_session_it_restores() {
    let fx = broker_fixture(&[("secret", "s3cr3t")]).await;
    let mut c =
        Client::connect_with_headers(&fx.url(&format!("?jid={ALICE}")), &[("Sec-WebSocket-Protocol", EXT)]).await;
    let sid = c.recv().await["sid"].as_str().unwrap().to_owned();
    drop(c);
    let query = format!("?jid={MALLORY}&sid={sid}");
    let mut other = Client::connect_with_headers(&fx.url(&query), &[("Sec-WebSocket-Protocol", EXT)]).await;
    let welcome = other.recv().await;
    assert_eq!(welcome.get("restored"), None, "another identity: {welcome}");
    // Refused restores do not consume the session: its owner still gets it.
    let query = format!("?jid={ALICE}&sid={sid}");
    let mut owner = Client::connect_with_headers(&fx.url(&query), &[("Sec-WebSocket-Protocol", EXT)]).await;
    assert_eq!(owner.recv().await["restored"], true);
}

#[tokio::test]
async fn a_session_the_server_ended_on_purpose_cannot_be_restored() {
    let fx = broker_fixture(&[]).await;
    let (mut c, sid) = subscribed(&fx, "alice").await;
    fx.server.disconnect(r#"{"current_user":"alice"}"#, false);
    assert_eq!(c.recv().await["reason"], "remote");
    eventually("the session to end", || fx.app.calls.disconnects.lock().unwrap().len() == 1).await;
    let mut again = ext_client(&fx, "alice", &format!("?sid={sid}")).await;
    assert_eq!(again.recv().await.get("restored"), None);
}

#[tokio::test]
async fn bad_history_requests_are_refused_without_closing_or_touching_others() {
    let fx = broker_fixture(&[]).await;
    let (mut c, _) = subscribed(&fx, "alice").await;
    let (mut other, _) = subscribed(&fx, "bob").await;
    publish(&fx, "one").await;
    let epoch = c.recv().await["epoch"].as_str().unwrap().to_owned();
    other.recv().await;
    // Malformed: ignored (logged), the connection stays.
    for history in
        [json!("yesterday"), json!({"since": "x"}), json!({"streams": {"chat_a": {"offset": 1}}}), json!([1])]
    {
        c.send(json!({"command": "history", "identifier": CHAT_A, "history": history})).await;
    }
    c.send(json!({"command": "subscribe", "identifier": r#"{"channel":"ChatChannel","room":"b"}"#, "history": {"since": []}})).await;
    // An unknown subscription: ignored.
    c.send(json!({"command": "history", "identifier": "{\"channel\":\"Nope\"}", "history": {"since": 1}})).await;
    c.expect_silence(Duration::from_millis(300)).await;
    // Positions that cannot be served: reject_history.
    for (epoch, offset) in [(epoch.as_str(), u64::MAX), ("other-epoch", 1), (epoch.as_str(), 2)] {
        let history = json!({"streams": {"chat_a": {"epoch": epoch, "offset": offset}}});
        c.send(json!({"command": "history", "identifier": CHAT_A, "history": history})).await;
        assert_eq!(c.recv().await, json!({"identifier": CHAT_A, "type": "reject_history"}), "{epoch} {offset}");
    }
    // The stream of a position the subscription does not have is not looked at: nothing to replay.
    let history = json!({"streams": {"someone_elses": {"epoch": epoch, "offset": 0}}});
    c.send(json!({"command": "history", "identifier": CHAT_A, "history": history})).await;
    assert_eq!(c.recv().await["type"], "confirm_history");
    publish(&fx, "two").await;
    assert_eq!(c.recv().await["message"]["text"], "two");
    assert_eq!(other.recv().await["message"]["text"], "two");
}

#[tokio::test]
async fn subscribe_with_since_replays_recent_history_then_confirms() {
    let fx = broker_fixture(&[]).await;
    publish(&fx, "old").await;
    let mut c = ext_client(&fx, "alice", "").await;
    c.recv().await;
    c.send(json!({"command": "subscribe", "identifier": CHAT_A, "history": {"since": 1}})).await;
    let frames = frames_until(&mut c, |f| f["type"] == "confirm_history").await;
    assert_eq!(frames[0]["type"], "confirm_subscription");
    assert_eq!(frames[1]["message"]["text"], "old");
    assert_eq!(frames.len(), 3);
}

#[tokio::test]
async fn without_a_broker_history_is_rejected_and_extended_clients_get_plain_broadcasts() {
    let fx = Fixture::start(Mode::Grpc, &[]).await;
    let mut c = ext_client(&fx, "alice", "").await;
    c.recv().await;
    c.send(json!({"command": "subscribe", "identifier": CHAT_A, "history": {"since": 1}})).await;
    assert_eq!(c.recv().await["type"], "confirm_subscription");
    assert_eq!(c.recv().await["type"], "reject_history");
    publish(&fx, "plain").await;
    assert_eq!(c.recv().await, json!({"identifier": CHAT_A, "message": {"text": "plain"}}));
}

/// A publisher keeps a stream busy while a client comes back for what it missed: every message arrives once,
/// in order, with no gap between the replay and the live ones, however they interleave.
#[tokio::test]
async fn replay_and_live_broadcasts_interleave_exactly_once_in_order() {
    // The client reads only once the publisher is done: its queue holds all of it (backpressure is not the point).
    let fx = Arc::new(broker_fixture(&[("history_limit", "100000"), ("client_queue_size", "10000")]).await);
    for round in 0..5 {
        let (mut c, sid) = subscribed(&fx, &format!("user{round}")).await;
        publish(&fx, "start").await;
        let start = c.recv().await;
        let (epoch, from) = (start["epoch"].clone(), start["offset"].as_u64().unwrap());
        drop(c);
        let publisher = {
            let fx = fx.clone();
            tokio::spawn(async move {
                for n in 0..2000 {
                    publish(&fx, &n.to_string()).await;
                    if n % 100 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(round * 3)).await;
        let mut c = ext_client(&fx, &format!("user{round}"), &format!("?sid={sid}")).await;
        assert_eq!(c.recv().await["restored"], true);
        let history = json!({"streams": {"chat_a": {"epoch": epoch, "offset": from}}});
        c.send(json!({"command": "history", "identifier": CHAT_A, "history": history})).await;
        publisher.await.unwrap();
        let mut expected = from + 1;
        let last = from + 2000;
        let mut confirmed = false;
        while expected <= last || !confirmed {
            let frame = c.recv().await;
            if frame["type"] == "confirm_history" {
                confirmed = true;
                continue;
            }
            assert_eq!(frame["offset"], expected, "round {round}: {frame}");
            expected += 1;
        }
        c.expect_silence(Duration::from_millis(200)).await;
    }
}
