# frozen_string_literal: true

require "openssl"
require "uri"

module Ferrocable
  module Rails
    # Ferrocable's settings in a Rails app, from (lowest to highest precedence) `config/ferrocable.yml`
    # (per environment), `config.ferrocable` in the app's configuration, and `ANYCABLE_<NAME>` environment
    # variables. Names are the core's AnyCable names (`port`, `path`, `secret`, `rpc_request_timeout`, ...)
    # plus the gem's own: `pool_size`, `autostart`, `broadcast_url`, `websocket_url`, `sse_url`.
    class Config
      GEM_DEFAULTS = {
        pool_size: ::Ferrocable::Server::DEFAULT_POOL_SIZE,
        autostart: true,
        broadcast_url: nil,
        websocket_url: nil,
        sse_url: nil
      }.freeze
      GEM_OPTIONS = GEM_DEFAULTS.keys.freeze
      CORE_OPTIONS = ::Ferrocable::Options::NAMES.map(&:to_sym).freeze
      WILDCARD_HOSTS = ["", "0.0.0.0", "::", "[::]"].freeze

      def self.load(app = ::Rails.application, env: ENV)
        values = {}
        file = app.root.join("config", "ferrocable.yml")
        values.merge!(app.config_for(file).to_h.transform_keys(&:to_sym)) if file.exist?
        if app.config.respond_to?(:ferrocable)
          values.merge!(app.config.ferrocable.to_h.transform_keys(&:to_sym))
        end
        (CORE_OPTIONS + GEM_OPTIONS).each do |name|
          variable = "ANYCABLE_#{name.to_s.upcase}"
          values[name] = env[variable] if env.key?(variable)
        end
        new(values, secret_key_base: app.secret_key_base)
      end

      attr_reader :values

      def initialize(values, secret_key_base: nil)
        unknown = values.keys - CORE_OPTIONS - GEM_OPTIONS
        unless unknown.empty?
          raise ConfigError, "unknown Ferrocable option(s) #{unknown.map { |k| "`#{k}`" }.join(", ")} " \
            "(options are the core's AnyCable names plus #{GEM_OPTIONS.join(", ")})"
        end
        @values = GEM_DEFAULTS.merge(values)
        @secret_key_base = secret_key_base
      end

      def pool_size
        integer(:pool_size)
      end

      # `true` (start in server processes), `false` (never by itself) or `"always"` (also in rake, console, tests).
      def autostart
        case @values[:autostart].to_s.downcase
        when "false", "0", "no", "off", "" then false
        when "always" then :always
        else true
        end
      end

      # Set when the app keeps an AnyCable gRPC backend: the server then calls it instead of running the app's
      # channels in-process.
      def rpc_host
        value = @values[:rpc_host]
        value.to_s.empty? ? nil : value.to_s
      end

      def grpc?
        !rpc_host.nil?
      end

      # Options for `Ferrocable::Server.new`: the core options, with a broadcast key derived from the app's
      # secret_key_base when neither `secret` nor `broadcast_key` is set (so processes of one app agree on it).
      def server_options
        options = @values.slice(*CORE_OPTIONS).reject { |_, v| v.nil? }
        options[:broadcast_key] = derived_broadcast_key if derive_broadcast_key?
        options
      end

      # The HTTP broadcast endpoint of the server, for processes that do not run it.
      def broadcast_url
        return @values[:broadcast_url].to_s unless @values[:broadcast_url].to_s.empty?

        host = option(:host)
        host = "127.0.0.1" if WILDCARD_HOSTS.include?(host)
        host = "[#{host}]" if host.include?(":") && !host.start_with?("[")
        "http://#{host}:#{option(:http_broadcast_port)}#{option(:http_broadcast_path)}"
      end

      # The bearer key HTTP broadcasts carry, or nil.
      def broadcast_key
        key = @values[:broadcast_key].to_s
        return nil if key == "none"
        return key unless key.empty?

        secret = @values[:secret].to_s
        return OpenSSL::HMAC.hexdigest("SHA256", secret, "broadcast-cable") unless secret.empty?

        derive_broadcast_key? ? derived_broadcast_key : nil
      end

      # The URL clients should use, when configured (`websocket_url`), for `action_cable_meta_tag`.
      def websocket_url
        value = @values[:websocket_url].to_s
        value.empty? ? nil : value
      end

      # Where EventSource clients connect, or nil when `sse` is off: `sse_url` when given, else `sse_path` on the
      # host of `websocket_url` (or on this server's host and port).
      def sse_url
        return nil unless truthy?(option(:sse))
        return @values[:sse_url].to_s unless @values[:sse_url].to_s.empty?

        if websocket_url
          uri = URI.parse(websocket_url)
          uri.scheme = uri.scheme == "wss" ? "https" : "http"
          uri.path = option(:sse_path)
          uri.query = nil
          return uri.to_s
        end
        host = option(:host)
        host = "127.0.0.1" if WILDCARD_HOSTS.include?(host)
        host = "[#{host}]" if host.include?(":") && !host.start_with?("[")
        "http://#{host}:#{option(:port)}#{option(:sse_path)}"
      end

      # The value of a core option in text form, or its default.
      def option(name)
        value = @values[name.to_sym]
        value.nil? ? ::Ferrocable::Options::DEFAULTS.fetch(name.to_s) : ::Ferrocable::Options.text(value)
      end

      private

      def derive_broadcast_key?
        @values[:secret].to_s.empty? && @values[:broadcast_key].to_s.empty? && !@secret_key_base.to_s.empty? &&
          !truthy?(@values[:public])
      end

      def derived_broadcast_key
        OpenSSL::HMAC.hexdigest("SHA256", @secret_key_base.to_s, "ferrocable-broadcast")
      end

      def truthy?(value)
        %w[true 1 yes on].include?(value.to_s.downcase)
      end

      def integer(name)
        Integer(@values[name])
      rescue ArgumentError, TypeError
        raise ConfigError, "#{name} must be an Integer, got #{@values[name].inspect}"
      end
    end
  end
end
