//! Server configuration: every option, its AnyCable name, its default and its parser, declared once.
//!
//! The option table below is the single source for the CLI flags and `ANYCABLE_*` variables of the
//! binary, for TOML config files, for `--print-config` and for the bindings (which pass options by
//! name). This module only holds values; it never reads the environment or the command line itself.

use std::fmt::Write as _;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A configuration problem, always naming the option it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown option `{0}`")]
    Unknown(String),
    #[error("invalid value {value:?} for option `{name}`: {reason}")]
    Invalid { name: String, value: String, reason: String },
    #[error("option `{name}`: {reason}")]
    Inconsistent { name: &'static str, reason: String },
    #[error("not valid TOML: {0}")]
    Toml(String),
}

/// How Disconnect calls are made when a client goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectMode {
    /// Call Disconnect only for sessions that used the backend.
    Auto,
    Always,
    Never,
}

/// Precision of the timestamp in ping frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PingPrecision {
    Seconds,
    Millis,
    Nanos,
}

impl PingPrecision {
    /// Parses the `ptp` query value / `ping_timestamp_precision` option.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "s" => Some(Self::Seconds),
            "ms" => Some(Self::Millis),
            "ns" => Some(Self::Nanos),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Seconds => "s",
            Self::Millis => "ms",
            Self::Nanos => "ns",
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The cluster pub/sub engine (`pubsub`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubSubAdapter {
    /// A single node: publications are delivered locally only.
    None,
    Redis,
    Nats,
}

/// Where stream history and the session cache live (`broker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerAdapter {
    /// No history, no session recovery: extended-protocol clients get plain broadcasts.
    None,
    /// In this process; one node only.
    Memory,
    /// In Redis, shared by every node.
    Redis,
    /// In NATS JetStream, shared by every node.
    Nats,
}

/// What a node subscribes to in the pub/sub engine (`pubsub_subscribe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubSubSubscribe {
    /// One engine subscription per node, receiving every publication of the cluster (the default).
    All,
    /// One engine subscription per stream that has subscribers on this node.
    Stream,
}

/// A value an option can hold: parsed from and rendered to the text form used by flags, env and files.
trait OptionValue: Sized {
    fn parse_value(raw: &str) -> Result<Self, String>;
    fn render(&self) -> String;
}

impl OptionValue for String {
    fn parse_value(raw: &str) -> Result<Self, String> {
        Ok(raw.to_owned())
    }
    fn render(&self) -> String {
        self.clone()
    }
}

impl OptionValue for Option<String> {
    fn parse_value(raw: &str) -> Result<Self, String> {
        Ok((!raw.is_empty()).then(|| raw.to_owned()))
    }
    fn render(&self) -> String {
        self.clone().unwrap_or_default()
    }
}

impl OptionValue for bool {
    fn parse_value(raw: &str) -> Result<Self, String> {
        match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            // An empty value (e.g. `ANYCABLE_NOAUTH=`) must never switch something on by accident.
            "" | "false" | "0" | "no" | "off" => Ok(false),
            _ => Err("expected true or false".into()),
        }
    }
    fn render(&self) -> String {
        self.to_string()
    }
}

