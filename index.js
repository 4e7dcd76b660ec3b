'use strict'
// Ferrocable for Node.js: the AnyCable-compatible WebSocket server, running inside this process.
//
//   const { Server, Application, Channel } = require('ferrocable')
//
// `Server` is the Rust core (sockets, state, fan-out on its own threads); `Application` and `Channel` are
// the channel API in JavaScript, built on the low-level `server.handle({ connect, command, disconnect })`;
// `signStream` and `issueToken` sign stream names and identification tokens for the standalone mode.
const { Server, STATUS } = require('./lib/server')
const { Application, Channel, ConnectionHandle, ChannelHandle, State } = require('./lib/application')
const { FerrocableError, HandlerError } = require('./lib/errors')
const { signStream, issueToken } = require('./lib/signing')

module.exports = {
  Server,
  Application,
  Channel,
  ConnectionHandle,
  ChannelHandle,
  State,
  FerrocableError,
  HandlerError,
  STATUS,
  signStream,
  issueToken
}
