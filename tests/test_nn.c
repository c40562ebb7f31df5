/* test_nn.c — softmax, cross-entropy, conv2d, maxpool2d and batchnorm:
 * hand-computed forwards, a naive reference convolution, first- and
 * second-order gradient checks for every op (w.r.t. every differentiable
 * argument), and the error messages. */
#include <check.h>
#include <math.h>
#include <string.h>

#include "gradcheck.h"
#include "testutil.h"
#include "ops/ops.h"

/* ---- softmax and cross-entropy: forward -------------------------------- */

START_TEST(softmax_forward)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    /* Row 2 is row 1 shifted by 1000: max subtraction must keep it finite
     * and give the same answer. */
    ad_value *x = ad_const(tp, 2, (int[]){ 2, 3 }, (ad_real[]){ 1, 2, 3, 1001, 1002, 1003 });
    const double s[3] = { 0.09003057317038046, 0.24472847105479767, 0.6652409557748219 };
    const double l[3] = { -2.40760596444438, -1.4076059644443801, -0.4076059644443803 };
    tu_expect_values(ad_softmax(tp, x), (double[]){ s[0], s[1], s[2], s[0], s[1], s[2] }, 6, TU_TOL(2));
    tu_expect_values(ad_log_softmax(tp, x), (double[]){ l[0], l[1], l[2], l[0], l[1], l[2] }, 6,
                     TU_TOL(2) * 1003); /* x − logsumexp(x) near 1003: ulps of 1003 */
    ad_tape_free(tp);
}
END_TEST

START_TEST(cross_entropy_forward)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    /* Row 0: −log softmax([1,2,3])₂; row 1: uniform, −log ⅓ = log 3. */
    ad_value *z = ad_const(tp, 2, (int[]){ 2, 3 }, (ad_real[]){ 1, 2, 3, 1, 1, 1 });
    ad_value *y = ad_const(tp, 1, (int[]){ 2 }, (ad_real[]){ 2, 0 });
    ad_value *w = ad_const(tp, 1, (int[]){ 2 }, (ad_real[]){ 2, 0.5 });
    const double a = 0.4076059644443803, b = 1.0986122886681098;
    tu_expect_values(ad_cross_entropy(tp, z, y, NULL, AD_REDUCE_SUM), (double[]){ a + b }, 1, TU_TOL(8));
    tu_expect_values(ad_cross_entropy(tp, z, y, NULL, AD_REDUCE_MEAN), (double[]){ (a + b) / 2 }, 1, TU_TOL(8));
    tu_expect_values(ad_cross_entropy(tp, z, y, w, AD_REDUCE_SUM), (double[]){ 2 * a + 0.5 * b }, 1, TU_TOL(8));
    /* mean divides by N, not by the sum of the weights */
    tu_expect_values(ad_cross_entropy(tp, z, y, w, AD_REDUCE_MEAN), (double[]){ (2 * a + 0.5 * b) / 2 },
                     1, TU_TOL(8));
    ad_tape_free(tp);
}
END_TEST

/* d CE / d logits = softmax − one_hot, and d CE / d wᵢ = −log softmaxᵢ,yᵢ. */
START_TEST(cross_entropy_gradient_values)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *z = ad_param_from(2, (int[]){ 1, 3 }, (ad_real[]){ 1, 2, 3 });
    ad_value *w = ad_param_from(1, (int[]){ 1 }, (ad_real[]){ 1 });
    ad_value *y = ad_tensor_from(1, (int[]){ 1 }, (ad_real[]){ 0 });
    ad_value *xs[2] = { z, w }, *g[2];
    ad_value *loss = ad_cross_entropy(tp, z, y, w, AD_REDUCE_SUM);
    ck_assert_int_eq(ad_grad(tp, loss, 2, xs, g, false), AD_OK);
    tu_expect_values(g[0], (double[]){ 0.09003057317038046 - 1, 0.24472847105479767, 0.6652409557748219 },
                     3, TU_TOL(2));
    tu_expect_values(g[1], (double[]){ 2.40760596444438 }, 1, TU_TOL(8));
    ad_tape_free(tp);
    ad_value_free(z);
    ad_value_free(w);
    ad_value_free(y);
}
END_TEST

/* ---- softmax and cross-entropy: gradients ------------------------------ */

static ad_value *call_softmax(ad_tape *tp, ad_value *const *x, void *ctx)
{
    (void)ctx;
    return ad_softmax(tp, x[0]);
}

static ad_value *call_log_softmax(ad_tape *tp, ad_value *const *x, void *ctx)
{
    (void)ctx;
    return ad_log_softmax(tp, x[0]);
}

START_TEST(softmax_gradients)
{
    ad_rng rng;
    ad_rng_seed(&rng, 21);
    ad_value *x = gc_param(&rng, 2, (int[]){ 3, 5 }, -3, 3, 0);
    ck_assert_int_eq(gc_check("softmax", call_softmax, NULL, 1, &x, NULL), 0);
    ck_assert_int_eq(gc_check("log_softmax", call_log_softmax, NULL, 1, &x, NULL), 0);
    ad_value_free(x);
}
END_TEST

typedef struct ce_case {
    ad_value *labels;
    ad_reduction reduction;
    bool weighted;
} ce_case;

