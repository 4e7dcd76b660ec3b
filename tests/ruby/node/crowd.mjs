// Many WebSocket clients (the `ws` package) that connect and subscribe at once, speaking Action Cable's
// protocol; used to load a server while the Ruby suite measures something else.
//
//   node crowd.mjs <ws url> <cookie header> <count> <channel identifier JSON>
//
// Prints {"event":"subscribed","count":N,"ms":T} once every client is confirmed (or {"event":"failed",...}),
// then keeps the connections open until stdin closes.
import WebSocket from 'ws'

const [url, cookie, countText, identifier] = process.argv.slice(2)
const count = Number(countText)
const started = performance.now()
const sockets = []
let confirmed = 0
let failed = 0

const report = (event) => process.stdout.write(JSON.stringify(event) + '\n')

for (let i = 0; i < count; i++) {
  const socket = new WebSocket(url, ['actioncable-v1-json'], { headers: { cookie } })
  sockets.push(socket)
  socket.on('message', (raw) => {
    const frame = JSON.parse(raw.toString())
    if (frame.type === 'welcome') {
      socket.send(JSON.stringify({ command: 'subscribe', identifier }))
    } else if (frame.type === 'confirm_subscription') {
      confirmed += 1
      if (confirmed === count) report({ event: 'subscribed', count, ms: Math.round(performance.now() - started) })
    } else if (frame.type === 'reject_subscription' || frame.type === 'disconnect') {
      failed += 1
      report({ event: 'failed', frame })
    }
  })
  socket.on('error', (error) => {
    failed += 1
    report({ event: 'failed', error: String(error) })
  })
}

process.stdin.resume()
process.stdin.on('end', () => {
  for (const socket of sockets) socket.terminate()
  process.exit(failed === 0 ? 0 : 1)
})
