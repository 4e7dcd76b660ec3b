# frozen_string_literal: true

require_relative "test_helper"
require "fileutils"
require "rbconfig"

# Ferrocable::Server.new(rpc_host:) serves an app that keeps its AnyCable gRPC backend: here one built with
# Debian's ruby-grpc on code generated from proto/rpc.proto by grpc_tools_ruby_protoc when the test runs.
class GrpcFallbackTest < Minitest::Test
  PROTO_DIR = File.expand_path("../../../proto", __dir__)
  BACKEND = File.expand_path("support/grpc_backend.rb", __dir__)

  def setup
    @dir = File.join(DummyApp::TMP, "grpc-#{Process.pid}")
    FileUtils.rm_rf(@dir)
    FileUtils.mkdir_p(@dir)
    generated = system("grpc_tools_ruby_protoc", "-I", PROTO_DIR, "--ruby_out=#{@dir}", "--grpc_out=#{@dir}",
      File.join(PROTO_DIR, "rpc.proto"))
    assert generated, "grpc_tools_ruby_protoc failed (package ruby-grpc-tools)"
    @disconnects = File.join(@dir, "disconnects.jsonl")
    port = Ports.free
    @backend_out = IO.popen([RbConfig.ruby, BACKEND, @dir, port.to_s, @disconnects, {err: %i[child out]}])
    assert_equal "ready", @backend_out.gets&.strip
    @server = Ferrocable::Server.new(rpc_host: "127.0.0.1:#{port}", **QUIET).start
  end

  def teardown
    @client&.close
    @server&.stop
    if @backend_out
      Process.kill("TERM", @backend_out.pid)
      @backend_out.close
    end
    FileUtils.rm_rf(@dir)
  end

  def test_a_grpc_backend_serves_connect_commands_and_disconnect
    @client = WsClient.new("ws://127.0.0.1:#{@server.port}/cable", headers: {"Cookie" => "user=tom"})
    assert_equal({"type" => "welcome"}, @client.next_frame)
    identifier = JSON.generate(channel: "Echo", room: "g")
    @client.subscribe(identifier)
    assert_equal({"identifier" => identifier, "type" => "confirm_subscription"}, @client.next_frame)
    @client.perform(identifier, "echo", text: "one")
    @client.perform(identifier, "echo", text: "two")
    assert_equal({"echo" => "one", "user" => "tom", "count" => 1}, @client.next_frame["message"])
    assert_equal({"echo" => "two", "user" => "tom", "count" => 2}, @client.next_frame["message"])

    @server.broadcast("echo:g", {from: "ruby"})
    assert_equal({"from" => "ruby"}, @client.next_frame["message"])

    @client.close
    @client = nil
    line = eventually(timeout: 10) { File.exist?(@disconnects) && File.read(@disconnects).lines.first }
    assert_equal({"identifiers" => '{"user":"tom"}', "subscriptions" => [identifier],
                  "istate" => {identifier => '{"count":"2"}'}}, JSON.parse(line))
    assert_operator @server.stats[:rpc_call_total], :>=, 5
  end

  def test_the_backend_rejects_connections_it_does_not_know
    @client = WsClient.new("ws://127.0.0.1:#{@server.port}/cable")
    assert_equal({"type" => "disconnect", "reason" => "unauthorized", "reconnect" => false}, @client.next_frame)
  end
end
