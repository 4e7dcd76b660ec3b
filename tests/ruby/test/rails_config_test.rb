# frozen_string_literal: true

require_relative "test_helper"
require "openssl"

# Where the Rails integration takes its settings from, and when it starts a server by itself.
class RailsConfigTest < Minitest::Test
  def settings(env = {})
    app = DummyApp.new(name: "config")
    JSON.parse(app.run_ruby!("bin/show_config", env: env).lines.last)
  end

  def test_yml_then_app_config_then_anycable_environment_variables
    assert_equal 150, settings.dig("server_options", "disconnect_rate"), "config/ferrocable.yml"
    assert_equal 200, settings("DUMMY_APP_DISCONNECT_RATE" => "200").dig("server_options", "disconnect_rate"),
      "config.ferrocable wins over the file"
    from_env = settings("DUMMY_APP_DISCONNECT_RATE" => "200", "ANYCABLE_DISCONNECT_RATE" => "300")
    assert_equal "300", from_env.dig("server_options", "disconnect_rate"), "ANYCABLE_* wins over both"
  end

  def test_views_sign_stream_names_with_the_streams_secret
    app = DummyApp.new(name: "config")
    out = app.run_ruby!("bin/show_signed_stream", "chat:1", env: {"ANYCABLE_STREAMS_SECRET" => "view-secret"})
    encoded = ["\"chat:1\""].pack("m0")
    assert_equal "#{encoded}--#{OpenSSL::HMAC.hexdigest("SHA256", "view-secret", encoded)}", out.lines.last.strip
  end

  def test_views_tell_clients_where_server_sent_events_live
    app = DummyApp.new(name: "config")
    out = app.run_ruby!("bin/show_sse", "chat/1", env: {"ANYCABLE_SSE" => "true", "ANYCABLE_SSE_PATH" => "/sse"})
    url, meta = out.lines.last(2).map(&:strip)
    assert_match %r{\Ahttp://127\.0\.0\.1:\d+/sse\?stream=chat%2F1\z}, url
    assert_match %r{\A<meta name="ferrocable-sse-url" content="http://127\.0\.0\.1:\d+/sse" ?/?>\z}, meta
    behind_proxy = app.run_ruby!("bin/show_sse", "s",
      env: {"ANYCABLE_SSE" => "true", "ANYCABLE_WEBSOCKET_URL" => "wss://cable.example.com/cable"})
    assert_equal "https://cable.example.com/events?stream=s", behind_proxy.lines.last(2).first.strip
    off = assert_raises(RuntimeError) { app.run_ruby!("bin/show_sse", "s") }
    assert_match(/Server-Sent Events are off/, off.message)
  end

  def test_gem_options_and_defaults
    values = settings("ANYCABLE_POOL_SIZE" => "12")
    assert_equal 12, values["pool_size"]
    assert_equal 4000, values.dig("server_options", "rpc_request_timeout")
    refute values["grpc"]
    assert_equal "127.0.0.1", values.dig("server_options", "host")
  end

  def test_the_broadcast_key_comes_from_the_secret_or_the_apps_secret_key_base
    derived = settings
    expected = OpenSSL::HMAC.hexdigest("SHA256", "dummy-secret-key-base-for-the-ferrocable-test-suite-only",
      "ferrocable-broadcast")
    assert_equal expected, derived["broadcast_key"]
    assert_equal expected, derived.dig("server_options", "broadcast_key"), "the server requires the same key"

    with_secret = settings("ANYCABLE_SECRET" => "s3cr3t")
    assert_equal "83149057b2f956b5f862c0ef5ad6a24d3677dc076d77e8999c24f77ca17d7a20", with_secret["broadcast_key"],
      "derived exactly as AnyCable derives it"
    refute with_secret["server_options"].key?("broadcast_key")
    assert_match %r{\Ahttp://127\.0\.0\.1:\d+/_broadcast\z}, with_secret["broadcast_url"]
  end

  def test_rpc_host_switches_to_the_grpc_backend
    assert settings("ANYCABLE_RPC_HOST" => "127.0.0.1:50051")["grpc"]
  end

  def test_no_server_in_scripts_unless_autostart_is_always
    refute settings["running"], "rake tasks, consoles and scripts do not start a server"
    assert settings("ANYCABLE_AUTOSTART" => "always")["running"]
  end
end
