//! Crate docs.
use std::fmt;

/// A point.
#[derive(Debug, Clone)]
pub struct Point {
    x: i32,
    y: i32,
}

struct Unit;
struct Tuple(i32, i32);

/// Colors.
pub enum Color {
    Red,
    Green,
}

pub trait Shape {
    fn area(&self) -> f64;
    fn describe(&self) -> String {
        String::from("shape")
    }
}

impl Point {
    /// Constructor.
    pub fn new(x: i32, y: i32) -> Self {
        Point { x, y }
    }
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "({}, {})", self.x, self.y)
    }
}

impl<T: Clone> Shape for Wrapper<T> {
    fn area(&self) -> f64 { 0.0 }
}

mod geometry {
    pub fn helper() -> i32 {
        fn nested() -> i32 { 1 }
        nested()
    }
}

type Alias = Vec<i32>;

union MyUnion { a: u32, b: f32 }

macro_rules! square {
    ($x:expr) => { $x * $x };
}

#[test]
async fn it_works() {
    let c = |x: i32| x + 1;
}
