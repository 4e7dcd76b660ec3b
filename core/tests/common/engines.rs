//! Real engines for cluster tests: Debian's `redis-server` and `nats-server`, each on a free loopback port,
//! started by the test, killable and restartable on the same port, and stopped when dropped. A missing
//! program is a test failure (scripts/setup.sh installs both), never a skip.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Finds a program on PATH or in the sbin folders Debian installs servers to.
pub fn program(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/local/bin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` is not installed: run scripts/setup.sh (Debian package {name})"))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Redis,
    Nats,
}

/// One engine server process.
pub struct Engine {
    kind: Kind,
    pub port: u16,
    child: Option<Child>,
    /// For a NATS engine with JetStream: its store folder, which outlives restarts and is removed when the
    /// engine is dropped.
    store: Option<PathBuf>,
}

impl Engine {
    /// Starts redis-server on a free port (no persistence).
    pub fn redis() -> Self {
        Self::start_new(Kind::Redis)
    }

    /// Starts nats-server on a free port.
    pub fn nats() -> Self {
        Self::start_new(Kind::Nats)
    }

    /// Starts nats-server with JetStream (`-js`) on a free port.
    pub fn nats_jetstream() -> Self {
        let mut engine = Self::not_started(Kind::Nats);
        let store = format!("ferrocable-test-jetstream-{}-{}", std::process::id(), engine.port);
        engine.store = Some(std::env::temp_dir().join(store));
        engine.start();
        engine
    }

    /// An engine that is not running yet (for "down at start" scenarios); call [`Engine::start`].
    pub fn not_started(kind: Kind) -> Self {
        Self { kind, port: free_port(), child: None, store: None }
    }

    fn start_new(kind: Kind) -> Self {
        let mut engine = Self::not_started(kind);
        engine.start();
        engine
    }

    /// The URL nodes use: `redis://127.0.0.1:<port>/0` or `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        match self.kind {
            Kind::Redis => format!("redis://127.0.0.1:{}/0", self.port),
            Kind::Nats => format!("nats://127.0.0.1:{}", self.port),
        }
    }

    /// Starts the process on its port and waits until it accepts connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let port = self.port.to_string();
        let mut command = match self.kind {
            Kind::Redis => {
                let mut c = Command::new(program("redis-server"));
                c.args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
                c.args(["--protected-mode", "no", "--daemonize", "no", "--loglevel", "warning"]);
                c
            }
            Kind::Nats => {
                let mut c = Command::new(program("nats-server"));
                c.args(["-a", "127.0.0.1", "-p", &port]);
                if let Some(store) = &self.store {
                    c.arg("-js").arg("-sd").arg(store);
                }
                c
            }
        };
        let child = command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("{:?} exited at start ({status}); port {} taken?", self.kind, self.port);
            }
            assert!(Instant::now() < deadline, "{:?} did not start on port {}", self.kind, self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Deletes what a stopped JetStream engine stored: it comes back empty, as after losing its disk.
    pub fn wipe_store(&self) {
        assert!(self.child.is_none(), "stop the engine first");
        if let Some(store) = &self.store {
            let _ = std::fs::remove_dir_all(store);
        }
    }

    /// Kills the process (SIGKILL: no goodbye to its clients) and waits until the port is closed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "{:?} still listening on {}", self.kind, self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(store) = &self.store {
            let _ = std::fs::remove_dir_all(store);
        }
    }
}
