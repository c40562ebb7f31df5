/* test_kernels.c — the fused kernels of ops/ (max-pool's kept positions,
 * conv2d's fused forward and its two backward ops, batch-norm's forward and
 * backward ops): reference values, first- and second-order gradient checks,
 * and that each kernel keeps what its backward needs and nothing is
 * recomputed from values that may have changed. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "testutil.h"
#include "ops/ops.h"

/* ---- max-pool ----------------------------------------------------------- */

/* The backward routes to the positions the forward found, not to the
 * maxima of whatever x holds when the sweep runs (a caller may refill a
 * leaf between forward and backward: positions must not be searched for
 * again). */
START_TEST(maxpool_keeps_positions)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *x = ad_param_from(4, (int[]){ 1, 1, 2, 4 }, (ad_real[]){ 1, 2, 9, 0,
                                                                       3, 4, 5, 6 });
    ad_value *y = ad_maxpool2d(tp, x, 2, 2), *g, *h;
    tu_expect_values(y, (double[]){ 4, 9 }, 2, 0);
    ad_value *L = ad_sqnorm(tp, y); /* Σ y², so that ∇L = scatter(2y) depends on x */
    /* The maxima move: (0,0) and (0,3) now hold the largest entries. */
    memcpy(x->data, (ad_real[]){ 9, 2, 1, 9, 3, 4, 5, 6 }, 8 * sizeof(ad_real));
    ck_assert_int_eq(ad_grad(tp, L, 1, &x, &g, true), AD_OK);
    tu_expect_values(g, (double[]){ 0, 0, 18, 0, 0, 8, 0, 0 }, 8, 0);
    /* The Hessian-vector product goes back through pool_scatter's own
     * backward (pool_select of the direction): the same positions, 2·v. */
    ad_value *v = ad_tensor_from(4, x->shape, (ad_real[]){ 1, 2, 3, 4, 5, 6, 7, 8 });
    ck_assert_int_eq(ad_vjp(tp, g, v, 1, &x, &h, false), AD_OK);
    tu_expect_values(h, (double[]){ 0, 0, 6, 0, 0, 12, 0, 0 }, 8, 0);
    ad_tape_free(tp);
    ad_value_free(x);
    ad_value_free(v);
}
END_TEST

/* Without a gradient to route (no recording, or a constant input) the
 * result is the same and no positions are kept: the tape holds the output
 * alone. */
START_TEST(maxpool_no_positions_without_gradient)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *x = ad_param_from(4, (int[]){ 1, 2, 4, 4 }, (ad_real[]){
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
        -1, -2, -3, -4, -5, -6, -7, -8, -9, -10, -11, -12, -13, -14, -15, -16 });
    ad_no_record_begin(tp);
    size_t before = ad_tape_bytes(tp);
    ad_value *y = ad_maxpool2d(tp, x, 2, 2);
    size_t plain = ad_tape_bytes(tp) - before;
    ad_no_record_end(tp);
    tu_expect_values(y, (double[]){ 6, 8, 14, 16, -1, -3, -9, -11 }, 8, 0);
    before = ad_tape_bytes(tp);
    ad_value *z = ad_maxpool2d(tp, x, 2, 2);
    size_t kept = ad_tape_bytes(tp) - before;
    tu_expect_values(z, (double[]){ 6, 8, 14, 16, -1, -3, -9, -11 }, 8, 0);
    ck_assert_msg(kept > plain, "recording keeps the positions: %zu vs %zu bytes", kept, plain);
    ad_tape_free(tp);
    ad_value_free(x);
}
END_TEST

START_TEST(maxpool_window_limit)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *x = ad_const_fill(tp, 4, (int[]){ 1, 1, 5, 5 }, 0);
    tu_expect_error(ad_maxpool2d(tp, x, 4097, 1), "maxpool2d: window 4097 is larger than 4096");
    ad_tape_free(tp);
}
END_TEST

/* ---- conv2d ------------------------------------------------------------- */

typedef struct conv_geo {
    int N, C, H, W, O, kh, kw, stride, pad;
} conv_geo;

static int geo_P(const conv_geo *g) { return (g->H + 2 * g->pad - g->kh) / g->stride + 1; }
static int geo_Q(const conv_geo *g) { return (g->W + 2 * g->pad - g->kw) / g->stride + 1; }

