'use strict'
// Runs an application written for @anycable/serverless-js in this process, unchanged: `server.handle(app)`
// with such an app drives it exactly as that package's HTTP handlers (connectHandler, commandHandler,
// disconnectHandler) would over AnyCable's HTTP RPC — the same payload (the env with url, headers, cstate and
// istate, empty ones left out as on the wire; the connection identifiers; the session id the handlers read
// from `x-anycable-meta-sid`), the same calls on the app, the same answer — so its channel state keeps
// serverless-js's semantics. The package is not required: the app is recognized by the methods its handlers
// use, and nothing here changes it.

const STATUS = Object.freeze({ ERROR: 0, SUCCESS: 1, FAILURE: 2 })

// What serverless-js's handlers call on the application.
const APP_METHODS = ['buildHandle', 'handleOpen', 'handleCommand', 'handleClose', 'encodeIdentifiers', 'decodeIdentifiers']

/** Whether `app` is a @anycable/serverless-js Application (or one shaped like it). */
function isServerlessApplication (app) {
  return app !== null && typeof app === 'object' && APP_METHODS.every((name) => typeof app[name] === 'function')
}

function hasKeys (map) {
  for (const _ in map) return true
  return false
}

// The env as serverless-js parses it from AnyCable's JSON request: empty fields are not sent.
function wireEnv (env) {
  const out = {}
  if (env.url) out.url = env.url
  if (hasKeys(env.headers)) out.headers = env.headers
  if (hasKeys(env.cstate)) out.cstate = env.cstate
  if (hasKeys(env.istate)) out.istate = env.istate
  return out
}

// An empty string is left out of the JSON request, so the handlers see `undefined`.
const wire = (text) => (text === '' ? undefined : text)

/** The `{ connect, command, disconnect }` handlers that run a serverless-js app as its HTTP handlers do. */
function serverlessHandlers (app) {
  return {
    async connect ({ sid, env }) {
      const handle = app.buildHandle(sid, wireEnv(env))
      await app.handleOpen(handle)
      return {
        status: handle.rejected ? STATUS.FAILURE : STATUS.SUCCESS,
        identifiers: handle.identifiers ? app.encodeIdentifiers(handle.identifiers) : '',
        transmissions: handle.transmissions,
        errorMsg: handle.rejected ? 'Auth failed' : '',
        env: handle.envChanges
      }
    },
    async command ({ sid, command, identifier, connectionIdentifiers, data, env }) {
      const handle = app.buildHandle(sid, wireEnv(env))
      handle.identifiedBy(app.decodeIdentifiers(wire(connectionIdentifiers)))
      await app.handleCommand(handle, wire(command), wire(identifier), wire(data))
      return {
        status: handle.rejected ? STATUS.FAILURE : STATUS.SUCCESS,
        disconnect: handle.closed,
        stopStreams: handle.stopStreams,
        transmissions: handle.transmissions,
        streams: handle.streams,
        stoppedStreams: handle.stoppedStreams,
        env: handle.envChanges,
        errorMsg: ''
      }
    },
    async disconnect ({ sid, identifiers, subscriptions, env }) {
      const handle = app.buildHandle(sid, wireEnv(env))
      handle.identifiedBy(app.decodeIdentifiers(wire(identifiers)))
      await app.handleClose(handle, subscriptions.length > 0 ? subscriptions : undefined)
      return { status: STATUS.SUCCESS, errorMsg: '' }
    }
  }
}

module.exports = { isServerlessApplication, serverlessHandlers }
