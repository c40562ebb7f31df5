/* test_elementwise.c — elementwise ops and reductions: hand-computed
 * forwards, then first- and second-order gradient checks for each. */
#include <check.h>
#include <float.h>
#include <math.h>
#include <string.h>

#include "gradcheck.h"
#include "testutil.h"
#include "ops/ops.h"

static const int S34[2] = { 3, 4 };

/* ---- forward values ---------------------------------------------------- */

START_TEST(binary_broadcast_forward)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_real a[6] = { 1, 2, 3, 4, 5, 6 }, row[3] = { 10, 20, 30 }, col[2] = { 2, 4 };
    ad_value *A = ad_const(tp, 2, (int[]){ 2, 3 }, a);
    ad_value *R = ad_const(tp, 1, (int[]){ 3 }, row);
    ad_value *C = ad_const(tp, 2, (int[]){ 2, 1 }, col);
    ad_value *s = ad_const_scalar(tp, 0.5);
    tu_expect_values(ad_add(tp, A, R), (double[]){ 11, 22, 33, 14, 25, 36 }, 6, 0);
    tu_expect_values(ad_sub(tp, R, A), (double[]){ 9, 18, 27, 6, 15, 24 }, 6, 0);
    tu_expect_values(ad_mul(tp, A, C), (double[]){ 2, 4, 6, 16, 20, 24 }, 6, 0);
    tu_expect_values(ad_div(tp, A, C), (double[]){ 0.5, 1, 1.5, 1, 1.25, 1.5 }, 6, 0);
    tu_expect_values(ad_mul(tp, s, A), (double[]){ 0.5, 1, 1.5, 2, 2.5, 3 }, 6, 0);
    /* [2,1] with [3] broadcasts both ways to [2,3]. */
    tu_expect_values(ad_add(tp, C, R), (double[]){ 12, 22, 32, 14, 24, 34 }, 6, 0);
    ad_tape_free(tp);
}
END_TEST

/* relu passes NaN on, as every other op does (PyTorch's relu too), and
 * maps −0 to +0; 67 entries so that the kernel's vector loop sees NaNs, not
 * only its remainder. */
START_TEST(relu_nan)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *small = ad_relu(tp, ad_const(tp, 1, (int[]){ 4 }, (ad_real[]){ NAN, -1, 2, -0.0 }));
    ck_assert(small && isnan(small->data[0]));
    ck_assert(small->data[1] == 0 && small->data[2] == 2 && small->data[3] == 0 && !signbit(small->data[3]));
    enum { N = 67 };
    ad_real v[N];
    for (int i = 0; i < N; i++) v[i] = i % 5 == 2 ? (ad_real)NAN : (ad_real)(i % 3 - 1);
    ad_value *y = ad_relu(tp, ad_const(tp, 1, (int[]){ N }, v));
    ck_assert_ptr_nonnull(y);
    for (int i = 0; i < N; i++)
        ck_assert_msg(i % 5 == 2 ? isnan(y->data[i]) : y->data[i] == (i % 3 == 2),
                      "relu entry %d: %g", i, (double)y->data[i]);
    ad_tape_free(tp);
}
END_TEST

/* relu's gradient at a NaN input is the incoming gradient, as PyTorch's
 * threshold_backward gives (0 only where x <= 0); the same in a recorded
 * pass.  67 entries so that the vector loop of the mask sees NaNs too. */
