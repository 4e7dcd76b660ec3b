'use strict'
// The channel API, shaped after @anycable/serverless-js: an Application authenticates connections and
// routes commands to Channel classes; handles collect what a call does (identifiers, streams,
// transmissions, state changes) and become the response of the low-level handler. The Action Cable frames
// a client expects (welcome, confirm/reject_subscription, the unauthorized disconnect) are written here.
const { FerrocableError } = require('./errors')

const UNAUTHORIZED = JSON.stringify({ type: 'disconnect', reason: 'unauthorized', reconnect: false })

function isThenable (value) {
  return value !== null && (typeof value === 'object' || typeof value === 'function') && typeof value.then === 'function'
}

// `fn()` after `value` settles: at once for a plain value, so a call whose callbacks are all synchronous is
// answered without allocating a Promise; a thenable is adopted the way `await` adopts it.
function after (value, fn) {
  return isThenable(value) ? Promise.resolve(value).then(fn) : fn()
}

// An own data property even for a key such as `__proto__`, which plain assignment would treat as the prototype.
function setKey (object, key, value) {
  Object.defineProperty(object, key, { value, writable: true, enumerable: true, configurable: true })
}

/**
 * A connection or channel state map (cstate / istate). Reads see the current values; `set` and `delete`
 * are recorded as changes, which the server merges after the call. Values are strings.
 */
class State {
  #values
  #changes = null

  constructor (values) {
    this.#values = values ? { ...values } : {}
  }

