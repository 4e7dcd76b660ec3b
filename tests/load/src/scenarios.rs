//! The scenarios: idle, broadcast (and its step mode), connect, perform. The backpressure scenarios are in
//! `pressure.rs`, the soak in `soak.rs`.
//!
//! Every scenario is bounded in connections and time and only talks to loopback addresses.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Frame, HttpClient, Target, Ws};
use crate::stats::{self, CpuReport, CpuWatch, Percentiles, Progress};

/// `{stream}` in an identifier template is replaced by the stream name.
pub fn identifier_for(template: &str, stream: &str) -> String {
    template.replace("{stream}", stream)
}

/// Opens `count` connections (`first` is the index of the first, for source address spreading), `concurrency`
/// at a time; each waits for welcome and, when `identifier_of` is given, for its subscription confirmation.
/// Returns the sockets, the per-connection latencies (µs) and the failures.
pub async fn open_many(
    target: &Target,
    first: usize,
    count: usize,
    concurrency: usize,
    identifier_of: Option<Arc<dyn Fn(usize) -> String + Send + Sync>>,
    progress: &Arc<Progress>,
) -> (Vec<(usize, Ws)>, Vec<u32>, Vec<String>) {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut set = JoinSet::new();
    for n in first..first + count {
        let permit = permits.clone().acquire_owned().await.expect("semaphore is never closed");
        let target = target.clone();
        let identifier_of = identifier_of.clone();
        let progress = progress.clone();
        set.spawn(async move {
            let _permit = permit;
            let started = Instant::now();
            let result = async {
                let mut ws = client::connect_welcomed(&target, n).await?;
                if let Some(id) = identifier_of {
                    client::subscribe(&mut ws, &id(n), &target).await?;
                }
                anyhow::Ok(ws)
            }
            .await;
            match &result {
                Ok(_) => Progress::add(&progress.connected, 1),
                Err(_) => Progress::add(&progress.errors, 1),
            }
            (n, started.elapsed().as_micros() as u32, result)
        });
    }
    let mut sockets = Vec::with_capacity(count);
    let mut latencies = Vec::with_capacity(count);
    let mut errors = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((n, micros, Ok(ws))) => {
                sockets.push((n, ws));
                latencies.push(micros);
            }
            Ok((_, _, Err(e))) => errors.push(format!("{e:#}")),
            Err(e) => errors.push(e.to_string()),
        }
    }
    (sockets, latencies, errors)
}

pub(crate) fn error_summary(errors: &[String]) -> Option<String> {
    errors.first().map(|e| format!("{} failures, first: {e}", errors.len()))
}

// ---------------------------------------------------------------- idle

#[derive(Debug, Serialize)]
pub struct IdleReport {
    pub scenario: &'static str,
    pub connections: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    pub connect_seconds: f64,
    pub connects_per_second: f64,
    pub connect_latency: Percentiles,
    pub server_rss_before_kib: Option<u64>,
    pub server_rss_after_kib: Option<u64>,
    /// The RSS growth over every connection held.
    pub rss_per_connection_bytes: Option<f64>,
    /// With `--marginal`: the RSS once the first half has been held for `--hold` seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_rss_half_kib: Option<u64>,
    /// With `--marginal`: the RSS growth over the second half only, that is what one more connection costs
    /// once the server holds the first half (its pools, heaps and threads warmed up by them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_per_added_connection_bytes: Option<f64>,
    pub cpu: CpuReport,
}

