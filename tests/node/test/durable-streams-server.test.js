// Durable Streams reads against the binary: bad requests get a 4xx with a message, readers count against
// max_conn and end on shutdown and remote disconnects, an authenticated reader's Disconnect call, ds_skip_auth
// with public streams, and thousands of abandoned long-polls leave no reader and bounded memory behind.
import assert from 'node:assert/strict'
import http from 'node:http'
import { after, before } from 'node:test'
import { identifiersFor, startBackend } from '../lib/backend.js'
import { broadcastOk, eventually, remoteDisconnect, rssKiB, scenario, startServer, unique } from '../lib/harness.js'
import { signedName } from '../lib/standalone.js'

const SECRET = 'ds-secret'
const DS = ['--ds', '--broker', 'memory', '--streams_secret', SECRET]

let backend

before(async () => {
  backend = await startBackend()
})

after(async () => {
  await backend?.stop()
})

const base = (server) => `http://${server.host}:${server.port}`

/** GET (or `method`) a DS URL path as `user`, by signed name; resolves to { status, body, headers }. */
async function request (server, pathAndQuery, { user, method = 'GET', signed = true, headers = {} } = {}) {
  const h = { ...headers }
  if (user) h.cookie = `user=${user}`
  if (signed) h['x-signed'] = signedName(decodeURIComponent(pathAndQuery.split('?')[0].replace(/^\/ds\//, '')), SECRET)
  const res = await fetch(`${base(server)}${pathAndQuery}`, { method, headers: h })
  return { status: res.status, body: await res.text(), headers: res.headers }
}

/** Opens a live SSE read and resolves once its headers arrived; `text()` is what it received so far. */
function openSse (server, stream, { user, offset = '-1' } = {}) {
  return new Promise((resolve, reject) => {
    const headers = { 'x-signed': signedName(stream, SECRET) }
    if (user) headers.cookie = `user=${user}`
    const req = http.get(`${base(server)}/ds/${encodeURIComponent(stream)}?offset=${offset}&live=sse`, { headers, agent: false }, (res) => {
      let received = ''
      const ended = new Promise((resolve) => res.on('close', resolve))
      res.on('data', (chunk) => { received += chunk })
      resolve({ status: res.statusCode, text: () => received, ended, close: () => req.destroy() })
    })
    req.on('error', reject)
  })
}

async function metric (server, name) {
  const text = await (await fetch(`${base(server)}/metrics`)).text()
  const line = text.split('\n').find((l) => l.startsWith(`anycable_go_${name} `))
  return Number(line?.split(' ')[1])
}

scenario('bad requests are answered 400, 405 or 410 with a message, and the server keeps serving', async () => {
  const server = await startServer({ rpcPort: backend.port, args: DS })
  const user = unique('reader')
  const topic = unique('bad')
  await broadcastOk(server, { stream: topic, data: '{"n":1}' })
  const good = await eventually(async () => {
    const res = await request(server, `/ds/${topic}?offset=-1`, { user })
    return res.body === '[{"n":1}]' && res
  }, { what: 'the message in the history' })
  const epoch = good.headers.get('stream-next-offset').split('::')[1]

  const cases = [
    [`/ds/${topic}?offset=abc`, 400, /offset "abc" is not/],
    [`/ds/${topic}?offset=12`, 400, /offset "12" is not/],
    [`/ds/${topic}?offset=${'9'.repeat(30)}::${epoch}`, 400, /is not -1, now/],
    [`/ds/${topic}?offset=1::${'e'.repeat(200)}`, 400, /is not -1, now/],
    [`/ds/${topic}?offset=-1&live=poll`, 400, /live must be long-poll or sse/],
    [`/ds/${topic}?live=long-poll`, 400, /needs an offset/],
    [`/ds/${topic}?live=sse`, 400, /needs an offset/],
    [`/ds/${topic}?offset=0000000000000001::zzzz`, 410, /epoch "zzzz" is not the current one/],
    [`/ds/${topic}?offset=0000000000000099::${epoch}&live=long-poll`, 410, /ahead of the stream/],
    [`/ds/%FF%FE?offset=-1`, 400, /not valid percent-encoded UTF-8/]
  ]
  for (const [target, status, message] of cases) {
    const res = await request(server, target, { user, signed: !target.includes('%FF') })
    assert.equal(res.status, status, `${target}: ${res.body}`)
    assert.match(res.body, message, target)
  }
  for (const method of ['POST', 'PUT', 'DELETE']) {
    const res = await request(server, `/ds/${topic}`, { user, method })
    assert.equal(res.status, 405, method)
    assert.equal(res.headers.get('allow'), 'GET, HEAD, OPTIONS')
    assert.match(res.body, /read-only/)
  }
  assert.equal((await request(server, `/ds/${topic}?offset=-1`, { user })).body, '[{"n":1}]', 'still serving')
  assert.ok(!/panick/.test(server.log), 'no panic')
})

scenario('an authenticated reader gets a Disconnect call when it is done, and a remote disconnect ends its SSE read', async () => {
  const server = await startServer({ rpcPort: backend.port, args: DS })
  const user = unique('reader')
  const topic = unique('remote')
  assert.equal((await request(server, `/ds/${topic}?offset=-1`, { user })).status, 200)
  await eventually(() => backend.disconnectsFor(user).length === 1, { what: 'the Disconnect call of the catch-up read' })

  const sse = await openSse(server, topic, { user })
  assert.equal(sse.status, 200)
  await eventually(() => sse.text().includes('event: control'), { what: 'the first control event' })
  await remoteDisconnect(server, identifiersFor(user))
  await sse.ended
  await eventually(() => backend.disconnectsFor(user).length === 2, { what: 'the Disconnect call of the SSE reader' })
})

scenario('with ds_skip_auth and public_streams, anyone reads unsigned streams without a Connect call', async () => {
  const server = await startServer({ rpcPort: backend.port, args: ['--ds', '--broker', 'memory', '--ds_skip_auth', '--public_streams'] })
  const topic = unique('open')
  await broadcastOk(server, { stream: topic, data: '"hello"' })
  const connectsBefore = backend.callsOf('Connect').length
  const read = await eventually(async () => {
    const res = await request(server, `/ds/${topic}?offset=-1`, { signed: false })
    return res.body === '["hello"]' && res
  }, { what: 'the public read' })
  assert.equal(read.status, 200)
  assert.equal(backend.callsOf('Connect').length, connectsBefore, 'no Connect call')
})

scenario('live readers count against max_conn and end on graceful shutdown', async () => {
  const server = await startServer({ rpcPort: backend.port, args: [...DS, '--max_conn', '2', '--ds_sse_ttl', '60'] })
  const user = unique('reader')
  const first = await openSse(server, unique('a'), { user })
  const second = await openSse(server, unique('b'), { user })
  assert.deepEqual([first.status, second.status], [200, 200])
  const third = await request(server, `/ds/${unique('c')}?offset=-1`, { user })
  assert.equal(third.status, 503)
  assert.match(third.body, /max_conn reached/)
  const started = Date.now()
  await server.stop()
  await Promise.all([first.ended, second.ended])
  assert.ok(Date.now() - started < 5000, 'shutdown does not wait for ds_sse_ttl')
})

scenario('thousands of abandoned long-polls leave no reader and bounded memory behind', async (t) => {
  const server = await startServer({
    publicMode: true,
    args: ['--ds', '--broker', 'memory', '--ds_poll_interval', '120', '--metrics_http', '/metrics', '--client_queue_size', '16']
  })
  const topic = unique('abandoned')
  const count = 3000
  const rssBefore = rssKiB(server)
  const requests = []
  for (let i = 0; i < count; i++) {
    const req = http.get(`${base(server)}/ds/${topic}?offset=-1&live=long-poll`, { agent: false })
    req.on('error', () => {})
    requests.push(req)
  }
  await eventually(async () => (await metric(server, 'clients_num')) === count, { timeout: 30000, what: `${count} waiting long-polls` })
  const rssHeld = rssKiB(server)
  for (const req of requests) req.destroy()
  await eventually(async () => (await metric(server, 'clients_num')) === 0, { timeout: 20000, what: 'every abandoned long-poll to be dropped' })
  assert.equal(await metric(server, 'broadcast_streams_num'), 0, 'the stream has no reader left')
  const perReaderKiB = (rssHeld - rssBefore) / count
  t.diagnostic(`RSS per waiting long-poll: ${perReaderKiB.toFixed(2)} KiB`)
  assert.ok(perReaderKiB < 32, `memory per waiting long-poll: ${perReaderKiB.toFixed(1)} KiB`)

  // A fresh reader is served at once.
  await broadcastOk(server, { stream: topic, data: '{"after":true}' })
  const res = await eventually(async () => {
    const r = await fetch(`${base(server)}/ds/${topic}?offset=-1`)
    const body = await r.text()
    return body === '[{"after":true}]' && r
  }, { what: 'a read after the storm' })
  assert.equal(res.status, 200)
}, { timeout: 90000 })
