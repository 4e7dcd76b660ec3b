// Reliable streams and resumable sessions with the real @anycable/core client over actioncable-v1-ext-json,
// written once and run against every deployment (lib/deployments.js): the binary in front of the gRPC
// backend, the Node package in-process, and the Rails app with the gem in-process. Each runs with the memory
// broker, a 5-message history and a 2-second session cache.
import assert from 'node:assert/strict'
import { after, before, describe } from 'node:test'
import { createCable } from '@anycable/core'
import WebSocket from 'ws'
import { extClient, nextEvent } from '../lib/clients.js'
import { DEPLOYMENTS, startDeployment } from '../lib/deployments.js'
import { eventually, onScenarioEnd, scenario, unique } from '../lib/harness.js'

const OPTIONS = { broker: 'memory', history_limit: 5, sessions_ttl: 2 }

/** Subscribes `cable` to the chat of `room`; collects each message's text and stream position. */
async function joinChat (deployment, cable, room) {
  const { channel: name, ...params } = deployment.chatChannel(room)
  const channel = cable.subscribeTo(name, params)
  const received = []
  const infos = []
  channel.on('message', (message, meta) => {
    if (message?.text !== undefined) received.push({ text: message.text, meta })
  })
  channel.on('info', (info) => infos.push(info.type))
  await channel.ensureSubscribed()
  return { channel, received, texts: () => received.map((m) => m.text), infos }
}

async function publishAll (deployment, room, texts) {
  for (const text of texts) await deployment.publish(room, text)
}

