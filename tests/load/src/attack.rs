//! The unfinished-request attack: many TCP connections against each listener of a server that send a partial
//! request (a request line and one header, then nothing) or nothing at all, while a real client keeps using the
//! server. Reports how long the server takes to close each kind, the most descriptors it held, and the round
//! trips of the real client during the attack (a broadcast from publication to delivery, and new connections
//! up to their welcome).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{HttpClient, Target, connect_welcomed, subscribe};
use crate::stats::{PeakWatch, Percentiles, cpu_time, now_micros, open_fds, percentiles};

/// What the attack does and what it watches.
pub struct AttackOptions {
    /// Listeners attacked (loopback only).
    pub listeners: Vec<SocketAddr>,
    /// Partial-request sockets per listener.
    pub partial: usize,
    /// Silent sockets per listener.
    pub silent: usize,
    /// Longest a socket is watched; one still open then is reported as never closed.
    pub watch: Duration,
    /// The real client's subscription identifier and the stream it names.
    pub identifier: String,
    pub stream: String,
    pub broadcast_url: String,
    pub broadcast_key: Option<String>,
    /// Sockets opened at once.
    pub concurrency: usize,
}

/// The time to close of one kind of socket on one listener.
#[derive(Debug, Serialize)]
pub struct Closes {
    pub listener: String,
    pub kind: &'static str,
    pub opened: usize,
    /// Sockets the tool could not open (refused, reset or timed out at connect).
    pub failed_to_open: usize,
    pub closed: usize,
    pub never_closed: usize,
    pub time_to_close: Percentiles,
}

#[derive(Debug, Serialize)]
pub struct AttackReport {
    pub scenario: &'static str,
    pub closes: Vec<Closes>,
    /// The server's open descriptors before, at the peak of and 3 s after the attack (with `--server-pid`).
    pub fds_before: Option<usize>,
    pub fds_peak: Option<usize>,
    pub fds_after: Option<usize>,
    /// A broadcast from its POST to its delivery to the subscribed real client, one every 100 ms during the attack.
    pub broadcast_round_trip: Percentiles,
    pub broadcasts_lost: usize,
    /// A new connection up to its welcome, one every 100 ms during the attack.
    pub connect_to_welcome: Percentiles,
    pub connects_failed: usize,
    pub attack_seconds: f64,
    /// CPU time the server used from the first attacking socket to the last close (with `--server-pid`).
    pub server_cpu_seconds: Option<f64>,
}

/// How one attacking socket ended.
enum Outcome {
    NotOpened,
    Closed(Duration),
    NeverClosed,
}

async fn attacker(addr: SocketAddr, partial: bool, watch: Duration) -> Outcome {
    let Ok(Ok(mut stream)) = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await else {
        return Outcome::NotOpened;
    };
    if partial && stream.write_all(b"GET /cable HTTP/1.1\r\nHost: attack\r\n").await.is_err() {
        return Outcome::NotOpened;
    }
    let opened = Instant::now();
    let mut buffer = [0u8; 512];
    let closed = tokio::time::timeout(watch, async {
        // Anything the server answers is read and ignored; the socket counts as closed at its end.
        while matches!(stream.read(&mut buffer).await, Ok(n) if n > 0) {}
    });
    match closed.await {
        Ok(()) => Outcome::Closed(opened.elapsed()),
        Err(_) => Outcome::NeverClosed,
    }
}

