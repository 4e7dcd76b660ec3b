//! Backpressure scenarios: `stalled` (subscribers that stop reading while others receive broadcasts) and
//! `storm` (a burst of publications in HTTP batches). Both read the server's memory from /proc while it is
//! under pressure; neither talks to anything but loopback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::StreamExt;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{HttpClient, Target, Ws};
use crate::scenarios::{
    self, Audience, BroadcastOptions, BroadcastReport, bench_data, error_summary, identifier_for, open_many, receive,
};
use crate::stats::{self, CpuReport, CpuWatch, PeakWatch, Percentiles, Progress};

/// Memory at the three moments of a scenario, in KiB.
#[derive(Debug, Serialize)]
pub struct MemoryFigures {
    pub before_kib: Option<u64>,
    /// The highest reading taken (every 250 ms or faster) while under pressure.
    pub peak_during_kib: Option<u64>,
    pub after_kib: Option<u64>,
}

// ---------------------------------------------------------------- stalled

#[derive(Debug, Clone)]
pub struct StalledOptions {
    pub broadcast: BroadcastOptions,
    /// Subscribers that confirm their subscription and never read again.
    pub stalled: usize,
    /// Socket receive buffer of a stalled subscriber, in bytes; 0 leaves it to the kernel.
    pub receive_buffer: u32,
    /// TCP segment size a stalled subscriber announces; 0 leaves it to the kernel.
    pub mss: u32,
    /// How long to wait, after the round with stalled subscribers, for the server to let them go.
    pub settle: Duration,
    /// Pairs of rounds (without, then with stalled subscribers).
    pub repeats: usize,
}

/// How the stalled subscribers' connections ended, as they saw it once they read again.
#[derive(Debug, Default, Serialize)]
pub struct StalledOutcome {
    /// The `too_slow` disconnect frame reached the client (only possible when its socket had room for it).
    pub told_too_slow: usize,
    /// The server closed the connection without a frame getting through: the socket was full.
    pub closed_without_frame: usize,
    pub still_connected: usize,
}

/// One pair of rounds: the reading subscribers alone, then next to a fresh set of stalled subscribers.
#[derive(Debug, Serialize)]
pub struct StalledRound {
    pub without_stalled: BroadcastReport,
    pub with_stalled: BroadcastReport,
    /// p95 of the reading subscribers with the stalled ones present, divided by p95 without them.
    pub p95_ratio: Option<f64>,
    pub stalled_connected: usize,
    pub stalled_connect_failures: usize,
    pub first_error: Option<String>,
    /// Seconds from the start of the round with stalled subscribers until the server had closed all of them.
    pub seconds_until_released: Option<f64>,
    pub stalled_outcome: StalledOutcome,
}

#[derive(Debug, Serialize)]
pub struct StalledReport {
    pub scenario: &'static str,
    pub stalled: usize,
    pub rounds: Vec<StalledRound>,
    /// The median of the rounds' p95 ratios: on a shared machine one pair of rounds can land on a busy moment.
    pub median_p95_ratio: Option<f64>,
    /// Before the first stalled subscribers came, the peak over every round with them, and after the last.
    pub server_rss: MemoryFigures,
    /// What the kernel holds in TCP socket buffers, machine-wide (mostly the stalled sockets' unsent bytes).
    pub tcp_kernel_memory: MemoryFigures,
    /// Open files of the server: before the stalled subscribers came, the most with them connected, and after the
    /// last round (the reading subscribers still connected).
    pub server_fds: [Option<usize>; 3],
}

