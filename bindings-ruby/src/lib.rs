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

#[magnus::init]
fn init(ruby: &Ruby) -> Result<(), Error> {
    let ferrocable = ruby.define_module("Ferrocable")?;
    let native = ferrocable.define_module("Native")?;
    native.const_set("VERSION", env!("CARGO_PKG_VERSION"))?;
    server::define(ruby, native)?;
    dispatcher::define(ruby, native)?;
    Ok(())
}
