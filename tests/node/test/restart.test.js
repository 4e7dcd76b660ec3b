// Restarts: on SIGTERM every client is told `server_restart` with reconnect: true and every owed Disconnect
// reaches the backend before the process exits (2,000 of them within shutdown_timeout); real @anycable/web
// clients then find the new process on the same port by themselves and resubscribe.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { after, before } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { createCable } from '@anycable/web'
import WebSocket from 'ws'
import { identifiersFor, startBackendProcess } from '../lib/backend.js'
import { broadcastOk, eventually, onScenarioEnd, scenario, startServer, unique } from '../lib/harness.js'
import { RawClient } from '../lib/raw-client.js'

let backend

before(async () => {
  backend = await startBackendProcess()
})

after(async () => {
  await backend?.stop()
})

const SERVER_RESTART = { type: 'disconnect', reason: 'server_restart', reconnect: true }

/** A `ws` class that keeps the text frames every socket it opens receives: `sockets[n]` is the n-th socket's. */
function recordingWebSocket (sockets) {
  return class RecordingWebSocket extends WebSocket {
    constructor (...args) {
      super(...args)
      const frames = []
      sockets.push(frames)
      this.on('message', (data, isBinary) => {
        if (!isBinary) frames.push(JSON.parse(data.toString('utf8')))
      })
    }
  }
}

/** An @anycable/web cable for `user`, recording its sockets' frames, subscribed to ChatChannel `room`. */
function webClient (url, { user, room }) {
  const sockets = []
  const cable = createCable(url, {
    protocol: 'actioncable-v1-json',
    websocketImplementation: recordingWebSocket(sockets),
    websocketOptions: { headers: { cookie: `user=${user}` } },
    // The server under test pings every second (the harness default); the client expects the same, which
    // also sets its reconnect backoff (0.5-3 s for the first attempt, doubling after that).
    pingInterval: 1000,
    logLevel: 'error'
  })
  onScenarioEnd(() => cable.disconnect())
  const channel = cable.subscribeTo('ChatChannel', { room })
  const messages = []
  channel.on('message', (message) => messages.push(message))
  return { user, cable, channel, sockets, messages }
}

const isUser = (user) => (r) => (r.env?.headers?.cookie ?? '') === `user=${user}`

scenario('graceful restart: 50 @anycable/web clients get server_restart, reconnect to the new process on the same port and resubscribe', async (t) => {
  const CLIENTS = 50
  const room = unique('room')
  const first = await startServer({ rpcPort: backend.port })
  const clients = Array.from({ length: CLIENTS }, () => webClient(first.url(), { user: unique('web'), room }))
  await Promise.all(clients.map((c) => c.channel.ensureSubscribed()))

  const stopped = Date.now()
  const status = await first.stop({ timeout: 15000 })
  assert.deepEqual(status, { code: 0, signal: null }, 'the old process exits cleanly')
  for (const client of clients) {
    const disconnects = client.sockets[0].filter((f) => f.type === 'disconnect')
    assert.deepEqual(disconnects, [SERVER_RESTART], `${client.user} was told to come back, once`)
    assert.equal(backend.disconnectsFor(client.user).length, 1, `${client.user}'s Disconnect ran before the old process exited`)
  }

  // The new process binds the same port as soon as the old one is gone (SO_REUSEADDR: the old connections'
  // TIME_WAIT entries do not block it), while the clients are retrying.
  const second = await startServer({ rpcPort: backend.port, port: first.port, broadcastPort: first.broadcastPort })
  try {
    await eventually(() => clients.every((c) => c.channel.state === 'connected' && c.sockets.length >= 2), {
      timeout: 30000,
      interval: 100,
      what: 'every client to reconnect and resubscribe'
    })
    const resubscribed = Math.max(...clients.map((c) => backend.commandsFor(c.user, (r) => r.command === 'subscribe')[1].at))
    t.diagnostic(`${CLIENTS} clients resubscribed ${resubscribed - stopped} ms after SIGTERM to the old process`)
    for (const client of clients) {
      assert.equal(backend.callsOf('Connect', isUser(client.user)).length, 2, `${client.user}: one Connect per process`)
      const subscribes = backend.commandsFor(client.user, (r) => r.command === 'subscribe')
      assert.equal(subscribes.length, 2, `${client.user}: subscribed once on each process`)
      assert.equal(subscribes[1].request.identifier, client.channel.identifier)
    }
    await broadcastOk(second, { stream: `chat_${room}`, data: JSON.stringify({ after: 'restart' }) })
    await eventually(() => clients.every((c) => c.messages.some((m) => m.after === 'restart')), {
      what: 'the broadcast after the restart at every client'
    })
    const reached = clients.filter((c) => c.messages.filter((m) => m.after === 'restart').length === 1).length
    assert.equal(reached, CLIENTS, 'every client got the broadcast exactly once')
  } finally {
    await second.stop()
  }
}, { timeout: 90000 })

