package com.example

import scala.util.Try

/** A trait. */
trait Shape {
  def area: Double
  def describe(): String = "shape"
}

/** Companion object. */
object Shape {
  def apply(r: Double): Shape = Circle(r)
  val unit = 1
}

@SerialVersionUID(1L)
case class Circle(r: Double) extends Shape {
  override def area: Double = math.Pi * r * r

  class Inner {
    def innerMethod(): Unit = ()
  }
}

abstract class Base[T](val x: T) {
  def get: T = x
}

sealed trait Tree
enum Color:
  case Red, Green

def topLevel(x: Int): Int = x + 1

object Main extends App {
  def helper[A](a: A): A = {
    def nested(): Unit = ()
    a
  }
  val fn = (x: Int) => x * 2
}

type Alias = List[Int]

given intOrd: Ordering[Int] = Ordering.Int

extension (s: String)
  def shout: String = s.toUpperCase