/* The definition, and its adjoint, term by term in double: y [N,O,P,Q] from
 * x, w, b; and for a seed u [N,O,P,Q], dx = Σ u·w, dw = Σ u·x, db = Σ u. */
static void conv_naive(const conv_geo *g, const ad_value *x, const ad_value *w, const ad_value *b,
                       const ad_value *u, double *y, double *dx, double *dw, double *db)
{
    int P = geo_P(g), Q = geo_Q(g);
    memset(dx, 0, sizeof(double) * x->size);
    memset(dw, 0, sizeof(double) * w->size);
    memset(db, 0, sizeof(double) * (size_t)g->O);
    for (int n = 0; n < g->N; n++)
        for (int o = 0; o < g->O; o++)
            for (int p = 0; p < P; p++)
                for (int q = 0; q < Q; q++) {
                    size_t at = (((size_t)n * g->O + o) * P + p) * Q + q;
                    double s = b->data[o], un = u->data[at];
                    db[o] += un;
                    for (int c = 0; c < g->C; c++)
                        for (int i = 0; i < g->kh; i++)
                            for (int j = 0; j < g->kw; j++) {
                                int h = p * g->stride - g->pad + i, v = q * g->stride - g->pad + j;
                                if (h < 0 || h >= g->H || v < 0 || v >= g->W) continue;
                                size_t xi = (((size_t)n * g->C + c) * g->H + h) * g->W + v;
                                size_t wi = (((size_t)o * g->C + c) * g->kh + i) * g->kw + j;
                                s += x->data[xi] * w->data[wi];
                                dx[xi] += un * w->data[wi];
                                dw[wi] += un * x->data[xi];
                            }
                    y[at] = s;
                }
}

/* Shapes that cut the batch into blocks in each of the kernel's ways: maps
 * of 128 outputs or more go one image per block (5 images of 16 × 53 × 53:
 * the weight gradient adds up five gemms); smaller maps go several images
 * per block of about 2^20 unfolded entries (5 images of 400 × 10 × 10 under
 * a 3×3 kernel unfold to 3600 × 100 entries each: blocks of 2, 2 and 1);
 * a strided, padded, rectangular case of one block; and kernels taller
 * than the padding covers (the shifted-copy path with rows that fall
 * wholly outside the image: a 5×3 kernel, and a 3×3 one on a single row). */
static const conv_geo conv_geos[] = {
    { 5, 16, 53, 53, 3, 3, 3, 1, 1 },
    { 5, 400, 10, 10, 3, 3, 3, 1, 1 },
    { 3, 4, 9, 11, 5, 3, 2, 2, 1 },
    { 2, 3, 4, 6, 2, 5, 3, 1, 1 },
    { 1, 2, 1, 3, 2, 3, 3, 1, 1 },
};

START_TEST(conv_blocks_match_definition)
{
    const conv_geo *g = &conv_geos[_i];
    ad_rng rng;
    ad_rng_seed(&rng, 91 + (uint64_t)_i);
    int P = geo_P(g), Q = geo_Q(g);
    ad_value *x = gc_param(&rng, 4, (int[]){ g->N, g->C, g->H, g->W }, -1, 1, 0);
    ad_value *w = gc_param(&rng, 4, (int[]){ g->O, g->C, g->kh, g->kw }, -1, 1, 0);
    ad_value *b = gc_param(&rng, 1, &g->O, -1, 1, 0);
    ad_value *u = ad_tensor_rand(&rng, 4, (int[]){ g->N, g->O, P, Q }, -1, 1);
    double *y = malloc(sizeof(double) * u->size), *dx = malloc(sizeof(double) * x->size);
    double *dw = malloc(sizeof(double) * w->size), db[8];
    conv_naive(g, x, w, b, u, y, dx, dw, db);
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *out = ad_conv2d(tp, x, w, b, g->stride, g->pad), *gx[3];
    ck_assert_ptr_nonnull(out);
    tu_expect_shape(out, 4, (int[]){ g->N, g->O, P, Q });
    /* Sums of up to C·kh·kw (forward) or N·P·Q (weights) terms of size ≤ 1,
     * the results up to about 10 in size; float keeps about 7 digits. */
    double tol = sizeof(ad_real) == 8 ? 1e-13 * (double)(g->N * P * Q) : 2e-4;
    /* The weight gradient's entries sum N·P·Q terms (14045 in the first
     * case, entries up to about 100): float round-off grows like the square
     * root of that (oneDNN's kernels, summing in another order than BLAS's,
     * are 2.6e-4 off on an entry of 80.5 there). */
    double tol_w = sizeof(ad_real) == 8 ? tol : 2e-4 * fmax(1, sqrt(g->N * P * Q / 100.0));
    tu_expect_values(out, y, u->size, tol);
    for (int rec = 0; rec < 2; rec++) {
        ck_assert_int_eq(ad_vjp(tp, out, u, 3, (ad_value *[]){ x, w, b }, gx, rec), AD_OK);
        tu_expect_values(gx[0], dx, x->size, tol);
        tu_expect_values(gx[1], dw, w->size, tol_w);
        tu_expect_values(gx[2], db, (size_t)g->O, tol);
    }
    ad_tape_free(tp);
    free(y);
    free(dx);
    free(dw);
    ad_value *v[] = { x, w, b, u };
    for (int i = 0; i < 4; i++) ad_value_free(v[i]);
}
END_TEST

