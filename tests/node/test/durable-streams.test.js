// Durable Streams reads (`ds`) with the real @durable-streams/client: catch-up from the broker's history,
// resuming from a returned offset, long-poll and SSE, written once and run against every deployment
// (lib/deployments.js). Readers authenticate with the deployment's cookie like WebSocket clients and read
// streams by signed name; what a reader may not do is refused with a 401.
import assert from 'node:assert/strict'
import { after, before, describe } from 'node:test'
import { stream as readStream } from '@durable-streams/client'
import { DEPLOYMENTS, startDeployment } from '../lib/deployments.js'
import { eventually, onScenarioEnd, scenario, unique } from '../lib/harness.js'
import { signedName } from '../lib/standalone.js'

const SECRET = 'ds-streams-secret'
const OPTIONS = { ds: true, broker: 'memory', history_limit: 50, streams_secret: SECRET, ds_poll_interval: 2 }

/** A reader of `name` on `deployment`, as the given user, by signed name. */
function dsOptions (deployment, name, { cookie, signed = signedName(name, SECRET), ...rest } = {}) {
  const headers = {}
  if (cookie) headers.cookie = cookie
  if (signed) headers['x-signed'] = signed
  return { url: `http://127.0.0.1:${deployment.port}/ds/${encodeURIComponent(name)}`, headers, warnOnHttp: false, ...rest }
}

/** Collects every JSON item a live reader receives; cancelled when the scenario ends. */
function collect (response) {
  const items = []
  response.subscribeJson(async (batch) => { items.push(...batch.items) })
  onScenarioEnd(() => response.cancel())
  return items
}

for (const name of DEPLOYMENTS) {
  describe(`durable streams: ${name}`, () => {
    let deployment

    before(async () => {
      deployment = await startDeployment(name, OPTIONS)
    })

    after(async () => {
      await deployment?.stop()
    })

    scenario(`${name}: a catch-up read returns the history in order, and a read from its offset only what came after`, async () => {
      const cookie = await deployment.cookieFor(unique('reader'))
      const topic = unique('feed/room')
      for (const n of [1, 2, 3]) await deployment.publishTo(topic, { n })

      const first = await readStream(dsOptions(deployment, topic, { cookie, offset: '-1', live: false }))
      assert.deepEqual(await first.json(), [{ n: 1 }, { n: 2 }, { n: 3 }])
      assert.equal(first.upToDate, true)
      const offset = first.offset
      assert.match(offset, /^\d{16}::\w+$/)

      await deployment.publishTo(topic, { n: 4 })
      const next = await readStream(dsOptions(deployment, topic, { cookie, offset, live: false }))
      assert.deepEqual(await next.json(), [{ n: 4 }])
      assert.ok(next.offset > offset, 'offsets grow as text')

      const empty = await readStream(dsOptions(deployment, unique('never-published'), { cookie, offset: '-1', live: false }))
      assert.deepEqual(await empty.json(), [], 'a stream nothing was published to reads as empty')
    })

    scenario(`${name}: a long-poll reader gets the history, then each broadcast as it is published`, async () => {
      const cookie = await deployment.cookieFor(unique('reader'))
      const topic = unique('poll')
      await deployment.publishTo(topic, { n: 1 })
      const response = await readStream(dsOptions(deployment, topic, { cookie, offset: '-1', live: 'long-poll', json: true }))
      const items = collect(response)
      await eventually(() => items.length === 1, { what: 'the history' })
      // Longer than ds_poll_interval: the reader is answered 204 at least once in between and polls again.
      await new Promise((resolve) => setTimeout(resolve, 2500))
      await deployment.publishTo(topic, { n: 2 })
      await deployment.publishTo(topic, { n: 3 })
      await eventually(() => items.length === 3, { what: 'the live broadcasts', timeout: 8000 })
      assert.deepEqual(items, [{ n: 1 }, { n: 2 }, { n: 3 }])
    })

    scenario(`${name}: an SSE reader gets the history, then each broadcast as it is published, nothing twice`, async () => {
      const cookie = await deployment.cookieFor(unique('reader'))
      const topic = unique('sse')
      await deployment.publishTo(topic, { n: 1 })
      await deployment.publishTo(topic, { n: 2 })
      const response = await readStream(dsOptions(deployment, topic, { cookie, offset: '-1', live: 'sse', json: true }))
      const items = collect(response)
      await eventually(() => items.length === 2, { what: 'the history' })
      for (const n of [3, 4, 5]) await deployment.publishTo(topic, { n })
      await eventually(() => items.length === 5, { what: 'the live broadcasts' })
      assert.deepEqual(items, [1, 2, 3, 4, 5].map((n) => ({ n })))
    })

    scenario(`${name}: readers that are not authenticated, or not allowed the stream, are refused with 401`, async () => {
      const cookie = await deployment.cookieFor(unique('reader'))
      const topic = unique('private')
      await deployment.publishTo(topic, { secret: true })
      const status = async (options) => (await fetch(`${options.url}?offset=-1`, { headers: options.headers })).status
      assert.equal(await status(dsOptions(deployment, topic, { cookie })), 200)
      assert.equal(await status(dsOptions(deployment, topic, {})), 401, 'no cookie: Connect rejects the reader')
      assert.equal(await status(dsOptions(deployment, topic, { cookie, signed: null })), 401, 'unsigned name, public_streams off')
      assert.equal(await status(dsOptions(deployment, topic, { cookie, signed: signedName('other', SECRET) })), 401, 'signed for another stream')
      assert.equal(await status(dsOptions(deployment, topic, { cookie, signed: signedName(topic, 'wrong') })), 401, 'wrong key')
      await assert.rejects(readStream(dsOptions(deployment, topic, { offset: '-1', live: false })), (err) => err.status === 401)
    })
  })
}
