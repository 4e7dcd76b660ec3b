# frozen_string_literal: true

Rails.application.routes.draw do
  root "chat#index"
  post "/login", to: "chat#login"
  post "/logout", to: "chat#logout"
  get "/action_cable.js", to: "chat#action_cable_js"
  # Diagnostics for the memory comparison in docs/benchmarks.md; off unless asked for.
  get "/debug/memory", to: "memory#memory" if ENV["MEMORY_DEBUG"] == "1"
end
