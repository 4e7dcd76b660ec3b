# frozen_string_literal: true

require "puma/plugin"
require "ferrocable/puma"

# `plugin :ferrocable` in config/puma.rb starts Ferrocable in exactly one process:
# - single mode: in the Puma process, once it has booted the app;
# - cluster mode: in worker 0 (the other workers broadcast to it over HTTP), restarted with that worker.
# A server is never started in the master before workers fork.
Puma::Plugin.create do
  def config(dsl)
    Ferrocable::Puma.plugin!
    dsl.on_worker_boot { |index| Ferrocable::Puma.run_here! if index.to_i.zero? }
    dsl.on_worker_shutdown { |_index| Ferrocable::Puma.stop! }
  end

  def start(launcher)
    return if launcher.options[:workers].to_i.positive?

    launcher.events.on_booted { Ferrocable::Puma.run_here! }
  end
end
