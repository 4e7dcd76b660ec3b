// The test application of lib/serverless-app.js behind AnyCable's HTTP RPC, served by Node's http server
// through @anycable/serverless-js's own universal `handler` exactly as its README's route does (a Fetch
// Request in, the JSON answer out with status 200, `{ status: ERROR }` when the app throws), with the
// Authorization check its deployments put in front of it (401 for a wrong key).
//
// It has the interface of the gRPC `Backend` (lib/backend.js): `calls` (RecordingBackend) records every request as its method,
// payload and the sid from `x-anycable-meta-sid`, with the fields proto3 leaves out of the JSON filled in
// (so one scenario can compare them across both), and `disruption` makes it misbehave:
// `{ httpStatus, body }` answers that status/body, `{ delayMs }` answers late, `{ hugeBytes }` answers a body
// of that size, `{ body }` answers that raw body with status 200. With `tls: { key, cert, http2 }` it serves
// https:// instead: HTTP/2 or HTTP/1.1 as the client's ALPN chooses (`http2: true`), else HTTP/1.1 only.
import http from 'node:http'
import http2 from 'node:http2'
import https from 'node:https'
import { RecordingBackend } from './backend.js'
import { freePort } from './harness.js'
import { createApp, UNAUTHORIZED_FRAME } from './serverless-app.js'

// After serverless-app.js has registered the resolution hook the package needs.
const { handler, Status } = await import('@anycable/serverless-js')

const METHODS = { connect: 'Connect', command: 'Command', disconnect: 'Disconnect' }

/** The HTTP RPC key the suite's servers and this backend share. */
export const HTTP_RPC_SECRET = 'rpc-test-key'

// What the gRPC backend's loader fills in (defaults: true) for a field the JSON leaves out.
function withDefaults (method, payload) {
  const env = payload.env ?? {}
  const full = { ...payload, env: { url: '', headers: {}, cstate: {}, istate: {}, ...env } }
  if (method === 'Command') return { command: '', identifier: '', connection_identifiers: '', data: '', ...full }
  if (method === 'Disconnect') return { identifiers: '', subscriptions: [], ...full }
  return full
}

export class ServerlessBackend extends RecordingBackend {
  kind = 'http'
  unauthorizedFrame = UNAUTHORIZED_FRAME

  constructor (port, { app = createApp(), secret = HTTP_RPC_SECRET, tls = null } = {}) {
    super(port)
    this.app = app
    this.secret = secret
    this.tls = tls
    this.sessions = new Set()
    this.requests = []
    this.disruption = null
    this.server = null
  }

  /** The `rpc_host` that reaches this backend. */
  get rpcHost () {
    return `${this.tls ? 'https' : 'http'}://127.0.0.1:${this.port}/_anycable`
  }

  /** Server flags that point the binary at this backend. */
  get serverArgs () {
    return ['--rpc_host', this.rpcHost, '--http_rpc_secret', this.secret]
  }

  async start () {
    const serve = (req, res) => this.#serve(req, res)
    if (!this.tls) this.server = http.createServer(serve)
    else if (!this.tls.http2) this.server = https.createServer(this.tls, serve)
    else {
      this.server = http2.createSecureServer({ ...this.tls, allowHTTP1: true }, serve)
      this.server.on('session', (session) => {
        this.sessions.add(session)
        session.once('close', () => this.sessions.delete(session))
      })
    }
    await new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(this.port, '127.0.0.1', resolve)
    })
    return this
  }

  async stop () {
    if (!this.server) return
    const server = this.server
    this.server = null
    server.closeAllConnections?.()
    for (const session of this.sessions) session.destroy()
    await new Promise((resolve) => server.close(resolve))
  }

  async #serve (req, res) {
    const chunks = []
    for await (const chunk of req) chunks.push(chunk)
    const body = Buffer.concat(chunks)
    this.requests.push({ url: req.url, httpVersion: req.httpVersion, headers: req.headers })
    const reply = (status, text) => {
      res.writeHead(status, { 'content-type': 'application/json' })
      res.end(text)
    }
    if (req.headers.authorization !== `Bearer ${this.secret}`) return reply(401, '{"error":"unauthorized"}')
    const method = METHODS[req.url.split('/').pop()]
    try {
      this.calls.push({ method, request: withDefaults(method, JSON.parse(body.toString('utf8'))), sid: req.headers['x-anycable-meta-sid'], at: Date.now() })
    } catch {}
    const { httpStatus, body: rawBody, delayMs, hugeBytes } = this.disruption ?? {}
    if (delayMs) await new Promise((resolve) => setTimeout(resolve, delayMs))
    if (httpStatus !== undefined) return reply(httpStatus, rawBody ?? '')
    if (rawBody !== undefined) return reply(200, rawBody)
    if (hugeBytes !== undefined) return reply(200, JSON.stringify({ status: Status.SUCCESS, error_msg: 'x'.repeat(hugeBytes) }))

    // The README's route: a Fetch Request for the package's handler, its answer as JSON. (HTTP/2's
    // pseudo-headers such as `:path` are not request headers.)
    const headers = Object.entries(req.headers).filter(([name]) => !name.startsWith(':'))
    const request = new Request(`http://127.0.0.1${req.url}`, { method: 'POST', headers, body })
    let answer
    try {
      answer = await handler(request, this.app)
    } catch (e) {
      answer = { status: Status.ERROR, error_msg: 'Server error' }
    }
    reply(200, JSON.stringify(answer))
  }
}

/** Starts the serverless-js backend on `port` (default: a free one). */
export async function startServerlessBackend ({ port, ...options } = {}) {
  const backend = new ServerlessBackend(port ?? (await freePort()), options)
  return backend.start()
}
