/* test_linalg.c — matrix products (linalg.c) and shape ops (shape.c):
 * hand-computed forwards, matmul against a naive triple loop, first- and
 * second-order gradient checks for every op, and the error paths. */
#include <check.h>
#include <math.h>
#include <string.h>

#include "gradcheck.h"
#include "testutil.h"
#include "ops/ops.h"

/* The op must fail with exactly this message. */
#define expect_error(expr, msg)                    \
    do {                                           \
        ck_assert_ptr_null(expr);                  \
        ck_assert_str_eq(ad_error(), (msg));       \
    } while (0)

/* A [2,3] = 1..6 and B [3,2] = 7..12, used by the hand-computed cases. */
static const ad_real A23[6] = { 1, 2, 3, 4, 5, 6 };
static const ad_real B32[6] = { 7, 8, 9, 10, 11, 12 };

/* ---- matmul forward ---------------------------------------------------- */

START_TEST(matmul_forward)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *a = ad_const(tp, 2, (int[]){ 2, 3 }, A23);
    ad_value *b = ad_const(tp, 2, (int[]){ 3, 2 }, B32);
    ad_value *c = ad_matmul(tp, a, b, false, false); /* A B */
    tu_expect_shape(c, 2, (int[]){ 2, 2 });
    tu_expect_values(c, (double[]){ 58, 64, 139, 154 }, 4, 0);
    c = ad_matmul(tp, a, a, true, false); /* Aᵀ A */
    tu_expect_shape(c, 2, (int[]){ 3, 3 });
    tu_expect_values(c, (double[]){ 17, 22, 27, 22, 29, 36, 27, 36, 45 }, 9, 0);
    c = ad_matmul(tp, a, a, false, true); /* A Aᵀ */
    tu_expect_shape(c, 2, (int[]){ 2, 2 });
    tu_expect_values(c, (double[]){ 14, 32, 32, 77 }, 4, 0);
    c = ad_matmul(tp, b, a, true, true); /* Bᵀ Aᵀ = (A B)ᵀ */
    tu_expect_shape(c, 2, (int[]){ 2, 2 });
    tu_expect_values(c, (double[]){ 58, 139, 64, 154 }, 4, 0);
    ad_tape_free(tp);
}
END_TEST

/* c [m,n] = op(a) op(b), read straight from the stored layouts, in double.
 * Returns the largest Σₚ |a_ip b_pj|: a sum of k products in the real type is
 * within k·ε of that of the exact one, whatever the order of the additions. */
static double naive_matmul(const ad_value *a, const ad_value *b, bool ta, bool tb, double *c)
{
    int m = a->shape[ta ? 1 : 0], k = a->shape[ta ? 0 : 1], n = b->shape[tb ? 0 : 1];
    int lda = a->shape[1], ldb = b->shape[1];
    double most = 0;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0, abs_s = 0;
            for (int p = 0; p < k; p++) {
                double x = a->data[ta ? p * lda + i : i * lda + p];
                double y = b->data[tb ? j * ldb + p : p * ldb + j];
                s += x * y;
                abs_s += fabs(x * y);
            }
            c[i * n + j] = s;
            most = fmax(most, abs_s);
        }
    return most;
}

/* Every flag combination on non-square shapes, small and large enough for
 * BLAS to block; _i picks the flags. */
START_TEST(matmul_vs_naive)
{
    bool ta = _i & 1, tb = _i & 2;
    static const int sizes[2][3] = { { 3, 4, 5 }, { 37, 53, 29 } }; /* m, k, n */
    ad_rng rng;
    ad_rng_seed(&rng, 40 + (uint64_t)_i);
    for (int s = 0; s < 2; s++) {
        int m = sizes[s][0], k = sizes[s][1], n = sizes[s][2];
        ad_value *a = ad_tensor_randn(&rng, 2, ta ? (int[]){ k, m } : (int[]){ m, k }, 1);
        ad_value *b = ad_tensor_randn(&rng, 2, tb ? (int[]){ n, k } : (int[]){ k, n }, 1);
        ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
        ad_value *c = ad_matmul(tp, a, b, ta, tb);
        tu_expect_shape(c, 2, (int[]){ m, n });
        double want[37 * 29];
        double most = naive_matmul(a, b, ta, tb, want);
        tu_expect_values(c, want, (size_t)(m * n), TU_TOL(k) * most);
        ad_tape_free(tp);
        ad_value_free(a);
        ad_value_free(b);
    }
}
END_TEST

