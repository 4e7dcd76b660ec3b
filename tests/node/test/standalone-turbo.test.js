// Standalone mode, Hotwire: a page in headless Chromium runs Turbo with @anycable/turbo-stream on an
// @anycable/web cable identified by a JWT (from the `cable-token` meta tag), with
// <turbo-cable-stream-source> elements carrying names signed like turbo-rails signs them (node:crypto here).
// The server confirms the Turbo::StreamsChannel subscriptions itself (--turbo_streams, no RPC at all), and a
// Turbo Stream broadcast over HTTP changes the page.
import assert from 'node:assert/strict'
import http from 'node:http'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { after, before } from 'node:test'
import esbuild from 'esbuild'
import { chromium } from 'playwright-core'
import { broadcastOk, freePort, scenario, startServer, unique } from '../lib/harness.js'
import { signedName, tokenFor } from '../lib/standalone.js'

const suiteDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium'
const JWT_SECRET = 'turbo-jwt-secret'
const TURBO_SECRET = 'turbo-streams-secret'

// The page's script: Turbo, an @anycable/web cable (URL and token from the meta tags) and the Turbo Streams
// plugin. `?strategy=sub-protocol` sends the token as a WebSocket sub-protocol instead of in the query.
const APP = `
import '@hotwired/turbo'
import { createCable } from '@anycable/web'
import { start } from '@anycable/turbo-stream'
const strategy = new URLSearchParams(location.search).get('strategy') || 'param'
const cable = createCable({ protocol: 'actioncable-v1-json', websocketAuthStrategy: strategy, logLevel: 'warn' })
start(cable)
window.cable = cable
`

let server
let page
let browser
let bundle
let pages

function escape (text) {
  return text.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;')
}

function html ({ token, sources }) {
  const elements = sources
    .map(({ id, signed }) => `<turbo-cable-stream-source id="${id}" channel="Turbo::StreamsChannel" signed-stream-name="${escape(signed)}"></turbo-cable-stream-source>`)
    .join('\n')
  return `<!doctype html>
<html><head>
<meta name="cable-url" content="${server.url()}">
<meta name="cable-token" content="${escape(token)}">
<script src="/app.js"></script>
</head><body>
${elements}
<div id="messages"></div>
</body></html>`
}

before(async () => {
  server = await startServer({ args: ['--norpc', '--jwt_secret', JWT_SECRET, '--enforce_jwt', '--turbo_streams', '--turbo_streams_secret', TURBO_SECRET] })
  const built = await esbuild.build({
    stdin: { contents: APP, resolveDir: suiteDir, loader: 'js' },
    bundle: true,
    format: 'iife',
    platform: 'browser',
    write: false,
    logLevel: 'silent'
  })
  bundle = built.outputFiles[0].text
  pages = new Map()
  const port = await freePort()
  page = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://localhost')
    if (url.pathname === '/app.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' })
      res.end(bundle)
    } else if (pages.has(url.pathname)) {
      res.writeHead(200, { 'content-type': 'text/html' })
      res.end(pages.get(url.pathname))
    } else {
      res.writeHead(404)
      res.end()
    }
  })
  await new Promise((resolve) => page.listen(port, '127.0.0.1', resolve))
  page.origin = `http://127.0.0.1:${port}`
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking']
  })
})

after(async () => {
  await browser?.close()
  await new Promise((resolve) => (page ? page.close(resolve) : resolve()))
  await server?.stop()
})

for (const strategy of ['param', 'sub-protocol']) {
  scenario(`browser (${strategy} token): a Turbo Stream broadcast reaches a signed <turbo-cable-stream-source>; a forged one is never confirmed`, async () => {
    const room = unique('room')
    const secretRoom = unique('secret-room')
    const pathname = `/${unique('page')}`
    pages.set(pathname, html({
      token: tokenFor({ user: unique('viewer') }, JWT_SECRET),
      sources: [
        { id: 'good', signed: signedName(`turbo:${room}`, TURBO_SECRET) },
        { id: 'forged', signed: signedName(`turbo:${secretRoom}`, 'guessed-secret') }
      ]
    }))
    const context = await browser.newContext()
    try {
      const tab = await context.newPage()
      const errors = []
      tab.on('pageerror', (err) => errors.push(err.message))
      await tab.goto(`${page.origin}${pathname}?strategy=${strategy}`)
      // @anycable/turbo-stream sets `connected` once the server confirmed the subscription.
      await tab.waitForSelector('#good[connected]', { state: 'attached', timeout: 10000 })

      await broadcastOk(server, {
        stream: `turbo:${secretRoom}`,
        data: '<turbo-stream action="append" target="messages"><template><p id="leak">must not appear</p></template></turbo-stream>'
      })
      await broadcastOk(server, {
        stream: `turbo:${room}`,
        data: '<turbo-stream action="append" target="messages"><template><p id="hello">hello from Turbo</p></template></turbo-stream>'
      })
      await tab.waitForSelector('#messages #hello', { timeout: 10000 })
      assert.equal(await tab.textContent('#messages #hello'), 'hello from Turbo')
      await tab.waitForTimeout(300)
      assert.equal(await tab.$('#leak'), null, 'the forged source received nothing')
      assert.equal(await tab.getAttribute('#forged', 'connected'), null, 'the forged source was rejected')
      assert.equal(await tab.evaluate(() => window.cable.state), 'connected')
      assert.deepEqual(errors, [])
    } finally {
      await context.close()
    }
  }, { timeout: 60000 })
}
