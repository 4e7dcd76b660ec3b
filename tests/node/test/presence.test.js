// Presence tracking with the real @anycable/core client (actioncable-v1-ext-json): members join and leave a
// stream's presence set (channel.presence.join / leave / info), watchers receive join and leave events, a client
// killed without closing leaves only after presence_ttl, and a restored session keeps its membership. The same
// scenarios on one node with the memory broker, and on two nodes sharing a Redis broker or a NATS JetStream broker
// (members on one node, watchers on the other), where the members of a node killed outright leave after presence_ttl
// too; bad input from a raw client on each of them: refused with a reason, nothing changes. Then a flood of presence commands, cut to the rate without disturbing others. Presence for
// channels (the Command answer's presence, Node's Channel, Rails' join_presence): presence-deployments.test.js.
import assert from 'node:assert/strict'
import { after, before, describe } from 'node:test'
import { extClient, nextEvent } from '../lib/clients.js'
import { startNats, startRedis } from '../lib/engines.js'
import { eventually, scenario, startServer, unique } from '../lib/harness.js'
import { RawClient } from '../lib/raw-client.js'

const TTL = 2

const DEPLOYMENTS = {
  'one node, memory broker': {
    async start () {
      const node = await startServer({ publicMode: true, args: ['--broker', 'memory', '--presence_ttl', String(TTL)] })
      return { nodes: [node, node], stop: () => node.stop() }
    }
  },
  'two nodes, redis broker': twoNodes(startRedis, (url) => ['--broker', 'redis', '--pubsub', 'redis', '--redis_url', url],
    [/Redis pub\/sub publisher .* connected/, /Redis pub\/sub subscriber .* connected/]),
  'two nodes, nats broker': twoNodes(startNats, (url) => ['--broker', 'nats', '--pubsub', 'nats', '--nats_servers', url],
    [/NATS pub\/sub .* connected/])
}

/**
 * Two nodes sharing one engine (started by `startEngine`) as their broker and pub/sub, started once each has logged
 * the `connected` lines of its pub/sub: an event published before the other node listens would reach nobody there.
 */
function twoNodes (startEngine, engineArgs, connectedLogs) {
  return {
    cluster: true,
    async start () {
      const engine = await startEngine()
      const args = [...engineArgs(engine.url), '--presence_ttl', String(TTL)]
      const nodes = []
      async function startNode () {
        const node = await startServer({ publicMode: true, args })
        nodes.push(node)
        for (const line of connectedLogs) await node.waitForLog(line)
        return node
      }
      await startNode()
      await startNode()
      return {
        nodes: nodes.slice(),
        startNode,
        async stop () {
          for (const node of nodes) await node.stop()
          engine.stop()
        }
      }
    }
  }
}

/** A stream subscription of an extended client on `node`, with every presence event it receives. */
async function member (node, stream) {
  const client = extClient(node.url())
  const channel = client.cable.streamFrom(stream)
  const events = []
  channel.on('presence', (event) => events.push(event))
  await channel.ensureSubscribed()
  return { ...client, channel, events }
}

/** Waits until the watcher has seen `type` for `id`. */
function sawEvent (watcher, type, id, options = {}) {
  return eventually(() => watcher.events.some((e) => e.type === type && e.id === id), { what: `${type} of ${id}`, ...options })
}

/**
 * A watcher on node two and a member on node one of a new stream; the member has joined as `id` once the watcher
 * saw it (the pub/sub between two nodes may need a moment after the subscriptions).
 */
async function watchedMember ([one, two], id) {
  const stream = unique('room')
  const watcher = await member(two, stream)
  const joined = await member(one, stream)
  await joined.channel.presence.join(id, { name: id })
  await sawEvent(watcher, 'join', id, { timeout: 10000 })
  return { stream, watcher, joined }
}

/** The presence set as a fresh subscriber on `node` reads it with presence.info(). */
async function freshInfo (node, stream) {
  const reader = await member(node, stream)
  return reader.channel.presence.info()
}

