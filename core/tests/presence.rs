//! The presence stores against real engines: the same rules checked on the memory store, on Redis (a real
//! redis-server, the Redis 7.0 Debian ships) and on NATS JetStream (a real nats-server, the 2.9 Debian ships): an id
//! joins with its first session and leaves with its last, one id per session and stream, untouched sessions expire
//! while touched ones stay, a large set is read whole; and on Redis and NATS two nodes racing never both report the
//! same join or leave.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::engines::Engine;
use ferrocable::Config;
use ferrocable::broker::Limits;
use ferrocable::broker::nats::NatsBroker;
use ferrocable::broker::redis::RedisBroker;
use ferrocable::presence::memory::MemoryPresence;
use ferrocable::presence::{Added, Member, PresenceError, PresenceInfo, PresenceStore};
use tokio_util::sync::CancellationToken;

const TTL: Duration = Duration::from_millis(600);

fn member(id: &str) -> Member {
    Member { id: id.into(), info: Some(format!("{{\"name\":\"{id}\"}}")) }
}

async fn redis_store(engine: &Engine) -> Arc<RedisBroker> {
    let mut config = Config::default();
    config.set("redis_url", &engine.url()).unwrap();
    RedisBroker::connect(&config, Limits { history_limit: 10, history_ttl: 60, sessions_ttl: 60 }).await.unwrap()
}

/// A NATS broker on `engine` (a nats-server with JetStream); `stop` ends its connection when the test is done.
async fn nats_store(engine: &Engine, stop: &CancellationToken) -> Arc<NatsBroker> {
    let mut config = Config::default();
    config.set("nats_servers", &engine.url()).unwrap();
    let limits = Limits { history_limit: 10, history_ttl: 60, sessions_ttl: 60 };
    NatsBroker::connect(&config, limits, stop.clone()).await.unwrap()
}

async fn ids(store: &dyn PresenceStore, stream: &str) -> Vec<String> {
    let mut ids: Vec<String> =
        store.info(stream, true).await.unwrap().records.unwrap().into_iter().map(|m| m.id).collect();
    ids.sort();
    ids
}