START_TEST(relu_nan_gradient)
{
    enum { N = 67 };
    ad_real v[N], c[N];
    for (int i = 0; i < N; i++) {
        v[i] = i % 5 == 2 ? (ad_real)NAN : (ad_real)(i % 3 - 1);
        c[i] = (ad_real)(i + 1);
    }
    for (int record = 0; record < 2; record++) {
        ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
        ad_value *x = ad_param_from(1, (int[]){ N }, v), *g;
        ad_value *y = ad_sum(tp, ad_mul(tp, ad_relu(tp, x), ad_const(tp, 1, (int[]){ N }, c)));
        ck_assert_int_eq(ad_grad(tp, y, 1, &x, &g, record), AD_OK);
        for (int i = 0; i < N; i++)
            ck_assert_msg(g->data[i] == (i % 5 == 2 || i % 3 == 2 ? c[i] : 0),
                          "record %d, entry %d: %g", record, i, (double)g->data[i]);
        ad_tape_free(tp);
        ad_value_free(x);
    }
}
END_TEST

START_TEST(unary_forward)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_real x[3] = { -1, 0.5, 2 };
    ad_value *X = ad_const(tp, 1, (int[]){ 3 }, x);
    tu_expect_values(ad_neg(tp, X), (double[]){ 1, -0.5, -2 }, 3, 0);
    tu_expect_values(ad_scale(tp, X, 3), (double[]){ -3, 1.5, 6 }, 3, 0);
    tu_expect_values(ad_add_scalar(tp, X, 1), (double[]){ 0, 1.5, 3 }, 3, 0);
    tu_expect_values(ad_relu(tp, X), (double[]){ 0, 0.5, 2 }, 3, 0);
    tu_expect_values(ad_square(tp, X), (double[]){ 1, 0.25, 4 }, 3, 0);
    tu_expect_values(ad_exp(tp, X), (double[]){ exp(-1), exp(0.5), exp(2) }, 3, TU_TOL(8));
    tu_expect_values(ad_sigmoid(tp, X), (double[]){ 1 / (1 + exp(1)), 1 / (1 + exp(-0.5)), 1 / (1 + exp(-2)) }, 3, TU_TOL(2));
    tu_expect_values(ad_softplus(tp, X), (double[]){ log1p(exp(-1)), log1p(exp(0.5)), log1p(exp(2)) }, 3, TU_TOL(4));
    tu_expect_values(ad_tanh(tp, X), (double[]){ tanh(-1), tanh(0.5), tanh(2) }, 3, TU_TOL(2));
    tu_expect_values(ad_sin(tp, X), (double[]){ sin(-1), sin(0.5), sin(2) }, 3, TU_TOL(2));
    tu_expect_values(ad_cos(tp, X), (double[]){ cos(-1), cos(0.5), cos(2) }, 3, TU_TOL(2));
    ad_value *P = ad_const(tp, 1, (int[]){ 3 }, (ad_real[]){ 1, 4, 9 });
    tu_expect_values(ad_sqrt(tp, P), (double[]){ 1, 2, 3 }, 3, 0);
    tu_expect_values(ad_log(tp, P), (double[]){ 0, log(4), log(9) }, 3, TU_TOL(4));
    tu_expect_values(ad_pow(tp, P, 1.5), (double[]){ 1, 8, 27 }, 3, TU_TOL(4) * 27);
    /* softplus must not overflow where log(1 + eˣ) would. */
    ad_value *big = ad_softplus(tp, ad_const_scalar(tp, 800));
    tu_expect_values(big, (double[]){ 800 }, 1, TU_TOL(4) * 800);
    ad_tape_free(tp);
}
END_TEST

