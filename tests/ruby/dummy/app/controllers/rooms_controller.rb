# frozen_string_literal: true

class RoomsController < ApplicationController
  # Broadcasts to a room from a web request (through the cable adapter, from whichever process serves it); with
  # `plain`, the text itself rather than a message object.
  def broadcast
    room = Room.find_or_create_by!(name: params[:room])
    ChatChannel.broadcast_to(room, params[:plain] ? params[:text] : {user: "web", text: params[:text]})
    render json: {pid: Process.pid, in_process: Ferrocable::Rails.running?}
  end

  # Disconnects every connection of a user, the Action Cable way.
  def kick
    user = User.find_by!(name: params[:name])
    ActionCable.server.remote_connections.where(current_user: user).disconnect
    render json: {pid: Process.pid}
  end
end
