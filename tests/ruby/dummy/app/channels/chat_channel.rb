# frozen_string_literal: true

# A chat room. Everything here is plain Action Cable; the room and join time live in `state_attr_accessor`
# attributes, so `unsubscribed` can read them under Ferrocable as it can under Action Cable.
class ChatChannel < ApplicationCable::Channel
  state_attr_accessor :room, :joined_at

  def subscribed
    if params[:room] == "forbidden"
      reject
      return
    end
    self.room = Room.find_or_create_by!(name: params[:room])
    self.joined_at = params[:at] || "now"
    stream_for room
    Event.create!(kind: "subscribed", user: current_user.name, detail: room.name) if ENV["DUMMY_RECORD_CALLS"]
    transmit({type: "joined", room: room.name, user: current_user.name})
  end

  def speak(data)
    raise ArgumentError, "boom" if data["text"] == "boom"

    ChatChannel.broadcast_to(room, {user: current_user.name, text: data["text"]})
  end

  def echo(data)
    transmit(data)
  end

  def whoami
    transmit({user: current_user.name, room: room.name, joined_at: joined_at}.merge(connection.request_details))
  end

  def mute
    stop_stream_for room
    transmit({type: "muted", room: room.name})
  end

  def unmute
    stream_for room
    transmit({type: "unmuted", room: room.name})
  end

  def quiet
    stop_all_streams
    transmit({type: "quiet"})
  end

  def unsubscribed
    return unless room

    Event.create!(kind: "unsubscribed", user: current_user.name, detail: "#{room.name}@#{joined_at}")
    ChatChannel.broadcast_to(room, {user: current_user.name, left: true})
  end
end
