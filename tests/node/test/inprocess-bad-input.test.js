// Misbehaving clients against in-process handlers, and the Origin check: bad input is ignored or ends only
// the offending connection, without a handler call; well-behaved clients keep working.
import assert from 'node:assert/strict'
import { after, before } from 'node:test'
import { identifiersFor, startInProcess } from '../lib/inprocess-app.js'
import { scenario, unique } from '../lib/harness.js'
import { RawClient, tryUpgrade } from '../lib/raw-client.js'

let server

before(async () => {
  server = await startInProcess({ options: { maxMessageSize: 1024, allowedOrigins: ['example.com', '*.example.org'] } })
})

after(async () => {
  await server?.stop()
})

const origin = 'http://example.com'

async function chatClient () {
  const user = unique('user')
  const room = unique('room')
  const client = await RawClient.connect(server.url(), { user, origin })
  const id = await client.subscribeConfirmed({ channel: 'ChatChannel', room })
  return { user, room, client, id }
}

async function assertServes ({ client, id, room }) {
  await client.roundTrip(id)
  await server.broadcast(`chat_${room}`, { still: 'here' })
  assert.deepEqual(await client.next(), { identifier: id, message: { still: 'here' } })
}

scenario('in-process bad input: frames that are not commands are ignored without a handler call', async () => {
  const good = await chatClient()
  const bad = await chatClient()
  const before = server.recorder.commandsFor(bad.user).length
  for (const frame of ['not json {', '', '[1,2,3]', 'null', '{"identifier":"x"}', '{"command":42}']) bad.client.send(frame)
  bad.client.send({ command: 'dance', identifier: bad.id, data: '{"action":"echo"}' })
  bad.client.sendBinary(Buffer.from([0xff, 0x00, 0xfe]))
  await assertServes(bad)
  assert.equal(server.recorder.commandsFor(bad.user).length, before + 1, 'only the round trip reached the handler')
  assert.deepEqual(bad.client.inbox, [])
  await assertServes(good)
})

scenario('in-process bad input: unknown identifiers and duplicate subscribes make no handler call', async () => {
  const bad = await chatClient()
  const unknown = JSON.stringify({ channel: 'ChatChannel', room: 'never-subscribed' })
  bad.client.perform(unknown, 'echo', { x: 1 })
  bad.client.unsubscribe(unknown)
  bad.client.send({ command: 'subscribe', identifier: bad.id })
  await assertServes(bad)
  assert.deepEqual(server.recorder.commandsFor(bad.user, (r) => r.identifier === unknown), [])
  assert.equal(server.recorder.commandsFor(bad.user, (r) => r.command === 'subscribe').length, 1)
  assert.deepEqual(bad.client.inbox.filter((f) => f.type === 'confirm_subscription'), [])
})

scenario('in-process bad input: a frame over maxMessageSize closes that connection with 1009, then disconnect runs', async () => {
  const good = await chatClient()
  const bad = await chatClient()
  bad.client.perform(bad.id, 'echo', { filler: 'x'.repeat(2048) })
  assert.equal((await bad.client.waitForClose()).code, 1009)
  await server.recorder.waitForCall('disconnect', (r) => r.identifiers === identifiersFor(bad.user))
  assert.deepEqual(server.recorder.commandsFor(bad.user, (r) => r.command === 'message'), [])
  await assertServes(good)
})

scenario('in-process bad input: a dropped TCP connection still runs disconnect with its subscriptions', async () => {
  const bad = await chatClient()
  bad.client.ws._socket.destroy()
  const request = await server.recorder.waitForCall('disconnect', (r) => r.identifiers === identifiersFor(bad.user))
  assert.deepEqual(request.subscriptions, [bad.id])
})

scenario('in-process bad input: many clients vanishing at once each get their disconnect', async () => {
  const good = await chatClient()
  const users = Array.from({ length: 30 }, () => unique('burst'))
  const clients = await Promise.all(users.map((user) => RawClient.connect(server.url(), { user, origin })))
  clients.forEach((client, i) => (i % 2 ? client.close() : client.terminate()))
  for (const user of users) await server.recorder.waitForCall('disconnect', (r) => r.identifiers === identifiersFor(user))
  await assertServes(good)
})

scenario('in-process origin: an Origin outside allowedOrigins is refused with 403 before connect runs', async () => {
  const user = unique('intruder')
  for (const bad of ['http://evil.test', 'http://notexample.com']) {
    const result = await tryUpgrade(server.url(), { origin: bad, headers: { cookie: `user=${user}` } })
    assert.equal(result.status, 403)
  }
  assert.deepEqual(server.recorder.callsOf('connect', (r) => r.env.headers.cookie === `user=${user}`), [])
  const friend = await RawClient.connect(server.url(), { user: unique('friend'), origin: 'https://chat.example.org' })
  assert.ok(friend.sid)
})
