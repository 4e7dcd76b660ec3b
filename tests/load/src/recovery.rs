//! The reconnect storm: extended-protocol clients subscribe, learn their stream position, lose their TCP
//! connections all at once (no close frame), miss publications while away, then all reconnect with their
//! previous sid. Measured: the time until every client is restored (welcome with `restored`) and has received
//! exactly what it missed, followed by `confirm_history`; counted: clients not restored, histories rejected,
//! messages missing, duplicated or not asked for.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, HttpClient, Target, Ws};
use crate::scenarios::{bench_data, error_summary, identifier_for, int_field};
use crate::stats::{self, CpuReport, CpuWatch, Percentiles, Progress};

#[derive(Debug, Clone)]
pub struct ReconnectOptions {
    pub clients: usize,
    pub streams: usize,
    /// Subscription identifier; `{stream}` is replaced by the stream name.
    pub identifier: String,
    /// Publications per stream while the clients are away.
    pub missed: u64,
    pub payload_bytes: usize,
    pub broadcast_url: String,
    pub broadcast_key: Option<String>,
    /// Connections (and reconnections) opened at once.
    pub concurrency: usize,
    /// How long the clients stay away (the missed publications are sent at its start).
    pub away: Duration,
    /// How long restored clients keep reading after the last one caught up, to see late duplicates.
    pub grace: Duration,
}

#[derive(Debug, Serialize)]
pub struct ReconnectReport {
    pub scenario: &'static str,
    pub clients: usize,
    pub streams: usize,
    /// Publications each client missed (the ones of its stream sent while it was away).
    pub missed_per_client: u64,
    pub connect_failures: usize,
    pub first_error: Option<String>,
    /// Clients answered with `restored: true` and their subscription among `restored_ids`.
    pub restored: usize,
    pub not_restored: usize,
    pub history_confirmed: usize,
    pub history_rejected: usize,
    /// Clients restored with every missed message, each once, then `confirm_history`.
    pub caught_up: usize,
    pub expected_messages: u64,
    pub missing_messages: u64,
    pub duplicated_messages: u64,
    /// Messages neither missed nor published (a replay of what the client had already seen is a duplicate).
    pub unexpected_messages: u64,
    pub reconnect_failures: usize,
    pub first_reconnect_error: Option<String>,
    /// From the reconnection of all clients to the last restored welcome.
    pub restored_seconds: Option<f64>,
    /// From the reconnection of all clients to the last client caught up; only when every client caught up.
    pub all_caught_up_seconds: Option<f64>,
    /// Reconnection to caught-up, per client.
    pub catch_up_latency: Percentiles,
    pub per_second: f64,
    pub server_rss_before_kib: Option<u64>,
    pub server_rss_after_kib: Option<u64>,
    pub cpu: CpuReport,
}

/// A subscribed client and what it needs to come back: its sid and its stream's position.
struct Away {
    n: usize,
    sid: String,
    stream: String,
    epoch: String,
    offset: u64,
}

/// What one reconnecting client saw.
#[derive(Default)]
struct Return {
    restored_at: Option<Duration>,
    confirmed_at: Option<Duration>,
    rejected: bool,
    /// Sequence numbers of the benchmark messages received after reconnecting, in order.
    seqs: Vec<u64>,
    error: Option<String>,
}

/// How a client's received sequence numbers compare with the ones it missed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub missing: u64,
    pub duplicated: u64,
    pub unexpected: u64,
}

/// Compares `received` with `missed` (each expected once); `seen` were received before the client went away,
/// so receiving one of them again is a duplicate.
pub(crate) fn tally(missed: &[u64], seen: &[u64], received: &[u64]) -> Tally {
    let mut counts: HashMap<u64, u64> = HashMap::new();
    for seq in received {
        *counts.entry(*seq).or_default() += 1;
    }
    let mut t = Tally::default();
    for seq in missed {
        match counts.remove(seq) {
            None => t.missing += 1,
            Some(n) => t.duplicated += n - 1,
        }
    }
    for (seq, n) in counts {
        if seen.contains(&seq) {
            t.duplicated += n;
        } else {
            t.unexpected += n;
        }
    }
    t
}

