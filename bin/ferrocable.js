#!/usr/bin/env node
'use strict'
// `npx ferrocable …`: runs the standalone server binary of the installed platform package with the same
// arguments, standard streams and exit status. Signals sent to this process go to the server, which shuts down
// gracefully on SIGINT and SIGTERM.
const { spawn } = require('node:child_process')
const { locate } = require('../lib/platform')

const { suffix, binary, missing } = locate()
if (!binary) {
  process.stderr.write(`ferrocable: the server binary for this platform (${suffix}) is missing: ${missing}\n`)
  process.exit(1)
}

const child = spawn(binary, process.argv.slice(2), { stdio: 'inherit' })
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => child.kill(signal))
}
child.on('error', (err) => {
  process.stderr.write(`ferrocable: cannot run ${binary}: ${err.message}\n`)
  process.exit(1)
})
child.on('exit', (code, signal) => {
  if (signal) {
    // Die of the same signal, so the caller sees what the server saw.
    process.removeAllListeners(signal)
    process.kill(process.pid, signal)
  } else {
    process.exit(code)
  }
})