START_TEST(reductions_forward)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_real a[6] = { 1, 2, 3, 4, 5, 6 };
    ad_value *A = ad_const(tp, 2, (int[]){ 2, 3 }, a);
    tu_expect_values(ad_sum(tp, A), (double[]){ 21 }, 1, 0);
    tu_expect_values(ad_mean(tp, A), (double[]){ 3.5 }, 1, 0);
    tu_expect_values(ad_sum_axis(tp, A, 0), (double[]){ 5, 7, 9 }, 3, 0);
    tu_expect_values(ad_sum_axis(tp, A, -1), (double[]){ 6, 15 }, 2, 0);
    tu_expect_values(ad_mean_axis(tp, A, 1), (double[]){ 2, 5 }, 2, 0);
    tu_expect_values(ad_dot(tp, A, A), (double[]){ 91 }, 1, 0);
    tu_expect_values(ad_sqnorm(tp, A), (double[]){ 91 }, 1, 0);
    tu_expect_values(ad_sum_to(tp, A, 2, (int[]){ 1, 3 }), (double[]){ 5, 7, 9 }, 3, 0);
    tu_expect_values(ad_sum_to(tp, A, 2, (int[]){ 2, 1 }), (double[]){ 6, 15 }, 2, 0);
    ad_value *r = ad_const(tp, 1, (int[]){ 3 }, (ad_real[]){ 1, 2, 3 });
    tu_expect_values(ad_broadcast_to(tp, r, 2, (int[]){ 2, 3 }), (double[]){ 1, 2, 3, 1, 2, 3 }, 6, 0);
    ad_tape_free(tp);
}
END_TEST

/* Sums accumulate in double in both builds (ops/reduce.c): 1 and then 1000
 * halves of float's ε.  Added up in float, every half ulp rounds away and the
 * sum stays 1; in double it is 1 + 500 ε, itself a float, so both builds must
 * give exactly that — along a summed run, over rows into a kept contiguous
 * stretch, along an axis, and in a dot product. */
START_TEST(sums_accumulate_in_double)
{
    enum { N = 1001 };
    ad_real x[N], x2[2 * N];
    const double half = FLT_EPSILON / 2, want = 1 + 500.0 * FLT_EPSILON;
    for (int i = 0; i < N; i++) x[i] = x2[2 * i] = x2[2 * i + 1] = (ad_real)(i == 0 ? 1 : half);
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *X = ad_const(tp, 1, (int[]){ N }, x), *X2 = ad_const(tp, 2, (int[]){ N, 2 }, x2);
    tu_expect_values(ad_sum(tp, X), (double[]){ want }, 1, 0);
    tu_expect_values(ad_sum_to(tp, X2, 2, (int[]){ 1, 2 }), (double[]){ want, want }, 2, 0);
    tu_expect_values(ad_sum_axis(tp, X2, 0), (double[]){ want, want }, 2, 0);
    tu_expect_values(ad_dot(tp, X, ad_const_fill(tp, 1, (int[]){ N }, 1)), (double[]){ want }, 1, 0);
    tu_expect_values(ad_mean(tp, X), (double[]){ want / N }, 1, TU_TOL(1) * want / N);
    ad_tape_free(tp);
}
END_TEST

/* gather_rows' gradient adds the rows of a repeated index: a broadcast's
 * gradient, so it too accumulates in double (ops/shape.c), with the same
 * 1 and 1000 half-ε rows: all gathered from row 3 of x, and scattered back
 * into 4 rows (a sum kept on the stack in the float build) and into 200
 * (the heap), directly and as the gradient of the gather. */
START_TEST(scatter_rows_accumulates_in_double)
{
    enum { N = 1001 };
    ad_real c[2 * N], idx[N];
    const double half = FLT_EPSILON / 2, want = 1 + 500.0 * FLT_EPSILON;
    for (int i = 0; i < N; i++) {
        c[2 * i] = c[2 * i + 1] = (ad_real)(i == 0 ? 1 : half);
        idx[i] = 3;
    }
    static const int rows[2] = { 4, 200 };
    for (int r = 0; r < 2; r++) {
        ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
        ad_value *C = ad_const(tp, 2, (int[]){ N, 2 }, c), *I = ad_const(tp, 1, (int[]){ N }, idx);
        ad_value *x = ad_tensor_new(2, (int[]){ rows[r], 2 }), *g;
        ck_assert_int_eq(ad_set_requires_grad(x, true), AD_OK);
        ad_value *direct = ad_scatter_rows(tp, C, I, rows[r]);
        ck_assert_int_eq(ad_grad(tp, ad_sum(tp, ad_mul(tp, ad_gather_rows(tp, x, I), C)), 1, &x, &g, false),
                         AD_OK);
        const ad_value *got[2] = { direct, g };
        for (int k = 0; k < 2; k++) {
            ck_assert_ptr_nonnull(got[k]);
            ck_assert_uint_eq(got[k]->size, (size_t)rows[r] * 2);
            for (int i = 0; i < rows[r] * 2; i++)
                ck_assert_msg((double)got[k]->data[i] == (i / 2 == 3 ? want : 0),
                              "%s, %d rows: entry %d is %.9g, want %.9g", k ? "gradient" : "scatter_rows",
                              rows[r], i, (double)got[k]->data[i], i / 2 == 3 ? want : 0.0);
        }
        ad_tape_free(tp);
        ad_value_free(x);
    }
}
END_TEST

