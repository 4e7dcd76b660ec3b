# frozen_string_literal: true

require_relative "lib/ferrocable/version"

Gem::Specification.new do |spec|
  spec.name = "ferrocable"
  spec.version = Ferrocable::VERSION
  spec.summary = "AnyCable-compatible WebSocket server in Rust, running inside your Ruby or Rails process"
  spec.description = "Ferrocable holds WebSocket clients, subscriptions and their state in Rust and runs " \
    "unchanged Action Cable connections and channels in-process (adapter: ferrocable), or talks to an " \
    "AnyCable gRPC backend."
  spec.license = "MIT"
  spec.authors = ["Ferrocable contributors"]
  spec.homepage = "https://github.com/ferrocable/ferrocable"
  spec.required_ruby_version = ">= 3.1"

  spec.files = Dir["lib/**/*.rb", "Rakefile", "README.md", "ferrocable.gemspec"]
  spec.require_paths = ["lib"]
  # No runtime dependencies: Rails integration loads only when the app already has Rails (6.1 or newer).
end