/* The backward ops as functions in their own right: the data gradient
 * dx(u, w) and the weight gradient dw(x, u) of y = conv(x, w) for a seed u,
 * each taken by a recorded vector-Jacobian product, pass the first- and
 * second-order checks — the second and third derivatives of conv2d. */
typedef struct conv_vjp_case {
    int stride, pad;
    bool weight; /* the weight gradient (else the data gradient) */
    ad_value *fixed; /* the argument held constant: x, or w */
} conv_vjp_case;

static ad_value *call_conv_vjp(ad_tape *tp, ad_value *const *in, void *ctx)
{
    const conv_vjp_case *c = ctx;
    /* in = { u, w } for the data gradient, { x, u } for the weight gradient;
     * the variable taken is a fresh leaf, so its gradient is the op's value. */
    ad_value *x = c->weight ? in[0] : ad_leaf(tp, c->fixed);
    ad_value *w = c->weight ? ad_leaf(tp, c->fixed) : in[1];
    ad_value *u = c->weight ? in[1] : in[0], *d = NULL;
    /* The harness evaluates f without recording; the conv must be recorded
     * for its product to exist, as ad_vjp's own create_graph sweep is. */
    int depth = 0;
    while (!ad_tape_recording(tp)) {
        ad_no_record_end(tp);
        depth++;
    }
    ad_value *y = ad_conv2d(tp, x, w, NULL, c->stride, c->pad);
    if (y && ad_vjp(tp, y, u, 1, c->weight ? &w : &x, &d, true) != AD_OK) d = NULL;
    while (depth-- > 0) ad_no_record_begin(tp);
    return d;
}

START_TEST(conv_backward_ops_gradients)
{
    ad_rng rng;
    ad_rng_seed(&rng, 101 + (uint64_t)_i);
    /* stride 1 or 2, pad 0 or 1, data or weight gradient, a 3×2 kernel on 2
     * channels or a 3×3 one on 16 (with stride 1 the second takes the
     * flipped-convolution path of the data gradient) */
    conv_vjp_case c = { 1 + _i % 2, _i / 2 % 2, _i / 4 % 2 == 1, NULL };
    int N = 2, C = _i >= 8 ? 16 : 2, H = 5, W = 4, O = 3, kh = 3, kw = _i >= 8 ? 3 : 2;
    int P = (H + 2 * c.pad - kh) / c.stride + 1, Q = (W + 2 * c.pad - kw) / c.stride + 1;
    ad_value *x = gc_param(&rng, 4, (int[]){ N, C, H, W }, -1, 1, 0);
    ad_value *w = gc_param(&rng, 4, (int[]){ O, C, kh, kw }, -1, 1, 0);
    ad_value *u = gc_param(&rng, 4, (int[]){ N, O, P, Q }, -1, 1, 0);
    c.fixed = c.weight ? w : x;
    ad_value *in[2] = { c.weight ? x : u, c.weight ? u : w };
    ck_assert_msg(gc_check(c.weight ? "conv_weight_grad" : "conv_data_grad", call_conv_vjp, &c, 2,
                           in, NULL) == 0, "stride %d pad %d", c.stride, c.pad);
    ad_value_free(x);
    ad_value_free(w);
    ad_value_free(u);
}
END_TEST

