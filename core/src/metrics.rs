//! Live counters and gauges, named as AnyCable names them.
//!
//! Each value is one relaxed atomic: cheap enough for the fan-out path, never a lock per message.
//! This module only counts; exposition formats read a [`StatsSnapshot`].

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

macro_rules! metrics {
    (counters { $($counter:ident),* $(,)? } gauges { $($gauge:ident),* $(,)? }) => {
        /// The server's live counters (monotonic) and gauges (current values).
        #[derive(Debug, Default)]
        pub struct Metrics {
            $( pub $counter: AtomicU64, )*
            $( pub $gauge: AtomicI64, )*
            /// Latency of application handler calls (RPC or in-process), per call kind.
            pub connect_duration: Histogram,
            pub command_duration: Histogram,
            pub disconnect_duration: Histogram,
        }

        /// A copy of every metric at one moment.
        #[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
        pub struct StatsSnapshot {
            $( pub $counter: u64, )*
            $( pub $gauge: i64, )*
        }

        impl Metrics {
            /// Reads every metric.
            pub fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot {
                    $( $counter: self.$counter.load(Ordering::Relaxed), )*
                    $( $gauge: self.$gauge.load(Ordering::Relaxed), )*
                }
            }
        }

        impl StatsSnapshot {
            /// `(name, value, is_counter)` for every metric, in declaration order.
            pub fn entries(&self) -> Vec<(&'static str, i128, bool)> {
                vec![
                    $( (stringify!($counter), self.$counter as i128, true), )*
                    $( (stringify!($gauge), self.$gauge as i128, false), )*
                ]
            }
        }
    };
}

metrics! {
    counters {
        client_msg_total,
        failed_client_msg_total,
        rate_limited_client_msg_total,
        broadcast_msg_total,
        failed_broadcast_msg_total,
        rpc_call_total,
        rpc_error_total,
        rpc_retries_total,
        failed_auths_total,
        server_msg_total,
        failed_server_msg_total,
        data_sent_total,
        data_rcvd_total,
        clients_total,
        pubsub_published_total,
        pubsub_received_total,
        pubsub_lost_total,
        publications_total,
        remote_commands_total,
        disconnected_slow_clients_total,
        timeout_server_msg_total,
        rpc_timeout_total,
        rpc_canceled_total,
        read_header_timeout_total,
        http_idle_timeout_total,
        pending_conn_refused_total,
        broadcast_body_timeout_total,
    }
    gauges {
        clients_num,
        subscriptions_num,
        broadcast_streams_num,
        rpc_pending_num,
        disconnect_queue_size,
        pubsub_streams_num,
        grpc_active_conn_num,
        pending_conn_num,
    }
}

/// Upper bounds (seconds) of the latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// A lock-free latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Non-cumulative counts per bucket; the last slot counts values above every bound.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, elapsed: std::time::Duration) {
        let secs = elapsed.as_secs_f64();
        let slot = LATENCY_BUCKETS.iter().position(|b| secs <= *b).unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Cumulative bucket counts (one per bound, then +Inf), sum in seconds, and count.
    pub fn read(&self) -> (Vec<u64>, f64, u64) {
        let mut total = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                total += b.load(Ordering::Relaxed);
                total
            })
            .collect();
        (cumulative, self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6, self.count.load(Ordering::Relaxed))
    }
}

impl Metrics {
    /// Renders every metric in the Prometheus text exposition format, names prefixed with `prefix_`.
    /// `extra_gauges` are values computed at read time (e.g. unique clients).
    pub fn render_prometheus(&self, prefix: &str, extra_gauges: &[(&str, i64)]) -> String {
        use std::fmt::Write as _;
        let name = |n: &str| if prefix.is_empty() { n.to_owned() } else { format!("{prefix}_{n}") };
        let mut out = String::with_capacity(4096);
        for (metric, value, is_counter) in self.snapshot().entries() {
            let kind = if is_counter { "counter" } else { "gauge" };
            let _ = writeln!(out, "# TYPE {} {kind}\n{} {value}", name(metric), name(metric));
        }
        for (metric, value) in extra_gauges {
            let _ = writeln!(out, "# TYPE {} gauge\n{} {value}", name(metric), name(metric));
        }
        if let Some(bytes) = resident_memory_bytes() {
            let _ = writeln!(out, "# TYPE {} gauge\n{} {bytes}", name("mem_sys_bytes"), name("mem_sys_bytes"));
        }
        let histogram = name("rpc_duration_seconds");
        let _ = writeln!(out, "# HELP {histogram} Latency of application handler calls (RPC or in-process)");
        let _ = writeln!(out, "# TYPE {histogram} histogram");
        for (method, h) in [
            ("connect", &self.connect_duration),
            ("command", &self.command_duration),
            ("disconnect", &self.disconnect_duration),
        ] {
            let (cumulative, sum, count) = h.read();
            for (bound, c) in LATENCY_BUCKETS.iter().zip(&cumulative) {
                let _ = writeln!(out, "{histogram}_bucket{{method=\"{method}\",le=\"{bound}\"}} {c}");
            }
            let _ = writeln!(
                out,
                "{histogram}_bucket{{method=\"{method}\",le=\"+Inf\"}} {}",
                cumulative.last().copied().unwrap_or(0)
            );
            let _ = writeln!(out, "{histogram}_sum{{method=\"{method}\"}} {sum}");
            let _ = writeln!(out, "{histogram}_count{{method=\"{method}\"}} {count}");
        }
        out
    }

    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn up(gauge: &AtomicI64) {
        gauge.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn down(gauge: &AtomicI64) {
        gauge.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The memory the process holds from the system (`mem_sys_bytes`): its resident set, read when the metrics are
/// rendered. AnyCable-Go reports what the Go runtime obtained from the system, which is the same quantity for a
/// process whose memory is all its runtime's. `None` where `/proc` is not available.
pub fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page_size).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_prefixed_names_types_and_histogram_buckets() {
        let m = Metrics::default();
        Metrics::add(&m.broadcast_msg_total, 3);
        m.command_duration.observe(std::time::Duration::from_millis(3));
        m.command_duration.observe(std::time::Duration::from_secs(9));
        let text = m.render_prometheus("anycable_go", &[("clients_uniq_num", 2)]);
        assert!(text.contains("# TYPE anycable_go_broadcast_msg_total counter\nanycable_go_broadcast_msg_total 3\n"));
        assert!(text.contains("anycable_go_clients_uniq_num 2\n"));
        assert!(text.contains("anycable_go_rpc_duration_seconds_bucket{method=\"command\",le=\"0.0025\"} 0\n"));
        assert!(text.contains("anycable_go_rpc_duration_seconds_bucket{method=\"command\",le=\"0.005\"} 1\n"));
        assert!(text.contains("anycable_go_rpc_duration_seconds_bucket{method=\"command\",le=\"+Inf\"} 2\n"));
        assert!(text.contains("anycable_go_rpc_duration_seconds_count{method=\"command\"} 2\n"));
    }

    #[test]
    fn snapshot_reads_what_was_counted() {
        let m = Metrics::default();
        Metrics::inc(&m.broadcast_msg_total);
        Metrics::add(&m.data_sent_total, 10);
        Metrics::up(&m.clients_num);
        Metrics::up(&m.clients_num);
        Metrics::down(&m.clients_num);
        let s = m.snapshot();
        assert_eq!((s.broadcast_msg_total, s.data_sent_total, s.clients_num), (1, 10, 1));
        assert!(s.entries().iter().any(|(n, v, c)| *n == "clients_num" && *v == 1 && !c));
    }
}
