/* test_profile.c — every truncation depth from one reverse pass, the
 * contraction rate, and choosing K.
 *
 * The toy problem (Sec. 4.1): every h_{T−k}, k = 1..100, from one pass
 * against the closed form; each step's share against γG(I − γG)^{k−1}∇ŵf and
 * each adjoint against (I − γG)^{k−1}∇ŵf; α, L against G's eigenvalues and q
 * against max|1 − γλ| (and heavy ball's step map, by its complex
 * eigenvalues), and the profile's measured decay against q.
 * Every inner optimizer (GD, heavy ball, Adam, RMSprop, custom updates; step
 * sizes and momenta learned through transforms; w0 and s0 that depend on λ;
 * a state list naming one value twice)
 * on a logistic regression: the profile's rows against hg_krmd at the same
 * depth, and at K = T against full RMD.
 * A ridge regression with an orthogonal design, whose shares all point one
 * way: hg_choose_k picks the K its closed form says, and the bound's K is
 * Prop. 3.1's with the true α.  hg_sweep: one pass, the same numbers. */
#include <check.h>
#include <complex.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "experiments/toy_problem.h"
#include "ops/ops.h"
#include "optim/hypergrad.h"
#include "logreg_fixture.h"
#include "testutil.h"

/* The profile and K-RMD do the same arithmetic, λ's shares summed in
 * another order: within 4096 roundings (9e-13 in double, 5e-4 in float). */
#define PASS_ULPS 4096

static double vec_dist(int n, ad_value *const *a, ad_value *const *b, double *norm_b)
{
    double d = 0, nb = 0;
    for (int i = 0; i < n; i++)
        for (size_t j = 0; j < a[i]->size; j++) {
            double x = a[i]->data[j], y = b[i]->data[j];
            d += (x - y) * (x - y);
            nb += y * y;
        }
    if (norm_b) *norm_b = sqrt(nb);
    return sqrt(d);
}

/* a and b agree to PASS_ULPS roundings of b's size (at least 1). */
static void expect_lists_close(int n, ad_value *const *a, ad_value *const *b, const char *what, int k)
{
    double nb, d = vec_dist(n, a, b, &nb);
    ck_assert_msg(d <= TU_TOL(PASS_ULPS) * fmax(1, nb), "%s, k = %d: off by %.3g (norm %.6g)", what, k,
                  d, nb);
}

/* ---- the toy against its closed form ---------------------------------------- */

static const double toy_lams[][2] = { { 1, 1 }, { -0.5, 2 } };

START_TEST(toy_every_depth_from_one_pass)
{
    const bool tilde = _i / 2;
    const double *lam = toy_lams[_i % 2];
    toy t;
    ck_assert_int_eq(toy_init(&t, lam[0], lam[1], 100, 0.1, tilde), AD_OK);
    hg_profile pr;
    ck_assert_int_eq(hg_truncation_profile(&t.problem, 100, &(hg_profile_opts){ .keep_all = true },
                                           &pr), AD_OK);
    ck_assert_int_eq(pr.K, 100);
    ck_assert_int_eq(pr.T, 100);
    double w_hat[2], h[2], prev[2];
    toy_closed_form(&t, 100, w_hat, h);
    const double G[2] = { 1, 0.5 }, gamma = 0.1;
    double df[2], direct[2];
    for (int i = 0; i < 2; i++) {
        df[i] = 2 * w_hat[i] + 10 * sin(2 * w_hat[i]);
        direct[i] = tilde ? 10 * (lam[i] - (i == 0 ? 1 : 0)) : 0;
        prev[i] = direct[i];
    }
    tu_expect_close(pr.direct_norm, hypot(direct[0], direct[1]), 16);
    ck_assert_double_eq(pr.init_norm, 0); /* w0 = (2, 2) does not depend on λ */
    for (int k = 1; k <= 100; k++) {
        toy_closed_form(&t, k, w_hat, h);
        ad_value *got = pr.h[k - 1];
        ck_assert_ptr_nonnull(got);
        double share[2], adj[2], scale = fmax(1, hypot(h[0], h[1]));
        for (int i = 0; i < 2; i++) {
            /* h_{T−k} to 1e-10 (relative, in double) */
            double tol = fmax(TU_TOL(PASS_ULPS), HT_REAL_IS_DOUBLE ? 1e-10 : 0) * scale;
            ck_assert_msg(fabs(got->data[i] - h[i]) <= tol, "λ%d, k = %d: %.17g, closed form %.17g",
                          i + 1, k, (double)got->data[i], h[i]);
            adj[i] = pow(1 - gamma * G[i], k - 1) * df[i];
            share[i] = gamma * G[i] * adj[i];
            /* the k-th share, as the difference of two rows */
            ck_assert_msg(fabs((got->data[i] - prev[i]) - share[i]) <= tol,
                          "share %d at k = %d: %.17g, closed form %.17g", i + 1, k,
                          got->data[i] - prev[i], share[i]);
            prev[i] = got->data[i];
        }
        tu_expect_close(pr.contrib_norm[k - 1], hypot(share[0], share[1]), PASS_ULPS);
        tu_expect_close(pr.adjoint_norm[k - 1], hypot(adj[0], adj[1]), PASS_ULPS);
        tu_expect_close(pr.h_norm[k - 1], hypot(got->data[0], got->data[1]), 4);
    }
    /* The relative truncation error of each depth, from the kept rows. */
    double exact[2];
    toy_closed_form(&t, 100, w_hat, exact);
    for (int k = 1; k <= 100; k += 11) {
        toy_closed_form(&t, k, w_hat, h);
        double want = hypot(h[0] - exact[0], h[1] - exact[1]) / hypot(exact[0], exact[1]);
        ck_assert_msg(fabs(hg_profile_rel_error(&pr, k) - want) <= TU_TOL(PASS_ULPS),
                      "k = %d: %.17g, closed form %.17g", k, hg_profile_rel_error(&pr, k), want);
    }
    ck_assert_double_eq(hg_profile_rel_error(&pr, 100), 0);
    ck_assert(isnan(hg_profile_rel_error(&pr, 0)) && isnan(hg_profile_rel_error(&pr, 101)));
    ck_assert(isnan(hg_profile_rel_error(NULL, 1)));
    /* Rows against hg_krmd at the same depth. */
    const int ks[] = { 1, 2, 10, 37, 99, 100 };
    for (size_t j = 0; j < sizeof ks / sizeof *ks; j++) {
        ad_value *est;
        ck_assert_int_eq(hg_krmd(&t.problem, ks[j], &est, NULL), AD_OK);
        expect_lists_close(1, &pr.h[ks[j] - 1], &est, "toy against krmd", ks[j]);
        ad_value_free(est);
    }
    hg_profile_free(&pr);
    hg_profile_free(&pr); /* twice is fine, as is NULL */
    hg_profile_free(NULL);
    toy_free(&t);
}
END_TEST

