// Standalone mode, JWT identification: the server checks the token a client brings (query parameter,
// X-JID header or anycable-token sub-protocol) and welcomes it with the identifiers of the `ext` claim,
// without a Connect call. Tokens are made by the `jsonwebtoken` package (or by hand with node:crypto for the
// malformed ones), never by the code under test. The gRPC backend stays behind for channels and clients
// without a token.
import assert from 'node:assert/strict'
import { after, before } from 'node:test'
import { startBackend } from '../lib/backend.js'
import { eventually, scenario, startServer, unique } from '../lib/harness.js'
import { ACTION_CABLE_JSON, RawClient } from '../lib/raw-client.js'
import { base64url, expiredTokenFor, handMadeToken, tokenFor, tokenWithClaims, webCable } from '../lib/standalone.js'

const JWT_SECRET = 'jwt-test-secret'
const UNAUTHORIZED = { type: 'disconnect', reason: 'unauthorized', reconnect: false }
const TOKEN_EXPIRED = { type: 'disconnect', reason: 'token_expired', reconnect: false }

let backend
let server
let enforced

before(async () => {
  backend = await startBackend()
  server = await startServer({ rpcPort: backend.port, args: ['--jwt_secret', JWT_SECRET, '--public_streams'] })
  enforced = await startServer({ args: ['--norpc', '--jwt_secret', JWT_SECRET, '--enforce_jwt', '--noauth'] })
})

after(async () => {
  await server?.stop()
  await enforced?.stop()
  await backend?.stop()
})

/** Calls the backend received for a connection whose URL carries `marker`. */
function connectsWith (marker) {
  return backend.callsOf('Connect', (r) => (r.env?.url || '').includes(marker))
}

async function whoami (channel, messages) {
  const before = messages.length
  await channel.perform('whoami')
  await eventually(() => messages.length > before, { what: 'the whoami answer' })
  return messages[messages.length - 1]
}

scenario('@anycable/web auth: { token } in the query: welcomed with the ext identifiers, no Connect call', async () => {
  const user = unique('jwt-query')
  const marker = unique('marker')
  const token = tokenFor({ user }, JWT_SECRET)
  const cable = webCable(server.url({ marker }), { auth: { token } })
  const channel = cable.subscribeTo('ChatChannel', { room: unique('room') })
  await channel.ensureSubscribed()
  assert.equal(cable.state, 'connected')
  assert.equal(typeof cable.sessionId, 'string')
  assert.equal(cable.sessionId.length, 21, 'the server wrote the welcome frame with its own sid')
  const messages = []
  channel.on('message', (m) => messages.push(m))
  const who = await whoami(channel, messages)
  assert.equal(who.identifiers, JSON.stringify({ user }), 'channel commands carry the identifiers from the token')
  assert.ok(who.url.includes(`jid=${token}`), 'the token is part of the URL the client used')
  assert.equal(connectsWith(marker).length, 0, 'no Connect call for a client with a token')
})

scenario('@anycable/web websocketAuthStrategy sub-protocol: the token travels as anycable-token.<token>', async () => {
  const user = unique('jwt-protocol')
  const marker = unique('marker')
  const cable = webCable(server.url({ marker }), { auth: { token: tokenFor({ user }, JWT_SECRET) }, websocketAuthStrategy: 'sub-protocol' })
  const channel = cable.subscribeTo('ChatChannel', { room: unique('room') })
  await channel.ensureSubscribed()
  const messages = []
  channel.on('message', (m) => messages.push(m))
  const who = await whoami(channel, messages)
  assert.equal(who.identifiers, JSON.stringify({ user }))
  assert.ok(!who.url.includes('jid='), 'nothing in the query')
  assert.equal(connectsWith(marker).length, 0)

  // The server answers with the Action Cable protocol only, never with the token sub-protocol.
  const raw = await RawClient.open(server.url(), { protocols: [ACTION_CABLE_JSON, `anycable-token.${tokenFor({ user }, JWT_SECRET)}`] })
  assert.equal(raw.protocol, ACTION_CABLE_JSON)
  assert.equal((await raw.next()).type, 'welcome')
})

scenario('@anycable/web websocketAuthStrategy header: the token travels in X-JID', async () => {
  const user = unique('jwt-header')
  const marker = unique('marker')
  const cable = webCable(server.url({ marker }), { auth: { token: tokenFor({ user }, JWT_SECRET) }, websocketAuthStrategy: 'header' })
  const channel = cable.subscribeTo('ChatChannel', { room: unique('room') })
  await channel.ensureSubscribed()
  const messages = []
  channel.on('message', (m) => messages.push(m))
  assert.equal((await whoami(channel, messages)).identifiers, JSON.stringify({ user }))
  assert.equal(connectsWith(marker).length, 0)
})

scenario('@anycable/web tokenRefresher: an expired token is refreshed after token_expired and the cable connects', async () => {
  const user = unique('jwt-refresh')
  let refreshed = 0
  const cable = webCable(server.url(), {
    auth: { token: expiredTokenFor({ user }, JWT_SECRET) },
    tokenRefresher: async (transport) => {
      refreshed += 1
      transport.setToken(tokenFor({ user }, JWT_SECRET), 'jid')
    }
  })
  const closes = []
  cable.on('close', (ev) => closes.push(ev?.reason))
  cable.connect().catch(() => {})
  await eventually(() => cable.state === 'connected', { what: 'the cable to connect with the refreshed token' })
  assert.equal(refreshed, 1)
  assert.deepEqual(closes, ['token_expired'])
})

