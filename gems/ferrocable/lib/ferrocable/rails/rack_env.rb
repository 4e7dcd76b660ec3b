# frozen_string_literal: true

require "stringio"
require "uri"

module Ferrocable
  module Rails
    # Builds the Rack env of a WebSocket request from what the server forwards (the URL and the configured
    # headers), merged with the app's env config and passed through its session middleware, so `request`,
    # `cookies` (signed and encrypted) and `session` work in connections as they do under Action Cable.
    #
    # Every Connect builds one, so it is built with little garbage: the part that never changes (the app's
    # env config and the constant Rack keys) is merged once into a template that each call copies, and URLs
    # of the usual shape are split without `URI.parse`.
    module RackEnv
      module_function

      # Keys every env has, whatever the request.
      CONSTANT = {
        "REQUEST_METHOD" => "GET",
        "SCRIPT_NAME" => "",
        "SERVER_PROTOCOL" => "HTTP/1.1",
        "HTTP_UPGRADE" => "websocket",
        "HTTP_CONNECTION" => "Upgrade",
        "rack.version" => ::Rack::VERSION,
        "rack.multithread" => true,
        "rack.multiprocess" => false,
        "rack.run_once" => false,
        "rack.hijack?" => false
      }.freeze

      # `http(s)://host[:port][/path][?query]` (what the server sends) with a host name or IPv4 address and
      # only characters RFC 3986 allows unescaped in a path or query: such a URL splits into exactly what
      # `URI.parse` gives. Anything else (other schemes, IPv6 literals, user info, odd characters) goes through
      # `URI.parse`.
      PLAIN_URL = %r{\A(https?)://([A-Za-z0-9.\-]+)(?::(\d+))?
        ((?:/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%\h\h)*)*)
        (?:\?((?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%\h\h)*))?\z}x
      SECURE_SCHEMES = %w[https wss].freeze

      def build(url, headers)
        env = template.dup
        add_url(env, url)
        env["rack.input"] = StringIO.new(+"")
        env["rack.errors"] = $stderr
        headers.each do |name, value|
          if name == "REMOTE_ADDR"
            env["REMOTE_ADDR"] = value
          else
            env["HTTP_#{name.upcase.tr("-", "_")}"] = value
          end
        end
        middleware.call(env)
        env
      end

      # The URL's part of the env: scheme, server name and port, Host, path and query.
      def add_url(env, url)
        scheme, host, port, path, query, http_host = url_parts(url)
        env["PATH_INFO"] = path.empty? ? "/" : path
        env["QUERY_STRING"] = query || ""
        env["SERVER_NAME"] = host
        env["SERVER_PORT"] = port.to_s
        env["HTTP_HOST"] = http_host
        env["rack.url_scheme"] = scheme
        env
      end

      # `[rack.url_scheme, SERVER_NAME, port, path, query, Host]` of a URL.
      def url_parts(url)
        match = PLAIN_URL.match(url) or return parsed_url_parts(url)

        scheme = match[1]
        default_port = scheme == "https" ? 443 : 80
        host = match[2]
        port = match[3] ? match[3].to_i : default_port
        [scheme, host, port, match[4], match[5], port == default_port ? host : "#{host}:#{port}"]
      end

      # The general case, through `URI.parse` (a URL it refuses becomes `http://localhost/`).
      def parsed_url_parts(url)
        uri = parse(url)
        scheme = SECURE_SCHEMES.include?(uri.scheme) ? "https" : "http"
        host = uri.host || "localhost"
        port = uri.port || (scheme == "https" ? 443 : 80)
        http_host = uri.port && uri.port != uri.default_port ? "#{host}:#{uri.port}" : host
        [scheme, host, port, uri.path.to_s, uri.query, http_host]
      end

      def parse(url)
        URI.parse(url)
      rescue URI::InvalidURIError
        URI.parse("http://localhost/")
      end

      # The app's env config with the constant keys, merged once (a copy per request).
      def template
        @template || MUTEX.synchronize { @template ||= ::Rails.application.env_config.merge(CONSTANT).freeze }
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
        MUTEX.synchronize do
          @middleware = nil
          @template = nil
        end
      end

      MUTEX = Mutex.new
    end
  end
end
