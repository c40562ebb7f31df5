/* test_hypergrad.c — the estimators against each other, against closed
 * forms, and against finite differences of the outer loss; on the toy, on
 * ridge regression with a learned per-feature penalty, with the inner step
 * size as a hyperparameter, and with momentum. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "experiments/toy_problem.h"
#include "ops/ops.h"
#include "optim/hypergrad.h"
#include "optim/outer.h"
#include "testutil.h"

/* The toy's 100 steps, and the 60 or 400 of the ridge problem, against
 * closed forms or another estimator, relative: both builds land within 5 ε
 * (measured); 64 ε leaves room for another libm or BLAS. */
enum { TOY_ULPS = 64, RIDGE_ULPS = 64 };

static double max_rel(int n, ad_value *const *a, ad_value *const *b)
{
    hg_compare c = hg_compare_grads(n, a, b);
    return c.rel_error;
}

static void free_n(int n, ad_value **v)
{
    for (int i = 0; i < n; i++) ad_value_free(v[i]);
}

/* ---- toy --------------------------------------------------------------- */

START_TEST(toy_estimators_agree)
{
    const double lams[][2] = { { 1, 1 }, { -0.5, 2 }, { 0.3, -1.2 } };
    const int Ks[] = { 1, 2, 5, 10, 25, 50, 100 };
    for (size_t l = 0; l < 3; l++) {
        toy t;
        ck_assert_int_eq(toy_init(&t, lams[l][0], lams[l][1], 100, 0.1, _i == 1), AD_OK);
        ad_value *exact, *est;
        double w[2], h[2];
        ck_assert_int_eq(hg_full_rmd(&t.problem, &exact, NULL), AD_OK);
        for (size_t k = 0; k < sizeof Ks / sizeof *Ks; k++) {
            ck_assert_int_eq(hg_krmd(&t.problem, Ks[k], &est, NULL), AD_OK);
            toy_closed_form(&t, Ks[k], w, h);
            ck_assert_msg(hypot(est->data[0] - h[0], est->data[1] - h[1]) <= TU_TOL(TOY_ULPS) * hypot(h[0], h[1]),
                          "krmd K=%d: (%.17g,%.17g) vs closed form (%.17g,%.17g)", Ks[k],
                          est->data[0], est->data[1], h[0], h[1]);
            ad_value_free(est);
            /* Neumann with K terms is h_{T−K} exactly here (the Hessian is constant). */
            ck_assert_int_eq(hg_neumann(&t.problem, Ks[k], &est, NULL), AD_OK);
            ck_assert_msg(hypot(est->data[0] - h[0], est->data[1] - h[1]) <= TU_TOL(TOY_ULPS) * hypot(h[0], h[1]),
                          "neumann K=%d", Ks[k]);
            ad_value_free(est);
            /* Checkpointing, with truncation too. */
            ck_assert_int_eq(hg_checkpoint(&t.problem, Ks[k], &est, NULL), AD_OK);
            ck_assert_msg(hypot(est->data[0] - h[0], est->data[1] - h[1]) <= TU_TOL(TOY_ULPS) * hypot(h[0], h[1]),
                          "checkpoint K=%d", Ks[k]);
            ad_value_free(est);
        }
        ck_assert_int_eq(hg_fmd(&t.problem, &est, NULL), AD_OK);
        ck_assert_double_le(max_rel(1, &est, &exact), TU_TOL(TOY_ULPS));
        ad_value_free(est);
        /* CG solves the implicit system: dλf at the fixed point is ∇ŵf
         * (plus f̃'s direct term), which full RMD approaches as C → 0. */
        ck_assert_int_eq(hg_implicit_cg(&t.problem, 10, 1e-14, &est, NULL), AD_OK);
        toy_closed_form(&t, 1, w, h);
        for (int i = 0; i < 2; i++)
            h[i] = 2 * w[i] + 10 * sin(2 * w[i]) + (t.tilde ? 10 * (lams[l][i] - (i == 0)) : 0);
        ck_assert_double_le(hypot(est->data[0] - h[0], est->data[1] - h[1]),
                            (1e-9 + TU_TOL(TOY_ULPS)) * hypot(h[0], h[1]));
        ad_value_free(est);
        ad_value_free(exact);
        toy_free(&t);
    }
}
END_TEST

