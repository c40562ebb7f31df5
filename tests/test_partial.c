/* test_partial.c — the reverse sweep's cut points (ad_vjp_partial) and its
 * checks on backward rules.
 *
 * Partial derivatives: every target counts as an independent input, so the
 * sweep stops at each one.  Checked by hand on y = x·λ, x = λ² (first and
 * second order), on a many-step tape (the walk stays inside one step: a
 * rule behind the cut that fails when run is never run; a value made from
 * λ before the cut is still followed), and by rebuilding a whole gradient
 * from per-step partials.
 *
 * Backward rules: a rule in which an op fails, or which returns a status,
 * fails the sweep with the op's status and message, named after the node's
 * op; a rule that leaves gin[i] NULL without a failure gives no
 * contribution; an earlier message survives a sweep that succeeds. */
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "ad/node.h"
#include "ops/ops.h"
#include "testutil.h"

/* ---- y = x·λ, x = λ² ----------------------------------------------------- */

START_TEST(partial_by_hand)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *lam = ad_param_scalar(2);
    ad_value *x = ad_mul(tp, lam, lam), *y = ad_mul(tp, x, lam);
    ad_value *xs[2] = { x, lam }, *g[2];
    /* The total derivative: λ's entry takes the path through x too. */
    ck_assert_int_eq(ad_vjp_many(tp, 1, &y, NULL, 2, xs, g, false), AD_OK);
    ck_assert_double_eq(g[0]->data[0], 2);  /* ∂y/∂x = λ */
    ck_assert_double_eq(g[1]->data[0], 12); /* dy/dλ = 3λ² */
    /* The partials: x and λ independent. */
    ck_assert_int_eq(ad_vjp_partial(tp, 1, &y, NULL, 2, xs, g, false), AD_OK);
    ck_assert_double_eq(g[0]->data[0], 2); /* ∂y/∂x = λ */
    ck_assert_double_eq(g[1]->data[0], 4); /* ∂y/∂λ = x */
    /* Only λ asked for: with no cut at x the path through it is followed. */
    ck_assert_int_eq(ad_vjp_partial(tp, 1, &y, NULL, 1, &lam, g, false), AD_OK);
    ck_assert_double_eq(g[0]->data[0], 12);
    /* With create_graph the partials are nodes: ∂y/∂λ = x = λ², whose
     * derivative is 2λ = 4; ∂y/∂x = λ, whose derivative is 1. */
    ck_assert_int_eq(ad_vjp_partial(tp, 1, &y, NULL, 2, xs, g, true), AD_OK);
    ck_assert(g[0]->requires_grad && g[1]->requires_grad);
    ad_value *d2;
    ck_assert_int_eq(ad_grad(tp, g[1], 1, &lam, &d2, false), AD_OK);
    ck_assert_double_eq(d2->data[0], 4);
    ck_assert_int_eq(ad_grad(tp, g[0], 1, &lam, &d2, false), AD_OK);
    ck_assert_double_eq(d2->data[0], 1);
    /* A partial of a recorded partial: ∂/∂x of (∂y/∂λ = x·1) is 1. */
    ad_value *dy_dlam = g[1];
    ck_assert_int_eq(ad_vjp_partial(tp, 1, &dy_dlam, NULL, 2, xs, g, false), AD_OK);
    ck_assert_double_eq(g[0]->data[0], 1);
    ck_assert_double_eq(g[1]->data[0], 0);
    /* An output that is itself a target gets its seed, and nothing flows on. */
    ad_value *seed = ad_const_scalar(tp, 5);
    ck_assert_int_eq(ad_vjp_partial(tp, 1, &x, &seed, 2, xs, g, false), AD_OK);
    ck_assert_double_eq(g[0]->data[0], 5);
    ck_assert_double_eq(g[1]->data[0], 0);
    ad_tape_free(tp);
    ad_value_free(lam);
}
END_TEST

/* ---- a many-step tape ------------------------------------------------------ */

