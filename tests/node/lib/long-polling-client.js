// A long-polling client written to the wire format of AnyCable's docs/long_polling.md (AnyCable's own client,
// @anycable/long-polling, is not on the public npm registry): every request is a POST whose body holds the
// client's commands as JSON lines; the first one (without X-Anycable-Poll-ID) authenticates and its answer
// carries the poll session id in X-Anycable-Poll-ID; every later one brings that id. Answers hold the server's
// messages as JSON lines; 401 means rejected or expired.
export class LongPollingClient {
  constructor (url, { headers = {} } = {}) {
    this.url = url
    this.headers = headers
    this.pollId = null
    this.outbox = []
    this.received = []
  }

  /** Queues a command for the next request. */
  send (command) {
    this.outbox.push(command)
  }

  /** One request with the queued commands: `{ status, messages, body }`; messages are also kept in `received`. */
  async request () {
    const body = this.outbox.map((c) => `${JSON.stringify(c)}\n`).join('')
    this.outbox = []
    const headers = { 'content-type': 'application/jsonl', ...this.headers }
    if (this.pollId) headers['x-anycable-poll-id'] = this.pollId
    const res = await fetch(this.url, { method: 'POST', headers, body })
    const text = await res.text()
    const id = res.headers.get('x-anycable-poll-id')
    if (id) this.pollId = id
    let messages = []
    if (res.headers.get('content-type')?.startsWith('application/jsonl')) {
      if (text.length > 0 && !text.endsWith('\n')) throw new Error(`the last JSON line is not followed by a newline: ${JSON.stringify(text)}`)
      messages = text.split('\n').filter((line) => line.length > 0).map((line) => JSON.parse(line))
    }
    this.received.push(...messages)
    return { status: res.status, messages, body: text }
  }

  /** Polls until `predicate(received)` holds; returns the matching message. */
  async pollUntil (predicate, { timeout = 10000 } = {}) {
    const deadline = Date.now() + timeout
    for (;;) {
      const found = this.received.find(predicate)
      if (found) return found
      if (Date.now() > deadline) throw new Error(`no matching message within ${timeout} ms; got ${JSON.stringify(this.received)}`)
      const { status, body } = await this.request()
      if (status !== 200) throw new Error(`poll answered ${status}: ${body}`)
    }
  }
}
