package com.example;

import java.util.List;

/**
 * A sample class.
 */
@Entity
@Table(name = "samples")
public class Sample extends Base implements Runnable {
    private int count;

    public Sample(int count) {
        this.count = count;
    }

    /** Runs it. */
    @Override
    public void run() {
        Runnable r = () -> System.out.println("x");
    }

    public static <T> List<T> generic(T item) {
        return List.of(item);
    }

    static class Nested {
        void nestedMethod() {}
    }

    private enum State {
        ON, OFF;
        boolean isOn() { return this == ON; }
    }
}

interface Greeter {
    String greet(String name);
    default String hello() { return "hello"; }
}

// A record
public record Pair(int a, int b) {
    public Pair {
        if (a < 0) throw new IllegalArgumentException();
    }
    int sum() { return a + b; }
}

@interface MyAnnotation {
    String value();
}
