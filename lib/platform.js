'use strict'
// Where this platform's native code is: the addon (`ferrocable.<platform>.node`) and the standalone server
// binary (`ferrocable`). A checkout has the addon next to index.js (`npm run build`); an installed package has
// both in the per-platform package `ferrocable-<platform>` that npm picked from the optional dependencies.
const path = require('node:path')
const fs = require('node:fs')

/** The platforms a prebuilt package is published for (npm/<platform>/package.json in the repository). */
const PREBUILT = ['linux-x64-gnu']

/** This process's platform in napi-rs's naming: `linux-x64-gnu`, `linux-x64-musl`, `darwin-arm64`, … */
function platformSuffix () {
  const { platform, arch } = process
  if (platform !== 'linux') return `${platform}-${arch}`
  // glibc and musl builds differ; the process report says which C library this Node runs on.
  const report = typeof process.report?.getReport === 'function' ? process.report.getReport() : null
  const glibc = report && report.header && report.header.glibcVersionRuntime
  return `linux-${arch}-${glibc ? 'gnu' : 'musl'}`
}

/** The folder of the installed platform package, or null when npm did not install one. */
function platformPackageDir (suffix) {
  try {
    return path.dirname(require.resolve(`ferrocable-${suffix}/package.json`))
  } catch {
    return null
  }
}

/**
 * Where the native code of this platform is: `{ suffix, addon, binary }`, each path null when absent, and
 * `missing`: why nothing was found (for the error message), or null.
 */
function locate () {
  const suffix = platformSuffix()
  const root = path.resolve(__dirname, '..')
  const addonName = `ferrocable.${suffix}.node`
  const local = path.join(root, addonName)
  const dir = platformPackageDir(suffix)
  const inPackage = (name) => (dir && fs.existsSync(path.join(dir, name)) ? path.join(dir, name) : null)
  const addon = fs.existsSync(local) ? local : inPackage(addonName)
  const binary = inPackage('ferrocable')
  let missing = null
  if (!addon || !binary) {
    missing = PREBUILT.includes(suffix)
      ? `the package ferrocable-${suffix} is not installed: npm skips optional dependencies with ` +
        '--omit=optional or --no-optional, and when the lockfile was written on another platform; reinstall ' +
        `with \`npm install ferrocable-${suffix}\``
      : `no prebuilt package exists for ${suffix} (prebuilt: ${PREBUILT.join(', ')}); build the addon from the ` +
        'Ferrocable repository (Rust stable 1.85+: `npm install && npm run build`) and depend on that folder'
  }
  return { suffix, addon, binary, missing }
}

module.exports = { PREBUILT, platformSuffix, locate }
