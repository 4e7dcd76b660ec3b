# frozen_string_literal: true

require "json"
require "open3"
require "timeout"

# A real @rails/actioncable consumer running in Node (tests/ruby/node/scenario.mjs), driven over its
# stdin/stdout: commands go in as JSON lines, events come back as JSON lines.
class NodeClient
  SCRIPT = File.expand_path("../../node/scenario.mjs", __dir__)

  def initialize(url, cookie: "")
    @stdin, @stdout, @process = Open3.popen2("node", SCRIPT, url, cookie)
    @events = Queue.new
    @pending = []
    @reader = Thread.new do
      @stdout.each_line { |line| @events << JSON.parse(line) }
      @events << {"event" => "exited"}
    end
    expect("ready")
  end

  def subscribe(name, params)
    command(op: "subscribe", name: name, params: params)
  end

  def perform(name, action, data = {})
    command(op: "perform", name: name, action: action, data: data)
  end

  def unsubscribe(name)
    command(op: "unsubscribe", name: name)
  end

  # The first event, in arrival order, named `event` (and, when given, satisfying the block). Events that do
  # not match stay available to later calls.
  def expect(event, timeout: 10, &condition)
    matches = ->(got) { got["event"] == event && (condition.nil? || condition.call(got)) }
    if (index = @pending.index(&matches))
      return @pending.delete_at(index)
    end

    Timeout.timeout(timeout, Timeout::Error, "no #{event} event within #{timeout}s (other events: #{@pending})") do
      loop do
        got = @events.pop
        return got if matches.call(got)
        raise "the Node client exited while waiting for #{event}" if got["event"] == "exited"

        @pending << got
      end
    end
  end

  def close
    command(op: "quit")
    @stdin.close
    Timeout.timeout(10) { @process.value }
  rescue IOError, Errno::EPIPE, Timeout::Error
    Process.kill("KILL", @process.pid) rescue nil
  ensure
    @reader.join(1)
  end

  private

  def command(value)
    @stdin.puts(JSON.generate(value))
    @stdin.flush
  end
end
