# frozen_string_literal: true

# The channel the load tool (tests/load, `ferrocable-bench`) drives: it streams from its `stream` parameter,
# `echo` transmits the data back, `broadcast` publishes it to the stream through Action Cable's broadcast
# (the cable adapter), then answers with `broadcastResult`. With `callback: true` it streams through a coder
# and a block that transmits each message (what a stream callback costs; tests/load/rails-inprocess.sh).
class BenchmarkChannel < ApplicationCable::Channel
  def subscribed
    if params[:callback]
      stream_from(stream_name, coder: ActiveSupport::JSON) { |message| transmit(message) }
    else
      stream_from stream_name
    end
  end

  def echo(data)
    transmit(data)
  end

  def broadcast(data)
    ActionCable.server.broadcast(stream_name, data)
    transmit(data.merge("action" => "broadcastResult"))
  end

  private

  def stream_name
    params[:stream].presence || "all"
  end
end