static ad_value *call_ce(ad_tape *tp, ad_value *const *x, void *ctx)
{
    const ce_case *c = ctx;
    return ad_cross_entropy(tp, x[0], c->labels, c->weighted ? x[1] : NULL, c->reduction);
}

/* _i: bit 0 picks sum over mean, bit 1 adds weights (as a second input). */
START_TEST(cross_entropy_gradients)
{
    ad_rng rng;
    ad_rng_seed(&rng, 31 + (uint64_t)_i);
    ce_case c = { ad_tensor_from(1, (int[]){ 5 }, (ad_real[]){ 2, 0, 3, 3, 1 }),
                  (_i & 1) ? AD_REDUCE_SUM : AD_REDUCE_MEAN, (_i & 2) != 0 };
    ad_value *x[2] = { gc_param(&rng, 2, (int[]){ 5, 4 }, -2, 2, 0),
                       gc_param(&rng, 1, (int[]){ 5 }, 0.1, 2, 0) };
    ck_assert_msg(gc_check("cross_entropy", call_ce, &c, c.weighted ? 2 : 1, x, NULL) == 0,
                  "cross_entropy case %d", _i);
    ad_value_free(x[0]);
    ad_value_free(x[1]);
    ad_value_free(c.labels);
}
END_TEST

/* Hypercleaning's hypergradient: the weights act only through the
 * inner step w₁ = w₀ − η ∇_w CE(x w₀, y; λ), so d/dλ of an outer loss of
 * w₁ needs the mixed second derivative of cross_entropy. */
static ad_value *call_hyperclean(ad_tape *tp, ad_value *const *x, void *ctx)
{
    const ce_case *c = ctx;
    /* gc evaluates L in a no-record scope, but the inner gradient needs a
     * recorded forward, so recording resumes while this runs. */
    bool paused = !ad_tape_recording(tp);
    if (paused) ad_no_record_end(tp);
    ad_value *feat = x[0], *w0 = x[1], *lam = x[2], *gw = NULL, *out = NULL;
    ad_value *inner = ad_cross_entropy(tp, ad_matmul(tp, feat, w0, false, false), c->labels,
                                       ad_sigmoid(tp, lam), AD_REDUCE_MEAN);
    if (inner && ad_grad(tp, inner, 1, &w0, &gw, true) == AD_OK) {
        ad_value *w1 = ad_sub(tp, w0, ad_scale(tp, gw, 0.5));
        out = ad_cross_entropy(tp, ad_matmul(tp, feat, w1, false, false), c->labels, NULL,
                               AD_REDUCE_SUM);
    }
    if (paused) ad_no_record_begin(tp);
    return out;
}

START_TEST(cross_entropy_hyperclean_gradient)
{
    ad_rng rng;
    ad_rng_seed(&rng, 41);
    ce_case c = { ad_tensor_from(1, (int[]){ 4 }, (ad_real[]){ 1, 0, 2, 1 }), AD_REDUCE_MEAN, true };
    ad_value *x[3] = { ad_tensor_randn(&rng, 2, (int[]){ 4, 3 }, 1),
                       gc_param(&rng, 2, (int[]){ 3, 3 }, -1, 1, 0),
                       gc_param(&rng, 1, (int[]){ 4 }, -1, 1, 0) };
    ck_assert_int_eq(gc_check("hyperclean step", call_hyperclean, &c, 3, x, NULL), 0);
    for (int i = 0; i < 3; i++) ad_value_free(x[i]);
    ad_value_free(c.labels);
}
END_TEST

/* ---- conv2d ------------------------------------------------------------ */

START_TEST(conv2d_forward)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_real xs[16];
    for (int i = 0; i < 16; i++) xs[i] = (ad_real)(i + 1); /* x[h,w] = 4h + w + 1 */
    ad_value *x = ad_const(tp, 4, (int[]){ 1, 1, 4, 4 }, xs);
    /* [[1,2],[3,4]] on x gives x + 2(x + 1) + 3(x + 4) + 4(x + 5) = 10·x[p,q]
     * + 34 (x grows by 1 along w, 4 along h), and the bias adds 1. */
    ad_value *w = ad_const(tp, 4, (int[]){ 1, 1, 2, 2 }, (ad_real[]){ 1, 2, 3, 4 });
    ad_value *b = ad_const(tp, 1, (int[]){ 1 }, (ad_real[]){ 1 });
    tu_expect_values(ad_conv2d(tp, x, w, b, 1, 0),
                     (double[]){ 45, 55, 65, 85, 95, 105, 125, 135, 145 }, 9, 0);
    /* A 3×3 box of ones, pad 1, stride 2: sums of the (clipped) windows
     * centred on (0,0), (0,2), (2,0), (2,2). */
    ad_value *box = ad_const_fill(tp, 4, (int[]){ 1, 1, 3, 3 }, 1);
    ad_value *y = ad_conv2d(tp, x, box, NULL, 2, 1);
    tu_expect_values(y, (double[]){ 14, 30, 57, 99 }, 4, 0);
    ck_assert_int_eq(y->rank, 4);
    ck_assert_int_eq(y->shape[2], 2);
    ck_assert_int_eq(y->shape[3], 2);
    ad_tape_free(tp);
}
END_TEST

