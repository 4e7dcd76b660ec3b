# frozen_string_literal: true

require "socket"

module Ports
  module_function

  # A port free on 127.0.0.1 right now.
  def free
    server = TCPServer.new("127.0.0.1", 0)
    server.addr[1]
  ensure
    server&.close
  end

  # The process that was to listen ended first.
  class Exited < StandardError; end

  # Waits until something accepts connections on the port; with `pid`, raises Exited as soon as that process
  # has ended.
  def wait_open(port, timeout: 30, pid: nil)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    begin
      TCPSocket.new("127.0.0.1", port).close
    rescue SystemCallError
      raise Exited, "the process to listen on port #{port} ended" if pid && Process.waitpid(pid, Process::WNOHANG)
      raise "nothing listens on port #{port} after #{timeout}s" if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

      sleep 0.05
      retry
    end
  end
end