/// Connects `connections` clients (optionally subscribed), holds them `hold` seconds and reads the server's
/// RSS before and after. With `marginal`, the clients connect in two halves and the RSS is read after each
/// half has been held: the second half's growth is the cost of an added connection.
pub async fn idle(
    target: &Target,
    connections: usize,
    concurrency: usize,
    identifier: Option<String>,
    hold: Duration,
    marginal: bool,
    server_pid: Option<&str>,
) -> anyhow::Result<IdleReport> {
    let progress = Arc::new(Progress::default());
    let ticker = stats::progress_line("idle", progress.clone());
    let rss = || server_pid.and_then(stats::rss_kib);
    let before = rss();
    let cpu = CpuWatch::start(server_pid);
    let id_of: Option<Arc<dyn Fn(usize) -> String + Send + Sync>> = identifier.map(|id| {
        let f: Arc<dyn Fn(usize) -> String + Send + Sync> = Arc::new(move |_| id.clone());
        f
    });
    let waves = if marginal {
        vec![(0, connections / 2), (connections / 2, connections - connections / 2)]
    } else {
        vec![(0, connections)]
    };
    // Keep the sockets read so pings do not pile up, while the server settles.
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = JoinSet::new();
    let (mut latencies, mut errors, mut connect_seconds) = (Vec::new(), Vec::new(), 0.0);
    // Per wave: the connections it opened and the RSS once they had been held.
    let mut readings: Vec<(usize, Option<u64>)> = Vec::new();
    for (first, count) in waves {
        let started = Instant::now();
        let (mut sockets, wave_latencies, wave_errors) =
            open_many(target, first, count, concurrency, id_of.clone(), &progress).await;
        connect_seconds += started.elapsed().as_secs_f64();
        let opened = wave_latencies.len();
        latencies.extend(wave_latencies);
        errors.extend(wave_errors);
        for (_, mut ws) in sockets.drain(..) {
            let stop = stop.clone();
            readers.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match tokio::time::timeout(Duration::from_millis(500), ws.next()).await {
                        Ok(Some(Ok(_))) | Err(_) => {}
                        _ => return None,
                    }
                }
                Some(ws)
            });
        }
        tokio::time::sleep(hold).await;
        readings.push((opened, rss()));
    }
    let after = readings.last().and_then(|(_, kib)| *kib);
    let cpu = cpu.finish();
    stop.store(true, Ordering::Relaxed);
    while let Some(joined) = readers.join_next().await {
        if let Ok(Some(mut ws)) = joined {
            let _ = ws.close(None).await;
        }
    }
    ticker.abort();
    let ok = latencies.len();
    let per_connection = |from: Option<u64>, to: Option<u64>, count: usize| match (from, to) {
        (Some(b), Some(a)) if count > 0 => Some(stats::round1((a as f64 - b as f64) * 1024.0 / count as f64)),
        _ => None,
    };
    let (half, added) = match readings.as_slice() {
        [(_, half), (added, _)] => (*half, *added),
        _ => (None, 0),
    };
    Ok(IdleReport {
        scenario: "idle",
        connections: ok,
        failed: errors.len(),
        first_error: error_summary(&errors),
        connect_seconds: stats::round1(connect_seconds * 10.0) / 10.0,
        connects_per_second: stats::round1(ok as f64 / connect_seconds.max(1e-9)),
        connect_latency: stats::percentiles(latencies),
        server_rss_before_kib: before,
        server_rss_after_kib: after,
        rss_per_connection_bytes: per_connection(before, after, ok),
        server_rss_half_kib: half,
        rss_per_added_connection_bytes: per_connection(half, after, added),
        cpu,
    })
}

// ---------------------------------------------------------------- broadcast

/// How publications are sent.
#[derive(Debug, Clone)]
pub enum Via {
    /// `POST` to an HTTP broadcast endpoint.
    Http { url: String, key: Option<String> },
    /// A client performs `{"action":"broadcast",...}` and the application broadcasts it.
    Action,
}

