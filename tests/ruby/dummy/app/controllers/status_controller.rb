# frozen_string_literal: true

class StatusController < ApplicationController
  def ping
    render plain: "pong #{Process.pid}"
  end

  # `ActionCable.server.restart` from a thread of its own, as a deploy script or a console would call it.
  def restart
    Thread.new { ActionCable.server.restart }.join
    render json: {restarted: true}
  end

  def events
    scope = Event.order(:id)
    scope = scope.where(user: params[:user]) if params[:user]
    render json: scope.map { |e| {kind: e.kind, user: e.user, detail: e.detail} }
  end
end