/* Only the depths asked for are kept; row K always. */
START_TEST(toy_keeps_what_is_asked)
{
    toy t;
    ck_assert_int_eq(toy_init(&t, 1, 1, 40, 0.1, false), AD_OK);
    hg_profile pr;
    const int keep[] = { 3, 7, 500, 0 };
    ck_assert_int_eq(hg_truncation_profile(&t.problem, 10, &(hg_profile_opts){ .keep = keep, .n_keep = 4 },
                                           &pr), AD_OK);
    for (int k = 1; k <= 10; k++)
        ck_assert_msg((pr.h[k - 1] != NULL) == (k == 3 || k == 7 || k == 10), "k = %d", k);
    hg_profile_free(&pr);
    /* No options: row K only.  K beyond T: T rows. */
    ck_assert_int_eq(hg_truncation_profile(&t.problem, 1000, NULL, &pr), AD_OK);
    ck_assert_int_eq(pr.K, 40);
    for (int k = 1; k < 40; k++) ck_assert_ptr_null(pr.h[k - 1]);
    ck_assert(isnan(hg_profile_rel_error(&pr, 3))); /* row 3 not kept */
    ad_value *exact;
    ck_assert_int_eq(hg_full_rmd(&t.problem, &exact, NULL), AD_OK);
    expect_lists_close(1, &pr.h[39], &exact, "toy, all steps, against full RMD", 40);
    ad_value_free(exact);
    hg_profile_free(&pr);
    toy_free(&t);
}
END_TEST

/* ---- every inner optimizer --------------------------------------------------- */

enum { LN = 12, LD = LOGREG_D, LT = 10 };

typedef struct logreg {
    logreg_data d;             /* first: the fixture's callbacks take this struct as ctx */
    ad_value *hyper[3];        /* λ [LD] (per-feature log L2), then the optimizer's */
    hg_update custom;
    bool w0_from_lam;
    hg_problem p;
} logreg;

static int lr_w0(ad_tape *tp, ad_value *const *lam, ad_value **w0, void *ctx)
{
    const logreg *r = ctx;
    w0[0] = r->w0_from_lam ? ad_add_scalar(tp, ad_scale(tp, lam[0], 0.3), 0.2)
                           : ad_const(tp, 1, (int[]){ LD }, (ad_real[]){ -1, 1, -1 });
    return w0[0] ? AD_OK : ad_error_code();
}

/* Heavy ball written with the previous iterate as its state (s = w_{t−1}):
 * w ← w − 0.3 ∇g + σ(θ)(w − s), s ← w.  Its start s_0 = w_0 is the very
 * value w_0 (the state list then names one value twice), and each step's
 * new state is the step's input: the profile's pass must count each once. */
static int polyak_init(ad_tape *tp, int n_w, ad_value *const *w0, ad_value *const *lam,
                       ad_value **s0, void *ctx)
{
    (void)tp, (void)n_w, (void)lam, (void)ctx;
    s0[0] = w0[0];
    return AD_OK;
}

