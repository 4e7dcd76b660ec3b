//! The running server: binds the listeners, wires sessions, hub, handler and broadcasters together, and
//! owns the graceful shutdown.
//!
//! [`Server::start`] spawns everything on the caller's tokio runtime and returns at once; it never assumes
//! it owns `main`. Shutdown order: stop accepting, send `server_restart` to every client, wait for the
//! sessions to end, drain the Disconnect queue, stop the rest — all within `shutdown_timeout`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get, post};
use tokio::net::TcpListener;
use tokio::sync::Mutex as AsyncMutex;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broadcast::http::HttpBroadcaster;
use crate::broadcast::{IngressMessage, IngressSink, Publication, Reach, RemoteDisconnect};
use crate::client::{CloseRequest, close_code};
use crate::config::{Config, ConfigError, PingPrecision};
use crate::disconnect::{DisconnectQueue, DrainControl, Limits};
use crate::enats::EmbeddedNats;
use crate::handler::Handler;
use crate::handler::controller::{Controller, StandaloneRules};
use crate::handler::grpc::{GrpcHandler, GrpcOptions};
use crate::handler::http::{HttpHandler, HttpOptions};
use crate::handler::in_process::Metered;
use crate::hub::{BroadcastQueue, Hub, Registrar};
use crate::metrics::{Metrics, StatsSnapshot};
use crate::protocol;
use crate::pubsub::PubSub;
use crate::rate_limit::CommandRate;
use crate::session::SessionDeps;
use crate::transport::ds;
use crate::transport::held::HeldPaths;
use crate::transport::listener::{HttpListener, ListenerLimits};
use crate::transport::sse;
use crate::transport::tcp::ClientSocketOptions;
use crate::transport::ws::{self, WsState};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("cannot create the RPC client: {0}")]
    Rpc(String),
    /// A Redis / NATS option that cannot work, or the embedded NATS server failing to start.
    #[error("{0}")]
    Engine(String),
}

impl StartError {
    /// A stable code for bindings: `EADDRINUSE`, `EBIND`, `ECONFIG`, `ERPC`, `EENGINE`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Config(_) => "ECONFIG",
            Self::Bind { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse => "EADDRINUSE",
            Self::Bind { .. } => "EBIND",
            Self::Rpc(_) => "ERPC",
            Self::Engine(_) => "EENGINE",
        }
    }
}

struct Shared {
    config: Arc<Config>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    broadcasts: BroadcastQueue,
    /// The cluster pub/sub, when `pubsub` is set.
    pubsub: Option<Arc<PubSub>>,
    /// Whether broadcasts that reached this node only are registered with the broker.
    registers: bool,
    /// Presence sets, when the broker keeps them (set once at start).
    presence: std::sync::OnceLock<Arc<crate::presence::Presence>>,
}

impl Shared {
    /// Closes this node's sessions with exactly these identifiers.
    fn disconnect(&self, identifiers: &str, reconnect: bool) -> usize {
        let request = CloseRequest::with_disconnect_frame("remote", reconnect, close_code::NORMAL);
        self.hub.disconnect_identified(identifiers, &request)
    }
}

impl Shared {
    fn prometheus(&self) -> String {
        let unique = self.hub.unique_identifiers_count() as i64;
        self.metrics.render_prometheus(&self.config.metrics_prefix, &[("clients_uniq_num", unique)])
    }
}

impl IngressSink for Shared {
    fn metrics(&self) -> Option<&Metrics> {
        Some(&self.metrics)
    }

    async fn accept(&self, messages: Vec<IngressMessage>, reach: Reach) {
        // Local delivery and publishing both follow acceptance order, which keeps per-stream order on every node.
        let pubsub = self.pubsub.as_ref().filter(|_| reach == Reach::ThisNode);
        for message in messages {
            // A broadcast to be registered goes to its stream's worker, which registers it and publishes it
            // to the cluster with its position, in the stream's order.
            if let IngressMessage::Broadcast(publication) = &message {
                if self.registers && reach == Reach::ThisNode && !publication.transient {
                    if let IngressMessage::Broadcast(publication) = message {
                        self.broadcasts.publish(publication, true).await;
                    }
                    continue;
                }
            }
            if let Some(pubsub) = pubsub {
                pubsub.publish(&message).await;
            }
            match message {
                IngressMessage::Broadcast(publication) => self.broadcasts.publish(publication, false).await,
                IngressMessage::Disconnect(remote) => {
                    Metrics::inc(&self.metrics.remote_commands_total);
                    let closed = self.disconnect(&remote.identifiers, remote.reconnect);
                    tracing::debug!(identifiers = %remote.identifiers, closed, "remote disconnect");
                }
            }
        }
    }
}

