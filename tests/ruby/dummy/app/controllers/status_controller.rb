# frozen_string_literal: true

class StatusController < ApplicationController
  def ping
    render plain: "pong #{Process.pid}"
  end

  def events
    scope = Event.order(:id)
    scope = scope.where(user: params[:user]) if params[:user]
    render json: scope.map { |e| {kind: e.kind, user: e.user, detail: e.detail} }
  end
end
