# frozen_string_literal: true

# One value of every kind the Ferrocable Serializer documents (docs/ruby.md), stored in `state_attr_accessor`
# attributes and checked when read back in a later call: each row says what it read and whether it equals
# what was stored.
module StateSamples
  module_function

  def values(user)
    {
      "string" => "plain text",
      "symbol" => :pending,
      "integer" => 42,
      "float" => 2.5,
      "nil" => nil,
      "true" => true,
      "false" => false,
      "hash" => {name: "zoe", nested: {level: 2}},
      "array_of_hashes" => [{id: 1, tags: [:a]}, {id: 2}],
      "time" => Time.new(2026, 5, 4, 10, 30, Rational(15_123_456_789, 1_000_000_000), "+02:00"),
      "time_with_zone" => Time.utc(2026, 5, 4, 8, 30).in_time_zone("Tokyo"),
      "date" => Date.new(2026, 5, 4),
      "record" => user
    }
  end

  # Hashes (also inside Arrays) read back with indifferent access: String keys.
  def indifferent(value)
    case value
    when Hash then value.with_indifferent_access
    when Array then value.map { |v| indifferent(v) }
    else value
    end
  end

  # {row => {"class" => class read back, "equal" => whether it equals the stored value, ...}}
  def check(read, user)
    values(user).to_h do |row, expected|
      got = read[row]
      # `to_s`: TimeWithZone.name says "Time".
      result = {"class" => got.class.to_s, "equal" => got == indifferent(expected)}
      case row
      when "hash" then result["indifferent"] = [got[:name], got["nested"][:level]]
      when "array_of_hashes" then result["indifferent"] = [got[0][:id], got[0][:tags], got[1]["id"]]
      when "time" then result["offset"] = got.utc_offset
      when "time_with_zone" then result["zone"] = got.try(:time_zone)&.name
      end
      [row, result]
    end
  end
end
