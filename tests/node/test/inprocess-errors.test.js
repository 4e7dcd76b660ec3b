// Handlers that fail: throw, reject, return something that is not a response, or never settle. Each gives
// an ERROR result for that one call, an 'error' event naming the channel and action, one log line; the
// connection, the other clients and the process carry on.
import assert from 'node:assert/strict'
import v8 from 'node:v8'
import vm from 'node:vm'
import { after, before } from 'node:test'
import { Application, Channel, HandlerError } from 'ferrocable'
import { startInProcess } from '../lib/inprocess-app.js'
import { eventually, runNodeScript, scenario, unique } from '../lib/harness.js'
import { RawClient } from '../lib/raw-client.js'

class FaultyChannel extends Channel {
  subscribed (handle, { room }) {
    if (room === 'explode') throw new Error('subscribed exploded')
    handle.streamFrom(`faulty_${room}`)
  }

  ok (handle, _params, data) {
    handle.transmit({ ok: true, ...data })
  }

  throws () {
    throw new Error('thrown in action')
  }

  async rejects () {
    await Promise.resolve()
    throw new RangeError('rejected in action')
  }

  throwsString () {
    throw 'a plain string' // eslint-disable-line no-throw-literal
  }

  hangs () {
    return new Promise(() => {})
  }
}

class FaultyApp extends Application {
  constructor () {
    super()
    this.registerChannel('FaultyChannel', FaultyChannel)
  }

  connect (handle) {
    const name = handle.env.params.name
    if (name === 'hang') return new Promise(() => {})
    handle.identifiedBy({ name })
  }

  disconnect (handle) {
    if (handle.identifiers.name === 'failing-disconnect') throw new Error('disconnect exploded')
  }
}

let server
const errors = []

before(async () => {
  server = await startInProcess({ app: new FaultyApp(), options: { rpcRequestTimeout: 400 }, onError: (err) => errors.push(err) })
})

after(async () => {
  await server?.stop()
})

async function faultyClient (name = unique('user')) {
  const client = await RawClient.connect(server.url({ name }))
  const id = await client.subscribeConfirmed({ channel: 'FaultyChannel', room: unique('room') })
  return { client, id, name }
}

function errorFor (sid, action) {
  return eventually(() => errors.find((e) => e.sid === sid && e.action === action), { what: `an 'error' event for ${action}` })
}

for (const [action, code, message] of [
  ['throws', 'EHANDLER', 'thrown in action'],
  ['rejects', 'EHANDLER', 'rejected in action'],
  ['throwsString', 'EHANDLER', 'a plain string'],
  ['hangs', 'ETIMEOUT', 'handler did not answer within 400 ms']
]) {
  scenario(`in-process errors: an action that ${action} gives an ERROR for that call only and an 'error' event`, async () => {
    const { client, id } = await faultyClient()
    const bystander = await faultyClient()
    client.perform(id, action)
    client.perform(id, 'ok', { after: action })
    assert.deepEqual(await client.next({ timeout: 3000 }), { identifier: id, message: { ok: true, after: action } }, 'the next command of the same connection is served')
    const error = await errorFor(client.sid, action)
    assert.ok(error instanceof HandlerError)
    assert.equal(error.code, code)
    assert.equal(error.call, 'command')
    assert.equal(error.channel, 'FaultyChannel')
    assert.equal(error.identifier, id)
    assert.equal(error.message, `FaultyChannel#${action}: ${message}`)
    if (code === 'EHANDLER' && action !== 'throwsString') assert.ok(error.cause instanceof Error, 'cause is what the action threw')
    assert.equal(errors.filter((e) => e.sid === client.sid && e.action === action).length, 1, 'reported once')
    assert.ok(client.isOpen)
    bystander.client.perform(bystander.id, 'ok')
    assert.deepEqual(await bystander.client.next(), { identifier: bystander.id, message: { ok: true } })
  })
}

