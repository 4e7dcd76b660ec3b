// Credentials for the standalone-mode suites, made independently of the code under test: tokens with the
// `jsonwebtoken` package (or by hand with node:crypto for the malformed ones it refuses to make), signed
// stream names with node:crypto in the layout of Rails' MessageVerifier. Plus an @anycable/web cable set up
// for Node.
import crypto from 'node:crypto'
import jwt from 'jsonwebtoken'
import WebSocket from 'ws'
import { createCable } from '@anycable/web'
import { onScenarioEnd } from './harness.js'

/** A JWT identification token: `ext` = the identifiers as JSON, HS256 unless `algorithm` says otherwise. */
export function tokenFor (identifiers, secret, { expiresIn = 300, algorithm = 'HS256', claims = {} } = {}) {
  const payload = { ext: JSON.stringify(identifiers), ...claims }
  return jwt.sign(payload, secret, { algorithm, ...(expiresIn === null ? {} : { expiresIn }) })
}

/** A token with exactly these claims (e.g. without `ext`), signed with HS256 by jsonwebtoken. */
export function tokenWithClaims (claims, secret) {
  return jwt.sign(claims, secret, { algorithm: 'HS256' })
}

/** A token whose `exp` passed `secondsAgo` seconds ago. */
export function expiredTokenFor (identifiers, secret, secondsAgo = 60) {
  return jwt.sign({ ext: JSON.stringify(identifiers), exp: Math.floor(Date.now() / 1000) - secondsAgo }, secret)
}

export function base64url (value) {
  return Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url')
}

/** A token signed with HMAC-SHA256 over whatever header and claims are given (for tokens jsonwebtoken will not make). */
export function handMadeToken (header, claims, secret) {
  const input = `${base64url(header)}.${base64url(claims)}`
  return `${input}.${crypto.createHmac('sha256', secret).update(input).digest('base64url')}`
}

/** `base64(JSON.stringify(name)) + '--' + hex HMAC-SHA256(secret, that base64)`. */
export function signedName (name, secret) {
  const encoded = Buffer.from(JSON.stringify(name)).toString('base64')
  return `${encoded}--${crypto.createHmac('sha256', secret).update(encoded).digest('hex')}`
}

/**
 * An @anycable/web cable speaking actioncable-v1-json over `ws`, closed when the scenario ends. `options` go
 * to createCable (e.g. `auth: { token }`, `websocketAuthStrategy`, `tokenRefresher`).
 */
export function webCable (url, options = {}) {
  const cable = createCable(url, {
    protocol: 'actioncable-v1-json',
    websocketImplementation: WebSocket,
    logLevel: 'error',
    ...options
  })
  onScenarioEnd(() => cable.disconnect())
  return cable
}
