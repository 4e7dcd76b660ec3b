// The npm packages of dist/ (`make package`) as a user gets them: installed with `npm install <tarballs>` into a
// new project outside the repository, with no Rust on PATH and no access to the repository's build outputs, then
// used from CommonJS, ESM, TypeScript and `npx ferrocable`, with real clients connecting.
import assert from 'node:assert/strict'
import { execFile, spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import readline from 'node:readline'
import { after, before } from 'node:test'
import { promisify } from 'node:util'
import { broadcast, eventually, repoRoot, scenario, startServer, unique } from '../lib/harness.js'
import { anycableClient, nextEvent, railsConsumer } from '../lib/clients.js'

const run = promisify(execFile)
const suiteDir = path.join(repoRoot, 'tests', 'node')
const dist = path.join(repoRoot, 'dist')
const { version } = JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8'))
const PLATFORM = 'linux-x64-gnu'
const mainTarball = path.join(dist, `ferrocable-${version}.tgz`)
const platformTarball = path.join(dist, `ferrocable-${PLATFORM}-${version}.tgz`)

// What the app's processes see: no cargo or rustc (PATH without ~/.cargo/bin), nothing pointing into the
// repository, and a HOME of their own so npm uses a fresh cache and config.
let tmp
let appDir
function appEnv () {
  const cargoBin = path.join(os.homedir(), '.cargo', 'bin')
  const env = { ...process.env, HOME: path.join(tmp, 'home'), PATH: process.env.PATH.split(':').filter((dir) => dir && dir !== cargoBin && !dir.startsWith(repoRoot)).join(':') }
  for (const name of Object.keys(env)) {
    if (name.startsWith('npm_') || name.startsWith('CARGO') || name.startsWith('RUSTUP') || name === 'NODE_PATH' || name === 'FERROCABLE_BIN') delete env[name]
  }
  env.npm_config_update_notifier = 'false'
  return env
}

async function npm (args, cwd = appDir) {
  return run('npm', args, { cwd, env: appEnv() })
}

function tarballFiles (tarball) {
  return run('tar', ['-tzf', tarball]).then(({ stdout }) => stdout.split('\n').filter(Boolean).map((f) => f.replace(/^package\//, '')).sort())
}

// Every file of a running process's memory map that comes from a file (shared objects, the executable).
function mappedFiles (pid) {
  const lines = fs.readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')
  return [...new Set(lines.map((line) => line.split(/\s+/).slice(5).join(' ')).filter((f) => f.startsWith('/')))]
}

function assertOutsideRepository (pid, nativeFile) {
  const files = mappedFiles(pid)
  const native = files.filter((f) => f.endsWith(nativeFile))
  assert.equal(native.length, 1, `one ${nativeFile} is loaded: ${native}`)
  assert.ok(native[0].startsWith(path.join(appDir, 'node_modules') + path.sep), `${native[0]} comes from the app's node_modules`)
  assert.deepEqual(files.filter((f) => f.startsWith(repoRoot + path.sep)), [], 'nothing of the repository is mapped')
}

before(async () => {
  for (const tarball of [mainTarball, platformTarball]) {
    assert.ok(fs.existsSync(tarball), `${tarball} exists (run \`make package\` first)`)
  }
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ferrocable-npm-'))
  assert.ok(!tmp.startsWith(repoRoot + path.sep))
  const cargo = appEnv().PATH.split(':').map((dir) => path.join(dir, 'cargo')).find((file) => fs.existsSync(file))
  assert.equal(cargo, undefined, `cargo is still on PATH at ${cargo}: the test cannot hide Rust (install it with rustup)`)
  appDir = path.join(tmp, 'app')
  fs.mkdirSync(path.join(tmp, 'home'), { recursive: true })
  fs.mkdirSync(appDir)
  fs.writeFileSync(path.join(appDir, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }, null, 2))
  // --offline: the platform package must come from its tarball, never from a registry.
  await npm(['install', '--offline', '--no-audit', '--no-fund', '--loglevel=error', mainTarball, platformTarball])
  writeServer('server.cjs', "const { Server, Application, Channel } = require('ferrocable')\nconst resolved = require.resolve('ferrocable')")
  writeServer('server.mjs', "import { Server, Application, Channel } from 'ferrocable'\nimport { fileURLToPath } from 'node:url'\nconst resolved = fileURLToPath(import.meta.resolve('ferrocable'))")
})

after(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true })
})

