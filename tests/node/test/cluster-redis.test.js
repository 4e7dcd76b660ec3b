// Two in-process Node servers in one process form a cluster over a real Redis (redis-server started here on a
// free port): the options pass through by name (pubsub, redisUrl, broadcastAdapter), a broadcast accepted by
// one server reaches clients of the other exactly once, and a remote disconnect reaches every server.
import assert from 'node:assert/strict'
import { after, before } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { BROADCAST_KEY, identifiersFor, startInProcess } from '../lib/inprocess-app.js'
import { startRedis } from '../lib/engines.js'
import { eventually, scenario, unique } from '../lib/harness.js'
import { RawClient } from '../lib/raw-client.js'

let redis
let redisUrl

before(async () => {
  redis = await startRedis()
  redisUrl = redis.url
})

after(() => {
  redis?.stop()
})

function clusterNode () {
  return startInProcess({ options: { pubsub: 'redis', redisUrl, broadcastAdapter: ['http', 'redis'] } })
}

async function listener (node, room, user = unique('user')) {
  const client = await RawClient.connect(node.url(), { user })
  const id = await client.subscribeConfirmed({ channel: 'ChatChannel', room })
  return { client, id, user }
}

/** Broadcasts warm-ups through `via` until `client` (on another node) receives one; then forgets them. */
async function untilConnected (via, stream, client) {
  await eventually(async () => {
    await via.broadcast(stream, { warmup: true })
    await sleep(100)
    return client.inbox.some((f) => f.message && f.message.warmup)
  }, { timeout: 15000, what: 'cross-node delivery over Redis' })
  await sleep(300)
}

function numbers (client, id) {
  return client.inbox.filter((f) => f.identifier === id && f.message && !f.message.warmup).map((f) => f.message.n)
}

scenario('cluster over Redis: broadcasts accepted by either Node server reach clients of both, once and in order', async () => {
  const a = await clusterNode()
  const b = await clusterNode()
  const room = unique('room')
  const onA = await listener(a, room)
  const onB = await listener(b, room)
  await untilConnected(b, `chat_${room}`, onA.client)
  for (let n = 0; n < 10; n++) await b.broadcast(`chat_${room}`, { n })
  const response = await fetch(b.server.address.broadcastUrl, {
    method: 'POST',
    headers: { authorization: `Bearer ${BROADCAST_KEY}` },
    body: JSON.stringify([10, 11, 12].map((n) => ({ stream: `chat_${room}`, data: JSON.stringify({ n }) })))
  })
  assert.equal(response.status, 201)
  await a.server.broadcastMany([13, 14].map((n) => ({ stream: `chat_${room}`, data: { n } })))
  const expected = Array.from({ length: 15 }, (_, n) => n)
  await eventually(() => numbers(onA.client, onA.id).length >= 15 && numbers(onB.client, onB.id).length >= 15, { what: '15 messages on each node' })
  await sleep(300)
  // Publications of one server arrive in its order; the two servers' batches may interleave.
  const fromB = (list) => list.filter((n) => n < 13)
  for (const { client, id } of [onA, onB]) {
    assert.deepEqual([...numbers(client, id)].sort((x, y) => x - y), expected, 'each message exactly once')
    assert.deepEqual(fromB(numbers(client, id)), expected.slice(0, 13), 'in order from one publisher')
  }
  assert.equal(a.server.stats().pubsubLostTotal, 0)
  assert.ok(a.server.stats().pubsubReceivedTotal >= 10)
})

scenario('cluster over Redis: a remote disconnect on one Node server closes the user on the other', async () => {
  const a = await clusterNode()
  const b = await clusterNode()
  const room = unique('room')
  const user = unique('user')
  const onA = await listener(a, room, user)
  await untilConnected(b, `chat_${room}`, onA.client)
  assert.equal(b.server.disconnect(identifiersFor(user), { reconnect: false }), 0, 'nobody of that user on B')
  const closing = await onA.client.waitFor((f) => f.type === 'disconnect')
  assert.deepEqual(closing, { type: 'disconnect', reason: 'remote', reconnect: false })
  assert.equal((await onA.client.closed).code, 1000)
})
