// An application written for @anycable/serverless-js, the same object the HTTP RPC suite serves over HTTP,
// run unchanged in-process: `server.handle(app)` drives it as the package's HTTP handlers would. The scenarios
// are lib/serverless-scenarios.js, shared with test/http-rpc.test.js; this file adds what only in-process shows.
import assert from 'node:assert/strict'
import { Server } from 'ferrocable'
import { startInProcess } from '../lib/inprocess-app.js'
import { BROADCAST_KEY, onScenarioEnd, scenario, startServer, unique } from '../lib/harness.js'
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

// Records what the app's connect and channel actions get: the handle's id, env and identifiers.
function spyOn (app) {
  const seen = []
  const record = (call, handle) => seen.push({ call, id: handle.id, env: structuredClone(handle.env), identifiers: handle.identifiers })
  const connect = app.connect.bind(app)
  app.connect = async (handle) => {
    record('connect', handle)
    return connect(handle)
  }
  const handleCommand = app.handleCommand.bind(app)
  app.handleCommand = async (handle, command, identifier, data) => {
    record(command, handle)
    return handleCommand(handle, command, identifier, data)
  }
  return seen
}

// One connection that subscribes, sets state and performs; returns what the app saw, with the server's port,
// the session id and the connect time replaced so two servers compare equal.
async function drive (url, port) {
  const user = 'same-user'
  const client = await RawClient.connect(`${url}?q=1`, { user })
  const id = await client.subscribeConfirmed({ channel: 'ChatChannel', room: 'r1' })
  client.perform(id, 'remember', { key: 'k', value: 'v' })
  await client.nextMessage(id)
  client.perform(id, 'touch')
  await client.nextMessage(id)
  client.close()
  return (seen) => JSON.parse(JSON.stringify(seen).replaceAll(String(port), 'PORT').replaceAll(client.sid, 'SID')
    .replace(/"connected_at":"[^"]+"/g, '"connected_at":"TIME"'))
}

scenario('in-process serverless-js: the app gets exactly what its HTTP handlers get over HTTP RPC (env, identifiers, session id)', async () => {
  const backend = await startServerlessBackend()
  onScenarioEnd(() => backend.stop())
  const overHttp = spyOn(backend.app)
  const binary = await startServer({ args: backend.serverArgs })
  onScenarioEnd(() => binary.stop())
  const httpView = (await drive(binary.url(), binary.port))(overHttp)

  const app = createApp()
  const inProcess = spyOn(app)
  const server = await startInProcess({ handlers: app, record: false })
  const inProcessView = (await drive(server.url(), server.port))(inProcess)

  assert.deepEqual(httpView.map((s) => s.call), ['connect', 'subscribe', 'message', 'message'])
  assert.equal(httpView[0].id, 'SID', 'the handle id is the session id')
  assert.equal(httpView[0].env.cstate, undefined, 'empty maps are left out on the wire')
  assert.deepEqual(inProcessView, httpView)
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
