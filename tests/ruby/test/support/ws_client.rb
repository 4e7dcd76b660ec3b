# frozen_string_literal: true

require "json"
require "socket"
require "timeout"
require "uri"
require "websocket/driver"

# A blocking WebSocket client on websocket-driver (Debian's ruby-websocket-driver), speaking Action Cable's
# JSON protocol: frames arrive on a reader thread and are read in order with a timeout.
class WsClient
  Closed = Struct.new(:code, :reason)

  attr_reader :url

  def initialize(url, headers: {}, protocols: ["actioncable-v1-json"])
    @url = url
    uri = URI(url)
    @socket = TCPSocket.new(uri.host, uri.port)
    @inbox = Queue.new
    @open = Queue.new
    @driver = WebSocket::Driver.client(self, protocols: protocols)
    headers.each { |name, value| @driver.set_header(name, value) }
    @driver.on(:open) { @open << true }
    @driver.on(:message) { |event| @inbox << event.data }
    @driver.on(:close) { |event| @inbox << Closed.new(event.code, event.reason) }
    @driver.start
    @reader = Thread.new { read_loop }
  end

  # websocket-driver writes through this.
  def write(data)
    @socket.write(data)
  rescue IOError, SystemCallError
    nil
  end

  def send_json(value)
    @driver.text(JSON.generate(value))
  end

  def subscribe(identifier)
    send_json(command: "subscribe", identifier: identifier)
  end

  def perform(identifier, action, data = {})
    send_json(command: "message", identifier: identifier, data: JSON.generate(data.merge(action: action)))
  end

  # The next frame parsed as JSON (or its text with `raw: true`; pings skipped), or a Closed when the server
  # closed the connection.
  def next_frame(timeout: 5, pings: false, raw: false)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    loop do
      left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
      raise Timeout::Error, "no frame from #{@url} within #{timeout}s" if left <= 0

      item = pop(left)
      return item if item.is_a?(Closed)

      frame = JSON.parse(item)
      return(raw ? item : frame) if pings || frame["type"] != "ping"
    end
  end

  # Frames (pings skipped) that arrive within `window` seconds.
  def frames_within(window)
    frames = []
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + window
    loop do
      left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
      return frames if left <= 0

      frames << next_frame(timeout: left)
    rescue Timeout::Error
      return frames
    end
  end

  def close
    @driver.close
    @socket.close
  rescue IOError, SystemCallError
    nil
  ensure
    @reader.kill
  end

  private

  def pop(timeout)
    Timeout.timeout(timeout) { @inbox.pop }
  end

  def read_loop
    loop { @driver.parse(@socket.readpartial(16_384)) }
  rescue IOError, SystemCallError
    @inbox << Closed.new(nil, "socket closed")
  end
end
