# frozen_string_literal: true

module ApplicationCable
  # Browsers authenticate with the signed cookie set at sign-in. Scripts and load tools may connect as a
  # guest with `?name=...` instead.
  class Connection < ActionCable::Connection::Base
    identified_by :current_user, :guest_name

    def connect
      self.current_user = User.find_by(id: cookies.signed[:user_id])
      self.guest_name = request.params[:name].presence unless current_user
      reject_unauthorized_connection unless current_user || guest_name
    end

    def display_name
      current_user&.name || "#{guest_name} (guest)"
    end
  end
end
