// Public mode (--public): no gRPC backend at all; the server welcomes every client itself, confirms
// $pubsub stream subscriptions itself and accepts broadcasts without a key.
import assert from 'node:assert/strict'
import { after, before } from 'node:test'
import { anycableClient, nextEvent } from '../lib/clients.js'
import { broadcast, scenario, startServer, unique } from '../lib/harness.js'
import { RawClient } from '../lib/raw-client.js'

let server

before(async () => {
  server = await startServer({ publicMode: true })
})

after(async () => {
  await server?.stop()
})

async function publish (stream, data) {
  const res = await broadcast(server, { stream, data }, { key: null })
  assert.equal(res.status, 201, `a keyless broadcast is accepted in public mode (got ${res.status}: ${res.body})`)
}

scenario('public mode welcomes a client without credentials, with a sid, and pings it', async () => {
  const client = await RawClient.open(server.url())
  const welcome = await client.next()
  assert.equal(welcome.type, 'welcome')
  assert.equal(typeof welcome.sid, 'string')
  assert.ok(welcome.sid.length > 0)
  const [ping] = await client.waitForPings(1, { timeout: 4000 })
  assert.ok(Number.isInteger(ping.frame.message))
})

scenario('public mode confirms a $pubsub stream_name subscription and delivers keyless broadcasts to it', async () => {
  const stream = unique('news')
  const client = await RawClient.connect(server.url())
  const id = JSON.stringify({ channel: '$pubsub', stream_name: stream })
  client.send({ command: 'subscribe', identifier: id })
  assert.deepEqual(await client.next(), { identifier: id, type: 'confirm_subscription' })
  await publish(stream, '{"headline":"hi"}')
  assert.deepEqual(await client.next(), { identifier: id, message: { headline: 'hi' } })
  await publish(stream, 'plain text')
  assert.deepEqual(await client.next(), { identifier: id, message: 'plain text' })
})

scenario('public mode: unsubscribing from a $pubsub stream stops its broadcasts', async () => {
  const [gone, kept] = [unique('gone'), unique('kept')]
  const client = await RawClient.connect(server.url())
  const goneId = await client.subscribeConfirmed({ channel: '$pubsub', stream_name: gone })
  const keptId = await client.subscribeConfirmed({ channel: '$pubsub', stream_name: kept })
  client.unsubscribe(goneId)
  // Commands of one connection are handled in order: once a later subscribe is confirmed, the
  // unsubscribe has taken effect.
  await client.subscribeConfirmed({ channel: '$pubsub', stream_name: unique('barrier') })
  await publish(gone, 'after')
  await publish(kept, 'last')
  assert.deepEqual(await client.next(), { identifier: keptId, message: 'last' })
})

scenario('public mode: meta.exclude_socket skips the sender by the sid from welcome', async () => {
  const stream = unique('room')
  const a = await RawClient.connect(server.url())
  const b = await RawClient.connect(server.url())
  const idA = await a.subscribeConfirmed({ channel: '$pubsub', stream_name: stream })
  const idB = await b.subscribeConfirmed({ channel: '$pubsub', stream_name: stream })
  const res = await broadcast(server, { stream, data: 'from a', meta: { exclude_socket: a.sid } }, { key: null })
  assert.equal(res.status, 201)
  assert.deepEqual(await b.next(), { identifier: idB, message: 'from a' })
  await publish(stream, 'to all')
  assert.deepEqual(await a.next(), { identifier: idA, message: 'to all' })
})

scenario('@anycable/core streamFrom receives broadcasts in public mode', async () => {
  const stream = unique('live')
  const cable = anycableClient(server.url(), { user: 'anyone' })
  const channel = cable.streamFrom(stream)
  await channel.ensureSubscribed()
  assert.ok(cable.sessionId, 'the client stored the sid from welcome')
  const received = nextEvent((done) => channel.on('message', done), { what: 'a broadcast on the $pubsub channel' })
  await publish(stream, '{"n":1}')
  assert.deepEqual(await received, { n: 1 })
})