for (const name of DEPLOYMENTS) {
  describe(`reliable streams: ${name}`, () => {
    let deployment

    before(async () => {
      deployment = await startDeployment(name, OPTIONS)
    })

    after(async () => {
      await deployment?.stop()
    })

    scenario(`${name}: a dropped client is restored without Connect or Subscribe and gets exactly what it missed, in order`, async () => {
      const user = unique('user')
      const room = unique('room')
      const { cable, kill } = extClient(deployment.url(), { cookie: await deployment.cookieFor(user) })
      const chat = await joinChat(deployment, cable, room)
      await deployment.publish(room, 'live-1')
      await eventually(() => chat.texts().includes('live-1'), { what: 'the first live message' })
      const callsBefore = await deployment.calls(user)
      assert.deepEqual(callsBefore, { connects: 1, subscribes: 1 })

      const reconnected = nextEvent((cb) => cable.once('connect', cb), { timeout: 10000, what: 'the reconnect' })
      kill()
      const missed = ['missed-1', 'missed-2', 'missed-3', 'missed-4']
      await publishAll(deployment, room, missed)
      const event = await reconnected
      assert.equal(event.restored, true, 'the session was restored')
      await eventually(() => chat.infos.includes('history_received'), { what: 'confirm_history' })
      await deployment.publish(room, 'live-2')
      await eventually(() => chat.texts().includes('live-2'), { what: 'the live message after the restore' })
      assert.deepEqual(chat.texts(), ['live-1', ...missed, 'live-2'], 'each message once, in order')
      const offsets = chat.received.map((m) => m.meta.offset)
      assert.deepEqual(offsets, [...offsets].sort((a, b) => a - b), 'positions only go forward')
      assert.deepEqual(await deployment.calls(user), callsBefore, 'no Connect or Subscribe reached the application')
    }, { timeout: 30000 })

    scenario(`${name}: after sessions_ttl the client connects anew and its history request replays what it missed`, async () => {
      const user = unique('user')
      const room = unique('room')
      const { cable } = extClient(deployment.url(), { cookie: await deployment.cookieFor(user) })
      const chat = await joinChat(deployment, cable, room)
      await deployment.publish(room, 'before')
      await eventually(() => chat.texts().includes('before'), { what: 'the first message' })
      cable.disconnect()
      await publishAll(deployment, room, ['away-1', 'away-2'])
      // Longer than sessions_ttl (2 s): the cached session is gone.
      await new Promise((resolve) => setTimeout(resolve, 3200))
      const connected = nextEvent((cb) => cable.once('connect', cb), { timeout: 10000, what: 'the new connection' })
      cable.connect()
      assert.equal((await connected).restored, false, 'not restored: the session expired')
      await eventually(() => chat.texts().includes('away-2'), { what: 'the replayed messages' })
      await deployment.publish(room, 'after')
      await eventually(() => chat.texts().includes('after'), { what: 'the live message' })
      assert.deepEqual(chat.texts(), ['before', 'away-1', 'away-2', 'after'])
      assert.deepEqual(await deployment.calls(user), { connects: 2, subscribes: 2 }, 'a normal Connect and Subscribe')
    }, { timeout: 30000 })

    scenario(`${name}: history trimmed past history_limit is refused with reject_history and live delivery goes on`, async () => {
      const user = unique('user')
      const room = unique('room')
      const { cable } = extClient(deployment.url(), { cookie: await deployment.cookieFor(user) })
      const chat = await joinChat(deployment, cable, room)
      // A publication is stored before it is delivered: once this subscriber of the room has the last one, the
      // history holds all of them (a broadcast call returns once the server has taken the publication).
      const watcher = extClient(deployment.url(), { cookie: await deployment.cookieFor(unique('user')) })
      const watched = await joinChat(deployment, watcher.cable, room)
      await deployment.publish(room, 'seen')
      await eventually(() => chat.texts().includes('seen'), { what: 'the first message' })
      cable.disconnect()
      // Eight while away, five kept: the three after `seen` are gone.
      await publishAll(deployment, room, Array.from({ length: 8 }, (_, n) => `away-${n + 1}`))
      await eventually(() => watched.texts().includes('away-8'), { what: 'the last publication stored' })
      watcher.cable.disconnect()
      const connected = nextEvent((cb) => cable.once('connect', cb), { timeout: 10000, what: 'the reconnect' })
      cable.connect()
      assert.equal((await connected).restored, true)
      await eventually(() => chat.infos.includes('history_not_found'), { what: 'reject_history' })
      assert.deepEqual(chat.texts(), ['seen'], 'nothing replayed from a history with a gap')
      await deployment.publish(room, 'live')
      await eventually(() => chat.texts().includes('live'), { what: 'the live message' })
      // The application's answer to a gap: subscribe again, which asks for history by time.
      const other = extClient(deployment.url(), { cookie: await deployment.cookieFor(user) })
      const fresh = await joinChat(deployment, other.cable, room)
      await deployment.publish(room, 'again')
      await eventually(() => fresh.texts().includes('again'), { what: 'delivery to the new subscription' })
    }, { timeout: 30000 })

    scenario(`${name}: a plain JSON client and an extended client on one stream get the same broadcasts, each in its format`, async () => {
      const room = unique('room')
      const ext = extClient(deployment.url(), { cookie: await deployment.cookieFor(unique('user')) })
      const cookie = await deployment.cookieFor(unique('user'))
      const plain = createCable(deployment.url(), {
        protocol: 'actioncable-v1-json',
        websocketImplementation: WebSocket,
        websocketOptions: { headers: { cookie } },
        logLevel: 'error'
      })
      onScenarioEnd(() => plain.disconnect())
      const [extChat, plainChat] = [await joinChat(deployment, ext.cable, room), await joinChat(deployment, plain, room)]
      await publishAll(deployment, room, ['one', 'two'])
      await eventually(() => extChat.texts().length === 2 && plainChat.texts().length === 2, { what: 'both messages on both clients' })
      assert.deepEqual(extChat.texts(), plainChat.texts())
      assert.deepEqual(extChat.received.map((m) => typeof m.meta?.offset), ['number', 'number'], 'positions for the extended client')
      assert.equal(extChat.received[1].meta.offset, extChat.received[0].meta.offset + 1)
      assert.deepEqual(plainChat.received.map((m) => m.meta), [undefined, undefined], 'the plain client gets plain frames')
    }, { timeout: 30000 })

    // Restarts the deployment: last, so the others share one process.
    scenario(`${name}: after a restart the memory broker has a new epoch: old positions are refused and new ones carry it`, async () => {
      const user = unique('user')
      const room = unique('room')
      const { cable } = extClient(deployment.url(), { cookie: await deployment.cookieFor(user) })
      const chat = await joinChat(deployment, cable, room)
      await deployment.publish(room, 'old')
      await eventually(() => chat.texts().includes('old'), { what: 'the first message' })
      const reconnected = nextEvent((cb) => cable.once('connect', cb), { timeout: 60000, what: 'the reconnect' })
      await deployment.restart()
      assert.equal((await reconnected).restored, false, 'the cache went with the old process')
      await eventually(() => chat.infos.includes('history_not_found'), { what: 'reject_history for the old epoch' })
      await deployment.publish(room, 'new')
      await eventually(() => chat.texts().includes('new'), { what: 'the first message of the new epoch' })
      const [old, fresh] = chat.received
      assert.notEqual(fresh.meta.epoch, old.meta.epoch)
      assert.equal(fresh.meta.offset, 1)
    }, { timeout: 90000 })
  })
}
