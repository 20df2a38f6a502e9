# Top-level comment
require 'json'

# Utilities module
module Utils
  # A helper class
  class Helper < Base
    attr_reader :name

    def initialize(name)
      @name = name
    end

    # Class method
    def self.build(opts = {})
      new(opts[:name])
    end

    class << self
      def singleton_in_eigen
        1
      end
    end

    def ==(other)
      name == other.name
    end

    def valid?
      true
    end

    private

    def secret!
      nil
    end
  end

  module Nested::Deep
    def self.deep_fn; end
  end
end

def top_level(x)
  x * 2
end

obj = Object.new
def obj.singleton_on_obj
  :ok
end

class Foo::Bar
  def baz = 42
end
