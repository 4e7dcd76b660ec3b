//! Maps failures to the Ruby exception classes under `Ferrocable::Error`, which `lib/ferrocable/errors.rb`
//! defines before this extension is loaded.

use ferrocable::{ConfigError, StartError};
use magnus::{Error, ExceptionClass, Module, RModule, Ruby};

/// `Ferrocable::<name>`, or RuntimeError if the Ruby side did not define it.
pub(crate) fn class(ruby: &Ruby, name: &str) -> ExceptionClass {
    ruby.class_object()
        .const_get::<_, RModule>("Ferrocable")
        .and_then(|ferrocable| ferrocable.const_get::<_, ExceptionClass>(name))
        .unwrap_or_else(|_| ruby.exception_runtime_error())
}

/// A `Ferrocable::<name>` exception with `message`.
pub(crate) fn error(ruby: &Ruby, name: &str, message: impl Into<String>) -> Error {
    Error::new(class(ruby, name), message.into())
}

/// A start failure, by its stable code: ConfigError, AddressInUseError, BindError or RpcError.
pub(crate) fn start_error(ruby: &Ruby, err: &StartError) -> Error {
    let name = match err.code() {
        "ECONFIG" => "ConfigError",
        "EADDRINUSE" => "AddressInUseError",
        "EBIND" => "BindError",
        _ => "RpcError",
    };
    error(ruby, name, err.to_string())
}

pub(crate) fn config_error(ruby: &Ruby, err: &ConfigError) -> Error {
    error(ruby, "ConfigError", err.to_string())
}
