// Connection lifecycle against the RPC backend (gRPC, or HTTP RPC with FERROCABLE_RPC_BACKEND=http): Connect
// outcomes, what Connect and Command receive, pings and sub-protocol negotiation.
import assert from 'node:assert/strict'
import { after, before } from 'node:test'
import { startRpcBackend, identifiersFor } from '../lib/backend.js'
import { scenario, startServer, unique } from '../lib/harness.js'
import { RawClient, ACTION_CABLE_JSON } from '../lib/raw-client.js'

let backend
let server

before(async () => {
  backend = await startRpcBackend()
  server = await startServer({ args: [...backend.serverArgs, '--headers', 'cookie,x-api-token'] })
})

after(async () => {
  await server?.stop()
  await backend?.stop()
})

scenario('an authenticated connection gets the welcome frame from Connect, carrying the sid sent as gRPC metadata', async () => {
  const user = unique('alice')
  const client = await RawClient.open(server.url(), { user })
  const welcome = await client.next()
  assert.equal(welcome.type, 'welcome')
  assert.equal(typeof welcome.sid, 'string')
  assert.ok(welcome.sid.length > 0, 'the server sends a non-empty sid with Connect')
  const [connect] = backend.callsOf('Connect', (r) => r.env.headers.cookie === `user=${user}`)
  assert.ok(connect, 'Connect was called')
  assert.equal(connect.sid, welcome.sid)
  assert.ok(client.isOpen)
})

scenario('every connection gets its own sid', async () => {
  const a = await RawClient.connect(server.url(), { user: unique('a') })
  const b = await RawClient.connect(server.url(), { user: unique('b') })
  assert.notEqual(a.sid, b.sid)
})

scenario('a connection without credentials gets the unauthorized frame, then a normal close', async () => {
  const client = await RawClient.open(server.url())
  assert.deepEqual(await client.next(), backend.unauthorizedFrame)
  const { code } = await client.waitForClose()
  assert.equal(code, 1000)
})

scenario('a connection the backend rejects (FAILURE) gets the unauthorized frame, then a normal close', async () => {
  const client = await RawClient.open(server.url(), { user: 'bad' })
  assert.deepEqual(await client.next(), backend.unauthorizedFrame)
  const { code } = await client.waitForClose()
  assert.equal(code, 1000)
  assert.deepEqual(client.inbox, [], 'nothing follows the unauthorized frame')
})

scenario('Connect answering ERROR closes the socket with close code 1011', async () => {
  const client = await RawClient.open(server.url(), { user: 'boom' })
  const { code } = await client.waitForClose()
  assert.equal(code, 1011)
  const ok = await RawClient.connect(server.url(), { user: unique('after-error') })
  assert.ok(ok.isOpen, 'the server keeps accepting connections')
})

scenario('Connect receives the full URL with its query and only the configured headers, lower-cased', async () => {
  const user = unique('headers')
  const client = await RawClient.connect(server.url({ token: 'abc', lang: 'en' }), {
    user,
    headers: { Cookie: 'theme=dark', 'X-Api-Token': 'secret-token', 'X-Other-Header': 'not forwarded' }
  })
  const [connect] = backend.callsOf('Connect', (r) => (r.env.headers.cookie || '').includes(`user=${user}`))
  assert.ok(connect, 'Connect was called')
  const env = connect.request.env
  assert.equal(env.url, `http://127.0.0.1:${server.port}/cable?token=abc&lang=en`)
  assert.equal(env.headers.cookie, `user=${user}; theme=dark`)
  assert.equal(env.headers['x-api-token'], 'secret-token')
  assert.equal(env.headers['x-other-header'], undefined)
  assert.equal(env.headers['X-Api-Token'], undefined, 'header names are lower-cased')
  assert.ok(client.isOpen)
})

