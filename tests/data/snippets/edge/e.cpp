namespace a::b { void f() {} }
inline namespace v1 { }
class Foo final : public Bar {
  explicit operator bool() const { return true; }
  int operator()(int x) { return x; }
  friend void swap(Foo&, Foo&) {}
  template <typename U> void tm(U u) {}
};
template <typename T> void Foo::tpl(T t) {}
Foo::Foo() : x(1) {}
Foo::operator bool() const { return true; }
extern "C" { int cfun(void) { return 0; } }
struct Fwd;
class Fwd2;
