//! Client transports: WebSocket (`ws`) and Server-Sent Events (`sse`); each turns a connection into a session
//! and its frames.
//! `listener` serves every listening socket (TLS when `ssl_cert` is set, the handshake and idle deadlines, the
//! bound on pending connections, the lingering close); `tcp` sets the client sockets' options.

pub(crate) mod listener;
pub(crate) mod sse;
pub(crate) mod tcp;
pub(crate) mod ws;