START_TEST(linear_outer_forward)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *x = ad_const(tp, 2, (int[]){ 2, 3 }, A23);
    ad_value *w = ad_const(tp, 2, (int[]){ 2, 3 }, (ad_real[]){ 1, 0, 1, 0, 1, 0 });
    ad_value *b = ad_const(tp, 1, (int[]){ 2 }, (ad_real[]){ 10, 20 });
    ad_value *y = ad_linear(tp, x, w, b);
    tu_expect_shape(y, 2, (int[]){ 2, 2 });
    tu_expect_values(y, (double[]){ 14, 22, 20, 25 }, 4, 0);
    tu_expect_values(ad_linear(tp, x, w, NULL), (double[]){ 4, 2, 10, 5 }, 4, 0);
    ad_value *u = ad_const(tp, 1, (int[]){ 3 }, (ad_real[]){ 1, 2, 3 });
    ad_value *v = ad_const(tp, 1, (int[]){ 2 }, (ad_real[]){ 4, 5 });
    ad_value *o = ad_outer(tp, u, v);
    tu_expect_shape(o, 2, (int[]){ 3, 2 });
    tu_expect_values(o, (double[]){ 4, 5, 8, 10, 12, 15 }, 6, 0);
    ad_tape_free(tp);
}
END_TEST

/* ---- shape forward ----------------------------------------------------- */

static ad_value *t0(ad_tape *tp) { return ad_const_fill(tp, 2, (int[]){ 1, 1 }, 9); }

START_TEST(reshape_transpose_forward)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *a = ad_const(tp, 2, (int[]){ 2, 3 }, A23);
    ad_value *r = ad_reshape(tp, a, 3, (int[]){ 3, 1, 2 });
    tu_expect_shape(r, 3, (int[]){ 3, 1, 2 });
    tu_expect_values(r, (double[]){ 1, 2, 3, 4, 5, 6 }, 6, 0);
    ck_assert_ptr_ne(r->data, a->data); /* a copy, not a view */
    ad_value *one = ad_reshape(tp, ad_slice_rows(tp, t0(tp), 0, 1), 0, NULL); /* [1,1] -> [] */
    tu_expect_shape(one, 0, NULL);
    tu_expect_values(one, (double[]){ 9 }, 1, 0);
    ad_value *t = ad_transpose(tp, a);
    tu_expect_shape(t, 2, (int[]){ 3, 2 });
    tu_expect_values(t, (double[]){ 1, 4, 2, 5, 3, 6 }, 6, 0);
    ad_tape_free(tp);
}
END_TEST

START_TEST(rows_forward)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_real seq[16];
    for (int i = 0; i < 16; i++) seq[i] = (ad_real)i;
    ad_value *x = ad_const(tp, 3, (int[]){ 4, 2, 2 }, seq);
    ad_value *s = ad_slice_rows(tp, x, 1, 2);
    tu_expect_shape(s, 3, (int[]){ 2, 2, 2 });
    tu_expect_values(s, (double[]){ 4, 5, 6, 7, 8, 9, 10, 11 }, 8, 0);
    tu_expect_values(ad_slice_rows(tp, x, 3, 1), (double[]){ 12, 13, 14, 15 }, 4, 0);

    ad_value *a = ad_const(tp, 2, (int[]){ 2, 3 }, A23);
    ad_value *idx = ad_const(tp, 1, (int[]){ 3 }, (ad_real[]){ 1, 0, 1 });
    ad_value *gth = ad_gather_rows(tp, a, idx);
    tu_expect_shape(gth, 2, (int[]){ 3, 3 });
    tu_expect_values(gth, (double[]){ 4, 5, 6, 1, 2, 3, 4, 5, 6 }, 9, 0);
    ad_value *v = ad_const(tp, 1, (int[]){ 2 }, (ad_real[]){ 7, 8 });
    tu_expect_values(ad_gather_rows(tp, v, idx), (double[]){ 8, 7, 8 }, 3, 0);

    /* Row 2 is named twice: it receives the sum of g's rows 0 and 2. */
    ad_value *g = ad_const(tp, 2, (int[]){ 3, 2 }, A23);
    ad_value *sidx = ad_const(tp, 1, (int[]){ 3 }, (ad_real[]){ 2, 0, 2 });
    ad_value *sc = ad_scatter_rows(tp, g, sidx, 4);
    tu_expect_shape(sc, 2, (int[]){ 4, 2 });
    tu_expect_values(sc, (double[]){ 3, 4, 0, 0, 6, 8, 0, 0 }, 8, 0);
    ad_tape_free(tp);
}
END_TEST

