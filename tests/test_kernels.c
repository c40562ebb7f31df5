/* test_kernels.c — the fused kernels of ops/ (max-pool's kept positions,
 * conv2d's fused forward and its two backward ops, batch-norm's forward and
 * backward ops): reference values, first- and second-order gradient checks,
 * and that each kernel keeps what its backward needs and nothing is
 * recomputed from values that may have changed. */
#include <check.h>
#include <math.h>
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

Suite *kernels_suite(void);
Suite *kernels_suite(void)
{
    Suite *s = suite_create("kernels");
    TCase *tc = tcase_create("pool");
    tcase_add_test(tc, maxpool_keeps_positions);
    tcase_add_test(tc, maxpool_no_positions_without_gradient);
    tcase_add_test(tc, maxpool_window_limit);
    suite_add_tcase(s, tc);
    return s;
}
