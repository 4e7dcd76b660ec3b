'use strict'
// Helpers for the server's standalone mode, for the application that hands credentials to its clients:
// signed stream names (what `$pubsub` `signed_stream_name` and Turbo Streams subscriptions carry) and JWT
// identification tokens (what clients bring in the `jid` query parameter, the `X-JID` header or the
// `anycable-token.<token>` sub-protocol). Pure JavaScript over node:crypto; nothing here talks to the server.
const crypto = require('node:crypto')
const { FerrocableError } = require('./errors')

const ALGORITHMS = { HS256: 'sha256', HS384: 'sha384', HS512: 'sha512' }
const DEFAULT_TTL = 3600

function secretFrom (given, variables, what) {
  if (given !== undefined && given !== null) {
    if ((typeof given === 'string' && given.length > 0) || Buffer.isBuffer(given)) return given
    throw new FerrocableError(`${what}: the secret must be a non-empty string or a Buffer`, 'EINVALID')
  }
  for (const name of variables) {
    const value = process.env[name]
    if (value) return value
  }
  throw new FerrocableError(`${what}: no secret given and none of ${variables.join(', ')} is set`, 'EINVALID')
}

/**
 * Signs a stream name the way Rails' MessageVerifier does (and so AnyCable, turbo-rails and this server):
 * `base64(JSON.stringify(name)) + '--' + hex HMAC-SHA256(secret, that base64)`. The secret defaults to
 * `ANYCABLE_STREAMS_SECRET`, then `ANYCABLE_SECRET`.
 */
function signStream (name, secret) {
  if (typeof name !== 'string' || name.length === 0) {
    throw new FerrocableError('signStream: the stream name must be a non-empty string', 'EINVALID')
  }
  const key = secretFrom(secret, ['ANYCABLE_STREAMS_SECRET', 'ANYCABLE_SECRET'], 'signStream')
  const encoded = Buffer.from(JSON.stringify(name), 'utf8').toString('base64')
  const digest = crypto.createHmac('sha256', key).update(encoded).digest('hex')
  return `${encoded}--${digest}`
}

function base64url (value) {
  return Buffer.from(value).toString('base64url')
}

/**
 * Issues a JWT identification token: claim `ext` holds the identifiers as a JSON string (objects are
 * encoded with JSON.stringify, strings are taken as they are), `exp` is now + `ttl` seconds (default 3600;
 * `ttl: null` issues a token that never expires). Signed with HS256 unless `algorithm` says HS384 or HS512.
 * The secret defaults to `ANYCABLE_JWT_SECRET`, then `ANYCABLE_SECRET`.
 */
function issueToken (identifiers, { secret, ttl = DEFAULT_TTL, algorithm = 'HS256' } = {}) {
  let ext
  if (typeof identifiers === 'string') ext = identifiers
  else if (identifiers !== null && typeof identifiers === 'object' && !Array.isArray(identifiers)) ext = JSON.stringify(identifiers)
  else throw new FerrocableError('issueToken: identifiers must be an object or a JSON string', 'EINVALID')
  const hash = ALGORITHMS[algorithm]
  if (!hash) throw new FerrocableError(`issueToken: algorithm must be HS256, HS384 or HS512, got ${JSON.stringify(algorithm)}`, 'EINVALID')
  const claims = { ext }
  if (ttl !== null) {
    if (typeof ttl !== 'number' || !Number.isFinite(ttl) || ttl <= 0) {
      throw new FerrocableError(`issueToken: ttl must be a positive number of seconds (or null), got ${String(ttl)}`, 'EINVALID')
    }
    claims.exp = Math.floor(Date.now() / 1000) + Math.ceil(ttl)
  }
  const key = secretFrom(secret, ['ANYCABLE_JWT_SECRET', 'ANYCABLE_SECRET'], 'issueToken')
  const signingInput = `${base64url(JSON.stringify({ alg: algorithm, typ: 'JWT' }))}.${base64url(JSON.stringify(claims))}`
  const signature = crypto.createHmac(hash, key).update(signingInput).digest('base64url')
  return `${signingInput}.${signature}`
}

module.exports = { signStream, issueToken }