/* ---- gradient checks --------------------------------------------------- */

typedef ad_value *(*binary_op)(ad_tape *, ad_value *, ad_value *);
typedef ad_value *(*unary_op)(ad_tape *, ad_value *);

static ad_value *call_binary(ad_tape *tp, ad_value *const *x, void *ctx)
{
    return (*(binary_op *)ctx)(tp, x[0], x[1]);
}

static ad_value *call_unary(ad_tape *tp, ad_value *const *x, void *ctx)
{
    return (*(unary_op *)ctx)(tp, x[0]);
}

static const struct { const char *name; binary_op f; } binaries[] = {
    { "add", ad_add }, { "sub", ad_sub }, { "mul", ad_mul }, { "div", ad_div },
};

/* Each binary op over several broadcast patterns: same, row, column, scalar,
 * and one where both sides stretch. */
START_TEST(binary_gradients)
{
    static const struct { int ra; int sa[2]; int rb; int sb[2]; } shapes[] = {
        { 2, { 3, 4 }, 2, { 3, 4 } }, { 2, { 3, 4 }, 1, { 4 } }, { 2, { 3, 4 }, 2, { 3, 1 } },
        { 2, { 3, 4 }, 0, { 0 } },    { 2, { 3, 1 }, 2, { 1, 4 } },
        { 0, { 0 }, 2, { 3, 4 } },    { 1, { 4 }, 2, { 3, 4 } }, /* the smaller one first */
    };
    ad_rng rng;
    ad_rng_seed(&rng, 11);
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        ad_value *x[2] = { gc_param(&rng, shapes[s].ra, shapes[s].sa, -2, 2, 0.3),
                           gc_param(&rng, shapes[s].rb, shapes[s].sb, -2, 2, 0.3) };
        binary_op f = binaries[_i].f;
        ck_assert_msg(gc_check(binaries[_i].name, call_binary, &f, 2, x, NULL) == 0,
                      "%s with shape pattern %zu", binaries[_i].name, s);
        ad_value_free(x[0]);
        ad_value_free(x[1]);
    }
}
END_TEST

