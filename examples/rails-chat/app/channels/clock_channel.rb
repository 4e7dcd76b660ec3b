# frozen_string_literal: true

# An Action Cable timer, for the cost of periodic timers (tests/load/rails-timers.sh): every second, each
# subscription counts in its state and transmits the count.
class ClockChannel < ApplicationCable::Channel
  state_attr_accessor :ticks

  periodically :tick, every: 1

  def subscribed
    self.ticks = 0
  end

  def tick
    self.ticks = ticks + 1
    transmit({tick: ticks})
  end
end
