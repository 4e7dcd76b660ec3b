//! The Ruby extension of Ferrocable (`Ferrocable::Native`, loaded by the `ferrocable` gem).
//!
//! It only converts Ruby values to the core's types and back, maps failures to `Ferrocable::Error` classes,
//! and runs the GVL dispatcher that carries handler calls from the server's tokio threads to Ruby threads
//! owned by the gem. It never re-implements session, hub or protocol logic, and no tokio thread ever touches
//! a Ruby object. The Ruby-facing API (keyword arguments, the thread pool, Rails) lives in `gems/ferrocable`.

mod convert;
mod dispatcher;
mod errors;
mod gvl;
mod server;

use magnus::{Error, Module, Ruby};

/// The server's own allocations (sockets' buffers, sessions, the hub) come from mimalloc rather than from
/// glibc's malloc, which Ruby and the app use; Ruby's allocations are not affected. In glibc's arena the
/// tokio threads' long-lived per-connection blocks were interleaved with the short-lived ones of each
/// handshake and handler call, and the holes they left stayed in the process: with 5,000 idle connections in
/// Puma the arena held ~900 bytes per connection free. mimalloc keeps blocks of one size class together, so
/// freed blocks are reused by the next connection: ~8% less RSS per connection in the same benchmark
/// (docs/benchmarks.md, Rails idle memory).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[magnus::init]
fn init(ruby: &Ruby) -> Result<(), Error> {
    let ferrocable = ruby.define_module("Ferrocable")?;
    let native = ferrocable.define_module("Native")?;
    native.const_set("VERSION", env!("CARGO_PKG_VERSION"))?;
    server::define(ruby, native)?;
    dispatcher::define(ruby, native)?;
    Ok(())
}