/** The soft limit on open files of this process (and of the server it starts). */
function openFilesLimit () {
  return Number(execFileSync('sh', ['-c', 'ulimit -n']).toString().trim())
}

scenario('graceful shutdown with 2,000 connected sessions: every Disconnect reaches the backend within shutdown_timeout', async (t) => {
  const SESSIONS = 2000
  const SHUTDOWN_TIMEOUT = 10
  // The test process holds one socket per session and so does the server.
  const limit = openFilesLimit()
  assert.ok(limit >= SESSIONS + 1000, `open files limit ${limit} is too low for ${SESSIONS} sockets: raise it (ulimit -n 8192) before running the suite`)

  // At the default disconnect_rate (100/s) 2,000 calls take 20 s: only a drain that speeds up to the deadline
  // fits them into the 10 s shutdown_timeout.
  const server = await startServer({ rpcPort: backend.port, args: ['--shutdown_timeout', String(SHUTDOWN_TIMEOUT)] })
  const prefix = unique('mass')
  const users = Array.from({ length: SESSIONS }, (_, i) => `${prefix}-${i}`)
  const clients = []
  for (let i = 0; i < SESSIONS; i += 200) {
    clients.push(...(await Promise.all(users.slice(i, i + 200).map((user) => RawClient.connect(server.url(), { user })))))
  }
  const id = await clients[0].subscribeConfirmed({ channel: 'ChatChannel', room: unique('room') })
  const before = backend.callsOf('Disconnect').length

  const started = Date.now()
  const status = await server.stop({ timeout: (SHUTDOWN_TIMEOUT + 5) * 1000 })
  const took = Date.now() - started
  assert.deepEqual(status, { code: 0, signal: null })
  assert.ok(took < (SHUTDOWN_TIMEOUT + 2) * 1000, `the process exited ${took} ms after SIGTERM (shutdown_timeout ${SHUTDOWN_TIMEOUT} s)`)

  // The backend process reports calls over IPC: let the last reports arrive (and any extra call show up).
  await eventually(() => backend.callsOf('Disconnect').length - before >= SESSIONS, { timeout: 5000 }).catch(() => {})
  await sleep(200)
  const calls = backend.callsOf('Disconnect').slice(before)
  const identifiers = new Set(calls.map((c) => c.request.identifiers))
  assert.equal(calls.length, SESSIONS, `Disconnect calls the backend received (shutdown took ${took} ms)`)
  assert.equal(identifiers.size, SESSIONS, 'one Disconnect per session')
  for (const user of users) assert.ok(identifiers.has(identifiersFor(user)), `no Disconnect for ${user}`)
  assert.equal(new Set(calls.map((c) => c.sid)).size, SESSIONS, 'each carries its own session id')
  const first = calls.find((c) => c.request.identifiers === identifiersFor(users[0]))
  assert.deepEqual(first.request.subscriptions, [id])
  const last = Math.max(...calls.map((c) => c.at))
  assert.ok(last - started < SHUTDOWN_TIMEOUT * 1000, `the last Disconnect arrived ${last - started} ms after SIGTERM`)
  t.diagnostic(`${SESSIONS} Disconnect calls on shutdown: process exited after ${took} ms, last call at ${last - started} ms`)
}, { timeout: 90000 })
