// The write half of the Durable Streams protocol, for the protocol's conformance suite only: Ferrocable serves
// reads, and publications reach its streams through broadcasts. This fixture sits in front of a server started
// with `ds_path=/v1/stream`: it answers a create (`PUT`) and an append (`POST`) of JSON messages by broadcasting
// each message to the stream (a JSON array body is a batch of messages, as the protocol has it), waits until the
// broker has registered them, and passes every other request (`GET`, `HEAD`, `OPTIONS`) to the server untouched,
// so what the suite checks about reads is the server's own answer.
import http from 'node:http'
import { broadcastOk } from './harness.js'

const PREFIX = '/v1/stream/'

/** The numeric part of an offset the server handed out (`0` for an empty stream). */
function offsetNumber (offset) {
  return Number((offset ?? '0').split('::')[0])
}

async function readBody (req) {
  const chunks = []
  for await (const chunk of req) chunks.push(chunk)
  return Buffer.concat(chunks).toString('utf8')
}

/** Starts the fixture for `server` (a FerrocableProcess); resolves to { url, close }. */
export async function startDsWriter (server) {
  const upstream = `http://${server.host}:${server.port}`
  const tail = async (path) => (await fetch(`${upstream}${path}`, { method: 'HEAD' })).headers.get('stream-next-offset')

  const write = async (req, res) => {
    const type = (req.headers['content-type'] ?? 'application/json').split(';')[0].trim().toLowerCase()
    const body = await readBody(req)
    const answer = (status, headers = {}, text = '') => {
      res.writeHead(status, headers)
      res.end(text)
    }
    if (type !== 'application/json') return answer(415, {}, 'only application/json streams can be written here')
    let messages = []
    if (body !== '') {
      let value
      try {
        value = JSON.parse(body)
      } catch {
        return answer(400, {}, 'invalid JSON')
      }
      messages = Array.isArray(value) ? value : [value]
      if (Array.isArray(value) && value.length === 0 && req.method === 'POST') return answer(400, {}, 'empty JSON array')
    } else if (req.method === 'POST') {
      return answer(400, {}, 'empty body')
    }
    const path = req.url.split('?')[0]
    const before = offsetNumber(await tail(path))
    const stream = decodeURIComponent(path.slice(PREFIX.length))
    for (const message of messages) await broadcastOk(server, { stream, data: JSON.stringify(message) })
    let next = await tail(path)
    for (let i = 0; i < 200 && offsetNumber(next) < before + messages.length; i++) {
      await new Promise((resolve) => setTimeout(resolve, 5))
      next = await tail(path)
    }
    const headers = { 'content-type': 'application/json', 'stream-next-offset': next }
    answer(req.method === 'PUT' ? 201 : 204, req.method === 'PUT' ? { ...headers, location: `${upstream}${path}` } : headers)
  }

  const proxy = (req, res) => {
    const forwarded = http.request(`${upstream}${req.url}`, { method: req.method, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode, answer.headers)
      answer.pipe(res)
    })
    forwarded.on('error', () => res.destroy())
    res.on('close', () => forwarded.destroy())
    req.pipe(forwarded)
  }

  const fixture = http.createServer((req, res) => {
    if (req.url.startsWith(PREFIX) && (req.method === 'PUT' || req.method === 'POST')) {
      write(req, res).catch((err) => {
        res.writeHead(500)
        res.end(String(err))
      })
    } else {
      proxy(req, res)
    }
  })
  await new Promise((resolve) => fixture.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${fixture.address().port}`,
    close: () => new Promise((resolve) => {
      fixture.closeAllConnections()
      fixture.close(resolve)
    })
  }
}
