/* test_lean.c — lean tapes (ad.h): what each op declares its backward rule
 * reads, the step close that drops the rest, and the estimators that record
 * that way.
 *
 *   op_declarations  every op of ops/ (and the engine's accumulate), built
 *                    on inputs that are values of a lean step, the step then
 *                    closed, and the gradient checks of tests/gradcheck.c
 *                    run across it (first order, recorded, second order) —
 *                    once on the op's node, once on its recorded backward
 *                    (the rule's own ops, made in the closed step, whose
 *                    rules the checks then run: the second and third
 *                    derivatives) — with every input wanting a gradient and
 *                    with each one alone.  A declaration that calls unread
 *                    what a rule reads leaves that rule dropped data: the
 *                    sweep fails naming it.  Double build (float64), like
 *                    the finite differences of the op suites' own checks;
 *   misuse           a forward op given a dropped value fails with the
 *                    message that says what to do; so do a copy, a check, a
 *                    seed; a sweep through dropped outputs works; a drawing
 *                    shows "(dropped)";
 *   keep_api         ad_value_keep, leaves, lean off, ad_tape_set_lean;
 *   lifetimes        dropped values released by the horizon, carried,
 *                    rewound around, reset: bytes back to 0 (the tape
 *                    asserts it), no double give (AddressSanitizer build);
 *   estimators_bit_identical   hg_krmd (K = 1, 3, T), hg_full_rmd,
 *                    hg_checkpoint and hg_truncation_profile give the same
 *                    floats lean as with keep_values, on the toy, the six
 *                    logistic-fixture optimizers, a small hypercleaning and
 *                    the tiny one-shot network (both formulations), and lean
 *                    K-RMD's peak is smaller;
 *   keep_values_hint a problem whose inner loss reads a value its init made
 *                    fails lean with a message naming keep_values, and works
 *                    with it;
 *   stale_loss_refused  callbacks returning a loss an earlier step made
 *                    (dropped, released, or of a freed tape): every
 *                    estimator fails with AD_EARG and the reason, no crash;
 *                    hg_inner_solve's loss curve checks for a scalar;
 *   hyperclean_step_bytes   one recorded hypercleaning step keeps strictly
 *                    fewer bytes lean, and exactly what the declarations say.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ad/node.h"
#include "experiments/hyperclean_problem.h"
#include "experiments/oneshot_problem.h"
#include "experiments/toy_problem.h"
#include "gradcheck.h"
#include "logreg_fixture.h"
#include "ops/ops.h"
#include "optim/hypergrad.h"
#include "testutil.h"

enum { MAX_IN = 4 };

/* ---- the op cases ---------------------------------------------------------- */

typedef struct op_case {
    const char *name;
    gc_build op;     /* the op on its inputs */
    int n;           /* inputs */
    int rank[MAX_IN], shape[MAX_IN][4];
    double lo, hi, min_abs; /* the inputs' entries (gc_param) */
    unsigned fixed;  /* inputs that never have a gradient (labels, indices): bit i */
    const ad_real *fixed_data[MAX_IN]; /* their entries */
} op_case;

#define OP(fn, expr)                                                      \
    static ad_value *fn(ad_tape *tp, ad_value *const *x, void *ctx)      \
    {                                                                     \
        (void)ctx;                                                        \
        return (expr);                                                    \
    }

OP(op_add, ad_add(tp, x[0], x[1]))
OP(op_sub, ad_sub(tp, x[0], x[1]))
OP(op_mul, ad_mul(tp, x[0], x[1]))
OP(op_mul_self, ad_mul(tp, x[0], x[0])) /* the recorded sweep accumulates: "accumulate" */
OP(op_div, ad_div(tp, x[0], x[1]))
OP(op_neg, ad_neg(tp, x[0]))
OP(op_scale, ad_scale(tp, x[0], 1.7))
OP(op_add_scalar, ad_add_scalar(tp, x[0], 0.3))
OP(op_exp, ad_exp(tp, x[0]))
OP(op_log, ad_log(tp, x[0]))
OP(op_sin, ad_sin(tp, x[0]))
OP(op_cos, ad_cos(tp, x[0]))
OP(op_tanh, ad_tanh(tp, x[0]))
OP(op_sigmoid, ad_sigmoid(tp, x[0]))
OP(op_softplus, ad_softplus(tp, x[0]))
OP(op_relu, ad_relu(tp, x[0]))
OP(op_square, ad_square(tp, x[0]))
OP(op_sqrt, ad_sqrt(tp, x[0]))
OP(op_pow3, ad_pow(tp, x[0], 3))
OP(op_pow_frac, ad_pow(tp, x[0], 2.5))
OP(op_pow0, ad_add(tp, ad_pow(tp, x[0], 0), x[0])) /* pow 0 alone is a constant function */
OP(op_sum_to, ad_sum_to(tp, x[0], 1, (int[]){ 3 }))
OP(op_broadcast_to, ad_broadcast_to(tp, x[0], 2, (int[]){ 2, 3 }))
OP(op_sum, ad_sum(tp, x[0]))
OP(op_mean, ad_mean(tp, x[0]))
OP(op_dot, ad_dot(tp, x[0], x[1]))
OP(op_sqnorm, ad_sqnorm(tp, x[0]))
OP(op_sum_axis, ad_sum_axis(tp, x[0], 1))
OP(op_mean_axis, ad_mean_axis(tp, x[0], 0))
OP(op_matmul_nn, ad_matmul(tp, x[0], x[1], false, false))
OP(op_matmul_tn, ad_matmul(tp, x[0], x[1], true, false))
OP(op_matmul_nt, ad_matmul(tp, x[0], x[1], false, true))
OP(op_matmul_tt, ad_matmul(tp, x[0], x[1], true, true))
OP(op_linear, ad_linear(tp, x[0], x[1], x[2]))
OP(op_outer, ad_outer(tp, x[0], x[1]))
OP(op_abs, ad_abs(tp, x[0]))
OP(op_maximum, ad_maximum(tp, x[0], x[1]))
OP(op_minimum, ad_minimum(tp, x[0], x[1]))
OP(op_clamp, ad_clamp(tp, x[0], -0.5, 0.5))
OP(op_softmax, ad_softmax(tp, x[0]))
OP(op_log_softmax, ad_log_softmax(tp, x[0]))
OP(op_ce_weighted, ad_cross_entropy(tp, x[0], x[1], x[2], AD_REDUCE_MEAN))
OP(op_ce_sum, ad_cross_entropy(tp, x[0], x[1], NULL, AD_REDUCE_SUM))
OP(op_reshape, ad_reshape(tp, x[0], 2, (int[]){ 3, 2 }))
OP(op_transpose, ad_transpose(tp, x[0]))
OP(op_slice_rows, ad_slice_rows(tp, x[0], 1, 2))
OP(op_gather_rows, ad_gather_rows(tp, x[0], x[1]))
OP(op_scatter_rows, ad_scatter_rows(tp, x[0], x[1], 4))
OP(op_concat0, ad_concat(tp, x[0], x[1], 0))
OP(op_concat1, ad_concat(tp, x[0], x[1], 1))
OP(op_maxpool, ad_maxpool2d(tp, x[0], 2, 2))
OP(op_maxpool_overlap, ad_maxpool2d(tp, x[0], 3, 1))
OP(op_conv_bias, ad_conv2d(tp, x[0], x[1], x[2], 1, 1))
OP(op_conv_stride, ad_conv2d(tp, x[0], x[1], NULL, 2, 0))
OP(op_bn_affine, ad_batchnorm(tp, x[0], x[1], x[2], 1e-5))
OP(op_bn_gamma, ad_batchnorm(tp, x[0], x[1], NULL, 1e-5))
OP(op_bn_plain, ad_batchnorm(tp, x[0], NULL, NULL, 1e-5))
OP(op_channel_sum, ad_channel_sum(tp, x[0]))

