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
    }
    gauges {
        clients_num,
        subscriptions_num,
        broadcast_streams_num,
        rpc_pending_num,
        disconnect_queue_size,
    }
}

impl Metrics {
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

#[cfg(test)]
mod tests {
    use super::*;

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
