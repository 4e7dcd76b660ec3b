// A typed use of the package, checked with `tsc --noEmit` by inprocess-modules.test.js. It is never run.
import {
  Application,
  Channel,
  ChannelHandle,
  ConnectionHandle,
  FerrocableError,
  HandlerError,
  Server,
  STATUS,
  issueToken,
  signStream,
  type CommandMessage,
  type CommandResponse,
  type PresenceInfo,
  type Stats
} from 'ferrocable'

type Identifiers = { user: string }
type RoomParams = { room: string }

class ChatChannel extends Channel<Identifiers, RoomParams> {
  async subscribed (handle: ChannelHandle<Identifiers, RoomParams>, params: RoomParams): Promise<void> {
    if (params.room === 'secret') {
      handle.reject()
      return
    }
    handle.streamFrom(`room:${params.room}`).istate.set('room', params.room)
    handle.joinPresence(handle.identifiers?.user ?? 'anonymous', { name: handle.identifiers?.user })
  }

  async online (handle: ChannelHandle<Identifiers, RoomParams>): Promise<void> {
    const set: PresenceInfo<{ name: string }> = await handle.presence()
    handle.transmit({ online: set.total, names: set.records?.map((r) => r.info?.name) })
    handle.leavePresence()
  }

  async speak (handle: ChannelHandle<Identifiers, RoomParams>, params: RoomParams, data: { text: string }): Promise<void> {
    const user: string | undefined = handle.identifiers?.user
    handle.transmit({ user, text: data.text, room: params.room, who: handle.cstate.get('name') })
  }
}

class ChatApp extends Application<Identifiers> {
  async connect (handle: ConnectionHandle<Identifiers>): Promise<void> {
    const user = handle.env.params.user
    if (!user) {
      handle.reject()
      return
    }
    handle.identifiedBy({ user })
    handle.cstate.set('name', user).set('visits', 1)
  }

  async disconnect (handle: ConnectionHandle<Identifiers>): Promise<void> {
    console.log(handle.identifiers?.user, handle.cstate.toJSON())
  }
}

async function main (): Promise<void> {
  const app = new ChatApp()
  app.registerChannel('ChatChannel', ChatChannel)

  const server = new Server({ port: 8080, path: ['/cable'], rpcRequestTimeout: 2000, pingTimestampPrecision: 'ms', public: false })
  server.handle(app)
  server.on('error', (error: HandlerError) => {
    const where: string | undefined = error.channel
    console.error(error.code, where, error.action, error.call)
  })
  await server.start()
  const url: string | undefined = server.address?.url
  await server.broadcast('room:lobby', { text: 'hi' }, { excludeSocket: 'sid' })
  await server.broadcastMany([{ stream: 'a', data: 'x' }, { stream: 'b', data: { y: 1 } }])
  const closed: number = server.disconnect({ user: 'alice' }, { reconnect: false })
  const online: number = (await server.presence('room:lobby', { records: false })).total
  const stats: Stats = server.stats()
  const clients: number = stats.clientsNum
  console.log(url, closed, clients, online)
  await server.stop()

  const lowLevel = new Server({ port: 0 })
  lowLevel.handle({
    connect: ({ sid }) => ({ status: 'SUCCESS', identifiers: '{}', transmissions: [JSON.stringify({ type: 'welcome', sid })] }),
    command: async (request: CommandMessage): Promise<CommandResponse> => ({
      status: STATUS.SUCCESS,
      streams: [request.identifier],
      env: { istate: { seen: 'yes', gone: null } },
      presence: { type: 'join', id: 7, info: { name: 'Ann' } }
    })
  })

  const standalone = new Server({ port: 0, jwtSecret: 'k', enforceJwt: true, streamsSecret: 's', turboStreams: true, whisperRate: 10 })
  const signed: string = signStream('chat/1', 's')
  const token: string = issueToken({ user: 'alice' }, { secret: 'k', ttl: 60, algorithm: 'HS384' })
  const forever: string = issueToken('{"user":"bob"}', { secret: Buffer.from('k'), ttl: null })
  console.log(standalone.listening, signed, token, forever)

  try {
    await new Server({ rpcHost: 'localhost:50051' }).start()
  } catch (err) {
    if (err instanceof FerrocableError && err.code === 'EADDRINUSE') console.error(err.message)
  }
}

void main()
