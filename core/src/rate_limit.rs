//! Per-connection rate limits: the token bucket behind `whisper_rate` and `command_rate_limit`, and the
//! command budget that decides when a connection that keeps sending too many commands is told to leave.
//!
//! A bucket is a few bytes of plain state owned by one connection task (no lock), refilled from the time
//! elapsed whenever an event is taken: limiting needs neither a timer nor an allocation per event. This
//! module only decides; the session logs, counts and closes.

use std::time::Instant;

/// Up to `burst` tokens, refilled at `rate` tokens per second; one event takes one token.
#[derive(Debug, Clone, Default)]
pub struct TokenBucket {
    tokens: f64,
    /// `None` until the first event: a bucket starts full.
    last: Option<Instant>,
}

impl TokenBucket {
    pub const fn new() -> Self {
        Self { tokens: 0.0, last: None }
    }

    /// Refills the bucket for the time since the last event; returns whether it is now full.
    fn refill(&mut self, rate: u32, burst: u32, now: Instant) -> bool {
        let capacity = f64::from(burst.max(1));
        self.tokens = match self.last {
            None => capacity,
            Some(last) => {
                (self.tokens + now.saturating_duration_since(last).as_secs_f64() * f64::from(rate)).min(capacity)
            }
        };
        self.last = Some(now);
        self.tokens >= capacity
    }

    /// Takes one token at `rate` per second with room for `burst` (at least 1); `false` when none is left.
    /// A `rate` of 0 means no limit.
    pub fn take(&mut self, rate: u32, burst: u32, now: Instant) -> bool {
        if rate == 0 {
            return true;
        }
        self.refill(rate, burst, now);
        self.consume()
    }

    fn consume(&mut self) -> bool {
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// `command_rate_limit` and `command_rate_burst`, as the sessions apply them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandRate {
    /// Commands per second one connection may send.
    pub per_second: u32,
    /// Commands one connection may send at once.
    pub burst: u32,
}

impl CommandRate {
    /// The limit the options describe, `None` when it is off (`command_rate_limit` = 0). A burst of 0 means as
    /// many as one second's worth.
    pub fn from_options(per_second: u32, burst: u32) -> Option<Self> {
        (per_second > 0).then_some(Self { per_second, burst: if burst == 0 { per_second } else { burst } })
    }

    /// How many commands a connection may have dropped in one stretch of sending over its limit before it is
    /// disconnected: ten bursts' worth. A client that briefly exceeds its limit loses a few commands; one that
    /// keeps going is a runaway loop or an attack, and holding its connection open only invites more.
    pub fn disconnect_after(self) -> u32 {
        self.burst.saturating_mul(10)
    }
}

/// What to do with one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandVerdict {
    /// Within the limit: run it.
    Allowed,
    /// Over the limit: drop it. `first` is set for the first drop of a stretch, the one worth a log line.
    Dropped { first: bool },
    /// Over the limit for too long: drop it and disconnect the client. Returned once per connection.
    Disconnect,
}

/// One connection's command allowance: a token bucket, and the commands dropped since the client was last
/// within its limit long enough for the bucket to fill up again (one "stretch" of sending too much).
#[derive(Debug, Clone, Default)]
pub struct CommandBudget {
    bucket: TokenBucket,
    dropped: u32,
    disconnected: bool,
}

impl CommandBudget {
    /// Decides about one command arriving at `now`.
    pub fn check(&mut self, rate: CommandRate, now: Instant) -> CommandVerdict {
        if self.bucket.refill(rate.per_second, rate.burst, now) {
            // A full bucket means the client has been within its limit for a while: a new stretch begins.
            self.dropped = 0;
        }
        if self.bucket.consume() {
            return CommandVerdict::Allowed;
        }
        self.dropped = self.dropped.saturating_add(1);
        if self.dropped >= rate.disconnect_after() && !self.disconnected {
            self.disconnected = true;
            return CommandVerdict::Disconnect;
        }
        CommandVerdict::Dropped { first: self.dropped == 1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_allows_a_burst_then_the_rate() {
        let mut bucket = TokenBucket::new();
        let start = Instant::now();
        assert!((0..8).all(|_| bucket.take(4, 8, start)), "starts full: the whole burst at once");
        assert!(!bucket.take(4, 8, start));
        assert!(bucket.take(4, 8, start + Duration::from_millis(250)), "one more every 1/rate seconds");
        assert!(!bucket.take(4, 8, start + Duration::from_millis(250)));
        assert!((0..8).all(|_| bucket.take(4, 8, start + Duration::from_secs(60))), "refills up to the burst only");
        assert!(!bucket.take(4, 8, start + Duration::from_secs(60)));
        assert!((0..1000).all(|_| bucket.take(0, 8, start)), "rate 0 means no limit");
    }

    #[test]
    fn command_rate_is_off_at_zero_and_the_burst_defaults_to_the_rate() {
        assert_eq!(CommandRate::from_options(0, 50), None);
        assert_eq!(CommandRate::from_options(10, 0), Some(CommandRate { per_second: 10, burst: 10 }));
        assert_eq!(CommandRate::from_options(10, 30), Some(CommandRate { per_second: 10, burst: 30 }));
    }

    #[test]
    fn a_budget_drops_over_the_limit_and_disconnects_after_ten_bursts_of_drops() {
        let rate = CommandRate { per_second: 2, burst: 3 };
        let mut budget = CommandBudget::default();
        let t = Instant::now();
        assert!((0..3).all(|_| budget.check(rate, t) == CommandVerdict::Allowed));
        assert_eq!(budget.check(rate, t), CommandVerdict::Dropped { first: true });
        // Sending at twice the rate for a while: every other command passes, the drops add up.
        let mut verdicts = Vec::new();
        for i in 1..=200u64 {
            verdicts.push(budget.check(rate, t + Duration::from_millis(250 * i)));
        }
        let allowed = verdicts.iter().filter(|v| **v == CommandVerdict::Allowed).count();
        let at = verdicts.iter().position(|v| *v == CommandVerdict::Disconnect).expect("disconnected");
        // 30 drops in all (10 bursts of 3): the one above, then 29 more out of every other command.
        assert_eq!(verdicts[..at].iter().filter(|v| matches!(v, CommandVerdict::Dropped { .. })).count(), 28);
        assert!(!verdicts[..at].contains(&CommandVerdict::Dropped { first: true }), "one log line per stretch");
        assert!(allowed > 20, "the allowed share still passes meanwhile: {allowed}");
        assert_eq!(verdicts.iter().filter(|v| **v == CommandVerdict::Disconnect).count(), 1, "disconnect once");
    }

    #[test]
    fn a_budget_forgives_a_client_that_calms_down() {
        let rate = CommandRate { per_second: 10, burst: 2 };
        let mut budget = CommandBudget::default();
        let mut t = Instant::now();
        // Many short bursts over the limit, each followed by a quiet second: never disconnected.
        for _ in 0..100 {
            let verdicts: Vec<_> = (0..6).map(|_| budget.check(rate, t)).collect();
            assert_eq!(verdicts[..2], [CommandVerdict::Allowed, CommandVerdict::Allowed]);
            assert_eq!(verdicts[2], CommandVerdict::Dropped { first: true }, "each stretch is logged once");
            assert!(verdicts[3..].iter().all(|v| *v == CommandVerdict::Dropped { first: false }));
            t += Duration::from_secs(1);
        }
    }
}