static const ad_real labels3[] = { 2, 0, 3 };
static const ad_real idx5[] = { 0, 2, 2, 3, 1 };

static const op_case cases[] = {
    { "add", op_add, 2, { 2, 1 }, { { 2, 3 }, { 3 } }, -2, 2, 0, 0, { 0 } },
    { "sub", op_sub, 2, { 2, 2 }, { { 2, 3 }, { 2, 1 } }, -2, 2, 0, 0, { 0 } },
    { "mul", op_mul, 2, { 2, 1 }, { { 2, 3 }, { 3 } }, -2, 2, 0, 0, { 0 } },
    { "mul, one input twice", op_mul_self, 1, { 2 }, { { 2, 3 } }, -2, 2, 0, 0, { 0 } },
    { "div", op_div, 2, { 2, 2 }, { { 2, 3 }, { 2, 3 } }, 0.5, 2, 0, 0, { 0 } },
    { "neg", op_neg, 1, { 2 }, { { 2, 3 } }, -2, 2, 0, 0, { 0 } },
    { "scale", op_scale, 1, { 2 }, { { 2, 3 } }, -2, 2, 0, 0, { 0 } },
    { "add_scalar", op_add_scalar, 1, { 2 }, { { 2, 3 } }, -2, 2, 0, 0, { 0 } },
    { "exp", op_exp, 1, { 2 }, { { 2, 3 } }, -1, 1, 0, 0, { 0 } },
    { "log", op_log, 1, { 2 }, { { 2, 3 } }, 0.5, 2, 0, 0, { 0 } },
    { "sin", op_sin, 1, { 2 }, { { 2, 3 } }, -2, 2, 0, 0, { 0 } },
    { "cos", op_cos, 1, { 2 }, { { 2, 3 } }, -2, 2, 0, 0, { 0 } },
    { "tanh", op_tanh, 1, { 2 }, { { 2, 3 } }, -2, 2, 0, 0, { 0 } },
    { "sigmoid", op_sigmoid, 1, { 2 }, { { 2, 3 } }, -2, 2, 0, 0, { 0 } },
    { "softplus", op_softplus, 1, { 2 }, { { 2, 3 } }, -2, 2, 0, 0, { 0 } },
    { "relu", op_relu, 1, { 2 }, { { 2, 3 } }, -2, 2, 0.1, 0, { 0 } },
    { "square", op_square, 1, { 2 }, { { 2, 3 } }, -2, 2, 0, 0, { 0 } },
    { "sqrt", op_sqrt, 1, { 2 }, { { 2, 3 } }, 0.5, 2, 0, 0, { 0 } },
    { "pow 3", op_pow3, 1, { 2 }, { { 2, 3 } }, -2, 2, 0, 0, { 0 } },
    { "pow 2.5", op_pow_frac, 1, { 2 }, { { 2, 3 } }, 0.5, 2, 0, 0, { 0 } },
    { "pow 0", op_pow0, 1, { 2 }, { { 2, 3 } }, -2, 2, 0, 0, { 0 } },
    { "sum_to", op_sum_to, 1, { 2 }, { { 2, 3 } }, -2, 2, 0, 0, { 0 } },
    { "broadcast_to", op_broadcast_to, 1, { 1 }, { { 3 } }, -2, 2, 0, 0, { 0 } },
    { "sum", op_sum, 1, { 2 }, { { 2, 3 } }, -2, 2, 0, 0, { 0 } },
    { "mean", op_mean, 1, { 2 }, { { 2, 3 } }, -2, 2, 0, 0, { 0 } },
    { "dot", op_dot, 2, { 2, 2 }, { { 2, 3 }, { 2, 3 } }, -2, 2, 0, 0, { 0 } },
    { "sqnorm", op_sqnorm, 1, { 2 }, { { 2, 3 } }, -2, 2, 0, 0, { 0 } },
    { "sum_axis", op_sum_axis, 1, { 3 }, { { 2, 3, 2 } }, -2, 2, 0, 0, { 0 } },
    { "mean_axis", op_mean_axis, 1, { 2 }, { { 2, 3 } }, -2, 2, 0, 0, { 0 } },
    { "matmul", op_matmul_nn, 2, { 2, 2 }, { { 2, 3 }, { 3, 4 } }, -2, 2, 0, 0, { 0 } },
    { "matmul aT", op_matmul_tn, 2, { 2, 2 }, { { 3, 2 }, { 3, 4 } }, -2, 2, 0, 0, { 0 } },
    { "matmul bT", op_matmul_nt, 2, { 2, 2 }, { { 2, 3 }, { 4, 3 } }, -2, 2, 0, 0, { 0 } },
    { "matmul aT bT", op_matmul_tt, 2, { 2, 2 }, { { 3, 2 }, { 4, 3 } }, -2, 2, 0, 0, { 0 } },
    { "linear", op_linear, 3, { 2, 2, 1 }, { { 2, 3 }, { 4, 3 }, { 4 } }, -2, 2, 0, 0, { 0 } },
    { "outer", op_outer, 2, { 1, 1 }, { { 2 }, { 3 } }, -2, 2, 0, 0, { 0 } },
    { "abs", op_abs, 1, { 2 }, { { 2, 3 } }, -2, 2, 0.1, 0, { 0 } },
    { "maximum", op_maximum, 2, { 2, 1 }, { { 2, 3 }, { 3 } }, -2, 2, 0, 0, { 0 } },
    { "minimum", op_minimum, 2, { 2, 2 }, { { 2, 3 }, { 2, 3 } }, -2, 2, 0, 0, { 0 } },
    { "clamp", op_clamp, 1, { 2 }, { { 3, 4 } }, -0.45, 0.45, 0, 0, { 0 } },
    { "softmax", op_softmax, 1, { 2 }, { { 3, 4 } }, -2, 2, 0, 0, { 0 } },
    { "log_softmax", op_log_softmax, 1, { 2 }, { { 3, 4 } }, -2, 2, 0, 0, { 0 } },
    { "cross_entropy, weighted", op_ce_weighted, 3, { 2, 1, 1 }, { { 3, 4 }, { 3 }, { 3 } }, -2, 2,
      0, 1u << 1, { NULL, labels3 } },
    { "cross_entropy, sum", op_ce_sum, 2, { 2, 1 }, { { 3, 4 }, { 3 } }, -2, 2, 0, 1u << 1,
      { NULL, labels3 } },
    { "reshape", op_reshape, 1, { 2 }, { { 2, 3 } }, -2, 2, 0, 0, { 0 } },
    { "transpose", op_transpose, 1, { 2 }, { { 2, 3 } }, -2, 2, 0, 0, { 0 } },
    { "slice_rows", op_slice_rows, 1, { 2 }, { { 4, 3 } }, -2, 2, 0, 0, { 0 } },
    { "gather_rows", op_gather_rows, 2, { 2, 1 }, { { 4, 3 }, { 5 } }, -2, 2, 0, 1u << 1,
      { NULL, idx5 } },
    { "scatter_rows", op_scatter_rows, 2, { 2, 1 }, { { 5, 3 }, { 5 } }, -2, 2, 0, 1u << 1,
      { NULL, idx5 } },
    { "concat axis 0", op_concat0, 2, { 2, 2 }, { { 2, 3 }, { 1, 3 } }, -2, 2, 0, 0, { 0 } },
    { "concat axis 1", op_concat1, 2, { 2, 2 }, { { 2, 3 }, { 2, 2 } }, -2, 2, 0, 0, { 0 } },
    { "maxpool2d", op_maxpool, 1, { 4 }, { { 2, 2, 4, 4 } }, -2, 2, 0, 0, { 0 } },
    { "maxpool2d, overlapping", op_maxpool_overlap, 1, { 4 }, { { 1, 2, 5, 5 } }, -2, 2, 0, 0,
      { 0 } },
    { "conv2d, bias, pad 1", op_conv_bias, 3, { 4, 4, 1 }, { { 2, 2, 4, 4 }, { 3, 2, 3, 3 }, { 3 } },
      -1, 1, 0, 0, { 0 } },
    { "conv2d, stride 2", op_conv_stride, 2, { 4, 4 }, { { 2, 2, 5, 5 }, { 3, 2, 3, 3 } }, -1, 1, 0,
      0, { 0 } },
    { "batchnorm, gamma and beta, 4-D", op_bn_affine, 3, { 4, 1, 1 },
      { { 2, 3, 2, 2 }, { 3 }, { 3 } }, -2, 2, 0, 0, { 0 } },
    { "batchnorm, gamma", op_bn_gamma, 2, { 2, 1 }, { { 4, 3 }, { 3 } }, -2, 2, 0, 0, { 0 } },
    { "batchnorm, plain", op_bn_plain, 1, { 2 }, { { 4, 3 } }, -2, 2, 0, 0, { 0 } },
    { "channel_sum, 4-D", op_channel_sum, 1, { 4 }, { { 2, 3, 3, 4 } }, -2, 2, 0, 0, { 0 } },
    { "channel_sum, 2-D", op_channel_sum, 1, { 2 }, { { 4, 3 } }, -2, 2, 0, 0, { 0 } },
};
enum { N_CASES = sizeof cases / sizeof *cases };

