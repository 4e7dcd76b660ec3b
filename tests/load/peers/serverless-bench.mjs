// The benchmark channel written with @anycable/serverless-js, served by the npm package, for
// tests/load/compare.sh:
//
//   node tests/load/peers/serverless-bench.mjs inprocess   the app object in-process: server.handle(app)
//   node tests/load/peers/serverless-bench.mjs http        the same app object behind its own HTTP handler
//                                                          (Node's http server), reached via rpcHost=http://…
//
// Listens on $PORT (WebSocket, /health) with HTTP broadcasts on $BROADCAST_PORT. The channel behaves like the
// one `ferrocable-bench backend` serves: every connection is accepted, `BenchmarkChannel` streams from its
// `stream` parameter (default `all`), `echo` transmits the data back.
import http from 'node:http'
import path from 'node:path'
import { createRequire, register } from 'node:module'
import { fileURLToPath, pathToFileURL } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..')
const { Server } = createRequire(import.meta.url)(path.join(root, 'index.js'))
// The package as the Node suite installs it, with the resolution hook it needs outside a bundler.
register(pathToFileURL(path.join(root, 'tests/node/lib/serverless-resolve.js')))
const serverlessPath = createRequire(path.join(root, 'tests/node/package.json')).resolve('@anycable/serverless-js')
const { Application, Channel, handler, Status } = await import(pathToFileURL(serverlessPath))

const mode = process.argv[2]
if (mode !== 'inprocess' && mode !== 'http') {
  console.error('usage: serverless-bench.mjs inprocess|http')
  process.exit(2)
}
const port = Number(process.env.PORT || 8080)
const broadcastPort = Number(process.env.BROADCAST_PORT || 8090)
let nextId = 1

class BenchmarkChannel extends Channel {
  async subscribed (handle, params) {
    handle.streamFrom(params?.stream || 'all')
  }

  async echo (handle, _params, data) {
    handle.transmit({ action: 'echo', ...data })
  }
}

class BenchmarkApp extends Application {
  async connect (handle) {
    handle.identifiedBy({ id: String(nextId++) })
  }
}

const app = new BenchmarkApp()
app.registerChannel('BenchmarkChannel', new BenchmarkChannel())

// The README's route, on Node's http server: a Fetch Request for the package's handler, its answer as JSON.
async function startHttpBackend () {
  const backend = http.createServer(async (req, res) => {
    const chunks = []
    for await (const chunk of req) chunks.push(chunk)
    const request = new Request(`http://${req.headers.host}${req.url}`, { method: 'POST', headers: req.headers, body: Buffer.concat(chunks) })
    let answer
    try {
      answer = await handler(request, app)
    } catch {
      answer = { status: Status.ERROR, error_msg: 'Server error' }
    }
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify(answer))
  })
  backend.keepAliveTimeout = 120000
  await new Promise((resolve) => backend.listen(0, '127.0.0.1', resolve))
  return backend
}

const options = { host: '127.0.0.1', port, httpBroadcastPort: broadcastPort, logLevel: 'warn' }
let backend = null
let server
if (mode === 'http') {
  backend = await startHttpBackend()
  server = new Server({ ...options, rpcHost: `http://127.0.0.1:${backend.address().port}/api/anycable` })
} else {
  server = new Server(options)
  server.handle(app)
}
await server.start()
console.error(`serverless-bench (${mode}) on ${server.address.url}`)

async function shutdown () {
  await server.stop()
  backend?.close()
  process.exit(0)
}
process.on('SIGTERM', shutdown)
process.on('SIGINT', shutdown)
