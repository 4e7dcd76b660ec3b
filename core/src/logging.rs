//! Log output for the binary and for embedding hosts: one `tracing` subscriber writing to stderr, with
//! the level and format from the configuration.
//!
//! A process has one global subscriber: the first server to start installs it, later ones keep it. This
//! module never decides what is logged, only where it goes.

use crate::config::{Config, LogFormat};

/// Installs the stderr subscriber for `log_level` (`debug` = on wins) and `log_format`. Returns `false`
/// when the process already has a subscriber (an earlier server, or the host's own), which is kept.
pub fn init(config: &Config) -> bool {
    let level = if config.debug { "debug" } else { config.log_level.as_str() };
    let filter = tracing_subscriber::EnvFilter::try_new(format!(
        "{level},h2=warn,hyper=warn,tower=warn,async_nats=warn,rustls=warn"
    ))
    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    match config.log_format {
        LogFormat::Json => builder.json().try_init().is_ok(),
        LogFormat::Text => builder.try_init().is_ok(),
    }
}
