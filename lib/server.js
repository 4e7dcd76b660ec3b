'use strict'
// The Server class: options in camelCase, the lifecycle (start/stop), broadcasts, remote disconnects,
// stats, and the in-process handlers. Everything runs in the Rust core on its own threads; this file only
// maps names, checks what handlers return, and reports handler failures as 'error' events.
const { EventEmitter } = require('node:events')
const native = require('./native')
const { FerrocableError, HandlerError } = require('./errors')
const { isServerlessApplication, serverlessHandlers } = require('./serverless')

const STATUS = Object.freeze({ ERROR: 0, SUCCESS: 1, FAILURE: 2 })

// camelCase option name -> AnyCable snake_case name, for every core option.
const OPTION_NAMES = new Map(native.optionNames().map((name) => [name.replace(/_([a-z])/g, (_, c) => c.toUpperCase()), name]))

// Servers that are running stay reachable, so a server nobody references keeps serving until stopped.
const running = new Set()

function optionText (name, value) {
  if (typeof value === 'string') return value
  if (typeof value === 'number' && Number.isFinite(value)) return String(value)
  if (typeof value === 'boolean') return value ? 'true' : 'false'
  if (Array.isArray(value) && value.every((v) => typeof v === 'string')) return value.join(',')
  throw new FerrocableError(`option ${name}: expected a string, number, boolean or array of strings, got ${describeValue(value)}`, 'ECONFIG')
}

function describeValue (value) {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array with non-string items'
  return typeof value
}

function camel (snake) {
  return snake.replace(/_([a-z])/g, (_, c) => c.toUpperCase())
}

// --- what handlers return -------------------------------------------------------------------------

function malformed (message) {
  return new FerrocableError(`malformed handler result: ${message}`, 'EMALFORMED')
}

function status (value) {
  if (typeof value === 'string' && Object.hasOwn(STATUS, value)) return STATUS[value]
  if (value === 0 || value === 1 || value === 2) return value
  throw malformed(`status must be 'SUCCESS', 'FAILURE' or 'ERROR' (or 1, 2, 0), got ${JSON.stringify(value)}`)
}

function optionalString (result, field) {
  const value = result[field]
  if (value === undefined || value === null) return undefined
  if (typeof value !== 'string') throw malformed(`${field} must be a string, got ${typeof value}`)
  return value
}

function stringList (result, field) {
  const value = result[field]
  if (value === undefined || value === null) return undefined
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) throw malformed(`${field} must be an array of strings`)
  return value
}

function optionalBoolean (result, field) {
  const value = result[field]
  if (value === undefined || value === null) return undefined
  if (typeof value !== 'boolean') throw malformed(`${field} must be a boolean, got ${typeof value}`)
  return value
}

// State changes: string values set a key, '' / null delete it.
function stateChanges (env, field) {
  const value = env[field]
  if (value === undefined || value === null) return undefined
  if (typeof value !== 'object' || Array.isArray(value)) throw malformed(`env.${field} must be an object of strings`)
  // No prototype: a key such as `__proto__` stays a key.
  const out = Object.create(null)
  for (const [key, v] of Object.entries(value)) {
    if (v === null || v === undefined) out[key] = ''
    else if (typeof v === 'string') out[key] = v
    else throw malformed(`env.${field}.${key} must be a string (or null to delete it), got ${typeof v}`)
  }
  return out
}

function envResponse (result) {
  const env = result.env
  if (env === undefined || env === null) return NO_CHANGES
  if (typeof env !== 'object') throw malformed('env must be an object')
  return { cstate: stateChanges(env, 'cstate'), istate: stateChanges(env, 'istate') }
}

const NO_CHANGES = Object.freeze({ cstate: undefined, istate: undefined })