/// A running Ferrocable server.
pub struct Server {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    broadcast_addr: Option<SocketAddr>,
    /// Stops accepting connections and HTTP requests.
    stop_accepting: CancellationToken,
    /// Stops the remaining background tasks (fan-out workers, pinger).
    stop_tasks: CancellationToken,
    sessions: TaskTracker,
    tasks: TaskTracker,
    shutdown_state: AsyncMutex<Option<ShutdownParts>>,
    stopped: CancellationToken,
}

struct ShutdownParts {
    drain: DrainControl,
}

impl Server {
    /// Starts the server on the current tokio runtime. `handler` is the in-process application; without one,
    /// the backend at `rpc_host` (gRPC, or HTTP RPC for an http:// / https:// URL) is used unless `norpc` is set.
    pub async fn start(config: Config, handler: Option<Arc<dyn Handler>>) -> Result<Self, StartError> {
        let config = Arc::new(config.finalize()?);
        // Certificate problems stop the start before anything is bound or spawned.
        let listener_tls = crate::tls::listener_config(&config)?;
        // Before anything connects to it; dropped (and so killed) if a later step fails.
        let embedded_nats = match config.embed_nats {
            true => Some(EmbeddedNats::start(&config).await.map_err(|e| StartError::Engine(e.to_string()))?),
            false => None,
        };
        let metrics = Arc::new(Metrics::default());
        let hub = Arc::new(Hub::new(metrics.clone()));

        let (backend, backend_name) = match handler {
            Some(handler) => {
                let metered = Metered::new(handler, metrics.clone());
                (Some(Arc::new(metered) as Arc<dyn Handler>), "in-process".to_owned())
            }
            None if config.rpc_enabled() && config.rpc_http() => {
                let http = HttpHandler::new(
                    HttpOptions {
                        url: config.rpc_host.clone(),
                        secret: config.http_rpc_secret(),
                        concurrency: config.rpc_concurrency,
                        request_timeout: config.http_rpc_timeout(),
                        tls: crate::tls::rpc_client_config(&config)?,
                    },
                    metrics.clone(),
                )
                .map_err(|e| StartError::Rpc(e.to_string()))?;
                (Some(Arc::new(http) as Arc<dyn Handler>), crate::config::redact_url(&config.rpc_host))
            }
            None if config.rpc_enabled() => {
                let grpc = GrpcHandler::new(
                    GrpcOptions {
                        host: config.rpc_host.clone(),
                        concurrency: config.rpc_concurrency,
                        request_timeout: config.rpc_timeout(),
                        tls: crate::tls::rpc_client_config(&config)?,
                    },
                    metrics.clone(),
                )
                .map_err(|e| StartError::Rpc(e.to_string()))?;
                let tls = if config.rpc_tls_enabled() { " (TLS)" } else { "" };
                (Some(Arc::new(grpc) as Arc<dyn Handler>), format!("grpc://{}{tls}", config.rpc_host))
            }
            None => (None, "none".to_owned()),
        };
        if backend.is_none() && !config.noauth && config.jwt_secret().is_none() {
            tracing::warn!("no RPC backend, no JWT key and noauth is off: every connection will be rejected");
        }
        let controller = Arc::new(Controller::new(StandaloneRules::from_config(&config), backend, metrics.clone()));

        let stop_accepting = CancellationToken::new();
        let stop_tasks = CancellationToken::new();
        let sessions = TaskTracker::new();
        let tasks = TaskTracker::new();

        let (disconnects, drain, disconnect_worker) = DisconnectQueue::start(
            controller.clone(),
            Limits {
                rate: config.disconnect_rate,
                capacity: config.disconnect_backlog_size,
                max_in_flight: config.rpc_concurrency,
            },
            metrics.clone(),
        );
        tasks.spawn(disconnect_worker);

        let (pubsub, pubsub_receiver) =
            match PubSub::new(&config, metrics.clone(), &tasks, &stop_tasks).await.map_err(StartError::Engine)? {
                Some((pubsub, receiver)) => (Some(Arc::new(pubsub)), Some(receiver)),
                None => (None, None),
            };
        let started = crate::broker::start(&config, &tasks, stop_tasks.clone())
            .await
            .map_err(|e| StartError::Engine(e.to_string()))?;
        let (broker, presence_store) = match started {
            Some(started) => (Some(started.broker), Some(started.presence)),
            None => (None, None),
        };
        let registrar = broker.clone().map(|broker| Arc::new(Registrar::new(broker, pubsub.clone())));
        let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2) * 2;
        let broadcasts = BroadcastQueue::start(hub.clone(), workers, registrar, &tasks, stop_tasks.clone());
        let shared = Arc::new(Shared {
            config: config.clone(),
            hub: hub.clone(),
            metrics: metrics.clone(),
            broadcasts,
            pubsub,
            registers: broker.is_some(),
            presence: std::sync::OnceLock::new(),
        });
        if let Some(broker) = broker.clone().filter(|_| config.sessions_ttl > 0) {
            let every = Duration::from_secs((config.sessions_ttl / 2).max(1));
            tasks.spawn(touch_sessions(hub.clone(), broker, every, stop_tasks.clone()));
        }

