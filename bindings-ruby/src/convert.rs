//! Conversions between the rpc.proto messages and plain Ruby objects.
//!
//! Requests become Hashes with Symbol keys named like the proto fields (`{command:, identifier:, env: {url:,
//! headers:, cstate:, istate:}}`); maps and lists stay Hashes of Strings and Arrays. Responses are read from a
//! Hash (Symbol or String keys) or anything with `to_h`; `status` is `:success`, `:failure` or `:error`.
//! Unknown fields and wrong types raise `Ferrocable::InvalidResponseError` naming the field, so a typo in a
//! handler never passes silently. Runs with the GVL, on Ruby threads only.

use std::collections::HashMap;

use ferrocable::handler::{
    CommandMessage, CommandResponse, ConnectionRequest, ConnectionResponse, DisconnectRequest, DisconnectResponse, Env,
    EnvResponse, PresenceResponse, Status,
};
use magnus::r_hash::ForEach;
use magnus::{Error, Integer, RArray, RHash, RString, Ruby, Symbol, Value, prelude::*};

use crate::errors;

pub(crate) fn connection_request(ruby: &Ruby, request: &ConnectionRequest) -> Result<RHash, Error> {
    let hash = ruby.hash_new();
    hash.aset(ruby.to_symbol("env"), env(ruby, request.env.as_ref())?)?;
    Ok(hash)
}

pub(crate) fn command_message(ruby: &Ruby, request: &CommandMessage) -> Result<RHash, Error> {
    let hash = ruby.hash_new();
    hash.aset(ruby.to_symbol("command"), request.command.as_str())?;
    hash.aset(ruby.to_symbol("identifier"), request.identifier.as_str())?;
    hash.aset(ruby.to_symbol("connection_identifiers"), request.connection_identifiers.as_str())?;
    hash.aset(ruby.to_symbol("data"), request.data.as_str())?;
    hash.aset(ruby.to_symbol("env"), env(ruby, request.env.as_ref())?)?;
    Ok(hash)
}

pub(crate) fn disconnect_request(ruby: &Ruby, request: &DisconnectRequest) -> Result<RHash, Error> {
    let hash = ruby.hash_new();
    hash.aset(ruby.to_symbol("identifiers"), request.identifiers.as_str())?;
    let subscriptions = ruby.ary_new_capa(request.subscriptions.len());
    for identifier in &request.subscriptions {
        subscriptions.push(identifier.as_str())?;
    }
    hash.aset(ruby.to_symbol("subscriptions"), subscriptions)?;
    hash.aset(ruby.to_symbol("env"), env(ruby, request.env.as_ref())?)?;
    Ok(hash)
}

fn env(ruby: &Ruby, env: Option<&Env>) -> Result<RHash, Error> {
    let empty = Env::default();
    let env = env.unwrap_or(&empty);
    let hash = ruby.hash_new();
    hash.aset(ruby.to_symbol("url"), env.url.as_str())?;
    hash.aset(ruby.to_symbol("headers"), string_map(ruby, &env.headers)?)?;
    hash.aset(ruby.to_symbol("cstate"), string_map(ruby, &env.cstate)?)?;
    hash.aset(ruby.to_symbol("istate"), string_map(ruby, &env.istate)?)?;
    Ok(hash)
}

fn string_map(ruby: &Ruby, map: &HashMap<String, String>) -> Result<RHash, Error> {
    let hash = ruby.hash_new();
    for (key, value) in map {
        hash.aset(key.as_str(), value.as_str())?;
    }
    Ok(hash)
}

pub(crate) fn connection_response(ruby: &Ruby, value: Value) -> Result<ConnectionResponse, Error> {
    let mut response = ConnectionResponse::default();
    let mut has_status = false;
    fields(ruby, value, "connect", |field, value| {
        match field {
            "status" => {
                response.status = status(ruby, value)?;
                has_status = true;
            }
            "identifiers" => response.identifiers = string(ruby, value, "identifiers")?,
            "transmissions" => response.transmissions = strings(ruby, value, "transmissions")?,
            "error_msg" => response.error_msg = string(ruby, value, "error_msg")?,
            "env" => response.env = Some(env_response(ruby, value)?),
            other => return Err(unknown_field(ruby, "connect", other)),
        }
        Ok(())
    })?;
    require_status(ruby, has_status, "connect")?;
    Ok(response)
}

