# frozen_string_literal: true

# Gives `stream_from` a block, which cannot run per message under Ferrocable: it warns once, and
# broadcasts reach clients as they were sent.
class NewsChannel < ApplicationCable::Channel
  def subscribed
    stream_from("news") { |message| transmit({wrapped: message}) }
  end
end
