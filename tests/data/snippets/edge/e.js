class A {
  @dec
  foo() {}
  #priv() {}
  [Symbol.iterator]() {}
  static async *agen() {}
}
export default async () => {};
const C = class Named { m() {} };
var legacy = function () {};
const obj = { method() {}, arrow: () => 1 };
