# frozen_string_literal: true

module Ferrocable
  module Rails
    # How identifiers and state values travel between calls: records (anything with `to_gid_param`) as their
    # GlobalID parameter, Hashes and Arrays element by element, everything else as its JSON value. Loading
    # turns a GlobalID parameter back into its record, on the call that reads it.
    module Serializer
      module_function

      def dump(value)
        case value
        when nil, true, false, Numeric, String then value
        when Symbol then value.to_s
        when Hash then value.to_h { |k, v| [k.to_s, dump(v)] }
        when Array then value.map { |v| dump(v) }
        else value.respond_to?(:to_gid_param) ? value.to_gid_param : value.as_json
        end
      end

      def load(value)
        case value
        when String then locate(value)
        when Hash then value.to_h { |k, v| [k, load(v)] }
        when Array then value.map { |v| load(v) }
        else value
        end
      end

      # A record for a GlobalID parameter, the String itself otherwise.
      def locate(string)
        gid = ::GlobalID.parse(string)
        gid ? ::GlobalID::Locator.locate(gid) : string
      end
    end
  end
end
