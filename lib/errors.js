'use strict'
// The package's errors: every error it raises is a FerrocableError with a stable `code`.

/** Base class of every error this package raises; `code` is stable, `message` says what to do. */
class FerrocableError extends Error {
  constructor (message, code, options) {
    super(message, options)
    this.name = 'FerrocableError'
    this.code = code
  }
}

/**
 * A handler call that failed: it threw or rejected (`EHANDLER`), answered something that is not a response
 * (`EMALFORMED`) or did not settle in time (`ETIMEOUT`). The client got an ERROR result for that one call.
 * `cause` is what the handler threw, when it threw.
 */
class HandlerError extends FerrocableError {
  constructor (message, code, details, options) {
    super(message, code, options)
    this.name = 'HandlerError'
    this.call = details.call
    this.sid = details.sid
    this.command = details.command
    this.identifier = details.identifier
    this.channel = details.channel
    this.action = details.action
  }
}

module.exports = { FerrocableError, HandlerError }