/// Reading subscribers get broadcasts in pairs of rounds, `repeats` times: alone, then with `stalled` subscribers
/// on the same streams that stopped reading right after their confirmation (new ones each time).
pub async fn stalled(
    target: &Target,
    opts: &StalledOptions,
    server_pid: Option<&str>,
) -> anyhow::Result<StalledReport> {
    let progress = Arc::new(Progress::default());
    let ticker = stats::progress_line("stalled", progress.clone());
    let b = &opts.broadcast;
    let mut audience = Audience::new();
    audience.grow(target, b, b.subscribers, &progress).await;
    if audience.sockets.is_empty() {
        ticker.abort();
        bail!("no subscriber could connect: {}", error_summary(&audience.failures).unwrap_or_default());
    }
    let mut stalled_target = target.clone();
    stalled_target.receive_buffer = (opts.receive_buffer > 0).then_some(opts.receive_buffer);
    stalled_target.mss = (opts.mss > 0).then_some(opts.mss);
    let streams = b.streams.max(1);
    let template = b.identifier.clone();
    let id_of: Arc<dyn Fn(usize) -> String + Send + Sync> =
        Arc::new(move |n| identifier_for(&template, &format!("bench_{}", n % streams)));

    let fds_before = server_pid.and_then(stats::open_fds);
    let rss_before = server_pid.and_then(stats::rss_kib);
    let tcp_before = stats::tcp_kernel_memory_kib();
    let watch = PeakWatch::rss(server_pid, Duration::from_millis(250));
    let tcp_watch = PeakWatch::start(Duration::from_millis(250), stats::tcp_kernel_memory_kib);
    let mut fds_during = None;
    let mut rounds = Vec::new();
    for repeat in 0..opts.repeats.max(1) {
        eprintln!("[stalled] round {} without stalled subscribers", repeat + 1);
        let without_stalled = scenarios::broadcast_round(target, b, &mut audience, server_pid, &progress).await?;
        // Numbered after the reading subscribers, so they spread over the source addresses the same way.
        let first = b.subscribers + 1000 + repeat * opts.stalled;
        let (stalled, _, errors) =
            open_many(&stalled_target, first, opts.stalled, b.concurrency, Some(id_of.clone()), &progress).await;
        fds_during = fds_during.max(server_pid.and_then(stats::open_fds));
        eprintln!("[stalled] round {} with {} stalled subscribers", repeat + 1, stalled.len());
        // The server has let the stalled subscribers go once its open files are back to what they were without them,
        // plus the publishers' connections of the round.
        let round_started = Instant::now();
        let released = tokio::spawn({
            let pid = server_pid.map(str::to_owned);
            let publishers = b.publishers.max(1);
            async move {
                let (pid, before) = (pid?, fds_before?);
                loop {
                    if stats::open_fds(&pid).is_some_and(|n| n <= before + publishers) {
                        return Some(stats::round1(round_started.elapsed().as_secs_f64()));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        let with_stalled = scenarios::broadcast_round(target, b, &mut audience, server_pid, &progress).await?;
        let settle_until = Instant::now() + opts.settle;
        while !released.is_finished() && Instant::now() < settle_until {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        released.abort();
        let seconds_until_released = released.await.ok().flatten();
        let stalled_connected = stalled.len();
        let stalled_outcome = stalled_outcome(stalled).await;
        let p95_ratio = ratio(with_stalled.latency.p95_ms, without_stalled.latency.p95_ms);
        rounds.push(StalledRound {
            without_stalled,
            with_stalled,
            p95_ratio,
            stalled_connected,
            stalled_connect_failures: errors.len(),
            first_error: error_summary(&errors),
            seconds_until_released,
            stalled_outcome,
        });
    }
    let peak_during = watch.peak().await;
    let tcp_peak = tcp_watch.peak().await;
    let fds_after = server_pid.and_then(stats::open_fds);
    let rss_after = server_pid.and_then(stats::rss_kib);
    ticker.abort();
    audience.close().await;
    let mut ratios: Vec<f64> = rounds.iter().filter_map(|r| r.p95_ratio).collect();
    ratios.sort_by(f64::total_cmp);
    Ok(StalledReport {
        scenario: "stalled",
        stalled: opts.stalled,
        median_p95_ratio: ratios.get(ratios.len() / 2).copied(),
        rounds,
        server_rss: MemoryFigures { before_kib: rss_before, peak_during_kib: peak_during, after_kib: rss_after },
        tcp_kernel_memory: MemoryFigures {
            before_kib: tcp_before,
            peak_during_kib: tcp_peak,
            after_kib: stats::tcp_kernel_memory_kib(),
        },
        server_fds: [fds_before, fds_during, fds_after],
    })
}

/// `a / b` to two decimals, when `b` is not zero.
fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| (a / b * 100.0).round() / 100.0)
}

/// Lets every stalled subscriber read again and sorts out how its connection ended. What the server had
/// written before it let a connection go is read first: with a small receive buffer that takes a while.
async fn stalled_outcome(sockets: Vec<(usize, Ws)>) -> StalledOutcome {
    let mut set = JoinSet::new();
    for (_, mut ws) in sockets {
        set.spawn(async move {
            let mut told = false;
            let ended = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Text(t))) if t.contains("\"too_slow\"") => told = true,
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                        Some(Ok(_)) => {}
                    }
                }
            })
            .await
            .is_ok();
            (told, ended)
        });
    }
    let mut outcome = StalledOutcome::default();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((true, _)) => outcome.told_too_slow += 1,
            Ok((false, true)) => outcome.closed_without_frame += 1,
            _ => outcome.still_connected += 1,
        }
    }
    outcome
}

// ---------------------------------------------------------------- storm

#[derive(Debug, Clone)]
pub struct StormOptions {
    pub subscribers: usize,
    pub streams: usize,
    pub identifier: String,
    pub publications: u64,
    /// Publications per HTTP request.
    pub batch: u64,
    pub payload_bytes: usize,
    pub broadcast_url: String,
    pub broadcast_key: Option<String>,
    pub concurrency: usize,
    pub grace: Duration,
}

#[derive(Debug, Serialize)]
pub struct StormReport {
    pub scenario: &'static str,
    pub subscribers: usize,
    pub streams: usize,
    pub publications: u64,
    pub batch: u64,
    pub published: u64,
    pub publish_failures: u64,
    pub publish_seconds: f64,
    pub published_per_second: f64,
    pub expected_deliveries: u64,
    pub delivered: u64,
    pub missing: u64,
    pub out_of_order: u64,
    /// Subscribers the server disconnected during the storm (too slow to keep up).
    pub subscribers_cut_off: usize,
    pub latency: Percentiles,
    pub server_rss: MemoryFigures,
    /// `VmHWM`: the server's highest RSS since it started, which includes the storm.
    pub server_peak_rss_since_start_kib: Option<u64>,
    pub subscribe_failures: usize,
    pub first_error: Option<String>,
    pub cpu: CpuReport,
}

