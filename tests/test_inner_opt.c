/* test_inner_opt.c — inner optimizers other than gradient descent: Adam,
 * RMSprop, heavy ball with a learned (transformed) momentum, and custom
 * updates, through every estimator.
 *
 * The problem: per-feature L2 logistic regression on generated data,
 *   g(w, λ) = mean softplus(−y ⊙ Xw) + ½ Σᵢ e^{λᵢ} wᵢ²,
 *   f(w)    = mean softplus(−y_v ⊙ X_v w),
 * not quadratic, so the optimizers' second derivatives (through √v, the
 * divisions, the sigmoid of a learned momentum) all take part.  Each
 * variant's full-RMD hypergradient is checked against central differences
 * of f(ŵ(λ)) in double, and every other estimator against full RMD.  The
 * forward iterates are checked against the same optimizers written in
 * plain C with the analytic gradient. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "experiments/toy_problem.h"
#include "ops/ops.h"
#include "logreg_fixture.h"
#include "testutil.h"
#include "optim/hypergrad.h"

enum { LN = 16, LD = LOGREG_D, LT = 30 };

typedef struct logreg {
    logreg_data d;              /* first: the fixture's callbacks take this struct as ctx */
    ad_value *lam, *theta, *mu; /* λ [LD]; θ: a step (or steps) hyperparameter; μ */
    ad_value *hyper[2];
    hg_update custom;
    hg_problem p;
} logreg;

static int lr_w0(ad_tape *tp, ad_value *const *lam, ad_value **w0, void *ctx)
{
    (void)lam, (void)ctx;
    w0[0] = ad_const(tp, 1, (int[]){ LD }, (ad_real[]){ -1, 1, -1 });
    return AD_OK;
}

enum { V_ADAM, V_ADAM_LOGSTEP, V_RMSPROP, V_MOMENTUM_SIGMOID, V_CUSTOM_PERCOORD,
       V_CUSTOM_ADAGRAD, N_VARIANTS };
static const char *const variant_name[] = { "adam", "adam, log step learned", "rmsprop, step learned",
                                            "momentum, sigmoid μ and log γ learned",
                                            "custom: per-coordinate log steps",
                                            "custom: adagrad, learned start" };

static void logreg_init(logreg *r, int variant)
{
    ad_rng rng;
    ad_rng_seed(&rng, 2024);
    memset(r, 0, sizeof *r);
    r->d.X = ad_tensor_randn(&rng, 2, (int[]){ LN, LD }, 1);
    r->d.Xv = ad_tensor_randn(&rng, 2, (int[]){ LN, LD }, 1);
    r->d.y = ad_tensor_new(1, (int[]){ LN });
    r->d.yv = ad_tensor_new(1, (int[]){ LN });
    const double w_true[LD] = { 1.5, -2, 0.5 };
    for (int n = 0; n < LN; n++) { /* labels from a noisy linear rule */
        double s = 0, sv = 0;
        for (int d = 0; d < LD; d++) {
            s += r->d.X->data[n * LD + d] * w_true[d];
            sv += r->d.Xv->data[n * LD + d] * w_true[d];
        }
        r->d.y->data[n] = s + 0.5 * ad_rng_normal(&rng) > 0 ? 1 : -1;
        r->d.yv->data[n] = sv + 0.5 * ad_rng_normal(&rng) > 0 ? 1 : -1;
    }
    r->lam = ad_param_from(1, (int[]){ LD }, (ad_real[]){ -1, 0, 0.5 });
    r->hyper[0] = r->lam;
    r->p = (hg_problem){ .n_w = 1, .n_hyper = 1, .hyper = r->hyper, .T = LT, .ctx = r,
                         .init = lr_w0, .inner = logreg_inner, .outer = logreg_outer };
    switch (variant) {
    case V_ADAM:
        r->p.opt = hg_opt_adam(0.05);
        break;
    case V_ADAM_LOGSTEP:
        r->p.opt = hg_opt_adam(0);
        r->theta = ad_param_scalar((ad_real)log(0.05));
        r->p.opt.step_hyper = r->theta;
        r->p.opt.step_transform = HG_EXP;
        break;
    case V_RMSPROP:
        r->p.opt = hg_opt_rmsprop(0);
        r->theta = ad_param_scalar(0.02);
        r->p.opt.step_hyper = r->theta;
        break;
    case V_MOMENTUM_SIGMOID:
        r->theta = ad_param_scalar((ad_real)log(0.3));
        r->mu = ad_param_scalar(0.4); /* μ = σ(0.4) ≈ 0.6 */
        r->p.opt = (hg_inner_opt){ .kind = HG_MOMENTUM, .step_hyper = r->theta,
                                   .step_transform = HG_EXP, .momentum_hyper = r->mu,
                                   .momentum_transform = HG_SIGMOID };
        break;
    case V_CUSTOM_PERCOORD:
        r->theta = ad_param_from(1, (int[]){ LD }, (ad_real[]){ -1.5, -1, -2 });
        r->custom = (hg_update){ .name = "percoord", .n_state = 1, .step = logreg_percoord_step };
        r->p.opt = (hg_inner_opt){ .kind = HG_CUSTOM, .custom = &r->custom };
        break;
    case V_CUSTOM_ADAGRAD:
        r->theta = ad_param_from(1, (int[]){ LD }, (ad_real[]){ -1, 0, -0.5 });
        r->custom = (hg_update){ .name = "adagrad", .n_state = 1, .init = logreg_adagrad_init,
                                 .step = logreg_adagrad_step };
        r->p.opt = (hg_inner_opt){ .kind = HG_CUSTOM, .custom = &r->custom };
        break;
    }
    r->hyper[1] = r->theta;
    r->p.n_hyper = r->theta ? 2 : 1;
    if (r->mu) { /* three hyperparameters: λ, log γ, the momentum's logit */
        static ad_value *three[3];
        three[0] = r->lam, three[1] = r->theta, three[2] = r->mu;
        r->p.hyper = three;
        r->p.n_hyper = 3;
    }
}

