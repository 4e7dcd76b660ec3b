// A client run inside the test's network namespace (lib/netns.js): connects to the Action Cable URL with the
// `user=<name>` cookie, subscribes to ChatChannel `room`, prints one JSON line {"sid", "identifier"} once
// confirmed, and then only keeps its socket open (its kernel answers the server's pings) until it is killed.
// Usage: node netns-client.js <url> <user> <room>
import WebSocket from 'ws'

const [url, user, room] = process.argv.slice(2)
const identifier = JSON.stringify({ channel: 'ChatChannel', room })
const ws = new WebSocket(url, ['actioncable-v1-json'], { headers: { cookie: `user=${user}` } })
let sid
ws.on('message', (data) => {
  const frame = JSON.parse(data.toString('utf8'))
  if (frame.type === 'welcome') {
    sid = frame.sid
    ws.send(JSON.stringify({ command: 'subscribe', identifier }))
  } else if (frame.type === 'confirm_subscription' && frame.identifier === identifier) {
    process.stdout.write(`${JSON.stringify({ sid, identifier })}\n`)
  }
})
ws.on('error', (err) => {
  process.stderr.write(`netns client ${user}: ${err.message}\n`)
  process.exit(1)
})
ws.on('close', (code) => {
  process.stderr.write(`netns client ${user}: closed with ${code}\n`)
  process.exit(1)
})
