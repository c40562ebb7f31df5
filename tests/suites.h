/* suites.h — every Check suite of the runner, one line each.
 * X(name): the file defines `Suite *name##_suite(void)`. */
#define HT_SUITES(X) \
    X(tape)          \
    X(elementwise)   \
    X(linalg)        \
    X(nn)            \
    X(data)          \
    X(hypergrad)     \
    X(models)        \
    X(data_more)     \
    X(taskinteract)  \
    X(hyperclean)    \
    X(oneshot)       \
    X(kernels)