/// The sequence number the mark publication carries: what every client receives before it goes away.
const MARK_SEQ: u64 = 0;

pub async fn reconnect_storm(
    target: &Target,
    opts: &ReconnectOptions,
    server_pid: Option<&str>,
) -> anyhow::Result<ReconnectReport> {
    // Its own frames are JSON text: the recovery scenario speaks `actioncable-v1-ext-json` whatever was asked.
    let target = target.clone().with_protocol(true, ferrocable::protocol::Encoding::Json);
    let streams = opts.streams.max(1);
    let progress = Arc::new(Progress::default());
    let ticker = stats::progress_line("reconnect-storm", progress.clone());
    let stream_of = |n: usize| format!("bench_{}", n % streams);
    let pad = "x".repeat(opts.payload_bytes);
    let mut http = HttpClient::new(&opts.broadcast_url, opts.broadcast_key.as_deref())?;

    // Connect and subscribe everyone, then publish a mark on every stream: its frame tells each client its
    // stream's epoch and offset.
    let (subscribed, connect_errors) = subscribe_all(&target, opts, &progress).await;
    if subscribed.is_empty() {
        ticker.abort();
        bail!("no client could subscribe: {}", error_summary(&connect_errors).unwrap_or_default());
    }
    let mut readers = JoinSet::new();
    for (n, sid, ws) in subscribed {
        let (stream, timeout) = (stream_of(n), target.timeout);
        readers.spawn(async move { read_position(n, sid, stream, ws, timeout).await });
    }
    for s in 0..streams {
        publish(&mut http, &format!("bench_{s}"), &bench_data(0, MARK_SEQ, &pad)).await?;
    }
    let mut away = Vec::new();
    let mut sockets = Vec::new();
    let mut errors = connect_errors;
    while let Some(joined) = readers.join_next().await {
        match joined {
            Ok(Ok((client, ws))) => {
                away.push(client);
                sockets.push(ws);
            }
            Ok(Err(e)) => errors.push(format!("{e:#}")),
            Err(e) => errors.push(e.to_string()),
        }
    }

    if away.is_empty() {
        ticker.abort();
        bail!("no client learned its stream position: {}", error_summary(&errors).unwrap_or_default());
    }

    // Every connection dies at once: a reset, no close frame.
    for ws in &sockets {
        reset_on_close(ws.get_ref());
    }
    drop(sockets);
    let left = Instant::now();
    let mut missed: Vec<Vec<u64>> = vec![Vec::new(); streams];
    for seq in 1..=opts.missed {
        for (s, missed) in missed.iter_mut().enumerate() {
            publish(&mut http, &format!("bench_{s}"), &bench_data(0, seq, &pad)).await?;
            missed.push(seq);
        }
    }
    tokio::time::sleep(opts.away.saturating_sub(left.elapsed())).await;

    // Everyone comes back at once with the sid of the connection it lost.
    let rss_before = server_pid.and_then(stats::rss_kib);
    let cpu = CpuWatch::start(server_pid);
    let started = Instant::now();
    let stop = tokio_util::sync::CancellationToken::new();
    let permits = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let missed = Arc::new(missed);
    let mut returns = JoinSet::new();
    let total = away.len();
    let finish_line = Arc::new(FinishLine::new(total));
    for client in away {
        let permit = permits.clone().acquire_owned().await.expect("semaphore is never closed");
        let (target, stop, progress) = (target.clone(), stop.clone(), progress.clone());
        let identifier = identifier_for(&opts.identifier, &client.stream);
        let expected = missed[client.n % streams].len();
        let finish_line = finish_line.clone();
        returns.spawn(async move {
            let catch_up = CatchUp { started, expected, finish_line: &finish_line, progress: &progress };
            let r = come_back(&target, &client, &identifier, permit, &catch_up, &stop).await;
            (client.n, r)
        });
    }
    // Everyone has caught up (or given up); late frames may still come during the grace period.
    if tokio::time::timeout(target.timeout * 3, finish_line.crossed()).await.is_err() {
        eprintln!("[reconnect-storm] not every client finished within {:?}", target.timeout * 3);
    }
    let cpu = cpu.finish();
    let rss_after = server_pid.and_then(stats::rss_kib);
    tokio::time::sleep(opts.grace).await;
    stop.cancel();

    let mut report = ReconnectReport {
        scenario: "reconnect-storm",
        clients: total,
        streams,
        missed_per_client: opts.missed,
        connect_failures: errors.len(),
        first_error: error_summary(&errors),
        restored: 0,
        not_restored: 0,
        history_confirmed: 0,
        history_rejected: 0,
        caught_up: 0,
        expected_messages: 0,
        missing_messages: 0,
        duplicated_messages: 0,
        unexpected_messages: 0,
        reconnect_failures: 0,
        first_reconnect_error: None,
        restored_seconds: None,
        all_caught_up_seconds: None,
        catch_up_latency: stats::percentiles(Vec::new()),
        per_second: 0.0,
        server_rss_before_kib: rss_before,
        server_rss_after_kib: rss_after,
        cpu,
    };
    let mut reconnect_errors = Vec::new();
    let mut latencies = Vec::new();
    let (mut last_restored, mut last_caught_up) = (Duration::ZERO, Duration::ZERO);
    while let Some(joined) = returns.join_next().await {
        let (n, r) = joined.map_err(|e| anyhow!("a reconnecting client failed: {e}"))?;
        let missed = &missed[n % streams];
        report.expected_messages += missed.len() as u64;
        let t = tally(missed, &[MARK_SEQ], &r.seqs);
        report.missing_messages += t.missing;
        report.duplicated_messages += t.duplicated;
        report.unexpected_messages += t.unexpected;
        match r.restored_at {
            Some(at) => {
                report.restored += 1;
                last_restored = last_restored.max(at);
            }
            None => report.not_restored += 1,
        }
        report.history_rejected += usize::from(r.rejected);
        if let Some(at) = r.confirmed_at {
            report.history_confirmed += 1;
            if r.restored_at.is_some() && t == Tally::default() {
                report.caught_up += 1;
                last_caught_up = last_caught_up.max(at);
                latencies.push(at.as_micros().min(u32::MAX as u128) as u32);
            }
        }
        if let Some(e) = r.error {
            reconnect_errors.push(e);
        }
    }
    ticker.abort();
    report.reconnect_failures = reconnect_errors.len();
    report.first_reconnect_error = error_summary(&reconnect_errors);
    if report.restored > 0 {
        report.restored_seconds = Some(seconds(last_restored));
    }
    if report.caught_up == total && total > 0 {
        report.all_caught_up_seconds = Some(seconds(last_caught_up));
        report.per_second = stats::round1(total as f64 / last_caught_up.as_secs_f64().max(1e-9));
    }
    report.catch_up_latency = stats::percentiles(latencies);
    Ok(report)
}

