/* test_select.c — abs, sign, maximum/minimum, clamp and argmax: hand-computed
 * values (NaN, ties and infinite bounds included), the subgradients at the
 * kinks, and first- and second-order gradient checks away from them. */
#include <check.h>
#include <math.h>
#include <string.h>

#include "gradcheck.h"
#include "testutil.h"
#include "ops/ops.h"

/* ---- forward values ---------------------------------------------------- */

/* The first n entries of v (which may hold more: a NaN after them). */
static void expect_first(const ad_value *v, const double *want, size_t n)
{
    ck_assert_ptr_nonnull(v);
    ck_assert_uint_ge(v->size, n);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg((double)v->data[i] == want[i], "entry %zu: %.17g, want %.17g", i,
                      (double)v->data[i], want[i]);
}

START_TEST(values)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *x = ad_const(tp, 1, (int[]){ 5 }, (ad_real[]){ -2, -0.0, 0, 3.5, NAN });
    ad_value *ax = ad_abs(tp, x), *sx = ad_sign(tp, x);
    expect_first(ax, (double[]){ 2, 0, 0, 3.5 }, 4);
    ck_assert(isnan(ax->data[4]) && !signbit(ax->data[1]));
    ck_assert(sx->data[0] == -1 && sx->data[1] == 0 && sx->data[2] == 0 && sx->data[3] == 1 &&
              isnan(sx->data[4]));

    /* [2,3] against [3]: broadcast; ties give the common value. */
    ad_value *A = ad_const(tp, 2, (int[]){ 2, 3 }, (ad_real[]){ 1, 5, -1, 4, 2, 0 });
    ad_value *b = ad_const(tp, 1, (int[]){ 3 }, (ad_real[]){ 2, 2, 2 });
    ad_value *mx = ad_maximum(tp, A, b), *mn = ad_minimum(tp, b, A);
    tu_expect_shape(mx, 2, (int[]){ 2, 3 });
    tu_expect_values(mx, (double[]){ 2, 5, 2, 4, 2, 2 }, 6, 0);
    tu_expect_values(mn, (double[]){ 1, 2, -1, 2, 2, 0 }, 6, 0);
    /* NaN on either side gives NaN, as in NumPy. */
    ad_value *p = ad_const(tp, 1, (int[]){ 2 }, (ad_real[]){ NAN, 1 });
    ad_value *q = ad_const(tp, 1, (int[]){ 2 }, (ad_real[]){ 0, NAN });
    for (int k = 0; k < 2; k++) {
        ad_value *r = k ? ad_minimum(tp, p, q) : ad_maximum(tp, p, q);
        ck_assert(isnan(r->data[0]) && isnan(r->data[1]));
    }

    ad_value *c = ad_clamp(tp, x, -1, 1);
    expect_first(c, (double[]){ -1, 0, 0, 1 }, 4);
    ck_assert(isnan(c->data[4]));
    tu_expect_values(ad_clamp(tp, A, 0, INFINITY), (double[]){ 1, 5, 0, 4, 2, 0 }, 6, 0);
    tu_expect_values(ad_clamp(tp, A, -INFINITY, 1.5), (double[]){ 1, 1.5, -1, 1.5, 1.5, 0 }, 6, 0);
    tu_expect_values(ad_clamp(tp, A, 2, 2), (double[]){ 2, 2, 2, 2, 2, 2 }, 6, 0);
    ad_tape_free(tp);
}
END_TEST

START_TEST(argmax_values)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    /* [2,3]: rows {1, 5, 5} and {4, 2, 4}: ties give the first. */
    ad_value *A = ad_param_from(2, (int[]){ 2, 3 }, (ad_real[]){ 1, 5, 5, 4, 2, 4 });
    ad_value *r1 = ad_argmax(tp, A, 1), *r0 = ad_argmax(tp, A, 0), *rm = ad_argmax(tp, A, -1);
    tu_expect_shape(r1, 1, (int[]){ 2 });
    tu_expect_values(r1, (double[]){ 1, 0 }, 2, 0);
    tu_expect_values(rm, (double[]){ 1, 0 }, 2, 0);
    tu_expect_values(r0, (double[]){ 1, 0, 0 }, 3, 0);
    ck_assert(!r1->requires_grad && r1->op == NULL); /* a constant */
    /* [2,3,2] along the middle axis. */
    ad_real d[12];
    for (int i = 0; i < 12; i++) d[i] = (ad_real)((i * 7) % 12);
    /* d = 0 7 2 9 4 11 | 6 1 8 3 10 5 -> along axis 1, pairs (0,2,4), (7,9,11), (6,8,10), (1,3,5) */
    ad_value *B = ad_const(tp, 3, (int[]){ 2, 3, 2 }, d);
    ad_value *rb = ad_argmax(tp, B, 1);
    tu_expect_shape(rb, 2, (int[]){ 2, 2 });
    tu_expect_values(rb, (double[]){ 2, 2, 2, 2 }, 4, 0);
    tu_expect_values(ad_argmax(tp, B, 2), (double[]){ 1, 1, 1, 0, 0, 0 }, 6, 0);
    /* The first NaN counts as the largest (NumPy). */
    ad_value *n = ad_const(tp, 1, (int[]){ 4 }, (ad_real[]){ 1, NAN, 9, NAN });
    tu_expect_values(ad_argmax(tp, n, 0), (double[]){ 1 }, 1, 0);
    ad_value *n0 = ad_const(tp, 1, (int[]){ 3 }, (ad_real[]){ NAN, 3, 9 });
    tu_expect_values(ad_argmax(tp, n0, 0), (double[]){ 0 }, 1, 0);
    ad_tape_free(tp); /* before the leaf its nodes use */
    ad_value_free(A);
}
END_TEST