/* The tape holds the conv's output and no unfolded copy of x: the columns
 * are rebuilt in the backward. */
START_TEST(conv_keeps_no_columns)
{
    ad_rng rng;
    ad_rng_seed(&rng, 111);
    ad_value *x = gc_param(&rng, 4, (int[]){ 4, 8, 10, 10 }, -1, 1, 0);
    ad_value *w = gc_param(&rng, 4, (int[]){ 8, 8, 3, 3 }, -1, 1, 0);
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *y = ad_conv2d(tp, x, w, NULL, 1, 1);
    ck_assert_ptr_nonnull(y);
    /* y itself plus a header: far below the 72·400 entries of the columns. */
    ck_assert_uint_le(ad_tape_bytes(tp), y->size * sizeof(ad_real) + 4096);
    ad_tape_free(tp);
    ad_value_free(x);
    ad_value_free(w);
}
END_TEST

/* ---- batch-norm ---------------------------------------------------------- */

/* The composition the fused forward replaced, op by op. */
static ad_value *bn_composed(ad_tape *tp, ad_value *x, ad_value *gamma, ad_value *beta, double eps)
{
    int stat[4] = { 1, x->shape[1], 1, 1 };
    double per = 1.0 / (double)(x->size / (size_t)x->shape[1]);
    ad_value *mean = ad_scale(tp, ad_sum_to(tp, x, x->rank, stat), per);
    ad_value *xc = ad_sub(tp, x, mean);
    ad_value *var = ad_scale(tp, ad_sum_to(tp, ad_square(tp, xc), x->rank, stat), per);
    ad_value *y = ad_mul(tp, xc, ad_pow(tp, ad_add_scalar(tp, var, eps), -0.5));
    if (gamma) y = ad_mul(tp, y, ad_reshape(tp, gamma, x->rank, stat));
    if (beta) y = ad_add(tp, y, ad_reshape(tp, beta, x->rank, stat));
    return y;
}

/* y, ∇⟨u, y⟩ and the Hessian-vector product along vs, for inputs xs[0..n)
 * (x, then γ and β when n = 3), by the fused op or by the composition: 1 +
 * 2n caller-owned copies in out. */
static void bn_run(bool fused, int n, ad_value *const *xs, ad_value *u, ad_value *const *vs,
                   ad_value **out)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *gamma = n == 3 ? xs[1] : NULL, *beta = n == 3 ? xs[2] : NULL, *g[3], *hv[3];
    ad_value *y = fused ? ad_batchnorm(tp, xs[0], gamma, beta, 1e-3)
                        : bn_composed(tp, xs[0], gamma, beta, 1e-3);
    ck_assert_int_eq(ad_vjp(tp, y, u, n, xs, g, true), AD_OK);
    ck_assert_int_eq(ad_vjp_many(tp, n, g, vs, n, xs, hv, false), AD_OK);
    out[0] = ad_value_copy(y);
    for (int i = 0; i < n; i++) {
        out[1 + i] = ad_value_copy(g[i]);
        out[1 + n + i] = ad_value_copy(hv[i]);
    }
    ad_tape_free(tp);
}

/* Forward, gradients of every input and the Hessian-vector product: the
 * composition's, to round-off. */