/* An op that passes its input through and whose backward rule fails: run
 * only when a sweep walks behind it. */
static int tripwire_backward(ad_tape *tp, ad_value *out, ad_value *gout, ad_value **gin)
{
    (void)tp, (void)out, (void)gout, (void)gin;
    return ad_fail(AD_EUNSUPPORTED, "tripwire: the sweep walked behind a cut");
}
static const ad_op tripwire_op = { "tripwire", tripwire_backward, NULL };

static ad_value *tripwire(ad_tape *tp, ad_value *x)
{
    ad_value *out = ad_node_new(tp, &tripwire_op, x->rank, x->shape, 1, &x);
    if (out) memcpy(out->data, x->data, x->size * sizeof(ad_real));
    return out;
}

enum { STEPS = 6 };

/* x_0 = tripwire(λ); x_t = x_{t−1}·u + λ·t (t = 1..STEPS), u = e^λ made once
 * at step 0.  Each step: A_t = u, B_t = x_{t−1}·u + t (through u and λ). */
typedef struct chain {
    ad_tape *tp;
    ad_value *lam, *u, *x[STEPS + 1];
} chain;

static void chain_build(chain *c, double lam)
{
    c->tp = ad_tape_new(AD_HORIZON_ALL);
    c->lam = ad_param_scalar((ad_real)lam);
    c->u = ad_exp(c->tp, c->lam);
    c->x[0] = tripwire(c->tp, c->lam);
    for (int t = 1; t <= STEPS; t++) {
        ck_assert_int_eq(ad_tape_step(c->tp), AD_OK);
        c->x[t] = ad_add(c->tp, ad_mul(c->tp, c->x[t - 1], c->u), ad_scale(c->tp, c->lam, t));
        ck_assert_ptr_nonnull(c->x[t]);
    }
}

static void chain_free(chain *c)
{
    ad_tape_free(c->tp);
    ad_value_free(c->lam);
}

START_TEST(cut_keeps_the_walk_in_one_step)
{
    chain c;
    chain_build(&c, 0.3);
    double u = exp(0.3), x4 = c.x[4]->data[0];
    ad_value *xs[2] = { c.x[4], c.lam }, *g[2];
    ad_value *seed = ad_const_scalar(c.tp, 2);
    /* From x_5 back to (x_4, λ): the tripwire in step 0 is never run. */
    ck_assert_int_eq(ad_vjp_partial(c.tp, 1, &c.x[5], &seed, 2, xs, g, false), AD_OK);
    tu_expect_close(g[0]->data[0], 2 * u, 4);             /* A_5ᵀ v */
    tu_expect_close(g[1]->data[0], 2 * (x4 * u + 5), 8); /* B_5ᵀ v: through u = e^λ too */
    /* Without the cut the sweep goes on through x_4 to step 0 and trips. */
    ck_assert_int_eq(ad_vjp_many(c.tp, 1, &c.x[5], &seed, 2, xs, g, false), AD_EUNSUPPORTED);
    ck_assert_str_eq(ad_error(), "grad: the backward rule of 'tripwire': "
                                 "tripwire: the sweep walked behind a cut");
    chain_free(&c);
}
END_TEST

/* Per-step partials, chained from the last step back, rebuild the total
 * derivative dx_T/dλ (without step 0's tripwire: x_0's adjoint is where the
 * chain stops, and ∂x_0/∂λ = 1 is added by hand). */
