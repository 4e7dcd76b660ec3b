# frozen_string_literal: true

# A stand-in for anycable-rails (1.x) in the bundle: the gem cannot be installed here (no gem server; Debian
# does not package it), so this file extends Action Cable the same ways it does, from the same hooks, with
# the same precedence, so the suite can check that `adapter: ferrocable` wins with both loaded:
#
# - `state_attr_accessor` from a module included into Action Cable's Connection::Base and Channel::Base on
#   their load hooks (its class methods extended into them); outside AnyCable the accessors are plain
#   instance variables, which would lose state between Ferrocable's calls;
# - `identified_by` readers defined on the connection class, reading `@cached_ids` when not assigned;
# - Channel::Base's `stream_from`, `stop_stream_from`, `stop_all_streams` and timers prepended at require
#   time, passing through when the connection has no AnyCable socket;
# - RemoteConnection#disconnect prepended, passing through unless the adapter is `any_cable`.
require "action_cable"
require "action_cable/remote_connections"

module AnyCable
  module Rails
    def self.enabled?
      %w[any_cable anycable].include?(::ActionCable.server.config.cable&.fetch("adapter", nil))
    end

    # `state_attr_accessor` for channels and connections; state lives in AnyCable's socket only when there is one.
    module State
      module ClassMethods
        def state_attr_accessor(*names)
          names.each do |name|
            define_method(name) do
              return instance_variable_get(:"@#{name}") if instance_variable_defined?(:"@#{name}")

              anycable_state&.fetch(name.to_s, nil)
            end
            define_method(:"#{name}=") do |value|
              anycable_state&.store(name.to_s, value)
              instance_variable_set(:"@#{name}", value)
            end
          end
        end
      end

      def self.included(base)
        base.extend(ClassMethods)
      end

      private

      def anycable_state
        socket = (respond_to?(:connection) ? connection : self).instance_variable_get(:@anycable_socket)
        socket&.state
      end
    end

    module Identification
      extend ActiveSupport::Concern

      class_methods do
        def identified_by(*names)
          super
          names.each do |name|
            define_method(name) { instance_variable_get(:"@#{name}") || @cached_ids&.fetch(name.to_s, nil) }
          end
        end
      end
    end
  end
end

ActiveSupport.on_load(:action_cable_connection) { include AnyCable::Rails::State }
ActiveSupport.on_load(:action_cable_channel) { include AnyCable::Rails::State }

ActionCable::Connection::Base.include(AnyCable::Rails::Identification)
ActionCable::Connection::Base.prepend(Module.new do
  def anycabled?
    !@anycable_socket.nil?
  end
end)

ActionCable::Channel::Base.prepend(Module.new do
  def stream_from(broadcasting, callback = nil, **options, &block)
    return super unless anycabled?

    raise "AnyCable is not the server here"
  end

  def stop_stream_from(broadcasting)
    return super unless anycabled?

    raise "AnyCable is not the server here"
  end

  def stop_all_streams
    return super unless anycabled?

    raise "AnyCable is not the server here"
  end

  def start_periodic_timers
    super unless anycabled?
  end

  def stop_periodic_timers
    super unless anycabled?
  end

  private

  def anycabled?
    connection.instance_variable_defined?(:@anycable_socket)
  end
end)

ActionCable::RemoteConnections::RemoteConnection.prepend(Module.new do
  def disconnect(reconnect: true)
    return super unless AnyCable::Rails.enabled?

    raise "AnyCable is not the server here"
  end
end)