START_TEST(batchnorm_matches_composition)
{
    /* the last: more channels than one group of the kernels' passes */
    static const int shapes[3][4] = { { 6, 5, 0, 0 }, { 4, 3, 5, 7 }, { 2, 67, 3, 4 } };
    int rank = _i < 2 ? 2 : 4, n = _i % 2 == 0 ? 3 : 1;
    const int *sh = shapes[_i / 2];
    ad_rng rng;
    ad_rng_seed(&rng, 121 + (uint64_t)_i);
    ad_value *xs[3] = { gc_param(&rng, rank, sh, -3, 5, 0), gc_param(&rng, 1, &sh[1], 0.5, 2, 0),
                        gc_param(&rng, 1, &sh[1], -1, 1, 0) };
    ad_value *vs[3] = { ad_tensor_randn(&rng, rank, sh, 1), ad_tensor_randn(&rng, 1, &sh[1], 1),
                        ad_tensor_randn(&rng, 1, &sh[1], 1) };
    ad_value *u = ad_tensor_randn(&rng, rank, sh, 1), *fused[7], *composed[7];
    bn_run(true, n, xs, u, vs, fused);
    bn_run(false, n, xs, u, vs, composed);
    double tol = sizeof(ad_real) == 8 ? 1e-11 : 1e-5; /* float: the composition sums in float */
    for (int k = 0; k < 1 + 2 * n; k++) {
        for (size_t j = 0; j < fused[k]->size; j++) {
            double a = fused[k]->data[j], b = composed[k]->data[j];
            ck_assert_msg(fabs(a - b) <= tol * fmax(1, fabs(b)), "%s %d entry %zu: %.17g vs %.17g",
                          k == 0 ? "forward" : k <= n ? "gradient" : "HVP", k, j, a, b);
        }
    }
    for (int k = 0; k < 1 + 2 * n; k++) {
        ad_value_free(fused[k]);
        ad_value_free(composed[k]);
    }
    for (int i = 0; i < 3; i++) {
        ad_value_free(xs[i]);
        ad_value_free(vs[i]);
    }
    ad_value_free(u);
}
END_TEST

/* The backward ops as functions: the input gradient dx(x, g, γ) and the γ
 * gradient dγ(x, g) of y = batchnorm(x, γ, β), taken by recorded
 * vector-Jacobian products, pass the first- and second-order checks — the
 * second and third derivatives of batch-norm, through bn_input_grad,
 * bn_gamma_grad, bn_normalize and bn_invstd. */
typedef struct bn_vjp_case {
    int rank;
    bool gamma_grad; /* dγ (else dx) */
    ad_value *beta;
} bn_vjp_case;

static ad_value *call_bn_vjp(ad_tape *tp, ad_value *const *in, void *ctx)
{
    const bn_vjp_case *c = ctx;
    int depth = 0; /* recorded even when the harness evaluates without recording */
    while (!ad_tape_recording(tp)) {
        ad_no_record_end(tp);
        depth++;
    }
    ad_value *x = ad_scale(tp, in[0], 1), *gamma = ad_scale(tp, in[2], 1), *d = NULL;
    ad_value *y = ad_batchnorm(tp, x, gamma, c->beta, 1e-3);
    if (y && ad_vjp(tp, y, in[1], 1, c->gamma_grad ? &gamma : &x, &d, true) != AD_OK) d = NULL;
    while (depth-- > 0) ad_no_record_begin(tp);
    return d;
}

START_TEST(batchnorm_backward_ops_gradients)
{
    bn_vjp_case c = { _i < 2 ? 2 : 4, _i % 2 == 1, NULL };
    int shape[4] = { 4, 3, 2, 3 };
    if (c.rank == 2) shape[0] = 6;
    if (_i >= 4) { /* 12 entries per image and channel: the kernels' lane loops and their tails */
        shape[0] = 2;
        shape[2] = 3;
        shape[3] = 4;
    }
    ad_rng rng;
    ad_rng_seed(&rng, 131 + (uint64_t)_i);
    ad_value *in[3] = { gc_param(&rng, c.rank, shape, -2, 2, 0),   /* x */
                        gc_param(&rng, c.rank, shape, -1, 1, 0),   /* the seed g */
                        gc_param(&rng, 1, (int[]){ 3 }, 0.5, 2, 0) }; /* γ */
    c.beta = ad_tensor_rand(&rng, 1, (int[]){ 3 }, -1, 1);
    ck_assert_msg(gc_check(c.gamma_grad ? "bn_gamma_grad" : "bn_input_grad", call_bn_vjp, &c, 3, in,
                           NULL) == 0, "rank %d", c.rank);
    for (int i = 0; i < 3; i++) ad_value_free(in[i]);
    ad_value_free(c.beta);
}
END_TEST

/* What the forward leaves on the tape: y and the [2,C] statistics; without
 * a gradient to take, y alone. */
