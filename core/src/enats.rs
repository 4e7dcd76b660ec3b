//! Embedded NATS (`embed_nats`): a `nats-server` child process started with the node, supervised (restarted
//! with backoff if it exits), and stopped with the node, so a cluster needs no separate NATS deployment.
//!
//! The server is configured from the `enats_*` options through a generated config file: client address,
//! cluster address, name and routes (several nodes' servers form one NATS cluster), and gateways
//! (super-clusters). The node's own NATS clients connect to it through `nats_servers`, which points at
//! `enats_addr` unless set explicitly. This module only runs the process; it never publishes or subscribes.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::engine::{Backoff, sleep_or_stop};

/// The program started for `embed_nats`.
pub const BINARY: &str = "nats-server";
/// Where the server must say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopping server may take before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);
/// Log lines kept to explain an early exit.
const TAIL: usize = 20;

/// Why the embedded NATS server could not start.
#[derive(Debug, thiserror::Error)]
pub enum EnatsError {
    #[error(
        "embed_nats: the `{BINARY}` program was not found on PATH or in /usr/sbin, /usr/local/sbin, /usr/local/bin \
         (on Debian/Ubuntu: apt-get install nats-server; or run NATS separately and set nats_servers)"
    )]
    BinaryMissing,
    #[error("embed_nats: cannot write the NATS config file {path}: {source}")]
    ConfigFile { path: String, source: std::io::Error },
    #[error("embed_nats: cannot start {binary}: {source}")]
    Spawn { binary: String, source: std::io::Error },
    #[error("embed_nats: {BINARY} exited before it was ready ({status}); its last lines:\n{tail}")]
    Exited { status: String, tail: String },
    #[error("embed_nats: {BINARY} was not ready within {}s; its last lines:\n{tail}", READY_TIMEOUT.as_secs())]
    NotReady { tail: String },
}

/// Splits `nats://host:port` (or `host:port`) into host and port.
pub(crate) fn parse_nats_addr(addr: &str) -> Result<(String, u16), String> {
    let rest = addr.split_once("://").map(|(_, r)| r).unwrap_or(addr);
    let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest).trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':').ok_or_else(|| format!("{addr:?}: expected nats://host:port"))?;
    let port = port.parse::<u16>().map_err(|_| format!("{addr:?}: invalid port {port:?}"))?;
    if host.is_empty() {
        return Err(format!("{addr:?}: expected nats://host:port"));
    }
    Ok((host.trim_matches(|c| c == '[' || c == ']').to_owned(), port))
}

/// Finds `nats-server` on `path` (a PATH value), then in the sbin folders Debian installs it to.
pub(crate) fn find_binary(path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = path.map(|p| std::env::split_paths(p).collect()).unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/usr/local/bin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(BINARY)).find(|p| p.is_file())
}

