//! `ferrocable-bench`: drives any Action Cable v1 server (Ferrocable, AnyCable-Go, Rails' Action Cable) with
//! the same scenarios and reports latency, throughput, loss, memory and CPU. Loopback only, bounded in
//! connections and time.

mod attack;
mod backend;
mod client;
mod pressure;
mod recovery;
mod scenarios;
mod soak;
mod sse;
mod stats;

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use scenarios::{BroadcastOptions, Via};

#[derive(Parser)]
#[command(name = "ferrocable-bench", version, about = "Load generator for Action Cable protocol servers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Common {
    /// WebSocket URL of the server under test (loopback only)
    #[arg(long, default_value = "ws://127.0.0.1:8080/cable")]
    url: String,
    /// PID of the server process, for RSS and CPU readings
    #[arg(long)]
    server_pid: Option<String>,
    /// Number of 127.0.0.x source addresses to spread connections over (0 = one per 25k connections)
    #[arg(long, default_value_t = 0)]
    sources: usize,
    /// Cookie header sent with every connection
    #[arg(long)]
    cookie: Option<String>,
    /// Connections opened at once
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Per-step timeout in seconds (connect, welcome, confirm)
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// Print the result as JSON on stdout (the human summary goes to stderr)
    #[arg(long)]
    json: bool,
    /// Offer AnyCable's extended protocol (`actioncable-v1-ext-json`) instead of `actioncable-v1-json`; broadcast
    /// frames must then carry their stream position
    #[arg(long)]
    extended: bool,
    /// Client encoding: `json` (text frames), or AnyCable's binary `msgpack` or `protobuf` (the
    /// `actioncable-v1[-ext]-msgpack|protobuf` sub-protocols)
    #[arg(long, default_value = "json", value_parser = ["json", "msgpack", "protobuf"])]
    encoding: String,
}

const PUBSUB_IDENTIFIER: &str = r#"{"channel":"$pubsub","stream_name":"{stream}"}"#;
const BENCHMARK_IDENTIFIER: &str = r#"{"channel":"BenchmarkChannel"}"#;

