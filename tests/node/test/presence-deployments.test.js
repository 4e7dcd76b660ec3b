// Presence for channels, written once and run against every deployment (lib/deployments.js): the binary in front
// of the gRPC backend (the Command answer's presence), the Node package (Channel handle.joinPresence) and the Rails
// app (join_presence in an unchanged Action Cable channel). The real @anycable/core client reads the set with
// presence.info() and receives the join and leave events; the in-process applications read it through the server.
import assert from 'node:assert/strict'
import { after, before, describe } from 'node:test'
import { extClient } from '../lib/clients.js'
import { DEPLOYMENTS, startDeployment } from '../lib/deployments.js'
import { eventually, scenario, unique } from '../lib/harness.js'

const OPTIONS = { broker: 'memory', presence_ttl: 2 }

for (const name of DEPLOYMENTS) {
  describe(`presence for channels: ${name}`, () => {
    let deployment

    before(async () => {
      deployment = await startDeployment(name, OPTIONS)
    })

    after(async () => {
      await deployment?.stop()
    })

    /** `user` in the presence channel of `room`, with the presence events and messages it receives. */
    async function inRoom (user, room) {
      const { cable } = extClient(deployment.url(), { cookie: await deployment.cookieFor(user) })
      const { channel: channelName, ...params } = deployment.presenceChannel(room)
      const channel = cable.subscribeTo(channelName, params)
      const events = []
      const messages = []
      channel.on('presence', (event) => events.push(event))
      channel.on('message', (message) => messages.push(message))
      await channel.ensureSubscribed()
      return { channel, events, messages }
    }

    const saw = (member, type, id) =>
      eventually(() => member.events.some((e) => e.type === type && e.id === id), { what: `${type} of ${id}` })

    scenario(`${name}: the channel joins its subscribers; clients and the application read the set; leaving and unsubscribing leave`, async () => {
      const room = unique('room')
      const [ann, bob, carl] = [unique('ann'), unique('bob'), unique('carl')]
      const first = await inRoom(ann, room)
      const second = await inRoom(bob, room)
      await saw(first, 'join', bob)
      assert.deepEqual(first.events.find((e) => e.id === bob), { type: 'join', id: bob, info: { name: bob } })
      assert.deepEqual(await second.channel.presence.info(), { [ann]: { name: ann }, [bob]: { name: bob } })

      // In-process applications read the set through the server (an RPC backend has no call for it).
      if (name !== 'binary') {
        await second.channel.perform('who')
        const who = (await eventually(() => second.messages.find((m) => m.who), { what: 'the who answer' })).who
        assert.equal(who.total, 2)
        assert.deepEqual(who.records.map((r) => r.id).sort(), [ann, bob].sort())
      }

      await first.channel.perform('leave')
      await saw(second, 'leave', ann)
      const third = await inRoom(carl, room)
      assert.deepEqual(Object.keys(await third.channel.presence.info()).sort(), [bob, carl].sort())
      second.channel.disconnect()
      await saw(third, 'leave', bob)
    }, { timeout: 30000 })
  })
}
