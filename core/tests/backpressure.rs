//! Load and backpressure: the per-connection command rate limit and the connection cap.

mod common;

use std::time::{Duration, Instant};

use common::{Client, Fixture, Mode, welcomed};
use serde_json::json;
use tokio_tungstenite::tungstenite;

const CHAT_A: &str = r#"{"channel":"ChatChannel","room":"a"}"#;

/// Commands of `sid` that reached the application, subscribe included.
fn commands_of(fx: &Fixture, sid: &str) -> usize {
    fx.app.calls.commands.lock().unwrap().iter().filter(|(s, _)| s == sid).count()
}

/// Reads answers until none arrives for `quiet`; returns how many there were.
async fn count_answers(c: &mut Client, quiet: Duration) -> usize {
    let mut n = 0;
    while c.try_recv(quiet).await.is_some() {
        n += 1;
    }
    n
}

#[tokio::test]
async fn command_rate_limit_keeps_excess_commands_from_the_backend_and_spares_other_connections() {
    let fx = Fixture::start(Mode::Grpc, &[("command_rate_limit", "5"), ("command_rate_burst", "10")]).await;
    let (mut noisy, noisy_sid) = welcomed(&fx, "noisy").await;
    let (mut quiet, quiet_sid) = welcomed(&fx, "quiet").await;
    noisy.subscribe(CHAT_A).await;
    quiet.subscribe(CHAT_A).await;

    // 40 commands at once: the subscribe above and 9 of these fit the burst, then one more per 200 ms.
    let started = Instant::now();
    for _ in 0..40 {
        noisy.perform(CHAT_A, json!({"action":"whoami"})).await;
    }
    // Meanwhile the other connection's commands all go through.
    for _ in 0..8 {
        quiet.perform(CHAT_A, json!({"action":"whoami"})).await;
    }
    assert_eq!(count_answers(&mut quiet, Duration::from_millis(500)).await, 8);
    let answered = count_answers(&mut noisy, Duration::from_millis(500)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let reached = commands_of(&fx, &noisy_sid);
    assert_eq!(reached, answered + 1, "every command that reached the backend was answered");
    // At most the burst plus the refill over the time the commands took to arrive (the last 500 ms were silent).
    let allowed = 10.0 + 5.0 * elapsed;
    assert!(reached >= 10 && reached as f64 <= allowed, "{reached} calls reached the backend in {elapsed:.2}s");
    assert_eq!(commands_of(&fx, &quiet_sid), 9);
    assert_eq!(fx.server.stats().rate_limited_client_msg_total, 41 - reached as u64);

    // A client that slowed down is served again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    noisy.perform(CHAT_A, json!({"action":"whoami"})).await;
    assert_eq!(noisy.recv().await["identifier"], CHAT_A);
    fx.server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_stays_over_the_command_rate_limit_is_disconnected_as_rate_limited() {
    let fx = Fixture::start(Mode::Grpc, &[("command_rate_limit", "5"), ("command_rate_burst", "2")]).await;
    let (mut noisy, sid) = welcomed(&fx, "noisy").await;
    let (mut other, _) = welcomed(&fx, "other").await;
    noisy.subscribe(CHAT_A).await;
    let started = Instant::now();
    // 10 bursts' worth of drops (20) ends the connection; the socket is still read until then.
    for _ in 0..40 {
        noisy.perform(CHAT_A, json!({"action":"noop"})).await;
    }
    let frame = noisy.recv().await;
    assert_eq!(frame, json!({"type":"disconnect","reason":"rate_limited","reconnect":false}));
    assert_eq!(noisy.closed().await, Some(1008));
    let elapsed = started.elapsed().as_secs_f64();
    let reached = commands_of(&fx, &sid);
    assert!(reached as f64 <= 2.0 + 5.0 * elapsed + 1.0, "{reached} calls in {elapsed:.2}s");
    // The session ends like any other: its Disconnect call runs, and other connections carry on.
    common::eventually("the Disconnect call", || {
        fx.app.calls.disconnects.lock().unwrap().iter().any(|(s, _)| *s == sid)
    })
    .await;
    assert_eq!(other.subscribe(CHAT_A).await["type"], "confirm_subscription");
    fx.server.shutdown().await;
}

#[tokio::test]
async fn commands_are_not_limited_by_default() {
    let fx = Fixture::start(Mode::Grpc, &[]).await;
    let (mut c, sid) = welcomed(&fx, "busy").await;
    c.subscribe(CHAT_A).await;
    for _ in 0..100 {
        c.perform(CHAT_A, json!({"action":"whoami"})).await;
    }
    assert_eq!(count_answers(&mut c, Duration::from_millis(500)).await, 100);
    assert_eq!(commands_of(&fx, &sid), 101);
    assert_eq!(fx.server.stats().rate_limited_client_msg_total, 0);
    fx.server.shutdown().await;
}

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
