//! The config loader by name (flags, `ANYCABLE_*` variables, the bindings): any values for any options are set
//! or refused without a panic, an accepted value renders to text that sets the same value, and whatever
//! `finalize` accepts the server can use (no duration past the end of time, no queue a semaphore cannot count).

#![no_main]

use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use ferrocable::{Config, OPTIONS};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    /// (index into the option table, value)
    options: Vec<(u8, Value)>,
    unknown: String,
}

/// A value in text form, most often one that some option accepts: numbers at any scale (limits are the
/// interesting part), switches, and anything else.
#[derive(Arbitrary, Debug)]
enum Value {
    Number(u64),
    Switch(bool),
    Text(String),
}

impl Value {
    fn text(&self) -> String {
        match self {
            Self::Number(n) => n.to_string(),
            Self::Switch(b) => b.to_string(),
            Self::Text(s) => s.clone(),
        }
    }
}

/// What tokio's semaphores (the RPC cap, bounded channels) can count.
const SEMAPHORE_MAX: usize = usize::MAX >> 3;

fuzz_target!(|input: Input| {
    let mut config = Config::default();
    for (index, value) in &input.options {
        let name = OPTIONS[*index as usize % OPTIONS.len()].name;
        if config.set(name, &value.text()).is_ok() {
            let rendered = config.get(name).expect("a known option renders");
            let mut again = Config::default();
            again.set(name, &rendered).expect("a rendered value sets again");
            assert_eq!(again.get(name).as_deref(), Some(rendered.as_str()));
        }
    }
    assert!(config.set(&input.unknown, "1").is_err() || OPTIONS.iter().any(|o| o.name == input.unknown));
    let _ = config.describe();
    let Ok(config) = config.finalize() else { return };
    let now = Instant::now();
    for seconds in
        [config.ping_interval, config.shutdown_timeout, config.stats_refresh_interval, config.dead_peer_timeout]
    {
        assert!(now.checked_add(Duration::from_secs(seconds)).is_some());
    }
    assert!(now.checked_add(Duration::from_millis(config.rpc_request_timeout)).is_some());
    assert!(now.checked_add(config.effective_dead_peer_timeout()).is_some());
    for count in [config.rpc_concurrency, config.disconnect_backlog_size, config.client_queue_size] {
        assert!(count <= SEMAPHORE_MAX);
    }
});
