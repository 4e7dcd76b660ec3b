// Presence figures for one server binary (ferrocable, or AnyCable-Go as the peer) on the broker BROKER (`memory`, or
// `redis` / `nats` with a fresh redis-server / nats-server with JetStream started here for each measurement, pinned
// with the server), with raw extended-protocol clients (actioncable-v1-ext-json) subscribed to public `$pubsub`
// streams:
//
// 1. Memory per member: MEMBERS connections over STREAMS streams subscribe, the RSS of the server (and of the engine)
//    is read, each joins the presence set of its stream under its own id with a small info, every join event is
//    awaited at every subscriber, and the RSS is read again: (after - before) / MEMBERS.
// 2. Join/leave events to 1,000 watchers: WATCHERS connections subscribe to one stream, DRIVERS of them alternate
//    join and leave at RATE changes per second in total (each driver within Ferrocable's 10 per second) for SECONDS;
//    reports the events each watcher received (every one must arrive), the events/s delivered, the server's CPU
//    time per event (with the engine's), and the latency of join events (the info carries the send time).
//
//   node tests/load/presence.mjs <server binary> [name]
//   env: BROKER (memory) MEMBERS (4000) STREAMS (400) WATCHERS (1000) DRIVERS (25) RATE (200) SECONDS (10) SERVER_CPU (0)
//
// The server runs pinned to SERVER_CPU with taskset; run this script pinned to another CPU.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import { createRequire } from 'node:module'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const WebSocket = createRequire(path.join(here, '..', 'node', 'package.json'))('ws')

const [bin, name = path.basename(bin ?? '')] = process.argv.slice(2)
if (!bin) {
  console.error('usage: node tests/load/presence.mjs <server binary> [name]')
  process.exit(2)
}
const env = (key, fallback) => Number(process.env[key] ?? fallback)
const MEMBERS = env('MEMBERS', 4000)
const STREAMS = env('STREAMS', 400)
const WATCHERS = env('WATCHERS', 1000)
const DRIVERS = env('DRIVERS', 25)
const RATE = env('RATE', 200)
const SECONDS = env('SECONDS', 10)
const BROKER = process.env.BROKER ?? 'memory'
if (!['memory', 'redis', 'nats'].includes(BROKER)) {
  console.error(`BROKER must be memory, redis or nats, not ${BROKER}`)
  process.exit(2)
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

function freePort () {
  return new Promise((resolve) => {
    const server = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}

const rssKib = (pid) => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1])
const cpuSeconds = (pid) => {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
  return (Number(fields[11]) + Number(fields[12])) / 100
}

const pinned = (program, args) =>
  spawn('taskset', ['-c', String(env('SERVER_CPU', 0)), program, ...args], { stdio: ['ignore', 'ignore', 'inherit'] })

/** The engine of BROKER on a free port (none for memory): its process, the server's options for it, and `stop()`. */
async function startEngine () {
  if (BROKER === 'memory') return { child: null, args: ['--broker', 'memory'], stop () {} }
  const port = await freePort()
  let child, args, store
  if (BROKER === 'redis') {
    child = pinned('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'])
    args = ['--broker', 'redis', '--redis_url', `redis://127.0.0.1:${port}/0`]
  } else {
    store = fs.mkdtempSync(path.join(os.tmpdir(), 'presence-bench-nats-'))
    child = pinned('nats-server', ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', store])
    args = ['--broker', 'nats', '--nats_servers', `nats://127.0.0.1:${port}`]
  }
  for (let n = 0; ; n++) {
    const up = await new Promise((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => { socket.destroy(); resolve(true) }).on('error', () => resolve(false))
    })
    if (up) break
    if (n > 100) throw new Error(`${BROKER} engine did not start`)
    await sleep(50)
  }
  return {
    child,
    args,
    stop () {
      child.kill('SIGKILL')
      if (store) fs.rmSync(store, { recursive: true, force: true })
    }
  }
}

async function startServer () {
  const engine = await startEngine()
  const [port, broadcastPort] = [await freePort(), await freePort()]
  const args = ['--host', '127.0.0.1', '--port', String(port), '--http_broadcast_port', String(broadcastPort),
    '--public', '--norpc', ...engine.args, '--presence_ttl', '15', '--log_level', process.env.LOG_LEVEL ?? 'error']
  const child = pinned(bin, args)
  for (let n = 0; n < 200; n++) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/health`)).ok) {
        return { child, port, engine, stop: () => stopped(child).then(() => engine.stop()) }
      }
    } catch {}
    await sleep(100)
  }
  throw new Error(`${bin} did not start`)
}

/** Stops the server and waits for its exit (before its engine goes, which it would otherwise log about). */
function stopped (child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.kill()
  return exited
}

/** RSS (KiB) and CPU seconds of the server and, when there is one, its engine. */
function usage ({ child, engine }) {
  const pids = [child.pid, engine.child?.pid].filter(Boolean)
  return { rss: pids.map(rssKib), cpu: pids.map(cpuSeconds).reduce((a, b) => a + b, 0) }
}

/** A subscriber of `stream`; `onPresence(message)` for each presence frame. */
function subscriber (port, stream, onPresence) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/cable`, ['actioncable-v1-ext-json'])
    const identifier = JSON.stringify({ channel: '$pubsub', stream_name: stream })
    ws.on('error', reject)
    ws.on('open', () => ws.send(JSON.stringify({ command: 'subscribe', identifier })))
    ws.on('message', (data) => {
      const frame = JSON.parse(data)
      if (frame.type === 'confirm_subscription') resolve({ ws, identifier })
      else if (frame.type === 'presence') onPresence(frame.message)
    })
  })
}

