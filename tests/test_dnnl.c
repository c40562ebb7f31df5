/* test_dnnl.c — conv2d's oneDNN kernels (ops/conv_dnnl.c, float build with
 * -Ddnnl) against its im2col kernels, on the same random inputs: the
 * forward, the data gradient and the weight gradient, at the one-shot
 * network's shapes (1 and 64 channels; 28, 14, 7, 3 and 1 maps; batches of
 * 1, 5 and 75; with and without bias) and a strided and a rectangular one;
 * and on several threads at once (each thread's own primitive cache, freed
 * when the thread exits: the sanitizer build sees a leak otherwise).
 *
 * Tolerance: both paths round every product and add up n of them (n =
 * C·kh·kw for the forward, O·kh·kw for the data gradient, N·P·Q for the
 * weight gradient) in different orders, in float.  Each entry may differ by
 * rounding errors that grow like √n·u·S, with u = 2^-24 and S the entry's
 * sum of |terms| (the same conv on |x|, |w|, |seed|); the bound is 4·√n·u·S
 * (the worst case n·u·S would let a wrong tap of a 75-image weight gradient
 * through).  A wrong pixel, tap or channel changes an entry by about one
 * term, far above that.
 *
 * Without oneDNN in the build (double, -Ddnnl=disabled, no libdnnl-dev)
 * each test says so on a "skipped:" line and passes. */
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "hypertape_config.h"
#include "ops/conv_dnnl.h"
#include "ops/ops.h"
#include "testutil.h"

Suite *dnnl_suite(void);

#if HT_DNNL

typedef struct dnnl_case {
    int N, C, H, W, O, k, stride, pad;
    bool bias;
} dnnl_case;

/* The one-shot network's (3×3, pad 1, 64 outputs; its first layer takes one
 * channel of 28×28, which stays with the im2col kernels: fewer than 16
 * channels, CONV_DNNL_MIN_C), then a strided case and a 5×5 kernel on a
 * rectangular map. */
static const dnnl_case dnnl_cases[] = {
    { 1, 1, 28, 28, 64, 3, 1, 1, true },   { 5, 1, 28, 28, 64, 3, 1, 1, false },
    { 75, 1, 28, 28, 64, 3, 1, 1, true },  { 1, 64, 14, 14, 64, 3, 1, 1, true },
    { 5, 64, 14, 14, 64, 3, 1, 1, false }, { 75, 64, 14, 14, 64, 3, 1, 1, true },
    { 5, 64, 7, 7, 64, 3, 1, 1, true },    { 75, 64, 7, 7, 64, 3, 1, 1, false },
    { 1, 64, 3, 3, 64, 3, 1, 1, false },   { 75, 64, 3, 3, 64, 3, 1, 1, true },
    { 5, 64, 1, 1, 64, 3, 1, 1, true },    { 75, 64, 1, 1, 64, 3, 1, 1, false },
    { 3, 16, 11, 9, 32, 3, 2, 1, true },  { 2, 32, 6, 10, 16, 5, 1, 2, false },
};

/* What one path computes: y = conv(x, w, b), and for the seed u the data
 * and weight gradients (a plain vector-Jacobian product: conv_data_grad and
 * conv_weight_grad's kernels). */
typedef struct conv_results {
    ad_value *y, *dx, *dw;
} conv_results;

static conv_results run_conv(ad_tape *tp, bool dnnl, ad_value *x, ad_value *w, ad_value *b,
                             ad_value *u, const dnnl_case *c)
{
    conv_dnnl_set_enabled(dnnl);
    conv_results r = { ad_conv2d(tp, x, w, b, c->stride, c->pad), NULL, NULL };
    ck_assert_msg(r.y != NULL, "%s", ad_error());
    ad_value *g[2];
    ck_assert_int_eq(ad_vjp(tp, r.y, u, 2, (ad_value *[]){ x, w }, g, false), AD_OK);
    r.dx = g[0], r.dw = g[1];
    conv_dnnl_set_enabled(true);
    return r;
}

/* |got − want| ≤ 4·√n·u·S entry by entry (S from `scale`); the worst entry
 * is named on failure. */
static void expect_close(const char *what, const ad_value *got, const ad_value *want,
                         const ad_value *scale, double n)
{
    ck_assert_uint_eq(got->size, want->size);
    double bound = 4 * sqrt(n) * 0x1p-24, worst = 0;
    size_t at = 0;
    for (size_t i = 0; i < got->size; i++) {
        double d = fabs((double)got->data[i] - (double)want->data[i]);
        double r = d / (bound * (double)scale->data[i] + 1e-30);
        if (r > worst) worst = r, at = i;
    }
    ck_assert_msg(worst <= 1, "%s: entry %zu: oneDNN %.9g, im2col %.9g, |diff| %.3g > bound %.3g "
                  "(n = %.0f, S = %.6g)", what, at, (double)got->data[at], (double)want->data[at],
                  fabs((double)got->data[at] - (double)want->data[at]),
                  bound * (double)scale->data[at], n, (double)scale->data[at]);
}

static ad_value *abs_of(ad_value *v)
{
    ad_value *a = ad_value_copy(v);
    for (size_t i = 0; i < a->size; i++) a->data[i] = fabsf(a->data[i]);
    return a;
}

