//! The Server-Sent Events scenario: N `GET <events URL>?stream=<stream>` clients (a public stream, as any server
//! with SSE and public streams serves it), held idle to read the server's RSS per client, then a run of
//! publications over HTTP fanned out to all of them, timed from publish to each delivery.
//!
//! Each client is a plain HTTP/1.1 request on its own socket, read for `data:` lines: no SSE library, so the
//! same bytes reach every server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::HttpClient;
use crate::stats::{self, CpuReport, CpuWatch, Percentiles, Progress};

/// What `sse` measures.
#[derive(Debug, Serialize)]
pub struct SseReport {
    pub scenario: &'static str,
    pub clients: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    pub connect_seconds: f64,
    pub server_rss_before_kib: Option<u64>,
    pub server_rss_idle_kib: Option<u64>,
    /// The RSS growth over every SSE client held idle.
    pub rss_per_client_bytes: Option<f64>,
    pub publications: u64,
    pub expected_deliveries: u64,
    pub deliveries: u64,
    /// Deliveries per second from the first publication to the last delivery.
    pub deliveries_per_second: f64,
    pub latency: Percentiles,
    pub cpu: CpuReport,
}

/// Options of the scenario.
pub struct SseOptions {
    pub events_url: String,
    pub clients: usize,
    pub concurrency: usize,
    pub stream: String,
    pub hold: Duration,
    pub publications: u64,
    pub rate: u64,
    pub payload: usize,
    pub broadcast_url: String,
    pub broadcast_key: Option<String>,
    pub sources: usize,
    pub timeout: Duration,
}

/// An open SSE response, past its headers.
type Events = BufReader<TcpStream>;

/// Opens one SSE client from loopback source address `source` and waits for its first event (the welcome, or for
/// a server that sends none before data, the response head).
async fn open(url: &(std::net::SocketAddr, String, String), source: u8) -> anyhow::Result<Events> {
    let (addr, host, target) = url;
    let socket = TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::from(([127, 0, 0, source], 0)))?;
    let mut stream = socket.connect(*addr).await?;
    let request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut reader = BufReader::with_capacity(1024, stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    if !line.starts_with("HTTP/1.1 200") {
        bail!("SSE request answered {}", line.trim_end());
    }
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            bail!("the response ended in its head");
        }
        if line == "\r\n" {
            return Ok(reader);
        }
    }
}

/// Parses `http://host:port/path?query` (loopback only).
fn parse_url(url: &str, stream: &str) -> anyhow::Result<(std::net::SocketAddr, String, String)> {
    let rest = url.strip_prefix("http://").ok_or_else(|| anyhow!("the events URL must be http://: {url}"))?;
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let addr: std::net::SocketAddr =
        std::net::ToSocketAddrs::to_socket_addrs(host)?.next().ok_or_else(|| anyhow!("no address for {host}"))?;
    if !addr.ip().is_loopback() {
        bail!("SSE clients only connect to loopback addresses, not {addr}");
    }
    let sep = if path.contains('?') { '&' } else { '?' };
    Ok((addr, host.to_owned(), format!("{path}{sep}stream={stream}")))
}

/// Reads events until `stop`; every `data:` line holding a publication's send time counts as a delivery.
async fn read_events(
    mut events: Events,
    stop: Arc<AtomicBool>,
    deliveries: Arc<AtomicU64>,
    progress: Arc<Progress>,
) -> Vec<u32> {
    let mut latencies = Vec::new();
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        line.clear();
        match tokio::time::timeout(Duration::from_millis(500), events.read_line(&mut line)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Err(_) => continue,
            Ok(Ok(_)) => {}
        }
        // `data: {..."t":<micros>...}` (a GET gets the message alone; a server may re-encode it with its keys in
        // another order); chunked framing lines never match.
        let Some(rest) = line.strip_prefix("data: {").and_then(|data| data.split_once("\"t\":")).map(|(_, rest)| rest)
        else {
            continue;
        };
        let Some(sent) = rest.split(|c: char| !c.is_ascii_digit()).next().and_then(|t| t.parse::<u64>().ok()) else {
            continue;
        };
        latencies.push(stats::now_micros().saturating_sub(sent).min(u32::MAX as u64) as u32);
        deliveries.fetch_add(1, Ordering::Relaxed);
        Progress::add(&progress.delivered, 1);
    }
    latencies
}