/* ---- the lean probe ---------------------------------------------------------- */

/* A fixed tensor shaped like v, a constant of the open step (the same
 * entries every call: gc_check builds many times). */
static ad_value *pattern(ad_tape *tp, const ad_value *v, double phase)
{
    if (!v) return NULL;
    ad_value *p = ad_const_fill(tp, v->rank, v->shape, 0);
    for (size_t k = 0; p && k < p->size; k++) p->data[k] = (ad_real)sin(0.7 * (double)k + phase);
    return p;
}

/* ⟨p, y⟩ + ½‖y‖²: a scalar whose gradient in y is y + p (never zero). */
static ad_value *project(ad_tape *tp, ad_value *y, double phase)
{
    return ad_add(tp, ad_dot(tp, y, pattern(tp, y, phase)), ad_scale(tp, ad_sqnorm(tp, y), 0.5));
}

/* The recorded gradient of project(y) with respect to the inputs that want
 * one, all in one vector (scaled down: gc_check's finite differences of
 * ½‖·‖² lose digits on large entries): the rule's ops, as nodes of the open
 * step. */
static ad_value *recorded_backward(ad_tape *tp, ad_value *y, int n, ad_value *const *u)
{
    ad_value *xs[MAX_IN], *g[MAX_IN], *s = NULL;
    int m = 0;
    for (int i = 0; i < n; i++)
        if (u[i]->requires_grad) xs[m++] = u[i];
    ad_value *L = project(tp, y, 0.3);
    if (!L || ad_grad(tp, L, m, xs, g, true) != AD_OK) return NULL;
    for (int i = 0; i < m; i++) {
        int size = (int)g[i]->size;
        ad_value *t = ad_reshape(tp, g[i], 1, &size);
        s = s ? ad_concat(tp, s, t, 0) : t;
    }
    return ad_scale(tp, s, 0.25);
}

typedef struct probe {
    const op_case *c;
    bool backward; /* close the op's recorded backward too */
} probe;

/* gc_check's function: the inputs as values of a lean step (ad_scale by 1:
 * exact, and a node that reads nothing), the op (and its recorded
 * backward), then the result copied out (so that only the op's own rule
 * can ask for its result), kept, and the step closed.  gc_check then
 * differentiates across the closed step.  It evaluates without recording
 * too; the op's nodes are needed either way. */
static ad_value *lean_build(ad_tape *tp, ad_value *const *x, void *ctx)
{
    const probe *pr = ctx;
    int depth = 0;
    while (!ad_tape_recording(tp)) {
        ck_assert_int_eq(ad_no_record_end(tp), AD_OK);
        depth++;
    }
    ck_assert_int_eq(ad_tape_set_lean(tp, true), AD_OK);
    ad_value *u[MAX_IN];
    for (int i = 0; i < pr->c->n; i++) u[i] = ad_scale(tp, x[i], 1);
    ad_value *y = pr->c->op(tp, u, NULL);
    if (y && pr->backward) y = recorded_backward(tp, y, pr->c->n, u);
    ad_value *out = ad_scale(tp, y, 1);
    if (out && (ad_value_keep(out) != AD_OK || ad_tape_step(tp) != AD_OK)) out = NULL;
    while (depth-- > 0) ck_assert_int_eq(ad_no_record_begin(tp), AD_OK);
    return out;
}

/* The case's inputs: caller-owned, those without a gradient holding their
 * fixed entries. */
static void make_inputs(const op_case *c, ad_value **x)
{
    ad_rng rng;
    ad_rng_seed(&rng, 1234);
    for (int i = 0; i < c->n; i++) {
        if (c->fixed & (1u << i)) {
            x[i] = ad_tensor_from(c->rank[i], c->shape[i], c->fixed_data[i]);
        } else {
            x[i] = gc_param(&rng, c->rank[i], c->shape[i], c->lo, c->hi, c->min_abs);
        }
        ck_assert_ptr_nonnull(x[i]);
    }
}

