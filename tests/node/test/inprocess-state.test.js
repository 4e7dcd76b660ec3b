// Connection state (handle.cstate) and channel state (handle.istate) through the high-level API: changes
// are merged by the server, sent back with later calls, and handed to unsubscribed/disconnect.
import assert from 'node:assert/strict'
import { after, before } from 'node:test'
import { identifiersFor, startInProcess } from '../lib/inprocess-app.js'
import { eventually, scenario, unique } from '../lib/harness.js'
import { RawClient } from '../lib/raw-client.js'

let server

before(async () => {
  server = await startInProcess()
})

after(async () => {
  await server?.stop()
})

async function whoami (client, id) {
  client.perform(id, 'whoami')
  return (await client.nextMessage(id)).message
}

async function setState (client, id, changes) {
  client.perform(id, 'set_state', changes)
  await client.roundTrip(id)
}

scenario('in-process: cstate set in connect and istate set in subscribed reach later actions', async () => {
  const user = unique('user')
  const room = unique('room')
  const client = await RawClient.connect(server.url(), { user })
  const id = await client.subscribeConfirmed({ channel: 'ChatChannel', room })
  const me = await whoami(client, id)
  assert.deepEqual(me.identifiers, { current_user: user })
  assert.deepEqual(Object.keys(me.cstate).sort(), ['connected_at', 'user'])
  assert.deepEqual(me.istate, { room })
})

scenario('in-process: set adds or replaces keys, delete (or an empty value) removes them, others stay', async () => {
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
  const [last] = server.recorder.commandsFor(user, (r) => r.data.includes('"lang":"fr"')).map((c) => c.response)
  assert.deepEqual(last.env, { cstate: { theme: '', lang: 'fr' }, istate: { room: '' } }, 'only the changes travel back')
})

scenario('in-process: istate belongs to one subscription while cstate is shared by the connection', async () => {
  const client = await RawClient.connect(server.url(), { user: unique('user') })
  const chat = await client.subscribeConfirmed({ channel: 'ChatChannel', room: unique('room') })
  const bare = await client.subscribeConfirmed({ channel: 'BareChannel' })
  await setState(client, chat, { cstate: { seen: 'chat' }, istate: { draft: 'hello' } })
  const me = await whoami(client, bare)
  assert.equal(me.cstate.seen, 'chat')
  assert.deepEqual(me.istate, {})
})

scenario('in-process: on close, unsubscribed sees each istate and disconnect sees the merged cstate', async () => {
  const user = unique('user')
  const room = unique('room')
  const client = await RawClient.connect(server.url(), { user })
  const chat = await client.subscribeConfirmed({ channel: 'ChatChannel', room })
  const bare = await client.subscribeConfirmed({ channel: 'BareChannel' })
  await setState(client, chat, { cstate: { theme: 'dark', connected_at: '' }, istate: { typing: 'yes' } })
  await setState(client, bare, { istate: { mood: 'happy' } })
  client.close()

  const request = await server.recorder.waitForCall('disconnect', (r) => r.identifiers === identifiersFor(user))
  assert.deepEqual([...request.subscriptions].sort(), [chat, bare].sort())
  assert.deepEqual(request.env.cstate, { user, theme: 'dark' })
  assert.deepEqual(JSON.parse(request.env.istate[chat]), { room, typing: 'yes' })
  assert.deepEqual(JSON.parse(request.env.istate[bare]), { mood: 'happy' })
  assert.equal(request.env.headers.cookie, `user=${user}`)

  const mine = await eventually(() => {
    const found = server.app.closings.filter((c) => c.identifiers?.current_user === user)
    return found.length === 3 && found
  }, { what: 'unsubscribed twice and disconnect once' })
  const byId = Object.fromEntries(mine.filter((c) => c.kind === 'unsubscribed').map((c) => [c.identifier, c.istate]))
  assert.deepEqual(byId, { [chat]: { room, typing: 'yes' }, [bare]: { mood: 'happy' } })
  assert.deepEqual(mine.find((c) => c.kind === 'disconnect').cstate, { user, theme: 'dark' })
})

scenario('in-process: unsubscribe drops the istate of that subscription', async () => {
  const user = unique('user')
  const room = unique('room')
  const client = await RawClient.connect(server.url(), { user })
  const chat = await client.subscribeConfirmed({ channel: 'ChatChannel', room })
  await setState(client, chat, { istate: { draft: 'unsent' } })
  const bare = await client.subscribeConfirmed({ channel: 'BareChannel' })
  client.unsubscribe(chat)
  await client.roundTrip(bare)
  await client.subscribeConfirmed({ channel: 'ChatChannel', room })
  assert.deepEqual((await whoami(client, chat)).istate, { room })
  client.close()
  const request = await server.recorder.waitForCall('disconnect', (r) => r.identifiers === identifiersFor(user))
  assert.deepEqual(JSON.parse(request.env.istate[chat]), { room })
})
