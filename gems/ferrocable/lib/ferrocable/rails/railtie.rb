# frozen_string_literal: true

module Ferrocable
  module Rails
    # Wires Ferrocable into the app (the Action Cable extensions install from load hooks, see rails.rb):
    # `config.ferrocable`, the logger, Action Cable's own mount switched off when `adapter: ferrocable`,
    # and the start in server processes.
    class Railtie < ::Rails::Railtie
      config.ferrocable = ActiveSupport::OrderedOptions.new

      initializer "ferrocable.signed_stream_helper" do
        ActiveSupport.on_load(:action_view) { include ::Ferrocable::Rails::SignedStreamHelper }
        ActiveSupport.on_load(:action_view) { include ::Ferrocable::Rails::SseHelper }
      end

      initializer "ferrocable.logger", after: :initialize_logger do
        ::Ferrocable.logger = ::Rails.logger if ::Rails.logger
      end

      # With `adapter: ferrocable` clients talk to Ferrocable, so Action Cable's own endpoint is not mounted.
      initializer "ferrocable.action_cable_mount", after: "action_cable.set_configs" do |app|
        next unless Railtie.adapter(app) == "ferrocable"

        app.config.action_cable.mount_path = nil
        url = ::Ferrocable::Rails.config.websocket_url
        app.config.action_cable.url ||= url if url
      end

      config.after_initialize { ::Ferrocable::Rails.app_initialized }

      server { ::Ferrocable::Rails.server_booted }

      # The adapter named in config/cable.yml for this environment (Action Cable reads it only later).
      def self.adapter(app)
        path = app.paths["config/cable"]&.first
        return nil unless path && File.exist?(path)

        app.config_for(Pathname.new(path)).to_h.transform_keys(&:to_s)["adapter"].to_s
      rescue StandardError
        nil
      end
    end
  end
end