/// The nats-server configuration for the `enats_*` options, in NATS' config format.
pub(crate) fn server_config(config: &Config, server_name: &str) -> Result<String, String> {
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let listen = |addr: &str| parse_nats_addr(addr).map(|(h, p)| quote(&format!("{h}:{p}")));
    let mut out = String::new();
    out.push_str(&format!("server_name: {}\n", quote(server_name)));
    out.push_str(&format!("listen: {}\n", listen(&config.enats_addr)?));
    if config.broker == crate::config::BrokerAdapter::Nats {
        // The nats broker keeps history and sessions in JetStream, as AnyCable-Go's embedded server does.
        out.push_str(&format!("jetstream {{\n  store_dir: {}\n}}\n", quote(&store_dir(config, server_name))));
    }
    if config.enats_debug {
        out.push_str("debug: true\n");
    }
    if config.enats_trace {
        out.push_str("trace: true\n");
    }
    if !config.enats_cluster.is_empty() {
        let routes: Vec<String> = config.enats_cluster_routes.iter().map(|r| quote(r)).collect();
        out.push_str(&format!(
            "cluster {{\n  name: {}\n  listen: {}\n  routes: [{}]\n}}\n",
            quote(&config.enats_cluster_name),
            listen(&config.enats_cluster)?,
            routes.join(", ")
        ));
    }
    if !config.enats_gateway.is_empty() {
        out.push_str(&format!(
            "gateway {{\n  name: {}\n  listen: {}\n",
            quote(&config.enats_cluster_name),
            listen(&config.enats_gateway)?
        ));
        if !config.enats_gateway_advertise.is_empty() {
            out.push_str(&format!("  advertise: {}\n", quote(&config.enats_gateway_advertise)));
        }
        let mut gateways = Vec::new();
        for entry in config.enats_gateways.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, urls) =
                entry.split_once(':').ok_or_else(|| format!("enats_gateways: {entry:?} is not name:url1,url2"))?;
            let urls: Vec<String> =
                urls.split(',').map(str::trim).filter(|u| !u.is_empty()).map(|u| quote(u)).collect();
            gateways.push(format!("    {{ name: {}, urls: [{}] }}", quote(name), urls.join(", ")));
        }
        out.push_str(&format!("  gateways: [\n{}\n  ]\n}}\n", gateways.join(",\n")));
    }
    Ok(out)
}

/// Where JetStream stores (with `broker=nats`): `enats_store_dir`, else `<temp>/nats-data/<server name>`,
/// so a restarted node with the same server name finds its history and sessions again.
pub(crate) fn store_dir(config: &Config, server_name: &str) -> String {
    if config.enats_store_dir.is_empty() {
        std::env::temp_dir().join("nats-data").join(server_name).display().to_string()
    } else {
        config.enats_store_dir.clone()
    }
}

/// A running embedded NATS server.
pub(crate) struct EmbeddedNats {
    binary: PathBuf,
    /// Written for each start and removed once the server has read it, so nothing is left behind even
    /// when the node's process is killed.
    config_file: PathBuf,
    config_text: String,
    child: Child,
    tail: Arc<Mutex<VecDeque<String>>>,
    log_reader: tokio::task::JoinHandle<()>,
    debug: bool,
}

impl EmbeddedNats {
    /// Starts the server and waits until it accepts connections.
    pub(crate) async fn start(config: &Config) -> Result<Self, EnatsError> {
        let binary = find_binary(std::env::var_os("PATH").as_deref()).ok_or(EnatsError::BinaryMissing)?;
        let server_name = if config.enats_server_name.is_empty() {
            format!("ferrocable-{}", (0..8).map(|_| fastrand::alphanumeric()).collect::<String>())
        } else {
            config.enats_server_name.clone()
        };
        let dir = std::env::temp_dir().join(format!("ferrocable-enats-{}-{}", std::process::id(), server_name));
        let config_file = dir.join("nats-server.conf");
        let text = server_config(config, &server_name).map_err(|reason| EnatsError::ConfigFile {
            path: config_file.display().to_string(),
            source: std::io::Error::other(reason),
        })?;
        let debug = config.enats_debug || config.enats_trace;
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL)));
        let (child, log_reader) = spawn(&binary, &config_file, &text, tail.clone(), debug).await?;
        let routes = if config.enats_cluster.is_empty() {
            String::new()
        } else {
            format!(
                ", cluster {} at {}, routes: {}",
                config.enats_cluster_name,
                config.enats_cluster,
                config.enats_cluster_routes.join(",")
            )
        };
        tracing::info!(
            "embedded NATS server {server_name} started: {}{routes} ({})",
            config.enats_addr,
            binary.display()
        );
        Ok(Self { binary, config_file, config_text: text, child, tail, log_reader, debug })
    }

    /// Supervises the server until `stop`: restarts it if it exits, stops it (SIGTERM, then SIGKILL) at the end.
    pub(crate) fn supervise(self, tasks: &TaskTracker, stop: CancellationToken) {
        tasks.spawn(self.run(stop));
    }

    async fn run(mut self, stop: CancellationToken) {
        let mut backoff = Backoff::default();
        loop {
            let status = tokio::select! {
                status = self.child.wait() => status,
                () = stop.cancelled() => break,
            };
            let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
            let delay = backoff.next_delay().max(Duration::from_millis(500));
            tracing::error!(
                "embedded NATS server exited unexpectedly ({status}); restarting in {:.1}s; its last lines:\n{}",
                delay.as_secs_f64(),
                tail_text(&self.tail)
            );
            if sleep_or_stop(delay, &stop).await {
                return self.cleanup().await;
            }
            match spawn(&self.binary, &self.config_file, &self.config_text, self.tail.clone(), self.debug).await {
                Ok((child, reader)) => {
                    self.log_reader.abort();
                    self.child = child;
                    self.log_reader = reader;
                    backoff.reset();
                    tracing::info!("embedded NATS server restarted");
                }
                Err(error) => tracing::error!("embedded NATS server could not be restarted: {error}"),
            }
        }
        if let Some(pid) = self.child.id() {
            // SAFETY: sending a signal to our own child process by its pid.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
        if tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await.is_err() {
            tracing::warn!("embedded NATS server did not stop within {}s; killing it", STOP_TIMEOUT.as_secs());
            let _ = self.child.kill().await;
        }
        tracing::debug!("embedded NATS server stopped");
        self.cleanup().await;
    }

    async fn cleanup(mut self) {
        let _ = self.child.kill().await;
        let _ = (&mut self.log_reader).await;
    }
}

