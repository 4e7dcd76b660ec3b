# frozen_string_literal: true

module Ferrocable
  module Rails
    # One state map (a connection's cstate, or one subscription's istate) for the length of a call: the
    # values the server sent, and the changes to send back. Values are JSON texts of serialized values;
    # writing nil sends an empty value, which deletes the key.
    class State
      attr_reader :changes

      def initialize(values)
        @values = values || {}
        @changes = {}
      end

      def read(name)
        raw = @values[name]
        return nil if raw.nil? || raw.empty?

        Serializer.load(ActiveSupport::JSON.decode(raw))
      end

      def write(name, value)
        write_raw(name, value.nil? ? "" : ActiveSupport::JSON.encode(Serializer.dump(value)))
      end

      # The value as the server keeps it (keys the server itself reads, such as `$p`, are plain strings).
      def raw(name)
        raw = @values[name]
        raw unless raw.nil? || raw.empty?
      end

      def write_raw(name, raw)
        @values[name] = raw
        @changes[name] = raw
      end
    end

    # `state_attr_accessor :room, :joined_at` keeps those values across calls: in the subscription's istate
    # (channels) or the connection's cstate (connections). Outside Ferrocable (plain Action Cable, tests)
    # they are ordinary accessors.
    module StateAttributes
      # Every `state_attr_accessor` name of this class and its ancestors.
      def ferrocable_state_names
        inherited = superclass.respond_to?(:ferrocable_state_names) ? superclass.ferrocable_state_names : []
        inherited | (@ferrocable_state_names || [])
      end

      def state_attr_accessor(*names)
        (@ferrocable_state_names ||= []).concat(names.map(&:to_sym))
        names.each do |name|
          name = name.to_sym
          ivar = :"@#{name}"
          key = name.to_s

          define_method(name) do
            return instance_variable_get(ivar) if instance_variable_defined?(ivar)

            store = ferrocable_state
            store ? instance_variable_set(ivar, store.read(key)) : nil
          end

          define_method(:"#{name}=") do |value|
            ferrocable_state&.write(key, value)
            instance_variable_set(ivar, value)
          end
        end
      end
    end
  end
end