/* Direct convolution, the definition, in double: out [N,O,P,Q].  Returns the
 * largest sum of the terms' magnitudes: a sum of n terms in the real type is
 * within n·ε of that of the exact one, whatever the order of the additions. */
static double conv_reference(double *out, const ad_value *x, const ad_value *w, const ad_value *b,
                             int stride, int pad, int P, int Q)
{
    double most = 0;
    int N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    int O = w->shape[0], kh = w->shape[2], kw = w->shape[3];
    for (int n = 0; n < N; n++)
        for (int o = 0; o < O; o++)
            for (int p = 0; p < P; p++)
                for (int q = 0; q < Q; q++) {
                    double s = b ? b->data[o] : 0, abs_s = fabs(s);
                    for (int c = 0; c < C; c++)
                        for (int i = 0; i < kh; i++)
                            for (int j = 0; j < kw; j++) {
                                int h = p * stride - pad + i, v = q * stride - pad + j;
                                if (h < 0 || h >= H || v < 0 || v >= W) continue;
                                double t = x->data[((n * C + c) * H + h) * W + v] *
                                           w->data[((o * C + c) * kh + i) * kw + j];
                                s += t;
                                abs_s += fabs(t);
                            }
                    *out++ = s;
                    most = fmax(most, abs_s);
                }
    return most;
}

/* Batches, several channels both sides, non-square kernels and images. */
START_TEST(conv2d_matches_reference)
{
    static const struct { int stride, pad, kh, kw; } cases[] = {
        { 1, 0, 3, 3 }, { 2, 1, 3, 2 }, { 1, 2, 2, 3 }, { 3, 1, 1, 1 },
    };
    ad_rng rng;
    ad_rng_seed(&rng, 51);
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        int s = cases[k].stride, pad = cases[k].pad;
        ad_value *x = ad_tensor_randn(&rng, 4, (int[]){ 2, 3, 5, 6 }, 1);
        ad_value *w = ad_tensor_randn(&rng, 4, (int[]){ 4, 3, cases[k].kh, cases[k].kw }, 1);
        ad_value *b = ad_tensor_randn(&rng, 1, (int[]){ 4 }, 1);
        int P = (5 + 2 * pad - cases[k].kh) / s + 1, Q = (6 + 2 * pad - cases[k].kw) / s + 1;
        double want[2 * 4 * 8 * 8];
        double most = conv_reference(want, x, w, b, s, pad, P, Q);
        ad_value *y = ad_conv2d(tp, x, w, b, s, pad);
        ck_assert_ptr_nonnull(y);
        ck_assert_int_eq(y->shape[0], 2);
        ck_assert_int_eq(y->shape[1], 4);
        ck_assert_int_eq(y->shape[2], P);
        ck_assert_int_eq(y->shape[3], Q);
        int terms = 3 * cases[k].kh * cases[k].kw + 1; /* C·kh·kw products and the bias */
        tu_expect_values(y, want, (size_t)2 * 4 * P * Q, TU_TOL(terms) * most);
        ad_value_free(x);
        ad_value_free(w);
        ad_value_free(b);
    }
    ad_tape_free(tp);
}
END_TEST

typedef struct conv_case {
    int stride, pad;
    bool bias, square; /* square: f = conv(x)² so that ∂²/∂x² ≠ 0 */
    bool rect;         /* a 5×6 image and a 3×2 kernel: H≠W and kh≠kw */
} conv_case;

static ad_value *call_conv(ad_tape *tp, ad_value *const *x, void *ctx)
{
    const conv_case *c = ctx;
    ad_value *y = ad_conv2d(tp, x[0], x[1], c->bias ? x[2] : NULL, c->stride, c->pad);
    return c->square ? ad_square(tp, y) : y;
}

/* N=2, C=2, 5×5, O=3, 3×3; with x, w and b all inputs the bilinear conv has
 * non-zero mixed second derivatives, so the second-order check exercises
 * col2im's rule (im2col); squaring the output adds the curvature in x alone. */
static const conv_case conv_cases[] = {
    { 1, 0, true, false, false }, { 1, 1, true, false, false }, { 2, 0, true, false, false },
    { 2, 1, true, false, false }, { 1, 1, false, true, false }, { 2, 1, true, true, false },
    { 3, 1, true, true, false }, /* (5 + 2 − 3)/3 leaves a remainder: the edge is dropped */
    { 1, 1, true, false, true }, { 2, 1, true, true, true }, /* a mix-up of H and W shows */
};

START_TEST(conv2d_gradients)
{
    conv_case c = conv_cases[_i];
    ad_rng rng;
    ad_rng_seed(&rng, 61 + (uint64_t)_i);
    ad_value *x[3] = { gc_param(&rng, 4, (int[]){ 2, 2, 5, c.rect ? 6 : 5 }, -1, 1, 0),
                       gc_param(&rng, 4, (int[]){ 3, 2, 3, c.rect ? 2 : 3 }, -1, 1, 0),
                       gc_param(&rng, 1, (int[]){ 3 }, -1, 1, 0) };
    ck_assert_msg(gc_check("conv2d", call_conv, &c, c.bias ? 3 : 2, x, NULL) == 0,
                  "conv2d stride %d pad %d bias %d square %d rect %d", c.stride, c.pad, c.bias,
                  c.square, c.rect);
    for (int i = 0; i < 3; i++) ad_value_free(x[i]);
}
END_TEST