static void logreg_free(logreg *r)
{
    ad_value *all[] = { r->d.X, r->d.y, r->d.Xv, r->d.yv, r->lam, r->theta, r->mu };
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) ad_value_free(all[i]);
}

static void free_n(int n, ad_value **v)
{
    for (int i = 0; i < n; i++) ad_value_free(v[i]);
}

static double rel_err(int n, ad_value *const *a, ad_value *const *b)
{
    return hg_compare_grads(n, a, b).rel_error;
}

#if HT_REAL_IS_DOUBLE
/* f(ŵ(λ)) with one hyperparameter entry moved: what K-RMD reports. */
static double outer_at(const hg_problem *p, ad_value *h, size_t j, double delta)
{
    ad_real keep = h->data[j];
    ad_value *tmp[3];
    hg_report rep;
    h->data[j] = keep + (ad_real)delta;
    ck_assert_int_eq(hg_krmd(p, 1, tmp, &rep), AD_OK);
    h->data[j] = keep;
    free_n(p->n_hyper, tmp);
    return rep.outer_loss;
}
#endif

/* Two estimators (or the tape and plain C) doing the same arithmetic in other
 * orders over LT steps: 4096 roundings (9e-13 in double, 5e-4 in float). */
#define ESTIMATOR_ULPS 4096

START_TEST(estimators_agree_with_fd)
{
    logreg r;
    logreg_init(&r, _i);
    const hg_problem *p = &r.p;
    int n = p->n_hyper;
    ad_value *exact[3], *est[3], *k7[3];
    hg_report rep;
    ck_assert_int_eq(hg_full_rmd(p, exact, &rep), AD_OK);
    ck_assert_msg(!rep.diverged, "%s: the inner loss went from %g to %g", variant_name[_i],
                  rep.inner_loss_first, rep.inner_loss_last);
    /* Full RMD against central differences of f(ŵ(λ)), entry by entry: in
     * double only, as in the one-shot suite; a float f through T inner steps
     * has no step h at which its central difference means anything. */
#if HT_REAL_IS_DOUBLE
    const double eps = 1e-6;
    for (int h = 0; h < n; h++)
        for (size_t j = 0; j < p->hyper[h]->size; j++) {
            double fd = (outer_at(p, p->hyper[h], j, eps) - outer_at(p, p->hyper[h], j, -eps)) / (2 * eps);
            double a = exact[h]->data[j];
            ck_assert_msg(fabs(fd - a) <= 1e-6 * fmax(1, fabs(a)),
                          "%s, hyperparameter %d[%zu]: rmd %.12g fd %.12g", variant_name[_i], h, j, a, fd);
        }
#endif
    /* Checkpointed full RMD and forward mode: the same derivative. */
    ck_assert_int_eq(hg_checkpoint(p, LT, est, NULL), AD_OK);
    ck_assert_msg(rel_err(n, est, exact) <= TU_TOL(ESTIMATOR_ULPS), "%s: checkpoint %.3g", variant_name[_i],
                  rel_err(n, est, exact));
    free_n(n, est);
    ck_assert_int_eq(hg_fmd(p, est, NULL), AD_OK);
    ck_assert_msg(rel_err(n, est, exact) <= TU_TOL(ESTIMATOR_ULPS), "%s: fmd %.3g", variant_name[_i], rel_err(n, est, exact));
    free_n(n, est);
    /* Truncated: K-RMD and truncated checkpointing agree, and differ from full. */
    ck_assert_int_eq(hg_krmd(p, 7, k7, NULL), AD_OK);
    ck_assert_int_eq(hg_checkpoint(p, 7, est, NULL), AD_OK);
    ck_assert_msg(rel_err(n, est, k7) <= TU_TOL(ESTIMATOR_ULPS), "%s: checkpoint K=7 %.3g", variant_name[_i],
                  rel_err(n, est, k7));
    ck_assert_double_gt(rel_err(n, k7, exact), 1e-6);
    free_n(n, est);
    free_n(n, k7);
    /* Implicit differentiation: refused whenever λ drives the optimizer. */
    if (_i == V_ADAM) {
        ck_assert_int_eq(hg_implicit_cg(p, 20, 1e-12, est, NULL), AD_OK);
        free_n(n, est);
        ck_assert_int_eq(hg_neumann(p, 10, est, NULL), AD_EUNSUPPORTED);
        ck_assert_str_eq(ad_error(), "neumann: the Neumann series is gradient descent's, and the "
                                     "inner optimizer is not: use implicit_cg, K-RMD or FMD");
    } else {
        ck_assert_int_eq(hg_implicit_cg(p, 20, 1e-12, est, NULL), AD_EUNSUPPORTED);
        ck_assert_ptr_nonnull(strstr(ad_error(), "implicit_cg: a hyperparameter drives the inner optimizer"));
        ck_assert_int_eq(hg_neumann(p, 10, est, NULL), AD_EUNSUPPORTED);
    }
    free_n(n, exact);
    logreg_free(&r);
}
END_TEST

