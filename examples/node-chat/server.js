// A chat room: one Node process serves the page over HTTP and embeds Ferrocable for the WebSocket side.
// The channel logic below runs in this process; sockets, subscriptions and fan-out run in Rust.
//
//   node server.js              HTTP on PORT (3000), WebSocket on CABLE_PORT (8080), both on HOST (127.0.0.1)
//
// Who is online: each connection keeps its name in cstate and its room in istate, so when it leaves,
// `unsubscribed` knows whom to drop from which room without any lookup table of sockets.
import http from 'node:http'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import * as esbuild from 'esbuild'
import { Application, Channel, Server } from 'ferrocable'

const here = path.dirname(fileURLToPath(import.meta.url))
const HOST = process.env.HOST || '127.0.0.1'
const PORT = Number(process.env.PORT || 3000)
const CABLE_PORT = Number(process.env.CABLE_PORT || 8080)
const HISTORY = 20

// `sse`: the watch page (/watch) follows a room over Server-Sent Events, without WebSockets.
const cable = new Server({ host: HOST, port: CABLE_PORT, broadcastAdapter: [], sse: true, logLevel: process.env.LOG_LEVEL || 'info' })

/** room -> { members: Map<sid, name>, history: [] } */
const rooms = new Map()

function room (name) {
  let state = rooms.get(name)
  if (!state) {
    state = { members: new Map(), history: [] }
    rooms.set(name, state)
  }
  return state
}

function online (name) {
  return [...new Set(room(name).members.values())].sort()
}

class ChatChannel extends Channel {
  async subscribed (handle, { room: name }) {
    if (typeof name !== 'string' || name.trim() === '') return handle.reject()
    const me = handle.cstate.get('name')
    room(name).members.set(handle.sid, me)
    handle.istate.set('room', name)
    handle.streamFrom(`chat:${name}`)
    // The new member is not streaming yet (streams start when this call returns), so it gets the current
    // state directly and everyone else gets it as a broadcast.
    handle.transmit({ type: 'history', messages: room(name).history })
    handle.transmit({ type: 'presence', online: online(name) })
    await cable.broadcast(`chat:${name}`, { type: 'presence', online: online(name) }, { excludeSocket: handle.sid })
  }

  async unsubscribed (handle) {
    const name = handle.istate.get('room')
    if (!name || !rooms.has(name)) return
    room(name).members.delete(handle.sid)
    await cable.broadcast(`chat:${name}`, { type: 'presence', online: online(name) })
  }

  async speak (handle, { room: name }, { text }) {
    if (typeof text !== 'string' || text.trim() === '') return
    const message = { type: 'message', from: handle.cstate.get('name'), text: text.slice(0, 500), at: new Date().toISOString() }
    const { history } = room(name)
    history.push(message)
    if (history.length > HISTORY) history.shift()
    await cable.broadcast(`chat:${name}`, message)
  }
}

class ChatApp extends Application {
  async connect (handle) {
    const name = (handle.env.params.name || '').trim().slice(0, 32)
    if (!name) return handle.reject()
    handle.identifiedBy({ name, sid: handle.sid })
    handle.cstate.set('name', name)
  }
}

const app = new ChatApp()
app.registerChannel('ChatChannel', ChatChannel)
cable.handle(app)
cable.on('error', (error) => console.error(`chat: ${error.message}`))

// The page script, bundled once at startup (nothing is written to disk).
const bundle = await esbuild.build({
  entryPoints: [path.join(here, 'public', 'client.js')],
  bundle: true,
  format: 'esm',
  target: 'es2020',
  write: false,
  logLevel: 'warning'
})
const clientJs = bundle.outputFiles[0].contents
const pageTemplate = await readFile(path.join(here, 'public', 'index.html'), 'utf8')
const watchTemplate = await readFile(path.join(here, 'public', 'watch.html'), 'utf8')

const web = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://localhost')
  if (url.pathname === '/') {
    // The WebSocket lives on another port of the same host the browser used.
    const hostname = (req.headers.host || 'localhost').replace(/:\d+$/, '')
    const cableUrl = `ws://${hostname}:${cable.address.port}/cable`
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' })
    res.end(pageTemplate.replace('%CABLE_URL%', cableUrl))
  } else if (url.pathname === '/watch') {
    const hostname = (req.headers.host || 'localhost').replace(/:\d+$/, '')
    const eventsUrl = `http://${hostname}:${cable.address.port}/events`
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' })
    res.end(watchTemplate.replace('%EVENTS_URL%', eventsUrl))
  } else if (url.pathname === '/client.js') {
    res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8' })
    res.end(clientJs)
  } else {
    res.writeHead(404, { 'content-type': 'text/plain' })
    res.end('not found\n')
  }
})

await cable.start()
await new Promise((resolve, reject) => {
  web.once('error', reject)
  web.listen(PORT, HOST, resolve)
})
const shownHost = HOST === '127.0.0.1' || HOST === '0.0.0.0' ? 'localhost' : HOST
console.log(`Chat demo: http://${shownHost}:${web.address().port}/ (WebSocket ${cable.address.url}); Ctrl-C stops it`)

let stopping = false
async function shutdown (signal) {
  if (stopping) return
  stopping = true
  console.log(`${signal}: stopping`)
  web.close()
  web.closeAllConnections()
  await cable.stop()
}
process.on('SIGINT', () => shutdown('SIGINT'))
process.on('SIGTERM', () => shutdown('SIGTERM'))