#[derive(Subcommand)]
enum Command {
    /// Open N connections, hold them, report server RSS per connection and the connect rate
    Idle {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Also subscribe each connection with this identifier
        #[arg(long)]
        identifier: Option<String>,
        /// Seconds to hold the connections before reading RSS
        #[arg(long, default_value_t = 5)]
        hold: u64,
        /// Connect in two halves, reading RSS after each is held: also reports what an added connection
        /// costs once the server holds the first half (one-off growth, such as pools warming up, excluded)
        #[arg(long)]
        marginal: bool,
    },
    /// N subscribers over S streams; publish at a rate and time every delivery
    Broadcast {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        broadcast: BroadcastArgs,
        /// Step mode: start with this many subscribers and grow by --step until p95 exceeds --p95-limit
        #[arg(long)]
        step: Option<usize>,
        /// Step mode upper bound on subscribers
        #[arg(long, default_value_t = 15_000)]
        max_subscribers: usize,
        /// Step mode p95 limit in milliseconds
        #[arg(long, default_value_t = 250.0)]
        p95_limit: f64,
    },
    /// N Server-Sent Events clients (`GET <events-url>?stream=<stream>`, a public stream): server RSS per idle
    /// client, then publications fanned out to all of them (deliveries per second, latency)
    Sse {
        #[command(flatten)]
        common: Common,
        /// The server's SSE endpoint
        #[arg(long, default_value = "http://127.0.0.1:8080/events")]
        events_url: String,
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        #[arg(long, default_value = "bench_sse")]
        stream: String,
        /// Seconds to hold the idle clients before reading RSS
        #[arg(long, default_value_t = 5)]
        hold: u64,
        /// Publications fanned out to every client
        #[arg(long, default_value_t = 50)]
        publications: u64,
        /// Publications per second
        #[arg(long, default_value_t = 10)]
        rate: u64,
        /// Padding bytes per payload
        #[arg(long, default_value_t = 64)]
        payload: usize,
        #[arg(long, default_value = "http://127.0.0.1:8090/_broadcast")]
        broadcast_url: String,
        #[arg(long)]
        broadcast_key: Option<String>,
    },
    /// Connect + subscribe storm of N clients at a concurrency
    Connect {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 2000)]
        clients: usize,
        #[arg(long, default_value = BENCHMARK_IDENTIFIER)]
        identifier: String,
    },
    /// Clients performing an echo action in a loop
    Perform {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 50)]
        clients: usize,
        #[arg(long, default_value = BENCHMARK_IDENTIFIER)]
        identifier: String,
        #[arg(long, default_value = "echo")]
        action: String,
        /// Performs each client keeps in flight (1: wait for each echo before the next perform)
        #[arg(long, default_value_t = 1)]
        pipeline: usize,
        /// Seconds
        #[arg(long, default_value_t = 10)]
        duration: u64,
    },
    /// Reading subscribers measured alone, then next to N subscribers that stopped reading (slow consumers)
    Stalled {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        broadcast: BroadcastArgs,
        /// Subscribers that stop reading right after their subscription is confirmed
        #[arg(long, default_value_t = 1000)]
        stalled: usize,
        /// Socket receive buffer of a stalled subscriber in bytes (small: the server finds out sooner); 0 leaves
        /// it to the kernel
        #[arg(long, default_value_t = 0)]
        stalled_receive_buffer: u32,
        /// TCP segment size a stalled subscriber announces, as a client across a network would (0: the loopback's
        /// own, 64 KiB, which lets the server's kernel buffer megabytes for each stalled socket)
        #[arg(long, default_value_t = 1448)]
        stalled_mss: u32,
        /// Seconds to wait after the measured round for the server to close the stalled connections
        #[arg(long, default_value_t = 20)]
        settle: u64,
        /// Pairs of rounds, without then with stalled subscribers (new ones each time); the report gives the median
        /// p95 ratio
        #[arg(long, default_value_t = 3)]
        repeats: usize,
    },
    /// A burst of publications in HTTP batches, as fast as the server takes them; checks order and memory
    Storm {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        storm: StormArgs,
    },
    /// Extended-protocol clients subscribe, lose their connections at once (TCP reset, no close frame), miss
    /// publications, and all reconnect with their sid: the time until each is restored and caught up, and what
    /// was missing or duplicated
    ReconnectStorm {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        streams: usize,
        /// Subscription identifier; `{stream}` is replaced by the stream name (bench_0, bench_1, ...)
        #[arg(long, default_value = PUBSUB_IDENTIFIER)]
        identifier: String,
        /// Publications per stream while the clients are away (at most the server's history limit)
        #[arg(long, default_value_t = 10)]
        missed: u64,
        /// Padding bytes per payload
        #[arg(long, default_value_t = 64)]
        payload: usize,
        #[arg(long, default_value = "http://127.0.0.1:8090/_broadcast")]
        broadcast_url: String,
        #[arg(long)]
        broadcast_key: Option<String>,
        /// Seconds the clients stay away
        #[arg(long, default_value_t = 2)]
        away: u64,
        /// Seconds the restored clients keep reading after the last one caught up (late duplicates)
        #[arg(long, default_value_t = 1)]
        grace: u64,
    },
    /// Unfinished requests against each listener (partial request heads and silent sockets) while a real client
    /// subscribes, receives broadcasts and new clients connect; reports time to close, descriptors held and the
    /// real client's round trips
    Attack {
        #[command(flatten)]
        common: Common,
        /// A listener to attack, host:port on loopback (repeatable; default: the --url's)
        #[arg(long = "listener")]
        listeners: Vec<std::net::SocketAddr>,
        /// Sockets per listener that send a request line and one header, then nothing
        #[arg(long, default_value_t = 500)]
        partial: usize,
        /// Sockets per listener that send nothing
        #[arg(long, default_value_t = 500)]
        silent: usize,
        /// Seconds an attacking socket is watched before it counts as never closed
        #[arg(long, default_value_t = 30)]
        watch: u64,
        /// Stream the real client subscribes to (as a public `$pubsub` stream unless --identifier is given)
        #[arg(long, default_value = "attack")]
        stream: String,
        #[arg(long)]
        identifier: Option<String>,
        #[arg(long, default_value = "http://127.0.0.1:8090/_broadcast")]
        broadcast_url: String,
        #[arg(long)]
        broadcast_key: Option<String>,
    },
    /// Starts the server (RPC mode) and the benchmark backend, and runs churn, steady broadcasts and backend
    /// restarts for a while; fails on loss, leaked files, memory growth or panics
    Soak(SoakArgs),
    /// Serve the benchmark channel as an AnyCable gRPC backend (and over HTTP RPC with --http-listen)
    Backend {
        #[arg(long, default_value = "127.0.0.1:50051")]
        listen: std::net::SocketAddr,
        /// Also answer AnyCable's HTTP RPC here (rpc_host=http://<this address>)
        #[arg(long)]
        http_listen: Option<std::net::SocketAddr>,
        /// HTTP broadcast endpoint the `broadcast` action publishes to
        #[arg(long)]
        broadcast_url: Option<String>,
        #[arg(long)]
        broadcast_key: Option<String>,
    },
}

