// Reliable streams on two nodes sharing a broker: a client of node 1 loses its connection while broadcasts are
// published to both nodes, comes back through node 2, is restored there from the shared session cache and
// catches up from the shared history: every message once, in offset order whichever node registered it. Once with broker=redis (pub/sub over
// Redis), once with broker=nats (JetStream; pub/sub over NATS), with real engines and the real @anycable/core.
import assert from 'node:assert/strict'
import { after, before, describe } from 'node:test'
import { startBackend } from '../lib/backend.js'
import { extClient, nextEvent } from '../lib/clients.js'
import { startNats, startRedis } from '../lib/engines.js'
import { broadcastOk, eventually, scenario, startServer, unique } from '../lib/harness.js'

const ENGINES = {
  redis: { start: startRedis, args: (url) => ['--broker', 'redis', '--pubsub', 'redis', '--redis_url', url] },
  nats: { start: startNats, args: (url) => ['--broker', 'nats', '--pubsub', 'nats', '--nats_servers', url] }
}

for (const [name, engine] of Object.entries(ENGINES)) {
  describe(`reliable streams on two nodes: ${name}`, () => {
    let backend, server, nodes

    before(async () => {
      server = await engine.start()
      backend = await startBackend()
      nodes = [
        await startServer({ rpcPort: backend.port, args: engine.args(server.url) }),
        await startServer({ rpcPort: backend.port, args: engine.args(server.url) })
      ]
    })

    after(async () => {
      for (const node of nodes ?? []) await node.stop()
      await backend?.stop()
      server?.stop()
    })

    scenario(`${name}: a client moving from node 1 to node 2 is restored there and misses nothing, twice nothing`, async () => {
      const [one, two] = nodes
      const user = unique('user')
      const room = unique('room')
      const stream = `chat_${room}`
      const { cable, kill, moveTo } = extClient(one.url(), { cookie: `user=${user}` })
      const channel = cable.subscribeTo('ChatChannel', { room })
      const texts = []
      const offsets = []
      let warmedUp = false
      channel.on('message', (message, meta) => {
        if (message.text.startsWith('warmup')) warmedUp = true
        else {
          texts.push(message.text)
          offsets.push(meta.offset)
        }
      })
      await channel.ensureSubscribed()
      // The pub/sub of both nodes is up once node 2's broadcasts reach the client on node 1.
      await eventually(async () => {
        await broadcastOk(two, { stream, data: JSON.stringify({ text: 'warmup' }) })
        return warmedUp
      }, { timeout: 15000, what: 'delivery across the nodes' })
      await broadcastOk(one, { stream, data: JSON.stringify({ text: 'live-1' }) })
      await eventually(() => texts.includes('live-1'), { what: 'the first message' })

      moveTo(`${two.host}:${two.port}`)
      const reconnected = nextEvent((cb) => cable.once('connect', cb), { timeout: 10000, what: 'the reconnect to node 2' })
      kill()
      const missed = Array.from({ length: 6 }, (_, n) => `missed-${n + 1}`)
      for (const [n, text] of missed.entries()) {
        await broadcastOk(n % 2 ? two : one, { stream, data: JSON.stringify({ text }) })
      }
      assert.equal((await reconnected).restored, true, 'restored on node 2 from the shared cache')
      await broadcastOk(one, { stream, data: JSON.stringify({ text: 'live-2' }) })
      await eventually(() => texts.includes('live-2'), { what: 'the live message after the move' })
      // Each once. Two nodes register concurrently, so the offsets (and the order clients see) follow
      // registration: in publishing order for each node, interleaved between them.
      assert.deepEqual([...texts].sort(), ['live-1', ...missed, 'live-2'].sort())
      assert.deepEqual(offsets, [...offsets].sort((a, b) => a - b), 'offset order')
      assert.equal(new Set(offsets).size, offsets.length)
      for (const node of [0, 1]) {
        const fromNode = missed.filter((_, n) => n % 2 === node)
        assert.deepEqual(texts.filter((t) => fromNode.includes(t)), fromNode, `node ${node + 1}'s order`)
      }
      assert.equal(backend.callsOf('Connect').length, 1, 'no second Connect')
      assert.equal(backend.commandsFor(user, (r) => r.command === 'subscribe').length, 1, 'no second Subscribe')
    }, { timeout: 60000 })
  })
}