/* ---- maxpool2d --------------------------------------------------------- */

START_TEST(maxpool_forward)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *x = ad_const(tp, 4, (int[]){ 1, 1, 4, 4 },
                           (ad_real[]){ 1, 5, 2, 0,
                                        3, 4, 8, 1,
                                        0, 2, 7, 6,
                                        9, 1, 3, 5 });
    tu_expect_values(ad_maxpool2d(tp, x, 2, 2), (double[]){ 5, 8, 9, 7 }, 4, 0);
    /* overlapping 3×3 windows, stride 1 */
    tu_expect_values(ad_maxpool2d(tp, x, 3, 1), (double[]){ 8, 8, 9, 8 }, 4, 0);
    /* stride 3 with k 2: only the windows at 0 fit; the last row and column
     * are dropped, as in every framework */
    tu_expect_values(ad_maxpool2d(tp, x, 2, 3), (double[]){ 5 }, 1, 0);
    ad_tape_free(tp);
}
END_TEST

/* The gradient goes to the window's maximum, the first one on a tie, and a
 * maximum shared by overlapping windows collects from each. */
START_TEST(maxpool_gradient_routing)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *x = ad_param_from(4, (int[]){ 1, 1, 2, 4 }, (ad_real[]){ 1, 1, 9, 0,
                                                                       1, 1, 2, 1 });
    ad_value *g;
    ck_assert_int_eq(ad_grad(tp, ad_sum(tp, ad_maxpool2d(tp, x, 2, 2)), 1, &x, &g, false), AD_OK);
    tu_expect_values(g, (double[]){ 1, 0, 1, 0, 0, 0, 0, 0 }, 8, 0);
    ck_assert_int_eq(ad_grad(tp, ad_sum(tp, ad_maxpool2d(tp, x, 2, 1)), 1, &x, &g, false), AD_OK);
    tu_expect_values(g, (double[]){ 1, 0, 2, 0, 0, 0, 0, 0 }, 8, 0);
    ad_tape_free(tp);
    ad_value_free(x);
}
END_TEST

/* A window holding NaN gives NaN, and its first NaN takes the gradient,
 * wherever it sits: the 2×2 stride-2 kernel (k 2, stride 2), the general
 * loop (k 2, stride 1 and k 3, stride 3, one window each), with and without
 * a gradient to route.  Finite entries 1..k² keep the NaN from ever being
 * the first maximum by accident. */
START_TEST(maxpool_nan)
{
    static const int ks[3][2] = { { 2, 2 }, { 2, 1 }, { 3, 3 } };
    for (int c = 0; c < 3; c++) {
        int k = ks[c][0], stride = ks[c][1], n = k * k;
        for (int p = 0; p < n; p++)
            for (int q = p; q < n; q++) { /* NaN at p, and at q too when q > p */
                ad_real v[9];
                for (int i = 0; i < n; i++) v[i] = (ad_real)(i + 1);
                v[p] = v[q] = NAN;
                ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
                ad_value *x = ad_param_from(4, (int[]){ 1, 1, k, k }, v), *g;
                ad_value *y = ad_maxpool2d(tp, ad_const(tp, 4, (int[]){ 1, 1, k, k }, v), k, stride);
                ck_assert_msg(y && y->size == 1 && isnan(y->data[0]), "k %d stride %d, NaN at %d: no grad %g",
                              k, stride, p, y ? (double)y->data[0] : 0.0);
                y = ad_maxpool2d(tp, x, k, stride);
                ck_assert_msg(y && y->size == 1 && isnan(y->data[0]), "k %d stride %d, NaN at %d: %g", k,
                              stride, p, y ? (double)y->data[0] : 0.0);
                ck_assert_int_eq(ad_grad(tp, ad_sum(tp, y), 1, &x, &g, false), AD_OK);
                for (int i = 0; i < n; i++)
                    ck_assert_msg(g->data[i] == (i == p), "k %d stride %d, NaN at %d and %d: g[%d] = %g", k,
                                  stride, p, q, i, (double)g->data[i]);
                ad_tape_free(tp);
                ad_value_free(x);
            }
    }
    /* Rows of several 2×2 windows (an odd last column in none): the one
     * holding a NaN gives NaN, its neighbours their maxima. */
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *x = ad_param_from(4, (int[]){ 1, 1, 2, 7 }, (ad_real[]){ 1, 5, 2, 3, 9, 1, NAN,
                                                                       4, 0, 6, NAN, 2, 8, 7 }), *g;
    ad_value *y = ad_maxpool2d(tp, x, 2, 2);
    ck_assert_ptr_nonnull(y);
    ck_assert(y->size == 3 && y->data[0] == 5 && isnan(y->data[1]) && y->data[2] == 9);
    ck_assert_int_eq(ad_grad(tp, ad_sum(tp, y), 1, &x, &g, false), AD_OK);
    tu_expect_values(g, (double[]){ 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0 }, 14, 0);
    ad_tape_free(tp);
    ad_value_free(x);
}
END_TEST

