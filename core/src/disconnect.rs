//! The Disconnect call queue: sessions that end hand their Disconnect request here and go away.
//!
//! Calls leave the queue at most `disconnect_rate` per second and at most `rpc_concurrency` at a time, so a
//! mass reconnect or a hanging backend cannot flood it. On shutdown the queue is told the deadline as soon as
//! clients are asked to leave: from then on the pace rises just enough to start every pending call within
//! four fifths of the time to it (the last fifth is for the last calls to finish), while sessions are still
//! ending and queueing theirs. Once every session has ended the queue is
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
    drain: watch::Sender<Option<Drain>>,
    close: oneshot::Sender<()>,
}

/// The schedule of a shutdown drain.
#[derive(Debug, Clone, Copy)]
struct Drain {
    /// Every owed call should have started by then: four fifths of the way from the start of the shutdown to
    /// the deadline, so the last calls have the rest of the time to finish.
    aim: Instant,
    /// Calls still running then are abandoned.
    deadline: Instant,
}

impl DrainControl {
    /// From now on, pace calls so that everything queued is done by `deadline`.
    pub(crate) fn hurry(&self, deadline: Instant) {
        let now = Instant::now();
        let aim = now + deadline.saturating_duration_since(now) * 4 / 5;
        let _ = self.drain.send(Some(Drain { aim, deadline }));
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
        let (drain_tx, drain_rx) = watch::channel(None);
        let (close_tx, close_rx) = oneshot::channel();
        let worker = run(rx, drain_rx, close_rx, controller, limits, metrics.clone());
        (Self { tx, metrics }, DrainControl { drain: drain_tx, close: close_tx }, worker)
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
    mut drain_rx: watch::Receiver<Option<Drain>>,
    mut close_rx: oneshot::Receiver<()>,
    controller: Arc<Controller>,
    limits: Limits,
    metrics: Arc<Metrics>,
) {
    let pace = Duration::from_secs(1) / limits.rate.max(1);
    let max_in_flight = limits.max_in_flight.max(1);
    let mut closed = false;
    let mut calls = JoinSet::new();
    let drain = |rx: &watch::Receiver<Option<Drain>>| *rx.borrow();
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
            match drain(&drain_rx) {
                Some(drain) => {
                    if tokio::time::timeout_at(drain.deadline, calls.join_next()).await.is_err() {
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
        let wait = match drain(&drain_rx) {
            None => pace,
            // Shutting down: spread what is left evenly over the time until the aim, never slower than the normal
            // pace. What is left counts calls queued or waiting to be queued, and clients still connected (they are
            // leaving). The aim stays fixed: re-aiming at a fraction of the time left on every call would push the
            // last of thousands of calls right up against the deadline.
            Some(drain) => {
                let snapshot = metrics.snapshot();
                let left = (snapshot.disconnect_queue_size.max(0) + snapshot.clients_num.max(0)) as u32;
                pace.min(drain.aim.saturating_duration_since(Instant::now()) / (left + 1))
            }
        };
        if !wait.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                // A new deadline changes the pace at once.
                changed = drain_rx.changed() => {
                    if changed.is_err() {
                        // Shutdown's handle is gone: no deadline will come, keep the normal pace.
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
    }
    let abandoned = rx.len();
    match drain(&drain_rx) {
        Some(drain) => {
            let _ = tokio::time::timeout_at(drain.deadline, async { while calls.join_next().await.is_some() {} }).await;
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
