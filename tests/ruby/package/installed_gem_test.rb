# frozen_string_literal: true

# The gems of dist/ (`make package`) as users install them: `gem install --local` into a new GEM_HOME outside
# the repository, then a new Rails app whose Gemfile says `gem "ferrocable"`, resolved offline from that GEM_HOME
# and Debian's gems, booted with `bundle exec puma` (adapter: ferrocable, plugin :ferrocable) and serving a
# @rails/actioncable client; `bundle exec ferrocable` runs the standalone server. The precompiled gem installs
# and runs with no Rust on PATH; the source gem compiles with Cargo when installed. Nothing the app runs may come
# from the repository. Runs outside Bundler: `ruby tests/ruby/package/installed_gem_test.rb` (make test-package).
require "minitest/autorun"
require "fileutils"
require "json"
require "open3"
require "rbconfig"
require "rubygems/package"
require "tmpdir"
require_relative "../test/support/ports"
require_relative "../test/support/process_group"
require_relative "../test/support/node_client"

class InstalledGemTest < Minitest::Test
  REPO = File.expand_path("../../..", __dir__)
  VERSION = File.read(File.join(REPO, "gems/ferrocable/lib/ferrocable/version.rb"))[/VERSION = "(.+)"/, 1]
  SOURCE_GEM = File.join(REPO, "dist", "ferrocable-#{VERSION}.gem")
  PRECOMPILED_GEM = File.join(REPO, "dist", "ferrocable-#{VERSION}-x86_64-linux.gem")
  TMP = Dir.mktmpdir("ferrocable-gem-")
  Minitest.after_run { FileUtils.rm_rf(TMP) }
  CARGO_HOME = ENV.fetch("CARGO_HOME", File.join(Dir.home, ".cargo"))
  RUSTUP_HOME = ENV.fetch("RUSTUP_HOME", File.join(Dir.home, ".rustup"))
  CARGO_BIN = File.join(CARGO_HOME, "bin")

  # The environment of everything a user's machine runs: no Bundler or gem settings of this process, no Rust
  # (PATH without ~/.cargo/bin, no CARGO_*), nothing of the repository on PATH; the gems of `gem_home` and of
  # Debian's system directories.
  def user_env(gem_home, rust: false)
    env = ENV.to_h.reject do |name, _|
      name.start_with?("BUNDLE", "GEM_", "RUBY", "CARGO", "RUSTUP", "ANYCABLE_", "npm_") || name == "PORT"
    end
    path = ENV.fetch("PATH").split(":").reject { |dir| dir.start_with?(REPO) || (!rust && dir == CARGO_BIN) }
    path.unshift(CARGO_BIN) if rust && !path.include?(CARGO_BIN) && File.directory?(CARGO_BIN)
    system_gems = Gem.default_path - [Gem.user_dir]
    env = env.merge("GEM_HOME" => gem_home, "GEM_PATH" => [gem_home, *system_gems].join(":"), "PATH" => path.join(":"),
      "HOME" => File.join(TMP, "home"))
    # With Rust: the toolchain and crate cache of this machine (they live under the real home directory).
    return env.merge("CARGO_HOME" => CARGO_HOME, "RUSTUP_HOME" => RUSTUP_HOME) if rust

    cargo = env["PATH"].split(":").map { |dir| File.join(dir, "cargo") }.find { |file| File.executable?(file) }
    raise "cargo is still on PATH at #{cargo}: the test cannot hide Rust (install it with rustup)" if cargo

    env
  end

  def run!(env, *cmd, chdir:)
    out, status = Open3.capture2e(env, *cmd, chdir: chdir)
    assert status.success?, "#{cmd.join(" ")} failed:\n#{out}"
    out
  end

  def install(gem_file, name, rust: false, extra_env: {})
    gem_home = File.join(TMP, name, "gems")
    FileUtils.mkdir_p([gem_home, File.join(TMP, "home")])
    out = run!(user_env(gem_home, rust: rust).merge(extra_env), "gem", "install", "--local", "--no-document",
      "--install-dir", gem_home, gem_file, chdir: File.join(TMP, name))
    [gem_home, out]
  end

  def test_the_precompiled_gem_installs_without_rust_and_serves_a_new_rails_app
    assert File.exist?(PRECOMPILED_GEM), "#{PRECOMPILED_GEM} exists (run `make package` first)"
    gem_home, out = install(PRECOMPILED_GEM, "precompiled")
    refute_match(/Building native extensions/, out)
    assert File.exist?(File.join(gem_home, "gems", "ferrocable-#{VERSION}-x86_64-linux", "lib", "ferrocable", "ferrocable_ruby.so"))

    serve_a_rails_app(gem_home, "precompiled")
  end

  def test_the_source_gem_compiles_with_cargo_when_installed_and_serves_a_new_rails_app
    assert File.exist?(SOURCE_GEM), "#{SOURCE_GEM} exists (run `make package` first)"
    files = Gem::Package.new(SOURCE_GEM).contents
    assert_includes files, "ext/ferrocable/extconf.rb"
    assert_includes files, "ext/ferrocable/Cargo.lock"
    assert files.none? { |file| file.end_with?(".so") || file.include?("/target/") || file.start_with?("ext/ferrocable/crates/core/tests/") }

    # Without cargo the install stops at once and says what to do.
    failed_home = File.join(TMP, "no-rust", "gems")
    FileUtils.mkdir_p(failed_home)
    out, status = Open3.capture2e(user_env(failed_home), "gem", "install", "--local", "--no-document",
      "--install-dir", failed_home, SOURCE_GEM, chdir: File.join(TMP, "no-rust"))
    refute status.success?
    assert_match(/`cargo` not found\. Installing the ferrocable source gem compiles its native extension/, out)

    # The dependencies built for this run's packages are reused from target/; the gem's own crates compile, from the
    # gem's copy of their sources (Cargo's log of the install says so), into files the install then copies. (Cargo
    # names a cdylib without a hash, so target/release/libferrocable_ruby.so is afterwards the one the gem built
    # from the same sources.)
    target = File.join(REPO, "target")
    started = Time.now
    gem_home, out = install(SOURCE_GEM, "source", rust: true, extra_env: {"CARGO_TARGET_DIR" => target})
    assert_match(/Building native extensions/, out)
    extension_dir = Dir[File.join(gem_home, "extensions", "*", "*", "ferrocable-#{VERSION}")].first
    assert extension_dir, "the extension was installed (#{out})"
    build_log = File.read(File.join(extension_dir, "gem_make.out"))
    crates = File.join(gem_home, "gems", "ferrocable-#{VERSION}", "ext", "ferrocable", "crates")
    %w[core bindings-ruby].zip(%w[ferrocable ferrocable-ruby]).each do |folder, crate|
      assert_includes build_log, "Compiling #{crate} v#{VERSION} (#{crates}/#{folder})"
    end
    %w[libferrocable_ruby.so ferrocable].each do |built|
      assert_operator File.mtime(File.join(target, "release", built)), :>=, started, "#{built} was built by the install"
    end
    assert File.exist?(File.join(extension_dir, "ferrocable", "ferrocable_ruby.so"))
    assert File.executable?(File.join(extension_dir, "ferrocable", "bin", "ferrocable"))

    serve_a_rails_app(gem_home, "source")
  end

  private

  # A new Rails app using the gems of `gem_home`: boots in Puma, serves a client, runs `bundle exec ferrocable`.
  def serve_a_rails_app(gem_home, name)
    dir = File.join(TMP, name, "app")
    write_rails_app(dir)
    env = user_env(gem_home).merge("BUNDLE_GEMFILE" => File.join(dir, "Gemfile"))
    run!(env, "bundle", "lock", "--local", chdir: dir)
    assert_match(/^    ferrocable \(#{Regexp.escape(VERSION)}(-x86_64-linux)?\)$/, File.read(File.join(dir, "Gemfile.lock")))

    web_port, cable_port, broadcast_port = Ports.free, Ports.free, Ports.free
    app_env = env.merge("PORT" => web_port.to_s, "ANYCABLE_HOST" => "127.0.0.1", "ANYCABLE_PORT" => cable_port.to_s,
      "ANYCABLE_HTTP_BROADCAST_PORT" => broadcast_port.to_s, "RAILS_ENV" => "production")
    log = File.join(dir, "puma.log")
    pid = Process.spawn(app_env, "bundle", "exec", "puma", "-C", "config/puma.rb", chdir: dir, out: log,
      err: %i[child out], pgroup: true)
    begin
      Ports.wait_open(web_port, timeout: 60, pid: pid)
      Ports.wait_open(cable_port, timeout: 60, pid: pid)
      assert_loaded_from(Integer(File.read(File.join(dir, "tmp", "puma.pid"))), gem_home, "ferrocable_ruby.so")

      client = NodeClient.new("ws://127.0.0.1:#{cable_port}/cable?user=alice")
      begin
        client.subscribe("echo", {channel: "EchoChannel"})
        client.expect("connected")
        client.perform("echo", "speak", {text: "hello"})
        received = client.expect("received")
        assert_equal({"text" => "hello", "from" => "alice"}, received["data"])
      ensure
        client.close
      end
    rescue Minitest::Assertion, StandardError
      raise $!.exception("#{$!.message}\n--- puma output:\n#{File.read(log) rescue ""}")
    ensure
      ProcessGroup.stop(pid)
    end

    run_the_standalone_server(env, dir, gem_home)
  end

  # `bundle exec ferrocable`: --version, then a server in public mode whose process is the gem's binary.
  def run_the_standalone_server(env, dir, gem_home)
    assert_equal "ferrocable #{VERSION}", run!(env, "bundle", "exec", "ferrocable", "--version", chdir: dir).strip
    port = Ports.free
    pid = Process.spawn(env, "bundle", "exec", "ferrocable", "--host", "127.0.0.1", "--port", port.to_s, "--public",
      "--http_broadcast_port", Ports.free.to_s, chdir: dir, out: File::NULL, err: File::NULL, pgroup: true)
    begin
      Ports.wait_open(port, timeout: 30, pid: pid)
      executable = File.readlink("/proc/#{pid}/exe")
      assert executable.start_with?(gem_home + "/"), "the server is the gem's binary (#{executable})"
    ensure
      status = ProcessGroup.stop(pid)
    end
    assert status&.success?, "the server stopped gracefully on SIGTERM (#{status.inspect})"
  end

  # The process has exactly one `library` mapped, from `gem_home`, and nothing from the repository.
  def assert_loaded_from(pid, gem_home, library)
    files = File.readlines("/proc/#{pid}/maps").filter_map { |line| line.split(" ", 6)[5]&.strip }.uniq
    loaded = files.select { |file| file.end_with?("/#{library}") }
    assert_equal 1, loaded.size, "one #{library} is loaded: #{loaded}"
    assert loaded.first.start_with?(gem_home + "/"), "#{loaded.first} comes from #{gem_home}"
    assert_empty files.select { |file| file.start_with?(REPO + "/") }, "nothing of the repository is mapped"
  end

  # The smallest Rails app that uses Ferrocable the documented way: Gemfile, config/cable.yml with
  # `adapter: ferrocable`, `plugin :ferrocable` in config/puma.rb, an Action Cable connection and channel.
  def write_rails_app(dir)
    files = {
      "Gemfile" => <<~RUBY,
        source "https://rubygems.org"
        gem "rails", "~> 6.1.0"
        gem "puma"
        gem "ferrocable"
      RUBY
      "config.ru" => <<~RUBY,
        require_relative "config/environment"
        run Rails.application
      RUBY
      "config/boot.rb" => %(require "bundler/setup"\n),
      "config/application.rb" => <<~RUBY,
        require_relative "boot"
        require "rails"
        require "action_controller/railtie"
        require "action_cable/engine"
        Bundler.require(*Rails.groups)

        module App
          class Application < Rails::Application
            config.load_defaults 6.1
            config.eager_load = true
            config.secret_key_base = "installed-gem-test-secret-key-base"
            config.hosts.clear
            config.logger = ActiveSupport::Logger.new($stdout)
            config.log_level = :warn
          end
        end
      RUBY
      "config/environment.rb" => %(require_relative "application"\nRails.application.initialize!\n),
      "config/routes.rb" => %(Rails.application.routes.draw { get "/up", to: proc { [200, {}, ["ok"]] } }\n),
      "config/cable.yml" => "production:\n  adapter: ferrocable\n",
      "config/puma.rb" => <<~RUBY,
        plugin :ferrocable
        bind "tcp://127.0.0.1:\#{ENV.fetch("PORT")}"
        environment "production"
        pidfile "tmp/puma.pid"
      RUBY
      "app/channels/application_cable/connection.rb" => <<~RUBY,
        module ApplicationCable
          class Connection < ActionCable::Connection::Base
            identified_by :user

            def connect
              self.user = request.params[:user].presence || reject_unauthorized_connection
            end
          end
        end
      RUBY
      "app/channels/application_cable/channel.rb" => <<~RUBY,
        module ApplicationCable
          class Channel < ActionCable::Channel::Base
          end
        end
      RUBY
      "app/channels/echo_channel.rb" => <<~RUBY
        class EchoChannel < ApplicationCable::Channel
          def subscribed
            stream_from "echo"
          end

          def speak(data)
            ActionCable.server.broadcast("echo", {text: data["text"], from: user})
          end
        end
      RUBY
    }
    files.each do |path, text|
      FileUtils.mkdir_p(File.dirname(File.join(dir, path)))
      File.write(File.join(dir, path), text)
    end
    FileUtils.mkdir_p(File.join(dir, "tmp"))
  end
end
