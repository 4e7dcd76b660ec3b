# frozen_string_literal: true

# sqlite3 1.4 waits for a locked database inside C while holding Ruby's GVL (its `busy_timeout`), so one
# thread waiting for a write lock stops every other Ruby thread, including the one holding the lock. With
# many threads writing (Puma plus the handler pool), wait in Ruby instead: `sleep` releases the GVL.
ActiveSupport.on_load(:active_record) do
  require "active_record/connection_adapters/sqlite3_adapter"

  ActiveRecord::ConnectionAdapters::SQLite3Adapter.prepend(Module.new do
    private

    def configure_connection
      super
      timeout = self.class.type_cast_config_to_integer(@config[:timeout]) || 5000
      deadline = nil
      @connection.busy_handler do |count|
        deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout / 1000.0 if count.zero?
        sleep 0.001
        Process.clock_gettime(Process::CLOCK_MONOTONIC) < deadline
      end
    end
  end)
end
