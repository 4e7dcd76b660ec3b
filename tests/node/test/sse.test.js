// Server-Sent Events (`--sse`, /events) with the real `eventsource` client, written once and run against every
// deployment (lib/deployments.js): live broadcasts over the same session a WebSocket client gets, and a client
// cut off while messages are published that comes back with `Last-Event-ID` and gets exactly the missed ones
// (memory broker). Then, against the binary and its gRPC backend: the wire format of GET, raw and POST streams,
// bad requests answered with a 4xx and a message, `max_conn`, abandoned streams cleaned up with their
// Disconnect call, shutdown, and the memory an idle stream costs the server.
import assert from 'node:assert/strict'
import http from 'node:http'
import { after, before, describe } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { EventSource } from 'eventsource'
import { startBackend } from '../lib/backend.js'
import { DEPLOYMENTS, startDeployment } from '../lib/deployments.js'
import { broadcastOk, eventually, onScenarioEnd, rssKiB, scenario, startServer, unique } from '../lib/harness.js'

/** The SSE endpoint of a deployment whose WebSocket URL is `wsUrl`, with query parameters. */
function sseUrl (wsUrl, query = {}) {
  const url = new URL(wsUrl)
  url.protocol = url.protocol === 'wss:' ? 'https:' : 'http:'
  url.pathname = '/events'
  url.search = new URLSearchParams(query).toString()
  return url.toString()
}

/**
 * An `eventsource` client sending `cookie`, whose connection the test can cut (`cut()`: the server sees the
 * client go, the client sees its stream end and reconnects on its own) and whose reconnects wait for `hold`
 * to be released. Records the `Last-Event-ID` of every request and every event by type.
 */
function sseClient (url, { cookie } = {}) {
  const requests = []
  let current = null
  let gate = null
  const fetchWithCookie = async (input, init) => {
    requests.push({ lastEventId: new Headers(init.headers).get('last-event-id') })
    if (gate) await gate.promise
    const controller = new AbortController()
    init.signal?.addEventListener('abort', () => controller.abort())
    const headers = { ...init.headers, ...(cookie ? { cookie } : {}) }
    const response = await fetch(input, { ...init, headers, signal: controller.signal })
    current = controller
    if (!response.body) return response
    // The client reads this copy of the body, which ends (rather than fails) when the test cuts it.
    const reader = response.body.getReader()
    const body = new ReadableStream({
      async pull (out) {
        try {
          const { done, value } = await reader.read()
          if (done) out.close()
          else out.enqueue(value)
        } catch {
          out.close()
        }
      },
      cancel: () => controller.abort()
    })
    return new Response(body, { status: response.status, headers: response.headers })
  }
  const source = new EventSource(url, { fetch: fetchWithCookie })
  const events = []
  for (const type of ['message', 'welcome', 'confirm_subscription', 'confirm_history', 'reject_history', 'disconnect']) {
    source.addEventListener(type, (e) => events.push({ type, data: e.data, id: e.lastEventId }))
  }
  onScenarioEnd(() => source.close())
  return {
    source,
    events,
    requests,
    // What the chat published (a channel may transmit other things as it subscribes).
    chat: () => events.filter((e) => e.type === 'message' && JSON.parse(e.data)?.text !== undefined)
      .map((e) => ({ text: JSON.parse(e.data).text, id: e.id })),
    cut: () => current?.abort(),
    hold: () => {
      let release
      gate = { promise: new Promise((resolve) => { release = resolve }) }
      return () => { gate = null; release() }
    }
  }
}