pub(crate) fn command_response(ruby: &Ruby, value: Value) -> Result<CommandResponse, Error> {
    let mut response = CommandResponse::default();
    let mut has_status = false;
    fields(ruby, value, "command", |field, value| {
        match field {
            "status" => {
                response.status = status(ruby, value)?;
                has_status = true;
            }
            "disconnect" => response.disconnect = value.to_bool(),
            "stop_streams" => response.stop_streams = value.to_bool(),
            "streams" => response.streams = strings(ruby, value, "streams")?,
            "stopped_streams" => response.stopped_streams = strings(ruby, value, "stopped_streams")?,
            "transmissions" => response.transmissions = strings(ruby, value, "transmissions")?,
            "error_msg" => response.error_msg = string(ruby, value, "error_msg")?,
            "env" => response.env = Some(env_response(ruby, value)?),
            "periodic_timers" => response.periodic_timers = intervals(ruby, value)?,
            "callback_streams" => response.callback_streams = strings(ruby, value, "callback_streams")?,
            "presence" if value.is_nil() => {}
            "presence" => response.presence = Some(presence_response(ruby, value)?),
            other => return Err(unknown_field(ruby, "command", other)),
        }
        Ok(())
    })?;
    require_status(ruby, has_status, "command")?;
    Ok(response)
}

pub(crate) fn disconnect_response(ruby: &Ruby, value: Value) -> Result<DisconnectResponse, Error> {
    let mut response = DisconnectResponse::default();
    let mut has_status = false;
    fields(ruby, value, "disconnect", |field, value| {
        match field {
            "status" => {
                response.status = status(ruby, value)?;
                has_status = true;
            }
            "error_msg" => response.error_msg = string(ruby, value, "error_msg")?,
            other => return Err(unknown_field(ruby, "disconnect", other)),
        }
        Ok(())
    })?;
    require_status(ruby, has_status, "disconnect")?;
    Ok(response)
}

/// `{type: "join" | "leave", id: String, info: String (JSON text)}`.
fn presence_response(ruby: &Ruby, value: Value) -> Result<PresenceResponse, Error> {
    let mut presence = PresenceResponse::default();
    fields(ruby, value, "presence", |field, value| {
        match field {
            "type" => presence.r#type = string(ruby, value, "presence type")?,
            "id" => presence.id = string(ruby, value, "presence id")?,
            "info" => presence.info = string(ruby, value, "presence info")?,
            other => return Err(unknown_field(ruby, "presence", other)),
        }
        Ok(())
    })?;
    Ok(presence)
}

fn env_response(ruby: &Ruby, value: Value) -> Result<EnvResponse, Error> {
    let mut env = EnvResponse::default();
    if value.is_nil() {
        return Ok(env);
    }
    fields(ruby, value, "env", |field, value| {
        match field {
            "cstate" => env.cstate = state_map(ruby, value, "env.cstate")?,
            "istate" => env.istate = state_map(ruby, value, "env.istate")?,
            other => return Err(unknown_field(ruby, "env", other)),
        }
        Ok(())
    })?;
    Ok(env)
}

/// Calls `each` with every field of a response object, by name. The fields are visited while the Hash is
/// iterated, so every value stays reachable by Ruby's GC (a `to_h` result is referenced only from here).
fn fields(
    ruby: &Ruby,
    value: Value,
    what: &str,
    mut each: impl FnMut(&str, Value) -> Result<(), Error>,
) -> Result<(), Error> {
    let hash = match RHash::from_value(value) {
        Some(hash) => hash,
        None if !value.is_nil() && value.respond_to("to_h", false)? => {
            let converted: Value = value.funcall("to_h", ())?;
            RHash::from_value(converted)
                .ok_or_else(|| invalid(ruby, format!("{what}: `to_h` did not return a Hash")))?
        }
        None => {
            return Err(invalid(
                ruby,
                format!("{what} must return a Hash with at least :status, got {}", inspect(value)),
            ));
        }
    };
    hash.foreach(|key: Value, value: Value| {
        each(&key_name(ruby, key, what)?, value)?;
        Ok(ForEach::Continue)
    })
}

