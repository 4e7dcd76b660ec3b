# frozen_string_literal: true

require_relative "test_helper"
require "net/http"

# Puma cluster mode with `plugin :ferrocable`: the server runs in worker 0 only (never in the master, even
# with preload_app!, where the app boots before the fork); the other worker's broadcasts reach it over HTTP
# with the broadcast key.
class PumaClusterTest < Minitest::Test
  def test_cluster_mode_runs_one_server_in_worker_zero
    check_cluster("DUMMY_PRELOAD" => "0")
  end

  def test_cluster_mode_with_preload_app_starts_the_server_after_the_fork
    check_cluster("DUMMY_PRELOAD" => "1")
  end

  private

  def check_cluster(env)
    app = DummyApp.new(name: "cluster", env: env.merge("WEB_CONCURRENCY" => "2")).start
    client = WsClient.new(app.ws_url, headers: {"Cookie" => app.login("cluster")})
    assert_equal({"type" => "welcome"}, client.next_frame)
    identifier = chat_identifier("cluster-room")
    client.subscribe(identifier)
    2.times { client.next_frame }

    # Post until both workers have answered; each message must arrive, whichever worker sent it.
    by_worker = Hash.new { |h, k| h[k] = [] }
    60.times do |i|
      break if by_worker.size == 2 && by_worker.values.all? { |sent| sent.size >= 2 }

      results = Array.new(3) { |j| Thread.new { app.post_json("/rooms/cluster-room/messages", text: "m#{i}-#{j}") } }.map(&:value)
      results.each_with_index { |r, j| by_worker[[r["pid"], r["in_process"]]] << "m#{i}-#{j}" }
    end
    sent = by_worker.values.flatten
    received = Array.new(sent.size) { client.next_frame["message"]["text"] }

    assert_equal sent.sort, received.sort
    assert_equal [false, true], by_worker.keys.map(&:last).sort_by { |in_process| in_process ? 1 : 0 },
      "one worker runs the server (in-process broadcasts), the other broadcasts over HTTP: #{by_worker.keys}"
    server_pid = by_worker.keys.find(&:last).first
    refute_equal app.pid, server_pid, "the master never runs the server"
    assert_equal 1, app.log.scan(/Ferrocable \S+ serving ws:/).size, "exactly one process started a server"
    assert_match(/serving ws:\S+ in process #{server_pid} /, app.log)
  ensure
    client&.close
    app&.stop
  end
end
