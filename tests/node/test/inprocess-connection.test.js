// Connections through in-process JavaScript handlers (the high-level Application): welcome with the sid,
// rejection, a throwing connect, what connect and commands receive, pings, sub-protocols, Disconnect.
import assert from 'node:assert/strict'
import { after, before } from 'node:test'
import { identifiersFor, startInProcess } from '../lib/inprocess-app.js'
import { scenario, unique } from '../lib/harness.js'
import { RawClient, ACTION_CABLE_JSON } from '../lib/raw-client.js'

let server

before(async () => {
  server = await startInProcess({ options: { headers: 'cookie,x-api-token' } })
})

after(async () => {
  await server?.stop()
})

scenario('in-process: an authenticated connection gets the welcome frame with the sid the handler was given', async () => {
  const user = unique('alice')
  const client = await RawClient.open(server.url(), { user })
  const welcome = await client.next()
  assert.deepEqual(Object.keys(welcome).sort(), ['sid', 'type'])
  assert.equal(welcome.type, 'welcome')
  assert.ok(welcome.sid.length > 0)
  const [connect] = server.recorder.callsOf('connect', (r) => r.env.headers.cookie === `user=${user}`)
  assert.equal(connect.request.sid, welcome.sid)
  assert.ok(client.isOpen)
})

scenario('in-process: every connection gets its own sid', async () => {
  const a = await RawClient.connect(server.url(), { user: unique('a') })
  const b = await RawClient.connect(server.url(), { user: unique('b') })
  assert.notEqual(a.sid, b.sid)
})

scenario('in-process: handle.reject() sends the unauthorized frame, then a normal close', async () => {
  for (const user of [undefined, 'bad']) {
    const client = await RawClient.open(server.url(), { user })
    assert.deepEqual(await client.next(), { type: 'disconnect', reason: 'unauthorized', reconnect: false })
    const { code } = await client.waitForClose()
    assert.equal(code, 1000)
    assert.deepEqual(client.inbox, [], 'nothing follows the unauthorized frame')
  }
})

scenario('in-process: a connect handler that throws closes that socket with 1011 and the server keeps accepting', async () => {
  const client = await RawClient.open(server.url(), { user: 'boom' })
  const { code } = await client.waitForClose()
  assert.equal(code, 1011)
  const ok = await RawClient.connect(server.url(), { user: unique('after-error') })
  assert.ok(ok.isOpen)
})

scenario('in-process: connect receives the full URL, query params and only the configured headers, lower-cased', async () => {
  const user = unique('headers')
  const client = await RawClient.connect(server.url({ token: 'abc', lang: 'en' }), {
    user,
    headers: { Cookie: 'theme=dark', 'X-Api-Token': 'secret-token', 'X-Other-Header': 'not forwarded' }
  })
  const [connect] = server.recorder.callsOf('connect', (r) => (r.env.headers.cookie || '').includes(`user=${user}`))
  const env = connect.request.env
  assert.equal(env.url, `http://127.0.0.1:${server.port}/cable?token=abc&lang=en`)
  assert.equal(env.headers.cookie, `user=${user}; theme=dark`)
  assert.equal(env.headers['x-api-token'], 'secret-token')
  assert.equal(env.headers['x-other-header'], undefined)
  assert.deepEqual(env.cstate, {})
  const id = await client.subscribeConfirmed({ channel: 'BareChannel' })
  client.perform(id, 'whoami')
  const { message } = await client.nextMessage(id)
  assert.deepEqual(message.params, { token: 'abc', lang: 'en' }, 'handle.env.params holds the query parameters')
})

scenario('in-process: a command carries the connection identifiers, URL, headers, cstate and sid', async () => {
  const user = unique('command-env')
  const client = await RawClient.connect(server.url({ q: '1' }), { user, headers: { 'X-Api-Token': 't1' } })
  const id = await client.subscribeConfirmed({ channel: 'ChatChannel', room: unique('room') })
  const [subscribe] = server.recorder.commandsFor(user)
  assert.equal(subscribe.request.command, 'subscribe')
  assert.equal(subscribe.request.identifier, id)
  assert.equal(subscribe.request.connectionIdentifiers, identifiersFor(user))
  assert.equal(subscribe.request.env.url, `http://127.0.0.1:${server.port}/cable?q=1`)
  assert.equal(subscribe.request.env.headers['x-api-token'], 't1')
  assert.equal(subscribe.request.env.cstate.user, user)
  assert.equal(subscribe.request.sid, client.sid)
})

scenario('in-process: pings follow the welcome every ping_interval with increasing unix seconds', async () => {
  const client = await RawClient.connect(server.url(), { user: unique('pings') })
  const pings = await client.waitForPings(3, { timeout: 6000 })
  for (const [i, ping] of pings.entries()) {
    assert.ok(Number.isInteger(ping.frame.message))
    assert.ok(Math.abs(ping.frame.message - Date.now() / 1000) < 5)
    if (i > 0) assert.ok(ping.frame.message > pings[i - 1].frame.message)
  }
  const gap = pings[2].at - pings[1].at
  assert.ok(gap > 600 && gap < 1600, `pings ~1 s apart with pingInterval 1 (saw ${gap} ms)`)
})

scenario('in-process: the pi and ptp query parameters set the ping interval and precision', async () => {
  const slow = await RawClient.connect(server.url({ pi: '2' }), { user: unique('pi') })
  const ms = await RawClient.connect(server.url({ ptp: 'ms' }), { user: unique('ptp') })
  const [ping] = await ms.waitForPings(1, { timeout: 4000 })
  assert.ok(Math.abs(ping.frame.message - Date.now()) < 5000, `ms timestamp: ${ping.frame.message}`)
  const pings = await slow.waitForPings(3, { timeout: 8000 })
  const gap = pings[2].at - pings[1].at
  assert.ok(gap > 1600 && gap < 2600, `pings ~2 s apart with pi=2 (saw ${gap} ms)`)
})

scenario('in-process: sub-protocol negotiation serves actioncable-v1-json, or plain JSON to a client offering none', async () => {
  const offered = await RawClient.connect(server.url(), { user: unique('proto'), protocols: ['made-up', ACTION_CABLE_JSON] })
  assert.equal(offered.protocol, ACTION_CABLE_JSON)
  const none = await RawClient.connect(server.url(), { user: unique('noproto'), protocols: [] })
  assert.equal(none.protocol, '')
  const id = await none.subscribeConfirmed({ channel: 'ChatChannel', room: unique('room') })
  await none.roundTrip(id)
})

scenario('in-process: a client closing its socket runs disconnect with its identifiers, cstate and URL', async () => {
  const user = unique('bye')
  const client = await RawClient.connect(server.url(), { user })
  client.close()
  const request = await server.recorder.waitForCall('disconnect', (r) => r.identifiers === identifiersFor(user))
  assert.deepEqual(request.subscriptions, [])
  assert.equal(request.env.url, `http://127.0.0.1:${server.port}/cable`)
  assert.equal(request.env.cstate.user, user)
  const closing = server.app.closings.find((c) => c.kind === 'disconnect' && c.identifiers?.current_user === user)
  assert.ok(closing, 'Application#disconnect ran')
  assert.equal(closing.cstate.user, user)
})
