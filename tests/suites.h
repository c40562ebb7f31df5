/* suites.h — every Check suite of the runner, one line each.
 * X(name): the file defines `Suite *name##_suite(void)`. */
#define HT_SUITES(X) \
    X(tape)          \
    X(elementwise)   \
    X(linalg)        \
    X(nn)            \
    X(data_mnist)    \
    X(hypergrad)     \
    X(models)        \
    X(data_omniglot_cifar) \
    X(data_cifar)    \
    X(taskinteract)  \
    X(hyperclean)    \
    X(oneshot)       \
    X(kit)           \
    X(inner_opt)     \
    X(divergence)    \
    X(select)        \
    X(io)            \
    X(threads)       \
    X(kernels)       \
    X(outer)         \
    X(lifetime)      \
    X(partial)       \
    X(profile)       \
    X(par)           \
    X(status)        \
    X(lean)          \
    X(dnnl)          \
    X(omp)           \
    X(fastpaths)
