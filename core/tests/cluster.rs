//! Cluster mode on real engines: two and three nodes in one process (each a `Server` on free ports with the
//! chat app in-process), joined through a real `redis-server` or `nats-server` started by the test. Clients
//! on one node receive what another node accepted (HTTP, a direct broadcast, Redis PUBLISH, XADD, NATS
//! publish), exactly once and in order; remote disconnects and `exclude_socket` work across nodes; nodes
//! survive their engine being killed and restarted; embedded NATS servers form a cluster.

mod common;

use std::time::Duration;

use common::engines::{Engine, Kind, free_port};
use common::{Client, Fixture, Mode, eventually, http};
use ferrocable::Publication;
use serde_json::{Value, json};

const ROOM_A: &str = r#"{"channel":"ChatChannel","room":"a"}"#;
const ROOM_B: &str = r#"{"channel":"ChatChannel","room":"b"}"#;
const QUIET: Duration = Duration::from_millis(400);

/// Options joining a node to the cluster over `engine`, plus `extra`.
fn cluster_options(engine: &Engine, kind: Kind, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut options = match kind {
        Kind::Redis => vec![("pubsub".into(), "redis".into()), ("redis_url".into(), engine.url())],
        Kind::Nats => vec![("pubsub".into(), "nats".into()), ("nats_servers".into(), engine.url())],
    };
    options.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    options
}

async fn node(options: &[(String, String)]) -> Fixture {
    let refs: Vec<(&str, &str)> = options.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Fixture::start(Mode::InProcess, &refs).await
}

async fn nodes(n: usize, engine: &Engine, kind: Kind, extra: &[(&str, &str)]) -> Vec<Fixture> {
    let options = cluster_options(engine, kind, extra);
    let mut fixtures = Vec::new();
    for _ in 0..n {
        fixtures.push(node(&options).await);
    }
    fixtures
}

/// A welcomed client of `user` subscribed to `identifier`; returns it with its sid.
async fn subscriber(fx: &Fixture, user: &str, identifier: &str) -> (Client, String) {
    let mut c = fx.client(user).await;
    let welcome = c.recv().await;
    assert_eq!(welcome["type"], "welcome");
    let confirm = c.subscribe(identifier).await;
    assert_eq!(confirm["type"], "confirm_subscription");
    (c, welcome["sid"].as_str().unwrap().to_owned())
}

/// POSTs a broadcast body to a node's HTTP broadcaster.
async fn post(fx: &Fixture, body: Value) {
    let addr = fx.server.broadcast_addr().expect("HTTP broadcaster");
    let (status, text) = http(addr, "POST", "/_broadcast", &[], &body.to_string()).await;
    assert_eq!(status, 201, "{text}");
}

/// Publishes warm-up messages to `stream` through `via` until `remote` (a client on another node) gets one,
/// so every engine subscription and route is in place; then drains the warm-ups from every listener.
async fn until_connected(via: &Fixture, stream: &str, remote: &mut Client, others: &mut [&mut Client]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        assert!(tokio::time::Instant::now() < deadline, "no cross-node delivery on {stream} within 20 s");
        post(via, json!({"stream": stream, "data": "{\"warmup\":true}"})).await;
        if remote.try_recv(Duration::from_millis(200)).await.is_some() {
            break;
        }
    }
    drain_warmups(remote).await;
    for c in others.iter_mut() {
        drain_warmups(c).await;
    }
}

async fn drain_warmups(c: &mut Client) {
    while let Some(frame) = c.try_recv(QUIET).await {
        assert_eq!(frame["message"]["warmup"], true, "unexpected frame while draining: {frame}");
    }
}

/// Asserts that `c` receives exactly the numbers `range` (in `{"n":…}` messages), in order, then nothing.
async fn expect_numbers(c: &mut Client, range: std::ops::Range<u64>, what: &str) {
    for n in range {
        let frame = c.recv().await;
        assert_eq!(frame["message"]["n"], n, "{what}: expected n={n}, got {frame}");
    }
    c.expect_silence(QUIET).await;
}

