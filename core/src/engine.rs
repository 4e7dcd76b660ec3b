//! What the Redis and NATS users (the `redis`, `redisx` and `nats` broadcasters and the cluster pub/sub)
//! share: reconnect backoff, outage reporting, and how a connection to each engine is opened.
//!
//! An engine being down must never stop a node: every user keeps running, retries with [`Backoff`], and
//! reports each outage through an [`Outage`] once when it starts and once when it ends, never per message.
//! This module opens connections; it never subscribes, publishes or parses anything.

use std::fmt::Display;
use std::time::Duration;

use tokio::time::Instant;

/// Exponential reconnect delays with jitter: 100 ms doubling up to 5 s.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    attempt: u32,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    /// The delay before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = Self::FIRST.saturating_mul(1 << self.attempt.min(6)).min(Self::MAX);
        self.attempt = self.attempt.saturating_add(1);
        // ±20% so that nodes restarted together do not reconnect in lockstep.
        base.mul_f64(0.8 + fastrand::f64() * 0.4)
    }

    /// Starts over after a success.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// One engine connection's up/down history, logged once per transition.
#[derive(Debug)]
pub(crate) struct Outage {
    /// What is connected, for log lines, e.g. "Redis pub/sub subscriber (redis://localhost:6379/5)".
    what: String,
    down_since: Option<Instant>,
    ever_up: bool,
}

impl Outage {
    pub(crate) fn new(what: String) -> Self {
        Self { what, down_since: None, ever_up: false }
    }

    /// Records a failed connection or a lost one. Logs a warning only when an outage starts; later
    /// failed attempts of the same outage are logged at debug level.
    pub(crate) fn down(&mut self, error: &dyn Display, consequence: &str) {
        match self.down_since {
            None => {
                self.down_since = Some(Instant::now());
                let verb = if self.ever_up { "lost its connection" } else { "cannot connect" };
                tracing::warn!("{} {verb}: {error}; {consequence}; reconnecting with backoff", self.what);
            }
            Some(_) => tracing::debug!("{}: reconnect failed: {error}", self.what),
        }
    }

    /// Records a successful connection; returns how long the outage lasted when there was one.
    pub(crate) fn up(&mut self) -> Option<Duration> {
        let first = !self.ever_up;
        self.ever_up = true;
        let outage = self.down_since.take().map(|since| since.elapsed());
        match outage {
            Some(lasted) => tracing::info!("{} connected after {:.1}s", self.what, lasted.as_secs_f64()),
            None if first => tracing::info!("{} connected", self.what),
            None => {}
        }
        outage
    }
}

/// Sleeps for `delay`; returns `true` when `stop` fired first.
pub(crate) async fn sleep_or_stop(delay: Duration, stop: &tokio_util::sync::CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => false,
        () = stop.cancelled() => true,
    }
}

/// How long opening an engine connection may take before it counts as failed.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Redis connections.
pub(crate) mod redis {
    use std::time::Duration;

    use super::CONNECT_TIMEOUT;

    /// A client for `url` (no I/O yet). Errors name the option.
    pub(crate) fn client(url: &str) -> Result<::redis::Client, String> {
        ::redis::Client::open(url).map_err(|e| format!("redis_url {:?}: {e}", crate::config::redact_url(url)))
    }

    /// A multiplexed connection whose commands fail after `response_timeout` instead of hanging.
    pub(crate) async fn connect(
        client: &::redis::Client,
        response_timeout: Duration,
    ) -> ::redis::RedisResult<::redis::aio::MultiplexedConnection> {
        let config = ::redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(response_timeout));
        client.get_multiplexed_async_connection_with_config(&config).await
    }

    /// A dedicated pub/sub connection.
    pub(crate) async fn pubsub(client: &::redis::Client) -> ::redis::RedisResult<::redis::aio::PubSub> {
        match tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub()).await {
            Ok(result) => result,
            Err(_) => Err(::redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connection timed out",
            ))),
        }
    }
}

/// NATS connections.
pub(crate) mod nats {
    use std::sync::Arc;
    use std::time::Duration;

    use parking_lot::Mutex;

    use super::{Backoff, CONNECT_TIMEOUT, Outage};

    /// Connects to `servers` without waiting for the first connection: the client connects in the background
    /// and reconnects (resubscribing) by itself. Connection changes are logged through an [`Outage`] until
    /// `stop`; `on_change(connected)` is called on each of them.
    pub(crate) async fn connect(
        servers: &[String],
        what: String,
        no_echo: bool,
        stop: tokio_util::sync::CancellationToken,
        on_change: impl Fn(bool) + Send + Sync + 'static,
    ) -> Result<async_nats::Client, String> {
        let outage = Arc::new(Mutex::new(Outage::new(what.clone())));
        let on_change = Arc::new(on_change);
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("ferrocable-{}", env!("CARGO_PKG_VERSION")))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(CONNECT_TIMEOUT)
            // Requests (the broker's JetStream calls) that nothing answers fail in this time, not 10 s.
            .request_timeout(Some(CONNECT_TIMEOUT))
            .reconnect_delay_callback(|attempt| {
                let mut backoff = Backoff { attempt: attempt.min(16) as u32 };
                if attempt == 0 { Duration::ZERO } else { backoff.next_delay() }
            })
            .event_callback(move |event| {
                let outage = outage.clone();
                let on_change = on_change.clone();
                let stopping = stop.is_cancelled();
                async move {
                    if stopping {
                        // The node is shutting down (perhaps with its embedded server): nothing to report.
                        return;
                    }
                    match event {
                        async_nats::Event::Connected => {
                            outage.lock().up();
                            on_change(true);
                        }
                        async_nats::Event::Disconnected => {
                            outage.lock().down(&"disconnected", "messages are not exchanged meanwhile");
                            on_change(false);
                        }
                        async_nats::Event::SlowConsumer(_) => {
                            tracing::warn!("NATS: slow consumer, the server dropped messages for this node")
                        }
                        async_nats::Event::ServerError(error) => tracing::warn!("NATS server error: {error}"),
                        // Failed reconnect attempts land here; the outage itself is reported above.
                        async_nats::Event::ClientError(error) => tracing::debug!("NATS client error: {error}"),
                        _ => {}
                    }
                }
            });
        if no_echo {
            options = options.no_echo();
        }
        options.connect(servers).await.map_err(|e| format!("{what}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_cap_and_resets() {
        let mut b = Backoff::default();
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(80) && first <= Duration::from_millis(120), "{first:?}");
        for _ in 0..20 {
            assert!(b.next_delay() <= Duration::from_secs(6));
        }
        assert!(b.next_delay() >= Duration::from_secs(4));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(120));
    }

    #[test]
    fn outage_reports_its_duration_once() {
        let mut o = Outage::new("test engine".into());
        assert_eq!(o.up(), None);
        o.down(&"refused", "nothing");
        o.down(&"refused again", "nothing");
        assert!(o.up().is_some());
        assert_eq!(o.up(), None);
    }
}
