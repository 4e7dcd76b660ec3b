// gRPC backend failures, caused for real on a backend in its own process (lib/backend.js, BackendProcess):
// down at start, killed mid-call, restarted, slower than rpc_request_timeout, answering RESOURCE_EXHAUSTED or
// UNAVAILABLE. The server stays up throughout; a Connect that cannot be answered closes that socket with
// 1011; a command that cannot be answered gets no frame (as with AnyCable-Go) and leaves the connection
// open; retries stop after 5 attempts; and once the backend is back, calls succeed again without any help.
import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'
import { BackendProcess, startBackendProcess } from '../lib/backend.js'
import { broadcastOk, eventually, freePort, onScenarioEnd, scenario, startServer, unique } from '../lib/harness.js'
import { RawClient } from '../lib/raw-client.js'

/** Attempts per call for UNAVAILABLE / RESOURCE_EXHAUSTED answers (the first one included). */
const MAX_ATTEMPTS = 5
const GRPC = { UNAVAILABLE: 14, RESOURCE_EXHAUSTED: 8 }

const isUser = (user) => (r) => (r.env?.headers?.cookie ?? '') === `user=${user}`

async function backendProcess (options) {
  const backend = await startBackendProcess(options)
  onScenarioEnd(() => backend.stop())
  return backend
}

async function assertHealthy (server) {
  const health = await fetch(`http://${server.host}:${server.port}/health`)
  assert.equal(health.status, 200, 'the server keeps running')
}

/** Opens a connection and returns how it was closed. */
async function closeOfConnect (server, user, options = {}) {
  const client = await RawClient.open(server.url(), { user })
  return client.waitForClose({ timeout: 15000, ...options })
}

/** Retries a round trip on `client` until the backend answers it again. */
function backendAnswersAgain (client, id) {
  return eventually(() => client.roundTrip(id, { timeout: 2000 }), { timeout: 25000, interval: 100, what: 'a command answered once the backend is back' })
}

scenario('backend down at start: Connect closes with 1011, and the server serves once the backend starts', async () => {
  const rpcPort = await freePort()
  const server = await startServer({ rpcPort })
  const late = new BackendProcess(rpcPort)
  onScenarioEnd(() => late.stop())
  try {
    assert.equal((await closeOfConnect(server, unique('early'))).code, 1011)
    await assertHealthy(server)

    await late.start()
    const user = unique('late')
    const recovered = await eventually(async () => {
      const attempt = await RawClient.open(server.url(), { user })
      const first = await Promise.race([attempt.next({ timeout: 20000 }).catch(() => null), attempt.closed.then(() => null)])
      if (first && first.type === 'welcome') return attempt
      attempt.terminate()
      return null
    }, { timeout: 25000, interval: 200, what: 'a welcome once the backend is up' })
    const id = await recovered.subscribeConfirmed({ channel: 'BareChannel' })
    await recovered.roundTrip(id)
  } finally {
    await server.stop()
  }
}, { timeout: 60000 })

scenario('backend killed mid-call and restarted: connected clients keep their streams, the call fails once, and the same connection works again', async () => {
  const backend = await backendProcess()
  const server = await startServer({ rpcPort: backend.port })
  try {
    const user = unique('steady')
    const room = unique('room')
    const client = await RawClient.connect(server.url(), { user })
    const id = await client.subscribeConfirmed({ channel: 'ChatChannel', room })

    // The backend takes its time with the next call and dies while it is in flight.
    await backend.disrupt({ delayMs: 10000 })
    client.perform(id, 'echo', { token: 'in-flight' })
    await backend.waitForCall('Command', (r) => r.data.includes('in-flight'))
    await backend.kill()
    await server.waitForLog(/command failed/, { timeout: 10000 })
    assert.ok(client.isOpen, 'a failed command does not end the connection')

    // Broadcasts need no backend: the subscription made before the outage still delivers.
    await broadcastOk(server, { stream: `chat_${room}`, data: '{"during":"outage"}' })
    assert.deepEqual(await client.nextMessage(id), { identifier: id, message: { during: 'outage' } })
    // A new connection cannot be authenticated while the backend is gone.
    assert.equal((await closeOfConnect(server, unique('during'))).code, 1011)
    await assertHealthy(server)

    await backend.start()
    await backendAnswersAgain(client, id)
    const late = await RawClient.connect(server.url(), { user: unique('after') })
    await late.subscribeConfirmed({ channel: 'BareChannel' })

    // The killed call was sent once, never again (not to the dead backend, not to the restarted one), and
    // its answer never reached the client.
    assert.equal(backend.callsOf('Command', (r) => r.data.includes('in-flight')).length, 1)
    assert.equal(client.inbox.filter((f) => f.message?.token === 'in-flight').length, 0)
  } finally {
    await server.stop()
  }
}, { timeout: 60000 })

