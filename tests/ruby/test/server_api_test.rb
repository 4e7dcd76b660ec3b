# frozen_string_literal: true

require_relative "test_helper"

# Ferrocable::Server with a plain Ruby handler: serving clients, state, broadcasts, remote disconnects,
# stats, graceful stop and configuration errors.
class ServerApiTest < Minitest::Test
  def setup
    @logs = StringIO.new
    @handler = EchoHandler.new
    @server = Ferrocable::Server.new(handler: @handler, logger: Logger.new(@logs), **QUIET).start
    @clients = []
  end

  def teardown
    @clients.each(&:close)
    @server.stop
  end

  def client(user)
    headers = user ? {"Cookie" => "user=#{user}"} : {}
    WsClient.new("ws://127.0.0.1:#{@server.port}/cable", headers: headers).tap { |c| @clients << c }
  end

  def subscribed_client(user, room)
    c = client(user)
    welcome = c.next_frame
    assert_equal "welcome", welcome["type"]
    identifier = JSON.generate(channel: "Room", room: room)
    c.subscribe(identifier)
    assert_equal({"identifier" => identifier, "type" => "confirm_subscription"}, c.next_frame)
    [c, identifier, welcome["sid"]]
  end

  def test_handler_answers_reach_the_client_with_state_kept_between_calls
    alice, identifier, sid = subscribed_client("alice", "lobby")
    alice.perform(identifier, "echo", text: "one")
    first = alice.next_frame["message"]
    alice.perform(identifier, "echo", text: "two")
    second = alice.next_frame["message"]

    assert_equal({"echo" => "one", "user" => "alice", "count" => 1, "sid" => sid}, first)
    assert_equal 2, second["count"], "istate changes returned by one call reach the next"
    refute_nil sid
  end

  def test_broadcasts_reach_subscribers_in_order_and_skip_the_excluded_socket
    alice, _, alice_sid = subscribed_client("alice", "lobby")
    bob, identifier, _ = subscribed_client("bob", "lobby")

    @server.broadcast("room:lobby", {n: 1})
    @server.broadcast("room:lobby", "not json")
    @server.broadcast_many([["room:lobby", {n: 2}], ["room:other", {n: 99}]])
    @server.broadcast("room:lobby", {n: 3}, exclude_socket: alice_sid)

    assert_equal [{"n" => 1}, "not json", {"n" => 2}], Array.new(3) { alice.next_frame["message"] }
    bob_frames = Array.new(4) { bob.next_frame }
    assert_equal [{"n" => 1}, "not json", {"n" => 2}, {"n" => 3}], bob_frames.map { |f| f["message"] }
    assert_equal [identifier], bob_frames.map { |f| f["identifier"] }.uniq
    assert_empty alice.frames_within(0.3), "the excluded socket gets nothing more"
  end

  def test_remote_disconnect_closes_every_connection_with_those_identifiers
    first, _, _ = subscribed_client("alice", "a")
    second, _, _ = subscribed_client("alice", "b")
    bob, _, _ = subscribed_client("bob", "a")

    assert_equal 2, @server.disconnect({user: "alice"}, reconnect: false)
    [first, second].each do |c|
      assert_equal({"type" => "disconnect", "reason" => "remote", "reconnect" => false}, c.next_frame)
      assert_kind_of WsClient::Closed, c.next_frame
    end
    assert_empty bob.frames_within(0.3)
    assert_equal 0, @server.disconnect('{"user":"nobody"}')
  end

  def test_unauthorized_connections_get_the_handlers_frames_and_are_closed
    anonymous = client(nil)
    assert_equal({"type" => "disconnect", "reason" => "unauthorized", "reconnect" => false}, anonymous.next_frame)
    assert_equal 1000, anonymous.next_frame.code
  end

  def test_stats_count_clients_and_broadcasts
    subscribed_client("alice", "x")
    subscribed_client("bob", "x")
    @server.broadcast("room:x", "1")
    stats = eventually { s = @server.stats; s if s[:broadcast_msg_total] >= 1 && s[:clients_num] == 2 }
    assert_equal 2, stats[:subscriptions_num]
    assert_operator stats[:clients_total], :>=, 2
  end

  def test_stop_sends_server_restart_and_runs_disconnect_calls_before_returning
    alice, identifier, _ = subscribed_client("alice", "lobby")
    alice.perform(identifier, "echo", text: "x")
    alice.next_frame

    @server.stop
    assert_equal({"type" => "disconnect", "reason" => "server_restart", "reconnect" => true}, alice.next_frame)
    request = @handler.disconnects.pop(true)
    assert_equal '{"user":"alice"}', request[:identifiers]
    assert_equal [identifier], request[:subscriptions]
    assert_equal({"count" => "1"}, JSON.parse(request.dig(:env, :istate, identifier)))
    assert_equal "alice", request.dig(:env, :cstate, "user")
    refute @server.running?
    assert_raises(Ferrocable::NotRunningError) { @server.broadcast("x", "y") }
    @server.stop # a second stop does nothing
  end

  def test_presence_needs_a_broker_and_reads_a_stream_set
    error = assert_raises(Ferrocable::PresenceError) { @server.presence("room:x") }
    assert_match(/needs a broker/, error.message)
    with_broker = Ferrocable::Server.new(handler: @handler, **QUIET, broker: "memory").start
    begin
      assert_equal({total: 0, records: []}, with_broker.presence("room:x"))
      assert_equal({total: 0}, with_broker.presence("room:x", records: false))
    ensure
      with_broker.stop
    end
  end

  def test_every_core_option_is_a_keyword
    %w[port path rpc_host broadcast_key secret ping_interval disconnect_rate max_conn headers].each do |name|
      assert_includes Ferrocable::Server::OPTIONS, name
    end
    server = Ferrocable::Server.new(handler: @handler, **QUIET, path: ["/cable", "/ws"], ping_interval: 7,
      noauth: false, broadcast_adapter: nil)
    assert_equal "/cable,/ws", server.options["path"]
    assert_equal "7", server.options["ping_interval"]
    assert_equal "false", server.options["noauth"]
    refute server.options.key?("broadcast_adapter"), "nil leaves an option at its default"
    server.start
    begin
      c = WsClient.new("ws://127.0.0.1:#{server.port}/ws", headers: {"Cookie" => "user=zed"})
      assert_equal "welcome", c.next_frame["type"]
      c.close
    ensure
      server.stop
    end
  end

  def test_configuration_errors_are_ferrocable_errors_with_codes
    error = assert_raises(Ferrocable::ConfigError) { Ferrocable::Server.new(no_such_option: 1) }
    assert_includes error.message, "no_such_option"
    assert_equal "ECONFIG", error.code
    assert_kind_of Ferrocable::Error, error

    error = assert_raises(Ferrocable::ConfigError) { Ferrocable::Server.new(port: "eighty") }
    assert_includes error.message, "`port`"
    assert_raises(Ferrocable::ConfigError) { Ferrocable::Server.new(handler: @handler, rpc_host: "localhost:50051") }
    assert_raises(Ferrocable::ConfigError) { Ferrocable::Server.new(pool_size: 0) }
    assert_raises(ArgumentError) { Ferrocable::Server.new(handler: Object.new) }

    taken = Ferrocable::Server.new(handler: @handler, **QUIET, port: @server.port)
    error = assert_raises(Ferrocable::AddressInUseError) { taken.start }
    assert_equal "EADDRINUSE", error.code
    refute taken.running?
    assert_raises(Ferrocable::NotRunningError) { taken.stats }
  end
end