for (const name of DEPLOYMENTS) {
  describe(`SSE: ${name}`, () => {
    let deployment

    before(async () => {
      deployment = await startDeployment(name, { sse: true, broker: 'memory', history_limit: 10 })
    })

    after(async () => {
      await deployment?.stop()
    })

    scenario(`${name}: an EventSource subscribed to the chat gets welcome, confirmation and live messages`, async () => {
      const room = unique('sse-room')
      const identifier = JSON.stringify(deployment.chatChannel(room))
      const client = sseClient(sseUrl(deployment.url(), { identifier }), { cookie: await deployment.cookieFor('ann') })
      await eventually(() => client.events.some((e) => e.type === 'confirm_subscription'), { what: 'the subscription' })
      assert.equal(client.events[0].type, 'welcome')
      await deployment.publish(room, 'hello')
      await deployment.publish(room, 'multi\nline')
      await eventually(() => client.chat().length === 2, { what: 'two messages' })
      assert.deepEqual(client.chat().map((m) => m.text), ['hello', 'multi\nline'])
      assert.match(client.chat()[0].id, /^1\/[^/]+\/.+/, 'offset/epoch/stream as the id')
      const calls = await deployment.calls('ann')
      assert.ok(calls.connects >= 1 && calls.subscribes >= 1, 'the application authenticated and subscribed it')
    }, { timeout: 30000 })

    scenario(`${name}: a client cut off while messages are published resumes with Last-Event-ID and gets exactly the missed ones`, async () => {
      const room = unique('sse-resume')
      const identifier = JSON.stringify(deployment.chatChannel(room))
      const client = sseClient(sseUrl(deployment.url(), { identifier }), { cookie: await deployment.cookieFor('bob') })
      await eventually(() => client.events.some((e) => e.type === 'confirm_subscription'), { what: 'the subscription' })
      await deployment.publish(room, 'one')
      await eventually(() => client.chat().length === 1, { what: 'the first message' })
      const release = client.hold()
      client.cut()
      await eventually(() => client.requests.length === 2, { timeout: 10000, what: 'the client to reconnect on its own' })
      await deployment.publish(room, 'two')
      await deployment.publish(room, 'three')
      release()
      await eventually(() => client.chat().length === 3, { timeout: 10000, what: 'the missed messages' })
      assert.equal(client.requests[1].lastEventId, client.chat()[0].id)
      await deployment.publish(room, 'four')
      await eventually(() => client.chat().length === 4, { what: 'a live message after the resume' })
      assert.deepEqual(client.chat().map((m) => m.text), ['one', 'two', 'three', 'four'], 'nothing lost or repeated')
      assert.ok(client.events.some((e) => e.type === 'confirm_history'), 'the replay was confirmed')
    }, { timeout: 40000 })
  })
}