        // Whispers and presence events enter the broadcast path like HTTP broadcasts do (this node's workers, then
        // the cluster pub/sub), through a bounded queue: a whisper that finds it full is dropped at once, a presence
        // event waits for room (its presence command waits with it, as it waits for the broker).
        let (whispers, whisper_queue) = mpsc::channel(WHISPER_QUEUE);
        tasks.spawn(forward_whispers(shared.clone(), whisper_queue, stop_tasks.clone()));
        let presence = presence_store.map(|store| {
            let ttl = Duration::from_secs(config.presence_ttl);
            let presence = Arc::new(crate::presence::Presence::new(store, ttl, whispers.clone()));
            presence.start(&tasks, stop_tasks.clone());
            presence
        });
        if let Some(presence) = &presence {
            let _ = shared.presence.set(presence.clone());
        }
        let deps = Arc::new(SessionDeps {
            hub: hub.clone(),
            controller,
            metrics: metrics.clone(),
            disconnects,
            disconnect_mode: config.disconnect_mode,
            max_subscriptions: config.max_subscriptions,
            whispers,
            command_rate: CommandRate::from_options(config.command_rate_limit, config.command_rate_burst),
            sessions_cache: broker.is_some() && config.sessions_ttl > 0,
            broker: broker.clone(),
            presence,
        });
        let ws_state = Arc::new(WsState::new(deps, config.clone(), sessions.clone(), stop_accepting.clone()));