// An app with an echo channel (broadcasts what a client says to everyone on the stream), in CommonJS or ESM:
// prints its URL once listening, stops when its stdin ends.
function writeServer (name, imports) {
  fs.writeFileSync(path.join(appDir, name), `${imports}
class EchoChannel extends Channel {
  async subscribed (handle) { handle.streamFrom('echo') }
  async speak (handle, params, data) { await server.broadcast('echo', { text: data.text, from: handle.identifiers.user }) }
}
class App extends Application {
  async connect (handle) {
    if (!handle.env.params.user) return handle.reject()
    handle.identifiedBy({ user: handle.env.params.user })
  }
}
const app = new App()
app.registerChannel('EchoChannel', EchoChannel)
const server = new Server({ host: '127.0.0.1', port: 0, broadcastAdapter: [], logLevel: 'warn' })
server.handle(app)
server.start().then(() => console.log(JSON.stringify({ url: server.address.url, resolved })))
process.stdin.resume()
process.stdin.on('end', () => server.stop().then(() => process.exit(0)))
`)
}

async function startApp (script) {
  const child = spawn(process.execPath, [script], { cwd: appDir, env: appEnv(), stdio: ['pipe', 'pipe', 'inherit'] })
  const lines = readline.createInterface({ input: child.stdout })
  const first = await nextEvent((done) => lines.once('line', done), { timeout: 15000, what: `${script} to listen` })
  const exited = new Promise((resolve) => child.once('exit', resolve))
  return { child, ...JSON.parse(first), stop: () => { child.stdin.end(); return exited } }
}

async function echoRoundTrip (url) {
  const user = unique('user')
  const consumer = railsConsumer(`${url}?user=${user}`, { user })
  const received = []
  await nextEvent((done) => consumer.subscriptions.create({ channel: 'EchoChannel' }, {
    connected: done,
    received: (data) => received.push(data)
  }), { what: 'the subscription to be confirmed' })
  consumer.subscriptions.subscriptions[0].perform('speak', { text: 'hello' })
  await eventually(() => received.length > 0, { what: 'the echo broadcast' })
  assert.deepEqual(received[0], { text: 'hello', from: user })
}

scenario('package: the tarballs hold only what users need (no tests, no Rust sources, no addon in the main package)', async () => {
  const main = await tarballFiles(mainTarball)
  const libFiles = fs.readdirSync(path.join(repoRoot, 'lib')).map((f) => `lib/${f}`)
  assert.deepEqual(main, ['README.md', 'bin/ferrocable.js', 'index.d.ts', 'index.js', 'index.mjs', ...libFiles, 'package.json'].sort())
  const platform = await tarballFiles(platformTarball)
  assert.deepEqual(platform, ['README.md', 'ferrocable', `ferrocable.${PLATFORM}.node`, 'package.json'])
  const manifest = JSON.parse(fs.readFileSync(path.join(appDir, 'node_modules', 'ferrocable', 'package.json'), 'utf8'))
  assert.deepEqual(manifest.optionalDependencies, { [`ferrocable-${PLATFORM}`]: version })
  assert.equal(manifest.scripts, undefined, 'no install or build scripts')
  assert.equal(manifest.devDependencies, undefined)
})

for (const [kind, script, entry] of [['CommonJS require', 'server.cjs', 'index.js'], ['ESM import', 'server.mjs', 'index.mjs']]) {
  scenario(`package: installed in a new project, ${kind} serves an Action Cable client from the prebuilt addon`, async () => {
    const app = await startApp(script)
    try {
      assert.equal(app.resolved, path.join(appDir, 'node_modules', 'ferrocable', entry))
      assertOutsideRepository(app.child.pid, `ferrocable.${PLATFORM}.node`)
      await echoRoundTrip(app.url)
    } finally {
      assert.equal(await app.stop(), 0)
    }
  })
}

