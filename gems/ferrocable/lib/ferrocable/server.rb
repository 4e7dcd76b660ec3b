# frozen_string_literal: true

require "json"
require "logger"

module Ferrocable
  # A Ferrocable server inside this Ruby process: Rust holds every socket and all client state; the Ruby
  # `handler` answers Connect, Command and Disconnect on a pool of Ruby threads. Without a handler, calls
  # go to the AnyCable gRPC backend at `rpc_host` (unless `norpc`).
  #
  #   server = Ferrocable::Server.new(port: 8080, handler: MyHandler.new).start
  #   server.broadcast("chat_1", {text: "hi"})
  #   server.stop
  #
  # A handler is any object with `connect(request)`, `command(request)` and `disconnect(request)`, each
  # taking a Hash that mirrors the rpc.proto request and returning a Hash that mirrors the response, e.g.
  # `{status: :success, identifiers: "...", transmissions: ['{"type":"welcome"}']}`.
  class Server
    DEFAULT_POOL_SIZE = 30

    # Every core option name (`port`, `path`, `rpc_host`, `broadcast_key`, ...), accepted as keywords.
    OPTIONS = Options::NAMES

    attr_reader :handler, :pool_size, :logger

    # `handler`: the application (nil = gRPC backend); `pool_size`: Ruby threads running handler calls;
    # `logger`: where handler failures are logged; every other keyword is a core option by its AnyCable name.
    # A handler call that does not answer within `rpc_request_timeout` ms (5 s when unset) becomes an ERROR
    # result for that call.
    def initialize(handler: nil, pool_size: DEFAULT_POOL_SIZE, logger: Ferrocable.logger, **options)
      unless pool_size.is_a?(Integer) && pool_size >= 1
        raise ConfigError, "pool_size must be an Integer of at least 1, got #{pool_size.inspect}"
      end
      if handler && !options[:rpc_host].nil?
        raise ConfigError, "pass either handler: (in-process) or rpc_host: (gRPC backend), not both"
      end
      missing = %i[connect command disconnect].reject { |name| handler.nil? || handler.respond_to?(name) }
      raise ArgumentError, "handler must respond to #{missing.join(", ")}" unless missing.empty?

      @handler = handler
      @pool_size = pool_size
      @logger = logger
      @option_pairs = Options.to_pairs(options)
      @lock = Mutex.new
      @native = nil
      @pool = nil
    end

    # The options given, as the core reads them: `{"port" => "8080", ...}`.
    def options
      @option_pairs.to_h
    end

    # Binds the listeners and starts serving; raises a StartError subclass (with `code`) on failure.
    def start
      @lock.synchronize do
        raise Error, "the server is already started" if @native

        dispatcher = @handler && Native::Dispatcher.new
        @native = Native::Server.start(@option_pairs, dispatcher)
        if dispatcher
          @pool = HandlerPool.new(dispatcher, @handler, size: @pool_size, logger: @logger).start
        end
      end
      self
    end

    # Graceful stop: stop accepting, send `server_restart` to every client, run the pending Disconnect calls
    # (bounded by `shutdown_timeout`), then release the threads. Does nothing when not running.
    def stop
      @lock.synchronize do
        native = @native
        return self unless native

        native.begin_stop
        # Waits in short slices without the GVL, so the pool can run Disconnect calls meanwhile and this
        # thread can still be interrupted.
        nil until native.wait_stopped(100)
        native.close
        @pool&.stop
        @pool = nil
        @native = nil
      end
      self
    end

    # Whether the server runs, in this process.
    def running?
      !@native.nil? && @native.running?
    end

    # Whether this process started the server (false in a process forked after `start`).
    def owned?
      !@native.nil? && @native.owner_pid == Process.pid
    end

    # Port of the WebSocket listener (useful with `port: 0`).
    def port
      native.port
    end

    # Port of the HTTP broadcast endpoint, or nil when disabled.
    def broadcast_port
      native.broadcast_port
    end

    # Delivers `data` (a String as is, anything else as JSON) to every subscriber of `stream`, after every
    # earlier broadcast to that stream. `exclude_socket`: a session id that must not receive it.
    def broadcast(stream, data, exclude_socket: nil)
      native.broadcast_many([[stream.to_s, encode(data), exclude_socket&.to_s]])
      nil
    end

    # Several broadcasts in order: `[[stream, data], [stream, data, exclude_socket], ...]`.
    def broadcast_many(publications)
      native.broadcast_many(publications.map { |stream, data, exclude| [stream.to_s, encode(data), exclude&.to_s] })
      nil
    end

    # Closes every connection whose identifiers equal `identifiers` (the String Connect returned, or a Hash
    # that encodes to it) with a `remote` disconnect frame. Returns how many connections that was.
    def disconnect(identifiers, reconnect: true)
      identifiers = JSON.generate(identifiers) unless identifiers.is_a?(String)
      native.disconnect(identifiers, reconnect ? true : false)
    end

    # Closes every connection with a `server_restart` disconnect frame (`reconnect: true`) and keeps serving,
    # as `ActionCable.server.restart` does. Returns how many connections that was.
    def restart_clients
      native.restart_clients
    end

    # The presence set of `stream`: `{total: 2, records: [{id: "1", info: {"name" => "Ann"}}, ...]}` (no
    # `records` with `records: false`). Needs a broker (`broker: memory` or `redis`); raises PresenceError
    # without one.
    def presence(stream, records: true)
      total, members = native.presence(stream.to_s, records ? true : false)
      result = {total: total}
      result[:records] = members.map { |id, info| {id: id, info: info && JSON.parse(info)} } if members
      result
    end

    # Live counters and gauges by AnyCable's metric names: `{clients_num: 3, broadcast_msg_total: 10, ...}`.
    def stats
      native.stats
    end

    # Handler threads alive (0 without a handler).
    def pool_alive
      @pool ? @pool.alive : 0
    end

    private

    def native
      @native or raise NotRunningError, "the server is not started"
    end

    def encode(data)
      data.is_a?(String) ? data : JSON.generate(data)
    end
  end
end
