# frozen_string_literal: true

require_relative "test_helper"
require "open3"

# Ferrocable shares its process (and the GVL) with Puma: while 500 clients connect and subscribe, which runs
# 1,000 Rails handler calls, Puma still answers HTTP requests promptly.
class PumaLoadTest < Minitest::Test
  CLIENTS = 500
  CROWD = File.expand_path("../node/crowd.mjs", __dir__)

  def test_puma_answers_promptly_while_500_clients_connect_and_subscribe
    app = DummyApp.new(name: "load").start
    cookie = app.login("crowd")
    warm_up(app)

    identifier = chat_identifier("crowd-room")
    stdin, stdout, crowd = Open3.popen2("node", CROWD, app.ws_url("client=crowd"), cookie, CLIENTS.to_s, identifier)
    outcome = Queue.new
    Thread.new { outcome << JSON.parse(stdout.gets || '{"event":"exited"}') }

    latencies = []
    result = nil
    deadline = monotonic + 90
    while result.nil? && monotonic < deadline
      started = monotonic
      response = app.get("/ping")
      latencies << monotonic - started
      assert_equal "200", response.code
      result = outcome.pop(true) rescue nil
      sleep 0.02
    end

    assert_equal "subscribed", result&.fetch("event"), "every client must be confirmed (got #{result.inspect})"
    assert_operator latencies.size, :>=, 5, "requests were made while the clients connected"
    sorted = latencies.sort
    median = sorted[sorted.size / 2]
    worst = sorted.last
    message = "Puma latency during the connect storm: median #{(median * 1000).round}ms, " \
      "max #{(worst * 1000).round}ms over #{latencies.size} requests; crowd subscribed in #{result["ms"]}ms"
    puts "\n#{message}" if ENV["VERBOSE"]
    assert_operator median, :<, 0.25, message
    assert_operator worst, :<, 1.5, message

    assert app.post_json("/rooms/crowd-room/messages", text: "to the crowd")["in_process"]
  ensure
    stdin&.close
    crowd&.join(10)
    app&.stop
  end

  private

  # One request and one connection first, so class loading is not measured.
  def warm_up(app)
    app.get("/ping")
    c = WsClient.new(app.ws_url, headers: {"Cookie" => app.login("warmup")})
    c.next_frame
    c.subscribe(chat_identifier("warmup"))
    2.times { c.next_frame }
    c.close
  end
end
