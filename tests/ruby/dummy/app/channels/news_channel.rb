# frozen_string_literal: true

# `stream_from` with a coder and a block that rewrites each broadcast, counting them in the subscription's
# state; with `raw` the same stream without a block (its broadcasts go to the client unchanged).
class NewsChannel < ApplicationCable::Channel
  state_attr_accessor :seen

  def subscribed
    self.seen = 0
    return stream_from("news") if params[:raw]

    stream_from("news", coder: ActiveSupport::JSON) do |message|
      self.seen = seen + 1
      transmit({headline: message["headline"].upcase, seen: seen, reader: current_user.name})
    end
  end
end
