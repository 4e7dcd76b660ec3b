# frozen_string_literal: true

require "base64"
require "json"
require "openssl"

module Ferrocable
  # Defined in ferrocable/errors too; repeated here so this file also loads on its own.
  class Error < StandardError; end

  # No secret was given and none is configured.
  class MissingSecretError < Error; end

  # Signing for the server's standalone mode, for the application that hands credentials to its clients:
  # signed stream names (what `{channel: "$pubsub", signed_stream_name: ...}` and Turbo Streams subscriptions
  # carry) and JWT identification tokens (what clients bring in the `jid` query parameter, the `X-JID` header
  # or the `anycable-token.<token>` sub-protocol). Pure Ruby over OpenSSL; nothing here talks to the server.
  module Signing
    module_function

    # The secret to sign with: the explicit one, else the first of `options` set in the Rails configuration
    # (config/ferrocable.yml, config.ferrocable or ANYCABLE_* variables), else in the environment.
    def secret(explicit, options, what)
      return explicit.to_s unless explicit.nil? || explicit.to_s.empty?

      options.each do |name|
        value = configured(name)
        return value unless value.to_s.empty?
      end
      options.each do |name|
        value = ENV["ANYCABLE_#{name.to_s.upcase}"]
        return value unless value.to_s.empty?
      end
      raise MissingSecretError, "#{what}: no secret: pass `secret:` or set " \
        "#{options.map { |name| "ANYCABLE_#{name.to_s.upcase}" }.join(" or ")}"
    end

    def configured(name)
      return nil unless defined?(::Ferrocable::Rails) && ::Ferrocable::Rails.respond_to?(:config)
      return nil unless defined?(::Rails) && ::Rails.respond_to?(:application) && ::Rails.application

      ::Ferrocable::Rails.config.values[name.to_sym]
    end
  end

  class << self
    # Signs a stream name as Rails' MessageVerifier does (and so AnyCable, turbo-rails and the server):
    # `Base64.strict_encode64(name.to_json) + "--" + hex HMAC-SHA256(secret, that base64)`. The secret is
    # `secret:`, else `streams_secret`, else `secret` (Rails configuration, then ANYCABLE_* variables).
    def signed_stream_name(name, secret: nil)
      name = name.to_s
      raise ArgumentError, "the stream name must not be empty" if name.empty?

      key = Signing.secret(secret, %i[streams_secret secret], "Ferrocable.signed_stream_name")
      encoded = ::Base64.strict_encode64(JSON.generate(name))
      "#{encoded}--#{OpenSSL::HMAC.hexdigest("SHA256", key, encoded)}"
    end
  end

  # JWT identification tokens for the server's `jwt_secret` check.
  module JWT
    ALGORITHMS = { "HS256" => "SHA256", "HS384" => "SHA384", "HS512" => "SHA512" }.freeze
    DEFAULT_TTL = 3600

    module_function

    # A token whose `ext` claim holds the identifiers as JSON (a Hash is encoded with `to_json`, a String is
    # taken as it is), expiring at `expires_at` (a Time or Unix seconds; default an hour from now; `false` for
    # a token that never expires). The secret is `secret:`, else `jwt_secret`, else `secret` (Rails
    # configuration, then ANYCABLE_* variables).
    def encode(identifiers, expires_at: nil, secret: nil, algorithm: "HS256")
      digest = ALGORITHMS.fetch(algorithm.to_s) do
        raise ArgumentError, "algorithm must be HS256, HS384 or HS512, got #{algorithm.inspect}"
      end
      claims = { "ext" => identifiers_json(identifiers) }
      exp = expiry(expires_at)
      claims["exp"] = exp if exp
      key = Signing.secret(secret, %i[jwt_secret secret], "Ferrocable::JWT.encode")
      input = "#{base64url(JSON.generate("alg" => algorithm.to_s, "typ" => "JWT"))}.#{base64url(JSON.generate(claims))}"
      "#{input}.#{base64url(OpenSSL::HMAC.digest(digest, key, input))}"
    end

    def identifiers_json(identifiers)
      case identifiers
      when String then identifiers
      when Hash then identifiers.to_json
      else raise ArgumentError, "identifiers must be a Hash or a JSON String, got #{identifiers.class}"
      end
    end

    def expiry(expires_at)
      case expires_at
      when nil then Time.now.to_i + DEFAULT_TTL
      when false then nil
      when Integer then expires_at
      when Time then expires_at.to_i
      else
        # DateTime, ActiveSupport::TimeWithZone; never a String (Active Support parses those loosely).
        time = expires_at.to_time if !expires_at.is_a?(String) && expires_at.respond_to?(:to_time)
        raise ArgumentError, "expires_at must be a Time, Unix seconds or false, got #{expires_at.inspect}" unless time.is_a?(Time)

        time.to_i
      end
    end

    def base64url(bytes)
      ::Base64.urlsafe_encode64(bytes, padding: false)
    end
  end
end
