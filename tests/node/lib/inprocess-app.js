// The in-process side of the suite: the same small Action Cable application as the gRPC backend
// (lib/backend.js), written with the package's high-level API (Application, Channel), and a helper that
// runs it inside this test process through `ferrocable`'s Server, recording every handler call.
//
// Connect: cookie `user=<name>` authenticates; no cookie or `user=bad` is rejected (unauthorized frame);
// `user=boom` makes connect throw (an ERROR result, close 1011).
// Channels: ChatChannel {room} (streams chat_<room>, istate room; room "secret" is rejected),
// MultiChannel {streams}, BareChannel {}, PresenceChannel {room} (joins presence_<room>'s presence set). Actions: speak, touch, echo, follow, unfollow, stop_all, switch,
// set_state, whoami, kick — as in lib/backend.js.
import { Application, Channel, Server } from 'ferrocable'
import { eventually, onScenarioEnd, parseCookies, WAIT_MS } from './harness.js'

export const BROADCAST_KEY = 'inprocess-key'

/** The identifiers string the application produces for a user (Application encodes identifiers as JSON). */
export function identifiersFor (user) {
  return JSON.stringify({ current_user: user })
}

/** Actions every test channel answers. */
class TestChannel extends Channel {
  speak () {}

  touch (handle) {
    handle.transmit({ touched: true })
  }

  echo (handle, _params, data) {
    handle.transmit({ action: 'echo', ...data })
  }

  follow (handle, _params, { stream }) {
    handle.streamFrom(stream)
  }

  unfollow (handle, _params, { stream }) {
    handle.stopStreamFrom(stream)
  }

  stop_all (handle) { // eslint-disable-line camelcase
    handle.stopAllStreams()
  }

  switch (handle, _params, { stream }) {
    handle.stopAllStreams().streamFrom(stream)
  }

  set_state (handle, _params, { cstate = {}, istate = {} }) { // eslint-disable-line camelcase
    for (const [key, value] of Object.entries(cstate)) handle.cstate.set(key, value)
    for (const [key, value] of Object.entries(istate)) handle.istate.set(key, value)
  }

  whoami (handle) {
    handle.transmit({
      identifiers: handle.identifiers,
      url: handle.env.url,
      params: handle.env.params,
      cstate: handle.cstate.toJSON(),
      istate: handle.istate.toJSON()
    })
  }

  kick (handle) {
    handle.transmit({ bye: true }).close()
  }

  // Records what the channel saw when a subscription ended (unsubscribe or connection close).
  unsubscribed (handle, params) {
    this.app.closings.push({ kind: 'unsubscribed', identifier: handle.identifier, identifiers: handle.identifiers, istate: handle.istate.toJSON(), params })
  }
}

class ChatChannel extends TestChannel {
  subscribed (handle, { room }) {
    if (room === 'secret') return handle.reject()
    handle.streamFrom(`chat_${room}`)
    handle.istate.set('room', String(room))
  }
}

class MultiChannel extends TestChannel {
  subscribed (handle, { streams }) {
    for (const stream of streams) handle.streamFrom(stream)
  }
}

class BareChannel extends TestChannel {}

/** PresenceChannel {room}: streams presence_<room> and joins its presence set as the user (as lib/backend.js). */
class PresenceChannel extends TestChannel {
  subscribed (handle, { room }) {
    handle.streamFrom(`presence_${room}`)
    const user = handle.identifiers.current_user
    handle.joinPresence(user, { name: user })
  }

  leave (handle) {
    handle.leavePresence()
  }

  async who (handle) {
    handle.transmit({ who: await handle.presence() })
  }
}

export class TestApplication extends Application {
  constructor () {
    super()
    /** Every `unsubscribed` and `disconnect` the high-level API ran: { kind, identifiers, istate, cstate, params }. */
    this.closings = []
    // Instances (not classes) so each channel can record into this application.
    for (const [name, ChannelClass] of [['ChatChannel', ChatChannel], ['MultiChannel', MultiChannel], ['BareChannel', BareChannel], ['PresenceChannel', PresenceChannel]]) {
      const channel = new ChannelClass()
      channel.app = this
      this.registerChannel(name, channel)
    }
  }

  connect (handle) {
    const user = parseCookies(handle.env.headers.cookie).user
    if (!user || user === 'bad') return handle.reject()
    if (user === 'boom') throw new Error('backend exploded')
    handle.identifiedBy({ current_user: user })
    handle.cstate.set('user', user)
    handle.cstate.set('connected_at', new Date().toISOString())
  }

  disconnect (handle) {
    this.closings.push({ kind: 'disconnect', identifiers: handle.identifiers, cstate: handle.cstate.toJSON(), url: handle.env.url })
  }
}

/** Records every low-level call (request as the server sent it, response as the handler returned it). */
export class Recorder {
  constructor () {
    this.calls = []
  }

  wrap (handlers) {
    const record = (method) => async (request) => {
      const entry = { method, request, at: Date.now() }
      this.calls.push(entry)
      entry.response = await handlers[method](request)
      return entry.response
    }
    return { connect: record('connect'), command: record('command'), disconnect: record('disconnect') }
  }

  callsOf (method, filter = () => true) {
    return this.calls.filter((c) => c.method === method && filter(c.request, c))
  }

  commandsFor (user, filter = () => true) {
    return this.callsOf('command', (r) => r.connectionIdentifiers === identifiersFor(user) && filter(r))
  }

  async waitForCall (method, filter = () => true, { timeout = WAIT_MS } = {}) {
    const found = await eventually(() => this.callsOf(method, filter)[0], { timeout, what: `a ${method} call` })
    return found.request
  }
}

/**
 * A running in-process server on free ports. `handlers`: low-level handlers (default: a TestApplication);
 * `options`: more server options. The server is stopped when the scenario ends (or by `after`).
 */
export async function startInProcess ({ app, handlers, options = {}, onError, record = true } = {}) {
  const server = new Server({
    host: '127.0.0.1',
    port: 0,
    httpBroadcastPort: 0,
    pingInterval: 1,
    broadcastKey: BROADCAST_KEY,
    shutdownTimeout: 5,
    logLevel: 'warn',
    ...options
  })
  app ??= handlers ? null : new TestApplication()
  const base = handlers ?? app.handlers(server)
  const recorder = new Recorder()
  server.handle(record ? recorder.wrap(base) : base)
  server.on('error', onError ?? (() => {}))
  await server.start()
  onScenarioEnd(() => server.stop())
  return new InProcess(server, app, recorder)
}

/** A started server with what the suite's helpers expect (`url()`, `port`, `broadcastPort`). */
export class InProcess {
  constructor (server, app, recorder) {
    this.server = server
    this.app = app
    this.recorder = recorder
    this.port = server.address.port
    this.broadcastPort = server.address.broadcastUrl ? new URL(server.address.broadcastUrl).port : undefined
  }

  url (query = {}, pathname = '/cable') {
    const qs = new URLSearchParams(query).toString()
    return `ws://127.0.0.1:${this.port}${pathname}${qs ? `?${qs}` : ''}`
  }

  /** Broadcasts through the Rust hub directly (no HTTP). */
  broadcast (stream, data, options) {
    return this.server.broadcast(stream, data, options)
  }

  stop () {
    return this.server.stop()
  }
}