START_TEST(toy_memory)
{
    size_t krmd[2], ckpt[2], fmd[2];
    const int Ts[2] = { 100, 400 };
    for (int i = 0; i < 2; i++) {
        toy t;
        hg_report r;
        ad_value *est;
        ck_assert_int_eq(toy_init(&t, 1, 1, Ts[i], 0.1, false), AD_OK);
        ck_assert_int_eq(hg_krmd(&t.problem, 10, &est, &r), AD_OK);
        krmd[i] = r.peak_tape_bytes;
        ad_value_free(est);
        ck_assert_int_eq(hg_checkpoint(&t.problem, Ts[i], &est, &r), AD_OK);
        ckpt[i] = r.checkpoint_bytes + r.peak_tape_bytes;
        ad_value_free(est);
        ck_assert_int_eq(hg_fmd(&t.problem, &est, &r), AD_OK);
        fmd[i] = r.peak_tape_bytes + r.checkpoint_bytes;
        ad_value_free(est);
        toy_free(&t);
    }
    ck_assert_uint_eq(krmd[0], krmd[1]);
    ck_assert_uint_eq(fmd[0], fmd[1]);
    /* √400/√100 = 2: the checkpoint memory doubles while T quadruples. */
    double ratio = (double)ckpt[1] / (double)ckpt[0];
    ck_assert_msg(ratio > 1.6 && ratio < 2.4, "checkpoint memory ratio %.3f", ratio);
}
END_TEST

/* ---- ridge regression with a learned penalty per feature ------------------
 * g(w, λ) = ½‖Xw − y‖²/n + ½ Σᵢ e^{λᵢ} wᵢ²,  f(w) = ½‖X_v w − y_v‖²/n_v.
 * Variants: the inner step size as a hyperparameter; heavy-ball momentum. */

enum { RN = 12, RD = 3 };

typedef struct ridge {
    ad_value *X, *y, *Xv, *yv; /* caller-owned data */
    ad_value *lam, *gamma, *mu;
    ad_value *hyper[3];
    hg_problem p;
} ridge;

static ad_value *sq_residual(ad_tape *tp, ad_value *X, ad_value *w, ad_value *y)
{
    ad_value *Xw = ad_reshape(tp, ad_matmul(tp, X, ad_reshape(tp, w, 2, (int[]){ RD, 1 }), false, false),
                              1, (int[]){ X->shape[0] });
    return ad_scale(tp, ad_sqnorm(tp, ad_sub(tp, Xw, y)), 0.5 / X->shape[0]);
}

static int ridge_w0(ad_tape *tp, ad_value *const *lam, ad_value **w0, void *ctx)
{
    (void)lam;
    (void)ctx;
    w0[0] = ad_const(tp, 1, (int[]){ RD }, (ad_real[]){ 0.5, -0.5, 0.25 });
    return AD_OK;
}

static ad_value *ridge_inner(ad_tape *tp, ad_value *const *w, ad_value *const *lam, int t, void *ctx)
{
    (void)t;
    ridge *r = ctx;
    ad_value *pen = ad_scale(tp, ad_dot(tp, ad_exp(tp, lam[0]), ad_square(tp, w[0])), 0.5);
    return ad_add(tp, sq_residual(tp, r->X, w[0], r->y), pen);
}

static ad_value *ridge_outer(ad_tape *tp, ad_value *const *w, ad_value *const *lam, void *ctx)
{
    (void)lam;
    ridge *r = ctx;
    return sq_residual(tp, r->Xv, w[0], r->yv);
}

/* variant 0: plain GD; 1: γ is a hyperparameter; 2: momentum, μ a hyperparameter. */
static void ridge_init(ridge *r, int variant, int T)
{
    ad_rng rng;
    ad_rng_seed(&rng, 77);
    memset(r, 0, sizeof *r);
    r->X = ad_tensor_randn(&rng, 2, (int[]){ RN, RD }, 1);
    r->y = ad_tensor_randn(&rng, 1, (int[]){ RN }, 1);
    r->Xv = ad_tensor_randn(&rng, 2, (int[]){ RN, RD }, 1);
    r->yv = ad_tensor_randn(&rng, 1, (int[]){ RN }, 1);
    r->lam = ad_param_from(1, (int[]){ RD }, (ad_real[]){ -1, 0, 0.5 });
    r->gamma = ad_param_scalar(0.2);
    r->mu = ad_param_scalar(0.5);
    r->hyper[0] = r->lam;
    r->hyper[1] = variant == 2 ? r->mu : r->gamma;
    r->p = (hg_problem){ .n_w = 1, .n_hyper = variant ? 2 : 1, .hyper = r->hyper, .T = T,
                         .opt = { .kind = variant == 2 ? HG_MOMENTUM : HG_GD, .step = 0.2,
                                  .momentum = 0.5, .step_hyper = variant == 1 ? r->gamma : NULL,
                                  .momentum_hyper = variant == 2 ? r->mu : NULL },
                         .ctx = r, .init = ridge_w0, .inner = ridge_inner, .outer = ridge_outer };
}

