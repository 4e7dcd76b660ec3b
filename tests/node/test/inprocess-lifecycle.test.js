// The server's lifecycle inside a Node process: start errors with codes, stopping (graceful, twice,
// SIGINT), a stopped server not holding the process, remote disconnects, several servers, stats.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import net from 'node:net'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { FerrocableError, Server } from 'ferrocable'
import { identifiersFor, startInProcess, TestApplication } from '../lib/inprocess-app.js'
import { eventually, freePort, scenario, unique } from '../lib/harness.js'
import { RawClient } from '../lib/raw-client.js'

const childScript = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'lib', 'inprocess-child.mjs')

function runChild (mode) {
  const child = spawn(process.execPath, [childScript, mode], { stdio: ['pipe', 'pipe', 'pipe'] })
  const out = { lines: [], stderr: '' }
  let pending = ''
  child.stdout.on('data', (d) => {
    pending += d
    const lines = pending.split('\n')
    pending = lines.pop()
    out.lines.push(...lines)
  })
  child.stderr.on('data', (d) => { out.stderr += d })
  out.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })))
  out.child = child
  return out
}

async function exitsWithin (run, ms) {
  const timer = new Promise((resolve) => setTimeout(() => resolve('still running'), ms))
  const result = await Promise.race([run.exited, timer])
  if (result === 'still running') run.child.kill('SIGKILL')
  return result
}

scenario('lifecycle: an unknown option throws an Error with code ECONFIG naming it in camelCase', () => {
  assert.throws(() => new Server({ noSuchOption: 1 }), (err) => err instanceof FerrocableError && err.code === 'ECONFIG' && /noSuchOption/.test(err.message))
})

scenario('lifecycle: a value the option cannot take throws ECONFIG naming the option', () => {
  assert.throws(() => new Server({ port: 'eighty' }), (err) => err.code === 'ECONFIG' && /port/.test(err.message))
  assert.throws(() => new Server({ disconnectMode: 'sometimes' }), (err) => err.code === 'ECONFIG' && /disconnectMode/.test(err.message))
  assert.throws(() => new Server({ headers: { not: 'a list' } }), (err) => err.code === 'ECONFIG' && /headers/.test(err.message))
})

scenario('lifecycle: options that do not fit together reject start() with ECONFIG', async () => {
  const server = new Server({ port: 0, httpBroadcastPort: 0, path: 'no-slash' })
  await assert.rejects(server.start(), (err) => err instanceof FerrocableError && err.code === 'ECONFIG' && /path/.test(err.message))
  assert.equal(server.address, null)
})

scenario('lifecycle: a port in use rejects start() with EADDRINUSE and the server can still start elsewhere', async () => {
  const blocker = net.createServer()
  await new Promise((resolve) => blocker.listen(0, '127.0.0.1', resolve))
  try {
    const { port } = blocker.address()
    const server = new Server({ host: '127.0.0.1', port, httpBroadcastPort: 0 })
    await assert.rejects(server.start(), (err) => err instanceof FerrocableError && err.code === 'EADDRINUSE' && err.message.includes(String(port)))
    const other = new Server({ host: '127.0.0.1', port: 0, httpBroadcastPort: 0 })
    await other.start()
    assert.ok(other.address.port > 0)
    await other.stop()
  } finally {
    blocker.close()
  }
})

scenario('lifecycle: start() on a running server rejects with ERUNNING; stop() twice and stop() before start() are harmless', async () => {
  const never = new Server({ port: 0, httpBroadcastPort: 0 })
  await never.stop()
  const server = (await startInProcess()).server
  await assert.rejects(server.start(), (err) => err.code === 'ERUNNING')
  assert.ok(server.listening)
  await Promise.all([server.stop(), server.stop()])
  await server.stop()
  assert.equal(server.address, null)
  await assert.rejects(server.broadcast('s', 'x'), (err) => err.code === 'ENOTRUNNING')
  assert.throws(() => server.disconnect('{}'), (err) => err.code === 'ENOTRUNNING')
})

scenario('lifecycle: a stopped server can be started again with the same handlers', async () => {
  const inproc = await startInProcess()
  await inproc.stop()
  await inproc.server.start()
  const client = await RawClient.connect(inproc.server.address.url, { user: unique('again') })
  await client.subscribeConfirmed({ channel: 'BareChannel' })
  await inproc.server.stop()
})

