# frozen_string_literal: true

# A channel defined in an initializer (before the app's channels load) that keeps Ruby values in
# `state_attr_accessor` attributes and reads them back in later calls, as it would under Action Cable.
# `samples=1` on the connection URL also stores StateSamples in the connection's state.
class StateChannel < ActionCable::Channel::Base
  state_attr_accessor :user, :count, :samples

  def subscribed
    self.user = {name: params["name"]}
    self.count = 0
    self.samples = StateSamples.values(connection.current_user)
    stream_from "state_#{params["name"]}"
  end

  def tick
    self.count = count + 1
    transmit({count: count, name: user[:name]})
  end

  def check
    transmit({channel: StateSamples.check(samples, connection.current_user),
              connection: StateSamples.check(connection.samples, connection.current_user)})
  end

  def unsubscribed
    Event.create!(kind: "state_unsubscribed", user: user[:name],
      detail: JSON.generate(count: count, samples: StateSamples.check(samples, connection.current_user)))
  end
end
