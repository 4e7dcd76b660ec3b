#!/usr/bin/env node
// Durable Streams reads, Ferrocable vs AnyCable-Go (`--ds`) in one run: catch-up read throughput and the memory
// of held long-poll and SSE readers. Node built-ins only.
//
//   taskset -c 1 node tests/load/ds-bench.mjs [--messages 100] [--workers 32] [--duration 10] [--readers 2000]
//
// Servers: the ferrocable binary (FERROCABLE_BIN, default target/release/ferrocable) and AnyCable-Go when
// ANYCABLE_GO_BIN points at its binary; each runs pinned to SERVER_CPU (default 0), in public mode with its
// memory broker, one after the other. For each: `--messages` JSON broadcasts to one stream, then `--workers`
// keep-alive connections read the whole stream (`offset=-1`) back to back for `--duration` seconds (every answer
// is checked: status 200, all messages); then `--readers` long-polls are held on another stream and the server's
// RSS growth divided by their number, and the same for SSE readers. Prints a markdown table.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`)
  return i > 0 ? Number(process.argv[i + 1]) : fallback
}
const MESSAGES = arg('messages', 100)
const WORKERS = arg('workers', 32)
const DURATION = arg('duration', 10)
const READERS = arg('readers', 2000)
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..')

function freePort () {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

/** CPU seconds the process has used (user + system). */
const cpuSeconds = (pid) => {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
  return (Number(fields[11]) + Number(fields[12])) / 100
}

const rssKiB = (pid) => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1])

async function start (name, bin, args, port) {
  const child = spawn('taskset', ['-c', process.env.SERVER_CPU ?? '0', bin, ...args], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ANYCABLE_DISABLE_TELEMETRY: 'true' } })
  let log = ''
  child.stderr.on('data', (d) => { log = (log + d).slice(-4000) })
  for (let i = 0; i < 200; i++) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/health`)).ok) return child
    } catch {}
    await sleep(50)
  }
  child.kill('SIGKILL')
  throw new Error(`${name} did not start: ${log}`)
}

async function publish (broadcastPort, stream, n) {
  for (let i = 0; i < n; i++) {
    const body = JSON.stringify({ stream, data: JSON.stringify({ n: i, text: 'x'.repeat(64) }) })
    const res = await fetch(`http://127.0.0.1:${broadcastPort}/_broadcast`, { method: 'POST', body, headers: { 'content-type': 'application/json' } })
    if (res.status >= 300) throw new Error(`broadcast answered ${res.status}`)
  }
}

/** `WORKERS` keep-alive loops reading the whole stream; returns reads/s and messages/s. */
async function catchUp (pid, port, stream) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: WORKERS })
  const get = () => new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: `/ds/${stream}?offset=-1`, agent }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c) => { body += c })
      res.on('end', () => resolve({ status: res.statusCode, body }))
    }).on('error', reject)
  })
  // Wait until every message is in the history; later answers must be that same body (checked by length and
  // ends, so that the load tool's own CPU goes to reading).
  let expected
  for (let i = 0; i < 100 && !expected; i++) {
    const r = await get()
    if (r.status === 200 && JSON.parse(r.body).length === MESSAGES) expected = r.body
    else await sleep(50)
  }
  if (!expected) throw new Error('the history never held every message')
  const cpuBefore = cpuSeconds(pid)
  let reads = 0
  let bad = 0
  const until = Date.now() + DURATION * 1000
  const started = Date.now()
  await Promise.all(Array.from({ length: WORKERS }, async () => {
    while (Date.now() < until) {
      const r = await get()
      if (r.status === 200 && r.body.length === expected.length && r.body.startsWith('[{"n":0,') && r.body.endsWith(`"n":${MESSAGES - 1},"text":"${'x'.repeat(64)}"}]`)) reads++
      else bad++
    }
  }))
  const seconds = (Date.now() - started) / 1000
  const cpu = cpuSeconds(pid) - cpuBefore
  agent.destroy()
  return { reads: reads / seconds, bad, cpuMsPerRead: (cpu * 1000) / Math.max(reads + bad, 1) }
}

/** Holds `READERS` live readers of `mode`; returns RSS bytes per reader. */
async function heldReaders (pid, port, mode) {
  await sleep(500)
  const before = rssKiB(pid)
  const requests = []
  let answered = 0
  let opened = 0
  for (let i = 0; i < READERS; i++) {
    const req = http.get({ host: '127.0.0.1', port, path: `/ds/held-${mode}?offset=now&live=${mode}`, agent: false }, (res) => {
      opened++
      if (mode === 'long-poll') res.on('end', () => { answered++ })
      res.resume()
    })
    req.on('error', () => {})
    requests.push(req)
    if (i % 200 === 199) await sleep(20)
  }
  await sleep(3000)
  const held = rssKiB(pid)
  for (const req of requests) req.destroy()
  const stillHeld = mode === 'long-poll' ? READERS - answered : opened
  return { perReader: ((held - before) * 1024) / READERS, stillHeld }
}

async function measure (name, bin, extraArgs) {
  const [port, broadcastPort] = [await freePort(), await freePort()]
  const args = ['--host', '127.0.0.1', '--port', String(port), '--http_broadcast_port', String(broadcastPort),
    '--public', '--ds', '--ds_poll_interval', '60', '--ds_sse_ttl', '600', '--history_limit', String(MESSAGES), ...extraArgs]
  const child = await start(name, bin, args, port)
  try {
    await publish(broadcastPort, 'catchup', MESSAGES)
    const read = await catchUp(child.pid, port, 'catchup')
    const poll = await heldReaders(child.pid, port, 'long-poll')
    const sse = await heldReaders(child.pid, port, 'sse')
    return { name, ...read, poll, sse, rss: rssKiB(child.pid) }
  } finally {
    child.kill('SIGTERM')
    await new Promise((resolve) => child.once('exit', resolve))
  }
}

const servers = [['ferrocable', process.env.FERROCABLE_BIN ?? path.join(root, 'target/release/ferrocable'), ['--broker', 'memory']]]
if (process.env.ANYCABLE_GO_BIN) servers.push(['anycable-go', process.env.ANYCABLE_GO_BIN, ['--presets', 'broker', '--broadcast_adapter', 'http']])
if (process.env.REVERSE) servers.reverse()

const results = []
for (const [name, bin, args] of servers) results.push(await measure(name, bin, args))
const f = (n, d = 0) => n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d })
console.log(`${MESSAGES} messages of ~80 bytes in one stream; ${WORKERS} keep-alive readers for ${DURATION} s; ${READERS} held readers of each mode.\n`)
console.log('| server | catch-up reads/s | messages read/s | server CPU ms per read | failed reads | RSS per held long-poll (bytes) | long-polls held | RSS per held SSE reader (bytes) | SSE readers held |')
console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- |')
for (const r of results) {
  console.log(`| ${r.name} | ${f(r.reads, 1)} | ${f(r.reads * MESSAGES)} | ${f(r.cpuMsPerRead, 3)} | ${r.bad} | ${f(r.poll.perReader)} | ${r.poll.stillHeld} | ${f(r.sse.perReader)} | ${r.sse.stillHeld} |`)
}