START_TEST(dnnl_matches_im2col)
{
    const dnnl_case *c = &dnnl_cases[_i];
    ad_rng rng;
    ad_rng_seed(&rng, 1301 + (uint64_t)_i);
    int P = (c->H + 2 * c->pad - c->k) / c->stride + 1, Q = (c->W + 2 * c->pad - c->k) / c->stride + 1;
    ad_value *x = ad_tensor_rand(&rng, 4, (int[]){ c->N, c->C, c->H, c->W }, -1, 1);
    ad_value *w = ad_tensor_rand(&rng, 4, (int[]){ c->O, c->C, c->k, c->k }, -1, 1);
    ad_value *b = ad_tensor_rand(&rng, 1, &c->O, -1, 1);
    ad_value *u = ad_tensor_rand(&rng, 4, (int[]){ c->N, c->O, P, Q }, -1, 1);
    ad_value *ax = abs_of(x), *aw = abs_of(w), *ab = abs_of(b), *au = abs_of(u);
    ad_value *wants[] = { x, w, b, ax, aw };
    for (int i = 0; i < 5; i++) ck_assert_int_eq(ad_set_requires_grad(wants[i], true), AD_OK);
    /* Which path ran: oneDNN's three primitives from 16 channels in and out
     * (so that this test cannot pass by comparing im2col with itself). */
    conv_geom g = { c->N, c->C, c->H, c->W, c->k, c->k, c->stride, c->pad };
    bool want = c->C >= 16 && c->O >= 16;
    for (int kind = CONV_DNNL_FORWARD; kind <= CONV_DNNL_WEIGHT; kind++) {
        conv_dnnl_prim *prim;
        ck_assert_int_eq(conv_dnnl_prepare(&prim, kind, &g, c->O, c->bias, "test"), AD_OK);
        ck_assert_msg((prim != NULL) == want, "kind %d: oneDNN primitive %s", kind,
                      prim ? "made" : "not made");
    }
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    conv_results d = run_conv(tp, true, x, w, c->bias ? b : NULL, u, c);
    conv_results r = run_conv(tp, false, x, w, c->bias ? b : NULL, u, c);
    conv_results s = run_conv(tp, false, ax, aw, c->bias ? ab : NULL, au, c);
    expect_close("forward", d.y, r.y, s.y, c->C * c->k * c->k + (c->bias ? 1 : 0));
    expect_close("data gradient", d.dx, r.dx, s.dx, c->O * c->k * c->k);
    expect_close("weight gradient", d.dw, r.dw, s.dw, (double)c->N * P * Q);
    ad_tape_free(tp);
    ad_value *v[] = { x, w, b, u, ax, aw, ab, au };
    for (int i = 0; i < 8; i++) ad_value_free(v[i]);
}
END_TEST

/* Three threads (each its own tape and primitive cache) convolve the same
 * leaves at once, each several shapes twice (a cache hit), and get the main
 * thread's numbers bit for bit: a primitive gives the same result wherever
 * it runs with the same thread count (one, as the tests run). */
typedef struct dnnl_worker {
    ad_value *x, *w;
    double sum; /* Σ of the outputs, in order */
    int rc;
} dnnl_worker;

static double conv_sums(ad_value *x, ad_value *w, int *rc)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    double s = 0;
    *rc = AD_OK;
    for (int rep = 0; rep < 2; rep++)
        for (int pad = 0; pad <= 2; pad++) {
            ad_value *y = ad_conv2d(tp, x, w, NULL, 1, pad);
            if (!y) {
                *rc = ad_error_code();
                break;
            }
            for (size_t k = 0; k < y->size; k++) s += y->data[k];
        }
    ad_tape_free(tp);
    return s;
}

static void *dnnl_thread(void *arg)
{
    dnnl_worker *t = arg;
    t->sum = conv_sums(t->x, t->w, &t->rc);
    return NULL;
}

START_TEST(dnnl_threads)
{
    ad_rng rng;
    ad_rng_seed(&rng, 77);
    ad_value *x = ad_tensor_rand(&rng, 4, (int[]){ 5, 16, 9, 9 }, -1, 1);
    ad_value *w = ad_tensor_rand(&rng, 4, (int[]){ 32, 16, 3, 3 }, -1, 1);
    int rc;
    double want = conv_sums(x, w, &rc);
    ck_assert_int_eq(rc, AD_OK);
    dnnl_worker t[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        t[i] = (dnnl_worker){ x, w, 0, -1 };
        ck_assert_int_eq(pthread_create(&th[i], NULL, dnnl_thread, &t[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(t[i].rc, AD_OK);
        ck_assert_msg(t[i].sum == want, "thread %d: %.17g, main thread %.17g", i, t[i].sum, want);
    }
    ad_value_free(x);
    ad_value_free(w);
}
END_TEST

#else

START_TEST(dnnl_absent)
{
    fprintf(stderr, "skipped: oneDNN is not in this build (it needs -Dreal=float and libdnnl-dev; "
                    "-Ddnnl=auto|enabled)\n");
}
END_TEST

#endif

Suite *dnnl_suite(void)
{
    Suite *s = suite_create("dnnl");
    TCase *tc = tcase_create("dnnl");
    tcase_set_timeout(tc, 300);
#if HT_DNNL
    tcase_add_loop_test(tc, dnnl_matches_im2col, 0, (int)(sizeof dnnl_cases / sizeof dnnl_cases[0]));
    tcase_add_test(tc, dnnl_threads);
#else
    tcase_add_test(tc, dnnl_absent);
#endif
    suite_add_tcase(s, tc);
    return s;
}
