//! Measures the brokers: registration throughput of memory, redis and nats, and what Redis holds per cached
//! message and per cached session. The figures in docs/cluster.md ("Broker costs") come from it.
//!
//! Start the engines, then run it against them (both URLs are required):
//!
//! ```text
//! redis-server --port 6390 --save '' --appendonly no &
//! nats-server -p 4250 -js -sd /tmp/measure-js &
//! cargo run --release -p ferrocable --example broker_measure -- redis://127.0.0.1:6390/0 nats://127.0.0.1:4250
//! ```
//!
//! It writes under the `ferrocable:` keys of that Redis database and into that JetStream: use scratch ones.

use std::sync::Arc;
use std::time::Instant;

use ferrocable::Config;
use ferrocable::broker::memory::MemoryBroker;
use ferrocable::broker::nats::NatsBroker;
use ferrocable::broker::redis::RedisBroker;
use ferrocable::broker::{Broker, Limits};

const STREAMS: usize = 100;
const MESSAGES: usize = 10_000;
const MESSAGE_BYTES: usize = 100;
const SESSIONS: usize = 10_000;
const SNAPSHOT_BYTES: usize = 200;
/// Concurrent registering tasks in the second throughput run, each on its own streams.
const TASKS: usize = 8;

fn message(n: usize) -> String {
    let head = format!("{{\"n\":{n},\"pad\":\"");
    format!("{head}{}\"}}", "x".repeat(MESSAGE_BYTES - head.len() - 2))
}

/// Registers `MESSAGES` messages over `STREAMS` streams from one task, then from `TASKS` tasks; returns
/// registrations per second of each run.
async fn throughput(broker: Arc<dyn Broker>, prefix: &str) -> (f64, f64) {
    let started = Instant::now();
    for n in 0..MESSAGES {
        broker.register(&format!("{prefix}-seq-{}", n % STREAMS), &message(n)).await.expect("register");
    }
    let sequential = MESSAGES as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let broker = broker.clone();
            let prefix = prefix.to_owned();
            tokio::spawn(async move {
                for n in 0..MESSAGES / TASKS {
                    let stream = format!("{prefix}-par-{}", t * STREAMS / TASKS + n % (STREAMS / TASKS));
                    broker.register(&stream, &message(n)).await.expect("register");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let concurrent = MESSAGES as f64 / started.elapsed().as_secs_f64();
    (sequential, concurrent)
}

async fn used_memory(conn: &mut redis::aio::MultiplexedConnection) -> i64 {
    let info: String = redis::cmd("INFO").arg("memory").query_async(conn).await.expect("INFO");
    info.lines().find_map(|l| l.strip_prefix("used_memory:")).and_then(|v| v.trim().parse().ok()).expect("used_memory")
}

async fn memory_usage(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    let bytes: Option<i64> =
        redis::cmd("MEMORY").arg("USAGE").arg(key).arg("SAMPLES").arg(0).query_async(conn).await.expect("MEMORY");
    bytes.unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [redis_url, nats_url] = &args[..] else {
        eprintln!("usage: broker_measure <redis url> <nats url>");
        std::process::exit(2);
    };
    let limits = Limits { history_limit: 100, history_ttl: 300, sessions_ttl: 300 };
    let mut config = Config::default();
    config.set("redis_url", redis_url).expect("redis_url");
    config.set("nats_servers", nats_url).expect("nats_servers");
    let run = format!("m{}", std::process::id());

    let mut redis = redis::Client::open(redis_url.as_str())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let version: String = redis::cmd("INFO").arg("server").query_async(&mut redis).await.expect("INFO");
    let version = version.lines().find_map(|l| l.strip_prefix("redis_version:")).unwrap_or("?").trim().to_owned();

    let memory: Arc<dyn Broker> = Arc::new(MemoryBroker::new(limits));
    let redis_broker: Arc<dyn Broker> = RedisBroker::connect(&config, limits).await.expect("redis broker");
    let stop = tokio_util::sync::CancellationToken::new();
    let nats_broker: Arc<dyn Broker> = NatsBroker::connect(&config, limits, stop.clone()).await.expect("nats broker");

    println!(
        "registrations per second ({MESSAGES} messages of {MESSAGE_BYTES} bytes over {STREAMS} streams; one task, then {TASKS} tasks)"
    );
    for (name, broker) in [("memory", memory), ("redis", redis_broker.clone()), ("nats", nats_broker)] {
        let (sequential, concurrent) = throughput(broker, &format!("{run}-{name}")).await;
        println!("  {name:<7} {sequential:>9.0}/s  {concurrent:>9.0}/s");
    }

    // Redis memory per cached message: a fresh set of streams, each filled to history_limit.
    let before = used_memory(&mut redis).await;
    for n in 0..MESSAGES {
        redis_broker.register(&format!("{run}-mem-{}", n % STREAMS), &message(n)).await.expect("register");
    }
    let after = used_memory(&mut redis).await;
    let (mut history, mut offsets) = (0, 0);
    for s in 0..STREAMS {
        history += memory_usage(&mut redis, &format!("ferrocable:history:{run}-mem-{s}")).await;
        offsets += memory_usage(&mut redis, &format!("ferrocable:offset:{run}-mem-{s}")).await;
    }
    println!("Redis {version}: {MESSAGES} messages of {MESSAGE_BYTES} bytes in {STREAMS} streams (history_limit 100)");
    println!(
        "  MEMORY USAGE: history keys {history} B ({:.1} B per message), offset keys {offsets} B ({:.1} B per stream)",
        history as f64 / MESSAGES as f64,
        offsets as f64 / STREAMS as f64
    );
    println!(
        "  used_memory grew {} B ({:.1} B per message)",
        after - before,
        (after - before) as f64 / MESSAGES as f64
    );

    let before = used_memory(&mut redis).await;
    let snapshot = vec![b'x'; SNAPSHOT_BYTES];
    for n in 0..SESSIONS {
        redis_broker.commit_session(&format!("{run}-sid-{n:08}"), &snapshot).await.expect("commit");
    }
    let after = used_memory(&mut redis).await;
    let mut sessions = 0;
    for n in 0..SESSIONS {
        sessions += memory_usage(&mut redis, &format!("ferrocable:session:{run}-sid-{n:08}")).await;
    }
    println!("Redis {version}: {SESSIONS} sessions of {SNAPSHOT_BYTES} bytes");
    println!(
        "  MEMORY USAGE: {:.1} B per session; used_memory grew {:.1} B per session",
        sessions as f64 / SESSIONS as f64,
        (after - before) as f64 / SESSIONS as f64
    );
    stop.cancel();
}
