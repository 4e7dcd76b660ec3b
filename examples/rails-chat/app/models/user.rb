# frozen_string_literal: true

class User < ApplicationRecord
  validates :name, presence: true, length: {maximum: 40}
end