/* ---- the forward iterates against plain C ---------------------------------- */

/* ∇g at w, analytically: −mean(y σ(−y Xw) x) + e^λ ⊙ w. */
static void analytic_grad(const logreg *r, const double *w, double *g)
{
    for (int d = 0; d < LD; d++) g[d] = exp(r->lam->data[d]) * w[d];
    for (int n = 0; n < LN; n++) {
        double z = 0, yn = r->d.y->data[n];
        for (int d = 0; d < LD; d++) z += r->d.X->data[n * LD + d] * w[d];
        double s = 1 / (1 + exp(yn * z)); /* σ(−y z) */
        for (int d = 0; d < LD; d++) g[d] -= yn * s * r->d.X->data[n * LD + d] / LN;
    }
}

/* T steps of the variant's optimizer in plain doubles (the textbook form). */
static void reference_w_hat(const logreg *r, int variant, double *w)
{
    double m[LD] = { 0 }, v[LD] = { 0 }, g[LD];
    const hg_inner_opt *o = &r->p.opt;
    w[0] = -1, w[1] = 1, w[2] = -1;
    for (int d = 0; d < LD && variant == V_CUSTOM_ADAGRAD; d++) v[d] = exp(r->theta->data[d]);
    for (int t = 1; t <= LT; t++) {
        analytic_grad(r, w, g);
        for (int d = 0; d < LD; d++) {
            switch (variant) {
            case V_ADAM:
            case V_ADAM_LOGSTEP: {
                double gamma = variant == V_ADAM ? o->step : exp(r->theta->data[0]);
                m[d] = o->beta1 * m[d] + (1 - o->beta1) * g[d];
                v[d] = o->beta2 * v[d] + (1 - o->beta2) * g[d] * g[d];
                double mh = m[d] / (1 - pow(o->beta1, t)), vh = v[d] / (1 - pow(o->beta2, t));
                w[d] -= gamma * mh / (sqrt(vh + o->eps_root) + o->eps);
                break;
            }
            case V_RMSPROP:
                v[d] = o->beta2 * v[d] + (1 - o->beta2) * g[d] * g[d];
                w[d] -= r->theta->data[0] * g[d] / (sqrt(v[d] + o->eps_root) + o->eps);
                break;
            case V_MOMENTUM_SIGMOID:
                v[d] = 1 / (1 + exp(-r->mu->data[0])) * v[d] + g[d];
                w[d] -= exp(r->theta->data[0]) * v[d];
                break;
            case V_CUSTOM_PERCOORD:
                v[d] = 0.5 * v[d] + g[d];
                w[d] -= exp(r->theta->data[d]) * v[d];
                break;
            case V_CUSTOM_ADAGRAD:
                v[d] += g[d] * g[d];
                w[d] -= 0.3 * g[d] / sqrt(v[d]);
                break;
            }
        }
    }
}

