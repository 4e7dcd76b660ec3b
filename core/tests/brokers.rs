//! The brokers behind reliable streams, against real engines: one set of conformance scenarios (offsets,
//! history by position and by time, refusals, limits, the session cache) run against `memory`, `redis`
//! (a real redis-server) and `nats` (a real nats-server with JetStream), then what a cluster relies on
//! with `redis` and `nats`: two brokers on one engine share offsets, history and sessions, and an engine
//! that goes away gives errors, not hangs, until it is back.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::engines::{Engine, Kind};
use ferrocable::Config;
use ferrocable::broker::memory::MemoryBroker;
use ferrocable::broker::nats::NatsBroker;
use ferrocable::broker::redis::RedisBroker;
use ferrocable::broker::{Broker, History, HistoryError, Limits};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Adapter {
    Memory,
    Redis,
    Nats,
}

/// An adapter with its own engine (none for memory), making brokers on it.
struct Setup {
    adapter: Adapter,
    engine: Option<Engine>,
    stop: CancellationToken,
}

impl Setup {
    fn new(adapter: Adapter) -> Self {
        let engine = match adapter {
            Adapter::Memory => None,
            Adapter::Redis => Some(Engine::redis()),
            Adapter::Nats => Some(Engine::nats_jetstream()),
        };
        Self { adapter, engine, stop: CancellationToken::new() }
    }

    fn config(&self) -> Config {
        let mut config = Config::default();
        match self.adapter {
            Adapter::Memory => {}
            Adapter::Redis => config.set("redis_url", &self.engine().url()).unwrap(),
            Adapter::Nats => config.set("nats_servers", &self.engine().url()).unwrap(),
        }
        config
    }

    fn engine(&self) -> &Engine {
        self.engine.as_ref().unwrap()
    }

    fn engine_mut(&mut self) -> &mut Engine {
        self.engine.as_mut().unwrap()
    }

