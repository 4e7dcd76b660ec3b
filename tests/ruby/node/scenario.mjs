// A @rails/actioncable consumer in Node, driven line by line by the Ruby test suite.
//
//   node scenario.mjs <ws url> <cookie header>
//
// stdin, one JSON command per line:
//   {"op":"subscribe","name":"s1","params":{"channel":"ChatChannel","room":"lobby"}}
//   {"op":"perform","name":"s1","action":"speak","data":{"text":"hi"}}
//   {"op":"unsubscribe","name":"s1"}      {"op":"quit"}
// stdout, one JSON event per line: ready, connected, received (with data), rejected, disconnected.
import readline from 'node:readline'
import WebSocket from 'ws'
import ActionCable from '@rails/actioncable'

const [url, cookie = ''] = process.argv.slice(2)

// @rails/actioncable is written for browsers: it needs a WebSocket class and the window-level
// add/removeEventListener of its connection monitor (no visibility changes happen here).
globalThis.addEventListener ||= () => {}
globalThis.removeEventListener ||= () => {}
class CookieWebSocket extends WebSocket {
  constructor (address, protocols) {
    super(address, protocols, { headers: cookie ? { cookie } : {} })
  }
}
ActionCable.adapters.WebSocket = CookieWebSocket

const emit = (event) => process.stdout.write(JSON.stringify(event) + '\n')
const consumer = ActionCable.createConsumer(url)
const subscriptions = new Map()

const commands = {
  subscribe ({ name, params }) {
    subscriptions.set(name, consumer.subscriptions.create(params, {
      connected () { emit({ event: 'connected', name }) },
      rejected () { emit({ event: 'rejected', name }) },
      received (data) { emit({ event: 'received', name, data }) },
      disconnected ({ willAttemptReconnect } = {}) { emit({ event: 'disconnected', name, willAttemptReconnect }) }
    }))
  },
  perform ({ name, action, data = {} }) { subscriptions.get(name).perform(action, data) },
  unsubscribe ({ name }) {
    subscriptions.get(name).unsubscribe()
    subscriptions.delete(name)
  },
  quit () {
    consumer.disconnect()
    setTimeout(() => process.exit(0), 50)
  }
}

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (!line.trim()) return
  const command = JSON.parse(line)
  commands[command.op](command)
})
process.stdin.on('end', () => commands.quit())
emit({ event: 'ready' })
