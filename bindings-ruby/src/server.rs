//! `Ferrocable::Native::Server`: one core [`Server`] on its own tokio runtime, plus the process check that
//! keeps a forked child from silently using a server whose threads stayed in the parent.
//!
//! Every method converts its arguments, hands off to the core and converts the result; anything that may wait
//! (a saturated broadcast queue, a graceful shutdown) waits without the GVL. The runtime's threads never run
//! Ruby code.

use std::sync::Arc;
use std::time::Duration;

use ferrocable::handler::in_process::{Guarded, in_process_timeout};
use ferrocable::{Config, Handler, OPTIONS, Publication, Server};
use magnus::{Error, RArray, RHash, RModule, Ruby, function, method, prelude::*};
use parking_lot::Mutex;
use tokio::runtime::{Handle, Runtime};

use crate::dispatcher::{JobQueue, RbDispatcher, RubyHandler};
use crate::errors;
use crate::gvl::{Outcome, panic_message, without_gvl};

/// A started server, owned by the process that started it.
#[magnus::wrap(class = "Ferrocable::Native::Server", free_immediately, size)]
pub(crate) struct RbServer {
    owner_pid: u32,
    running: Mutex<Option<Running>>,
}

struct Running {
    runtime: Runtime,
    server: Arc<Server>,
    /// The pool's queue, closed when the server object is collected without `stop`, so the pool threads end.
    jobs: Option<Arc<JobQueue>>,
}

impl Drop for RbServer {
    fn drop(&mut self) {
        let Some(running) = self.running.get_mut().take() else { return };
        if std::process::id() == self.owner_pid {
            if let Some(jobs) = &running.jobs {
                jobs.close();
            }
            // Never block a GC or process exit on network work.
            running.runtime.shutdown_background();
        } else {
            // In a forked child the runtime's threads do not exist: tearing it down would wait forever.
            std::mem::forget(running);
        }
    }
}

/// Builds a configuration from `[name, value]` pairs of Strings.
fn config_from(ruby: &Ruby, options: RArray) -> Result<Config, Error> {
    let mut config = Config::default();
    for pair in options.into_iter() {
        let (name, value): (String, String) = magnus::TryConvert::try_convert(pair)?;
        config.set(&name, &value).map_err(|e| errors::config_error(ruby, &e))?;
    }
    Ok(config)
}

/// `Native.validate_options(pairs)`: raises `Ferrocable::ConfigError` for what `start` would refuse.
fn validate_options(ruby: &Ruby, options: RArray) -> Result<bool, Error> {
    config_from(ruby, options)?.finalize().map_err(|e| errors::config_error(ruby, &e))?;
    Ok(true)
}