scenario('RESOURCE_EXHAUSTED and UNAVAILABLE answers are retried 5 times, then Connect closes with 1011 and a command gets no frame', async (t) => {
  const backend = await backendProcess()
  const server = await startServer({ rpcPort: backend.port })
  try {
    const user = unique('subscriber')
    const client = await RawClient.connect(server.url(), { user })
    for (const [name, code] of Object.entries(GRPC)) {
      await backend.disrupt({ code })
      const refused = unique(name.toLowerCase())
      const started = Date.now()
      assert.equal((await closeOfConnect(server, refused)).code, 1011, `${name}: Connect closes with 1011`)
      t.diagnostic(`${name}: Connect closed with 1011 ${Date.now() - started} ms after the socket opened`)
      const room = unique(name.toLowerCase())
      const identifier = client.subscribe({ channel: 'ChatChannel', room })
      await server.waitForLog(new RegExp(`command failed.*${room}`), { timeout: 10000 })

      // The backend saw exactly MAX_ATTEMPTS of each call (with the same session id), and no more later.
      await sleep(500)
      const connects = backend.callsOf('Connect', isUser(refused))
      assert.equal(connects.length, MAX_ATTEMPTS, `${name}: Connect attempts`)
      assert.equal(new Set(connects.map((c) => c.sid)).size, 1)
      assert.equal(backend.commandsFor(user, (r) => r.identifier === identifier).length, MAX_ATTEMPTS, `${name}: Command attempts`)
      assert.ok(client.isOpen, `${name}: the connection stays open`)
      assert.equal(client.inbox.filter((f) => f.identifier === identifier).length, 0, `${name}: no frame for the failed subscribe`)

      // Back to normal: the same subscribe now succeeds on the same connection.
      await backend.disrupt(null)
      await client.subscribeConfirmed(JSON.parse(identifier))
    }
    await assertHealthy(server)
  } finally {
    await server.stop()
  }
}, { timeout: 60000 })

scenario('a backend slower than rpc_request_timeout: the call fails at the timeout without retries, its late answer is dropped, and the connection works again', async (t) => {
  const TIMEOUT_MS = 500
  const DELAY_MS = 3000
  const backend = await backendProcess()
  const server = await startServer({ rpcPort: backend.port, args: ['--rpc_request_timeout', String(TIMEOUT_MS)] })
  try {
    const client = await RawClient.connect(server.url(), { user: unique('patient') })
    const id = await client.subscribeConfirmed({ channel: 'BareChannel' })

    await backend.disrupt({ delayMs: DELAY_MS })
    const sent = Date.now()
    client.perform(id, 'echo', { token: 'slow' })
    const refused = unique('slow')
    const started = Date.now()
    assert.equal((await closeOfConnect(server, refused, { timeout: DELAY_MS })).code, 1011)
    const closedAfter = Date.now() - started
    t.diagnostic(`slow backend: Connect closed with 1011 ${closedAfter} ms after the socket opened (rpc_request_timeout ${TIMEOUT_MS} ms)`)
    assert.ok(closedAfter < DELAY_MS - 500, `Connect closed ${closedAfter} ms after it started: at the timeout, not at the backend's answer`)
    await server.waitForLog(/command failed.*timed out/)
    assert.equal(backend.callsOf('Connect', isUser(refused)).length, 1, 'a timed-out call is not retried')
    assert.ok(client.isOpen)

    await backend.disrupt(null)
    await client.roundTrip(id)
    // Past the moment the backend answered the slow call: that answer was never applied.
    await sleep(Math.max(0, sent + DELAY_MS + 500 - Date.now()))
    assert.equal(client.inbox.filter((f) => f.message?.token === 'slow').length, 0)
    await client.roundTrip(id)
    await assertHealthy(server)
  } finally {
    await server.stop()
  }
}, { timeout: 60000 })
