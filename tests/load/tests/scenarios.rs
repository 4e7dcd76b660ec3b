//! Every scenario of the load tool, run for real (small and short) against the server started in this process,
//! checking that what the tool reports matches what happened.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ferrocable::{Config, Server};
use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_ferrocable-bench");

async fn server(extra: &[(&str, &str)]) -> Server {
    let mut config = Config::default();
    for (k, v) in [("host", "127.0.0.1"), ("port", "0"), ("http_broadcast_port", "0"), ("shutdown_timeout", "5")] {
        config.set(k, v).unwrap();
    }
    for (k, v) in extra {
        config.set(k, v).unwrap();
    }
    Server::start(config, None).await.unwrap()
}

/// Runs the tool (on a blocking thread, so the server keeps running here) and parses its JSON report.
async fn bench(args: Vec<String>) -> Value {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(BENCH).args(&args).arg("--json").output().unwrap();
        assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    })
    .await
    .unwrap()
}

fn s(items: &[&str]) -> Vec<String> {
    items.iter().map(|i| i.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_reports_every_delivery_in_order_with_latencies() {
    let server = server(&[("public", "true"), ("norpc", "true")]).await;
    let url = format!("ws://{}/cable", server.local_addr());
    let broadcast_url = format!("http://{}/_broadcast", server.broadcast_addr().unwrap());
    let report = bench(
        s(&["broadcast", "--url", &url, "--broadcast-url", &broadcast_url, "--subscribers", "40", "--streams", "2"])
            .into_iter()
            .chain(s(&["--rate", "40", "--duration", "1", "--publishers", "2", "--grace", "3"]))
            .collect(),
    )
    .await;
    assert_eq!(report["subscribers"], 40);
    assert_eq!(report["published"], 40);
    // Each publication reaches the 20 subscribers of its stream.
    assert_eq!(report["expected_deliveries"], 800);
    assert_eq!(report["delivered"], 800);
    assert_eq!(report["missing"], 0);
    assert_eq!(report["out_of_order"], 0);
    assert_eq!(report["latency"]["samples"], 800);
    assert!(report["latency"]["p95_ms"].as_f64().unwrap() >= report["latency"]["p50_ms"].as_f64().unwrap());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_reports_loss_when_nobody_delivers() {
    // Subscribers of a stream that the publications do not go to: everything expected is missing.
    let server = server(&[("public", "true"), ("norpc", "true")]).await;
    let url = format!("ws://{}/cable", server.local_addr());
    let broadcast_url = format!("http://{}/_broadcast", server.broadcast_addr().unwrap());
    let report = bench(s(&[
        "broadcast",
        "--url",
        &url,
        "--broadcast-url",
        &broadcast_url,
        "--subscribers",
        "5",
        "--identifier",
        r#"{"channel":"$pubsub","stream_name":"elsewhere"}"#,
        "--rate",
        "10",
        "--duration",
        "1",
        "--grace",
        "1",
    ]))
    .await;
    assert_eq!(report["expected_deliveries"], 50);
    assert_eq!(report["delivered"], 0);
    assert_eq!(report["missing"], 50);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_mode_grows_the_audience_until_the_limit() {
    let server = server(&[("public", "true"), ("norpc", "true")]).await;
    let url = format!("ws://{}/cable", server.local_addr());
    let broadcast_url = format!("http://{}/_broadcast", server.broadcast_addr().unwrap());
    let report = bench(s(&[
        "broadcast",
        "--url",
        &url,
        "--broadcast-url",
        &broadcast_url,
        "--subscribers",
        "10",
        "--step",
        "10",
        "--max-subscribers",
        "30",
        "--p95-limit",
        "5000",
        "--rate",
        "20",
        "--duration",
        "1",
        "--grace",
        "2",
    ]))
    .await;
    let steps = report["steps"].as_array().unwrap();
    let sizes: Vec<u64> = steps.iter().map(|s| s["subscribers"].as_u64().unwrap()).collect();
    assert_eq!(sizes, vec![10, 20, 30]);
    assert_eq!(report["largest_passing_subscribers"], 30);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_reports_connections_and_server_memory() {
    let server = server(&[("public", "true"), ("norpc", "true")]).await;
    let url = format!("ws://{}/cable", server.local_addr());
    let pid = std::process::id().to_string();
    let report = bench(s(&["idle", "--url", &url, "--connections", "200", "--hold", "1", "--server-pid", &pid])).await;
    assert_eq!(report["connections"], 200);
    assert_eq!(report["failed"], 0);
    assert!(report["server_rss_after_kib"].as_u64().unwrap() > 0);
    assert!(report["rss_per_connection_bytes"].is_number());
    assert!(report.get("rss_per_added_connection_bytes").is_none(), "only with --marginal");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while server.stats().clients_num != 0 {
        assert!(std::time::Instant::now() < deadline, "the tool closes what it opened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_marginal_connects_in_two_halves_and_reports_the_second_ones_cost() {
    let server = server(&[("public", "true"), ("norpc", "true")]).await;
    let url = format!("ws://{}/cable", server.local_addr());
    let pid = std::process::id().to_string();
    let args = ["idle", "--url", &url, "--connections", "201", "--hold", "1", "--server-pid", &pid, "--marginal"];
    let report = bench(s(&args)).await;
    assert_eq!(report["connections"], 201, "both halves of an odd count");
    assert_eq!(report["failed"], 0);
    let (before, half, after) = (
        report["server_rss_before_kib"].as_u64().unwrap(),
        report["server_rss_half_kib"].as_u64().unwrap(),
        report["server_rss_after_kib"].as_u64().unwrap(),
    );
    assert!(before > 0 && half > 0 && after > 0);
    // The second half is 101 connections: its figure is the growth from the half reading over 101.
    let added = report["rss_per_added_connection_bytes"].as_f64().unwrap();
    let expected = (after as f64 - half as f64) * 1024.0 / 101.0;
    assert!((added - expected).abs() < 1.0, "{added} vs {expected}");
    server.shutdown().await;
}

struct Backend(Child);

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_perform_go_through_the_benchmark_backend() {
    let rpc = format!("127.0.0.1:{}", free_port());
    let _backend =
        Backend(Command::new(BENCH).args(["backend", "--listen", &rpc]).stderr(Stdio::null()).spawn().unwrap());
    connect_and_perform_through(&rpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_perform_go_through_the_benchmark_backend_over_http_rpc() {
    let (rpc, http) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let _backend = Backend(
        Command::new(BENCH)
            .args(["backend", "--listen", &rpc, "--http-listen", &http])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    connect_and_perform_through(&format!("http://{http}")).await;
}

/// Connect and perform scenarios through a server whose backend is the benchmark backend at `rpc_host`.
async fn connect_and_perform_through(rpc_host: &str) {
    let server = server(&[("rpc_host", rpc_host)]).await;
    let url = format!("ws://{}/cable", server.local_addr());
    // The backend needs a moment to listen; the server retries a backend it cannot reach, so the first
    // connects still succeed.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let report = bench(s(&["connect", "--url", &url, "--clients", "100", "--concurrency", "10"])).await;
    assert_eq!(report["succeeded"], 100, "{rpc_host}");
    assert_eq!(report["failed"], 0);
    assert_eq!(report["latency"]["samples"], 100);

    let report = bench(s(&["perform", "--url", &url, "--clients", "5", "--duration", "1"])).await;
    assert_eq!(report["failures"], 0);
    let round_trips = report["round_trips"].as_u64().unwrap();
    assert!(round_trips > 5, "{report}");
    assert!(server.stats().rpc_call_total >= round_trips, "each round trip is one Command call");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_delivers_every_batched_publication_in_order() {
    let server = server(&[("public", "true"), ("norpc", "true"), ("client_queue_size", "8192")]).await;
    let url = format!("ws://{}/cable", server.local_addr());
    let broadcast_url = format!("http://{}/_broadcast", server.broadcast_addr().unwrap());
    let report = bench(s(&[
        "storm",
        "--url",
        &url,
        "--broadcast-url",
        &broadcast_url,
        "--subscribers",
        "8",
        "--streams",
        "4",
        "--publications",
        "10000",
        "--batch",
        "500",
        "--grace",
        "5",
    ]))
    .await;
    assert_eq!(report["published"], 10000);
    assert_eq!(report["publish_failures"], 0);
    // Each stream's 2500 publications reach its 2 subscribers.
    assert_eq!(report["expected_deliveries"], 20000);
    assert_eq!(report["delivered"], 20000);
    assert_eq!(report["out_of_order"], 0);
    assert_eq!(report["subscribers_cut_off"], 0);
    assert_eq!(server.stats().broadcast_msg_total, 10000);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_broadcast_counts_deliveries_and_checks_their_stream_positions() {
    let args = |url: &str, broadcast_url: &str| {
        s(&["broadcast", "--extended", "--url", url, "--broadcast-url", broadcast_url, "--subscribers", "20"])
            .into_iter()
            .chain(s(&["--streams", "2", "--rate", "20", "--duration", "1", "--grace", "3"]))
            .collect::<Vec<_>>()
    };
    let with_broker = server(&[("public", "true"), ("norpc", "true"), ("broker", "memory")]).await;
    let url = format!("ws://{}/cable", with_broker.local_addr());
    let broadcast_url = format!("http://{}/_broadcast", with_broker.broadcast_addr().unwrap());
    let report = bench(args(&url, &broadcast_url)).await;
    assert_eq!(report["protocol"], "actioncable-v1-ext-json");
    // Each publication reaches the 10 subscribers of its stream, every frame with a rising offset.
    assert_eq!((report["expected_deliveries"].as_u64(), report["delivered"].as_u64()), (Some(200), Some(200)));
    assert_eq!((report["missing"].as_u64(), report["out_of_order"].as_u64()), (Some(0), Some(0)));
    assert_eq!(report["without_position"], 0, "{report}");
    assert_eq!(report["offsets_out_of_order"], 0);
    with_broker.shutdown().await;

    // Without a broker nothing is registered: the frames carry no position, and the tool says so.
    let without = server(&[("public", "true"), ("norpc", "true")]).await;
    let url = format!("ws://{}/cable", without.local_addr());
    let broadcast_url = format!("http://{}/_broadcast", without.broadcast_addr().unwrap());
    let report = bench(args(&url, &broadcast_url)).await;
    assert_eq!(report["delivered"], 200);
    assert_eq!(report["without_position"], 200, "{report}");
    without.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_broadcasts_are_counted_like_json_ones_and_smaller_on_the_wire() {
    let server = server(&[("public", "true"), ("norpc", "true"), ("broker", "memory")]).await;
    let url = format!("ws://{}/cable", server.local_addr());
    let broadcast_url = format!("http://{}/_broadcast", server.broadcast_addr().unwrap());
    let mut sizes = Vec::new();
    for (encoding, extended, protocol) in [
        ("json", false, "actioncable-v1-json"),
        ("msgpack", false, "actioncable-v1-msgpack"),
        ("protobuf", false, "actioncable-v1-protobuf"),
        ("msgpack", true, "actioncable-v1-ext-msgpack"),
        ("protobuf", true, "actioncable-v1-ext-protobuf"),
    ] {
        let mut args = s(&["broadcast", "--encoding", encoding, "--url", &url, "--broadcast-url", &broadcast_url]);
        args.extend(s(&["--subscribers", "20", "--streams", "2", "--rate", "20", "--duration", "1", "--grace", "3"]));
        if extended {
            args.push("--extended".into());
        }
        let report = bench(args).await;
        assert_eq!(report["protocol"], protocol);
        assert_eq!((report["expected_deliveries"].as_u64(), report["delivered"].as_u64()), (Some(200), Some(200)));
        assert_eq!((report["missing"].as_u64(), report["out_of_order"].as_u64()), (Some(0), Some(0)), "{report}");
        if extended {
            assert_eq!(
                (report["without_position"].as_u64(), report["offsets_out_of_order"].as_u64()),
                (Some(0), Some(0))
            );
        }
        sizes.push(report["frame_bytes"].as_f64().unwrap());
    }
    // The benchmark payload is an object of numbers and a string: both binary forms are smaller than JSON.
    assert!(sizes[1] < sizes[0] && sizes[2] < sizes[0], "{sizes:?}");
    server.shutdown().await;
}

fn reconnect_storm_args(url: &str, broadcast_url: &str, away: &str) -> Vec<String> {
    s(&["reconnect-storm", "--url", url, "--broadcast-url", broadcast_url, "--clients", "60", "--streams", "3"])
        .into_iter()
        .chain(s(&["--missed", "7", "--away", away, "--grace", "1", "--concurrency", "60"]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_storm_restores_every_client_with_exactly_what_it_missed() {
    let server = server(&[("public", "true"), ("norpc", "true"), ("broker", "memory")]).await;
    let url = format!("ws://{}/cable", server.local_addr());
    let broadcast_url = format!("http://{}/_broadcast", server.broadcast_addr().unwrap());
    let report = bench(reconnect_storm_args(&url, &broadcast_url, "1")).await;
    assert_eq!((report["clients"].as_u64(), report["connect_failures"].as_u64()), (Some(60), Some(0)), "{report}");
    assert_eq!((report["restored"].as_u64(), report["not_restored"].as_u64()), (Some(60), Some(0)), "{report}");
    assert_eq!(report["history_confirmed"], 60);
    assert_eq!(report["history_rejected"], 0);
    // Every client missed the 7 publications of its stream, and got each exactly once.
    assert_eq!(report["expected_messages"], 420);
    assert_eq!(report["missing_messages"], 0, "{report}");
    assert_eq!(report["duplicated_messages"], 0, "{report}");
    assert_eq!(report["unexpected_messages"], 0, "{report}");
    assert_eq!(report["reconnect_failures"], 0, "{report}");
    assert_eq!(report["caught_up"], 60);
    let (restored, caught_up) =
        (report["restored_seconds"].as_f64().unwrap(), report["all_caught_up_seconds"].as_f64().unwrap());
    assert!(restored > 0.0 && caught_up >= restored, "{report}");
    assert_eq!(report["catch_up_latency"]["samples"], 60);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_storm_counts_clients_not_restored_and_what_they_missed() {
    // Sessions expire while the clients are away: none is restored, so every missed message is missing.
    let server = server(&[("public", "true"), ("norpc", "true"), ("broker", "memory"), ("sessions_ttl", "1")]).await;
    let url = format!("ws://{}/cable", server.local_addr());
    let broadcast_url = format!("http://{}/_broadcast", server.broadcast_addr().unwrap());
    let report = bench(reconnect_storm_args(&url, &broadcast_url, "4")).await;
    assert_eq!((report["restored"].as_u64(), report["not_restored"].as_u64()), (Some(0), Some(60)), "{report}");
    assert_eq!(report["missing_messages"], 420, "{report}");
    assert_eq!((report["caught_up"].as_u64(), report["all_caught_up_seconds"].as_f64()), (Some(0), None));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_reports_every_unfinished_request_closed_at_the_timeout_and_the_real_client_served() {
    let server = server(&[("public", "true"), ("norpc", "true"), ("read_header_timeout", "1")]).await;
    let url = format!("ws://{}/cable", server.local_addr());
    let broadcast = server.broadcast_addr().unwrap();
    let broadcast_url = format!("http://{broadcast}/_broadcast");
    let pid = std::process::id().to_string();
    let main = server.local_addr().to_string();
    let report = bench(s(&[
        "attack",
        "--url",
        &url,
        "--server-pid",
        &pid,
        "--broadcast-url",
        &broadcast_url,
        "--listener",
        &main,
        "--listener",
        &broadcast.to_string(),
        "--partial",
        "20",
        "--silent",
        "20",
        "--watch",
        "10",
    ]))
    .await;
    let closes = report["closes"].as_array().unwrap();
    assert_eq!(closes.len(), 4, "two kinds on each of two listeners");
    for close in closes {
        assert_eq!(close["opened"], 20, "{close}");
        assert_eq!(close["closed"], 20, "{close}");
        assert_eq!(close["never_closed"], 0, "{close}");
        let slowest = close["time_to_close"]["max_ms"].as_f64().unwrap();
        assert!((800.0..2000.0).contains(&slowest), "closed after {slowest} ms: {close}");
    }
    // The tool runs as a child: the descriptors it reads are this process's, which serves the attack.
    assert!(report["fds_peak"].as_u64().unwrap() >= report["fds_before"].as_u64().unwrap() + 80);
    assert_eq!(report["broadcasts_lost"], 0);
    assert!(report["broadcast_round_trip"]["samples"].as_u64().unwrap() >= 5);
    assert_eq!(report["connects_failed"], 0);
    server.shutdown().await;
}
