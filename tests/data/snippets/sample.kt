package com.example

import kotlin.math.abs

/**
 * A data class.
 */
@Serializable
data class User(val name: String, val age: Int) {
    fun greet(): String = "Hi $name"

    companion object {
        fun create(): User = User("x", 0)
    }

    inner class Inner {
        fun innerFn() {}
    }
}

interface Shape {
    fun area(): Double
}

sealed class Result
enum class Color { RED, GREEN; fun lower() = name.lowercase() }

object Singleton {
    @JvmStatic
    fun instance() = this
}

// Top-level function
@Suppress("unused")
suspend fun <T> fetch(url: String): T? {
    val lambda = { x: Int -> x + 1 }
    fun local() = 1
    return null
}

fun String.shout(): String = this.uppercase()

typealias Handler = (Int) -> Unit

abstract class Base : Shape {
    abstract override fun area(): Double
    val prop: Int
        get() = 1
}

fun interface Runner { fun run() }
