// HTTP RPC beyond the scenarios every backend kind runs (connection, channels, state with
// FERROCABLE_RPC_BACKEND=http): the serverless-js app's scenarios (lib/serverless-scenarios.js, also run
// in-process) through the binary, what the requests carry
// (key, session id, protocol version, paths), and the failures: a wrong key (401), a backend that is down, slower
// than rpc_request_timeout, answering 500, answering what is not JSON or a huge body. Each failure closes a new
// connection with 1011 (or leaves a command unanswered), logs one line naming the reason, and never touches the
// clients already connected; once the backend behaves, calls succeed again. And https:// with the gRPC client's
// trust options, over HTTP/2 when the backend offers it.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { identifiersFor } from '../lib/backend.js'
import { broadcastOk, eventually, freePort, onScenarioEnd, scenario, startServer, unique } from '../lib/harness.js'
import { RawClient } from '../lib/raw-client.js'
import { HTTP_RPC_SECRET, ServerlessBackend, startServerlessBackend } from '../lib/serverless-backend.js'
import { serverlessScenarios } from '../lib/serverless-scenarios.js'

async function backendAndServer ({ args = [], backendOptions } = {}) {
  const backend = await startServerlessBackend(backendOptions)
  onScenarioEnd(() => backend.stop())
  const server = await startServer({ args: [...backend.serverArgs, ...args] })
  onScenarioEnd(() => server.stop())
  return { backend, server }
}

/** A client subscribed to a chat room, to show that failures of other calls never reach it. */
async function bystander (server) {
  const room = unique('room')
  const client = await RawClient.connect(server.url(), { user: unique('bystander') })
  const id = await client.subscribeConfirmed({ channel: 'ChatChannel', room })
  return { client, id, room }
}

async function stillServed (server, { client, id, room }) {
  await broadcastOk(server, { stream: `chat_${room}`, data: { n: 1 } })
  assert.deepEqual(await client.next(), { identifier: id, message: { n: 1 } }, 'a connected client keeps its streams')
  assert.ok(client.isOpen)
}

serverlessScenarios('over HTTP RPC', async () => {
  const { backend, server } = await backendAndServer()
  return { server, app: backend.app, broadcast: (stream, data) => broadcastOk(server, { stream, data }) }
})

scenario('requests are POSTs to <rpc_host>/connect|command|disconnect with the Bearer key, the sid and the protocol version', async () => {
  const { backend, server } = await backendAndServer()
  const user = unique('headers')
  const client = await RawClient.connect(server.url(), { user })
  await client.subscribeConfirmed({ channel: 'BareChannel' })
  client.close()
  await backend.waitForCall('Disconnect', (r) => r.identifiers === identifiersFor(user))
  assert.deepEqual(backend.requests.slice(-3).map((r) => r.url), ['/_anycable/connect', '/_anycable/command', '/_anycable/disconnect'])
  for (const request of backend.requests.slice(-3)) {
    assert.equal(request.headers.authorization, `Bearer ${HTTP_RPC_SECRET}`)
    assert.equal(request.headers['content-type'], 'application/json')
    assert.equal(request.headers['x-anycable-meta-sid'], client.sid)
    assert.equal(request.headers['x-anycable-meta-protov'], 'v1')
  }
  const connections = new Set(backend.requests.map((r) => r.headers.connection))
  assert.ok(!connections.has('close'), 'connections are kept alive')
})

scenario('the key derived from secret is what a backend sharing only the secret expects', async () => {
  // `echo -n rpc-cable | openssl dgst -sha256 -hmac s3cr3t`
  const derived = '4b7da2749fe2a4534cec0d2acbd16277a800cf2acd31158ac4edae4a62a8f18d'
  const backend = await startServerlessBackend({ secret: derived })
  onScenarioEnd(() => backend.stop())
  const server = await startServer({ args: ['--rpc_host', backend.rpcHost, '--secret', 's3cr3t'] })
  onScenarioEnd(() => server.stop())
  const client = await RawClient.connect(server.url(), { user: unique('derived') })
  assert.ok(client.isOpen)
})

scenario('a wrong key: the backend answers 401, Connect closes with 1011 and the log says to check the key', async () => {
  const backend = await startServerlessBackend()
  onScenarioEnd(() => backend.stop())
  const server = await startServer({ args: ['--rpc_host', backend.rpcHost, '--http_rpc_secret', 'wrong'] })
  onScenarioEnd(() => server.stop())
  const client = await RawClient.open(server.url(), { user: unique('refused') })
  assert.equal((await client.waitForClose()).code, 1011)
  await server.waitForLog(/HTTP RPC call failed.*401.*http_rpc_secret/)
  assert.equal(backend.calls.length, 0, 'the backend ran nothing')
})

scenario('backend down: Connect closes with 1011 after the retries, and calls succeed once it is up', async () => {
  const port = await freePort()
  const backend = new ServerlessBackend(port)
  const server = await startServer({ args: backend.serverArgs })
  onScenarioEnd(() => server.stop())
  const client = await RawClient.open(server.url(), { user: unique('early') })
  assert.equal((await client.waitForClose()).code, 1011)
  await server.waitForLog(/RPC backend unavailable/)
  await backend.start()
  onScenarioEnd(() => backend.stop())
  const later = await RawClient.connect(server.url(), { user: unique('later') })
  assert.ok(later.isOpen)
})

