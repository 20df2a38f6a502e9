// Utilities module
import React from 'react';

/**
 * Adds two numbers.
 */
function add(a, b) {
  return a + b;
}

export function exported(x) {
  return x;
}

export default function defaultFn() {
  return 1;
}

const arrow = (x) => x * 2;
let funcExpr = function named(y) { return y; };
export const exportedArrow = async (z) => {
  return z;
};

function* gen() {
  yield 1;
}

/** A class */
class Animal extends Base {
  constructor(name) {
    super();
    this.name = name;
  }

  speak() {
    return `${this.name} speaks`;
  }

  static create() {
    return new Animal('x');
  }

  get upper() { return this.name.toUpperCase(); }

  handler = () => { return 1; };
}

export class Dog extends Animal {
  bark() { return 'woof'; }
}

export default class {
  anon() {}
}

const Widget = () => <div className="w">{arrow(2)}</div>;

module.exports.helper = function () { return 2; };