static int polyak_step(ad_tape *tp, int n_w, ad_value *const *w, ad_value *const *s,
                       ad_value *const *gw, ad_value *const *lam, int t, ad_value **w_new,
                       ad_value **s_new, void *ctx)
{
    (void)n_w, (void)t, (void)ctx;
    ad_value *push = ad_mul(tp, ad_sigmoid(tp, lam[1]), ad_sub(tp, w[0], s[0]));
    w_new[0] = ad_add(tp, ad_sub(tp, w[0], ad_scale(tp, gw[0], 0.3)), push);
    s_new[0] = w[0];
    return AD_OK;
}

/* An update that swaps its two state entries: w_t = s_{t−1}, s_t = w_{t−1} − 0.3 ∇g.  s_{t−1}
 * passes through the step unchanged, so the step's VJP hands back the seed of w_t itself as
 * s_{t−1}'s adjoint: writing v_{t−1} entry by entry would read an entry already overwritten. */
static int swap_init(ad_tape *tp, int n_w, ad_value *const *w0, ad_value *const *lam,
                     ad_value **s0, void *ctx)
{
    (void)n_w, (void)lam, (void)ctx;
    s0[0] = ad_add_scalar(tp, w0[0], 0.1);
    return s0[0] ? AD_OK : ad_error_code();
}

static int swap_step(ad_tape *tp, int n_w, ad_value *const *w, ad_value *const *s,
                     ad_value *const *gw, ad_value *const *lam, int t, ad_value **w_new,
                     ad_value **s_new, void *ctx)
{
    (void)n_w, (void)lam, (void)t, (void)ctx;
    w_new[0] = s[0];
    s_new[0] = ad_sub(tp, w[0], ad_scale(tp, gw[0], 0.3));
    return AD_OK;
}

enum { V_GD, V_GD_STEP, V_GD_LOGSTEP_W0, V_MOMENTUM, V_MOMENTUM_LEARNED, V_ADAM, V_ADAM_LOGSTEP,
       V_RMSPROP, V_CUSTOM_PERCOORD, V_CUSTOM_ADAGRAD, V_CUSTOM_POLYAK, V_CUSTOM_SWAP, N_VARIANTS };
static const char *const variant_name[] = {
    "gd", "gd, step learned", "gd, log step learned, w0(λ)", "momentum", "momentum, sigmoid μ and log γ learned",
    "adam", "adam, log step learned", "rmsprop, step learned", "custom: per-coordinate log steps",
    "custom: adagrad, learned start", "custom: heavy ball on the last iterate, w0(λ)",
    "custom: two state entries swapped" };

static void logreg_init(logreg *r, int variant)
{
    ad_rng rng;
    ad_rng_seed(&rng, 77);
    memset(r, 0, sizeof *r);
    r->d.X = ad_tensor_randn(&rng, 2, (int[]){ LN, LD }, 1);
    r->d.Xv = ad_tensor_randn(&rng, 2, (int[]){ LN, LD }, 1);
    r->d.y = ad_tensor_new(1, (int[]){ LN });
    r->d.yv = ad_tensor_new(1, (int[]){ LN });
    for (int n = 0; n < LN; n++) {
        r->d.y->data[n] = r->d.X->data[n * LD] - r->d.X->data[n * LD + 1] + 0.5 * ad_rng_normal(&rng) > 0 ? 1 : -1;
        r->d.yv->data[n] = r->d.Xv->data[n * LD] - r->d.Xv->data[n * LD + 1] + 0.5 * ad_rng_normal(&rng) > 0 ? 1 : -1;
    }
    r->hyper[0] = ad_param_from(1, (int[]){ LD }, (ad_real[]){ -1, 0, 0.5 });
    r->p = (hg_problem){ .n_w = 1, .n_hyper = 1, .hyper = r->hyper, .T = LT, .ctx = r,
                         .init = lr_w0, .inner = logreg_inner, .outer = logreg_outer,
                         .opt = { .kind = HG_GD, .step = 0.5 } };
    hg_inner_opt *o = &r->p.opt;
    switch (variant) {
    case V_GD_STEP:
        r->hyper[1] = ad_param_scalar(0.4);
        o->step_hyper = r->hyper[1];
        break;
    case V_GD_LOGSTEP_W0:
        r->hyper[1] = ad_param_scalar((ad_real)log(0.4));
        o->step_hyper = r->hyper[1];
        o->step_transform = HG_EXP;
        r->w0_from_lam = true;
        break;
    case V_MOMENTUM:
        *o = (hg_inner_opt){ .kind = HG_MOMENTUM, .step = 0.2, .momentum = 0.6 };
        break;
    case V_MOMENTUM_LEARNED:
        r->hyper[1] = ad_param_scalar((ad_real)log(0.2));
        r->hyper[2] = ad_param_scalar(0.4);
        *o = (hg_inner_opt){ .kind = HG_MOMENTUM, .step_hyper = r->hyper[1], .step_transform = HG_EXP,
                             .momentum_hyper = r->hyper[2], .momentum_transform = HG_SIGMOID };
        break;
    case V_ADAM:
        *o = hg_opt_adam(0.05);
        break;
    case V_ADAM_LOGSTEP:
        *o = hg_opt_adam(0);
        r->hyper[1] = ad_param_scalar((ad_real)log(0.05));
        o->step_hyper = r->hyper[1];
        o->step_transform = HG_EXP;
        break;
    case V_RMSPROP:
        *o = hg_opt_rmsprop(0);
        r->hyper[1] = ad_param_scalar(0.02);
        o->step_hyper = r->hyper[1];
        break;
    case V_CUSTOM_PERCOORD:
        r->hyper[1] = ad_param_from(1, (int[]){ LD }, (ad_real[]){ -1.5, -1, -2 });
        r->custom = (hg_update){ .name = "percoord", .n_state = 1, .step = logreg_percoord_step };
        *o = (hg_inner_opt){ .kind = HG_CUSTOM, .custom = &r->custom };
        break;
    case V_CUSTOM_ADAGRAD:
        r->hyper[1] = ad_param_from(1, (int[]){ LD }, (ad_real[]){ -1, 0, -0.5 });
        r->custom = (hg_update){ .name = "adagrad", .n_state = 1, .init = logreg_adagrad_init,
                                 .step = logreg_adagrad_step };
        *o = (hg_inner_opt){ .kind = HG_CUSTOM, .custom = &r->custom };
        break;
    case V_CUSTOM_POLYAK:
        r->hyper[1] = ad_param_scalar(-0.5);
        r->custom = (hg_update){ .name = "polyak", .n_state = 1, .init = polyak_init,
                                 .step = polyak_step };
        *o = (hg_inner_opt){ .kind = HG_CUSTOM, .custom = &r->custom };
        r->w0_from_lam = true;
        break;
    case V_CUSTOM_SWAP:
        r->custom = (hg_update){ .name = "swap", .n_state = 1, .init = swap_init, .step = swap_step };
        *o = (hg_inner_opt){ .kind = HG_CUSTOM, .custom = &r->custom };
        break;
    }
    r->p.n_hyper = r->hyper[2] ? 3 : r->hyper[1] ? 2 : 1;
}