/* Every input that may have a gradient wanting one (config −1), or input
 * `only` alone. */
static void want_grads(const op_case *c, ad_value **x, int only)
{
    for (int i = 0; i < c->n; i++)
        if (!(c->fixed & (1u << i)))
            ck_assert_int_eq(ad_set_requires_grad(x[i], only < 0 || only == i), AD_OK);
}

/* Without finite differences (both builds): the probe's step closed, a
 * recorded gradient across it, that sweep's own step closed too (the
 * rules' ops of the first-order sweep, now in a closed lean step), and a
 * second-order sweep across both. */
static void sweeps_across(const char *name, const probe *pr, ad_value *const *x)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *y = lean_build(tp, x, (void *)pr), *g[MAX_IN], *hv[MAX_IN], *v[MAX_IN];
    ck_assert_msg(y != NULL, "%s: %s", name, ad_error());
    ad_value *L = project(tp, y, 0.9);
    ck_assert_msg(ad_grad(tp, L, pr->c->n, x, g, true) == AD_OK, "%s: %s", name, ad_error());
    for (int i = 0; i < pr->c->n; i++) {
        ck_assert_int_eq(ad_value_keep(g[i]), AD_OK);
        v[i] = pattern(tp, g[i], 2.0 + i);
        ck_assert_int_eq(ad_value_keep(v[i]), AD_OK);
    }
    ck_assert_int_eq(ad_tape_step(tp), AD_OK);
    ck_assert_msg(ad_vjp_many(tp, pr->c->n, g, v, pr->c->n, x, hv, false) == AD_OK, "%s: %s", name,
                  ad_error());
    ad_tape_free(tp);
}

START_TEST(op_declarations)
{
    const op_case *c = &cases[_i];
    ad_value *x[MAX_IN];
    make_inputs(c, x);
    int n_free = 0;
    for (int i = 0; i < c->n; i++) n_free += !(c->fixed & (1u << i));
    for (int only = -1; only < c->n; only++) {
        if (only >= 0 && (n_free < 2 || (c->fixed & (1u << only)))) continue;
        want_grads(c, x, only);
        for (int backward = 0; backward < 2; backward++) {
            probe pr = { c, backward };
            char name[160];
            snprintf(name, sizeof name, "%s (%s%s, lean)", c->name, backward ? "its backward, " : "",
                     only < 0 ? "every input" : only == 0 ? "input 0 alone"
                     : only == 1 ? "input 1 alone" : "input 2 alone");
            sweeps_across(name, &pr, x);
#if HT_REAL_IS_DOUBLE /* the float build's finite differences are too coarse for third derivatives */
            ck_assert_msg(gc_check(name, lean_build, &pr, c->n, x, NULL) == 0,
                          "%s: the gradient checks failed across a lean step close (see stderr)",
                          name);
#endif
        }
    }
    for (int i = 0; i < c->n; i++) ad_value_free(x[i]);
}
END_TEST

/* ---- misuse and keep -------------------------------------------------------- */

START_TEST(misuse)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *x = ad_param_from(1, (int[]){ 3 }, (ad_real[]){ 1, 2, 3 });
    ck_assert_int_eq(ad_tape_set_lean(tp, true), AD_OK);
    ad_value *w = ad_scale(tp, x, 2); /* read by no rule */
    ck_assert_int_eq(ad_value_set_name(w, "w"), AD_OK);
    ad_value *y = ad_sum(tp, ad_exp(tp, w)); /* exp reads its result, sum nothing */
    ck_assert_int_eq(ad_tape_step(tp), AD_OK);
    ck_assert_ptr_null(w->data);
    ck_assert(w->dropped);
    ck_assert(ad_value_check("check", w) == AD_EARG);
    /* A forward op reading it: the message says what happened and what to do. */
    tu_expect_error(ad_add(tp, w, w),
                    "add: input 0 ('w'), made at step 0, had its data dropped when step 0 closed "
                    "(lean tape: mark it with ad_value_keep before its step closes, or turn lean "
                    "mode off with ad_tape_set_lean)");
    ck_assert_int_eq(ad_error_code(), AD_EARG);
    tu_expect_error(ad_value_copy(w), "value_copy: the value ('w'), made at step 0, had its data dropped");
    ck_assert_int_eq(ad_value_keep(w), AD_EARG); /* too late */
    ck_assert_ptr_nonnull(strstr(ad_error(), "had its data dropped"));
    /* A sweep walks dropped values: y (dropped) as its output, w as a target. */
    ad_value *g[2];
    ck_assert_int_eq(ad_grad(tp, y, 2, (ad_value *[]){ x, w }, g, false), AD_OK);
    for (int i = 0; i < 3; i++) {
        tu_expect_close(g[0]->data[i], 2 * exp(2.0 * (i + 1)), 4);
        tu_expect_close(g[1]->data[i], exp(2.0 * (i + 1)), 4);
    }
    /* ... but a seed is added: its data are read. */
    ad_value *seeded[1];
    ck_assert_int_eq(ad_vjp(tp, w, w, 1, &x, seeded, false), AD_EARG);
    ck_assert_ptr_nonnull(strstr(ad_error(), "grad: a seed ('w'), made at step 0, had its data dropped"));
    /* A drawing shows the node, and says the entries are gone. */
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    ck_assert_int_eq(ad_dot_write_opts(out, 1, &y, &(ad_dot_opts){ .values = 3 }), AD_OK);
    fclose(out);
    ck_assert_ptr_nonnull(strstr(buf, "(dropped)"));
    free(buf);
    ad_tape_free(tp);
    ad_value_free(x);
}
END_TEST

