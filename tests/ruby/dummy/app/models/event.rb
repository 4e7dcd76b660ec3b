# frozen_string_literal: true

# What connections and channels did, recorded so tests can see calls that send nothing to clients.
class Event < ApplicationRecord
end
