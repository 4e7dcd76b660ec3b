# frozen_string_literal: true

ActiveRecord::Schema.define do
  create_table :users, if_not_exists: true do |t|
    t.string :name, null: false, index: {unique: true}
  end
end
