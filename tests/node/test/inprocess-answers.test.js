// How a handler's answer reaches the server: a plain value at once, a Promise or any other thenable when it
// settles, each call by its own id, so concurrent calls that settle out of order get their own answers and
// an answer after the time limit is dropped. The Application answers synchronous channels without a Promise.
import assert from 'node:assert/strict'
import { Application, Channel, State } from 'ferrocable'
import { startInProcess } from '../lib/inprocess-app.js'
import { eventually, runNodeScript, scenario } from '../lib/harness.js'
import { RawClient } from '../lib/raw-client.js'

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

function welcome ({ sid }) {
  return { status: 'SUCCESS', identifiers: '{}', transmissions: [JSON.stringify({ type: 'welcome', sid })] }
}

function confirm (identifier) {
  return { status: 'SUCCESS', transmissions: [JSON.stringify({ identifier, type: 'confirm_subscription' })] }
}

function echo (identifier, message) {
  return { status: 'SUCCESS', transmissions: [JSON.stringify({ identifier, message })] }
}

/** Low-level handlers whose `message` answers are made by `answer(identifier, data)`. */
async function serve (answer, { options, onError } = {}) {
  return startInProcess({
    handlers: {
      connect: welcome,
      command: ({ command, identifier, data }) => command === 'subscribe' ? confirm(identifier) : answer(identifier, JSON.parse(data))
    },
    options,
    onError,
    record: false
  })
}

scenario('in-process answers: a plain value, a Promise and a foreign thenable are each answered', async () => {
  const local = await serve((identifier, { action }) => {
    const response = echo(identifier, { via: action })
    if (action === 'plain') return response
    if (action === 'promise') return sleep(5).then(() => response)
    return { then (resolve) { setTimeout(() => resolve(response), 5) } }
  })
  const client = await RawClient.connect(local.url())
  const id = await client.subscribeConfirmed({ channel: 'Any' })
  for (const action of ['plain', 'promise', 'thenable']) {
    client.perform(id, action)
    assert.deepEqual(await client.next(), { identifier: id, message: { via: action } })
  }
})

scenario('in-process answers: lists of none, one and several items and the disconnect and stopStreams flags each reach the server', async () => {
  // Lists cross into Rust as their lone item or as the array, and the two booleans as flags: every shape.
  const local = await startInProcess({
    handlers: {
      connect: welcome,
      command ({ command, identifier, data }) {
        const { streams } = JSON.parse(identifier)
        if (command === 'subscribe') {
          return { status: 'SUCCESS', streams, transmissions: [JSON.stringify({ identifier, type: 'confirm_subscription' })] }
        }
        const { action, count, stop } = JSON.parse(data)
        const messages = Array.from({ length: count ?? 0 }, (_, n) => JSON.stringify({ identifier, message: { n } }))
        if (action === 'say') return { status: 'SUCCESS', transmissions: messages }
        if (action === 'stop') return { status: 'SUCCESS', stoppedStreams: stop, transmissions: messages }
        if (action === 'stopAll') return { status: 'SUCCESS', stopStreams: true, transmissions: messages }
        return { status: 'SUCCESS', disconnect: true }
      }
    },
    record: false
  })
  const [a, b, c] = ['a', 'b', 'c'].map((name) => `lists_${name}_${Date.now()}`)
  const client = await RawClient.connect(local.url())
  const none = await client.subscribeConfirmed({ channel: 'Lists', streams: [] })
  const one = await client.subscribeConfirmed({ channel: 'Lists', streams: [a] })
  const several = await client.subscribeConfirmed({ channel: 'Lists', streams: [b, c] })

  for (const count of [0, 1, 3]) {
    client.perform(none, 'say', { count })
    client.perform(none, 'say', { count: 1 })
    for (let n = 0; n < count; n++) assert.deepEqual(await client.next(), { identifier: none, message: { n } })
    assert.deepEqual(await client.next(), { identifier: none, message: { n: 0 } })
  }
  for (const stream of [a, b, c]) {
    await local.broadcast(stream, { to: stream })
    assert.deepEqual(await client.next(), { identifier: stream === a ? one : several, message: { to: stream } })
  }

  // One stopped stream as its lone item, then the two others as an array: nothing reaches the client after.
  client.perform(one, 'stop', { stop: [a], count: 1 })
  assert.deepEqual(await client.next(), { identifier: one, message: { n: 0 } })
  client.perform(several, 'stop', { stop: [b], count: 2 })
  assert.deepEqual(await client.next(), { identifier: several, message: { n: 0 } })
  assert.deepEqual(await client.next(), { identifier: several, message: { n: 1 } })
  await local.broadcast(a, { to: a })
  await local.broadcast(b, { to: b })
  await local.broadcast(c, { to: c })
  assert.deepEqual(await client.next(), { identifier: several, message: { to: c } })
  client.perform(several, 'stopAll')
  client.perform(none, 'say', { count: 1 })
  assert.deepEqual(await client.next(), { identifier: none, message: { n: 0 } })
  await local.broadcast(c, { to: c })
  client.perform(none, 'say', { count: 1 })
  assert.deepEqual(await client.next(), { identifier: none, message: { n: 0 } })

  // disconnect: the server closes the connection (as AnyCable does, with "Command Failed").
  client.perform(none, 'bye')
  assert.deepEqual(await client.waitForClose(), { code: 1000, reason: 'Command Failed' })
})

