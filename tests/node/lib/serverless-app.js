// The test backend's application (the behaviours lib/backend.js documents) written with @anycable/serverless-js
// the way its README shows: an Application subclass with registered Channel instances. The same object is served
// over HTTP RPC (lib/serverless-backend.js) and run in-process by `server.handle(app)`.
//
// Connect: cookie `user=<name>` authenticates (identifiers `{"current_user":<name>}`, cstate user and
// connected_at); no cookie or `user=bad` is rejected; `user=boom` throws (the HTTP route answers ERROR).
// State changes asked for by `set_state` go through `handle.env` (raw cstate / istate keys, as the gRPC backend
// sets them); the `remember` action keeps serverless-js's own channel state (`handle.state`).
// `app.seen` records what the application's own hooks received (unsubscribed, disconnect), in both modes.
import { register } from 'node:module'
import { parseCookies } from './harness.js'

register('./serverless-resolve.js', import.meta.url)
const { Application, Channel } = await import('@anycable/serverless-js')

class TestChannel extends Channel {
  constructor (seen) {
    super()
    this.seen = seen
  }

  async unsubscribed (handle, params) {
    this.seen.push({ hook: 'unsubscribed', identifier: handle.identifier, identifiers: handle.identifiers, params, state: handle.state })
  }

  async speak () {}

  async touch (handle) {
    handle.transmit({ touched: true })
  }

  async echo (handle, _params, data) {
    handle.transmit({ action: 'echo', ...data })
  }

  async follow (handle, _params, { stream }) {
    handle.streamFrom(stream)
  }

  async unfollow (handle, _params, { stream }) {
    handle.stopStreamFrom(stream)
  }

  async stop_all (handle) {
    handle.stopAllStreams()
  }

  async switch (handle, _params, { stream }) {
    handle.stopAllStreams()
    handle.streamFrom(stream)
  }

  async set_state (handle, _params, { cstate = {}, istate = {} }) {
    const env = handle.env
    env.cstate = { ...env.cstate, ...cstate }
    env.istate = { ...env.istate, ...istate }
  }

  async whoami (handle) {
    const env = handle.env
    const istate = { ...env.istate }
    delete istate[handle.identifier]
    handle.transmit({ identifiers: JSON.stringify(handle.identifiers), url: env.url, cstate: env.cstate || {}, istate })
  }

  // serverless-js's channel state: kept per subscription by the server and handed back to every later call.
  async remember (handle, _params, { key, value }) {
    handle.state = { ...handle.state, [key]: value }
    handle.transmit({ state: handle.state })
  }

  async kick (handle) {
    handle.transmit({ bye: true })
    // A channel handle has no close() of its own in serverless-js; its connection handle has.
    handle.delegate.close()
  }
}

class ChatChannel extends TestChannel {
  async subscribed (handle, params) {
    if (params.room === 'secret') {
      handle.reject()
      return
    }
    handle.streamFrom(`chat_${params.room}`)
    handle.env.istate = { ...handle.env.istate, room: String(params.room) }
  }
}

class MultiChannel extends TestChannel {
  async subscribed (handle, params) {
    for (const stream of params.streams) handle.streamFrom(stream)
  }
}

class BareChannel extends TestChannel {}

class TestApplication extends Application {
  seen = []

  async connect (handle) {
    const user = parseCookies(handle.env.headers?.cookie).user
    if (!user || user === 'bad') {
      handle.reject()
      return
    }
    if (user === 'boom') throw new Error('backend exploded')
    handle.identifiedBy({ current_user: user })
    handle.env.cstate = { user, connected_at: new Date().toISOString() }
  }

  async disconnect (handle) {
    this.seen.push({ hook: 'disconnect', identifiers: handle.identifiers, cstate: handle.env.cstate, url: handle.env.url })
  }
}

/** A new application object with the test channels registered. */
export function createApp () {
  const app = new TestApplication()
  app.registerChannel('ChatChannel', new ChatChannel(app.seen))
  app.registerChannel('MultiChannel', new MultiChannel(app.seen))
  app.registerChannel('BareChannel', new BareChannel(app.seen))
  return app
}

/** The frame serverless-js sends when `connect` rejects (it has no `reconnect` field). */
export const UNAUTHORIZED_FRAME = { type: 'disconnect', reason: 'unauthorized' }
