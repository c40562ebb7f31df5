/* test_divergence.c — what the estimators say when things go wrong: the
 * inner loss in hg_report and its divergence flag, AD_ENONFINITE for a
 * non-finite outer loss or hypergradient, messages that name the estimator,
 * the callback and the step once each; and hg_sweep's allocated result. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "experiments/toy_problem.h"
#include "ops/ops.h"
#include "optim/hypergrad.h"
#include "testutil.h"

typedef int (*estimator)(const hg_problem *p, ad_value **h, hg_report *r);

static int est_krmd(const hg_problem *p, ad_value **h, hg_report *r) { return hg_krmd(p, 10, h, r); }
static int est_full(const hg_problem *p, ad_value **h, hg_report *r) { return hg_full_rmd(p, h, r); }
static int est_ckpt(const hg_problem *p, ad_value **h, hg_report *r) { return hg_checkpoint(p, 10, h, r); }
static int est_ckpt_full(const hg_problem *p, ad_value **h, hg_report *r) { return hg_checkpoint(p, p->T, h, r); }
static int est_fmd(const hg_problem *p, ad_value **h, hg_report *r) { return hg_fmd(p, h, r); }
static int est_cg(const hg_problem *p, ad_value **h, hg_report *r) { return hg_implicit_cg(p, 10, 1e-12, h, r); }
static int est_neumann(const hg_problem *p, ad_value **h, hg_report *r) { return hg_neumann(p, 10, h, r); }

/* hg_sweep as an estimator: its exact hypergradient and report. */
static int est_sweep(const hg_problem *p, ad_value **h, hg_report *r)
{
    hg_sweep_result sw;
    int rc = hg_sweep(p, (int[]){ 1, 10 }, 2, &sw, NULL);
    if (rc != AD_OK) return rc;
    *h = sw.exact[0];
    sw.exact[0] = NULL;
    *r = sw.exact_report;
    hg_sweep_free(&sw);
    return AD_OK;
}

static const struct {
    const char *name; /* what the message starts with */
    estimator f;
} ests[] = { { "krmd", est_krmd },      { "full_rmd", est_full },        { "checkpoint", est_ckpt },
             { "checkpoint", est_ckpt_full }, { "fmd", est_fmd },      { "implicit_cg", est_cg },
             { "neumann", est_neumann },  { "sweep: profile", est_sweep } };
enum { N_EST = sizeof ests / sizeof *ests };

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

/* ---- the inner loss in the report ----------------------------------------- */

/* γ = 0.1: the toy's inner loss falls at every step.  g_t = g(w_{t−1}) with
 * w_t − λ = (1 − γG)ᵗ (w0 − λ): g_t = ½ Σᵢ Gᵢ (1 − γGᵢ)^{2(t−1)} (2 − λᵢ)². */
START_TEST(report_converging)
{
    toy t;
    ck_assert_int_eq(toy_init(&t, 1, 1, 100, 0.1, false), AD_OK);
    const double G[2] = { 1, 0.5 };
    double first = 0, last = 0;
    for (int i = 0; i < 2; i++) {
        first += 0.5 * G[i];
        last += 0.5 * G[i] * pow(1 - 0.1 * G[i], 2 * 99);
    }
    for (int e = 0; e < N_EST; e++) {
        ad_value *h;
        hg_report r;
        memset(&r, 0xff, sizeof r);
        ck_assert_int_eq(ests[e].f(&t.problem, &h, &r), AD_OK);
        ck_assert_msg(!r.diverged, "%s", ests[e].name);
        ck_assert_double_eq_tol(r.inner_loss_first, first, TU_TOL(8));
        ck_assert_double_eq_tol(r.inner_loss_last, last, TU_TOL(8) * first);
        ck_assert_double_eq(r.inner_loss_max_rise, 0);
        ck_assert_int_eq(r.inner_loss_max_rise_step, 0);
        ck_assert_int_eq(r.inner_nonfinite_step, 0);
        ck_assert(isfinite(r.outer_loss));
        ad_value_free(h);
    }
    toy_free(&t);
}
END_TEST

