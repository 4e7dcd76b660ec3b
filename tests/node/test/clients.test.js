// The real client libraries against ferrocable and the gRPC backend: @anycable/core and
// @rails/actioncable connect, subscribe, receive broadcasts and perform actions.
import assert from 'node:assert/strict'
import { after, before } from 'node:test'
import { startBackend, identifiersFor } from '../lib/backend.js'
import { anycableClient, nextEvent, railsConsumer } from '../lib/clients.js'
import { SubscriptionRejectedError } from '@anycable/core'
import { broadcastOk, eventually, scenario, startServer, unique } from '../lib/harness.js'

let backend
let server

before(async () => {
  backend = await startBackend()
  server = await startServer({ rpcPort: backend.port })
})

after(async () => {
  await server?.stop()
  await backend?.stop()
})

scenario('@anycable/core connects, subscribes, receives a broadcast and performs an action', async () => {
  const user = unique('anycable')
  const room = unique('room')
  const cable = anycableClient(server.url(), { user })
  const channel = cable.subscribeTo('ChatChannel', { room })
  await channel.ensureSubscribed()
  assert.equal(cable.state, 'connected')
  const [connect] = backend.callsOf('Connect', (r) => r.env.headers.cookie === `user=${user}`)
  assert.equal(cable.sessionId, connect.sid, 'the client took the sid from the welcome frame')

  const messages = []
  channel.on('message', (msg) => messages.push(msg))
  await broadcastOk(server, { stream: `chat_${room}`, data: '{"text":"broadcast"}' })
  await eventually(() => messages.length === 1, { what: 'the broadcast' })
  await channel.perform('echo', { text: 'performed' })
  await eventually(() => messages.length === 2, { what: 'the echo' })
  assert.deepEqual(messages, [{ text: 'broadcast' }, { action: 'echo', text: 'performed' }])

  const [echo] = backend.commandsFor(user, (r) => r.command === 'message')
  assert.deepEqual(JSON.parse(echo.request.data), { action: 'echo', text: 'performed' })
  assert.equal(echo.request.identifier, channel.identifier)
})

scenario('@anycable/core reports a rejected subscription', async () => {
  const cable = anycableClient(server.url(), { user: unique('anycable') })
  const channel = cable.subscribeTo('ChatChannel', { room: 'secret' })
  await assert.rejects(channel.ensureSubscribed(), SubscriptionRejectedError)
  assert.equal(cable.state, 'connected', 'the connection stays up')
})

scenario('@anycable/core sees an unauthorized connection closed for good', async () => {
  const cable = anycableClient(server.url(), { user: 'bad' })
  const closed = nextEvent((done) => cable.on('close', done), { what: 'the cable to close' })
  cable.connect().catch(() => {})
  const event = await closed
  assert.equal(event.reason, 'unauthorized')
  assert.equal(cable.state, 'closed')
})

scenario('@anycable/core unsubscribing calls Command unsubscribe and Disconnect lists what is left', async () => {
  const user = unique('anycable')
  const cable = anycableClient(server.url(), { user })
  const kept = cable.subscribeTo('ChatChannel', { room: unique('kept') })
  const gone = cable.subscribeTo('ChatChannel', { room: unique('gone') })
  await Promise.all([kept.ensureSubscribed(), gone.ensureSubscribed()])
  gone.disconnect()
  await backend.waitForCall('Command', (r) => r.command === 'unsubscribe' && r.connection_identifiers === identifiersFor(user))
  cable.disconnect()
  const disconnect = await backend.waitForCall('Disconnect', (r) => r.identifiers === identifiersFor(user))
  assert.deepEqual(disconnect.subscriptions, [kept.identifier])
})

scenario('@rails/actioncable connects, subscribes, receives a broadcast and performs an action', async () => {
  const user = unique('rails')
  const room = unique('room')
  const consumer = railsConsumer(server.url({ client: user }), { user })
  const messages = []
  let subscription
  await nextEvent((connected) => {
    subscription = consumer.subscriptions.create({ channel: 'ChatChannel', room }, {
      connected,
      received: (data) => messages.push(data)
    })
  }, { what: 'the subscription to be confirmed' })
  assert.equal(consumer.connection.getProtocol(), 'actioncable-v1-json')

  await broadcastOk(server, { stream: `chat_${room}`, data: '{"text":"broadcast"}' })
  await eventually(() => messages.length === 1, { what: 'the broadcast' })
  assert.ok(subscription.perform('echo', { text: 'performed' }), 'perform was sent')
  await eventually(() => messages.length === 2, { what: 'the echo' })
  assert.deepEqual(messages, [{ text: 'broadcast' }, { text: 'performed', action: 'echo' }])

  const [subscribe] = backend.commandsFor(user, (r) => r.command === 'subscribe')
  assert.equal(subscribe.request.identifier, subscription.identifier)
  const [connect] = backend.callsOf('Connect', (r) => r.env.headers.cookie === `user=${user}`)
  assert.equal(connect.request.env.url, `http://127.0.0.1:${server.port}/cable?client=${user}`)
})

scenario('@rails/actioncable is told when a subscription is rejected', async () => {
  const user = unique('rails')
  const consumer = railsConsumer(server.url({ client: user }), { user })
  await nextEvent((rejected) => {
    consumer.subscriptions.create({ channel: 'ChatChannel', room: 'secret' }, { rejected })
  }, { what: 'the rejection' })
  assert.equal(consumer.subscriptions.subscriptions.length, 0)
})

scenario('@rails/actioncable perform without data still reaches the action', async () => {
  const user = unique('rails')
  const consumer = railsConsumer(server.url({ client: user }), { user })
  const received = []
  let subscription
  await nextEvent((connected) => {
    subscription = consumer.subscriptions.create({ channel: 'BareChannel' }, {
      connected,
      received: (data) => received.push(data)
    })
  }, { what: 'the subscription to be confirmed' })
  subscription.perform('touch')
  await eventually(() => received.length === 1, { what: 'the answer to touch' })
  assert.deepEqual(received, [{ touched: true }])
})
