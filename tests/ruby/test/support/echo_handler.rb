# frozen_string_literal: true

require "json"

# A plain Ruby handler (no Rails) for the gem's own API: authenticates with a `user=<name>` cookie, keeps the
# user in cstate and a per-subscription counter in istate, and has actions that echo, name the thread running them, raise,
# hang or answer with an invalid response.
class EchoHandler
  # A response object whose conversion itself raises.
  class BrokenResponse
    def to_h
      raise "broken to_h"
    end
  end

  attr_reader :disconnects, :calls

  def initialize(hang: 3)
    @hang = hang
    @disconnects = Queue.new
    @calls = Queue.new
    @running = 0
    @max_running = 0
    @lock = Mutex.new
  end

  def max_running
    @lock.synchronize { @max_running }
  end

  def connect(request)
    user = request.dig(:env, :headers, "cookie").to_s[/user=(\w+)/, 1]
    unless user
      return {status: :failure, transmissions: [JSON.generate(type: "disconnect", reason: "unauthorized", reconnect: false)]}
    end

    {status: :success, identifiers: JSON.generate(user: user),
     transmissions: [JSON.generate(type: "welcome", sid: Ferrocable.current_sid)], env: {cstate: {"user" => user}}}
  end

  def command(request)
    @calls << request
    identifier = request[:identifier]
    case request[:command]
    when "subscribe"
      room = JSON.parse(identifier)["room"]
      {status: :success, streams: ["room:#{room}"], env: {istate: {"count" => "0"}},
       transmissions: [JSON.generate(identifier: identifier, type: "confirm_subscription")]}
    when "unsubscribe"
      {status: :success, stop_streams: true}
    else
      message(request, identifier, JSON.parse(request[:data]))
    end
  end

  def disconnect(request)
    @disconnects << request
    {status: :success}
  end

  private

  def message(request, identifier, data)
    case data["action"]
    when "echo"
      count = request.dig(:env, :istate, "count").to_i + 1
      reply = {echo: data["text"], user: request.dig(:env, :cstate, "user"), count: count, sid: Ferrocable.current_sid}
      {status: :success, env: {istate: {"count" => count.to_s}},
       transmissions: [JSON.generate(identifier: identifier, message: reply)]}
    when "thread"
      {status: :success, transmissions: [JSON.generate(identifier: identifier, message: {thread: Thread.current.name})]}
    when "raise" then raise "handler bug"
    when "invalid" then {status: :ok}
    when "broken_to_h" then BrokenResponse.new
    when "hang"
      sleep @hang
      {status: :success}
    when "slow"
      track { sleep 0.3 }
      {status: :success, transmissions: [JSON.generate(identifier: identifier, message: {slow: data["n"]})]}
    else {status: :error, error_msg: "unknown action #{data["action"]}"}
    end
  end

  def track
    @lock.synchronize { @max_running = [@max_running, @running += 1].max }
    yield
  ensure
    @lock.synchronize { @running -= 1 }
  end
end