START_TEST(concat_one_hot_forward)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *a = ad_const(tp, 2, (int[]){ 2, 3 }, A23);
    ad_value *row = ad_const(tp, 2, (int[]){ 1, 3 }, (ad_real[]){ 7, 8, 9 });
    ad_value *col = ad_const(tp, 2, (int[]){ 2, 1 }, (ad_real[]){ 7, 8 });
    ad_value *c = ad_concat(tp, a, row, 0);
    tu_expect_shape(c, 2, (int[]){ 3, 3 });
    tu_expect_values(c, (double[]){ 1, 2, 3, 4, 5, 6, 7, 8, 9 }, 9, 0);
    c = ad_concat(tp, a, col, 1);
    tu_expect_shape(c, 2, (int[]){ 2, 4 });
    tu_expect_values(c, (double[]){ 1, 2, 3, 7, 4, 5, 6, 8 }, 8, 0);
    tu_expect_values(ad_concat(tp, col, a, -1), (double[]){ 7, 1, 2, 3, 8, 4, 5, 6 }, 8, 0);
    /* A middle axis of a rank-3 tensor. */
    ad_value *p = ad_const(tp, 3, (int[]){ 2, 1, 2 }, (ad_real[]){ 1, 2, 3, 4 });
    ad_value *q = ad_const(tp, 3, (int[]){ 2, 2, 2 }, (ad_real[]){ 5, 6, 7, 8, 9, 10, 11, 12 });
    c = ad_concat(tp, p, q, 1);
    tu_expect_shape(c, 3, (int[]){ 2, 3, 2 });
    tu_expect_values(c, (double[]){ 1, 2, 5, 6, 7, 8, 3, 4, 9, 10, 11, 12 }, 12, 0);

    ad_value *labels = ad_const(tp, 1, (int[]){ 3 }, (ad_real[]){ 2, 0, 1 });
    ad_value *h = ad_one_hot(tp, labels, 3);
    tu_expect_shape(h, 2, (int[]){ 3, 3 });
    tu_expect_values(h, (double[]){ 0, 0, 1, 1, 0, 0, 0, 1, 0 }, 9, 0);
    ad_tape_free(tp);
}
END_TEST

/* one_hot is a constant even when its labels carry a gradient. */
START_TEST(one_hot_is_constant)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *labels = ad_param_from(1, (int[]){ 2 }, (ad_real[]){ 1, 0 });
    ad_value *h = ad_one_hot(tp, labels, 2);
    ck_assert_ptr_nonnull(h);
    ck_assert(!h->requires_grad);
    ck_assert_ptr_null(h->op);
    ad_value *gl = NULL;
    ck_assert_int_eq(ad_vjp(tp, h, ad_const_fill(tp, 2, (int[]){ 2, 2 }, 1), 1, &labels, &gl,
                            false), AD_OK);
    tu_expect_values(gl, (double[]){ 0, 0 }, 2, 0);
    ad_tape_free(tp);
    ad_value_free(labels);
}
END_TEST

/* ---- gradient checks: linalg ------------------------------------------ */

typedef struct { bool ta, tb; } mm_flags;

static ad_value *mm(ad_tape *tp, ad_value *const *x, void *ctx)
{
    const mm_flags *f = ctx;
    return ad_matmul(tp, x[0], x[1], f->ta, f->tb);
}

