// Type declarations of the ferrocable npm package (hand-written; checked by tests/node/types).
import { EventEmitter } from 'node:events'

/** Every core option, in camelCase. Lists may be given as arrays or comma-separated strings. */
export interface ServerOptions {
  host?: string
  port?: number
  path?: string | string[]
  allowedOrigins?: string | string[]
  /** PEM certificate chain file: every listener serves wss:// and https://. Needs `sslKey`. */
  sslCert?: string
  /** PEM private key file of `sslCert`. */
  sslKey?: string
  /** The backend without in-process handlers: gRPC `host:port`, or an `http://` / `https://` URL for HTTP RPC. */
  rpcHost?: string
  /** gRPC fallback backend over TLS; implied by `rpcTlsRootCa`. (HTTP RPC uses TLS for an https:// `rpcHost`.) */
  rpcEnableTls?: boolean
  /** Verify the backend's certificate (default true); false is for development only. */
  rpcTlsVerify?: boolean
  /** CA certificate(s) for the backend: a PEM file path or PEM contents; system CAs when unset. */
  rpcTlsRootCa?: string
  /** Bearer key for an HTTP RPC backend; derived from `secret` when unset. */
  httpRpcSecret?: string
  norpc?: boolean
  headers?: string | string[]
  proxyCookies?: string | string[]
  rpcConcurrency?: number
  /** Milliseconds per handler call; in-process handlers default to 5000 when 0. */
  rpcRequestTimeout?: number
  secret?: string
  broadcastKey?: string
  noauth?: boolean
  publicStreams?: boolean
  public?: boolean
  /** Verifies JWT identification tokens; defaults to `secret`. */
  jwtSecret?: string
  /** Query parameter (and `X-` header) carrying the token; default 'jid'. */
  jwtParam?: string
  enforceJwt?: boolean
  /** Verifies signed `$pubsub` stream names; defaults to `secret`. */
  streamsSecret?: string
  streamsWhisper?: boolean
  /** Whispers per second per connection; 0 means no limit. Default 20. */
  whisperRate?: number
  turboStreams?: boolean
  /** Verifies signed Turbo Streams names; defaults to `streamsSecret`. */
  turboStreamsSecret?: string
  broadcastAdapter?: string | string[]
  httpBroadcastPort?: number
  httpBroadcastPath?: string
  httpBroadcastMaxBody?: number
  /** Serves Server-Sent Events (EventSource clients) at `ssePath` (default '/events'). */
  sse?: boolean
  ssePath?: string
  /** Serves long-polling clients at `pollPath` (default '/lp'). */
  poll?: boolean
  pollPath?: string
  /** Seconds a poll waits for something to send (default 15). */
  pollInterval?: number
  /** Milliseconds a poll with a message waits for more (default 500). */
  pollFlushInterval?: number
  pollMaxRequestSize?: number
  /** Seconds a long-polling session is kept between polls (default 5). */
  pollKeepaliveTimeout?: number
  /** The REST API (`POST <apiPath>/publish`): 0 (default) serves it on `port`. */
  apiPort?: number
  /** Base path of the REST API (default '/api'). */
  apiPath?: string
  /** Bearer key of the REST API; derived from `secret` when unset. Without a key, a port of its own or `public`, there is no API. */
  apiSecret?: string
  /** Cluster pub/sub between servers: 'redis', 'nats' or 'none' (default). */
  pubsub?: 'redis' | 'nats' | 'none'
  /** 'all' (default): receive every publication; 'stream': subscribe per stream with local subscribers. */
  pubsubSubscribe?: 'all' | 'stream'
  /**
   * Stream history and session recovery for `actioncable-v1-ext-json` clients: 'memory' (one server), 'redis' or
   * 'nats' (shared by every server), or 'none' (default).
   */
  broker?: 'memory' | 'redis' | 'nats' | 'none'
  /** Messages kept in each stream's history (default 100). */
  historyLimit?: number
  /** Seconds a message is kept in history (default 300). */
  historyTtl?: number
  /** Seconds a disconnected client's session can be restored (default 300); 0 turns session recovery off. */
  sessionsTtl?: number
  /** Configuration presets: 'broker' turns on history and session recovery with the engines configured. */
  presets?: string | string[]
  /** Serve Durable Streams reads (catch-up, long-poll, SSE) at `dsPath`, from the broker's history (needs `broker`). */
  ds?: boolean
  /** Path prefix of Durable Streams reads (default '/ds'). */
  dsPath?: string
  /** Do not authenticate Durable Streams readers; their streams are still authorized. */
  dsSkipAuth?: boolean
  /** Seconds a Durable Streams long-poll waits before answering 204 (default 10). */
  dsPollInterval?: number
  /** Seconds a Durable Streams SSE response lasts (default 60). */
  dsSseTtl?: number
  redisUrl?: string
  redisChannel?: string
  natsServers?: string | string[]
  natsChannel?: string
  /** Starts a nats-server child process (Debian package nats-server) with this server. */
  embedNats?: boolean
  enatsAddr?: string
  enatsCluster?: string
  enatsClusterName?: string
  enatsClusterRoutes?: string | string[]
  enatsGateway?: string
  enatsGateways?: string
  enatsGatewayAdvertise?: string
  enatsServerName?: string
  enatsDebug?: boolean
  enatsTrace?: boolean
  pingInterval?: number
  pingTimestampPrecision?: 's' | 'ms' | 'ns'
  deadPeerTimeout?: number
  disconnectRate?: number
  disconnectMode?: 'auto' | 'always' | 'never'
  disconnectBacklogSize?: number
  shutdownTimeout?: number
  maxMessageSize?: number
  maxConn?: number
  /** Most subscriptions one connection may hold; more are rejected without a handler call. 0 (default): no limit. */
  maxSubscriptions?: number
  clientQueueSize?: number
  healthPath?: string
  logLevel?: 'error' | 'warn' | 'info' | 'debug' | 'trace'
  logFormat?: 'text' | 'json'
  debug?: boolean
}

