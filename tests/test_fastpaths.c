/* test_fastpaths.c — the special-case kernels against plain reference loops,
 * bit for bit.
 *
 * ops/pool.c has a 2×2 stride-2 forward (maxpool_2x2) beside the general
 * window walk.  It must give the bytes the general loop gave: the maxima
 * and the positions of the first maximum of each window (ties included),
 * hence a gradient that is 0 + g at the position and +0 elsewhere, the rows
 * and columns past the last window included (odd sizes), −0 seeds becoming
 * +0 as the addition makes them.  The references are written out plainly
 * in the test; 3×3 and 9×9 run the general walk against them too, and the
 * backward kernels' table of window offsets (k·k ≤ 64) and its fallback. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops/ops.h"
#include "testutil.h"

Suite *fastpaths_suite(void);

/* x [N,C,H,W] pooled k×k, stride k: the maxima (first wins) and each
 * window's position i·k + j, written into max and pos [N,C,P,Q]. */
static void ref_maxpool(const ad_value *x, int k, ad_real *max, int *pos)
{
    int NC = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
    int P = (H - k) / k + 1, Q = (W - k) / k + 1;
    for (int nc = 0; nc < NC; nc++)
        for (int p = 0; p < P; p++)
            for (int q = 0; q < Q; q++) {
                const ad_real *plane = x->data + (size_t)nc * H * W;
                ad_real best = plane[(size_t)(p * k) * W + q * k];
                int at = 0;
                for (int i = 0; i < k; i++)
                    for (int j = 0; j < k; j++) {
                        ad_real v = plane[(size_t)(p * k + i) * W + q * k + j];
                        if (v > best) best = v, at = i * k + j;
                    }
                max[((size_t)nc * P + p) * Q + q] = best;
                pos[((size_t)nc * P + p) * Q + q] = at;
            }
}

/* maxpool2d(x, k, k) and its vector-Jacobian product with seed u against
 * the references, memcmp. */
static void expect_pool_exact(ad_value *x, int k, ad_value *u)
{
    int N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    int P = (H - k) / k + 1, Q = (W - k) / k + 1;
    size_t n_out = (size_t)N * C * P * Q;
    ad_real *max = malloc(n_out * sizeof *max), *dx = calloc(x->size, sizeof *dx);
    int *pos = malloc(n_out * sizeof *pos);
    ck_assert(max && dx && pos);
    ref_maxpool(x, k, max, pos);
    for (size_t o = 0; o < n_out; o++) { /* zeros, then 0 + u at the position */
        size_t nc = o / ((size_t)P * Q), p = o / Q % P, q = o % Q;
        size_t at = nc * H * W + (p * k + pos[o] / k) * W + q * k + pos[o] % k;
        dx[at] = dx[at] + u->data[o];
    }
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *y = ad_maxpool2d(tp, x, k, k), *g;
    ck_assert_msg(y != NULL, "%s", ad_error());
    ck_assert_uint_eq(y->size, n_out);
    ck_assert_msg(memcmp(y->data, max, n_out * sizeof *max) == 0, "maxpool %dx%d: maxima differ", k, k);
    ck_assert_int_eq(ad_vjp(tp, y, u, 1, &x, &g, false), AD_OK);
    ck_assert_msg(memcmp(g->data, dx, x->size * sizeof *dx) == 0, "maxpool %dx%d: gradient differs", k, k);
    ad_tape_free(tp);
    free(max), free(dx), free(pos);
}

static ad_value *rand_tensor(ad_rng *rng, int rank, const int *shape, bool ties, bool param)
{
    ad_value *v = ad_tensor_randn(rng, rank, shape, 1);
    ck_assert_ptr_nonnull(v);
    if (ties) /* a few values only: windows with equal maxima, and −0 and +0 */
        for (size_t i = 0; i < v->size; i++) v->data[i] = (ad_real)((int)ad_rng_below(rng, 3) - 1);
    for (size_t i = 0; i < v->size; i += 7) v->data[i] = (ad_real)-0.0;
    if (param) ck_assert_int_eq(ad_set_requires_grad(v, true), AD_OK);
    return v;
}

/* 2×2 (the fast forward), 3×3 (the general walk) and 9×9 (81 entries: the
 * backward kernels divide by k instead of using their table of offsets),
 * on even and odd sizes, with and without ties. */
START_TEST(maxpool_exact)
{
    static const int sizes[][4] = { { 2, 3, 8, 8 }, { 1, 2, 7, 9 }, { 3, 1, 6, 11 }, { 2, 2, 2, 3 },
                                    { 1, 2, 19, 20 } };
    static const int ks[] = { 2, 3, 9 };
    ad_rng rng;
    ad_rng_seed(&rng, 5);
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++)
            for (int ties = 0; ties <= 1; ties++) {
                const int *S = sizes[s], k = ks[ki];
                if (k > S[2] || k > S[3]) continue;
                int P = (S[2] - k) / k + 1, Q = (S[3] - k) / k + 1;
                ad_value *x = rand_tensor(&rng, 4, S, ties, true);
                ad_value *u = rand_tensor(&rng, 4, (int[]){ S[0], S[1], P, Q }, false, false);
                expect_pool_exact(x, k, u);
                ad_value_free(x), ad_value_free(u);
            }
}
END_TEST

Suite *fastpaths_suite(void)
{
    Suite *s = suite_create("fastpaths");
    TCase *tc = tcase_create("against plain loops");
    tcase_add_test(tc, maxpool_exact);
    suite_add_tcase(s, tc);
    return s;
}