static void ridge_free(ridge *r)
{
    ad_value *all[] = { r->X, r->y, r->Xv, r->yv, r->lam, r->gamma, r->mu };
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) ad_value_free(all[i]);
}

/* dλf by central differences of f(ŵ(λ)), the outer loss K-RMD reports. */
static double fd_entry(ridge *r, ad_value *h, size_t j)
{
    double eps = TU_FD_STEP, f[2];
    ad_real keep = h->data[j];
    for (int s = 0; s < 2; s++) {
        hg_report rep;
        ad_value *tmp[2];
        h->data[j] = (ad_real)(keep + (s ? -eps : eps));
        ck_assert_int_eq(hg_krmd(&r->p, 1, tmp, &rep), AD_OK);
        free_n(r->p.n_hyper, tmp);
        f[s] = rep.outer_loss;
    }
    h->data[j] = keep;
    return (f[0] - f[1]) / ((double)(ad_real)(keep + eps) - (double)(ad_real)(keep - eps));
}

START_TEST(ridge_estimators_agree)
{
    ridge r;
    ridge_init(&r, _i, 60);
    int n = r.p.n_hyper;
    ad_value *exact[2], *est[2];
    ck_assert_int_eq(hg_full_rmd(&r.p, exact, NULL), AD_OK);
    /* Full RMD against finite differences, entry by entry. */
    for (int h = 0; h < n; h++)
        for (size_t j = 0; j < r.hyper[h]->size; j++) {
            double fd = fd_entry(&r, r.hyper[h], j), a = exact[h]->data[j];
            ck_assert_msg(fabs(fd - a) <= TU_FD_TOL * fmax(1, fabs(a)), "variant %d, hyper %d[%zu]: "
                          "rmd %.12g fd %.12g", _i, h, j, a, fd);
        }
    ck_assert_int_eq(hg_checkpoint(&r.p, r.p.T, est, NULL), AD_OK);
    ck_assert_double_le(max_rel(n, est, exact), TU_TOL(RIDGE_ULPS));
    free_n(n, est);
    ck_assert_int_eq(hg_fmd(&r.p, est, NULL), AD_OK);
    ck_assert_double_le(max_rel(n, est, exact), TU_TOL(RIDGE_ULPS));
    free_n(n, est);
    /* Truncated checkpointing equals K-RMD. */
    ad_value *k[2];
    ck_assert_int_eq(hg_krmd(&r.p, 7, k, NULL), AD_OK);
    ck_assert_int_eq(hg_checkpoint(&r.p, 7, est, NULL), AD_OK);
    ck_assert_double_le(max_rel(n, est, k), TU_TOL(RIDGE_ULPS));
    free_n(n, est);
    free_n(n, k);
    if (_i > 0) { /* an optimizer hyperparameter: implicit must refuse */
        ck_assert_int_eq(hg_implicit_cg(&r.p, 10, 1e-10, est, NULL), AD_EUNSUPPORTED);
        ck_assert_ptr_nonnull(strstr(ad_error(), "drives the inner optimizer"));
        ck_assert_int_eq(hg_neumann(&r.p, 10, est, NULL), AD_EUNSUPPORTED);
    }
    free_n(n, exact);
    ridge_free(&r);
}
END_TEST

/* On the strongly convex ridge problem, CG and a long Neumann series reach
 * the implicit-function answer, solved here directly:
 *   H = XᵀX/n + diag(e^λ),  v = H⁻¹ ∇f(w*),  dλᵢ f = −e^{λᵢ} w*ᵢ vᵢ. */