START_TEST(per_step_partials_rebuild_the_total)
{
    chain c;
    chain_build(&c, -0.4);
    ad_value *v = ad_tensor_scalar(1), *g[2];
    double lam_share = 0;
    for (int t = STEPS; t >= 1; t--) {
        ad_value *xs[2] = { c.x[t - 1], c.lam };
        uint64_t mark = ad_tape_mark(c.tp);
        ck_assert_int_eq(ad_vjp_partial(c.tp, 1, &c.x[t], &v, 2, xs, g, false), AD_OK);
        lam_share += g[1]->data[0];
        v->data[0] = g[0]->data[0];
        ad_tape_rewind(c.tp, mark); /* the partials are scratch: copied out */
    }
    lam_share += v->data[0]; /* x_0 = λ */
    /* The closed form: x_t = x_{t−1} u + λ t with x_0 = λ, u = e^λ. */
    double lam = -0.4, u = exp(lam), x = lam, dx = 1;
    for (int t = 1; t <= STEPS; t++) {
        dx = dx * u + x * u + t;
        x = x * u + lam * t;
    }
    tu_expect_close(c.x[STEPS]->data[0], x, 16);
    tu_expect_close(lam_share, dx, 64);
    ad_value_free(v);
    chain_free(&c);
}
END_TEST

/* Two outputs, one read by the other (as the heavy ball's w_t reads v_t),
 * each with a seed; the targets are the step's inputs. */
START_TEST(several_outputs_and_targets)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *lam = ad_param_scalar(0.7);
    ad_value *w0 = ad_leaf(tp, ad_const_scalar(tp, 1.5)), *v0 = ad_leaf(tp, ad_const_scalar(tp, -2));
    ck_assert_int_eq(ad_tape_step(tp), AD_OK);
    /* v1 = 0.5 v0 + λ w0;  w1 = w0 − 0.1 v1 */
    ad_value *v1 = ad_add(tp, ad_scale(tp, v0, 0.5), ad_mul(tp, lam, w0));
    ad_value *w1 = ad_sub(tp, w0, ad_scale(tp, v1, 0.1));
    ad_value *ys[2] = { w1, v1 }, *seeds[2] = { ad_const_scalar(tp, 3), ad_const_scalar(tp, 5) };
    ad_value *xs[3] = { w0, v0, lam }, *g[3];
    ck_assert_int_eq(ad_vjp_partial(tp, 2, ys, seeds, 3, xs, g, false), AD_OK);
    /* v1's adjoint: 5 + (−0.1)·3 = 4.7 */
    tu_expect_close(g[0]->data[0], 3 + 4.7 * 0.7, 4); /* w0: 3·1 + 4.7·λ */
    tu_expect_close(g[1]->data[0], 4.7 * 0.5, 4);     /* v0 */
    tu_expect_close(g[2]->data[0], 4.7 * 1.5, 4);     /* λ: 4.7·w0 */
    ad_tape_free(tp);
    ad_value_free(lam);
}
END_TEST

START_TEST(partial_bad_arguments)
{
    ad_tape *tp = ad_tape_new(1);
    ad_value *lam = ad_param_scalar(1), *g;
    ad_value *y = ad_mul(tp, lam, lam);
    ck_assert_int_eq(ad_vjp_partial(NULL, 1, &y, NULL, 1, &lam, &g, false), AD_EARG);
    ck_assert_int_eq(ad_vjp_partial(tp, 0, &y, NULL, 1, &lam, &g, false), AD_EARG);
    ad_value *null_out = NULL;
    ck_assert_int_eq(ad_vjp_partial(tp, 1, &null_out, NULL, 1, &lam, &g, false), AD_EARG);
    ck_assert_ptr_nonnull(strstr(ad_error(), "an output is NULL"));
    ad_value *vec = ad_scale(tp, ad_broadcast_to(tp, lam, 1, (int[]){ 3 }), 2);
    ck_assert_int_eq(ad_vjp_partial(tp, 1, &vec, NULL, 1, &lam, &g, false), AD_ESHAPE);
    ck_assert_ptr_nonnull(strstr(ad_error(), "is not a scalar"));
    ad_tape_free(tp);
    ad_value_free(lam);
}
END_TEST

/* ---- threads: partial sweeps on a shared λ -------------------------------- */

typedef struct job {
    ad_value *lam;
    double share;
    int rc;
} job;

