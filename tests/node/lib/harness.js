// The one harness of the black-box suite: free ports, the ferrocable process, HTTP broadcasts and
// a `scenario` wrapper that closes every client a test opened and, when the test fails, appends the
// server log lines written during that test to the error.
// Environment: FERROCABLE_BIN picks the binary (default target/debug/ferrocable); FERROCABLE_LOG=1
// also echoes every server log line to stderr as it is written.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'

const suiteDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
export const repoRoot = path.resolve(suiteDir, '..', '..')
export const binaryPath = process.env.FERROCABLE_BIN || path.join(repoRoot, 'target', 'debug', 'ferrocable')
export const BROADCAST_KEY = 'testkey'

// Upper bound for any single wait on the server; every test is bounded by `scenario`'s timeout too.
export const WAIT_MS = 5000

/** Asks the kernel for a free loopback TCP port. */
export function freePort () {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

let uniqueCounter = 0
/** A name no other test in any process uses (user names, rooms, streams). */
export function unique (prefix) {
  uniqueCounter += 1
  return `${prefix}-${process.pid}-${uniqueCounter}`
}

/** A Cookie header as an object of name -> value (the suite's apps authenticate by the `user` cookie). */
export function parseCookies (header = '') {
  const cookies = {}
  for (const part of header.split(';')) {
    const eq = part.indexOf('=')
    if (eq > 0) cookies[part.slice(0, eq).trim()] = part.slice(eq + 1).trim()
  }
  return cookies
}

/** Polls `check` until it returns a truthy value; fails with `what` after `timeout` ms. */
export async function eventually (check, { timeout = WAIT_MS, interval = 25, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout
  let lastError
  while (Date.now() < deadline) {
    try {
      const value = await check()
      if (value) return value
    } catch (err) {
      lastError = err
    }
    await sleep(interval)
  }
  throw new Error(`timed out after ${timeout} ms waiting for ${what}${lastError ? `: ${lastError.message}` : ''}`)
}

// --- scenario scope: things to dispose when the current test ends ------------------------------

let scope = null
const allServers = new Set()

/** Registers a cleanup callback for the running scenario (no-op outside one). */
/** Runs a Node script of this suite in its own process to its end: `{ code, stdout, stderr }`. */
export async function runNodeScript (script, args = []) {
  const child = spawn(process.execPath, [path.join(suiteDir, script), ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d) => { stdout += d })
  child.stderr.on('data', (d) => { stderr += d })
  const code = await new Promise((resolve) => child.on('exit', resolve))
  return { code, stdout, stderr }
}

export function onScenarioEnd (fn) {
  if (scope) scope.push(fn)
}

/**
 * Declares a test. Clients opened and servers started inside are closed and stopped at its end; on failure the error message gets the
 * log lines every ferrocable process wrote while the test ran.
 */
export function scenario (name, fn, { timeout = 20000 } = {}) {
  return test(name, { timeout }, async (t) => {
    const disposers = []
    scope = disposers
    const marks = new Map([...allServers].map((s) => [s, s.logLines.length]))
    try {
      await fn(t)
    } catch (err) {
      const parts = []
      for (const server of allServers) {
        const from = marks.get(server) ?? 0
        const lines = server.logLines.slice(from)
        const shown = lines.slice(-120)
        parts.push(`--- ferrocable on port ${server.port}: ${lines.length} log lines during this test${shown.length < lines.length ? `, last ${shown.length} shown` : ''} ---\n${shown.join('\n')}`)
      }
      if (parts.length > 0 && err && typeof err === 'object') {
        try {
          err.message = `${err.message}\n${parts.join('\n')}`
        } catch {}
      }
      throw err
    } finally {
      scope = null
      for (const dispose of disposers.reverse()) {
        try {
          await dispose()
        } catch {}
      }
    }
  })
}

// --- the ferrocable process ---------------------------------------------------------------------

export class FerrocableProcess {
  constructor ({ child, host = '127.0.0.1', port, broadcastPort }) {
    this.child = child
    this.host = host
    this.port = port
    this.broadcastPort = broadcastPort
    this.logLines = []
    let pending = ''
    this.exited = new Promise((resolve) => {
      child.on('close', (code, signal) => {
        if (pending) this.logLines.push(pending)
        this.exitStatus = { code, signal }
        resolve(this.exitStatus)
      })
    })
    const collect = (chunk) => {
      pending += chunk.toString('utf8')
      const lines = pending.split('\n')
      pending = lines.pop()
      this.logLines.push(...lines)
      if (process.env.FERROCABLE_LOG) for (const line of lines) process.stderr.write(`[ferrocable:${port}] ${line}\n`)
    }
    child.stdout.on('data', collect)
    child.stderr.on('data', collect)
    allServers.add(this)
  }

  /** Everything the process logged so far (stdout and stderr). */
  get log () {
    return this.logLines.join('\n')
  }

  /** ws://<host>:<port>/cable with optional query parameters. */
  url (query = {}, pathname = '/cable') {
    const qs = new URLSearchParams(query).toString()
    return `ws://${this.host}:${this.port}${pathname}${qs ? `?${qs}` : ''}`
  }

  get running () {
    return this.exitStatus === undefined
  }

  /** Sends SIGTERM and waits for the exit; SIGKILL after `timeout` ms. */
  async stop ({ timeout = 10000 } = {}) {
    if (this.running) this.child.kill('SIGTERM')
    const status = await Promise.race([this.exited, sleep(timeout, null, { ref: false })])
    if (status) return status
    this.child.kill('SIGKILL')
    await this.exited
    throw new Error(`ferrocable on port ${this.port} did not exit within ${timeout} ms of SIGTERM`)
  }

  /** Waits until a log line matches `pattern`. */
  waitForLog (pattern, { timeout = WAIT_MS } = {}) {
    return eventually(() => this.logLines.some((line) => pattern.test(line)), { timeout, what: `a log line matching ${pattern}` })
  }
}

process.on('exit', () => {
  for (const server of allServers) if (server.running) server.child.kill('SIGKILL')
})

function tcpReachable (host, port) {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port })
    socket.once('connect', () => {
      socket.destroy()
      resolve(true)
    })
    socket.once('error', () => resolve(false))
  })
}