START_TEST(iterates_match_plain_c)
{
    logreg r;
    logreg_init(&r, _i);
    ad_value *w;
    double want[LD], losses[LT + 1];
    ck_assert_int_eq(hg_inner_solve(&r.p, &w, losses), AD_OK);
    reference_w_hat(&r, _i, want);
    for (int d = 0; d < LD; d++)
        ck_assert_msg(fabs(w->data[d] - want[d]) <= TU_TOL(ESTIMATOR_ULPS) * fmax(1, fabs(want[d])),
                      "%s: ŵ[%d] = %.17g, plain C %.17g", variant_name[_i], d, w->data[d], want[d]);
    /* and the optimizer did optimize */
    ck_assert_double_lt(losses[LT], 0.9 * losses[0]);
    ad_value_free(w);
    logreg_free(&r);
}
END_TEST

/* ---- custom updates that are GD and heavy ball: the same numbers, bit for bit */

static int custom_gd_step(ad_tape *tp, int n_w, ad_value *const *w, ad_value *const *s,
                          ad_value *const *gw, ad_value *const *lam, int t, ad_value **w_new,
                          ad_value **s_new, void *ctx)
{
    (void)s, (void)lam, (void)t, (void)s_new;
    const double *gamma = ctx;
    for (int i = 0; i < n_w; i++) w_new[i] = ad_sub(tp, w[i], ad_scale(tp, gw[i], *gamma));
    return AD_OK;
}

static int custom_hb_step(ad_tape *tp, int n_w, ad_value *const *w, ad_value *const *v,
                          ad_value *const *gw, ad_value *const *lam, int t, ad_value **w_new,
                          ad_value **v_new, void *ctx)
{
    (void)lam, (void)t, (void)ctx;
    for (int i = 0; i < n_w; i++) {
        v_new[i] = ad_add(tp, ad_scale(tp, v[i], 0.5), gw[i]);
        w_new[i] = ad_sub(tp, w[i], ad_scale(tp, v_new[i], 0.1));
    }
    return AD_OK;
}

START_TEST(custom_gd_and_heavy_ball_are_bit_identical)
{
    double gamma = 0.1;
    const hg_update gd = { .name = "my gd", .step = custom_gd_step, .ignores_hyper = true, .ctx = &gamma };
    const hg_update hb = { .name = "my hb", .n_state = 1, .step = custom_hb_step, .ignores_hyper = true };
    for (int kind = 0; kind < 2; kind++) {
        toy t;
        ck_assert_int_eq(toy_init(&t, 1, -0.5, 60, 0.1, kind == 1), AD_OK);
        if (kind == 1) t.problem.opt = (hg_inner_opt){ .kind = HG_MOMENTUM, .step = 0.1, .momentum = 0.5 };
        hg_problem custom = t.problem;
        custom.opt = (hg_inner_opt){ .kind = HG_CUSTOM, .custom = kind ? &hb : &gd };
        int (*est[])(const hg_problem *, int, ad_value **, hg_report *) = { hg_krmd, hg_checkpoint };
        for (int e = 0; e < 2; e++)
            for (int K = 5; K <= 60; K += 55) {
                ad_value *a, *b;
                ck_assert_int_eq(est[e](&t.problem, K, &a, NULL), AD_OK);
                ck_assert_int_eq(est[e](&custom, K, &b, NULL), AD_OK);
                ck_assert_mem_eq(a->data, b->data, 2 * sizeof(ad_real));
                ad_value_free(a);
                ad_value_free(b);
            }
        ad_value *a, *b;
        ck_assert_int_eq(hg_fmd(&t.problem, &a, NULL), AD_OK);
        ck_assert_int_eq(hg_fmd(&custom, &b, NULL), AD_OK);
        ck_assert_mem_eq(a->data, b->data, 2 * sizeof(ad_real));
        ad_value_free(a);
        ad_value_free(b);
        /* ignores_hyper: implicit differentiation is allowed, and the same */
        ck_assert_int_eq(hg_implicit_cg(&t.problem, 10, 1e-14, &a, NULL), AD_OK);
        ck_assert_int_eq(hg_implicit_cg(&custom, 10, 1e-14, &b, NULL), AD_OK);
        ck_assert_mem_eq(a->data, b->data, 2 * sizeof(ad_real));
        ad_value_free(a);
        ad_value_free(b);
        toy_free(&t);
    }
}
END_TEST

/* ---- a custom update's mistakes, and the optimizer's settings ------------- */