// A Command answer's `presence`: `{ type: 'join', id, info }` or `{ type: 'leave' }`. `info` is JSON text when it
// is a string (as rpc.proto carries it), any other value is JSON-encoded.
function presenceChange (result) {
  const value = result.presence
  if (value === undefined || value === null) return undefined
  if (typeof value !== 'object' || Array.isArray(value)) throw malformed('presence must be an object')
  if (value.type === 'leave') return { kind: 'leave' }
  if (value.type !== 'join') throw malformed(`presence.type must be 'join' or 'leave', got ${JSON.stringify(value.type)}`)
  if (typeof value.id !== 'string' && typeof value.id !== 'number') throw malformed('presence.id must be a string or a number')
  const info = value.info === undefined || value.info === null ? undefined : typeof value.info === 'string' ? value.info : JSON.stringify(value.info)
  return { kind: 'join', id: String(value.id), info }
}

function resultObject (result) {
  if (result === null || typeof result !== 'object' || Array.isArray(result)) {
    throw malformed(`expected a response object, got ${result === null ? 'null' : Array.isArray(result) ? 'an array' : typeof result}`)
  }
  return result
}

// A list crosses into Rust as its lone item when it has one (reading an array element through napi costs more
// than the string itself), otherwise as the array.
function lone (list) {
  return list !== undefined && list.length === 1 ? list[0] : list
}

// Command answer flags, as handler.rs reads them.
const DISCONNECT = 1
const STOP_STREAMS = 2

// Checks what a handler returned and hands it to Rust as the arguments of settle*(id, ...); a malformed
// result throws before anything reaches Rust.
const answer = {
  connect (id, result) {
    resultObject(result)
    const statusValue = status(result.status)
    const identifiers = optionalString(result, 'identifiers')
    const transmissions = stringList(result, 'transmissions')
    const errorMsg = optionalString(result, 'errorMsg')
    const env = envResponse(result)
    native.settleConnect(id, statusValue, identifiers, lone(transmissions), errorMsg, env.cstate, env.istate)
  },
  command (id, result) {
    resultObject(result)
    const statusValue = status(result.status)
    const flags = (optionalBoolean(result, 'disconnect') ? DISCONNECT : 0) | (optionalBoolean(result, 'stopStreams') ? STOP_STREAMS : 0)
    const streams = stringList(result, 'streams')
    const stoppedStreams = stringList(result, 'stoppedStreams')
    const transmissions = stringList(result, 'transmissions')
    const errorMsg = optionalString(result, 'errorMsg')
    const env = envResponse(result)
    const presence = presenceChange(result)
    native.settleCommand(id, statusValue, flags, lone(streams), lone(stoppedStreams), lone(transmissions), errorMsg, env.cstate, env.istate, presence)
  },
  disconnect (id, result) {
    // A disconnect handler may return nothing: the connection is gone either way.
    if (result === undefined) return native.settleDisconnect(id, STATUS.SUCCESS, undefined)
    resultObject(result)
    const statusValue = status(result.status)
    native.settleDisconnect(id, statusValue, optionalString(result, 'errorMsg'))
  }
}

// The ERROR answer of a call that failed.
const answerError = {
  connect: (id, errorMsg) => native.settleConnect(id, STATUS.ERROR, undefined, undefined, errorMsg),
  command: (id, errorMsg) => native.settleCommand(id, STATUS.ERROR, 0, undefined, undefined, undefined, errorMsg),
  disconnect: (id, errorMsg) => native.settleDisconnect(id, STATUS.ERROR, errorMsg)
}

// The request objects handlers receive, built from the fields Rust passes as arguments (an object literal
// and JSON.parse are much cheaper than napi property sets). String maps arrive as JSON, empty ones as
// undefined.
function requestEnv (url, headers, cstate, istate) {
  return { url, headers: stringMap(headers), cstate: stringMap(cstate), istate: stringMap(istate) }
}

function stringMap (json) {
  return json === undefined ? {} : JSON.parse(json)
}

function isThenable (value) {
  return value !== null && (typeof value === 'object' || typeof value === 'function') && typeof value.then === 'function'
}

function jsonField (text, name) {
  try {
    const value = JSON.parse(text)
    return value && typeof value[name] === 'string' ? value[name] : undefined
  } catch {
    return undefined
  }
}