describe('SSE against the binary', () => {
  let backend
  let server

  before(async () => {
    backend = await startBackend()
    server = await startServer({ rpcPort: backend.port, args: ['--sse', '--metrics_http=/metrics'] })
  })

  after(async () => {
    await server?.stop()
    await backend?.stop()
  })

  const url = (query) => sseUrl(server.url(), query)
  const chat = (room) => JSON.stringify({ channel: 'ChatChannel', room })

  /** Opens a stream with fetch and reads it as text; `abort()` leaves. */
  async function stream (target, { cookie = 'user=ann', method = 'GET', body, headers = {} } = {}) {
    const controller = new AbortController()
    const res = await fetch(target, { method, body, headers: { cookie, ...headers }, signal: controller.signal })
    const reader = res.body.getReader()
    const decoder = new TextDecoder()
    const state = { res, text: '', abort: () => controller.abort() }
    ;(async () => {
      try {
        for (;;) {
          const { done, value } = await reader.read()
          if (done) break
          state.text += decoder.decode(value, { stream: true })
        }
      } catch {}
      state.ended = true
    })()
    onScenarioEnd(() => controller.abort())
    return state
  }

  scenario('a GET streams AnyCable-Go\'s event format: typed protocol events, the message alone as data', async () => {
    const room = unique('wire')
    const s = await stream(url({ channel: 'ChatChannel', identifier: chat(room) }))
    assert.equal(s.res.status, 200)
    assert.match(s.res.headers.get('content-type'), /^text\/event-stream/)
    await eventually(() => s.text.includes('event: confirm_subscription'), { what: 'the confirmation' })
    assert.match(s.text, /^event: welcome\ndata: \{"type":"welcome"[^\n]*\}\n\n/)
    await broadcastOk(server, { stream: `chat_${room}`, data: JSON.stringify({ text: 'hi' }) })
    await eventually(() => s.text.includes('data: {"text":"hi"}\n\n'), { what: 'the message event' })
    await eventually(() => /event: ping\ndata: \{"type":"ping","message":\d+\}\n\n/.test(s.text), { what: 'a ping event' })
  })

  scenario('raw=1 streams only data, with pings as comments', async () => {
    const room = unique('raw')
    const s = await stream(url({ identifier: chat(room), raw: '1' }))
    assert.equal(s.res.status, 200)
    await broadcastOk(server, { stream: `chat_${room}`, data: JSON.stringify({ text: 'raw' }) })
    await eventually(() => s.text.includes(': ping\n\n') && s.text.includes('data: {"text":"raw"}'), { what: 'data and a ping comment' })
    assert.ok(!s.text.includes('event:'), `no typed events in a raw stream: ${s.text}`)
  })

  scenario('a POST subscribes with JSON-line commands and streams whole frames', async () => {
    const [a, b] = [unique('post-a'), unique('post-b')]
    const body = [a, b].map((room) => JSON.stringify({ command: 'subscribe', identifier: chat(room) })).join('\n') + '\n'
    const s = await stream(server.url().replace('ws:', 'http:').replace('/cable', '/events'), { method: 'POST', body })
    assert.equal(s.res.status, 200)
    await eventually(() => s.text.split('event: confirm_subscription').length === 3, { what: 'two confirmations' })
    await broadcastOk(server, { stream: `chat_${b}`, data: JSON.stringify({ text: 'to b' }) })
    await eventually(() => s.text.includes(`data: {"identifier":${JSON.stringify(chat(b))},"message":{"text":"to b"}}`), { what: 'the whole frame' })
  })

  scenario('bad requests get a 4xx with a message, and the server keeps serving', async () => {
    const cases = [
      [url({}), {}, 400, /no channel/],
      [url({ identifier: chat('x') }), { cookie: '' }, 401, /unauthorized/],
      [url({ identifier: chat('x') }), { cookie: 'user=bad' }, 401, /unauthorized/],
      [url({ identifier: chat('secret') }), {}, 400, /subscription rejected/],
      [url({ identifier: JSON.stringify({ channel: 'NoSuchChannel' }) }), {}, 400, /subscription rejected/],
      [url({ identifier: chat('x'), history_since: 'yesterday' }), {}, 400, /history_since/],
      [url({ identifier: chat('x') }), { headers: { 'last-event-id': 'x/epoch/chat_x' } }, 400, /Last-Event-ID/],
      [url({}), { method: 'POST', body: 'not json\n' }, 400, /line 1/],
      [url({}), { method: 'POST', body: JSON.stringify({ command: 'message', identifier: chat('x'), data: '{}' }) }, 400, /only subscribe/],
      [url({}), { method: 'POST', body: 'x'.repeat(70 * 1024) }, 413, /65536/],
      [url({ identifier: chat('x') }), { method: 'DELETE' }, 405, /GET or POST/]
    ]
    for (const [target, { cookie = 'user=ann', method = 'GET', body, headers = {} }, status, message] of cases) {
      const res = await fetch(target, { method, body, headers: { cookie, ...headers } })
      const text = await res.text()
      assert.equal(res.status, status, `${method} ${target}: ${text}`)
      assert.match(text, message, `${method} ${target}`)
    }
    const s = await stream(url({ identifier: chat(unique('after')) }))
    assert.equal(s.res.status, 200, 'a good request after the bad ones')
    assert.ok(!server.log.includes('panicked'))
  })

  scenario('a client that opens and abandons hundreds of streams leaves nothing behind: each gets its Disconnect call', async () => {
    const user = unique('churn')
    const before = backend.callsOf('Disconnect').length
    const N = 300
    for (let round = 0; round < N / 50; round++) {
      const streams = await Promise.all(Array.from({ length: 50 }, () => stream(url({ identifier: chat(unique('r')) }), { cookie: `user=${user}` })))
      assert.ok(streams.every((s) => s.res.status === 200))
      for (const s of streams) s.abort()
    }
    await eventually(() => backend.callsOf('Disconnect').length - before >= N, { timeout: 20000, what: `${N} Disconnect calls` })
    await eventually(async () => {
      const metrics = await (await fetch(`http://${server.host}:${server.port}/metrics`)).text()
      return /\nanycable_go_clients_num 0\n/.test(`\n${metrics}`)
    }, { timeout: 10000, what: 'no client left' })
  }, { timeout: 60000 })
})