/// Asserts that `c` receives exactly the numbers `range`, in any order (publishers on different nodes, or
/// entries read by different nodes, have no order between them), then nothing.
async fn expect_number_set(c: &mut Client, range: std::ops::Range<u64>, what: &str) {
    let mut got: Vec<u64> = Vec::new();
    for _ in range.clone() {
        let frame = c.recv().await;
        got.push(frame["message"]["n"].as_u64().unwrap_or_else(|| panic!("{what}: unexpected {frame}")));
    }
    got.sort_unstable();
    assert_eq!(got, range.collect::<Vec<_>>(), "{what}");
    c.expect_silence(QUIET).await;
}

fn numbered(stream: &str, range: std::ops::Range<u64>) -> Value {
    Value::Array(range.map(|n| json!({"stream": stream, "data": json!({"n": n}).to_string()})).collect())
}

async fn shutdown(fixtures: Vec<Fixture>) {
    for fx in fixtures {
        fx.server.shutdown().await;
    }
}

async fn two_nodes_deliver_every_broadcast_once_in_order(kind: Kind) {
    let engine = match kind {
        Kind::Redis => Engine::redis(),
        Kind::Nats => Engine::nats(),
    };
    let cluster = nodes(2, &engine, kind, &[("pubsub_subscribe", "stream")]).await;
    let (a, b) = (&cluster[0], &cluster[1]);
    let (mut on_a, _) = subscriber(a, "ann", ROOM_A).await;
    let (mut on_b, _) = subscriber(b, "bob", ROOM_A).await;
    eventually("each node subscribed to chat_a in the engine", || {
        a.server.stats().pubsub_streams_num == 1 && b.server.stats().pubsub_streams_num == 1
    })
    .await;
    until_connected(b, "chat_a", &mut on_a, &mut [&mut on_b]).await;

    // HTTP on node B, one by one and as a batch.
    for n in 0..10 {
        post(b, json!({"stream": "chat_a", "data": json!({"n": n}).to_string()})).await;
    }
    post(b, numbered("chat_a", 10..30)).await;
    expect_numbers(&mut on_a, 0..30, "client on A, HTTP on B").await;
    expect_numbers(&mut on_b, 0..30, "client on B, HTTP on B").await;

    // A binding's direct broadcast on node A.
    a.server.broadcast_many((30..40).map(|n| Publication::new("chat_a", json!({"n": n}).to_string()))).await;
    expect_numbers(&mut on_b, 30..40, "client on B, broadcast on A").await;
    expect_numbers(&mut on_a, 30..40, "client on A, broadcast on A").await;

    // A stream nobody on A streams from is not delivered there, and A drops its engine subscription
    // once its last subscriber leaves.
    let (mut room_b, _) = subscriber(b, "bea", ROOM_B).await;
    post(b, json!({"stream": "chat_b", "data": "{\"n\":0}"})).await;
    expect_numbers(&mut room_b, 0..1, "room b on B").await;
    on_a.expect_silence(QUIET).await;
    on_a.close().await;
    eventually("node A unsubscribed from chat_a", || a.server.stats().pubsub_streams_num == 0).await;
    let stats = b.server.stats();
    assert!(stats.pubsub_published_total >= 31, "{stats:?}");
    assert_eq!(stats.pubsub_lost_total, 0);
    assert!(a.server.stats().pubsub_received_total >= 30);
    shutdown(cluster).await;
}

#[tokio::test]
async fn redis_two_nodes_subscribed_per_stream_deliver_every_broadcast_once_in_order() {
    two_nodes_deliver_every_broadcast_once_in_order(Kind::Redis).await;
}

#[tokio::test]
async fn nats_two_nodes_subscribed_per_stream_deliver_every_broadcast_once_in_order() {
    two_nodes_deliver_every_broadcast_once_in_order(Kind::Nats).await;
}

async fn three_nodes_deliver_to_every_node(kind: Kind, subscribe: &str) {
    let engine = match kind {
        Kind::Redis => Engine::redis(),
        Kind::Nats => Engine::nats(),
    };
    let cluster = nodes(3, &engine, kind, &[("pubsub_subscribe", subscribe)]).await;
    let (mut on_a, _) = subscriber(&cluster[0], "ann", ROOM_A).await;
    let (mut on_c, _) = subscriber(&cluster[2], "cid", ROOM_A).await;
    until_connected(&cluster[1], "chat_a", &mut on_a, &mut []).await;
    until_connected(&cluster[1], "chat_a", &mut on_c, &mut [&mut on_a]).await;
    post(&cluster[1], numbered("chat_a", 0..20)).await;
    expect_numbers(&mut on_a, 0..20, "client on A").await;
    expect_numbers(&mut on_c, 0..20, "client on C").await;
    // Node B has no subscriber for chat_a: with per-stream subscriptions it receives nothing at all.
    if subscribe == "stream" {
        assert_eq!(cluster[1].server.stats().pubsub_received_total, 0);
    }
    shutdown(cluster).await;
}