scenario('Command carries the connection identifiers, the URL, the headers and the cstate from Connect', async () => {
  const user = unique('command-env')
  const client = await RawClient.connect(server.url({ q: '1' }), { user, headers: { 'X-Api-Token': 't1' } })
  const id = await client.subscribeConfirmed({ channel: 'ChatChannel', room: unique('room') })
  const [subscribe] = backend.commandsFor(user)
  assert.equal(subscribe.request.command, 'subscribe')
  assert.equal(subscribe.request.identifier, id)
  assert.equal(subscribe.request.connection_identifiers, identifiersFor(user))
  assert.equal(subscribe.request.env.url, `http://127.0.0.1:${server.port}/cable?q=1`)
  assert.equal(subscribe.request.env.headers.cookie, `user=${user}`)
  assert.equal(subscribe.request.env.headers['x-api-token'], 't1')
  assert.equal(subscribe.request.env.cstate.user, user)
  assert.equal(subscribe.sid, client.sid, 'the sid travels with every call')
})

scenario('pings follow the welcome every ping_interval with increasing unix-second values', async () => {
  const client = await RawClient.connect(server.url(), { user: unique('pings') })
  const pings = await client.waitForPings(3, { timeout: 6000 })
  const values = pings.map((p) => p.frame.message)
  for (const [i, ping] of pings.entries()) {
    assert.deepEqual(Object.keys(ping.frame).sort(), ['message', 'type'])
    assert.ok(Number.isInteger(ping.frame.message), `ping message is an integer: ${ping.frame.message}`)
    assert.ok(Math.abs(ping.frame.message - Date.now() / 1000) < 5, 'ping message is the current unix time in seconds')
    if (i > 0) assert.ok(values[i] > values[i - 1], `ping values increase: ${values}`)
  }
  const gap = pings[2].at - pings[1].at
  assert.ok(gap > 600 && gap < 1600, `pings are ~1 s apart with --ping_interval 1 (saw ${gap} ms)`)
})

scenario('the pi query parameter sets the ping interval of that connection', async () => {
  const client = await RawClient.connect(server.url({ pi: '2' }), { user: unique('pi') })
  const pings = await client.waitForPings(3, { timeout: 8000 })
  const gap = pings[2].at - pings[1].at
  assert.ok(gap > 1600 && gap < 2600, `pings are ~2 s apart with pi=2 (saw ${gap} ms)`)
  assert.ok(pings[2].frame.message - pings[1].frame.message >= 1)
})

scenario('the ptp=ms query parameter sends ping timestamps in milliseconds', async () => {
  const client = await RawClient.connect(server.url({ ptp: 'ms' }), { user: unique('ptp') })
  const [ping] = await client.waitForPings(1, { timeout: 4000 })
  assert.ok(Number.isInteger(ping.frame.message))
  assert.ok(Math.abs(ping.frame.message - Date.now()) < 5000, `ping message is unix time in ms: ${ping.frame.message}`)
})

scenario('a client offering actioncable-v1-json gets that sub-protocol', async () => {
  const client = await RawClient.connect(server.url(), { user: unique('proto'), protocols: [ACTION_CABLE_JSON] })
  assert.equal(client.protocol, ACTION_CABLE_JSON)
})

scenario('a client offering an unknown sub-protocol first still gets actioncable-v1-json', async () => {
  const client = await RawClient.connect(server.url(), { user: unique('proto'), protocols: ['made-up-protocol', ACTION_CABLE_JSON, 'actioncable-unsupported'] })
  assert.equal(client.protocol, ACTION_CABLE_JSON)
})

scenario('a client offering no sub-protocol is served Action Cable JSON', async () => {
  const client = await RawClient.connect(server.url(), { user: unique('noproto'), protocols: [] })
  assert.equal(client.protocol, '')
  const id = await client.subscribeConfirmed({ channel: 'ChatChannel', room: unique('room') })
  const echo = await client.roundTrip(id)
  assert.equal(echo.identifier, id)
})

scenario('a client closing its socket makes the server call Disconnect with its identifiers', async () => {
  const user = unique('bye')
  const client = await RawClient.connect(server.url(), { user })
  client.close()
  const disconnect = await backend.waitForCall('Disconnect', (r) => r.identifiers === identifiersFor(user))
  assert.deepEqual(disconnect.subscriptions, [])
  assert.equal(disconnect.env.url, `http://127.0.0.1:${server.port}/cable`)
  assert.equal(disconnect.env.cstate.user, user)
})
