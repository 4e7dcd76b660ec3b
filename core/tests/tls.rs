//! TLS end to end, with certificates each test makes for itself: the listeners serving wss:// and https://
//! (welcome, subscriptions, broadcasts, health, metrics), handshake failures that stay with the client that
//! caused them, the gRPC client reaching a backend whose certificate comes from a private CA, and certificate
//! problems that stop the start with an error naming the option.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::engines::free_port;
use common::tls::{Pki, https, start_grpc_backend_tls};
use common::{ChatApp, Client, Fixture, Mode, eventually, http, logs, test_config};
use ferrocable::{Publication, Server};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CHAT_A: &str = r#"{"channel":"ChatChannel","room":"a"}"#;

fn wss_url(fx: &Fixture) -> String {
    format!("wss://127.0.0.1:{}/cable", fx.server.local_addr().port())
}

async fn tls_fixture(pki: &Pki, extra: &[(&str, &str)]) -> Fixture {
    let [(_, cert), (_, key)] = pki.listener_options();
    let mut options = vec![("ssl_cert", cert.as_str()), ("ssl_key", key.as_str())];
    options.extend_from_slice(extra);
    Fixture::start(Mode::InProcess, &options).await
}

async fn welcomed(client: &mut Client) {
    let welcome = client.recv().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
}

#[tokio::test]
async fn wss_and_https_serve_the_protocol_broadcasts_health_and_metrics() {
    let pki = Pki::new("listeners");
    let metrics_port = free_port().to_string();
    let fx =
        tls_fixture(&pki, &[("broadcast_key", "k"), ("metrics_http", "/metrics"), ("metrics_port", &metrics_port)])
            .await;
    let tls = pki.client_config(b"http/1.1");

    let mut alice = Client::connect_tls(&wss_url(&fx), Some("user=alice"), tls.clone()).await.unwrap();
    welcomed(&mut alice).await;
    assert_eq!(alice.subscribe(CHAT_A).await["type"], "confirm_subscription");
    let url = fx.app.calls.connects.lock().unwrap()[0].1.env.clone().unwrap().url;
    assert!(url.starts_with("https://127.0.0.1:"), "the backend sees the TLS URL: {url}");

    // The broadcast listener (its own port) is TLS too, and still wants the key.
    let broadcast = fx.server.broadcast_addr().unwrap();
    let body = json!({"stream": "chat_a", "data": json!({"text": "over https"}).to_string()}).to_string();
    let (status, _) = https(broadcast, tls.clone(), "POST", "/_broadcast", &[], &body).await;
    assert_eq!(status, 401);
    let (status, _) =
        https(broadcast, tls.clone(), "POST", "/_broadcast", &[("Authorization", "Bearer k")], &body).await;
    assert_eq!(status, 201);
    let message = alice.recv().await;
    assert_eq!((message["identifier"].as_str(), &message["message"]["text"]), (Some(CHAT_A), &json!("over https")));

    let (status, body) = https(fx.server.local_addr(), tls.clone(), "GET", "/health", &[], "").await;
    assert_eq!((status, body.as_str()), (200, "OK"));
    let metrics = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let (status, body) = https(metrics, tls.clone(), "GET", "/metrics", &[], "").await;
    assert_eq!(status, 200);
    assert!(body.contains("anycable_go_clients_num 1"), "{body}");

    // Plain HTTP is not answered on a TLS port.
    let (status, body) = http(fx.server.local_addr(), "GET", "/health", &[], "").await;
    assert_eq!((status, body.as_str()), (0, ""));
    alice.close().await;
    fx.server.shutdown().await;
}