/// The rules every store keeps.
async fn conformance(store: &dyn PresenceStore) {
    let ttl = Duration::from_secs(15);
    assert_eq!(store.add("room", "s1", &member("ann"), ttl).await, Ok(Added::Joined));
    assert_eq!(store.add("room", "s2", &member("ann"), ttl).await, Ok(Added::Present), "a second session");
    assert_eq!(store.add("room", "s3", &member("bob"), ttl).await, Ok(Added::Joined));
    assert_eq!(store.add("room", "s1", &member("ann"), ttl).await, Ok(Added::Present), "the same session again");
    assert_eq!(
        store.add("room", "s1", &member("bob"), ttl).await,
        Err(PresenceError::IdMismatch { current: "ann".into() })
    );
    let info = store.info("room", true).await.unwrap();
    assert_eq!(info.total, 2);
    let ann = info.records.unwrap().into_iter().find(|m| m.id == "ann").unwrap();
    assert_eq!(ann.info.as_deref(), Some(r#"{"name":"ann"}"#));
    assert_eq!(store.info("room", false).await.unwrap().records, None);
    assert_eq!(store.remove("room", "s1").await, Ok(None), "ann has another session");
    assert_eq!(store.remove("room", "s2").await, Ok(Some("ann".into())));
    assert_eq!(store.remove("room", "s2").await, Ok(None), "already gone");
    assert_eq!(ids(store, "room").await, ["bob"]);
    assert_eq!(store.remove("room", "s3").await, Ok(Some("bob".into())));
    assert_eq!(store.info("room", true).await.unwrap().total, 0);

    // Expiry: untouched sessions go, touched ones stay; a member with a touched session does not leave.
    store.add("lobby", "gone", &member("ann"), TTL).await.unwrap();
    store.add("lobby", "kept", &member("bob"), TTL).await.unwrap();
    store.add("lobby", "tab", &member("bob"), TTL).await.unwrap();
    store.add("other", "gone", &Member { id: "ann".into(), info: None }, TTL).await.unwrap();
    tokio::time::sleep(TTL / 2).await;
    store.touch(&["kept".into()], TTL).await.unwrap();
    assert!(store.expire(100).await.unwrap().is_empty(), "nothing is late yet");
    tokio::time::sleep(TTL / 2 + Duration::from_millis(100)).await;
    let mut left = store.expire(100).await.unwrap();
    left.sort();
    assert_eq!(left, [("lobby".to_owned(), "ann".to_owned()), ("other".to_owned(), "ann".to_owned())]);
    assert_eq!(ids(store, "lobby").await, ["bob"]);
    assert_eq!(store.info("other", true).await.unwrap().records, Some(vec![]));
    tokio::time::sleep(TTL).await;
    assert_eq!(store.expire(100).await.unwrap(), [("lobby".to_owned(), "bob".to_owned())]);
    assert!(store.expire(100).await.unwrap().is_empty());

    // A large set is counted and read whole; the sweep takes at most `limit` sessions at a time.
    for n in 0..300 {
        store.add("hall", &format!("h{n}"), &member(&format!("m{n}")), TTL).await.unwrap();
    }
    assert_eq!(store.info("hall", false).await.unwrap().total, 300);
    let all = store.info("hall", true).await.unwrap();
    assert_eq!((all.total, all.records.map(|r| r.len())), (300, Some(300)));
    tokio::time::sleep(TTL + Duration::from_millis(100)).await;
    assert_eq!(store.expire(120).await.unwrap().len(), 120);
    assert_eq!(store.expire(1000).await.unwrap().len(), 180);
    assert_eq!(store.info("hall", true).await.unwrap(), PresenceInfo { total: 0, records: Some(vec![]) });
}

#[tokio::test]
async fn the_memory_store_keeps_the_rules() {
    conformance(&MemoryPresence::default()).await;
}

#[tokio::test]
async fn the_redis_store_keeps_the_rules_on_the_redis_debian_ships() {
    let engine = Engine::redis();
    conformance(&*redis_store(&engine).await).await;
}

#[tokio::test]
async fn the_nats_store_keeps_the_rules_on_the_nats_server_debian_ships() {
    let (engine, stop) = (Engine::nats_jetstream(), CancellationToken::new());
    conformance(&*nats_store(&engine, &stop).await).await;
    stop.cancel();
}

#[tokio::test]
async fn on_nats_a_sweep_that_died_halfway_is_finished_by_the_next_and_foreign_entries_are_dropped() {
    use ferrocable::presence::nats::{SESSIONS_BUCKET, session_key};
    let (engine, stop) = (Engine::nats_jetstream(), CancellationToken::new());
    let store = nats_store(&engine, &stop).await;
    let js = async_nats::jetstream::new(async_nats::connect(engine.url()).await.unwrap());
    let sessions = js.get_key_value(SESSIONS_BUCKET).await.unwrap();
    // Something that is not a session entry, first in line.
    sessions.put("s.foreign", "not json".into()).await.unwrap();
    store.add("room", "s1", &member("ann"), TTL).await.unwrap();
    store.add("room", "s2", &member("bob"), TTL).await.unwrap();
    // A sweeper claimed s1 (its records moved to `expiring`) and died before taking it out of its member.
    let mut entry: serde_json::Value =
        serde_json::from_slice(&sessions.get(session_key("s1")).await.unwrap().unwrap()).unwrap();
    entry["expiring"] = entry["records"].take();
    entry["records"] = serde_json::json!([]);
    sessions.put(session_key("s1"), serde_json::to_vec(&entry).unwrap().into()).await.unwrap();
    assert_eq!(ids(&*store, "room").await, ["ann", "bob"], "ann is still a member");
    store.touch(&["s2".into()], TTL * 3).await.unwrap();
    tokio::time::sleep(TTL + Duration::from_millis(100)).await;
    assert_eq!(store.expire(100).await.unwrap(), [("room".to_owned(), "ann".to_owned())]);
    assert_eq!(ids(&*store, "room").await, ["bob"]);
    assert_eq!(sessions.get("s.foreign").await.unwrap(), None, "the foreign entry was dropped");
    assert_eq!(sessions.get(session_key("s1")).await.unwrap(), None, "the claimed entry is gone");
    stop.cancel();
}

/// Two nodes' stores on one engine, racing: each join and leave is reported by exactly one of them.
async fn racing(one: Arc<dyn PresenceStore>, two: Arc<dyn PresenceStore>) {
    let ttl = Duration::from_secs(15);
    // 50 sessions of one id, half added through each node at once: exactly one join.
    let adds = (0..50).map(|n| {
        let store = if n % 2 == 0 { one.clone() } else { two.clone() };
        tokio::spawn(async move { store.add("room", &format!("s{n}"), &member("ann"), ttl).await })
    });
    let mut joined = 0;
    for add in adds {
        if add.await.unwrap() == Ok(Added::Joined) {
            joined += 1;
        }
    }
    assert_eq!(joined, 1);
    let removes = (0..50).map(|n| {
        let store = if n % 2 == 0 { two.clone() } else { one.clone() };
        tokio::spawn(async move { store.remove("room", &format!("s{n}")).await })
    });
    let mut left = 0;
    for remove in removes {
        if remove.await.unwrap().unwrap().is_some() {
            left += 1;
        }
    }
    assert_eq!(left, 1);
    // Expiry swept by both nodes at once: each leave reported by one of them.
    for n in 0..20 {
        one.add("lobby", &format!("e{n}"), &member(&format!("id{n}")), TTL).await.unwrap();
    }
    tokio::time::sleep(TTL + Duration::from_millis(100)).await;
    let (a, b) = tokio::join!(one.expire(1000), two.expire(1000));
    assert_eq!(a.unwrap().len() + b.unwrap().len(), 20);
    assert_eq!(one.info("lobby", false).await.unwrap().total, 0);
}

#[tokio::test]
async fn two_redis_nodes_racing_report_each_join_and_leave_once() {
    let engine = Engine::redis();
    racing(redis_store(&engine).await, redis_store(&engine).await).await;
}

#[tokio::test]
async fn two_nats_nodes_racing_report_each_join_and_leave_once() {
    let (engine, stop) = (Engine::nats_jetstream(), CancellationToken::new());
    racing(nats_store(&engine, &stop).await, nats_store(&engine, &stop).await).await;
    stop.cancel();
}
