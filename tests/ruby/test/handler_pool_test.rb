# frozen_string_literal: true

require_relative "test_helper"

# The Ruby side of in-process handler calls: failures stay with their call, hung calls time out, the pool
# bounds concurrency, and waiting threads leave the GVL to the rest of the process.
class HandlerPoolTest < Minitest::Test
  def start(pool_size: 4, timeout_ms: 5000, hang: 3)
    @logs = StringIO.new
    @handler = EchoHandler.new(hang: hang)
    @server = Ferrocable::Server.new(handler: @handler, pool_size: pool_size, rpc_request_timeout: timeout_ms,
      logger: Logger.new(@logs), **QUIET).start
  end

  def teardown
    @clients&.each(&:close)
    @server&.stop
  end

  def subscribed(user, room = "r")
    c = WsClient.new("ws://127.0.0.1:#{@server.port}/cable", headers: {"Cookie" => "user=#{user}"})
    (@clients ||= []) << c
    c.next_frame
    identifier = JSON.generate(channel: "Room", room: room)
    c.subscribe(identifier)
    c.next_frame
    [c, identifier]
  end

  def test_a_raising_handler_fails_only_its_own_call_and_is_logged_once
    start
    alice, a_id = subscribed("alice")
    bob, b_id = subscribed("bob")

    alice.perform(a_id, "raise")
    bob.perform(b_id, "echo", text: "bob")
    alice.perform(a_id, "echo", text: "after")

    assert_equal "bob", bob.next_frame.dig("message", "echo")
    assert_equal "after", alice.next_frame.dig("message", "echo"), "the next call of the same client works"
    failures = @logs.string.scan(/Room#raise raised RuntimeError: handler bug/)
    assert_equal 1, failures.size, @logs.string
    assert_equal 4, @server.pool_alive, "no pool thread died"
    stats = @server.stats
    assert_operator stats[:failed_client_msg_total], :>=, 1
  end

  def test_an_invalid_response_is_an_error_result_naming_the_problem
    start
    alice, id = subscribed("alice")
    alice.perform(id, "invalid")
    alice.perform(id, "broken_to_h")
    alice.perform(id, "echo", text: "still here")
    assert_equal "still here", alice.next_frame.dig("message", "echo")
    assert_match(/Room#invalid: invalid handler response: status must be :success, :failure or :error, got :ok/,
      @logs.string)
    assert_match(/Room#broken_to_h: invalid handler response: broken to_h/, @logs.string)
    assert_equal 4, @server.pool_alive
  end

  def test_a_hung_handler_times_out_for_that_call_only
    start(pool_size: 4, timeout_ms: 500, hang: 3)
    alice, a_id = subscribed("alice")
    bob, b_id = subscribed("bob")

    started = monotonic
    alice.perform(a_id, "hang")
    sleep 0.1
    bob.perform(b_id, "echo", text: "meanwhile")
    assert_equal "meanwhile", bob.next_frame.dig("message", "echo")
    assert_operator monotonic - started, :<, 0.45, "other clients are served while one call hangs"

    alice.perform(a_id, "echo", text: "next")
    assert_equal "next", alice.next_frame(timeout: 2).dig("message", "echo")
    elapsed = monotonic - started
    assert_operator elapsed, :>=, 0.5, "the hung call held its connection until the timeout"
    assert_operator elapsed, :<, 2.5, "and not until the handler returned (3 s)"
  end

  def test_calls_one_at_a_time_run_on_the_thread_that_became_idle_last
    start(pool_size: 8)
    alice, id = subscribed("alice")
    threads = 12.times.map do
      sleep 0.02 # the thread that answered is waiting again before the next call comes
      alice.perform(id, "thread")
      alice.next_frame.dig("message", "thread")
    end
    assert threads.all? { |name| name&.start_with?("ferrocable-") }, threads.inspect
    # Waking the longest-idle thread instead would go round all eight (and warm up eight malloc arenas).
    assert_equal 1, threads.uniq.size, threads.inspect
  end

  def test_the_pool_bounds_concurrent_handler_calls
    start(pool_size: 2)
    clients = Array.new(5) { |i| subscribed("u#{i}") }
    clients.each_with_index { |(c, id), i| c.perform(id, "slow", n: i) }
    clients.each_with_index { |(c, _), i| assert_equal i, c.next_frame(timeout: 5).dig("message", "slow") }
    assert_equal 2, @handler.max_running
    assert_equal 30, Ferrocable::Server.new(handler: @handler).pool_size, "30 threads by default"
  end

  def test_idle_pool_threads_wait_without_the_gvl
    work = -> { x = 0; 3_000_000.times { x += 1 }; x }
    started = monotonic
    work.call
    alone = monotonic - started

    start(pool_size: 30)
    sleep 0.2 # every pool thread is now waiting for a job
    started = monotonic
    work.call
    with_pool = monotonic - started

    assert_operator with_pool, :<, alone * 2 + 0.1,
      "30 waiting pool threads must not slow a busy Ruby thread (alone #{alone.round(3)}s, with pool #{with_pool.round(3)}s)"
  end

  def test_a_busy_ruby_thread_does_not_stop_handler_calls
    start(pool_size: 2)
    alice, id = subscribed("alice")
    stop = false
    busy = Thread.new { x = 0; x += 1 until stop }
    started = monotonic
    alice.perform(id, "echo", text: "through")
    assert_equal "through", alice.next_frame.dig("message", "echo")
    assert_operator monotonic - started, :<, 1.0
  ensure
    stop = true
    busy&.join
  end
end
