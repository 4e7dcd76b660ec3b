//! `NativeServer`: the core [`Server`] behind the JavaScript `Server` class.
//!
//! It holds the options and handler functions until `start`, then the running server. Start errors come
//! back as a value with the core's stable code (`EADDRINUSE`, `ECONFIG`, …) for the JavaScript layer to
//! raise. While running, the failure listener (a strong thread-safe function) keeps Node alive, as a
//! listening socket does; `stop` releases it, so a stopped server never holds the process open.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ferrocable::handler::Handler;
use ferrocable::handler::in_process::{FailureReporter, Guarded, in_process_timeout};
use ferrocable::{Config, OPTIONS, Publication, Server, StatsSnapshot};
use napi::Status;
use napi::bindgen_prelude::{Function, Unknown};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;

use crate::convert::{self, JsHandlerFailure, JsMetric, JsPresenceInfo, JsPublication};
use crate::handler::{JsHandler, threadsafe};

/// `(failure) => void`, held strongly while the server runs.
type FailureListener =
    ThreadsafeFunction<JsHandlerFailure, napi::bindgen_prelude::Unknown<'static>, JsHandlerFailure, Status, false>;

/// What `start` resolved to: the bound addresses, or why it failed.
#[napi(object)]
pub struct JsStartOutcome {
    /// `EADDRINUSE`, `EBIND`, `ECONFIG`, `ERPC`, or `ERUNNING` when already started; absent on success.
    pub code: Option<String>,
    pub message: Option<String>,
    pub host: Option<String>,
    pub port: Option<u32>,
    pub broadcast_host: Option<String>,
    pub broadcast_port: Option<u32>,
    pub paths: Vec<String>,
}

impl JsStartOutcome {
    fn failed(code: &str, message: String) -> Self {
        Self {
            code: Some(code.to_owned()),
            message: Some(message),
            host: None,
            port: None,
            broadcast_host: None,
            broadcast_port: None,
            paths: Vec::new(),
        }
    }
}

