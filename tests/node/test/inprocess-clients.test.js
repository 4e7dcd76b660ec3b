// The real client libraries against a server embedded in this process with the high-level API:
// @anycable/core, @anycable/web and @rails/actioncable connect, subscribe, receive broadcasts, perform.
import assert from 'node:assert/strict'
import { after, before } from 'node:test'
import { SubscriptionRejectedError } from '@anycable/core'
import { createCable as createWebCable } from '@anycable/web'
import WebSocket from 'ws'
import { identifiersFor, startInProcess } from '../lib/inprocess-app.js'
import { anycableClient, nextEvent, railsConsumer } from '../lib/clients.js'
import { eventually, onScenarioEnd, scenario, unique } from '../lib/harness.js'

let server

before(async () => {
  server = await startInProcess()
})

after(async () => {
  await server?.stop()
})

scenario('in-process @anycable/core: connects, subscribes, receives a broadcast and performs an action', async () => {
  const user = unique('anycable')
  const room = unique('room')
  const cable = anycableClient(server.url(), { user })
  const channel = cable.subscribeTo('ChatChannel', { room })
  await channel.ensureSubscribed()
  const [connect] = server.recorder.callsOf('connect', (r) => r.env.headers.cookie === `user=${user}`)
  assert.equal(cable.sessionId, connect.request.sid, 'the client took the sid from the welcome frame the Application wrote')
  const messages = []
  channel.on('message', (msg) => messages.push(msg))
  await server.broadcast(`chat_${room}`, { text: 'broadcast' })
  await eventually(() => messages.length === 1, { what: 'the broadcast' })
  await channel.perform('echo', { text: 'performed' })
  await eventually(() => messages.length === 2, { what: 'the echo' })
  assert.deepEqual(messages, [{ text: 'broadcast' }, { action: 'echo', text: 'performed' }])
})

scenario('in-process @anycable/core: a rejected subscription and an unauthorized connection', async () => {
  const cable = anycableClient(server.url(), { user: unique('anycable') })
  await assert.rejects(cable.subscribeTo('ChatChannel', { room: 'secret' }).ensureSubscribed(), SubscriptionRejectedError)
  assert.equal(cable.state, 'connected')
  const refused = anycableClient(server.url(), { user: 'bad' })
  const closed = nextEvent((done) => refused.on('close', done), { what: 'the cable to close' })
  refused.connect().catch(() => {})
  assert.equal((await closed).reason, 'unauthorized')
  assert.equal(refused.state, 'closed')
})

scenario('in-process @anycable/core: unsubscribing runs unsubscribed(); disconnect lists what is left', async () => {
  const user = unique('anycable')
  const cable = anycableClient(server.url(), { user })
  const kept = cable.subscribeTo('ChatChannel', { room: unique('kept') })
  const gone = cable.subscribeTo('ChatChannel', { room: unique('gone') })
  await Promise.all([kept.ensureSubscribed(), gone.ensureSubscribed()])
  gone.disconnect()
  await server.recorder.waitForCall('command', (r) => r.command === 'unsubscribe' && r.connectionIdentifiers === identifiersFor(user))
  cable.disconnect()
  const request = await server.recorder.waitForCall('disconnect', (r) => r.identifiers === identifiersFor(user))
  assert.deepEqual(request.subscriptions, [kept.identifier])
})

scenario('in-process @anycable/web: createCable subscribes, receives broadcasts and performs', async () => {
  const user = unique('web')
  const room = unique('room')
  const cable = createWebCable(server.url(), {
    protocol: 'actioncable-v1-json',
    websocketImplementation: WebSocket,
    websocketOptions: { headers: { cookie: `user=${user}` } },
    logLevel: 'error'
  })
  onScenarioEnd(() => cable.disconnect())
  const channel = cable.subscribeTo('ChatChannel', { room })
  await channel.ensureSubscribed()
  const messages = []
  channel.on('message', (msg) => messages.push(msg))
  await channel.perform('echo', { from: 'web' })
  await eventually(() => messages.length === 1, { what: 'the echo' })
  await server.broadcast(`chat_${room}`, { text: 'to web' })
  await eventually(() => messages.length === 2, { what: 'the echo and the broadcast' })
  assert.deepEqual(messages, [{ action: 'echo', from: 'web' }, { text: 'to web' }])
})

scenario('in-process @rails/actioncable: connects, subscribes, receives a broadcast and performs an action', async () => {
  const user = unique('rails')
  const room = unique('room')
  const consumer = railsConsumer(server.url({ client: user }), { user })
  const messages = []
  let subscription
  await nextEvent((connected) => {
    subscription = consumer.subscriptions.create({ channel: 'ChatChannel', room }, { connected, received: (data) => messages.push(data) })
  }, { what: 'the subscription to be confirmed' })
  await server.broadcast(`chat_${room}`, { text: 'broadcast' })
  await eventually(() => messages.length === 1, { what: 'the broadcast' })
  assert.ok(subscription.perform('echo', { text: 'performed' }))
  await eventually(() => messages.length === 2, { what: 'the echo' })
  assert.deepEqual(messages, [{ text: 'broadcast' }, { action: 'echo', text: 'performed' }])
  const [connect] = server.recorder.callsOf('connect', (r) => r.env.headers.cookie === `user=${user}`)
  assert.equal(connect.request.env.url, `http://127.0.0.1:${server.port}/cable?client=${user}`)
})

scenario('in-process @rails/actioncable: rejected subscriptions and perform without data', async () => {
  const user = unique('rails')
  const consumer = railsConsumer(server.url({ client: user }), { user })
  await nextEvent((rejected) => {
    consumer.subscriptions.create({ channel: 'ChatChannel', room: 'secret' }, { rejected })
  }, { what: 'the rejection' })
  const received = []
  let subscription
  await nextEvent((connected) => {
    subscription = consumer.subscriptions.create({ channel: 'BareChannel' }, { connected, received: (data) => received.push(data) })
  }, { what: 'the subscription to be confirmed' })
  subscription.perform('touch')
  await eventually(() => received.length === 1, { what: 'the answer to touch' })
  assert.deepEqual(received, [{ touched: true }])
})
