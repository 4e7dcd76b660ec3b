// ESM entry: the same objects as the CommonJS entry (index.js), as named exports.
import ferrocable from './index.js'

export const {
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
} = ferrocable

export default ferrocable
