// The package as users load it: `import` (ESM) and `require` (CommonJS) give the same objects, and the
// TypeScript declarations check against a typed example (tsc --noEmit).
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { createRequire } from 'node:module'
import path from 'node:path'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'
import * as esm from 'ferrocable'
import esmDefault from 'ferrocable'
import { scenario } from '../lib/harness.js'

const run = promisify(execFile)
const suiteDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const require = createRequire(import.meta.url)

const EXPORTS = ['Application', 'Channel', 'ChannelHandle', 'ConnectionHandle', 'FerrocableError', 'HandlerError', 'STATUS', 'Server', 'State', 'issueToken', 'signStream']

scenario('modules: import gives named exports and a default export that are the CommonJS objects', () => {
  const cjs = require('ferrocable')
  for (const name of EXPORTS) {
    assert.equal(typeof esm[name] === 'function' || typeof esm[name] === 'object', true, `${name} is exported`)
    assert.equal(esm[name], cjs[name], `${name} is the same object from import and require`)
  }
  assert.equal(esmDefault, cjs)
  assert.deepEqual(esm.STATUS, { ERROR: 0, SUCCESS: 1, FAILURE: 2 })
})

scenario('modules: a CommonJS program can require the package', async () => {
  const { stdout } = await run(process.execPath, [path.join(suiteDir, 'lib', 'inprocess-require.cjs')], { cwd: suiteDir })
  const result = JSON.parse(stdout)
  assert.deepEqual(result.keys, EXPORTS)
  assert.equal(result.serverIsClass, true)
})

scenario('modules: the TypeScript declarations type-check a typed example with tsc --noEmit', async () => {
  const tsc = path.join(suiteDir, 'node_modules', 'typescript', 'bin', 'tsc')
  try {
    await run(process.execPath, [tsc, '--noEmit', '-p', path.join(suiteDir, 'types', 'tsconfig.json')], { cwd: suiteDir })
  } catch (err) {
    assert.fail(`tsc reported errors:\n${err.stdout}${err.stderr}`)
  }
}, { timeout: 60000 })

scenario('modules: tsc rejects a misuse of the declarations (the check is not vacuous)', async () => {
  const tsc = path.join(suiteDir, 'node_modules', 'typescript', 'bin', 'tsc')
  const source = "import { Server } from 'ferrocable'\nconst s = new Server({ port: 1 })\nconst n: string = s.stats().clientsNum\ns.broadcast(42, 'x')\nnew Server({ prot: 8080 })\n"
  const fs = await import('node:fs/promises')
  const dir = path.join(suiteDir, '.tmp', `types-${process.pid}`)
  await fs.mkdir(dir, { recursive: true })
  await fs.writeFile(path.join(dir, 'bad.ts'), source)
  await fs.writeFile(path.join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions: { module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true, types: ['node'], typeRoots: [path.join(suiteDir, 'node_modules', '@types')] }, files: ['bad.ts'] }))
  try {
    const failed = await run(process.execPath, [tsc, '--noEmit', '-p', path.join(dir, 'tsconfig.json')], { cwd: suiteDir }).then(() => null, (err) => err)
    assert.ok(failed, 'tsc must fail on the misuse')
    assert.match(failed.stdout, /TS2322/, 'number is not assignable to string')
    assert.match(failed.stdout, /TS2345/, 'a number is not a stream name')
    assert.match(failed.stdout, /TS2561|TS2353/, 'a misspelt option is an error')
  } finally {
    await fs.rm(dir, { recursive: true, force: true })
  }
}, { timeout: 60000 })