        let main_listener = bind(&config.host, config.port).await?;
        let local_addr = main_listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr: format!("{}:{}", config.host, config.port), source })?;
        let shared_port = config.http_broadcast_port == config.port && config.port != 0;
        let broadcaster = Arc::new(HttpBroadcaster {
            sink: shared.clone(),
            key: config.broadcast_key(),
            body_timeout: Duration::from_secs(config.http_broadcast_body_timeout),
            metrics: metrics.clone(),
        });
        let broadcast_routes = Router::new()
            .route(&config.http_broadcast_path, post(crate::broadcast::http::handle::<Shared>))
            .layer(DefaultBodyLimit::max(config.http_broadcast_max_body))
            .with_state(broadcaster.clone());

        // Every listener gets the same deadlines and bound on pending connections (see transport::listener).
        let limits = ListenerLimits::from_config(&config);
        let serve = |listener: TcpListener, router: Router, client_sockets, held, websocket, what| {
            let tls = listener_tls.clone();
            let metrics = metrics.clone();
            let held = Arc::new(held);
            HttpListener { listener, tls, router, client_sockets, limits, metrics, held, websocket, what }
                .spawn(&tasks, stop_accepting.clone());
        };
        let mut main_router = Router::new();
        for path in &config.path {
            main_router = main_router.route(path, get(ws::upgrade));
        }
        if let Some(broker) = broker.filter(|_| config.ds) {
            let ds = Arc::new(ds::DsState::new(ws_state.clone(), broker));
            main_router = main_router.merge(Router::new().route(&ds.route(), any(ds::handle)).with_state(ds));
        }
        if config.sse {
            main_router = main_router.route(&config.sse_path, axum::routing::any(sse::handle));
        }
        let poll_state = config.poll.then(|| Arc::new(crate::transport::poll::PollState::new(ws_state.clone())));
        let mut main_router = main_router.with_state(ws_state.clone()).route(&config.health_path, get(|| async { "OK" }));
        if let Some(poll_state) = poll_state {
            let poll = axum::routing::any(crate::transport::poll::handle);
            main_router = main_router.merge(Router::new().route(&config.poll_path, poll).with_state(poll_state));
        }
        if !config.metrics_http.is_empty() {
            let exposition = shared.clone();
            let metrics_routes =
                Router::new().route(
                    &config.metrics_http,
                    get(move || {
                        let shared = exposition.clone();
                        async move {
                            ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], shared.prometheus())
                        }
                    }),
                );
            if config.metrics_port == 0 {
                main_router = main_router.merge(metrics_routes);
            } else {
                let host =
                    if config.metrics_host.is_empty() { config.host.as_str() } else { config.metrics_host.as_str() };
                let listener = bind(host, config.metrics_port).await?;
                serve(listener, metrics_routes, None, HeldPaths::default(), None, "metrics");
            }
        }
        // The REST API publishes like the HTTP broadcaster, behind its own key.
        let mut api_addr = None;
        if config.api_enabled() {
            let api = Arc::new(HttpBroadcaster { key: config.api_secret(), ..(*broadcaster).clone() });
            let api_routes = Router::new()
                .route(&format!("{}/publish", config.api_path), post(crate::broadcast::http::handle::<Shared>))
                .layer(DefaultBodyLimit::max(config.http_broadcast_max_body))
                .with_state(api);
            if config.api_port == 0 {
                main_router = main_router.merge(api_routes);
                api_addr = Some(local_addr);
            } else {
                let listener = bind(&config.host, config.api_port).await?;
                api_addr = listener.local_addr().ok();
                serve(listener, api_routes, None, HeldPaths::default(), None, "api");
            }
        }
        let mut broadcast_addr = None;
        if config.http_broadcast_enabled() {
            if shared_port {
                main_router = main_router.merge(broadcast_routes);
                broadcast_addr = Some(local_addr);
            } else {
                let listener = bind(&config.host, config.http_broadcast_port).await?;
                broadcast_addr = listener.local_addr().ok();
                serve(listener, broadcast_routes, None, HeldPaths::default(), None, "broadcast");
            }
        }
        // Every client socket gets the dead-peer timers, so a client that vanished without closing is dropped
        // (and its Disconnect run) within a bounded time: set once on the listener where accepted sockets
        // inherit them, else on each accepted socket.
        let client_sockets = ClientSocketOptions::for_listener(&config, &main_listener);
        // An SSE response lasts as long as its client: answered outside hyper (see transport::held). So are
        // WebSocket upgrades, whose answer then leaves with the welcome (see transport::ws::serve_upgrade).
        let held = HeldPaths::new(config.sse.then(|| config.sse_path.clone())).with_upgrades(config.path.clone());
        serve(main_listener, main_router, client_sockets, held, Some(ws_state), "main");
        if let Some(enats) = embedded_nats {
            enats.supervise(&tasks, stop_tasks.clone());
        }
        if let (Some(pubsub), Some(receiver)) = (&shared.pubsub, pubsub_receiver) {
            pubsub.spawn(&tasks, stop_tasks.clone());
            receiver.spawn(shared.clone(), &hub, &tasks, stop_tasks.clone());
        }
        start_broadcasters(&config, &shared, &tasks, &stop_tasks).await.map_err(StartError::Engine)?;
        tasks.spawn(ping_clients(hub.clone(), Duration::from_secs(config.ping_interval), stop_tasks.clone()));
        if config.stats_refresh_interval > 0 {
            let every = Duration::from_secs(config.stats_refresh_interval);
            tasks.spawn(log_stats(shared.clone(), every, stop_tasks.clone()));
        }

        let (ws, http) = if listener_tls.is_some() { ("wss", "https") } else { ("ws", "http") };
        let urls: Vec<String> = config.path.iter().map(|p| format!("{ws}://{local_addr}{p}")).collect();
        let urls = urls.join(", ");
        let mut broadcast_info = match (broadcast_addr, config.broadcast_key()) {
            (Some(addr), Some(_)) => format!("{http}://{addr}{} (key required)", config.http_broadcast_path),
            (Some(addr), None) => format!("{http}://{addr}{} (no auth)", config.http_broadcast_path),
            (None, _) => String::new(),
        };
        for adapter in config.broadcast_adapter.iter().filter(|a| a.as_str() != "http") {
            let sep = if broadcast_info.is_empty() { "" } else { ", " };
            broadcast_info.push_str(&format!("{sep}{adapter}"));
        }
        if broadcast_info.is_empty() {
            broadcast_info.push_str("off");
        }
        if let Some(addr) = api_addr {
            let auth = if config.api_secret().is_some() { "key required" } else { "no auth" };
            broadcast_info.push_str(&format!(", API {http}://{addr}{} ({auth})", config.api_path));
        }
        let urls = match config.sse {
            true => format!("{urls}, SSE {http}://{local_addr}{}", config.sse_path),
            false => urls,
        };
        let urls = match config.poll {
            true => format!("{urls}, long polling {http}://{local_addr}{}", config.poll_path),
            false => urls,
        };
        let mut standalone = Vec::new();
        if config.jwt_secret().is_some() {
            standalone.push(if config.enforce_jwt { "JWT (enforced)" } else { "JWT" });
        }
        if config.noauth {
            standalone.push("noauth");
        }
        if config.public_streams {
            standalone.push("public streams");
        }
        if config.streams_secret().is_some() {
            standalone.push("signed streams");
        }
        if config.turbo_streams {
            standalone.push("Turbo Streams");
        }
        let standalone =
            if standalone.is_empty() { String::new() } else { format!("; standalone: {}", standalone.join(", ")) };
        tracing::info!(
            "Ferrocable {} listening on {urls}; broadcasts: {broadcast_info}; RPC: {backend_name}{standalone}",
            env!("CARGO_PKG_VERSION"),
        );

        Ok(Self {
            shared,
            local_addr,
            broadcast_addr,
            stop_accepting,
            stop_tasks,
            sessions,
            tasks,
            shutdown_state: AsyncMutex::new(Some(ShutdownParts { drain })),
            stopped: CancellationToken::new(),
        })
    }

    /// The address the main listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the HTTP broadcast endpoint, when enabled.
    pub fn broadcast_addr(&self) -> Option<SocketAddr> {
        self.broadcast_addr
    }

    /// The effective configuration.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Delivers one publication to every subscriber of its stream (in order with earlier ones), on every node
    /// of the cluster when `pubsub` is set.
    pub async fn broadcast(&self, publication: Publication) {
        self.shared.accept(vec![IngressMessage::Broadcast(publication)], Reach::ThisNode).await;
    }

    /// The presence set of `stream` (every member with its info when `records`); an error without a broker that
    /// keeps presence.
    pub async fn presence(
        &self,
        stream: &str,
        records: bool,
    ) -> Result<crate::presence::PresenceInfo, crate::presence::PresenceError> {
        let presence = self.shared.presence.get().ok_or(crate::presence::PresenceError::NoBroker)?;
        presence.info(stream, records).await
    }

    /// Delivers publications in order.
    pub async fn broadcast_many(&self, publications: impl IntoIterator<Item = Publication>) {
        let messages = publications.into_iter().map(IngressMessage::Broadcast).collect();
        self.shared.accept(messages, Reach::ThisNode).await;
    }

    /// Closes every session whose identifiers equal `identifiers` with a `remote` disconnect frame; returns
    /// how many sessions that was on this node. With `pubsub` set, the other nodes close theirs too.
    pub fn disconnect(&self, identifiers: &str, reconnect: bool) -> usize {
        if let Some(pubsub) = &self.shared.pubsub {
            let remote = RemoteDisconnect { identifiers: identifiers.to_owned(), reconnect };
            pubsub.try_publish(&IngressMessage::Disconnect(remote));
        }
        self.shared.disconnect(identifiers, reconnect)
    }

    /// Closes every session of this node with a `server_restart` disconnect frame (`reconnect: true`) and keeps
    /// serving: clients reconnect to this server. Returns how many sessions that was. Action Cable's
    /// `ActionCable.server.restart` does this.
    pub fn restart_clients(&self) -> usize {
        let restart = CloseRequest::with_disconnect_frame("server_restart", true, close_code::GOING_AWAY);
        let mut closed = 0;
        self.shared.hub.for_each_client(|client| {
            client.close(restart.clone());
            closed += 1;
        });
        tracing::info!(clients = closed, "restart: every client asked to reconnect");
        closed
    }

    /// Live counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.metrics.snapshot()
    }

    /// Whether `shutdown` has completed.
    pub fn is_stopped(&self) -> bool {
        self.stopped.is_cancelled()
    }

    /// Gracefully stops the server within `shutdown_timeout`. Calling it again waits for the first call.
    pub async fn shutdown(&self) {
        let mut parts = self.shutdown_state.lock().await;
        let Some(ShutdownParts { drain }) = parts.take() else { return };
        let deadline = Instant::now() + Duration::from_secs(self.shared.config.shutdown_timeout);
        tracing::info!(clients = self.shared.hub.clients_count(), "shutting down");

        self.stop_accepting.cancel();
        // Disconnect calls start arriving as soon as clients leave: pace them against the deadline from now on.
        drain.hurry(deadline);
        let restart = CloseRequest::with_disconnect_frame("server_restart", true, close_code::GOING_AWAY);
        self.shared.hub.for_each_client(|client| client.close(restart.clone()));
        self.sessions.close();
        if tokio::time::timeout_at(deadline, self.sessions.wait()).await.is_err() {
            tracing::warn!(left = self.sessions.len(), "shutdown timeout reached before every connection closed");
        }
        drain.close();
        self.stop_tasks.cancel();
        self.tasks.close();
        if tokio::time::timeout_at(deadline, self.tasks.wait()).await.is_err() {
            tracing::warn!("shutdown timeout reached before background work finished");
        }
        self.stopped.cancel();
        tracing::info!("stopped");
    }

    /// Resolves once `shutdown` has completed.
    pub async fn stopped(&self) {
        self.stopped.cancelled().await;
    }
}

