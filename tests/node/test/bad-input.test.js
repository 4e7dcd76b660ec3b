// Misbehaving clients: every bad input is ignored or ends only the offending connection, and a
// well-behaved client on the same server keeps working throughout.
import assert from 'node:assert/strict'
import { after, before } from 'node:test'
import { startBackend, identifiersFor } from '../lib/backend.js'
import { broadcastOk, scenario, startServer, unique } from '../lib/harness.js'
import { RawClient } from '../lib/raw-client.js'

let backend
let server

before(async () => {
  backend = await startBackend()
  server = await startServer({ rpcPort: backend.port, args: ['--max_message_size', '1024'] })
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

/** Proves a client still gets answers to its commands and broadcasts on its stream. */
async function assertServes ({ client, id, room }) {
  await client.roundTrip(id)
  await broadcastOk(server, { stream: `chat_${room}`, data: '{"still":"here"}' })
  assert.deepEqual(await client.next(), { identifier: id, message: { still: 'here' } })
}

scenario('a frame that is not JSON is ignored and the connection stays open', async () => {
  const good = await chatClient()
  const bad = await chatClient()
  bad.client.send('this is not json {')
  bad.client.send('')
  await assertServes(bad)
  assert.deepEqual(bad.client.inbox, [])
  await assertServes(good)
})

scenario('JSON that is not a command object is ignored and the connection stays open', async () => {
  const good = await chatClient()
  const bad = await chatClient()
  for (const frame of ['[1,2,3]', '"subscribe"', 'null', '42', '{"identifier":"x"}', '{"command":42}']) bad.client.send(frame)
  await assertServes(bad)
  assert.deepEqual(bad.client.inbox, [])
  await assertServes(good)
})

scenario('an unknown command is ignored without an RPC call', async () => {
  const good = await chatClient()
  const bad = await chatClient()
  bad.client.send({ command: 'dance', identifier: bad.id, data: '{"action":"echo"}' })
  await assertServes(bad)
  assert.deepEqual(bad.client.inbox, [])
  assert.deepEqual(backend.commandsFor(bad.user, (r) => r.command === 'dance'), [])
  await assertServes(good)
})

scenario('message and unsubscribe for an identifier never subscribed make no RPC call', async () => {
  const good = await chatClient()
  const bad = await chatClient()
  const unknown = JSON.stringify({ channel: 'ChatChannel', room: 'never-subscribed' })
  bad.client.perform(unknown, 'echo', { x: 1 })
  bad.client.unsubscribe(unknown)
  await assertServes(bad)
  assert.deepEqual(backend.commandsFor(bad.user, (r) => r.identifier === unknown), [])
  assert.deepEqual(bad.client.inbox, [])
  await assertServes(good)
})

scenario('a duplicate subscribe makes no second Command RPC and gets no second confirmation', async () => {
  const good = await chatClient()
  const bad = await chatClient()
  bad.client.send({ command: 'subscribe', identifier: bad.id })
  await assertServes(bad)
  assert.equal(backend.commandsFor(bad.user, (r) => r.command === 'subscribe').length, 1)
  assert.deepEqual(bad.client.inbox.filter((f) => f.type === 'confirm_subscription'), [])
  await assertServes(good)
})

scenario('a frame larger than max_message_size closes that connection with 1009', async () => {
  const good = await chatClient()
  const bad = await chatClient()
  bad.client.perform(bad.id, 'echo', { filler: 'x'.repeat(2048) })
  const { code } = await bad.client.waitForClose()
  assert.equal(code, 1009)
  await backend.waitForCall('Disconnect', (r) => r.identifiers === identifiersFor(bad.user))
  assert.deepEqual(backend.commandsFor(bad.user, (r) => r.command === 'message'), [], 'the oversize command never reached the backend')
  await assertServes(good)
})

scenario('a client that keeps writing after an oversize frame still gets 1009, not a reset (1006)', async () => {
  const good = await chatClient()
  const bad = await chatClient()
  // A reset shows as an error on the socket (ECONNRESET or EPIPE on a write) before or instead of the close.
  const socketErrors = []
  bad.client.ws._socket.on('error', (error) => socketErrors.push(error.code))
  bad.client.perform(bad.id, 'echo', { filler: 'x'.repeat(2048) })
  // The ws library writes on regardless while the close is on its way, as a busy application would.
  const writes = setInterval(() => {
    if (bad.client.ws.readyState === bad.client.ws.OPEN) bad.client.ws.send('x'.repeat(900))
  }, 5)
  try {
    const { code } = await bad.client.waitForClose()
    assert.equal(code, 1009)
    assert.deepEqual(socketErrors, [], 'the server drained what the client still sent instead of resetting')
  } finally {
    clearInterval(writes)
  }
  await assertServes(good)
})

scenario('a frame just under max_message_size is accepted', async () => {
  const { client, id } = await chatClient()
  const envelope = JSON.stringify({ command: 'message', identifier: id, data: JSON.stringify({ action: 'echo', filler: '' }) })
  const filler = 'y'.repeat(1000 - envelope.length)
  client.perform(id, 'echo', { filler })
  const frame = await client.nextMessage(id)
  assert.equal(frame.message.filler, filler)
})

scenario('a binary frame is ignored and the connection stays open', async () => {
  const good = await chatClient()
  const bad = await chatClient()
  bad.client.sendBinary(Buffer.from([0xff, 0x00, 0xfe, 0x7b, 0x22]))
  await assertServes(bad)
  assert.deepEqual(bad.client.inbox, [])
  await assertServes(good)
})

scenario('a client dropping its TCP connection without a close frame still gets Disconnect', async () => {
  const good = await chatClient()
  const bad = await chatClient()
  bad.client.ws._socket.destroy()
  const disconnect = await backend.waitForCall('Disconnect', (r) => r.identifiers === identifiersFor(bad.user))
  assert.deepEqual(disconnect.subscriptions, [bad.id])
  await assertServes(good)
})

scenario('many clients connecting and vanishing at once leave the server serving others', async () => {
  const good = await chatClient()
  const users = Array.from({ length: 30 }, () => unique('burst'))
  const clients = await Promise.all(users.map((user) => RawClient.connect(server.url(), { user })))
  for (const [i, client] of clients.entries()) {
    if (i % 2 === 0) client.terminate()
    else client.close()
  }
  for (const user of users) await backend.waitForCall('Disconnect', (r) => r.identifiers === identifiersFor(user))
  await assertServes(good)
})
