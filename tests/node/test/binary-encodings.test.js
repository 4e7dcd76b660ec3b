// The MessagePack and Protobuf sub-protocols (plain and extended) with the real @anycable/core client and
// encoders of the suite's own (lib/encoders.js), written once and run against every deployment
// (lib/deployments.js): the binary in front of the gRPC backend, the Node package in-process and the Rails app
// with the gem in-process. A JSON client sits on the same stream throughout and must see nothing change.
import assert from 'node:assert/strict'
import { after, before, describe } from 'node:test'
import { createCable } from '@anycable/core'
import WebSocket from 'ws'
import { BINARY_PROTOCOLS, createBinaryCable } from '../lib/encoders.js'
import { DEPLOYMENTS, startDeployment } from '../lib/deployments.js'
import { eventually, onScenarioEnd, scenario, unique } from '../lib/harness.js'

/** Subscribes `cable` to the chat of `room`; collects what arrives on it. */
async function joinChat (deployment, cable, room) {
  const { channel: name, ...params } = deployment.chatChannel(room)
  const channel = cable.subscribeTo(name, params)
  const received = []
  channel.on('message', (message, meta) => received.push({ message, meta }))
  await channel.ensureSubscribed()
  return { channel, received, messages: () => received.map((r) => r.message) }
}

function jsonCable (url, cookie) {
  const cable = createCable(url, {
    protocol: 'actioncable-v1-json',
    websocketImplementation: WebSocket,
    websocketOptions: { headers: { cookie } },
    logLevel: 'error'
  })
  onScenarioEnd(() => cable.disconnect())
  return cable
}

const has = (list, predicate) => list.some(predicate)

for (const name of DEPLOYMENTS) {
  describe(`binary encodings: ${name}`, () => {
    let deployment

    before(async () => {
      deployment = await startDeployment(name, { broker: 'memory' })
    })

    after(async () => {
      await deployment?.stop()
    })

    for (const encoding of Object.keys(BINARY_PROTOCOLS)) {
      scenario(`${name}: ${BINARY_PROTOCOLS[encoding]} connects, subscribes, performs and gets object and string broadcasts next to a JSON client`, async () => {
        const room = unique('room')
        const jsonUser = unique('json')
        const binaryUser = unique('bin')
        const plain = await joinChat(deployment, jsonCable(deployment.url(), await deployment.cookieFor(jsonUser)), room)
        const cable = createBinaryCable(deployment.url(), encoding, { cookie: await deployment.cookieFor(binaryUser) })
        const chat = await joinChat(deployment, cable, room)
        assert.equal(cable.state, 'connected')

        // perform: the channel transmits the data back, re-encoded for this client.
        await chat.channel.perform('echo', { note: 'héllo', list: [1, 2.5, null], nested: { ok: true } })
        await eventually(() => has(chat.messages(), (m) => m?.action === 'echo'), { what: 'the echo' })
        const echo = chat.messages().find((m) => m?.action === 'echo')
        assert.deepEqual([echo.note, echo.list, echo.nested], ['héllo', [1, 2.5, null], { ok: true }])

        // Broadcasts: an object and a plain string, to both clients, each in its own encoding.
        await deployment.publish(room, 'an object')
        await deployment.publishText(room, 'a <b>plain</b> string')
        for (const client of [chat, plain]) {
          await eventually(() => has(client.messages(), (m) => m?.text === 'an object'), { what: 'the object broadcast' })
          await eventually(() => client.messages().includes('a <b>plain</b> string'), { what: 'the string broadcast' })
        }
        if (encoding.startsWith('ext-')) {
          const positioned = chat.received.find((r) => r.message?.text === 'an object')
          assert.equal(typeof positioned.meta.offset, 'number', 'extended clients get the stream position')
          assert.ok(positioned.meta.epoch, 'and the epoch')
        }
        // The JSON client saw no echo (it was a transmission to the other client) and nothing twice.
        assert.ok(!has(plain.messages(), (m) => m?.action === 'echo'))
        assert.equal(plain.messages().filter((m) => m === 'a <b>plain</b> string').length, 1)

        // The binary client's perform reaches the application like a JSON client's does.
        const calls = await deployment.calls(binaryUser)
        assert.deepEqual(calls, { connects: 1, subscribes: 1 })
        await chat.channel.disconnect()
      }, { timeout: 30000 })
    }
  })
}