/** A CA and a certificate it signed for 127.0.0.1, made with openssl for this run. */
function makePki () {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferrocable-http-rpc-'))
  onScenarioEnd(() => fs.rmSync(dir, { recursive: true, force: true }))
  const file = (name) => path.join(dir, name)
  const openssl = (...args) => execFileSync('openssl', args, { stdio: 'pipe' })
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  openssl('req', '-x509', ...ec, '-keyout', file('ca.key'), '-out', file('ca.pem'), '-days', '1', '-subj', '/CN=Ferrocable test CA')
  openssl('req', ...ec, '-keyout', file('key.pem'), '-out', file('cert.csr'), '-subj', '/CN=127.0.0.1')
  fs.writeFileSync(file('ext.cnf'), 'subjectAltName=IP:127.0.0.1\n')
  openssl('x509', '-req', '-in', file('cert.csr'), '-CA', file('ca.pem'), '-CAkey', file('ca.key'), '-CAcreateserial',
    '-out', file('cert.pem'), '-days', '1', '-extfile', file('ext.cnf'))
  return { ca: file('ca.pem'), key: fs.readFileSync(file('key.pem')), cert: fs.readFileSync(file('cert.pem')) }
}

for (const { http2, version } of [{ http2: true, version: '2.0' }, { http2: false, version: '1.1' }]) {
  scenario(`https:// trusting rpc_tls_root_ca: HTTP/${version === '2.0' ? '2' : '1.1'} when the backend offers ${http2 ? 'h2' : 'only HTTP/1.1'}; a CA it does not trust fails Connect`, async () => {
    const pki = makePki()
    const { backend, server } = await backendAndServer({ backendOptions: { tls: { key: pki.key, cert: pki.cert, http2 } }, args: ['--rpc_tls_root_ca', pki.ca] })
    assert.ok(backend.rpcHost.startsWith('https://'))
    const client = await RawClient.connect(server.url(), { user: unique('tls') })
    const id = await client.subscribeConfirmed({ channel: 'BareChannel' })
    client.perform(id, 'touch')
    assert.deepEqual((await client.nextMessage(id)).message, { touched: true })
    assert.deepEqual([...new Set(backend.requests.map((r) => r.httpVersion))], [version])

    const stranger = await startServer({ args: [...backend.serverArgs] })
    onScenarioEnd(() => stranger.stop())
    const refused = await RawClient.open(stranger.url(), { user: unique('untrusted') })
    assert.equal((await refused.waitForClose()).code, 1011, 'the system CAs do not trust the test CA')
    await stranger.waitForLog(/RPC backend unavailable.*UnknownIssuer/)
  })
}

const misbehaviours = [
  { name: 'a 500 answer', disruption: { httpStatus: 500, body: 'database is on fire' }, log: /HTTP 500.*database is on fire/ },
  { name: 'a 200 answer that is not JSON', disruption: { body: '<html>oops</html>' }, log: /not the expected JSON/ },
  { name: 'a 200 answer of the wrong shape', disruption: { body: '{"status":"MAYBE"}' }, log: /not the expected JSON.*MAYBE/ },
  { name: 'a body over 4 MiB', disruption: { hugeBytes: 5 << 20 }, log: /larger than 4194304 bytes/ },
  { name: 'an answer slower than rpc_request_timeout', disruption: { delayMs: 1500 }, log: /timed out/ }
]

for (const { name, disruption, log } of misbehaviours) {
  scenario(`${name}: that call fails with one log line, other clients keep being served, later calls succeed`, async () => {
    const { backend, server } = await backendAndServer({ args: ['--rpc_request_timeout', '700'] })
    const other = await bystander(server)
    const user = unique('victim')
    const victim = await RawClient.connect(server.url(), { user })
    const id = await victim.subscribeConfirmed({ channel: 'BareChannel' })

    backend.disruption = disruption
    const from = server.logLines.length
    const refused = await RawClient.open(server.url(), { user: unique('refused') })
    assert.equal((await refused.waitForClose()).code, 1011, 'Connect fails')
    victim.perform(id, 'touch')
    await server.waitForLog(log)
    await eventually(() => server.logLines.slice(from).filter((l) => /HTTP RPC call failed/.test(l)).length >= 2, { what: 'the command failure logged' })
    assert.equal(server.logLines.slice(from).filter((l) => /HTTP RPC call failed/.test(l)).length, 2, 'one line per failed call')
    assert.ok(victim.isOpen, 'a failed command leaves its connection open')
    assert.deepEqual(victim.inbox, [], 'and answers nothing')

    backend.disruption = null
    await stillServed(server, other)
    victim.perform(id, 'touch')
    assert.deepEqual((await victim.nextMessage(id)).message, { touched: true }, 'the same connection works again')
    assert.ok((await RawClient.connect(server.url(), { user: unique('after') })).isOpen)
  })
}