static ad_value *tanh_mm(ad_tape *tp, ad_value *const *x, void *ctx)
{
    return ad_tanh(tp, mm(tp, x, ctx));
}

/* op(A) [3,4] · op(B) [4,2] with both operands parameters: the Hessian's
 * off-diagonal blocks are non-zero, so second order tests the rule's own
 * backward (every flag combination's rule uses other combinations). */
START_TEST(matmul_gradients)
{
    mm_flags f = { _i & 1, _i & 2 };
    int m = 3, k = 4, n = 2;
    ad_rng rng;
    ad_rng_seed(&rng, 200 + (uint64_t)_i);
    ad_value *x[2] = { gc_param(&rng, 2, f.ta ? (int[]){ k, m } : (int[]){ m, k }, -2, 2, 0),
                       gc_param(&rng, 2, f.tb ? (int[]){ n, k } : (int[]){ k, n }, -2, 2, 0) };
    ck_assert_msg(gc_check("matmul", mm, &f, 2, x, NULL) == 0, "matmul ta=%d tb=%d", f.ta, f.tb);
    ck_assert_msg(gc_check("tanh matmul", tanh_mm, &f, 2, x, NULL) == 0, "tanh matmul ta=%d tb=%d",
                  f.ta, f.tb);
    /* One operand a constant: only the other's rule runs. */
    for (int c = 0; c < 2; c++) {
        ad_set_requires_grad(x[c], false);
        ck_assert_msg(gc_check("tanh matmul, one constant", tanh_mm, &f, 2, x, NULL) == 0,
                      "constant operand %d, ta=%d tb=%d", c, f.ta, f.tb);
        ad_set_requires_grad(x[c], true);
    }
    ad_value_free(x[0]);
    ad_value_free(x[1]);
}
END_TEST

/* x xᵀ and xᵀ x: both operands are the same value, so the two gradient
 * contributions must be accumulated. */
static ad_value *gram(ad_tape *tp, ad_value *const *x, void *ctx)
{
    const mm_flags *f = ctx;
    return ad_matmul(tp, x[0], x[0], f->ta, f->tb);
}

START_TEST(matmul_same_operand)
{
    ad_rng rng;
    ad_rng_seed(&rng, 210);
    ad_value *x = gc_param(&rng, 2, (int[]){ 3, 4 }, -2, 2, 0);
    mm_flags outer = { false, true }, inner = { true, false };
    ck_assert_int_eq(gc_check("x xT", gram, &outer, 1, &x, NULL), 0);
    ck_assert_int_eq(gc_check("xT x", gram, &inner, 1, &x, NULL), 0);
    ad_value_free(x);
}
END_TEST

static ad_value *tanh_linear(ad_tape *tp, ad_value *const *x, void *ctx)
{
    bool bias = *(bool *)ctx;
    return ad_tanh(tp, ad_linear(tp, x[0], x[1], bias ? x[2] : NULL));
}

START_TEST(linear_gradients)
{
    ad_rng rng;
    ad_rng_seed(&rng, 220);
    ad_value *x[3] = { gc_param(&rng, 2, (int[]){ 5, 3 }, -1, 1, 0),
                       gc_param(&rng, 2, (int[]){ 4, 3 }, -1, 1, 0),
                       gc_param(&rng, 1, (int[]){ 4 }, -1, 1, 0) };
    bool bias = true;
    ck_assert_int_eq(gc_check("linear", tanh_linear, &bias, 3, x, NULL), 0);
    bias = false;
    ck_assert_int_eq(gc_check("linear, no bias", tanh_linear, &bias, 2, x, NULL), 0);
    for (int i = 0; i < 3; i++) ad_value_free(x[i]);
}
END_TEST

static ad_value *outer_ab(ad_tape *tp, ad_value *const *x, void *ctx)
{
    (void)ctx;
    return ad_outer(tp, x[0], x[1]);
}

