//! The JavaScript shapes of the rpc.proto messages and the conversions to and from the core's types.
//!
//! Field names are the camelCase names `@grpc/proto-loader` gives the same messages, so a gRPC backend's
//! handler code runs in-process unchanged; the session id travels as `sid` (gRPC metadata on the wire).
//! Statuses arrive as numbers (0 ERROR, 1 SUCCESS, 2 FAILURE): the JavaScript layer normalizes names and
//! checks shapes before they get here. Nothing in this module decides anything.

use std::collections::HashMap;

use ferrocable::handler::in_process::HandlerFailure;
use ferrocable::handler::{
    CommandMessage, CommandResponse, ConnectionRequest, ConnectionResponse, DisconnectRequest, DisconnectResponse, Env,
    EnvResponse, Status,
};
use ferrocable::{Publication, StatsSnapshot};
use napi_derive::napi;

/// `Env`: the connection's URL and forwarded headers, with the state the call needs.
#[napi(object)]
pub struct JsEnv {
    pub url: String,
    pub headers: HashMap<String, String>,
    pub cstate: HashMap<String, String>,
    pub istate: HashMap<String, String>,
}

impl From<Option<Env>> for JsEnv {
    fn from(env: Option<Env>) -> Self {
        let env = env.unwrap_or_default();
        Self { url: env.url, headers: env.headers, cstate: env.cstate, istate: env.istate }
    }
}

/// `ConnectionRequest`.
#[napi(object)]
pub struct JsConnectionRequest {
    pub sid: String,
    pub env: JsEnv,
}

impl JsConnectionRequest {
    pub fn new(sid: &str, request: ConnectionRequest) -> Self {
        Self { sid: sid.to_owned(), env: request.env.into() }
    }
}

/// `CommandMessage`.
#[napi(object)]
pub struct JsCommandMessage {
    pub sid: String,
    pub command: String,
    pub identifier: String,
    pub connection_identifiers: String,
    pub data: String,
    pub env: JsEnv,
}

impl JsCommandMessage {
    pub fn new(sid: &str, request: CommandMessage) -> Self {
        Self {
            sid: sid.to_owned(),
            command: request.command,
            identifier: request.identifier,
            connection_identifiers: request.connection_identifiers,
            data: request.data,
            env: request.env.into(),
        }
    }
}

/// `DisconnectRequest`.
#[napi(object)]
pub struct JsDisconnectRequest {
    pub sid: String,
    pub identifiers: String,
    pub subscriptions: Vec<String>,
    pub env: JsEnv,
}

impl JsDisconnectRequest {
    pub fn new(sid: &str, request: DisconnectRequest) -> Self {
        Self {
            sid: sid.to_owned(),
            identifiers: request.identifiers,
            subscriptions: request.subscriptions,
            env: request.env.into(),
        }
    }
}

/// `EnvResponse`: state changes (an empty value deletes the key).
#[napi(object)]
pub struct JsEnvResponse {
    pub cstate: Option<HashMap<String, String>>,
    pub istate: Option<HashMap<String, String>>,
}

fn env_response(env: Option<JsEnvResponse>) -> Option<EnvResponse> {
    env.map(|e| EnvResponse { cstate: e.cstate.unwrap_or_default(), istate: e.istate.unwrap_or_default() })
}

fn status(value: u32) -> i32 {
    match value {
        1 => Status::Success as i32,
        2 => Status::Failure as i32,
        _ => Status::Error as i32,
    }
}

/// `ConnectionResponse`.
#[napi(object)]
pub struct JsConnectionResponse {
    pub status: u32,
    pub identifiers: Option<String>,
    pub transmissions: Option<Vec<String>>,
    pub error_msg: Option<String>,
    pub env: Option<JsEnvResponse>,
}

impl From<JsConnectionResponse> for ConnectionResponse {
    fn from(r: JsConnectionResponse) -> Self {
        Self {
            status: status(r.status),
            identifiers: r.identifiers.unwrap_or_default(),
            transmissions: r.transmissions.unwrap_or_default(),
            error_msg: r.error_msg.unwrap_or_default(),
            env: env_response(r.env),
        }
    }
}

/// `CommandResponse`.
#[napi(object)]
pub struct JsCommandResponse {
    pub status: u32,
    pub disconnect: Option<bool>,
    pub stop_streams: Option<bool>,
    pub streams: Option<Vec<String>>,
    pub stopped_streams: Option<Vec<String>>,
    pub transmissions: Option<Vec<String>>,
    pub error_msg: Option<String>,
    pub env: Option<JsEnvResponse>,
}

impl From<JsCommandResponse> for CommandResponse {
    fn from(r: JsCommandResponse) -> Self {
        Self {
            status: status(r.status),
            disconnect: r.disconnect.unwrap_or(false),
            stop_streams: r.stop_streams.unwrap_or(false),
            streams: r.streams.unwrap_or_default(),
            stopped_streams: r.stopped_streams.unwrap_or_default(),
            transmissions: r.transmissions.unwrap_or_default(),
            error_msg: r.error_msg.unwrap_or_default(),
            env: env_response(r.env),
            presence: None,
        }
    }
}

/// `DisconnectResponse`.
#[napi(object)]
pub struct JsDisconnectResponse {
    pub status: u32,
    pub error_msg: Option<String>,
}

impl From<JsDisconnectResponse> for DisconnectResponse {
    fn from(r: JsDisconnectResponse) -> Self {
        Self { status: status(r.status), error_msg: r.error_msg.unwrap_or_default() }
    }
}

/// One publication from `broadcast` / `broadcastMany`; `data` is already a string.
#[napi(object)]
pub struct JsPublication {
    pub stream: String,
    pub data: String,
    pub exclude_socket: Option<String>,
}

impl From<JsPublication> for Publication {
    fn from(p: JsPublication) -> Self {
        Self { stream: p.stream, data: p.data, exclude_socket: p.exclude_socket.filter(|s| !s.is_empty()) }
    }
}

/// A handler call that failed inside the server (time limit, or an answer that could not be read).
#[napi(object)]
pub struct JsHandlerFailure {
    /// `connect`, `command` or `disconnect`.
    pub call: String,
    /// `timeout` or `failed`.
    pub kind: String,
    pub sid: String,
    pub command: Option<String>,
    pub identifier: Option<String>,
    pub channel: Option<String>,
    pub action: Option<String>,
    pub message: String,
}

impl From<HandlerFailure> for JsHandlerFailure {
    fn from(f: HandlerFailure) -> Self {
        use ferrocable::handler::in_process::FailureKind;
        Self {
            call: f.call.as_str().to_owned(),
            kind: match f.kind {
                FailureKind::Timeout => "timeout",
                FailureKind::Failed => "failed",
            }
            .to_owned(),
            sid: f.sid.to_string(),
            command: f.command,
            identifier: f.identifier,
            channel: f.channel,
            action: f.action,
            message: f.message,
        }
    }
}

/// A metric by its AnyCable name (`clients_num`, `broadcast_msg_total`, …).
#[napi(object)]
pub struct JsMetric {
    pub name: String,
    pub value: f64,
    /// Counters only grow; gauges are current values.
    pub counter: bool,
}

pub fn metrics(stats: &StatsSnapshot) -> Vec<JsMetric> {
    stats
        .entries()
        .into_iter()
        .map(|(name, value, counter)| JsMetric { name: name.to_owned(), value: value as f64, counter })
        .collect()
}