static void logreg_free(logreg *r)
{
    ad_value *all[] = { r->d.X, r->d.y, r->d.Xv, r->d.yv, r->hyper[0], r->hyper[1], r->hyper[2] };
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) ad_value_free(all[i]);
}

static void free_n(int n, ad_value **v)
{
    for (int i = 0; i < n; i++) ad_value_free(v[i]);
}

START_TEST(profile_equals_krmd_for_every_optimizer)
{
    logreg r;
    logreg_init(&r, _i);
    const hg_problem *p = &r.p;
    int n = p->n_hyper;
    const int windows[] = { 4, LT };
    for (int w = 0; w < 2; w++) {
        hg_profile pr;
        int prc = hg_truncation_profile(p, windows[w], &(hg_profile_opts){ .keep_all = true }, &pr);
        ck_assert_msg(prc == AD_OK, "%s: %s", variant_name[_i], ad_error());
        ck_assert_msg(!pr.report.diverged, "%s", variant_name[_i]);
        for (int k = 1; k <= pr.K; k++) {
            ad_value *est[3], *ckp[3];
            ck_assert_int_eq(hg_krmd(p, k, est, NULL), AD_OK);
            expect_lists_close(n, pr.h + (size_t)(k - 1) * n, est, variant_name[_i], k);
            ck_assert_int_eq(hg_checkpoint(p, k, ckp, NULL), AD_OK); /* its own reverse steps */
            expect_lists_close(n, ckp, est, variant_name[_i], k);
            free_n(n, est);
            free_n(n, ckp);
            ck_assert(pr.contrib_norm[k - 1] >= 0 && pr.adjoint_norm[k - 1] > 0);
        }
        if (pr.K == LT) { /* all steps: full RMD, and the path through init */
            ad_value *exact[3];
            ck_assert_int_eq(hg_full_rmd(p, exact, NULL), AD_OK);
            expect_lists_close(n, pr.h + (size_t)(LT - 1) * n, exact, variant_name[_i], LT);
            free_n(n, exact);
            bool init_on_lam = _i == V_GD_LOGSTEP_W0 || _i == V_CUSTOM_ADAGRAD || _i == V_CUSTOM_POLYAK;
            ck_assert_msg((pr.init_norm > 0) == init_on_lam, "%s: init share %g", variant_name[_i],
                          pr.init_norm);
        }
        hg_profile_free(&pr);
    }
    logreg_free(&r);
}
END_TEST

/* ---- the contraction rate ---------------------------------------------------- */

