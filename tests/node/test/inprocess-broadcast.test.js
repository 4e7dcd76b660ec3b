// Broadcasts from JavaScript straight into the Rust hub (server.broadcast / broadcastMany): payload
// encoding, fan-out, order, excludeSocket; and the HTTP broadcast endpoint next to it.
import assert from 'node:assert/strict'
import { after, before } from 'node:test'
import { BROADCAST_KEY, startInProcess } from '../lib/inprocess-app.js'
import { scenario, unique } from '../lib/harness.js'
import { RawClient } from '../lib/raw-client.js'

let server

before(async () => {
  server = await startInProcess()
})

after(async () => {
  await server?.stop()
})

async function listener (room) {
  const client = await RawClient.connect(server.url(), { user: unique('user') })
  const id = await client.subscribeConfirmed({ channel: 'ChatChannel', room })
  return { client, id }
}

function httpBroadcast (body, key = BROADCAST_KEY) {
  const headers = { 'content-type': 'application/json' }
  if (key) headers.authorization = `Bearer ${key}`
  return fetch(server.server.address.broadcastUrl, { method: 'POST', headers, body: typeof body === 'string' ? body : JSON.stringify(body) })
}

scenario('in-process broadcast: a string that is not JSON arrives as a JSON string, JSON text as its value', async () => {
  const room = unique('room')
  const { client, id } = await listener(room)
  await server.broadcast(`chat_${room}`, 'hello world')
  assert.deepEqual(await client.next(), { identifier: id, message: 'hello world' })
  await server.broadcast(`chat_${room}`, '{"text":"hi","n":[1,2,{"deep":true}]}')
  assert.deepEqual(await client.next(), { identifier: id, message: { text: 'hi', n: [1, 2, { deep: true }] } })
  await server.broadcast(`chat_${room}`, '"already encoded"')
  assert.deepEqual(await client.next(), { identifier: id, message: 'already encoded' })
})

scenario('in-process broadcast: objects, arrays and numbers are sent as JSON', async () => {
  const room = unique('room')
  const { client, id } = await listener(room)
  await server.broadcast(`chat_${room}`, { a: 1, b: [true, null] })
  await server.broadcast(`chat_${room}`, [1, 'two'])
  await server.broadcast(`chat_${room}`, 42)
  assert.deepEqual(await client.next(), { identifier: id, message: { a: 1, b: [true, null] } })
  assert.deepEqual(await client.next(), { identifier: id, message: [1, 'two'] })
  assert.deepEqual(await client.next(), { identifier: id, message: 42 })
})

scenario('in-process broadcast: the frame is exactly {"identifier":…,"message":…} as a text frame', async () => {
  const room = unique('room')
  const { client, id } = await listener(room)
  const raw = new Promise((resolve) => client.ws.on('message', (data, isBinary) => {
    const text = data.toString()
    if (!text.includes('"ping"')) resolve({ text, isBinary })
  }))
  await server.broadcast(`chat_${room}`, { a: 1 })
  const { text, isBinary } = await raw
  assert.equal(isBinary, false)
  assert.equal(text, JSON.stringify({ identifier: id, message: { a: 1 } }))
})

scenario('in-process broadcast: one broadcast reaches every client on the stream and nobody else', async () => {
  const room = unique('room')
  const listeners = await Promise.all([listener(room), listener(room), listener(room)])
  const bystander = await listener(unique('other'))
  await server.broadcast(`chat_${room}`, { to: 'all' })
  for (const { client, id } of listeners) assert.deepEqual(await client.next(), { identifier: id, message: { to: 'all' } })
  await bystander.client.roundTrip(bystander.id)
  assert.deepEqual(bystander.client.inbox, [])
})

scenario('in-process broadcastMany: publications are delivered in order, across streams too', async () => {
  const [r1, r2] = [unique('room'), unique('room')]
  const client = await RawClient.connect(server.url(), { user: unique('user') })
  const id = await client.subscribeConfirmed({ channel: 'MultiChannel', streams: [`chat_${r1}`, `chat_${r2}`] })
  const batch = Array.from({ length: 10 }, (_, i) => ({ stream: `chat_${i % 2 ? r1 : r2}`, data: { i } }))
  await server.server.broadcastMany(batch)
  const got = []
  for (let i = 0; i < 10; i++) got.push((await client.next()).message.i)
  assert.deepEqual(got.filter((i) => i % 2), [1, 3, 5, 7, 9], 'per-stream order holds')
  assert.deepEqual(got.filter((i) => i % 2 === 0), [0, 2, 4, 6, 8])
})

scenario('in-process broadcast: publications on one stream arrive in the order they were made', async () => {
  const room = unique('room')
  const { client, id } = await listener(room)
  await Promise.all(Array.from({ length: 30 }, (_, i) => server.broadcast(`chat_${room}`, String(i))))
  for (let i = 0; i < 30; i++) assert.deepEqual(await client.next(), { identifier: id, message: i })
})

scenario('in-process broadcast: excludeSocket skips the session with that sid only', async () => {
  const room = unique('room')
  const a = await listener(room)
  const b = await listener(room)
  await server.broadcast(`chat_${room}`, 'not for a', { excludeSocket: a.client.sid })
  assert.deepEqual(await b.client.next(), { identifier: b.id, message: 'not for a' })
  await server.broadcast(`chat_${room}`, 'for all')
  assert.deepEqual(await a.client.next(), { identifier: a.id, message: 'for all' })
  assert.deepEqual(await b.client.next(), { identifier: b.id, message: 'for all' })
})

scenario('in-process broadcast: bad arguments are TypeErrors, nothing is sent', async () => {
  await assert.rejects(server.broadcast('', 'x'), TypeError)
  await assert.rejects(server.broadcast('s', undefined), TypeError)
  await assert.rejects(server.server.broadcastMany('nope'), TypeError)
})

scenario('in-process: the HTTP broadcast endpoint works beside it, with the key (201, 401, 400)', async () => {
  const room = unique('room')
  const { client, id } = await listener(room)
  assert.equal((await httpBroadcast({ stream: `chat_${room}`, data: 'no key' }, null)).status, 401)
  assert.equal((await httpBroadcast({ stream: `chat_${room}`, data: 'wrong' }, 'wrong-key')).status, 401)
  const bad = await httpBroadcast('{not json')
  assert.equal(bad.status, 400)
  assert.ok((await bad.text()).trim().length > 0)
  assert.equal((await httpBroadcast({ stream: `chat_${room}`, data: '{"via":"http"}' })).status, 201)
  assert.deepEqual(await client.next(), { identifier: id, message: { via: 'http' } })
})
