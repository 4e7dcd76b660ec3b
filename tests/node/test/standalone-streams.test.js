// Standalone mode, streams: @anycable/web's cable.streamFrom (public names) and cable.streamFromSigned
// (names signed like Rails' MessageVerifier, here with node:crypto), whispers between clients, and the npm
// package's own signStream / issueToken helpers checked against independent implementations. No RPC
// backend: the server identifies clients by JWT and answers every subscription itself.
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { after, before } from 'node:test'
import jwt from 'jsonwebtoken'
import { SubscriptionRejectedError } from '@anycable/core'
import { broadcastOk, eventually, scenario, startServer, unique } from '../lib/harness.js'
import { RawClient } from '../lib/raw-client.js'
import { signedName, tokenFor, webCable } from '../lib/standalone.js'

const JWT_SECRET = 'jwt-streams-secret'
const STREAMS_SECRET = 'streams-secret'

let server
let whispering

before(async () => {
  const common = ['--norpc', '--enforce_jwt', '--jwt_secret', JWT_SECRET, '--streams_secret', STREAMS_SECRET]
  server = await startServer({ args: [...common, '--public_streams'] })
  whispering = await startServer({ args: [...common, '--streams_whisper'] })
})

after(async () => {
  await server?.stop()
  await whispering?.stop()
})

function cableFor (target, user = unique('user')) {
  return webCable(target.url(), { auth: { token: tokenFor({ user }, JWT_SECRET) } })
}

function collect (channel) {
  const messages = []
  channel.on('message', (m) => messages.push(m))
  return messages
}

scenario('@anycable/web streamFromSigned receives broadcasts on a name signed with the streams secret', async () => {
  const stream = unique('notifications')
  const channel = cableFor(server).streamFromSigned(signedName(stream, STREAMS_SECRET))
  await channel.ensureSubscribed()
  const messages = collect(channel)
  await broadcastOk(server, { stream, data: JSON.stringify({ text: 'signed hello' }) })
  await eventually(() => messages.length === 1, { what: 'the broadcast on the signed stream' })
  assert.deepEqual(messages, [{ text: 'signed hello' }])
})

scenario('@anycable/web streamFromSigned with a name signed by another secret is rejected', async () => {
  const cable = cableFor(server)
  const forged = cable.streamFromSigned(signedName(unique('private'), 'someone-elses-secret'))
  await assert.rejects(forged.ensureSubscribed(), SubscriptionRejectedError)
  assert.equal(cable.state, 'connected', 'the connection stays up')
})

scenario('raw: malformed signed names are rejected and the connection keeps working', async () => {
  const client = await RawClient.connect(server.url({ jid: tokenFor({ user: unique('raw') }, JWT_SECRET) }))
  const good = signedName('fine', STREAMS_SECRET)
  const [data, digest] = good.split('--')
  const wrongType = Buffer.from('42').toString('base64')
  const cases = [
    `${data}`, // no digest
    `${data}--${digest.toUpperCase()}`, // Rails digests are lower-case hex
    `${Buffer.from(JSON.stringify('other')).toString('base64')}--${digest}`, // the name was changed
    `%%%--${digest}`,
    `${wrongType}--${signedName('x', STREAMS_SECRET).split('--')[1]}`,
    '--',
    ''
  ]
  for (const signed of cases) {
    const identifier = client.subscribe({ channel: '$pubsub', signed_stream_name: signed })
    assert.deepEqual(await client.next(), { identifier, type: 'reject_subscription' }, signed)
  }
  await client.subscribeConfirmed({ channel: '$pubsub', signed_stream_name: good })
})

