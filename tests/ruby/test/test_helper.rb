# frozen_string_literal: true

# The Ruby suite: the gem's API in this process, and the dummy Rails app (tests/ruby/dummy) in Puma
# processes, driven by real clients (websocket-driver from Ruby, @rails/actioncable from Node).
require "minitest/autorun"
require "json"
require "logger"
require "stringio"
require "fileutils"
require "ferrocable"
require_relative "support/ports"
require_relative "support/process_group"
require_relative "support/ws_client"
require_relative "support/dummy_app"
require_relative "support/node_client"
require_relative "support/echo_handler"

# Scratch files (databases, logs) of the previous run go; this run's stay for inspection.
FileUtils.rm_rf(Dir[File.join(DummyApp::TMP, "*")])

# Options of servers started by the tests: loopback, free ports, and only warnings on stderr (the core's log
# level is set once per process, by the first server).
QUIET = {host: "127.0.0.1", port: 0, http_broadcast_port: 0, log_level: "warn"}.freeze

module SuiteHelpers
  def chat_identifier(room, **extra)
    JSON.generate({channel: "ChatChannel", room: room}.merge(extra))
  end

  # Waits until the block returns a truthy value.
  def eventually(timeout: 5, message: "condition never held")
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    loop do
      value = yield
      return value if value
      flunk(message) if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

      sleep 0.02
    end
  end

  def monotonic
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end
end

Minitest::Test.include(SuiteHelpers)
