// Presence figures for one server binary (ferrocable, or AnyCable-Go as the peer), both on `--broker memory`, with
// raw extended-protocol clients (actioncable-v1-ext-json) subscribed to public `$pubsub` streams:
//
// 1. Memory per member: MEMBERS connections over STREAMS streams subscribe, the server's RSS is read, each joins the
//    presence set of its stream under its own id with a small info, every join event is awaited at every subscriber,
//    and the RSS is read again: (after - before) / MEMBERS.
// 2. Join/leave events to 1,000 watchers: WATCHERS connections subscribe to one stream, DRIVERS of them alternate
//    join and leave at RATE changes per second in total (each driver within Ferrocable's 10 per second) for SECONDS;
//    reports the events each watcher received (every one must arrive), the events/s delivered, the server's CPU
//    time per event, and the latency of join events (the info carries the send time).
//
//   node tests/load/presence.mjs <server binary> [name]
//   env: MEMBERS (4000) STREAMS (400) WATCHERS (1000) DRIVERS (25) RATE (200) SECONDS (10) SERVER_CPU (0)
//
// The server runs pinned to SERVER_CPU with taskset; run this script pinned to another CPU.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import { createRequire } from 'node:module'
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

async function startServer () {
  const [port, broadcastPort] = [await freePort(), await freePort()]
  const args = ['--host', '127.0.0.1', '--port', String(port), '--http_broadcast_port', String(broadcastPort),
    '--public', '--norpc', '--broker', 'memory', '--presence_ttl', '15', '--log_level', 'error']
  const child = spawn('taskset', ['-c', String(env('SERVER_CPU', 0)), bin, ...args], { stdio: ['ignore', 'ignore', 'inherit'] })
  for (let n = 0; n < 200; n++) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/health`)).ok) return { child, port }
    } catch {}
    await sleep(100)
  }
  throw new Error(`${bin} did not start`)
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
  const { child, port } = await startServer()
  let joins = 0
  const clients = await inBatches(MEMBERS, (n) => subscriber(port, `presence_bench_${n % STREAMS}`, (m) => { if (m.type === 'join') joins++ }))
  await sleep(2000)
  const before = rssKib(child.pid)
  for (const [n, { ws, identifier }] of clients.entries()) {
    ws.send(JSON.stringify({ command: 'join', identifier, presence: { id: `member-${n}`, info: { name: `Member ${n}` } } }))
    if (n % 100 === 99) await sleep(5)
  }
  const expected = MEMBERS * (MEMBERS / STREAMS)
  const deadline = Date.now() + 60000
  while (joins < expected && Date.now() < deadline) await sleep(50)
  await sleep(2000)
  const after = rssKib(child.pid)
  for (const { ws } of clients) ws.terminate()
  child.kill()
  if (joins < expected) throw new Error(`only ${joins} of ${expected} join events arrived`)
  return { before, after, perMember: ((after - before) * 1024) / MEMBERS }
}

async function eventsToWatchers () {
  const { child, port } = await startServer()
  const received = new Array(WATCHERS).fill(0)
  const latencies = []
  const clients = await inBatches(WATCHERS, (n) => subscriber(port, 'presence_fanout', (m) => {
    received[n]++
    if (m.type === 'join' && n % 10 === 0) latencies.push(Date.now() - m.info.t)
  }))
  await sleep(1000)
  const drivers = clients.slice(0, DRIVERS)
  const interval = (1000 * DRIVERS) / RATE
  const cpuBefore = cpuSeconds(child.pid)
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
  const cpu = cpuSeconds(child.pid) - cpuBefore
  for (const { ws } of clients) ws.terminate()
  child.kill()
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
console.log(JSON.stringify({ name, memory, events }))
console.log(`${name}: ${memory.perMember.toFixed(0)} bytes of RSS per presence member (${MEMBERS} members over ${STREAMS} streams, RSS ${memory.before} -> ${memory.after} KiB); ` +
  `${events.sent} join/leave events in ${SECONDS} s (${events.perSecond.toFixed(0)}/s) to ${WATCHERS} watchers: ${events.missing} missing, ` +
  `${events.framesPerSecond.toFixed(0)} frames/s, ${events.cpuPerEventMs.toFixed(3)} ms of server CPU per event, join latency p50 ${events.p50} ms p95 ${events.p95} ms`)