/* γ = 2.5: along G = 1 the iterate's distance to λ is multiplied by −1.5
 * per step, so the inner loss grows at every step (the largest rise is the
 * last) while everything stays finite: AD_OK, and the flag. */
START_TEST(report_finite_divergence)
{
    toy t;
    ck_assert_int_eq(toy_init(&t, 1, 1, 100, 2.5, false), AD_OK);
    for (int e = 0; e < N_EST; e++) {
        ad_value *h;
        hg_report r;
        ck_assert_int_eq(ests[e].f(&t.problem, &h, &r), AD_OK);
        ck_assert_msg(r.diverged, "%s", ests[e].name);
        ck_assert_double_gt(r.inner_loss_last, 1e30 * r.inner_loss_first);
        ck_assert_int_eq(r.inner_loss_max_rise_step, 100);
        ck_assert_double_gt(r.inner_loss_max_rise, 0);
        ck_assert_int_eq(r.inner_nonfinite_step, 0);
        ad_value_free(h);
    }
    toy_free(&t);
}
END_TEST

/* γ = 60 (the case): 59ᵗ overflows; the outer loss is Inf, the
 * estimators fail, say why, and still fill the report. */
START_TEST(report_overflow)
{
    toy t;
    ck_assert_int_eq(toy_init(&t, 1, 1, 100, 60, false), AD_OK);
    for (int e = 0; e < N_EST; e++) {
        ad_value *h = NULL;
        hg_report r = { 0 };
        ck_assert_int_eq(ests[e].f(&t.problem, &h, &r), AD_ENONFINITE);
        ck_assert_ptr_null(h);
        const char *m = ad_error();
        ck_assert_msg(strncmp(m, ests[e].name, strlen(ests[e].name)) == 0, "%s", m);
        ck_assert_msg(strstr(m, "the inner loss was already not finite at step") &&
                      strstr(m, "the inner optimizer diverged"), "%s", m);
        if (e == N_EST - 1) continue; /* a sweep that fails returns nothing */
        ck_assert_msg(r.diverged && r.inner_nonfinite_step > 1 && r.inner_nonfinite_step < 100,
                      "%s: nonfinite step %d", ests[e].name, r.inner_nonfinite_step);
    }
    toy_free(&t);
}
END_TEST

/* ---- non-finite results ----------------------------------------------------- */

/* log of a negative number: NaN, though its gradient 1/x is finite. */
static ad_value *nan_outer(ad_tape *tp, ad_value *const *w, ad_value *const *lam, void *ctx)
{
    (void)lam, (void)ctx;
    return ad_log(tp, ad_add_scalar(tp, ad_neg(tp, ad_sqnorm(tp, w[0])), -1));
}

/* √(0·‖w‖²) = 0, finite, but its gradient 0·(1/0) is NaN. */
static ad_value *nan_grad_outer(ad_tape *tp, ad_value *const *w, ad_value *const *lam, void *ctx)
{
    (void)lam, (void)ctx;
    return ad_sqrt(tp, ad_scale(tp, ad_sqnorm(tp, w[0]), 0));
}

START_TEST(nonfinite_outer_loss_and_gradient)
{
    toy t;
    ck_assert_int_eq(toy_init(&t, 1, 1, 20, 0.1, false), AD_OK);
    for (int pass = 0; pass < 2; pass++) {
        t.problem.outer = pass ? nan_grad_outer : nan_outer;
        for (int e = 0; e < N_EST; e++) {
            ad_value *h = NULL;
            hg_report r = { 0 };
            ck_assert_int_eq(ests[e].f(&t.problem, &h, &r), AD_ENONFINITE);
            ck_assert_ptr_null(h);
            char want[160];
            /* Reverse mode finds a NaN hypergradient; the estimators that
             * start from ∇ŵf stop there, naming w. */
            const char *what = !pass ? "the outer loss is NaN"
                             : (e <= 1 || e == N_EST - 1) ? "the hypergradient of hyperparameter 0, entry 0 is NaN"
                                                          : "the gradient of the outer loss for w[0], entry 0 is NaN";
            snprintf(want, sizeof want, "%s: %s", ests[e].name, what);
            ck_assert_str_eq(ad_error(), want);
            if (e == N_EST - 1) continue;
            ck_assert(!r.diverged);
            ck_assert_msg(pass ? r.outer_loss == 0 : isnan(r.outer_loss), "%s", ests[e].name);
        }
    }
    toy_free(&t);
}
END_TEST

