# frozen_string_literal: true

require "action_cable"
# Records travel between calls as GlobalIDs; its railtie makes Active Record models GlobalID-aware (Rails
# apps usually get it through Active Job).
require "global_id/railtie"
require "ferrocable/puma"
require "ferrocable/rails/serializer"
require "ferrocable/rails/state"
require "ferrocable/rails/socket"
require "ferrocable/rails/rack_env"
require "ferrocable/rails/stream_callbacks"
require "ferrocable/rails/action_cable_ext"
require "ferrocable/rails/handler"
require "ferrocable/rails/signed_stream_helper"
require "ferrocable/rails/sse_helper"
require "ferrocable/rails/config"

module Ferrocable
  # Ferrocable inside a Rails app: with `adapter: ferrocable` in config/cable.yml, the app's unchanged
  # Action Cable connection and channels serve WebSocket clients from the Rust server running in this
  # process. Broadcasts go straight into its hub, or over HTTP when the server runs in another process.
  module Rails
    MUTEX = Monitor.new

    class << self
      # The server this process started, if any.
      attr_reader :server

      def config
        @config || MUTEX.synchronize { @config ||= Config.load }
      end

      # Forgets the loaded configuration (it is read again on next use).
      def reload_config!
        MUTEX.synchronize do
          @config = nil
          @http_broadcaster = nil
        end
      end

      def logger
        (defined?(::ActionCable) && ::ActionCable.server.config.logger) || ::Rails.logger || ::Ferrocable.logger
      end

      # Whether config/cable.yml says `adapter: ferrocable` for this environment.
      def enabled?
        cable = ::ActionCable.server.config.cable
        !cable.nil? && cable["adapter"].to_s == "ferrocable"
      end

      # Extra Rack middleware run on the request env of connections (after the session store), e.g. Warden.
      def middleware
        @middleware ||= []
      end

      def use(*args, &block)
        middleware << [args, block]
        RackEnv.reset!
      end

      # Starts the server in this process (once), serving the app's channels, or the gRPC backend when
      # `rpc_host` is configured. `overrides` win over the configuration (e.g. `port: 0` in tests).
      def start!(**overrides)
        MUTEX.synchronize do
          return @server if local_server

          settings = config
          handler = settings.grpc? ? nil : Handler.new(::Rails.application)
          server = ::Ferrocable::Server.new(
            handler: handler,
            pool_size: settings.pool_size,
            logger: logger,
            **settings.server_options.merge(overrides)
          )
          server.start
          @server = server
          stop_at_exit
          after_start(settings, server)
          server
        end
      end

      # Gracefully stops the server this process runs; does nothing otherwise.
      def stop!
        MUTEX.synchronize do
          server = @server
          return unless server&.owned?

          server.stop
          @server = nil
        end
      end

      # Whether this process runs a server right now.
      def running?
        !local_server.nil?
      end

      # Delivers an Action Cable broadcast (payload already encoded): into this process's server when it runs
      # here, else over HTTP to the server's broadcast endpoint.
      def broadcast(stream, payload)
        server = local_server
        if server
          server.broadcast(stream, payload)
        else
          http_broadcaster.broadcast(stream, payload)
        end
      end

      # Closes every connection with exactly these identifiers (JSON as Connect returned it).
      def disconnect(identifiers, reconnect: true)
        server = local_server
        if server
          server.disconnect(identifiers, reconnect: reconnect)
        else
          http_broadcaster.disconnect(identifiers, reconnect: reconnect)
        end
        nil
      end

      # Asks every client of the server this process runs to reconnect (`server_restart` disconnect frame) and
      # keeps serving; returns how many clients that was. Processes that do not run the server have none.
      def restart_clients
        server = local_server
        server ? server.restart_clients : 0
      end

      # The presence set of `stream` (see Ferrocable::Server#presence), from the server in this process. With the
      # server in another process there is nothing to ask here: NotRunningError.
      def presence(stream, records: true)
        server = local_server or raise ::Ferrocable::NotRunningError, "no Ferrocable server runs in this process"
        server.presence(stream, records: records)
      end

      def http_broadcaster
        @http_broadcaster || MUTEX.synchronize do
          @http_broadcaster ||= ::Ferrocable::HttpBroadcaster.new(config.broadcast_url, key: config.broadcast_key)
        end
      end

      # Called when the app boots as a server (`rails server`, or a config.ru that calls
      # `Rails.application.load_server`): starts the server unless the Puma plugin decides where it runs.
      def server_booted
        return unless enabled?
        return start! if ::Ferrocable::Puma.run_here?
        return if ::Ferrocable::Puma.plugin?
        return unless config.autostart
        if puma_cluster?
          logger.warn("Ferrocable: Puma runs in cluster mode; add `plugin :ferrocable` to config/puma.rb so the " \
            "server starts in one worker. Not starting it here.")
          return
        end
        start!
      end

      # Starts the server when this process was chosen for it and the app is loaded (Puma plugin).
      def start_if_requested
        start! if enabled? && ::Ferrocable::Puma.run_here?
      end

      # Called after initialization: `autostart: always` starts in every process, rake and console included.
      def app_initialized
        start! if enabled? && config.autostart == :always
      end

      private

      def local_server
        server = @server
        server if server&.owned? && server.running?
      end

      def puma_cluster?
        defined?(::Puma) && ::Puma.respond_to?(:cli_config) && ::Puma.cli_config &&
          ::Puma.cli_config.options[:workers].to_i.positive?
      end

      def stop_at_exit
        return if @at_exit

        @at_exit = true
        at_exit do
          stop!
        rescue StandardError => e
          logger.error("Ferrocable: stopping at exit failed: #{e.class}: #{e.message}")
        end
      end

      def after_start(settings, server)
        mode = settings.grpc? ? "gRPC backend #{settings.rpc_host}" : "#{settings.pool_size} handler threads"
        logger.info("Ferrocable #{::Ferrocable::VERSION} serving ws://#{settings.option(:host)}:#{server.port}" \
          "#{settings.option(:path).split(",").first} in process #{Process.pid} (#{mode})")
        return if settings.grpc?

        check_db_pool(settings.pool_size)
      end

      def check_db_pool(threads)
        return unless defined?(::ActiveRecord::Base)

        size = ::ActiveRecord::Base.connection_pool.size
        return if size >= threads

        logger.warn("Ferrocable: #{threads} handler threads but a database pool of #{size}: calls will wait for " \
          "connections. Raise `pool` in config/database.yml or lower `pool_size`.")
      rescue StandardError
        nil
      end
    end
  end
end

# Install the Action Cable extensions as soon as Action Cable's classes load, even when a channel or connection
# class is defined before the app initializes (in an initializer, an engine, a test helper).
ActiveSupport.on_load(:action_cable_connection) { Ferrocable::Rails::ActionCableExt.install_connection(self) }
ActiveSupport.on_load(:action_cable_channel) { Ferrocable::Rails::ActionCableExt.install_channel(self) }
ActiveSupport.on_load(:action_cable) { Ferrocable::Rails::ActionCableExt.install_server }

require "ferrocable/rails/railtie" if defined?(::Rails::Railtie)
