# frozen_string_literal: true

module Ferrocable
  # State shared by the Puma plugin and the Rails integration: whether the plugin is in charge of starting
  # the server, and whether this process was chosen to run it. Needs neither Rails nor the extension.
  module Puma
    class << self
      # Set when `plugin :ferrocable` is in the Puma config: Rails then never starts the server by itself.
      def plugin!
        @plugin = true
      end

      def plugin?
        @plugin == true
      end

      # This process runs the server (Puma single mode, or worker 0 in cluster mode). Starts it now when
      # the Rails app is already loaded, or marks it so the app starts it once booted.
      def run_here!
        @run_here = true
        ::Ferrocable::Rails.start_if_requested if defined?(::Ferrocable::Rails) && app_loaded?
      end

      def run_here?
        @run_here == true
      end

      # Stops the server this process runs, if any (before a cluster worker exits).
      def stop!
        ::Ferrocable::Rails.stop! if defined?(::Ferrocable::Rails)
      end

      def app_loaded?
        defined?(::Rails) && ::Rails.respond_to?(:application) && ::Rails.application&.initialized?
      end
    end
  end
end