/// Names of every option (AnyCable's snake_case names), for the JavaScript option mapping.
#[napi]
pub fn option_names() -> Vec<String> {
    OPTIONS.iter().map(|spec| spec.name.to_owned()).collect()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep serving.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[napi]
pub struct NativeServer {
    config: Mutex<Config>,
    handler: Mutex<Option<Arc<JsHandler>>>,
    /// The latest core server (kept after stop for its final stats).
    server: Mutex<Option<Arc<Server>>>,
    running: AtomicBool,
    /// Serializes start and stop.
    lifecycle: tokio::sync::Mutex<()>,
    listener: Arc<Mutex<Option<FailureListener>>>,
}

#[napi]
impl NativeServer {
    #[napi(constructor)]
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self {
            config: Mutex::new(Config::default()),
            handler: Mutex::new(None),
            server: Mutex::new(None),
            running: AtomicBool::new(false),
            lifecycle: tokio::sync::Mutex::new(()),
            listener: Arc::new(Mutex::new(None)),
        }
    }

    /// Sets one option by its AnyCable name; the error names the option and says what is wrong.
    #[napi]
    pub fn set_option(&self, name: String, value: String) -> napi::Result<()> {
        lock(&self.config).set(&name, &value).map_err(|error| napi::Error::new(Status::InvalidArg, error.to_string()))
    }

    /// The current value of an option in text form.
    #[napi]
    pub fn get_option(&self, name: String) -> Option<String> {
        lock(&self.config).get(&name)
    }

    /// Installs the in-process handler functions (used from the next `start`): each is called with
    /// `(id, sid, ...request fields)` and answers through the matching `settle*` function (see `handler`).
    #[napi]
    pub fn set_handlers(
        &self,
        connect: Function<'_, Unknown<'static>, Unknown<'static>>,
        command: Function<'_, Unknown<'static>, Unknown<'static>>,
        disconnect: Function<'_, Unknown<'static>, Unknown<'static>>,
    ) -> napi::Result<()> {
        let handler = JsHandler {
            connect: threadsafe(connect)?,
            command: threadsafe(command)?,
            disconnect: threadsafe(disconnect)?,
        };
        *lock(&self.handler) = Some(Arc::new(handler));
        Ok(())
    }

    /// Starts the server; `on_failure` receives handler calls that timed out or could not be read.
    #[napi]
    pub async fn start(&self, on_failure: FailureListener) -> napi::Result<JsStartOutcome> {
        let _lifecycle = self.lifecycle.lock().await;
        if self.running.load(Ordering::Acquire) {
            return Ok(JsStartOutcome::failed("ERUNNING", "the server is already running".into()));
        }
        let config = lock(&self.config).clone();
        let handler = lock(&self.handler).clone().map(|js| {
            let listener = self.listener.clone();
            let report: FailureReporter = Arc::new(move |failure| {
                if let Some(listener) = lock(&listener).as_ref() {
                    listener.call(failure.into(), ThreadsafeFunctionCallMode::NonBlocking);
                }
            });
            Arc::new(Guarded::new(js, in_process_timeout(&config), Some(report))) as Arc<dyn Handler>
        });
        ferrocable::logging::init(&config);
        *lock(&self.listener) = Some(on_failure);
        match Server::start(config, handler).await {
            Ok(server) => {
                let outcome = started(&server);
                *lock(&self.server) = Some(Arc::new(server));
                self.running.store(true, Ordering::Release);
                Ok(outcome)
            }
            Err(error) => {
                lock(&self.listener).take();
                Ok(JsStartOutcome::failed(error.code(), error.to_string()))
            }
        }
    }

    /// Gracefully stops the server; a no-op when it is not running.
    #[napi]
    pub async fn stop(&self) -> napi::Result<()> {
        let _lifecycle = self.lifecycle.lock().await;
        if !self.running.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let server = lock(&self.server).clone();
        if let Some(server) = server {
            server.shutdown().await;
        }
        lock(&self.listener).take();
        Ok(())
    }

    /// Delivers publications in order; resolves `false` when the server is not running.
    #[napi]
    pub async fn broadcast(&self, publications: Vec<JsPublication>) -> napi::Result<bool> {
        let Some(server) = self.running_server() else { return Ok(false) };
        server.broadcast_many(publications.into_iter().map(Publication::from)).await;
        Ok(true)
    }

    /// Remote disconnect by identifiers; the number of sessions closed, or `null` when not running.
    /// The presence set of `stream`; `None` when the server is not running, an error when its broker keeps no
    /// presence or cannot be reached.
    #[napi]
    pub async fn presence(&self, stream: String, records: bool) -> napi::Result<Option<JsPresenceInfo>> {
        let Some(server) = self.running_server() else { return Ok(None) };
        match server.presence(&stream, records).await {
            Ok(info) => Ok(Some(JsPresenceInfo::from(info))),
            Err(error) => Err(napi::Error::new(Status::GenericFailure, error.to_string())),
        }
    }

    #[napi]
    pub fn disconnect(&self, identifiers: String, reconnect: bool) -> Option<u32> {
        self.running_server().map(|server| server.disconnect(&identifiers, reconnect) as u32)
    }

    /// Every metric, by AnyCable name (zeros before the first start).
    #[napi]
    pub fn stats(&self) -> Vec<JsMetric> {
        match lock(&self.server).as_ref() {
            Some(server) => convert::metrics(&server.stats()),
            None => convert::metrics(&StatsSnapshot::default()),
        }
    }

    fn running_server(&self) -> Option<Arc<Server>> {
        if !self.running.load(Ordering::Acquire) {
            return None;
        }
        lock(&self.server).clone()
    }
}

fn started(server: &Server) -> JsStartOutcome {
    let local = server.local_addr();
    let broadcast = server.broadcast_addr();
    JsStartOutcome {
        code: None,
        message: None,
        host: Some(local.ip().to_string()),
        port: Some(u32::from(local.port())),
        broadcast_host: broadcast.map(|a| a.ip().to_string()),
        broadcast_port: broadcast.map(|a| u32::from(a.port())),
        paths: server.config().path.clone(),
    }
}
