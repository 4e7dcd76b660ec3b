//! The Disconnect call queue: sessions that end hand their Disconnect request here and go away.
//!
//! Calls leave the queue at most `disconnect_rate` per second, so a mass reconnect cannot flood the backend.
//! On shutdown the queue is drained: the pace rises just enough to finish every pending call before the
//! deadline. The queue is bounded; a full queue makes ending sessions wait rather than grow memory.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::handler::controller::Controller;
use crate::handler::{CallContext, DisconnectRequest};
use crate::metrics::Metrics;

struct Job {
    ctx: CallContext,
    request: DisconnectRequest,
}

/// Sending side, cloned into every session.
#[derive(Clone)]
pub(crate) struct DisconnectQueue {
    tx: mpsc::Sender<Job>,
    metrics: Arc<Metrics>,
}

/// Tells the worker to finish everything queued before `deadline` and stop.
pub(crate) struct DrainSignal(oneshot::Sender<Instant>);

impl DrainSignal {
    pub(crate) fn drain_by(self, deadline: Instant) {
        let _ = self.0.send(deadline);
    }
}

impl DisconnectQueue {
    /// Starts the worker on the current runtime; the returned future resolves when it has drained.
    pub(crate) fn start(
        controller: Arc<Controller>,
        rate: u32,
        capacity: usize,
        metrics: Arc<Metrics>,
    ) -> (Self, DrainSignal, impl Future<Output = ()> + Send + 'static) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let (drain_tx, drain_rx) = oneshot::channel();
        let worker = run(rx, drain_rx, controller, rate.max(1), metrics.clone());
        (Self { tx, metrics }, DrainSignal(drain_tx), worker)
    }

    /// Queues one Disconnect call; waits while the queue is full.
    pub(crate) async fn push(&self, sid: Arc<str>, request: DisconnectRequest) {
        Metrics::up(&self.metrics.disconnect_queue_size);
        if self.tx.send(Job { ctx: CallContext { sid }, request }).await.is_err() {
            Metrics::down(&self.metrics.disconnect_queue_size);
            tracing::warn!("Disconnect call dropped: the queue has already been drained");
        }
    }
}

async fn run(
    mut rx: mpsc::Receiver<Job>,
    mut drain: oneshot::Receiver<Instant>,
    controller: Arc<Controller>,
    rate: u32,
    metrics: Arc<Metrics>,
) {
    let pace = Duration::from_secs(1) / rate;
    let mut deadline: Option<Instant> = None;
    let mut calls = JoinSet::new();
    loop {
        let job = tokio::select! {
            job = rx.recv() => job,
            at = &mut drain, if deadline.is_none() => {
                deadline = Some(at.unwrap_or_else(|_| Instant::now()));
                rx.close();
                continue;
            }
        };
        let Some(job) = job else { break };
        Metrics::down(&metrics.disconnect_queue_size);
        let controller = controller.clone();
        calls.spawn(async move {
            if let Err(error) = controller.disconnect(&job.ctx, job.request).await {
                tracing::warn!(sid = %job.ctx.sid, %error, "Disconnect call failed");
            }
        });
        while calls.try_join_next().is_some() {}
        let wait = match deadline {
            None => pace,
            // Draining: spread what is left over the time left, never slower than the normal pace.
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                pace.min(left / (rx.len() as u32 + 1))
            }
        };
        if !wait.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                at = &mut drain, if deadline.is_none() => {
                    deadline = Some(at.unwrap_or_else(|_| Instant::now()));
                    rx.close();
                }
            }
        }
    }
    match deadline {
        Some(at) => {
            let _ = tokio::time::timeout_at(at, async { while calls.join_next().await.is_some() {} }).await;
            if !calls.is_empty() {
                tracing::warn!(pending = calls.len(), "shutdown timeout reached with Disconnect calls in flight");
            }
        }
        None => while calls.join_next().await.is_some() {},
    }
}
