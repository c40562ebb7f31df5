/* threads.h — how many threads the kernels run on, and the one loop that
 * spreads a kernel over them (OpenMP, -Domp; internal to the library).
 *
 * The rule, in one place: a kernel runs on OpenBLAS's thread count
 * (openblas_get_num_threads), at most OpenMP's count (omp_get_max_threads,
 * OMP_NUM_THREADS) as the calling thread first saw it.  Programs that run
 * tasks on several worker threads, one tape each, set OpenBLAS to 1 thread:
 * the kernels then run on the caller's thread alone, and nothing is
 * oversubscribed.  Without OpenMP in the build, or linked with a BLAS other
 * than OpenBLAS (whose count is unknown), every kernel runs on one thread.
 * conv_dnnl.c gives oneDNN the same count.
 *
 * Results do not depend on the count: ops_for hands each index of [0, n) to
 * exactly one thread, and the kernels give it indices whose results are
 * computed by the same additions in the same order whoever runs them (an
 * entry, an image-channel plane, a channel's sums). */
#ifndef HYPERTAPE_OPS_THREADS_H
#define HYPERTAPE_OPS_THREADS_H

#include <stddef.h>

/* The number of threads a kernel called on this thread may use (≥ 1). */
int ops_threads(void);

/* A range body: does the work of indices [lo, hi) of a loop. */
typedef void (*ops_range_fn)(void *ctx, size_t lo, size_t hi);

/* Runs f(ctx, lo, hi) over [0, n) in contiguous ranges, at most one per
 * thread, on min(ops_threads(), n / grain) threads: `grain` is the fewest
 * indices worth a thread of their own (below 2·grain, f runs once, here, on
 * [0, n), with no parallel region).  f must not touch what another range
 * writes. */
void ops_for(size_t n, size_t grain, ops_range_fn f, void *ctx);

#endif