START_TEST(outer_gradients)
{
    ad_rng rng;
    ad_rng_seed(&rng, 230);
    ad_value *x[2] = { gc_param(&rng, 1, (int[]){ 3 }, -2, 2, 0),
                       gc_param(&rng, 1, (int[]){ 5 }, -2, 2, 0) };
    ck_assert_int_eq(gc_check("outer", outer_ab, NULL, 2, x, NULL), 0);
    ad_value_free(x[0]);
    ad_value_free(x[1]);
}
END_TEST

/* ---- gradient checks: shape ops ---------------------------------------- */
/* The shape ops are linear, so each is squared (or multiplied with another
 * use of its input): the Hessian is then non-zero and the second-order check
 * runs each op's adjoint backwards too (pad's rule, scatter's rule, …). */

static ad_value *sq_reshape(ad_tape *tp, ad_value *const *x, void *ctx)
{
    (void)ctx;
    return ad_square(tp, ad_reshape(tp, x[0], 3, (int[]){ 2, 3, 2 }));
}

static ad_value *sq_transpose(ad_tape *tp, ad_value *const *x, void *ctx)
{
    (void)ctx;
    return ad_square(tp, ad_transpose(tp, x[0]));
}

/* xᵀ·x written with an explicit transpose. */
static ad_value *transpose_mm(ad_tape *tp, ad_value *const *x, void *ctx)
{
    (void)ctx;
    return ad_matmul(tp, ad_transpose(tp, x[0]), x[0], false, false);
}

static ad_value *sq_slice(ad_tape *tp, ad_value *const *x, void *ctx)
{
    (void)ctx;
    return ad_square(tp, ad_slice_rows(tp, x[0], 1, 2));
}

/* Two overlapping slices multiplied: rows 0..1 times rows 1..2. */
static ad_value *slice_products(ad_tape *tp, ad_value *const *x, void *ctx)
{
    (void)ctx;
    return ad_mul(tp, ad_slice_rows(tp, x[0], 0, 2), ad_slice_rows(tp, x[0], 1, 2));
}

static ad_value *sq_gather(ad_tape *tp, ad_value *const *x, void *ctx)
{
    return ad_square(tp, ad_gather_rows(tp, x[0], ctx));
}

static ad_value *sq_scatter(ad_tape *tp, ad_value *const *x, void *ctx)
{
    return ad_square(tp, ad_scatter_rows(tp, x[0], ctx, 5));
}

START_TEST(shape_gradients)
{
    ad_rng rng;
    ad_rng_seed(&rng, 300);
    ad_value *x34 = gc_param(&rng, 2, (int[]){ 3, 4 }, -2, 2, 0);
    ck_assert_int_eq(gc_check("reshape", sq_reshape, NULL, 1, &x34, NULL), 0);
    ck_assert_int_eq(gc_check("transpose", sq_transpose, NULL, 1, &x34, NULL), 0);
    ck_assert_int_eq(gc_check("transpose matmul", transpose_mm, NULL, 1, &x34, NULL), 0);

    ad_value *x3 = gc_param(&rng, 3, (int[]){ 4, 2, 3 }, -2, 2, 0);
    ck_assert_int_eq(gc_check("slice_rows", sq_slice, NULL, 1, &x3, NULL), 0);
    ck_assert_int_eq(gc_check("slice_rows products", slice_products, NULL, 1, &x3, NULL), 0);

    /* Repeated indices: gather's adjoint must add, not overwrite. */
    ad_value *idx = ad_tensor_from(1, (int[]){ 4 }, (ad_real[]){ 3, 1, 3, 0 });
    ck_assert_int_eq(gc_check("gather_rows", sq_gather, idx, 1, &x3, NULL), 0);
    ck_assert_int_eq(gc_check("scatter_rows", sq_scatter, idx, 1, &x3, NULL), 0);
    ad_value_free(idx);
    ad_value_free(x3);
    ad_value_free(x34);
}
END_TEST

static ad_value *sq_concat(ad_tape *tp, ad_value *const *x, void *ctx)
{
    return ad_square(tp, ad_concat(tp, x[0], x[1], *(int *)ctx));
}

/* concat(a, b) · concat(b, a) where a and b have the same shape: every
 * entry of a meets an entry of b, so the Hessian has cross terms. */
