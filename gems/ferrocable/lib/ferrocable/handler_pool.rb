# frozen_string_literal: true

module Ferrocable
  # The Ruby threads that run handler calls. Each waits for a job without the GVL (so the rest of the
  # process keeps running), runs the handler with the GVL, and answers. A handler that raises produces an
  # ERROR result for that call only, logged once; the thread goes on with the next job.
  class HandlerPool
    # Exceptions turned into ERROR results; anything else (exit, signals) goes on up.
    HANDLER_FAILURES = [StandardError, ScriptError, SystemStackError].freeze

    attr_reader :size

    def initialize(dispatcher, handler, size:, logger:)
      raise ArgumentError, "pool_size must be at least 1" unless size.is_a?(Integer) && size >= 1

      @dispatcher = dispatcher
      @handler = handler
      @size = size
      @logger = logger
      @threads = []
    end

    def start
      @threads = Array.new(@size) do |index|
        Thread.new do
          Thread.current.name = "ferrocable-#{index}"
          Thread.current.report_on_exception = false
          work
        end
      end
      self
    end

    # Stops taking jobs; waits `timeout` seconds for running handlers, then kills what is left.
    def stop(timeout: 5)
      @dispatcher.close
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
      @threads.each do |thread|
        left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
        thread.kill unless thread.join([left, 0].max)
      end
      @threads.clear
    end

    def alive
      @threads.count(&:alive?)
    end

    private

    def work
      loop do
        job = @dispatcher.next_job
        if job.nil?
          break if @dispatcher.closed?

          next # interrupted: Ruby handles it here, then we wait again
        end
        begin
          run(job)
        rescue StandardError => e
          # Never lose a pool thread to one call (e.g. a response whose `to_h` raises).
          @logger.error("Ferrocable: handler thread recovered from #{e.class}: #{e.message}")
        end
      end
    end

    def run(job)
      kind = job.kind
      request = job.request
      Thread.current[:ferrocable_sid] = job.sid
      response =
        begin
          @handler.public_send(kind, request)
        rescue *HANDLER_FAILURES => e
          log_failure(kind, request, e)
          {status: :error, error_msg: "#{location(kind, request)}: #{e.class}: #{e.message}"}
        end
      begin
        job.respond(response)
      rescue StandardError => e
        @logger.error("Ferrocable: #{location(kind, request)}: invalid handler response: #{e.message}")
        job.respond({status: :error, error_msg: "#{location(kind, request)}: #{e.message}"})
      end
    ensure
      Thread.current[:ferrocable_sid] = nil
      # An unanswered job (the thread is being killed) fails its call now rather than at the timeout.
      job&.release
    end

    def log_failure(kind, request, error)
      trace = Array(error.backtrace).first(10).map { |line| "  #{line}" }.join("\n")
      @logger.error("Ferrocable: #{location(kind, request)} raised #{error.class}: #{error.message}\n#{trace}")
    end

    # Where a call failed, as the core names it: `ChatChannel#speak` for commands, `connect`, `disconnect`.
    def location(kind, request)
      return kind.to_s unless kind == :command

      channel = (JSON.parse(request[:identifier])["channel"] rescue nil)
      action = request[:command] == "message" ? (JSON.parse(request[:data])["action"] rescue nil) : request[:command]
      "#{channel || "(unknown channel)"}##{action || "(unknown action)"}"
    end
  end
end