#[derive(Args, Clone)]
struct BroadcastArgs {
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// Subscription identifier; `{stream}` is replaced by the stream name (bench_0, bench_1, ...)
    #[arg(long, default_value = PUBSUB_IDENTIFIER)]
    identifier: String,
    /// Publications per second, all publishers together
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Seconds of publishing
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Padding bytes per payload
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Concurrent publishers
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// `http` (POST to --broadcast-url) or `action` (clients perform {"action":"broadcast"})
    #[arg(long, default_value = "http")]
    via: String,
    #[arg(long, default_value = "http://127.0.0.1:8090/_broadcast")]
    broadcast_url: String,
    #[arg(long)]
    broadcast_key: Option<String>,
    /// Seconds to wait for stragglers after publishing
    #[arg(long, default_value_t = 5)]
    grace: u64,
}

#[derive(Args, Clone)]
struct StormArgs {
    #[arg(long, default_value_t = 40)]
    subscribers: usize,
    #[arg(long, default_value_t = 4)]
    streams: usize,
    /// Subscription identifier; `{stream}` is replaced by the stream name (bench_0, bench_1, ...)
    #[arg(long, default_value = PUBSUB_IDENTIFIER)]
    identifier: String,
    /// Publications in all
    #[arg(long, default_value_t = 100_000)]
    publications: u64,
    /// Publications per HTTP request
    #[arg(long, default_value_t = 1000)]
    batch: u64,
    /// Padding bytes per payload
    #[arg(long, default_value_t = 64)]
    payload: usize,
    #[arg(long, default_value = "http://127.0.0.1:8090/_broadcast")]
    broadcast_url: String,
    #[arg(long)]
    broadcast_key: Option<String>,
    /// Seconds to wait for stragglers after publishing
    #[arg(long, default_value_t = 10)]
    grace: u64,
}