fn seconds(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

async fn publish(http: &mut HttpClient, stream: &str, data: &str) -> anyhow::Result<()> {
    let body = json!({"stream": stream, "data": data}).to_string();
    match http.post(&body).await? {
        200 | 201 => Ok(()),
        status => bail!("broadcast to {stream} answered {status}"),
    }
}

/// Connects and subscribes `opts.clients` extended clients; each with its sid.
async fn subscribe_all(
    target: &Target,
    opts: &ReconnectOptions,
    progress: &Arc<Progress>,
) -> (Vec<(usize, String, Ws)>, Vec<String>) {
    let permits = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let mut set = JoinSet::new();
    let streams = opts.streams.max(1);
    for n in 0..opts.clients {
        let permit = permits.clone().acquire_owned().await.expect("semaphore is never closed");
        let (target, progress) = (target.clone(), progress.clone());
        let identifier = identifier_for(&opts.identifier, &format!("bench_{}", n % streams));
        set.spawn(async move {
            let _permit = permit;
            let result = async {
                let mut ws = target.connect(n).await?;
                let welcome = next_json(&mut ws, target.timeout, "welcome").await?;
                if welcome["type"] != "welcome" {
                    bail!("expected a welcome, got {welcome}");
                }
                let sid = welcome["sid"].as_str().ok_or_else(|| anyhow!("welcome without a sid: {welcome}"))?;
                let sid = sid.to_owned();
                client::subscribe(&mut ws, &identifier, &target).await?;
                anyhow::Ok((n, sid, ws))
            }
            .await;
            match &result {
                Ok(_) => Progress::add(&progress.connected, 1),
                Err(_) => Progress::add(&progress.errors, 1),
            }
            result
        });
    }
    let (mut ok, mut errors) = (Vec::new(), Vec::new());
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(client)) => ok.push(client),
            Ok(Err(e)) => errors.push(format!("{e:#}")),
            Err(e) => errors.push(e.to_string()),
        }
    }
    (ok, errors)
}