/**
 * Starts the ferrocable binary on free ports and waits for `/health` to answer 200 and the broadcast
 * port to accept connections.
 *
 * - `rpcPort`: gRPC backend port (omitted => no `--rpc_host` flag, e.g. in public mode)
 * - `publicMode`: adds `--public` and no broadcast key
 * - `host`, `port`, `broadcastPort`: where to listen (default loopback and free ports; the same ports as a
 *   process that has exited restart the server in its place)
 * - `args`: extra flags, e.g. ['--headers', 'cookie,x-api-token']
 */
// `bin` runs another executable than binaryPath (e.g. an installed package's), `env` replaces this process's environment.
export async function startServer ({ rpcPort, publicMode = false, pingInterval = 1, host = '127.0.0.1', port, broadcastPort, args = [], bin = binaryPath, env = process.env } = {}) {
  port ??= await freePort()
  broadcastPort ??= await freePort()
  const flags = [
    '--host', host,
    '--port', String(port),
    '--http_broadcast_port', String(broadcastPort),
    '--ping_interval', String(pingInterval)
  ]
  if (rpcPort !== undefined) flags.push('--rpc_host', `127.0.0.1:${rpcPort}`)
  if (publicMode) flags.push('--public')
  else flags.push('--broadcast_key', BROADCAST_KEY)
  flags.push(...args)

  // Only our own settings reach the process: no ANYCABLE_* variables leak in from the caller.
  const childEnv = Object.fromEntries(Object.entries(env).filter(([k]) => !k.startsWith('ANYCABLE_') && k !== 'PORT'))
  // The suite folder has no anycable.toml, so no config file is picked up by default.
  const child = spawn(bin, flags, { cwd: suiteDir, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] })
  const server = new FerrocableProcess({ child, host, port, broadcastPort })
  // A server started inside a scenario ends with it; one started in a hook is stopped by that file's `after`.
  onScenarioEnd(() => server.stop())
  let spawnError = null
  child.once('error', (err) => { spawnError = err })

  const deadline = Date.now() + 15000
  for (;;) {
    if (spawnError) throw new Error(`cannot start ${bin}: ${spawnError.message} (build it with: cargo build -p ferrocable)`)
    if (!server.running) throw new Error(`ferrocable exited with ${JSON.stringify(server.exitStatus)} before becoming ready (${bin} ${flags.join(' ')})\n${server.log}`)
    try {
      const res = await fetch(`http://${host}:${port}/health`)
      await res.arrayBuffer()
      if (res.status === 200 && (await tcpReachable(host, broadcastPort))) return server
    } catch {}
    if (Date.now() > deadline) {
      child.kill('SIGKILL')
      throw new Error(`ferrocable did not become ready within 15 s (${flags.join(' ')})\n${server.log}`)
    }
    await sleep(50)
  }
}

// --- HTTP broadcast -----------------------------------------------------------------------------

/**
 * POSTs a publication (or a batch, or any raw string body) to the server's broadcast endpoint.
 * `key`: bearer key to send (default the test key; null sends no Authorization header).
 * Returns { status, body }.
 */
/** The resident memory of a server's process, in KiB (Linux). */
export function rssKiB (server) {
  const status = fs.readFileSync(`/proc/${server.child.pid}/status`, 'utf8')
  return Number(/VmRSS:\s+(\d+)/.exec(status)[1])
}

export async function broadcast (server, publication, { key = BROADCAST_KEY } = {}) {
  const headers = { 'content-type': 'application/json' }
  if (key !== null) headers.authorization = `Bearer ${key}`
  const body = typeof publication === 'string' ? publication : JSON.stringify(publication)
  const res = await fetch(`http://${server.host}:${server.broadcastPort}/_broadcast`, { method: 'POST', headers, body })
  return { status: res.status, body: await res.text() }
}

/** Broadcasts (with `broadcast`'s options) and asserts the server accepted it (201). */
export async function broadcastOk (server, publication, options) {
  const res = await broadcast(server, publication, options)
  if (res.status !== 201) throw new Error(`broadcast ${JSON.stringify(publication)} answered ${res.status}: ${res.body}`)
  return res
}

/** Asks the server to disconnect every connection whose identifiers string equals `identifiers`. */
export function remoteDisconnect (server, identifiers, { reconnect = false } = {}) {
  return broadcastOk(server, { command: 'disconnect', payload: { identifier: identifiers, reconnect } })
}