static int wrong_shape_step(ad_tape *tp, int n_w, ad_value *const *w, ad_value *const *s,
                            ad_value *const *gw, ad_value *const *lam, int t, ad_value **w_new,
                            ad_value **s_new, void *ctx)
{
    (void)n_w, (void)s, (void)gw, (void)lam, (void)s_new, (void)ctx;
    w_new[0] = t < 3 ? w[0] : ad_sum(tp, w[0]);
    return AD_OK;
}

static int null_step(ad_tape *tp, int n_w, ad_value *const *w, ad_value *const *s,
                     ad_value *const *gw, ad_value *const *lam, int t, ad_value **w_new,
                     ad_value **s_new, void *ctx)
{
    (void)tp, (void)n_w, (void)w, (void)s, (void)gw, (void)lam, (void)t, (void)s_new, (void)ctx;
    return AD_OK; /* forgets to fill w_new */
}

static int failing_step(ad_tape *tp, int n_w, ad_value *const *w, ad_value *const *s,
                        ad_value *const *gw, ad_value *const *lam, int t, ad_value **w_new,
                        ad_value **s_new, void *ctx)
{
    (void)n_w, (void)s, (void)gw, (void)t, (void)s_new, (void)ctx;
    w_new[0] = ad_add(tp, w[0], ad_concat(tp, lam[0], lam[0], 0)); /* [2] + [4] */
    return w_new[0] ? AD_OK : ad_error_code();
}

START_TEST(custom_update_errors)
{
    toy t;
    ck_assert_int_eq(toy_init(&t, 1, 1, 10, 0.1, false), AD_OK);
    ad_value *h = NULL;
    hg_update u = { .name = "mine", .step = wrong_shape_step };
    t.problem.opt = (hg_inner_opt){ .kind = HG_CUSTOM, .custom = &u };
    ck_assert_int_eq(hg_krmd(&t.problem, 4, &h, NULL), AD_ESHAPE);
    ck_assert_str_eq(ad_error(), "krmd: mine (step 3): entry 0 of the new state is [], was [2]");
    u.step = null_step;
    ck_assert_int_eq(hg_fmd(&t.problem, &h, NULL), AD_EARG);
    ck_assert_str_eq(ad_error(), "fmd: mine (step 1): returned NULL without a message");
    u.step = failing_step;
    u.name = NULL;
    ck_assert_int_eq(hg_checkpoint(&t.problem, 10, &h, NULL), AD_ESHAPE);
    ck_assert_str_eq(ad_error(), "checkpoint: update (step 1): add: shapes do not broadcast: [2] and [4]");
    u.n_state = HG_MAX_STATE + 1;
    ck_assert_int_eq(hg_krmd(&t.problem, 4, &h, NULL), AD_EARG);
    ck_assert_str_eq(ad_error(), "krmd: problem: update: n_state must be in 0..8, got 9");
    t.problem.opt.custom = NULL;
    ck_assert_int_eq(hg_krmd(&t.problem, 4, &h, NULL), AD_EARG);
    ck_assert_str_eq(ad_error(), "krmd: problem: opt.custom (with its step) is required for HG_CUSTOM");
    /* Adam's settings: a designated initializer without hg_opt_adam is caught. */
    t.problem.opt = (hg_inner_opt){ .kind = HG_ADAM, .step = 0.1, .beta1 = 0.9, .beta2 = 1 };
    ck_assert_int_eq(hg_krmd(&t.problem, 4, &h, NULL), AD_EARG);
    ck_assert_str_eq(ad_error(), "krmd: problem: opt.beta2 must be in [0, 1), got 1");
    t.problem.opt = (hg_inner_opt){ .kind = HG_ADAM, .step = 0.1 }; /* ε = ε_root = 0 */
    ck_assert_int_eq(hg_krmd(&t.problem, 4, &h, NULL), AD_EARG);
    ck_assert_str_eq(ad_error(), "krmd: problem: opt.eps and opt.eps_root must be finite, >= 0 and "
                                 "not both 0 (hg_opt_adam fills the defaults)");
    t.problem.opt = hg_opt_rmsprop(0.1);
    t.problem.opt.eps = -1;
    ck_assert_int_eq(hg_krmd(&t.problem, 4, &h, NULL), AD_EARG);
    ck_assert_ptr_nonnull(strstr(ad_error(), "hg_opt_rmsprop fills the defaults"));
    t.problem.opt = hg_opt_adam(0.1);
    t.problem.opt.step_transform = (hg_transform)7;
    ck_assert_int_eq(hg_krmd(&t.problem, 4, &h, NULL), AD_EARG);
    ck_assert_str_eq(ad_error(), "krmd: problem: opt.step_transform: unknown transform 7");
    t.problem.opt = hg_opt_adam(0.1);
    t.problem.opt.momentum_hyper = t.lam;
    ck_assert_int_eq(hg_krmd(&t.problem, 4, &h, NULL), AD_EARG);
    ck_assert_str_eq(ad_error(), "krmd: problem: opt.momentum_hyper is set but the optimizer has no momentum");
    ck_assert_ptr_null(h);
    toy_free(&t);
}
END_TEST