/// Starts the Redis, Redis Streams and NATS broadcasters named in `broadcast_adapter`.
async fn start_broadcasters(
    config: &Config,
    shared: &Arc<Shared>,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) -> Result<(), String> {
    use crate::broadcast::{nats, redis, redisx};
    if config.broadcast_adapter_enabled("redis") {
        let client = crate::engine::redis::client(&config.redis_url)?;
        tasks.spawn(redis::run(client, config.redis_channel.clone(), shared.clone(), stop.clone()));
    }
    if config.broadcast_adapter_enabled("redisx") {
        let client = crate::engine::redis::client(&config.redis_url)?;
        let node = shared.pubsub.as_ref().map(|p| p.node_id().to_owned());
        let consumer = node.unwrap_or_else(|| (0..12).map(|_| fastrand::alphanumeric()).collect());
        tasks.spawn(redisx::run(client, config.redis_channel.clone(), consumer, shared.clone(), stop.clone()));
    }
    if config.broadcast_adapter_enabled("nats") {
        let broadcaster = nats::start(&config.nats_servers, &config.nats_channel, stop.clone()).await?;
        tasks.spawn(nats::run(broadcaster, shared.clone(), stop.clone()));
    }
    Ok(())
}

/// Pending connections the kernel queues per listener. The common default (128) overflows under a connect storm,
/// and an overflowing queue makes clients wait a full SYN retry (1 s) to get in.
const LISTEN_BACKLOG: u32 = 4096;

