// Channel commands through the RPC backend (gRPC, or HTTP RPC with FERROCABLE_RPC_BACKEND=http): subscribe
// outcomes, performing actions, and the stream changes a Command answer asks for.
import assert from 'node:assert/strict'
import { after, before } from 'node:test'
import { startRpcBackend, identifiersFor } from '../lib/backend.js'
import { broadcastOk, scenario, startServer, unique } from '../lib/harness.js'
import { RawClient } from '../lib/raw-client.js'

let backend
let server

before(async () => {
  backend = await startRpcBackend()
  server = await startServer({ args: backend.serverArgs })
})

after(async () => {
  await server?.stop()
  await backend?.stop()
})

async function chatClient () {
  const user = unique('user')
  const room = unique('room')
  const client = await RawClient.connect(server.url(), { user })
  const id = await client.subscribeConfirmed({ channel: 'ChatChannel', room })
  return { user, room, client, id }
}

scenario('subscribe accepted by the backend is confirmed with the exact confirm_subscription frame', async () => {
  const user = unique('user')
  const client = await RawClient.connect(server.url(), { user })
  const id = client.subscribe({ channel: 'ChatChannel', room: unique('room') })
  assert.deepEqual(await client.next(), { identifier: id, type: 'confirm_subscription' })
  const calls = backend.commandsFor(user)
  assert.equal(calls.length, 1)
  assert.equal(calls[0].request.command, 'subscribe')
  assert.equal(calls[0].request.identifier, id)
})

scenario('subscribe rejected by the backend gets reject_subscription and no streams', async () => {
  const user = unique('user')
  const client = await RawClient.connect(server.url(), { user })
  const id = client.subscribe({ channel: 'ChatChannel', room: 'secret' })
  assert.deepEqual(await client.next(), { identifier: id, type: 'reject_subscription' })
  await broadcastOk(server, { stream: 'chat_secret', data: 'leak' })
  const other = await client.subscribeConfirmed({ channel: 'ChatChannel', room: unique('room') })
  await client.roundTrip(other)
  assert.deepEqual(client.inbox, [], 'nothing from the rejected subscription')
  assert.ok(client.isOpen, 'a rejected subscription leaves the connection open')
})

scenario('the channel identifier is passed byte for byte, never re-serialized', async () => {
  const user = unique('user')
  const room = unique('room')
  const client = await RawClient.connect(server.url(), { user })
  const id = `{ "room" : "${room}",  "channel":"ChatChannel" }`
  client.send({ command: 'subscribe', identifier: id })
  assert.deepEqual(await client.next(), { identifier: id, type: 'confirm_subscription' })
  assert.equal(backend.commandsFor(user)[0].request.identifier, id)
  await broadcastOk(server, { stream: `chat_${room}`, data: 'x' })
  const frame = await client.next()
  assert.equal(frame.identifier, id)
})

scenario('perform with data sends a message Command whose data is the client JSON string, verbatim', async () => {
  const { user, client, id } = await chatClient()
  const data = '{"action":"speak","text":"hello","n":1}'
  client.send({ command: 'message', identifier: id, data })
  await client.roundTrip(id)
  const [speak] = backend.commandsFor(user, (r) => r.command === 'message' && r.data === data)
  assert.ok(speak, 'the message Command carries the data string as sent')
  assert.equal(speak.request.identifier, id)
})

scenario('perform answers with the transmissions the backend returns', async () => {
  const { client, id } = await chatClient()
  client.perform(id, 'echo', { text: 'hi', nested: { list: [1, 2] } })
  assert.deepEqual(await client.next(), { identifier: id, message: { action: 'echo', text: 'hi', nested: { list: [1, 2] } } })
})

scenario('perform without data (only the action) reaches the backend and gets its answer', async () => {
  const { user, client, id } = await chatClient()
  client.perform(id, 'touch')
  assert.deepEqual(await client.next(), { identifier: id, message: { touched: true } })
  const [touch] = backend.commandsFor(user, (r) => r.command === 'message')
  assert.deepEqual(JSON.parse(touch.request.data), { action: 'touch' })
})

scenario('a subscription receives broadcasts on the stream its subscribe answer named', async () => {
  const { room, client, id } = await chatClient()
  await broadcastOk(server, { stream: `chat_${room}`, data: '{"text":"hello"}' })
  assert.deepEqual(await client.next(), { identifier: id, message: { text: 'hello' } })
})