async function inBatches (count, make, batch = 200) {
  const all = []
  for (let first = 0; first < count; first += batch) {
    all.push(...await Promise.all(Array.from({ length: Math.min(batch, count - first) }, (_, k) => make(first + k))))
  }
  return all
}

async function memoryPerMember () {
  const server = await startServer()
  const { port } = server
  let joins = 0
  const clients = await inBatches(MEMBERS, (n) => subscriber(port, `presence_bench_${n % STREAMS}`, (m) => { if (m.type === 'join') joins++ }))
  await sleep(2000)
  const before = usage(server).rss
  for (const [n, { ws, identifier }] of clients.entries()) {
    ws.send(JSON.stringify({ command: 'join', identifier, presence: { id: `member-${n}`, info: { name: `Member ${n}` } } }))
    if (n % 100 === 99) await sleep(5)
  }
  const expected = MEMBERS * (MEMBERS / STREAMS)
  const deadline = Date.now() + 60000
  while (joins < expected && Date.now() < deadline) await sleep(50)
  await sleep(2000)
  const after = usage(server).rss
  for (const { ws } of clients) ws.terminate()
  await server.stop()
  if (joins < expected) throw new Error(`only ${joins} of ${expected} join events arrived`)
  const perMember = (k) => ((after[k] - before[k]) * 1024) / MEMBERS
  return { before: before[0], after: after[0], perMember: perMember(0), engine: after.length > 1 ? { before: before[1], after: after[1], perMember: perMember(1) } : null }
}

async function eventsToWatchers () {
  const server = await startServer()
  const { port } = server
  const received = new Array(WATCHERS).fill(0)
  const latencies = []
  const clients = await inBatches(WATCHERS, (n) => subscriber(port, 'presence_fanout', (m) => {
    received[n]++
    if (m.type === 'join' && n % 10 === 0) latencies.push(Date.now() - m.info.t)
  }))
  await sleep(1000)
  const drivers = clients.slice(0, DRIVERS)
  const interval = (1000 * DRIVERS) / RATE
  const cpuBefore = usage(server).cpu
  let sent = 0
  const started = Date.now()
  await Promise.all(drivers.map(async ({ ws, identifier }, k) => {
    await sleep((interval * k) / DRIVERS)
    for (let step = 0; Date.now() - started < SECONDS * 1000; step++) {
      const target = started + (interval * k) / DRIVERS + step * interval
      await sleep(Math.max(0, target - Date.now()))
      ws.send(JSON.stringify(step % 2 === 0
        ? { command: 'join', identifier, presence: { id: `driver-${k}`, info: { t: Date.now() } } }
        : { command: 'leave', identifier }))
      sent++
    }
  }))
  const deadline = Date.now() + 30000
  while (received.some((r) => r < sent) && Date.now() < deadline) await sleep(50)
  const elapsed = (Date.now() - started) / 1000
  const cpu = usage(server).cpu - cpuBefore
  for (const { ws } of clients) ws.terminate()
  await server.stop()
  latencies.sort((a, b) => a - b)
  const missing = received.reduce((sum, r) => sum + Math.max(0, sent - r), 0)
  return {
    sent,
    perSecond: sent / SECONDS,
    delivered: received.reduce((a, b) => a + b, 0),
    missing,
    framesPerSecond: received.reduce((a, b) => a + b, 0) / elapsed,
    cpuPerEventMs: (cpu * 1000) / sent,
    p50: latencies[Math.floor(latencies.length * 0.5)],
    p95: latencies[Math.floor(latencies.length * 0.95)]
  }
}

const memory = await memoryPerMember()
const events = await eventsToWatchers()
console.log(JSON.stringify({ name, broker: BROKER, memory, events }))
const engineMemory = memory.engine ? ` + ${memory.engine.perMember.toFixed(0)} bytes in ${BROKER} (RSS ${memory.engine.before} -> ${memory.engine.after} KiB)` : ''
console.log(`${name} (broker ${BROKER}): ${memory.perMember.toFixed(0)} bytes of RSS per presence member${engineMemory} (${MEMBERS} members over ${STREAMS} streams, RSS ${memory.before} -> ${memory.after} KiB); ` +
  `${events.sent} join/leave events in ${SECONDS} s (${events.perSecond.toFixed(0)}/s) to ${WATCHERS} watchers: ${events.missing} missing, ` +
  `${events.framesPerSecond.toFixed(0)} frames/s, ${events.cpuPerEventMs.toFixed(3)} ms of server${memory.engine ? ` + ${BROKER}` : ''} CPU per event, join latency p50 ${events.p50} ms p95 ${events.p95} ms`)
