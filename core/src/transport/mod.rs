//! Client transports. Only WebSocket for now; each transport turns a socket into a session and its frames.
//! `tls` sits under every listener when `ssl_cert` is set.

pub(crate) mod tcp;
pub(crate) mod tls;
pub(crate) mod ws;