macro_rules! numeric_option {
    ($($t:ty),*) => {$(
        impl OptionValue for $t {
            fn parse_value(raw: &str) -> Result<Self, String> {
                raw.trim().parse::<$t>().map_err(|e| e.to_string())
            }
            fn render(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
numeric_option!(u16, u32, u64, usize);

impl OptionValue for Vec<String> {
    fn parse_value(raw: &str) -> Result<Self, String> {
        Ok(raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
    }
    fn render(&self) -> String {
        self.join(",")
    }
}

impl OptionValue for DisconnectMode {
    fn parse_value(raw: &str) -> Result<Self, String> {
        match raw {
            "auto" => Ok(Self::Auto),
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            _ => Err("expected auto, always or never".into()),
        }
    }
    fn render(&self) -> String {
        match self {
            Self::Auto => "auto",
            Self::Always => "always",
            Self::Never => "never",
        }
        .into()
    }
}

impl OptionValue for PingPrecision {
    fn parse_value(raw: &str) -> Result<Self, String> {
        Self::parse(raw).ok_or_else(|| "expected s, ms or ns".into())
    }
    fn render(&self) -> String {
        self.as_str().into()
    }
}

impl OptionValue for LogFormat {
    fn parse_value(raw: &str) -> Result<Self, String> {
        match raw {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err("expected text or json".into()),
        }
    }
    fn render(&self) -> String {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
        .into()
    }
}

impl OptionValue for PubSubAdapter {
    fn parse_value(raw: &str) -> Result<Self, String> {
        match raw {
            "" | "none" => Ok(Self::None),
            "redis" => Ok(Self::Redis),
            "nats" => Ok(Self::Nats),
            _ => Err("expected redis, nats or none".into()),
        }
    }
    fn render(&self) -> String {
        match self {
            Self::None => "none",
            Self::Redis => "redis",
            Self::Nats => "nats",
        }
        .into()
    }
}

impl OptionValue for BrokerAdapter {
    fn parse_value(raw: &str) -> Result<Self, String> {
        match raw {
            "" | "none" => Ok(Self::None),
            "memory" => Ok(Self::Memory),
            "redis" => Ok(Self::Redis),
            "nats" => Ok(Self::Nats),
            _ => Err("expected memory, redis, nats or none".into()),
        }
    }
    fn render(&self) -> String {
        match self {
            Self::None => "none",
            Self::Memory => "memory",
            Self::Redis => "redis",
            Self::Nats => "nats",
        }
        .into()
    }
}

impl OptionValue for PubSubSubscribe {
    fn parse_value(raw: &str) -> Result<Self, String> {
        match raw {
            "stream" => Ok(Self::Stream),
            "all" => Ok(Self::All),
            _ => Err("expected stream or all".into()),
        }
    }
    fn render(&self) -> String {
        match self {
            Self::Stream => "stream",
            Self::All => "all",
        }
        .into()
    }
}

/// Describes one option for flag/env/file front ends.
#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    /// AnyCable name, e.g. `rpc_host`; the flag is `--rpc_host`, the env var `ANYCABLE_RPC_HOST`.
    pub name: &'static str,
    /// Default in text form (empty = unset).
    pub default: &'static str,
    /// One line of help (may start with a space; see [`OptionSpec::help`]).
    help_text: &'static str,
    /// `true` for switches that may be given without a value (`--public`).
    pub switch: bool,
}

impl OptionSpec {
    /// One line of help.
    pub fn help(&self) -> &'static str {
        self.help_text.trim()
    }

    /// The environment variable carrying this option.
    pub fn env_var(&self) -> String {
        format!("ANYCABLE_{}", self.name.to_ascii_uppercase())
    }

    /// Whether the value is a secret that help texts, logs and `--print-config` must never show.
    pub fn is_secret(&self) -> bool {
        is_secret(self.name)
    }
}

macro_rules! options {
    ($( $(#[doc = $doc:literal])* $name:ident : $ty:ty = $default:literal, $switch:literal; )*) => {
        /// Every server option. Build with [`Config::default`] and [`Config::set`]. Its `Debug` form hides
        /// secrets like [`Config::describe`] does.
        #[derive(Clone)]
        pub struct Config {
            $( $(#[doc = $doc])* pub $name: $ty, )*
        }

        impl Default for Config {
            fn default() -> Self {
                Self {
                    $( $name: match <$ty as OptionValue>::parse_value($default) {
                        Ok(v) => v,
                        Err(e) => panic!("default of {} does not parse: {e}", stringify!($name)),
                    }, )*
                }
            }
        }

        /// All options, in documentation order.
        pub const OPTIONS: &[OptionSpec] = &[
            $( OptionSpec { name: stringify!($name), default: $default, help_text: concat!($($doc),*), switch: $switch }, )*
        ];

        impl Config {
            /// Sets one option from its text form. Unknown names and bad values are errors naming the option.
            pub fn set(&mut self, name: &str, raw: &str) -> Result<(), ConfigError> {
                match name {
                    $( stringify!($name) => {
                        self.$name = <$ty as OptionValue>::parse_value(raw).map_err(|reason| ConfigError::Invalid {
                            name: name.to_owned(),
                            value: raw.to_owned(),
                            reason,
                        })?;
                        Ok(())
                    } )*
                    _ => Err(ConfigError::Unknown(name.to_owned())),
                }
            }

            /// The current value of an option in text form.
            pub fn get(&self, name: &str) -> Option<String> {
                match name {
                    $( stringify!($name) => Some(<$ty as OptionValue>::render(&self.$name)), )*
                    _ => None,
                }
            }
        }
    };
}

options! {
    /// Host the main listener binds to
    host: String = "localhost", false;
    /// Port of the main listener (WebSocket, health, and broadcasts when a key is set)
    port: u16 = "8080", false;
    /// WebSocket path(s), comma-separated
    path: Vec<String> = "/cable", false;
    /// Allowed Origin host names, comma-separated, `*` wildcards; empty allows any
    allowed_origins: Vec<String> = "", false;
    /// TLS certificate chain (PEM file) of every listener: wss:// and https://; needs ssl_key
    ssl_cert: Option<String> = "", false;
    /// Private key (PEM file) of ssl_cert
    ssl_key: Option<String> = "", false;
    /// RPC backend: gRPC host:port, or an http:// / https:// URL for HTTP RPC
    rpc_host: String = "localhost:50051", false;
    /// Connect to the gRPC backend over TLS (on by itself when rpc_tls_root_ca is set); HTTP RPC uses https://
    rpc_enable_tls: bool = "false", true;
    /// Verify the RPC backend's certificate and host name; false is for development only
    rpc_tls_verify: bool = "true", true;
    /// CA certificate(s) the RPC backend's certificate must chain to: a PEM file path or PEM contents; system CAs when unset
    rpc_tls_root_ca: Option<String> = "", false;
    /// Bearer key sent to an HTTP RPC backend; derived from `secret` when unset
    http_rpc_secret: Option<String> = "", false;
    /// Do not use an RPC backend at all
    norpc: bool = "false", true;
    /// Request headers forwarded to the backend, comma-separated
    headers: Vec<String> = "cookie", false;
    /// Cookies forwarded to the backend, comma-separated; empty forwards all
    proxy_cookies: Vec<String> = "", false;
    /// Maximum number of in-flight RPC calls
    rpc_concurrency: usize = "28", false;
    /// Timeout of one RPC call in milliseconds; 0 means none for gRPC and 3000 for HTTP RPC
    rpc_request_timeout: u64 = "0", false;
    /// Application secret; derives the broadcast key when none is given
    secret: Option<String> = "", false;
    /// Bearer key for HTTP broadcasts; `none` disables authentication
    broadcast_key: Option<String> = "", false;
    /// Accept every connection without calling the backend
    noauth: bool = "false", true;
    /// Allow subscriptions to unsigned `$pubsub` streams
    public_streams: bool = "false", true;
    /// Shortcut for noauth + public_streams + broadcast_key=none
    public: bool = "false", true;
    /// Secret verifying JWT identification tokens (HS256/384/512); defaults to `secret`
    jwt_secret: Option<String> = "", false;
    /// Query parameter carrying the JWT token; the header is `X-<jwt_param>`
    jwt_param: String = "jid", false;
    /// Reject connections that bring no JWT token
    enforce_jwt: bool = "false", true;
    /// Secret verifying signed stream names; defaults to `secret`
    streams_secret: Option<String> = "", false;
    /// Allow whispers on signed `$pubsub` streams (public streams always allow them)
    streams_whisper: bool = "false", true;
    /// Allow presence (join, leave, info) on signed `$pubsub` streams (public streams always allow it; needs a broker)
    streams_presence: bool = "true", true;
    /// Whispers per second one connection may send (bursts up to as many); more are dropped; 0 means no limit
    whisper_rate: u32 = "20", false;
    /// Confirm signed `Turbo::StreamsChannel` subscriptions without the backend
    turbo_streams: bool = "false", true;
    /// Secret verifying Turbo Streams names; defaults to `streams_secret`
    turbo_streams_secret: Option<String> = "", false;
    /// Broadcast ingress adapters, comma-separated: http, redis, redisx, nats
    broadcast_adapter: Vec<String> = "http", false;
    /// Port of the HTTP broadcast endpoint
    http_broadcast_port: u16 = "8090", false;
    /// Path of the HTTP broadcast endpoint
    http_broadcast_path: String = "/_broadcast", false;
    /// Largest accepted HTTP broadcast body in bytes
    http_broadcast_max_body: usize = "4194304", false;
    /// Seconds an HTTP broadcast body may take to arrive after its headers; a slower one gets 408 and the connection is closed
    http_broadcast_body_timeout: u64 = "10", false;
    /// Serve Server-Sent Events clients (EventSource) at sse_path
    sse: bool = "false", true;
    /// Path of the Server-Sent Events endpoint
    sse_path: String = "/events", false;
    /// Serve long-polling clients at poll_path (AnyCable Pro's protocol)
    poll: bool = "false", true;
    /// Path of the long-polling endpoint
    poll_path: String = "/lp", false;
    /// Seconds a poll request waits for something to answer with
    poll_interval: u64 = "15", false;
    /// Milliseconds the answer to a poll waits for more messages once it has one
    poll_flush_interval: u64 = "500", false;
    /// Largest poll request body (commands) in bytes
    poll_max_request_size: usize = "65536", false;
    /// Seconds a long-polling session is kept between polls before it ends
    poll_keepalive_timeout: u64 = "5", false;
    /// Port of the REST API (POST <api_path>/publish); 0 serves it on the main port
    api_port: u16 = "0", false;
    /// Base path of the REST API
    api_path: String = "/api", false;
    /// Bearer key of the REST API; derived from `secret` when unset
    api_secret: Option<String> = "", false;
    /// Cluster pub/sub engine: redis, nats or none
    pubsub: PubSubAdapter = "none", false;
    /// Pub/sub subscriptions of a node: all (every publication) or stream (one per stream with local subscribers)
    pubsub_subscribe: PubSubSubscribe = "all", false;
    /// Stream history and session cache: memory (one node), redis, nats or none
    broker: BrokerAdapter = "none", false;
    /// Messages kept in each stream's history
    history_limit: usize = "100", false;
    /// Seconds a message is kept in a stream's history
    history_ttl: u64 = "300", false;
    /// Seconds a disconnected session is kept for recovery; 0 disables session recovery
    sessions_ttl: u64 = "300", false;
    /// Seconds a disconnected session's presence records are kept before its members leave
    presence_ttl: u64 = "15", false;
    /// Configuration presets, comma-separated: broker (history and session recovery with the engines configured)
    presets: Vec<String> = "", false;
    /// Serve Durable Streams reads (catch-up, long-poll, SSE) from the broker's history at ds_path; needs a broker
    ds: bool = "false", true;
    /// Path prefix of Durable Streams reads: <ds_path>/<stream>
    ds_path: String = "/ds", false;
    /// Skip client authentication of Durable Streams readers (their streams are still authorized)
    ds_skip_auth: bool = "false", true;
    /// Seconds a Durable Streams long-poll waits for a message before answering 204
    ds_poll_interval: u64 = "10", false;
    /// Seconds a Durable Streams SSE response lasts before the client reconnects
    ds_sse_ttl: u64 = "60", false;
    /// Redis URL (also REDIS_URL) for the redis and redisx broadcasters and the redis pub/sub
    redis_url: String = "redis://localhost:6379/5", false;
    /// Redis broadcast channel and stream name; also the prefix of the pub/sub channels
    redis_channel: String = "__anycable__", false;
    /// NATS server URLs, comma-separated
    nats_servers: Vec<String> = "nats://localhost:4222", false;
    /// NATS broadcast subject; also the prefix of the pub/sub subjects
    nats_channel: String = "__anycable__", false;
    /// Start a nats-server child process with this node and use it as nats_servers
    embed_nats: bool = "false", true;
    /// Client address of the embedded NATS server
    enats_addr: String = "nats://127.0.0.1:4222", false;
    /// Cluster (routes) address of the embedded NATS server, e.g. nats://0.0.0.0:4248
    enats_cluster: String = "", false;
    /// Cluster name of the embedded NATS server
    enats_cluster_name: String = "anycable-cluster", false;
    /// Cluster addresses of the other embedded NATS servers, comma-separated
    enats_cluster_routes: Vec<String> = "", false;
    /// Gateway address of the embedded NATS server (super-clusters)
    enats_gateway: String = "", false;
    /// Known gateways, semicolon-separated: name_a:url1,url2;name_b:url3
    enats_gateways: String = "", false;
    /// Address the embedded NATS gateway advertises
    enats_gateway_advertise: String = "", false;
    /// Server name of the embedded NATS server; generated when empty
    enats_server_name: String = "", false;
    /// JetStream store folder of the embedded NATS server (used with broker=nats); <temp>/nats-data/<server name> when empty
    enats_store_dir: String = "", false;
    /// Forward the embedded NATS server's debug log
    enats_debug: bool = "false", true;
    /// Forward the embedded NATS server's protocol trace
    enats_trace: bool = "false", true;
    /// Seconds between ping frames
    ping_interval: u64 = "3", false;
    /// Precision of ping timestamps: s, ms or ns
    ping_timestamp_precision: PingPrecision = "s", false;
    /// Seconds a vanished client (no close frame, no FIN) may leave sent pings unacknowledged before its connection is dropped and its Disconnect runs; 0 derives max(3 × ping_interval, 10)
    dead_peer_timeout: u64 = "0", false;
    /// Disconnect calls per second
    disconnect_rate: u32 = "100", false;
    /// When to call Disconnect: auto, always or never
    disconnect_mode: DisconnectMode = "auto", false;
    /// Capacity of the pending Disconnect calls queue
    disconnect_backlog_size: usize = "4096", false;
    /// Seconds allowed for a graceful shutdown
    shutdown_timeout: u64 = "30", false;
    /// Largest client frame in bytes; larger frames close the connection with 1009
    max_message_size: usize = "65536", false;
    /// Maximum number of connections; 0 means no limit
    max_conn: usize = "0", false;
    /// Seconds a new connection has to complete its TLS handshake and its HTTP request head (AnyCable-Go: 5)
    read_header_timeout: u64 = "5", false;
    /// Connections of one listener that may be waiting for their request head at once; more are closed at once; 0 means no limit
    max_pending_conn: usize = "4096", false;
    /// Seconds a keep-alive HTTP connection (broadcast, metrics, health) may wait for its next request
    http_idle_timeout: u64 = "30", false;
    /// Maximum subscriptions of one connection; a subscribe beyond it is rejected without a call; 0 means no limit
    max_subscriptions: usize = "0", false;
    /// Frames queued for one client before it is disconnected as too slow
    client_queue_size: usize = "1024", false;
    /// Kernel send buffer of a client socket in bytes (SO_SNDBUF); 0 leaves its size to the kernel
    client_send_buffer_size: usize = "0", false;
    /// Commands (subscribe, unsubscribe, message) per second one connection may send; more are dropped without
    /// reaching the backend, and a connection that keeps it up is disconnected; 0 means no limit
    command_rate_limit: u32 = "0", false;
    /// Commands one connection may send at once before command_rate_limit applies; 0 means as many as
    /// command_rate_limit
    command_rate_burst: u32 = "0", false;
    /// Health check path
    health_path: String = "/health", false;
    /// Path of the Prometheus metrics endpoint (e.g. /metrics); empty disables it
    metrics_http: String = "", false;
    /// Host of a separate metrics listener (with metrics_port)
    metrics_host: String = "", false;
    /// Port of a separate metrics listener; 0 serves metrics on the main port
    metrics_port: u16 = "0", false;
    /// Prefix of every metric name
    metrics_prefix: String = "anycable_go", false;
    /// Seconds between one-line stats in the log; 0 disables them
    stats_refresh_interval: u64 = "0", false;
    /// Log level: error, warn, info, debug or trace
    log_level: String = "info", false;
    /// Log format: text or json
    log_format: LogFormat = "text", false;
    /// Shortcut for log_level=debug
    debug: bool = "false", true;
}

impl Config {
    /// Sets every option of a TOML config file (top-level `name = value` pairs, the option names of the table
    /// above). Strings, numbers and booleans are taken in their text form, arrays as comma-separated lists.
    pub fn set_from_toml(&mut self, text: &str) -> Result<(), ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            // Only the position, not the offending line: it may hold a secret.
            let line = e.span().map(|span| {
                let before = &text.as_bytes()[..span.start.min(text.len())];
                before.iter().filter(|b| **b == b'\n').count() + 1
            });
            let at = line.map(|line| format!(" (line {line})")).unwrap_or_default();
            ConfigError::Toml(format!("{}{at}", e.message().trim_end()))
        })?;
        for (name, value) in table {
            let raw = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Array(items) => items
                    .into_iter()
                    .map(|v| match v {
                        toml::Value::String(s) => s,
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                other => {
                    return Err(ConfigError::Invalid {
                        name,
                        value: other.type_str().to_owned(),
                        reason: "expected a string, number, boolean or array".into(),
                    });
                }
            };
            self.set(&name, &raw)?;
        }
        Ok(())
    }

    /// Applies the shortcut options (`public`, `debug`) and checks combinations. Call once after loading.
    pub fn finalize(mut self) -> Result<Self, ConfigError> {
        if self.public {
            self.noauth = true;
            self.public_streams = true;
            self.broadcast_key = Some("none".into());
        }
        if self.debug {
            self.log_level = "debug".into();
        }
        for preset in std::mem::take(&mut self.presets) {
            match preset.as_str() {
                "broker" => self.apply_broker_preset(),
                "none" => {}
                other => {
                    return Err(ConfigError::Inconsistent {
                        name: "presets",
                        reason: format!("preset {other:?} is not supported (supported: broker, none)"),
                    });
                }
            }
            self.presets.push(preset);
        }
        if !self.metrics_http.is_empty() && !self.metrics_http.starts_with('/') {
            return Err(ConfigError::Inconsistent { name: "metrics_http", reason: "must start with '/'".into() });
        }
        if self.poll_interval == 0 || self.poll_keepalive_timeout == 0 {
            let name = if self.poll_interval == 0 { "poll_interval" } else { "poll_keepalive_timeout" };
            return Err(ConfigError::Inconsistent { name, reason: "must be at least 1 second".into() });
        }
        for (name, value) in
            [("sse_path", &self.sse_path), ("api_path", &self.api_path), ("poll_path", &self.poll_path)]
        {
            if !value.starts_with('/') || value.len() < 2 {
                return Err(ConfigError::Inconsistent {
                    name,
                    reason: format!("{value:?} must start with '/' and name a path"),
                });
            }
        }
        if self.path.is_empty() {
            return Err(ConfigError::Inconsistent { name: "path", reason: "at least one path is required".into() });
        }
        if let Some(bad) = self.path.iter().find(|p| !p.starts_with('/')) {
            return Err(ConfigError::Inconsistent { name: "path", reason: format!("{bad:?} must start with '/'") });
        }
        if self.ping_interval == 0 {
            return Err(ConfigError::Inconsistent {
                name: "ping_interval",
                reason: "must be at least 1 second".into(),
            });
        }
        if self.rpc_concurrency == 0 {
            return Err(ConfigError::Inconsistent { name: "rpc_concurrency", reason: "must be at least 1".into() });
        }
        if self.disconnect_rate == 0 {
            return Err(ConfigError::Inconsistent { name: "disconnect_rate", reason: "must be at least 1".into() });
        }
        if self.client_queue_size == 0 {
            return Err(ConfigError::Inconsistent { name: "client_queue_size", reason: "must be at least 1".into() });
        }
        for (name, seconds) in [
            ("read_header_timeout", self.read_header_timeout),
            ("http_idle_timeout", self.http_idle_timeout),
            ("http_broadcast_body_timeout", self.http_broadcast_body_timeout),
            ("presence_ttl", self.presence_ttl),
        ] {
            if seconds == 0 {
                return Err(ConfigError::Inconsistent { name, reason: "must be at least 1 second".into() });
            }
        }
        // What finalize accepts must be usable: a duration past the end of time or a queue larger than a
        // semaphore can count would make the server panic at start or at shutdown instead of refusing here.
        for (name, seconds) in [
            ("ping_interval", self.ping_interval),
            ("shutdown_timeout", self.shutdown_timeout),
            ("stats_refresh_interval", self.stats_refresh_interval),
            ("dead_peer_timeout", self.dead_peer_timeout),
            ("rpc_request_timeout", self.rpc_request_timeout / 1000),
            ("history_ttl", self.history_ttl),
            ("sessions_ttl", self.sessions_ttl),
            ("presence_ttl", self.presence_ttl),
            ("read_header_timeout", self.read_header_timeout),
            ("http_idle_timeout", self.http_idle_timeout),
            ("http_broadcast_body_timeout", self.http_broadcast_body_timeout),
            ("ds_poll_interval", self.ds_poll_interval),
            ("ds_sse_ttl", self.ds_sse_ttl),
        ] {
            if seconds > MAX_SECONDS {
                return Err(ConfigError::Inconsistent {
                    name,
                    reason: format!("must be at most {MAX_SECONDS} seconds"),
                });
            }
        }
        for (name, count) in [
            ("rpc_concurrency", self.rpc_concurrency),
            ("disconnect_backlog_size", self.disconnect_backlog_size),
            ("client_queue_size", self.client_queue_size),
            ("client_send_buffer_size", self.client_send_buffer_size),
            ("history_limit", self.history_limit),
            ("max_pending_conn", self.max_pending_conn),
        ] {
            if count > MAX_COUNT {
                return Err(ConfigError::Inconsistent { name, reason: format!("must be at most {MAX_COUNT}") });
            }
        }
        if let Some(unknown) = self.broadcast_adapter.iter().find(|a| !BROADCAST_ADAPTERS.contains(&a.as_str())) {
            return Err(ConfigError::Inconsistent {
                name: "broadcast_adapter",
                reason: format!("adapter {unknown:?} is not supported (supported: {})", BROADCAST_ADAPTERS.join(", ")),
            });
        }
        self.finalize_engines()?;
        self.finalize_ds()?;
        if self.jwt_param.is_empty()
            || !self.jwt_param.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ConfigError::Inconsistent {
                name: "jwt_param",
                reason: format!("{:?} must be a non-empty name of letters, digits, '-' or '_'", self.jwt_param),
            });
        }
        if self.enforce_jwt && self.jwt_secret().is_none() {
            return Err(ConfigError::Inconsistent {
                name: "enforce_jwt",
                reason: "needs a key to verify tokens: set jwt_secret or secret".into(),
            });
        }
        if self.turbo_streams && self.turbo_streams_secret().is_none() {
            return Err(ConfigError::Inconsistent {
                name: "turbo_streams",
                reason: "needs a key to verify signed stream names: set turbo_streams_secret, streams_secret or secret"
                    .into(),
            });
        }
        match (&self.ssl_cert, &self.ssl_key) {
            (Some(_), None) => {
                return Err(ConfigError::Inconsistent {
                    name: "ssl_key",
                    reason: "ssl_cert is set: give the private key of that certificate too (or neither)".into(),
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::Inconsistent {
                    name: "ssl_cert",
                    reason: "ssl_key is set: give the certificate of that key too (or neither)".into(),
                });
            }
            _ => {}
        }
        self.finalize_rpc_host()?;
        // Sharing the main port with an open broadcast endpoint is only allowed when asked for explicitly.
        let key_configured = self.broadcast_key.is_some() || self.secret.is_some();
        if self.port != 0 && self.http_broadcast_port == self.port && self.http_broadcast_enabled() && !key_configured {
            return Err(ConfigError::Inconsistent {
                name: "http_broadcast_port",
                reason: "broadcasting on the main port requires a broadcast key (set broadcast_key or secret, or broadcast_key=none to allow anyone)".into(),
            });
        }
        Ok(self)
    }

    /// The `broker` preset, as AnyCable applies it: options left at their defaults are set for history and
    /// session recovery with the engines that are configured (an embedded NATS server, else Redis when
    /// `redis_url` was given, else memory on one node); options given explicitly are kept.
    fn apply_broker_preset(&mut self) {
        let defaults = Config::default();
        let redis = self.redis_url != defaults.redis_url;
        if self.broker == defaults.broker {
            self.broker = if self.embed_nats {
                BrokerAdapter::Nats
            } else if redis {
                BrokerAdapter::Redis
            } else {
                BrokerAdapter::Memory
            };
        }
        if self.broadcast_adapter == defaults.broadcast_adapter {
            self.broadcast_adapter = match (self.embed_nats, redis) {
                (true, _) => vec!["http".into(), "nats".into()],
                (false, true) => vec!["http".into(), "redisx".into(), "redis".into()],
                (false, false) => vec!["http".into()],
            };
        }
        if self.pubsub == defaults.pubsub {
            self.pubsub = match (self.embed_nats, redis) {
                (true, _) => PubSubAdapter::Nats,
                (false, true) => PubSubAdapter::Redis,
                (false, false) => PubSubAdapter::None,
            };
        }
    }

    /// `rpc_host` is a gRPC address (host:port, `grpc://` stripped) or an `http://` / `https://` URL.
    fn finalize_rpc_host(&mut self) -> Result<(), ConfigError> {
        if self.rpc_http() {
            let rest = self.rpc_host.split_once("://").map(|(_, rest)| rest).unwrap_or_default();
            if rest.is_empty() || rest.starts_with('/') {
                return Err(ConfigError::Inconsistent {
                    name: "rpc_host",
                    reason: format!(
                        "{:?}: an HTTP RPC URL needs a host, e.g. http://localhost:3000/_anycable",
                        self.rpc_host
                    ),
                });
            }
            if self.rpc_enable_tls && self.rpc_host.starts_with("http://") {
                return Err(ConfigError::Inconsistent {
                    name: "rpc_enable_tls",
                    reason: format!(
                        "{:?} is plain HTTP: for TLS to an HTTP RPC backend use an https:// URL",
                        self.rpc_host
                    ),
                });
            }
            return Ok(());
        }
        let grpc_target = self.rpc_host.strip_prefix("grpc://").unwrap_or(&self.rpc_host).to_owned();
        if grpc_target.contains("://") {
            // AnyCable has no TLS scheme for gRPC; say how TLS is asked for instead.
            let hint = match grpc_target.split("://").next() {
                Some("grpcs") => "; for TLS give host:port and set rpc_enable_tls",
                _ => "",
            };
            return Err(ConfigError::Inconsistent {
                name: "rpc_host",
                reason: format!(
                    "{:?}: expected a gRPC backend (host:port or grpc://host:port) or an HTTP RPC URL (http:// or https://){hint}",
                    self.rpc_host
                ),
            });
        }
        self.rpc_host = grpc_target;
        Ok(())
    }

    /// Whether the backend is reached over HTTP RPC (`rpc_host` starts with `http://` or `https://`).
    pub fn rpc_http(&self) -> bool {
        let scheme = self.rpc_host.split_once("://").map(|(scheme, _)| scheme.to_ascii_lowercase());
        matches!(scheme.as_deref(), Some("http" | "https"))
    }

    /// The bearer key HTTP RPC requests carry, if any: `http_rpc_secret`, else derived from `secret`.
    pub fn http_rpc_secret(&self) -> Option<String> {
        match self.http_rpc_secret.as_deref() {
            Some(key) => Some(key.to_owned()),
            None => self.secret.as_deref().map(|s| derive_key(s, "rpc-cable")),
        }
    }

    /// `rpc_request_timeout` of HTTP RPC: AnyCable's 3 s when unset.
    pub fn http_rpc_timeout(&self) -> Duration {
        self.rpc_timeout().unwrap_or(Duration::from_secs(3))
    }

    /// Whether the HTTP broadcaster is enabled.
    pub fn http_broadcast_enabled(&self) -> bool {
        self.broadcast_adapter_enabled("http")
    }

    /// Whether the broadcaster `name` (`http`, `redis`, `redisx`, `nats`) is enabled.
    pub fn broadcast_adapter_enabled(&self, name: &str) -> bool {
        self.broadcast_adapter.iter().any(|a| a == name)
    }

    /// Checks the Durable Streams options when `ds` is on: reads are served from the broker's history.
    fn finalize_ds(&self) -> Result<(), ConfigError> {
        if !self.ds {
            return Ok(());
        }
        if self.broker == BrokerAdapter::None {
            return Err(ConfigError::Inconsistent {
                name: "ds",
                reason:
                    "Durable Streams are read from stream history: set broker (memory, redis or nats) or presets=broker"
                        .into(),
            });
        }
        let path = self.ds_path.trim_end_matches('/');
        if !self.ds_path.starts_with('/')
            || path.is_empty()
            || !path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b))
        {
            return Err(ConfigError::Inconsistent {
                name: "ds_path",
                reason: format!(
                    "{:?} must be a path like /ds (letters, digits, '/', '-', '_', '.', '~')",
                    self.ds_path
                ),
            });
        }
        for (name, seconds) in [("ds_poll_interval", self.ds_poll_interval), ("ds_sse_ttl", self.ds_sse_ttl)] {
            if seconds == 0 {
                return Err(ConfigError::Inconsistent { name, reason: "must be at least 1 second".into() });
            }
        }
        Ok(())
    }

    /// Checks the Redis and NATS options that are in use, and points `nats_servers` at the embedded
    /// NATS server when it was left at its default (as AnyCable does).
    fn finalize_engines(&mut self) -> Result<(), ConfigError> {
        let uses_redis = self.pubsub == PubSubAdapter::Redis
            || self.broker == BrokerAdapter::Redis
            || self.broadcast_adapter_enabled("redis")
            || self.broadcast_adapter_enabled("redisx");
        if uses_redis {
            let scheme = self.redis_url.split("://").next().unwrap_or_default();
            if !self.redis_url.contains("://") || !matches!(scheme, "redis" | "unix" | "redis+unix") {
                return Err(ConfigError::Inconsistent {
                    name: "redis_url",
                    reason: format!(
                        "{:?}: expected redis://[user:password@]host[:port][/db] (rediss:// TLS is not supported)",
                        self.redis_url
                    ),
                });
            }
            if self.redis_channel.is_empty() {
                return Err(ConfigError::Inconsistent { name: "redis_channel", reason: "must not be empty".into() });
            }
        }
        if self.embed_nats {
            crate::enats::parse_nats_addr(&self.enats_addr)
                .map_err(|reason| ConfigError::Inconsistent { name: "enats_addr", reason })?;
            if !self.enats_cluster.is_empty() {
                crate::enats::parse_nats_addr(&self.enats_cluster)
                    .map_err(|reason| ConfigError::Inconsistent { name: "enats_cluster", reason })?;
            }
            if self.nats_servers == [DEFAULT_NATS_SERVERS] {
                self.nats_servers = vec![self.enats_addr.clone()];
            }
        }
        let uses_nats = self.pubsub == PubSubAdapter::Nats
            || self.broker == BrokerAdapter::Nats
            || self.broadcast_adapter_enabled("nats");
        if uses_nats {
            if self.nats_servers.is_empty() {
                return Err(ConfigError::Inconsistent {
                    name: "nats_servers",
                    reason: "at least one server is required".into(),
                });
            }
            let bad_subject = |s: &str| s.is_empty() || s.chars().any(|c| c.is_whitespace() || c == '*' || c == '>');
            if bad_subject(&self.nats_channel) || self.nats_channel.split('.').any(str::is_empty) {
                return Err(ConfigError::Inconsistent {
                    name: "nats_channel",
                    reason: format!("{:?} is not a valid NATS subject", self.nats_channel),
                });
            }
        }
        Ok(())
    }

    /// The bearer key HTTP broadcasts must carry, if any: `broadcast_key`, else derived from `secret`.
    pub fn broadcast_key(&self) -> Option<String> {
        match self.broadcast_key.as_deref() {
            Some("none") => None,
            Some(key) => Some(key.to_owned()),
            None => self.secret.as_deref().map(|s| derive_key(s, "broadcast-cable")),
        }
    }

    /// The bearer key REST API requests must carry, if any: `api_secret`, else derived from `secret`.
    pub fn api_secret(&self) -> Option<String> {
        match self.api_secret.as_deref() {
            Some(key) => Some(key.to_owned()),
            None => self.secret.as_deref().map(|s| derive_key(s, "api-cable")),
        }
    }

    /// Whether the REST API is served. As in AnyCable-Go, an API that nothing protects is not: it needs a key
    /// (`api_secret` or `secret`), a port of its own (`api_port`, e.g. not exposed), or `public`.
    pub fn api_enabled(&self) -> bool {
        self.api_secret().is_some() || self.api_port != 0 || self.public
    }

    /// The key JWT tokens are verified with: `jwt_secret`, else `secret`. `None` turns JWT identification off.
    pub fn jwt_secret(&self) -> Option<&str> {
        self.jwt_secret.as_deref().or(self.secret.as_deref())
    }

    /// The key signed `$pubsub` stream names are verified with: `streams_secret`, else `secret`.
    pub fn streams_secret(&self) -> Option<&str> {
        self.streams_secret.as_deref().or(self.secret.as_deref())
    }

    /// The key signed Turbo Streams names are verified with: `turbo_streams_secret`, else the streams secret.
    pub fn turbo_streams_secret(&self) -> Option<&str> {
        self.turbo_streams_secret.as_deref().or_else(|| self.streams_secret())
    }

    /// Whether the backend is called at all.
    pub fn rpc_enabled(&self) -> bool {
        !self.norpc
    }

    /// Whether the RPC client uses TLS: an https:// HTTP RPC URL; for gRPC asked for with `rpc_enable_tls`, or
    /// implied by a root CA (as in AnyCable).
    pub fn rpc_tls_enabled(&self) -> bool {
        if self.rpc_http() {
            return self.rpc_host.get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://"));
        }
        self.rpc_enable_tls || self.rpc_tls_root_ca.is_some()
    }

    /// Whether the listeners serve TLS (`ssl_cert` and `ssl_key`).
    pub fn tls_listener(&self) -> bool {
        self.ssl_cert.is_some() && self.ssl_key.is_some()
    }

    /// `rpc_request_timeout` as a duration, `None` when unset.
    pub fn rpc_timeout(&self) -> Option<Duration> {
        (self.rpc_request_timeout > 0).then(|| Duration::from_millis(self.rpc_request_timeout))
    }

    /// How long a client may leave what the server sent it unacknowledged before it counts as gone:
    /// `dead_peer_timeout`, or three ping intervals but at least 10 s, so a few lost packets on a bad mobile
    /// link never end a live connection.
    pub fn effective_dead_peer_timeout(&self) -> Duration {
        match self.dead_peer_timeout {
            0 => Duration::from_secs((3 * self.ping_interval).max(10)),
            secs => Duration::from_secs(secs),
        }
    }

    /// The whole configuration as TOML-like `name = value` lines, with secrets masked.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for spec in OPTIONS {
            let _ = writeln!(out, "{} = {:?}", spec.name, self.shown(spec.name));
        }
        out
    }

    /// An option's value as logs and `--print-config` may show it: secrets and URL passwords hidden.
    fn shown(&self, name: &str) -> String {
        let value = self.get(name).unwrap_or_default();
        if is_secret(name) && !value.is_empty() && value != "none" {
            "[hidden]".to_owned()
        } else if matches!(name, "redis_url" | "nats_servers") {
            value.split(',').map(redact_url).collect::<Vec<_>>().join(",")
        } else {
            value
        }
    }
}

/// `{:?}` of a configuration must be as safe to log as `--print-config`.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = f.debug_struct("Config");
        for spec in OPTIONS {
            out.field(spec.name, &self.shown(spec.name));
        }
        out.finish()
    }
}

