// The read-side tests of the Durable Streams conformance suite against the ferrocable binary (see
// vitest.config.mjs for which, and lib/ds-writer.js for how the suite's writes become broadcasts).
import { afterAll, beforeAll, describe } from 'vitest'
import { runConformanceTests } from '@durable-streams/server-conformance-tests'
import { startServer } from '../lib/harness.js'
import { startDsWriter } from '../lib/ds-writer.js'

describe('Durable Streams conformance (reads): ferrocable', () => {
  const config = { baseUrl: '' }
  let server
  let writer

  beforeAll(async () => {
    server = await startServer({
      publicMode: true,
      args: ['--ds', '--ds_path', '/v1/stream', '--broker', 'memory', '--history_limit', '1000', '--ds_poll_interval', '2']
    })
    writer = await startDsWriter(server)
    config.baseUrl = writer.url
  })

  afterAll(async () => {
    await writer?.close()
    await server?.stop()
  })

  runConformanceTests(config)
})
