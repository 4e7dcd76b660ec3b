// Loaded by inprocess-modules.test.js as CommonJS: prints what `require('ferrocable')` exports.
const ferrocable = require('ferrocable')
const { Server } = require('ferrocable')
console.log(JSON.stringify({
  keys: Object.keys(ferrocable).sort(),
  serverIsClass: typeof Server === 'function' && Server === ferrocable.Server
}))
