// Real engines for cluster tests: Debian's redis-server and nats-server on free loopback ports, started by the
// test and killed when it is done. A missing program is a failure (scripts/setup.sh installs both), not a skip.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { eventually, freePort } from './harness.js'

function program (name) {
  const dirs = [...(process.env.PATH || '').split(path.delimiter), '/usr/bin', '/usr/sbin', '/usr/local/bin']
  const found = dirs.map((d) => path.join(d, name)).find((p) => fs.existsSync(p))
  if (!found) throw new Error(`${name} is not installed: run scripts/setup.sh (Debian package ${name})`)
  return found
}

function canConnect (port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1')
    socket.once('connect', () => { socket.destroy(); resolve(true) })
    socket.once('error', () => resolve(false))
  })
}

async function start (name, args, port, cleanup = () => {}) {
  const child = spawn(program(name), args, { stdio: 'ignore' })
  process.on('exit', () => child.kill('SIGKILL'))
  await eventually(() => canConnect(port), { what: `${name} on port ${port}` })
  return {
    port,
    stop () {
      child.kill('SIGKILL')
      cleanup()
    }
  }
}

/** redis-server without persistence; `url` is its redis:// URL. */
export async function startRedis () {
  const port = await freePort()
  const redis = await start('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], port)
  return { ...redis, url: `redis://127.0.0.1:${port}/0` }
}

/** nats-server with JetStream, storing in a temporary folder; `url` is its nats:// URL. */
export async function startNats () {
  const port = await freePort()
  const store = fs.mkdtempSync(path.join(os.tmpdir(), 'ferrocable-nats-'))
  const nats = await start('nats-server', ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', store], port,
    () => fs.rmSync(store, { recursive: true, force: true }))
  return { ...nats, url: `nats://127.0.0.1:${port}` }
}
