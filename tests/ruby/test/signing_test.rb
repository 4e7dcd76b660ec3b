# frozen_string_literal: true

# Ferrocable.signed_stream_name and Ferrocable::JWT.encode, loaded on their own (no native extension, no
# Rails). Every expected value was made outside this code, with Python's standard library:
#
#   enc = base64.b64encode(json.dumps(name, ensure_ascii=False).encode()).decode()
#   signed = enc + "--" + hmac.new(key, enc.encode(), hashlib.sha256).hexdigest()
#
#   def b64u(b): return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
#   h, p = b64u(json.dumps(header, separators=(",", ":")).encode()), b64u(json.dumps(claims, ...).encode())
#   token = f"{h}.{p}." + b64u(hmac.new(key, f"{h}.{p}".encode(), alg).digest())
#
# Run alone: ruby -Itests/ruby/test -Igems/ferrocable/lib tests/ruby/test/signing_test.rb

require "minitest/autorun"
require "minitest/mock"
require_relative "../../../gems/ferrocable/lib/ferrocable/signing"

class SigningTest < Minitest::Test
  SIGNED_CHAT = "ImNoYXQvMjAyNCI=--42d0afce518d9b9586c82df74dace6e0791f2559caf8f352747f98f8e2d7f56c"
  SIGNED_CHAT_ENV = "ImNoYXQvMjAyNCI=--1bfde2ad3adedaf0ae5f25f74a86ca88f990522f02a275d906eb1ce20f535fbb"
  SIGNED_UNICODE = "ItC60L7QvNC90LDRgtCwOjEi--7e57ad9060769b3dc8864590f393f503d504a1039ad83ef96142f57554a808ed"
  # {"alg":"HS256","typ":"JWT"} / {"ext":"{\"user\":\"alice\"}","exp":2000000000}, key s3cr3t
  TOKEN_HS256 = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHQiOiJ7XCJ1c2VyXCI6XCJhbGljZVwifSIsImV4cCI6MjAwMDAwMDAwMH0." \
    "GHrLL1SkYUdNNbsGNV0oxjgPk2spuLNs9waqVrEDsQE"
  TOKEN_HS512 = "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.eyJleHQiOiJ7XCJ1c2VyXCI6XCJhbGljZVwifSIsImV4cCI6MjAwMDAwMDAwMH0." \
    "X86BACQyUjZ1D9mz_oJB4zoK5P2xcOtaOMR2pFjZbl07-dvTe_EeaVEYwmcrJddzht3-l6BttTRd-30zYlqJDg"
  # The same claims without exp.
  TOKEN_NO_EXP = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHQiOiJ7XCJ1c2VyXCI6XCJhbGljZVwifSJ9." \
    "5e6teuLfissKOzGTtxErw653nIcyHn6Asergmw9Bd4g"
  # Key from-env.
  TOKEN_ENV = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHQiOiJ7XCJ1c2VyXCI6XCJhbGljZVwifSIsImV4cCI6MjAwMDAwMDAwMH0." \
    "Y0qZrVLxxY0ORIcJQpI9u91U22xmA3MpDz9Mrk09t3c"
  EXP = Time.at(2_000_000_000)
  VARIABLES = %w[ANYCABLE_SECRET ANYCABLE_STREAMS_SECRET ANYCABLE_JWT_SECRET].freeze

  # Secrets come from the environment only: a Rails app loaded by another test in the same process must not
  # lend its configuration.
  def run(*)
    Ferrocable::Signing.stub(:configured, nil) { super }
  end

  def setup
    @saved = VARIABLES.to_h { |name| [name, ENV.delete(name)] }
  end

  def teardown
    @saved.each { |name, value| value.nil? ? ENV.delete(name) : ENV[name] = value }
  end

  def test_signed_stream_name_uses_the_rails_message_verifier_layout
    assert_equal SIGNED_CHAT, Ferrocable.signed_stream_name("chat/2024", secret: "s3cr3t")
    assert_equal SIGNED_UNICODE, Ferrocable.signed_stream_name("комната:1", secret: "s3cr3t")
    assert_equal SIGNED_CHAT, Ferrocable.signed_stream_name(:"chat/2024", secret: "s3cr3t")
  end

  def test_signed_stream_name_takes_the_streams_secret_then_the_app_secret_from_the_environment
    ENV["ANYCABLE_SECRET"] = "s3cr3t"
    assert_equal SIGNED_CHAT, Ferrocable.signed_stream_name("chat/2024")
    ENV["ANYCABLE_STREAMS_SECRET"] = "env-streams"
    assert_equal SIGNED_CHAT_ENV, Ferrocable.signed_stream_name("chat/2024")
    assert_equal SIGNED_CHAT, Ferrocable.signed_stream_name("chat/2024", secret: "s3cr3t"), "an explicit secret wins"
  end

  def test_signing_without_any_secret_raises_a_ferrocable_error
    error = assert_raises(Ferrocable::MissingSecretError) { Ferrocable.signed_stream_name("chat") }
    assert_kind_of Ferrocable::Error, error
    assert_includes error.message, "ANYCABLE_STREAMS_SECRET"
    assert_raises(Ferrocable::MissingSecretError) { Ferrocable::JWT.encode({user: "alice"}) }
    assert_raises(ArgumentError) { Ferrocable.signed_stream_name("", secret: "k") }
  end

  def test_jwt_encode_matches_independently_made_tokens
    assert_equal TOKEN_HS256, Ferrocable::JWT.encode({user: "alice"}, expires_at: EXP, secret: "s3cr3t")
    assert_equal TOKEN_HS256, Ferrocable::JWT.encode('{"user":"alice"}', expires_at: 2_000_000_000, secret: "s3cr3t")
    assert_equal TOKEN_HS512, Ferrocable::JWT.encode({user: "alice"}, expires_at: EXP, secret: "s3cr3t", algorithm: "HS512")
    assert_equal TOKEN_NO_EXP, Ferrocable::JWT.encode({user: "alice"}, expires_at: false, secret: "s3cr3t")
  end

  def test_jwt_encode_takes_the_jwt_secret_then_the_app_secret_from_the_environment
    ENV["ANYCABLE_SECRET"] = "s3cr3t"
    assert_equal TOKEN_HS256, Ferrocable::JWT.encode({user: "alice"}, expires_at: EXP)
    ENV["ANYCABLE_JWT_SECRET"] = "from-env"
    assert_equal TOKEN_ENV, Ferrocable::JWT.encode({user: "alice"}, expires_at: EXP)
  end

  def test_jwt_encode_expires_in_an_hour_by_default
    token = Ferrocable::JWT.encode({user: "alice"}, secret: "k")
    claims = JSON.parse(Base64.urlsafe_decode64(token.split(".")[1]))
    assert_in_delta Time.now.to_i + 3600, claims.fetch("exp"), 5
    assert_equal '{"user":"alice"}', claims.fetch("ext")
  end

  def test_jwt_encode_refuses_other_algorithms_and_identifiers
    assert_raises(ArgumentError) { Ferrocable::JWT.encode({user: "alice"}, secret: "k", algorithm: "none") }
    assert_raises(ArgumentError) { Ferrocable::JWT.encode({user: "alice"}, secret: "k", algorithm: "RS256") }
    assert_raises(ArgumentError) { Ferrocable::JWT.encode(42, secret: "k") }
    assert_raises(ArgumentError) { Ferrocable::JWT.encode({user: "alice"}, secret: "k", expires_at: "tomorrow") }
  end
end
