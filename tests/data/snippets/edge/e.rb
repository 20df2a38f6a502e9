class A
  def name=(v); end
  def [](i); end
  def self.===(o); end
end
