//! Periodic timers of a session's subscriptions (Action Cable's `periodically`), for in-process handlers.
//!
//! A handler that confirms a subscription may answer `periodic_timers` (intervals in milliseconds); the
//! session then keeps one timer per interval and, each time one is due, sends the handler a `periodic` command
//! for that subscription with the timer's index as its data. The answer is applied like any command's
//! (transmissions, streams, state). The connection task asks for a due timer only while no other call of the
//! session is in flight, so ticks never overlap each other or a command of the same connection; a tick that
//! comes due meanwhile runs as soon as the call ends, and ticks missed while waiting are skipped, not queued.
//!
//! This module only keeps time: it never calls the handler or touches the subscription itself.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// The command sent to the handler when a timer is due.
pub const PERIODIC_COMMAND: &str = "periodic";

/// The timers of one session, allocated when its first subscription asks for one.
pub(crate) struct PeriodicTimers {
    entries: Vec<Timer>,
    /// Armed at the earliest due time.
    sleep: Pin<Box<Sleep>>,
}

struct Timer {
    identifier: Arc<str>,
    index: u32,
    every: Duration,
    due: Instant,
}

impl PeriodicTimers {
    pub(crate) fn new() -> Self {
        Self { entries: Vec::new(), sleep: Box::pin(tokio::time::sleep_until(Instant::now())) }
    }

    /// Starts the timers of a confirmed subscription: one per interval (milliseconds, at least 1), the first
    /// tick one interval from now.
    pub(crate) fn add(&mut self, identifier: &Arc<str>, intervals_ms: &[u32]) {
        let now = Instant::now();
        for (index, ms) in intervals_ms.iter().enumerate() {
            let every = Duration::from_millis(u64::from((*ms).max(1)));
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            self.entries.push(Timer { identifier: identifier.clone(), index, every, due: now + every });
        }
    }

    /// Stops every timer of a subscription (unsubscribed, or removed by the server).
    pub(crate) fn remove(&mut self, identifier: &str) {
        self.entries.retain(|timer| &*timer.identifier != identifier);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The subscription and timer index of a timer that is due, rescheduled one interval later (from now when
    /// it is already late by more than an interval).
    pub(crate) fn poll_due(&mut self, cx: &mut Context<'_>) -> Poll<(Arc<str>, u32)> {
        loop {
            let Some(next) = self.entries.iter_mut().min_by_key(|timer| timer.due) else { return Poll::Pending };
            let now = Instant::now();
            if next.due <= now {
                next.due += next.every;
                if next.due <= now {
                    next.due = now + next.every;
                }
                return Poll::Ready((next.identifier.clone(), next.index));
            }
            if self.sleep.deadline() != next.due {
                let due = next.due;
                self.sleep.as_mut().reset(due);
            }
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

impl Default for PeriodicTimers {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due_now(timers: &mut PeriodicTimers) -> Option<(Arc<str>, u32)> {
        let waker = std::task::Waker::noop();
        match timers.poll_due(&mut Context::from_waker(waker)) {
            Poll::Ready(due) => Some(due),
            Poll::Pending => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_timer_ticks_at_its_own_interval_until_removed() {
        let mut timers = PeriodicTimers::new();
        let a: Arc<str> = "a".into();
        let b: Arc<str> = "b".into();
        timers.add(&a, &[100, 250]);
        timers.add(&b, &[200]);
        assert_eq!(due_now(&mut timers), None);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(due_now(&mut timers), Some((a.clone(), 0)));
        assert_eq!(due_now(&mut timers), None);
        tokio::time::advance(Duration::from_millis(100)).await;
        let mut due = vec![due_now(&mut timers).unwrap(), due_now(&mut timers).unwrap()];
        due.sort();
        assert_eq!(due, vec![(a.clone(), 0), (b.clone(), 0)]);
        timers.remove("a");
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(due_now(&mut timers), Some((b.clone(), 0)));
        assert_eq!(due_now(&mut timers), None);
        timers.remove("b");
        assert!(timers.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn ticks_missed_while_a_call_runs_are_skipped_not_queued() {
        let mut timers = PeriodicTimers::new();
        let a: Arc<str> = "a".into();
        timers.add(&a, &[100]);
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert_eq!(due_now(&mut timers), Some((a.clone(), 0)));
        assert_eq!(due_now(&mut timers), None, "one tick for ten missed intervals");
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(due_now(&mut timers), Some((a, 0)));
    }
}
