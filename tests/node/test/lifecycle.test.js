// Server-initiated endings: remote disconnect and graceful shutdown on SIGTERM. Restarts are in
// restart.test.js, backend outages in backend-failures.test.js.
import assert from 'node:assert/strict'
import { after, before } from 'node:test'
import { startBackend, identifiersFor } from '../lib/backend.js'
import { eventually, remoteDisconnect, scenario, startServer, unique } from '../lib/harness.js'
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
