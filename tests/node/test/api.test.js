// The REST API (`POST <api_path>/publish`), driven with curl as a backend would: the key derived from `secret`
// as AnyCable-Go derives it, an explicit `api_secret`, a port of its own, single and batch publications with
// `meta`, and the answers to bad requests (401 without or with a wrong key, 400 for a malformed body, 413 for
// one over the limit); no API at all when nothing would protect it.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { createHmac } from 'node:crypto'
import { promisify } from 'node:util'
import { after, before, describe } from 'node:test'
import { freePort, scenario, startServer, unique } from '../lib/harness.js'
import { RawClient } from '../lib/raw-client.js'

const run = promisify(execFile)

/** POSTs `body` with curl; `{ status, body }`. */
async function curl (url, body, { key } = {}) {
  const args = ['-sS', '-o', '-', '-w', '\n%{http_code}', '-X', 'POST', '-H', 'Content-Type: application/json']
  if (key !== undefined) args.push('-H', `Authorization: Bearer ${key}`)
  args.push('--data-binary', '@-', url)
  const child = run('curl', args, { maxBuffer: 1 << 20 })
  child.child.stdin.end(body)
  const { stdout } = await child
  const at = stdout.lastIndexOf('\n')
  return { status: Number(stdout.slice(at + 1)), body: stdout.slice(0, at) }
}

/** A public-streams WebSocket subscriber of `stream`. */
async function subscriber (server, stream) {
  const client = await RawClient.connect(server.url())
  const identifier = await client.subscribeConfirmed({ channel: '$pubsub', stream_name: stream })
  return { client, identifier }
}

describe('REST API with the key derived from secret', () => {
  const SECRET = 's3cr3t'
  // `echo -n api-cable | openssl dgst -sha256 -hmac s3cr3t`
  const KEY = createHmac('sha256', SECRET).update('api-cable').digest('hex')
  let server
  let publish

  before(async () => {
    server = await startServer({ args: ['--secret', SECRET, '--noauth', '--public_streams', '--http_broadcast_max_body=4096'] })
    publish = `http://${server.host}:${server.port}/api/publish`
  })

  after(async () => {
    await server?.stop()
  })

  scenario('a publication and a batch with meta reach subscribers, answered 201', async () => {
    const [a, b] = [unique('api-a'), unique('api-b')]
    const subA = await subscriber(server, a)
    const subB = await subscriber(server, b)
    const one = await curl(publish, JSON.stringify({ stream: a, data: JSON.stringify({ n: 1 }) }), { key: KEY })
    assert.equal(one.status, 201, one.body)
    assert.deepEqual(await subA.client.next(), { identifier: subA.identifier, message: { n: 1 } })
    const batch = [
      { stream: a, data: '"second"', meta: { exclude_socket: subA.client.sid } },
      { stream: b, data: '"to b"' },
      { stream: a, data: '"third"' }
    ]
    const many = await curl(publish, JSON.stringify(batch), { key: KEY })
    assert.equal(many.status, 201, many.body)
    assert.deepEqual(await subB.client.next(), { identifier: subB.identifier, message: 'to b' })
    assert.deepEqual(await subA.client.next(), { identifier: subA.identifier, message: 'third' }, 'exclude_socket skipped a')
  })

  scenario('a missing or wrong key is 401, a malformed body 400, an oversized one 413, each with a message', async () => {
    const good = JSON.stringify({ stream: 'x', data: '1' })
    const cases = [
      [good, undefined, 401, /key/],
      [good, 'wrong', 401, /key/],
      [good, createHmac('sha256', SECRET).update('broadcast-cable').digest('hex'), 401, /key/],
      ['{"stream":', KEY, 400, /malformed/],
      ['{"data":"no stream"}', KEY, 400, /malformed/],
      [JSON.stringify({ stream: 'x', data: 'y'.repeat(8192) }), KEY, 413, /.+/]
    ]
    for (const [body, key, status, message] of cases) {
      const res = await curl(publish, body, { key })
      assert.equal(res.status, status, `${body.slice(0, 40)} with ${key}: ${res.body}`)
      assert.match(res.body, message)
    }
    assert.ok(!server.log.includes('panicked'))
  })
})

scenario('api_secret, api_path and api_port: the API on a port of its own with its own key', async () => {
  const apiPort = await freePort()
  const server = await startServer({ args: ['--noauth', '--public_streams', `--api_port=${apiPort}`, '--api_path=/v2', '--api_secret=k3y'] })
  try {
    const stream = unique('own-port')
    const sub = await subscriber(server, stream)
    const res = await curl(`http://${server.host}:${apiPort}/v2/publish`, JSON.stringify({ stream, data: '"hi"' }), { key: 'k3y' })
    assert.equal(res.status, 201, res.body)
    assert.deepEqual(await sub.client.next(), { identifier: sub.identifier, message: 'hi' })
    const onMain = await curl(`http://${server.host}:${server.port}/v2/publish`, JSON.stringify({ stream, data: '"x"' }), { key: 'k3y' })
    assert.equal(onMain.status, 404, 'not on the main port')
  } finally {
    await server.stop()
  }
})

scenario('without a secret, a port of its own or public mode there is no API to reach', async () => {
  const server = await startServer({ args: ['--noauth'] })
  try {
    const res = await curl(`http://${server.host}:${server.port}/api/publish`, JSON.stringify({ stream: 's', data: '1' }))
    assert.equal(res.status, 404)
  } finally {
    await server.stop()
  }
})
