# frozen_string_literal: true

require "fileutils"
require "json"
require "net/http"
require "rbconfig"
require "uri"

# The dummy Rails app (tests/ruby/dummy) running in its own Puma process, with `plugin :ferrocable`,
# on free ports and its own sqlite database. `env` adds or overrides environment variables, e.g.
# CABLE_ADAPTER=async for plain Action Cable, WEB_CONCURRENCY=2 for cluster mode.
class DummyApp
  ROOT = File.expand_path("../../dummy", __dir__)
  TMP = File.expand_path("../../.tmp", __dir__)

  attr_reader :web_port, :cable_port, :broadcast_port, :log_path, :output_path, :pid

  # Environments of the shared apps: Ferrocable mode, and the same with anycable-rails' extensions loaded too.
  SHARED = {
    ferrocable: {},
    with_anycable_rails: {"DUMMY_ANYCABLE_RAILS" => "1"}
  }.freeze

  # One app per SHARED variant, shared by the tests that need nothing special (stopped after the run).
  def self.shared(variant = :ferrocable)
    (@shared ||= {})[variant] ||= new(name: "shared-#{variant}", env: SHARED.fetch(variant)).start.tap do |app|
      Minitest.after_run { app.stop }
    end
  end

  def initialize(name:, env: {})
    FileUtils.mkdir_p(TMP)
    @name = "#{name}-#{Process.pid}-#{object_id}"
    @log_path = File.join(TMP, "#{@name}.log")
    @output_path = File.join(TMP, "#{@name}.out")
    @env = {
      "RAILS_ENV" => "test",
      "DUMMY_DATABASE" => File.join(TMP, "#{@name}.sqlite3"),
      "DUMMY_LOG" => @log_path
    }.merge(env)
    pick_ports
  end

  # Free ports for Puma, Ferrocable and its broadcast endpoint.
  def pick_ports
    @web_port = Ports.free
    @cable_port = Ports.free
    @broadcast_port = Ports.free
    @env = @env.merge("PORT" => @web_port.to_s, "ANYCABLE_PORT" => @cable_port.to_s,
      "ANYCABLE_HTTP_BROADCAST_PORT" => @broadcast_port.to_s)
  end
  private :pick_ports

  def ferrocable?
    @env.fetch("CABLE_ADAPTER", "ferrocable") == "ferrocable"
  end

  # Starts Puma and waits for its listeners. A free port can be taken by another process before Puma binds it;
  # then the app is started again on other ports.
  def start(timeout: 60, attempts: 3)
    run_ruby!("bin/setup_db")
    attempts.times do |attempt|
      @pid = Process.spawn(@env, RbConfig.ruby, "-S", "puma", "-C", "config/puma.rb",
        chdir: ROOT, out: @output_path, err: %i[child out], pgroup: true)
      begin
        Ports.wait_open(@web_port, timeout: timeout, pid: @pid)
        Ports.wait_open(@cable_port, timeout: timeout, pid: @pid) if ferrocable?
        return self
      rescue Ports::Exited
        raise unless output.include?("Address already in use") && attempt + 1 < attempts

        @pid = nil
        pick_ports
      end
    end
  rescue StandardError
    stop
    raise $!.exception("#{$!.message}\n--- puma output:\n#{output}")
  end

  # Graceful stop (SIGTERM), then SIGKILL after `timeout`. Returns the exit status.
  def stop(timeout: 30)
    return unless @pid

    ProcessGroup.stop(@pid, timeout: timeout)
  ensure
    @pid = nil
  end

  # Runs a script of the dummy app (with its environment) and returns its output; raises when it fails.
  def run_ruby!(*args, env: {})
    out = IO.popen(@env.merge(env), [RbConfig.ruby, *args, {chdir: ROOT, err: %i[child out]}], &:read)
    raise "#{args.join(" ")} failed:\n#{out}" unless $?.success?

    out
  end

  def ws_url(query = nil)
    port = ferrocable? ? @cable_port : @web_port
    "ws://127.0.0.1:#{port}/cable#{query ? "?#{query}" : ""}"
  end

  def get(path)
    Net::HTTP.get_response(URI("http://127.0.0.1:#{@web_port}#{path}"))
  end

  def post(path, params = {})
    Net::HTTP.post_form(URI("http://127.0.0.1:#{@web_port}#{path}"), params)
  end

  def post_json(path, params = {})
    response = post(path, params)
    raise "POST #{path}: HTTP #{response.code} #{response.body}" unless response.code == "200"

    JSON.parse(response.body)
  end

  # Logs `name` in; returns the Cookie header a browser would send (signed user id, encrypted nickname,
  # session).
  def login(name, nickname: nil, at: nil)
    response = post("/login", {name: name, nickname: nickname, at: at}.compact)
    raise "login failed: HTTP #{response.code}" unless response.code == "200"

    response.get_fields("set-cookie").map { |cookie| cookie.split(";").first }.join("; ")
  end

  def events(user)
    JSON.parse(get("/events?user=#{URI.encode_www_form_component(user)}").body)
  end

  # Waits until `events(user)` satisfies the block; returns them.
  def wait_for_events(user, timeout: 10)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    loop do
      found = events(user)
      return found if yield(found)
      raise "events of #{user} never matched: #{found.inspect}" if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

      sleep 0.05
    end
  end

  def log
    File.exist?(@log_path) ? File.read(@log_path) : ""
  end

  def output
    File.exist?(@output_path) ? File.read(@output_path) : ""
  end
end
