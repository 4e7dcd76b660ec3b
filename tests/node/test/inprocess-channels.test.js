// Channel commands through in-process Channel classes: subscribe outcomes, actions, transmissions and the
// stream changes an action asks for, with broadcasts sent straight into the Rust hub (server.broadcast).
import assert from 'node:assert/strict'
import { after, before } from 'node:test'
import { identifiersFor, startInProcess } from '../lib/inprocess-app.js'
import { scenario, unique } from '../lib/harness.js'
import { RawClient } from '../lib/raw-client.js'

let server

before(async () => {
  server = await startInProcess()
})

after(async () => {
  await server?.stop()
})

async function chatClient () {
  const user = unique('user')
  const room = unique('room')
  const client = await RawClient.connect(server.url(), { user })
  const id = await client.subscribeConfirmed({ channel: 'ChatChannel', room })
  return { user, room, client, id }
}

scenario('in-process: subscribed() without reject is confirmed with the exact confirm_subscription frame', async () => {
  const user = unique('user')
  const client = await RawClient.connect(server.url(), { user })
  const id = client.subscribe({ channel: 'ChatChannel', room: unique('room') })
  assert.deepEqual(await client.next(), { identifier: id, type: 'confirm_subscription' })
  const calls = server.recorder.commandsFor(user)
  assert.equal(calls.length, 1)
  assert.equal(calls[0].request.command, 'subscribe')
  assert.deepEqual(calls[0].request.env.istate, {}, 'a new subscription has no istate')
})

scenario('in-process: handle.reject() in subscribed() sends reject_subscription and starts no streams', async () => {
  const client = await RawClient.connect(server.url(), { user: unique('user') })
  const id = client.subscribe({ channel: 'ChatChannel', room: 'secret' })
  assert.deepEqual(await client.next(), { identifier: id, type: 'reject_subscription' })
  await server.broadcast('chat_secret', 'leak')
  const other = await client.subscribeConfirmed({ channel: 'ChatChannel', room: unique('room') })
  await client.roundTrip(other)
  assert.deepEqual(client.inbox, [], 'nothing from the rejected subscription')
  assert.ok(client.isOpen)
})

scenario('in-process: a channel that is not registered is rejected', async () => {
  const client = await RawClient.connect(server.url(), { user: unique('user') })
  const id = client.subscribe({ channel: 'NoSuchChannel' })
  assert.deepEqual(await client.next(), { identifier: id, type: 'reject_subscription' })
  const bad = 'not json at all'
  client.send({ command: 'subscribe', identifier: bad })
  assert.deepEqual(await client.next(), { identifier: bad, type: 'reject_subscription' })
  assert.ok(client.isOpen)
})

scenario('in-process: the channel identifier is passed byte for byte and params come from it', async () => {
  const user = unique('user')
  const room = unique('room')
  const client = await RawClient.connect(server.url(), { user })
  const id = `{ "room" : "${room}",  "channel":"ChatChannel" }`
  client.send({ command: 'subscribe', identifier: id })
  assert.deepEqual(await client.next(), { identifier: id, type: 'confirm_subscription' })
  assert.equal(server.recorder.commandsFor(user)[0].request.identifier, id)
  await server.broadcast(`chat_${room}`, 'x')
  assert.deepEqual(await client.next(), { identifier: id, message: 'x' })
})

scenario('in-process: perform sends the client JSON string verbatim and the action gets the data without `action`', async () => {
  const { user, client, id } = await chatClient()
  const data = '{"action":"echo","text":"hello","n":1}'
  client.send({ command: 'message', identifier: id, data })
  assert.deepEqual(await client.next(), { identifier: id, message: { action: 'echo', text: 'hello', n: 1 } })
  const [message] = server.recorder.commandsFor(user, (r) => r.command === 'message')
  assert.equal(message.request.data, data)
})

scenario('in-process: perform without data (only the action) reaches the action', async () => {
  const { client, id } = await chatClient()
  client.perform(id, 'touch')
  assert.deepEqual(await client.next(), { identifier: id, message: { touched: true } })
})

scenario('in-process: an unknown action is an ERROR for that command only', async () => {
  const { client, id } = await chatClient()
  client.perform(id, 'no_such_action')
  client.perform(id, 'subscribed')
  client.perform(id, 'constructor')
  client.perform(id, 'touch')
  assert.deepEqual(await client.next(), { identifier: id, message: { touched: true } })
  assert.ok(client.isOpen)
})

scenario('in-process: a subscription receives broadcasts on the stream subscribed() named', async () => {
  const { room, client, id } = await chatClient()
  await server.broadcast(`chat_${room}`, { text: 'hello' })
  assert.deepEqual(await client.next(), { identifier: id, message: { text: 'hello' } })
})