/// Waits for the mark publication and keeps its stream position.
async fn read_position(
    n: usize,
    sid: String,
    stream: String,
    mut ws: Ws,
    timeout: Duration,
) -> anyhow::Result<(Away, Ws)> {
    loop {
        let frame = next_json(&mut ws, timeout, "the mark publication").await?;
        if frame.get("message").is_none() || frame.get("type").is_some() {
            continue;
        }
        let epoch = frame["epoch"].as_str().ok_or_else(|| anyhow!("broadcast without an epoch: {frame}"))?;
        let offset = frame["offset"].as_u64().ok_or_else(|| anyhow!("broadcast without an offset: {frame}"))?;
        if frame["stream_id"] != stream.as_str() {
            bail!("broadcast of stream {} to a subscriber of {stream}", frame["stream_id"]);
        }
        let away = Away { n, sid, stream, epoch: epoch.to_owned(), offset };
        return Ok((away, ws));
    }
}

/// Counts the clients done with their return (caught up, refused or failed) and wakes the scenario when all are.
struct FinishLine {
    left: std::sync::atomic::AtomicUsize,
    all: tokio::sync::Notify,
}

impl FinishLine {
    fn new(clients: usize) -> Self {
        Self { left: clients.into(), all: tokio::sync::Notify::new() }
    }

    fn cross(&self) {
        if self.left.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            self.all.notify_one();
        }
    }

    async fn crossed(&self) {
        if self.left.load(std::sync::atomic::Ordering::Acquire) > 0 {
            self.all.notified().await;
        }
    }
}

/// What a returning client measures against.
struct CatchUp<'a> {
    started: Instant,
    /// Messages the client missed.
    expected: usize,
    finish_line: &'a FinishLine,
    progress: &'a Progress,
}

