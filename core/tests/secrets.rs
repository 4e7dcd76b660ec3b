//! Secrets never leave the process: the `ferrocable` binary runs with debug logging and every secret option set
//! (from flags, `ANYCABLE_*` variables and a config file), serves good and bad tokens, signed stream names and
//! broadcast keys, and stops; neither its output nor `--print-config`, `--help` or a configuration error may
//! contain a secret value or a key derived from one.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::{Client, http};
use ferrocable::config::derive_key;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

/// Values no log line could contain by chance; different on every run.
fn secret(name: &str) -> String {
    format!("{name}-{:016x}", fastrand::u64(..))
}

fn hmac_sha256(key: &str, message: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// An HS256 identification token for `user`.
fn token(key: &str, user: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256"}"#);
    let claims = URL_SAFE_NO_PAD.encode(json!({"ext": json!({"user": user}).to_string()}).to_string());
    let signature = URL_SAFE_NO_PAD.encode(hmac_sha256(key, format!("{header}.{claims}").as_bytes()));
    format!("{header}.{claims}.{signature}")
}

/// A signed stream name as Rails' helpers make it.
fn signed(key: &str, stream: &str) -> String {
    let encoded = STANDARD.encode(json!(stream).to_string());
    format!("{encoded}--{}", hex::encode(hmac_sha256(key, encoded.as_bytes())))
}

/// The server binary, killed if still running when dropped; its output is collected line by line.
struct Ferrocable {
    child: Child,
    output: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Ferrocable {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ferrocable"));
        command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let output = Arc::new(Mutex::new(Vec::new()));
        let stdout: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
        let stderr: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
        let readers = [stdout, stderr]
            .into_iter()
            .map(|stream| {
                let output = output.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(stream).lines().map_while(Result::ok) {
                        output.lock().unwrap().push(line);
                    }
                })
            })
            .collect();
        Self { child, output, readers }
    }

    /// The first output line containing `needle`, waiting up to 10 s for it.
    fn wait_for_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self.output.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no line with {needle:?} in:\n{}",
                self.output.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The main and broadcast addresses from the startup line.
    fn addresses(&self) -> (std::net::SocketAddr, std::net::SocketAddr) {
        let banner = self.wait_for_line("listening on ");
        let after = |marker: &str| {
            let rest = &banner[banner.find(marker).unwrap() + marker.len()..];
            rest[..rest.find('/').unwrap()].parse().unwrap()
        };
        (after("listening on ws://"), after("broadcasts: http://"))
    }

    /// Stops the server with SIGTERM and returns everything it printed.
    fn stop(mut self) -> String {
        // SAFETY: signalling the child this test started, by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        assert!(status.success(), "exit status {status}");
        self.output.lock().unwrap().join("\n")
    }

    /// Runs to completion (for `--print-config`, `--help`, errors) and returns its output.
    fn run(args: &[&str], env: &[(&str, &str)]) -> String {
        let mut server = Self::start(args, env);
        server.child.wait().unwrap();
        for reader in server.readers.drain(..) {
            reader.join().unwrap();
        }
        server.output.lock().unwrap().join("\n")
    }
}

impl Drop for Ferrocable {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn assert_hidden(output: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!output.contains(secret), "{secret:?} appears in:\n{output}");
    }
}