    async fn broker(&self, limits: Limits) -> Arc<dyn Broker> {
        let config = self.config();
        match self.adapter {
            Adapter::Memory => Arc::new(MemoryBroker::new(limits)),
            Adapter::Redis => RedisBroker::connect(&config, limits).await.unwrap(),
            Adapter::Nats => NatsBroker::connect(&config, limits, self.stop.clone()).await.unwrap(),
        }
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn limits(history_limit: usize, history_ttl: u64, sessions_ttl: u64) -> Limits {
    Limits { history_limit, history_ttl, sessions_ttl }
}

fn offsets(history: &History) -> Vec<u64> {
    history.entries.iter().map(|e| e.offset).collect()
}

fn data(history: &History) -> Vec<&str> {
    history.entries.iter().map(|e| &*e.data).collect()
}

// ---- Conformance: every adapter, the same scenarios ----

async fn offsets_count_up_per_stream_within_the_epoch(setup: Setup) {
    let b = setup.broker(limits(10, 60, 60)).await;
    let first = b.register("a", "1").await.unwrap();
    assert_eq!(first.offset, 1);
    assert!(!first.epoch.is_empty());
    assert_eq!(b.register("a", "2").await.unwrap().offset, 2);
    assert_eq!(b.register("b", "1").await.unwrap().offset, 1);
    let third = b.register("a", "3").await.unwrap();
    assert_eq!((third.offset, &*third.epoch), (3, &*first.epoch), "one epoch for every stream");
}

async fn history_from_returns_what_follows_the_position_in_order(setup: Setup) {
    let b = setup.broker(limits(10, 60, 60)).await;
    let mut epoch = None;
    for n in 1..=5 {
        epoch = Some(b.register("s", &format!("message {n}")).await.unwrap().epoch);
    }
    let epoch = epoch.unwrap();
    let h = b.history_from("s", &epoch, 2).await.unwrap();
    assert_eq!(offsets(&h), [3, 4, 5]);
    assert_eq!(data(&h), ["message 3", "message 4", "message 5"]);
    assert_eq!(h.epoch, epoch);
    assert!(b.history_from("s", &epoch, 5).await.unwrap().entries.is_empty(), "up to date");
    assert_eq!(offsets(&b.history_from("s", &epoch, 0).await.unwrap()), [1, 2, 3, 4, 5]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(h.entries.iter().all(|e| e.timestamp.abs_diff(now) <= 2), "timestamps are registration times");
}

async fn history_from_refuses_other_epochs_trimmed_and_future_positions(setup: Setup) {
    let b = setup.broker(limits(3, 60, 60)).await;
    let mut epoch = None;
    for n in 1..=5 {
        epoch = Some(b.register("s", &n.to_string()).await.unwrap().epoch);
    }
    let epoch = epoch.unwrap();
    // Entries 3..=5 are kept: a client at 2 misses nothing, a client at 1 would miss 2.
    assert_eq!(offsets(&b.history_from("s", &epoch, 2).await.unwrap()), [3, 4, 5]);
    assert_eq!(b.history_from("s", &epoch, 1).await, Err(HistoryError::Trimmed { requested: 1, oldest: 3 }));
    assert_eq!(b.history_from("s", &epoch, 6).await, Err(HistoryError::Ahead { requested: 6, latest: 5 }));
    assert_eq!(
        b.history_from("s", &epoch, u64::MAX).await,
        Err(HistoryError::Ahead { requested: u64::MAX, latest: 5 })
    );
    let other = if &*epoch == "xxxx" { "yyyy" } else { "xxxx" };
    assert!(matches!(b.history_from("s", other, 2).await, Err(HistoryError::UnknownEpoch { .. })));
    assert!(matches!(b.history_from("s", "", 2).await, Err(HistoryError::UnknownEpoch { .. })));
    assert!(b.history_from("unknown", &epoch, 0).await.unwrap().entries.is_empty());
    assert_eq!(b.history_from("unknown", &epoch, 3).await, Err(HistoryError::Ahead { requested: 3, latest: 0 }));
}

async fn history_since_filters_by_registration_time(setup: Setup) {
    let b = setup.broker(limits(10, 60, 60)).await;
    let epoch = b.register("s", "old").await.unwrap().epoch;
    let first = b.history_from("s", &epoch, 0).await.unwrap().entries[0].timestamp;
    // Register until a message lands in a later second.
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let offset = b.register("s", "new").await.unwrap().offset;
        if b.history_from("s", &epoch, offset - 1).await.unwrap().entries[0].timestamp > first {
            break;
        }
    }
    let all = b.history_since("s", first).await.unwrap();
    assert_eq!(all.entries[0].data.as_ref(), "old");
    assert_eq!(offsets(&all), (1..=all.entries.len() as u64).collect::<Vec<_>>());
    let later = b.history_since("s", first + 1).await.unwrap();
    assert!(!later.entries.is_empty());
    let (earlier, suffix) = all.entries.split_at(all.entries.len() - later.entries.len());
    assert_eq!(suffix, &later.entries[..], "the messages from that time on");
    assert!(earlier.iter().all(|e| e.timestamp == first) && suffix.iter().all(|e| e.timestamp > first));
    assert!(b.history_since("s", first + 3600).await.unwrap().entries.is_empty());
    let nothing = b.history_since("nothing", 0).await.unwrap();
    assert!(nothing.entries.is_empty());
    assert_eq!(nothing.epoch, epoch);
}

async fn history_limit_bounds_every_stream(setup: Setup) {
    let b = setup.broker(limits(5, 60, 60)).await;
    let mut epoch = None;
    for n in 1..=30 {
        for s in 0..4 {
            epoch = Some(b.register(&format!("s{s}"), &n.to_string()).await.unwrap().epoch);
        }
    }
    let epoch = epoch.unwrap();
    for s in 0..4 {
        let stream = format!("s{s}");
        assert_eq!(offsets(&b.history_since(&stream, 0).await.unwrap()), [26, 27, 28, 29, 30]);
        assert_eq!(b.history_from(&stream, &epoch, 0).await, Err(HistoryError::Trimmed { requested: 0, oldest: 26 }));
        assert_eq!(data(&b.history_from(&stream, &epoch, 28).await.unwrap()), ["29", "30"]);
    }
}

async fn history_limit_zero_keeps_offsets_but_no_messages(setup: Setup) {
    let b = setup.broker(limits(0, 60, 60)).await;
    b.register("s", "1").await.unwrap();
    let epoch = b.register("s", "2").await.unwrap().epoch;
    assert!(b.history_since("s", 0).await.unwrap().entries.is_empty());
    assert_eq!(b.history_from("s", &epoch, 0).await, Err(HistoryError::Trimmed { requested: 0, oldest: 3 }));
    assert!(b.history_from("s", &epoch, 2).await.unwrap().entries.is_empty(), "up to date");
    assert_eq!(b.register("s", "3").await.unwrap().offset, 3);
}

async fn entries_expire_after_the_history_ttl_and_offsets_continue(setup: Setup) {
    let b = setup.broker(limits(10, 1, 60)).await;
    let epoch = b.register("s", "1").await.unwrap().epoch;
    assert_eq!(offsets(&b.history_since("s", 0).await.unwrap()), [1]);
    // Expired once older than the ttl; with whole seconds that is at most 3 s later.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert!(b.history_since("s", 0).await.unwrap().entries.is_empty(), "expired");
    assert_eq!(b.history_from("s", &epoch, 0).await, Err(HistoryError::Trimmed { requested: 0, oldest: 2 }));
    assert!(b.history_from("s", &epoch, 1).await.unwrap().entries.is_empty(), "a client at 1 missed nothing");
    assert_eq!(b.register("s", "2").await.unwrap().offset, 2, "the stream keeps its offset");
}

async fn a_session_is_restored_once_and_only_before_it_expires(setup: Setup) {
    let b = setup.broker(limits(10, 60, 2)).await;
    b.commit_session("sid1", b"state 1").await.unwrap();
    b.commit_session("sid1", b"state 2").await.unwrap();
    assert_eq!(b.restore_session("sid1").await.unwrap().as_deref(), Some(&b"state 2"[..]), "the last commit");
    assert_eq!(b.restore_session("sid1").await.unwrap(), None, "taken");
    assert_eq!(b.restore_session("never-committed").await.unwrap(), None);
    b.touch_session("never-committed").await.unwrap();
    assert_eq!(b.restore_session("never-committed").await.unwrap(), None, "a touch creates nothing");
    let binary: Vec<u8> = (0..=255).collect();
    b.commit_session("binary", &binary).await.unwrap();
    assert_eq!(b.restore_session("binary").await.unwrap(), Some(binary));

    b.commit_session("untouched", b"state").await.unwrap();
    b.commit_session("touched", b"state").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    b.touch_session("touched").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(b.restore_session("touched").await.unwrap().is_some(), "touched 1.5 s ago, ttl 2 s");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(b.restore_session("untouched").await.unwrap(), None, "committed 4 s ago, ttl 2 s");
}

async fn sessions_ttl_zero_disables_the_cache(setup: Setup) {
    let b = setup.broker(limits(10, 60, 0)).await;
    b.commit_session("sid", b"state").await.unwrap();
    b.touch_session("sid").await.unwrap();
    assert_eq!(b.restore_session("sid").await.unwrap(), None);
}

async fn odd_names_and_forged_ids_are_answered_not_failed(setup: Setup) {
    let b = setup.broker(limits(10, 60, 60)).await;
    let names = ["chat.1", "a*b>c", "with space", "gid://app/User/1", "ünïcødé ✓", "", &"x".repeat(5000)];
    for name in names {
        let position = b.register(name, "m").await.unwrap();
        assert_eq!(position.offset, 1, "{name:?}");
        assert_eq!(data(&b.history_from(name, &position.epoch, 0).await.unwrap()), ["m"], "{name:?}");
    }
    assert_eq!(b.register("chat.1", "m").await.unwrap().offset, 2, "names are not confused");
    assert_eq!(b.register("chat_1", "m").await.unwrap().offset, 1, "names are not confused");
    for sid in ["", "..", "a b", "*", ">", "ü", &"s".repeat(5000)] {
        assert_eq!(b.restore_session(sid).await.unwrap(), None, "{sid:?}");
        b.touch_session(sid).await.unwrap();
    }
}

/// Every conformance scenario against `adapter`, each on an engine of its own, all at once.
async fn conformance(adapter: Adapter) {
    let started = Instant::now();
    tokio::join!(
        offsets_count_up_per_stream_within_the_epoch(Setup::new(adapter)),
        history_from_returns_what_follows_the_position_in_order(Setup::new(adapter)),
        history_from_refuses_other_epochs_trimmed_and_future_positions(Setup::new(adapter)),
        history_since_filters_by_registration_time(Setup::new(adapter)),
        history_limit_bounds_every_stream(Setup::new(adapter)),
        history_limit_zero_keeps_offsets_but_no_messages(Setup::new(adapter)),
        entries_expire_after_the_history_ttl_and_offsets_continue(Setup::new(adapter)),
        a_session_is_restored_once_and_only_before_it_expires(Setup::new(adapter)),
        sessions_ttl_zero_disables_the_cache(Setup::new(adapter)),
        odd_names_and_forged_ids_are_answered_not_failed(Setup::new(adapter)),
    );
    eprintln!("{adapter:?} conformance: {:.1}s", started.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_broker_conformance() {
    conformance(Adapter::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_broker_conformance() {
    conformance(Adapter::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_broker_conformance() {
    conformance(Adapter::Nats).await;
}

// ---- Cluster: two brokers on one engine ----

async fn two_brokers_share_offsets_history_and_sessions(adapter: Adapter) {
    let setup = Setup::new(adapter);
    let (a, b) = (setup.broker(limits(100, 60, 60)).await, setup.broker(limits(100, 60, 60)).await);
    let mut positions = Vec::new();
    for n in 1..=4 {
        let node = if n % 2 == 1 { &a } else { &b };
        positions.push(node.register("chat", &format!("from {n}")).await.unwrap());
    }
    assert_eq!(positions.iter().map(|p| p.offset).collect::<Vec<_>>(), [1, 2, 3, 4], "alternating A, B, A, B");
    let epoch = positions[0].epoch.clone();
    assert!(positions.iter().all(|p| p.epoch == epoch), "one epoch on both");
    for node in [&a, &b] {
        assert_eq!(data(&node.history_from("chat", &epoch, 1).await.unwrap()), ["from 2", "from 3", "from 4"]);
    }

    a.commit_session("sid", b"state").await.unwrap();
    assert_eq!(b.restore_session("sid").await.unwrap().as_deref(), Some(&b"state"[..]), "committed on A");
    assert_eq!(a.restore_session("sid").await.unwrap(), None, "restored once, on B");

    // Two nodes restoring one session at the same moment: one gets it.
    for round in 0..10 {
        let sid = format!("raced-{round}");
        a.commit_session(&sid, b"state").await.unwrap();
        let (ra, rb) = tokio::join!(a.restore_session(&sid), b.restore_session(&sid));
        let restored = [ra.unwrap(), rb.unwrap()].into_iter().flatten().count();
        assert_eq!(restored, 1, "round {round}");
    }
}

async fn concurrent_registrations_on_two_brokers_get_unique_contiguous_offsets(adapter: Adapter) {
    let setup = Setup::new(adapter);
    let (a, b) = (setup.broker(limits(1000, 60, 60)).await, setup.broker(limits(1000, 60, 60)).await);
    let node = |broker: Arc<dyn Broker>, name: &'static str| {
        tokio::spawn(async move {
            let mut offsets = Vec::new();
            for n in 0..150 {
                offsets.push(broker.register("busy", &format!("{name} {n}")).await.unwrap().offset);
            }
            offsets
        })
    };
    let (from_a, from_b) = tokio::join!(node(a.clone(), "a"), node(b.clone(), "b"));
    let (from_a, from_b) = (from_a.unwrap(), from_b.unwrap());
    assert!(from_a.windows(2).all(|w| w[0] < w[1]) && from_b.windows(2).all(|w| w[0] < w[1]), "in order per node");
    let mut all: Vec<u64> = from_a.into_iter().chain(from_b).collect();
    all.sort_unstable();
    assert_eq!(all, (1..=300).collect::<Vec<_>>());
    let epoch = a.register("busy", "last").await.unwrap().epoch;
    assert_eq!(b.history_since("busy", 0).await.unwrap().entries.len(), 301);
    assert_eq!(offsets(&b.history_from("busy", &epoch, 299).await.unwrap()), [300, 301]);
}

/// Calls `f` until it succeeds, for at most `limit`.
async fn eventually<T, E: std::fmt::Debug, F: std::future::Future<Output = Result<T, E>>>(
    limit: Duration,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match f().await {
            Ok(value) => return value,
            Err(error) => {
                assert!(Instant::now() < deadline, "still failing after {limit:?}: {error:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn an_engine_outage_gives_errors_not_hangs_and_the_broker_recovers(adapter: Adapter) {
    let mut setup = Setup::new(adapter);
    let b = setup.broker(limits(100, 60, 60)).await;
    let before = b.register("s", "before").await.unwrap();
    b.commit_session("kept", b"state").await.unwrap();
    setup.engine_mut().kill();

    // Every call fails, and fails fast, while the engine is away.
    for _ in 0..5 {
        let started = Instant::now();
        let call = tokio::time::timeout(Duration::from_secs(8), b.register("s", "during")).await;
        assert!(call.expect("a call on a dead engine must not hang").is_err());
        assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
        let history = tokio::time::timeout(Duration::from_secs(8), b.history_from("s", &before.epoch, 0)).await;
        assert!(matches!(history.expect("no hang"), Err(HistoryError::Broker(_))));
        let restore = tokio::time::timeout(Duration::from_secs(8), b.restore_session("kept")).await;
        assert!(restore.expect("no hang").is_err());
    }

    setup.engine_mut().start();
    let after = eventually(Duration::from_secs(15), || b.register("s", "after")).await;
    match adapter {
        Adapter::Redis => {
            // A Redis without persistence comes back empty: a new epoch, old positions refused.
            assert_ne!(after.epoch, before.epoch);
            assert_eq!(after.offset, 1);
            assert!(matches!(b.history_from("s", &before.epoch, 1).await, Err(HistoryError::UnknownEpoch { .. })));
            assert_eq!(b.restore_session("kept").await.unwrap(), None);
        }
        Adapter::Nats => {
            // JetStream keeps its store: same epoch, the history and the session survive.
            // A registration made as the engine died may have been written once it was back (the
            // client sends what it had queued on reconnect): at most the first failed one.
            assert_eq!(after.epoch, before.epoch);
            let history = b.history_from("s", &before.epoch, 0).await.unwrap();
            let (during, after_data) = match data(&history)[..] {
                ["before", "after"] => (0, 2),
                ["before", "during", "after"] => (1, 3),
                ref other => panic!("unexpected history {other:?}"),
            };
            assert_eq!(after.offset, after_data, "{during} registration(s) from the outage kept");
            assert_eq!(b.restore_session("kept").await.unwrap().as_deref(), Some(&b"state"[..]));
        }
        Adapter::Memory => unreachable!(),
    }
}

async fn an_engine_that_lost_its_data_gives_a_new_epoch_to_every_node(adapter: Adapter) {
    let mut setup = Setup::new(adapter);
    let (a, b) = (setup.broker(limits(100, 60, 60)).await, setup.broker(limits(100, 60, 60)).await);
    a.register("s", "1").await.unwrap();
    let old = b.register("s", "2").await.unwrap();
    assert_eq!(old.offset, 2);
    match adapter {
        Adapter::Redis => {
            let mut conn =
                redis::Client::open(setup.engine().url()).unwrap().get_multiplexed_async_connection().await.unwrap();
            redis::cmd("FLUSHDB").query_async::<()>(&mut conn).await.unwrap();
        }
        _ => {
            setup.engine_mut().kill();
            setup.engine().wipe_store();
            setup.engine_mut().start();
        }
    }
    let new = eventually(Duration::from_secs(15), || a.register("s", "3")).await;
    assert_ne!(new.epoch, old.epoch);
    assert_eq!(new.offset, 1, "offsets start over in the new epoch");
    // The other node follows: old positions are refused, new ones served.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match b.history_from("s", &old.epoch, 1).await {
            Err(HistoryError::UnknownEpoch { .. }) => break,
            // A node may need one failed call to notice that the engine's storage is gone.
            Err(HistoryError::Broker(error)) if Instant::now() < deadline => {
                eprintln!("{adapter:?}: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("the old epoch must be refused: {other:?}"),
        }
    }
    assert_eq!(data(&b.history_from("s", &new.epoch, 0).await.unwrap()), ["3"]);
    let next = b.register("s", "4").await.unwrap();
    assert_eq!((next.offset, &next.epoch), (2, &new.epoch));
}

async fn an_engine_down_at_start_delays_the_broker_only(adapter: Adapter) {
    let kind = if adapter == Adapter::Redis { Kind::Redis } else { Kind::Nats };
    let mut engine = Engine::not_started(kind);
    if adapter == Adapter::Nats {
        engine = Engine::nats_jetstream();
        engine.kill();
    }
    let mut setup = Setup { adapter, engine: Some(engine), stop: CancellationToken::new() };
    let started = Instant::now();
    let b = setup.broker(limits(100, 60, 60)).await;
    assert!(started.elapsed() < Duration::from_secs(8), "connect returned after {:?}", started.elapsed());
    assert!(b.register("s", "m").await.is_err());
    assert!(b.describe().contains("not known yet"), "{}", b.describe());
    setup.engine_mut().start();
    assert_eq!(eventually(Duration::from_secs(15), || b.register("s", "m")).await.offset, 1);
}

async fn cluster(adapter: Adapter) {
    let started = Instant::now();
    tokio::join!(
        two_brokers_share_offsets_history_and_sessions(adapter),
        concurrent_registrations_on_two_brokers_get_unique_contiguous_offsets(adapter),
        an_engine_outage_gives_errors_not_hangs_and_the_broker_recovers(adapter),
        an_engine_down_at_start_delays_the_broker_only(adapter),
        an_engine_that_lost_its_data_gives_a_new_epoch_to_every_node(adapter),
    );
    eprintln!("{adapter:?} cluster: {:.1}s", started.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_broker_cluster() {
    cluster(Adapter::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_broker_cluster() {
    cluster(Adapter::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_nats_server_runs_jetstream_for_the_nats_broker_and_its_presence() {
    let port = common::engines::free_port();
    let store = std::env::temp_dir().join(format!("ferrocable-test-enats-store-{}-{port}", std::process::id()));
    let (addr, store_dir) = (format!("nats://127.0.0.1:{port}"), store.display().to_string());
    let options = [("embed_nats", "true"), ("broker", "nats"), ("enats_addr", &addr), ("enats_store_dir", &store_dir)];
    let node = common::Fixture::start(common::Mode::InProcess, &options).await;
    let stop = CancellationToken::new();
    let b = NatsBroker::connect(node.server.config(), limits(10, 60, 60), stop.clone()).await.unwrap();
    let position = b.register("s", "m").await.unwrap();
    assert_eq!(position.offset, 1);
    assert_eq!(data(&b.history_from("s", &position.epoch, 0).await.unwrap()), ["m"]);
    assert!(store.join("jetstream").is_dir(), "JetStream stores in enats_store_dir");
    // Presence is kept there too.
    use ferrocable::presence::{Added, Member, PresenceStore};
    let ann = Member { id: "ann".into(), info: None };
    assert_eq!(b.add("room", "s1", &ann, Duration::from_secs(15)).await, Ok(Added::Joined));
    assert_eq!(b.info("room", true).await.unwrap().records, Some(vec![ann]));
    stop.cancel();
    node.server.shutdown().await;
    let _ = std::fs::remove_dir_all(&store);
}
