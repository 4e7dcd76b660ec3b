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

  def test_periodic_timers_are_reported_once_at_boot
    assert_equal 1, app.log.scan(/TickerChannel uses `periodically`/).size, app.log[0, 2000]
  end

  def test_a_stream_from_block_is_reported_and_broadcasts_arrive_unchanged
    c = connect("nina")
    c.next_frame
    identifier = JSON.generate(channel: "NewsChannel")
    c.subscribe(identifier)
    assert_equal "confirm_subscription", c.next_frame["type"]
    app.run_ruby!("-e", 'require "./config/environment"; ActionCable.server.broadcast("news", {headline: "x"})')
    assert_equal({"identifier" => identifier, "message" => {"headline" => "x"}}, c.next_frame)
    assert_equal 1, app.log.scan(/NewsChannel passes a block, callback or coder to `stream_from`/).size
  end
end