scenario('package: the installed TypeScript declarations type-check a typed example', async () => {
  fs.copyFileSync(path.join(suiteDir, 'types', 'example.ts'), path.join(appDir, 'example.ts'))
  fs.writeFileSync(path.join(appDir, 'tsconfig.json'), JSON.stringify({
    compilerOptions: {
      target: 'ES2022',
      module: 'NodeNext',
      moduleResolution: 'NodeNext',
      strict: true,
      noEmit: true,
      types: ['node'],
      typeRoots: [path.join(suiteDir, 'node_modules', '@types')]
    },
    files: ['example.ts']
  }))
  const tsc = path.join(suiteDir, 'node_modules', 'typescript', 'bin', 'tsc')
  const { stdout } = await run(process.execPath, [tsc, '-p', 'tsconfig.json', '--traceResolution'], { cwd: appDir, env: appEnv() })
  assert.match(stdout, new RegExp(`Module name 'ferrocable' was successfully resolved to '${path.join(appDir, 'node_modules', 'ferrocable', 'index.d.ts').replace(/[.]/g, '\\.')}'`))
}, { timeout: 60000 })

scenario('package: npx ferrocable runs the standalone server binary of the platform package', async () => {
  const { stdout } = await npm(['exec', '--offline', '--', 'ferrocable', '--help'])
  assert.match(stdout, /Usage: ferrocable/)
  const { stdout: versionOut } = await npm(['exec', '--offline', '--', 'ferrocable', '--version'])
  assert.equal(versionOut.trim(), `ferrocable ${version}`)

  // The bin shim npx runs: the server's executable is the platform package's, a client gets a broadcast, SIGTERM
  // reaches the server through the shim (graceful stop, exit status 0).
  const shim = path.join(appDir, 'node_modules', '.bin', 'ferrocable')
  const server = await startServer({ bin: shim, env: appEnv(), publicMode: true })
  try {
    const child = fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p)).find((p) => {
      try { return fs.readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1].split(' ')[1] === String(server.child.pid) } catch { return false }
    })
    assert.ok(child, 'the shim runs the server as its child')
    assert.equal(fs.readlinkSync(`/proc/${child}/exe`), path.join(appDir, 'node_modules', `ferrocable-${PLATFORM}`, 'ferrocable'))
    const stream = unique('news')
    const cable = anycableClient(server.url(), { user: 'reader' })
    const channel = cable.streamFrom(stream)
    await channel.ensureSubscribed()
    const message = nextEvent((done) => channel.on('message', done), { what: 'the broadcast' })
    const res = await broadcast(server, { stream, data: '{"headline":"hi"}' }, { key: null })
    assert.equal(res.status, 201)
    assert.deepEqual(await message, { headline: 'hi' })
  } finally {
    assert.deepEqual(await server.stop(), { code: 0, signal: null }, server.log)
  }
}, { timeout: 60000 })

scenario('package: without its platform package the require fails with ENATIVE and says what to install', async () => {
  const script = "try { require('ferrocable') } catch (err) { console.log(JSON.stringify({ code: err.code, message: err.message })) }"
  const hidden = path.join(appDir, 'node_modules', `ferrocable-${PLATFORM}`)
  fs.renameSync(hidden, `${hidden}.away`)
  try {
    const { stdout } = await run(process.execPath, ['-e', script], { cwd: appDir, env: appEnv() })
    const err = JSON.parse(stdout)
    assert.equal(err.code, 'ENATIVE')
    assert.match(err.message, new RegExp(`the package ferrocable-${PLATFORM} is not installed.*npm install ferrocable-${PLATFORM}`))
  } finally {
    fs.renameSync(`${hidden}.away`, hidden)
  }
  // A platform nothing is published for (here: this process pretending to be on riscv64).
  const other = "Object.defineProperty(process, 'arch', { value: 'riscv64' });" + script
  const { stdout } = await run(process.execPath, ['-e', other], { cwd: appDir, env: appEnv() })
  const err = JSON.parse(stdout)
  assert.equal(err.code, 'ENATIVE')
  assert.match(err.message, /no prebuilt package exists for linux-riscv64-gnu \(prebuilt: linux-x64-gnu\).*npm run build/)
})
