// TS module
import { Foo } from './foo';

/** An interface */
export interface Shape {
  area(): number;
  name: string;
}

type Alias = { a: number };
export type Union = 'a' | 'b';

enum Color { Red, Green }
export enum Direction { Up = 1, Down }

namespace Geometry {
  export function distance(a: number, b: number): number {
    return Math.abs(a - b);
  }
  export namespace Inner {
    export const pi = 3.14;
  }
}

declare module 'foo' {
  export function bar(): void;
}

/**
 * Abstract base.
 */
@Component({ selector: 'x' })
export abstract class Base<T> implements Shape {
  private readonly items: T[] = [];

  constructor(private svc: Service) {}

  @Input()
  area(): number { return 0; }

  abstract render(): void;

  get name(): string { return 'base'; }

  handle = async (e: Event): Promise<void> => {};
}

export const typedArrow = <T,>(x: T): T => x;

function overload(x: string): string;
function overload(x: any) { return x; }

export default class Impl extends Base<number> {
  render() {}
}

export const Button = ({ label }: { label: string }) => {
  return <button onClick={() => console.log(label)}>{label}</button>;
};

export function App(): JSX.Element {
  return <div><Button label="hi" /></div>;
}