scenario('stream_from in an action adds a stream; stop_stream_from removes only that stream', async () => {
  const { room, client, id } = await chatClient()
  const extra = unique('extra')
  client.perform(id, 'follow', { stream: extra })
  await client.roundTrip(id)
  await broadcastOk(server, { stream: extra, data: 'on extra' })
  assert.deepEqual(await client.next(), { identifier: id, message: 'on extra' })

  client.perform(id, 'unfollow', { stream: extra })
  await client.roundTrip(id)
  await broadcastOk(server, { stream: extra, data: 'after unfollow' })
  await broadcastOk(server, { stream: `chat_${room}`, data: 'still on chat' })
  assert.deepEqual(await client.next(), { identifier: id, message: 'still on chat' }, 'the stopped stream delivers nothing, the other one still does')
})

scenario('stop_all_streams stops every stream of the subscription', async () => {
  const { room, client, id } = await chatClient()
  const extra = unique('extra')
  client.perform(id, 'follow', { stream: extra })
  await client.roundTrip(id)
  client.perform(id, 'stop_all')
  await client.roundTrip(id)
  const later = unique('later')
  client.perform(id, 'follow', { stream: later })
  await client.roundTrip(id)
  await broadcastOk(server, { stream: `chat_${room}`, data: 'chat' })
  await broadcastOk(server, { stream: extra, data: 'extra' })
  await broadcastOk(server, { stream: later, data: 'later' })
  assert.deepEqual(await client.next(), { identifier: id, message: 'later' })
})

scenario('stop_streams is applied before the streams of the same answer', async () => {
  const { room, client, id } = await chatClient()
  const next = unique('next')
  client.perform(id, 'switch', { stream: next })
  await client.roundTrip(id)
  await broadcastOk(server, { stream: `chat_${room}`, data: 'old' })
  await broadcastOk(server, { stream: next, data: 'new' })
  assert.deepEqual(await client.next(), { identifier: id, message: 'new' })
})

scenario('one subscription can stream from several streams', async () => {
  const user = unique('user')
  const [s1, s2, s3] = [unique('m1'), unique('m2'), unique('m3')]
  const client = await RawClient.connect(server.url(), { user })
  const id = await client.subscribeConfirmed({ channel: 'MultiChannel', streams: [s1, s2] })
  await broadcastOk(server, { stream: s3, data: 'not subscribed' })
  await broadcastOk(server, { stream: s1, data: 'one' })
  await broadcastOk(server, { stream: s2, data: 'two' })
  // Order is kept per stream, not across streams: publications to two streams may arrive either way round.
  const received = [await client.next(), await client.next()].sort((a, b) => a.message.localeCompare(b.message))
  assert.deepEqual(received, [{ identifier: id, message: 'one' }, { identifier: id, message: 'two' }])
})

scenario('two subscriptions of one client on the same stream each get the broadcast with their own identifier', async () => {
  const room = unique('room')
  const client = await RawClient.connect(server.url(), { user: unique('user') })
  const a = await client.subscribeConfirmed({ channel: 'ChatChannel', room })
  const b = await client.subscribeConfirmed({ channel: 'MultiChannel', streams: [`chat_${room}`] })
  await broadcastOk(server, { stream: `chat_${room}`, data: 'both' })
  const frames = [await client.next(), await client.next()]
  assert.deepEqual(frames.sort((x, y) => x.identifier.localeCompare(y.identifier)), [
    { identifier: a, message: 'both' },
    { identifier: b, message: 'both' }
  ].sort((x, y) => x.identifier.localeCompare(y.identifier)))
})

scenario('unsubscribe calls Command unsubscribe and stops that subscription streams', async () => {
  const { user, room, client, id } = await chatClient()
  const keep = await client.subscribeConfirmed({ channel: 'MultiChannel', streams: [unique('keep')] })
  client.unsubscribe(id)
  await client.roundTrip(keep)
  const [unsub] = backend.commandsFor(user, (r) => r.command === 'unsubscribe')
  assert.ok(unsub, 'Command unsubscribe was called')
  assert.equal(unsub.request.identifier, id)
  await broadcastOk(server, { stream: `chat_${room}`, data: 'after unsubscribe' })
  client.perform(keep, 'touch')
  assert.deepEqual(await client.next(), { identifier: keep, message: { touched: true } })
  assert.deepEqual(client.inbox, [])
})

scenario('a Command answer with disconnect writes its transmissions, closes the socket and calls Disconnect', async () => {
  const { user, client, id } = await chatClient()
  client.perform(id, 'kick')
  assert.deepEqual(await client.next(), { identifier: id, message: { bye: true } })
  await client.waitForClose()
  const disconnect = await backend.waitForCall('Disconnect', (r) => r.identifiers === identifiersFor(user))
  assert.deepEqual(disconnect.subscriptions, [id])
})

scenario('commands of one connection are answered in the order they were sent', async () => {
  const { client, id } = await chatClient()
  for (let i = 0; i < 20; i++) client.perform(id, 'echo', { i })
  for (let i = 0; i < 20; i++) assert.deepEqual(await client.next(), { identifier: id, message: { action: 'echo', i } })
})
