// The test backend (lib/backend.js) serving from a child process, so a test can kill it for real. Started
// by `BackendProcess` with the port as its argument; it reports every call it receives and applies the
// disruptions it is sent, both over the IPC channel, and ends with its parent.
import { Backend } from './backend.js'

const backend = new Backend(Number(process.argv[2]))
backend.onCall = (record) => process.send({ call: record })
process.on('message', (message) => {
  if ('disruption' in message) {
    backend.disruption = message.disruption
    process.send({ disrupted: true })
  }
})
process.on('disconnect', () => process.exit(0))

try {
  await backend.start()
  process.send({ listening: true })
} catch (err) {
  process.send({ error: err.message })
  process.exit(1)
}