/// Publishes `publications` over the streams as fast as the server takes them, in HTTP batches (one publisher
/// per stream, so each stream's sequence numbers are accepted in order), and checks every delivery.
pub async fn storm(target: &Target, opts: &StormOptions, server_pid: Option<&str>) -> anyhow::Result<StormReport> {
    let progress = Arc::new(Progress::default());
    let ticker = stats::progress_line("storm", progress.clone());
    let streams = opts.streams.max(1);
    let audience_opts = BroadcastOptions {
        subscribers: opts.subscribers,
        streams,
        identifier: opts.identifier.clone(),
        rate: 1.0,
        duration: Duration::ZERO,
        payload_bytes: opts.payload_bytes,
        publishers: streams,
        via: scenarios::Via::Action,
        grace: opts.grace,
        concurrency: opts.concurrency,
    };
    let mut audience = Audience::new();
    audience.grow(target, &audience_opts, opts.subscribers, &progress).await;
    if audience.sockets.is_empty() {
        ticker.abort();
        bail!("no subscriber could connect: {}", error_summary(&audience.failures).unwrap_or_default());
    }
    let mut per_stream = vec![0u64; streams];
    for (n, _) in &audience.sockets {
        per_stream[n % streams] += 1;
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let mut receivers = JoinSet::new();
    for (_, ws) in audience.sockets.drain(..) {
        let (stop, progress) = (stop.clone(), progress.clone());
        // The publisher index of a frame is its stream's: sequence numbers count per stream.
        receivers.spawn(receive(ws, streams, target.protocol, stop, progress));
    }

    let rss_before = server_pid.and_then(stats::rss_kib);
    let watch = PeakWatch::rss(server_pid, Duration::from_millis(50));
    let cpu = CpuWatch::start(server_pid);
    let started = Instant::now();
    let pad = "x".repeat(opts.payload_bytes);
    let per_stream_count = opts.publications.div_ceil(streams as u64);
    let mut publishers = JoinSet::new();
    for s in 0..streams {
        let (url, key, pad, batch) = (opts.broadcast_url.clone(), opts.broadcast_key.clone(), pad.clone(), opts.batch);
        publishers.spawn(async move {
            let mut http = HttpClient::new(&url, key.as_deref())?;
            let stream = format!("bench_{s}");
            let (mut published, mut failed) = (0u64, 0u64);
            let mut seq = 1;
            while seq <= per_stream_count {
                let last = (seq + batch.max(1) - 1).min(per_stream_count);
                let batch: Vec<serde_json::Value> = (seq..=last)
                    .map(|n| serde_json::json!({"stream": stream, "data": bench_data(s, n, &pad)}))
                    .collect();
                let body = serde_json::to_string(&batch)?;
                match http.post(&body).await {
                    Ok(200 | 201) => published += last - seq + 1,
                    _ => failed += last - seq + 1,
                }
                seq = last + 1;
            }
            anyhow::Ok((s, published, failed))
        });
    }
    let (mut published, mut failures, mut expected) = (0, 0, 0);
    while let Some(joined) = publishers.join_next().await {
        let (s, ok, failed) = joined??;
        published += ok;
        failures += failed;
        expected += ok * per_stream[s];
    }
    let publish_seconds = started.elapsed().as_secs_f64();
    scenarios::settle(&progress, opts.grace).await;
    stop.cancel();
    let peak_during = watch.peak().await;
    let cpu = cpu.finish();
    let (mut samples, mut delivered, mut out_of_order, mut cut_off) = (Vec::new(), 0, 0, 0);
    while let Some(joined) = receivers.join_next().await {
        let (mut ws, r) = joined?;
        samples.extend(r.samples);
        delivered += r.received;
        out_of_order += r.out_of_order;
        cut_off += usize::from(r.closed);
        let _ = ws.close(None).await;
    }
    ticker.abort();
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(StormReport {
        scenario: "storm",
        subscribers: per_stream.iter().sum::<u64>() as usize,
        streams,
        publications: per_stream_count * streams as u64,
        batch: opts.batch,
        published,
        publish_failures: failures,
        publish_seconds: (publish_seconds * 100.0).round() / 100.0,
        published_per_second: stats::round1(published as f64 / publish_seconds.max(1e-9)),
        expected_deliveries: expected,
        delivered,
        missing: expected.saturating_sub(delivered),
        out_of_order,
        subscribers_cut_off: cut_off,
        latency: stats::percentiles(samples),
        server_rss: MemoryFigures {
            before_kib: rss_before,
            peak_during_kib: peak_during,
            after_kib: server_pid.and_then(stats::rss_kib),
        },
        server_peak_rss_since_start_kib: server_pid.and_then(stats::peak_rss_kib),
        subscribe_failures: audience.failures.len(),
        first_error: error_summary(&audience.failures),
        cpu,
    })
}
