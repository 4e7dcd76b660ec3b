//! Client transports: WebSocket (`ws`), Server-Sent Events (`sse`), long polling (`poll`) and Durable Streams
//! reads over HTTP (`ds`); each turns a connection (or a run of requests) into a client of the hub and its frames.
//! `listener` serves every listening socket (TLS when `ssl_cert` is set, the handshake and idle deadlines, the
//! bound on pending connections, the lingering close), and hands the requests whose response stays open to `held`,
//! which answers them on the socket itself instead of inside hyper; `tcp` sets the client sockets' options.

pub(crate) mod ds;
pub(crate) mod held;
pub(crate) mod listener;
pub(crate) mod poll;
pub(crate) mod sse;
pub(crate) mod tcp;
pub(crate) mod websocket;
pub(crate) mod ws;
