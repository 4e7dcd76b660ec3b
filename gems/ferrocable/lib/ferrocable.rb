# frozen_string_literal: true

# Ferrocable: an AnyCable-compatible WebSocket server written in Rust, running inside this Ruby process.
# See docs/ruby.md for the API, the Rails integration and the Puma plugin.

require "logger"
require "ferrocable/version"
require "ferrocable/errors"
require "ferrocable/native"
require "ferrocable/options"
require "ferrocable/handler_pool"
require "ferrocable/server"
require "ferrocable/http_broadcaster"
require "ferrocable/signing"

module Ferrocable
  class << self
    attr_writer :logger

    # Where handler failures are logged (Rails.logger under Rails; $stderr otherwise).
    def logger
      @logger ||= Logger.new($stderr, progname: "ferrocable")
    end

    # The session id of the connection whose call this handler thread is running, or nil.
    def current_sid
      Thread.current[:ferrocable_sid]
    end
  end
end

# The Rails integration loads with Rails: now when Rails is already loaded, else as soon as the app's class is
# defined (a Gemfile or boot file may require this gem before Rails), so its Railtie still takes part in the
# app's initialization.
if defined?(::Rails::Railtie)
  require "ferrocable/rails"
else
  begin
    require "active_support/lazy_load_hooks"
    ActiveSupport.on_load(:before_configuration) { require "ferrocable/rails" }
  rescue LoadError
    nil # no Active Support: not a Rails process
  end
end