scenario('@anycable/web streamFrom and whisper: the other subscribers of a public stream get it, the sender does not', async () => {
  const stream = unique('typing')
  const [alice, bob, carol] = [cableFor(server, 'alice'), cableFor(server, 'bob'), cableFor(server, 'carol')]
  const channels = [alice, bob, carol].map((cable) => cable.streamFrom(stream))
  await Promise.all(channels.map((c) => c.ensureSubscribed()))
  const [aliceGot, bobGot, carolGot] = channels.map(collect)
  await channels[0].whisper({ event: 'typing', name: 'alice' })
  await eventually(() => bobGot.length === 1 && carolGot.length === 1, { what: 'the whisper at bob and carol' })
  assert.deepEqual(bobGot, [{ event: 'typing', name: 'alice' }])
  assert.deepEqual(carolGot, [{ event: 'typing', name: 'alice' }])
  // A broadcast afterwards reaches everyone: alice's first message is the broadcast, not her own whisper.
  await broadcastOk(server, { stream, data: '"after"' })
  await eventually(() => aliceGot.length === 1, { what: 'the broadcast at alice' })
  assert.deepEqual(aliceGot, ['after'])
})

scenario('whispers on signed streams need streams_whisper', async () => {
  for (const [target, delivered] of [[server, false], [whispering, true]]) {
    const stream = unique('cursor')
    const signed = signedName(stream, STREAMS_SECRET)
    const [a, b] = [cableFor(target).streamFromSigned(signed), cableFor(target).streamFromSigned(signed)]
    await Promise.all([a.ensureSubscribed(), b.ensureSubscribed()])
    const got = collect(b)
    await a.whisper({ x: 1 })
    if (delivered) {
      await eventually(() => got.length === 1, { what: 'the whisper' })
    } else {
      // Time for a whisper to arrive, then a broadcast that surely comes after it.
      await new Promise((resolve) => setTimeout(resolve, 300))
    }
    await broadcastOk(target, { stream, data: '"marker"' })
    await eventually(() => got.includes('marker'), { what: 'the marker broadcast' })
    assert.deepEqual(got, delivered ? [{ x: 1 }, 'marker'] : ['marker'])
  }
})

scenario('package helpers: signStream and issueToken agree with independent implementations and the server', async () => {
  const require = createRequire(import.meta.url)
  const cjs = require('ferrocable')
  const esm = await import('ferrocable')
  assert.equal(esm.signStream, cjs.signStream)
  assert.equal(esm.issueToken, cjs.issueToken)

  const stream = unique('helper')
  assert.equal(cjs.signStream(stream, STREAMS_SECRET), signedName(stream, STREAMS_SECRET))
  assert.equal(cjs.signStream('chat/2024', 's3cr3t'), 'ImNoYXQvMjAyNCI=--42d0afce518d9b9586c82df74dace6e0791f2559caf8f352747f98f8e2d7f56c')

  const user = unique('helper-user')
  const token = cjs.issueToken({ user }, { secret: JWT_SECRET, ttl: 120 })
  const claims = jwt.verify(token, JWT_SECRET, { algorithms: ['HS256'] })
  assert.equal(claims.ext, JSON.stringify({ user }))
  assert.ok(claims.exp - Date.now() / 1000 > 100 && claims.exp - Date.now() / 1000 <= 121, `exp ${claims.exp}`)
  const hs512 = cjs.issueToken(JSON.stringify({ user }), { secret: JWT_SECRET, algorithm: 'HS512', ttl: null })
  assert.equal(jwt.verify(hs512, JWT_SECRET, { algorithms: ['HS512'] }).exp, undefined)
  assert.throws(() => cjs.issueToken({ user }, { secret: '' }), (err) => err.code === 'EINVALID')
  assert.throws(() => cjs.issueToken({ user }, { secret: 'k', algorithm: 'none' }), (err) => err.code === 'EINVALID')
  assert.throws(() => cjs.signStream('', 'k'), (err) => err instanceof cjs.FerrocableError && err.code === 'EINVALID')

  // What the helpers make is what the server accepts.
  const cable = webCable(server.url(), { auth: { token } })
  const channel = cable.streamFromSigned(cjs.signStream(stream, STREAMS_SECRET))
  await channel.ensureSubscribed()
  const messages = collect(channel)
  await broadcastOk(server, { stream, data: '{"from":"helpers"}' })
  await eventually(() => messages.length === 1, { what: 'the broadcast' })
  assert.deepEqual(messages, [{ from: 'helpers' }])
})