/* A NaN λ makes every inner loss NaN: flagged from step 1. */
START_TEST(nan_hyperparameter)
{
    toy t;
    ck_assert_int_eq(toy_init(&t, NAN, 1, 20, 0.1, false), AD_OK);
    ad_value *h = NULL;
    hg_report r;
    ck_assert_int_eq(hg_krmd(&t.problem, 5, &h, &r), AD_ENONFINITE);
    ck_assert_str_eq(ad_error(), "krmd: the outer loss is NaN; the inner loss was already not "
                                 "finite at step 1 (g_1 = nan): the inner optimizer diverged");
    ck_assert(r.diverged);
    ck_assert_int_eq(r.inner_nonfinite_step, 1);
    toy_free(&t);
}
END_TEST

/* ---- messages: the estimator, the callback and the step, once each -------- */

static ad_value *vector_inner(ad_tape *tp, ad_value *const *w, ad_value *const *lam, int t, void *ctx)
{
    (void)ctx, (void)t;
    return ad_square(tp, ad_sub(tp, w[0], lam[0])); /* forgot the sum */
}

static ad_value *vector_outer(ad_tape *tp, ad_value *const *w, ad_value *const *lam, void *ctx)
{
    (void)ctx, (void)lam;
    return ad_square(tp, w[0]);
}

static ad_value *broken_inner(ad_tape *tp, ad_value *const *w, ad_value *const *lam, int t, void *ctx)
{
    (void)ctx;
    if (t < 4) return ad_sqnorm(tp, ad_sub(tp, w[0], lam[0]));
    return ad_sqnorm(tp, ad_sub(tp, w[0], ad_concat(tp, lam[0], lam[0], 0)));
}

static ad_value *silent_null_inner(ad_tape *tp, ad_value *const *w, ad_value *const *lam, int t, void *ctx)
{
    (void)ctx;
    return t == 2 ? NULL : ad_sqnorm(tp, ad_sub(tp, w[0], lam[0]));
}

static int null_init(ad_tape *tp, ad_value *const *lam, ad_value **w0, void *ctx)
{
    (void)tp, (void)lam, (void)ctx;
    w0[0] = NULL;
    return AD_OK;
}