export type StatusName = 'SUCCESS' | 'FAILURE' | 'ERROR'
/** 0 ERROR, 1 SUCCESS, 2 FAILURE (rpc.proto) */
export type StatusValue = StatusName | 0 | 1 | 2
export declare const STATUS: Readonly<{ ERROR: 0; SUCCESS: 1; FAILURE: 2 }>

export type StringMap = Record<string, string>

/** `Env` of a request: the connection's URL and forwarded headers, with state. */
export interface RequestEnv {
  url: string
  headers: StringMap
  cstate: StringMap
  /** Command: this subscription's istate. Disconnect: channel identifier -> that istate JSON-encoded. */
  istate: StringMap
}

/** State changes: a string sets a key, '' or null deletes it. */
export interface EnvChanges {
  cstate?: Record<string, string | null>
  istate?: Record<string, string | null>
}

export interface ConnectionRequest {
  sid: string
  env: RequestEnv
}

export interface ConnectionResponse {
  status: StatusValue
  identifiers?: string
  transmissions?: string[]
  errorMsg?: string
  env?: EnvChanges
}

export interface CommandMessage {
  sid: string
  command: 'subscribe' | 'unsubscribe' | 'message'
  identifier: string
  connectionIdentifiers: string
  /** For `message`: the client's JSON string, e.g. '{"action":"speak","text":"hi"}'. */
  data: string
  env: RequestEnv
}

export interface CommandResponse {
  status: StatusValue
  disconnect?: boolean
  stopStreams?: boolean
  streams?: string[]
  stoppedStreams?: string[]
  transmissions?: string[]
  errorMsg?: string
  env?: EnvChanges
  /** Joins or leaves the subscription's presence set on the client's behalf (needs a broker). */
  presence?: PresenceChange
}

/** `info` as a string is JSON text (as rpc.proto carries it); any other value is JSON-encoded. */
export type PresenceChange = { type: 'join', id: string | number, info?: unknown } | { type: 'leave' }

/** A stream's presence set: its members (distinct ids) with their info. */
export interface PresenceInfo<T = unknown> {
  total: number
  /** Left out when asked with `{ records: false }`. */
  records?: Array<{ id: string, info?: T }>
}

export interface DisconnectRequest {
  sid: string
  identifiers: string
  subscriptions: string[]
  env: RequestEnv
}

export interface DisconnectResponse {
  status: StatusValue
  errorMsg?: string
}

type Awaitable<T> = T | Promise<T>