scenario('lifecycle: stop() sends server_restart to every client and runs every disconnect before resolving', async () => {
  const inproc = await startInProcess()
  const users = [unique('a'), unique('b')]
  const clients = await Promise.all(users.map((user) => RawClient.connect(inproc.url(), { user })))
  const id = await clients[0].subscribeConfirmed({ channel: 'ChatChannel', room: unique('room') })
  await inproc.stop()
  for (const client of clients) {
    assert.deepEqual(await client.next(), { type: 'disconnect', reason: 'server_restart', reconnect: true })
    await client.waitForClose()
  }
  const [first] = inproc.recorder.callsOf('disconnect', (r) => r.identifiers === identifiersFor(users[0]))
  const [second] = inproc.recorder.callsOf('disconnect', (r) => r.identifiers === identifiersFor(users[1]))
  assert.ok(first && second, 'disconnect ran for every client before stop() resolved')
  assert.deepEqual(first.request.subscriptions, [id])
})

scenario('lifecycle: server.disconnect(identifiers) closes exactly those sessions with the remote frame', async () => {
  const inproc = await startInProcess()
  const user = unique('target')
  const target = await RawClient.connect(inproc.url(), { user })
  const second = await RawClient.connect(inproc.url(), { user })
  const bystander = await RawClient.connect(inproc.url(), { user: unique('bystander') })
  assert.equal(inproc.server.disconnect({ current_user: user }, { reconnect: false }), 2, 'an identifiers object is encoded as the Application encodes it')
  for (const client of [target, second]) {
    assert.deepEqual(await client.next(), { type: 'disconnect', reason: 'remote', reconnect: false })
    await client.waitForClose()
  }
  await eventually(() => inproc.recorder.callsOf('disconnect', (r) => r.identifiers === identifiersFor(user)).length === 2, { what: 'two disconnect calls' })
  const other = await RawClient.connect(inproc.url(), { user })
  assert.equal(inproc.server.disconnect(identifiersFor(user)), 1)
  assert.deepEqual(await other.next(), { type: 'disconnect', reason: 'remote', reconnect: true }, 'reconnect defaults to true')
  const id = await bystander.subscribeConfirmed({ channel: 'BareChannel' })
  await bystander.roundTrip(id)
  assert.equal(inproc.server.disconnect('{"current_user":"nobody"}'), 0)
})

scenario('lifecycle: several servers run in one process, each with its own clients, handlers and streams', async () => {
  const one = await startInProcess()
  const two = await startInProcess({ app: new TestApplication() })
  assert.notEqual(one.port, two.port)
  const room = unique('room')
  const a = await RawClient.connect(one.url(), { user: unique('one') })
  const b = await RawClient.connect(two.url(), { user: unique('two') })
  const idA = await a.subscribeConfirmed({ channel: 'ChatChannel', room })
  const idB = await b.subscribeConfirmed({ channel: 'ChatChannel', room })
  await one.broadcast(`chat_${room}`, 'only one')
  await two.broadcast(`chat_${room}`, 'only two')
  assert.deepEqual(await a.next(), { identifier: idA, message: 'only one' })
  assert.deepEqual(await b.next(), { identifier: idB, message: 'only two' })
  assert.equal(one.recorder.callsOf('connect').length, 1)
  assert.equal(two.recorder.callsOf('connect').length, 1)
  await one.stop()
  await b.roundTrip(idB)
  assert.ok(b.isOpen, 'stopping one server leaves the other serving')
})

scenario('lifecycle: stats() counts clients, subscriptions, streams, broadcasts and handler calls', async () => {
  const inproc = await startInProcess()
  const before = inproc.server.stats()
  assert.equal(before.clientsNum, 0)
  const room = unique('room')
  const client = await RawClient.connect(inproc.url(), { user: unique('stats') })
  const id = await client.subscribeConfirmed({ channel: 'ChatChannel', room })
  await inproc.broadcast(`chat_${room}`, 'x')
  await client.next()
  const now = inproc.server.stats()
  assert.equal(now.clientsNum, 1)
  assert.equal(now.subscriptionsNum, 1)
  assert.equal(now.broadcastStreamsNum, 1)
  assert.equal(now.broadcastMsgTotal, 1)
  assert.equal(now.rpcCallTotal, 2, 'connect and subscribe')
  assert.equal(now.rpcErrorTotal, 0)
  client.unsubscribe(id)
  await eventually(() => inproc.server.stats().subscriptionsNum === 0, { what: 'the subscription gauge to drop' })
})

