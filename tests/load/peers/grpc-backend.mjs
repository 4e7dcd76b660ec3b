// A trivial AnyCable RPC backend on @grpc/grpc-js, as a Node application would run one behind the server:
//
//   node tests/load/peers/grpc-backend.mjs PORT
//
// Connect accepts a client with a `user=<name>` cookie (identifiers {"user": name}) and refuses one without;
// subscribe streams from the identifier's `stream` (default `all`); everything else answers SUCCESS. Prints
// "ready" once it listens; ends on SIGTERM/SIGINT.
import path from 'node:path'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..')
const testRequire = createRequire(path.join(root, 'tests/node/package.json'))
const grpc = testRequire('@grpc/grpc-js')
const protoLoader = testRequire('@grpc/proto-loader')

const port = Number(process.argv[2])
if (!Number.isInteger(port) || port <= 0) {
  console.error('usage: grpc-backend.mjs PORT')
  process.exit(2)
}

const definition = protoLoader.loadSync(path.join(root, 'proto/rpc.proto'), { enums: String, defaults: true })
const service = grpc.loadPackageDefinition(definition).anycable.RPC.service

const server = new grpc.Server()
server.addService(service, {
  Connect ({ request }, callback) {
    const user = /(?:^|;\s*)user=(\w+)/.exec(request.env?.headers?.cookie || '')?.[1]
    if (!user) {
      callback(null, {
        status: 'FAILURE',
        transmissions: [JSON.stringify({ type: 'disconnect', reason: 'unauthorized', reconnect: false })]
      })
      return
    }
    callback(null, {
      status: 'SUCCESS',
      identifiers: JSON.stringify({ user }),
      transmissions: [JSON.stringify({ type: 'welcome' })]
    })
  },
  Command ({ request }, callback) {
    if (request.command !== 'subscribe') {
      callback(null, { status: 'SUCCESS' })
      return
    }
    let stream = 'all'
    try { stream = JSON.parse(request.identifier).stream || 'all' } catch {}
    callback(null, {
      status: 'SUCCESS',
      streams: [stream],
      transmissions: [JSON.stringify({ identifier: request.identifier, type: 'confirm_subscription' })]
    })
  },
  Disconnect (_call, callback) {
    callback(null, { status: 'SUCCESS' })
  }
})
server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (error) => {
  if (error) {
    console.error(`cannot listen on ${port}: ${error.message}`)
    process.exit(1)
  }
  console.log('ready')
})
const stop = () => server.tryShutdown(() => process.exit(0))
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
