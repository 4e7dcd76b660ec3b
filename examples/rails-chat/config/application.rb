# frozen_string_literal: true

require_relative "boot"

require "rails"
require "active_record/railtie"
require "action_controller/railtie"
require "action_view/railtie"
require "action_cable/engine"

Bundler.require(*Rails.groups)

module RailsChat
  class Application < Rails::Application
    config.load_defaults 6.1
    # Production as a generated app has it: classes loaded once, no reloader checking files on every request
    # or cable call.
    config.cache_classes = Rails.env.production?
    config.eager_load = Rails.env.production?
    # An example running on localhost only: a fixed key keeps the command to start it short.
    config.secret_key_base = ENV.fetch("SECRET_KEY_BASE", "rails-chat-example-secret-key-base-not-for-production-use")
    config.logger = ActiveSupport::TaggedLogging.new(ActiveSupport::Logger.new($stdout))
    config.log_level = ENV.fetch("LOG_LEVEL", "info")
    config.session_store :cookie_store, key: "_rails_chat_session"
    # Lets load tools (which send no Origin header) reach plain Action Cable too; a real app lists its origins
    # in config.action_cable.allowed_request_origins (Ferrocable: `allowed_origins`).
    config.action_cable.disable_request_forgery_protection = true
  end
end