/** Low-level in-process handlers, mirroring AnyCable's RPC calls. */
export interface Handlers {
  connect(request: ConnectionRequest): Awaitable<ConnectionResponse>
  command(request: CommandMessage): Awaitable<CommandResponse>
  disconnect?(request: DisconnectRequest): Awaitable<DisconnectResponse | void>
}

export interface ServerAddress {
  address: string
  family: 'IPv4' | 'IPv6'
  port: number
  /** ws://host:port/path of the first path */
  url: string
  /** The HTTP broadcast endpoint, or null when disabled. */
  broadcastUrl: string | null
}

export interface Publication {
  stream: string
  /** Strings are sent as they are; anything else as JSON. */
  data: unknown
  /** Session id (sid) that must not receive it. */
  excludeSocket?: string
}

/** Live counters and gauges, AnyCable's metric names in camelCase. */
export interface Stats {
  clientsNum: number
  clientsTotal: number
  subscriptionsNum: number
  broadcastStreamsNum: number
  broadcastMsgTotal: number
  failedBroadcastMsgTotal: number
  clientMsgTotal: number
  failedClientMsgTotal: number
  serverMsgTotal: number
  failedServerMsgTotal: number
  rpcCallTotal: number
  rpcErrorTotal: number
  rpcRetriesTotal: number
  rpcPendingNum: number
  failedAuthsTotal: number
  dataSentTotal: number
  dataRcvdTotal: number
  disconnectQueueSize: number
  /** Cluster pub/sub: messages published, received from other servers, and lost during engine outages. */
  pubsubPublishedTotal: number
  pubsubReceivedTotal: number
  pubsubLostTotal: number
  /** Streams this server is subscribed to in the pub/sub engine. */
  pubsubStreamsNum: number
  [metric: string]: number
}

export type ErrorCode =
  | 'ECONFIG' | 'EADDRINUSE' | 'EBIND' | 'ERPC' | 'EENGINE' | 'ERUNNING' | 'ENOTRUNNING' | 'ENATIVE' | 'ESTART'
  | 'EHANDLER' | 'EMALFORMED' | 'ETIMEOUT' | 'EACTION' | 'ECOMMAND' | 'EINVALID'

export declare class FerrocableError extends Error {
  code: ErrorCode | string
  constructor(message: string, code: string, options?: { cause?: unknown })
}

/** A handler call that failed; the client got an ERROR result for that call only. */
export declare class HandlerError extends FerrocableError {
  code: 'EHANDLER' | 'EMALFORMED' | 'ETIMEOUT'
  call: 'connect' | 'command' | 'disconnect'
  sid: string
  command?: string
  identifier?: string
  channel?: string
  action?: string
}

/** What `server.handle()` uses of an `@anycable/serverless-js` Application (its HTTP handlers use the same). */
export interface ServerlessApplication {
  buildHandle(id: string, env: object): any
  handleOpen(handle: any): Promise<void>
  handleCommand(handle: any, command: string, identifier: string, data: string): Promise<void>
  handleClose(handle: any, subscriptions: string[] | undefined): Promise<void>
  encodeIdentifiers(identifiers: any): string
  decodeIdentifiers(identifiers: string): any
}

export interface ServerEvents {
  error: [error: HandlerError]
  listening: []
  close: []
}

export declare class Server extends EventEmitter<ServerEvents> {
  constructor(options?: ServerOptions)
  /**
   * In-process handlers, an Application, or an `@anycable/serverless-js` Application (run unchanged, as its HTTP
   * handlers would run it); without them the server uses the backend at `rpcHost` (gRPC, or HTTP RPC for an
   * http:// or https:// URL).
   */
  handle(handlers: Handlers): this
  handle(application: Application<any>): this
  handle(serverlessApplication: ServerlessApplication): this
  start(): Promise<this>
  stop(): Promise<void>
  readonly address: ServerAddress | null
  readonly listening: boolean
  broadcast(stream: string, data: unknown, options?: { excludeSocket?: string }): Promise<void>
  broadcastMany(publications: Publication[]): Promise<void>
  /** Closes every connection with these identifiers; returns how many. */
  disconnect(identifiers: string | object, options?: { reconnect?: boolean }): number
  /** The presence set of a stream (needs a broker); rejects with EPRESENCE or ENOTRUNNING. */
  presence<T = unknown>(stream: string, options?: { records?: boolean }): Promise<PresenceInfo<T>>
  stats(): Stats
}

