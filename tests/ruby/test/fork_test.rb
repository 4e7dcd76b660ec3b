# frozen_string_literal: true

require_relative "test_helper"

# A server started before `fork` is not silently broken in the child: every use raises ForkError with
# the way out, the child exits cleanly, and the parent's server keeps serving.
class ForkTest < Minitest::Test
  def test_using_a_server_in_a_forked_child_raises_a_fork_error
    server = Ferrocable::Server.new(handler: EchoHandler.new, **QUIET).start
    reader, writer = IO.pipe
    pid = fork do
      reader.close
      report = {owned: server.owned?}
      %i[broadcast stats stop disconnect].each do |operation|
        case operation
        when :broadcast then server.broadcast("s", "d")
        when :stats then server.stats
        when :stop then server.stop
        when :disconnect then server.disconnect("{}")
        end
        report[operation] = "no error"
      rescue Ferrocable::ForkError => e
        report[operation] = e.message
      end
      writer.write(JSON.generate(report))
      writer.close
      # The child now exits normally: at-exit hooks and finalizers run, and must not wait on the parent's threads.
    end
    writer.close
    report = JSON.parse(reader.read)
    status = wait_for(pid, timeout: 15)

    assert status&.success?, "the child must exit by itself, without hanging on the parent's threads"
    refute report["owned"]
    %w[broadcast stats stop disconnect].each do |operation|
      assert_match(/started in process #{Process.pid}.*is a fork of it.*Start the server after forking/m,
        report[operation], "#{operation} in the child")
    end

    assert server.owned?
    client = WsClient.new("ws://127.0.0.1:#{server.port}/cable", headers: {"Cookie" => "user=parent"})
    assert_equal "welcome", client.next_frame["type"], "the parent's server still serves"
    client.close
  ensure
    server&.stop
  end

  private

  def wait_for(pid, timeout:)
    deadline = monotonic + timeout
    loop do
      _, status = Process.waitpid2(pid, Process::WNOHANG)
      return status if status
      if monotonic > deadline
        Process.kill("KILL", pid)
        Process.waitpid2(pid)
        return nil
      end
      sleep 0.05
    end
  end
end
