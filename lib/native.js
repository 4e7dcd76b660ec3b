'use strict'
// Loads the compiled addon: the one built in a checkout (`npm run build` puts it next to index.js) or the one of
// the prebuilt platform package (see ./platform.js). Nothing is compiled at install time.
const { FerrocableError } = require('./errors')
const { locate } = require('./platform')

function load () {
  const { suffix, addon, missing } = locate()
  if (!addon) {
    throw new FerrocableError(`the Ferrocable addon for this platform (${suffix}) is missing: ${missing}`, 'ENATIVE')
  }
  return require(addon)
}

module.exports = load()
