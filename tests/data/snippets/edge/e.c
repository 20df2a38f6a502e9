#define API __attribute__((visibility("default")))
API int exported_fn(int x) { return x; }
static int __attribute__((unused)) attr_fn(void) { return 0; }
int (*fp_returning(void))[3] { return 0; }
int kr(a) int a; { return a; }