START_TEST(ridge_implicit_converges)
{
    ridge r;
    ridge_init(&r, 0, 400);
    double H[RD][RD + 1] = { { 0 } }, b[RD] = { 0 }, w[RD];
    for (int i = 0; i < RD; i++) {
        for (int j = 0; j < RD; j++)
            for (int k = 0; k < RN; k++) H[i][j] += r.X->data[k * RD + i] * r.X->data[k * RD + j] / RN;
        H[i][i] += exp(r.lam->data[i]);
        for (int k = 0; k < RN; k++) b[i] += r.X->data[k * RD + i] * r.y->data[k] / RN;
    }
    /* w* = H⁻¹ Xᵀy/n, then ∇f(w*) = X_vᵀ(X_v w* − y_v)/n_v, then v = H⁻¹ ∇f. */
    double A[RD][RD + 1];
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < RD; i++) {
            for (int j = 0; j < RD; j++) A[i][j] = H[i][j];
            A[i][RD] = b[i];
        }
        for (int c = 0; c < RD; c++) /* Gauss–Jordan, H is SPD */
            for (int i = 0; i < RD; i++)
                if (i != c) {
                    double m = A[i][c] / A[c][c];
                    for (int j = c; j <= RD; j++) A[i][j] -= m * A[c][j];
                }
        for (int i = 0; i < RD; i++) (pass ? b : w)[i] = A[i][RD] / A[i][i];
        if (pass == 0) {
            for (int i = 0; i < RD; i++) b[i] = 0;
            for (int k = 0; k < RN; k++) {
                double res = -r.yv->data[k];
                for (int j = 0; j < RD; j++) res += r.Xv->data[k * RD + j] * w[j];
                for (int i = 0; i < RD; i++) b[i] += r.Xv->data[k * RD + i] * res / RN;
            }
        }
    }
    double want[RD];
    for (int i = 0; i < RD; i++) want[i] = -exp(r.lam->data[i]) * w[i] * b[i];
    ad_value *want_v = ad_tensor_from(1, (int[]){ RD }, (ad_real[]){ (ad_real)want[0], (ad_real)want[1], (ad_real)want[2] });
    ad_value *est;
    ck_assert_int_eq(hg_implicit_cg(&r.p, 50, 1e-13, &est, NULL), AD_OK);
    ck_assert_double_le(max_rel(1, &est, &want_v), 1e-8 + TU_TOL(RIDGE_ULPS));
    ad_value_free(est);
    ck_assert_int_eq(hg_neumann(&r.p, 3000, &est, NULL), AD_OK);
    ck_assert_double_le(max_rel(1, &est, &want_v), 1e-6 + TU_TOL(RIDGE_ULPS));
    ad_value_free(est);
    ad_value_free(want_v);
    ridge_free(&r);
}
END_TEST

/* CG with tol = 0 runs on past convergence: in the float build its residual
 * then shrinks until d and H d underflow and dᵀHd = 0, which was reported as
 * an indefinite Hessian from 22 iterations on (the diff reviewer's problem:
 * g = ½Σ a w² + λ·w + 0.05 Σ λ² w², f = c·w + 0.01‖λ‖², T = 2000). */
enum { CG_D = 4 };
typedef struct { ad_value *a, *c; } cg_pr;
static int cg_init(ad_tape *tp, ad_value *const *lam, ad_value **w0, void *ctx)
{
    (void)lam, (void)ctx;
    w0[0] = ad_const_fill(tp, 1, (int[]){ CG_D }, 0.5);
    return w0[0] ? AD_OK : ad_error_code();
}
static ad_value *cg_inner(ad_tape *tp, ad_value *const *w, ad_value *const *lam, int t, void *ctx)
{
    (void)t;
    cg_pr *q = ctx;
    ad_value *w2 = ad_mul(tp, w[0], w[0]);
    return ad_add(tp, ad_add(tp, ad_scale(tp, ad_dot(tp, q->a, w2), 0.5), ad_dot(tp, lam[0], w[0])),
                  ad_scale(tp, ad_dot(tp, ad_mul(tp, lam[0], lam[0]), w2), 0.05));
}
static ad_value *cg_outer(ad_tape *tp, ad_value *const *w, ad_value *const *lam, void *ctx)
{
    cg_pr *q = ctx;
    return ad_add(tp, ad_dot(tp, q->c, w[0]), ad_scale(tp, ad_sqnorm(tp, lam[0]), 0.01));
}

