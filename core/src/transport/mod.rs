//! Client transports. WebSocket (`ws`) and Durable Streams reads over HTTP (`ds`); each transport turns a
//! request into a client of the hub and its frames.
//! `listener` serves every listening socket (TLS when `ssl_cert` is set, the handshake and idle deadlines, the
//! bound on pending connections, the lingering close); `tcp` sets the client sockets' options.

pub(crate) mod ds;
pub(crate) mod listener;
pub(crate) mod tcp;
pub(crate) mod ws;
