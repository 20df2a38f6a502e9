#include <stdio.h>

/* A struct */
struct point {
    int x;
    int y;
};

typedef struct {
    int w;
} box_t;

typedef struct node {
    struct node *next;
} node_t;

enum color { RED, GREEN };

union value { int i; float f; };

/**
 * Adds numbers.
 */
int add(int a, int b) {
    return a + b;
}

static char *get_name(struct point *p) {
    return "p";
}

char **get_names(void) {
    return NULL;
}

void (*get_handler(int sig))(int) {
    return NULL;
}

// forward declaration only
int prototype(int);

static inline const struct point *const_ptr(void) { return 0; }

int main(int argc, char **argv) {
    printf("%d\n", add(1, 2));
    return 0;
}