START_TEST(toy_curvature_and_rate)
{
    toy t;
    ck_assert_int_eq(toy_init(&t, 1, 1, 100, 0.1, false), AD_OK);
    hg_curvature cv;
    ck_assert_int_eq(hg_curvature_estimate(&t.problem, 0, &cv), AD_OK);
    ck_assert_int_eq(cv.dim, 2);
    ck_assert_int_eq(cv.iters, 2); /* every dimension used */
    tu_expect_close(cv.alpha, 0.5, 16); /* G's eigenvalues */
    tu_expect_close(cv.L, 1, 16);
    ck_assert_double_le(cv.alpha_resid, TU_TOL(16));
    ck_assert_double_le(cv.L_resid, TU_TOL(16));
    tu_expect_close(cv.q, 0.95, 16); /* max |1 − γλ| = 1 − 0.1·½ */
    ck_assert_int_eq(cv.kind, HG_GD);
    /* The profile falls like q^k once the faster mode (0.9) has gone. */
    hg_profile pr;
    ck_assert_int_eq(hg_truncation_profile(&t.problem, 100, NULL, &pr), AD_OK);
    double r = pow(pr.contrib_norm[99] / pr.contrib_norm[59], 1.0 / 40);
    ck_assert_msg(fabs(r - cv.q) < 2e-3, "measured %.6f, q %.6f", r, cv.q);
    hg_profile_free(&pr);
    /* Past 1/L: the other end of the spectrum sets q. */
    t.problem.opt.step = 1.5;
    ck_assert_int_eq(hg_curvature_estimate(&t.problem, 0, &cv), AD_OK);
    tu_expect_close(cv.q, 0.5, 16); /* max(|1 − 0.75|, |1 − 1.5|) */
    toy_free(&t);
}
END_TEST

/* Heavy ball: q is the spectral radius of (w, v) ↦ (w − γ(μv + Hw), μv + Hw),
 * here from the complex eigenvalues of its 2 × 2 blocks, and the adjoints
 * of the profile fall at that rate. */
START_TEST(heavy_ball_rate)
{
    toy t;
    ck_assert_int_eq(toy_init(&t, 1, 1, 300, 0.1, false), AD_OK);
    const double mus[] = { 0.3, 0.8 }; /* real roots at α; complex at both ends */
    for (int m = 0; m < 2; m++) {
        double mu = mus[m], gamma = 0.1, want = 0;
        t.problem.opt = (hg_inner_opt){ .kind = HG_MOMENTUM, .step = gamma, .momentum = mu };
        for (int e = 0; e < 2; e++) {
            double h = e ? 1 : 0.5, b = 1 + mu - gamma * h;
            double complex s = csqrt(b * b - 4 * mu + 0 * I);
            want = fmax(want, fmax(cabs((b + s) / 2), cabs((b - s) / 2)));
        }
        hg_curvature cv;
        ck_assert_int_eq(hg_curvature_estimate(&t.problem, 0, &cv), AD_OK);
        tu_expect_close(cv.q, want, 64);
        tu_expect_close(cv.momentum, mu, 1);
        hg_profile pr;
        ck_assert_int_eq(hg_truncation_profile(&t.problem, 300, NULL, &pr), AD_OK);
        double r = pow(pr.adjoint_norm[299] / pr.adjoint_norm[149], 1.0 / 150);
        ck_assert_msg(fabs(r - want) < 0.01, "μ = %g: measured %.6f, radius %.6f", mu, r, want);
        hg_profile_free(&pr);
    }
    /* Adam has no such formula. */
    t.problem.opt = hg_opt_adam(0.01);
    hg_curvature cv;
    ck_assert_int_eq(hg_curvature_estimate(&t.problem, 0, &cv), AD_OK);
    ck_assert(isnan(cv.q));
    toy_free(&t);
}
END_TEST

/* ---- ridge regression with an orthogonal design -------------------------------
 *   g(w, λ) = (1/2n) Σᵢ (xᵢ wᵢ − yᵢ)² + (e^λ/2) ‖w‖²,  f(w) = ½ ‖w − b‖²,
 * n = d = 3: H = diag(xᵢ²/n + e^λ), GD from w = 0.  w_t moves from 0 toward
 * w* without changing sign, and b = ½w* keeps ∇ŵf on the side of w*, so each
 * share −γe^λ Σᵢ w_{t−1,i} (1 − γHᵢ)^{T−t} (ŵ − b)ᵢ is negative: the sum of
 * their sizes is the size of their sum, and the profile's estimate is the
 * truncation error itself. */

enum { RD = 3, RT = 200 };
static const double ridge_x[RD] = { 2.0, 1.2, 0.5 }, ridge_y[RD] = { 1.0, -2.0, 1.5 };
static const double ridge_gamma = 0.5, ridge_lam = -1.0;

typedef struct ridge {
    ad_value *lam, *x, *y, *b;
    hg_problem p;
} ridge;

static ad_value *ridge_inner(ad_tape *tp, ad_value *const *w, ad_value *const *lam, int t, void *ctx)
{
    (void)t;
    const ridge *r = ctx;
    ad_value *res = ad_sub(tp, ad_mul(tp, r->x, w[0]), r->y);
    ad_value *fit = ad_scale(tp, ad_sqnorm(tp, res), 0.5 / RD);
    return ad_add(tp, fit, ad_scale(tp, ad_mul(tp, ad_exp(tp, lam[0]), ad_sqnorm(tp, w[0])), 0.5));
}

