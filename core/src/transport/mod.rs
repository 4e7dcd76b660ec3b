//! Client transports. Only WebSocket for now; each transport turns a socket into a session and its frames.
//! `listener` serves every listening socket (TLS when `ssl_cert` is set, the handshake and idle deadlines, the
//! bound on pending connections, the lingering close); `tcp` sets the client sockets' options.

pub(crate) mod listener;
pub(crate) mod tcp;
pub(crate) mod ws;
