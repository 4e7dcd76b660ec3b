//! The Disconnect call queue: sessions that end hand their Disconnect request here and go away.
//!
//! Calls leave the queue at most `disconnect_rate` per second and at most `rpc_concurrency` at a time, so a
//! mass reconnect or a hanging backend cannot flood it. On shutdown the queue is told the deadline as soon as
//! clients are asked to leave: from then on the pace rises just enough to finish every pending call before
//! it, while sessions are still ending and queueing theirs. Once every session has ended the queue is
//! closed, drains, and the worker stops. The queue is bounded; a full queue makes ending sessions wait rather
//! than grow memory.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
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

/// Shutdown's handle on the worker.
pub(crate) struct DrainControl {
    deadline: watch::Sender<Option<Instant>>,
    close: oneshot::Sender<()>,
}

impl DrainControl {
    /// From now on, pace calls so that everything queued is done by `deadline`.
    pub(crate) fn hurry(&self, deadline: Instant) {
        let _ = self.deadline.send(Some(deadline));
    }

    /// No more calls will be queued: finish what is queued (by the deadline) and stop.
    pub(crate) fn close(self) {
        let _ = self.close.send(());
    }
}

/// How the worker paces calls.
pub(crate) struct Limits {
    pub rate: u32,
    pub capacity: usize,
    pub max_in_flight: usize,
}

impl DisconnectQueue {
    /// Starts the worker on the current runtime; the returned future resolves when it has drained.
    pub(crate) fn start(
        controller: Arc<Controller>,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> (Self, DrainControl, impl Future<Output = ()> + Send + 'static) {
        let (tx, rx) = mpsc::channel(limits.capacity.max(1));
        let (deadline_tx, deadline_rx) = watch::channel(None);
        let (close_tx, close_rx) = oneshot::channel();
        let worker = run(rx, deadline_rx, close_rx, controller, limits, metrics.clone());
        (Self { tx, metrics }, DrainControl { deadline: deadline_tx, close: close_tx }, worker)
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
    mut deadline_rx: watch::Receiver<Option<Instant>>,
    mut close_rx: oneshot::Receiver<()>,
    controller: Arc<Controller>,
    limits: Limits,
    metrics: Arc<Metrics>,
) {
    let pace = Duration::from_secs(1) / limits.rate.max(1);
    let max_in_flight = limits.max_in_flight.max(1);
    let mut closed = false;
    let mut calls = JoinSet::new();
    let deadline = |rx: &watch::Receiver<Option<Instant>>| *rx.borrow();
    'jobs: loop {
        let job = tokio::select! {
            biased;
            job = rx.recv() => job,
            _ = &mut close_rx, if !closed => {
                closed = true;
                rx.close();
                continue;
            }
        };
        let Some(job) = job else { break };
        Metrics::down(&metrics.disconnect_queue_size);
        // Never more calls in flight than the backend is allowed to serve at once.
        while calls.len() >= max_in_flight {
            match deadline(&deadline_rx) {
                Some(at) => {
                    if tokio::time::timeout_at(at, calls.join_next()).await.is_err() {
                        break 'jobs;
                    }
                }
                None => {
                    calls.join_next().await;
                }
            }
        }
        let controller = controller.clone();
        calls.spawn(async move {
            if let Err(error) = controller.disconnect(&job.ctx, job.request).await {
                tracing::warn!(sid = %job.ctx.sid, %error, "Disconnect call failed");
            }
        });
        while calls.try_join_next().is_some() {}
        let wait = match deadline(&deadline_rx) {
            None => pace,
            // Shutting down: spread what is left over the time left, never slower than the normal pace. What is
            // left counts calls queued or waiting to be queued, and clients still connected (they are leaving).
            Some(at) => {
                let snapshot = metrics.snapshot();
                let left = (snapshot.disconnect_queue_size.max(0) + snapshot.clients_num.max(0)) as u32;
                // Aim at four fifths of the time left, so the last calls finish before the deadline, not on it.
                pace.min(at.saturating_duration_since(Instant::now()) * 4 / 5 / (left + 1))
            }
        };
        if !wait.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                // A new deadline changes the pace at once.
                changed = deadline_rx.changed() => {
                    if changed.is_err() {
                        // Shutdown's handle is gone: no deadline will come, keep the normal pace.
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
    }
    let abandoned = rx.len();
    match deadline(&deadline_rx) {
        Some(at) => {
            let _ = tokio::time::timeout_at(at, async { while calls.join_next().await.is_some() {} }).await;
            if !calls.is_empty() || abandoned > 0 {
                tracing::warn!(
                    in_flight = calls.len(),
                    not_started = abandoned,
                    "shutdown timeout reached before every Disconnect call finished"
                );
            }
        }
        None => while calls.join_next().await.is_some() {},
    }
}
