// A small Action Cable application behind AnyCable's gRPC contract (proto/rpc.proto), run in the test
// process (`startBackend`) or in a child process a test can kill and restart (`startBackendProcess`). It
// records every call it receives so tests can assert on what the server sent, and can be told to fail or
// delay its answers (`disruption`).
//
// Connect: cookie `user=<name>` authenticates; no cookie or `user=bad` is rejected (FAILURE +
// unauthorized disconnect frame); `user=boom` makes the backend fail (ERROR).
// Channels (identifier JSON `{"channel": ...}`):
//   ChatChannel {room}       streams chat_<room>, istate {room}; room "secret" is rejected
//   MultiChannel {streams}   streams every name in `streams`
//   BareChannel {}           no streams
//   PresenceChannel {room}   streams presence_<room> and joins its presence set as the user, info {name: user}
// Actions of every channel (data JSON `{"action": ...}`):
//   speak             nothing (the call is recorded)
//   touch             transmits {"touched":true}
//   echo              transmits the data as received
//   follow/unfollow   {stream}: streams / stopped_streams
//   stop_all          stop_streams
//   switch            {stream}: stop_streams and streams [stream] in one answer
//   set_state         {cstate, istate}: returned as env changes
//   whoami            transmits the env (cstate, istate, url) and connection identifiers it received
//   kick              transmits {"bye":true} and asks for disconnect
//   leave             leaves the subscription's presence set
import { fork } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import grpc from '@grpc/grpc-js'
import protoLoader from '@grpc/proto-loader'
import { eventually, freePort, parseCookies, repoRoot, WAIT_MS } from './harness.js'

const PROTO_PATH = path.join(repoRoot, 'proto', 'rpc.proto')

let rpcService = null
function loadService () {
  if (!rpcService) {
    const definition = protoLoader.loadSync(PROTO_PATH, { keepCase: true, longs: String, enums: String, defaults: true })
    rpcService = grpc.loadPackageDefinition(definition).anycable.RPC.service
  }
  return rpcService
}

/** The identifiers string the backend returns for a user. */
export function identifiersFor (user) {
  return JSON.stringify({ current_user: user })
}

const emptyEnv = () => ({ cstate: {}, istate: {} })

/**
 * What every test backend records and answers queries on: `calls`, each `{ method, request, sid, at }` with
 * the request as the gRPC loader gives it (snake_case fields, empty ones filled in).
 */
export class RecordingBackend {
  constructor (port) {
    this.port = port
    this.calls = []
  }

  /** Every recorded call of one method ('Connect' | 'Command' | 'Disconnect'), optionally filtered. */
  callsOf (method, filter = () => true) {
    return this.calls.filter((c) => c.method === method && filter(c.request, c))
  }

  commandsFor (user, filter = () => true) {
    return this.callsOf('Command', (r) => r.connection_identifiers === identifiersFor(user) && filter(r))
  }

  disconnectsFor (user) {
    return this.callsOf('Disconnect', (r) => r.identifiers === identifiersFor(user))
  }

  /** Waits for a recorded call of `method` whose request satisfies `filter`; returns its request. */
  async waitForCall (method, filter = () => true, { timeout = WAIT_MS } = {}) {
    const found = await eventually(() => this.callsOf(method, filter)[0], { timeout, what: `a ${method} call` })
    return found.request
  }
}

export class Backend extends RecordingBackend {
  kind = 'grpc'
  unauthorizedFrame = { type: 'disconnect', reason: 'unauthorized', reconnect: false }

  constructor (port) {
    super(port)
    this.server = null
    // How calls are answered while it is set (a test may change it at any time): `{ code }` fails every call
    // with that gRPC status code, `{ delayMs }` answers every call that much later. Calls are recorded either way.
    this.disruption = null
    // Called with every recorded call (the child process of `BackendProcess` hands them to its parent).
    this.onCall = null
  }

  /** The `rpc_host` that reaches this backend. */
  get rpcHost () {
    return `127.0.0.1:${this.port}`
  }

  /** Server flags that point the binary at this backend. */
  get serverArgs () {
    return ['--rpc_host', this.rpcHost]
  }

