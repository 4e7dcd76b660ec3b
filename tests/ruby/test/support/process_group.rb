# frozen_string_literal: true

# Processes the suite starts in their own process group (spawn with `pgroup: true`): Puma with its workers, or a
# command and what it runs.
module ProcessGroup
  module_function

  # Graceful stop (SIGTERM to the group), then SIGKILL after `timeout`. Returns the leader's exit status (nil when
  # it was already reaped).
  def stop(pid, timeout: 30)
    Process.kill("TERM", -pid)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    loop do
      _, status = Process.waitpid2(pid, Process::WNOHANG)
      return status if status

      if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
        Process.kill("KILL", -pid)
        return Process.waitpid2(pid).last
      end
      sleep 0.05
    end
  rescue Errno::ESRCH, Errno::ECHILD
    nil
  end
end
