# frozen_string_literal: true

# Who is in a room: subscribing joins the room's presence set as the current user (AnyCable's channel API,
# kept by the server's broker); `leave` leaves it, and `who` reads it through the server.
class PresenceChannel < ApplicationCable::Channel
  def subscribed
    stream_from "presence_#{params[:room]}"
    join_presence(id: current_user.name, info: {name: current_user.name})
  end

  def leave
    leave_presence
  end

  def who
    transmit({who: Ferrocable::Rails.presence("presence_#{params[:room]}")})
  end
end
