# frozen_string_literal: true

# Loads the compiled extension (bindings-ruby): shipped in the precompiled gem, built by Cargo when the source gem
# was installed, or placed next to this file by `rake compile` in a repository checkout.
begin
  require "ferrocable/ferrocable_ruby"
rescue LoadError => e
  raise LoadError, "the Ferrocable native extension is missing (#{e.message}). Install the precompiled gem of " \
    "your platform, or the source gem with Rust available to compile it; in a checkout of the repository, run " \
    "`rake compile` in #{File.expand_path("../..", __dir__)} (needs Rust, ruby-dev and libclang-dev)."
end
