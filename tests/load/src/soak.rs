//! The soak scenario: the `ferrocable` binary in RPC mode in front of the benchmark backend, both started and
//! owned here, run for a set time under client churn, steady broadcasts carrying sequence numbers, and periodic
//! backend restarts (kill, then start again). It reports the server's memory trend, its open files before and
//! after, the broadcasts lost by clients that stayed connected, and panics in the logs, and fails when one of
//! them is off.
//!
//! Broadcasts do not need the backend, so they keep flowing to connected clients while it is down; connects
//! and subscriptions need it, so churning clients fail during an outage. Loss is therefore counted for the
//! clients that stayed connected all along (every publication, none missing, in order), and for churning
//! clients only from their first delivery on (no gaps, in order).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures_util::StreamExt;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::client::{self, HttpClient, Target, Ws};
use crate::scenarios::{bench_data, int_field};
use crate::stats;

#[derive(Debug, Clone)]
pub struct SoakOptions {
    pub duration: Duration,
    /// The server binary under test.
    pub server_bin: PathBuf,
    /// Extra server options (`--name=value`).
    pub server_args: Vec<String>,
    /// Clients connected from start to end, each on one stream.
    pub stayers: usize,
    /// Clients that connect, subscribe, read a little and leave, over and over.
    pub churners: usize,
    pub streams: usize,
    /// Broadcasts per second, all streams together.
    pub rate: f64,
    /// Seconds between backend restarts; zero disables them.
    pub restart_every: Duration,
    /// How long the backend stays down at each restart.
    pub backend_down: Duration,
    pub sample_every: Duration,
    /// Largest accepted RSS slope over the second half of the run, KiB per minute.
    pub max_rss_slope: f64,
    /// Where the server's and the backend's logs go.
    pub log_dir: PathBuf,
}

#[derive(Debug, Default, Serialize)]
pub struct SoakReport {
    pub scenario: &'static str,
    pub seconds: f64,
    pub stayers: usize,
    pub churners: usize,
    pub streams: usize,
    pub published: u64,
    pub publish_failures: u64,
    /// Publications received by the clients that stayed connected, all of them together.
    pub stayers_received: u64,
    /// Publications a staying client should have received and did not (must be 0).
    pub stayers_lost: u64,
    pub stayers_out_of_order: u64,
    /// Staying clients whose connection ended before the run did (must be 0).
    pub stayers_disconnected: usize,
    pub churn_cycles: u64,
    /// Churning clients that could not connect or subscribe while the backend was down or coming back.
    pub churn_failures_during_outage: u64,
    /// Churning clients that could not connect or subscribe with the backend up (must be 0).
    pub churn_failures_otherwise: u64,
    pub churn_first_error: Option<String>,
    /// Missing or repeated sequence numbers after a churning client's first delivery (must be 0).
    pub churn_gaps: u64,
    pub backend_restarts: usize,
    /// Seconds from each backend start until a new client was served again.
    pub recovery_seconds: Vec<f64>,
    /// `(seconds since start, server RSS in KiB)`.
    pub rss_samples: Vec<(f64, u64)>,
    pub rss_slope_kib_per_min: Option<f64>,
    pub rss_slope_second_half_kib_per_min: Option<f64>,
    /// Open files of the server before the clients came, at the busiest sample, and after they left.
    pub fds_baseline: usize,
    pub fds_peak: usize,
    pub fds_end: usize,
    /// Lines with "panicked" in the server's and backend's logs (must be 0).
    pub panics: usize,
    pub server_exit: String,
    pub log_dir: String,
    /// Every criterion that failed; empty when the run passed.
    pub failures: Vec<String>,
}

/// A child process that is killed when dropped.
struct Owned(Child);