#[tokio::test]
async fn secrets_given_explicitly_never_appear_in_debug_logs_print_config_or_help() {
    let (app, broadcast, jwt, streams, turbo) =
        (secret("app"), secret("broadcast"), secret("jwt"), secret("streams"), secret("turbo"));
    let dir = std::env::temp_dir().join(format!("ferrocable-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("anycable.toml");
    std::fs::write(&file, format!("turbo_streams_secret = {turbo:?}\n")).unwrap();
    let file = file.to_str().unwrap();
    let env = [("ANYCABLE_SECRET", app.as_str()), ("ANYCABLE_JWT_SECRET", jwt.as_str())];
    let flags = [
        "--config-path",
        file,
        "--host=127.0.0.1",
        "--port=0",
        "--http_broadcast_port=0",
        "--norpc",
        "--debug",
        "--turbo_streams",
        "--broadcast_key",
        &broadcast,
        "--streams_secret",
        &streams,
    ];
    let secrets = [app.as_str(), &broadcast, &jwt, &streams, &turbo];

    let server = Ferrocable::start(&flags, &env);
    let (main, broadcasts) = server.addresses();
    let url = format!("ws://{main}/cable");

    let mut alice = Client::connect(&format!("{url}?jid={}", token(&jwt, "alice")), None).await;
    assert_eq!(alice.recv().await["type"], "welcome");
    for (key, expected) in [(&streams, "confirm_subscription"), (&app, "reject_subscription")] {
        let identifier = json!({"channel": "$pubsub", "signed_stream_name": signed(key, "chat")}).to_string();
        assert_eq!(alice.subscribe(&identifier).await["type"], expected);
    }
    for (key, expected) in [(&turbo, "confirm_subscription"), (&streams, "reject_subscription")] {
        let identifier =
            json!({"channel": "Turbo::StreamsChannel", "signed_stream_name": signed(key, "turbo:room")}).to_string();
        assert_eq!(alice.subscribe(&identifier).await["type"], expected);
    }
    alice.send(json!({"command": "message", "identifier": "{not json", "data": "{}"})).await;
    // Tokens signed with another secret, the application secret among them, are refused.
    for key in [&app, &streams] {
        let mut mallory = Client::connect(&format!("{url}?jid={}", token(key, "mallory")), None).await;
        assert_eq!(mallory.recv().await["type"], "disconnect");
    }

    let body = json!({"stream": "chat", "data": json!({"text": "hi"}).to_string()}).to_string();
    for (key, status) in [(app.as_str(), 401), ("wrong", 401), (broadcast.as_str(), 201)] {
        let bearer = format!("Bearer {key}");
        assert_eq!(http(broadcasts, "POST", "/_broadcast", &[("Authorization", &bearer)], &body).await.0, status);
    }
    assert_eq!(alice.recv().await["message"]["text"], "hi");
    let (status, _) =
        http(broadcasts, "POST", "/_broadcast", &[("Authorization", &format!("Bearer {broadcast}"))], "{").await;
    assert_eq!(status, 400);
    alice.close().await;

    let logs = server.stop();
    // The paths that handle secrets did run, with debug logging on.
    for expected in [" DEBUG ", "connection rejected", "broadcast refused: missing or wrong broadcast key", "stopped"] {
        assert!(logs.contains(expected), "{expected:?} missing from:\n{logs}");
    }
    assert_hidden(&logs, &secrets);

    let mut print_config = flags.to_vec();
    print_config.push("--print-config");
    let printed = Ferrocable::run(&print_config, &env);
    for option in ["secret", "broadcast_key", "jwt_secret", "streams_secret", "turbo_streams_secret"] {
        assert!(printed.contains(&format!("\n{option} = \"[hidden]\"")), "{option} is shown masked:\n{printed}");
    }
    assert_hidden(&printed, &secrets);

    let redis_url = format!("redis://:{app}@localhost:6379/5");
    let help_env = [
        ("ANYCABLE_BROADCAST_KEY", broadcast.as_str()),
        ("ANYCABLE_STREAMS_SECRET", streams.as_str()),
        ("ANYCABLE_REDIS_URL", redis_url.as_str()),
        ("ANYCABLE_PORT", "8123"),
    ];
    let help = Ferrocable::run(&["--help"], &[&env[..], &help_env[..]].concat());
    assert!(help.contains("[env: ANYCABLE_SECRET]") && help.contains("[env: ANYCABLE_PORT=8123]"), "{help}");
    assert_hidden(&help, &secrets);

    let mut bad = flags.to_vec();
    bad.push("--ping_interval=soon");
    let error = Ferrocable::run(&bad, &env);
    assert!(error.contains("configuration error") && error.contains("ping_interval"), "{error}");
    assert_hidden(&error, &secrets);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn keys_derived_from_the_application_secret_never_appear_in_debug_logs() {
    let app = secret("app");
    let derived = derive_key(&app, "broadcast-cable");
    let env = [("ANYCABLE_SECRET", app.as_str()), ("ANYCABLE_DEBUG", "true")];
    let server = Ferrocable::start(&["--host=127.0.0.1", "--port=0", "--http_broadcast_port=0", "--norpc"], &env);
    let (main, broadcasts) = server.addresses();

    let mut alice = Client::connect(&format!("ws://{main}/cable?jid={}", token(&app, "alice")), None).await;
    assert_eq!(alice.recv().await["type"], "welcome");
    let identifier = json!({"channel": "$pubsub", "signed_stream_name": signed(&app, "chat")}).to_string();
    assert_eq!(alice.subscribe(&identifier).await["type"], "confirm_subscription");
    let body = json!({"stream": "chat", "data": json!({"text": "derived"}).to_string()}).to_string();
    for (key, status) in [(app.as_str(), 401), (derived.as_str(), 201)] {
        let bearer = format!("Bearer {key}");
        assert_eq!(http(broadcasts, "POST", "/_broadcast", &[("Authorization", &bearer)], &body).await.0, status);
    }
    assert_eq!(alice.recv().await["message"]["text"], "derived");
    alice.close().await;

    let logs = server.stop();
    assert!(logs.contains(" DEBUG ") && logs.contains("broadcast refused"), "{logs}");
    assert_hidden(&logs, &[&app, &derived]);
}