START_TEST(keep_api)
{
    ck_assert_int_eq(ad_tape_set_lean(NULL, true), AD_EARG);
    ck_assert(!ad_tape_lean(NULL));
    ck_assert_int_eq(ad_value_keep(NULL), AD_EARG);
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ck_assert(!ad_tape_lean(tp));
    ad_value *x = ad_param_from(1, (int[]){ 2 }, (ad_real[]){ 0.5, -1 });
    ck_assert_int_eq(ad_value_keep(x), AD_OK); /* caller-owned: nothing to do */
    /* Lean off (the default): nothing is dropped. */
    ad_value *a = ad_scale(tp, x, 3);
    ck_assert_int_eq(ad_tape_step(tp), AD_OK);
    ck_assert_ptr_nonnull(a->data);
    ck_assert_int_eq(ad_tape_set_lean(tp, true), AD_OK);
    ck_assert(ad_tape_lean(tp));
    /* On: kept values, leaves and what a rule reads stay; the rest goes. */
    ad_value *kept = ad_scale(tp, x, 3), *gone = ad_scale(tp, x, 4), *leaf = ad_leaf(tp, gone);
    ad_value *c = ad_const_fill(tp, 1, (int[]){ 2 }, 7), *e = ad_exp(tp, ad_add(tp, gone, c));
    ad_value *prod = ad_mul(tp, c, leaf); /* reads c for leaf's gradient: c stays */
    ck_assert_int_eq(ad_value_keep(kept), AD_OK);
    size_t before = ad_tape_bytes(tp);
    ck_assert_int_eq(ad_tape_step(tp), AD_OK);
    ck_assert_ptr_nonnull(kept->data);
    ck_assert_ptr_nonnull(leaf->data);
    ck_assert_ptr_nonnull(e->data);
    ck_assert_ptr_nonnull(c->data);
    ck_assert_ptr_null(gone->data);
    ck_assert_ptr_null(prod->data);
    /* gone, the add into e and prod: three values of 2 entries each. */
    ck_assert_uint_eq(before - ad_tape_bytes(tp), 3 * 2 * sizeof(ad_real));
    tu_expect_values(ad_add(tp, kept, leaf), (double[]){ 3.5, -7 }, 2, 0);
    /* Off again: the next close keeps everything, and what went stays gone. */
    ck_assert_int_eq(ad_tape_set_lean(tp, false), AD_OK);
    ad_value *b = ad_scale(tp, kept, 2);
    ck_assert_int_eq(ad_tape_step(tp), AD_OK);
    ck_assert_ptr_nonnull(b->data);
    ck_assert_ptr_null(gone->data);
    /* A released value cannot be kept. */
    ck_assert_int_eq(ad_tape_set_horizon(tp, 1), AD_OK);
    ck_assert_int_eq(ad_tape_step(tp), AD_OK);
    ck_assert_int_eq(ad_value_keep(b), AD_EARG);
    ck_assert_ptr_nonnull(strstr(ad_error(), "was released"));
    ad_tape_free(tp);
    ad_value_free(x);
}
END_TEST

/* The toy's step by hand, lean, on a tape of horizon K: dropped values are
 * released (no double give), carried, rewound around; bytes return to 0 at
 * each reset (release_all asserts it) and the hypergradient is bit for bit
 * the one of a tape that keeps everything. */
static void toy_by_hand(bool lean, int K, ad_real out[2], size_t *peak)
{
    ad_tape *tp = ad_tape_new(K);
    ad_value *lam = ad_param_from(1, (int[]){ 2 }, (ad_real[]){ 1, -0.5 });
    ad_value *G = ad_tensor_from(1, (int[]){ 2 }, (ad_real[]){ 1, 0.5 });
    ck_assert_int_eq(ad_tape_set_lean(tp, lean), AD_OK);
    for (int round = 0; round < 2; round++) { /* the second round after a reset */
        ad_value *w = ad_leaf(tp, ad_const_fill(tp, 1, (int[]){ 2 }, 2));
        for (int t = 1; t <= 12; t++) {
            ck_assert_int_eq(ad_tape_step(tp), AD_OK);
            ad_value *d = ad_sub(tp, w, lam), *gw;
            ad_value *g = ad_scale(tp, ad_dot(tp, d, ad_mul(tp, G, d)), 0.5);
            ck_assert_int_eq(ad_grad(tp, g, 1, &w, &gw, true), AD_OK);
            uint64_t mark = ad_tape_mark(tp); /* scratch in the open step */
            ck_assert_ptr_nonnull(ad_sqnorm(tp, ad_detach(tp, gw)));
            ck_assert_int_eq(ad_tape_rewind(tp, mark), AD_OK);
            w = ad_sub(tp, w, ad_scale(tp, gw, 0.1));
            ck_assert_int_eq(ad_value_keep(w), AD_OK);
        }
        ck_assert_int_eq(ad_tape_step(tp), AD_OK);
        ad_value *f = ad_add(tp, ad_sqnorm(tp, w), ad_scale(tp, ad_sqnorm(tp, ad_sin(tp, w)), 10)), *h;
        ck_assert_int_eq(ad_grad(tp, f, 1, &lam, &h, false), AD_OK);
        out[0] = h->data[0], out[1] = h->data[1];
        *peak = ad_tape_peak_bytes(tp);
        ck_assert_int_eq(ad_tape_reset(tp), AD_OK);
        ck_assert_uint_eq(ad_tape_bytes(tp), 0);
    }
    ad_tape_free(tp);
    ad_value_free(lam);
    ad_value_free(G);
}

START_TEST(lifetimes)
{
    const int Ks[] = { 1, 3, AD_HORIZON_ALL };
    for (int k = 0; k < 3; k++) {
        ad_real fat[2], lean[2];
        size_t peak_fat, peak_lean;
        toy_by_hand(false, Ks[k], fat, &peak_fat);
        toy_by_hand(true, Ks[k], lean, &peak_lean);
        ck_assert_mem_eq(fat, lean, sizeof fat);
        ck_assert_uint_lt(peak_lean, peak_fat);
    }
}
END_TEST

/* ---- the estimators --------------------------------------------------------- */

/* The estimators on p, lean (as they run) and with keep_values: the same
 * floats; lean K-RMD's peak tape is smaller.  n = the problem's n_hyper. */
static void same_floats(const char *what, int n, ad_value *const *a, ad_value *const *b)
{
    for (int i = 0; i < n; i++) {
        ck_assert_uint_eq(a[i]->size, b[i]->size);
        ck_assert_msg(!memcmp(a[i]->data, b[i]->data, a[i]->size * sizeof(ad_real)),
                      "%s: hyperparameter %d differs lean and not (%.17g vs %.17g first)", what, i,
                      (double)a[i]->data[0], (double)b[i]->data[0]);
    }
}

static void free_n(int n, ad_value **v)
{
    for (int i = 0; i < n; i++) ad_value_free(v[i]);
}

static void estimators_lean_and_not(const char *name, hg_problem *p)
{
    enum { MAXH = 64 };
    int n = p->n_hyper;
    ck_assert_int_le(n, MAXH);
    const int Ks[] = { 1, 3, p->T };
    for (int est = 0; est < 6; est++) {
        ad_value *h[2][MAXH];
        hg_report r[2];
        for (int keep = 0; keep < 2; keep++) {
            p->keep_values = keep;
            int rc;
            if (est < 3) {
                rc = hg_krmd(p, Ks[est], h[keep], &r[keep]);
            } else if (est == 3) {
                rc = hg_full_rmd(p, h[keep], &r[keep]);
            } else if (est == 4) {
                rc = hg_checkpoint(p, p->T, h[keep], &r[keep]);
            } else {
                hg_profile pr;
                rc = hg_truncation_profile(p, 3, NULL, &pr);
                if (rc == AD_OK) {
                    for (int i = 0; i < n; i++)
                        h[keep][i] = ad_value_copy(pr.h[(size_t)(pr.K - 1) * (size_t)n + (size_t)i]);
                    r[keep] = pr.report;
                    hg_profile_free(&pr);
                }
            }
            ck_assert_msg(rc == AD_OK, "%s, estimator %d: %s", name, est, ad_error());
        }
        char what[128];
        snprintf(what, sizeof what, "%s, estimator %d", name, est);
        same_floats(what, n, h[0], h[1]);
        if (est != 4) /* K-RMD's tape: the lean one holds less (checkpoint's peak is a segment's) */
            ck_assert_msg(r[0].peak_tape_bytes < r[1].peak_tape_bytes, "%s: peak %zu lean, %zu not",
                          what, r[0].peak_tape_bytes, r[1].peak_tape_bytes);
        else
            ck_assert_uint_le(r[0].peak_tape_bytes, r[1].peak_tape_bytes);
        free_n(n, h[0]);
        free_n(n, h[1]);
    }
    p->keep_values = false;
}