static ad_value *scale3(ad_tape *tp, ad_value *x) { return ad_scale(tp, x, -3); }
static ad_value *plus2(ad_tape *tp, ad_value *x) { return ad_add_scalar(tp, x, 2); }
static ad_value *pow_2_5(ad_tape *tp, ad_value *x) { return ad_pow(tp, x, 2.5); }
static ad_value *pow_m1(ad_tape *tp, ad_value *x) { return ad_pow(tp, x, -1); }
static ad_value *pow_0(ad_tape *tp, ad_value *x) { return ad_pow(tp, x, 0); }
static ad_value *sum_all(ad_tape *tp, ad_value *x) { return ad_sum(tp, x); }
static ad_value *mean_all(ad_tape *tp, ad_value *x) { return ad_mean(tp, x); }
static ad_value *sum_ax0(ad_tape *tp, ad_value *x) { return ad_sum_axis(tp, x, 0); }
static ad_value *sum_ax1(ad_tape *tp, ad_value *x) { return ad_sum_axis(tp, x, 1); }
static ad_value *mean_ax1(ad_tape *tp, ad_value *x) { return ad_mean_axis(tp, x, 1); }
static ad_value *mean_ax0(ad_tape *tp, ad_value *x) { return ad_mean_axis(tp, x, 0); }
static ad_value *sum_ax_m1(ad_tape *tp, ad_value *x) { return ad_sum_axis(tp, x, -1); }
/* The middle axis of a rank-3 tensor, counted from the end. */
static ad_value *sum_mid(ad_tape *tp, ad_value *x)
{
    return ad_sum_axis(tp, ad_reshape(tp, x, 3, (int[]){ 3, 2, 2 }), -2);
}
static ad_value *sqnorm(ad_tape *tp, ad_value *x) { return ad_sqnorm(tp, x); }
static ad_value *sum_to_row(ad_tape *tp, ad_value *x) { return ad_sum_to(tp, x, 2, (int[]){ 1, 4 }); }
static ad_value *sum_to_col(ad_tape *tp, ad_value *x) { return ad_sum_to(tp, x, 1, (int[]){ 4 }); }
/* Products keep second derivatives non-zero for the linear ops. */
static ad_value *bcast_sq(ad_tape *tp, ad_value *x)
{
    return ad_square(tp, ad_broadcast_to(tp, ad_sum_to(tp, x, 1, (int[]){ 4 }), 3, (int[]){ 2, 3, 4 }));
}
static ad_value *sum_sq(ad_tape *tp, ad_value *x) { return ad_square(tp, ad_sum_axis(tp, x, 0)); }

/* positive: the op needs x > 0 (log, sqrt, pow); min_abs keeps off kinks. */
static const struct { const char *name; unary_op f; bool positive; } unaries[] = {
    { "neg", ad_neg, false },         { "scale", scale3, false },
    { "add_scalar", plus2, false },   { "exp", ad_exp, false },
    { "log", ad_log, true },          { "sin", ad_sin, false },
    { "cos", ad_cos, false },         { "tanh", ad_tanh, false },
    { "sigmoid", ad_sigmoid, false }, { "softplus", ad_softplus, false },
    { "relu", ad_relu, false },       { "square", ad_square, false },
    { "sqrt", ad_sqrt, true },        { "pow 2.5", pow_2_5, true },
    { "pow -1", pow_m1, true },       { "pow 0", pow_0, false },       { "sum", sum_all, false },
    { "mean", mean_all, false },      { "sum_axis 0", sum_ax0, false },
    { "sum_axis 1", sum_ax1, false }, { "mean_axis", mean_ax1, false },
    { "sqnorm", sqnorm, false },      { "sum_to row", sum_to_row, false },
    { "sum_to col", sum_to_col, false }, { "broadcast_to", bcast_sq, false },
    { "sum_axis squared", sum_sq, false },
    { "sum_axis -1", sum_ax_m1, false }, { "mean_axis 0", mean_ax0, false },
    { "sum_axis middle", sum_mid, false },
};

START_TEST(unary_gradients)
{
    ad_rng rng;
    ad_rng_seed(&rng, 100 + (uint64_t)_i);
    ad_value *x = unaries[_i].positive ? gc_param(&rng, 2, S34, 0.5, 2, 0)
                                       : gc_param(&rng, 2, S34, -2, 2, 0.2);
    unary_op f = unaries[_i].f;
    ck_assert_msg(gc_check(unaries[_i].name, call_unary, &f, 1, &x, NULL) == 0, "%s",
                  unaries[_i].name);
    ad_value_free(x);
}
END_TEST

static ad_value *dot_op(ad_tape *tp, ad_value *const *x, void *ctx)
{
    (void)ctx;
    return ad_dot(tp, x[0], x[1]);
}

/* step is a constant: its values, and no path for gradients through it; and
 * pow's constant case. */
