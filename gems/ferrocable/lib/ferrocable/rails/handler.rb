# frozen_string_literal: true

module Ferrocable
  module Rails
    # The Rails application as a Ferrocable handler: each call runs the app's unchanged Action Cable
    # connection and channels for that one call, inside `Rails.application.reloader` (the executor: database
    # connections go back to the pool; plus code reloading in development), and answers with what they did
    # (transmissions, streams, state changes, close). Action Cable's own code produces every frame,
    # so welcome, confirm, reject and disconnect frames are exactly Action Cable's.
    #
    # Connect   allocate the connection, run `connect`, then Action Cable's welcome (or its `unauthorized`
    #           disconnect frame on `reject_unauthorized_connection`); answer the identifiers and cstate.
    # Command   `subscribe` goes through Action Cable's own add/confirm/reject path; `unsubscribe` and
    #           `message` re-create the channel from its identifier, with state from istate. A confirmed
    #           subscribe answers the channel's `periodically` intervals; the server then sends `periodic`
    #           with the timer's index each time one is due, and its callback runs on the re-created channel.
    # Disconnect re-create every subscribed channel with its istate, run each `unsubscribed`, then the
    #           connection's `disconnect`.
    #
    # A failure (an exception in app code) is an ERROR answer for that call only, logged once with the
    # channel and action.
    class Handler
      # Connect has no subscription, so no istate.
      NO_ISTATES = ->(_identifier) { {} }

      def initialize(app = ::Rails.application)
        @app = app
      end

      def connect(request)
        socket = Socket.new(request[:env] || {}, NO_ISTATES)
        connection = nil
        run do
          connection = new_connection(socket, nil)
          begin
            connection.connect if connection.respond_to?(:connect)
          rescue ::ActionCable::Connection::Authorization::UnauthorizedError
            connection.close(reason: ::ActionCable::INTERNAL[:disconnect_reasons][:unauthorized], reconnect: false)
            return {status: :failure, transmissions: socket.transmissions, error_msg: "unauthorized",
                    env: {cstate: socket.cstate.changes}}
          end
          connection.send(:send_welcome_message)
          {status: :success, identifiers: Identifiers.dump(connection), transmissions: socket.transmissions,
           env: {cstate: socket.cstate.changes}}
        end
      rescue *HandlerPool::HANDLER_FAILURES => e
        failed(e, "#{connection_class_name}#connect", connection, socket: socket)
      end

      def command(request)
        identifier = request[:identifier].to_s
        env = request[:env] || {}
        socket = Socket.new(env, ->(id) { id == identifier ? env[:istate] : {} })
        connection = nil
        run do
          connection = new_connection(socket, request[:connection_identifiers])
          status =
            case request[:command]
            when "subscribe" then subscribe(connection, identifier)
            when "unsubscribe" then unsubscribe(connection, identifier)
            when "message" then perform(connection, identifier, request[:data])
            when "periodic" then periodic(connection, identifier, request[:data])
            when "stream" then stream_message(connection, identifier, request[:data])
            else
              logger.error("Ferrocable: unknown command #{request[:command].inspect} for #{identifier}")
              :error
            end
          response = command_response(status, socket, identifier)
          response[:callback_streams] = socket.callback_streams unless socket.callback_streams.empty?
          response[:periodic_timers] = periodic_intervals(identifier) if request[:command] == "subscribe" && status == :success
          response
        end
      rescue *HandlerPool::HANDLER_FAILURES => e
        failed(e, signature(identifier, request), connection, socket: socket, command: true)
      end

      def disconnect(request)
        env = request[:env] || {}
        states = env[:istate] || {}
        socket = Socket.new(env, ->(id) { (raw = states[id]) && !raw.empty? ? ActiveSupport::JSON.decode(raw) : {} })
        connection = nil
        failures = []
        run do
          connection = new_connection(socket, request[:identifiers])
          Array(request[:subscriptions]).each do |identifier|
            channel = restore_channel(connection, identifier)
            connection.subscriptions.remove_subscription(channel)
          rescue *HandlerPool::HANDLER_FAILURES => e
            failures << e
            log_failure(e, "#{channel_name(identifier)}#unsubscribed", connection)
          end
          connection.disconnect if connection.respond_to?(:disconnect)
        ensure
          StreamCallbacks.remove(::Ferrocable.current_sid)
        end
        return {status: :success} if failures.empty?

        {status: :error, error_msg: failures.map { |e| "#{e.class}: #{e.message}" }.join("; ")}
      rescue *HandlerPool::HANDLER_FAILURES => e
        failed(e, "#{connection_class_name}#disconnect", connection)
      end

      private

      def run(&block)
        @app.reloader.wrap(&block)
      end

      def connection_class
        ::ActionCable.server.config.connection_class.call
      end

      def connection_class_name
        connection_class.name
      rescue StandardError
        "Connection"
      end

      def new_connection(socket, identifiers)
        connection_class.allocate.ferrocable_setup(socket, identifiers)
      end

      # Action Cable's own subscribe path: `subscribed`, then confirm, or reject (which runs `unsubscribed`).
      def subscribe(connection, identifier)
        klass = channel_class(identifier)
        unless klass
          logger.error("Subscription class not found: #{channel_name(identifier).inspect}")
          return :error
        end
        connection.subscriptions.add("identifier" => identifier)
        connection.subscriptions.identifiers.include?(identifier) ? :success : :failure
      end

      def unsubscribe(connection, identifier)
        restore_channel(connection, identifier)
        connection.subscriptions.remove("identifier" => identifier)
        :success
      ensure
        StreamCallbacks.remove(::Ferrocable.current_sid, identifier)
      end

      def perform(connection, identifier, data)
        restore_channel(connection, identifier)
        connection.subscriptions.perform_action("identifier" => identifier, "data" => data)
        :success
      end

      # One tick of the subscription's `periodically` timer number `index`, as Action Cable's worker runs it.
      def periodic(connection, identifier, index)
        channel = restore_channel(connection, identifier)
        callback, = channel.class.periodic_timers[Integer(index, 10)]
        raise ArgumentError, "#{channel.class.name} has no periodic timer #{index.inspect}" unless callback

        channel.instance_exec(&callback)
        :success
      end

      # A broadcast to a stream whose `stream_from` was given a block, a callback or a coder: its callback runs on
      # the channel object that registered it. Without one (the process restarted since), the broadcast is
      # transmitted as Action Cable transmits a stream without a callback.
      def stream_message(connection, identifier, data)
        message = ActiveSupport::JSON.decode(data.to_s)
        channel, handler = StreamCallbacks.fetch(::Ferrocable.current_sid, identifier, message["stream"])
        if channel
          channel.ferrocable_run_stream_callback(connection, handler, message["data"])
        else
          restore_channel(connection, identifier).send(:transmit, ActiveSupport::JSON.decode(message["data"]),
            via: "streamed from #{message["stream"]}")
        end
        :success
      end

      # The intervals (milliseconds) of a channel's `periodically` timers, in declaration order.
      def periodic_intervals(identifier)
        klass = channel_class(identifier)
        return [] unless klass

        klass.periodic_timers.map { |_, options| [(options.fetch(:every).to_f * 1000).round, 1].max }
      end

      # The channel object of an existing subscription, as Action Cable would hold it (without running
      # `subscribed` again); its state comes from istate.
      def restore_channel(connection, identifier)
        klass = channel_class(identifier) or raise ArgumentError, "Subscription class not found: #{channel_name(identifier).inspect}"
        params = ActiveSupport::JSON.decode(identifier).with_indifferent_access
        channel = klass.new(connection, identifier, params)
        connection.subscriptions.send(:subscriptions)[identifier] = channel
      end

      def channel_class(identifier)
        klass = channel_name(identifier).to_s.safe_constantize
        klass if klass.is_a?(Class) && klass <= ::ActionCable::Channel::Base
      end

      def channel_name(identifier)
        ActiveSupport::JSON.decode(identifier)["channel"]
      rescue StandardError
        identifier
      end

      def command_response(status, socket, identifier)
        {
          status: status,
          transmissions: socket.transmissions,
          stop_streams: socket.stop_all?,
          streams: socket.streams,
          stopped_streams: socket.stopped_streams,
          disconnect: socket.closed?,
          env: {cstate: socket.cstate.changes, istate: socket.istate_for(identifier).changes},
          presence: socket.presence
        }
      end

      def signature(identifier, request)
        action =
          case request[:command]
          when "message"
            (ActiveSupport::JSON.decode(request[:data].to_s)["action"] rescue nil) || "receive"
          when "periodic"
            "periodically[#{request[:data]}]"
          when "stream"
            "stream_from(#{(ActiveSupport::JSON.decode(request[:data].to_s)["stream"] rescue nil).inspect})"
          else
            request[:command] == "subscribe" ? "subscribed" : "unsubscribed"
          end
        "#{channel_name(identifier)}##{action}"
      end

      # An ERROR answer carrying what was transmitted before the failure (Action Cable would have sent it).
      def failed(error, where, connection, socket: nil, command: false)
        begin
          connection&.rescue_with_handler(error)
        rescue *HandlerPool::HANDLER_FAILURES
          nil
        end
        log_failure(error, where, connection)
        response = {status: :error, error_msg: "#{where}: #{error.class}: #{error.message}"}
        if socket
          response[:transmissions] = socket.transmissions
          response[:disconnect] = socket.closed? if command
        end
        response
      end

      def log_failure(error, where, connection)
        trace = Array(error.backtrace).first(10).map { |line| "  #{line}" }.join("\n")
        message = "Ferrocable: #{where} raised #{error.class}: #{error.message} (sid #{::Ferrocable.current_sid})\n#{trace}"
        (connection&.logger || logger).error(message)
      end

      def logger
        ::Ferrocable::Rails.logger
      end
    end
  end
end
