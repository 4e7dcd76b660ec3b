# frozen_string_literal: true

# Loads the compiled extension (bindings-ruby), which `rake compile` places next to this file.
begin
  require "ferrocable/ferrocable_ruby"
rescue LoadError => e
  raise LoadError, "the Ferrocable native extension is not built (#{e.message}). " \
    "Run `rake compile` in #{File.expand_path("../..", __dir__)} (needs Rust, ruby-dev and libclang-dev)."
end