static ad_value *concat_cross(ad_tape *tp, ad_value *const *x, void *ctx)
{
    int axis = *(int *)ctx;
    return ad_mul(tp, ad_concat(tp, x[0], x[1], axis), ad_concat(tp, x[1], x[0], axis));
}

/* Along each axis of rank-3 operands (and axis -1), with unequal extents
 * there so an off-by-one in the split shows. */
START_TEST(concat_gradients)
{
    int axis = _i == 3 ? -1 : _i, ax = _i == 3 ? 2 : _i;
    int sa[3] = { 2, 3, 2 }, sb[3] = { 2, 3, 2 };
    sb[ax] = 4;
    ad_rng rng;
    ad_rng_seed(&rng, 310 + (uint64_t)_i);
    ad_value *x[2] = { gc_param(&rng, 3, sa, -2, 2, 0), gc_param(&rng, 3, sb, -2, 2, 0) };
    ck_assert_msg(gc_check("concat", sq_concat, &axis, 2, x, NULL) == 0, "axis %d", axis);
    ad_value *y[2] = { gc_param(&rng, 3, sa, -2, 2, 0), gc_param(&rng, 3, sa, -2, 2, 0) };
    ck_assert_msg(gc_check("concat cross", concat_cross, &axis, 2, y, NULL) == 0, "axis %d", axis);
    for (int i = 0; i < 2; i++) {
        ad_value_free(x[i]);
        ad_value_free(y[i]);
    }
}
END_TEST

/* A one-hot mask in a loss: the gradient reaches x only at the labels. */
static ad_value *one_hot_pick(ad_tape *tp, ad_value *const *x, void *ctx)
{
    return ad_square(tp, ad_mul(tp, ad_one_hot(tp, ctx, 4), x[0]));
}

START_TEST(one_hot_gradient)
{
    ad_rng rng;
    ad_rng_seed(&rng, 320);
    ad_value *x = gc_param(&rng, 2, (int[]){ 3, 4 }, -2, 2, 0);
    ad_value *labels = ad_tensor_from(1, (int[]){ 3 }, (ad_real[]){ 3, 0, 3 });
    ck_assert_int_eq(gc_check("one_hot", one_hot_pick, labels, 1, &x, NULL), 0);
    ad_value_free(labels);
    ad_value_free(x);
}
END_TEST

/* ---- errors ------------------------------------------------------------ */

START_TEST(linalg_errors)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *a = ad_const_fill(tp, 2, (int[]){ 5, 7 }, 1);
    ad_value *b = ad_const_fill(tp, 2, (int[]){ 3, 7 }, 1);
    ad_value *v = ad_const_fill(tp, 1, (int[]){ 7 }, 1);
    expect_error(ad_matmul(tp, a, b, false, false), "matmul: inner dimensions differ: [5,7] x [3,7]");
    expect_error(ad_matmul(tp, a, b, true, true), "matmul: inner dimensions differ: [5,7]ᵀ x [3,7]ᵀ");
    expect_error(ad_matmul(tp, a, b, true, false), "matmul: inner dimensions differ: [5,7]ᵀ x [3,7]");
    ck_assert_ptr_nonnull(ad_matmul(tp, a, b, false, true)); /* [5,7] x [7,3] fits */
    expect_error(ad_matmul(tp, v, a, false, false), "matmul: operands must be 2-D: [7] x [5,7]");
    expect_error(ad_matmul(NULL, a, b, false, true), "matmul: tape is NULL");

    ad_value *bias = ad_const_fill(tp, 1, (int[]){ 3 }, 0);
    expect_error(ad_linear(tp, a, b, v), "linear: bias must be [3] for W [3,7]: got [7]");
    expect_error(ad_linear(tp, a, ad_transpose(tp, b), bias),
                 "linear: x must be [N,in] and W [out,in]: got x [5,7], W [7,3]");
    expect_error(ad_linear(tp, v, b, bias),
                 "linear: x must be [N,in] and W [out,in]: got x [7], W [3,7]");
    expect_error(ad_outer(tp, v, a), "outer: operands must be vectors: got [7] and [5,7]");
    ad_tape_free(tp);
}
END_TEST

