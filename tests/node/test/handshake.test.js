// Checks made at the WebSocket upgrade: the Origin (--allowed_origins) and the paths (--path).
import assert from 'node:assert/strict'
import { after, before } from 'node:test'
import { startBackend } from '../lib/backend.js'
import { scenario, startServer, unique } from '../lib/harness.js'
import { RawClient, tryUpgrade } from '../lib/raw-client.js'

let backend
let server

before(async () => {
  backend = await startBackend()
  server = await startServer({ rpcPort: backend.port, args: ['--allowed_origins', 'example.com,*.example.org', '--path', '/cable,/ws'] })
})

after(async () => {
  await server?.stop()
  await backend?.stop()
})

scenario('an Origin not in allowed_origins is refused at upgrade with HTTP 403, logged, and never reaches Connect', async () => {
  const user = unique('intruder')
  const result = await tryUpgrade(server.url(), { origin: 'http://evil.test', headers: { cookie: `user=${user}` } })
  assert.equal(result.status, 403)
  await server.waitForLog(/origin/i)
  assert.deepEqual(backend.callsOf('Connect', (r) => r.env.headers.cookie === `user=${user}`), [])
})

scenario('an Origin whose host only ends like an allowed one is refused', async () => {
  const result = await tryUpgrade(server.url(), { origin: 'http://notexample.com', headers: { cookie: `user=${unique('x')}` } })
  assert.equal(result.status, 403)
})

scenario('an Origin matching allowed_origins connects', async () => {
  const client = await RawClient.connect(server.url(), { user: unique('friend'), origin: 'http://example.com' })
  assert.ok(client.sid)
})

scenario('an Origin matching a wildcard entry of allowed_origins connects', async () => {
  const client = await RawClient.connect(server.url(), { user: unique('friend'), origin: 'https://chat.example.org' })
  const id = await client.subscribeConfirmed({ channel: 'BareChannel' })
  await client.roundTrip(id)
})

scenario('every path listed in --path serves WebSocket clients', async () => {
  const ws = await RawClient.connect(server.url({}, '/ws'), { user: unique('alt-path'), origin: 'http://example.com' })
  const id = await ws.subscribeConfirmed({ channel: 'BareChannel' })
  await ws.roundTrip(id)
  const cable = await RawClient.connect(server.url({}, '/cable'), { user: unique('main-path'), origin: 'http://example.com' })
  assert.ok(cable.sid)
})

scenario('an upgrade on a path not listed in --path is refused', async () => {
  const result = await tryUpgrade(server.url({}, '/elsewhere'), { origin: 'http://example.com', headers: { cookie: `user=${unique('lost')}` } })
  assert.equal(result.status, 404)
})