scenario('bad tokens are each refused with the documented frame, then a normal close', async () => {
  const ids = { user: unique('bad') }
  const good = tokenFor(ids, JWT_SECRET)
  const [header, , signature] = good.split('.')
  const cases = [
    ['expired', expiredTokenFor(ids, JWT_SECRET), TOKEN_EXPIRED],
    ['signed with another secret', tokenFor(ids, 'not-the-secret'), UNAUTHORIZED],
    ['alg none', `${base64url({ alg: 'none', typ: 'JWT' })}.${base64url({ ext: JSON.stringify(ids) })}.`, UNAUTHORIZED],
    ['alg none with the original signature', `${base64url({ alg: 'none' })}.${good.split('.')[1]}.${signature}`, UNAUTHORIZED],
    ['RS256 label', handMadeToken({ alg: 'RS256' }, { ext: JSON.stringify(ids) }, JWT_SECRET), UNAUTHORIZED],
    ['tampered payload', `${header}.${base64url({ ext: JSON.stringify({ user: 'admin' }) })}.${signature}`, UNAUTHORIZED],
    ['malformed base64', `${header}.e30*!.${signature}`, UNAUTHORIZED],
    ['not three parts', 'just-one-part', UNAUTHORIZED],
    ['missing ext', tokenWithClaims({ sub: 'x', exp: Math.floor(Date.now() / 1000) + 60 }, JWT_SECRET), UNAUTHORIZED],
    ['ext not a string', handMadeToken({ alg: 'HS256' }, { ext: ids }, JWT_SECRET), UNAUTHORIZED],
    ['oversize', tokenFor(ids, JWT_SECRET, { claims: { pad: 'x'.repeat(12000) } }), UNAUTHORIZED]
  ]
  for (const [what, token, frame] of cases) {
    const client = await RawClient.open(server.url({ jid: token }))
    assert.deepEqual(await client.next(), frame, what)
    const closed = await client.waitForClose()
    assert.equal(closed.code, 1000, `${what}: closed normally`)
    assert.deepEqual(client.inbox, [], `${what}: nothing else was sent`)
  }
  // The same through the sub-protocol and the header.
  for (const open of [
    () => RawClient.open(server.url(), { protocols: [ACTION_CABLE_JSON, `anycable-token.${tokenFor(ids, 'wrong')}`] }),
    () => RawClient.open(server.url(), { headers: { 'X-JID': expiredTokenFor(ids, JWT_SECRET) } })
  ]) {
    const client = await open()
    assert.equal((await client.next()).type, 'disconnect')
    assert.equal((await client.waitForClose()).code, 1000)
  }
  assert.equal(backend.callsOf('Connect', (r) => (r.env?.url || '').includes('jid=')).length, 0, 'no refused token reached the backend')
  // The server is unharmed.
  const ok = await RawClient.connect(server.url({ jid: good }))
  assert.ok(ok.sid)
})

scenario('without a token a client falls back to the gRPC Connect call', async () => {
  const user = unique('cookie')
  const client = await RawClient.connect(server.url(), { user })
  const [connect] = backend.callsOf('Connect', (r) => r.env.headers.cookie === `user=${user}`)
  assert.ok(connect, 'the cookie client went through Connect')
  assert.equal(connect.sid, client.sid)
})

scenario('enforce_jwt: no token is unauthorized even with noauth; a token is welcomed', async () => {
  const none = await RawClient.open(enforced.url())
  assert.deepEqual(await none.next(), UNAUTHORIZED)
  assert.equal((await none.waitForClose()).code, 1000)
  const cable = webCable(enforced.url(), { auth: { token: tokenFor({ user: unique('enforced') }, JWT_SECRET) } })
  await cable.connect()
  assert.equal(cable.state, 'connected')
})

scenario('disconnect_mode=auto: no Disconnect call for a token session that only used $pubsub streams', async () => {
  const standaloneUser = unique('standalone')
  const mixedUser = unique('mixed')
  const standalone = await RawClient.connect(server.url({ jid: tokenFor({ user: standaloneUser }, JWT_SECRET) }))
  await standalone.subscribeConfirmed({ channel: '$pubsub', stream_name: unique('news') })
  const mixed = await RawClient.connect(server.url({ jid: tokenFor({ user: mixedUser }, JWT_SECRET) }))
  await mixed.subscribeConfirmed({ channel: 'ChatChannel', room: unique('room') })
  standalone.close()
  await standalone.closed
  mixed.close()
  await backend.waitForCall('Disconnect', (r) => r.identifiers === JSON.stringify({ user: mixedUser }))
  await new Promise((resolve) => setTimeout(resolve, 300))
  assert.equal(backend.callsOf('Disconnect', (r) => r.identifiers === JSON.stringify({ user: standaloneUser })).length, 0)
})