/// The longest duration option accepted (a year, in seconds).
const MAX_SECONDS: u64 = 365 * 24 * 3600;

/// The largest concurrency or queue size accepted: far beyond any real use, far below what a semaphore can count.
const MAX_COUNT: usize = 1 << 30;

/// Every broadcaster `broadcast_adapter` accepts.
pub const BROADCAST_ADAPTERS: [&str; 4] = ["http", "redis", "redisx", "nats"];

/// The default of `nats_servers`; replaced by `enats_addr` when `embed_nats` is on.
const DEFAULT_NATS_SERVERS: &str = "nats://localhost:4222";

/// A URL with its password (if any) replaced by `[hidden]`, for logs and `--print-config`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or_default();
            let hidden = if rest[..at].contains(':') { format!("{user}:[hidden]") } else { "[hidden]".to_owned() };
            format!("{scheme}://{hidden}{}", &rest[at..])
        }
        None => url.to_owned(),
    }
}

fn is_secret(name: &str) -> bool {
    matches!(
        name,
        "secret"
            | "broadcast_key"
            | "http_rpc_secret"
            | "jwt_secret"
            | "streams_secret"
            | "turbo_streams_secret"
            | "api_secret"
    )
}

/// Derives one of AnyCable's purpose keys: hex HMAC-SHA256 with `secret` as the key and `purpose` as the message.
pub fn derive_key(secret: &str, purpose: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(purpose.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_reference() {
        let c = Config::default();
        assert_eq!(c.port, 8080);
        assert_eq!(c.path, vec!["/cable".to_string()]);
        assert_eq!(c.rpc_host, "localhost:50051");
        assert_eq!(c.rpc_concurrency, 28);
        assert_eq!(c.headers, vec!["cookie".to_string()]);
        assert_eq!(c.http_broadcast_port, 8090);
        assert_eq!(c.ping_interval, 3);
        assert_eq!(c.disconnect_rate, 100);
        assert_eq!(c.disconnect_mode, DisconnectMode::Auto);
        assert_eq!(c.shutdown_timeout, 30);
        assert_eq!(c.max_message_size, 65536);
        assert_eq!(c.max_subscriptions, 0, "no limit, as in AnyCable");
        assert_eq!(c.health_path, "/health");
    }

    #[test]
    fn dead_peer_timeout_is_three_ping_intervals_but_at_least_ten_seconds_unless_set() {
        let mut c = Config::default();
        assert_eq!(c.effective_dead_peer_timeout(), Duration::from_secs(10), "3 × 3 s is below the floor");
        c.set("ping_interval", "5").unwrap();
        assert_eq!(c.effective_dead_peer_timeout(), Duration::from_secs(15));
        c.set("dead_peer_timeout", "4").unwrap();
        assert_eq!(c.effective_dead_peer_timeout(), Duration::from_secs(4));
    }

    #[test]
    fn set_parses_lists_bools_and_numbers() {
        let mut c = Config::default();
        c.set("path", "/cable, /ws").unwrap();
        c.set("noauth", "true").unwrap();
        c.set("rpc_concurrency", "5").unwrap();
        assert_eq!(c.path, vec!["/cable", "/ws"]);
        assert!(c.noauth);
        assert_eq!(c.rpc_concurrency, 5);
        c.set("noauth", "").unwrap();
        assert!(!c.noauth, "an empty value switches off");
    }

    #[test]
    fn bad_values_and_unknown_names_name_the_option() {
        let mut c = Config::default();
        let err = c.set("port", "eighty").unwrap_err().to_string();
        assert!(err.contains("`port`"), "{err}");
        let err = c.set("disconnect_mode", "sometimes").unwrap_err().to_string();
        assert!(err.contains("`disconnect_mode`"), "{err}");
        let err = c.set("no_such_option", "1").unwrap_err().to_string();
        assert!(err.contains("no_such_option"), "{err}");
    }

    #[test]
    fn broadcast_key_is_derived_from_secret_unless_given() {
        let mut c = Config::default();
        assert_eq!(c.broadcast_key(), None);
        c.set("secret", "s3cr3t").unwrap();
        // `echo -n broadcast-cable | openssl dgst -sha256 -hmac s3cr3t`
        assert_eq!(
            c.broadcast_key().as_deref(),
            Some("83149057b2f956b5f862c0ef5ad6a24d3677dc076d77e8999c24f77ca17d7a20")
        );
        c.set("broadcast_key", "explicit").unwrap();
        assert_eq!(c.broadcast_key().as_deref(), Some("explicit"));
        c.set("broadcast_key", "none").unwrap();
        assert_eq!(c.broadcast_key(), None);
    }

    #[test]
    fn api_secret_is_derived_from_secret_and_an_unprotected_api_is_off() {
        let mut c = Config::default();
        assert_eq!((c.api_secret(), c.api_enabled()), (None, false), "no key, no own port, not public");
        c.set("secret", "s3cr3t").unwrap();
        // `echo -n api-cable | openssl dgst -sha256 -hmac s3cr3t`
        assert_eq!(c.api_secret().as_deref(), Some("e3b70326c38efad4042c57f65cc19e4ce2925e5aea5ea0c98dca248b837c17de"));
        assert!(c.api_enabled());
        c.set("api_secret", "explicit").unwrap();
        assert_eq!(c.api_secret().as_deref(), Some("explicit"));
        let mut own_port = Config::default();
        own_port.set("api_port", "9999").unwrap();
        assert!(own_port.api_enabled() && own_port.api_secret().is_none());
        let mut public = Config::default();
        public.set("public", "true").unwrap();
        assert!(public.finalize().unwrap().api_enabled());
        for (name, value) in
            [("sse_path", "events"), ("poll_path", "/"), ("poll_interval", "0"), ("poll_keepalive_timeout", "0")]
        {
            let mut bad = Config::default();
            bad.set(name, value).unwrap();
            assert!(bad.finalize().is_err(), "{name}={value}");
        }
    }

    #[test]
    fn public_implies_noauth_public_streams_and_no_broadcast_key() {
        let mut c = Config::default();
        c.set("secret", "x").unwrap();
        c.set("public", "true").unwrap();
        let c = c.finalize().unwrap();
        assert!(c.noauth && c.public_streams);
        assert_eq!(c.broadcast_key(), None);
    }

    #[test]
    fn rpc_host_takes_host_port_grpc_urls_or_http_rpc_urls() {
        let mut c = Config::default();
        c.set("rpc_host", "grpc://backend:50051").unwrap();
        let c = c.finalize().unwrap();
        assert_eq!(c.rpc_host, "backend:50051");
        assert!(!c.rpc_http());
        for url in ["http://backend:3000/_anycable", "https://backend/api/anycable", "HTTPS://backend"] {
            let mut c = Config::default();
            c.set("rpc_host", url).unwrap();
            let c = c.finalize().unwrap();
            assert!(c.rpc_http(), "{url}");
            assert_eq!(c.rpc_host, url, "the URL is kept as given");
            assert_eq!(c.rpc_tls_enabled(), url.to_ascii_lowercase().starts_with("https://"), "{url}");
            assert_eq!(c.http_rpc_timeout(), Duration::from_secs(3), "AnyCable's default for HTTP RPC");
        }
        for bad in ["http://", "https:///path"] {
            let mut c = Config::default();
            c.set("rpc_host", bad).unwrap();
            let err = c.finalize().unwrap_err().to_string();
            assert!(err.contains("`rpc_host`") && err.contains("needs a host"), "{err}");
        }
        let mut c = Config::default();
        c.set("rpc_host", "http://backend").unwrap();
        c.set("rpc_enable_tls", "true").unwrap();
        let err = c.finalize().unwrap_err().to_string();
        assert!(err.contains("`rpc_enable_tls`") && err.contains("https://"), "{err}");
    }

    #[test]
    fn http_rpc_secret_is_derived_from_secret_unless_given() {
        let mut c = Config::default();
        assert_eq!(c.http_rpc_secret(), None);
        c.set("secret", "s3cr3t").unwrap();
        // `echo -n rpc-cable | openssl dgst -sha256 -hmac s3cr3t`
        assert_eq!(
            c.http_rpc_secret().as_deref(),
            Some("4b7da2749fe2a4534cec0d2acbd16277a800cf2acd31158ac4edae4a62a8f18d")
        );
        c.set("http_rpc_secret", "explicit").unwrap();
        assert_eq!(c.http_rpc_secret().as_deref(), Some("explicit"));
        assert!(!c.describe().contains("explicit"), "the key is a secret");
    }

    #[test]
    fn main_port_broadcasting_requires_a_key() {
        let mut c = Config::default();
        c.set("http_broadcast_port", "8080").unwrap();
        let err = c.clone().finalize().unwrap_err().to_string();
        assert!(err.contains("http_broadcast_port"), "{err}");
        c.set("broadcast_key", "k").unwrap();
        assert!(c.clone().finalize().is_ok());
        c.set("broadcast_key", "none").unwrap();
        assert!(c.finalize().is_ok(), "an explicit `none` opens it on purpose");
    }

    #[test]
    fn broadcast_adapters_and_pubsub_take_anycable_names() {
        let mut c = Config::default();
        c.set("broadcast_adapter", "http, redis,redisx ,nats").unwrap();
        c.set("pubsub", "redis").unwrap();
        let c = c.finalize().unwrap();
        assert!(["http", "redis", "redisx", "nats"].iter().all(|a| c.broadcast_adapter_enabled(a)));
        assert_eq!(c.pubsub, PubSubAdapter::Redis);
        assert_eq!(c.pubsub_subscribe, PubSubSubscribe::All);
        assert_eq!((c.redis_channel.as_str(), c.nats_channel.as_str()), ("__anycable__", "__anycable__"));
        assert_eq!(c.redis_url, "redis://localhost:6379/5");

        let mut c = Config::default();
        c.set("broadcast_adapter", "http,kafka").unwrap();
        let err = c.finalize().unwrap_err().to_string();
        assert!(err.contains("broadcast_adapter") && err.contains("kafka") && err.contains("redisx"), "{err}");
        let err = Config::default().set("pubsub", "kafka").unwrap_err().to_string();
        assert!(err.contains("`pubsub`"), "{err}");
        assert_eq!(Config::default().pubsub, PubSubAdapter::None);
    }

    #[test]
    fn durable_streams_options_take_anycable_defaults_and_need_a_broker() {
        let c = Config::default();
        assert_eq!(
            (c.ds, c.ds_path.as_str(), c.ds_skip_auth, c.ds_poll_interval, c.ds_sse_ttl),
            (false, "/ds", false, 10, 60)
        );
        let ds = |pairs: &[(&str, &str)]| {
            let mut c = Config::default();
            c.set("ds", "true").unwrap();
            for (name, value) in pairs {
                c.set(name, value).unwrap();
            }
            c.finalize().map_err(|e| e.to_string())
        };
        let err = ds(&[]).unwrap_err();
        assert!(err.contains("`ds`") && err.contains("broker"), "{err}");
        assert!(ds(&[("presets", "broker")]).is_ok());
        assert!(ds(&[("broker", "memory"), ("ds_path", "/streams/v1/")]).is_ok());
        for bad in ["ds", "/", "/a b", "/{x}", "/*"] {
            let err = ds(&[("broker", "memory"), ("ds_path", bad)]).unwrap_err();
            assert!(err.contains("ds_path"), "{bad}: {err}");
        }
        for name in ["ds_poll_interval", "ds_sse_ttl"] {
            let err = ds(&[("broker", "memory"), (name, "0")]).unwrap_err();
            assert!(err.contains(name) && err.contains("at least 1 second"), "{err}");
        }
    }

    #[test]
    fn broker_options_take_anycable_names_and_defaults() {
        let c = Config::default().finalize().unwrap();
        assert_eq!(c.broker, BrokerAdapter::None);
        assert_eq!((c.history_limit, c.history_ttl, c.sessions_ttl), (100, 300, 300));
        let mut c = Config::default();
        c.set("broker", "memory").unwrap();
        c.set("history_limit", "5").unwrap();
        c.set("sessions_ttl", "0").unwrap();
        let c = c.finalize().unwrap();
        assert_eq!((c.broker, c.history_limit, c.sessions_ttl), (BrokerAdapter::Memory, 5, 0));
        let err = Config::default().set("broker", "kafka").unwrap_err().to_string();
        assert!(err.contains("`broker`") && err.contains("memory"), "{err}");
        let mut c = Config::default();
        c.set("broker", "redis").unwrap();
        c.set("redis_url", "rediss://x").unwrap();
        assert!(c.finalize().unwrap_err().to_string().contains("redis_url"), "the redis broker checks redis_url");
    }

    #[test]
    fn the_broker_preset_fills_what_was_left_at_its_default() {
        let mut c = Config::default();
        c.set("presets", "broker").unwrap();
        let c = c.finalize().unwrap();
        assert_eq!((c.broker, c.pubsub), (BrokerAdapter::Memory, PubSubAdapter::None));
        assert_eq!(c.broadcast_adapter, ["http"]);

        let mut c = Config::default();
        c.set("presets", "broker").unwrap();
        c.set("redis_url", "redis://cache:6379/0").unwrap();
        let c = c.finalize().unwrap();
        assert_eq!((c.broker, c.pubsub), (BrokerAdapter::Redis, PubSubAdapter::Redis));
        assert_eq!(c.broadcast_adapter, ["http", "redisx", "redis"]);

        let mut c = Config::default();
        c.set("presets", "broker").unwrap();
        c.set("embed_nats", "true").unwrap();
        c.set("broker", "memory").unwrap();
        let c = c.finalize().unwrap();
        assert_eq!((c.broker, c.pubsub), (BrokerAdapter::Memory, PubSubAdapter::Nats), "explicit broker kept");
        assert_eq!(c.broadcast_adapter, ["http", "nats"]);

        let mut c = Config::default();
        c.set("presets", "fly").unwrap();
        let err = c.finalize().unwrap_err().to_string();
        assert!(err.contains("presets") && err.contains("\"fly\""), "{err}");
    }

    #[test]
    fn engine_addresses_are_checked_only_when_used() {
        let mut c = Config::default();
        c.set("redis_url", "rediss://secure:6380").unwrap();
        assert!(c.clone().finalize().is_ok(), "unused: not checked");
        c.set("pubsub", "redis").unwrap();
        let err = c.finalize().unwrap_err().to_string();
        assert!(err.contains("redis_url") && err.contains("TLS"), "{err}");

        let mut c = Config::default();
        c.set("broadcast_adapter", "nats").unwrap();
        c.set("nats_channel", "bad subject").unwrap();
        let err = c.finalize().unwrap_err().to_string();
        assert!(err.contains("nats_channel"), "{err}");
    }

    #[test]
    fn embedded_nats_becomes_the_nats_server_unless_one_is_given() {
        let mut c = Config::default();
        c.set("embed_nats", "true").unwrap();
        c.set("enats_addr", "nats://127.0.0.1:4242").unwrap();
        assert_eq!(c.clone().finalize().unwrap().nats_servers, vec!["nats://127.0.0.1:4242"]);
        c.set("nats_servers", "nats://elsewhere:4222").unwrap();
        assert_eq!(c.clone().finalize().unwrap().nats_servers, vec!["nats://elsewhere:4222"]);
        c.set("enats_addr", "nats://no-port").unwrap();
        let err = c.finalize().unwrap_err().to_string();
        assert!(err.contains("enats_addr"), "{err}");
    }

    #[test]
    fn urls_are_shown_without_passwords() {
        assert_eq!(redact_url("redis://:s3cret@host:6379/5"), "redis://:[hidden]@host:6379/5");
        assert_eq!(redact_url("redis://user:pw@host"), "redis://user:[hidden]@host");
        assert_eq!(redact_url("nats://token@host:4222"), "nats://[hidden]@host:4222");
        assert_eq!(redact_url("redis://host:6379/5"), "redis://host:6379/5");
        let mut c = Config::default();
        c.set("redis_url", "redis://u:pw@h:1/2").unwrap();
        assert!(c.describe().contains("redis_url = \"redis://u:[hidden]@h:1/2\""), "{}", c.describe());
    }

    #[test]
    fn describe_hides_secrets() {
        let mut c = Config::default();
        c.set("secret", "top").unwrap();
        c.set("jwt_secret", "jwtkey").unwrap();
        c.set("streams_secret", "streamkey").unwrap();
        c.set("turbo_streams_secret", "turbokey").unwrap();
        let text = c.describe();
        assert!(!text.contains("top") && !text.contains("jwtkey") && !text.contains("streamkey"));
        assert!(!text.contains("turbokey"));
        assert!(text.contains("secret = \"[hidden]\""));
        assert!(text.contains("jwt_secret = \"[hidden]\""));
    }

    #[test]
    fn debug_form_hides_secrets_too() {
        let mut c = Config::default();
        let secrets = [
            "secret",
            "broadcast_key",
            "http_rpc_secret",
            "jwt_secret",
            "streams_secret",
            "turbo_streams_secret",
            "api_secret",
        ];
        for name in secrets {
            c.set(name, &format!("value-of-{name}")).unwrap();
        }
        c.set("redis_url", "redis://u:pw@h:1/2").unwrap();
        let text = format!("{c:?}");
        assert!(!text.contains("value-of-") && !text.contains(":pw@"), "{text}");
        assert!(text.contains("jwt_secret: \"[hidden]\"") && text.contains("port: \"8080\""), "{text}");
        assert_eq!(OPTIONS.iter().filter(|o| o.is_secret()).count(), secrets.len());
    }

    #[test]
    fn ssl_cert_and_ssl_key_are_given_together_or_not_at_all() {
        let c = Config::default().finalize().unwrap();
        assert!(!c.tls_listener());
        let mut c = Config::default();
        c.set("ssl_cert", "/etc/cert.pem").unwrap();
        let err = c.clone().finalize().unwrap_err().to_string();
        assert!(err.contains("`ssl_key`") && err.contains("ssl_cert is set"), "{err}");
        c.set("ssl_key", "/etc/key.pem").unwrap();
        assert!(c.clone().finalize().unwrap().tls_listener());
        c.set("ssl_cert", "").unwrap();
        let err = c.finalize().unwrap_err().to_string();
        assert!(err.contains("`ssl_cert`") && err.contains("ssl_key is set"), "{err}");
    }

    #[test]
    fn grpc_tls_is_asked_for_or_implied_by_a_root_ca() {
        let c = Config::default();
        assert!(!c.rpc_enable_tls && c.rpc_tls_verify && c.rpc_tls_root_ca.is_none());
        assert!(!c.rpc_tls_enabled());
        let mut c = Config::default();
        c.set("rpc_enable_tls", "true").unwrap();
        assert!(c.rpc_tls_enabled());
        let mut c = Config::default();
        c.set("rpc_tls_root_ca", "/etc/ca.pem").unwrap();
        assert!(c.rpc_tls_enabled(), "a root CA implies TLS, as in AnyCable");
        c.set("rpc_tls_verify", "false").unwrap();
        assert!(!c.rpc_tls_verify);
        let err = Config::default().set("rpc_tls_verify", "maybe").unwrap_err().to_string();
        assert!(err.contains("`rpc_tls_verify`"), "{err}");
    }

    #[test]
    fn a_grpcs_scheme_in_rpc_host_points_to_rpc_enable_tls() {
        let mut c = Config::default();
        c.set("rpc_host", "grpcs://backend:50051").unwrap();
        let err = c.finalize().unwrap_err().to_string();
        assert!(err.contains("`rpc_host`") && err.contains("set rpc_enable_tls"), "{err}");
        let mut c = Config::default();
        c.set("rpc_host", "ws://backend").unwrap();
        let err = c.finalize().unwrap_err().to_string();
        assert!(err.contains("`rpc_host`") && !err.contains("rpc_enable_tls"), "{err}");
    }

    #[test]
    fn standalone_secrets_default_to_secret() {
        let mut c = Config::default();
        assert_eq!((c.jwt_secret(), c.streams_secret(), c.turbo_streams_secret()), (None, None, None));
        c.set("secret", "app").unwrap();
        assert_eq!(
            (c.jwt_secret(), c.streams_secret(), c.turbo_streams_secret()),
            (Some("app"), Some("app"), Some("app"))
        );
        c.set("streams_secret", "streams").unwrap();
        assert_eq!(c.turbo_streams_secret(), Some("streams"), "Turbo falls back to the streams secret first");
        c.set("jwt_secret", "jwt").unwrap();
        c.set("turbo_streams_secret", "turbo").unwrap();
        assert_eq!(
            (c.jwt_secret(), c.streams_secret(), c.turbo_streams_secret()),
            (Some("jwt"), Some("streams"), Some("turbo"))
        );
        assert_eq!(c.jwt_param, "jid");
    }

    #[test]
    fn enforce_jwt_and_turbo_streams_need_a_key() {
        let mut c = Config::default();
        c.set("enforce_jwt", "true").unwrap();
        let err = c.clone().finalize().unwrap_err().to_string();
        assert!(err.contains("enforce_jwt") && err.contains("jwt_secret"), "{err}");
        c.set("jwt_secret", "k").unwrap();
        assert!(c.finalize().is_ok());

        let mut c = Config::default();
        c.set("turbo_streams", "true").unwrap();
        let err = c.clone().finalize().unwrap_err().to_string();
        assert!(err.contains("turbo_streams"), "{err}");
        c.set("streams_secret", "k").unwrap();
        assert!(c.finalize().is_ok());
    }

    #[test]
    fn toml_files_set_options_by_name_and_errors_say_where() {
        let mut c = Config::default();
        c.set_from_toml("max_subscriptions = 50\nheaders = [\"cookie\", \"x-token\"]\nnoauth = true\n").unwrap();
        assert_eq!((c.max_subscriptions, c.noauth), (50, true));
        assert_eq!(c.headers, vec!["cookie", "x-token"]);

        let err = Config::default().set_from_toml("port = 80\nsecret = \"unterminated\n").unwrap_err().to_string();
        assert!(err.contains("not valid TOML") && err.contains("line 2"), "{err}");
        assert!(!err.contains("unterminated"), "the offending line may hold a secret: {err}");
        let err = Config::default().set_from_toml("[section]\nport = 1\n").unwrap_err().to_string();
        assert!(err.contains("`section`") && err.contains("table"), "{err}");
        let err = Config::default().set_from_toml("ping_interval = \"soon\"").unwrap_err().to_string();
        assert!(err.contains("`ping_interval`"), "{err}");
    }

    #[test]
    fn deeply_nested_toml_is_an_error_not_a_stack_overflow() {
        for (open, close) in [("[", "]"), ("{a=", "}")] {
            let text = format!("port = {}1{}\n", open.repeat(100_000), close.repeat(100_000));
            let err = Config::default().set_from_toml(&text).unwrap_err().to_string();
            assert!(err.contains("not valid TOML") || err.contains("`port`"), "{err}");
        }
    }

    #[test]
    fn listener_deadlines_default_to_anycable_go_and_must_be_at_least_a_second() {
        let c = Config::default().finalize().unwrap();
        assert_eq!(c.read_header_timeout, 5, "AnyCable-Go's ReadHeaderTimeout");
        assert_eq!((c.max_pending_conn, c.http_idle_timeout, c.http_broadcast_body_timeout), (4096, 30, 10));
        for name in ["read_header_timeout", "http_idle_timeout", "http_broadcast_body_timeout"] {
            let mut c = Config::default();
            c.set(name, "0").unwrap();
            let err = c.finalize().unwrap_err().to_string();
            assert!(err.contains(name) && err.contains("at least 1 second"), "{err}");
            let mut c = Config::default();
            c.set(name, "31536001").unwrap();
            assert!(c.finalize().unwrap_err().to_string().contains("at most"));
        }
        let mut c = Config::default();
        c.set("max_pending_conn", "0").unwrap();
        assert!(c.clone().finalize().is_ok(), "0 means no bound");
        c.set("max_pending_conn", "1073741825").unwrap();
        assert!(c.finalize().unwrap_err().to_string().contains("max_pending_conn"));
    }

    #[test]
    fn finalize_refuses_durations_and_sizes_the_server_cannot_honour() {
        for (name, value) in [
            ("shutdown_timeout", "18446744073709551615"),
            ("ping_interval", "31536001"),
            ("stats_refresh_interval", "18446744073709551615"),
            ("dead_peer_timeout", "31536001"),
            ("rpc_request_timeout", "18446744073709551615"),
            ("rpc_concurrency", "18446744073709551615"),
            ("disconnect_backlog_size", "18446744073709551615"),
            ("client_queue_size", "1073741825"),
            ("client_send_buffer_size", "1073741825"),
        ] {
            let mut c = Config::default();
            c.set(name, value).unwrap();
            let err = c.finalize().unwrap_err().to_string();
            assert!(err.contains(name) && err.contains("at most"), "{err}");
        }
        let mut c = Config::default();
        c.set("shutdown_timeout", "31536000").unwrap();
        c.set("rpc_concurrency", "1073741824").unwrap();
        assert!(c.finalize().is_ok(), "the limits themselves are accepted");
    }

    #[test]
    fn jwt_param_must_be_usable_as_a_header_name() {
        for bad in ["", "a b", "x:y", "jid\n"] {
            let mut c = Config::default();
            c.set("jwt_param", bad).unwrap();
            let err = c.finalize().unwrap_err().to_string();
            assert!(err.contains("jwt_param"), "{err}");
        }
        let mut c = Config::default();
        c.set("jwt_param", "token").unwrap();
        assert!(c.finalize().is_ok());
    }
}

#[cfg(test)]
mod properties {
    //! Properties of the config loader over generated input: never a panic, and every value it accepts renders
    //! back to text that loads to the same value, whether set by name or from a TOML file.

    use super::*;
    use proptest::prelude::*;

    fn option_name() -> impl Strategy<Value = &'static str> {
        (0..OPTIONS.len()).prop_map(|i| OPTIONS[i].name)
    }

    /// Values that are often valid for some option: numbers, switches, lists, URLs, anything.
    fn option_value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            (0u64..100).prop_map(|n| n.to_string()),
            prop::sample::select(vec!["true", "false", "", "none", "auto", "ms", "redis", "nats", "http,redis", "all"])
                .prop_map(str::to_owned),
            "[a-z/:.,0-9 ]{0,24}",
            any::<String>(),
        ]
    }

    proptest! {
        #[test]
        fn setting_and_finalizing_arbitrary_options_never_panics(
            pairs in prop::collection::vec((option_name(), option_value()), 0..12),
            unknown in any::<String>(),
        ) {
            let mut config = Config::default();
            for (name, value) in &pairs {
                let _ = config.set(name, value);
            }
            let _ = config.set(&unknown, "1");
            let _ = config.describe();
            let _ = config.finalize();
        }

        #[test]
        fn an_accepted_value_renders_to_text_that_loads_to_the_same_value(name in option_name(), value in option_value()) {
            let mut config = Config::default();
            if config.set(name, &value).is_ok() {
                let rendered = config.get(name).unwrap_or_default();
                let mut again = Config::default();
                prop_assert!(again.set(name, &rendered).is_ok(), "{} = {:?} rendered as {:?}", name, value, rendered);
                prop_assert_eq!(again.get(name), Some(rendered));
            }
        }

        #[test]
        fn a_toml_file_sets_what_set_would(pairs in prop::collection::vec((option_name(), option_value()), 0..8)) {
            let mut by_name = Config::default();
            let mut file = String::new();
            for (name, value) in &pairs {
                if by_name.set(name, value).is_ok() {
                    file.push_str(&format!("{name} = {}\n", toml::Value::String(value.clone())));
                }
            }
            let mut from_file = Config::default();
            // A later line for the same option is a duplicate key in TOML: only files without repeats load.
            match from_file.set_from_toml(&file) {
                Ok(()) => {
                    for spec in OPTIONS {
                        prop_assert_eq!(from_file.get(spec.name), by_name.get(spec.name), "{}", spec.name);
                    }
                }
                Err(error) => {
                    let mut names: Vec<_> = pairs.iter().map(|(n, _)| *n).collect();
                    names.sort_unstable();
                    names.dedup();
                    prop_assert!(names.len() < pairs.len(), "{error}: {file}");
                }
            }
        }

        #[test]
        fn loading_arbitrary_toml_never_panics(text in any::<String>(), ish in "[a-z_ =\\[\\]{}\"'.,0-9\n#]{0,96}") {
            let _ = Config::default().set_from_toml(&text);
            let _ = Config::default().set_from_toml(&ish);
        }
    }
}