static void *per_step_on_own_tape(void *arg)
{
    job *j = arg;
    j->share = 0;
    j->rc = AD_OK;
    for (int round = 0; round < 50 && j->rc == AD_OK; round++) {
        ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
        ad_value *x = ad_scale(tp, j->lam, 1), *g[2];
        for (int t = 0; t < 4; t++) x = ad_mul(tp, ad_sin(tp, x), j->lam);
        ad_value *xs[2] = { x->inputs[0], j->lam }; /* sin(x_3), λ */
        j->rc = ad_vjp_partial(tp, 1, &x, NULL, 2, xs, g, false);
        if (j->rc == AD_OK) j->share = g[1]->data[0]; /* = sin(x_3) */
        ad_tape_free(tp);
    }
    return NULL;
}

START_TEST(partial_on_threads)
{
    ad_value *lam = ad_param_scalar(0.9);
    job jobs[4];
    pthread_t th[4];
    for (int k = 0; k < 4; k++) {
        jobs[k] = (job){ .lam = lam };
        ck_assert_int_eq(pthread_create(&th[k], NULL, per_step_on_own_tape, &jobs[k]), 0);
    }
    for (int k = 0; k < 4; k++) ck_assert_int_eq(pthread_join(th[k], NULL), 0);
    double x = 0.9;
    for (int t = 0; t < 3; t++) x = sin(x) * 0.9;
    for (int k = 0; k < 4; k++) {
        ck_assert_int_eq(jobs[k].rc, AD_OK);
        tu_expect_close(jobs[k].share, sin(x), 8);
    }
    ad_value_free(lam);
}
END_TEST

/* ---- backward rules that fail -------------------------------------------- */

/* Each rule passes its gradient on; `mode` (the node's iattr[0]) says how it
 * goes wrong. */
enum { RULE_OK_SHAPE_FAIL, RULE_ENOMEM_AFTER_SHAPE, RULE_SILENT_STATUS, RULE_NO_CONTRIBUTION,
       RULE_CLEAN };

static int faulty_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    ad_value *seven = ad_const_fill(tp, 1, (int[]){ 7 }, 1);
    switch (out->iattr[0]) {
    case RULE_OK_SHAPE_FAIL: /* the new way: build gin with ops, return AD_OK */
        gin[0] = ad_mul(tp, g, ad_add(tp, seven, ad_const_fill(tp, 1, (int[]){ 2 }, 1)));
        return AD_OK;
    case RULE_ENOMEM_AFTER_SHAPE: /* the old way: whatever failed, say ENOMEM */
        gin[0] = ad_mul(tp, g, ad_reshape(tp, seven, 1, (int[]){ 5 }));
        return gin[0] ? AD_OK : AD_ENOMEM;
    case RULE_SILENT_STATUS:
        return AD_EUNSUPPORTED;
    case RULE_NO_CONTRIBUTION:
        return AD_OK;
    default:
        gin[0] = ad_scale(tp, g, 3);
        return AD_OK;
    }
}
static const ad_op faulty_op = { "faulty", faulty_backward, NULL };

static ad_value *faulty(ad_tape *tp, ad_value *x, int mode)
{
    ad_value *out = ad_node_new(tp, &faulty_op, x->rank, x->shape, 1, &x);
    if (out) {
        memcpy(out->data, x->data, x->size * sizeof(ad_real));
        out->iattr[0] = mode;
    }
    return out;
}

