# frozen_string_literal: true

require_relative "lib/ferrocable/version"

# Two gems come from this file (scripts/package.sh, `make package`, assembles the folder of each):
# - the source gem: Ruby code plus the Rust sources under ext/ferrocable, compiled by Cargo when installed;
# - with FERROCABLE_GEM_PLATFORM=x86_64-linux, the precompiled gem of that platform: Ruby code, the extension and
#   the server binary, built for the Ruby that builds the gem (the extension is bound to that Ruby's ABI).
# In a repository checkout the folder is also a path gem whose extension `rake compile` builds.
Gem::Specification.new do |spec|
  spec.name = "ferrocable"
  spec.version = Ferrocable::VERSION
  spec.summary = "AnyCable-compatible WebSocket server in Rust, running inside your Ruby or Rails process"
  spec.description = "Ferrocable holds WebSocket clients, subscriptions and their state in Rust and runs " \
    "unchanged Action Cable connections and channels in-process (adapter: ferrocable), or talks to an " \
    "AnyCable gRPC backend. The ferrocable executable is the standalone server."
  spec.license = "MIT"
  spec.authors = ["Ferrocable contributors"]
  spec.homepage = "https://github.com/ferrocable/ferrocable"
  spec.required_ruby_version = ">= 3.1"

  spec.files = Dir["lib/**/*.rb", "exe/*", "README.md", "ferrocable.gemspec"]
  spec.require_paths = ["lib"]
  spec.bindir = "exe"
  spec.executables = ["ferrocable"]
  if (platform = ENV["FERROCABLE_GEM_PLATFORM"])
    spec.platform = Gem::Platform.new(platform)
    spec.required_ruby_version = "~> #{RUBY_VERSION[/\A\d+\.\d+/]}.0"
    spec.files += ["lib/ferrocable/ferrocable_ruby.#{RbConfig::CONFIG["DLEXT"]}", "lib/ferrocable/bin/ferrocable"]
  else
    spec.extensions = ["ext/ferrocable/extconf.rb"]
    spec.files += Dir["ext/ferrocable/**/*"].reject { |path| File.directory?(path) || path.start_with?("ext/ferrocable/target/") }
  end
  # No runtime dependencies: Rails integration loads only when the app already has Rails (6.1 or newer).
end