  get (key) {
    return Object.hasOwn(this.#values, key) ? this.#values[key] : undefined
  }

  has (key) {
    return Object.hasOwn(this.#values, key)
  }

  /** Sets a key; numbers and booleans are stored as strings. An empty string deletes the key. */
  set (key, value) {
    if (typeof value === 'number' || typeof value === 'boolean') value = String(value)
    if (typeof value !== 'string') throw new TypeError(`state values are strings (JSON-encode objects yourself); got ${value === null ? 'null' : typeof value} for ${key}`)
    if (value === '') return this.delete(key)
    setKey(this.#values, key, value)
    this.#record(key, value)
    return this
  }

  delete (key) {
    delete this.#values[key]
    this.#record(key, '')
    return this
  }

  /** The current values as a plain object. */
  toJSON () {
    return { ...this.#values }
  }

  /** Changes made during this call ('' = deleted), or undefined when none. */
  get changes () {
    return this.#changes ?? undefined
  }

  #record (key, value) {
    this.#changes ??= {}
    setKey(this.#changes, key, value)
  }
}

function decodeQuery (url) {
  try {
    return Object.fromEntries(new URL(url).searchParams)
  } catch {
    return {}
  }
}

/** What both handle kinds share: the session id, the request env, cstate and the identifiers. */
class BaseHandle {
  #app
  #request
  #env = null
  #identifiers
  #identifiersText

  constructor (app, request, identifiersText, cstate) {
    this.#app = app
    this.#request = request
    this.#identifiersText = identifiersText
    this.sid = request.sid
    this.cstate = cstate
  }

  /** `{ url, headers, params }`: the URL the client connected with, forwarded headers, query parameters. */
  get env () {
    if (this.#env === null) {
      const env = this.#request.env
      this.#env = { url: env.url, headers: env.headers, params: decodeQuery(env.url) }
    }
    return this.#env
  }

  /** The connection identifiers (what `identifiedBy` was given at connect), or null. */
  get identifiers () {
    if (this.#identifiers === undefined) {
      this.#identifiers = this.#identifiersText ? this.#app.decodeIdentifiers(this.#identifiersText) : null
    }
    return this.#identifiers
  }

  set identifiers (value) {
    this.#identifiers = value
  }
}

/** The handle `Application#connect` and `Application#disconnect` receive. */
class ConnectionHandle extends BaseHandle {
  constructor (app, request, identifiersText) {
    super(app, request, identifiersText, new State(request.env.cstate))
    this.rejected = false
    this.transmissions = []
  }

  /** Identifies the connection (e.g. `{ user: 'alice' }`); later calls see it as `handle.identifiers`. */
  identifiedBy (identifiers) {
    if (identifiers === null || typeof identifiers !== 'object') throw new TypeError('identifiedBy() expects an object')
    this.identifiers = identifiers
    return this
  }

  /** Rejects the connection: the client gets the unauthorized disconnect frame and is closed. */
  reject () {
    this.rejected = true
    return this
  }

  /** Sends a frame to the client (objects are JSON-encoded). */
  transmit (data) {
    this.transmissions.push(typeof data === 'string' ? data : JSON.stringify(data))
    return this
  }
}

/** The handle channel callbacks and actions receive: one subscription during one call. */
class ChannelHandle extends BaseHandle {
  #server

  constructor (app, request, identifiersText, cstate, istate, params) {
    super(app, request, identifiersText, cstate)
    this.#server = app.server
    this.identifier = request.identifier
    this.params = params
    this.istate = new State(istate)
    this.rejected = false
    this.closed = false
    this.streams = []
    this.stoppedStreams = []
    this.stopStreams = false
    this.transmissions = []
    this.presenceChange = undefined
  }

  /** Starts streaming broadcasts on `stream` to this subscription. */
  streamFrom (stream) {
    this.streams.push(String(stream))
    return this
  }

  /** Stops one stream of this subscription. */
  stopStreamFrom (stream) {
    this.stoppedStreams.push(String(stream))
    return this
  }

  /** Stops every stream of this subscription (before any `streamFrom` of the same call). */
  stopAllStreams () {
    this.stopStreams = true
    return this
  }

  /** Sends `data` to this subscription, as `{"identifier":…,"message":data}`. */
  transmit (data) {
    this.transmissions.push(JSON.stringify({ identifier: this.identifier, message: data }))
    return this
  }

  /** In `subscribed`: rejects the subscription (`reject_subscription`). */
  reject () {
    this.rejected = true
    return this
  }

  /** Closes the connection after this call's transmissions. */
  close () {
    this.closed = true
    return this
  }

  /**
   * Joins the presence set of `stream` (default: this subscription's presence stream, else its first stream) as
   * `id` with `info`, on behalf of this connection. Needs a broker; applied after this call.
   */
  joinPresence (id, info, { stream } = {}) {
    if (typeof id !== 'string' && typeof id !== 'number') throw new TypeError('joinPresence() expects an id (string or number)')
    if (stream !== undefined) this.istate.set('$p', String(stream))
    this.presenceChange = { type: 'join', id: String(id), info }
    return this
  }

  /** Leaves this subscription's presence set (applied after this call). */
  leavePresence () {
    this.presenceChange = { type: 'leave' }
    return this
  }

  /** Reads the presence set of `stream` (default: this subscription's presence stream): see `server.presence()`. */
  async presence (stream = this.istate.get('$p'), options) {
    if (!this.#server) throw new TypeError('presence() needs the application to run in a server')
    return this.#server.presence(stream, options)
  }
}

/** Base class of channels: override `subscribed`, `unsubscribed` and add action methods (sync or async). */
class Channel {
  /** Runs on subscribe; call `handle.streamFrom(…)` or `handle.reject()`. */
  subscribed (handle, params) {}

  /** Runs on unsubscribe and for each subscription when the connection closes. */
  unsubscribed (handle, params) {}
}

// Methods a client may never call as actions.
const RESERVED = new Set(Object.getOwnPropertyNames(Channel.prototype).concat(Object.getOwnPropertyNames(Object.prototype)))

function isAction (channel, action) {
  return typeof action === 'string' && action !== '' && !action.startsWith('_') && !RESERVED.has(action) && typeof channel[action] === 'function'
}

function parseIdentifier (identifier) {
  let value
  try {
    value = JSON.parse(identifier)
  } catch {
    return null
  }
  if (!value || typeof value !== 'object' || typeof value.channel !== 'string') return null
  const { channel, ...params } = value
  return { channel, params }
}

/**
 * An Action Cable application: override `connect(handle)` to authenticate (call `handle.identifiedBy(…)`
 * or `handle.reject()`), `disconnect(handle)` to clean up, and register channels by name.
 */
class Application {
  #channels = new Map()

  /** Routes subscriptions whose identifier says `{"channel": name}` to `channel` (a Channel class or instance). */
  registerChannel (name, channel) {
    if (typeof name !== 'string' || name === '') throw new TypeError('registerChannel() expects a channel name')
    const usable = typeof channel === 'function' || (channel && typeof channel === 'object')
    if (!usable) throw new TypeError(`registerChannel(${name}) expects a Channel class or instance`)
    this.#channels.set(name, channel)
    return this
  }

  /** Authenticates a connection; accepts everyone unless overridden (sync or async). */
  connect (handle) {}

  /** Runs after every subscription's `unsubscribed` when a connection closes (sync or async). */
  disconnect (handle) {}

  /** How identifiers travel between calls (JSON). `server.disconnect(identifiers)` encodes the same way. */
  encodeIdentifiers (identifiers) {
    return JSON.stringify(identifiers)
  }

  decodeIdentifiers (text) {
    try {
      return JSON.parse(text)
    } catch {
      return text
    }
  }

  /** The low-level handlers for `server.handle()`; `server.handle(app)` calls this. */
  handlers (server) {
    this.server = server
    return {
      connect: (request) => this.#connect(request),
      command: (request) => this.#command(request),
      disconnect: (request) => this.#disconnect(request)
    }
  }

  #channel (name) {
    const channel = this.#channels.get(name)
    if (channel === undefined) return null
    return typeof channel === 'function' ? new channel() : channel // eslint-disable-line new-cap
  }

  // The three calls return their response directly when the application's callbacks are synchronous, and a
  // Promise of it otherwise.
  #connect (request) {
    const handle = new ConnectionHandle(this, request, '')
    return after(this.connect(handle), () => {
      const env = { cstate: handle.cstate.changes }
      if (handle.rejected) {
        return { status: 'FAILURE', transmissions: [...handle.transmissions, UNAUTHORIZED], errorMsg: 'connection rejected', env }
      }
      const welcome = JSON.stringify({ type: 'welcome', sid: request.sid })
      return {
        status: 'SUCCESS',
        identifiers: this.encodeIdentifiers(handle.identifiers ?? {}),
        transmissions: [welcome, ...handle.transmissions],
        env
      }
    })
  }

  #command (request) {
    const { identifier } = request
    const parsed = parseIdentifier(identifier)
    const channel = parsed && this.#channel(parsed.channel)
    if (!channel) {
      const reason = parsed ? `channel ${parsed.channel} is not registered` : `identifier is not a channel identifier: ${identifier}`
      if (request.command !== 'subscribe') return { status: 'ERROR', errorMsg: reason }
      return { status: 'FAILURE', transmissions: [JSON.stringify({ identifier, type: 'reject_subscription' })], errorMsg: reason }
    }
    const cstate = new State(request.env.cstate)
    const handle = new ChannelHandle(this, request, request.connectionIdentifiers, cstate, request.env.istate, parsed.params)
    const done = () => ({
      status: 'SUCCESS',
      streams: handle.streams,
      stoppedStreams: handle.stoppedStreams,
      stopStreams: handle.stopStreams,
      transmissions: handle.transmissions,
      disconnect: handle.closed,
      env: { cstate: cstate.changes, istate: handle.istate.changes },
      presence: handle.presenceChange
    })

    switch (request.command) {
      case 'subscribe':
        return after(channel.subscribed(handle, parsed.params), () => {
          if (handle.rejected) {
            return {
              status: 'FAILURE',
              transmissions: [JSON.stringify({ identifier, type: 'reject_subscription' })],
              errorMsg: 'subscription rejected',
              env: { cstate: cstate.changes }
            }
          }
          handle.transmissions.unshift(JSON.stringify({ identifier, type: 'confirm_subscription' }))
          return done()
        })
      case 'unsubscribe':
        return after(channel.unsubscribed(handle, parsed.params), done)
      case 'message': {
        const { action, ...payload } = JSON.parse(request.data || '{}')
        if (!isAction(channel, action)) throw new FerrocableError(`${parsed.channel} has no action ${JSON.stringify(action)}`, 'EACTION')
        return after(channel[action](handle, parsed.params, payload), done)
      }
      default:
        throw new FerrocableError(`unknown command ${request.command}`, 'ECOMMAND')
    }
  }

  // Every subscription's `unsubscribed` in order (a failure is kept and the others still run), then
  // `disconnect`; the first failure is the call's.
  #disconnect (request) {
    const handle = new ConnectionHandle(this, request, request.identifiers)
    const subscriptions = request.subscriptions
    let failure = null
    const keep = (err) => { failure ??= err }
    const from = (index) => {
      for (let i = index; i < subscriptions.length; i++) {
        const identifier = subscriptions[i]
        const parsed = parseIdentifier(identifier)
        const channel = parsed && this.#channel(parsed.channel)
        if (!channel) continue
        const istate = request.env.istate[identifier]
        const channelHandle = new ChannelHandle(
          this,
          { ...request, identifier },
          request.identifiers,
          handle.cstate,
          istate ? JSON.parse(istate) : {},
          parsed.params
        )
        let done
        try {
          done = channel.unsubscribed(channelHandle, parsed.params)
        } catch (err) {
          keep(err)
          continue
        }
        if (isThenable(done)) return Promise.resolve(done).then(() => from(i + 1), (err) => { keep(err); return from(i + 1) })
      }
      return after(this.disconnect(handle), () => {
        if (failure) throw failure
        return { status: 'SUCCESS' }
      })
    }
    return from(0)
  }
}

module.exports = { Application, Channel, ConnectionHandle, ChannelHandle, State }