typedef struct pool_case {
    int k, stride;
} pool_case;

/* Squared so that the second derivative is not identically zero. */
static ad_value *call_pool(ad_tape *tp, ad_value *const *x, void *ctx)
{
    const pool_case *c = ctx;
    return ad_square(tp, ad_maxpool2d(tp, x[0], c->k, c->stride));
}

static const pool_case pool_cases[] = { { 2, 2 }, { 3, 2 }, { 3, 1 }, { 2, 3 } };

START_TEST(maxpool_gradients)
{
    /* A shuffled 0.1·(1..n): every window's maximum leads the runner-up by
     * at least 0.1, far more than the finite-difference steps move x. */
    enum { N = 2 * 2 * 6 * 6 };
    ad_rng rng;
    ad_rng_seed(&rng, 71 + (uint64_t)_i);
    ad_real v[N];
    for (int i = 0; i < N; i++) v[i] = (ad_real)(0.1 * (i + 1) - 0.05 * N);
    for (int i = N - 1; i > 0; i--) {
        int j = (int)ad_rng_below(&rng, (uint64_t)i + 1);
        ad_real t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
    ad_value *x = ad_param_from(4, (int[]){ 2, 2, 6, 6 }, v);
    pool_case c = pool_cases[_i];
    ck_assert_msg(gc_check("maxpool2d", call_pool, &c, 1, &x, NULL) == 0, "maxpool2d k %d stride %d",
                  c.k, c.stride);
    ad_value_free(x);
}
END_TEST

/* ---- batchnorm --------------------------------------------------------- */

/* Per-channel mean and biased variance of x [N,C] or [N,C,H,W]. */
static void channel_stats(const ad_value *x, int c, double *mean, double *var)
{
    int N = x->shape[0], C = x->shape[1];
    size_t inner = x->size / ((size_t)N * C), m = (size_t)N * inner;
    double s = 0, s2 = 0;
    for (int n = 0; n < N; n++)
        for (size_t k = 0; k < inner; k++) s += x->data[((size_t)n * C + c) * inner + k];
    *mean = s / m;
    for (int n = 0; n < N; n++)
        for (size_t k = 0; k < inner; k++) {
            double d = x->data[((size_t)n * C + c) * inner + k] - *mean;
            s2 += d * d;
        }
    *var = s2 / m;
}

START_TEST(batchnorm_forward)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    /* Channel 0 is 1,2,3,4: mean 2.5, variance 1.25. */
    ad_value *x2 = ad_const(tp, 2, (int[]){ 4, 2 }, (ad_real[]){ 1, 10, 2, -3, 3, 7, 4, 0.5 });
    ad_value *y = ad_batchnorm(tp, x2, NULL, NULL, 0);
    double r = 1 / sqrt(1.25);
    tu_expect_close(y->data[0], -1.5 * r, 8);
    tu_expect_close(y->data[6], 1.5 * r, 8);
    ad_rng rng;
    ad_rng_seed(&rng, 81);
    ad_value *rnd = ad_tensor_rand(&rng, 4, (int[]){ 3, 2, 2, 3 }, -5, 9);
    ad_value *x4 = ad_const(tp, 4, rnd->shape, rnd->data);
    ad_value_free(rnd);
    ad_value *gamma = ad_const(tp, 1, (int[]){ 2 }, (ad_real[]){ 2, -0.5 });
    ad_value *beta = ad_const(tp, 1, (int[]){ 2 }, (ad_real[]){ 1, 3 });
    const ad_value *ys[3] = { y, ad_batchnorm(tp, x4, NULL, NULL, 0),
                              ad_batchnorm(tp, x4, gamma, beta, 0) };
    for (int k = 0; k < 3; k++) {
        ck_assert_ptr_nonnull(ys[k]);
        for (int c = 0; c < 2; c++) {
            double mean, var, want_mean = k == 2 ? beta->data[c] : 0;
            double want_var = k == 2 ? gamma->data[c] * gamma->data[c] : 1;
            channel_stats(ys[k], c, &mean, &var);
            ck_assert_msg(fabs(mean - want_mean) <= TU_TOL(32) * fmax(1, fabs(want_mean)) &&
                          fabs(var - want_var) <= TU_TOL(32) * fmax(1, want_var),
                          "case %d channel %d: mean %g var %g", k, c, mean, var);
        }
    }
    /* eps enters as var + eps: */
    ad_value *ye = ad_batchnorm(tp, x2, NULL, NULL, 0.25);
    tu_expect_close(ye->data[0], -1.5 / sqrt(1.5), 8);
    ad_tape_free(tp);
}
END_TEST

typedef struct bn_case {
    int rank;
    bool affine;
} bn_case;

static ad_value *call_bn(ad_tape *tp, ad_value *const *x, void *ctx)
{
    const bn_case *c = ctx;
    return ad_batchnorm(tp, x[0], c->affine ? x[1] : NULL, c->affine ? x[2] : NULL, 1e-3);
}

static const bn_case bn_cases[] = { { 2, true }, { 4, true }, { 2, false }, { 4, false } };

