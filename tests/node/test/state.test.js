// Connection state (cstate) and channel state (istate): merged from Connect/Command answers, sent back with
// later calls, and handed to Disconnect; against the RPC backend of FERROCABLE_RPC_BACKEND (grpc or http).
import assert from 'node:assert/strict'
import { after, before } from 'node:test'
import { startRpcBackend, identifiersFor } from '../lib/backend.js'
import { scenario, startServer, unique } from '../lib/harness.js'
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

async function whoami (client, id) {
  client.perform(id, 'whoami')
  const frame = await client.nextMessage(id)
  return frame.message
}

async function setState (client, id, changes) {
  client.perform(id, 'set_state', changes)
  await client.roundTrip(id)
}

function parseIstate (istate) {
  return Object.fromEntries(Object.entries(istate).map(([k, v]) => [k, JSON.parse(v)]))
}

scenario('cstate from Connect and istate from subscribe reach later Commands', async () => {
  const user = unique('user')
  const room = unique('room')
  const client = await RawClient.connect(server.url(), { user })
  const id = await client.subscribeConfirmed({ channel: 'ChatChannel', room })
  const [subscribe] = backend.commandsFor(user)
  assert.deepEqual(subscribe.request.env.istate, {}, 'a new subscription has no istate')
  const me = await whoami(client, id)
  assert.equal(me.identifiers, identifiersFor(user))
  assert.deepEqual(Object.keys(me.cstate).sort(), ['connected_at', 'user'])
  assert.equal(me.cstate.user, user)
  assert.deepEqual(me.istate, { room })
})

scenario('cstate and istate changes merge: new keys are added, empty values delete keys, others stay', async () => {
  const user = unique('user')
  const room = unique('room')
  const client = await RawClient.connect(server.url(), { user })
  const id = await client.subscribeConfirmed({ channel: 'ChatChannel', room })
  const { cstate: initial } = await whoami(client, id)

  await setState(client, id, { cstate: { theme: 'dark', lang: 'en' }, istate: { typing: 'yes' } })
  let me = await whoami(client, id)
  assert.deepEqual(me.cstate, { ...initial, theme: 'dark', lang: 'en' })
  assert.deepEqual(me.istate, { room, typing: 'yes' })

  await setState(client, id, { cstate: { theme: '', lang: 'fr' }, istate: { room: '' } })
  me = await whoami(client, id)
  assert.deepEqual(me.cstate, { ...initial, lang: 'fr' })
  assert.deepEqual(me.istate, { typing: 'yes' })
})

scenario('istate belongs to one subscription while cstate is shared by all of the connection', async () => {
  const user = unique('user')
  const room = unique('room')
  const client = await RawClient.connect(server.url(), { user })
  const chat = await client.subscribeConfirmed({ channel: 'ChatChannel', room })
  const bare = await client.subscribeConfirmed({ channel: 'BareChannel' })
  await setState(client, chat, { cstate: { seen: 'chat' }, istate: { draft: 'hello' } })
  const me = await whoami(client, bare)
  assert.equal(me.cstate.seen, 'chat')
  assert.deepEqual(me.istate, {})
})

scenario('Disconnect receives the subscriptions, the merged cstate and every channel istate JSON-encoded', async () => {
  const user = unique('user')
  const room = unique('room')
  const client = await RawClient.connect(server.url(), { user })
  const chat = await client.subscribeConfirmed({ channel: 'ChatChannel', room })
  const bare = await client.subscribeConfirmed({ channel: 'BareChannel' })
  const { cstate: initial } = await whoami(client, chat)
  await setState(client, chat, { cstate: { theme: 'dark', connected_at: '' }, istate: { typing: 'yes' } })
  await setState(client, bare, { istate: { mood: 'happy' } })
  client.close()

  const disconnect = await backend.waitForCall('Disconnect', (r) => r.identifiers === identifiersFor(user))
  assert.deepEqual([...disconnect.subscriptions].sort(), [chat, bare].sort())
  assert.deepEqual(disconnect.env.cstate, { user: initial.user, theme: 'dark' })
  assert.deepEqual(Object.keys(disconnect.env.istate).sort(), [chat, bare].sort())
  assert.deepEqual(parseIstate(disconnect.env.istate), {
    [chat]: { room, typing: 'yes' },
    [bare]: { mood: 'happy' }
  })
  assert.equal(disconnect.env.url, `http://127.0.0.1:${server.port}/cable`)
  assert.equal(disconnect.env.headers.cookie, `user=${user}`)
})

scenario('unsubscribe drops the istate of that subscription', async () => {
  const user = unique('user')
  const room = unique('room')
  const client = await RawClient.connect(server.url(), { user })
  const chat = await client.subscribeConfirmed({ channel: 'ChatChannel', room })
  await setState(client, chat, { istate: { draft: 'unsent' } })
  const bare = await client.subscribeConfirmed({ channel: 'BareChannel' })
  await setState(client, bare, { istate: { mood: 'gone soon' } })

  client.unsubscribe(chat)
  await client.roundTrip(bare)
  await client.subscribeConfirmed({ channel: 'ChatChannel', room })
  const subscribes = backend.commandsFor(user, (r) => r.command === 'subscribe' && r.identifier === chat)
  assert.equal(subscribes.length, 2)
  assert.deepEqual(subscribes[1].request.env.istate, {}, 'the second subscribe starts without the old istate')
  assert.deepEqual((await whoami(client, chat)).istate, { room })

  client.unsubscribe(bare)
  await client.roundTrip(chat)
  client.close()
  const disconnect = await backend.waitForCall('Disconnect', (r) => r.identifiers === identifiersFor(user))
  assert.deepEqual(disconnect.subscriptions, [chat])
  assert.deepEqual(parseIstate(disconnect.env.istate), { [chat]: { room } })
})
