# frozen_string_literal: true

# An AnyCable gRPC backend written with Debian's ruby-grpc, on code generated from proto/rpc.proto at test
# time. Authenticates with a `user=<name>` cookie; channel "Echo" echoes with a per-subscription counter;
# Disconnect calls are appended to a file as JSON lines.
#
#   ruby grpc_backend.rb <generated code dir> <port> <disconnect log>
$LOAD_PATH.unshift(ARGV.fetch(0))
require "json"
require "grpc"
require "rpc_services_pb"

PORT = ARGV.fetch(1)
DISCONNECTS = ARGV.fetch(2)

class EchoBackend < Anycable::RPC::Service
  def connect(request, _call)
    user = request.env.headers["cookie"].to_s[/user=(\w+)/, 1]
    unless user
      return Anycable::ConnectionResponse.new(status: :FAILURE,
        transmissions: [JSON.generate(type: "disconnect", reason: "unauthorized", reconnect: false)])
    end

    Anycable::ConnectionResponse.new(status: :SUCCESS, identifiers: JSON.generate(user: user),
      transmissions: [JSON.generate(type: "welcome")], env: Anycable::EnvResponse.new(cstate: {"user" => user}))
  end

  def command(message, _call)
    identifier = message.identifier
    case message.command
    when "subscribe"
      room = JSON.parse(identifier)["room"]
      Anycable::CommandResponse.new(status: :SUCCESS, streams: ["echo:#{room}"],
        transmissions: [JSON.generate(identifier: identifier, type: "confirm_subscription")],
        env: Anycable::EnvResponse.new(istate: {"count" => "0"}))
    when "message"
      count = message.env.istate["count"].to_i + 1
      text = JSON.parse(message.data)["text"]
      reply = {echo: text, user: message.env.cstate["user"], count: count}
      Anycable::CommandResponse.new(status: :SUCCESS,
        transmissions: [JSON.generate(identifier: identifier, message: reply)],
        env: Anycable::EnvResponse.new(istate: {"count" => count.to_s}))
    else
      Anycable::CommandResponse.new(status: :SUCCESS, stop_streams: true)
    end
  end

  def disconnect(request, _call)
    File.open(DISCONNECTS, "a") do |file|
      file.puts(JSON.generate(identifiers: request.identifiers, subscriptions: request.subscriptions.to_a,
        istate: request.env.istate.to_h))
    end
    Anycable::DisconnectResponse.new(status: :SUCCESS)
  end
end

server = GRPC::RpcServer.new
server.add_http2_port("127.0.0.1:#{PORT}", :this_port_is_insecure)
server.handle(EchoBackend)
$stdout.puts "ready"
$stdout.flush
server.run_till_terminated_or_interrupted(%w[TERM INT])