/** Where a call failed, the same way the core names it: `ChatChannel#speak`, `connect`, `disconnect`. */
function callDetails (call, request) {
  const details = { call, sid: request.sid }
  if (call === 'command') {
    details.command = request.command
    details.identifier = request.identifier
    details.channel = jsonField(request.identifier, 'channel')
    details.action = request.command === 'message' ? jsonField(request.data, 'action') : request.command
    details.location = `${details.channel ?? '(unknown channel)'}#${details.action ?? '(unknown action)'}`
  } else {
    details.location = call
  }
  return details
}

// --- the server -----------------------------------------------------------------------------------

class Server extends EventEmitter {
  #native = new native.NativeServer()
  #address = null
  #lifecycle = Promise.resolve()
  #batch = null
  #broadcasts = Promise.resolve()

  /**
   * @param {object} options every core option in camelCase (`port`, `path`, `rpcHost`, `broadcastKey`, …)
   */
  constructor (options = {}) {
    super()
    if (options === null || typeof options !== 'object') throw new FerrocableError('options must be an object', 'ECONFIG')
    for (const [name, value] of Object.entries(options)) {
      if (value === undefined || value === null) continue
      const snake = OPTION_NAMES.get(name)
      if (!snake) throw new FerrocableError(`unknown option ${name} (options are camelCase: ${[...OPTION_NAMES.keys()].slice(0, 4).join(', ')}, …)`, 'ECONFIG')
      try {
        this.#native.setOption(snake, optionText(name, value))
      } catch (err) {
        if (err instanceof FerrocableError) throw err
        throw new FerrocableError(`option ${name}: ${err.message.replace(/`(\w+)`/g, (_, n) => camel(n))}`, 'ECONFIG')
      }
    }
  }

