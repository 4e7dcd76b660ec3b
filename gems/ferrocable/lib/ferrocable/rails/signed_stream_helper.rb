# frozen_string_literal: true

require "ferrocable/signing"

module Ferrocable
  module Rails
    # The `signed_stream_name` view helper: a signed name for `cable.streamFromSigned(...)` or
    # `{channel: "$pubsub", signed_stream_name: ...}`, signed with the configured streams secret
    # (`streams_secret`, else `secret`).
    #
    #   <div data-stream="<%= signed_stream_name("notifications/#{current_user.id}") %>"></div>
    #   <div data-stream="<%= signed_stream_name([current_user, :notifications]) %>"></div>
    #
    # Like turbo-rails, records become their GlobalID (or `to_param`) and arrays are joined with ":".
    module SignedStreamHelper
      def signed_stream_name(streamables)
        ::Ferrocable.signed_stream_name(SignedStreamHelper.stream_name_from(streamables))
      end

      def self.stream_name_from(streamables)
        if streamables.is_a?(Array)
          streamables.map { |streamable| stream_name_from(streamable) }.join(":")
        elsif streamables.respond_to?(:to_gid_param)
          streamables.to_gid_param
        else
          streamables.to_param
        end
      end
    end
  end
end
