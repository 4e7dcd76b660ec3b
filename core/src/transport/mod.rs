//! Client transports: WebSocket (`ws`), Server-Sent Events (`sse`) and long polling (`poll`); each turns a
//! connection (or a run of requests) into a session and its frames.
//! `listener` serves every listening socket (TLS when `ssl_cert` is set, the handshake and idle deadlines, the
//! bound on pending connections, the lingering close); `tcp` sets the client sockets' options.

pub(crate) mod listener;
pub(crate) mod poll;
pub(crate) mod sse;
pub(crate) mod tcp;
pub(crate) mod ws;