async fn bind(host: &str, port: u16) -> Result<TcpListener, StartError> {
    let error = |source| StartError::Bind { addr: format!("{host}:{port}"), source };
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await.map_err(error)? {
        let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() };
        let listener = socket.and_then(|s| {
            s.set_reuseaddr(true)?;
            s.bind(addr)?;
            s.listen(LISTEN_BACKLOG)
        });
        match listener {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(error(last.unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "host resolves to no address"))))
}

/// Whispers and presence events waiting to enter the broadcast path; while it is full, new ones are dropped (they
/// are transient).
const WHISPER_QUEUE: usize = 1024;

/// Hands whispers to the broadcast ingress, in the order sessions queued them.
async fn forward_whispers(shared: Arc<Shared>, mut queue: mpsc::Receiver<Publication>, stop: CancellationToken) {
    loop {
        let publication = tokio::select! {
            biased;
            p = queue.recv() => match p { Some(p) => p, None => return },
            () = stop.cancelled() => return,
        };
        shared.accept(vec![IngressMessage::Broadcast(publication)], Reach::ThisNode).await;
    }
}

/// A timer of a periodic task: the first tick one period after the start; a late tick is not made up for.
struct Ticks(tokio::time::Interval);

impl Ticks {
    fn new(every: Duration) -> Self {
        let mut timer = tokio::time::interval_at(Instant::now() + every, every);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self(timer)
    }

