// Encoders for @anycable/core's binary sub-protocols, written here from AnyCable's documentation (its own
// encoder packages are not on the public registry): MessagePack on @msgpack/msgpack, and Protocol Buffers on
// protobufjs with the documented `action_cable` schema, whose free-form `message` fields hold MessagePack.
// `createBinaryCable(url, encoding, options)` opens an @anycable/core cable speaking one of them.
import { createCable } from '@anycable/core'
import { decode as unpack, encode as pack } from '@msgpack/msgpack'
import protobuf from 'protobufjs'
import WebSocket from 'ws'
import { onScenarioEnd } from './harness.js'

// AnyCable's schema, as docs/binary_formats.md of AnyCable-Go gives it (docs/protocol.md here).
const SCHEMA = `
syntax = "proto3";
package action_cable;
enum Type {
  no_type = 0; welcome = 1; disconnect = 2; ping = 3; confirm_subscription = 4; reject_subscription = 5;
  confirm_history = 6; reject_history = 7;
}
enum Command { unknown_command = 0; subscribe = 1; unsubscribe = 2; message = 3; history = 4; pong = 5; }
message StreamHistoryRequest { string epoch = 2; int64 offset = 3; }
message HistoryRequest { int64 since = 1; map<string, StreamHistoryRequest> streams = 2; }
message Message {
  Type type = 1; Command command = 2; string identifier = 3; string data = 4; bytes message = 5;
  string reason = 6; bool reconnect = 7; HistoryRequest history = 8;
}
message Reply {
  Type type = 1; string identifier = 2; bytes message = 3; string reason = 4; bool reconnect = 5;
  string stream_id = 6; string epoch = 7; int64 offset = 8; string sid = 9; bool restored = 10;
  repeated string restored_ids = 11;
}
`
const root = protobuf.parse(SCHEMA, { keepCase: true }).root
const MessageType = root.lookupType('action_cable.Message')
const ReplyType = root.lookupType('action_cable.Reply')

/** MessagePack both ways. */
export class MsgpackEncoder {
  encode (msg) {
    return pack(msg)
  }

  decode (raw) {
    try {
      return unpack(raw)
    } catch {
      return undefined
    }
  }
}

/**
 * Protocol Buffers: clients send `Message`; the server answers with `Message` (plain protocol) or `Reply`
 * (extended). Empty fields are left out of decoded frames, as the JSON protocol leaves them out.
 */
export class ProtobufEncoder {
  constructor ({ extended = false } = {}) {
    this.replyType = extended ? ReplyType : MessageType
  }

  encode (msg) {
    const fields = { ...msg }
    if (fields.history) {
      fields.history = { since: fields.history.since || 0, streams: fields.history.streams || {} }
    }
    return MessageType.encode(MessageType.fromObject(fields)).finish()
  }

  decode (raw) {
    let decoded
    try {
      decoded = this.replyType.toObject(this.replyType.decode(raw), { enums: String, longs: Number, defaults: false })
    } catch {
      return undefined
    }
    if (decoded.type === 'no_type') delete decoded.type
    if (decoded.message && decoded.message.length > 0) {
      decoded.message = unpack(decoded.message)
    } else {
      delete decoded.message
    }
    return decoded
  }
}

/** The sub-protocol of each encoding, plain and extended. */
export const BINARY_PROTOCOLS = {
  msgpack: 'actioncable-v1-msgpack',
  protobuf: 'actioncable-v1-protobuf',
  'ext-msgpack': 'actioncable-v1-ext-msgpack',
  'ext-protobuf': 'actioncable-v1-ext-protobuf'
}

/** An @anycable/core cable speaking `encoding` (a key of BINARY_PROTOCOLS), sending `cookie`. */
export function createBinaryCable (url, encoding, { cookie, ...options } = {}) {
  const protocol = BINARY_PROTOCOLS[encoding]
  const extended = encoding.startsWith('ext-')
  const encoder = encoding.endsWith('protobuf') ? new ProtobufEncoder({ extended }) : new MsgpackEncoder()
  const cable = createCable(url, {
    protocol,
    encoder,
    websocketImplementation: WebSocket,
    websocketOptions: { headers: cookie ? { cookie } : {} },
    logLevel: 'error',
    ...options
  })
  onScenarioEnd(() => cable.disconnect())
  return cable
}
