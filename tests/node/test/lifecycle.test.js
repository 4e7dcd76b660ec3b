// Server-initiated endings and backend outages: remote disconnect, graceful shutdown on SIGTERM, and a
// gRPC backend that is down and comes back.
import assert from 'node:assert/strict'
import { after, before } from 'node:test'
import { Backend, startBackend, identifiersFor } from '../lib/backend.js'
import { eventually, freePort, remoteDisconnect, scenario, startServer, unique } from '../lib/harness.js'
import { RawClient } from '../lib/raw-client.js'

let backend

before(async () => {
  backend = await startBackend()
})

after(async () => {
  await backend?.stop()
})

scenario('a remote disconnect by identifiers sends the remote disconnect frame, closes, and calls Disconnect', async () => {
  const server = await startServer({ rpcPort: backend.port })
  try {
    const user = unique('target')
    const target = await RawClient.connect(server.url(), { user })
    const second = await RawClient.connect(server.url(), { user })
    const bystander = await RawClient.connect(server.url(), { user: unique('bystander') })
    const id = await target.subscribeConfirmed({ channel: 'ChatChannel', room: unique('room') })

    await remoteDisconnect(server, identifiersFor(user), { reconnect: false })
    for (const client of [target, second]) {
      assert.deepEqual(await client.next(), { type: 'disconnect', reason: 'remote', reconnect: false })
      await client.waitForClose()
    }
    const disconnects = await eventually(() => {
      const calls = backend.disconnectsFor(user)
      return calls.length === 2 && calls
    }, { what: 'Disconnect for both connections of the user' })
    assert.deepEqual(disconnects.map((c) => c.request.subscriptions).sort((a, b) => a.length - b.length), [[], [id]])

    const bystanderId = await bystander.subscribeConfirmed({ channel: 'BareChannel' })
    await bystander.roundTrip(bystanderId)
    assert.ok(bystander.isOpen, 'connections with other identifiers stay open')
  } finally {
    await server.stop()
  }
})

scenario('a remote disconnect passes reconnect: true on to the client', async () => {
  const server = await startServer({ rpcPort: backend.port })
  try {
    const user = unique('target')
    const client = await RawClient.connect(server.url(), { user })
    await remoteDisconnect(server, identifiersFor(user), { reconnect: true })
    assert.deepEqual(await client.next(), { type: 'disconnect', reason: 'remote', reconnect: true })
    await client.waitForClose()
  } finally {
    await server.stop()
  }
})

scenario('SIGTERM sends server_restart to every client, calls Disconnect for each, and exits 0', async () => {
  const server = await startServer({ rpcPort: backend.port })
  const users = [unique('a'), unique('b')]
  const clients = await Promise.all(users.map((user) => RawClient.connect(server.url(), { user })))
  const id = await clients[0].subscribeConfirmed({ channel: 'ChatChannel', room: unique('room') })

  const status = await server.stop({ timeout: 15000 })
  for (const client of clients) {
    assert.deepEqual(await client.next(), { type: 'disconnect', reason: 'server_restart', reconnect: true })
    await client.waitForClose()
  }
  assert.deepEqual(status, { code: 0, signal: null })
  const [first] = backend.disconnectsFor(users[0])
  const [second] = backend.disconnectsFor(users[1])
  assert.ok(first && second, 'Disconnect was called for every connected client before the process exited')
  assert.deepEqual(first.request.subscriptions, [id])
  assert.deepEqual(second.request.subscriptions, [])
})

scenario('a connection while the gRPC backend is down closes with 1011; the server recovers once it is up', async () => {
  const rpcPort = await freePort()
  const server = await startServer({ rpcPort })
  const late = new Backend(rpcPort)
  try {
    const client = await RawClient.open(server.url(), { user: unique('early') })
    const { code } = await client.waitForClose({ timeout: 20000 })
    assert.equal(code, 1011)
    const health = await fetch(`http://127.0.0.1:${server.port}/health`)
    assert.equal(health.status, 200, 'the server keeps running')

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
    await late.stop()
  }
}, { timeout: 60000 })
