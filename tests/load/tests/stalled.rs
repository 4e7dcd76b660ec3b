//! The `stalled` scenario against a server in this process, alone in its test binary: the scenario reads this
//! process's open files to see when the server has let the stalled subscribers go.

use std::process::Command;

use ferrocable::{Config, Server};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_subscribers_are_cut_off_while_the_others_keep_receiving() {
    let mut config = Config::default();
    let options = [
        ("host", "127.0.0.1"),
        ("port", "0"),
        ("http_broadcast_port", "0"),
        ("public", "true"),
        ("norpc", "true"),
        ("client_queue_size", "32"),
    ];
    for (k, v) in options {
        config.set(k, v).unwrap();
    }
    let server = Server::start(config, None).await.unwrap();
    let url = format!("ws://{}/cable", server.local_addr());
    let broadcast_url = format!("http://{}/_broadcast", server.broadcast_addr().unwrap());
    let pid = std::process::id().to_string();
    // 100 publications a second of 32 KiB fill a stalled socket's kernel buffers within a couple of seconds.
    let mut args: Vec<String> = ["stalled", "--url", &url, "--broadcast-url", &broadcast_url, "--server-pid", &pid]
        .iter()
        .map(|a| a.to_string())
        .collect();
    let fixed = "--subscribers 5 --streams 1 --stalled 10 --rate 100 --payload 32768 --duration 3 --grace 2 \
                 --settle 30 --repeats 1 --json";
    args.extend(fixed.split_whitespace().map(str::to_owned));
    let report: Value = tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_ferrocable-bench")).args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(report["stalled"], 10);
    let round = &report["rounds"][0];
    for part in ["without_stalled", "with_stalled"] {
        assert_eq!(round[part]["published"], 300, "{part}");
        assert_eq!(round[part]["missing"], 0, "{part}: the reading subscribers got everything");
        assert_eq!(round[part]["out_of_order"], 0, "{part}");
    }
    assert_eq!(round["stalled_connected"], 10);
    assert!(round["seconds_until_released"].is_number(), "{report}");
    let outcome = &round["stalled_outcome"];
    assert_eq!(outcome["still_connected"], 0, "{report}");
    assert_eq!(outcome["told_too_slow"].as_u64().unwrap() + outcome["closed_without_frame"].as_u64().unwrap(), 10);
    let fds = report["server_fds"].as_array().unwrap();
    assert!(fds[2].as_u64().unwrap() <= fds[0].as_u64().unwrap(), "{report}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while server.stats().clients_num != 0 {
        assert!(std::time::Instant::now() < deadline, "every connection the tool opened is gone");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    server.shutdown().await;
}
