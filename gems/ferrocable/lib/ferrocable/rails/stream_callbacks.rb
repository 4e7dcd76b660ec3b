# frozen_string_literal: true

module Ferrocable
  module Rails
    # The stream callbacks of this process's subscriptions: `stream_from` / `stream_for` given a block, a
    # callback or a `coder:`. Action Cable runs such a callback for every broadcast on the channel object that
    # called `stream_from`; here that object is kept from the call that subscribed (by session id, channel
    # identifier and stream) and each broadcast to the stream comes back as a `stream` call, which lends it that
    # call's connection and state. Broadcasts to every other subscription never leave the server. Entries go
    # with `stop_stream_from`, `stop_all_streams`, unsubscribe (Action Cable stops every stream then) and
    # disconnect.
    module StreamCallbacks
      MUTEX = Mutex.new
      # sid => {identifier => {stream => [channel, handler]}}
      @entries = {}

      module_function

      def register(sid, identifier, stream, channel, handler)
        MUTEX.synchronize { ((@entries[sid] ||= {})[identifier] ||= {})[stream] = [channel, handler] }
      end

      # [channel, handler] of a stream of a subscription, or nil.
      def fetch(sid, identifier, stream)
        MUTEX.synchronize { @entries.dig(sid, identifier, stream) }
      end

      # Forgets one stream of a subscription, every stream of a subscription (no `stream`), or every
      # subscription of a session (no `identifier`).
      def remove(sid, identifier = nil, stream = nil)
        MUTEX.synchronize do
          subscriptions = @entries[sid]
          next unless subscriptions

          if identifier.nil?
            @entries.delete(sid)
          else
            streams = subscriptions[identifier]
            stream.nil? || streams.nil? ? subscriptions.delete(identifier) : streams.delete(stream)
            subscriptions.delete(identifier) if streams&.empty?
            @entries.delete(sid) if subscriptions.empty?
          end
        end
        nil
      end

      # Subscriptions with at least one stream callback, in this process.
      def size
        MUTEX.synchronize { @entries.each_value.sum(&:size) }
      end
    end
  end
end