START_TEST(shape_errors)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *a = ad_const(tp, 2, (int[]){ 2, 3 }, A23);
    ad_value *s = ad_const_scalar(tp, 1);
    expect_error(ad_reshape(tp, a, 2, (int[]){ 4, 2 }), "reshape: [2,3] has 6 entries but [4,2] has 8");
    expect_error(ad_reshape(tp, a, 2, (int[]){ 6, 0 }), "reshape: extent 0 of axis 1 is not positive");
    expect_error(ad_reshape(tp, a, 5, (int[]){ 1, 1, 2, 3, 1 }), "reshape: rank 5 is outside 0..4");
    expect_error(ad_transpose(tp, ad_reshape(tp, a, 3, (int[]){ 1, 2, 3 })),
                 "transpose: x must be 2-D: got [1,2,3]");

    expect_error(ad_slice_rows(tp, a, 1, 2),
                 "slice_rows: 2 rows from row 1 do not fit in the 2 rows of [2,3]");
    expect_error(ad_slice_rows(tp, a, -1, 1),
                 "slice_rows: 1 rows from row -1 do not fit in the 2 rows of [2,3]");
    expect_error(ad_slice_rows(tp, a, 0, 0),
                 "slice_rows: 0 rows from row 0 do not fit in the 2 rows of [2,3]");
    expect_error(ad_slice_rows(tp, a, 1, 2147483647),
                 "slice_rows: 2147483647 rows from row 1 do not fit in the 2 rows of [2,3]");
    expect_error(ad_slice_rows(tp, s, 0, 1), "slice_rows: x must have rows (rank >= 1): got []");

    ad_value *far = ad_const(tp, 1, (int[]){ 3 }, (ad_real[]){ 0, 2, 1 });
    ad_value *neg = ad_const(tp, 1, (int[]){ 2 }, (ad_real[]){ 1, -1 });
    ad_value *frac = ad_const(tp, 1, (int[]){ 2 }, (ad_real[]){ 0.5, 1 });
    ad_value *nan_ = ad_const(tp, 1, (int[]){ 1 }, (ad_real[]){ NAN });
    ad_value *mat = ad_const_fill(tp, 2, (int[]){ 2, 1 }, 0);
    expect_error(ad_gather_rows(tp, a, far), "gather_rows: idx[1] = 2 is out of range 0..1");
    expect_error(ad_gather_rows(tp, a, neg), "gather_rows: idx[1] = -1 is out of range 0..1");
    expect_error(ad_gather_rows(tp, a, frac), "gather_rows: idx[0] = 0.5 is not a whole number");
    expect_error(ad_gather_rows(tp, a, nan_), "gather_rows: idx[0] = nan is not a whole number");
    expect_error(ad_gather_rows(tp, a, mat), "gather_rows: idx must be a vector: got [2,1]");
    expect_error(ad_gather_rows(tp, s, far), "gather_rows: x must have rows (rank >= 1): got []");

    expect_error(ad_scatter_rows(tp, a, far, 4),
                 "scatter_rows: g must be [len,...] and idx [len]: got g [2,3], idx [3]");
    expect_error(ad_scatter_rows(tp, a, neg, 4), "scatter_rows: idx[1] = -1 is out of range 0..3");
    expect_error(ad_scatter_rows(tp, a, frac, 4), "scatter_rows: idx[0] = 0.5 is not a whole number");
    expect_error(ad_scatter_rows(tp, a, mat, 4),
                 "scatter_rows: g must be [len,...] and idx [len]: got g [2,3], idx [2,1]");
    expect_error(ad_scatter_rows(tp, a, ad_slice_rows(tp, far, 0, 2), 0),
                 "scatter_rows: n_rows must be positive: got 0");
    expect_error(ad_scatter_rows(tp, far, far, 2), "scatter_rows: idx[1] = 2 is out of range 0..1");

    ad_value *c = ad_const_fill(tp, 2, (int[]){ 2, 4 }, 0), *v = ad_const_fill(tp, 1, (int[]){ 3 }, 0);
    expect_error(ad_concat(tp, a, c, 0), "concat: [2,3] and [2,4] differ off axis 0");
    ck_assert_ptr_nonnull(ad_concat(tp, a, c, 1));
    expect_error(ad_concat(tp, a, c, 2), "concat: axis 2 is out of range for [2,3] and [2,4]");
    expect_error(ad_concat(tp, a, c, -3), "concat: axis -3 is out of range for [2,3] and [2,4]");
    expect_error(ad_concat(tp, a, v, 0), "concat: operands need the same rank >= 1: got [2,3] and [3]");
    expect_error(ad_concat(tp, s, s, 0), "concat: operands need the same rank >= 1: got [] and []");

    expect_error(ad_one_hot(tp, far, 2), "one_hot: labels[1] = 2 is out of range 0..1");
    expect_error(ad_one_hot(tp, frac, 2), "one_hot: labels[0] = 0.5 is not a whole number");
    expect_error(ad_one_hot(tp, mat, 2), "one_hot: labels must be a vector: got [2,1]");
    expect_error(ad_one_hot(tp, far, 0), "one_hot: n_classes must be positive: got 0");
    expect_error(ad_one_hot(NULL, far, 3), "one_hot: tape is NULL");
    ad_tape_free(tp);
}
END_TEST

