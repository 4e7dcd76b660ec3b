# frozen_string_literal: true

require_relative "test_helper"

# The Rack env of a socketless connection (Ferrocable::Rails::RackEnv): what `request`, `cookies` and
# `session` see in the app's connection. It is built for every Connect from a template and, for URLs of the
# usual shape, without `URI.parse`; these tests hold it to what the `URI.parse` path gives.
class RackEnvTest < Minitest::Test
  # URL pieces, the first ones of each list of the shape the server sends (http/https, plain hosts and paths).
  SCHEMES = %w[http https ws wss HTTP ftp].freeze
  HOSTS = ["example.com", "127.0.0.1", "localhost", "a-b.c", "[::1]", "[1.2]", "h_1", "", "ü.de", "user@h",
    "ex ample"].freeze
  PORTS = ["", ":80", ":443", ":8080", ":0080", ":", ":99999", ":8x"].freeze
  PATHS = ["", "/", "/cable", "/a/b/", "/%20x", "/a;b=c,d", "/@:!$&'()*+", "//x", "/~_.-", "/%zz", "/a b",
    "/ü"].freeze
  QUERIES = ["", "?", "?a=1&b=2", "?x=%41", "?/?:@", "?t=a.b-c_d~", "?x=%4", "?a b", "?ü", "?a[]=1"].freeze

  # Mostly pieces of the usual shape, so that both paths are well covered.
  def self.piece(list, usual, random)
    random.rand < 0.7 ? list.first(usual).sample(random: random) : list.sample(random: random)
  end

  def self.report
    @report ||= begin
      random = Random.new(20_261_127)
      urls = Array.new(2_000) do
        "#{piece(SCHEMES, 2, random)}://#{piece(HOSTS, 4, random)}#{piece(PORTS, 5, random)}" \
          "#{piece(PATHS, 9, random)}#{piece(QUERIES, 6, random)}#{random.rand(10).zero? ? "#f" : ""}"
      end
      urls += ["ws://127.0.0.1:8080/cable?name=bench", "https://example.com:443/cable", "http://example.com:443/",
        "wss://h:80/x", "http://h"]
      out = IO.popen([RbConfig.ruby, "bin/show_rack_env", {chdir: DummyApp::ROOT, err: %i[child out]}], "r+") do |io|
        io.write(urls.join("\n"))
        io.close_write
        io.read
      end
      raise "bin/show_rack_env failed:\n#{out}" unless $?.success?

      JSON.parse(out.lines.last)
    end
  end

  def env_of(url)
    self.class.report.fetch("urls").find { |row| row["url"] == url }.fetch("env")
  end

  def test_usual_urls_give_the_request_parts_of_the_env
    assert_equal({"rack.url_scheme" => "http", "SERVER_NAME" => "127.0.0.1", "SERVER_PORT" => "8080",
                  "HTTP_HOST" => "127.0.0.1:8080", "PATH_INFO" => "/cable", "QUERY_STRING" => "name=bench"},
      env_of("ws://127.0.0.1:8080/cable?name=bench"))
    assert_equal({"rack.url_scheme" => "https", "SERVER_NAME" => "example.com", "SERVER_PORT" => "443",
                  "HTTP_HOST" => "example.com", "PATH_INFO" => "/cable", "QUERY_STRING" => ""},
      env_of("https://example.com:443/cable"))
    assert_equal "example.com:443", env_of("http://example.com:443/")["HTTP_HOST"], "not the default port of http"
    assert_equal "h:80", env_of("wss://h:80/x")["HTTP_HOST"]
    assert_equal "/", env_of("http://h")["PATH_INFO"]
  end

  def test_the_fast_path_splits_every_url_exactly_as_uri_parse_does
    rows = self.class.report.fetch("urls")
    mismatches = rows.reject { |row| row["parts"] == row["uri"] }
    assert_empty mismatches.first(5), "#{mismatches.size} URLs split differently from URI.parse"
    fast = rows.count { |row| row["fast"] }
    assert_operator fast, :>, 200, "the comparison must cover the fast path"
    assert_operator rows.size - fast, :>, 200, "and URLs it leaves to URI.parse"
    rows.each do |row|
      scheme, host, port, path, query, http_host = row["uri"]
      expected = {"rack.url_scheme" => scheme, "SERVER_NAME" => host, "SERVER_PORT" => port.to_s,
                  "HTTP_HOST" => http_host, "PATH_INFO" => path.empty? ? "/" : path, "QUERY_STRING" => query.to_s}
      assert_equal expected, row["env"], row["url"]
    end
  end

  def test_each_env_is_its_own_copy_with_the_apps_env_config_and_session
    report = self.class.report
    assert_equal({"REMOTE_ADDR" => "10.0.0.1", "HTTP_USER_AGENT" => "Agent/1"}, report["headers"])
    assert report["second_untouched"], "changing one env must not change the next"
    assert report["env_config"], "every key of Rails.application.env_config is in the env"
    assert_equal({"REQUEST_METHOD" => "GET", "SCRIPT_NAME" => "", "SERVER_PROTOCOL" => "HTTP/1.1",
                  "HTTP_UPGRADE" => "websocket", "HTTP_CONNECTION" => "Upgrade"}, report["constant"])
    assert_equal "", report["rack_input"]
    assert report["own_input"], "every env has its own rack.input"
    assert report["session"], "the session middleware ran"
    assert_equal "ActionDispatch::Cookies::CookieJar", report["cookie_jar"]
  end
end
