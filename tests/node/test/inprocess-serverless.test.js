// An application written for @anycable/serverless-js, the same object the HTTP RPC suite serves over HTTP,
// run unchanged in-process: `server.handle(app)` drives it as the package's HTTP handlers would. The scenarios
// are lib/serverless-scenarios.js, shared with test/http-rpc.test.js; this file adds what only in-process shows.
import assert from 'node:assert/strict'
import { Server } from 'ferrocable'
import { startInProcess } from '../lib/inprocess-app.js'
import { BROADCAST_KEY, onScenarioEnd, scenario, unique } from '../lib/harness.js'
import { RawClient } from '../lib/raw-client.js'
import { createApp } from '../lib/serverless-app.js'
import { HTTP_RPC_SECRET, startServerlessBackend } from '../lib/serverless-backend.js'
import { serverlessScenarios } from '../lib/serverless-scenarios.js'

async function startServerless () {
  const app = createApp()
  const server = await startInProcess({ handlers: app, record: false })
  return { server, app, broadcast: (stream, data) => server.broadcast(stream, data) }
}

serverlessScenarios('in-process', startServerless)

scenario('in-process serverless-js: the app sees the env its HTTP handlers would parse, the session id it would read from x-anycable-meta-sid', async () => {
  const app = createApp()
  const seen = []
  const connect = app.connect.bind(app)
  app.connect = async (handle) => {
    seen.push({ id: handle.id, env: structuredClone(handle.env) })
    return connect(handle)
  }
  const server = await startInProcess({ handlers: app, record: false })
  const user = unique('env')
  const client = await RawClient.connect(server.url({ q: '1' }), { user })
  assert.equal(seen.length, 1)
  assert.equal(seen[0].id, client.sid)
  assert.deepEqual(seen[0].env, { url: `http://127.0.0.1:${server.port}/cable?q=1`, headers: { cookie: `user=${user}` } }, 'empty cstate and istate are left out, as on the wire')
})

scenario('in-process serverless-js: handle() takes the app object itself and refuses what is neither shape', async () => {
  const server = new Server({ port: 0 })
  assert.equal(server.handle(createApp()), server)
  assert.throws(() => new Server({ port: 0 }).handle({ buildHandle () {} }), /serverless-js Application/)
})

scenario('new Server({ rpcHost: "http://…" }) calls an HTTP RPC backend like the binary does', async () => {
  const backend = await startServerlessBackend()
  onScenarioEnd(() => backend.stop())
  const server = new Server({ host: '127.0.0.1', port: 0, httpBroadcastPort: 0, broadcastKey: BROADCAST_KEY, rpcHost: backend.rpcHost, httpRpcSecret: HTTP_RPC_SECRET, logLevel: 'warn' })
  await server.start()
  onScenarioEnd(() => server.stop())
  const user = unique('node-http')
  const client = await RawClient.connect(server.address.url, { user })
  const id = await client.subscribeConfirmed({ channel: 'ChatChannel', room: 'node' })
  client.perform(id, 'touch')
  assert.deepEqual((await client.nextMessage(id)).message, { touched: true })
  assert.equal(backend.callsOf('Connect', (r) => r.env.headers.cookie === `user=${user}`)[0].sid, client.sid)
})
