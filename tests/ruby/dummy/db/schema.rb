# frozen_string_literal: true

ActiveRecord::Schema.define do
  create_table :users, if_not_exists: true do |t|
    t.string :name, null: false, index: {unique: true}
  end

  create_table :rooms, if_not_exists: true do |t|
    t.string :name, null: false, index: {unique: true}
  end

  create_table :events, if_not_exists: true do |t|
    t.string :kind, null: false
    t.string :user
    t.string :detail
    t.timestamps
  end
end
