# frozen_string_literal: true

require_relative "boot"

require "rails"
require "active_record/railtie"
require "action_controller/railtie"
require "action_cable/engine"
require "ferrocable"
# With DUMMY_ANYCABLE_RAILS=1 the bundle also has anycable-rails' Action Cable extensions (a stand-in: the gem
# is not installable offline), loaded after Ferrocable, as an app moving off AnyCable would have them.
require_relative "../lib/anycable_rails_stand_in" if ENV["DUMMY_ANYCABLE_RAILS"] == "1"

module Dummy
  # A small chat app written for Action Cable, with no Ferrocable-specific code in its channels: the suite
  # runs it under Ferrocable (adapter: ferrocable) and, for comparison, under Action Cable's own server.
  class Application < Rails::Application
    config.load_defaults 6.1
    config.root = File.expand_path("..", __dir__)
    config.eager_load = ENV["DUMMY_EAGER_LOAD"] == "1"
    config.secret_key_base = "dummy-secret-key-base-for-the-ferrocable-test-suite-only"
    config.hosts.clear
    config.logger = ActiveSupport::TaggedLogging.new(ActiveSupport::Logger.new(ENV.fetch("DUMMY_LOG", $stdout)))
    config.log_level = :info
    config.session_store :cookie_store, key: "_dummy_session"
    config.action_cable.disable_request_forgery_protection = true
    # Lets the suite check that `config.ferrocable` sits between config/ferrocable.yml and ANYCABLE_* variables.
    config.ferrocable.disconnect_rate = Integer(ENV["DUMMY_APP_DISCONNECT_RATE"]) if ENV["DUMMY_APP_DISCONNECT_RATE"]
  end
end
