# frozen_string_literal: true

# Uses Action Cable timers, which cannot run when channels live for one call: Ferrocable warns at boot.
class TickerChannel < ApplicationCable::Channel
  periodically :tick, every: 1

  def subscribed
    stream_from "ticker"
  end

  def tick
    transmit({tick: Time.now.to_i})
  end
end
