# frozen_string_literal: true

module Ferrocable
  module Rails
    # What an Action Cable connection takes for its WebSocket during one call: it collects transmissions,
    # stream changes and a close request, and holds the call's request env and state. The handler turns it
    # into the call's response. Nothing here touches a real socket.
    class Socket
      PROTOCOL = "actioncable-v1-json"

      attr_reader :transmissions, :streams, :stopped_streams, :callback_streams, :cstate, :url, :headers, :presence

      # `istates`: a callable giving the raw istate map of a channel identifier.
      def initialize(env, istates)
        @url = env[:url].to_s
        @headers = env[:headers] || {}
        @cstate = State.new(env[:cstate])
        @istate_source = istates
        @istates = {}
        @transmissions = []
        @streams = []
        @stopped_streams = []
        @callback_streams = []
        @stop_all = false
        @presence = nil
        @closed = false
        @rack_env = nil
      end

      # -- the WebSocket interface Action Cable's connection uses

      def transmit(frame)
        @transmissions << frame
      end

      def close
        @closed = true
      end

      def alive?
        !@closed
      end

      def closed?
        @closed
      end

      def possible?
        true
      end

      def protocol
        PROTOCOL
      end

      # -- streams of the subscription this call is about

      # `callback`: the server hands this stream's broadcasts to the handler (a `stream` call) instead of the client.
      def stream_from(broadcasting, callback: false)
        @stopped_streams.delete(broadcasting)
        @streams << broadcasting unless @streams.include?(broadcasting)
        @callback_streams << broadcasting if callback && !@callback_streams.include?(broadcasting)
      end

      def stop_stream(broadcasting)
        @streams.delete(broadcasting)
        @callback_streams.delete(broadcasting)
        @stopped_streams << broadcasting unless @stopped_streams.include?(broadcasting)
      end

      def stop_all_streams
        @streams.clear
        @callback_streams.clear
        @stopped_streams.clear
        @stop_all = true
      end

      def stop_all?
        @stop_all
      end

      # -- presence of the subscription this call is about (the server applies it after the call)

      def presence_join(id, info)
        @presence = {type: "join", id: id.to_s, info: info.nil? ? "" : ActiveSupport::JSON.encode(info)}
      end

      def presence_leave
        @presence = {type: "leave", id: "", info: ""}
      end

      # -- state

      def istate_for(identifier)
        @istates[identifier] ||= State.new(@istate_source.call(identifier))
      end

      # The request env, built on first use (most calls never need it).
      def rack_env
        @rack_env ||= RackEnv.build(@url, @headers)
      end
    end
  end
end