scenario('in-process answers: a thenable whose then throws is an EHANDLER for that call', async () => {
  const errors = []
  const local = await serve((identifier, { action }) => {
    if (action === 'bad') return { then () { throw new Error('then exploded') } }
    return echo(identifier, { fine: true })
  }, { onError: (err) => errors.push(err) })
  const client = await RawClient.connect(local.url())
  const id = await client.subscribeConfirmed({ channel: 'Any' })
  client.perform(id, 'bad')
  client.perform(id, 'next')
  assert.deepEqual(await client.next(), { identifier: id, message: { fine: true } })
  const error = await eventually(() => errors.find((e) => e.sid === client.sid), { what: 'the error event' })
  assert.equal(error.code, 'EHANDLER')
  assert.equal(error.message, 'Any#bad: then exploded')
})

scenario('in-process answers: concurrent calls that settle in reverse order each get their own answer', async () => {
  const count = 40
  // Call n waits (count - n) * 3 ms: the first asked is the last to answer.
  const local = await serve((identifier, { n }) => sleep((count - n) * 3).then(() => echo(identifier, { n })))
  const clients = await Promise.all(Array.from({ length: count }, () => RawClient.connect(local.url())))
  const ids = await Promise.all(clients.map((client, n) => client.subscribeConfirmed({ channel: 'Any', n })))
  clients.forEach((client, n) => client.perform(ids[n], 'delay', { n }))
  const answers = await Promise.all(clients.map((client) => client.next()))
  answers.forEach((answer, n) => assert.deepEqual(answer, { identifier: ids[n], message: { n } }))
})

scenario('in-process answers: an answer after the time limit is dropped and the next command is served', async () => {
  const errors = []
  let lateAnswered = false
  const local = await serve((identifier, { action }) => {
    if (action === 'late') return sleep(500).then(() => { lateAnswered = true; return echo(identifier, 'too late') })
    return echo(identifier, 'in time')
  }, { options: { rpcRequestTimeout: 200 }, onError: (err) => errors.push(err) })
  const client = await RawClient.connect(local.url())
  const id = await client.subscribeConfirmed({ channel: 'Any' })
  client.perform(id, 'late')
  client.perform(id, 'next')
  assert.deepEqual(await client.next(), { identifier: id, message: 'in time' })
  await eventually(() => lateAnswered, { what: 'the late handler to settle' })
  await sleep(100)
  assert.deepEqual(client.inbox, [], 'nothing of the late answer reaches the client')
  assert.deepEqual(errors.map((e) => e.code), ['ETIMEOUT'], 'one timeout, and the late answer reports nothing')
})

scenario('in-process answers: a throwing error listener still lets the call be answered; its error is uncaught', async () => {
  const { code, stdout, stderr } = await runNodeScript('lib/inprocess-failing-action.mjs', ['throwing-listener'])
  assert.equal(code, 0, `the child exits normally\n${stderr}`)
  assert.match(stdout, /uncaught: listener exploded/)
  assert.match(stdout, /served after failure: {"ok":true}/)
})

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

scenario('in-process answers: a state key such as __proto__ reaches the next call as an own property', async () => {
  const seen = []
  const local = await startInProcess({
    handlers: {
      connect: (request) => ({ ...welcome(request), env: { cstate: JSON.parse('{"__proto__":"kept","plain":"yes"}') } }),
      command: ({ command, identifier, env }) => {
        seen.push(env.cstate)
        return command === 'subscribe' ? confirm(identifier) : echo(identifier, 'ok')
      }
    },
    record: false
  })
  const client = await RawClient.connect(local.url())
  await client.subscribeConfirmed({ channel: 'Any' })
  assert.deepEqual(Object.keys(seen[0]).sort(), ['__proto__', 'plain'])
  assert.equal(Object.getOwnPropertyDescriptor(seen[0], '__proto__').value, 'kept')
  assert.equal(Object.getPrototypeOf(seen[0]), Object.prototype)
})

scenario('in-process answers: State keeps a key such as __proto__ as a key, in its values and its changes', () => {
  const state = new State({ plain: 'yes' })
  state.set('__proto__', 'kept')
  assert.equal(state.get('__proto__'), 'kept')
  assert.ok(state.has('__proto__'))
  assert.deepEqual(Object.keys(state.changes), ['__proto__'])
  assert.deepEqual(Object.keys(state.toJSON()).sort(), ['__proto__', 'plain'])
  assert.equal(Object.getPrototypeOf(state.changes), Object.prototype)
})