#[derive(Args, Clone)]
struct SoakArgs {
    /// Seconds to run
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// The server binary (default: `ferrocable` next to this tool)
    #[arg(long)]
    server_bin: Option<std::path::PathBuf>,
    /// Extra server option, `--name=value` (repeatable)
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Clients connected for the whole run
    #[arg(long, default_value_t = 50)]
    stayers: usize,
    /// Clients connecting, subscribing, reading 0.2-2 s and leaving, over and over
    #[arg(long, default_value_t = 10)]
    churners: usize,
    #[arg(long, default_value_t = 4)]
    streams: usize,
    /// Broadcasts per second, all streams together
    #[arg(long, default_value_t = 40.0)]
    rate: f64,
    /// Seconds between backend restarts (0: never)
    #[arg(long, default_value_t = 15)]
    restart_every: u64,
    /// Seconds the backend stays down at each restart
    #[arg(long, default_value_t = 2)]
    backend_down: u64,
    /// Seconds between memory samples (0: one sample per 1/60 of the run, at least every second)
    #[arg(long, default_value_t = 0)]
    sample_every: u64,
    /// Largest accepted RSS growth over the second half of the run, KiB per minute
    #[arg(long, default_value_t = 1024.0)]
    max_rss_slope: f64,
    /// Directory for the server's and the backend's logs (default: a new one under the temp dir)
    #[arg(long)]
    log_dir: Option<std::path::PathBuf>,
    /// Print the result as JSON on stdout (the human summary goes to stderr)
    #[arg(long)]
    json: bool,
}

impl StormArgs {
    fn options(&self, common: &Common) -> pressure::StormOptions {
        pressure::StormOptions {
            subscribers: self.subscribers,
            streams: self.streams,
            identifier: self.identifier.clone(),
            publications: self.publications,
            batch: self.batch,
            payload_bytes: self.payload,
            broadcast_url: self.broadcast_url.clone(),
            broadcast_key: self.broadcast_key.clone(),
            concurrency: common.concurrency,
            grace: Duration::from_secs(self.grace),
        }
    }
}

impl SoakArgs {
    fn options(&self) -> anyhow::Result<soak::SoakOptions> {
        let server_bin = match &self.server_bin {
            Some(path) => path.clone(),
            None => std::env::current_exe()?.with_file_name("ferrocable"),
        };
        let sample_every = if self.sample_every > 0 { self.sample_every } else { (self.duration / 60).max(1) };
        let log_dir = self
            .log_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(format!("ferrocable-soak-{}", std::process::id())));
        Ok(soak::SoakOptions {
            duration: Duration::from_secs(self.duration),
            server_bin,
            server_args: self.server_args.clone(),
            stayers: self.stayers,
            churners: self.churners,
            streams: self.streams,
            rate: self.rate,
            restart_every: Duration::from_secs(self.restart_every),
            backend_down: Duration::from_secs(self.backend_down),
            sample_every: Duration::from_secs(sample_every),
            max_rss_slope: self.max_rss_slope,
            log_dir,
        })
    }
}

/// Raises the open files limit to its hard maximum.
fn raise_fd_limit() -> u64 {
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            return lim.rlim_cur;
        }
    }
    0
}

/// The publication path a `BroadcastArgs` asks for.
fn broadcast_options(b: &BroadcastArgs, common: &Common) -> anyhow::Result<BroadcastOptions> {
    let via = match b.via.as_str() {
        "http" => Via::Http { url: b.broadcast_url.clone(), key: b.broadcast_key.clone() },
        "action" => Via::Action,
        other => anyhow::bail!("--via must be http or action, not {other:?}"),
    };
    Ok(BroadcastOptions {
        subscribers: b.subscribers,
        streams: b.streams,
        identifier: b.identifier.clone(),
        rate: b.rate,
        duration: Duration::from_secs(b.duration),
        payload_bytes: b.payload,
        publishers: b.publishers,
        via,
        grace: Duration::from_secs(b.grace),
        concurrency: common.concurrency,
    })
}

fn target(common: &Common, connections: usize) -> anyhow::Result<client::Target> {
    let sources = if common.sources == 0 { connections / 25_000 + 1 } else { common.sources };
    let t = client::Target::new(&common.url, sources, common.cookie.clone(), Duration::from_secs(common.timeout))?;
    let encoding = match common.encoding.as_str() {
        "msgpack" => ferrocable::protocol::Encoding::Msgpack,
        "protobuf" => ferrocable::protocol::Encoding::Protobuf,
        _ => ferrocable::protocol::Encoding::Json,
    };
    Ok(t.with_protocol(common.extended, encoding))
}