pub async fn attack(target: &Target, opts: &AttackOptions, server_pid: Option<&str>) -> anyhow::Result<AttackReport> {
    let fds_before = server_pid.and_then(open_fds);
    let pid = server_pid.map(str::to_owned);
    let fds = PeakWatch::start(Duration::from_millis(50), move || pid.as_deref().and_then(open_fds).map(|n| n as u64));

    // The real client, subscribed before the attack starts.
    let mut reader = connect_welcomed(target, 0).await?;
    subscribe(&mut reader, &opts.identifier, target).await?;
    let mut publisher = HttpClient::new(&opts.broadcast_url, opts.broadcast_key.as_deref())?;

    let cpu_before = server_pid.and_then(cpu_time);
    let started = Instant::now();
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(opts.concurrency.max(1)));
    let mut sockets = JoinSet::new();
    for (index, addr) in opts.listeners.iter().enumerate() {
        for (kind, count) in [("partial", opts.partial), ("silent", opts.silent)] {
            for _ in 0..count {
                let (addr, watch, permits) = (*addr, opts.watch, permits.clone());
                sockets.spawn(async move {
                    // The permit is held until the socket is open: it bounds connects in flight, not open sockets.
                    let permit = permits.acquire_owned().await;
                    let outcome = async {
                        let connected = attacker(addr, kind == "partial", watch);
                        drop(permit);
                        connected.await
                    };
                    (index, kind, outcome.await)
                });
            }
        }
    }

    // The real client keeps going until every attacking socket is closed (or watched long enough).
    let mut round_trips = Vec::new();
    let mut lost = 0;
    let mut connects = Vec::new();
    let mut connects_failed = 0;
    let mut outcomes = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut seq = 0u64;
    while !sockets.is_empty() {
        tokio::select! {
            Some(done) = sockets.join_next() => outcomes.push(done?),
            _ = tick.tick() => {
                seq += 1;
                let data = serde_json::json!({"seq": seq, "ts": now_micros()}).to_string();
                let body = serde_json::json!({"stream": opts.stream, "data": data}).to_string();
                let sent = now_micros();
                let posted = matches!(publisher.post(&body).await, Ok(200 | 201));
                match posted && delivered(&mut reader, seq, target.timeout).await {
                    true => round_trips.push((now_micros().saturating_sub(sent)) as u32),
                    false => lost += 1,
                }
                let opened = Instant::now();
                match connect_welcomed(target, seq as usize).await {
                    Ok(mut ws) => {
                        connects.push(opened.elapsed().as_micros() as u32);
                        let _ = ws.close(None).await;
                    }
                    Err(_) => connects_failed += 1,
                }
            }
        }
    }
    let attack_seconds = started.elapsed().as_secs_f64();
    let server_cpu_seconds = match (cpu_before, server_pid.and_then(cpu_time)) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before).as_secs_f64()),
        _ => None,
    };
    let _ = reader.close(None).await;
    drop(reader);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let fds_after = server_pid.and_then(open_fds);
    let fds_peak = fds.peak().await.map(|n| n as usize);

    let mut closes = Vec::new();
    for (index, addr) in opts.listeners.iter().enumerate() {
        for kind in ["partial", "silent"] {
            let mine = outcomes.iter().filter(|(i, k, _)| *i == index && *k == kind);
            let (mut times, mut failed_to_open, mut never_closed) = (Vec::new(), 0, 0);
            for (_, _, outcome) in mine {
                match outcome {
                    Outcome::NotOpened => failed_to_open += 1,
                    Outcome::Closed(after) => times.push(after.as_micros() as u32),
                    Outcome::NeverClosed => never_closed += 1,
                }
            }
            closes.push(Closes {
                listener: addr.to_string(),
                kind,
                opened: times.len() + never_closed,
                failed_to_open,
                closed: times.len(),
                never_closed,
                time_to_close: percentiles(times),
            });
        }
    }
    Ok(AttackReport {
        scenario: "attack",
        closes,
        fds_before,
        fds_peak,
        fds_after,
        broadcast_round_trip: percentiles(round_trips),
        broadcasts_lost: lost,
        connect_to_welcome: percentiles(connects),
        connects_failed,
        attack_seconds,
        server_cpu_seconds,
    })
}

/// Reads the real client's frames until the broadcast numbered `seq` arrives.
async fn delivered(ws: &mut crate::client::Ws, seq: u64, timeout: Duration) -> bool {
    let wanted = format!("\"seq\":{seq},");
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) if text.contains(&wanted) => return true,
            Ok(Some(Ok(_))) => {}
            _ => return false,
        }
    }
}
