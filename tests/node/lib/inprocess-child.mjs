// A Node app embedding ferrocable, run as a child process by inprocess-lifecycle.test.js. Modes:
//   stop-after-start   start, stop at once: the process must then end by itself
//   run-until-sigint   start, print READY <port>, keep serving until SIGINT, then stop gracefully
//   stopped-twice      start, stop twice in parallel and once more, then end
//   busy-event-loop    start; on the stdin line "go", broadcast to stream "room" and then keep the event
//                      loop busy for 1.5 s (printing BUSY_DONE after it); stop on the line "stop"
// Prints one line per step so the test can follow.
import { Application, Channel, Server } from 'ferrocable'

class Room extends Channel {
  subscribed (handle) { handle.streamFrom('room') }
  ping (handle) { handle.transmit({ pong: Date.now() }) }
}
class App extends Application {
  disconnect (handle) { console.log(`DISCONNECT ${handle.sid}`) }
}
const app = new App()
app.registerChannel('Room', Room)

const mode = process.argv[2]
const server = new Server({ host: '127.0.0.1', port: 0, httpBroadcastPort: 0, logLevel: 'error' })
server.handle(app)
await server.start()
console.log(`READY ${server.address.port}`)

if (mode === 'stop-after-start') {
  await server.stop()
  console.log('STOPPED')
} else if (mode === 'stopped-twice') {
  await Promise.all([server.stop(), server.stop()])
  await server.stop()
  console.log('STOPPED')
} else if (mode === 'busy-event-loop') {
  process.stdin.setEncoding('utf8')
  process.stdin.on('data', (text) => {
    if (text.includes('stop')) {
      process.stdin.pause()
      server.stop()
      return
    }
    server.broadcast('room', { sent: Date.now() })
    // Let the broadcast cross into Rust (it is flushed in a microtask), then hog the event loop.
    setImmediate(() => {
      const until = Date.now() + 1500
      while (Date.now() < until) {} // eslint-disable-line no-empty
      console.log(`BUSY_DONE ${Date.now()}`)
    })
  })
} else if (mode === 'run-until-sigint') {
  process.on('SIGINT', async () => {
    console.log('SIGINT')
    await server.stop()
    console.log('STOPPED')
  })
}