    /// Waits for the next tick; `false` once `stop` is cancelled.
    async fn next(&mut self, stop: &CancellationToken) -> bool {
        tokio::select! {
            _ = self.0.tick() => true,
            () = stop.cancelled() => false,
        }
    }
}

/// One line of stats every `every`.
async fn log_stats(shared: Arc<Shared>, every: Duration, stop: CancellationToken) {
    let mut ticks = Ticks::new(every);
    while ticks.next(&stop).await {
        let s = shared.metrics.snapshot();
        tracing::info!(
            clients = s.clients_num,
            uniq_clients = shared.hub.unique_identifiers_count(),
            subscriptions = s.subscriptions_num,
            streams = s.broadcast_streams_num,
            broadcasts = s.broadcast_msg_total,
            client_msgs = s.client_msg_total,
            server_msgs = s.server_msg_total,
            rpc_calls = s.rpc_call_total,
            rpc_errors = s.rpc_error_total,
            rpc_pending = s.rpc_pending_num,
            disconnect_queue = s.disconnect_queue_size,
            "stats"
        );
    }
}

/// Keeps the cached sessions of connected extended-protocol clients alive (their `sessions_ttl` restarts), so a
/// session outlives its connection by `sessions_ttl` even when this node goes away without ending it.
async fn touch_sessions(
    hub: Arc<Hub>,
    broker: Arc<dyn crate::broker::Broker>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut ticks = Ticks::new(every);
    while ticks.next(&stop).await {
        let mut sids = Vec::new();
        hub.for_each_client(|client| {
            if client.protocol.is_extended() && client.is_welcomed() {
                sids.push(client.sid.clone());
            }
        });
        for sid in sids {
            if let Err(error) = broker.touch_session(&sid).await {
                tracing::debug!(%error, "cached sessions not touched this round");
                break;
            }
        }
    }
}

/// The shared ping ticker: one timer for every client on the default interval.
async fn ping_clients(hub: Arc<Hub>, every: Duration, stop: CancellationToken) {
    let mut ticks = Ticks::new(every);
    while ticks.next(&stop).await {
        let mut frames: [Option<bytes::Bytes>; 3] = Default::default();
        hub.for_each_client(|client| {
            if client.own_ping_interval.is_some() || !client.is_welcomed() {
                return;
            }
            let slot = match client.ping_precision {
                PingPrecision::Seconds => 0,
                PingPrecision::Millis => 1,
                PingPrecision::Nanos => 2,
            };
            let frame =
                frames[slot].get_or_insert_with(|| protocol::ping_frame(ws::timestamp(client.ping_precision))).clone();
            client.send(frame);
        });
    }
}
