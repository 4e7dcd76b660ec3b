// server.presence(stream) in the Node package: the presence set a Channel joined its subscribers to (see
// presence-deployments.test.js for the channel side), with or without its records; a FerrocableError (EPRESENCE)
// without a broker.
import assert from 'node:assert/strict'
import { after, before } from 'node:test'
import { FerrocableError } from 'ferrocable'
import { extClient } from '../lib/clients.js'
import { startInProcess } from '../lib/inprocess-app.js'
import { scenario, unique } from '../lib/harness.js'

let server

before(async () => {
  server = await startInProcess({ options: { broker: 'memory', presenceTtl: 2 } })
})

after(async () => {
  await server?.stop()
})

scenario('in-process: server.presence() returns the members a Channel joined, with their info', async () => {
  const room = unique('room')
  const users = [unique('ann'), unique('bob')]
  for (const user of users) {
    const { cable } = extClient(server.url(), { cookie: `user=${user}` })
    const channel = cable.subscribeTo('PresenceChannel', { room })
    await channel.ensureSubscribed()
    // Answered on the same connection after the join: the member is in the set by then.
    await channel.presence.info()
  }
  const info = await server.server.presence(`presence_${room}`)
  assert.equal(info.total, 2)
  assert.deepEqual(info.records.sort((a, b) => a.id.localeCompare(b.id)), users.sort().map((id) => ({ id, info: { name: id } })))
  assert.deepEqual(await server.server.presence(`presence_${room}`, { records: false }), { total: 2 })
  assert.deepEqual(await server.server.presence(unique('empty')), { total: 0, records: [] })
})

scenario('in-process: server.presence() without a broker rejects with EPRESENCE; a bad stream name is a TypeError', async () => {
  const plain = await startInProcess()
  await assert.rejects(plain.server.presence('anything'), (error) => error instanceof FerrocableError && error.code === 'EPRESENCE')
  await assert.rejects(plain.server.presence(''), TypeError)
})