/* Adam without ε_root: g = ½‖λ ⊙ w − 1‖² at λ = (1, 0) has ∂g/∂w₁ = λ₁(λ₁w₁ − 1)
 * = 0 at every step, yet that zero moves with λ₁.  The derivative of √v̂ is
 * then infinite, and 0·∞ = NaN reaches dλ₁: the estimator refuses it
 * (AD_ENONFINITE, naming the entry) instead of returning it.  With the
 * default ε_root the slope of √ stays finite, and so does the result. */
static ad_value *inner_masked(ad_tape *tp, ad_value *const *w, ad_value *const *lam, int t, void *ctx)
{
    (void)t, (void)ctx;
    return ad_scale(tp, ad_sqnorm(tp, ad_add_scalar(tp, ad_mul(tp, lam[0], w[0]), -1)), 0.5);
}

START_TEST(adam_eps_root)
{
    toy t;
    ck_assert_int_eq(toy_init(&t, 1, 0, 10, 0.1, false), AD_OK);
    t.problem.inner = inner_masked;
    t.problem.opt = hg_opt_adam(0.1);
    ad_value *h;
    ck_assert_int_eq(hg_krmd(&t.problem, 10, &h, NULL), AD_OK);
    ck_assert(isfinite(h->data[0]) && isfinite(h->data[1]));
    ad_value_free(h);
    t.problem.opt.eps_root = 0;
    ck_assert_int_eq(hg_krmd(&t.problem, 10, &h, NULL), AD_ENONFINITE);
    ck_assert_str_eq(ad_error(), "krmd: the hypergradient of hyperparameter 0, entry 1 is NaN");
    toy_free(&t);
}
END_TEST

/* ---- state entries that alias: every estimator, one trajectory ------------ */

/* The trajectory is the one a detached step computes: each entry of the
 * state list an independent variable (∇w g a partial derivative in each
 * w[i]).  Four ways a state list can break that on a recorded tape:
 *   AL_INIT_SHARED  init returns the same value twice: w0[1] = w0[0];
 *   AL_UPD_LAM      the update returns λ itself: w_t[0] = λ at step `at`;
 *   AL_UPD_SAME     the update returns one value twice: w_t[1] = w_t[0];
 *   AL_UPD_BUILT    one entry built from another: w_t[1] = ½ w_t[0].
 * The problem (λ ∈ R³, w = (w0, w1), heavy ball with velocity s):
 *   g = ½‖w0 − λ‖² + ½‖w1 ⊙ λ‖²,  f = ‖w0 − 1‖² + ‖w1‖²,
 *   s ← ½ s + ∇w g,  w ← w − 0.1 s,
 * is written again in plain C below (alias_ref), whose central
 * differences every estimator must match. */
enum { AL_INIT_SHARED, AL_UPD_LAM, AL_UPD_SAME, AL_UPD_BUILT, N_ALIAS };
enum { AT = 6, AD = 3, AK = 2 };
static const char *const alias_name[] = { "init w0[1] = w0[0]", "update w[0] = λ",
                                          "update w[1] = w[0]", "update w[1] = w[0]/2" };

typedef struct alias_case {
    int kind, at; /* which aliasing, at which step (the update's cases) */
} alias_case;

static int alias_init(ad_tape *tp, ad_value *const *lam, ad_value **w0, void *ctx)
{
    const alias_case *c = ctx;
    w0[0] = ad_scale(tp, lam[0], 0.5);
    w0[1] = c->kind == AL_INIT_SHARED ? w0[0] : ad_const_fill(tp, 1, (int[]){ AD }, 0.1);
    return AD_OK;
}

static ad_value *alias_inner(ad_tape *tp, ad_value *const *w, ad_value *const *lam, int t, void *ctx)
{
    (void)t, (void)ctx;
    ad_value *d = ad_sub(tp, w[0], lam[0]), *e = ad_mul(tp, w[1], lam[0]);
    return ad_scale(tp, ad_add(tp, ad_sqnorm(tp, d), ad_sqnorm(tp, e)), 0.5);
}

