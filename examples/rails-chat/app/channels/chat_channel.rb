# frozen_string_literal: true

class ChatChannel < ApplicationCable::Channel
  state_attr_accessor :room

  def subscribed
    self.room = params[:room].presence || "lobby"
    stream_from "chat:#{room}"
  end

  def speak(data)
    text = data["text"].to_s.strip.first(500)
    return if text.empty?

    ActionCable.server.broadcast("chat:#{room}", {user: connection.display_name, text: text})
  end
end