fn key_name(ruby: &Ruby, key: Value, what: &str) -> Result<String, Error> {
    if let Some(symbol) = Symbol::from_value(key) {
        return Ok(symbol.name()?.into_owned());
    }
    if let Some(string) = RString::from_value(key) {
        return string.to_string();
    }
    Err(invalid(ruby, format!("{what}: keys must be Symbols or Strings, got {}", inspect(key))))
}

fn status(ruby: &Ruby, value: Value) -> Result<i32, Error> {
    let name = if let Some(symbol) = Symbol::from_value(value) {
        symbol.name()?.to_ascii_lowercase()
    } else if let Some(string) = RString::from_value(value) {
        string.to_string()?.to_ascii_lowercase()
    } else if let Some(number) = Integer::from_value(value) {
        match number.to_i64()? {
            0 => "error".to_owned(),
            1 => "success".to_owned(),
            2 => "failure".to_owned(),
            _ => String::new(),
        }
    } else {
        String::new()
    };
    match name.as_str() {
        "success" => Ok(Status::Success as i32),
        "failure" => Ok(Status::Failure as i32),
        "error" => Ok(Status::Error as i32),
        _ => Err(invalid(ruby, format!("status must be :success, :failure or :error, got {}", inspect(value)))),
    }
}

fn require_status(ruby: &Ruby, has_status: bool, what: &str) -> Result<(), Error> {
    if has_status { Ok(()) } else { Err(invalid(ruby, format!("{what} response has no :status"))) }
}

fn string(ruby: &Ruby, value: Value, field: &str) -> Result<String, Error> {
    if value.is_nil() {
        return Ok(String::new());
    }
    match RString::from_value(value) {
        Some(s) => s.to_string().map_err(|_| invalid(ruby, format!("{field} must be valid UTF-8"))),
        None => Err(invalid(ruby, format!("{field} must be a String, got {}", inspect(value)))),
    }
}

fn strings(ruby: &Ruby, value: Value, field: &str) -> Result<Vec<String>, Error> {
    if value.is_nil() {
        return Ok(Vec::new());
    }
    let Some(array) = RArray::from_value(value) else {
        return Err(invalid(ruby, format!("{field} must be an Array of Strings, got {}", inspect(value))));
    };
    let mut out = Vec::with_capacity(array.len());
    for item in array.into_iter() {
        out.push(string(ruby, item, field)?);
    }
    Ok(out)
}

/// Periodic timer intervals: an Array of Integers of milliseconds, each from 1 to `u32::MAX`.
fn intervals(ruby: &Ruby, value: Value) -> Result<Vec<u32>, Error> {
    if value.is_nil() {
        return Ok(Vec::new());
    }
    let bad = || invalid(ruby, format!("periodic_timers must be an Array of positive Integers (milliseconds), got {}", inspect(value)));
    let array = RArray::from_value(value).ok_or_else(bad)?;
    let mut out = Vec::with_capacity(array.len());
    for item in array.into_iter() {
        let ms = magnus::Integer::from_value(item).and_then(|i| i.to_u32().ok()).filter(|ms| *ms > 0).ok_or_else(bad)?;
        out.push(ms);
    }
    Ok(out)
}

/// A state change map: values are Strings; `nil` (like an empty String) deletes the key.
fn state_map(ruby: &Ruby, value: Value, field: &str) -> Result<HashMap<String, String>, Error> {
    if value.is_nil() {
        return Ok(HashMap::new());
    }
    let Some(hash) = RHash::from_value(value) else {
        return Err(invalid(ruby, format!("{field} must be a Hash of Strings, got {}", inspect(value))));
    };
    let mut out = HashMap::with_capacity(hash.len());
    hash.foreach(|key: Value, value: Value| {
        let key = key_name(ruby, key, field)?;
        let value = string(ruby, value, field)?;
        out.insert(key, value);
        Ok(ForEach::Continue)
    })?;
    Ok(out)
}

fn unknown_field(ruby: &Ruby, what: &str, field: &str) -> Error {
    invalid(ruby, format!("{what} response has an unknown field `{field}`"))
}

fn invalid(ruby: &Ruby, message: String) -> Error {
    errors::error(ruby, "InvalidResponseError", message)
}

fn inspect(value: Value) -> String {
    let text = value.inspect();
    match text.char_indices().nth(100) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}
