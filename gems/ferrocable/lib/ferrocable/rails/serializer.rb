# frozen_string_literal: true

require "date"
require "time"

module Ferrocable
  module Rails
    # How identifiers and state values travel between calls, and what a later call reads back:
    #
    #   stored                          travels as                      read back as
    #   String, Integer, Float, nil,    its JSON value                  the same value
    #     true, false
    #   Symbol                          {"_ferrocable_symbol" => name}  the Symbol
    #   Time                            {"_ferrocable_time" => ISO}     a Time (same instant, offset, nanoseconds)
    #   ActiveSupport::TimeWithZone     {"_ferrocable_time" => ISO,     a TimeWithZone in the same zone
    #                                    "zone" => name}
    #   DateTime                        {"_ferrocable_datetime" => ISO} a DateTime
    #   Date                            {"_ferrocable_date" => ISO}     a Date
    #   record (has `to_gid_param`)     its GlobalID parameter          the record (located on the call that reads it)
    #   Hash (nested ones too)          keys as Strings, values by      a Hash with indifferent access
    #                                   this table
    #   Array                           element by element              an Array (Hashes in it with indifferent access)
    #   anything else                   its `as_json`                   that JSON value
    #
    # A plain String that is a GlobalID parameter reads back as its record, as under AnyCable.
    module Serializer
      TAGS = {
        "_ferrocable_symbol" => ->(value, _) { value.to_sym },
        "_ferrocable_time" => ->(value, hash) { load_time(value, hash["zone"]) },
        "_ferrocable_datetime" => ->(value, _) { DateTime.iso8601(value) },
        "_ferrocable_date" => ->(value, _) { Date.iso8601(value) }
      }.freeze

      module_function

      def dump(value)
        case value
        when nil, true, false, Numeric, String then value
        when Symbol then {"_ferrocable_symbol" => value.to_s}
        when Hash then value.to_h { |k, v| [k.to_s, dump(v)] }
        when Array then value.map { |v| dump(v) }
        else dump_other(value)
        end
      end

      def load(value)
        case value
        when String then locate(value)
        when Hash then load_hash(value)
        when Array then value.map { |v| load(v) }
        else value
        end
      end

      # Times and dates (a TimeWithZone also says it is a Time, so it goes first), records, everything else.
      def dump_other(value)
        if defined?(::ActiveSupport::TimeWithZone) && value.is_a?(::ActiveSupport::TimeWithZone)
          {"_ferrocable_time" => value.iso8601(9), "zone" => value.time_zone.name}
        elsif value.is_a?(Time) then {"_ferrocable_time" => value.iso8601(9)}
        elsif value.is_a?(DateTime) then {"_ferrocable_datetime" => value.iso8601(9)}
        elsif value.is_a?(Date) then {"_ferrocable_date" => value.iso8601}
        elsif value.respond_to?(:to_gid_param) then value.to_gid_param
        else value.as_json
        end
      end

      def load_hash(hash)
        tag = TAGS.keys.find { |key| hash.key?(key) } if hash.size <= 2
        return TAGS[tag].call(hash[tag], hash) if tag

        ActiveSupport::HashWithIndifferentAccess.new(hash.to_h { |k, v| [k, load(v)] })
      end

      def load_time(iso, zone)
        time = Time.iso8601(iso)
        zone && (tz = ::Time.find_zone(zone)) ? time.in_time_zone(tz) : time
      end

      # A record for a GlobalID parameter, the String itself otherwise.
      def locate(string)
        gid = ::GlobalID.parse(string)
        gid ? ::GlobalID::Locator.locate(gid) : string
      end
    end
  end
end