START_TEST(rule_failures_are_reported)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *x = ad_param_scalar(2), *g;
    /* An op in the rule fails; the rule says AD_OK: the op's status. */
    ad_value *y = ad_sin(tp, faulty(tp, x, RULE_OK_SHAPE_FAIL));
    size_t bytes = ad_tape_bytes(tp);
    ck_assert_int_eq(ad_grad(tp, y, 1, &x, &g, false), AD_ESHAPE);
    ck_assert_ptr_null(g);
    ck_assert_int_eq(ad_error_code(), AD_ESHAPE);
    ck_assert_msg(strncmp(ad_error(), "grad: the backward rule of 'faulty': add: ", 42) == 0,
                  "%s", ad_error());
    ck_assert_uint_eq(ad_tape_bytes(tp), bytes); /* a plain sweep leaves nothing */
    /* The same recorded. */
    ck_assert_int_eq(ad_grad(tp, y, 1, &x, &g, true), AD_ESHAPE);
    ck_assert_msg(strstr(ad_error(), "'faulty': add: ") != NULL, "%s", ad_error());
    /* A rule that invents AD_ENOMEM: the op's real status wins. */
    y = faulty(tp, x, RULE_ENOMEM_AFTER_SHAPE);
    ck_assert_int_eq(ad_grad(tp, y, 1, &x, &g, false), AD_ESHAPE);
    ck_assert_msg(strstr(ad_error(), "'faulty': reshape: ") != NULL, "%s", ad_error());
    /* A status without a message: that status, and the op named. */
    y = faulty(tp, x, RULE_SILENT_STATUS);
    ck_assert_int_eq(ad_grad(tp, y, 1, &x, &g, false), AD_EUNSUPPORTED);
    ck_assert_str_eq(ad_error(), "grad: the backward rule of 'faulty' failed (status -8) and "
                                 "left no message");
    /* No failure and gin left NULL: no contribution, zeros. */
    y = ad_add(tp, faulty(tp, x, RULE_NO_CONTRIBUTION), ad_scale(tp, x, 5));
    ck_assert_int_eq(ad_grad(tp, y, 1, &x, &g, false), AD_OK);
    ck_assert_double_eq(g->data[0], 5);
    ck_assert_int_eq(ad_grad(tp, faulty(tp, x, RULE_NO_CONTRIBUTION), 1, &x, &g, false), AD_OK);
    ck_assert_double_eq(g->data[0], 0);
    ad_tape_free(tp);
    ad_value_free(x);
}
END_TEST

/* The sweep clears the channel before each rule; a message set before a
 * sweep that succeeds is put back. */
START_TEST(earlier_message_survives)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *x = ad_param_scalar(2), *g;
    ad_value *y = ad_mul(tp, faulty(tp, x, RULE_CLEAN), x);
    ad_value *two = ad_tensor_fill(1, (int[]){ 2 }, 1), *three = ad_tensor_fill(1, (int[]){ 3 }, 1);
    ck_assert_ptr_null(ad_add(tp, two, three)); /* the caller's own failure, not yet read */
    char before[256];
    snprintf(before, sizeof before, "%s", ad_error());
    ck_assert_int_eq(ad_error_code(), AD_ESHAPE);
    ck_assert_int_eq(ad_grad(tp, y, 1, &x, &g, false), AD_OK);
    ck_assert_double_eq(g->data[0], 3 * 2 + 2); /* y = a·x, a = x with slope 3: 3x + a */
    ck_assert_str_eq(ad_error(), before);
    ck_assert_int_eq(ad_error_code(), AD_ESHAPE);
    ck_assert_int_eq(ad_vjp_partial(tp, 1, &y, NULL, 1, &x, &g, true), AD_OK);
    ck_assert_str_eq(ad_error(), before);
    /* A clean channel stays clean. */
    ad_error_clear();
    ck_assert_int_eq(ad_grad(tp, y, 1, &x, &g, false), AD_OK);
    ck_assert_str_eq(ad_error(), "");
    ck_assert_int_eq(ad_error_code(), AD_OK);
    ad_tape_free(tp);
    ad_value_free(x);
    ad_value_free(two);
    ad_value_free(three);
}
END_TEST

Suite *partial_suite(void);
Suite *partial_suite(void)
{
    Suite *s = suite_create("partial");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, partial_by_hand);
    tcase_add_test(tc, cut_keeps_the_walk_in_one_step);
    tcase_add_test(tc, per_step_partials_rebuild_the_total);
    tcase_add_test(tc, several_outputs_and_targets);
    tcase_add_test(tc, partial_bad_arguments);
    tcase_add_test(tc, partial_on_threads);
    tcase_add_test(tc, rule_failures_are_reported);
    tcase_add_test(tc, earlier_message_survives);
    suite_add_tcase(s, tc);
    return s;
}
