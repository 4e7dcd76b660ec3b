//! Ferrocable: a real-time WebSocket server that speaks AnyCable's protocols.
//!
//! It holds the clients, their subscriptions and all their state, and fans broadcasts out to them; the
//! application's channel logic is reached through a [`Handler`]: in-process (the Node and Ruby bindings),
//! over AnyCable's gRPC service or its HTTP RPC, or not at all (standalone pub/sub).
//!
//! The path of one message: [`transport`](crate::transport) (socket) → [`protocol`] (decode) →
//! `session` (state) → [`handler`] (application) → `session` (merge) → [`hub`] / the client's queue →
//! transport (write).
//!
//! ```no_run
//! # async fn run() -> Result<(), ferrocable::StartError> {
//! let mut config = ferrocable::Config::default();
//! config.set("public", "true")?;
//! let server = ferrocable::Server::start(config, None).await?;
//! server.broadcast(ferrocable::Publication::new("chat", r#"{"text":"hi"}"#)).await;
//! server.shutdown().await;
//! # Ok(()) }
//! ```

pub mod broadcast;
pub mod broker;
mod catchup;
pub mod client;
pub mod config;
mod disconnect;
mod enats;
mod engine;
mod forward;
pub mod handler;
pub mod hub;
pub mod logging;
pub mod metrics;
mod ordering;
pub mod periodic;
pub mod presence;
pub mod protocol;
mod pubsub;
pub mod rate_limit;
mod server;
mod session;
mod subscriptions;
mod tls;
pub mod transport;

/// The rpc.proto messages and gRPC service, generated at build time from `proto/rpc.proto`.
pub mod rpc {
    tonic::include_proto!("anycable");
}

pub use broadcast::{IngressMessage, Publication, RemoteDisconnect};
pub use config::{Config, ConfigError, OPTIONS, OptionSpec};
pub use handler::{CallContext, Handler, HandlerError};
pub use metrics::StatsSnapshot;
pub use server::{Server, StartError};
pub use session::RequestEnv;