START_TEST(batchnorm_gradients)
{
    bn_case c = bn_cases[_i];
    ad_rng rng;
    ad_rng_seed(&rng, 91 + (uint64_t)_i);
    int shape[4] = { 4, 3, 2, 3 };
    if (c.rank == 2) shape[0] = 6;
    ad_value *x[3] = { gc_param(&rng, c.rank, shape, -2, 2, 0),
                       gc_param(&rng, 1, (int[]){ 3 }, 0.5, 2, 0),
                       gc_param(&rng, 1, (int[]){ 3 }, -1, 1, 0) };
    ck_assert_msg(gc_check("batchnorm", call_bn, &c, c.affine ? 3 : 1, x, NULL) == 0,
                  "batchnorm rank %d affine %d", c.rank, c.affine);
    for (int i = 0; i < 3; i++) ad_value_free(x[i]);
}
END_TEST

/* ---- channel_sum ------------------------------------------------------- */

/* Shapes: [N,C] (one entry per image and channel: the strided sums), 2×3
 * maps (fewer entries than a lane loop takes), 3×4 and 5×7 maps (the lane
 * loop and its tail), and 67 channels (more than one group of a pass). */
static const int cs_shapes[][4] = { { 5, 3, 0, 0 }, { 3, 2, 2, 3 }, { 2, 3, 3, 4 }, { 3, 2, 5, 7 },
                                    { 2, 67, 3, 4 } };

/* The sums, against ad_sum_to to [1,C,(1,1)] (a plain walk): the same to
 * round-off. */
START_TEST(channel_sum_forward)
{
    const int *sh = cs_shapes[_i];
    int rank = sh[2] ? 4 : 2, C = sh[1];
    ad_rng rng;
    ad_rng_seed(&rng, 151 + (uint64_t)_i);
    ad_value *x = ad_tensor_rand(&rng, rank, sh, -3, 5);
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *s = ad_channel_sum(tp, x);
    ad_value *ref = ad_sum_to(tp, x, rank, (int[]){ 1, C, 1, 1 });
    ck_assert_msg(s && ref, "%s", ad_error());
    ck_assert_int_eq(s->rank, 1);
    ck_assert_int_eq(s->shape[0], C);
    double tol = sizeof(ad_real) == 8 ? 1e-13 : 1e-6;
    for (int c = 0; c < C; c++)
        ck_assert_msg(fabs(s->data[c] - ref->data[c]) <= tol * fmax(1, fabs(ref->data[c])),
                      "channel %d: %.17g vs %.17g", c, (double)s->data[c], (double)ref->data[c]);
    ad_tape_free(tp);
    ad_value_free(x);
}
END_TEST

static ad_value *call_channel_sum(ad_tape *tp, ad_value *const *x, void *ctx)
{
    (void)ctx;
    return ad_channel_sum(tp, x[0]);
}

START_TEST(channel_sum_gradients)
{
    const int *sh = cs_shapes[_i];
    ad_rng rng;
    ad_rng_seed(&rng, 161 + (uint64_t)_i);
    ad_value *x = gc_param(&rng, sh[2] ? 4 : 2, sh, -2, 2, 0);
    ck_assert_msg(gc_check("channel_sum", call_channel_sum, NULL, 1, &x, NULL) == 0, "shape %d", _i);
    ad_value_free(x);
}
END_TEST

/* ---- errors ------------------------------------------------------------ */

START_TEST(softmax_errors)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *v = ad_const_fill(tp, 1, (int[]){ 3 }, 0);
    ad_value *z = ad_const_fill(tp, 2, (int[]){ 2, 3 }, 0);
    tu_expect_error(ad_softmax(tp, v), "softmax: expected a 2-D [N,C] input, got [3]");
    tu_expect_error(ad_log_softmax(tp, v), "log_softmax: expected a 2-D [N,C] input, got [3]");
    ad_value *y = ad_const(tp, 1, (int[]){ 2 }, (ad_real[]){ 0, 3 });
    tu_expect_error(ad_cross_entropy(tp, z, y, NULL, AD_REDUCE_MEAN),
                    "cross_entropy: label 3 at index 1 is not a whole number in 0..2");
    y->data[1] = 1.5;
    tu_expect_error(ad_cross_entropy(tp, z, y, NULL, AD_REDUCE_MEAN),
                    "cross_entropy: label 1.5 at index 1");
    y->data[1] = 1;
    y->data[0] = -1;
    tu_expect_error(ad_cross_entropy(tp, z, y, NULL, AD_REDUCE_MEAN),
                    "cross_entropy: label -1 at index 0");
    y->data[0] = NAN;
    tu_expect_error(ad_cross_entropy(tp, z, y, NULL, AD_REDUCE_MEAN), "label nan at index 0");
    y->data[0] = 0;
    ad_value *y3 = ad_const_fill(tp, 1, (int[]){ 3 }, 0);
    tu_expect_error(ad_cross_entropy(tp, z, y3, NULL, AD_REDUCE_SUM),
                    "cross_entropy: labels [3] do not match logits [2,3] (want [2])");
    tu_expect_error(ad_cross_entropy(tp, z, y, y3, AD_REDUCE_SUM),
                    "cross_entropy: weights [3] do not match logits [2,3] (want [2])");
    tu_expect_error(ad_cross_entropy(tp, v, y, NULL, AD_REDUCE_SUM), "cross_entropy: expected a 2-D");
    tu_expect_error(ad_cross_entropy(tp, z, y, NULL, (ad_reduction)7), "cross_entropy: unknown reduction 7");
    /* A NULL input passes the earlier failure through. */
    tu_expect_error(ad_cross_entropy(tp, ad_softmax(tp, v), y, NULL, AD_REDUCE_SUM), "softmax: expected");
    ad_tape_free(tp);
}
END_TEST