static ad_value *alias_outer(ad_tape *tp, ad_value *const *w, ad_value *const *lam, void *ctx)
{
    (void)lam, (void)ctx;
    return ad_add(tp, ad_sqnorm(tp, ad_add_scalar(tp, w[0], -1)), ad_sqnorm(tp, w[1]));
}

static int alias_step(ad_tape *tp, int n_w, ad_value *const *w, ad_value *const *s,
                      ad_value *const *gw, ad_value *const *lam, int t, ad_value **w_new,
                      ad_value **s_new, void *ctx)
{
    const alias_case *c = ctx;
    for (int i = 0; i < n_w; i++) {
        s_new[i] = ad_add(tp, ad_scale(tp, s[i], 0.5), gw[i]);
        w_new[i] = ad_sub(tp, w[i], ad_scale(tp, s_new[i], 0.1));
    }
    if (t == c->at) switch (c->kind) {
    case AL_UPD_LAM: w_new[0] = lam[0]; break;
    case AL_UPD_SAME: w_new[1] = w_new[0]; break;
    case AL_UPD_BUILT: w_new[1] = ad_scale(tp, w_new[0], 0.5); break;
    }
    return AD_OK;
}

#if HT_REAL_IS_DOUBLE
/* f after AT steps in plain C.  λ_pre drives init and steps 1..first, λ_post
 * the steps after (and f): with first = AT − K, the derivative in λ_post is
 * what K-RMD estimates (w_first held fixed); with first = 0 and λ_pre = λ_post
 * it is f(ŵ(λ)). */
static double alias_ref(const alias_case *c, const double *lam_pre, const double *lam_post, int first)
{
    double w[2][AD], s[2][AD] = { { 0 } };
    for (int d = 0; d < AD; d++) {
        w[0][d] = 0.5 * (first > 0 ? lam_pre : lam_post)[d];
        w[1][d] = c->kind == AL_INIT_SHARED ? w[0][d] : 0.1;
    }
    for (int t = 1; t <= AT; t++) {
        const double *l = t <= first ? lam_pre : lam_post;
        for (int d = 0; d < AD; d++) {
            double g0 = w[0][d] - l[d], g1 = w[1][d] * l[d] * l[d];
            s[0][d] = 0.5 * s[0][d] + g0, s[1][d] = 0.5 * s[1][d] + g1;
            w[0][d] -= 0.1 * s[0][d], w[1][d] -= 0.1 * s[1][d];
            if (t == c->at && c->kind == AL_UPD_LAM) w[0][d] = l[d];
            if (t == c->at && c->kind == AL_UPD_SAME) w[1][d] = w[0][d];
            if (t == c->at && c->kind == AL_UPD_BUILT) w[1][d] = 0.5 * w[0][d];
        }
    }
    double f = 0;
    for (int d = 0; d < AD; d++) f += (w[0][d] - 1) * (w[0][d] - 1) + w[1][d] * w[1][d];
    return f;
}

/* Central differences of alias_ref in λ_post, at λ, for w_first fixed. */
static void alias_fd(const alias_case *c, const double *lam, int first, double *fd)
{
    const double eps = 1e-6;
    for (int j = 0; j < AD; j++) {
        double up[AD], dn[AD];
        memcpy(up, lam, sizeof up), memcpy(dn, lam, sizeof dn);
        up[j] += eps, dn[j] -= eps;
        fd[j] = (alias_ref(c, lam, up, first) - alias_ref(c, lam, dn, first)) / (2 * eps);
    }
}

static void expect_fd(const char *what, const alias_case *c, const ad_value *h, const double *fd)
{
    for (int j = 0; j < AD; j++)
        ck_assert_msg(fabs(h->data[j] - fd[j]) <= 1e-7 * fmax(1, fabs(fd[j])),
                      "%s at step %d, %s: entry %d is %.12g, central differences %.12g",
                      alias_name[c->kind], c->at, what, j, (double)h->data[j], fd[j]);
}
#endif

static void expect_same(const char *what, const alias_case *c, const ad_value *a, const ad_value *b)
{
    double e = rel_err(1, (ad_value *const[]){ (ad_value *)a }, (ad_value *const[]){ (ad_value *)b });
    ck_assert_msg(e <= TU_TOL(ESTIMATOR_ULPS), "%s at step %d, %s: relative error %.3g",
                  alias_name[c->kind], c->at, what, e);
}

