//! What every remote backend client (gRPC, HTTP) does around one call, written once: the `rpc_concurrency`
//! cap, the `rpc_request_timeout` limit (retries included), bounded retries with exponential backoff for
//! transient failures, the RPC metrics, and at most one "backend unavailable" warning per interval.
//!
//! It knows nothing of the wire: a client hands it one attempt as a closure and says which failures are
//! worth another attempt ([`AttemptError::Retry`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::HandlerError;
use crate::metrics::Metrics;

/// Attempts per call for retryable failures (the first one included).
const MAX_ATTEMPTS: u32 = 5;
/// At most one "backend unavailable" warning per this interval.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// How one attempt failed.
#[derive(Debug)]
pub(crate) enum AttemptError {
    /// Transient (backend unreachable or busy): try again after `backoff` doubled per earlier attempt.
    Retry { backoff: Duration, reason: String },
    /// Final: the call fails with this error.
    Fail(HandlerError),
    /// Final: the backend's own deadline for the call passed (counted in `rpc_timeout_total`).
    Expired(String),
}

/// The limits and bookkeeping shared by all calls of one backend client.
pub(crate) struct CallPolicy {
    permits: Semaphore,
    request_timeout: Option<Duration>,
    metrics: Arc<Metrics>,
    warnings: WarnThrottle,
    /// The backend's address, for the unavailable warning.
    target: String,
}

impl CallPolicy {
    pub(crate) fn new(
        target: String,
        concurrency: usize,
        request_timeout: Option<Duration>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            permits: Semaphore::new(concurrency.max(1)),
            request_timeout,
            metrics,
            warnings: WarnThrottle::new(WARN_INTERVAL),
            target,
        }
    }

    /// Runs `attempt` under the concurrency cap and the timeout, again after a backoff while it asks for a
    /// retry and attempts remain.
    pub(crate) async fn run<T, F, Fut>(&self, mut attempt: F) -> Result<T, HandlerError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, AttemptError>>,
    {
        let unfinished = Unfinished(Some(&self.metrics));
        let attempt_loop = async {
            let _permit =
                self.permits.acquire().await.map_err(|_| HandlerError::Unavailable("client closed".into()))?;
            Metrics::up(&self.metrics.rpc_pending_num);
            let _pending = PendingGuard(&self.metrics);
            let mut attempts = 0;
            loop {
                attempts += 1;
                Metrics::inc(&self.metrics.rpc_call_total);
                let (backoff, reason) = match attempt().await {
                    Ok(response) => return Ok(response),
                    Err(AttemptError::Fail(error)) => {
                        Metrics::inc(&self.metrics.rpc_error_total);
                        return Err(error);
                    }
                    Err(AttemptError::Expired(reason)) => {
                        Metrics::inc(&self.metrics.rpc_error_total);
                        Metrics::inc(&self.metrics.rpc_timeout_total);
                        return Err(HandlerError::Failed(reason));
                    }
                    Err(AttemptError::Retry { backoff, reason }) => (backoff, reason),
                };
                Metrics::inc(&self.metrics.rpc_error_total);
                if attempts >= MAX_ATTEMPTS {
                    if self.warnings.should_warn() {
                        tracing::warn!(
                            target = %self.target,
                            error = %reason,
                            "RPC backend unavailable; calls fail until it is back"
                        );
                    }
                    return Err(HandlerError::Unavailable(reason));
                }
                Metrics::inc(&self.metrics.rpc_retries_total);
                tokio::time::sleep(backoff * 2u32.pow(attempts - 1)).await;
            }
        };
        let result = match self.request_timeout {
            Some(limit) => tokio::time::timeout(limit, attempt_loop).await.unwrap_or_else(|_| {
                Metrics::inc(&self.metrics.rpc_timeout_total);
                Err(HandlerError::Timeout)
            }),
            None => attempt_loop.await,
        };
        unfinished.finished();
        result
    }
}

/// Counts a call as canceled (`rpc_canceled_total`) when it is dropped before it finished.
struct Unfinished<'a>(Option<&'a Metrics>);

impl Unfinished<'_> {
    fn finished(mut self) {
        self.0 = None;
    }
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if let Some(metrics) = self.0 {
            Metrics::inc(&metrics.rpc_canceled_total);
        }
    }
}

struct PendingGuard<'a>(&'a Metrics);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        Metrics::down(&self.0.rpc_pending_num);
    }
}

/// Lets one warning through per interval, from any number of threads.
pub(crate) struct WarnThrottle {
    origin: Instant,
    interval_ms: u64,
    next_ms: AtomicU64,
}

impl WarnThrottle {
    pub(crate) fn new(interval: Duration) -> Self {
        Self { origin: Instant::now(), interval_ms: interval.as_millis() as u64, next_ms: AtomicU64::new(0) }
    }

    pub(crate) fn should_warn(&self) -> bool {
        let now = self.origin.elapsed().as_millis() as u64;
        let next = self.next_ms.load(Ordering::Relaxed);
        now >= next
            && self.next_ms.compare_exchange(next, now + self.interval_ms, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_lets_one_warning_through_per_interval() {
        let t = WarnThrottle::new(Duration::from_secs(60));
        assert!(t.should_warn());
        assert!(!t.should_warn());
        assert!(!t.should_warn());
        let t = WarnThrottle::new(Duration::from_millis(0));
        assert!(t.should_warn());
        assert!(t.should_warn());
    }

    fn policy(timeout: Option<Duration>) -> CallPolicy {
        CallPolicy::new("test".into(), 1, timeout, Arc::new(Metrics::default()))
    }

    #[tokio::test]
    async fn retryable_failures_are_tried_a_bounded_number_of_times_then_unavailable() {
        let policy = policy(None);
        let mut attempts = 0;
        let result: Result<(), _> = policy
            .run(|| {
                attempts += 1;
                async { Err(AttemptError::Retry { backoff: Duration::from_millis(1), reason: "refused".into() }) }
            })
            .await;
        assert!(matches!(result, Err(HandlerError::Unavailable(reason)) if reason == "refused"));
        assert_eq!(attempts, MAX_ATTEMPTS);
    }

    #[tokio::test]
    async fn a_final_failure_is_not_retried_and_the_timeout_covers_the_retries() {
        let failing = policy(None);
        let mut attempts = 0;
        let result: Result<(), _> = failing
            .run(|| {
                attempts += 1;
                async { Err(AttemptError::Fail(HandlerError::Failed("401".into()))) }
            })
            .await;
        assert!(matches!(result, Err(HandlerError::Failed(_))));
        assert_eq!(attempts, 1);

        let policy = CallPolicy::new("test".into(), 1, Some(Duration::from_millis(50)), Arc::new(Metrics::default()));
        let result: Result<(), _> = policy
            .run(|| async { Err(AttemptError::Retry { backoff: Duration::from_secs(1), reason: "down".into() }) })
            .await;
        assert!(matches!(result, Err(HandlerError::Timeout)));
    }
}
