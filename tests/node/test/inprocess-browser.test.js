// The chat demo (examples/node-chat) in a real browser: headless Chromium opens the page in two tabs,
// both join a room, each sees the other online, and a message sent in one appears in the other; and the
// read-only watch page follows a room over Server-Sent Events in a page without WebSockets.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import path from 'node:path'
import { after, before } from 'node:test'
import { chromium } from 'playwright-core'
import { eventually, freePort, repoRoot, scenario } from '../lib/harness.js'

const demoDir = path.join(repoRoot, 'examples', 'node-chat')
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium'

let demo
let demoUrl
let browser
const output = []

before(async () => {
  const [port, cablePort] = [await freePort(), await freePort()]
  demo = spawn(process.execPath, ['server.js'], {
    cwd: demoDir,
    env: { ...process.env, PORT: String(port), CABLE_PORT: String(cablePort), LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  demo.stdout.on('data', (d) => output.push(d.toString()))
  demo.stderr.on('data', (d) => output.push(d.toString()))
  const line = await eventually(() => output.join('').match(/Chat demo: (http:\/\/\S+)/), { timeout: 60000, what: `the demo to start:\n${output.join('')}` })
  demoUrl = line[1]
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking']
  })
})

after(async () => {
  await browser?.close()
  if (demo && demo.exitCode === null) {
    const exited = new Promise((resolve) => demo.once('exit', resolve))
    demo.kill('SIGINT')
    await exited
  }
})

async function join (page, name, room) {
  await page.goto(demoUrl)
  await page.fill('#name', name)
  await page.fill('#room', room)
  await page.click('#join')
  await page.waitForSelector('#message-form:not([hidden])', { timeout: 10000 })
}

function onlineNames (page) {
  return page.$$eval('#online li', (items) => items.map((li) => li.textContent))
}

scenario('browser: two tabs of the demo chat see each other online and exchange a message', async () => {
  const context = await browser.newContext()
  try {
    const alice = await context.newPage()
    const bob = await context.newPage()
    const room = `room-${process.pid}`
    await join(alice, 'alice', room)
    await join(bob, 'bob', room)
    await eventually(async () => JSON.stringify(await onlineNames(alice)) === '["alice","bob"]', { what: 'alice to see bob online' })
    // Bob's own list comes with the answer to his subscribe, which the demo gives after it broadcast his
    // arrival to alice: alice can see him first.
    await eventually(async () => JSON.stringify(await onlineNames(bob)) === '["alice","bob"]', { what: 'bob to see alice online' })

    await alice.fill('#message', 'hello from alice')
    await alice.click('#send')
    await bob.waitForSelector('#messages li.message:has-text("hello from alice")', { timeout: 10000 })
    const seen = await bob.$$eval('#messages li.message', (items) => items.map((li) => li.textContent))
    assert.deepEqual(seen, ['alicehello from alice'])

    await bob.close()
    await eventually(async () => JSON.stringify(await onlineNames(alice)) === '["alice"]', { what: 'bob to leave the online list' })
  } finally {
    await context.close()
  }
}, { timeout: 60000 })

scenario('browser: the watch page follows a room over Server-Sent Events with WebSockets disabled', async () => {
  const context = await browser.newContext()
  try {
    const watcher = await context.newPage()
    // This page has no WebSocket at all: only EventSource can bring it anything.
    await watcher.addInitScript(() => { delete window.WebSocket })
    const room = `watched-${process.pid}`
    await watcher.goto(`${demoUrl}watch?room=${room}`)
    assert.equal(await watcher.evaluate(() => typeof window.WebSocket), 'undefined')
    await watcher.waitForSelector('#status:has-text("live")', { timeout: 10000 })
    const alice = await context.newPage()
    await join(alice, 'alice', room)
    await alice.fill('#message', 'seen over SSE')
    await alice.click('#send')
    await watcher.waitForSelector('#messages li:has-text("seen over SSE")', { timeout: 10000 })
    assert.deepEqual(await watcher.$$eval('#messages li', (items) => items.map((li) => li.textContent)), ['aliceseen over SSE'])
    await eventually(async () => (await watcher.textContent('#online')) === 'alice, watcher', { what: 'the presence update' })
  } finally {
    await context.close()
  }
}, { timeout: 60000 })