START_TEST(messages_name_callback_and_step_once)
{
    toy t;
    ck_assert_int_eq(toy_init(&t, 1, 1, 20, 0.1, false), AD_OK);
    hg_problem p = t.problem;
    ad_value *h = NULL;
    p.inner = vector_inner;
    ck_assert_int_eq(hg_krmd(&p, 5, &h, NULL), AD_ESHAPE);
    ck_assert_str_eq(ad_error(), "krmd: inner (step 1): returned a [2] tensor; the inner loss must be a scalar");
    p = t.problem;
    p.outer = vector_outer;
    ck_assert_int_eq(hg_checkpoint(&p, 5, &h, NULL), AD_ESHAPE);
    ck_assert_str_eq(ad_error(), "checkpoint: outer: returned a [2] tensor; the outer loss must be a scalar");
    p = t.problem;
    p.inner = broken_inner;
    ck_assert_int_eq(hg_full_rmd(&p, &h, NULL), AD_ESHAPE);
    ck_assert_str_eq(ad_error(), "full_rmd: inner (step 4): sub: shapes do not broadcast: [2] and [4]");
    /* A stale message from before must not pass for the callback's. */
    p.inner = silent_null_inner;
    ad_fail(AD_EIO, "an old failure");
    ck_assert_int_eq(hg_fmd(&p, &h, NULL), AD_EARG);
    ck_assert_str_eq(ad_error(), "fmd: inner (step 2): returned NULL without a message");
    p = t.problem;
    p.init = null_init;
    ck_assert_int_eq(hg_implicit_cg(&p, 5, 0, &h, NULL), AD_EARG);
    ck_assert_str_eq(ad_error(), "implicit_cg: init: w0[0] is NULL");
    /* The "krmd: krmd: hyperparameter 0: krmd: entry 0 is NaN". */
    p = t.problem;
    p.outer = nan_grad_outer;
    ck_assert_int_eq(hg_krmd(&p, 5, &h, NULL), AD_ENONFINITE);
    ck_assert_int_eq(count(ad_error(), "krmd"), 1);
    ck_assert_int_eq(count(ad_error(), "hyperparameter"), 1);
    /* A bad K in a sweep: named once, after "sweep". */
    hg_sweep_result sw;
    ck_assert_int_eq(hg_sweep(&t.problem, (int[]){ 5, 0 }, 2, &sw, NULL), AD_EARG);
    ck_assert_str_eq(ad_error(), "sweep: K must be >= 1, got 0 (Ks[1])");
    ck_assert_ptr_null(sw.rows);
    ck_assert_ptr_null(sw.estimates);
    ck_assert_ptr_null(sw.exact);
    ck_assert_int_eq(hg_sweep(&t.problem, (int[]){ 5 }, 1, NULL, NULL), AD_EARG);
    ck_assert_ptr_null(h);
    toy_free(&t);
}
END_TEST

/* ---- hg_sweep allocates, and returns the exact hypergradient ---------------- */

START_TEST(sweep_result)
{
    toy t;
    ck_assert_int_eq(toy_init(&t, 0.5, -1, 50, 0.1, true), AD_OK);
    const int Ks[] = { 1, 7, 50 };
    hg_sweep_result sw;
    ck_assert_int_eq(hg_sweep(&t.problem, Ks, 3, &sw, NULL), AD_OK);
    ck_assert_int_eq(sw.nK, 3);
    ck_assert_int_eq(sw.n_hyper, 1);
    ad_value *exact, *est;
    ck_assert_int_eq(hg_full_rmd(&t.problem, &exact, NULL), AD_OK);
    ck_assert_mem_eq(sw.exact[0]->data, exact->data, 2 * sizeof(ad_real));
    ck_assert_double_eq(sw.exact_report.outer_loss, sw.rows[2].report.outer_loss);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(sw.rows[i].K, Ks[i]);
        ck_assert_int_eq(hg_krmd(&t.problem, Ks[i], &est, NULL), AD_OK);
        ck_assert_mem_eq(sw.estimates[i]->data, est->data, 2 * sizeof(ad_real));
        hg_compare c = hg_compare_grads(1, &est, &exact);
        ck_assert_double_eq(sw.rows[i].cmp.rel_error, c.rel_error);
        ad_value_free(est);
    }
    ck_assert_double_eq(sw.rows[2].cmp.rel_error, 0);
    ad_value_free(exact);
    hg_sweep_free(&sw);
    ck_assert_ptr_null(sw.rows);
    hg_sweep_free(&sw); /* twice is fine, as is NULL */
    hg_sweep_free(NULL);
    /* compare: NULL lists give NaN instead of a crash */
    hg_compare c = hg_compare_grads(1, NULL, NULL);
    ck_assert(isnan(c.cosine) && isnan(c.rel_error));
    toy_free(&t);
}
END_TEST

Suite *divergence_suite(void);
Suite *divergence_suite(void)
{
    Suite *s = suite_create("divergence");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, report_converging);
    tcase_add_test(tc, report_finite_divergence);
    tcase_add_test(tc, report_overflow);
    tcase_add_test(tc, nonfinite_outer_loss_and_gradient);
    tcase_add_test(tc, nan_hyperparameter);
    tcase_add_test(tc, messages_name_callback_and_step_once);
    tcase_add_test(tc, sweep_result);
    suite_add_tcase(s, tc);
    return s;
}