START_TEST(cg_past_convergence)
{
    cg_pr q = { ad_tensor_from(1, (int[]){ CG_D }, (ad_real[]){ 1, 0.5, 2, 0.8 }),
                ad_tensor_from(1, (int[]){ CG_D }, (ad_real[]){ 0.1, -0.7, 1.3, 0.4 }) };
    ad_value *lam = ad_param_from(1, (int[]){ CG_D }, (ad_real[]){ 0.5, -1, 0.25, 0.3 });
    hg_problem p = { .n_w = 1, .n_hyper = 1, .hyper = &lam, .T = 2000, .ctx = &q, .init = cg_init,
                     .inner = cg_inner, .outer = cg_outer, .opt = { .kind = HG_GD, .step = 0.1 } };
    ad_value *ref, *h;
    ck_assert_int_eq(hg_implicit_cg(&p, 10, 1e-6, &ref, NULL), AD_OK);
    for (int iters = 20; iters <= 50; iters += 10) {
        ck_assert_msg(hg_implicit_cg(&p, iters, 0, &h, NULL) == AD_OK, "%d iterations: %s", iters,
                      ad_error());
        ck_assert_double_le(max_rel(1, &h, &ref), 1e-5);
        ad_value_free(h);
    }
    ad_value_free(ref);
    ad_value_free(lam);
    ad_value_free(q.a);
    ad_value_free(q.c);
}
END_TEST

/* ---- diagnostics, optimizers, errors -------------------------------------- */

START_TEST(diagnostics_and_optimizers)
{
    ad_value *a = ad_tensor_from(1, (int[]){ 2 }, (ad_real[]){ 1, 0 });
    ad_value *b = ad_tensor_from(1, (int[]){ 2 }, (ad_real[]){ 1, 1 });
    hg_compare c = hg_compare_grads(1, &a, &b);
    tu_expect_close(c.cosine, 1 / sqrt(2.0), 4);
    tu_expect_close(c.rel_error, 1 / sqrt(2.0), 4);
    tu_expect_close(c.ratio, 0.5, 4);
    ck_assert_double_eq_tol(hg_prop31_bound(0.1, 0.5, 10, 2, 3), pow(0.95, 10) / 0.05 * 6, 1e-12);
    ck_assert(isnan(hg_prop31_bound(0.1, 20, 10, 2, 3)));
    /* Adam's first update has norm η0·√(nonzero entries); the helper inverts that. */
    ad_value *p = ad_param_from(1, (int[]){ 2 }, (ad_real[]){ 0, 0 });
    ad_value *g = ad_tensor_from(1, (int[]){ 2 }, (ad_real[]){ 3, -0.001 });
    double eta0 = opt_outer_eta0_for_norm(OPT_ADAM, 1, &g, 0.6);
    opt_outer o;
    ck_assert_int_eq(opt_outer_init(&o, OPT_ADAM, eta0, true, 1, &p), AD_OK);
    ck_assert_int_eq(opt_outer_step(&o, &g), AD_OK);
    ck_assert_double_eq_tol(hypot(p->data[0], p->data[1]), 0.6, 1e-6);
    g->data[1] = NAN;
    ck_assert_int_eq(opt_outer_step(&o, &g), AD_ENONFINITE);
    opt_outer_free(&o);
    /* SGD with η0/√τ: second step is η0/√2 · g. */
    g->data[1] = 1;
    p->data[0] = p->data[1] = 0;
    ck_assert_int_eq(opt_outer_init(&o, OPT_SGD, 0.5, true, 1, &p), AD_OK);
    ck_assert_int_eq(opt_outer_step(&o, &g), AD_OK);
    ck_assert_int_eq(opt_outer_step(&o, &g), AD_OK);
    tu_expect_close(p->data[0], -(0.5 + 0.5 / sqrt(2.0)) * 3, 8);
    opt_outer_free(&o);
    ck_assert_int_eq(opt_outer_init(&o, OPT_SGD, -1, true, 1, &p), AD_EARG);
    ad_value_free(a);
    ad_value_free(b);
    ad_value_free(p);
    ad_value_free(g);
}
END_TEST