#[derive(Debug, Clone)]
pub struct BroadcastOptions {
    pub subscribers: usize,
    pub streams: usize,
    pub identifier: String,
    pub rate: f64,
    pub duration: Duration,
    pub payload_bytes: usize,
    pub publishers: usize,
    pub via: Via,
    pub grace: Duration,
    pub concurrency: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct BroadcastReport {
    pub scenario: &'static str,
    pub subscribers: usize,
    pub streams: usize,
    pub publishers: usize,
    pub published: u64,
    pub publish_failures: u64,
    pub expected_deliveries: u64,
    pub delivered: u64,
    pub missing: u64,
    pub out_of_order: u64,
    /// The sub-protocol the subscribers spoke.
    pub protocol: &'static str,
    /// Extended protocol: deliveries without a stream position, and deliveries whose offset did not rise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub without_position: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offsets_out_of_order: Option<u64>,
    pub delivered_per_second: f64,
    pub latency: Percentiles,
    pub subscribe_failures: usize,
    pub first_error: Option<String>,
    /// Average size of a delivered benchmark frame on the wire (payload bytes, in the protocol's encoding).
    pub frame_bytes: f64,
    /// Server CPU time per delivered frame, in microseconds (with --server-pid).
    pub server_cpu_us_per_delivery: Option<f64>,
    pub cpu: CpuReport,
}

#[derive(Deserialize)]
struct BenchPayload {
    seq: u64,
}

pub(crate) struct ReceiverResult {
    pub samples: Vec<u32>,
    pub received: u64,
    pub out_of_order: u64,
    /// Extended protocol: benchmark frames without a stream position (`stream_id` and `offset`).
    pub without_position: u64,
    /// Extended protocol: benchmark frames whose offset was not above the previous frame's.
    pub offsets_out_of_order: u64,
    /// The server closed the connection before the scenario stopped reading.
    pub closed: bool,
    /// Payload bytes of the benchmark frames received (their size on the wire, in the protocol's encoding).
    pub bytes: u64,
}

/// Pulls an unsigned integer field (`"name":123`) out of a frame without parsing the whole JSON: the receive
/// path must stay cheap so the tool, not the server, is never what limits a run.
pub(crate) fn int_field(text: &str, name: &str) -> Option<u64> {
    let at = text.find(name)? + name.len();
    let digits: &str = text[at..].trim_start_matches([' ', ':']);
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// Reads one subscriber's frames until `stop`, timing every benchmark message. In the extended `protocol` (a
/// subscriber of one stream) every benchmark frame must also carry its stream position, the offsets rising.
/// Binary frames are read as the JSON they stand for, after their size on the wire is counted.
pub(crate) async fn receive(
    mut ws: Ws,
    publishers: usize,
    protocol: &'static str,
    stop: tokio_util::sync::CancellationToken,
    progress: Arc<Progress>,
) -> (Ws, ReceiverResult) {
    let extended = ferrocable::protocol::Protocol::from_name(Some(protocol)).is_extended();
    let mut last = vec![0u64; publishers];
    let mut last_offset = 0u64;
    let mut result = ReceiverResult {
        samples: Vec::new(),
        received: 0,
        out_of_order: 0,
        without_position: 0,
        offsets_out_of_order: 0,
        closed: false,
        bytes: 0,
    };
    loop {
        let msg = tokio::select! {
            biased;
            m = ws.next() => m,
            () = stop.cancelled() => break,
        };
        let (text, wire_bytes) = match msg {
            Some(Ok(Message::Text(t))) => {
                let len = t.len();
                (t, len)
            }
            Some(Ok(Message::Binary(b))) => match client::binary_as_json(protocol, &b) {
                Ok(t) => (t, b.len()),
                Err(_) => continue,
            },
            Some(Ok(_)) => continue,
            _ => {
                result.closed = true;
                break;
            }
        };
        if !text.contains("\"seq\"") {
            continue;
        }
        result.bytes += wire_bytes as u64;
        let (Some(seq), Some(ts), Some(p)) =
            (int_field(&text, "\"seq\""), int_field(&text, "\"ts\""), int_field(&text, "\"p\""))
        else {
            continue;
        };
        let now = stats::now_micros();
        result.samples.push(now.saturating_sub(ts).min(u32::MAX as u64) as u32);
        result.received += 1;
        if let Some(prev) = last.get_mut(p as usize) {
            if seq <= *prev {
                result.out_of_order += 1;
            }
            *prev = seq;
        }
        if extended {
            match (text.contains("\"stream_id\""), int_field(&text, "\"offset\"")) {
                (true, Some(offset)) => {
                    if offset <= last_offset {
                        result.offsets_out_of_order += 1;
                    }
                    last_offset = offset;
                }
                _ => result.without_position += 1,
            }
        }
        Progress::add(&progress.delivered, 1);
    }
    (ws, result)
}

#[cfg(test)]
mod tests {
    use super::int_field;

    #[test]
    fn int_field_reads_numbers_after_a_key() {
        let frame = r#"{"identifier":"x","message":{"seq":12,"ts": 1700000000123456,"p":3,"pad":"xx"}}"#;
        assert_eq!(int_field(frame, "\"seq\""), Some(12));
        assert_eq!(int_field(frame, "\"ts\""), Some(1_700_000_000_123_456));
        assert_eq!(int_field(frame, "\"p\""), Some(3));
        assert_eq!(int_field(frame, "\"nope\""), None);
    }
}

pub(crate) fn bench_data(p: usize, seq: u64, pad: &str) -> String {
    format!(r#"{{"seq":{seq},"ts":{},"p":{p},"pad":"{pad}"}}"#, stats::now_micros())
}

/// Subscribers connected for a broadcast run, kept across step-mode rounds.
pub struct Audience {
    pub(crate) sockets: Vec<(usize, Ws)>,
    pub(crate) failures: Vec<String>,
}

impl Audience {
    pub fn new() -> Self {
        Self { sockets: Vec::new(), failures: Vec::new() }
    }

    /// Connects more subscribers up to `total`.
    pub async fn grow(&mut self, target: &Target, opts: &BroadcastOptions, total: usize, progress: &Arc<Progress>) {
        let have = self.sockets.len() + self.failures.len();
        if total <= have {
            return;
        }
        let streams = opts.streams.max(1);
        let template = opts.identifier.clone();
        let id_of: Arc<dyn Fn(usize) -> String + Send + Sync> =
            Arc::new(move |n| identifier_for(&template, &format!("bench_{}", n % streams)));
        let (sockets, _, errors) = open_many(target, have, total - have, opts.concurrency, Some(id_of), progress).await;
        self.sockets.extend(sockets);
        self.failures.extend(errors);
    }

    pub async fn close(self) {
        for (_, mut ws) in self.sockets {
            let _ = ws.close(None).await;
        }
    }
}

/// One broadcast measurement over the current audience.
pub async fn broadcast_round(
    target: &Target,
    opts: &BroadcastOptions,
    audience: &mut Audience,
    server_pid: Option<&str>,
    progress: &Arc<Progress>,
) -> anyhow::Result<BroadcastReport> {
    let streams = opts.streams.max(1);
    let publishers = opts.publishers.max(1);
    let mut per_stream = vec![0u64; streams];
    for (n, _) in &audience.sockets {
        per_stream[n % streams] += 1;
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let mut receivers = JoinSet::new();
    for (n, ws) in audience.sockets.drain(..) {
        let (stop, progress) = (stop.clone(), progress.clone());
        let protocol = target.protocol;
        receivers.spawn(async move { (n, receive(ws, publishers, protocol, stop, progress).await) });
    }

    // Action publishers are extra connections subscribed like everyone else; their deliveries are not counted.
    let mut action_sockets = Vec::new();
    if let Via::Action = opts.via {
        for p in 0..publishers {
            let mut ws = client::connect_welcomed(target, 60_000 + p).await.context("publisher connection")?;
            let identifier = identifier_for(&opts.identifier, &format!("bench_{}", p % streams));
            client::subscribe(&mut ws, &identifier, target).await?;
            action_sockets.push((identifier, ws));
        }
    }

    let cpu = CpuWatch::start(server_pid);
    let started = Instant::now();
    let pad = "x".repeat(opts.payload_bytes);
    let per_publisher_rate = (opts.rate / publishers as f64).max(0.001);
    let total_per_publisher = ((opts.rate * opts.duration.as_secs_f64()) / publishers as f64).ceil().max(1.0) as u64;
    let mut pubs = JoinSet::new();
    for p in 0..publishers {
        let via = opts.via.clone();
        let pad = pad.clone();
        let mut action = action_sockets.pop();
        pubs.spawn(async move {
            let mut http = match &via {
                Via::Http { url, key } => Some(HttpClient::new(url, key.as_deref())?),
                Via::Action => None,
            };
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_publisher_rate));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut sent = Vec::new(); // (stream index, ok)
            for seq in 1..=total_per_publisher {
                tick.tick().await;
                let stream_idx = (p + (seq as usize) * publishers) % streams;
                let data = bench_data(p, seq, &pad);
                let ok = match (&mut http, &mut action) {
                    (Some(http), _) => {
                        let body =
                            serde_json::json!({"stream": format!("bench_{stream_idx}"), "data": data}).to_string();
                        matches!(http.post(&body).await, Ok(201) | Ok(200))
                    }
                    (None, Some((identifier, ws))) => {
                        let mut obj: serde_json::Value = serde_json::from_str(&data)?;
                        obj["action"] = "broadcast".into();
                        let cmd =
                            serde_json::json!({"command":"message","identifier":identifier,"data":obj.to_string()});
                        let sent = ws.send(Message::Text(cmd.to_string().into())).await.is_ok();
                        // Drain what the publisher connection receives so it never becomes a slow client.
                        while let Ok(Some(_)) = tokio::time::timeout(Duration::ZERO, ws.next()).await {}
                        sent
                    }
                    (None, None) => false,
                };
                sent.push((if matches!(via, Via::Action) { p % streams } else { stream_idx }, ok));
            }
            anyhow::Ok((sent, action))
        });
    }
    let mut published = 0u64;
    let mut failures = 0u64;
    let mut expected = 0u64;
    while let Some(joined) = pubs.join_next().await {
        let (sent, action) = joined??;
        for (stream_idx, ok) in sent {
            if ok {
                published += 1;
                expected += per_stream[stream_idx];
            } else {
                failures += 1;
            }
        }
        if let Some((_, mut ws)) = action {
            let _ = ws.close(None).await;
        }
    }
    settle(progress, opts.grace).await;
    let elapsed = started.elapsed().saturating_sub(Duration::from_millis(500)).max(Duration::from_millis(1));
    stop.cancel();
    let mut samples = Vec::new();
    let mut delivered = 0;
    let mut out_of_order = 0;
    let (mut without_position, mut offsets_out_of_order) = (0, 0);
    let mut bytes = 0;
    while let Some(joined) = receivers.join_next().await {
        let (n, (ws, r)) = joined?;
        samples.extend(r.samples);
        delivered += r.received;
        bytes += r.bytes;
        out_of_order += r.out_of_order;
        without_position += r.without_position;
        offsets_out_of_order += r.offsets_out_of_order;
        audience.sockets.push((n, ws));
    }
    let cpu_seconds = started.elapsed().as_secs_f64();
    let cpu = cpu.finish();
    let server_cpu_us_per_delivery = stats::server_cpu_us_per(&cpu, cpu_seconds, delivered as usize);
    Ok(BroadcastReport {
        scenario: "broadcast",
        subscribers: audience.sockets.len(),
        streams,
        publishers,
        published,
        publish_failures: failures,
        expected_deliveries: expected,
        delivered,
        missing: expected.saturating_sub(delivered),
        out_of_order,
        protocol: target.protocol,
        without_position: target.is_extended().then_some(without_position),
        offsets_out_of_order: target.is_extended().then_some(offsets_out_of_order),
        delivered_per_second: stats::round1(delivered as f64 / elapsed.as_secs_f64()),
        latency: stats::percentiles(samples),
        subscribe_failures: audience.failures.len(),
        first_error: error_summary(&audience.failures),
        frame_bytes: if delivered > 0 { stats::round1(bytes as f64 / delivered as f64) } else { 0.0 },
        server_cpu_us_per_delivery,
        cpu,
    })
}

/// Waits for deliveries to settle: until none arrived for 500 ms, or the grace period passed.
pub(crate) async fn settle(progress: &Progress, grace: Duration) {
    let settle_deadline = Instant::now() + grace;
    let mut last_seen = Progress::get(&progress.delivered);
    let mut quiet_since = Instant::now();
    while Instant::now() < settle_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let seen = Progress::get(&progress.delivered);
        if seen != last_seen {
            last_seen = seen;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() > Duration::from_millis(500) {
            break;
        }
    }
}

pub async fn broadcast(
    target: &Target,
    opts: &BroadcastOptions,
    server_pid: Option<&str>,
) -> anyhow::Result<BroadcastReport> {
    let progress = Arc::new(Progress::default());
    let ticker = stats::progress_line("broadcast", progress.clone());
    let mut audience = Audience::new();
    audience.grow(target, opts, opts.subscribers, &progress).await;
    if audience.sockets.is_empty() {
        ticker.abort();
        bail!("no subscriber could connect: {}", error_summary(&audience.failures).unwrap_or_default());
    }
    let report = broadcast_round(target, opts, &mut audience, server_pid, &progress).await;
    ticker.abort();
    audience.close().await;
    report
}

#[derive(Debug, Serialize)]
pub struct StepReport {
    pub scenario: &'static str,
    pub p95_limit_ms: f64,
    pub largest_passing_subscribers: Option<usize>,
    pub steps: Vec<BroadcastReport>,
}

/// Grows the audience step by step until p95 exceeds `limit_ms` (or `max` is reached).
pub async fn broadcast_steps(
    target: &Target,
    opts: &BroadcastOptions,
    start: usize,
    step: usize,
    max: usize,
    limit_ms: f64,
    server_pid: Option<&str>,
) -> anyhow::Result<StepReport> {
    let progress = Arc::new(Progress::default());
    let ticker = stats::progress_line("broadcast-step", progress.clone());
    let mut audience = Audience::new();
    let mut steps = Vec::new();
    let mut passing = None;
    let mut n = start.max(1);
    while n <= max {
        audience.grow(target, opts, n, &progress).await;
        let report = broadcast_round(target, opts, &mut audience, server_pid, &progress).await?;
        eprintln!(
            "[broadcast-step] subscribers={} p95={}ms delivered/s={} missing={}",
            report.subscribers, report.latency.p95_ms, report.delivered_per_second, report.missing
        );
        let ok = report.latency.p95_ms <= limit_ms && report.missing == 0 && report.subscribe_failures == 0;
        let subscribers = report.subscribers;
        steps.push(report);
        if !ok {
            break;
        }
        passing = Some(subscribers);
        n += step.max(1);
    }
    ticker.abort();
    audience.close().await;
    Ok(StepReport { scenario: "broadcast-step", p95_limit_ms: limit_ms, largest_passing_subscribers: passing, steps })
}

// ---------------------------------------------------------------- connect

#[derive(Debug, Serialize)]
pub struct ConnectReport {
    pub scenario: &'static str,
    pub clients: usize,
    pub concurrency: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    pub seconds: f64,
    pub per_second: f64,
    pub latency: Percentiles,
    /// Server CPU time per client that connected, subscribed and closed, in microseconds (with --server-pid).
    pub server_cpu_us_per_client: Option<f64>,
    pub cpu: CpuReport,
}

/// Connect + subscribe storm; each client closes once confirmed.
pub async fn connect(
    target: &Target,
    clients: usize,
    concurrency: usize,
    identifier: String,
    server_pid: Option<&str>,
) -> anyhow::Result<ConnectReport> {
    let progress = Arc::new(Progress::default());
    let ticker = stats::progress_line("connect", progress.clone());
    let cpu = CpuWatch::start(server_pid);
    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut set = JoinSet::new();
    let command = client::subscribe_command(&identifier, target);
    for n in 0..clients {
        let permit = permits.clone().acquire_owned().await.expect("semaphore is never closed");
        let (target, command, progress) = (target.clone(), command.clone(), progress.clone());
        set.spawn(async move {
            let _permit = permit;
            let t = Instant::now();
            let result = async {
                let mut ws = client::connect_welcomed(&target, n).await?;
                client::send_subscribe(&mut ws, command, &target).await?;
                let elapsed = t.elapsed().as_micros() as u32;
                let _ = ws.close(None).await;
                anyhow::Ok(elapsed)
            }
            .await;
            match &result {
                Ok(_) => Progress::add(&progress.connected, 1),
                Err(_) => Progress::add(&progress.errors, 1),
            }
            result
        });
    }
    let mut latencies = Vec::new();
    let mut errors = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(micros)) => latencies.push(micros),
            Ok(Err(e)) => errors.push(format!("{e:#}")),
            Err(e) => errors.push(e.to_string()),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    ticker.abort();
    let cpu = cpu.finish();
    Ok(ConnectReport {
        scenario: "connect",
        clients,
        concurrency,
        succeeded: latencies.len(),
        failed: errors.len(),
        first_error: error_summary(&errors),
        seconds: stats::round1(seconds * 10.0) / 10.0,
        per_second: stats::round1(latencies.len() as f64 / seconds.max(1e-9)),
        server_cpu_us_per_client: stats::server_cpu_us_per(&cpu, seconds, latencies.len()),
        latency: stats::percentiles(latencies),
        cpu,
    })
}

// ---------------------------------------------------------------- perform

#[derive(Debug, Serialize)]
pub struct PerformReport {
    pub scenario: &'static str,
    pub clients: usize,
    pub round_trips: u64,
    pub failures: u64,
    pub per_second: f64,
    pub latency: Percentiles,
    pub first_error: Option<String>,
    pub cpu: CpuReport,
}

/// Clients performing `action` (echo: the application transmits the data back) in a loop, each keeping
/// `pipeline` performs in flight: with 1 a client waits for each echo before the next perform; with more,
/// performs are written together and every echo is answered by the next perform, so fewer system calls and
/// wake-ups per round trip (on both sides) let one load-tool process keep a faster server busy. Latency is
/// still perform-to-echo for each one.
#[allow(clippy::too_many_arguments)]
pub async fn perform(
    target: &Target,
    clients: usize,
    concurrency: usize,
    identifier: String,
    action: String,
    pipeline: usize,
    duration: Duration,
    server_pid: Option<&str>,
) -> anyhow::Result<PerformReport> {
    let progress = Arc::new(Progress::default());
    let ticker = stats::progress_line("perform", progress.clone());
    let id = identifier.clone();
    let id_of: Arc<dyn Fn(usize) -> String + Send + Sync> = Arc::new(move |_| id.clone());
    let (sockets, _, errors) = open_many(target, 0, clients, concurrency, Some(id_of), &progress).await;
    let cpu = CpuWatch::start(server_pid);
    let started = Instant::now();
    let deadline = started + duration;
    let pipeline = pipeline.max(1);
    // The command around the payload, built once: `{"command":"message","identifier":…,"data":` + data + `}`.
    let prefix: Arc<str> =
        format!(r#"{{"command":"message","identifier":{},"data":"#, serde_json::to_string(&identifier)?).into();
    let mut set = JoinSet::new();
    for (_, mut ws) in sockets {
        let (prefix, action, progress) = (prefix.clone(), action.clone(), progress.clone());
        set.spawn(async move {
            let mut samples = Vec::new();
            let mut failures = 0u64;
            let mut seq = 0u64;
            // Performs sent and not yet echoed, oldest first: (seq, sent at).
            let mut in_flight = std::collections::VecDeque::with_capacity(pipeline);
            let perform = |seq: u64| {
                let data = serde_json::json!({"action": action, "seq": seq, "ts": stats::now_micros(), "p": 0});
                let data = serde_json::to_string(&data.to_string()).unwrap_or_default();
                Message::Text(format!("{prefix}{data}}}").into())
            };
            'outer: loop {
                // Top up the pipeline, then write everything at once.
                let mut fed = false;
                while in_flight.len() < pipeline && Instant::now() < deadline {
                    seq += 1;
                    if ws.feed(perform(seq)).await.is_err() {
                        failures += 1;
                        break 'outer;
                    }
                    in_flight.push_back((seq, Instant::now()));
                    fed = true;
                }
                if fed && ws.flush().await.is_err() {
                    failures += 1;
                    break;
                }
                if in_flight.is_empty() {
                    break;
                }
                match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
                    Ok(Some(Ok(Message::Text(text)))) => {
                        let Ok(frame) = serde_json::from_str::<Frame<'_>>(&text) else { continue };
                        let Some(raw) = frame.message else { continue };
                        let Ok(payload) = serde_json::from_str::<BenchPayload>(raw.get()) else { continue };
                        if let Some(at) = in_flight.iter().position(|(s, _)| *s == payload.seq) {
                            // Earlier performs still waiting stay in flight (a server may answer out of order).
                            if let Some((_, sent)) = in_flight.remove(at) {
                                samples.push(sent.elapsed().as_micros() as u32);
                                Progress::add(&progress.delivered, 1);
                            }
                        }
                    }
                    Ok(Some(Ok(_))) => continue,
                    _ => {
                        failures += 1;
                        break;
                    }
                }
            }
            let _ = ws.close(None).await;
            (samples, failures)
        });
    }
    let mut samples = Vec::new();
    let mut failures = 0;
    while let Some(joined) = set.join_next().await {
        let (s, f) = joined?;
        samples.extend(s);
        failures += f;
    }
    let seconds = started.elapsed().as_secs_f64();
    ticker.abort();
    let round_trips = samples.len() as u64;
    Ok(PerformReport {
        scenario: "perform",
        clients: clients - errors.len(),
        round_trips,
        failures,
        per_second: stats::round1(round_trips as f64 / seconds.max(1e-9)),
        latency: stats::percentiles(samples),
        first_error: error_summary(&errors),
        cpu: cpu.finish(),
    })
}