/* A NULL input gives NULL and keeps the first message, for every op. */
START_TEST(null_propagates)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *a = ad_const(tp, 2, (int[]){ 2, 3 }, A23);
    ad_value *idx = ad_const_fill(tp, 1, (int[]){ 2 }, 0);
    ad_value *bad = ad_reshape(tp, a, 1, (int[]){ 5 });
    ck_assert_ptr_null(bad);
    const char *first = "reshape: [2,3] has 6 entries but [5] has 5";
    expect_error(ad_matmul(tp, bad, a, false, false), first);
    expect_error(ad_matmul(tp, a, bad, false, false), first);
    expect_error(ad_linear(tp, bad, a, NULL), first);
    expect_error(ad_linear(tp, a, bad, NULL), first);
    expect_error(ad_outer(tp, bad, a), first);
    expect_error(ad_outer(tp, a, bad), first);
    expect_error(ad_reshape(tp, bad, 1, (int[]){ 6 }), first);
    expect_error(ad_transpose(tp, bad), first);
    expect_error(ad_slice_rows(tp, bad, 0, 1), first);
    expect_error(ad_gather_rows(tp, bad, idx), first);
    expect_error(ad_gather_rows(tp, a, bad), first);
    expect_error(ad_scatter_rows(tp, bad, idx, 2), first);
    expect_error(ad_scatter_rows(tp, a, bad, 2), first);
    expect_error(ad_concat(tp, bad, a, 0), first);
    expect_error(ad_concat(tp, a, bad, 0), first);
    expect_error(ad_one_hot(tp, bad, 3), first);
    /* ... and through a chain. */
    expect_error(ad_transpose(tp, ad_matmul(tp, ad_slice_rows(tp, a, 0, 3), a, false, true)),
                 "slice_rows: 3 rows from row 0 do not fit in the 2 rows of [2,3]");
    ad_tape_free(tp);
}
END_TEST

Suite *linalg_suite(void);
Suite *linalg_suite(void)
{
    Suite *s = suite_create("linalg");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, matmul_forward);
    tcase_add_loop_test(tc, matmul_vs_naive, 0, 4);
    tcase_add_test(tc, linear_outer_forward);
    tcase_add_test(tc, reshape_transpose_forward);
    tcase_add_test(tc, rows_forward);
    tcase_add_test(tc, concat_one_hot_forward);
    tcase_add_test(tc, one_hot_is_constant);
    tcase_add_loop_test(tc, matmul_gradients, 0, 4);
    tcase_add_test(tc, matmul_same_operand);
    tcase_add_test(tc, linear_gradients);
    tcase_add_test(tc, outer_gradients);
    tcase_add_test(tc, shape_gradients);
    tcase_add_loop_test(tc, concat_gradients, 0, 4);
    tcase_add_test(tc, one_hot_gradient);
    tcase_add_test(tc, linalg_errors);
    tcase_add_test(tc, shape_errors);
    tcase_add_test(tc, null_propagates);
    suite_add_tcase(s, tc);
    return s;
}
