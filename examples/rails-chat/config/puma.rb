# frozen_string_literal: true

# `plugin :ferrocable` starts Ferrocable inside Puma: in this process in single mode, in worker 0 when
# WEB_CONCURRENCY > 0 (the other workers broadcast to it over HTTP).
plugin :ferrocable

port Integer(ENV.fetch("PORT", "3000"))
threads 5, 5
workers Integer(ENV.fetch("WEB_CONCURRENCY", "0"))
environment ENV.fetch("RAILS_ENV", "production")
