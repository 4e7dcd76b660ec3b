# frozen_string_literal: true

module ApplicationCable
  # Authenticates with the signed cookie set at login; remembers what kind of client connected (a query
  # parameter) and a header, as connection state (and StateSamples with `samples=1`).
  class Connection < ActionCable::Connection::Base
    identified_by :current_user
    state_attr_accessor :client_kind, :user_agent, :samples

    def connect
      self.current_user = User.find_by(id: cookies.signed[:user_id]) || reject_unauthorized_connection
      self.client_kind = request.params[:client] || "unknown"
      self.user_agent = request.headers["User-Agent"]
      self.samples = StateSamples.values(current_user) if request.params[:samples]
      logger.add_tags current_user.name
      Event.create!(kind: "connect", user: current_user.name, detail: client_kind) if ENV["DUMMY_RECORD_CALLS"]
    end

    def disconnect
      Event.create!(kind: "disconnect", user: current_user.name, detail: client_kind)
    end

    # What the connection knows about its request, for the `whoami` action.
    def request_details
      {
        nickname: cookies.encrypted[:nickname],
        logged_in_at: request.session[:logged_in_at],
        client_kind: client_kind,
        user_agent: user_agent,
        client_tag: request.headers["X-Client-Tag"],
        url: request.url
      }
    end
  end
end