  async start () {
    const server = new grpc.Server()
    server.addService(loadService(), {
      Connect: (call, callback) => this.#answer('Connect', call, callback, () => this.connect(call)),
      Command: (call, callback) => this.#answer('Command', call, callback, () => this.command(call.request)),
      Disconnect: (call, callback) => this.#answer('Disconnect', call, callback, () => ({ status: 'SUCCESS', error_msg: '' }))
    })
    await new Promise((resolve, reject) => {
      server.bindAsync(`127.0.0.1:${this.port}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve()))
    })
    this.server = server
    return this
  }

  async stop () {
    if (!this.server) return
    const server = this.server
    this.server = null
    server.forceShutdown()
  }

  #answer (method, call, callback, handle) {
    const sid = call.metadata.get('sid')[0]
    const record = { method, request: call.request, sid: sid === undefined ? undefined : String(sid), at: Date.now() }
    this.calls.push(record)
    this.onCall?.(record)
    const { code, delayMs } = this.disruption ?? {}
    if (code !== undefined) {
      callback({ code, details: `the test backend fails ${method} with status ${code}` })
      return
    }
    const reply = () => {
      try {
        callback(null, handle())
      } catch (err) {
        callback(err)
      }
    }
    if (delayMs) setTimeout(reply, delayMs)
    else reply()
  }

  connect (call) {
    const env = call.request.env || {}
    const user = parseCookies((env.headers || {}).cookie).user
    if (!user || user === 'bad') {
      return {
        status: 'FAILURE',
        identifiers: '',
        transmissions: [JSON.stringify({ type: 'disconnect', reason: 'unauthorized', reconnect: false })],
        error_msg: 'Auth failed',
        env: emptyEnv()
      }
    }
    if (user === 'boom') {
      return { status: 'ERROR', identifiers: '', transmissions: [], error_msg: 'backend exploded', env: emptyEnv() }
    }
    const sid = call.metadata.get('sid')[0]
    return {
      status: 'SUCCESS',
      identifiers: identifiersFor(user),
      transmissions: [JSON.stringify({ type: 'welcome', sid: sid === undefined ? '' : String(sid) })],
      error_msg: '',
      env: { cstate: { user, connected_at: new Date().toISOString() }, istate: {} }
    }
  }

  command (req) {
    const id = req.identifier
    const base = {
      status: 'SUCCESS',
      disconnect: false,
      stop_streams: false,
      streams: [],
      transmissions: [],
      error_msg: '',
      env: emptyEnv(),
      stopped_streams: []
    }
    const transmit = (message) => JSON.stringify({ identifier: id, message })
    let params
    try {
      params = JSON.parse(id)
    } catch {
      return { ...base, status: 'ERROR', error_msg: `identifier is not JSON: ${id}` }
    }

    if (req.command === 'subscribe') {
      const confirm = JSON.stringify({ identifier: id, type: 'confirm_subscription' })
      const reject = { ...base, status: 'FAILURE', transmissions: [JSON.stringify({ identifier: id, type: 'reject_subscription' })] }
      switch (params.channel) {
        case 'ChatChannel':
          if (params.room === 'secret') return reject
          return { ...base, streams: [`chat_${params.room}`], transmissions: [confirm], env: { cstate: {}, istate: { room: String(params.room) } } }
        case 'MultiChannel':
          return { ...base, streams: params.streams, transmissions: [confirm] }
        case 'BareChannel':
          return { ...base, transmissions: [confirm] }
        case 'PresenceChannel': {
          const user = parseCookies(req.env?.headers?.cookie).user
          const presence = { type: 'join', id: user, info: JSON.stringify({ name: user }), ttl: 0 }
          return { ...base, streams: [`presence_${params.room}`], transmissions: [confirm], presence }
        }
        default:
          return reject
      }
    }
    if (req.command === 'unsubscribe') return base
    if (req.command !== 'message') return { ...base, status: 'ERROR', error_msg: `unknown command ${req.command}` }

    const data = JSON.parse(req.data)
    const env = req.env || {}
    switch (data.action) {
      case 'speak':
        return base
      case 'touch':
        return { ...base, transmissions: [transmit({ touched: true })] }
      case 'echo':
        return { ...base, transmissions: [transmit(data)] }
      case 'follow':
        return { ...base, streams: [data.stream] }
      case 'unfollow':
        return { ...base, stopped_streams: [data.stream] }
      case 'stop_all':
        return { ...base, stop_streams: true }
      case 'switch':
        return { ...base, stop_streams: true, streams: [data.stream] }
      case 'set_state':
        return { ...base, env: { cstate: data.cstate || {}, istate: data.istate || {} } }
      case 'whoami':
        return {
          ...base,
          transmissions: [transmit({
            identifiers: req.connection_identifiers,
            url: env.url,
            cstate: env.cstate || {},
            istate: env.istate || {}
          })]
        }
      case 'kick':
        return { ...base, disconnect: true, transmissions: [transmit({ bye: true })] }
      case 'leave':
        return { ...base, presence: { type: 'leave', id: '', info: '', ttl: 0 } }
      default:
        return { ...base, status: 'ERROR', error_msg: `unknown action ${data.action}` }
    }
  }
}

/** Starts a backend on `port` (default: a free one). */
export async function startBackend ({ port } = {}) {
  const backend = new Backend(port ?? (await freePort()))
  return backend.start()
}

/**
 * The RPC kind the scenarios shared by every backend run against: FERROCABLE_RPC_BACKEND=grpc (default, this
 * file's backend) or http (the same behaviours written with @anycable/serverless-js behind HTTP RPC).
 */
export const RPC_BACKEND = process.env.FERROCABLE_RPC_BACKEND || 'grpc'

/** Starts the backend of kind `RPC_BACKEND`; its `serverArgs` point the server at it. */
export async function startRpcBackend () {
  if (RPC_BACKEND === 'grpc') return startBackend()
  if (RPC_BACKEND === 'http') return (await import('./serverless-backend.js')).startServerlessBackend()
  throw new Error(`FERROCABLE_RPC_BACKEND=${RPC_BACKEND}: expected grpc or http`)
}

const CHILD_PATH = fileURLToPath(new URL('./backend-child.js', import.meta.url))

/**
 * The same backend in a child process of its own, for outages a test causes for real: `kill()` is a SIGKILL
 * (the process and its sockets vanish as in a crash), and `start()` again brings it back on the same port.
 * The calls the child receives are recorded here, so `callsOf` and the other queries work as on `Backend`.
 */
export class BackendProcess extends Backend {
  constructor (port) {
    super(port)
    this.child = null
  }

  async start () {
    const child = fork(CHILD_PATH, [String(this.port)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    this.child = child
    this.exited = new Promise((resolve) => child.once('exit', resolve))
    child.on('message', (message) => {
      if (message.call) this.calls.push(message.call)
    })
    const ready = await new Promise((resolve) => {
      child.on('message', (message) => {
        if (message.listening || message.error) resolve(message)
      })
      this.exited.then((code) => resolve({ error: `exited with ${code}` }))
    })
    if (ready.error) throw new Error(`the backend process could not serve on port ${this.port}: ${ready.error}`)
    return this
  }

  /** Sets how the child answers from now on (see `Backend#disruption`); resolves once it applies. */
  async disrupt (disruption) {
    const applied = new Promise((resolve) => {
      const onMessage = (message) => {
        if (message.disrupted) {
          this.child.off('message', onMessage)
          resolve()
        }
      }
      this.child.on('message', onMessage)
    })
    this.child.send({ disruption })
    await applied
  }

  /** SIGKILL: the backend is gone at once, in the middle of whatever it was doing. */
  async kill () {
    if (!this.child) return
    const child = this.child
    this.child = null
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    await this.exited
  }

  stop () {
    return this.kill()
  }
}

/**
 * Starts a backend process on `port` (default: a free one). A port found free can be taken by another test's
 * socket before the child binds it; without a given port, a few other free ports are tried.
 */
export async function startBackendProcess ({ port } = {}) {
  for (let attempt = 1; ; attempt++) {
    const backend = new BackendProcess(port ?? (await freePort()))
    try {
      return await backend.start()
    } catch (error) {
      if (port !== undefined || attempt >= 5 || !/EADDRINUSE/.test(error.message)) throw error
    }
  }
}
