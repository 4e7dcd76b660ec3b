// The real client libraries, set up to run in Node: @anycable/core and @rails/actioncable.
import { createCable } from '@anycable/core'
import ActionCable from '@rails/actioncable'
import WebSocket from 'ws'
import { onScenarioEnd } from './harness.js'

/** An @anycable/core cable speaking actioncable-v1-json, authenticated with the `user` cookie. */
export function anycableClient (url, { user }) {
  const cable = createCable(url, {
    protocol: 'actioncable-v1-json',
    websocketImplementation: WebSocket,
    websocketOptions: { headers: { cookie: `user=${user}` } },
    logLevel: 'error'
  })
  onScenarioEnd(() => cable.disconnect())
  return cable
}

/**
 * An @anycable/core cable speaking the extended protocol (actioncable-v1-ext-json), sending `cookie`, reconnecting
 * 250 ms after a lost connection. `kill()` destroys the current TCP connection without a close frame, as a network
 * failure would; `moveTo(host)` sends later connections to another server (as a load balancer would).
 */
export function extClient (url, { cookie, ...options } = {}) {
  const sockets = []
  let host = null
  class TrackedWebSocket extends WebSocket {
    constructor (address, protocols, wsOptions) {
      super(host ? address.replace(/^(wss?:\/\/)[^/]+/, `$1${host}`) : address, protocols, wsOptions)
      sockets.push(this)
    }
  }
  const cable = createCable(url, {
    protocol: 'actioncable-v1-ext-json',
    websocketImplementation: TrackedWebSocket,
    websocketOptions: { headers: cookie ? { cookie } : {} },
    reconnectStrategy: () => 250,
    logLevel: 'error',
    ...options
  })
  onScenarioEnd(() => cable.disconnect())
  return {
    cable,
    kill () {
      sockets.at(-1)?._socket?.destroy()
    },
    moveTo (newHost) {
      host = newHost
    }
  }
}

// @rails/actioncable is written for browsers. In Node it needs: a WebSocket implementation (set on
// its `adapters`), and the window-level addEventListener/removeEventListener its connection monitor
// uses for `visibilitychange` (no visibility changes happen in Node, so no-ops suffice). An absolute
// ws:// URL keeps it away from `document`.
if (typeof globalThis.addEventListener !== 'function') globalThis.addEventListener = () => {}
if (typeof globalThis.removeEventListener !== 'function') globalThis.removeEventListener = () => {}

// Browsers send cookies themselves; here each consumer URL maps to the headers its sockets carry.
const headersByUrl = new Map()
class CookieWebSocket extends WebSocket {
  constructor (url, protocols) {
    super(url, protocols, { headers: headersByUrl.get(url) || {} })
  }
}
ActionCable.adapters.WebSocket = CookieWebSocket

/** A @rails/actioncable consumer authenticated with the `user` cookie; `url` must be unique per consumer. */
export function railsConsumer (url, { user }) {
  headersByUrl.set(url, { cookie: `user=${user}` })
  const consumer = ActionCable.createConsumer(url)
  onScenarioEnd(() => {
    consumer.disconnect()
    headersByUrl.delete(url)
  })
  return consumer
}

/** Resolves with the next value `register` hands to its callback. */
export function nextEvent (register, { timeout = 5000, what = 'an event' } = {}) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out after ${timeout} ms waiting for ${what}`)), timeout)
    register((value) => {
      clearTimeout(timer)
      resolve(value)
    })
  })
}