static ad_value *nan_outer(ad_tape *tp, ad_value *const *w, ad_value *const *lam, void *ctx)
{
    (void)ctx;
    (void)lam;
    return ad_sqrt(tp, ad_scale(tp, ad_sum(tp, ad_square(tp, w[0])), -1)); /* √ of a negative */
}

START_TEST(estimator_errors)
{
    toy t;
    ck_assert_int_eq(toy_init(&t, 1, 1, 20, 0.1, false), AD_OK);
    ad_value *est;
    ck_assert_int_eq(hg_krmd(&t.problem, 0, &est, NULL), AD_EARG);
    ck_assert_str_eq(ad_error(), "krmd: K must be >= 1, got 0");
    ck_assert_int_eq(hg_checkpoint(&t.problem, -3, &est, NULL), AD_EARG);
    ck_assert_int_eq(hg_neumann(&t.problem, 0, &est, NULL), AD_EARG);
    t.problem.T = 0;
    ck_assert_int_eq(hg_krmd(&t.problem, 1, &est, NULL), AD_EARG);
    ck_assert_ptr_nonnull(strstr(ad_error(), "T must be >= 1"));
    t.problem.T = 20;
    t.problem.outer = nan_outer;
    ck_assert_int_eq(hg_krmd(&t.problem, 5, &est, NULL), AD_ENONFINITE);
    ck_assert_ptr_nonnull(strstr(ad_error(), "NaN"));
    toy_free(&t);
}
END_TEST

/* g = ½w² + λw, f = w², w0 = λ itself (a caller-owned leaf), γ = 0.1, T = 3:
 * w_t = a_t λ with a_0 = 1, a_{t+1} = (1 − γ) a_t − γ, so dλf = 2 a_T² λ. */
static int w0_is_lambda(ad_tape *tp, ad_value *const *lam, ad_value **w0, void *ctx)
{
    (void)tp;
    (void)ctx;
    w0[0] = lam[0];
    return AD_OK;
}

static ad_value *linear_inner(ad_tape *tp, ad_value *const *w, ad_value *const *lam, int t,
                              void *ctx)
{
    (void)t;
    (void)ctx;
    return ad_add(tp, ad_scale(tp, ad_square(tp, w[0]), 0.5), ad_mul(tp, lam[0], w[0]));
}

static ad_value *square_outer(ad_tape *tp, ad_value *const *w, ad_value *const *lam, void *ctx)
{
    (void)lam;
    (void)ctx;
    return ad_square(tp, w[0]);
}

START_TEST(problem_edge_cases)
{
    ad_value *lam = ad_param_scalar(0.5);
    /* The header's example leaves step_hyper out: γ is then the number. */
    hg_problem p = { .n_w = 1, .n_hyper = 1, .hyper = &lam, .T = 3, .init = w0_is_lambda,
                     .inner = linear_inner, .outer = square_outer,
                     .opt = { .kind = HG_GD, .step = 0.1 } };
    double a = 1;
    for (int t = 0; t < 3; t++) a = 0.9 * a - 0.1;
    const double want = 2 * a * a * 0.5;
    ad_value *d[4] = { 0 };
    ck_assert_int_eq(hg_full_rmd(&p, &d[0], NULL), AD_OK);
    ck_assert_int_eq(hg_krmd(&p, 3, &d[1], NULL), AD_OK);
    ck_assert_int_eq(hg_fmd(&p, &d[2], NULL), AD_OK);
    ck_assert_int_eq(hg_checkpoint(&p, 3, &d[3], NULL), AD_OK);
    for (int i = 0; i < 4; i++) tu_expect_close(d[i]->data[0], want, 16);
    free_n(4, d);

    /* γ named by a hyperparameter must be one of hyper[] and of rank 0. */
    ad_value *gamma1 = ad_param_from(1, (int[]){ 1 }, (ad_real[]){ 0.1 });
    ad_value *two[2] = { lam, gamma1 };
    p.hyper = two;
    p.n_hyper = 2;
    p.opt.step_hyper = gamma1;
    ck_assert_int_eq(hg_krmd(&p, 3, &d[0], NULL), AD_EARG);
    ck_assert_ptr_nonnull(strstr(ad_error(), "opt.step_hyper must be one of hyper[] and of rank 0"));
    ad_value *gamma0 = ad_param_scalar(0.1);
    p.opt.step_hyper = gamma0; /* rank 0 but not in hyper[] */
    ck_assert_int_eq(hg_krmd(&p, 3, &d[0], NULL), AD_EARG);
    two[1] = gamma0;
    ck_assert_int_eq(hg_krmd(&p, 3, d, NULL), AD_OK);
    tu_expect_close(d[0]->data[0], want, 16);
    free_n(2, d);
    p.opt.step_hyper = NULL;

    /* Too many hyperparameters for the implicit estimators: an error, not a
     * write past their fixed arrays while cleaning up. */
    enum { MANY = 80 };
    ad_value *many[MANY], *dmany[MANY];
    for (int i = 0; i < MANY; i++) many[i] = ad_param_scalar(0);
    p.hyper = many;
    p.n_hyper = MANY;
    ck_assert_int_eq(hg_neumann(&p, 5, dmany, NULL), AD_EARG);
    ck_assert_ptr_nonnull(strstr(ad_error(), "too many tensors"));
    ck_assert_int_eq(hg_implicit_cg(&p, 5, 1e-8, dmany, NULL), AD_EARG);
    free_n(MANY, many);

    /* A NaN tolerance would skip the solve and report success. */
    p.hyper = &lam;
    p.n_hyper = 1;
    ck_assert_int_eq(hg_implicit_cg(&p, 5, NAN, d, NULL), AD_EARG);
    ck_assert_ptr_nonnull(strstr(ad_error(), "tolerance must be finite"));
    ad_value *all[] = { lam, gamma1, gamma0 };
    free_n(3, all);
}
END_TEST

