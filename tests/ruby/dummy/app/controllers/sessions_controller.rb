# frozen_string_literal: true

# Logs a user in the usual Rails way: a signed cookie with the user id, an encrypted nickname cookie, and
# the login time in the session. The WebSocket connection authenticates with these.
class SessionsController < ApplicationController
  def create
    user = User.find_or_create_by!(name: params.require(:name))
    cookies.signed[:user_id] = user.id
    cookies.encrypted[:nickname] = params[:nickname] if params[:nickname]
    session[:logged_in_at] = params[:at] || Time.now.to_i.to_s
    render json: {id: user.id, name: user.name}
  end
end
