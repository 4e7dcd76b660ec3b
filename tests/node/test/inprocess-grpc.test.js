// The same Server class without handlers: with rpcHost it is the gRPC fallback, talking AnyCable's RPC to
// the @grpc/grpc-js backend of lib/backend.js (which loads proto/rpc.proto); with `public` it needs none.
import assert from 'node:assert/strict'
import { after, before } from 'node:test'
import { Server } from 'ferrocable'
import { identifiersFor, startBackend } from '../lib/backend.js'
import { anycableClient, nextEvent } from '../lib/clients.js'
import { onScenarioEnd, scenario, unique } from '../lib/harness.js'
import { RawClient } from '../lib/raw-client.js'

let backend

before(async () => {
  backend = await startBackend()
})

after(async () => {
  await backend?.stop()
})

async function startServer (options) {
  const server = new Server({ host: '127.0.0.1', port: 0, httpBroadcastPort: 0, logLevel: 'warn', ...options })
  await server.start()
  onScenarioEnd(() => server.stop())
  return server
}

scenario('gRPC fallback: without handlers the Server calls Connect, Command and Disconnect over gRPC', async () => {
  const server = await startServer({ rpcHost: `127.0.0.1:${backend.port}` })
  const user = unique('grpc')
  const room = unique('room')
  const client = await RawClient.connect(server.address.url, { user })
  const [connect] = backend.callsOf('Connect', (r) => r.env.headers.cookie === `user=${user}`)
  assert.equal(connect.sid, client.sid, 'the sid travels as gRPC metadata')
  const id = await client.subscribeConfirmed({ channel: 'ChatChannel', room })
  await server.broadcast(`chat_${room}`, { via: 'server.broadcast' })
  assert.deepEqual(await client.next(), { identifier: id, message: { via: 'server.broadcast' } })
  client.perform(id, 'echo', { text: 'over grpc' })
  assert.deepEqual(await client.next(), { identifier: id, message: { action: 'echo', text: 'over grpc' } })
  assert.equal(server.disconnect(identifiersFor(user), { reconnect: false }), 1)
  assert.deepEqual(await client.next(), { type: 'disconnect', reason: 'remote', reconnect: false })
  const disconnect = await backend.waitForCall('Disconnect', (r) => r.identifiers === identifiersFor(user))
  assert.deepEqual(disconnect.subscriptions, [id])
  assert.ok(server.stats().rpcCallTotal >= 4)
})

scenario('gRPC fallback: stop() flushes the pending Disconnect calls to the backend', async () => {
  const server = await startServer({ rpcHost: `127.0.0.1:${backend.port}` })
  const user = unique('grpc-stop')
  const client = await RawClient.connect(server.address.url, { user })
  await server.stop()
  assert.deepEqual(await client.next(), { type: 'disconnect', reason: 'server_restart', reconnect: true })
  assert.equal(backend.disconnectsFor(user).length, 1, 'Disconnect was called before stop() resolved')
})

scenario('gRPC fallback: a rejected connection gets the unauthorized frame from the backend', async () => {
  const server = await startServer({ rpcHost: `127.0.0.1:${backend.port}` })
  const client = await RawClient.open(server.address.url, { user: 'bad' })
  assert.deepEqual(await client.next(), { type: 'disconnect', reason: 'unauthorized', reconnect: false })
  assert.equal((await client.waitForClose()).code, 1000)
})

scenario('public mode without handlers: $pubsub streams work with @anycable/core and server.broadcast', async () => {
  const server = await startServer({ public: true, norpc: true })
  const stream = unique('live')
  const cable = anycableClient(server.address.url, { user: 'anyone' })
  const channel = cable.streamFrom(stream)
  await channel.ensureSubscribed()
  const received = nextEvent((done) => channel.on('message', done), { what: 'a broadcast on the $pubsub channel' })
  await server.broadcast(stream, { n: 1 })
  assert.deepEqual(await received, { n: 1 })
})
