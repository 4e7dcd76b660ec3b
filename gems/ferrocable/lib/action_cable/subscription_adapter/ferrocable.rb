# frozen_string_literal: true

require "ferrocable"
# Action Cable loads this adapter by name, whatever order the app required its gems in.
require "ferrocable/rails"

module ActionCable
  module SubscriptionAdapter
    # `adapter: ferrocable` in config/cable.yml. Broadcasts (`ActionCable.server.broadcast`, `broadcast_to`)
    # go into the Ferrocable server of this process, or over HTTP to the one running elsewhere. Clients
    # connect to Ferrocable, never to Action Cable's own server, so subscribing here is a configuration error.
    class Ferrocable < Base
      NOT_ACTION_CABLE = "With `adapter: ferrocable` clients connect to the Ferrocable server, not to Action " \
        "Cable's endpoint: point the client (or config.action_cable.url / websocket_url) at Ferrocable's URL."

      def broadcast(channel, payload)
        ::Ferrocable::Rails.broadcast(channel, payload)
      end

      def subscribe(*)
        raise NotImplementedError, NOT_ACTION_CABLE
      end

      def unsubscribe(*)
        raise NotImplementedError, NOT_ACTION_CABLE
      end

      # Action Cable calls this on code reload; there is nothing to release.
      def shutdown; end
    end
  end
end
