//! The HTTP broadcaster: `POST <http_broadcast_path>` with one publication, a batch, or a remote command.
//!
//! Answers 201 when accepted, 400 for a body it cannot parse, 401 for a missing or wrong bearer key
//! (compared in constant time), 413 for a body over `http_broadcast_max_body`, 408 for a body that has not
//! arrived `http_broadcast_body_timeout` after the headers (the connection is then closed, so a publisher
//! trickling bytes cannot hold it); always with a message.
//! The `Content-Type` is not looked at: the body is always read as JSON, as AnyCable-Go does, so publishers
//! that send `text/plain` or nothing keep working.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{IngressSink, Reach, parse_ingress};
use crate::metrics::Metrics;

/// State of the broadcast endpoint (and of the REST API's `publish`, which differs only by its key).
pub(crate) struct HttpBroadcaster<S> {
    pub sink: Arc<S>,
    /// Bearer key required, if any.
    pub key: Option<String>,
    /// Time the body may take to arrive once the headers are in (`http_broadcast_body_timeout`).
    pub body_timeout: Duration,
    pub metrics: Arc<Metrics>,
}

impl<S> Clone for HttpBroadcaster<S> {
    fn clone(&self) -> Self {
        let Self { sink, key, body_timeout, metrics } = self;
        Self { sink: sink.clone(), key: key.clone(), body_timeout: *body_timeout, metrics: metrics.clone() }
    }
}

/// The request handler.
pub(crate) async fn handle<S: IngressSink>(State(state): State<Arc<HttpBroadcaster<S>>>, request: Request) -> Response {
    // Checked now, answered after the body (so an oversized body is still a 413 whatever the key).
    let authorized = state.key.as_ref().is_none_or(|key| {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        key_matches(given.as_bytes(), key.as_bytes())
    });
    // The body is read here rather than by an extractor so that its arrival is bounded; the extractor still
    // applies `http_broadcast_max_body` (413).
    let body = match tokio::time::timeout(state.body_timeout, Bytes::from_request(request, &())).await {
        Ok(Ok(body)) => body,
        Ok(Err(rejection)) => return rejection.into_response(),
        Err(_) => {
            Metrics::inc(&state.metrics.broadcast_body_timeout_total);
            tracing::warn!(
                timeout_secs = state.body_timeout.as_secs(),
                "broadcast refused: body not received within http_broadcast_body_timeout"
            );
            let message = format!("broadcast body not received within {} s\n", state.body_timeout.as_secs());
            return (StatusCode::REQUEST_TIMEOUT, [(header::CONNECTION, "close")], message).into_response();
        }
    };
    if !authorized {
        tracing::warn!("broadcast refused: missing or wrong broadcast key");
        return (StatusCode::UNAUTHORIZED, "missing or invalid broadcast key\n").into_response();
    }
    match parse_ingress(&body) {
        Ok(messages) => {
            Metrics::inc(&state.metrics.publications_total);
            state.sink.accept(messages, Reach::ThisNode).await;
            (StatusCode::CREATED, "").into_response()
        }
        Err(error) => {
            Metrics::inc(&state.metrics.failed_broadcast_msg_total);
            tracing::warn!(%error, "broadcast refused: malformed body");
            (StatusCode::BAD_REQUEST, format!("malformed broadcast: {error}\n")).into_response()
        }
    }
}

/// Whether the key a request brought equals the configured one, in time that depends on neither of them.
///
/// Both are hashed first, so the comparison always runs over 32 bytes and does not even reveal the key's
/// length; `subtle` keeps the compiler from turning the byte comparison into an early exit.
fn key_matches(given: &[u8], key: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    Sha256::digest(given).ct_eq(&Sha256::digest(key)).into()
}

#[cfg(test)]
mod tests {
    use super::key_matches;

    #[test]
    fn key_comparison_matches_only_the_exact_key() {
        assert!(key_matches(b"k3y", b"k3y"));
        assert!(key_matches(b"", b""));
        for wrong in [&b"k3z"[..], b"K3y", b"k3", b"k3yy", b"", b"k3y ", b"\0k3y"] {
            assert!(!key_matches(wrong, b"k3y"), "{:?}", String::from_utf8_lossy(wrong));
        }
        let key = "83149057b2f956b5f862c0ef5ad6a24d3677dc076d77e8999c24f77ca17d7a20";
        let mut last_differs = key.to_owned();
        last_differs.pop();
        last_differs.push('1');
        assert!(key_matches(key.as_bytes(), key.as_bytes()));
        assert!(!key_matches(last_differs.as_bytes(), key.as_bytes()));
    }
}
