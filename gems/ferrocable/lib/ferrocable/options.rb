# frozen_string_literal: true

module Ferrocable
  # The core server's options, by their AnyCable names, and their conversion from Ruby values to the text
  # form the core parses (the same text as flags, `ANYCABLE_*` variables and TOML files).
  module Options
    # Every core option name, e.g. "port", "rpc_host", "broadcast_key".
    NAMES = Native::OPTIONS.map(&:first).freeze
    # Default of each option in text form ("" = unset).
    DEFAULTS = Native::OPTIONS.to_h { |name, default, _help, _switch| [name, default] }.freeze

    module_function

    # `{port: 8080, path: ["/cable"]}` -> `[["port", "8080"], ["path", "/cable"]]`; nil values are left out.
    # Raises ConfigError for unknown names and values the core would refuse.
    def to_pairs(options)
      pairs = options.filter_map do |name, value|
        next if value.nil?

        [name.to_s, text(value)]
      end
      Native.validate_options(pairs)
      pairs
    end

    def text(value)
      case value
      when Array then value.map(&:to_s).join(",")
      else value.to_s
      end
    end
  end
end