/* The logistic-regression problem of the fixture (as in test_inner_opt.c),
 * with each of its six optimizers. */
enum { LN = 12, LT = 8 };

typedef struct logreg {
    logreg_data d; /* first: the fixture's callbacks take this struct as ctx */
    ad_value *lam, *theta, *mu;
    ad_value *hyper[3];
    hg_update custom;
    hg_problem p;
} logreg;

static int lr_w0(ad_tape *tp, ad_value *const *lam, ad_value **w0, void *ctx)
{
    (void)lam, (void)ctx;
    w0[0] = ad_const(tp, 1, (int[]){ LOGREG_D }, (ad_real[]){ -1, 1, -1 });
    return AD_OK;
}

static void logreg_init(logreg *r, int variant)
{
    ad_rng rng;
    ad_rng_seed(&rng, 99);
    memset(r, 0, sizeof *r);
    r->d.X = ad_tensor_randn(&rng, 2, (int[]){ LN, LOGREG_D }, 1);
    r->d.Xv = ad_tensor_randn(&rng, 2, (int[]){ LN, LOGREG_D }, 1);
    r->d.y = ad_tensor_new(1, (int[]){ LN });
    r->d.yv = ad_tensor_new(1, (int[]){ LN });
    for (int i = 0; i < LN; i++) {
        r->d.y->data[i] = ad_rng_uniform(&rng) < 0.5 ? -1 : 1;
        r->d.yv->data[i] = ad_rng_uniform(&rng) < 0.5 ? -1 : 1;
    }
    r->lam = ad_param_from(1, (int[]){ LOGREG_D }, (ad_real[]){ -1, 0, 0.5 });
    r->hyper[0] = r->lam;
    r->p = (hg_problem){ .n_w = 1, .n_hyper = 1, .hyper = r->hyper, .T = LT, .ctx = r,
                         .init = lr_w0, .inner = logreg_inner, .outer = logreg_outer };
    switch (variant) {
    case 0:
        r->p.opt = hg_opt_adam(0.05);
        break;
    case 1:
        r->p.opt = hg_opt_adam(0);
        r->theta = ad_param_scalar((ad_real)log(0.05));
        r->p.opt.step_hyper = r->theta;
        r->p.opt.step_transform = HG_EXP;
        break;
    case 2:
        r->p.opt = hg_opt_rmsprop(0);
        r->theta = ad_param_scalar(0.02);
        r->p.opt.step_hyper = r->theta;
        break;
    case 3:
        r->theta = ad_param_scalar((ad_real)log(0.3));
        r->mu = ad_param_scalar(0.4);
        r->p.opt = (hg_inner_opt){ .kind = HG_MOMENTUM, .step_hyper = r->theta,
                                   .step_transform = HG_EXP, .momentum_hyper = r->mu,
                                   .momentum_transform = HG_SIGMOID };
        break;
    case 4:
        r->theta = ad_param_from(1, (int[]){ LOGREG_D }, (ad_real[]){ -1.5, -1, -2 });
        r->custom = (hg_update){ .name = "percoord", .n_state = 1, .step = logreg_percoord_step };
        r->p.opt = (hg_inner_opt){ .kind = HG_CUSTOM, .custom = &r->custom };
        break;
    default:
        r->theta = ad_param_from(1, (int[]){ LOGREG_D }, (ad_real[]){ -1, 0, -0.5 });
        r->custom = (hg_update){ .name = "adagrad", .n_state = 1, .init = logreg_adagrad_init,
                                 .step = logreg_adagrad_step };
        r->p.opt = (hg_inner_opt){ .kind = HG_CUSTOM, .custom = &r->custom };
        break;
    }
    r->hyper[1] = r->theta;
    r->hyper[2] = r->mu;
    r->p.n_hyper = 1 + (r->theta != NULL) + (r->mu != NULL);
}

static void logreg_free(logreg *r)
{
    ad_value *all[] = { r->d.X, r->d.y, r->d.Xv, r->d.yv, r->lam, r->theta, r->mu };
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) ad_value_free(all[i]);
}

/* The tiny one-shot network of test_oneshot.c: 2 channels, 16×16 images. */
enum { NS = 5, NQ = 6, SIDE = 16, OS_T = 3 };

static void oneshot_lean_and_not(bool split)
{
    ad_rng rng;
    ad_rng_seed(&rng, 7);
    mdl_cnn net = { .in_channels = 1, .height = SIDE, .width = SIDE, .channels = 2,
                    .n_blocks = 4, .n_classes = 5, .n_rep = 2 };
    os_hyper hy;
    os_task tk;
    static ad_real xs[NS * SIDE * SIDE], xq[NQ * SIDE * SIDE];
    int ys[NS], yq[NQ];
    for (int i = 0; i < NS * SIDE * SIDE; i++) xs[i] = (ad_real)ad_rng_uniform(&rng);
    for (int i = 0; i < NQ * SIDE * SIDE; i++) xq[i] = (ad_real)ad_rng_uniform(&rng);
    for (int i = 0; i < NS; i++) ys[i] = i;
    for (int i = 0; i < NQ; i++) yq[i] = i % 5;
    ck_assert_int_eq(os_hyper_init(&hy, net, &rng, 0.5, 0.3), AD_OK);
    ck_assert_int_eq(os_task_init(&tk, &hy, NS, NQ, OS_T, split), AD_OK);
    ck_assert_int_eq(os_task_load(&tk, xs, ys, xq, yq, true), AD_OK);
    estimators_lean_and_not(split ? "one-shot, split" : "one-shot, naive", &tk.problem);
    os_task_free(&tk);
    os_hyper_free(&hy);
}

/* A small hypercleaning problem on random data: n 40, d 6, C 3, T 5. */
static void hyperclean_data(ad_value **xt, ad_value **yt, ad_value **xv, ad_value **yv)
{
    ad_rng rng;
    ad_rng_seed(&rng, 11);
    *xt = ad_tensor_rand(&rng, 2, (int[]){ 40, 6 }, 0, 1);
    *xv = ad_tensor_rand(&rng, 2, (int[]){ 20, 6 }, 0, 1);
    *yt = ad_tensor_new(1, (int[]){ 40 });
    *yv = ad_tensor_new(1, (int[]){ 20 });
    for (int i = 0; i < 40; i++) (*yt)->data[i] = (ad_real)ad_rng_below(&rng, 3);
    for (int i = 0; i < 20; i++) (*yv)->data[i] = (ad_real)ad_rng_below(&rng, 3);
}

