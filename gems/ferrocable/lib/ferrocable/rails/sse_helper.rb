# frozen_string_literal: true

module Ferrocable
  module Rails
    # View helpers that tell clients where Server-Sent Events live (`sse: true`), as `action_cable_meta_tag`
    # does for WebSockets: `Ferrocable::Rails.config.sse_url`, with the subscription as query parameters.
    #
    #   <%= ferrocable_sse_meta_tag %>
    #   <div data-events="<%= ferrocable_sse_url(signed_stream: signed_stream_name([current_user, :feed])) %>"></div>
    #
    # Both raise Ferrocable::ConfigError when `sse` is off, so a page cannot point clients at nothing.
    module SseHelper
      def ferrocable_sse_url(**params)
        url = ::Ferrocable::Rails.config.sse_url
        raise ::Ferrocable::ConfigError, "Server-Sent Events are off: set `sse: true` (ANYCABLE_SSE=true)" unless url
        return url if params.empty?

        "#{url}?#{params.to_query}"
      end

      def ferrocable_sse_meta_tag
        tag.meta(name: "ferrocable-sse-url", content: ferrocable_sse_url)
      end
    end
  end
end
