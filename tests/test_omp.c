/* test_omp.c — the kernels give the same bytes on 1, 2 and 3 threads.
 *
 * ops/threads.h spreads the elementwise, pooling and batch-norm kernels over
 * OpenBLAS's thread count with OpenMP, each index (an entry, a plane, a
 * channel) computed by one thread with the same additions in the same order.
 * Here the one-shot network's block, relu(batchnorm(maxpool(conv(x))))
 * followed by a loss, is run forward, through a plain backward, a recorded
 * backward and a Hessian-vector product back through it, and the
 * elementwise ops (binary ones on equal shapes, against a scalar and
 * broadcast, unary ones, relu's mask) forward and backward, at 1, 2 and 3 threads; every
 * result's bytes are compared with memcmp, each named on failure.
 *
 * The thread count follows the rule of threads.h: each run is a new
 * thread whose OpenMP count is set first (the cap ops_threads keeps), with
 * OpenBLAS at 3 threads throughout, so the gemms are the same in every run
 * and only our kernels see a different number of threads.  The float
 * build's oneDNN convolutions are turned off on those threads (conv2d then
 * runs im2col + gemm): they follow the same count, and oneDNN's weight
 * gradient sums over the images in per-thread parts, so its bytes depend on
 * the count (measured: "backward dW: 2 threads differ from 1 thread"; the
 * data gradient and forward did not) — that is oneDNN's, not ours.  The tensors are larger than 3
 * times each kernel's grain, so every kernel here runs on all the threads
 * it is given; the test checks ops_threads() says so.  Without OpenMP (or
 * without OpenBLAS's thread count) there is one thread: each test says so
 * on a "skipped:" line and passes. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hypertape_config.h"
#include "models/models.h"
#include "ops/ops.h"
#include "ops/threads.h"
#include "testutil.h"

#if HT_OMP_API
#include <omp.h>
#endif
#if HT_DNNL
#include "ops/conv_dnnl.h"
#endif

Suite *omp_suite(void);

#if HT_OMP && HT_OPENBLAS_THREADS

void openblas_set_num_threads(int n); /* OpenBLAS's own */

enum { OMP_MAX_RESULTS = 32, OMP_RUNS = 3 };

/* The results of one run: copies of each value's bytes, by name. */
typedef struct omp_results {
    int n, threads_seen;
    const char *name[OMP_MAX_RESULTS];
    void *bytes[OMP_MAX_RESULTS];
    size_t size[OMP_MAX_RESULTS];
} omp_results;

static void keep(omp_results *r, const char *name, const ad_value *v)
{
    ck_assert_msg(v != NULL, "%s: %s", name, ad_error());
    ck_assert_int_lt(r->n, OMP_MAX_RESULTS);
    size_t n = v->size * sizeof(ad_real);
    r->name[r->n] = name;
    r->size[r->n] = n;
    r->bytes[r->n] = malloc(n);
    ck_assert_ptr_nonnull(r->bytes[r->n]);
    memcpy(r->bytes[r->n++], v->data, n);
}

static void results_free(omp_results *r)
{
    for (int i = 0; i < r->n; i++) free(r->bytes[i]);
}

static ad_value *randn(ad_rng *rng, int rank, const int *shape, bool param)
{
    ad_value *v = ad_tensor_randn(rng, rank, shape, 1);
    ck_assert_ptr_nonnull(v);
    if (param) ck_assert_int_eq(ad_set_requires_grad(v, true), AD_OK);
    return v;
}

/* The one-shot block on [12,16,32,32] with 32 outputs: conv [12,32,32,32]
 * (393 216 entries), pooled to [12,32,16,16] (98 304) for batch norm and
 * relu.  The loss Σ y ⊙ t (t random) gives seeds that are not all equal. */
static void run_block(omp_results *r)
{
    ad_rng rng;
    ad_rng_seed(&rng, 10);
    ad_value *x = randn(&rng, 4, (int[]){ 12, 16, 32, 32 }, true);
    ad_value *W = randn(&rng, 4, (int[]){ 32, 16, 3, 3 }, true);
    ad_value *b = randn(&rng, 1, (int[]){ 32 }, true);
    ad_value *gamma = randn(&rng, 1, (int[]){ 32 }, true);
    ad_value *beta = randn(&rng, 1, (int[]){ 32 }, true);
    ad_value *t = randn(&rng, 4, (int[]){ 12, 32, 16, 16 }, false);
    ad_value *xs[5] = { x, W, b, gamma, beta }, *vs[5], *g[5], *h[5];
    for (int i = 0; i < 5; i++) vs[i] = randn(&rng, xs[i]->rank, xs[i]->shape, false);
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *y = mdl_conv_block(tp, x, W, b, gamma, beta);
    keep(r, "block forward", y);
    ad_value *L = ad_sum(tp, ad_mul(tp, y, t));
    ck_assert_int_eq(ad_grad(tp, L, 5, xs, g, false), AD_OK);
    const char *plain[5] = { "backward dx", "backward dW", "backward db", "backward dgamma",
                             "backward dbeta" };
    for (int i = 0; i < 5; i++) keep(r, plain[i], g[i]);
    ck_assert_int_eq(ad_hvp(tp, L, 5, xs, vs, h, false), AD_OK);
    const char *hvp[5] = { "hvp x", "hvp W", "hvp b", "hvp gamma", "hvp beta" };
    for (int i = 0; i < 5; i++) keep(r, hvp[i], h[i]);
    ad_tape_free(tp);
    for (int i = 0; i < 5; i++) ad_value_free(xs[i]), ad_value_free(vs[i]);
    ad_value_free(t);
}