/// Reconnects one client with its previous sid, asks for the history after its position and reads until `stop`.
async fn come_back(
    target: &Target,
    client: &Away,
    identifier: &str,
    permit: tokio::sync::OwnedSemaphorePermit,
    catch_up: &CatchUp<'_>,
    stop: &tokio_util::sync::CancellationToken,
) -> Return {
    let mut r = Return::default();
    let restored = restore(target, client, identifier, catch_up.started, permit, &mut r).await;
    let mut ws = match restored {
        Ok(Some(ws)) => ws,
        Ok(None) => {
            catch_up.finish_line.cross();
            return r;
        }
        Err(e) => {
            r.error = Some(format!("{e:#}"));
            catch_up.finish_line.cross();
            return r;
        }
    };
    let mut finished = false;
    loop {
        let msg = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            m = ws.next() => m,
        };
        let text = match msg {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                r.error.get_or_insert_with(|| format!("read: {e}"));
                break;
            }
            None => {
                r.error.get_or_insert_with(|| "closed by the server".to_owned());
                break;
            }
        };
        if finished && !text.contains("\"seq\"") {
            continue;
        }
        if text.contains("\"seq\"") {
            if let Some(seq) = int_field(&text, "\"seq\"") {
                r.seqs.push(seq);
            }
            continue;
        }
        let Ok(frame) = serde_json::from_str::<Value>(&text) else { continue };
        match frame["type"].as_str() {
            Some("confirm_history") => {
                r.confirmed_at = Some(catch_up.started.elapsed());
                if r.seqs.len() == catch_up.expected {
                    Progress::add(&catch_up.progress.delivered, 1);
                }
            }
            Some("reject_history") => r.rejected = true,
            Some("disconnect") => r.error = Some(format!("disconnected: {frame}")),
            _ => continue,
        }
        finished = true;
        catch_up.finish_line.cross();
        if r.error.is_some() {
            break;
        }
    }
    if !finished {
        catch_up.finish_line.cross();
    }
    let _ = ws.close(None).await;
    r
}

/// The reconnection itself, within the concurrency permit: welcome (restored or not) and the history request.
async fn restore(
    target: &Target,
    client: &Away,
    identifier: &str,
    started: Instant,
    _permit: tokio::sync::OwnedSemaphorePermit,
    r: &mut Return,
) -> anyhow::Result<Option<Ws>> {
    let mut ws = target.connect_restoring(client.n, Some(&client.sid)).await?;
    let welcome = next_json(&mut ws, target.timeout, "welcome").await?;
    let restored = welcome["type"] == "welcome"
        && welcome["restored"] == true
        && welcome["restored_ids"].as_array().is_some_and(|ids| ids.iter().any(|id| id == identifier));
    if !restored {
        let _ = ws.close(None).await;
        return Ok(None);
    }
    r.restored_at = Some(started.elapsed());
    let history = json!({"streams": {&client.stream: {"epoch": client.epoch, "offset": client.offset}}});
    let command = json!({"command": "history", "identifier": identifier, "history": history});
    ws.send(Message::Text(command.to_string().into())).await.context("history request")?;
    Ok(Some(ws))
}

/// The next text frame, parsed; pings are skipped.
async fn next_json(ws: &mut Ws, timeout: Duration, what: &str) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let text = client::next_text(ws, deadline, what, client::EXTENDED_PROTOCOL).await?;
        let frame: Value = serde_json::from_str(&text).with_context(|| format!("bad frame {text}"))?;
        if frame["type"] == "ping" {
            continue;
        }
        if frame["type"] == "disconnect" || frame["type"] == "reject_subscription" {
            bail!("{frame} while waiting for {what}");
        }
        return Ok(frame);
    }
}

/// Makes closing `stream` reset the connection (`SO_LINGER` 0): the peer sees the TCP connection die, with no
/// WebSocket close frame and no orderly shutdown.
fn reset_on_close(stream: &tokio::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt on a socket `stream` keeps open, with a pointer to a linger struct and its size.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{Tally, tally};

    #[test]
    fn tally_counts_missing_duplicated_and_unexpected_messages() {
        assert_eq!(tally(&[1, 2, 3], &[0], &[1, 2, 3]), Tally::default());
        assert_eq!(tally(&[1, 2, 3], &[0], &[1, 3]), Tally { missing: 1, ..Tally::default() });
        assert_eq!(tally(&[1, 2, 3], &[0], &[1, 2, 2, 3, 3]), Tally { duplicated: 2, ..Tally::default() });
        // A replay of what the client had already received is a duplicate too.
        assert_eq!(tally(&[1, 2], &[0], &[0, 1, 2]), Tally { duplicated: 1, ..Tally::default() });
        assert_eq!(tally(&[1, 2], &[0], &[1, 2, 9]), Tally { unexpected: 1, ..Tally::default() });
        assert_eq!(tally(&[1, 2], &[0], &[]), Tally { missing: 2, ..Tally::default() });
    }
}