static ad_value *ridge_outer(ad_tape *tp, ad_value *const *w, ad_value *const *lam, void *ctx)
{
    (void)lam;
    const ridge *r = ctx;
    return ad_scale(tp, ad_sqnorm(tp, ad_sub(tp, w[0], r->b)), 0.5);
}

static int ridge_w0(ad_tape *tp, ad_value *const *lam, ad_value **w0, void *ctx)
{
    (void)lam, (void)ctx;
    w0[0] = ad_const_fill(tp, 1, (int[]){ RD }, 0);
    return w0[0] ? AD_OK : ad_error_code();
}

static double ridge_h(int i) { return ridge_x[i] * ridge_x[i] / RD + exp(ridge_lam); }

static void ridge_init(ridge *r)
{
    double b[RD];
    for (int i = 0; i < RD; i++) b[i] = 0.5 * (ridge_x[i] * ridge_y[i] / RD) / ridge_h(i);
    r->lam = ad_param_scalar(ridge_lam);
    r->x = ad_tensor_from(1, (int[]){ RD }, (ad_real[]){ ridge_x[0], ridge_x[1], ridge_x[2] });
    r->y = ad_tensor_from(1, (int[]){ RD }, (ad_real[]){ ridge_y[0], ridge_y[1], ridge_y[2] });
    r->b = ad_tensor_from(1, (int[]){ RD }, (ad_real[]){ (ad_real)b[0], (ad_real)b[1], (ad_real)b[2] });
    r->p = (hg_problem){ .n_w = 1, .n_hyper = 1, .hyper = &r->lam, .T = RT, .ctx = r,
                         .init = ridge_w0, .inner = ridge_inner, .outer = ridge_outer,
                         .opt = { .kind = HG_GD, .step = ridge_gamma } };
}

static void ridge_free(ridge *r)
{
    ad_value_free(r->lam), ad_value_free(r->x), ad_value_free(r->y), ad_value_free(r->b);
}

/* The closed form in plain doubles: every share c_k (k = 1..T), the exact
 * hypergradient, ‖∇ŵf‖ and M_B = max_t ‖B_t‖ = γ e^λ max_t ‖w_{t−1}‖. */
static void ridge_closed_form(double *c, double *exact, double *gw_norm, double *m_b)
{
    double w[RT + 1][RD], e = exp(ridge_lam), bmax = 0;
    for (int i = 0; i < RD; i++) w[0][i] = 0;
    for (int t = 1; t <= RT; t++)
        for (int i = 0; i < RD; i++)
            w[t][i] = w[t - 1][i] - ridge_gamma * (ridge_h(i) * w[t - 1][i] - ridge_x[i] * ridge_y[i] / RD);
    double g[RD], gn = 0;
    for (int i = 0; i < RD; i++) {
        double b = 0.5 * (ridge_x[i] * ridge_y[i] / RD) / ridge_h(i);
        g[i] = w[RT][i] - b;
        gn += g[i] * g[i];
    }
    *exact = 0;
    for (int k = 1; k <= RT; k++) {
        int t = RT - k + 1;
        double s = 0, wn = 0;
        for (int i = 0; i < RD; i++) {
            s += w[t - 1][i] * pow(1 - ridge_gamma * ridge_h(i), k - 1) * g[i];
            wn += w[t - 1][i] * w[t - 1][i];
        }
        c[k - 1] = -ridge_gamma * e * s;
        *exact += c[k - 1];
        bmax = fmax(bmax, sqrt(wn));
    }
    *gw_norm = sqrt(gn);
    *m_b = ridge_gamma * e * bmax;
}