scenario('in-process: streamFrom in an action adds a stream; stopStreamFrom removes only that one', async () => {
  const { room, client, id } = await chatClient()
  const extra = unique('extra')
  client.perform(id, 'follow', { stream: extra })
  await client.roundTrip(id)
  await server.broadcast(extra, 'on extra')
  assert.deepEqual(await client.next(), { identifier: id, message: 'on extra' })
  client.perform(id, 'unfollow', { stream: extra })
  await client.roundTrip(id)
  await server.broadcast(extra, 'after unfollow')
  await server.broadcast(`chat_${room}`, 'still on chat')
  assert.deepEqual(await client.next(), { identifier: id, message: 'still on chat' })
})

scenario('in-process: stopAllStreams stops every stream of the subscription', async () => {
  const { room, client, id } = await chatClient()
  const extra = unique('extra')
  client.perform(id, 'follow', { stream: extra })
  await client.roundTrip(id)
  client.perform(id, 'stop_all')
  await client.roundTrip(id)
  const later = unique('later')
  client.perform(id, 'follow', { stream: later })
  await client.roundTrip(id)
  await server.broadcast(`chat_${room}`, 'chat')
  await server.broadcast(extra, 'extra')
  await server.broadcast(later, 'later')
  assert.deepEqual(await client.next(), { identifier: id, message: 'later' })
})

scenario('in-process: stopAllStreams is applied before streamFrom of the same call', async () => {
  const { room, client, id } = await chatClient()
  const next = unique('next')
  client.perform(id, 'switch', { stream: next })
  await client.roundTrip(id)
  await server.broadcast(`chat_${room}`, 'old')
  await server.broadcast(next, 'new')
  assert.deepEqual(await client.next(), { identifier: id, message: 'new' })
})

scenario('in-process: one subscription can stream from several streams', async () => {
  const [s1, s2, s3] = [unique('m1'), unique('m2'), unique('m3')]
  const client = await RawClient.connect(server.url(), { user: unique('user') })
  const id = await client.subscribeConfirmed({ channel: 'MultiChannel', streams: [s1, s2] })
  await server.broadcast(s3, 'not subscribed')
  await server.broadcast(s1, 'one')
  await server.broadcast(s2, 'two')
  // Order is kept per stream, not across streams: publications to two streams may arrive either way round.
  const received = [await client.next(), await client.next()].sort((a, b) => a.message.localeCompare(b.message))
  assert.deepEqual(received, [{ identifier: id, message: 'one' }, { identifier: id, message: 'two' }])
})

scenario('in-process: two subscriptions of one client on the same stream each get the broadcast', async () => {
  const room = unique('room')
  const client = await RawClient.connect(server.url(), { user: unique('user') })
  const a = await client.subscribeConfirmed({ channel: 'ChatChannel', room })
  const b = await client.subscribeConfirmed({ channel: 'MultiChannel', streams: [`chat_${room}`] })
  await server.broadcast(`chat_${room}`, 'both')
  const frames = [await client.next(), await client.next()].map((f) => f.identifier).sort()
  assert.deepEqual(frames, [a, b].sort())
})

scenario('in-process: unsubscribe runs unsubscribed() and stops that subscription streams', async () => {
  const { user, room, client, id } = await chatClient()
  const keep = await client.subscribeConfirmed({ channel: 'MultiChannel', streams: [unique('keep')] })
  client.unsubscribe(id)
  await client.roundTrip(keep)
  const [unsub] = server.recorder.commandsFor(user, (r) => r.command === 'unsubscribe')
  assert.equal(unsub.request.identifier, id)
  const closing = server.app.closings.find((c) => c.kind === 'unsubscribed' && c.identifier === id)
  assert.deepEqual(closing.istate, { room })
  assert.deepEqual(closing.identifiers, { current_user: user })
  await server.broadcast(`chat_${room}`, 'after unsubscribe')
  client.perform(keep, 'touch')
  assert.deepEqual(await client.next(), { identifier: keep, message: { touched: true } })
  assert.deepEqual(client.inbox, [])
})

scenario('in-process: handle.close() writes the transmissions, closes the socket and runs disconnect', async () => {
  const { user, client, id } = await chatClient()
  client.perform(id, 'kick')
  assert.deepEqual(await client.next(), { identifier: id, message: { bye: true } })
  await client.waitForClose()
  const request = await server.recorder.waitForCall('disconnect', (r) => r.identifiers === identifiersFor(user))
  assert.deepEqual(request.subscriptions, [id])
})

scenario('in-process: commands of one connection are answered in the order they were sent', async () => {
  const { client, id } = await chatClient()
  for (let i = 0; i < 20; i++) client.perform(id, 'echo', { i })
  for (let i = 0; i < 20; i++) assert.deepEqual(await client.next(), { identifier: id, message: { action: 'echo', i } })
})