/* ---- long sums of step shares ---------------------------------------------
 * g(w, λ) = λᵀw, f(w) = cᵀw, w0 = 0, T steps of gradient descent with step γ:
 * w_T = −Tγλ, so dλf = −Tγc; the state's adjoint stays c (the Hessian is 0)
 * and every step adds the same share −γc to λ's total.  And the K-term
 * Neumann sum is γKc, so Neumann with K = T gives the same.  Summed in
 * float, T = 3000 such shares drifted 1e-5 to 1e-4 off (K-RMD through the
 * sweep, the profile and Neumann through their running totals); the float
 * build sums them in double, so each estimator must land within a rounding
 * or two of −Tγc, plus the double running sum's own error (≤ T·ε_double
 * relative: the shares share a sign). */

enum { DRIFT_T = 3000, DRIFT_D = 3 };

typedef struct drift {
    ad_value *lam, *c;
} drift;

static int drift_w0(ad_tape *tp, ad_value *const *lam, ad_value **w0, void *ctx)
{
    (void)lam;
    (void)ctx;
    w0[0] = ad_const_fill(tp, 1, (int[]){ DRIFT_D }, 0);
    return w0[0] ? AD_OK : ad_error_code();
}

static ad_value *drift_inner(ad_tape *tp, ad_value *const *w, ad_value *const *lam, int t, void *ctx)
{
    (void)t;
    (void)ctx;
    return ad_dot(tp, lam[0], w[0]);
}

static ad_value *drift_outer(ad_tape *tp, ad_value *const *w, ad_value *const *lam, void *ctx)
{
    (void)lam;
    drift *d = ctx;
    return ad_dot(tp, d->c, w[0]);
}

/* The largest relative error of h's entries against −Tγc. */
static double drift_error(const ad_value *h, const drift *d, double gamma)
{
    double e = 0;
    for (int i = 0; i < DRIFT_D; i++) {
        double want = -DRIFT_T * gamma * d->c->data[i];
        e = fmax(e, fabs(h->data[i] - want) / fabs(want));
    }
    return e;
}

