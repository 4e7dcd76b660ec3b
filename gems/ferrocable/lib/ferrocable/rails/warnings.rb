# frozen_string_literal: true

module Ferrocable
  module Rails
    # Action Cable features that cannot work when each call runs on a fresh channel object, reported once
    # each through the app's logger.
    module Warnings
      MUTEX = Mutex.new
      @seen = {}

      module_function

      # `periodically` needs a channel object that lives between calls; its timers never run.
      def periodically(channel_class)
        once([:periodically, channel_class.name]) do
          "#{channel_class.name} uses `periodically`: timers cannot run under Ferrocable (channels live for one " \
            "call) and are skipped. Broadcast from a job or a scheduler instead."
        end
      end

      # A block, callback or coder given to `stream_from` would run per message inside this process; under
      # Ferrocable messages go straight from the server to clients, unchanged.
      def stream_callback(channel_class, broadcasting)
        once([:stream_callback, channel_class.name]) do
          "#{channel_class.name} passes a block, callback or coder to `stream_from`/`stream_for` " \
            "(#{broadcasting}): under Ferrocable it is not run, and broadcasts reach clients as they were sent."
        end
      end

      # Reports channel classes already loaded that use `periodically` (called when the server starts).
      def check_loaded_channels
        ::ActionCable::Channel::Base.descendants.each do |klass|
          periodically(klass) if klass.name && klass.periodic_timers.any?
        end
      end

      def once(key)
        return unless ::Ferrocable::Rails.enabled?

        first = MUTEX.synchronize { @seen[key] ? false : (@seen[key] = true) }
        ::Ferrocable::Rails.logger.warn("Ferrocable: #{yield}") if first
      end
    end
  end
end