scenario('lifecycle: a Node process whose server was stopped exits by itself', async () => {
  const run = runChild('stop-after-start')
  const result = await exitsWithin(run, 10000)
  assert.deepEqual(result, { code: 0, signal: null }, `child output: ${run.lines.join(' | ')} ${run.stderr}`)
  assert.deepEqual(run.lines, [run.lines[0], 'STOPPED'])
  assert.match(run.lines[0], /^READY \d+$/)
})

scenario('lifecycle: stopping twice in parallel and again in a child process is harmless and it exits', async () => {
  const run = runChild('stopped-twice')
  assert.deepEqual(await exitsWithin(run, 10000), { code: 0, signal: null }, run.stderr)
  assert.equal(run.lines.at(-1), 'STOPPED')
})

scenario('lifecycle: a running server keeps the process alive; SIGINT calling stop() ends it gracefully', async () => {
  const run = runChild('run-until-sigint')
  await eventually(() => run.lines.some((l) => l.startsWith('READY')), { what: 'the child to start' })
  const port = Number(run.lines.find((l) => l.startsWith('READY')).split(' ')[1])
  const client = await RawClient.connect(`ws://127.0.0.1:${port}/cable`)
  const id = await client.subscribeConfirmed({ channel: 'Room' })
  assert.equal(await exitsWithin({ ...run, child: { kill () {} } }, 1000), 'still running', 'nothing but the server holds the process, and it stays up')
  run.child.kill('SIGINT')
  assert.deepEqual(await client.next(), { type: 'disconnect', reason: 'server_restart', reconnect: true })
  assert.deepEqual(await exitsWithin(run, 10000), { code: 0, signal: null }, run.stderr)
  assert.deepEqual(run.lines.slice(1), ['SIGINT', `DISCONNECT ${client.sid}`, 'STOPPED'], 'disconnect ran before stop() resolved')
  assert.ok(id)
})

scenario('lifecycle: a busy event loop delays handler calls, never a broadcast already queued', async () => {
  const run = runChild('busy-event-loop')
  await eventually(() => run.lines.some((l) => l.startsWith('READY')), { what: 'the child to start' })
  const port = Number(run.lines.find((l) => l.startsWith('READY')).split(' ')[1])
  const client = await RawClient.connect(`ws://127.0.0.1:${port}/cable`)
  const id = await client.subscribeConfirmed({ channel: 'Room' })
  run.child.stdin.write('go\n')
  const broadcast = await client.next()
  const broadcastAt = Date.now()
  assert.ok('sent' in broadcast.message, JSON.stringify(broadcast))
  client.perform(id, 'ping')
  const pong = await client.next({ timeout: 5000 })
  const pongAt = Date.now()
  await eventually(() => run.lines.some((l) => l.startsWith('BUSY_DONE')), { what: 'the busy loop to end' })
  const busyDone = Number(run.lines.find((l) => l.startsWith('BUSY_DONE')).split(' ')[1])
  assert.ok(broadcastAt < busyDone - 500, `the broadcast arrived while the loop was busy (${busyDone - broadcastAt} ms before it ended)`)
  assert.ok(pong.message.pong >= busyDone, 'the handler ran only once the event loop was free')
  assert.ok(pongAt >= busyDone)
  run.child.stdin.end('stop\n')
  assert.deepEqual(await exitsWithin(run, 10000), { code: 0, signal: null }, run.stderr)
})

scenario('lifecycle: the address reports the bound ports, ws URL and broadcast URL', async () => {
  const port = await freePort()
  const server = new Server({ host: '127.0.0.1', port, httpBroadcastPort: 0, path: ['/ws', '/cable'] })
  await server.start()
  try {
    assert.equal(server.address.port, port)
    assert.equal(server.address.address, '127.0.0.1')
    assert.equal(server.address.family, 'IPv4')
    assert.equal(server.address.url, `ws://127.0.0.1:${port}/ws`)
    assert.match(server.address.broadcastUrl, /^http:\/\/127\.0\.0\.1:\d+\/_broadcast$/)
    const health = await fetch(`http://127.0.0.1:${port}/health`)
    assert.equal(health.status, 200)
  } finally {
    await server.stop()
  }
})
