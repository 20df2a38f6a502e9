// Package main does things.
package main

import "fmt"

// Shape is an interface.
type Shape interface {
	Area() float64
}

// Rect is a struct.
type Rect struct {
	W, H float64
}

type (
	ID    int
	Pair  struct{ A, B int }
)

type Handler func(int) error

// Area computes area.
func (r *Rect) Area() float64 {
	return r.W * r.H
}

func (r Rect) String() string {
	return fmt.Sprintf("%v", r.W)
}

// Map is generic.
func Map[T any, U any](xs []T, f func(T) U) []U {
	out := make([]U, 0, len(xs))
	for _, x := range xs {
		out = append(out, f(x))
	}
	return out
}

func (l *List[T]) Push(v T) {
	inner := func() {}
	inner()
}

func main() {
	fmt.Println(Map([]int{1}, func(i int) int { return i }))
}