#[tokio::test]
async fn a_failed_or_stalled_handshake_affects_only_its_own_client() {
    logs();
    let pki = Pki::new("handshakes");
    let stranger = Pki::new("handshakes-stranger");
    let fx = tls_fixture(&pki, &[]).await;
    let url = wss_url(&fx);
    let trusted = pki.client_config(b"http/1.1");

    let mut alice = Client::connect_tls(&url, Some("user=alice"), trusted.clone()).await.unwrap();
    welcomed(&mut alice).await;
    alice.subscribe(CHAT_A).await;

    // A peer that connects and never says anything must not hold up the handshakes behind it.
    let stalled = TcpStream::connect(fx.server.local_addr()).await.unwrap();
    // A client that does not trust the certificate gives up during the handshake.
    let refused = Client::connect_tls(&url, Some("user=mallory"), stranger.client_config(b"http/1.1")).await;
    let error = refused.err().expect("a client that does not trust the CA must not connect").to_string();
    assert!(error.contains("UnknownIssuer"), "{error}");
    // A peer that speaks plain HTTP to the TLS port.
    let mut plain = TcpStream::connect(fx.server.local_addr()).await.unwrap();
    let plain_peer = plain.local_addr().unwrap();
    plain.write_all(b"GET /health HTTP/1.0\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer)).await.unwrap().unwrap_or_default();
    assert!(!String::from_utf8_lossy(&answer).contains("HTTP/"), "plain HTTP is not served");

    let mut bob = Client::connect_tls(&url, Some("user=bob"), trusted).await.unwrap();
    welcomed(&mut bob).await;
    bob.subscribe(CHAT_A).await;
    fx.server.broadcast(Publication::new("chat_a", r#"{"text":"still here"}"#)).await;
    for client in [&mut alice, &mut bob] {
        assert_eq!(client.recv().await["message"]["text"], "still here");
    }
    let failed = move || {
        let logs = logs();
        logs.lines().filter(|l| l.contains("TLS handshake failed") && l.contains(&format!("peer={plain_peer}"))).count()
    };
    eventually("the plain peer's failed handshake logged", || failed() >= 1).await;
    assert_eq!(failed(), 1, "logged once");
    drop(stalled);
    fx.server.shutdown().await;
}

#[tokio::test]
async fn the_grpc_client_reaches_a_tls_backend_trusting_rpc_tls_root_ca_as_a_file_or_pem() {
    let pki = Pki::new("rpc");
    let app = ChatApp::default();
    let (addr, backend) = start_grpc_backend_tls(app.clone(), &pki).await;
    let rpc_host = addr.to_string();
    let ca_path = pki.ca_path();
    let settings: [&[(&str, &str)]; 3] = [
        &[("rpc_enable_tls", "true"), ("rpc_tls_root_ca", &ca_path)],
        // PEM contents, and TLS implied by the root CA as in AnyCable.
        &[("rpc_tls_root_ca", &pki.ca_pem)],
        // No verification: the certificate is not trusted, and still accepted (development setups).
        &[("rpc_enable_tls", "true"), ("rpc_tls_verify", "false")],
    ];
    for (n, extra) in settings.iter().enumerate() {
        let mut options = vec![("rpc_host", rpc_host.as_str())];
        options.extend_from_slice(extra);
        let server = Server::start(test_config(&options), None).await.unwrap();
        let mut client = Client::connect(&format!("ws://{}/cable", server.local_addr()), Some("user=alice")).await;
        welcomed(&mut client).await;
        assert_eq!(client.subscribe(CHAT_A).await["type"], "confirm_subscription", "settings {n}");
        client.close().await;
        server.shutdown().await;
    }
    assert_eq!(app.calls.connects.lock().unwrap().len(), 3);
    backend.abort();
}

#[tokio::test]
async fn without_the_right_root_ca_connect_closes_with_1011_and_the_server_keeps_running() {
    logs();
    let pki = Pki::new("rpc-untrusted");
    let stranger = Pki::new("rpc-stranger");
    let app = ChatApp::default();
    let (addr, backend) = start_grpc_backend_tls(app.clone(), &pki).await;
    let rpc_host = addr.to_string();
    let ca = stranger.ca_path();
    let server = Server::start(test_config(&[("rpc_host", &rpc_host), ("rpc_tls_root_ca", &ca)]), None).await.unwrap();
    let url = format!("ws://{}/cable", server.local_addr());

    for _ in 0..2 {
        let mut client = Client::connect(&url, Some("user=alice")).await;
        assert_eq!(client.closed().await, Some(1011));
    }
    let (status, _) = http(server.local_addr(), "GET", "/health", &[], "").await;
    assert_eq!(status, 200, "the server keeps serving");
    assert!(app.calls.connects.lock().unwrap().is_empty(), "no call reached the backend");
    let warning = logs()
        .lines()
        .find(|l| l.contains("RPC backend unavailable") && l.contains(&rpc_host))
        .map(str::to_owned)
        .expect("the refused certificate is reported");
    assert!(warning.contains("UnknownIssuer"), "the warning says why: {warning}");
    server.shutdown().await;
    backend.abort();
}

#[tokio::test]
async fn unreadable_or_invalid_certificate_files_stop_the_start_naming_the_option() {
    let pki = Pki::new("errors");
    let stranger = Pki::new("errors-stranger");
    // Valid base64 that is no certificate, and text that is not even base64.
    let not_der = pki.file("not-der.pem");
    std::fs::write(&not_der, "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
        .unwrap();
    let not_base64 = pki.file("not-base64.pem");
    std::fs::write(&not_base64, "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n").unwrap();
    let missing = pki.file("missing.pem");
    let (cert, key) = (pki.cert_path(), pki.key_path());
    let listener_cases: [(&str, &str, &str, &str); 6] = [
        (&missing, &key, "ssl_cert", "cannot read"),
        (&key, &key, "ssl_cert", "no PEM certificate"),
        (&not_base64, &key, "ssl_cert", "not valid PEM"),
        (&not_der, &key, "ssl_cert", "cannot be used"),
        (&cert, &cert, "ssl_key", "no usable private key"),
        (&cert, &stranger.key_path(), "ssl_key", "does not fit"),
    ];
    for (cert, key, option, why) in listener_cases {
        let config = test_config(&[("ssl_cert", cert), ("ssl_key", key)]);
        let error = Server::start(config, Some(Arc::new(ChatApp::default()))).await.err().expect("must not start");
        let message = error.to_string();
        assert_eq!(error.code(), "ECONFIG", "{message}");
        assert!(message.contains(&format!("`{option}`")) && message.contains(why), "{message}");
        assert!(!message.contains(&pki.key_pem[40..80]), "key material never appears in errors: {message}");
    }

    let inline = std::fs::read_to_string(&not_der).unwrap();
    let rpc_cases: [(&str, &str); 4] = [
        (&missing, "neither a readable file nor PEM"),
        (&not_base64, "not valid PEM"),
        (&not_der, "cannot be used"),
        (&inline, "cannot be used"),
    ];
    for (root_ca, why) in rpc_cases {
        let config = test_config(&[("rpc_host", "127.0.0.1:1"), ("rpc_tls_root_ca", root_ca)]);
        let error = Server::start(config, None).await.err().expect("must not start");
        let message = error.to_string();
        assert_eq!(error.code(), "ECONFIG", "{message}");
        assert!(message.contains("`rpc_tls_root_ca`") && message.contains(why), "{message}");
    }
}
