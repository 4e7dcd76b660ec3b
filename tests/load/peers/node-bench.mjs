// The benchmark channel served by the npm package, for tests/load/compare.sh:
//
//   node tests/load/peers/node-bench.mjs inprocess   handlers run in-process (no gRPC)
//   node tests/load/peers/node-bench.mjs grpc        the same handlers behind @grpc/grpc-js, reached via rpcHost
//   node tests/load/peers/node-bench.mjs app         the same channel written with Application and Channel
//
// Listens on $PORT (WebSocket, /health) with HTTP broadcasts on $BROADCAST_PORT. The channel is the one
// `ferrocable-bench backend` serves: every connection is accepted, `BenchmarkChannel` streams from its `stream`
// parameter (default `all`), `echo` transmits the data back, `broadcast` publishes the data to the stream.
import path from 'node:path'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..')
const { Application, Channel, Server } = createRequire(import.meta.url)(path.join(root, 'index.js'))
const testRequire = createRequire(path.join(root, 'tests/node/package.json'))

const mode = process.argv[2]
if (mode !== 'inprocess' && mode !== 'grpc' && mode !== 'app') {
  console.error('usage: node-bench.mjs inprocess|grpc|app')
  process.exit(2)
}
const port = Number(process.env.PORT || 8080)
const broadcastPort = Number(process.env.BROADCAST_PORT || 8090)

let server = null
let nextId = 1

function streamOf (identifier) {
  try { return JSON.parse(identifier).stream || 'all' } catch { return 'all' }
}

// The application, as low-level handlers: the same functions serve both modes.
const handlers = {
  connect ({ sid }) {
    return {
      status: 'SUCCESS',
      identifiers: JSON.stringify({ id: String(nextId++) }),
      transmissions: [JSON.stringify({ type: 'welcome', sid })]
    }
  },
  async command ({ command, identifier, data }) {
    if (command === 'subscribe') {
      return {
        status: 'SUCCESS',
        streams: [streamOf(identifier)],
        transmissions: [JSON.stringify({ identifier, type: 'confirm_subscription' })]
      }
    }
    if (command === 'unsubscribe') return { status: 'SUCCESS' }
    const message = JSON.parse(data)
    if (message.action === 'echo') {
      return { status: 'SUCCESS', transmissions: [JSON.stringify({ identifier, message })] }
    }
    if (message.action === 'broadcast') {
      await server.broadcast(streamOf(identifier), data)
      message.action = 'broadcastResult'
      return { status: 'SUCCESS', transmissions: [JSON.stringify({ identifier, message })] }
    }
    return { status: 'ERROR', errorMsg: `unknown action ${message.action}` }
  },
  disconnect () {
    return { status: 'SUCCESS' }
  }
}

// The same application with the package's high-level API: what a Node developer would write.
class BenchmarkChannel extends Channel {
  subscribed (handle, { stream }) {
    handle.streamFrom(stream || 'all')
  }

  echo (handle, _params, data) {
    handle.transmit({ action: 'echo', ...data })
  }

  async broadcast (handle, { stream }, data) {
    await server.broadcast(stream || 'all', { action: 'broadcast', ...data })
    handle.transmit({ action: 'broadcastResult', ...data })
  }
}

class BenchmarkApp extends Application {
  connect (handle) {
    handle.identifiedBy({ id: String(nextId++) })
  }
}

async function startGrpc () {
  const grpc = testRequire('@grpc/grpc-js')
  const protoLoader = testRequire('@grpc/proto-loader')
  const definition = protoLoader.loadSync(path.join(root, 'proto/rpc.proto'), { enums: String, defaults: true })
  const service = grpc.loadPackageDefinition(definition).anycable.RPC.service
  const wrap = (fn) => (call, callback) => {
    const sid = call.metadata.get('sid')[0]
    Promise.resolve(fn({ ...call.request, sid: sid ? String(sid) : '' }))
      .then((response) => callback(null, response), (error) => callback(error))
  }
  const grpcServer = new grpc.Server()
  grpcServer.addService(service, {
    Connect: wrap(handlers.connect),
    Command: wrap(handlers.command),
    Disconnect: wrap(handlers.disconnect)
  })
  const grpcPort = await new Promise((resolve, reject) => {
    grpcServer.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => err ? reject(err) : resolve(p))
  })
  return { grpcServer, rpcHost: `127.0.0.1:${grpcPort}` }
}

const options = { host: '127.0.0.1', port, httpBroadcastPort: broadcastPort, logLevel: 'warn' }
let grpcServer = null
if (mode === 'grpc') {
  const started = await startGrpc()
  grpcServer = started.grpcServer
  server = new Server({ ...options, rpcHost: started.rpcHost })
} else if (mode === 'app') {
  server = new Server(options)
  server.handle(new BenchmarkApp().registerChannel('BenchmarkChannel', BenchmarkChannel))
} else {
  server = new Server(options)
  server.handle(handlers)
}
await server.start()
console.error(`node-bench (${mode}) on ${server.address.url}`)

async function shutdown () {
  await server.stop()
  if (grpcServer) grpcServer.forceShutdown()
  process.exit(0)
}
process.on('SIGTERM', shutdown)
process.on('SIGINT', shutdown)