scenario('in-process errors: a never-settling Promise that is garbage-collected still ends in ETIMEOUT, not a failure', async () => {
  // Nothing holds `new Promise(() => {})`, so a collection frees it unsettled; that must read as "never
  // answered" (the time limit), not as a rejection.
  v8.setFlagsFromString('--expose-gc')
  const collect = vm.runInNewContext('gc')
  const { client, id } = await faultyClient()
  client.perform(id, 'hangs')
  const deadline = Date.now() + 300
  while (Date.now() < deadline) {
    collect()
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  const error = await errorFor(client.sid, 'hangs')
  assert.equal(error.code, 'ETIMEOUT')
  assert.equal(error.message, 'FaultyChannel#hangs: handler did not answer within 400 ms')
})

scenario('in-process errors: subscribed() that throws leaves the subscription unconfirmed and the socket open', async () => {
  const client = await RawClient.connect(server.url({ name: unique('user') }))
  const id = client.subscribe({ channel: 'FaultyChannel', room: 'explode' })
  const error = await errorFor(client.sid, 'subscribe')
  assert.equal(error.message, 'FaultyChannel#subscribe: subscribed exploded')
  const other = await client.subscribeConfirmed({ channel: 'FaultyChannel', room: unique('room') })
  await server.broadcast('faulty_explode', 'must not arrive')
  client.perform(other, 'ok')
  assert.deepEqual(await client.next(), { identifier: other, message: { ok: true } })
  assert.equal(client.inbox.find((f) => f.identifier === id), undefined)
})

scenario('in-process errors: a connect that never settles closes that socket with 1011 after the timeout', async () => {
  const started = Date.now()
  const client = await RawClient.open(server.url({ name: 'hang' }))
  const { code } = await client.waitForClose()
  assert.equal(code, 1011)
  assert.ok(Date.now() - started >= 350, 'closed after rpcRequestTimeout')
  const error = await eventually(() => errors.find((e) => e.call === 'connect' && e.code === 'ETIMEOUT'), { what: 'the connect timeout event' })
  assert.equal(error.message, 'connect: handler did not answer within 400 ms')
})

scenario('in-process errors: a failing disconnect is reported with call "disconnect"', async () => {
  const { client } = await faultyClient('failing-disconnect')
  const sid = client.sid
  client.close()
  const error = await eventually(() => errors.find((e) => e.sid === sid && e.call === 'disconnect'), { what: 'the disconnect error' })
  assert.equal(error.code, 'EHANDLER')
  assert.equal(error.message, 'disconnect: disconnect exploded')
})

scenario('in-process errors: malformed results are ERRORs with code EMALFORMED', async () => {
  const cases = [
    [null, 'expected a response object, got null'],
    [{ status: 'OK' }, "status must be 'SUCCESS', 'FAILURE' or 'ERROR' (or 1, 2, 0), got \"OK\""],
    [{ status: 'SUCCESS', transmissions: 'not a list' }, 'transmissions must be an array of strings'],
    [{ status: 'SUCCESS', transmissions: [{ an: 'object' }] }, 'transmissions must be an array of strings'],
    [{ status: 'SUCCESS', env: { cstate: { n: 1 } } }, 'env.cstate.n must be a string (or null to delete it), got number'],
    [{ status: 'SUCCESS', streams: 'one' }, 'streams must be an array of strings']
  ]
  let answer
  const local = await startInProcess({
    handlers: {
      connect: ({ sid }) => ({ status: 'SUCCESS', identifiers: '{}', transmissions: [JSON.stringify({ type: 'welcome', sid })] }),
      command: ({ command, identifier }) => command === 'subscribe'
        ? { status: 'SUCCESS', transmissions: [JSON.stringify({ identifier, type: 'confirm_subscription' })] }
        : answer
    },
    onError: (err) => errors.push(err)
  })
  const client = await RawClient.connect(local.url())
  const id = await client.subscribeConfirmed({ channel: 'Any' })
  for (const [index, [result, reason]] of cases.entries()) {
    answer = result
    client.perform(id, 'broken')
    // Wait for this call's own error (two cases share a reason) before the next answer is set.
    const mine = () => errors.filter((e) => e.sid === client.sid)
    await eventually(() => mine().length === index + 1, { what: `the error for ${JSON.stringify(result)}` })
    const error = mine()[index]
    assert.ok(error.message.endsWith(reason), error.message)
    assert.equal(error.code, 'EMALFORMED')
    assert.equal(error.message, `Any#broken: malformed handler result: ${reason}`)
  }
  answer = { status: 'SUCCESS', transmissions: [JSON.stringify({ identifier: id, message: 'fine' })] }
  client.perform(id, 'works')
  assert.deepEqual(await client.next(), { identifier: id, message: 'fine' })
  assert.equal(local.server.stats().rpcErrorTotal, cases.length, 'each malformed result counted as a handler error')
})

scenario('in-process errors: without an error listener a failing handler is logged once (with channel and action) and the process lives on', async () => {
  const { code, stdout, stderr } = await runNodeScript('lib/inprocess-failing-action.mjs')
  assert.equal(code, 0, `the child exits normally\n${stderr}`)
  assert.match(stdout, /served after failure: {"ok":true}/)
  const lines = stderr.split('\n').filter((l) => l.includes('Boom#explode'))
  assert.equal(lines.length, 1, `one log line names Boom#explode:\n${stderr}`)
  assert.match(lines[0], /ERROR/)
  assert.match(lines[0], /Boom#explode: kaput/)
})