START_TEST(estimators_bit_identical)
{
    switch (_i) {
    case 0: case 1: { /* the toy, f and f̃ */
        toy t;
        ck_assert_int_eq(toy_init(&t, 1, -0.5, 20, 0.1, _i == 1), AD_OK);
        estimators_lean_and_not(_i ? "toy, f~" : "toy", &t.problem);
        toy_free(&t);
        break;
    }
    case 2: {
        ad_value *xt, *yt, *xv, *yv;
        hyperclean_data(&xt, &yt, &xv, &yv);
        hc_problem hc;
        ck_assert_int_eq(hc_problem_init(&hc, xt, yt, xv, yv, 3, 5, 0.5, HC_DEFAULT_REG), AD_OK);
        for (int i = 0; i < 40; i++) hc.lam->data[i] = (ad_real)(0.1 * (i % 7) - 0.3);
        estimators_lean_and_not("hypercleaning", &hc.problem);
        hc_problem_free(&hc);
        ad_value *all[] = { xt, yt, xv, yv };
        for (int i = 0; i < 4; i++) ad_value_free(all[i]);
        break;
    }
    case 3: case 4:
        oneshot_lean_and_not(_i == 4);
        break;
    default: {
        logreg r;
        logreg_init(&r, _i - 5);
        char name[64];
        snprintf(name, sizeof name, "logistic fixture, optimizer %d", _i - 5);
        estimators_lean_and_not(name, &r.p);
        logreg_free(&r);
        break;
    }
    }
}
END_TEST

/* A problem whose inner loss reads a value its init made (besides w0). */
typedef struct cached {
    ad_value *lam, *hyper[1];
    ad_value *twice; /* 2λ, made by init on the estimator's tape */
    hg_problem p;
} cached;

static int cached_w0(ad_tape *tp, ad_value *const *lam, ad_value **w0, void *ctx)
{
    cached *c = ctx;
    c->twice = ad_scale(tp, lam[0], 2);
    w0[0] = ad_const_fill(tp, 1, (int[]){ 2 }, 1);
    return c->twice ? AD_OK : ad_error_code();
}

static ad_value *cached_inner(ad_tape *tp, ad_value *const *w, ad_value *const *lam, int t, void *ctx)
{
    (void)lam, (void)t;
    cached *c = ctx;
    return ad_scale(tp, ad_sqnorm(tp, ad_sub(tp, w[0], c->twice)), 0.5);
}

static ad_value *cached_outer(ad_tape *tp, ad_value *const *w, ad_value *const *lam, void *ctx)
{
    (void)lam, (void)ctx;
    return ad_sqnorm(tp, w[0]);
}

START_TEST(keep_values_hint)
{
    cached c = { 0 };
    c.lam = ad_param_from(1, (int[]){ 2 }, (ad_real[]){ 0.5, -1 });
    c.hyper[0] = c.lam;
    c.p = (hg_problem){ .n_w = 1, .n_hyper = 1, .hyper = c.hyper, .T = 4, .ctx = &c,
                        .opt = { .kind = HG_GD, .step = 0.3 }, .init = cached_w0,
                        .inner = cached_inner, .outer = cached_outer };
    ad_value *h;
    ck_assert_int_eq(hg_full_rmd(&c.p, &h, NULL), AD_EARG);
    ck_assert_msg(strstr(ad_error(), "had its data dropped") &&
                  strstr(ad_error(), "a problem whose callbacks read a value an earlier step made "
                                     "sets keep_values"), "%s", ad_error());
    c.p.keep_values = true;
    ck_assert_int_eq(hg_full_rmd(&c.p, &h, NULL), AD_OK);
    /* w_t = 2λ + 0.7^t (1 − 2λ), f = ‖w_T‖²: dλf = 4 (1 − 0.7^T) w_T. */
    double a = pow(0.7, 4);
    for (int i = 0; i < 2; i++) {
        double l = c.lam->data[i], wT = 2 * l + a * (1 - 2 * l);
        tu_expect_close(h->data[i], 4 * (1 - a) * wT, 16);
    }
    ad_value_free(h);
    ad_value_free(c.lam);
}
END_TEST

/* A caller's mistake: callbacks that return a value an earlier step made.
 * stale_inner returns, from its third call on, the loss of its first call;
 * stale_outer returns the last inner loss.  On the estimators' lean tapes
 * such a value had its data dropped, on others it was released or its tape
 * freed: each read is refused with AD_EARG and the reason (this used to read
 * ->data[0] of NULL: a SEGV). */
typedef struct stale {
    ad_value *lam, *hyper[1];
    ad_value *first, *last; /* losses the inner callback made */
    int calls;
    bool inner, outer, vector_at_0;
    bool at_w_hat; /* inner: only the call at ŵ (t = T on a new tape) returns first */
    hg_problem p;
} stale;

static int stale_w0(ad_tape *tp, ad_value *const *lam, ad_value **w0, void *ctx)
{
    (void)ctx;
    w0[0] = ad_scale(tp, lam[0], 0.5);
    return AD_OK;
}

static ad_value *stale_inner(ad_tape *tp, ad_value *const *w, ad_value *const *lam, int t, void *ctx)
{
    stale *s = ctx;
    ad_value *d = ad_sub(tp, w[0], lam[0]);
    if (s->vector_at_0 && t == 0) return d;
    ad_value *g = ad_scale(tp, ad_sqnorm(tp, d), 0.5);
    if (s->at_w_hat) return t == s->p.T && ad_tape_current_step(tp) == 0 ? s->first : g;
    if (++s->calls == 1) s->first = g;
    s->last = g;
    return s->inner && s->calls >= 3 ? s->first : g;
}

static ad_value *stale_outer(ad_tape *tp, ad_value *const *w, ad_value *const *lam, void *ctx)
{
    (void)lam;
    stale *s = ctx;
    return s->outer ? s->last : ad_sqnorm(tp, w[0]);
}

/* rc is AD_EARG and the message names who read what, and why. */
static void expect_refused(int rc, const char *est, const char *who, const char *why)
{
    ck_assert_msg(rc == AD_EARG, "%s: rc %d (%s)", est, rc, ad_error());
    ck_assert_msg(strstr(ad_error(), who) && strstr(ad_error(), "the loss it returned: the value") &&
                      strstr(ad_error(), why), "%s: %s", est, ad_error());
}

