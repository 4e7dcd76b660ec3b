//! Measurements: latency percentiles, process CPU time, RSS and open files from /proc, memory trends, progress
//! counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Latency summary in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub samples: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Summarises samples given in microseconds.
pub fn percentiles(mut micros: Vec<u32>) -> Percentiles {
    if micros.is_empty() {
        return Percentiles::default();
    }
    micros.sort_unstable();
    let at = |q: f64| {
        let idx = ((micros.len() as f64 * q).ceil() as usize).clamp(1, micros.len()) - 1;
        micros[idx] as f64 / 1000.0
    };
    Percentiles {
        samples: micros.len(),
        p50_ms: at(0.50),
        p95_ms: at(0.95),
        p99_ms: at(0.99),
        max_ms: *micros.last().unwrap_or(&0) as f64 / 1000.0,
    }
}

/// Microseconds since the Unix epoch (shared clock between publisher and receivers on one machine).
pub fn now_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_micros() as u64
}

/// CPU time (user + system) of a process, from /proc/<pid>/stat.
pub fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Some(Duration::from_secs_f64((utime + stime) as f64 / ticks.max(1) as f64))
}

/// A `kB` field of /proc/<pid>/status, e.g. `VmRSS`.
fn status_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Resident set size of a process in KiB.
pub fn rss_kib(pid: &str) -> Option<u64> {
    status_kib(pid, "VmRSS")
}

/// The peak resident set size of a process so far (`VmHWM`) in KiB.
pub fn peak_rss_kib(pid: &str) -> Option<u64> {
    status_kib(pid, "VmHWM")
}

/// Open file descriptors of a process (sockets included), from /proc/<pid>/fd.
pub fn open_fds(pid: &str) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// The least-squares slope of `(seconds, KiB)` samples, in KiB per minute; `None` with fewer than two
/// distinct times.
pub fn slope_kib_per_min(samples: &[(f64, u64)]) -> Option<f64> {
    let n = samples.len() as f64;
    if samples.len() < 2 {
        return None;
    }
    let mean_t = samples.iter().map(|(t, _)| t).sum::<f64>() / n;
    let mean_v = samples.iter().map(|(_, v)| *v as f64).sum::<f64>() / n;
    let var = samples.iter().map(|(t, _)| (t - mean_t).powi(2)).sum::<f64>();
    if var == 0.0 {
        return None;
    }
    let cov = samples.iter().map(|(t, v)| (t - mean_t) * (*v as f64 - mean_v)).sum::<f64>();
    Some(round1(cov / var * 60.0))
}

/// Memory the kernel holds for all TCP sockets of the machine (socket buffers), in KiB, from /proc/net/sockstat.
pub fn tcp_kernel_memory_kib() -> Option<u64> {
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let tcp = sockstat.lines().find_map(|l| l.strip_prefix("TCP:"))?;
    let pages: u64 = tcp.split_whitespace().skip_while(|w| *w != "mem").nth(1)?.parse().ok()?;
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    Some(pages * page / 1024)
}

/// Samples a reading (a process's RSS, the kernel's TCP memory) every `every` until stopped, keeping the peak.
pub struct PeakWatch {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Option<u64>>,
}

impl PeakWatch {
    pub fn start(every: Duration, read: impl Fn() -> Option<u64> + Send + 'static) -> Self {
        let stop = tokio_util::sync::CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let mut peak = read();
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    () = tokio::time::sleep(every) => {}
                }
                peak = peak.max(read());
            }
            peak
        });
        Self { stop, task }
    }

    /// The RSS of process `pid`, when there is one to watch.
    pub fn rss(pid: Option<&str>, every: Duration) -> Self {
        let pid = pid.map(str::to_owned);
        Self::start(every, move || pid.as_deref().and_then(rss_kib))
    }

    /// The highest reading, in KiB.
    pub async fn peak(self) -> Option<u64> {
        self.stop.cancel();
        self.task.await.ok().flatten()
    }
}

