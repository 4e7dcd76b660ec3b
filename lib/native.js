'use strict'
// Loads the compiled addon (`npm run build` puts it next to index.js as ferrocable.<platform>.node).
const path = require('node:path')
const fs = require('node:fs')
const { FerrocableError } = require('./errors')

function platformSuffix () {
  const { platform, arch } = process
  if (platform !== 'linux') return `${platform}-${arch}`
  // glibc and musl builds differ; the process report says which C library this Node runs on.
  const report = typeof process.report?.getReport === 'function' ? process.report.getReport() : null
  const glibc = report && report.header && report.header.glibcVersionRuntime
  return `linux-${arch}-${glibc ? 'gnu' : 'musl'}`
}

function load () {
  const root = path.resolve(__dirname, '..')
  const file = path.join(root, `ferrocable.${platformSuffix()}.node`)
  if (!fs.existsSync(file)) {
    throw new FerrocableError(
      `the Ferrocable addon for this platform is missing (${path.basename(file)}): build it with \`npm run build\` in ${root}`,
      'ENATIVE'
    )
  }
  return require(file)
}

module.exports = load()