START_TEST(stale_loss_refused)
{
    stale c = { 0 };
    c.lam = ad_param_from(1, (int[]){ 3 }, (ad_real[]){ 0.3, -0.2, 0.5 });
    c.hyper[0] = c.lam;
    c.p = (hg_problem){ .n_w = 1, .n_hyper = 1, .hyper = c.hyper, .T = 4, .ctx = &c,
                        .opt = { .kind = HG_GD, .step = 0.1 }, .init = stale_w0,
                        .inner = stale_inner, .outer = stale_outer };
    const hg_problem *p = &c.p;
    ad_value *h;
    hg_report rep;
    hg_profile pr;
    const char *lean_why = "had its data dropped";
    for (int which = 0; which < 2; which++) {
        c.inner = which == 0, c.outer = which == 1;
        const char *who = c.inner ? "inner (step " : "outer: ";
        /* The lean estimators: dropped, and the hint names keep_values. */
        c.calls = 0;
        expect_refused(hg_full_rmd(p, &h, &rep), "full_rmd", who, lean_why);
        ck_assert_ptr_nonnull(strstr(ad_error(), "sets keep_values"));
        c.calls = 0;
        expect_refused(hg_krmd(p, 2, &h, &rep), "krmd", who, lean_why);
        c.calls = 0;
        expect_refused(hg_checkpoint(p, 2, &h, &rep), "checkpoint", who, "has been freed");
        c.calls = 0;
        expect_refused(hg_truncation_profile(p, 4, NULL, &pr), "profile", who, lean_why);
        /* Checkpointing's replays start on a new tape (the value's tape freed);
         * the others on tapes of horizon 1 (released). */
        c.calls = 0;
        expect_refused(hg_fmd(p, &h, &rep), "fmd", who, c.inner ? "was released" : "has been freed");
        c.calls = 0;
        expect_refused(hg_implicit_cg(p, 5, 1e-10, &h, &rep), "implicit_cg",
                       c.inner ? "inner (" : who, c.inner ? "was released" : "has been freed");
    }
    /* At ŵ, on a tape of its own (implicit differentiation, the curvature's
     * Hessian): the inner loss of a freed tape. */
    c.inner = c.outer = false, c.at_w_hat = true;
    expect_refused(hg_implicit_cg(p, 5, 1e-10, &h, &rep), "implicit_cg", "inner (at ŵ)",
                   "has been freed");
    hg_curvature cv;
    expect_refused(hg_curvature_estimate(p, 5, &cv), "curvature", "inner (at ŵ)", "has been freed");
    /* The loss curve: released, and a scalar is checked as a step does. */
    c.inner = true, c.at_w_hat = false, c.calls = 0;
    ad_value *w_hat[1];
    double curve[5];
    expect_refused(hg_inner_solve(p, w_hat, curve), "inner_solve", "inner (", "was released");
    c.inner = false, c.vector_at_0 = true;
    ck_assert_int_eq(hg_inner_solve(p, w_hat, curve), AD_ESHAPE);
    ck_assert_str_eq(ad_error(), "inner_solve: inner (at w_0): returned a [3] tensor; the inner "
                                 "loss must be a scalar");
    ad_value_free(c.lam);
}
END_TEST

/* ---- bytes ------------------------------------------------------------------ */

/* One recorded hypercleaning step (hyperclean_problem.c's g, ∇W g recorded,
 * W − γ∇W g kept) at n 200, d 31, C 5: the bytes its closed step holds. */
static size_t hyperclean_step_bytes(bool lean, size_t *expected)
{
    ad_rng rng;
    ad_rng_seed(&rng, 3);
    int n = 200, d = 31, C = 5;
    ad_value *X = ad_tensor_rand(&rng, 2, (int[]){ n, d }, 0, 1), *y = ad_tensor_new(1, &n);
    ad_value *lam = ad_param_from(1, &n, X->data); /* any numbers */
    for (int i = 0; i < n; i++) y->data[i] = (ad_real)(i % C);
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ck_assert_int_eq(ad_tape_set_lean(tp, lean), AD_OK);
    ad_value *W = ad_leaf(tp, ad_const_fill(tp, 2, (int[]){ d, C }, 0.01f)), *gw;
    ck_assert_int_eq(ad_tape_step(tp), AD_OK);
    size_t b0 = ad_tape_bytes(tp);
    ad_value *g = ad_add(tp, ad_cross_entropy(tp, ad_matmul(tp, X, W, false, false), y,
                                              ad_sigmoid(tp, lam), AD_REDUCE_MEAN),
                         ad_scale(tp, ad_sqnorm(tp, W), HC_DEFAULT_REG));
    ck_assert_int_eq(ad_grad(tp, g, 1, &W, &gw, true), AD_OK);
    ad_value *W2 = ad_sub(tp, W, ad_scale(tp, gw, 0.25));
    ck_assert_int_eq(ad_value_keep(W2), AD_OK);
    /* What the declarations keep, counted value by value before the close. */
    ad_value *v[1024];
    size_t nv = 0;
    for (ad_value *u = W2; u; u = u->prev) v[nv++] = u; /* the step's list, newest first */
    ck_assert_uint_lt(nv, 1024);
    size_t keep = 0;
    for (size_t i = 0; i < nv; i++) {
        bool read = v[i] == W2 || ad_rule_reads(v[i], AD_READ_OUTPUT);
        for (size_t j = 0; j < nv && !read; j++)
            for (int k = 0; k < v[j]->n_inputs; k++)
                read = read || (v[j]->inputs[k] == v[i] && ad_rule_reads(v[j], k));
        keep += (256 + (read ? v[i]->size * sizeof(ad_real) : 0));
    }
    *expected = keep;
    ck_assert_int_eq(ad_tape_step(tp), AD_OK);
    size_t bytes = ad_tape_bytes(tp) - b0;
    /* Back-propagating through the closed step still works. */
    ad_value *f = ad_sqnorm(tp, W2), *h;
    ck_assert_int_eq(ad_grad(tp, f, 1, &lam, &h, false), AD_OK);
    ck_assert(isfinite(h->data[0]));
    ad_tape_free(tp);
    ad_value_free(X);
    ad_value_free(y);
    ad_value_free(lam);
    return bytes;
}

START_TEST(hyperclean_step_bytes_smaller)
{
    size_t expect_fat, expect_lean;
    size_t fat = hyperclean_step_bytes(false, &expect_fat), lean = hyperclean_step_bytes(true, &expect_lean);
    ck_assert_uint_lt(lean, fat);
    ck_assert_uint_eq(lean, expect_lean);
    printf("hypercleaning step (n 200, d 31, C 5): %zu bytes kept, %zu lean\n", fat, lean);
}
END_TEST

Suite *lean_suite(void);
Suite *lean_suite(void)
{
    Suite *s = suite_create("lean");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, op_declarations, 0, N_CASES);
    tcase_add_test(tc, misuse);
    tcase_add_test(tc, keep_api);
    tcase_add_test(tc, lifetimes);
    tcase_add_loop_test(tc, estimators_bit_identical, 0, 11);
    tcase_add_test(tc, keep_values_hint);
    tcase_add_test(tc, stale_loss_refused);
    tcase_add_test(tc, hyperclean_step_bytes_smaller);
    suite_add_tcase(s, tc);
    return s;
}