START_TEST(ridge_choose_k)
{
    ridge r;
    ridge_init(&r);
    double c[RT], exact, gw, m_b;
    ridge_closed_form(c, &exact, &gw, &m_b);
    for (int k = 0; k < RT; k++) ck_assert_double_lt(c[k], 1e-300); /* all one sign */
    /* The curvature: H = diag(xᵢ²/3 + e^λ). */
    hg_curvature cv;
    ck_assert_int_eq(hg_curvature_estimate(&r.p, 10, &cv), AD_OK);
    double alpha = ridge_h(2), L = ridge_h(0), q = fmax(fabs(1 - ridge_gamma * alpha), fabs(1 - ridge_gamma * L));
    ck_assert_int_eq(cv.iters, 3);
    tu_expect_close(cv.alpha, alpha, 64);
    tu_expect_close(cv.L, L, 64);
    tu_expect_close(cv.q, q, 64);
    const double tols[] = { 0.1, 0.01, 1e-3 };
    for (int j = 0; j < 3; j++) {
        double tol = tols[j];
        /* The closed form: the smallest K whose error |Σ_{k>K} c_k| / |exact| < tol. */
        int K_star = RT;
        double tail = 0;
        for (int K = RT - 1; K >= 1; K--) {
            tail += c[K];
            if (fabs(tail) / fabs(exact) >= tol) break;
            K_star = K;
        }
        /* Prop. 3.1 with the true α, q and M_B. */
        int K_bound = (int)ceil(log(tol * fabs(exact) * (1 - q) / (gw * m_b)) / log(q));
        hg_choice ch;
        hg_curvature got;
        ck_assert_int_eq(hg_choose_k(&r.p, tol, &(hg_choose_opts){ .window = RT, .m_b = m_b }, &ch, &got),
                         AD_OK);
        ck_assert_int_eq(ch.window, RT);
        ck_assert_msg(ch.K_profile == K_star, "tol %g: profile %d, closed form %d", tol, ch.K_profile, K_star);
        ck_assert_msg(ch.K_bound == K_bound, "tol %g: bound %d, closed form %d", tol, ch.K_bound, K_bound);
        ck_assert_int_ge(ch.K_bound, K_star); /* a true bound never asks for less */
        ck_assert_int_eq(ch.K, K_star);
        ck_assert_str_eq(ch.decided_by, K_bound == K_star ? "profile and bound" : "profile");
        ck_assert_double_lt(ch.est_error, tol);
        tu_expect_close(got.alpha, alpha, 64);
        /* A window short of K*: the tail is extrapolated (a geometric fit that
         * decays no faster than q), never below the truth, and close to it
         * when the window holds enough shares to fit; from a window of 3
         * (too few) q alone carries the last share on. */
        const int windows[] = { K_star / 2 > 6 ? K_star / 2 : 6, 3 };
        for (int w = 0; w < 2; w++) {
            hg_choice sw;
            ck_assert_int_eq(hg_choose_k(&r.p, tol, &(hg_choose_opts){ .window = windows[w], .m_b = m_b },
                                         &sw, NULL), AD_OK);
            ck_assert_int_eq(sw.window, windows[w]);
            int slack = w == 0 ? K_star / 10 + 2 : RT;
            ck_assert_msg(sw.K_profile >= K_star && sw.K_profile <= K_star + slack,
                          "tol %g, window %d: profile %d, closed form %d", tol, windows[w], sw.K_profile,
                          K_star);
            tu_expect_close(sw.tail_rate, q, 64); /* the slowest mode: q */
        }
    }
    ridge_free(&r);
}
END_TEST

/* The toy at 1 %: the profile's choice against the closed form's error. */
START_TEST(toy_choose_k)
{
    toy t;
    ck_assert_int_eq(toy_init(&t, 1, 1, 100, 0.1, false), AD_OK);
    double w[2], exact[2], h[2];
    toy_closed_form(&t, 100, w, exact);
    int K_star = 0;
    for (int K = 1; K <= 100 && !K_star; K++) {
        toy_closed_form(&t, K, w, h);
        if (hypot(h[0] - exact[0], h[1] - exact[1]) / hypot(exact[0], exact[1]) < 0.01) K_star = K;
    }
    ck_assert_int_eq(K_star, 77);
    hg_choice ch;
    ck_assert_int_eq(hg_choose_k(&t.problem, 0.01, NULL, &ch, NULL), AD_OK);
    ck_assert_int_eq(ch.K, K_star);
    ck_assert_str_eq(ch.decided_by, "profile");
    ck_assert(ch.exact_in_window);
    ck_assert_int_eq(hg_choose_k(&t.problem, 0.01, &(hg_choose_opts){ .norms_only = true }, &ch, NULL),
                     AD_OK);
    ck_assert(!ch.exact_in_window);
    ck_assert_int_eq(ch.K, K_star); /* the two coordinates' shares never point apart */
    /* From a short window the estimate errs on the safe side. */
    ck_assert_int_eq(hg_choose_k(&t.problem, 0.01, &(hg_choose_opts){ .window = 20 }, &ch, NULL), AD_OK);
    ck_assert_int_ge(ch.K, K_star);
    ck_assert_int_le(ch.K, 90);
    toy_free(&t);
}
END_TEST

/* Heavy ball with μ = 0.8 spirals: its shares change sign, so their norms
 * add up to far more than the error.  With every row kept the window's
 * error is the true one (hg_krmd at each K says which K is enough); the
 * norms alone ask for more. */
START_TEST(kept_rows_see_cancellation)
{
    toy t;
    ck_assert_int_eq(toy_init(&t, 1, 1, 100, 0.1, false), AD_OK);
    t.problem.opt = (hg_inner_opt){ .kind = HG_MOMENTUM, .step = 0.1, .momentum = 0.8 };
    ad_value *exact, *h;
    ck_assert_int_eq(hg_full_rmd(&t.problem, &exact, NULL), AD_OK);
    int K_star = 100;
    for (int K = 99; K >= 1; K--) {
        ck_assert_int_eq(hg_krmd(&t.problem, K, &h, NULL), AD_OK);
        double err = hg_compare_grads(1, &h, &exact).rel_error;
        ad_value_free(h);
        if (err >= 0.01) break;
        K_star = K;
    }
    hg_choice rows, norms;
    ck_assert_int_eq(hg_choose_k(&t.problem, 0.01, NULL, &rows, NULL), AD_OK);
    ck_assert_int_eq(hg_choose_k(&t.problem, 0.01, &(hg_choose_opts){ .norms_only = true }, &norms,
                                 NULL), AD_OK);
    ck_assert_int_eq(rows.K_profile, K_star);
    ck_assert_int_eq(rows.K_bound, 0); /* the bound is gradient descent's */
    ck_assert_msg(norms.K_profile > K_star + 5, "norms %d, truth %d", norms.K_profile, K_star); /* 47, 36 */
    ad_value_free(exact);
    toy_free(&t);
}
END_TEST

