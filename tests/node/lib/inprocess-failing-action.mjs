// Run in its own process by inprocess-errors.test.js: a server with no 'error' listener whose action
// throws. Prints what the client got after the failure, stops the server and lets the process end.
// With the argument `throwing-listener` (inprocess-answers.test.js) the 'error' listener throws too, and the
// process prints the uncaught exception it becomes.
import WebSocket from 'ws'
import { Application, Channel, Server } from 'ferrocable'

class Boom extends Channel {
  explode () { throw new Error('kaput') }
  ok (handle) { handle.transmit({ ok: true }) }
}
class App extends Application {}
const app = new App()
app.registerChannel('Boom', Boom)

const server = new Server({ host: '127.0.0.1', port: 0, httpBroadcastPort: 0, logLevel: 'warn' })
server.handle(app)
if (process.argv[2] === 'throwing-listener') {
  process.on('uncaughtException', (err) => console.log(`uncaught: ${err.message}`))
  server.on('error', () => { throw new Error('listener exploded') })
}
await server.start()

const ws = new WebSocket(server.address.url, ['actioncable-v1-json'])
const identifier = JSON.stringify({ channel: 'Boom' })
ws.on('message', (raw) => {
  const frame = JSON.parse(raw.toString())
  if (frame.type === 'welcome') ws.send(JSON.stringify({ command: 'subscribe', identifier }))
  if (frame.type === 'confirm_subscription') {
    ws.send(JSON.stringify({ command: 'message', identifier, data: JSON.stringify({ action: 'explode' }) }))
    ws.send(JSON.stringify({ command: 'message', identifier, data: JSON.stringify({ action: 'ok' }) }))
  }
  if (frame.message) {
    console.log(`served after failure: ${JSON.stringify(frame.message)}`)
    ws.close()
    server.stop()
  }
})
