// How the Application answers: synchronous channel callbacks without a Promise, asynchronous ones with one,
// and a disconnect that runs every unsubscribed in order.
import assert from 'node:assert/strict'
import { Application, Channel } from 'ferrocable'
import { scenario } from '../lib/harness.js'

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

class SyncChannel extends Channel {
  subscribed (handle) { handle.streamFrom('sync') }
  ping (handle) { handle.transmit('pong') }
  unsubscribed () { this.log.push('sync') }
}

class AsyncChannel extends Channel {
  async subscribed (handle) { handle.streamFrom('async') }
  async ping (handle) { handle.transmit('pong') }
  async unsubscribed () { await sleep(5); this.log.push('async') }
}

class ThrowingChannel extends Channel {
  unsubscribed () { this.log.push('throwing'); throw new Error('unsubscribed exploded') }
}

function appWith (log) {
  const app = new Application()
  app.disconnect = () => { log.push('disconnect') }
  for (const [name, Base] of [['Sync', SyncChannel], ['Async', AsyncChannel], ['Throwing', ThrowingChannel]]) {
    app.registerChannel(name, class extends Base { log = log })
  }
  return app.handlers(null)
}

const env = { url: 'ws://localhost/cable', headers: {}, cstate: {}, istate: {} }

scenario('in-process answers: an Application answers synchronous callbacks without a Promise, asynchronous ones with one', async () => {
  const handlers = appWith([])
  const command = (channel, cmd, data = '') => handlers.command({ sid: 's', command: cmd, identifier: JSON.stringify({ channel }), connectionIdentifiers: '{}', data, env })
  const sync = command('Sync', 'message', JSON.stringify({ action: 'ping' }))
  assert.ok(!(sync instanceof Promise), 'a synchronous action is answered at once')
  assert.deepEqual(sync.transmissions, [JSON.stringify({ identifier: JSON.stringify({ channel: 'Sync' }), message: 'pong' })])
  assert.ok(!(command('Sync', 'subscribe') instanceof Promise))
  assert.ok(!(handlers.connect({ sid: 's', env }) instanceof Promise), 'the default connect is synchronous')
  const pending = command('Async', 'subscribe')
  assert.ok(pending instanceof Promise, 'an async callback gives a Promise')
  assert.deepEqual((await pending).streams, ['async'])
  assert.deepEqual((await command('Async', 'message', JSON.stringify({ action: 'ping' }))).transmissions.length, 1)
})

scenario('in-process answers: Application disconnect runs every unsubscribed in order, sync or async, then disconnect, and fails with the first error', async () => {
  const log = []
  const handlers = appWith(log)
  const subscriptions = ['Sync', 'Throwing', 'Async', 'Sync'].map((channel) => JSON.stringify({ channel }))
  await assert.rejects(
    Promise.resolve(handlers.disconnect({ sid: 's', identifiers: '{}', subscriptions, env })),
    /unsubscribed exploded/
  )
  assert.deepEqual(log, ['sync', 'throwing', 'async', 'sync', 'disconnect'])
  log.length = 0
  const syncOnly = handlers.disconnect({ sid: 's', identifiers: '{}', subscriptions: [subscriptions[0]], env })
  assert.deepEqual(syncOnly, { status: 'SUCCESS' }, 'all synchronous: answered at once')
  assert.deepEqual(log, ['sync', 'disconnect'])
})