/** cstate / istate: reads see current values; writes become the changes the server merges. */
export declare class State {
  get(key: string): string | undefined
  has(key: string): boolean
  set(key: string, value: string | number | boolean): this
  delete(key: string): this
  toJSON(): StringMap
  readonly changes: StringMap | undefined
}

export interface HandleEnv {
  url: string
  headers: StringMap
  /** Query parameters of the URL. */
  params: StringMap
}

export declare class ConnectionHandle<I extends object = Record<string, unknown>> {
  readonly sid: string
  readonly env: HandleEnv
  readonly cstate: State
  identifiers: I | null
  rejected: boolean
  transmissions: string[]
  identifiedBy(identifiers: I): this
  reject(): this
  transmit(data: unknown): this
}

export declare class ChannelHandle<I extends object = Record<string, unknown>, P extends object = Record<string, unknown>> {
  readonly sid: string
  readonly env: HandleEnv
  readonly cstate: State
  readonly istate: State
  readonly identifier: string
  readonly params: P
  readonly identifiers: I | null
  rejected: boolean
  closed: boolean
  streams: string[]
  stoppedStreams: string[]
  stopStreams: boolean
  transmissions: string[]
  streamFrom(stream: string): this
  stopStreamFrom(stream: string): this
  stopAllStreams(): this
  transmit(data: unknown): this
  reject(): this
  close(): this
  /** Joins a presence set as `id` on behalf of this connection (default stream: `$p`, else the first stream). */
  joinPresence(id: string | number, info?: unknown, options?: { stream?: string }): this
  leavePresence(): this
  /** Reads a presence set (default: this subscription's presence stream). */
  presence<T = unknown>(stream?: string, options?: { records?: boolean }): Promise<PresenceInfo<T>>
}

export declare class Channel<I extends object = Record<string, unknown>, P extends object = Record<string, any>> {
  subscribed(handle: ChannelHandle<I, P>, params: P): Promise<void> | void
  unsubscribed(handle: ChannelHandle<I, P>, params: P): Promise<void> | void
}

/** An action method: `(handle, params, data)` where data is what the client performed, without `action`. */
export type ChannelAction<I extends object = Record<string, unknown>, P extends object = Record<string, any>, D = any> =
  (handle: ChannelHandle<I, P>, params: P, data: D) => Promise<void> | void

export declare class Application<I extends object = Record<string, unknown>> {
  /** Set when the application is handed to `server.handle()`. */
  server?: Server
  registerChannel(name: string, channel: (new () => Channel<I, any>) | Channel<I, any>): this
  connect(handle: ConnectionHandle<I>): Promise<void> | void
  disconnect(handle: ConnectionHandle<I>): Promise<void> | void
  encodeIdentifiers(identifiers: I): string
  decodeIdentifiers(text: string): I
  handlers(server?: Server): Required<Handlers>
}

/**
 * Signs a stream name as Rails' MessageVerifier does (`base64(JSON) + '--' + hex HMAC-SHA256`), for
 * `cable.streamFromSigned(name)` / `{ channel: '$pubsub', signed_stream_name }` and Turbo Streams sources.
 * `secret` defaults to `ANYCABLE_STREAMS_SECRET`, then `ANYCABLE_SECRET`; throws `EINVALID` without one.
 */
export declare function signStream(name: string, secret?: string | Buffer): string

export interface IssueTokenOptions {
  /** Defaults to `ANYCABLE_JWT_SECRET`, then `ANYCABLE_SECRET`. */
  secret?: string | Buffer
  /** Seconds until `exp`; default 3600; `null` for a token that never expires. */
  ttl?: number | null
  algorithm?: 'HS256' | 'HS384' | 'HS512'
}

/**
 * Issues a JWT identification token whose `ext` claim holds the identifiers (objects are JSON-encoded), for
 * clients to bring in the `jid` query parameter, the `X-JID` header or the `anycable-token.<token>` sub-protocol.
 */
export declare function issueToken(identifiers: object | string, options?: IssueTokenOptions): string
