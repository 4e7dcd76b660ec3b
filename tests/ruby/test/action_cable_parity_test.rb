# frozen_string_literal: true

require_relative "test_helper"

# The same app and the same client script against Action Cable's own server (async adapter, mounted in
# Puma) and against Ferrocable: every frame the client receives must be the same. Frames Action Cable's code
# writes (welcome, confirm, reject, transmissions, unauthorized) are compared byte for byte; a broadcast
# frame is assembled by the server from the stream's payload, so it is compared as JSON (Action Cable also
# escapes <, > and & inside the identifier; JSON clients read both the same).
class ActionCableParityTest < Minitest::Test
  def test_frames_are_exactly_action_cables
    action_cable = DummyApp.new(name: "action-cable", env: {"CABLE_ADAPTER" => "async"}).start
    ferrocable = DummyApp.shared
    expected = transcript(action_cable)
    got = transcript(ferrocable)

    refute_empty expected
    assert_includes expected, '{"type":"welcome"}'
    assert_equal expected, got
  ensure
    action_cable&.stop
  end

  private

  # Raw frames (pings left out) of one scripted session, plus those of a rejected connection.
  def transcript(app)
    frames = []
    cookie = app.login("parity")
    client = RawClient.new(app.ws_url("client=parity"), "Cookie" => cookie)
    lobby = JSON.generate(channel: "ChatChannel", room: "parity <&> room")
    forbidden = JSON.generate(channel: "ChatChannel", room: "forbidden")
    frames << client.next_raw
    client.ws.subscribe(lobby)
    frames << client.next_raw << client.next_raw
    client.ws.subscribe(forbidden)
    frames << client.next_raw
    client.ws.perform(lobby, "speak", text: "<b>bold</b> & \"quoted\" ü")
    frames << JSON.parse(client.next_raw)
    client.ws.perform(lobby, "mute")
    frames << client.next_raw
    client.ws.send_json(command: "message", identifier: lobby, data: JSON.generate(action: "speak", text: "muted"))
    client.ws.perform(lobby, "unmute")
    frames << client.next_raw
    client.ws.close

    rejected = RawClient.new(app.ws_url, "Cookie" => "user_id=forged")
    frames << rejected.next_raw
    rejected.ws.close
    frames
  end

  # Keeps frames as the text the server sent, to compare them byte for byte.
  class RawClient
    attr_reader :ws

    def initialize(url, headers)
      @ws = WsClient.new(url, headers: headers)
    end

    def next_raw
      frame = @ws.next_frame(raw: true)
      raise "connection closed: #{frame.inspect}" if frame.is_a?(WsClient::Closed)

      frame
    end
  end
end
