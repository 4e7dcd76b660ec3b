//! Load and backpressure: the connection cap.

mod common;

use common::{Client, Fixture, Mode, welcomed};
use tokio_tungstenite::tungstenite;

/// Opens a WebSocket; `Err((status, body))` when the server refused the upgrade with an HTTP answer.
async fn try_connect(url: &str) -> Result<Client, (u16, String)> {
    use tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("Cookie", "user=cap".parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(Client::from_stream(ws)),
        Err(tungstenite::Error::Http(response)) => {
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned();
            Err((response.status().as_u16(), body))
        }
        Err(other) => panic!("unexpected handshake failure: {other}"),
    }
}

#[tokio::test]
async fn max_conn_refuses_the_next_socket_with_503_before_the_upgrade() {
    let fx = Fixture::start(Mode::InProcess, &[("max_conn", "2")]).await;
    let (_a, _) = welcomed(&fx, "a").await;
    let (b, _) = welcomed(&fx, "b").await;
    // A plain HTTP answer with a message, never a WebSocket.
    let refused = try_connect(&fx.url("")).await.err();
    assert_eq!(refused, Some((503, "too many connections: max_conn reached\n".to_owned())));
    // A place that frees up can be taken again.
    b.close().await;
    common::eventually("the closed connection to leave", || fx.server.stats().clients_num == 1).await;
    let Ok(mut c) = try_connect(&fx.url("")).await else { panic!("no free place") };
    assert_eq!(c.recv().await["type"], "welcome");
    fx.server.shutdown().await;
}

#[tokio::test]
async fn max_conn_holds_under_concurrent_upgrades() {
    let fx = Fixture::start(Mode::InProcess, &[("max_conn", "5")]).await;
    let url = fx.url("");
    let attempts: Vec<_> = (0..40)
        .map(|_| {
            tokio::spawn({
                let url = url.clone();
                async move { try_connect(&url).await }
            })
        })
        .collect();
    let mut accepted = Vec::new();
    let mut refused = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(c) => accepted.push(c),
            Err((503, _)) => refused += 1,
            Err(other) => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!((accepted.len(), refused), (5, 35), "exactly max_conn connections, however many race for them");
    fx.server.shutdown().await;
}
