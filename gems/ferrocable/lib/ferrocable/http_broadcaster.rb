# frozen_string_literal: true

require "json"
require "net/http"
require "uri"

module Ferrocable
  # Sends publications and remote disconnects to a Ferrocable (or AnyCable) server in another process over
  # its HTTP broadcast endpoint, with the bearer key when one is set. One keep-alive connection per thread.
  class HttpBroadcaster
    attr_reader :url

    def initialize(url, key: nil, open_timeout: 2, read_timeout: 5)
      @url = URI(url)
      @key = key
      @open_timeout = open_timeout
      @read_timeout = read_timeout
      @connections_key = :"ferrocable_http_#{object_id}"
    end

    def broadcast(stream, data, exclude_socket: nil)
      publication = {stream: stream.to_s, data: data.is_a?(String) ? data : JSON.generate(data)}
      publication[:meta] = {exclude_socket: exclude_socket.to_s} if exclude_socket
      post(publication)
    end

    def disconnect(identifiers, reconnect: true)
      post({command: "disconnect", payload: {identifier: identifiers, reconnect: reconnect ? true : false}})
    end

    private

    def post(body)
      request = Net::HTTP::Post.new(@url.request_uri, "Content-Type" => "application/json")
      request["Authorization"] = "Bearer #{@key}" if @key
      request.body = JSON.generate(body)
      response = with_connection { |http| http.request(request) }
      return true if response.code.to_i.between?(200, 299)

      raise BroadcastError, "broadcast to #{@url} was refused: HTTP #{response.code} #{response.body.to_s.strip}"
    end

    def with_connection
      attempts = 0
      begin
        attempts += 1
        yield connection
      rescue IOError, EOFError, Errno::ECONNRESET, Errno::EPIPE => e
        # A kept-alive connection the server closed: reconnect once.
        drop_connection
        retry if attempts < 2
        raise BroadcastError, "broadcast to #{@url} failed: #{e.class}: #{e.message}"
      rescue SystemCallError, Net::OpenTimeout, Net::ReadTimeout, SocketError => e
        drop_connection
        raise BroadcastError, "broadcast to #{@url} failed: #{e.class}: #{e.message}"
      end
    end

    def connection
      http = Thread.current[@connections_key]
      return http if http&.started?

      http = Net::HTTP.new(@url.host, @url.port)
      http.use_ssl = @url.scheme == "https"
      http.open_timeout = @open_timeout
      http.read_timeout = @read_timeout
      http.start
      Thread.current[@connections_key] = http
    end

    def drop_connection
      http = Thread.current[@connections_key]
      Thread.current[@connections_key] = nil
      http&.finish if http&.started?
    rescue IOError
      nil
    end
  end
end
