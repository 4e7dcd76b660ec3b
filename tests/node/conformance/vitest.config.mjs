// The Durable Streams protocol's own conformance suite (@durable-streams/server-conformance-tests), run against
// the ferrocable binary with `make test-node`. Ferrocable serves reads of JSON streams only, so only the tests
// that read JSON streams are run (SELECTED); docs/durable-streams.md lists the suite's other groups and why
// they do not apply to a read-only server.
import { defineConfig } from 'vitest/config'

const escape = (text) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')

export const SELECTED = [
  'Browser Security Headers should include X-Content-Type-Options: nosniff on SSE responses',
  'Content-Type Validation should return stream content-type on GET',
  'Offset Validation and Resumability should return empty JSON array for offset=now on JSON streams',
  'SSE Mode should accept live=sse query parameter for application/json',
  'SSE Mode JSON SSE catch-up pairs every data event with a control event',
  'SSE Mode should wrap JSON data in arrays for SSE and produce valid JSON',
  'SSE Mode should handle JSON payloads with embedded newlines safely',
  'SSE Mode should NOT include Stream-SSE-Data-Encoding header for application/json streams',
  'JSON Mode should allow PUT with empty array body (creates empty stream)',
  'JSON Mode should handle content-type with charset parameter',
  'JSON Mode should wrap single JSON value in array',
  'JSON Mode should store arrays as single messages',
  'JSON Mode should concatenate multiple appends into single array',
  'JSON Mode should handle mixed single values and arrays',
  'JSON Mode should handle various JSON value types',
  'JSON Mode should preserve JSON structure and nesting',
  'JSON Mode should work with client json() iterator',
  'JSON Mode should store nested arrays as single messages',
  'JSON Mode should store arrays as values when double-wrapped',
  'JSON Mode should store primitive arrays as single messages',
  'JSON Mode should handle mixed batching - single values, arrays, and nested arrays'
]

export default defineConfig({
  test: {
    include: ['conformance/*.conformance.js'],
    testNamePattern: new RegExp(`(${SELECTED.map(escape).join('|')})$`),
    testTimeout: 20000,
    hookTimeout: 30000,
    fileParallelism: false
  }
})
