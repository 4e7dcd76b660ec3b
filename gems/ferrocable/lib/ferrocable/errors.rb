# frozen_string_literal: true

module Ferrocable
  # Every error this gem raises.
  class Error < StandardError; end

  # The server could not start. `code` is stable: ECONFIG, EADDRINUSE, EBIND or ERPC.
  class StartError < Error
    CODE = "ESTART"

    def code
      self.class::CODE
    end
  end

  # An unknown option, a value that does not parse, or options that do not fit together.
  class ConfigError < StartError
    CODE = "ECONFIG"
  end

  # The port is taken by another process (or another server in this one).
  class AddressInUseError < StartError
    CODE = "EADDRINUSE"
  end

  # The address cannot be bound for another reason (permissions, unknown host).
  class BindError < StartError
    CODE = "EBIND"
  end

  # The gRPC client for `rpc_host` could not be created.
  class RpcError < StartError
    CODE = "ERPC"
  end

  # A server started before `fork` was used in the child, where its threads and sockets do not exist.
  class ForkError < Error; end

  # The server is not started, or already stopped.
  class NotRunningError < Error; end

  # A presence set cannot be read: the server has no broker that keeps presence, or it cannot be reached.
  class PresenceError < Error; end

  # A handler returned something that does not mirror the RPC response message.
  class InvalidResponseError < Error; end

  # An HTTP broadcast to a server in another process failed.
  class BroadcastError < Error; end
end
