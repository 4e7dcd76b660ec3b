//! The JavaScript shapes of publications, handler failures and metrics, and their conversions to and from
//! the core's types. Handler requests and answers cross as plain arguments instead (see `handler`), because
//! they are on the hot path. Nothing in this module decides anything.

use ferrocable::handler::in_process::HandlerFailure;
use ferrocable::{Publication, StatsSnapshot};
use napi_derive::napi;

/// One publication from `broadcast` / `broadcastMany`; `data` is already a string.
#[napi(object)]
pub struct JsPublication {
    pub stream: String,
    pub data: String,
    pub exclude_socket: Option<String>,
}

impl From<JsPublication> for Publication {
    fn from(p: JsPublication) -> Self {
        Self { exclude_socket: p.exclude_socket.filter(|s| !s.is_empty()), ..Publication::new(p.stream, p.data) }
    }
}

/// A stream's presence set; each member's `info` is its JSON text (absent when it has none).
#[napi(object)]
pub struct JsPresenceInfo {
    pub total: u32,
    pub records: Option<Vec<JsPresenceMember>>,
}

#[napi(object)]
pub struct JsPresenceMember {
    pub id: String,
    pub info: Option<String>,
}

impl From<ferrocable::presence::PresenceInfo> for JsPresenceInfo {
    fn from(info: ferrocable::presence::PresenceInfo) -> Self {
        Self {
            total: u32::try_from(info.total).unwrap_or(u32::MAX),
            records: info
                .records
                .map(|records| records.into_iter().map(|m| JsPresenceMember { id: m.id, info: m.info }).collect()),
        }
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
