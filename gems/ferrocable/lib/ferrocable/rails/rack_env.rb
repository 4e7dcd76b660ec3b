# frozen_string_literal: true

require "stringio"
require "uri"

module Ferrocable
  module Rails
    # Builds the Rack env of a WebSocket request from what the server forwards (the URL and the configured
    # headers), merged with the app's env config and passed through its session middleware, so `request`,
    # `cookies` (signed and encrypted) and `session` work in connections as they do under Action Cable.
    module RackEnv
      module_function

      def build(url, headers)
        env = ::Rails.application.env_config.merge(base_env(url, headers))
        middleware.call(env)
        env
      end

      def base_env(url, headers)
        uri = parse(url)
        scheme = %w[https wss].include?(uri.scheme) ? "https" : "http"
        host = uri.host || "localhost"
        port = uri.port || (scheme == "https" ? 443 : 80)
        env = {
          "REQUEST_METHOD" => "GET",
          "SCRIPT_NAME" => "",
          "PATH_INFO" => uri.path.to_s.empty? ? "/" : uri.path,
          "QUERY_STRING" => uri.query.to_s,
          "SERVER_NAME" => host,
          "SERVER_PORT" => port.to_s,
          "SERVER_PROTOCOL" => "HTTP/1.1",
          "HTTP_HOST" => uri.port && uri.port != uri.default_port ? "#{host}:#{uri.port}" : host,
          "HTTP_UPGRADE" => "websocket",
          "HTTP_CONNECTION" => "Upgrade",
          "rack.url_scheme" => scheme,
          "rack.input" => StringIO.new(+""),
          "rack.errors" => $stderr,
          "rack.version" => ::Rack::VERSION,
          "rack.multithread" => true,
          "rack.multiprocess" => false,
          "rack.run_once" => false,
          "rack.hijack?" => false
        }
        headers.each do |name, value|
          if name == "REMOTE_ADDR"
            env["REMOTE_ADDR"] = value
          else
            env["HTTP_#{name.upcase.tr("-", "_")}"] = value
          end
        end
        env
      end

      def parse(url)
        URI.parse(url)
      rescue URI::InvalidURIError
        URI.parse("http://localhost/")
      end

      # The session store of the app (plus `Ferrocable::Rails.middleware`), built once.
      def middleware
        @middleware || MUTEX.synchronize do
          @middleware ||= begin
            config = ::Rails.application.config
            stack = ActionDispatch::MiddlewareStack.new
            stack.use(config.session_store, config.session_options) if config.session_store
            ::Ferrocable::Rails.middleware.each { |args, block| stack.use(*args, &block) }
            stack.build(->(_env) { [200, {}, []] })
          end
        end
      end

      def reset!
        @middleware = nil
      end

      MUTEX = Mutex.new
    end
  end
end