/* The elementwise ops on [4,64,24,24] (147 456 entries): binary ones on
 * equal shapes, against a scalar and broadcast, unary ones, and the backward of
 * relu (its mask), of mul and div. */
static void run_elementwise(omp_results *r)
{
    ad_rng rng;
    ad_rng_seed(&rng, 11);
    int S[4] = { 4, 64, 24, 24 };
    ad_value *a = randn(&rng, 4, S, true), *b = randn(&rng, 4, S, true);
    ad_value *s = ad_tensor_scalar((ad_real)0.75), *u = randn(&rng, 4, S, false);
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    keep(r, "add", ad_add(tp, a, b));
    keep(r, "sub", ad_sub(tp, a, b));
    keep(r, "mul", ad_mul(tp, a, b));
    keep(r, "div", ad_div(tp, a, ad_add_scalar(tp, ad_square(tp, b), 1)));
    keep(r, "mul by a scalar", ad_mul(tp, a, s));
    keep(r, "scalar minus", ad_sub(tp, s, a));
    /* broadcasting: runs of the trailing axes, spread over the threads */
    ad_value *per_channel = randn(&rng, 4, (int[]){ 1, 64, 1, 1 }, false);
    ad_value *row = randn(&rng, 1, (int[]){ 24 }, false);
    ad_value *per_image = randn(&rng, 4, (int[]){ 4, 1, 1, 1 }, false);
    keep(r, "mul by a per-channel value", ad_mul(tp, a, per_channel));
    keep(r, "add a row", ad_add(tp, a, row));
    keep(r, "per-image value minus", ad_sub(tp, per_image, a));
    keep(r, "exp", ad_exp(tp, a));
    keep(r, "tanh", ad_tanh(tp, a));
    keep(r, "scale", ad_scale(tp, a, 0.3));
    keep(r, "relu", ad_relu(tp, a));
    ad_value *y = ad_add(tp, ad_mul(tp, ad_relu(tp, a), b), ad_div(tp, a, ad_add_scalar(tp, ad_square(tp, b), 1)));
    ad_value *g[2];
    ck_assert_int_eq(ad_vjp(tp, y, u, 2, (ad_value *[]){ a, b }, g, false), AD_OK);
    keep(r, "backward da", g[0]);
    keep(r, "backward db", g[1]);
    ad_tape_free(tp);
    ad_value_free(a), ad_value_free(b), ad_value_free(s), ad_value_free(u);
    ad_value_free(per_channel), ad_value_free(row), ad_value_free(per_image);
}

typedef struct omp_run {
    int threads;
    void (*body)(omp_results *);
    omp_results r;
} omp_run;

/* A new thread: its OpenMP count set before any kernel runs (the cap that
 * ops_threads keeps for the thread), then the body. */
static void *run_thread(void *arg)
{
    omp_run *run = arg;
    omp_set_num_threads(run->threads);
#if HT_DNNL
    conv_dnnl_set_enabled(false); /* this thread's convolutions: im2col + gemm (see the top) */
#endif
    run->r.threads_seen = ops_threads();
    run->body(&run->r);
    return NULL;
}

static void expect_same_bytes(void (*body)(omp_results *))
{
    openblas_set_num_threads(3);
    omp_run runs[OMP_RUNS];
    for (int k = 0; k < OMP_RUNS; k++) {
        runs[k] = (omp_run){ .threads = k + 1, .body = body };
        pthread_t th;
        ck_assert_int_eq(pthread_create(&th, NULL, run_thread, &runs[k]), 0);
        ck_assert_int_eq(pthread_join(th, NULL), 0);
        ck_assert_msg(runs[k].r.threads_seen == k + 1, "ops_threads() is %d, want %d",
                      runs[k].r.threads_seen, k + 1);
    }
    openblas_set_num_threads(1);
    for (int k = 1; k < OMP_RUNS; k++) {
        ck_assert_int_eq(runs[k].r.n, runs[0].r.n);
        for (int i = 0; i < runs[0].r.n; i++) {
            ck_assert_uint_eq(runs[k].r.size[i], runs[0].r.size[i]);
            ck_assert_msg(memcmp(runs[k].r.bytes[i], runs[0].r.bytes[i], runs[0].r.size[i]) == 0,
                          "%s: %d threads differ from 1 thread", runs[0].r.name[i], k + 1);
        }
    }
    for (int k = 0; k < OMP_RUNS; k++) results_free(&runs[k].r);
}

START_TEST(block_same_bytes) { expect_same_bytes(run_block); }
END_TEST

START_TEST(elementwise_same_bytes) { expect_same_bytes(run_elementwise); }
END_TEST

#else

START_TEST(block_same_bytes) { printf("skipped: omp: the kernels run on one thread in this build\n"); }
END_TEST

START_TEST(elementwise_same_bytes) { printf("skipped: omp: the kernels run on one thread in this build\n"); }
END_TEST

#endif

Suite *omp_suite(void)
{
    Suite *s = suite_create("omp");
    TCase *tc = tcase_create("same bytes on 1, 2, 3 threads");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, block_same_bytes);
    tcase_add_test(tc, elementwise_same_bytes);
    suite_add_tcase(s, tc);
    return s;
}