  /**
   * Installs in-process handlers: `{ connect, command, disconnect }` async functions mirroring the RPC
   * calls, an `Application`, or an `@anycable/serverless-js` Application (run as its HTTP handlers would run
   * it). Without handlers the server uses the backend at `rpcHost` (gRPC, or HTTP RPC for an http(s):// URL).
   */
  handle (handlers) {
    if (running.has(this)) throw new FerrocableError('handle() must be called before start()', 'ERUNNING')
    if (isServerlessApplication(handlers)) handlers = serverlessHandlers(handlers)
    else if (handlers && typeof handlers.handlers === 'function') handlers = handlers.handlers(this)
    if (!handlers || typeof handlers.connect !== 'function' || typeof handlers.command !== 'function') {
      throw new TypeError('handle() expects an Application, a @anycable/serverless-js Application or { connect, command, disconnect? } functions')
    }
    if (handlers.disconnect !== undefined && typeof handlers.disconnect !== 'function') {
      throw new TypeError('handle(): disconnect must be a function when given')
    }
    this.#native.setHandlers(
      this.#guard('connect', handlers.connect),
      this.#guard('command', handlers.command),
      this.#guard('disconnect', handlers.disconnect ?? (() => undefined))
    )
    return this
  }

  /** Binds the listeners and starts serving; rejects with a FerrocableError carrying `code`. */
  start () {
    return this.#serialize(async () => {
      running.add(this)
      let outcome
      try {
        outcome = await this.#native.start((failure) => this.#reportCoreFailure(failure))
      } catch (err) {
        running.delete(this)
        throw new FerrocableError(`cannot start: ${err.message}`, 'ESTART', { cause: err })
      }
      if (outcome.code) {
        if (outcome.code !== 'ERUNNING') running.delete(this)
        throw new FerrocableError(outcome.message.replace(/`(\w+)`/g, (_, n) => camel(n)), outcome.code)
      }
      const path = outcome.paths[0]
      this.#address = {
        address: outcome.host,
        family: outcome.host.includes(':') ? 'IPv6' : 'IPv4',
        port: outcome.port,
        url: `ws://${hostForUrl(outcome.host)}:${outcome.port}${path}`,
        broadcastUrl: outcome.broadcastPort === undefined || outcome.broadcastPort === null
          ? null
          : `http://${hostForUrl(outcome.broadcastHost)}:${outcome.broadcastPort}${this.#native.getOption('http_broadcast_path')}`
      }
      this.emit('listening')
      return this
    })
  }

  /**
   * Graceful stop: `server_restart` to every client, pending Disconnect calls flushed, listeners closed.
   * Stopping a server that is not running does nothing.
   */
  stop () {
    return this.#serialize(async () => {
      if (!running.has(this)) return
      await this.#native.stop()
      running.delete(this)
      this.#address = null
      this.emit('close')
    })
  }

  /** `{ address, family, port, url, broadcastUrl }` while running, `null` otherwise. */
  get address () {
    return this.#address
  }

  /** Whether the server is running. */
  get listening () {
    return this.#address !== null
  }

  /**
   * Delivers `data` to every subscriber of `stream` (strings as they are, anything else as JSON).
   * `excludeSocket`: a session id that must not receive it.
   */
  async broadcast (stream, data, { excludeSocket } = {}) {
    await this.broadcastMany([{ stream, data, excludeSocket }])
  }

  /**
   * Delivers publications `{ stream, data, excludeSocket? }` in order. Broadcasts made in the same tick
   * cross into Rust as one batch, and batches go one after another, so the order of calls is the order of
   * delivery on each stream, awaited or not.
   */
  async broadcastMany (publications) {
    if (!Array.isArray(publications)) throw new TypeError('broadcastMany() expects an array of { stream, data }')
    const converted = publications.map(publication)
    return new Promise((resolve, reject) => {
      if (this.#batch === null) {
        this.#batch = []
        queueMicrotask(() => this.#flushBatch())
      }
      this.#batch.push({ publications: converted, resolve, reject })
    })
  }

  /**
   * The presence set of `stream`: `{ total, records: [{ id, info }] }` (`records` left out with
   * `{ records: false }`). Needs a broker (`broker: 'memory'` or `'redis'`); rejects with a FerrocableError
   * (`EPRESENCE`) when there is none or it cannot be reached, `ENOTRUNNING` when the server is not running.
   */
  async presence (stream, { records = true } = {}) {
    if (typeof stream !== 'string' || stream === '') throw new TypeError('presence() expects a stream name')
    let info
    try {
      info = await this.#native.presence(stream, Boolean(records))
    } catch (error) {
      throw new FerrocableError(error.message, 'EPRESENCE')
    }
    if (info === null || info === undefined) throw notRunning('presence')
    const result = { total: info.total }
    if (info.records) result.records = info.records.map((m) => ({ id: m.id, info: m.info === undefined || m.info === null ? undefined : JSON.parse(m.info) }))
    return result
  }

  /**
   * Closes every connection whose identifiers equal `identifiers` (the string Connect returned, or an
   * object serialized as the Application does) with a `remote` disconnect frame. Returns how many.
   */
  disconnect (identifiers, { reconnect = true } = {}) {
    const text = typeof identifiers === 'string' ? identifiers : JSON.stringify(identifiers)
    if (typeof text !== 'string') throw new TypeError('disconnect() expects the identifiers string or object')
    const closed = this.#native.disconnect(text, Boolean(reconnect))
    if (closed === null || closed === undefined) throw notRunning('disconnect')
    return closed
  }

  /**
   * Live counters and gauges under AnyCable's metric names in camelCase: `clientsNum`,
   * `subscriptionsNum`, `broadcastStreamsNum`, `broadcastMsgTotal`, `rpcCallTotal`, …
   */
  stats () {
    const out = {}
    for (const metric of this.#native.stats()) out[camel(metric.name)] = metric.value
    return out
  }

  #flushBatch () {
    const waiting = this.#batch
    this.#batch = null
    const all = waiting.length === 1 ? waiting[0].publications : waiting.flatMap((w) => w.publications)
    const sent = this.#broadcasts.then(() => this.#native.broadcast(all))
    this.#broadcasts = sent.catch(() => {})
    sent.then(
      (delivered) => {
        const error = delivered ? null : notRunning('broadcast')
        for (const w of waiting) error ? w.reject(error) : w.resolve()
      },
      (err) => {
        for (const w of waiting) w.reject(err)
      }
    )
  }

  // Runs start/stop one at a time, in call order.
  #serialize (step) {
    const next = this.#lifecycle.then(step, step)
    this.#lifecycle = next.catch(() => {})
    return next
  }

  // Wraps a handler for Rust: builds the request from the arguments, runs the handler and answers the call id
  // with a checked response. A plain return value is answered at once, a Promise when it settles;
  // whatever else happens becomes an ERROR answer for that call, reported as an 'error' event. The core logs
  // the ERROR once, and ends a call that never answers with its time limit (ETIMEOUT).
  #guard (call, handler) {
    const check = answer[call]
    const run = (id, request) => {
      let result
      try {
        result = handler(request)
        if (!isThenable(result)) return check(id, result)
      } catch (err) {
        return this.#failed(call, id, request, err)
      }
      const settled = (value) => {
        try {
          check(id, value)
        } catch (err) {
          this.#failed(call, id, request, err)
        }
      }
      const rejected = (err) => this.#failed(call, id, request, err)
      // Promise.resolve adopts a foreign thenable the way `await` does (its `then` runs in a later job).
      ;(result instanceof Promise ? result : Promise.resolve(result)).then(settled, rejected)
    }
    switch (call) {
      case 'connect':
        return (id, sid, url, headers, cstate, istate) =>
          run(id, { sid, env: requestEnv(url, headers, cstate, istate) })
      case 'command':
        return (id, sid, command, identifier, connectionIdentifiers, data, url, headers, cstate, istate) =>
          run(id, { sid, command, identifier, connectionIdentifiers, data, env: requestEnv(url, headers, cstate, istate) })
      default:
        return (id, sid, identifiers, subscriptions, url, headers, cstate, istate) =>
          run(id, { sid, identifiers, subscriptions, env: requestEnv(url, headers, cstate, istate) })
    }
  }

  // A handler threw, rejected or returned a malformed result: answer ERROR, then report it.
  #failed (call, id, request, err) {
    const details = callDetails(call, request)
    const code = err instanceof FerrocableError && err.code === 'EMALFORMED' ? 'EMALFORMED' : 'EHANDLER'
    const reason = err instanceof Error ? err.message : String(err)
    answerError[call](id, `${details.location}: ${reason}`)
    this.#report(new HandlerError(`${details.location}: ${reason}`, code, details, { cause: err }))
  }

  // A call the core gave up on: it did not settle in time, or its answer could not be read.
  #reportCoreFailure (failure) {
    const location = failure.call === 'command'
      ? `${failure.channel ?? '(unknown channel)'}#${failure.action ?? '(unknown action)'}`
      : failure.call
    const code = failure.kind === 'timeout' ? 'ETIMEOUT' : 'EHANDLER'
    this.#report(new HandlerError(`${location}: ${failure.message}`, code, failure))
  }

  // 'error' without a listener would throw out of the event loop; the core has logged the failure already.
  // A listener that throws gets the treatment of any throwing callback, an uncaught exception, instead of
  // escaping into the handler call that is being answered.
  #report (error) {
    if (this.listenerCount('error') === 0) return
    try {
      this.emit('error', error)
    } catch (thrown) {
      process.nextTick(() => { throw thrown })
    }
  }
}

function publication (p) {
  if (!p || typeof p.stream !== 'string' || p.stream === '') throw new TypeError('a publication needs a non-empty stream name')
  if (p.data === undefined) throw new TypeError(`publication to ${p.stream}: data is required`)
  const data = typeof p.data === 'string' ? p.data : JSON.stringify(p.data)
  const out = { stream: p.stream, data }
  if (p.excludeSocket !== undefined && p.excludeSocket !== null) out.excludeSocket = String(p.excludeSocket)
  return out
}

function notRunning (what) {
  return new FerrocableError(`cannot ${what}: the server is not running (call start() first)`, 'ENOTRUNNING')
}

function hostForUrl (host) {
  return host.includes(':') ? `[${host}]` : host
}

module.exports = { Server, STATUS }