/* ---- the gradients at the kinks ---------------------------------------- */

START_TEST(kink_gradients)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *x = ad_param_from(1, (int[]){ 4 }, (ad_real[]){ -1, 0, 1, 2 });
    ad_value *g;
    /* abs'(0) = 0 */
    ck_assert_int_eq(ad_grad(tp, ad_sum(tp, ad_abs(tp, x)), 1, &x, &g, false), AD_OK);
    tu_expect_values(g, (double[]){ -1, 0, 1, 1 }, 4, 0);
    /* clamp to [0, 1]: the gradient passes at the bounds and inside */
    ck_assert_int_eq(ad_grad(tp, ad_sum(tp, ad_clamp(tp, x, 0, 1)), 1, &x, &g, false), AD_OK);
    tu_expect_values(g, (double[]){ 0, 1, 1, 0 }, 4, 0);
    /* maximum(x, 1) with a tie at x = 1: half each; b broadcasts, so its
     * gradient is summed: 1 + 1 + 0.5 + 0 */
    ad_value *one = ad_param_scalar(1), *xs[2] = { x, one }, *gs[2];
    ck_assert_int_eq(ad_grad(tp, ad_sum(tp, ad_maximum(tp, x, one)), 2, xs, gs, false), AD_OK);
    tu_expect_values(gs[0], (double[]){ 0, 0, 0.5, 1 }, 4, 0);
    tu_expect_values(gs[1], (double[]){ 2.5 }, 1, 0);
    ck_assert_int_eq(ad_grad(tp, ad_sum(tp, ad_minimum(tp, x, one)), 2, xs, gs, false), AD_OK);
    tu_expect_values(gs[0], (double[]){ 1, 1, 0.5, 0 }, 4, 0);
    tu_expect_values(gs[1], (double[]){ 1.5 }, 1, 0);
    ad_tape_free(tp);
    ad_value_free(x);
    ad_value_free(one);
}
END_TEST

/* ---- gradient checks, first and second order ----------------------------- */

static ad_value *build_abs(ad_tape *tp, ad_value *const *x, void *ctx)
{
    (void)ctx;
    return ad_abs(tp, x[0]);
}

static ad_value *build_maximum(ad_tape *tp, ad_value *const *x, void *ctx)
{
    (void)ctx;
    return ad_maximum(tp, x[0], x[1]);
}

static ad_value *build_minimum(ad_tape *tp, ad_value *const *x, void *ctx)
{
    (void)ctx;
    return ad_minimum(tp, x[0], x[1]);
}

static ad_value *build_clamp(ad_tape *tp, ad_value *const *x, void *ctx)
{
    const double *range = ctx;
    return ad_clamp(tp, x[0], range[0], range[1]);
}

/* A composition whose second derivative is not zero: the mask rules sit
 * between curved ops, max(x², sin y) · |x| clamped. */
static ad_value *build_composed(ad_tape *tp, ad_value *const *x, void *ctx)
{
    (void)ctx;
    ad_value *m = ad_maximum(tp, ad_square(tp, x[0]), ad_sin(tp, x[1]));
    return ad_clamp(tp, ad_mul(tp, m, ad_abs(tp, x[0])), -INFINITY, 0.6);
}

/* Moves entries of b that are within `gap` of an entry of a they meet
 * (b [m,n] or [n] against a [m,n], or b a scalar): away from ties. */