START_TEST(batchnorm_keeps_stats_only)
{
    ad_rng rng;
    ad_rng_seed(&rng, 141);
    ad_value *x = gc_param(&rng, 4, (int[]){ 5, 8, 6, 6 }, -1, 1, 0);
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *y = ad_batchnorm(tp, x, NULL, NULL, 1e-5);
    ck_assert_ptr_nonnull(y);
    size_t y_bytes = y->size * sizeof(ad_real), recorded = ad_tape_bytes(tp);
    ck_assert_uint_le(recorded, y_bytes + 2 * 8 * sizeof(ad_real) + 2 * 1024);
    ad_tape_reset(tp);
    ad_no_record_begin(tp);
    ck_assert_ptr_nonnull(ad_batchnorm(tp, x, NULL, NULL, 1e-5));
    ad_no_record_end(tp);
    ck_assert_uint_lt(ad_tape_bytes(tp), recorded);
    ad_tape_free(tp);
    ad_value_free(x);
}
END_TEST

/* ---- relu ------------------------------------------------------------------ */

/* relu's backward as a function: dx(x, u) = u where x > 0, taken by a
 * recorded product, passes the first- and second-order checks (linear in u,
 * and x only chooses). */
static ad_value *call_relu_vjp(ad_tape *tp, ad_value *const *in, void *ctx)
{
    (void)ctx;
    int depth = 0;
    while (!ad_tape_recording(tp)) {
        ad_no_record_end(tp);
        depth++;
    }
    ad_value *x = ad_scale(tp, in[0], 1), *d = NULL;
    ad_value *y = ad_relu(tp, x);
    if (y && ad_vjp(tp, y, in[1], 1, &x, &d, true) != AD_OK) d = NULL;
    while (depth-- > 0) ad_no_record_begin(tp);
    return d;
}

START_TEST(relu_backward_op)
{
    ad_rng rng;
    ad_rng_seed(&rng, 151);
    ad_value *in[2] = { gc_param(&rng, 2, (int[]){ 4, 5 }, -1, 1, 0.1),
                        gc_param(&rng, 2, (int[]){ 4, 5 }, -1, 1, 0) };
    ck_assert(gc_check("relu_mask", call_relu_vjp, NULL, 2, in, NULL) == 0);
    /* values: the seed where x > 0, zeros elsewhere */
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *x = ad_param_from(1, (int[]){ 4 }, (ad_real[]){ -1, 2, 0, 3 }), *g;
    ad_value *u = ad_tensor_from(1, (int[]){ 4 }, (ad_real[]){ 5, 6, 7, -8 });
    size_t before = ad_tape_bytes(tp);
    ad_value *y = ad_relu(tp, x);
    size_t fwd = ad_tape_bytes(tp) - before;
    ck_assert_int_eq(ad_vjp(tp, y, u, 1, &x, &g, true), AD_OK);
    tu_expect_values(g, (double[]){ 0, 6, 0, -8 }, 4, 0);
    /* one value, the gradient, and no mask beside it */
    ck_assert_uint_eq(ad_tape_bytes(tp) - before, 2 * fwd);
    ad_tape_free(tp);
    ad_value_free(x);
    ad_value_free(u);
    for (int i = 0; i < 2; i++) ad_value_free(in[i]);
}
END_TEST

Suite *kernels_suite(void);
Suite *kernels_suite(void)
{
    Suite *s = suite_create("kernels");
    TCase *tc = tcase_create("pool");
    tcase_add_test(tc, maxpool_keeps_positions);
    tcase_add_test(tc, maxpool_no_positions_without_gradient);
    tcase_add_test(tc, maxpool_window_limit);
    suite_add_tcase(s, tc);
    tc = tcase_create("conv");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, conv_blocks_match_definition, 0, sizeof conv_geos / sizeof *conv_geos);
    tcase_add_loop_test(tc, conv_backward_ops_gradients, 0, 16);
    tcase_add_test(tc, conv_keeps_no_columns);
    suite_add_tcase(s, tc);
    tc = tcase_create("batchnorm");
    tcase_add_loop_test(tc, batchnorm_matches_composition, 0, 6);
    tcase_add_loop_test(tc, batchnorm_backward_ops_gradients, 0, 6);
    tcase_add_test(tc, batchnorm_keeps_stats_only);
    suite_add_tcase(s, tc);
    tc = tcase_create("relu");
    tcase_add_test(tc, relu_backward_op);
    suite_add_tcase(s, tc);
    return s;
}
