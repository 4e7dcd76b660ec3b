// A bare WebSocket client for frame-exact assertions and malformed input. Frames are kept in arrival
// order; pings are kept apart so waits for other frames are not disturbed by them.
import WebSocket from 'ws'
import { onScenarioEnd, WAIT_MS } from './harness.js'

export const ACTION_CABLE_JSON = 'actioncable-v1-json'

/** Tries a WebSocket upgrade; resolves { ws } when it opens or { status } when refused with an HTTP status. */
export function tryUpgrade (url, { protocols = [ACTION_CABLE_JSON], headers = {}, origin } = {}) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols, { headers, origin })
    onScenarioEnd(() => ws.terminate())
    ws.once('open', () => resolve({ ws }))
    ws.once('unexpected-response', (_req, res) => {
      res.resume()
      resolve({ status: res.statusCode })
      ws.terminate()
    })
    ws.once('error', reject)
  })
}

export class RawClient {
  /**
   * Opens a connection. `user` sets the `user=<name>` cookie the test backend authenticates with.
   * Resolves once the socket is open (not waiting for welcome).
   */
  static async open (url, { user, protocols = [ACTION_CABLE_JSON], headers = {}, origin } = {}) {
    // The user cookie goes first, joined with any cookie header the caller gave (in whatever case).
    const allHeaders = {}
    const cookies = user === undefined ? [] : [`user=${user}`]
    for (const [name, value] of Object.entries(headers)) {
      if (name.toLowerCase() === 'cookie') cookies.push(value)
      else allHeaders[name] = value
    }
    if (cookies.length > 0) allHeaders.cookie = cookies.join('; ')
    const ws = new WebSocket(url, protocols, { headers: allHeaders, origin })
    const client = new RawClient(ws)
    onScenarioEnd(() => client.terminate())
    await new Promise((resolve, reject) => {
      ws.once('open', resolve)
      ws.once('unexpected-response', (_req, res) => {
        res.resume()
        reject(new Error(`upgrade refused with HTTP ${res.statusCode}`))
      })
      ws.once('error', reject)
    })
    return client
  }

  /** Opens a connection and waits for the welcome frame; `client.sid` is its session id. */
  static async connect (url, options) {
    const client = await RawClient.open(url, options)
    const welcome = await client.waitFor((f) => f.type === 'welcome')
    client.sid = welcome.sid
    return client
  }

  constructor (ws) {
    this.ws = ws
    this.inbox = []
    this.pings = []
    this.waiters = new Set()
    this.closeInfo = null
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() }
        resolve(this.closeInfo)
        this.#wake()
      })
    })
    ws.on('error', () => {})
    ws.on('message', (data, isBinary) => {
      const text = data.toString('utf8')
      let frame
      try {
        frame = JSON.parse(text)
      } catch {
        frame = { unparsable: text, binary: isBinary }
      }
      if (frame && frame.type === 'ping') this.pings.push({ frame, at: Date.now() })
      else this.inbox.push(frame)
      this.#wake()
    })
  }

  #wake () {
    for (const waiter of [...this.waiters]) waiter()
  }

  get protocol () {
    return this.ws.protocol
  }

  get isOpen () {
    return this.ws.readyState === WebSocket.OPEN
  }

  /** Sends a JSON command (objects are serialized, strings are sent verbatim as text frames). */
  send (payload) {
    this.ws.send(typeof payload === 'string' ? payload : JSON.stringify(payload))
  }

  sendBinary (bytes) {
    this.ws.send(bytes, { binary: true })
  }

  /** Waits for `check` to return a value; wakes on each frame and on close. */
  #until (check, what, timeout) {
    return new Promise((resolve, reject) => {
      const waiter = () => {
        let value
        try {
          value = check()
        } catch (err) {
          done()
          reject(err)
          return
        }
        if (value !== undefined) {
          done()
          resolve(value)
        }
      }
      const timer = setTimeout(() => {
        done()
        reject(new Error(`timed out after ${timeout} ms waiting for ${what}; unread frames: ${JSON.stringify(this.inbox)}; closed: ${JSON.stringify(this.closeInfo)}`))
      }, timeout)
      const done = () => {
        clearTimeout(timer)
        this.waiters.delete(waiter)
      }
      this.waiters.add(waiter)
      waiter()
    })
  }

  /** The next non-ping frame in arrival order (removed from the inbox). */
  next ({ timeout = WAIT_MS } = {}) {
    return this.#until(() => {
      if (this.inbox.length > 0) return this.inbox.shift()
      if (this.closeInfo) throw new Error(`connection closed (${JSON.stringify(this.closeInfo)}) while waiting for a frame`)
      return undefined
    }, 'the next frame', timeout)
  }

  /** The first unread frame matching `predicate` (removed; frames before it stay unread). */
  waitFor (predicate, { timeout = WAIT_MS, what = 'a matching frame' } = {}) {
    return this.#until(() => {
      const index = this.inbox.findIndex(predicate)
      if (index >= 0) return this.inbox.splice(index, 1)[0]
      if (this.closeInfo) throw new Error(`connection closed (${JSON.stringify(this.closeInfo)}) while waiting for ${what}; unread frames: ${JSON.stringify(this.inbox)}`)
      return undefined
    }, what, timeout)
  }

  /** The next message delivered to subscription `identifier`. */
  nextMessage (identifier, options = {}) {
    return this.waitFor((f) => f.identifier === identifier && 'message' in f, { what: `a message for ${identifier}`, ...options })
  }

  /** Waits until `count` pings have arrived in total; returns them with arrival times. */
  waitForPings (count, { timeout = WAIT_MS } = {}) {
    return this.#until(() => (this.pings.length >= count ? this.pings.slice(0, count) : undefined), `${count} pings`, timeout)
  }

  /** Waits for the socket to close; returns { code, reason }. */
  waitForClose ({ timeout = WAIT_MS } = {}) {
    return this.#until(() => this.closeInfo ?? undefined, 'the connection to close', timeout)
  }

  /** Sends subscribe and returns the identifier string (does not wait for the answer). */
  subscribe (params) {
    const identifier = JSON.stringify(params)
    this.send({ command: 'subscribe', identifier })
    return identifier
  }

  /** Subscribes and waits for confirm_subscription; throws on reject_subscription. */
  async subscribeConfirmed (params, options = {}) {
    const identifier = this.subscribe(params)
    const answer = await this.waitFor((f) => f.identifier === identifier && (f.type === 'confirm_subscription' || f.type === 'reject_subscription'), { what: `the answer to subscribe ${identifier}`, ...options })
    if (answer.type !== 'confirm_subscription') throw new Error(`subscription ${identifier} was rejected`)
    return identifier
  }

  unsubscribe (identifier) {
    this.send({ command: 'unsubscribe', identifier })
  }

  /** Sends a `message` command: data is `{"action": action, ...payload}` as a JSON string. */
  perform (identifier, action, payload = {}) {
    this.send({ command: 'message', identifier, data: JSON.stringify({ action, ...payload }) })
  }

  /** Performs `echo` with a fresh token and waits for it: proves every earlier frame was handled. */
  async roundTrip (identifier, options = {}) {
    const token = `${Date.now()}-${Math.random()}`
    this.perform(identifier, 'echo', { token })
    const frame = await this.waitFor((f) => f.identifier === identifier && f.message && f.message.token === token, { what: `echo ${token}`, ...options })
    return frame
  }

  close (code = 1000) {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.close(code)
  }

  terminate () {
    if (this.ws.readyState !== WebSocket.CLOSED) this.ws.terminate()
  }
}