START_TEST(aliased_state_every_estimator_one_trajectory)
{
    const int ats[] = { 1, AT - AK, AT - AK + 1 }; /* first step; last detached (K = AK); first recorded */
    alias_case c = { .kind = _i };
    hg_update u = { .name = "aliasing heavy ball", .n_state = 1, .step = alias_step, .ctx = &c };
#if HT_REAL_IS_DOUBLE
    const double lam0[AD] = { 0.3, -0.2, 0.5 }; /* λ's numbers, for the plain-C reference */
#endif
    ad_value *lam = ad_param_from(1, (int[]){ AD }, (ad_real[]){ 0.3, -0.2, 0.5 });
    hg_problem p = { .n_w = 2, .n_hyper = 1, .hyper = &lam, .T = AT, .ctx = &c, .init = alias_init,
                     .inner = alias_inner, .outer = alias_outer,
                     .opt = { .kind = HG_CUSTOM, .custom = &u } };
    for (int a = 0; a < (c.kind == AL_INIT_SHARED ? 1 : 3); a++) {
        c.at = ats[a];
        ad_value *full, *h;
        hg_report rep;
        ck_assert_int_eq(hg_full_rmd(&p, &full, &rep), AD_OK);
#if HT_REAL_IS_DOUBLE
        double fd[AD];
        alias_fd(&c, lam0, 0, fd);
        tu_expect_close(rep.outer_loss, alias_ref(&c, lam0, lam0, 0), 16);
        expect_fd("full_rmd", &c, full, fd);
#endif
        /* Exact: every estimator that computes all T steps. */
        ck_assert_int_eq(hg_krmd(&p, AT, &h, NULL), AD_OK);
        expect_same("krmd K = T", &c, h, full), ad_value_free(h);
        ck_assert_int_eq(hg_checkpoint(&p, AT, &h, NULL), AD_OK);
        expect_same("checkpoint K = T", &c, h, full), ad_value_free(h);
        ck_assert_int_eq(hg_fmd(&p, &h, &rep), AD_OK);
        expect_same("fmd", &c, h, full), ad_value_free(h);
        hg_profile pr;
        ck_assert_int_eq(hg_truncation_profile(&p, AT, &(hg_profile_opts){ .keep_all = true }, &pr),
                         AD_OK);
        expect_same("profile, k = T", &c, pr.h[AT - 1], full);
        hg_sweep_result sw;
        ck_assert_int_eq(hg_sweep(&p, (int[]){ AK, AT }, 2, &sw, NULL), AD_OK);
        expect_same("sweep, exact", &c, sw.exact[0], full);
        expect_same("sweep, K = T", &c, sw.estimates[1], full);
        ad_value *w_hat[2];
        ck_assert_int_eq(hg_inner_solve(&p, w_hat, NULL), AD_OK);
#if HT_REAL_IS_DOUBLE
        /* ŵ itself: f(ŵ) as the reference computes it. */
        ad_tape *tp = ad_tape_new(1);
        ad_value *f = alias_outer(tp, w_hat, &lam, NULL);
        tu_expect_close(f->data[0], alias_ref(&c, lam0, lam0, 0), 16);
        ad_tape_free(tp);
#endif
        ad_value_free(w_hat[0]), ad_value_free(w_hat[1]);
        /* Truncated at K = AK < T: K-RMD, truncated checkpointing, the
         * profile's row and the sweep's estimate are one derivative. */
        ad_value *k2;
        ck_assert_int_eq(hg_krmd(&p, AK, &k2, NULL), AD_OK);
#if HT_REAL_IS_DOUBLE
        alias_fd(&c, lam0, AT - AK, fd);
        expect_fd("krmd K = 2", &c, k2, fd);
#endif
        ck_assert_int_eq(hg_checkpoint(&p, AK, &h, NULL), AD_OK);
        expect_same("checkpoint K = 2", &c, h, k2), ad_value_free(h);
        expect_same("profile, k = 2", &c, pr.h[AK - 1], k2);
        expect_same("sweep, K = 2", &c, sw.estimates[0], k2);
        hg_profile_free(&pr);
        hg_sweep_free(&sw);
        ad_value_free(k2);
        ad_value_free(full);
    }
    ad_value_free(lam);
}
END_TEST

Suite *inner_opt_suite(void);
Suite *inner_opt_suite(void)
{
    Suite *s = suite_create("inner_opt");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, estimators_agree_with_fd, 0, N_VARIANTS);
    tcase_add_loop_test(tc, iterates_match_plain_c, 0, N_VARIANTS);
    tcase_add_test(tc, custom_gd_and_heavy_ball_are_bit_identical);
    tcase_add_test(tc, custom_update_errors);
    tcase_add_test(tc, adam_eps_root);
    tcase_add_loop_test(tc, aliased_state_every_estimator_one_trajectory, 0, N_ALIAS);
    suite_add_tcase(s, tc);
    return s;
}