for (const [name, deployment] of Object.entries(DEPLOYMENTS)) {
  describe(`presence: ${name}`, () => {
    let started

    before(async () => {
      started = await deployment.start()
    })

    after(async () => {
      await started?.stop()
    })

    scenario('two clients join, a third sees both in info() and their join and leave events', async () => {
      const [one, two] = started.nodes
      const stream = unique('room')
      const watcher = await member(two, stream)
      const ann = await member(one, stream)
      const bob = await member(one, stream)
      // The pub/sub between two nodes may need a moment after the subscription: join once it delivers.
      await ann.channel.presence.join('ann', { name: 'Ann' })
      await sawEvent(watcher, 'join', 'ann', { timeout: 10000 })
      await bob.channel.presence.join(42, { name: 'Bob' })
      await sawEvent(watcher, 'join', '42')
      assert.deepEqual(watcher.events.find((e) => e.id === 'ann'), { type: 'join', id: 'ann', info: { name: 'Ann' } })
      assert.deepEqual(await freshInfo(two, stream), { ann: { name: 'Ann' }, 42: { name: 'Bob' } })
      assert.deepEqual(await watcher.channel.presence.info(), { ann: { name: 'Ann' }, 42: { name: 'Bob' } })

      // A second session under the same id is the same member: no second join, and no leave when one goes.
      const annAgain = await member(one, stream)
      await annAgain.channel.presence.join('ann', { name: 'Ann' })
      // join() resolves once sent; the answer to info() on the same connection comes after the join is applied.
      assert.deepEqual(Object.keys(await annAgain.channel.presence.info()).sort(), ['42', 'ann'])
      await ann.channel.presence.leave()
      await bob.channel.presence.leave()
      await sawEvent(watcher, 'leave', '42')
      assert.deepEqual(watcher.events.filter((e) => e.id === 'ann').map((e) => e.type), ['join'], 'ann is still there')
      assert.deepEqual(await freshInfo(two, stream), { ann: { name: 'Ann' } })
      // Unsubscribing leaves too.
      annAgain.channel.disconnect()
      await sawEvent(watcher, 'leave', 'ann')
      assert.deepEqual(await freshInfo(one, stream), {})
    })

    scenario('a client killed without closing leaves after presence_ttl, not before', async () => {
      const [, two] = started.nodes
      const { stream, watcher, joined: gone } = await watchedMember(started.nodes, 'gone')
      const killedAt = Date.now()
      gone.kill()
      gone.cable.disconnect()
      await sawEvent(watcher, 'leave', 'gone', { timeout: (TTL + 5) * 1000 })
      const after = Date.now() - killedAt
      assert.ok(after >= TTL * 1000 - 200, `left ${after} ms after the kill, before presence_ttl`)
      assert.deepEqual(await freshInfo(two, stream), {})
    }, { timeout: 30000 })

    if (deployment.cluster) {
      scenario('the members of a node that dies leave after presence_ttl, swept by the nodes still up', async () => {
        const [, two] = started.nodes
        const doomed = await started.startNode()
        const { stream, watcher } = await watchedMember([doomed, two], 'orphan')
        const killedAt = Date.now()
        doomed.child.kill('SIGKILL')
        await doomed.exited
        await sawEvent(watcher, 'leave', 'orphan', { timeout: (TTL + 5) * 1000 })
        const after = Date.now() - killedAt
        assert.ok(after >= TTL * 1000 - 200, `left ${after} ms after the node died, before presence_ttl`)
        assert.deepEqual(await freshInfo(two, stream), {})
      }, { timeout: 30000 })
    }

    scenario('join without a subscription, without presence, with a wrong id or oversized info: refused, nothing changes', () =>
      refusedJoins(started.nodes[0]))

    scenario('a restored session keeps its membership: no leave, still in info()', async () => {
      const [one, two] = started.nodes
      const { stream, watcher, joined: staying } = await watchedMember(started.nodes, 'stay')
      // The connection drops; the client comes back (through the other node when there are two) and is restored.
      staying.moveTo(`${two.host}:${two.port}`)
      const reconnected = nextEvent((cb) => staying.cable.once('connect', cb), { timeout: 10000, what: 'the reconnect' })
      staying.kill()
      assert.equal((await reconnected).restored, true, 'restored from the session cache')
      await new Promise((resolve) => setTimeout(resolve, (TTL + 2) * 1000))
      assert.deepEqual(watcher.events.filter((e) => e.id === 'stay').map((e) => e.type), ['join'], 'no leave, no second join')
      assert.deepEqual(await freshInfo(one, stream), { stay: { name: 'stay' } })
      // And it still leaves for real.
      await staying.channel.presence.leave()
      await sawEvent(watcher, 'leave', 'stay')
    }, { timeout: 30000 })
  })
}

