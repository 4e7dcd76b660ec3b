# frozen_string_literal: true

module Ferrocable
  module Rails
    # Small additions to Action Cable that let an unchanged connection or channel run for one call with a
    # `Socket` instead of a WebSocket. Every method falls back to Action Cable's own behaviour when the object
    # was not set up by Ferrocable, so the same app also runs on Action Cable's server (and in its test cases).
    module ActionCableExt
      # Prepended to ActionCable::Connection::Base.
      module Connection
        attr_reader :ferrocable_socket

        # Prepares an allocated connection (its initializer is skipped: no WebSocket, no event loop) for one
        # call. `identifiers` is the JSON the server keeps for this connection, read lazily.
        def ferrocable_setup(socket, identifiers)
          @ferrocable_socket = socket
          @ferrocable_identifiers = identifiers
          @server = ::ActionCable.server
          @coder = ActiveSupport::JSON
          @websocket = socket
          @subscriptions = ::ActionCable::Connection::Subscriptions.new(self)
          @worker_pool = nil
          @message_buffer = nil
          @_internal_subscriptions = nil
          @started_at = Time.now
          @protocol = socket.protocol
          @logger = new_tagged_logger
          self
        end

        def env
          return super unless @ferrocable_socket

          @env ||= @ferrocable_socket.rack_env
        end

        # The stored value of identifier `name` (still serialized), if any.
        def ferrocable_identifier(name)
          raw = @ferrocable_identifiers
          return nil if raw.nil? || raw.empty?

          @ferrocable_identifiers = raw = ActiveSupport::JSON.decode(raw) if raw.is_a?(String)
          raw[name]
        end

        private

        def ferrocable_state
          @ferrocable_socket&.cstate
        end

        def request
          return super unless @ferrocable_socket

          @request ||= ActionDispatch::Request.new(env)
        end
      end

      # Extended into ActionCable::Connection::Base: `identified_by` readers load their value on first read,
      # from the identifiers the server sent (records via GlobalID), so a call that does not use
      # `current_user` never queries it.
      module LazyIdentification
        def identified_by(*names)
          super
          readers = ferrocable_identifier_readers
          names.each do |name|
            ivar = :"@#{name}"
            key = name.to_s
            readers.define_method(name) do
              if !instance_variable_defined?(ivar) && (stored = ferrocable_identifier(key))
                instance_variable_set(ivar, Serializer.load(stored))
              end
              super()
            end
          end
        end

        private

        def ferrocable_identifier_readers
          @ferrocable_identifier_readers ||= Module.new.tap { |mod| prepend(mod) }
        end
      end

      # Prepended to ActionCable::Channel::Base.
      module Channel
        # With a block, a callback or a coder, broadcasts to this stream come back to this object as `stream`
        # calls (StreamCallbacks); without, they go from the server straight to the client.
        def stream_from(broadcasting, callback = nil, coder: nil, &block)
          socket = ferrocable_socket
          return super unless socket

          broadcasting = String(broadcasting)
          user_handler = callback || block
          if user_handler || coder
            handler = stream_handler(broadcasting, user_handler, coder: coder)
            StreamCallbacks.register(::Ferrocable.current_sid, identifier, broadcasting, self, handler)
            socket.stream_from(broadcasting, callback: true)
          else
            socket.stream_from(broadcasting)
          end
        end

        def stop_stream_from(broadcasting)
          socket = ferrocable_socket
          return super unless socket

          StreamCallbacks.remove(::Ferrocable.current_sid, identifier, String(broadcasting))
          socket.stop_stream(String(broadcasting))
        end

        def stop_all_streams
          socket = ferrocable_socket
          return super unless socket

          StreamCallbacks.remove(::Ferrocable.current_sid, identifier)
          socket.stop_all_streams
        end

        # Runs a stream callback kept from an earlier call with this call's connection: `transmit` reaches the
        # socket of this call, and `state_attr_accessor` attributes are read again from this call's state.
        def ferrocable_run_stream_callback(connection, handler, message)
          @connection = connection
          self.class.ferrocable_state_names.each do |name|
            ivar = :"@#{name}"
            remove_instance_variable(ivar) if instance_variable_defined?(ivar)
          end
          handler.call(message)
        end

        # Joins the presence set of `stream` (default: the subscription's presence stream, else the first stream
        # this call started) as `id` with `info`, on behalf of this connection; AnyCable's channel API. Needs a
        # broker on the server; on Action Cable's own server it does nothing.
        def join_presence(stream = nil, id:, info: nil)
          socket = ferrocable_socket
          return unless socket

          istate = socket.istate_for(identifier)
          stream ||= istate.raw("$p") || socket.streams.first
          raise ArgumentError, "join_presence needs a stream: stream_from one first or pass it" if stream.nil?

          istate.write_raw("$p", stream.to_s)
          socket.presence_join(id, info)
        end

        # Leaves the subscription's presence set.
        def leave_presence(_id = nil)
          ferrocable_socket&.presence_leave
        end

        private

        def ferrocable_socket
          connection.ferrocable_socket if connection.respond_to?(:ferrocable_socket)
        end

        def ferrocable_state
          ferrocable_socket&.istate_for(identifier)
        end

        # The server runs the timers (one per subscription; see Handler#periodic), not Action Cable's event loop.
        def start_periodic_timers
          super unless ferrocable_socket
        end

        def stop_periodic_timers
          super unless ferrocable_socket
        end
      end

      # Prepended to ActionCable::Server::Base: `ActionCable.server.restart` (apps and deploy scripts call it,
      # and Rails does before unloading code in development) closes every client of the server this process
      # runs with `server_restart`, so they reconnect, as Action Cable closes its own connections.
      module Server
        def restart
          ::Ferrocable::Rails.restart_clients if ::Ferrocable::Rails.enabled?
          super
        end
      end

      # Prepended to ActionCable::RemoteConnections::RemoteConnection: with `adapter: ferrocable`,
      # `remote_connections.where(current_user: user).disconnect` closes those connections on the server.
      module RemoteConnection
        def disconnect(reconnect: true)
          return super() unless ::Ferrocable::Rails.enabled?

          ::Ferrocable::Rails.disconnect(Identifiers.dump(self), reconnect: reconnect)
        end
      end

      module_function

      # `state_attr_accessor` is prepended to the class's singleton class, so it wins over one that another gem
      # (anycable-rails) extends into the same class, whichever loaded first.
      def install_connection(base)
        base.prepend(Connection)
        base.singleton_class.prepend(LazyIdentification)
        base.singleton_class.prepend(StateAttributes)
      end

      def install_channel(base)
        base.prepend(Channel)
        base.singleton_class.prepend(StateAttributes)
      end

      def install_server
        ::ActionCable::Server::Base.prepend(Server)
        require "action_cable/remote_connections"
        ::ActionCable::RemoteConnections::RemoteConnection.prepend(RemoteConnection)
      end
    end

    # The identifiers JSON of a connection: each `identified_by` value that is set, in declaration order,
    # serialized. Connect returns it; a remote disconnect rebuilds the same text from the same values.
    module Identifiers
      module_function

      def dump(connection)
        ids = {}
        connection.identifiers.each do |name|
          value = connection.instance_variable_get(:"@#{name}")
          ids[name.to_s] = Serializer.dump(value) unless value.nil?
        end
        ActiveSupport::JSON.encode(ids)
      end
    end
  end
end