START_TEST(step_is_constant)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *x = ad_param_from(1, (int[]){ 4 }, (ad_real[]){ -1, 0, 2, TU_REAL_MIN });
    ad_value *s = ad_step(tp, x);
    tu_expect_values(s, (double[]){ 0, 0, 1, 1 }, 4, 0);
    ck_assert(!s->requires_grad);
    ad_value *g;
    ck_assert_int_eq(ad_grad(tp, ad_sum(tp, ad_mul(tp, ad_step(tp, x), x)), 1, &x, &g, false), AD_OK);
    tu_expect_values(g, (double[]){ 0, 0, 1, 1 }, 4, 0); /* step(x)·x: only x's own path */
    /* pow(x, 0) = 1 everywhere, so its gradient is 0, also at x = 0 (not 0·0⁻¹). */
    ck_assert_int_eq(ad_grad(tp, ad_sum(tp, ad_pow(tp, x, 0)), 1, &x, &g, false), AD_OK);
    tu_expect_values(g, (double[]){ 0, 0, 0, 0 }, 4, 0);
    ad_tape_free(tp);
    ad_value_free(x);
}
END_TEST

START_TEST(dot_gradient)
{
    ad_rng rng;
    ad_rng_seed(&rng, 7);
    ad_value *x[2] = { gc_param(&rng, 2, S34, -2, 2, 0), gc_param(&rng, 2, S34, -2, 2, 0) };
    ck_assert_int_eq(gc_check("dot", dot_op, NULL, 2, x, NULL), 0);
    ad_value_free(x[0]);
    ad_value_free(x[1]);
}
END_TEST

/* ---- errors ------------------------------------------------------------ */

START_TEST(shape_errors)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *a = ad_const_fill(tp, 2, (int[]){ 3, 4 }, 1), *b = ad_const_fill(tp, 2, (int[]){ 3, 5 }, 1);
    ck_assert_ptr_null(ad_add(tp, a, b));
    ck_assert_str_eq(ad_error(), "add: shapes do not broadcast: [3,4] and [3,5]");
    ck_assert_ptr_null(ad_dot(tp, a, b));
    ck_assert_ptr_nonnull(strstr(ad_error(), "dot: shapes differ"));
    ck_assert_ptr_null(ad_sum_axis(tp, a, 2));
    ck_assert_ptr_nonnull(strstr(ad_error(), "axis 2 is out of range"));
    ck_assert_ptr_null(ad_sum_to(tp, a, 1, (int[]){ 3 }));
    ck_assert_ptr_null(ad_broadcast_to(tp, b, 2, (int[]){ 3, 4 }));
    /* A failure flows through later ops without replacing the message. */
    ck_assert_ptr_null(ad_exp(tp, ad_mul(tp, ad_add(tp, a, b), a)));
    ck_assert_ptr_nonnull(strstr(ad_error(), "add: shapes do not broadcast"));
    ad_tape_free(tp);
}
END_TEST

Suite *elementwise_suite(void);
Suite *elementwise_suite(void)
{
    Suite *s = suite_create("elementwise");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, binary_broadcast_forward);
    tcase_add_test(tc, unary_forward);
    tcase_add_test(tc, relu_nan);
    tcase_add_test(tc, relu_nan_gradient);
    tcase_add_test(tc, reductions_forward);
    tcase_add_test(tc, sums_accumulate_in_double);
    tcase_add_test(tc, scatter_rows_accumulates_in_double);
    tcase_add_loop_test(tc, binary_gradients, 0, sizeof binaries / sizeof *binaries);
    tcase_add_loop_test(tc, unary_gradients, 0, sizeof unaries / sizeof *unaries);
    tcase_add_test(tc, dot_gradient);
    tcase_add_test(tc, step_is_constant);
    tcase_add_test(tc, shape_errors);
    suite_add_tcase(s, tc);
    return s;
}