fn emit<T: Serialize + std::fmt::Debug>(common: &Common, report: &T) -> anyhow::Result<()> {
    let pretty = serde_json::to_string_pretty(report)?;
    if common.json {
        println!("{pretty}");
    } else {
        eprintln!("{pretty}");
    }
    let value = serde_json::to_value(report)?;
    let saturated = |v: &serde_json::Value| v.pointer("/cpu/tool_saturated").and_then(|b| b.as_bool()).unwrap_or(false);
    if saturated(&value) || value.get("steps").and_then(|s| s.as_array()).is_some_and(|s| s.iter().any(saturated)) {
        eprintln!(
            "WARNING: the load tool used nearly all of its CPU: the numbers may measure the tool, not the server"
        );
    }
    Ok(())
}

/// The tool's allocations come from jemalloc, as the server's do: opening and closing thousands of clients a second
/// from one thread is allocation-heavy, and glibc's allocator spent a twentieth of the tool's core on it.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // The scenario runs as a task, on the runtime's workers: driven from the main thread instead, each of its
    // steps (a client done, a permit released) would wake a thread across cores, or through the scheduler on
    // the one core a pinned tool has.
    runtime.block_on(async { tokio::spawn(run(cli)).await? })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let limit = raise_fd_limit();
    match cli.command {
        Command::Idle { common, connections, identifier, hold, marginal } => {
            if limit > 0 && connections as u64 + 64 > limit {
                anyhow::bail!("{connections} connections need more than the open files limit ({limit}) allows");
            }
            let t = target(&common, connections)?;
            let report = scenarios::idle(
                &t,
                connections,
                common.concurrency,
                identifier,
                Duration::from_secs(hold),
                marginal,
                common.server_pid.as_deref(),
            )
            .await?;
            emit(&common, &report)
        }
        Command::Sse {
            common,
            events_url,
            clients,
            stream,
            hold,
            publications,
            rate,
            payload,
            broadcast_url,
            broadcast_key,
        } => {
            if limit > 0 && clients as u64 + 64 > limit {
                anyhow::bail!("{clients} clients need more than the open files limit ({limit}) allows");
            }
            let opts = sse::SseOptions {
                events_url,
                clients,
                concurrency: common.concurrency,
                stream,
                hold: Duration::from_secs(hold),
                publications,
                rate,
                payload,
                broadcast_url,
                broadcast_key,
                sources: common.sources,
                timeout: Duration::from_secs(common.timeout),
            };
            let report = sse::run(opts, common.server_pid.as_deref()).await?;
            emit(&common, &report)
        }
        Command::Broadcast { common, broadcast: b, step, max_subscribers, p95_limit } => {
            let opts = broadcast_options(&b, &common)?;
            let max = step.map(|_| max_subscribers).unwrap_or(b.subscribers);
            let t = target(&common, max)?;
            match step {
                None => {
                    let report = scenarios::broadcast(&t, &opts, common.server_pid.as_deref()).await?;
                    emit(&common, &report)
                }
                Some(step) => {
                    let report = scenarios::broadcast_steps(
                        &t,
                        &opts,
                        b.subscribers,
                        step,
                        max_subscribers,
                        p95_limit,
                        common.server_pid.as_deref(),
                    )
                    .await?;
                    emit(&common, &report)
                }
            }
        }
        Command::Attack {
            common,
            listeners,
            partial,
            silent,
            watch,
            stream,
            identifier,
            broadcast_url,
            broadcast_key,
        } => {
            let t = target(&common, 1)?;
            let listeners = if listeners.is_empty() { vec![t.addr] } else { listeners };
            if let Some(bad) = listeners.iter().find(|a| !a.ip().is_loopback()) {
                anyhow::bail!("attacks are only sent to loopback addresses, not {bad}");
            }
            let sockets = (listeners.len() * (partial + silent)) as u64;
            if limit > 0 && sockets + 256 > limit {
                anyhow::bail!("{sockets} sockets need more than the open files limit ({limit}) allows");
            }
            let identifier = identifier.unwrap_or_else(|| scenarios::identifier_for(PUBSUB_IDENTIFIER, &stream));
            let opts = attack::AttackOptions {
                listeners,
                partial,
                silent,
                watch: Duration::from_secs(watch),
                identifier,
                stream,
                broadcast_url,
                broadcast_key,
                concurrency: common.concurrency,
            };
            let report = attack::attack(&t, &opts, common.server_pid.as_deref()).await?;
            emit(&common, &report)
        }
        Command::Connect { common, clients, identifier } => {
            let t = target(&common, clients)?;
            let report =
                scenarios::connect(&t, clients, common.concurrency, identifier, common.server_pid.as_deref()).await?;
            emit(&common, &report)
        }
        Command::Perform { common, clients, identifier, action, pipeline, duration } => {
            let t = target(&common, clients)?;
            let report = scenarios::perform(
                &t,
                clients,
                common.concurrency,
                identifier,
                action,
                pipeline,
                Duration::from_secs(duration),
                common.server_pid.as_deref(),
            )
            .await?;
            emit(&common, &report)
        }
        Command::Stalled { common, broadcast: b, stalled, stalled_receive_buffer, stalled_mss, settle, repeats } => {
            let opts = pressure::StalledOptions {
                broadcast: broadcast_options(&b, &common)?,
                stalled,
                receive_buffer: stalled_receive_buffer,
                mss: stalled_mss,
                settle: Duration::from_secs(settle),
                repeats,
            };
            // Each round's stalled subscribers are gone before the next round's come.
            if limit > 0 && (b.subscribers + stalled) as u64 + 64 > limit {
                anyhow::bail!(
                    "{} connections need more than the open files limit ({limit}) allows",
                    b.subscribers + stalled
                );
            }
            let t = target(&common, b.subscribers + stalled)?;
            let report = pressure::stalled(&t, &opts, common.server_pid.as_deref()).await?;
            emit(&common, &report)
        }
        Command::Storm { common, storm } => {
            let t = target(&common, storm.subscribers)?;
            let report = pressure::storm(&t, &storm.options(&common), common.server_pid.as_deref()).await?;
            emit(&common, &report)
        }
        Command::ReconnectStorm {
            common,
            clients,
            streams,
            identifier,
            missed,
            payload,
            broadcast_url,
            broadcast_key,
            away,
            grace,
        } => {
            if limit > 0 && clients as u64 + 64 > limit {
                anyhow::bail!("{clients} connections need more than the open files limit ({limit}) allows");
            }
            let opts = recovery::ReconnectOptions {
                clients,
                streams,
                identifier,
                missed,
                payload_bytes: payload,
                broadcast_url,
                broadcast_key,
                concurrency: common.concurrency,
                away: Duration::from_secs(away),
                grace: Duration::from_secs(grace),
            };
            let t = target(&common, clients)?;
            let report = recovery::reconnect_storm(&t, &opts, common.server_pid.as_deref()).await?;
            emit(&common, &report)
        }
        Command::Soak(args) => {
            let report = soak::soak(&args.options()?).await?;
            let pretty = serde_json::to_string_pretty(&report)?;
            if args.json {
                println!("{pretty}");
            } else {
                eprintln!("{pretty}");
            }
            if !report.failures.is_empty() {
                eprintln!("soak failed:\n  {}", report.failures.join("\n  "));
                std::process::exit(1);
            }
            eprintln!("soak passed");
            Ok(())
        }
        Command::Backend { listen, http_listen, broadcast_url, broadcast_key } => {
            backend::serve(listen, http_listen, broadcast_url, broadcast_key).await
        }
    }
}
