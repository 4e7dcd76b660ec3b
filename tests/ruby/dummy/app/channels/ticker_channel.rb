# frozen_string_literal: true

# Action Cable timers, a method and a block. Under Ferrocable the server runs them per subscription: each tick
# sees the state the last one left, and with `slow` a tick outlasts the interval (the next waits for it).
class TickerChannel < ApplicationCable::Channel
  state_attr_accessor :ticks

  periodically :tick, every: 0.2
  periodically(every: 0.5) { transmit({block: ticks}) }

  def subscribed
    self.ticks = 0
    stream_from "ticker"
  end

  def tick
    self.ticks = ticks + 1
    sleep 0.3 if params[:slow]
    transmit({tick: ticks})
  end
end
