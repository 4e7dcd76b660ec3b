// Long polling (`--poll`, /lp) with a client written to AnyCable's documented wire format
// (lib/long-polling-client.js), against the binary and its gRPC backend: the same session as a WebSocket
// client (Connect, subscriptions, actions, broadcasts), 401 for a rejected connection and an expired session,
// sessions that end with their Disconnect call when they are not polled, bad requests, and a client that opens
// and abandons many sessions.
import assert from 'node:assert/strict'
import { after, before, describe } from 'node:test'
import { startBackend } from '../lib/backend.js'
import { broadcastOk, eventually, scenario, startServer, unique } from '../lib/harness.js'
import { LongPollingClient } from '../lib/long-polling-client.js'
import { setTimeout as sleep } from 'node:timers/promises'

describe('long polling', () => {
  let backend
  let server
  let url

  before(async () => {
    backend = await startBackend()
    server = await startServer({
      rpcPort: backend.port,
      args: ['--poll', '--poll_interval=1', '--poll_flush_interval=50', '--poll_keepalive_timeout=1', '--metrics_http=/metrics']
    })
    url = `http://${server.host}:${server.port}/lp`
  })

  after(async () => {
    await server?.stop()
    await backend?.stop()
  })

  const chat = (room) => JSON.stringify({ channel: 'ChatChannel', room })

  scenario('the first request authenticates and subscribes; polls bring broadcasts and transmissions', async () => {
    const room = unique('lp')
    const client = new LongPollingClient(url, { headers: { cookie: 'user=ann' } })
    client.send({ command: 'subscribe', identifier: chat(room) })
    const first = await client.request()
    assert.equal(first.status, 200, first.body)
    assert.match(client.pollId, /^[\w-]{42}$/)
    assert.equal(first.messages[0].type, 'welcome')
    await client.pollUntil((m) => m.type === 'confirm_subscription')
    await broadcastOk(server, { stream: `chat_${room}`, data: JSON.stringify({ text: 'polled' }) })
    assert.deepEqual(await client.pollUntil((m) => m.message?.text === 'polled'), { identifier: chat(room), message: { text: 'polled' } })
    client.send({ command: 'message', identifier: chat(room), data: JSON.stringify({ action: 'touch' }) })
    assert.deepEqual(await client.pollUntil((m) => m.message?.touched), { identifier: chat(room), message: { touched: true } })
    assert.ok(!client.received.some((m) => m.type === 'ping'), 'no pings for a polling client')
    const idle = await client.request()
    assert.deepEqual([idle.status, idle.messages], [200, []], 'an idle poll is answered empty after poll_interval')
  })

  scenario('a rejected connection is answered 401 with its messages and no poll id', async () => {
    const client = new LongPollingClient(url, { headers: { cookie: 'user=bad' } })
    const res = await client.request()
    assert.equal(res.status, 401)
    assert.equal(client.pollId, null)
    assert.ok(res.messages.some((m) => m.type === 'disconnect' && m.reason === 'unauthorized'), res.body)
  })

  scenario('a session not polled within poll_keepalive_timeout ends with its Disconnect call; its id is then 401', async () => {
    const user = unique('gone')
    const client = new LongPollingClient(url, { headers: { cookie: `user=${user}` } })
    assert.equal((await client.request()).status, 200)
    await eventually(() => backend.disconnectsFor(user).length === 1, { what: 'the Disconnect call' })
    const stale = await client.request()
    assert.equal(stale.status, 401)
    assert.match(stale.body, /unknown or expired poll session/)
  })

  scenario('bad requests get a 4xx with a message', async () => {
    const post = (body, headers = {}) => fetch(url, { method: 'POST', body, headers: { cookie: 'user=ann', ...headers } })
    const cases = [
      [await post('{"command":"subscribe"', {}), 400, /line 1/],
      [await post('x'.repeat(70 * 1024)), 413, /65536/],
      [await post('', { 'x-anycable-poll-id': 'made-up' }), 401, /unknown or expired/],
      [await fetch(url, { headers: { cookie: 'user=ann' } }), 405, /POST/]
    ]
    for (const [res, status, message] of cases) {
      const text = await res.text()
      assert.equal(res.status, status, text)
      assert.match(text, message)
    }
    assert.ok(!server.log.includes('panicked'))
  })

  scenario('a client that opens and abandons hundreds of poll sessions leaves nothing behind', async () => {
    const user = unique('abandon')
    const N = 300
    for (let round = 0; round < N / 50; round++) {
      const answers = await Promise.all(Array.from({ length: 50 }, () => new LongPollingClient(url, { headers: { cookie: `user=${user}` } }).request()))
      assert.ok(answers.every((a) => a.status === 200))
    }
    await eventually(() => backend.disconnectsFor(user).length === N, { timeout: 20000, what: `${N} Disconnect calls` })
    await eventually(async () => {
      const metrics = await (await fetch(`http://${server.host}:${server.port}/metrics`)).text()
      return /\nanycable_go_clients_num 0\n/.test(`\n${metrics}`)
    }, { timeout: 10000, what: 'no client left' })
  }, { timeout: 60000 })
})

scenario('poll sessions count against max_conn', async () => {
  const backend = await startBackend()
  const server = await startServer({ rpcPort: backend.port, args: ['--poll', '--max_conn=1', '--poll_keepalive_timeout=1'] })
  try {
    const url = `http://${server.host}:${server.port}/lp`
    const first = await new LongPollingClient(url, { headers: { cookie: 'user=a' } }).request()
    assert.equal(first.status, 200)
    const second = await new LongPollingClient(url, { headers: { cookie: 'user=b' } }).request()
    assert.equal(second.status, 503)
    assert.match(second.body, /max_conn/)
    await eventually(async () => (await new LongPollingClient(url, { headers: { cookie: 'user=c' } }).request()).status === 200, { what: 'the place given back after the keepalive timeout' })
  } finally {
    await server.stop()
    await backend.stop()
  }
})

scenario('shutdown answers a waiting poll with server_restart and ends every poll session with its Disconnect call', async () => {
  const backend = await startBackend()
  const server = await startServer({ rpcPort: backend.port, args: ['--poll', '--poll_interval=30', '--poll_keepalive_timeout=30'] })
  try {
    const url = `http://${server.host}:${server.port}/lp`
    const waiting = new LongPollingClient(url, { headers: { cookie: 'user=waiting' } })
    const idle = new LongPollingClient(url, { headers: { cookie: 'user=idle' } })
    assert.equal((await waiting.request()).status, 200)
    assert.equal((await idle.request()).status, 200)
    const answer = waiting.request()
    // The poll is held for poll_interval (30 s); give it time to reach the server before the shutdown starts.
    await sleep(500)
    const started = Date.now()
    await server.stop()
    const { status, messages } = await answer
    assert.equal(status, 200)
    assert.deepEqual(messages.at(-1), { type: 'disconnect', reason: 'server_restart', reconnect: true })
    assert.ok(Date.now() - started < 10000, 'the idle session did not hold the shutdown for its keepalive timeout')
    assert.equal(backend.disconnectsFor('waiting').length, 1)
    assert.equal(backend.disconnectsFor('idle').length, 1)
  } finally {
    await server.stop()
    await backend.stop()
  }
})
