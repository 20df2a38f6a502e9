import Foundation

/// A protocol.
protocol Drawable {
    func draw() -> String
    var name: String { get }
}

// A class
@objc
public class Shape: NSObject, Drawable {
    var name: String = "shape"

    init(name: String) {
        self.name = name
    }

    deinit {
        print("bye")
    }

    func draw() -> String {
        return name
    }

    @discardableResult
    static func make() -> Shape { Shape(name: "x") }

    class Nested {
        func nestedFn() {}
    }

    subscript(index: Int) -> Int { return index }
}

struct Point {
    var x: Int
    mutating func move() { x += 1 }
}

enum Direction {
    case north, south
    func opposite() -> Direction { .south }
}

extension Point: Equatable {
    static func == (lhs: Point, rhs: Point) -> Bool { lhs.x == rhs.x }
}

actor Counter {
    func inc() {}
}

func topLevel<T>(_ x: T) -> T {
    let closure = { (y: Int) in y }
    return x
}

typealias Callback = (Int) -> Void
