# frozen_string_literal: true

Rails.application.routes.draw do
  get "/ping", to: "status#ping"
  post "/login", to: "sessions#create"
  post "/rooms/:room/messages", to: "rooms#broadcast"
  post "/kick", to: "rooms#kick"
  get "/events", to: "status#events"
  post "/restart", to: "status#restart"
end
