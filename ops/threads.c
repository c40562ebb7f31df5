/* threads.c — see threads.h. */
#include "threads.h"

#include "hypertape_config.h"

#if HT_OMP_API
#include <omp.h>
#endif

#if HT_OPENBLAS_THREADS
int openblas_get_num_threads(void); /* OpenBLAS's own; cblas.h of other BLAS lacks it */
#endif

int ops_threads(void)
{
#if HT_OMP_API && HT_OPENBLAS_THREADS
    /* OpenMP's count as this thread first saw it: conv_dnnl.c sets the
     * thread's count to ours before each oneDNN call, so a later
     * omp_get_max_threads would only echo the last one. */
    static _Thread_local int cap;
    if (cap == 0) cap = omp_get_max_threads();
    int n = openblas_get_num_threads();
    if (n > cap) n = cap;
    return n < 1 ? 1 : n;
#else
    return 1;
#endif
}

void ops_for(size_t n, size_t grain, ops_range_fn f, void *ctx)
{
    if (n == 0) return;
#if HT_OMP
    size_t most = grain ? n / grain : n;
    int nt = ops_threads();
    if ((size_t)nt > most) nt = (int)most;
    if (nt > 1) {
        /* Thread t of m takes [n·t/m, n·(t+1)/m): every index exactly once. */
#pragma omp parallel num_threads(nt)
        {
            size_t t = (size_t)omp_get_thread_num(), m = (size_t)omp_get_num_threads();
            size_t lo = n * t / m, hi = n * (t + 1) / m;
            if (lo < hi) f(ctx, lo, hi);
        }
        return;
    }
#else
    (void)grain;
#endif
    f(ctx, 0, n);
}