START_TEST(long_sums_of_shares_round_once)
{
    const double gamma = (double)(ad_real)0.3;
    drift d = { .lam = ad_param_from(1, (int[]){ DRIFT_D }, (ad_real[]){ 0.5, -1, 0.25 }),
                .c = ad_tensor_from(1, (int[]){ DRIFT_D }, (ad_real[]){ 0.1, -0.7, 1.3 }) };
    hg_problem p = { .n_w = 1, .n_hyper = 1, .hyper = &d.lam, .T = DRIFT_T, .ctx = &d,
                     .init = drift_w0, .inner = drift_inner, .outer = drift_outer,
                     .opt = { .kind = HG_GD, .step = gamma } };
    const char *who[4] = { "full RMD", "checkpoint", "neumann", "profile" };
    double err[4];
    ad_value *h;
    for (int k = 0; k < 3; k++) {
        int rc = k == 0 ? hg_full_rmd(&p, &h, NULL)
               : k == 1 ? hg_checkpoint(&p, DRIFT_T, &h, NULL) : hg_neumann(&p, DRIFT_T, &h, NULL);
        ck_assert_msg(rc == AD_OK, "%s: %s", who[k], ad_error());
        err[k] = drift_error(h, &d, gamma);
        ad_value_free(h);
    }
    hg_profile pr;
    ck_assert_int_eq(hg_truncation_profile(&p, DRIFT_T, NULL, &pr), AD_OK);
    err[3] = drift_error(pr.h[DRIFT_T - 1], &d, gamma);
    hg_profile_free(&pr);
    /* One rounding of γc, one of the total; and the double sum's error. */
    double tol = TU_TOL(1) + DRIFT_T * DBL_EPSILON;
    ck_assert_msg(fmax(fmax(err[0], err[1]), fmax(err[2], err[3])) <= tol,
                  "relative errors: %s %.3g, %s %.3g, %s %.3g, %s %.3g; want each within %.3g",
                  who[0], err[0], who[1], err[1], who[2], err[2], who[3], err[3], tol);
    ad_value_free(d.lam);
    ad_value_free(d.c);
}
END_TEST

START_TEST(inner_solve_matches_closed_form)
{
    toy t;
    ck_assert_int_eq(toy_init(&t, 0.5, -1, 100, 0.1, false), AD_OK);
    ad_value *w;
    double losses[101], wc[2], h[2];
    ck_assert_int_eq(hg_inner_solve(&t.problem, &w, losses), AD_OK);
    toy_closed_form(&t, 1, wc, h);
    tu_expect_close(w->data[0], wc[0], TOY_ULPS);
    tu_expect_close(w->data[1], wc[1], TOY_ULPS);
    /* g(w0) = ½ (1.5² · 1 + 3² · ½) and the loss falls at every step. */
    tu_expect_close(losses[0], 0.5 * (2.25 + 4.5), 8);
    for (int i = 1; i <= 100; i++) ck_assert_double_lt(losses[i], losses[i - 1]);
    ad_value_free(w);
    toy_free(&t);
}
END_TEST

START_TEST(sweep_table)
{
    toy t;
    ck_assert_int_eq(toy_init(&t, 1, 1, 100, 0.1, false), AD_OK);
    const int Ks[] = { 1, 10, 100 };
    hg_sweep_result sw;
    FILE *out = tmpfile();
    ck_assert_int_eq(hg_sweep(&t.problem, Ks, 3, &sw, out), AD_OK);
    const hg_sweep_row *rows = sw.rows;
    ck_assert_double_lt(rows[0].cmp.cosine, rows[1].cmp.cosine + TU_TOL(TOY_ULPS));
    ck_assert_double_lt(rows[2].cmp.rel_error, TU_TOL(TOY_ULPS));
    ck_assert_double_gt(rows[0].cmp.rel_error, rows[1].cmp.rel_error);
    /* One pass over all T steps gives every row: one report, full RMD's tape. */
    ck_assert_uint_eq(rows[0].report.peak_tape_bytes, rows[2].report.peak_tape_bytes);
    ck_assert_int_gt(ftell(out), 100);
    fclose(out);
    hg_sweep_free(&sw);
    toy_free(&t);
}
END_TEST

Suite *hypergrad_suite(void);
Suite *hypergrad_suite(void)
{
    Suite *s = suite_create("hypergrad");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, toy_estimators_agree, 0, 2);
    tcase_add_test(tc, toy_memory);
    tcase_add_loop_test(tc, ridge_estimators_agree, 0, 3);
    tcase_add_test(tc, ridge_implicit_converges);
    tcase_add_test(tc, cg_past_convergence);
    tcase_add_test(tc, diagnostics_and_optimizers);
    tcase_add_test(tc, estimator_errors);
    tcase_add_test(tc, problem_edge_cases);
    tcase_add_test(tc, sweep_table);
    tcase_add_test(tc, inner_solve_matches_closed_form);
    tcase_add_test(tc, long_sums_of_shares_round_once);
    suite_add_tcase(s, tc);
    return s;
}