impl RbServer {
    /// `Native::Server.start(pairs, dispatcher_or_nil)`. With a dispatcher, calls go to the Ruby pool, each
    /// bounded by `rpc_request_timeout` (5 s when unset); without one, to the gRPC backend at `rpc_host`
    /// (unless `norpc`).
    fn start(ruby: &Ruby, options: RArray, dispatcher: Option<&RbDispatcher>) -> Result<Self, Error> {
        let config = config_from(ruby, options)?;
        ferrocable::logging::init(&config);
        let handler = dispatcher.map(|d| {
            let ruby_handler = Arc::new(RubyHandler::new(d.queue())) as Arc<dyn Handler>;
            // Ruby exceptions are logged by the gem through the app's logger; late calls are logged by the core.
            Arc::new(Guarded::new(ruby_handler, in_process_timeout(&config), None)) as Arc<dyn Handler>
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("ferrocable")
            .enable_all()
            .build()
            .map_err(|e| errors::error(ruby, "StartError", format!("cannot start the I/O threads: {e}")))?;
        // Binding the listeners is quick and calls no handler, so it runs with the GVL held.
        let server = runtime.block_on(Server::start(config, handler)).map_err(|e| errors::start_error(ruby, &e))?;
        let running = Running { runtime, server: Arc::new(server), jobs: dispatcher.map(RbDispatcher::queue) };
        Ok(Self { owner_pid: std::process::id(), running: Mutex::new(Some(running)) })
    }

    /// The server and a handle on its runtime, after the process and state checks.
    fn live(&self, ruby: &Ruby) -> Result<(Arc<Server>, Handle), Error> {
        let pid = std::process::id();
        if pid != self.owner_pid {
            return Err(errors::error(
                ruby,
                "ForkError",
                format!(
                    "this Ferrocable server was started in process {} and this process ({pid}) is a fork of it: the \
                     server's threads and sockets stayed in the parent. Start the server after forking (in Puma \
                     cluster mode use `plugin :ferrocable`), or broadcast to it over HTTP",
                    self.owner_pid
                ),
            ));
        }
        match self.running.lock().as_ref() {
            Some(running) => Ok((running.server.clone(), running.runtime.handle().clone())),
            None => Err(errors::error(ruby, "NotRunningError", "the server is stopped")),
        }
    }

    fn port(ruby: &Ruby, rb_self: &Self) -> Result<u16, Error> {
        Ok(rb_self.live(ruby)?.0.local_addr().port())
    }

    fn broadcast_port(ruby: &Ruby, rb_self: &Self) -> Result<Option<u16>, Error> {
        Ok(rb_self.live(ruby)?.0.broadcast_addr().map(|a| a.port()))
    }

    /// Publications in order: `[[stream, data, exclude_socket_or_nil], ...]`.
    fn broadcast_many(ruby: &Ruby, rb_self: &Self, publications: RArray) -> Result<usize, Error> {
        let (server, handle) = rb_self.live(ruby)?;
        let mut batch = Vec::with_capacity(publications.len());
        for item in publications.into_iter() {
            let (stream, data, exclude_socket): (String, String, Option<String>) =
                magnus::TryConvert::try_convert(item)?;
            if stream.is_empty() {
                return Err(ruby_arg_error(ruby, "stream must be a non-empty String"));
            }
            batch.push(Publication {
                exclude_socket: exclude_socket.filter(|s| !s.is_empty()),
                ..Publication::new(stream, data)
            });
        }
        let count = batch.len();
        // A saturated fan-out worker makes `publish` wait; that wait must not hold the GVL.
        let publish = move || handle.block_on(server.broadcast_many(batch));
        match without_gvl(publish, None) {
            Outcome::Ran(Ok(())) => Ok(count),
            Outcome::Ran(Err(panic)) => Err(errors::error(ruby, "Error", panic_message(&*panic))),
            // An interrupt is pending: publish with the GVL (the workers never need Ruby, so this cannot deadlock).
            Outcome::Interrupted(publish) => {
                publish();
                Ok(count)
            }
        }
    }

    /// The presence set of `stream`: `[total, [[id, info_json_or_nil], ...]]` (`nil` records unless `records`).
    #[allow(clippy::type_complexity)]
    fn presence(
        ruby: &Ruby,
        rb_self: &Self,
        stream: String,
        records: bool,
    ) -> Result<(usize, Option<Vec<(String, Option<String>)>>), Error> {
        let (server, handle) = rb_self.live(ruby)?;
        // The broker may be remote: the wait must not hold the GVL.
        let read = move || handle.block_on(server.presence(&stream, records));
        let result = match without_gvl(read, None) {
            Outcome::Ran(Ok(result)) => result,
            Outcome::Ran(Err(panic)) => return Err(errors::error(ruby, "Error", panic_message(&*panic))),
            Outcome::Interrupted(read) => read(),
        };
        match result {
            Ok(info) => Ok((info.total, info.records.map(|r| r.into_iter().map(|m| (m.id, m.info)).collect()))),
            Err(error) => Err(errors::error(ruby, "PresenceError", &error.to_string())),
        }
    }

    fn disconnect(ruby: &Ruby, rb_self: &Self, identifiers: String, reconnect: bool) -> Result<usize, Error> {
        Ok(rb_self.live(ruby)?.0.disconnect(&identifiers, reconnect))
    }

    fn restart_clients(ruby: &Ruby, rb_self: &Self) -> Result<usize, Error> {
        Ok(rb_self.live(ruby)?.0.restart_clients())
    }

    fn stats(ruby: &Ruby, rb_self: &Self) -> Result<RHash, Error> {
        let snapshot = rb_self.live(ruby)?.0.stats();
        let hash = ruby.hash_new();
        for (name, value, _counter) in snapshot.entries() {
            hash.aset(ruby.to_symbol(name), i64::try_from(value).unwrap_or(i64::MAX))?;
        }
        Ok(hash)
    }

    /// Starts the graceful shutdown in the background; `wait_stopped` waits for it.
    fn begin_stop(ruby: &Ruby, rb_self: &Self) -> Result<(), Error> {
        let (server, handle) = rb_self.live(ruby)?;
        handle.spawn(async move { server.shutdown().await });
        Ok(())
    }

    /// Waits up to `ms` without the GVL (the shutdown needs the Ruby pool for Disconnect calls); `true` once
    /// stopped. Returns `false` early when the thread has an interrupt to handle.
    fn wait_stopped(ruby: &Ruby, rb_self: &Self, ms: u64) -> Result<bool, Error> {
        let (server, handle) = rb_self.live(ruby)?;
        let wait = move || {
            handle.block_on(async { tokio::time::timeout(Duration::from_millis(ms), server.stopped()).await.is_ok() })
        };
        match without_gvl(wait, None) {
            Outcome::Ran(Ok(stopped)) => Ok(stopped),
            Outcome::Ran(Err(panic)) => Err(errors::error(ruby, "Error", panic_message(&*panic))),
            Outcome::Interrupted(_) => Ok(false),
        }
    }

    /// Releases the runtime once the server has stopped. Further calls raise `NotRunningError`.
    fn close(ruby: &Ruby, rb_self: &Self) -> Result<bool, Error> {
        rb_self.live(ruby)?;
        let Some(running) = rb_self.running.lock().take() else { return Ok(false) };
        let Running { runtime, server, jobs: _ } = running;
        drop(server);
        // The server has stopped, so this only joins idle threads; an interrupt does not skip it.
        let shutdown = move || runtime.shutdown_timeout(Duration::from_secs(2));
        if let Outcome::Interrupted(shutdown) = without_gvl(shutdown, None) {
            shutdown();
        }
        Ok(true)
    }

    fn is_running(&self) -> bool {
        std::process::id() == self.owner_pid
            && self.running.lock().as_ref().is_some_and(|running| !running.server.is_stopped())
    }

    fn owner_pid(&self) -> u32 {
        self.owner_pid
    }
}

fn ruby_arg_error(ruby: &Ruby, message: &str) -> Error {
    Error::new(ruby.exception_arg_error(), message.to_owned())
}

/// `Native::OPTIONS`: every core option as `[name, default, help, switch]`.
fn options_table(ruby: &Ruby) -> Result<RArray, Error> {
    let table = ruby.ary_new_capa(OPTIONS.len());
    for spec in OPTIONS {
        let row = ruby.ary_new_from_values(&[
            ruby.str_new(spec.name).as_value(),
            ruby.str_new(spec.default).as_value(),
            ruby.str_new(spec.help()).as_value(),
            if spec.switch { ruby.qtrue().as_value() } else { ruby.qfalse().as_value() },
        ]);
        row.freeze();
        table.push(row)?;
    }
    table.freeze();
    Ok(table)
}

pub(crate) fn define(ruby: &Ruby, native: RModule) -> Result<(), Error> {
    native.const_set("OPTIONS", options_table(ruby)?)?;
    native.define_module_function("validate_options", function!(validate_options, 1))?;

    let class = native.define_class("Server", ruby.class_object())?;
    class.undef_default_alloc_func();
    class.define_singleton_method("start", function!(RbServer::start, 2))?;
    class.define_method("port", method!(RbServer::port, 0))?;
    class.define_method("broadcast_port", method!(RbServer::broadcast_port, 0))?;
    class.define_method("broadcast_many", method!(RbServer::broadcast_many, 1))?;
    class.define_method("disconnect", method!(RbServer::disconnect, 2))?;
    class.define_method("restart_clients", method!(RbServer::restart_clients, 0))?;
    class.define_method("presence", method!(RbServer::presence, 2))?;
    class.define_method("stats", method!(RbServer::stats, 0))?;
    class.define_method("begin_stop", method!(RbServer::begin_stop, 0))?;
    class.define_method("wait_stopped", method!(RbServer::wait_stopped, 1))?;
    class.define_method("close", method!(RbServer::close, 0))?;
    class.define_method("running?", method!(RbServer::is_running, 0))?;
    class.define_method("owner_pid", method!(RbServer::owner_pid, 0))?;
    Ok(())
}