/// Writes the config file, starts the process, waits for "Server is ready" in its log, and removes the
/// config file (the server has read it by then).
async fn spawn(
    binary: &Path,
    config_file: &Path,
    config_text: &str,
    tail: Arc<Mutex<VecDeque<String>>>,
    debug: bool,
) -> Result<(Child, tokio::task::JoinHandle<()>), EnatsError> {
    let dir = config_file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(config_file, config_text))
        .map_err(|source| EnatsError::ConfigFile { path: config_file.display().to_string(), source })?;
    let started = spawn_and_wait(binary, config_file, tail, debug).await;
    let _ = std::fs::remove_dir_all(dir);
    started
}

async fn spawn_and_wait(
    binary: &Path,
    config_file: &Path,
    tail: Arc<Mutex<VecDeque<String>>>,
    debug: bool,
) -> Result<(Child, tokio::task::JoinHandle<()>), EnatsError> {
    let mut command = Command::new(binary);
    command
        .arg("-c")
        .arg(config_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: prctl only sets a flag of the child; it allocates nothing between fork and exec.
    // The server gets SIGTERM if this node's process dies without stopping it.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child =
        command.spawn().map_err(|source| EnatsError::Spawn { binary: binary.display().to_string(), source })?;
    let stderr = child.stderr.take();
    let (ready_tx, ready_rx) = oneshot::channel::<()>();
    let lines_tail = tail.clone();
    let log_reader = tokio::spawn(async move {
        let Some(stderr) = stderr else { return };
        let mut ready = Some(ready_tx);
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("Server is ready") {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(());
                }
            }
            forward(&line, debug);
            let mut tail = lines_tail.lock();
            if tail.len() == TAIL {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    });
    match tokio::time::timeout(READY_TIMEOUT, ready_rx).await {
        Ok(Ok(())) => Ok((child, log_reader)),
        Ok(Err(_)) => {
            // The log ended without the ready line: the process is exiting.
            let status = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
            let _ = log_reader.await;
            let status = match status {
                Ok(Ok(s)) => s.to_string(),
                _ => "log closed".to_owned(),
            };
            Err(EnatsError::Exited { status, tail: tail_text(&tail) })
        }
        Err(_) => {
            let _ = child.kill().await;
            log_reader.abort();
            Err(EnatsError::NotReady { tail: tail_text(&tail) })
        }
    }
}

/// Forwards one line of the server's log at a matching level.
fn forward(line: &str, debug: bool) {
    if line.contains("[ERR]") || line.contains("[FTL]") {
        tracing::error!("nats-server: {line}");
    } else if line.contains("[WRN]") {
        tracing::warn!("nats-server: {line}");
    } else if debug {
        tracing::info!("nats-server: {line}");
    } else {
        tracing::debug!("nats-server: {line}");
    }
}

fn tail_text(tail: &Mutex<VecDeque<String>>) -> String {
    tail.lock().iter().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_addresses_parse_with_or_without_scheme() {
        assert_eq!(parse_nats_addr("nats://127.0.0.1:4222").unwrap(), ("127.0.0.1".into(), 4222));
        assert_eq!(parse_nats_addr("0.0.0.0:4248").unwrap(), ("0.0.0.0".into(), 4248));
        assert_eq!(parse_nats_addr("nats://user:pw@host:1/").unwrap(), ("host".into(), 1));
        assert!(parse_nats_addr("nats://host").is_err());
        assert!(parse_nats_addr("nats://:4222").is_err());
    }

    #[test]
    fn a_missing_binary_is_not_found() {
        let empty = std::env::temp_dir().join("ferrocable-no-such-dir");
        let found = find_binary(Some(empty.as_os_str()));
        // Only the fixed sbin folders can still provide it.
        assert!(found.is_none_or(|p| !p.starts_with(&empty)));
    }

    #[test]
    fn a_missing_binary_error_says_what_to_install() {
        let message = EnatsError::BinaryMissing.to_string();
        assert!(message.contains("nats-server") && message.contains("apt-get install nats-server"), "{message}");
        assert!(message.contains("nats_servers"), "and the alternative: {message}");
    }

    #[test]
    fn cluster_and_gateway_options_become_a_server_config() {
        let mut c = Config::default();
        for (k, v) in [
            ("enats_addr", "nats://127.0.0.1:4242"),
            ("enats_cluster", "nats://127.0.0.1:4248"),
            ("enats_cluster_routes", "nats://127.0.0.1:4249,nats://127.0.0.1:4250"),
            ("enats_gateway", "nats://0.0.0.0:7222"),
            ("enats_gateways", "east:nats://e1:7222,nats://e2:7222;west:nats://w1:7222"),
        ] {
            c.set(k, v).unwrap();
        }
        let text = server_config(&c, "n1").unwrap();
        assert!(text.contains("server_name: \"n1\"\nlisten: \"127.0.0.1:4242\"\n"), "{text}");
        assert!(text.contains("name: \"anycable-cluster\"\n  listen: \"127.0.0.1:4248\"\n  routes: [\"nats://127.0.0.1:4249\", \"nats://127.0.0.1:4250\"]"), "{text}");
        assert!(text.contains("{ name: \"east\", urls: [\"nats://e1:7222\", \"nats://e2:7222\"] }"), "{text}");
        assert!(text.contains("{ name: \"west\", urls: [\"nats://w1:7222\"] }"), "{text}");
        assert!(!text.contains("jetstream"), "JetStream only for the nats broker: {text}");
    }

    #[test]
    fn the_nats_broker_turns_jetstream_on_with_a_store_folder() {
        let mut c = Config::default();
        c.set("broker", "nats").unwrap();
        let default_store = std::env::temp_dir().join("nats-data").join("n1").display().to_string();
        let text = server_config(&c, "n1").unwrap();
        assert!(text.contains(&format!("jetstream {{\n  store_dir: {:?}\n}}\n", default_store)), "{text}");
        c.set("enats_store_dir", "/var/lib/ferrocable/nats").unwrap();
        let text = server_config(&c, "n1").unwrap();
        assert!(text.contains("store_dir: \"/var/lib/ferrocable/nats\""), "{text}");
    }
}
