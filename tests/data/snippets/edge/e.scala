extension (s: String)
  def shout: String = s.toUpperCase
  def whisper: String = s.toLowerCase
case class P(x: Int)
