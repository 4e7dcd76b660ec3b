//! The application side of the server: the [`Handler`] trait and its implementations.
//!
//! A handler answers Connect, Command and Disconnect with the rpc.proto messages and nothing more: it
//! keeps no state between calls and never sees sockets or the hub. The session applies what it returns.
//! The gRPC and HTTP RPC clients are two implementations (sharing [`calls`]); the Node and Ruby bindings add
//! their own, wrapped in [`in_process::Guarded`] (time limit, failures as ERROR answers).

mod calls;
pub mod controller;
pub mod grpc;
pub mod http;
pub mod in_process;
pub mod jwt;
pub mod streams;

use std::sync::Arc;

use async_trait::async_trait;

pub use crate::rpc::{
    CommandMessage, CommandResponse, ConnectionRequest, ConnectionResponse, DisconnectRequest, DisconnectResponse, Env,
    EnvResponse, PresenceResponse, Status,
};

/// What a handler call knows besides its request.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The session id (sent as gRPC metadata `sid`, or the HTTP RPC header `x-anycable-meta-sid`).
    pub sid: Arc<str>,
}

/// A call that could not produce an answer (as opposed to an answer with status ERROR).
#[derive(Debug, Clone, thiserror::Error)]
pub enum HandlerError {
    /// The backend cannot be reached (after retries).
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The call took longer than allowed.
    #[error("backend call timed out")]
    Timeout,
    /// The backend or the in-process handler failed.
    #[error("handler failed: {0}")]
    Failed(String),
}

/// The application's channel logic, reached in-process or over RPC.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Authenticates a new connection.
    async fn connect(&self, ctx: &CallContext, request: ConnectionRequest) -> Result<ConnectionResponse, HandlerError>;
    /// Runs `subscribe`, `unsubscribe` or `message` for one subscription.
    async fn command(&self, ctx: &CallContext, request: CommandMessage) -> Result<CommandResponse, HandlerError>;
    /// Tells the application a connection is gone, with every subscription and its state.
    async fn disconnect(
        &self,
        ctx: &CallContext,
        request: DisconnectRequest,
    ) -> Result<DisconnectResponse, HandlerError>;
}

/// Name of an RPC status for logs.
pub fn status_name(status: i32) -> &'static str {
    match Status::try_from(status) {
        Ok(Status::Success) => "SUCCESS",
        Ok(Status::Failure) => "FAILURE",
        Ok(Status::Error) => "ERROR",
        Err(_) => "UNKNOWN",
    }
}