#[tokio::test]
async fn redis_three_nodes_subscribed_to_every_publication_deliver_on_every_node() {
    three_nodes_deliver_to_every_node(Kind::Redis, "all").await;
}

#[tokio::test]
async fn nats_three_nodes_subscribed_per_stream_deliver_on_every_node() {
    three_nodes_deliver_to_every_node(Kind::Nats, "stream").await;
}

#[tokio::test]
async fn redis_publish_on_the_broadcast_channel_reaches_every_node_once() {
    let redis = Engine::redis();
    let cluster = nodes(2, &redis, Kind::Redis, &[("broadcast_adapter", "http,redis")]).await;
    let (mut on_a, _) = subscriber(&cluster[0], "ann", ROOM_A).await;
    let (mut on_b, _) = subscriber(&cluster[1], "bob", ROOM_A).await;
    until_connected(&cluster[1], "chat_a", &mut on_a, &mut [&mut on_b]).await;

    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    // AnyCable's Redis convention: PUBLISH __anycable__ <publication or batch>.
    let mut receivers = 0;
    for n in 0..5 {
        let body = json!({"stream": "chat_a", "data": json!({"n": n}).to_string()}).to_string();
        receivers = redis::cmd("PUBLISH").arg("__anycable__").arg(body).query_async::<i64>(&mut conn).await.unwrap();
    }
    assert_eq!(receivers, 2, "each node subscribes to the broadcast channel");
    let _: i64 = redis::cmd("PUBLISH")
        .arg("__anycable__")
        .arg(numbered("chat_a", 5..10).to_string())
        .query_async(&mut conn)
        .await
        .unwrap();
    expect_numbers(&mut on_a, 0..10, "client on A").await;
    expect_numbers(&mut on_b, 0..10, "client on B").await;
    assert_eq!(cluster[0].server.stats().pubsub_published_total, 0, "fan-out channels are not republished");
    shutdown(cluster).await;
}