static void separate(const ad_value *a, ad_value *b, double gap)
{
    for (bool moved = true; moved;) {
        moved = false;
        for (size_t i = 0; i < a->size; i++) {
            size_t j = i % b->size;
            if (fabs((double)a->data[i] - (double)b->data[j]) < gap) {
                b->data[j] += (ad_real)(2 * gap);
                moved = true;
            }
        }
    }
}

START_TEST(gradchecks)
{
    ad_rng rng;
    ad_rng_seed(&rng, 11);
    int S34[2] = { 3, 4 }, S4[1] = { 4 };
    ad_value *x = gc_param(&rng, 2, S34, -2, 2, 0.1);
    ck_assert_int_eq(gc_check("abs", build_abs, NULL, 1, &x, NULL), 0);
    /* same shapes, a row against [4], a scalar against [3,4] */
    ad_value *b[3] = { gc_param(&rng, 2, S34, -2, 2, 0), gc_param(&rng, 1, S4, -2, 2, 0),
                       gc_param(&rng, 0, NULL, -2, 2, 0) };
    for (int k = 0; k < 3; k++) {
        separate(x, b[k], 0.05);
        ad_value *ab[2] = { x, b[k] }, *ba[2] = { b[k], x };
        ck_assert_int_eq(gc_check("maximum", build_maximum, NULL, 2, ab, NULL), 0);
        ck_assert_int_eq(gc_check("minimum", build_minimum, NULL, 2, ba, NULL), 0);
    }
    /* clamp: two-sided and one-sided; no entry within 0.05 of a bound */
    double ranges[3][2] = { { -1, 1 }, { -INFINITY, 0.5 }, { -0.3, INFINITY } };
    for (int k = 0; k < 3; k++) {
        for (size_t i = 0; i < x->size; i++)
            for (int e = 0; e < 2; e++)
                if (fabs((double)x->data[i] - ranges[k][e]) < 0.05) x->data[i] += (ad_real)0.1;
        ck_assert_int_eq(gc_check("clamp", build_clamp, ranges[k], 1, &x, NULL), 0);
    }
    ad_value *y = gc_param(&rng, 2, S34, -2, 2, 0);
    for (size_t i = 0; i < x->size; i++) /* away from x² = sin y and from x·… = 0.6 */
        while (fabs(x->data[i] * x->data[i] - sin(y->data[i])) < 0.05 ||
               fabs(fmax(x->data[i] * x->data[i], sin(y->data[i])) * fabs(x->data[i]) - 0.6) < 0.05)
            y->data[i] += (ad_real)0.1;
    ad_value *xy[2] = { x, y };
    ck_assert_int_eq(gc_check("composed", build_composed, NULL, 2, xy, NULL), 0);
    ad_value_free(x);
    ad_value_free(y);
    for (int k = 0; k < 3; k++) ad_value_free(b[k]);
}
END_TEST

/* ---- errors --------------------------------------------------------------- */

START_TEST(errors)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *a = ad_const_fill(tp, 1, (int[]){ 2 }, 1), *b = ad_const_fill(tp, 1, (int[]){ 3 }, 1);
    tu_expect_error(ad_maximum(tp, a, b), "maximum: shapes do not broadcast: [2] and [3]");
    tu_expect_error(ad_minimum(tp, a, b), "minimum: shapes do not broadcast: [2] and [3]");
    tu_expect_error(ad_clamp(tp, a, 1, 0), "clamp: the range [1, 0] is empty or NaN");
    tu_expect_error(ad_clamp(tp, a, NAN, 0), "clamp: the range [nan, 0] is empty or NaN");
    tu_expect_error(ad_argmax(tp, a, 1), "argmax: axis 1 is outside -1..0");
    tu_expect_error(ad_argmax(tp, ad_const_scalar(tp, 1), 0), "argmax: x is a scalar");
    /* A NULL input keeps the first message. */
    ad_fail(AD_ESHAPE, "first");
    ck_assert_ptr_null(ad_abs(tp, NULL));
    ck_assert_ptr_null(ad_sign(tp, NULL));
    ck_assert_ptr_null(ad_maximum(tp, a, NULL));
    ck_assert_ptr_null(ad_clamp(tp, NULL, 0, 1));
    ck_assert_ptr_null(ad_argmax(tp, NULL, 0));
    ck_assert_str_eq(ad_error(), "first");
    ad_tape_free(tp);
}
END_TEST

Suite *select_suite(void);
Suite *select_suite(void)
{
    Suite *s = suite_create("select");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, values);
    tcase_add_test(tc, argmax_values);
    tcase_add_test(tc, kink_gradients);
    tcase_add_test(tc, gradchecks);
    tcase_add_test(tc, errors);
    suite_add_tcase(s, tc);
    return s;
}