/* ---- hg_sweep: one pass -------------------------------------------------------- */

START_TEST(sweep_is_one_pass)
{
    logreg r;
    logreg_init(&r, V_MOMENTUM_LEARNED);
    const int Ks[] = { 1, 4, LT, 3 * LT };
    hg_sweep_result sw;
    ck_assert_int_eq(hg_sweep(&r.p, Ks, 4, &sw, NULL), AD_OK);
    int n = r.p.n_hyper;
    ad_value *exact[3];
    ck_assert_int_eq(hg_full_rmd(&r.p, exact, NULL), AD_OK);
    expect_lists_close(n, sw.exact, exact, "sweep's exact", LT);
    for (int i = 0; i < 4; i++) {
        ad_value *est[3];
        ck_assert_int_eq(hg_krmd(&r.p, Ks[i], est, NULL), AD_OK);
        expect_lists_close(n, sw.estimates + (size_t)i * n, est, "sweep's estimate", Ks[i]);
        ck_assert_double_eq(sw.rows[i].report.seconds, sw.exact_report.seconds);
        free_n(n, est);
    }
    ck_assert_double_eq(sw.rows[2].cmp.rel_error, 0);
    ck_assert_double_eq(sw.rows[3].cmp.rel_error, 0);
    free_n(n, exact);
    hg_sweep_free(&sw);
    logreg_free(&r);
}
END_TEST

/* ---- errors ------------------------------------------------------------------- */

START_TEST(profile_errors)
{
    toy t;
    ck_assert_int_eq(toy_init(&t, 1, 1, 20, 0.1, false), AD_OK);
    hg_profile pr;
    ck_assert_int_eq(hg_truncation_profile(&t.problem, 0, NULL, &pr), AD_EARG);
    ck_assert_str_eq(ad_error(), "profile: K must be >= 1, got 0");
    ck_assert_ptr_null(pr.h);
    ck_assert_int_eq(hg_truncation_profile(&t.problem, 5, NULL, NULL), AD_EARG);
    ck_assert_int_eq(hg_truncation_profile(NULL, 5, NULL, &pr), AD_EARG);
    ck_assert_str_eq(ad_error(), "profile: problem: NULL");
    ck_assert_int_eq(hg_curvature_estimate(&t.problem, 5, NULL), AD_EARG);
    hg_choice ch;
    ck_assert_int_eq(hg_choose_k(&t.problem, 0, NULL, &ch, NULL), AD_EARG);
    ck_assert_str_eq(ad_error(), "choose_k: tol must be in (0, 1), got 0");
    ck_assert_int_eq(hg_choose_k(&t.problem, 1, NULL, &ch, NULL), AD_EARG);
    ck_assert_int_eq(hg_choose_k(&t.problem, NAN, NULL, &ch, NULL), AD_EARG);
    hg_profile empty = { 0 };
    ck_assert_int_eq(hg_choose_k_from(&empty, NULL, 0.1, 0, &ch), AD_EARG);
    ck_assert_str_eq(ad_error(), "choose_k: the profile is empty");
    /* γ = 60: the iterates overflow; AD_ENONFINITE, named. */
    toy_free(&t);
    ck_assert_int_eq(toy_init(&t, 1, 1, 100, 60, false), AD_OK);
    ck_assert_int_eq(hg_truncation_profile(&t.problem, 5, NULL, &pr), AD_ENONFINITE);
    ck_assert_msg(strncmp(ad_error(), "profile: the outer loss is ", 27) == 0 &&
                  strstr(ad_error(), "the inner optimizer diverged"), "%s", ad_error()); /* Inf, or NaN in float */
    ck_assert_ptr_null(pr.h);
    ck_assert(pr.report.diverged && pr.report.inner_nonfinite_step > 1);
    toy_free(&t);
}
END_TEST

Suite *profile_suite(void);
Suite *profile_suite(void)
{
    Suite *s = suite_create("profile");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, toy_every_depth_from_one_pass, 0, 4);
    tcase_add_test(tc, toy_keeps_what_is_asked);
    tcase_add_loop_test(tc, profile_equals_krmd_for_every_optimizer, 0, N_VARIANTS);
    tcase_add_test(tc, toy_curvature_and_rate);
    tcase_add_test(tc, heavy_ball_rate);
    tcase_add_test(tc, ridge_choose_k);
    tcase_add_test(tc, toy_choose_k);
    tcase_add_test(tc, kept_rows_see_cancellation);
    tcase_add_test(tc, sweep_is_one_pass);
    tcase_add_test(tc, profile_errors);
    suite_add_tcase(s, tc);
    return s;
}
