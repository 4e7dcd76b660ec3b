# frozen_string_literal: true

# One page: a name form, then the chat room. The signed `user_id` cookie set here is what the WebSocket
# connection authenticates with.
class ChatController < ApplicationController
  def index
    @user = User.find_by(id: cookies.signed[:user_id])
    @cable_url = cable_url
  end

  def login
    user = User.find_or_create_by!(name: params.require(:name).strip)
    cookies.signed[:user_id] = {value: user.id, httponly: true}
    redirect_to root_path
  rescue ActiveRecord::RecordInvalid, ActionController::ParameterMissing
    redirect_to root_path
  end

  def logout
    cookies.delete(:user_id)
    redirect_to root_path
  end

  # The Action Cable client shipped with the actioncable gem (no asset pipeline needed).
  def action_cable_js
    path = File.join(Gem.loaded_specs.fetch("actioncable").full_gem_path, "app/assets/javascripts/action_cable.js")
    send_file path, type: "text/javascript", disposition: "inline"
  end

  private

  # Ferrocable listens on its own port; plain Action Cable is mounted at /cable on Puma.
  def cable_url
    return "/cable" unless Ferrocable::Rails.enabled?

    "ws://#{request.host}:#{Ferrocable::Rails.config.option(:port)}#{Ferrocable::Rails.config.option(:path).split(",").first}"
  end
end
