// Scenarios of an application written with @anycable/serverless-js, written once and run against each way of
// serving it: the `ferrocable` binary calling it over HTTP RPC (test/http-rpc.test.js) and the same app object,
// unchanged, in-process through `server.handle(app)` (test/inprocess-serverless.test.js). `start()` returns
// `{ server, app, broadcast(stream, data) }` for a running server and the app object it serves.
import assert from 'node:assert/strict'
import { eventually, scenario, unique } from './harness.js'
import { RawClient } from './raw-client.js'
import { UNAUTHORIZED_FRAME } from './serverless-app.js'

export function serverlessScenarios (label, start) {
  scenario(`${label}: a cookie authenticates; no cookie gets serverless-js's unauthorized frame; a throwing connect closes with 1011`, async () => {
    const { server } = await start()
    const user = unique('cookie')
    const client = await RawClient.open(server.url(), { user })
    const welcome = await client.next()
    assert.equal(welcome.type, 'welcome')
    assert.ok(welcome.sid.length > 0, 'the welcome carries the session id the app got')
    const anonymous = await RawClient.open(server.url())
    assert.deepEqual(await anonymous.next(), UNAUTHORIZED_FRAME)
    assert.equal((await anonymous.waitForClose()).code, 1000)
    const failing = await RawClient.open(server.url(), { user: 'boom' })
    assert.equal((await failing.waitForClose()).code, 1011)
  })

  scenario(`${label}: subscribe streams, perform transmits, a rejected subscription is refused`, async () => {
    const { broadcast, server } = await start()
    const client = await RawClient.connect(server.url(), { user: unique('chat') })
    const room = unique('room')
    const id = await client.subscribeConfirmed({ channel: 'ChatChannel', room })
    client.perform(id, 'echo', { text: 'hi' })
    assert.deepEqual(await client.nextMessage(id), { identifier: id, message: { action: 'echo', text: 'hi' } })
    await broadcast(`chat_${room}`, { n: 1 })
    assert.deepEqual(await client.next(), { identifier: id, message: { n: 1 } })
    const secret = client.subscribe({ channel: 'ChatChannel', room: 'secret' })
    assert.deepEqual(await client.next(), { identifier: secret, type: 'reject_subscription' })
  })

  scenario(`${label}: channel state (handle.state) round trips, and unsubscribe and Disconnect hand each channel its state`, async () => {
    const { app, server } = await start()
    const user = unique('state')
    const client = await RawClient.connect(server.url(), { user })
    const chat = await client.subscribeConfirmed({ channel: 'ChatChannel', room: 'lobby' })
    const bare = await client.subscribeConfirmed({ channel: 'BareChannel' })
    client.perform(chat, 'remember', { key: 'draft', value: 'hi' })
    assert.deepEqual((await client.nextMessage(chat)).message, { state: { draft: 'hi' } })
    client.perform(chat, 'remember', { key: 'typing', value: true })
    assert.deepEqual((await client.nextMessage(chat)).message, { state: { draft: 'hi', typing: true } }, 'the state came back')
    client.perform(bare, 'remember', { key: 'mood', value: 'calm' })
    assert.deepEqual((await client.nextMessage(bare)).message, { state: { mood: 'calm' } }, 'each channel has its own state')

    client.unsubscribe(bare)
    const unsubscribed = await eventually(() => app.seen.find((s) => s.hook === 'unsubscribed' && s.identifier === bare))
    assert.deepEqual(unsubscribed.state, { mood: 'calm' })
    assert.deepEqual(unsubscribed.identifiers, { current_user: user })

    client.close()
    const disconnect = await eventually(() => app.seen.find((s) => s.hook === 'disconnect' && s.identifiers?.current_user === user))
    assert.equal(disconnect.cstate.user, user)
    const closing = app.seen.filter((s) => s.hook === 'unsubscribed' && s.identifier === chat)
    assert.equal(closing.length, 1, 'Disconnect unsubscribes every remaining channel once')
    // Disconnect carries every channel's istate JSON-encoded (AnyCable's rule); serverless-js parses it as the
    // channel state, so it sees the subscription's whole istate: its own state under the identifier, and the
    // room key the channel set through handle.env.
    assert.deepEqual(closing[0].state, { [chat]: JSON.stringify({ draft: 'hi', typing: true }), room: 'lobby' })
  })
}
