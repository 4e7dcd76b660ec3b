//! The HTTP broadcaster: `POST <http_broadcast_path>` with one publication, a batch, or a remote command.
//!
//! Answers 201 when accepted, 400 for a body it cannot parse, 401 for a missing or wrong bearer key
//! (compared in constant time), 413 for a body over `http_broadcast_max_body`; always with a message.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{IngressSink, Reach, parse_ingress};

/// State of the broadcast endpoint.
pub(crate) struct HttpBroadcaster<S> {
    pub sink: Arc<S>,
    /// Bearer key required, if any.
    pub key: Option<String>,
}

/// The request handler.
pub(crate) async fn handle<S: IngressSink>(
    State(state): State<Arc<HttpBroadcaster<S>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(key) = &state.key {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), key.as_bytes()) {
            tracing::warn!("broadcast refused: missing or wrong broadcast key");
            return (StatusCode::UNAUTHORIZED, "missing or invalid broadcast key\n").into_response();
        }
    }
    match parse_ingress(&body) {
        Ok(messages) => {
            state.sink.accept(messages, Reach::ThisNode).await;
            (StatusCode::CREATED, "").into_response()
        }
        Err(error) => {
            tracing::warn!(%error, "broadcast refused: malformed body");
            (StatusCode::BAD_REQUEST, format!("malformed broadcast: {error}\n")).into_response()
        }
    }
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn constant_time_eq_compares_bytes() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