pub async fn run(opts: SseOptions, server_pid: Option<&str>) -> anyhow::Result<SseReport> {
    let url = Arc::new(parse_url(&opts.events_url, &opts.stream)?);
    let rss = || server_pid.and_then(stats::rss_kib);
    let before = rss();
    let cpu = CpuWatch::start(server_pid);
    let progress = Arc::new(Progress::default());
    let ticker = stats::progress_line("sse", progress.clone());
    let sources = if opts.sources == 0 { opts.clients.div_ceil(25_000).max(1) } else { opts.sources };

    let started = Instant::now();
    let mut opening = JoinSet::new();
    let limit = Arc::new(tokio::sync::Semaphore::new(opts.concurrency.max(1)));
    for n in 0..opts.clients {
        let (url, limit, progress) = (url.clone(), limit.clone(), progress.clone());
        let timeout = opts.timeout;
        opening.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let source = 1 + (n % sources) as u8;
            let opened = tokio::time::timeout(timeout, open(&url, source)).await;
            Progress::add(&progress.connected, 1);
            opened.map_err(|_| anyhow!("no response head within {timeout:?}"))?
        });
    }
    let (mut clients, mut errors) = (Vec::new(), Vec::new());
    while let Some(joined) = opening.join_next().await {
        match joined.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok(events) => clients.push(events),
            Err(error) => errors.push(error.to_string()),
        }
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    let stop = Arc::new(AtomicBool::new(false));
    let deliveries = Arc::new(AtomicU64::new(0));
    let mut readers = JoinSet::new();
    let held = clients.len();
    for events in clients {
        readers.spawn(read_events(events, stop.clone(), deliveries.clone(), progress.clone()));
    }
    tokio::time::sleep(opts.hold).await;
    let idle = rss();

    // The fan-out: publications at `rate` per second, each carrying its send time.
    let mut http = HttpClient::new(&opts.broadcast_url, opts.broadcast_key.as_deref())?;
    let padding = "x".repeat(opts.payload);
    let every = Duration::from_micros(1_000_000 / opts.rate.max(1));
    let first_publish = Instant::now();
    for i in 0..opts.publications {
        let data = format!(r#"{{"t":{},"i":{i},"p":"{padding}"}}"#, stats::now_micros());
        let body = serde_json::json!({ "stream": opts.stream, "data": data }).to_string();
        let status = http.post(&body).await?;
        if status != 201 {
            bail!("publication answered {status}");
        }
        tokio::time::sleep_until(first_publish + every * (i as u32 + 1)).await;
    }
    let expected = opts.publications * held as u64;
    let deadline = Instant::now() + opts.timeout;
    let mut last_delivery = Instant::now();
    let mut seen = 0;
    while Instant::now() < deadline {
        let now_seen = deliveries.load(Ordering::Relaxed);
        if now_seen != seen {
            (seen, last_delivery) = (now_seen, Instant::now());
        }
        if seen >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = last_delivery.duration_since(first_publish).as_secs_f64();
    let cpu = cpu.finish();
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    while let Some(joined) = readers.join_next().await {
        latencies.extend(joined.unwrap_or_default());
    }
    ticker.abort();
    let delivered = deliveries.load(Ordering::Relaxed);
    Ok(SseReport {
        scenario: "sse",
        clients: held,
        failed: errors.len(),
        first_error: errors.first().cloned(),
        connect_seconds: stats::round1(connect_seconds * 10.0) / 10.0,
        server_rss_before_kib: before,
        server_rss_idle_kib: idle,
        rss_per_client_bytes: match (before, idle) {
            (Some(b), Some(a)) if held > 0 => Some(stats::round1((a as f64 - b as f64) * 1024.0 / held as f64)),
            _ => None,
        },
        publications: opts.publications,
        expected_deliveries: expected,
        deliveries: delivered,
        deliveries_per_second: stats::round1(delivered as f64 / elapsed.max(1e-9)),
        latency: stats::percentiles(latencies),
        cpu,
    })
}

#[cfg(test)]
mod tests {
    use super::parse_url;

    #[test]
    fn the_events_url_gets_the_stream_and_stays_on_loopback() {
        let (addr, host, target) = parse_url("http://127.0.0.1:8080/events", "bench").unwrap();
        assert_eq!((addr.port(), host.as_str(), target.as_str()), (8080, "127.0.0.1:8080", "/events?stream=bench"));
        let (_, _, target) = parse_url("http://127.0.0.1:1/events?raw=1", "s").unwrap();
        assert_eq!(target, "/events?raw=1&stream=s");
        assert!(parse_url("http://10.0.0.1:1/events", "s").is_err());
        assert!(parse_url("https://127.0.0.1:1/events", "s").is_err());
    }
}