/// CPU use of this tool and (optionally) the server over one scenario.
pub struct CpuWatch {
    started: Instant,
    own: Option<Duration>,
    server_pid: Option<String>,
    server: Option<Duration>,
}

/// CPU use in percent of one core.
#[derive(Debug, Clone, Serialize)]
pub struct CpuReport {
    pub tool_cpu_percent: f64,
    pub tool_cores: usize,
    pub server_cpu_percent: Option<f64>,
    /// True when the tool itself was close to saturating the cores it may use.
    pub tool_saturated: bool,
}

impl CpuWatch {
    pub fn start(server_pid: Option<&str>) -> Self {
        Self {
            started: Instant::now(),
            own: cpu_time("self"),
            server_pid: server_pid.map(str::to_owned),
            server: server_pid.and_then(cpu_time),
        }
    }

    pub fn finish(&self) -> CpuReport {
        let wall = self.started.elapsed().as_secs_f64().max(1e-9);
        let pct = |before: Option<Duration>, after: Option<Duration>| match (before, after) {
            (Some(b), Some(a)) => Some((a.saturating_sub(b)).as_secs_f64() / wall * 100.0),
            _ => None,
        };
        let tool = pct(self.own, cpu_time("self")).unwrap_or(0.0);
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let server = pct(self.server, self.server_pid.as_deref().and_then(cpu_time));
        CpuReport {
            tool_cpu_percent: round1(tool),
            tool_cores: cores,
            server_cpu_percent: server.map(round1),
            tool_saturated: tool > 85.0 * cores as f64,
        }
    }
}

/// The server's CPU time per unit of work (a delivered frame, a client) over `seconds`, in microseconds rounded
/// to hundredths; `None` without a server pid or any work done.
pub fn server_cpu_us_per(cpu: &CpuReport, seconds: f64, count: usize) -> Option<f64> {
    cpu.server_cpu_percent
        .filter(|_| count > 0)
        .map(|percent| (percent / 100.0 * seconds * 1e6 / count as f64 * 100.0).round() / 100.0)
}

pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Counters the progress line shows.
#[derive(Default)]
pub struct Progress {
    pub connected: AtomicU64,
    pub delivered: AtomicU64,
    pub errors: AtomicU64,
}

impl Progress {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Prints one progress line per second to stderr until the returned guard is dropped.
pub fn progress_line(label: &'static str, progress: std::sync::Arc<Progress>) -> tokio::task::JoinHandle<()> {
    let started = Instant::now();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            eprintln!(
                "[{label}] {:>5.1}s connections={} delivered={} errors={}",
                started.elapsed().as_secs_f64(),
                Progress::get(&progress.connected),
                Progress::get(&progress.delivered),
                Progress::get(&progress.errors)
            );
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_nearest_rank() {
        let p = percentiles((1..=100).map(|n| n * 1000).collect());
        assert_eq!((p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms), (50.0, 95.0, 99.0, 100.0));
        assert_eq!(percentiles(vec![]).samples, 0);
    }

    #[test]
    fn proc_readings_work_for_this_process() {
        // The RSS first: other tests in this process may grow it between the two readings, never the peak below it.
        let rss = rss_kib("self").unwrap();
        assert!(rss > 0);
        assert!(peak_rss_kib("self").unwrap() >= rss);
        assert!(open_fds("self").unwrap() >= 3);
        assert!(tcp_kernel_memory_kib().is_some());
        assert!(cpu_time("self").is_some());
    }

    #[test]
    fn slope_is_kib_per_minute() {
        assert_eq!(slope_kib_per_min(&[(0.0, 1000), (30.0, 1500), (60.0, 2000)]), Some(1000.0));
        assert_eq!(slope_kib_per_min(&[(0.0, 1000), (60.0, 900)]), Some(-100.0));
        assert_eq!(slope_kib_per_min(&[(5.0, 1000)]), None);
        assert_eq!(slope_kib_per_min(&[(5.0, 1000), (5.0, 2000)]), None);
    }
}