describe('SSE limits and shutdown', () => {
  scenario('SSE clients count against max_conn with WebSocket clients, and a place is given back when one leaves', async () => {
    const backend = await startBackend()
    onScenarioEnd(() => backend.stop())
    const server = await startServer({ rpcPort: backend.port, args: ['--sse', '--max_conn=2'] })
    onScenarioEnd(() => server.stop())
    const target = sseUrl(server.url(), { identifier: JSON.stringify({ channel: 'ChatChannel', room: 'cap' }) })
    const open = () => {
      const controller = new AbortController()
      return fetch(target, { headers: { cookie: 'user=cap' }, signal: controller.signal }).then((res) => ({ res, controller }))
    }
    const first = await open()
    const second = await open()
    assert.deepEqual([first.res.status, second.res.status], [200, 200])
    const third = await fetch(target, { headers: { cookie: 'user=cap' } })
    assert.equal(third.status, 503)
    assert.match(await third.text(), /max_conn/)
    first.controller.abort()
    await eventually(async () => {
      const again = await open()
      if (again.res.status === 200) { again.controller.abort(); return true }
      await again.res.text()
      return false
    }, { what: 'the freed place' })
    second.controller.abort()
  })

  scenario('shutdown tells SSE clients to reconnect elsewhere and runs their Disconnect calls', async () => {
    const backend = await startBackend()
    onScenarioEnd(() => backend.stop())
    const server = await startServer({ rpcPort: backend.port, args: ['--sse'] })
    const target = sseUrl(server.url(), { identifier: JSON.stringify({ channel: 'ChatChannel', room: 'bye' }) })
    const res = await fetch(target, { headers: { cookie: 'user=leaving' } })
    assert.equal(res.status, 200)
    const text = res.text()
    await sleep(200)
    await server.stop()
    const body = await text
    assert.match(body, /event: disconnect\ndata: \{"type":"disconnect","reason":"server_restart","reconnect":true\}\n\n$/)
    assert.equal(backend.disconnectsFor('leaving').length, 1)
  })

  scenario('a thousand idle SSE clients cost the server a few KiB each: their sockets are held outside the HTTP layer', async (t) => {
    const server = await startServer({ publicMode: true, args: ['--sse', '--metrics_http=/metrics'] })
    onScenarioEnd(() => server.stop())
    const stream = unique('idle')
    const target = `http://${server.host}:${server.port}/events?stream=${stream}`
    const clientsNum = async () => {
      const metrics = await (await fetch(`http://${server.host}:${server.port}/metrics`)).text()
      return Number(/\nanycable_go_clients_num (\d+)\n/.exec(`\n${metrics}`)?.[1])
    }
    const count = 1000
    const received = []
    const rssBefore = rssKiB(server)
    const requests = Array.from({ length: count }, (_, i) => {
      received[i] = ''
      const req = http.get(target, { agent: false }, (res) => res.on('data', (chunk) => { received[i] += chunk }))
      req.on('error', () => {})
      return req
    })
    onScenarioEnd(() => requests.forEach((req) => req.destroy()))
    await eventually(async () => (await clientsNum()) === count, { timeout: 30000, what: `${count} SSE clients` })
    await eventually(() => received.every((text) => text.includes('event: confirm_subscription')), { what: 'every confirmation' })
    const perClientKiB = (rssKiB(server) - rssBefore) / count
    t.diagnostic(`RSS per idle SSE client: ${perClientKiB.toFixed(2)} KiB`)
    // In hyper's HTTP connection each one took 16.4 KiB (its 8 KiB read and write buffers, a 5.7 KiB task).
    assert.ok(perClientKiB < 8, `memory per idle SSE client: ${perClientKiB.toFixed(1)} KiB`)

    // Every one of them still gets pings and broadcasts, and leaves when its client goes.
    await eventually(() => received.every((text) => text.includes('event: ping')), { what: 'a ping on every stream' })
    await broadcastOk(server, { stream, data: JSON.stringify({ text: 'to all' }) })
    await eventually(() => received.every((text) => text.includes('data: {"text":"to all"}')), { what: 'the broadcast on every stream' })
    for (const req of requests) req.destroy()
    await eventually(async () => (await clientsNum()) === 0, { timeout: 20000, what: 'every client gone' })
  }, { timeout: 90000 })
})
