# frozen_string_literal: true

require_relative "test_helper"

# The dummy Rails app's unchanged Action Cable code served by Ferrocable inside its Puma process, driven by a
# Ruby WebSocket client (websocket-driver).
class RailsTest < Minitest::Test
  def app
    DummyApp.shared
  end

  def teardown
    @clients&.each(&:close)
  end

  def connect(user = nil, query: "client=ruby", headers: {}, **login)
    headers = headers.merge("Cookie" => app.login(user, **login)) if user
    WsClient.new(app.ws_url(query), headers: headers).tap { |c| (@clients ||= []) << c }
  end

  def join(user, room, **extra)
    c = connect(user)
    assert_equal({"type" => "welcome"}, c.next_frame)
    identifier = chat_identifier(room, **extra)
    c.subscribe(identifier)
    assert_equal({"identifier" => identifier, "message" => {"type" => "joined", "room" => room, "user" => user}},
      c.next_frame)
    assert_equal({"identifier" => identifier, "type" => "confirm_subscription"}, c.next_frame)
    [c, identifier]
  end

  def test_signed_cookie_authenticates_and_the_welcome_is_action_cables
    c = connect("alice")
    assert_equal({"type" => "welcome"}, c.next_frame)
  end

  def test_a_connection_without_a_valid_cookie_is_rejected_as_action_cable_rejects_it
    c = connect(nil, headers: {"Cookie" => "user_id=forged--signature"})
    assert_equal({"type" => "disconnect", "reason" => "unauthorized", "reconnect" => false}, c.next_frame)
    assert_equal 1000, c.next_frame.code
  end

  def test_the_connection_sees_cookies_session_params_and_headers
    c = connect("carol", query: "client=ruby-suite", nickname: "Caz", at: "1700000000",
      headers: {"User-Agent" => "SuiteAgent/1.0", "X-Client-Tag" => "tag-42"})
    c.next_frame
    identifier = chat_identifier("details", at: "t0")
    c.subscribe(identifier)
    2.times { c.next_frame }
    c.perform(identifier, "whoami")
    assert_equal(
      {"user" => "carol", "room" => "details", "joined_at" => "t0", "nickname" => "Caz", "logged_in_at" => "1700000000",
       "client_kind" => "ruby-suite", "user_agent" => "SuiteAgent/1.0", "client_tag" => "tag-42",
       "url" => "http://127.0.0.1:#{app.cable_port}/cable?client=ruby-suite"},
      c.next_frame["message"]
    )
  end

  def test_an_action_broadcasts_to_everyone_in_the_room
    alice, identifier = join("alice", "broadcasts")
    bob, _ = join("bob", "broadcasts")
    alice.perform(identifier, "speak", text: "hello")
    [alice, bob].each do |c|
      assert_equal({"identifier" => identifier, "message" => {"user" => "alice", "text" => "hello"}}, c.next_frame)
    end
  end

  def test_a_forbidden_room_is_rejected
    c = connect("dave")
    c.next_frame
    identifier = chat_identifier("forbidden")
    c.subscribe(identifier)
    assert_equal({"identifier" => identifier, "type" => "reject_subscription"}, c.next_frame)
    c.perform(identifier, "speak", text: "ignored")
    assert_empty c.frames_within(0.3), "a rejected subscription takes no commands"
  end

  def test_broadcasts_from_web_requests_reach_subscribers_in_process
    c, identifier = join("erin", "web")
    result = app.post_json("/rooms/web/messages", text: "from a controller")
    assert result["in_process"], "Puma and Ferrocable share this process"
    assert_equal({"user" => "web", "text" => "from a controller"}, c.next_frame["message"])
  end

  def test_stop_stream_for_and_stop_all_streams
    c, identifier = join("frank", "streams")
    c.perform(identifier, "mute")
    assert_equal({"type" => "muted", "room" => "streams"}, c.next_frame["message"])
    app.post_json("/rooms/streams/messages", text: "unheard")
    c.perform(identifier, "unmute")
    assert_equal({"type" => "unmuted", "room" => "streams"}, c.next_frame["message"])
    app.post_json("/rooms/streams/messages", text: "heard")
    assert_equal({"user" => "web", "text" => "heard"}, c.next_frame["message"])
    c.perform(identifier, "quiet")
    assert_equal({"type" => "quiet"}, c.next_frame["message"])
    app.post_json("/rooms/streams/messages", text: "unheard again")
    assert_empty c.frames_within(0.4)
  end

  def test_unsubscribe_runs_unsubscribed_with_the_channel_state
    c, identifier = join("grace", "state", at: "t-join")
    other, _ = join("heidi", "state")
    c.send_json(command: "unsubscribe", identifier: identifier)
    assert_equal({"user" => "grace", "left" => true}, other.next_frame["message"])
    events = app.wait_for_events("grace") { |found| found.any? { |e| e["kind"] == "unsubscribed" } }
    assert_includes events, {"kind" => "unsubscribed", "user" => "grace", "detail" => "state@t-join"}
  end

  def test_closing_the_socket_runs_unsubscribed_then_disconnect
    c, _ = join("ivan", "closing", at: "t-close")
    c.close
    events = app.wait_for_events("ivan") { |found| found.any? { |e| e["kind"] == "disconnect" } }
    assert_equal [
      {"kind" => "unsubscribed", "user" => "ivan", "detail" => "closing@t-close"},
      {"kind" => "disconnect", "user" => "ivan", "detail" => "ruby"}
    ], events
  end

  def test_remote_connections_disconnect_closes_every_connection_of_that_user
    first, _ = join("judy", "kick-a")
    second, _ = join("judy", "kick-b")
    bystander, b_id = join("ken", "kick-elsewhere")

    app.post_json("/kick", name: "judy")
    [first, second].each do |c|
      assert_equal({"type" => "disconnect", "reason" => "remote", "reconnect" => true}, c.next_frame)
      assert_kind_of WsClient::Closed, c.next_frame
    end
    bystander.perform(b_id, "speak", text: "still here")
    assert_equal({"user" => "ken", "text" => "still here"}, bystander.next_frame["message"])
  end

  def test_an_exception_in_an_action_fails_that_call_only_and_is_logged_once
    c, identifier = join("leo", "errors")
    other, o_id = join("mia", "errors")
    c.perform(identifier, "speak", text: "boom")
    other.perform(o_id, "speak", text: "unaffected")
    assert_equal({"user" => "mia", "text" => "unaffected"}, c.next_frame["message"])
    c.perform(identifier, "speak", text: "after")
    assert_equal({"user" => "leo", "text" => "after"}, c.next_frame["message"])
    failures = app.log.scan(/ChatChannel#speak raised ArgumentError: boom/)
    assert_equal 1, failures.size
  end

  SAMPLE_CLASSES = {
    "string" => "String", "symbol" => "Symbol", "integer" => "Integer", "float" => "Float", "nil" => "NilClass",
    "true" => "TrueClass", "false" => "FalseClass", "hash" => "ActiveSupport::HashWithIndifferentAccess",
    "array_of_hashes" => "Array", "time" => "Time", "time_with_zone" => "ActiveSupport::TimeWithZone",
    "date" => "Date", "record" => "User"
  }.freeze

  # Every row of the Serializer's table read back in a later call equals what was stored, with its class.
  def assert_samples_read_back(checked)
    assert_equal SAMPLE_CLASSES, checked.transform_values { |row| row["class"] }
    assert_equal [], checked.reject { |_, row| row["equal"] }.keys, "rows that read back differently"
    assert_equal ["zoe", 2], checked["hash"]["indifferent"]
    assert_equal [1, ["a"], 2], checked["array_of_hashes"]["indifferent"]
    assert_equal 7200, checked["time"]["offset"]
    assert_equal "Tokyo", checked["time_with_zone"]["zone"]
  end

  def test_state_attr_accessor_reads_back_what_was_stored_in_actions_and_unsubscribed
    c = connect("zoe", query: "client=ruby&samples=1")
    assert_equal({"type" => "welcome"}, c.next_frame)
    identifier = JSON.generate(channel: "StateChannel", name: "zoe")
    c.subscribe(identifier)
    assert_equal "confirm_subscription", c.next_frame["type"]
    c.perform(identifier, "tick")
    assert_equal({"count" => 1, "name" => "zoe"}, c.next_frame["message"])
    c.perform(identifier, "tick")
    assert_equal({"count" => 2, "name" => "zoe"}, c.next_frame["message"])
    c.perform(identifier, "check")
    checked = c.next_frame["message"]
    assert_samples_read_back(checked["channel"])
    assert_samples_read_back(checked["connection"])

    c.send_json(command: "unsubscribe", identifier: identifier)
    events = app.wait_for_events("zoe") { |found| found.any? { |e| e["kind"] == "state_unsubscribed" } }
    detail = JSON.parse(events.find { |e| e["kind"] == "state_unsubscribed" }["detail"])
    assert_equal 2, detail["count"]
    assert_samples_read_back(detail["samples"])
  end

  def test_action_cable_server_restart_from_another_thread_asks_every_client_to_reconnect
    first, _ = join("olga", "restart")
    second, _ = join("pete", "restart")
    assert app.post_json("/restart")["restarted"]
    [first, second].each do |c|
      assert_equal({"type" => "disconnect", "reason" => "server_restart", "reconnect" => true}, c.next_frame)
      assert_kind_of WsClient::Closed, c.next_frame
    end
    app.wait_for_events("olga") { |found| found.any? { |e| e["kind"] == "disconnect" } }
    again, identifier = join("olga", "restart")
    again.perform(identifier, "speak", text: "back")
    assert_equal({"user" => "olga", "text" => "back"}, again.next_frame["message"])
  end

  # A process that requires the gem before Rails (a boot file, a Gemfile order) still gets the Railtie and the
  # extensions, and `ActionCable.server.broadcast` reaches clients through the adapter.
  def test_the_gem_required_before_rails_still_integrates_and_broadcasts
    c = connect("quinn")
    c.next_frame
    identifier = JSON.generate(channel: "StateChannel", name: "quinn")
    c.subscribe(identifier)
    assert_equal "confirm_subscription", c.next_frame["type"]
    out = app.run_ruby!("-e", <<~RUBY)
      require "./config/boot"
      require "ferrocable"
      abort "Rails loaded early" if defined?(::Rails::Application)
      require "./config/environment"
      puts StateChannel.method(:state_attr_accessor).owner, Ferrocable::Rails::Railtie.name
      ActionCable.server.broadcast("state_quinn", {from: "early require"})
    RUBY
    assert_equal %w[Ferrocable::Rails::StateAttributes Ferrocable::Rails::Railtie], out.lines.last(2).map(&:strip)
    assert_equal({"identifier" => identifier, "message" => {"from" => "early require"}}, c.next_frame)
  end

  def test_periodically_timers_run_per_subscription_with_its_state_until_unsubscribed
    fast = JSON.generate(channel: "TickerChannel")
    slow = JSON.generate(channel: "TickerChannel", slow: true)
    clients = [fast, slow].map do |identifier|
      c = connect("rita")
      c.next_frame
      c.subscribe(identifier)
      assert_equal({"identifier" => identifier, "type" => "confirm_subscription"}, c.next_frame)
      c
    end
    frames = clients.map { |c| Thread.new { c.frames_within(1.6) } }.map(&:value)
    ticks = frames.map { |list| list.map { |f| f["message"]["tick"] }.compact }
    blocks = frames[0].map { |f| f["message"] }.select { |m| m.key?("block") }
    assert_operator ticks[0].size, :>=, 5, frames[0].inspect
    assert_equal (1..ticks[0].size).to_a, ticks[0], "each tick sees the state the one before left"
    assert_operator ticks[1].size, :>=, 2, frames[1].inspect
    assert_operator ticks[1].size, :<=, 6, "a tick that outlasts the interval delays the next one"
    assert_equal (1..ticks[1].size).to_a, ticks[1], "ticks of one subscription never overlap"
    assert_operator blocks.size, :>=, 2, "the block timer runs too"
    assert(blocks.all? { |m| m["block"].is_a?(Integer) && m["block"] >= 1 }, blocks.inspect)

    clients.zip([fast, slow]).each { |c, identifier| c.send_json(command: "unsubscribe", identifier: identifier) }
    clients.each { |c| c.frames_within(0.4) }
    clients.each { |c| assert_empty c.frames_within(0.8), "no tick after unsubscribe" }
  end

  def test_a_stream_from_block_rewrites_broadcasts_for_its_subscriptions_only
    block_client = connect("nina")
    raw_client = connect("omar")
    [block_client, raw_client].each(&:next_frame)
    block_id = JSON.generate(channel: "NewsChannel")
    raw_id = JSON.generate(channel: "NewsChannel", raw: true)
    block_client.subscribe(block_id)
    raw_client.subscribe(raw_id)
    assert_equal "confirm_subscription", block_client.next_frame["type"]
    assert_equal "confirm_subscription", raw_client.next_frame["type"]
    app.run_ruby!("-e", 'require "./config/environment"; %w[x y].each { |h| ActionCable.server.broadcast("news", {headline: h}) }')
    assert_equal({"identifier" => block_id, "message" => {"headline" => "X", "seen" => 1, "reader" => "nina"}},
      block_client.next_frame)
    assert_equal({"identifier" => block_id, "message" => {"headline" => "Y", "seen" => 2, "reader" => "nina"}},
      block_client.next_frame)
    assert_equal({"identifier" => raw_id, "message" => {"headline" => "x"}}, raw_client.next_frame)
    assert_equal({"identifier" => raw_id, "message" => {"headline" => "y"}}, raw_client.next_frame)

    block_client.send_json(command: "unsubscribe", identifier: block_id)
    block_client.frames_within(0.3)
    app.run_ruby!("-e", 'require "./config/environment"; ActionCable.server.broadcast("news", {headline: "z"})')
    assert_equal({"identifier" => raw_id, "message" => {"headline" => "z"}}, raw_client.next_frame)
    assert_empty block_client.frames_within(0.3)
  end
end

# The same cases with anycable-rails' Action Cable extensions in the bundle too (loaded after Ferrocable):
# with `adapter: ferrocable`, Ferrocable's state, streams, broadcasts, remote disconnects and identifiers win.
class RailsWithAnyCableRailsTest < RailsTest
  def app
    DummyApp.shared(:with_anycable_rails)
  end
end