/** A raw extended client subscribed to a `$pubsub` stream on `server`, with its subscription's identifier. */
async function rawMember (server, stream) {
  const client = await RawClient.connect(server.url(), { protocols: ['actioncable-v1-ext-json'] })
  const identifier = await client.subscribeConfirmed({ channel: '$pubsub', stream_name: stream })
  return { client, identifier }
}

/** The presence set as the raw client's `presence` command reads it. */
async function info (client, identifier) {
  client.send({ command: 'presence', identifier, data: {} })
  const frame = await client.waitFor((f) => f.type === 'presence' && f.identifier === identifier && f.message.type !== 'join' && f.message.type !== 'leave')
  return frame.message
}

/** Bad joins on `server`: each refused with a reason in the log, nothing changes, a valid join still works. */
async function refusedJoins (server) {
  const stream = unique('room')
  const { client, identifier } = await rawMember(server, stream)
  const other = JSON.stringify({ channel: '$pubsub', stream_name: unique('elsewhere') })
  client.send({ command: 'join', identifier: other, presence: { id: 'x' } })
  client.send({ command: 'join', identifier })
  client.send({ command: 'join', identifier, presence: { id: 7, info: {} } })
  client.send({ command: 'join', identifier, presence: { id: ['x'] } })
  client.send({ command: 'join', identifier, presence: { id: '' } })
  client.send({ command: 'join', identifier, presence: { id: 'big', info: { blob: 'x'.repeat(5000) } } })
  client.send({ command: 'join', identifier, presence: { id: 'x'.repeat(300) } })
  client.send({ command: 'presence', identifier: other })
  const refused = await client.waitFor((f) => f.type === 'presence' && f.identifier === other)
  assert.deepEqual(refused.message, { type: 'error' }, 'info of an unknown subscription is an error')
  assert.deepEqual(await info(client, identifier), { type: 'info', total: 0, records: [] })
  assert.ok(client.isOpen, 'the connection stays open')
  assert.equal(client.inbox.filter((f) => f.type === 'presence').length, 0, 'no event went out')
  // A valid join still works on the same connection.
  client.send({ command: 'join', identifier, presence: { id: 'fine', info: { ok: true } } })
  await client.waitFor((f) => f.type === 'presence' && f.message.type === 'join' && f.message.id === 'fine')
  assert.deepEqual(await info(client, identifier), { type: 'info', total: 1, records: [{ id: 'fine', info: { ok: true } }] })
  // Joining as another id while present is refused.
  client.send({ command: 'join', identifier, presence: { id: 'other' } })
  assert.deepEqual((await info(client, identifier)).records, [{ id: 'fine', info: { ok: true } }])
  for (const reason of ['unknown subscription', 'id must be a string', 'join needs presence', 'larger than 4096 bytes', 'at most 256 bytes', 'leave before joining as another id']) {
    await server.waitForLog(new RegExp(reason), { what: `the log saying why: ${reason}` })
  }
}

describe('presence: a flood of commands (memory broker)', () => {
  let server

  before(async () => {
    server = await startServer({ publicMode: true, args: ['--broker', 'memory', '--presence_ttl', String(TTL)] })
  })

  after(async () => {
    await server?.stop()
  })

  scenario('a flood of join and leave is cut to the presence rate; others are not disturbed', async () => {
    const stream = unique('room')
    const watcher = await rawMember(server, stream)
    const { client, identifier } = await rawMember(server, stream)
    for (let n = 0; n < 200; n++) {
      client.send(n % 2 === 0 ? { command: 'join', identifier, presence: { id: 'flood' } } : { command: 'leave', identifier })
    }
    const start = await info(watcher.client, watcher.identifier)
    assert.ok(start.total <= 1)
    // The watcher received at most the burst of changes, not 200 events.
    await new Promise((resolve) => setTimeout(resolve, 500))
    const events = watcher.client.inbox.filter((f) => f.type === 'presence')
    assert.ok(events.length <= 12, `${events.length} events reached the watcher`)
    await server.waitForLog(/presence commands per second/)
    assert.ok(client.isOpen && watcher.client.isOpen)
    // Another member is served as usual.
    const calm = await rawMember(server, stream)
    calm.client.send({ command: 'join', identifier: calm.identifier, presence: { id: 'calm' } })
    await watcher.client.waitFor((f) => f.type === 'presence' && f.message.id === 'calm')
  })
})