START_TEST(conv_pool_errors)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *x = ad_const_fill(tp, 4, (int[]){ 2, 3, 5, 5 }, 0);
    ad_value *w = ad_const_fill(tp, 4, (int[]){ 4, 3, 3, 3 }, 0);
    ad_value *w2 = ad_const_fill(tp, 4, (int[]){ 4, 2, 3, 3 }, 0);
    ad_value *big = ad_const_fill(tp, 4, (int[]){ 4, 3, 8, 3 }, 0);
    ad_value *b5 = ad_const_fill(tp, 1, (int[]){ 5 }, 0);
    ad_value *m = ad_const_fill(tp, 2, (int[]){ 5, 5 }, 0);
    tu_expect_error(ad_conv2d(tp, x, w2, NULL, 1, 0),
                    "conv2d: channels differ: x [2,3,5,5] has 3, w [4,2,3,3] has 2");
    tu_expect_error(ad_conv2d(tp, x, big, NULL, 1, 1),
                    "conv2d: kernel [4,3,8,3] is larger than input [2,3,5,5] padded by 1");
    ck_assert_ptr_nonnull(ad_conv2d(tp, x, big, NULL, 1, 2)); /* 5 + 4 ≥ 8: fits */
    tu_expect_error(ad_conv2d(tp, x, w, NULL, 0, 0), "conv2d: stride 0 is less than 1");
    tu_expect_error(ad_conv2d(tp, x, w, NULL, 1, -1), "conv2d: pad -1 is negative");
    tu_expect_error(ad_conv2d(tp, x, w, b5, 1, 0), "conv2d: bias [5] does not match w [4,3,3,3] (want [4])");
    tu_expect_error(ad_conv2d(tp, m, w, NULL, 1, 0), "conv2d: want x [N,C,H,W] and w [O,C,kh,kw], got [5,5]");
    /* A pad so large that the unfolded input would need more than INT_MAX
     * columns (in int arithmetic it wrapped to a small buffer). */
    ad_value *x1 = ad_const_fill(tp, 4, (int[]){ 1, 1, 3, 3 }, 0);
    ad_value *w1 = ad_const_fill(tp, 4, (int[]){ 1, 1, 3, 3 }, 0);
    tu_expect_error(ad_conv2d(tp, x1, w1, NULL, 1, 32768), "conv2d: x [1,1,3,3], w [1,1,3,3], "
                    "pad 32768: the unfolded input would have more than 2147483647 rows or columns");
    tu_expect_error(ad_conv2d(tp, x1, w1, NULL, 1, 1 << 30), "the unfolded input would have");
    /* N·P·Q past 2^63 must not wrap around to a size that passes. */
    ad_value *x5 = ad_const_fill(tp, 4, (int[]){ 5, 1, 6, 64 }, 0);
    ad_value *w11 = ad_const_fill(tp, 4, (int[]){ 1, 1, 1, 1 }, 0);
    tu_expect_error(ad_conv2d(tp, x5, w11, NULL, 1, 960383866), "the unfolded input would have");
    tu_expect_error(ad_maxpool2d(tp, x, 0, 1), "maxpool2d: window 0 and stride 1 must both be at least 1");
    tu_expect_error(ad_maxpool2d(tp, x, 2, 0), "maxpool2d: window 2 and stride 0");
    tu_expect_error(ad_maxpool2d(tp, x, 6, 1), "maxpool2d: a 6x6 window does not fit input [2,3,5,5]");
    tu_expect_error(ad_maxpool2d(tp, m, 2, 2), "maxpool2d: expected a 4-D [N,C,H,W] input, got [5,5]");
    /* A NULL input passes the earlier failure through each op. */
    tu_expect_error(ad_maxpool2d(tp, ad_conv2d(tp, ad_maxpool2d(tp, m, 2, 2), w, NULL, 1, 0), 2, 2),
                    "maxpool2d: expected a 4-D");
    tu_expect_error(ad_batchnorm(tp, ad_conv2d(tp, x, w, b5, 1, 0), NULL, NULL, 0), "conv2d: bias [5]");
    ad_tape_free(tp);
}
END_TEST