#[tokio::test]
async fn redisx_entries_reach_every_node_once_are_acknowledged_and_wait_while_no_node_reads() {
    let redis = Engine::redis();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    // Per-stream subscriptions, so the pubsub_streams_num gauge tells when a node listens to chat_a.
    let options =
        cluster_options(&redis, Kind::Redis, &[("broadcast_adapter", "http,redisx"), ("pubsub_subscribe", "stream")]);
    let a = node(&options).await;
    let b = node(&options).await;
    let (mut on_a, _) = subscriber(&a, "ann", ROOM_A).await;
    let (mut on_b, _) = subscriber(&b, "bob", ROOM_A).await;
    until_connected(&b, "chat_a", &mut on_a, &mut [&mut on_b]).await;
    let group_exists = || async {
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let groups: redis::Value = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg("__anycable__")
            .query_async(&mut conn)
            .await
            .unwrap_or(redis::Value::Nil);
        matches!(groups, redis::Value::Array(ref g) if !g.is_empty())
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !group_exists().await {
        assert!(tokio::time::Instant::now() < deadline, "consumer group bx never created");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // AnyCable's Redis Streams convention: XADD __anycable__ * payload <publication>.
    for n in 0..10 {
        let body = json!({"stream": "chat_a", "data": json!({"n": n}).to_string()}).to_string();
        let _: String = redis::cmd("XADD")
            .arg("__anycable__")
            .arg("*")
            .arg("payload")
            .arg(body)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    expect_number_set(&mut on_a, 0..10, "client on A").await;
    expect_number_set(&mut on_b, 0..10, "client on B").await;
    let pending: redis::Value =
        redis::cmd("XPENDING").arg("__anycable__").arg("bx").query_async(&mut conn).await.unwrap();
    assert!(matches!(&pending, redis::Value::Array(v) if v.first() == Some(&redis::Value::Int(0))), "{pending:?}");
    let len: i64 = redis::cmd("XLEN").arg("__anycable__").query_async(&mut conn).await.unwrap();
    assert_eq!(len, 0, "acknowledged entries are deleted");

    // With both readers stopped, entries wait in the stream; a new reader delivers them (and the pub/sub
    // carries them to node B, which keeps only its HTTP broadcaster).
    a.server.shutdown().await;
    drop(on_a);
    let b_only_http = node(&cluster_options(&redis, Kind::Redis, &[("pubsub_subscribe", "stream")])).await;
    b.server.shutdown().await;
    drop(on_b);
    let (mut on_b2, _) = subscriber(&b_only_http, "bob", ROOM_A).await;
    for n in 10..15 {
        let body = json!({"stream": "chat_a", "data": json!({"n": n}).to_string()}).to_string();
        let _: String = redis::cmd("XADD")
            .arg("__anycable__")
            .arg("*")
            .arg("payload")
            .arg(body)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let len: i64 = redis::cmd("XLEN").arg("__anycable__").query_async(&mut conn).await.unwrap();
    assert_eq!(len, 5, "nobody reads: the entries wait");
    eventually("node B subscribed to chat_a", || b_only_http.server.stats().pubsub_streams_num == 1).await;
    let reader = node(&options).await;
    expect_numbers(&mut on_b2, 10..15, "client on B2, entries read by the new node").await;
    shutdown(vec![reader, b_only_http]).await;
}

#[tokio::test]
async fn nats_publish_on_the_broadcast_subject_reaches_every_node_once() {
    let nats = Engine::nats();
    let cluster = nodes(2, &nats, Kind::Nats, &[("broadcast_adapter", "http,nats")]).await;
    let (mut on_a, _) = subscriber(&cluster[0], "ann", ROOM_A).await;
    let (mut on_b, _) = subscriber(&cluster[1], "bob", ROOM_A).await;
    until_connected(&cluster[1], "chat_a", &mut on_a, &mut [&mut on_b]).await;
    let publisher = async_nats::connect(nats.url()).await.unwrap();
    for n in 0..5 {
        let body = json!({"stream": "chat_a", "data": json!({"n": n}).to_string()}).to_string();
        publisher.publish("__anycable__", body.into()).await.unwrap();
    }
    publisher.publish("__anycable__", numbered("chat_a", 5..10).to_string().into()).await.unwrap();
    publisher.flush().await.unwrap();
    expect_numbers(&mut on_a, 0..10, "client on A").await;
    expect_numbers(&mut on_b, 0..10, "client on B").await;
    shutdown(cluster).await;
}

async fn remote_disconnect_reaches_every_node(kind: Kind) {
    let engine = match kind {
        Kind::Redis => Engine::redis(),
        Kind::Nats => Engine::nats(),
    };
    let cluster = nodes(2, &engine, kind, &[]).await;
    let (a, b) = (&cluster[0], &cluster[1]);
    let (mut eve_a, _) = subscriber(a, "eve", ROOM_A).await;
    let (mut eve_b, _) = subscriber(b, "eve", ROOM_A).await;
    let (mut frank_a, _) = subscriber(a, "frank", ROOM_A).await;
    until_connected(b, "chat_a", &mut frank_a, &mut [&mut eve_a, &mut eve_b]).await;

    // The HTTP command on node B closes eve's sessions on both nodes.
    post(
        b,
        json!({"command": "disconnect", "payload": {"identifier": "{\"current_user\":\"eve\"}", "reconnect": false}}),
    )
    .await;
    for c in [&mut eve_a, &mut eve_b] {
        assert_eq!(c.recv().await, json!({"type":"disconnect","reason":"remote","reconnect":false}));
        assert_eq!(c.closed().await, Some(1000));
    }
    // A binding's Server::disconnect on node B reaches frank on node A.
    assert_eq!(b.server.disconnect(r#"{"current_user":"frank"}"#, true), 0, "no local session of frank on B");
    assert_eq!(frank_a.recv().await, json!({"type":"disconnect","reason":"remote","reconnect":true}));
    assert_eq!(frank_a.closed().await, Some(1000));
    eventually("three Disconnect calls", || {
        a.app.calls.disconnects.lock().unwrap().len() + b.app.calls.disconnects.lock().unwrap().len() == 3
    })
    .await;
    shutdown(cluster).await;
}

#[tokio::test]
async fn redis_remote_disconnect_reaches_every_node() {
    remote_disconnect_reaches_every_node(Kind::Redis).await;
}

#[tokio::test]
async fn nats_remote_disconnect_reaches_every_node() {
    remote_disconnect_reaches_every_node(Kind::Nats).await;
}

async fn exclude_socket_works_across_nodes(kind: Kind) {
    let engine = match kind {
        Kind::Redis => Engine::redis(),
        Kind::Nats => Engine::nats(),
    };
    let cluster = nodes(2, &engine, kind, &[]).await;
    let (mut sender, sender_sid) = subscriber(&cluster[0], "ann", ROOM_A).await;
    let (mut other_a, _) = subscriber(&cluster[0], "amy", ROOM_A).await;
    let (mut on_b, _) = subscriber(&cluster[1], "bob", ROOM_A).await;
    until_connected(&cluster[1], "chat_a", &mut sender, &mut [&mut other_a, &mut on_b]).await;
    // Published on B, excluding a socket that lives on A.
    post(&cluster[1], json!({"stream": "chat_a", "data": "{\"n\":0}", "meta": {"exclude_socket": sender_sid}})).await;
    assert_eq!(other_a.recv().await["message"]["n"], 0);
    assert_eq!(on_b.recv().await["message"]["n"], 0);
    // A direct broadcast on A excluding the same socket.
    let mut p = Publication::new("chat_a", "{\"n\":1}");
    p.exclude_socket = Some(sender_sid.clone());
    cluster[0].server.broadcast(p).await;
    expect_numbers(&mut other_a, 1..2, "other client on A").await;
    expect_numbers(&mut on_b, 1..2, "client on B").await;
    sender.expect_silence(QUIET).await;
    shutdown(cluster).await;
}

#[tokio::test]
async fn redis_exclude_socket_works_across_nodes() {
    exclude_socket_works_across_nodes(Kind::Redis).await;
}

#[tokio::test]
async fn nats_exclude_socket_works_across_nodes() {
    exclude_socket_works_across_nodes(Kind::Nats).await;
}

/// Kills the engine mid-run: nodes keep serving their own clients, count what they could not publish,
/// reconnect when it is back, resubscribe, and deliver across nodes again.
async fn engine_restart_mid_run(kind: Kind, subscribe: &str) {
    let mut engine = match kind {
        Kind::Redis => Engine::redis(),
        Kind::Nats => Engine::nats(),
    };
    let cluster = nodes(2, &engine, kind, &[("pubsub_subscribe", subscribe)]).await;
    let (a, b) = (&cluster[0], &cluster[1]);
    let (mut on_a, _) = subscriber(a, "ann", ROOM_A).await;
    let (mut on_b, _) = subscriber(b, "bob", ROOM_A).await;
    until_connected(b, "chat_a", &mut on_a, &mut [&mut on_b]).await;
    post(b, numbered("chat_a", 0..5)).await;
    expect_numbers(&mut on_a, 0..5, "A before the outage").await;
    expect_numbers(&mut on_b, 0..5, "B before the outage").await;

    engine.kill();
    // Let both nodes notice the closed connections.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lost_before = b.server.stats().pubsub_lost_total;
    post(b, numbered("chat_a", 5..10)).await;
    expect_numbers(&mut on_b, 5..10, "B keeps delivering its own publications").await;
    on_a.expect_silence(QUIET).await;
    eventually("the five publications counted as lost", || b.server.stats().pubsub_lost_total == lost_before + 5).await;
    // A stream first subscribed during the outage is part of the resubscription.
    let (mut room_b_on_a, _) = subscriber(a, "amy", ROOM_B).await;

    engine.start();
    until_connected(b, "chat_a", &mut on_a, &mut [&mut on_b]).await;
    post(b, numbered("chat_a", 10..15)).await;
    expect_numbers(&mut on_a, 10..15, "A after the outage").await;
    expect_numbers(&mut on_b, 10..15, "B after the outage").await;
    let (mut room_b_on_b, _) = subscriber(b, "bea", ROOM_B).await;
    until_connected(b, "chat_b", &mut room_b_on_a, &mut [&mut room_b_on_b]).await;
    post(b, numbered("chat_b", 0..3)).await;
    expect_numbers(&mut room_b_on_a, 0..3, "stream subscribed during the outage").await;
    shutdown(cluster).await;
}

#[tokio::test]
async fn redis_killed_and_restarted_mid_run_nodes_serve_locally_count_losses_and_resubscribe() {
    engine_restart_mid_run(Kind::Redis, "stream").await;
}

#[tokio::test]
async fn nats_killed_and_restarted_mid_run_nodes_serve_locally_count_losses_and_resubscribe() {
    engine_restart_mid_run(Kind::Nats, "all").await;
}

/// With the default `pubsub_subscribe=all`, every node already listens to every stream: a publication
/// accepted by another node right after a client's subscription was confirmed always reaches it.
#[tokio::test]
async fn a_publication_made_on_another_node_right_after_a_confirmed_subscription_reaches_it() {
    let redis = Engine::redis();
    let cluster = nodes(2, &redis, Kind::Redis, &[]).await;
    let (a, b) = (&cluster[0], &cluster[1]);
    let (mut warm, _) = subscriber(a, "wes", ROOM_A).await;
    until_connected(b, "chat_a", &mut warm, &mut []).await;
    for room in 0..30 {
        let identifier = json!({"channel": "ChatChannel", "room": format!("fresh{room}")}).to_string();
        let (mut c, _) = subscriber(a, "fay", &identifier).await;
        post(b, json!({"stream": format!("chat_fresh{room}"), "data": "{\"n\":0}"})).await;
        expect_numbers(&mut c, 0..1, &format!("fresh stream {room}")).await;
        c.close().await;
    }
    shutdown(cluster).await;
}

#[tokio::test]
async fn redis_down_at_start_nodes_serve_locally_then_join_when_it_comes_up() {
    let mut redis = Engine::not_started(Kind::Redis);
    let cluster = nodes(2, &redis, Kind::Redis, &[("broadcast_adapter", "http,redis,redisx")]).await;
    let (mut on_a, _) = subscriber(&cluster[0], "ann", ROOM_A).await;
    let (mut on_b, _) = subscriber(&cluster[1], "bob", ROOM_A).await;
    post(&cluster[1], numbered("chat_a", 0..3)).await;
    expect_numbers(&mut on_b, 0..3, "local delivery without Redis").await;
    on_a.expect_silence(QUIET).await;
    redis.start();
    until_connected(&cluster[1], "chat_a", &mut on_a, &mut [&mut on_b]).await;
    post(&cluster[1], numbered("chat_a", 3..6)).await;
    expect_numbers(&mut on_a, 3..6, "A once Redis is up").await;
    expect_numbers(&mut on_b, 3..6, "B once Redis is up").await;
    shutdown(cluster).await;
}

#[tokio::test]
async fn embedded_nats_servers_of_two_nodes_form_a_cluster_and_stop_with_their_nodes() {
    let (client_a, route_a, client_b, route_b) = (free_port(), free_port(), free_port(), free_port());
    let embedded = |client: u16, route: u16, peer: u16| {
        vec![
            ("pubsub".to_owned(), "nats".to_owned()),
            ("embed_nats".to_owned(), "true".to_owned()),
            ("enats_addr".to_owned(), format!("nats://127.0.0.1:{client}")),
            ("enats_cluster".to_owned(), format!("nats://127.0.0.1:{route}")),
            ("enats_cluster_routes".to_owned(), format!("nats://127.0.0.1:{peer}")),
        ]
    };
    let a = node(&embedded(client_a, route_a, route_b)).await;
    let b = node(&embedded(client_b, route_b, route_a)).await;
    assert_eq!(
        a.server.config().nats_servers,
        vec![format!("nats://127.0.0.1:{client_a}")],
        "nats_servers follows enats_addr"
    );
    let (mut on_a, _) = subscriber(&a, "ann", ROOM_A).await;
    let (mut on_b, _) = subscriber(&b, "bob", ROOM_A).await;
    until_connected(&b, "chat_a", &mut on_a, &mut [&mut on_b]).await;
    post(&b, numbered("chat_a", 0..10)).await;
    expect_numbers(&mut on_a, 0..10, "client on A").await;
    expect_numbers(&mut on_b, 0..10, "client on B").await;
    a.server.broadcast_many((10..15).map(|n| Publication::new("chat_a", json!({"n": n}).to_string()))).await;
    expect_numbers(&mut on_b, 10..15, "client on B").await;
    expect_numbers(&mut on_a, 10..15, "client on A").await;
    drop((on_a, on_b));
    shutdown(vec![a, b]).await;
    for port in [client_a, route_a, client_b, route_b] {
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "port {port} still open after shutdown");
    }
}
