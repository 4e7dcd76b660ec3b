// The three ways Ferrocable is deployed, behind one interface, so that a scenario written once runs against
// each of them:
//
//   binary  the `ferrocable` binary in front of the suite's gRPC backend (lib/backend.js)
//   node    the npm package in this process, running the suite's Application (lib/inprocess-app.js)
//   rails   the dummy Rails app (tests/ruby/dummy) in Puma with `adapter: ferrocable`, its unchanged Action
//           Cable channels run in-process by the gem
//
// Each serves the same chat: a user authenticates with a cookie (`cookieFor`), subscribes to the chat channel
// of a room (`chatChannel`), and messages published to that room (`publish`, through the deployment's own
// broadcast path: HTTP, a direct call, the app's `broadcast_to`) reach subscribers as `{ text, ... }`.
// `calls(user)` counts the Connect and subscribe calls the application saw for a user.
//
// Options are core options by their AnyCable names (`{ broker: 'memory', history_limit: 3 }`): flags for the
// binary, camelCase Server options in Node, ANYCABLE_* variables for the Rails app.
import { spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { startBackend } from './backend.js'
import { broadcastOk, eventually, freePort, onScenarioEnd, parseCookies, repoRoot, startServer } from './harness.js'
import { startInProcess } from './inprocess-app.js'

const camel = (name) => name.replace(/_([a-z])/g, (_, c) => c.toUpperCase())

const userOfCookie = (header) => parseCookies(header).user

/** The binary in front of the gRPC backend. */
async function binaryDeployment (options) {
  const backend = await startBackend()
  const args = Object.entries(options).map(([name, value]) => `--${name}=${value}`)
  let server = await startServer({ rpcPort: backend.port, args })
  return {
    name: 'binary',
    url: (query) => server.url(query),
    get port () { return server.port },
    cookieFor: async (user) => `user=${user}`,
    chatChannel: (room) => ({ channel: 'ChatChannel', room }),
    publish: (room, text) => broadcastOk(server, { stream: `chat_${room}`, data: JSON.stringify({ text }) }),
    calls: async (user) => ({
      connects: backend.callsOf('Connect', (r) => userOfCookie(r.env?.headers?.cookie) === user).length,
      subscribes: backend.commandsFor(user, (r) => r.command === 'subscribe').length
    }),
    async restart () {
      const { port, broadcastPort } = server
      await server.stop()
      server = await startServer({ rpcPort: backend.port, port, broadcastPort, args })
    },
    async stop () {
      await server.stop()
      await backend.stop()
    }
  }
}

/** The npm package in this process. */
async function nodeDeployment (options) {
  const serverOptions = Object.fromEntries(Object.entries(options).map(([name, value]) => [camel(name), value]))
  let inProcess = await startInProcess({ options: serverOptions })
  const recorder = inProcess.recorder
  return {
    name: 'node',
    url: (query) => inProcess.url(query),
    get port () { return inProcess.port },
    cookieFor: async (user) => `user=${user}`,
    chatChannel: (room) => ({ channel: 'ChatChannel', room }),
    publish: (room, text) => inProcess.broadcast(`chat_${room}`, { text }),
    calls: async (user) => ({
      connects: recorder.callsOf('connect', (r) => userOfCookie(r.env?.headers?.cookie) === user).length,
      subscribes: recorder.commandsFor(user, (r) => r.command === 'subscribe').length
    }),
    async restart () {
      const port = inProcess.port
      await inProcess.stop()
      inProcess = await startInProcess({ options: { ...serverOptions, port } })
      // The same recorder keeps counting.
      inProcess.recorder.calls = recorder.calls
    },
    stop: () => inProcess.stop()
  }
}

const dummyRoot = path.join(repoRoot, 'tests', 'ruby', 'dummy')
// The Ruby suite's bundle (Debian's gems and the gem from this repository; `make test-node` resolves it).
const gemfile = path.join(repoRoot, 'tests', 'ruby', 'Gemfile')

/** The dummy Rails app in Puma, Ferrocable in-process. */
async function railsDeployment (options) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ferrocable-rails-'))
  const [webPort, cablePort, broadcastPort] = [await freePort(), await freePort(), await freePort()]
  const env = {
    ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ANYCABLE_'))),
    BUNDLE_GEMFILE: gemfile,
    RAILS_ENV: 'test',
    DUMMY_DATABASE: path.join(tmp, 'db.sqlite3'),
    DUMMY_LOG: path.join(tmp, 'rails.log'),
    DUMMY_RECORD_CALLS: '1',
    PORT: String(webPort),
    ANYCABLE_PORT: String(cablePort),
    ANYCABLE_HTTP_BROADCAST_PORT: String(broadcastPort),
    ANYCABLE_PING_INTERVAL: '1',
    ...Object.fromEntries(Object.entries(options).map(([name, value]) => [`ANYCABLE_${name.toUpperCase()}`, String(value)]))
  }
  const setup = spawnSync('ruby', ['-rbundler/setup', 'bin/setup_db'], { cwd: dummyRoot, env, encoding: 'utf8' })
  if (setup.status !== 0) throw new Error(`the dummy app's database setup failed: ${setup.stderr}`)
  const web = `http://127.0.0.1:${webPort}`
  let puma
  const output = path.join(tmp, 'puma.out')
  const start = async () => {
    const out = fs.openSync(output, 'a')
    puma = spawn('ruby', ['-rbundler/setup', '-S', 'puma', '-C', 'config/puma.rb'], { cwd: dummyRoot, env, stdio: ['ignore', out, out] })
    fs.closeSync(out)
    const exited = new Promise((resolve) => puma.once('exit', resolve))
    puma.exited = exited
    await eventually(async () => {
      if (puma.exitCode !== null) throw new Error(`puma exited: ${fs.readFileSync(output, 'utf8').slice(-2000)}`)
      const [app, cable] = await Promise.all([fetch(`${web}/ping`), fetch(`http://127.0.0.1:${cablePort}/health`)])
      return app.ok && cable.ok
    }, { timeout: 60000, interval: 100, what: 'the dummy Rails app to serve' })
  }
  const stopPuma = async () => {
    if (puma.exitCode !== null) return
    puma.kill('SIGTERM')
    const done = await Promise.race([puma.exited.then(() => true), sleep(15000, false)])
    if (!done) {
      puma.kill('SIGKILL')
      await puma.exited
    }
  }
  await start()
  process.on('exit', () => puma.exitCode === null && puma.kill('SIGKILL'))
  const post = async (pathname, form) => {
    const res = await fetch(`${web}${pathname}`, { method: 'POST', body: new URLSearchParams(form) })
    if (!res.ok) throw new Error(`POST ${pathname} answered ${res.status}: ${await res.text()}`)
    return res
  }
  return {
    name: 'rails',
    url: (query = {}) => {
      const qs = new URLSearchParams(query).toString()
      return `ws://127.0.0.1:${cablePort}/cable${qs ? `?${qs}` : ''}`
    },
    port: cablePort,
    async cookieFor (user) {
      const res = await post('/login', { name: user })
      return res.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ')
    },
    chatChannel: (room) => ({ channel: 'ChatChannel', room }),
    publish: (room, text) => post(`/rooms/${encodeURIComponent(room)}/messages`, { text }),
    async calls (user) {
      const events = await (await fetch(`${web}/events?user=${encodeURIComponent(user)}`)).json()
      return {
        connects: events.filter((e) => e.kind === 'connect').length,
        subscribes: events.filter((e) => e.kind === 'subscribed').length
      }
    },
    async restart () {
      await stopPuma()
      await start()
    },
    async stop () {
      await stopPuma()
      fs.rmSync(tmp, { recursive: true, force: true })
    }
  }
}

const starters = { binary: binaryDeployment, node: nodeDeployment, rails: railsDeployment }

/** Every deployment's name. */
export const DEPLOYMENTS = Object.keys(starters)

/** Starts deployment `name` with core `options`; it is stopped when the scenario ends. */
export async function startDeployment (name, options = {}) {
  const deployment = await starters[name](options)
  onScenarioEnd(() => deployment.stop())
  return deployment
}