impl Owned {
    fn pid(&self) -> String {
        self.0.id().to_string()
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn log_file(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("{}", path.display()))
}

/// Waits until something listens on `port` (and the process is still alive).
async fn wait_listening(child: &mut Owned, port: u16, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        if let Some(status) = child.0.try_wait()? {
            bail!("{what} exited before listening: {status}");
        }
        if Instant::now() > deadline {
            bail!("{what} is not listening on port {port}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spawn_backend(port: u16, log: &Path) -> anyhow::Result<Owned> {
    let exe = std::env::current_exe()?;
    let child = Command::new(exe)
        .args(["backend", "--listen", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file(log)?)
        .spawn()
        .context("starting the benchmark backend")?;
    Ok(Owned(child))
}

fn spawn_server(opts: &SoakOptions, ports: (u16, u16, u16), log: &Path) -> anyhow::Result<Owned> {
    let (port, broadcast_port, backend_port) = ports;
    let mut command = Command::new(&opts.server_bin);
    // Only the options given here count: no ANYCABLE_* variable from the caller, no anycable.toml from its
    // directory.
    for (name, _) in std::env::vars() {
        if name.starts_with("ANYCABLE_") || name == "PORT" {
            command.env_remove(name);
        }
    }
    let child = command
        .current_dir(&opts.log_dir)
        .args([
            "--host=127.0.0.1".to_owned(),
            format!("--port={port}"),
            format!("--http_broadcast_port={broadcast_port}"),
            format!("--rpc_host=127.0.0.1:{backend_port}"),
            "--broadcast_key=none".to_owned(),
            "--shutdown_timeout=10".to_owned(),
        ])
        .args(&opts.server_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file(log)?)
        .spawn()
        .with_context(|| format!("starting {}", opts.server_bin.display()))?;
    Ok(Owned(child))
}

fn identifier(stream: usize) -> String {
    serde_json::json!({"channel": "BenchmarkChannel", "stream": format!("soak_{stream}")}).to_string()
}

/// What one client saw of the broadcasts of its stream.
#[derive(Default)]
struct Deliveries {
    received: u64,
    /// The next sequence number expected; 0 until the first delivery when any start is fine.
    next: u64,
    /// Sequence numbers skipped or repeated.
    gaps: u64,
    out_of_order: u64,
}

impl Deliveries {
    fn from_start() -> Self {
        Self { next: 1, ..Self::default() }
    }

    fn record(&mut self, seq: u64) {
        self.received += 1;
        if self.next != 0 && seq != self.next {
            if seq < self.next {
                self.out_of_order += 1;
            } else {
                self.gaps += seq - self.next;
            }
        }
        self.next = self.next.max(seq + 1);
    }
}

/// The sequence number of a benchmark broadcast frame.
fn seq_of(text: &str) -> Option<u64> {
    text.contains("\"seq\"").then(|| int_field(text, "\"seq\"")).flatten()
}

/// Reads a staying client until `stop`; also says whether it was still connected then.
async fn stay(mut ws: Ws, stop: CancellationToken) -> (Deliveries, bool) {
    let mut seen = Deliveries::from_start();
    loop {
        let message = tokio::select! {
            biased;
            m = ws.next() => m,
            () = stop.cancelled() => break,
        };
        match message {
            Some(Ok(Message::Text(t))) => {
                if let Some(seq) = seq_of(&t) {
                    seen.record(seq);
                }
            }
            Some(Ok(_)) => {}
            _ => return (seen, false),
        }
    }
    let _ = ws.close(None).await;
    (seen, true)
}

/// Shared counters of the churning clients.
#[derive(Default)]
struct Churn {
    cycles: AtomicU64,
    failures_during_outage: AtomicU64,
    failures_otherwise: AtomicU64,
    gaps: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

/// The backend's state as the churning clients and the restarter see it.
struct Backend {
    /// Set from the kill until [`RECOVERY_GRACE`] after the new process listens.
    outage: AtomicBool,
    restarts: std::sync::Mutex<Vec<f64>>,
}

/// How long after the backend is back failures still count as part of its outage: the server's gRPC client
/// finds out that the backend is back through its own reconnect backoff.
const RECOVERY_GRACE: Duration = Duration::from_secs(5);

async fn churn(target: Target, streams: usize, counters: Arc<Churn>, backend: Arc<Backend>, stop: CancellationToken) {
    let mut n = 0usize;
    while !stop.is_cancelled() {
        n += 1;
        let during_outage = backend.outage.load(Ordering::Acquire);
        let attempt = async {
            let mut ws = client::connect_welcomed(&target, n).await?;
            client::subscribe(&mut ws, &identifier(n % streams), &target).await?;
            anyhow::Ok(ws)
        }
        .await;
        let mut ws = match attempt {
            Ok(ws) => ws,
            Err(error) => {
                // Also an outage when it began while this attempt was under way.
                if during_outage || backend.outage.load(Ordering::Acquire) {
                    counters.failures_during_outage.fetch_add(1, Ordering::Relaxed);
                } else {
                    counters.failures_otherwise.fetch_add(1, Ordering::Relaxed);
                    let mut first = counters.first_error.lock().unwrap_or_else(|e| e.into_inner());
                    first.get_or_insert_with(|| format!("{error:#}"));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut seen = Deliveries::default();
        let stay_for = Duration::from_millis(200 + fastrand_like(n) % 1800);
        let _ = tokio::time::timeout(stay_for, async {
            while let Some(Ok(message)) = ws.next().await {
                if let Message::Text(t) = message
                    && let Some(seq) = seq_of(&t)
                {
                    seen.record(seq);
                }
            }
        })
        .await;
        let _ = ws.close(None).await;
        counters.gaps.fetch_add(seen.gaps + seen.out_of_order, Ordering::Relaxed);
        counters.cycles.fetch_add(1, Ordering::Relaxed);
    }
}

/// A cheap spread of stay times without a random number generator dependency.
fn fastrand_like(n: usize) -> u64 {
    (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40
}

/// Publishes to the streams in turn at `rate`, each stream counting its own sequence numbers from 1.
async fn publish(
    url: String,
    streams: usize,
    rate: f64,
    last: Arc<Vec<AtomicU64>>,
    failures: Arc<AtomicU64>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut http = HttpClient::new(&url, None)?;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut turn = 0usize;
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let stream = turn % streams;
        let seq = last[stream].load(Ordering::Acquire) + 1;
        let body = serde_json::json!({"stream": format!("soak_{stream}"), "data": bench_data(stream, seq, "")});
        match http.post(&body.to_string()).await {
            // Counted only once accepted; a failed one is sent again with the same number.
            Ok(200 | 201) => {
                last[stream].store(seq, Ordering::Release);
                turn += 1;
            }
            _ => {
                failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Sends SIGTERM and waits for the process to exit; describes how it ended.
async fn terminate(server: &mut Owned, within: Duration) -> String {
    // SAFETY: kill(2) on the pid of a child this process started and has not yet reaped.
    unsafe {
        libc::kill(server.0.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + within;
    loop {
        match server.0.try_wait() {
            Ok(Some(status)) if status.success() => return "exited 0 after SIGTERM".into(),
            Ok(Some(status)) => return format!("exited with {status} after SIGTERM"),
            Ok(None) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            Ok(None) => return format!("still running {within:?} after SIGTERM"),
            Err(e) => return format!("cannot wait for the server: {e}"),
        }
    }
}

fn count_panics(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|text| text.lines().filter(|l| l.contains("panicked")).count()).unwrap_or(0)
}

pub async fn soak(opts: &SoakOptions) -> anyhow::Result<SoakReport> {
    if !opts.server_bin.is_file() {
        bail!("server binary {} not found (build it, or pass --server-bin)", opts.server_bin.display());
    }
    std::fs::create_dir_all(&opts.log_dir)?;
    // Absolute, as the server runs in the log directory.
    let opts = &SoakOptions {
        server_bin: std::fs::canonicalize(&opts.server_bin)?,
        log_dir: std::fs::canonicalize(&opts.log_dir)?,
        ..opts.clone()
    };
    let (server_log, backend_log) = (opts.log_dir.join("server.log"), opts.log_dir.join("backend.log"));
    for log in [&server_log, &backend_log] {
        std::fs::write(log, "")?;
    }
    let streams = opts.streams.max(1);
    let ports = (free_port()?, free_port()?, free_port()?);
    let (port, broadcast_port, backend_port) = ports;
    let mut backend = spawn_backend(backend_port, &backend_log)?;
    wait_listening(&mut backend, backend_port, "the backend").await?;
    let mut server = spawn_server(opts, ports, &server_log)?;
    wait_listening(&mut server, port, "the server").await?;
    let pid = server.pid();
    let target = Target::new(&format!("ws://127.0.0.1:{port}/cable"), 1, None, Duration::from_secs(10))?;
    let broadcast_url = format!("http://127.0.0.1:{broadcast_port}/_broadcast");

    // Warm up the paths whose connections stay open (the server's gRPC channel), then take the baseline.
    let mut ws = client::connect_welcomed(&target, 0).await.context("first connection")?;
    client::subscribe(&mut ws, &identifier(0), &target).await.context("first subscription")?;
    let _ = ws.close(None).await;
    drop(ws);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let fds_baseline = stats::open_fds(&pid).ok_or_else(|| anyhow!("cannot read the server's open files"))?;

    let started = Instant::now();
    let stop = CancellationToken::new();
    let mut report = SoakReport {
        scenario: "soak",
        stayers: opts.stayers,
        churners: opts.churners,
        streams,
        fds_baseline,
        log_dir: opts.log_dir.display().to_string(),
        ..SoakReport::default()
    };

    let mut stayers = JoinSet::new();
    let stayers_stop = CancellationToken::new();
    for n in 0..opts.stayers {
        let mut ws = client::connect_welcomed(&target, n).await.context("a staying client")?;
        client::subscribe(&mut ws, &identifier(n % streams), &target).await.context("a staying client")?;
        let stop = stayers_stop.clone();
        stayers.spawn(async move { (n % streams, stay(ws, stop).await) });
    }

    let last: Arc<Vec<AtomicU64>> = Arc::new((0..streams).map(|_| AtomicU64::new(0)).collect());
    let publish_failures = Arc::new(AtomicU64::new(0));
    let publisher =
        tokio::spawn(publish(broadcast_url, streams, opts.rate, last.clone(), publish_failures.clone(), stop.clone()));

    let churn_counters = Arc::new(Churn::default());
    let backend_state = Arc::new(Backend { outage: AtomicBool::new(false), restarts: Default::default() });
    let mut churners = JoinSet::new();
    for c in 0..opts.churners {
        let mut t = target.clone();
        t.timeout = Duration::from_secs(5);
        let (counters, state, stop) = (churn_counters.clone(), backend_state.clone(), stop.clone());
        // Spread out, so the churners do not connect in lockstep.
        churners.spawn(async move {
            tokio::time::sleep(Duration::from_millis(37 * c as u64)).await;
            churn(t, streams, counters, state, stop).await
        });
    }

    // The restarter owns the backend process from here on.
    let restarter = {
        let (state, stop, every, down) = (backend_state.clone(), stop.clone(), opts.restart_every, opts.backend_down);
        let (log, probe_target) = (backend_log.clone(), target.clone());
        tokio::spawn(async move {
            let mut backend = backend;
            if every.is_zero() {
                stop.cancelled().await;
                return anyhow::Ok(backend);
            }
            let mut probe = 1_000_000usize;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return Ok(backend),
                    () = tokio::time::sleep(every) => {}
                }
                state.outage.store(true, Ordering::Release);
                drop(backend);
                tokio::time::sleep(down).await;
                backend = spawn_backend(backend_port, &log)?;
                wait_listening(&mut backend, backend_port, "the restarted backend").await?;
                let back = Instant::now();
                // Served again once a new client gets through Connect and a subscription.
                let recovered = loop {
                    probe += 1;
                    let attempt = async {
                        let mut ws = client::connect_welcomed(&probe_target, probe).await?;
                        client::subscribe(&mut ws, &identifier(0), &probe_target).await?;
                        let _ = ws.close(None).await;
                        anyhow::Ok(())
                    };
                    if attempt.await.is_ok() {
                        break Some(back.elapsed());
                    }
                    if back.elapsed() > Duration::from_secs(30) {
                        break None;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                };
                let grace_left = RECOVERY_GRACE.saturating_sub(back.elapsed());
                tokio::time::sleep(grace_left).await;
                state.outage.store(false, Ordering::Release);
                let seconds = recovered.map(|d| stats::round1(d.as_secs_f64() * 10.0) / 10.0).unwrap_or(-1.0);
                state.restarts.lock().unwrap_or_else(|e| e.into_inner()).push(seconds);
            }
        })
    };

    // Samples until the end of the run.
    let mut fds_peak = fds_baseline;
    let mut next_sample = Instant::now();
    while started.elapsed() < opts.duration {
        if Instant::now() >= next_sample {
            if let Some(rss) = stats::rss_kib(&pid) {
                report.rss_samples.push((stats::round1(started.elapsed().as_secs_f64()), rss));
            }
            fds_peak = fds_peak.max(stats::open_fds(&pid).unwrap_or(0));
            eprintln!(
                "[soak] {:>6.0}s rss={}KiB fds={} churn={} restarts={}",
                started.elapsed().as_secs_f64(),
                report.rss_samples.last().map(|s| s.1).unwrap_or(0),
                stats::open_fds(&pid).unwrap_or(0),
                churn_counters.cycles.load(Ordering::Relaxed),
                backend_state.restarts.lock().map(|r| r.len()).unwrap_or(0),
            );
            next_sample += opts.sample_every;
        }
        if let Ok(Some(status)) = server.0.try_wait() {
            bail!("the server exited during the run: {status}; see {}", server_log.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Stop the load, let the last broadcasts arrive, then let the staying clients go.
    stop.cancel();
    while let Some(joined) = churners.join_next().await {
        joined?;
    }
    publisher.await??;
    let backend = restarter.await??;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stayers_stop.cancel();
    let published: Vec<u64> = last.iter().map(|a| a.load(Ordering::Acquire)).collect();
    while let Some(joined) = stayers.join_next().await {
        let (stream, (seen, stayed)) = joined?;
        report.stayers_received += seen.received;
        report.stayers_out_of_order += seen.out_of_order;
        // Everything up to the last publication of its stream, nothing skipped.
        report.stayers_lost += seen.gaps + published[stream].saturating_sub(seen.next.saturating_sub(1));
        report.stayers_disconnected += usize::from(!stayed);
    }
    report.published = published.iter().sum();
    report.publish_failures = publish_failures.load(Ordering::Relaxed);
    report.churn_cycles = churn_counters.cycles.load(Ordering::Relaxed);
    report.churn_failures_during_outage = churn_counters.failures_during_outage.load(Ordering::Relaxed);
    report.churn_failures_otherwise = churn_counters.failures_otherwise.load(Ordering::Relaxed);
    report.churn_first_error = churn_counters.first_error.lock().map(|e| e.clone()).unwrap_or_default();
    report.churn_gaps = churn_counters.gaps.load(Ordering::Relaxed);
    report.recovery_seconds = backend_state.restarts.lock().map(|r| r.clone()).unwrap_or_default();
    report.backend_restarts = report.recovery_seconds.len();

    // The clients are gone once the server's open files are back at the baseline.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        report.fds_end = stats::open_fds(&pid).unwrap_or(usize::MAX);
        if report.fds_end <= fds_baseline || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Some(rss) = stats::rss_kib(&pid) {
        report.rss_samples.push((stats::round1(started.elapsed().as_secs_f64()), rss));
    }
    report.seconds = stats::round1(started.elapsed().as_secs_f64());
    report.fds_peak = fds_peak;
    report.rss_slope_kib_per_min = stats::slope_kib_per_min(&report.rss_samples);
    let half = opts.duration.as_secs_f64() / 2.0;
    let second_half: Vec<(f64, u64)> = report.rss_samples.iter().copied().filter(|(t, _)| *t >= half).collect();
    report.rss_slope_second_half_kib_per_min = stats::slope_kib_per_min(&second_half);
    report.server_exit = terminate(&mut server, Duration::from_secs(15)).await;
    drop(backend);
    report.panics = count_panics(&server_log) + count_panics(&backend_log);

    let failures = &mut report.failures;
    if report.stayers_lost > 0 || report.stayers_out_of_order > 0 {
        failures.push(format!(
            "staying clients lost {} and reordered {} publications",
            report.stayers_lost, report.stayers_out_of_order
        ));
    }
    if report.stayers_disconnected > 0 {
        failures.push(format!("{} staying clients were disconnected", report.stayers_disconnected));
    }
    if report.churn_gaps > 0 {
        failures.push(format!("churning clients saw {} gaps after their first delivery", report.churn_gaps));
    }
    if report.churn_failures_otherwise > 0 {
        failures.push(format!(
            "{} churning clients failed with the backend up: {}",
            report.churn_failures_otherwise,
            report.churn_first_error.as_deref().unwrap_or("")
        ));
    }
    if report.recovery_seconds.iter().any(|s| *s < 0.0) {
        failures.push("the server did not serve new clients within 30 s of a backend restart".into());
    }
    if report.published == 0 || report.stayers_received == 0 {
        failures.push("nothing was published or received".into());
    }
    if report.fds_end > fds_baseline {
        failures.push(format!("open files {} at the end, {} at the start", report.fds_end, fds_baseline));
    }
    if let Some(slope) = report.rss_slope_second_half_kib_per_min.filter(|s| *s > opts.max_rss_slope) {
        failures.push(format!("RSS grew {slope} KiB/min over the second half (limit {})", opts.max_rss_slope));
    }
    if report.panics > 0 {
        failures.push(format!("{} panics in the logs", report.panics));
    }
    if report.server_exit != "exited 0 after SIGTERM" {
        failures.push(format!("server {}", report.server_exit));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_count_gaps_and_reordering() {
        let mut from_start = Deliveries::from_start();
        for seq in [1, 2, 4, 5, 5, 3, 6] {
            from_start.record(seq);
        }
        assert_eq!((from_start.received, from_start.gaps, from_start.out_of_order, from_start.next), (7, 1, 2, 7));

        // A churning client starts wherever its subscription caught the stream.
        let mut late = Deliveries::default();
        for seq in [40, 41, 42] {
            late.record(seq);
        }
        assert_eq!((late.gaps, late.out_of_order, late.next), (0, 0, 43));
    }

    #[test]
    fn panics_are_counted_from_the_log() {
        let path = std::env::temp_dir().join(format!("soak-panics-{}.log", std::process::id()));
        std::fs::write(&path, "INFO started\nthread 'tokio-runtime-worker' panicked at core/src/hub.rs:1:1:\nok\n")
            .unwrap();
        assert_eq!(count_panics(&path), 1);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(count_panics(&path), 0, "no log, nothing counted");
    }
}
