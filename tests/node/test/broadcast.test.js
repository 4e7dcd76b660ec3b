// HTTP broadcast ingress: payload encoding, fan-out, exclude_socket, batches, authentication and
// malformed bodies.
import assert from 'node:assert/strict'
import { after, before } from 'node:test'
import { startBackend } from '../lib/backend.js'
import { broadcast, broadcastOk, scenario, startServer, unique } from '../lib/harness.js'
import { RawClient } from '../lib/raw-client.js'

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

async function listener (room) {
  const client = await RawClient.connect(server.url(), { user: unique('user') })
  const id = await client.subscribeConfirmed({ channel: 'ChatChannel', room })
  return { client, id }
}

scenario('broadcast data that is not JSON arrives as a JSON string', async () => {
  const room = unique('room')
  const { client, id } = await listener(room)
  await broadcastOk(server, { stream: `chat_${room}`, data: 'hello world' })
  assert.deepEqual(await client.next(), { identifier: id, message: 'hello world' })
})

scenario('broadcast data holding a JSON object arrives as that object', async () => {
  const room = unique('room')
  const { client, id } = await listener(room)
  await broadcastOk(server, { stream: `chat_${room}`, data: '{"text":"hi","n":[1,2,{"deep":true}]}' })
  assert.deepEqual(await client.next(), { identifier: id, message: { text: 'hi', n: [1, 2, { deep: true }] } })
})

scenario('broadcast data holding a JSON-encoded string arrives as that string', async () => {
  const room = unique('room')
  const { client, id } = await listener(room)
  await broadcastOk(server, { stream: `chat_${room}`, data: '"already encoded"' })
  assert.deepEqual(await client.next(), { identifier: id, message: 'already encoded' })
  await broadcastOk(server, { stream: `chat_${room}`, data: '42' })
  assert.deepEqual(await client.next(), { identifier: id, message: 42 })
})

scenario('the broadcast frame is exactly {"identifier":…,"message":…} as a text frame', async () => {
  const room = unique('room')
  const user = unique('user')
  const client = await RawClient.connect(server.url(), { user })
  const id = await client.subscribeConfirmed({ channel: 'ChatChannel', room })
  const raw = new Promise((resolve) => client.ws.on('message', (data, isBinary) => {
    const text = data.toString()
    if (!text.includes('"ping"')) resolve({ text, isBinary })
  }))
  await broadcastOk(server, { stream: `chat_${room}`, data: '{"a":1}' })
  const { text, isBinary } = await raw
  assert.equal(isBinary, false)
  assert.deepEqual(JSON.parse(text), { identifier: id, message: { a: 1 } })
})

scenario('one broadcast reaches every client streaming from it', async () => {
  const room = unique('room')
  const listeners = await Promise.all([listener(room), listener(room), listener(room)])
  const bystander = await listener(unique('other'))
  await broadcastOk(server, { stream: `chat_${room}`, data: '{"to":"all"}' })
  for (const { client, id } of listeners) assert.deepEqual(await client.next(), { identifier: id, message: { to: 'all' } })
  await bystander.client.roundTrip(bystander.id)
  assert.deepEqual(bystander.client.inbox, [], 'a client on another stream gets nothing')
})

scenario('a batch of publications is delivered in order', async () => {
  const room = unique('room')
  const { client, id } = await listener(room)
  const batch = Array.from({ length: 10 }, (_, i) => ({ stream: `chat_${room}`, data: JSON.stringify({ i }) }))
  await broadcastOk(server, batch)
  for (let i = 0; i < 10; i++) assert.deepEqual(await client.next(), { identifier: id, message: { i } })
})

scenario('publications on one stream arrive in the order they were accepted', async () => {
  const room = unique('room')
  const { client, id } = await listener(room)
  for (let i = 0; i < 15; i++) await broadcastOk(server, { stream: `chat_${room}`, data: String(i) })
  for (let i = 0; i < 15; i++) assert.deepEqual(await client.next(), { identifier: id, message: i })
})

scenario('meta.exclude_socket skips the connection with that sid only', async () => {
  const room = unique('room')
  const a = await listener(room)
  const b = await listener(room)
  await broadcastOk(server, { stream: `chat_${room}`, data: 'not for a', meta: { exclude_socket: a.client.sid, unknown_field: 1 } })
  assert.deepEqual(await b.client.next(), { identifier: b.id, message: 'not for a' })
  await broadcastOk(server, { stream: `chat_${room}`, data: 'for all' })
  assert.deepEqual(await a.client.next(), { identifier: a.id, message: 'for all' }, 'the excluded connection skipped the first broadcast')
  assert.deepEqual(await b.client.next(), { identifier: b.id, message: 'for all' })
})

scenario('a broadcast with the right key is answered 201', async () => {
  const res = await broadcast(server, { stream: unique('nobody'), data: 'x' })
  assert.equal(res.status, 201)
})

scenario('a broadcast without a key is refused with 401 and delivers nothing', async () => {
  const room = unique('room')
  const { client, id } = await listener(room)
  const res = await broadcast(server, { stream: `chat_${room}`, data: 'no key' }, { key: null })
  assert.equal(res.status, 401)
  await broadcastOk(server, { stream: `chat_${room}`, data: 'with key' })
  assert.deepEqual(await client.next(), { identifier: id, message: 'with key' })
})

scenario('a broadcast with a wrong key is refused with 401 and delivers nothing', async () => {
  const room = unique('room')
  const { client, id } = await listener(room)
  const res = await broadcast(server, { stream: `chat_${room}`, data: 'wrong key' }, { key: 'not-the-key' })
  assert.equal(res.status, 401)
  await broadcastOk(server, { stream: `chat_${room}`, data: 'with key' })
  assert.deepEqual(await client.next(), { identifier: id, message: 'with key' })
})

scenario('a malformed broadcast body is refused with 400 and a message, and the server keeps working', async () => {
  const room = unique('room')
  const { client, id } = await listener(room)
  for (const body of ['{not json', '[{"stream":"s","data":"x"},']) {
    const res = await broadcast(server, body)
    assert.equal(res.status, 400, `body ${JSON.stringify(body)} is refused with 400`)
    assert.ok(res.body.trim().length > 0, `the 400 answer to ${JSON.stringify(body)} says what is wrong`)
  }
  await broadcastOk(server, { stream: `chat_${room}`, data: 'fine' })
  assert.deepEqual(await client.next(), { identifier: id, message: 'fine' })
})