START_TEST(batchnorm_errors)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *x = ad_const_fill(tp, 4, (int[]){ 2, 3, 2, 2 }, 0);
    ad_value *x3 = ad_const_fill(tp, 3, (int[]){ 2, 3, 2 }, 0);
    ad_value *g2 = ad_const_fill(tp, 1, (int[]){ 2 }, 1);
    tu_expect_error(ad_batchnorm(tp, x3, NULL, NULL, 1e-5),
                    "batchnorm: expected x [N,C] or [N,C,H,W], got [2,3,2]");
    tu_expect_error(ad_batchnorm(tp, x, g2, NULL, 1e-5),
                    "batchnorm: gamma [2] does not match the 3 channels of x [2,3,2,2]");
    tu_expect_error(ad_batchnorm(tp, x, NULL, g2, 1e-5), "batchnorm: beta [2] does not match");
    tu_expect_error(ad_batchnorm(tp, x, NULL, NULL, -1), "batchnorm: eps -1 must be finite and not negative");
    tu_expect_error(ad_channel_sum(tp, g2), "channel_sum: want x [N,C,...], got [2]");
    ad_tape_free(tp);
}
END_TEST

/* One value per channel (N·H·W = 1) is refused, with or without γ, β and a
 * gradient (it would give β whatever x is); two are enough, however laid
 * out.  With eps = 0 a constant channel gives NaN, as ops.h says, and with
 * eps > 0 it gives β. */
START_TEST(batchnorm_one_value_per_channel)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *g3 = ad_const(tp, 1, (int[]){ 3 }, (ad_real[]){ 2, 3, 4 });
    ad_value *b3 = ad_const(tp, 1, (int[]){ 3 }, (ad_real[]){ 0.5, 1, 1.5 });
    ad_value *p2 = ad_param_from(2, (int[]){ 1, 3 }, (ad_real[]){ 1, 2, 3 });
    ad_value *p4 = ad_param_from(4, (int[]){ 1, 3, 1, 1 }, (ad_real[]){ 1, 2, 3 });
    tu_expect_error(ad_batchnorm(tp, p2, NULL, NULL, 1e-5),
                    "batchnorm: expected more than 1 value per channel (N*H*W), got x [1,3]");
    tu_expect_error(ad_batchnorm(tp, p4, g3, b3, 1e-5),
                    "batchnorm: expected more than 1 value per channel (N*H*W), got x [1,3,1,1]");
    tu_expect_error(ad_batchnorm(tp, ad_const(tp, 4, (int[]){ 1, 3, 1, 1 }, (ad_real[]){ 1, 2, 3 }), g3, b3, 0),
                    "batchnorm: expected more than 1 value per channel");
    ad_value *two[3] = { ad_const_fill(tp, 2, (int[]){ 2, 3 }, 1), ad_const_fill(tp, 4, (int[]){ 1, 3, 1, 2 }, 1),
                         ad_const_fill(tp, 4, (int[]){ 1, 3, 2, 1 }, 1) };
    for (int k = 0; k < 3; k++) {
        ad_value *y = ad_batchnorm(tp, two[k], g3, b3, 1e-5), *y0 = ad_batchnorm(tp, two[k], g3, b3, 0);
        ck_assert_ptr_nonnull(y);
        ck_assert_ptr_nonnull(y0);
        size_t per_image = y->size / (size_t)y->shape[0], R = per_image / 3; /* x[n, c, r] */
        for (size_t i = 0; i < y->size; i++) {
            ck_assert_msg(y->data[i] == b3->data[i % per_image / R], "eps 1e-5, case %d entry %zu: %g", k, i,
                          (double)y->data[i]);
            ck_assert_msg(isnan(y0->data[i]), "eps 0, case %d entry %zu: %g", k, i, (double)y0->data[i]);
        }
    }
    ad_tape_free(tp);
    ad_value_free(p2);
    ad_value_free(p4);
}
END_TEST

Suite *nn_suite(void);
Suite *nn_suite(void)
{
    Suite *s = suite_create("nn");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, softmax_forward);
    tcase_add_test(tc, cross_entropy_forward);
    tcase_add_test(tc, cross_entropy_gradient_values);
    tcase_add_test(tc, softmax_gradients);
    tcase_add_loop_test(tc, cross_entropy_gradients, 0, 4);
    tcase_add_test(tc, cross_entropy_hyperclean_gradient);
    tcase_add_test(tc, conv2d_forward);
    tcase_add_test(tc, conv2d_matches_reference);
    tcase_add_loop_test(tc, conv2d_gradients, 0, sizeof conv_cases / sizeof *conv_cases);
    tcase_add_test(tc, maxpool_forward);
    tcase_add_test(tc, maxpool_gradient_routing);
    tcase_add_test(tc, maxpool_nan);
    tcase_add_loop_test(tc, maxpool_gradients, 0, sizeof pool_cases / sizeof *pool_cases);
    tcase_add_test(tc, batchnorm_forward);
    tcase_add_loop_test(tc, batchnorm_gradients, 0, sizeof bn_cases / sizeof *bn_cases);
    tcase_add_loop_test(tc, channel_sum_forward, 0, sizeof cs_shapes / sizeof *cs_shapes);
    tcase_add_loop_test(tc, channel_sum_gradients, 0, sizeof cs_shapes / sizeof *cs_shapes);
    tcase_add_test(tc, softmax_errors);
    tcase_add_test(tc, conv_pool_errors);
    tcase_add_test(tc, batchnorm_errors);
    tcase_add_test(tc, batchnorm_one_value_per_channel);
    suite_add_tcase(s, tc);
    return s;
}
