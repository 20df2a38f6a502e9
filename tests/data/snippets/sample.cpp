#include <vector>

// Namespace doc
namespace geo {

/// A shape class.
class Shape {
public:
    Shape();
    virtual ~Shape();
    virtual double area() const = 0;
    int inlineMethod() { return 1; }
    Shape& operator=(const Shape& other);
};

struct Point {
    int x, y;
    Point(int x, int y) : x(x), y(y) {}
};

Shape::Shape() {}

Shape::~Shape() {}

Shape& Shape::operator=(const Shape& other) { return *this; }

template <typename T>
T max_of(T a, T b) {
    return a > b ? a : b;
}

template <typename T>
class Box {
public:
    T get() const { return value; }
private:
    T value;
};

namespace inner {
    int *make_int() { return new int(0); }
}

}  // namespace geo

double geo::Shape::helper(int x) { return x; }

template <>
int geo::Box<int>::get() const { return 0; }

enum class Mode { A, B };

auto lambda = [](int x) { return x; };

int main() {
    return 0;
}
