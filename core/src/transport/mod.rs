//! Client transports. Only WebSocket for now; each transport turns a socket into a session and its frames.

pub(crate) mod tcp;
pub(crate) mod ws;
