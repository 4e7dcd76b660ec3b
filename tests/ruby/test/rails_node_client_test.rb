# frozen_string_literal: true

require_relative "test_helper"

# The dummy Rails app under Ferrocable, driven by the real @rails/actioncable client library in Node.
class RailsNodeClientTest < Minitest::Test
  def app
    DummyApp.shared
  end

  def teardown
    @clients&.each(&:close)
  end

  def consumer(user)
    NodeClient.new(app.ws_url("client=node"), cookie: app.login(user)).tap { |c| (@clients ||= []) << c }
  end

  def test_subscribe_perform_and_receive_with_rails_actioncable
    olga = consumer("olga")
    pete = consumer("pete")
    olga.subscribe("chat", {channel: "ChatChannel", room: "node-room"})
    pete.subscribe("chat", {channel: "ChatChannel", room: "node-room"})
    olga.expect("connected")
    pete.expect("connected")
    assert_equal({"type" => "joined", "room" => "node-room", "user" => "olga"}, olga.expect("received")["data"])

    olga.perform("chat", "speak", text: "from node")
    heard = pete.expect("received") { |e| e["data"]["text"] }
    assert_equal({"user" => "olga", "text" => "from node"}, heard["data"])
  end

  def test_a_forbidden_room_calls_rejected
    quinn = consumer("quinn")
    quinn.subscribe("secret", {channel: "ChatChannel", room: "forbidden"})
    quinn.expect("rejected")
  end

  def test_unsubscribing_runs_unsubscribed_with_state
    rosa = consumer("rosa")
    rosa.subscribe("chat", {channel: "ChatChannel", room: "node-leave", at: "t-node"})
    rosa.expect("connected")
    rosa.unsubscribe("chat")
    events = app.wait_for_events("rosa") { |found| found.any? { |e| e["kind"] == "unsubscribed" } }
    assert_includes events, {"kind" => "unsubscribed", "user" => "rosa", "detail" => "node-leave@t-node"}
  end

  def test_a_remote_disconnect_reaches_the_consumer
    sam = consumer("sam")
    sam.subscribe("chat", {channel: "ChatChannel", room: "node-kick"})
    sam.expect("connected")
    app.post_json("/kick", name: "sam")
    disconnected = sam.expect("disconnected")
    assert_equal true, disconnected["willAttemptReconnect"], "remote disconnects ask clients to reconnect"
    # @rails/actioncable reopens a connection its monitor finds stale, and not within 6 s (its stale threshold)
    # of a disconnect; then it resubscribes.
    sam.expect("connected", timeout: 40)
  end
end
