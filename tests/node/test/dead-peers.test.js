// Dead peers: a client whose network vanished (no close frame, no FIN, no RST) is noticed within the bound
// documented in docs/reliability.md, its session ends and its Disconnect call runs. The client lives in a
// network namespace joined to the host by a veth pair, and the test pulls the cable (lib/netns.js).
import assert from 'node:assert/strict'
import { after, before } from 'node:test'
import { fileURLToPath } from 'node:url'
import { startBackend, identifiersFor } from '../lib/backend.js'
import { eventually, scenario, startServer, unique } from '../lib/harness.js'
import { cableNetwork } from '../lib/netns.js'
import { RawClient } from '../lib/raw-client.js'

const CLIENT_PATH = fileURLToPath(new URL('../lib/netns-client.js', import.meta.url))

let backend

before(async () => {
  backend = await startBackend()
})

after(async () => {
  await backend?.stop()
})

/** Starts a client in the namespace; resolves with its sid and channel identifier once it is subscribed. */
function clientInNamespace (network, url, { user, room }) {
  const child = network.spawn(process.execPath, [CLIENT_PATH, url, user, room], { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  let errors = ''
  child.stderr.on('data', (chunk) => { errors += chunk })
  return new Promise((resolve, reject) => {
    child.stdout.on('data', (chunk) => {
      output += chunk
      if (output.includes('\n')) resolve({ user, ...JSON.parse(output.split('\n')[0]) })
    })
    child.once('exit', (code) => reject(new Error(`the client in the namespace exited with ${code}: ${errors}`)))
  })
}

async function clientsNum (server) {
  const res = await fetch(`http://${server.host}:${server.port}/metrics`)
  const line = (await res.text()).split('\n').find((l) => l.startsWith('anycable_go_clients_num '))
  return Number(line.split(' ')[1])
}

// The harness pings every second and dead_peer_timeout is left at its default, max(3 × 1 s, 10 s) = 10 s.
// A pinged client is dropped once a ping stays unacknowledged that long (so within ping_interval + 10 s of
// vanishing); one that asked for no pings (pi=3600) once keepalive probes 5 s, 7 s, 9 s, 11 s into the silence
// have gone unanswered for 10 s.
const DEAD_PEER_TIMEOUT_MS = 10000
const PING_INTERVAL_MS = 1000
const MARGIN_MS = 4000

scenario('a client whose cable is pulled is dropped within ping_interval + dead_peer_timeout and its Disconnect runs', async (t) => {
  const network = await cableNetwork()
  const server = await startServer({ rpcPort: backend.port, host: network.hostAddress, args: ['--metrics_http', '/metrics'] })
  try {
    const room = unique('room')
    const [pinged, silent] = await Promise.all([
      clientInNamespace(network, server.url(), { user: unique('pinged'), room }),
      clientInNamespace(network, server.url({ pi: '3600' }), { user: unique('silent'), room })
    ])
    // A client on this host (its traffic never crosses the link) must be left alone.
    const bystanderUser = unique('bystander')
    const bystander = await RawClient.connect(server.url(), { user: bystanderUser })
    const bystanderId = await bystander.subscribeConfirmed({ channel: 'BareChannel' })
    assert.equal(await clientsNum(server), 3)

    const pulled = Date.now()
    await network.pullCable()
    const gone = await eventually(() => {
      const calls = [pinged, silent].map((c) => backend.disconnectsFor(c.user)[0])
      return calls.every(Boolean) && calls
    }, { timeout: PING_INTERVAL_MS + DEAD_PEER_TIMEOUT_MS * 1.25 + MARGIN_MS, interval: 100, what: 'Disconnect for both vanished clients' })

    for (const [client, call] of [[pinged, gone[0]], [silent, gone[1]]]) {
      const after = call.at - pulled
      t.diagnostic(`${client.user.split('-')[0]} client: Disconnect ${after} ms after the cable was pulled`)
      // Not before the timeout: a peer that is only briefly unreachable is not given up on.
      assert.ok(after >= DEAD_PEER_TIMEOUT_MS - 1000, `${client.user} dropped after only ${after} ms`)
      assert.equal(call.sid, client.sid)
      assert.equal(call.request.identifiers, identifiersFor(client.user))
      assert.deepEqual(call.request.subscriptions, [client.identifier])
    }
    const pingedAfter = gone[0].at - pulled
    assert.ok(pingedAfter <= PING_INTERVAL_MS + DEAD_PEER_TIMEOUT_MS + MARGIN_MS, `the pinged client was dropped ${pingedAfter} ms after the cable was pulled`)

    await eventually(async () => (await clientsNum(server)) === 1, { what: 'clients_num to drop to the bystander alone' })
    await bystander.roundTrip(bystanderId)
    assert.equal(backend.disconnectsFor(bystanderUser).length, 0)
  } finally {
    await server.stop()
  }
}, { timeout: 60000 })
