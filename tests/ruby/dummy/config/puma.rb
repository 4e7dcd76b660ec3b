# frozen_string_literal: true

# Puma for the dummy app; `plugin :ferrocable` starts Ferrocable in this process (single mode) or in
# worker 0 (WEB_CONCURRENCY > 0). With CABLE_ADAPTER=async it stays off and Action Cable serves /cable.
plugin :ferrocable

bind "tcp://127.0.0.1:#{ENV.fetch("PORT")}"
threads 5, 5
workers Integer(ENV.fetch("WEB_CONCURRENCY", "0"))
environment ENV.fetch("RAILS_ENV", "test")
preload_app! if ENV["DUMMY_PRELOAD"] == "1"
