/* test_tape.c — the tape: truncation against the paper's closed form,
 * memory held per horizon, no-record scopes, the sweep's bookkeeping, and
 * error paths. */
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ad/node.h"
#include "gradcheck.h"
#include "testutil.h"
#include "ops/ops.h"

/* ---- the toy problem of Sec. 4.1 -----------------------------------------
 * g(w, λ) = ½ (w − λ)ᵀ G (w − λ), G = diag(1, ½); T steps of gradient descent
 * with step γ from w0 = (2, 2); f(w) = ‖w‖² + 10 ‖sin w‖².  The inner gradient
 * comes from the tape (create_graph), not from a formula. */

enum { TOY_T = 100 };
/* The toy's T = 100 steps against the closed form, relative: both builds
 * land within 10 ε (measured), so 64 ε leaves room for another libm. */
enum { TOY_ULPS = 64 };
static const double toy_gamma = 0.1, toy_G[2] = { 1.0, 0.5 };

typedef struct toy_run {
    double w[2];      /* ŵ */
    double hg[2];     /* dλ f as the tape computes it */
    size_t peak;      /* peak tape bytes */
} toy_run;

static ad_value *toy_inner(ad_tape *tp, ad_value *w, ad_value *lam, ad_value *G)
{
    ad_value *d = ad_sub(tp, w, lam);
    return ad_scale(tp, ad_dot(tp, d, ad_mul(tp, G, d)), 0.5);
}

static ad_value *toy_outer(ad_tape *tp, ad_value *w)
{
    return ad_add(tp, ad_sqnorm(tp, w), ad_scale(tp, ad_sqnorm(tp, ad_sin(tp, w)), 10));
}

static int toy_hypergradient(int horizon, int T, const double lam_in[2], toy_run *out)
{
    ad_tape *tp = ad_tape_new(horizon);
    ad_value *lam = ad_param_from(1, (int[]){ 2 }, (ad_real[]){ (ad_real)lam_in[0], (ad_real)lam_in[1] });
    ad_value *G = ad_tensor_from(1, (int[]){ 2 }, (ad_real[]){ 1.0, 0.5 });
    ad_value *w = ad_param_from(1, (int[]){ 2 }, (ad_real[]){ 2, 2 }), *w0 = w;
    int rc = AD_OK;
    for (int t = 1; t <= T && rc == AD_OK; t++) {
        rc = ad_tape_step(tp);
        ad_value *gw;
        if (rc == AD_OK) rc = ad_grad(tp, toy_inner(tp, w, lam, G), 1, &w, &gw, true);
        if (rc == AD_OK) w = ad_sub(tp, w, ad_scale(tp, gw, toy_gamma));
    }
    if (rc == AD_OK) rc = ad_tape_step(tp); /* the outer loss in a step of its own */
    ad_value *f = toy_outer(tp, w), *hg = NULL;
    if (rc == AD_OK) rc = ad_grad(tp, f, 1, &lam, &hg, false);
    if (rc == AD_OK) {
        for (int i = 0; i < 2; i++) {
            out->w[i] = w->data[i];
            out->hg[i] = hg->data[i];
        }
        out->peak = ad_tape_peak_bytes(tp);
    }
    ad_tape_free(tp);
    ad_value_free(lam);
    ad_value_free(G);
    ad_value_free(w0);
    return rc;
}

/* h_{T−K} = Σ_{t=T−K+1..T} γG (I − γG)^{T−t} ∇ŵf, everything diagonal. */
static void toy_closed_form(int K, int T, const double w[2], double h[2])
{
    for (int i = 0; i < 2; i++) {
        double df = 2 * w[i] + 10 * sin(2 * w[i]); /* ∇ of ‖w‖² + 10‖sin w‖² */
        double a = 1 - toy_gamma * toy_G[i], s = 0;
        for (int t = T - (K < T ? K : T) + 1; t <= T; t++) s += toy_gamma * toy_G[i] * pow(a, T - t);
        h[i] = s * df;
    }
}

static double rel_err(const double a[2], const double b[2])
{
    double d = hypot(a[0] - b[0], a[1] - b[1]), n = hypot(b[0], b[1]);
    return d / (n > 0 ? n : 1);
}

static const double toy_lambdas[][2] = { { 1, 1 }, { -0.5, 2 }, { 0.3, -1.2 }, { 2.5, 0.7 } };
static const int toy_Ks[] = { 1, 2, 5, 10, 25, 50, 100 };

START_TEST(toy_truncation_matches_closed_form)
{
    for (size_t l = 0; l < sizeof toy_lambdas / sizeof *toy_lambdas; l++)
        for (size_t k = 0; k < sizeof toy_Ks / sizeof *toy_Ks; k++) {
            toy_run run;
            double want[2];
            ck_assert_int_eq(toy_hypergradient(toy_Ks[k], TOY_T, toy_lambdas[l], &run), AD_OK);
            toy_closed_form(toy_Ks[k], TOY_T, run.w, want);
            double e = rel_err(run.hg, want);
            ck_assert_msg(e <= TU_TOL(TOY_ULPS), "K=%d λ=(%g,%g): tape (%.17g, %.17g) closed form "
                          "(%.17g, %.17g), rel err %.3g", toy_Ks[k], toy_lambdas[l][0],
                          toy_lambdas[l][1], run.hg[0], run.hg[1], want[0], want[1], e);
        }
}
END_TEST

/* K ≥ T and "all" are full RMD: dλf = (I − C)ᵀ ∇ŵf with C = (I − γG)^T; and
 * ŵ itself has the closed form ŵ = Cw0 + (I − C)λ. */
START_TEST(toy_full_rmd_is_exact)
{
    const int horizons[] = { AD_HORIZON_ALL, TOY_T, TOY_T + 7 };
    for (size_t l = 0; l < sizeof toy_lambdas / sizeof *toy_lambdas; l++)
        for (size_t k = 0; k < 3; k++) {
            toy_run run;
            ck_assert_int_eq(toy_hypergradient(horizons[k], TOY_T, toy_lambdas[l], &run), AD_OK);
            double want[2], w[2];
            for (int i = 0; i < 2; i++) {
                double C = pow(1 - toy_gamma * toy_G[i], TOY_T);
                w[i] = C * 2 + (1 - C) * toy_lambdas[l][i];
                want[i] = (1 - C) * (2 * w[i] + 10 * sin(2 * w[i]));
            }
            ck_assert_msg(rel_err(run.w, w) <= TU_TOL(TOY_ULPS), "ŵ differs from its closed form");
            ck_assert_msg(rel_err(run.hg, want) <= TU_TOL(TOY_ULPS), "horizon %d: (%.17g, %.17g) vs "
                          "(%.17g, %.17g)", horizons[k], run.hg[0], run.hg[1], want[0], want[1]);
        }
}
END_TEST

/* With horizon K the peak is set by K steps, not by T; and each extra step
 * of horizon costs the same number of bytes. */
START_TEST(toy_memory_independent_of_T_linear_in_K)
{
    const double lam[2] = { 1, 1 };
    size_t peak[9];
    for (int K = 1; K <= 8; K++) {
        toy_run a, b;
        ck_assert_int_eq(toy_hypergradient(K, 100, lam, &a), AD_OK);
        ck_assert_int_eq(toy_hypergradient(K, 400, lam, &b), AD_OK);
        ck_assert_msg(a.peak == b.peak, "K=%d: peak %zu at T=100 but %zu at T=400", K, a.peak, b.peak);
        peak[K] = a.peak;
    }
    size_t step = peak[2] - peak[1];
    ck_assert_uint_gt(step, 0);
    for (int K = 2; K <= 8; K++)
        ck_assert_msg(peak[K] - peak[K - 1] == step, "K=%d adds %zu bytes, K=2 added %zu", K,
                      peak[K] - peak[K - 1], step);
    toy_run all;
    ck_assert_int_eq(toy_hypergradient(AD_HORIZON_ALL, 100, lam, &all), AD_OK);
    ck_assert_uint_gt(all.peak, 50 * step);
}
END_TEST

/* ---- the sweep ----------------------------------------------------------- */

START_TEST(fan_out_accumulates)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *x = ad_param_scalar(3);
    /* y = x + x·x + sin x  ->  dy/dx = 1 + 2x + cos x */
    ad_value *y = ad_add(tp, ad_add(tp, x, ad_mul(tp, x, x)), ad_sin(tp, x)), *g;
    ck_assert_int_eq(ad_grad(tp, y, 1, &x, &g, false), AD_OK);
    tu_expect_close(g->data[0], 1 + 6 + cos(3.0), 8);
    /* ad_backward adds into x->grad each time it runs. */
    ck_assert_int_eq(ad_backward(tp, y), AD_OK);
    ck_assert_int_eq(ad_backward(tp, y), AD_OK);
    tu_expect_close(x->grad->data[0], 2 * (7 + cos(3.0)), 8);
    ad_zero_grad(x);
    ck_assert_double_eq(x->grad->data[0], 0);
    ad_tape_free(tp);
    ad_value_free(x);
}
END_TEST

/* A value used N times: its gradient is the sum of N contributions.  Summed
 * in float they drifted (x used 10⁵ times as 0.1·x: 9998.56, not 10⁴), so
 * the float build sums them in double (from the third on) and rounds once.
 * Here x [2] is used N times as c·x, c on the float grid; the gradient must
 * be N·c within ε (two roundings to ad_real at most) and the double running
 * sum's own error (≤ N·ε_double
 * relative: the terms share a sign).  Plain sweep (contributions added in
 * place), recorded sweep (each sum a node), ad_backward, and a fan-in
 * through add (a shared gradient, summed as a node in a plain sweep). */
enum { FAN_IN = 20000 }; /* 2·10⁴ uses: a float sum was 1e-4 off, and ASan takes ~1 s */

static void expect_fan_in_sum(const ad_value *g, double want, const char *how)
{
    double tol = (TU_EPS + FAN_IN * DBL_EPSILON) * fabs(want);
    for (size_t i = 0; i < g->size; i++)
        ck_assert_msg(fabs(g->data[i] - want) <= tol, "%s: entry %zu: %.9g, want %.9g within %.3g",
                      how, i, (double)g->data[i], want, tol);
}

START_TEST(fan_in_sums_round_once)
{
    const double c = (double)(ad_real)0.1; /* every contribution exactly c */
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *x = ad_param_from(1, (int[]){ 2 }, (ad_real[]){ 1, -2 }), *g;
    ad_value *y = ad_scale(tp, x, c);
    for (int i = 1; i < FAN_IN; i++) y = ad_add(tp, y, ad_scale(tp, x, c));
    ad_value *s = ad_sum(tp, y);
    ck_assert_int_eq(ad_grad(tp, s, 1, &x, &g, false), AD_OK);
    expect_fan_in_sum(g, FAN_IN * c, "plain sweep");
    ck_assert_int_eq(ad_grad(tp, s, 1, &x, &g, true), AD_OK);
    expect_fan_in_sum(g, FAN_IN * c, "recorded sweep");
    ck_assert_int_eq(ad_backward(tp, s), AD_OK);
    expect_fan_in_sum(x->grad, FAN_IN * c, "ad_backward");
    ad_tape_free(tp);

    /* c·(x + x + ...): add hands its gradient to both inputs, so x's
     * accumulator starts out shared, and the first sum is a new value. */
    tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *z = x;
    for (int i = 1; i < FAN_IN; i++) z = ad_add(tp, z, x);
    ck_assert_int_eq(ad_grad(tp, ad_scale(tp, ad_sum(tp, z), c), 1, &x, &g, false), AD_OK);
    expect_fan_in_sum(g, FAN_IN * c, "shared gradient");
    ad_tape_free(tp);
    ad_value_free(x);
}
END_TEST

START_TEST(double_backward_and_hvp)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *x = ad_param_scalar(0.7), *g, *g2, *g3;
    ad_value *y = ad_mul(tp, x, ad_sin(tp, x)); /* y = x sin x */
    ck_assert_int_eq(ad_grad(tp, y, 1, &x, &g, true), AD_OK);
    ck_assert_int_eq(ad_grad(tp, g, 1, &x, &g2, true), AD_OK);
    ck_assert_int_eq(ad_grad(tp, g2, 1, &x, &g3, false), AD_OK);
    double v = 0.7;
    tu_expect_close(g->data[0], sin(v) + v * cos(v), 8);
    tu_expect_close(g2->data[0], 2 * cos(v) - v * sin(v), 8);
    tu_expect_close(g3->data[0], -3 * sin(v) - v * cos(v), 8);
    ad_tape_free(tp);
    ad_value_free(x);

    /* Hessian of Σ xᵢ³ + x₀x₁ along v. */
    tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *p = ad_param_from(1, (int[]){ 2 }, (ad_real[]){ 1.5, -2 });
    ad_value *dir = ad_tensor_from(1, (int[]){ 2 }, (ad_real[]){ 0.3, 0.4 }), *hv;
    ad_value *cube = ad_sum(tp, ad_pow(tp, p, 3));
    /* x₀x₁ = ½((x₀ + x₁)² − ‖x‖²) */
    ad_value *cross = ad_scale(tp, ad_sub(tp, ad_square(tp, ad_sum(tp, p)), ad_sqnorm(tp, p)), 0.5);
    ad_value *s = ad_add(tp, cube, cross);
    ck_assert_int_eq(ad_hvp(tp, s, 1, &p, &dir, &hv, false), AD_OK);
    tu_expect_close(hv->data[0], 6 * 1.5 * 0.3 + 0.4, 8);
    tu_expect_close(hv->data[1], 6 * -2 * 0.4 + 0.3, 8);
    ad_tape_free(tp);
    ad_value_free(p);
    ad_value_free(dir);
}
END_TEST

START_TEST(unused_input_gets_zeros)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *x = ad_param_scalar(2), *z = ad_param_from(1, (int[]){ 3 }, (ad_real[]){ 1, 2, 3 });
    ad_value *xs[2] = { x, z }, *g[2];
    ck_assert_int_eq(ad_grad(tp, ad_exp(tp, x), 2, xs, g, false), AD_OK);
    tu_expect_close(g[0]->data[0], exp(2.0), 4);
    ck_assert_int_eq(g[1]->size, 3);
    for (int i = 0; i < 3; i++) ck_assert_double_eq(g[1]->data[i], 0);
    ad_tape_free(tp);
    ad_value_free(x);
    ad_value_free(z);
}
END_TEST

START_TEST(no_record_builds_no_nodes)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *x = ad_param_scalar(2);
    ad_no_record_begin(tp);
    ck_assert(!ad_tape_recording(tp));
    ad_value *y = ad_exp(tp, ad_mul(tp, x, x));
    ad_no_record_end(tp);
    ck_assert(ad_tape_recording(tp));
    ck_assert_ptr_null(y->op);
    ck_assert(!y->requires_grad);
    ck_assert_int_eq(y->n_inputs, 0);
    tu_expect_close(y->data[0], exp(4.0), 4);
    /* Recording resumes: a node again. */
    ad_value *z = ad_exp(tp, x);
    ck_assert_ptr_nonnull(z->op);
    ck_assert_str_eq(z->op->name, "exp");
    ad_tape_free(tp);
    ad_value_free(x);
}
END_TEST

/* A value of a released step that a held step uses survives as a constant;
 * one nobody uses is freed. */
START_TEST(release_carries_used_values)
{
    ad_tape *tp = ad_tape_new(1);
    ad_value *x = ad_param_scalar(1.5);
    ad_value *a = ad_exp(tp, x);           /* step 0 */
    ck_assert_int_eq(ad_tape_step(tp), AD_OK);
    ad_value *b = ad_mul(tp, a, x);        /* step 1 uses a */
    size_t before = ad_tape_bytes(tp);
    ck_assert_int_eq(ad_tape_step(tp), AD_OK); /* step 0 released: a is carried */
    ck_assert_uint_eq(ad_tape_steps_held(tp), 2);
    ck_assert_int_eq(a->step, -2);
    ck_assert_ptr_null(a->op);
    ck_assert(!a->requires_grad);
    ck_assert_uint_eq(ad_tape_bytes(tp), before);
    ad_value *g;
    ck_assert_int_eq(ad_grad(tp, b, 1, &x, &g, false), AD_OK);
    /* Only the direct path: d(a·x)/dx with a constant = a. */
    tu_expect_close(g->data[0], exp(1.5), 4);
    ck_assert_int_eq(ad_tape_step(tp), AD_OK); /* step 1 released; a's last user */
    ck_assert_int_eq(ad_tape_step(tp), AD_OK);
    ck_assert_uint_eq(ad_tape_bytes(tp), 0);
    ad_tape_reset(tp);
    ad_tape_free(tp);
    ad_value_free(x);
}
END_TEST

START_TEST(dot_export)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *x = ad_param_from(1, (int[]){ 3 }, (ad_real[]){ 1, 2, 3 });
    ad_value_set_name(x, "x");
    ck_assert_int_eq(ad_tape_step(tp), AD_OK);
    ad_value *y = ad_sum(tp, ad_exp(tp, x));
    FILE *f = tmpfile();
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(ad_dot_write(f, y), AD_OK);
    long len = ftell(f);
    char *buf = calloc((size_t)len + 1, 1);
    rewind(f);
    ck_assert_uint_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    ck_assert_ptr_nonnull(strstr(buf, "digraph"));
    ck_assert_ptr_nonnull(strstr(buf, "x: parameter\\n[3]"));
    ck_assert_ptr_nonnull(strstr(buf, "exp\\n[3]\\nstep 1"));
    ck_assert_ptr_nonnull(strstr(buf, "sum_to\\n[]"));
    ck_assert_ptr_nonnull(strstr(buf, "->"));
    free(buf);
    ad_tape_free(tp);
    ad_value_free(x);
}
END_TEST

/* The DOT text ad_dot_write_opts writes (opts NULL: ad_dot_write's); caller frees. */
static char *dot_text(int n, ad_value *const *roots, const ad_dot_opts *opts)
{
    FILE *f = tmpfile();
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(opts ? ad_dot_write_opts(f, n, roots, opts) : ad_dot_write(f, roots[0]), AD_OK);
    long len = ftell(f);
    char *buf = calloc((size_t)len + 1, 1);
    rewind(f);
    ck_assert_uint_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    return buf;
}

/* Each option adds its own marks, and all of them off is the default drawing. */
START_TEST(dot_options)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *x = ad_param_from(1, (int[]){ 3 }, (ad_real[]){ 1, 2, 3 }), *dx;
    ad_value_set_name(x, "x");
    ck_assert_int_eq(ad_tape_step(tp), AD_OK);
    ad_value *half = ad_const_fill(tp, 1, (int[]){ 3 }, 0.5);
    ad_value *y = ad_dot(tp, ad_mul(tp, x, half), x); /* ½ x·x; dx = x, recorded with its seed */
    ck_assert_int_eq(ad_grad(tp, y, 1, &x, &dx, true), AD_OK);
    ad_value *roots[2] = { y, dx };
    char *plain = dot_text(2, roots, &(ad_dot_opts){ 0 }), *def = dot_text(1, &y, NULL);
    char *one = dot_text(1, &y, &(ad_dot_opts){ 0 });
    ck_assert_str_eq(one, def);
    ck_assert_ptr_nonnull(strstr(plain, "seed: constant\\n[]\\nstep 1\""));
    const char *marks[] = { "= [1, 2, …]", "[label=\"1\"]", "0.5: constant", "cluster_step1" };
    for (int k = 0; k < 4; k++) ck_assert_ptr_null(strstr(plain, marks[k]));
    char *all = dot_text(2, roots, &(ad_dot_opts){ .values = 2, .input_index = true, .names = true,
                                                   .ids = true, .steps = true });
    for (int k = 0; k < 4; k++) ck_assert_msg(strstr(all, marks[k]), "no %s in\n%s", marks[k], all);
    char id[32];
    snprintf(id, sizeof id, "#%llu x: parameter", (unsigned long long)x->id);
    ck_assert_ptr_nonnull(strstr(all, id));
    ck_assert_ptr_nonnull(strstr(all, "= 7\""));   /* a scalar's one entry: y = (1 + 4 + 9) / 2 */
    char *more = dot_text(1, &half, &(ad_dot_opts){ .values = 3, .names = true });
    ck_assert_ptr_nonnull(strstr(more, "= [0.5, 0.5, 0.5]\""));   /* all of them: no "…" */
    ck_assert_int_eq(ad_dot_write_opts(stdout, 1, &y, &(ad_dot_opts){ .values = -1 }), AD_EARG);
    ck_assert_int_eq(ad_dot_write_opts(stdout, 1, (ad_value *[]){ NULL }, NULL), AD_EARG);
    free(plain), free(def), free(one), free(all), free(more);
    ad_tape_free(tp);
    ad_value_free(x);
}
END_TEST

/* ---- errors ---------------------------------------------------------------- */

static const ad_op mystery_op = { "mystery", NULL, NULL };

/* A backward rule that makes a temporary and then fails. */
static int failing_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    (void)gin;
    ad_scale(tp, g, 2); /* scratch the sweep must free */
    (void)out;
    return ad_fail(AD_EUNSUPPORTED, "failing: on purpose");
}
static const ad_op failing_op = { "failing", failing_backward, NULL };

START_TEST(error_paths)
{
    ck_assert_ptr_null(ad_tape_new(-1));
    ck_assert_ptr_nonnull(strstr(ad_error(), "horizon K must be >= 1"));
    ad_tape *tp = ad_tape_new(3);
    ck_assert_int_eq(ad_tape_set_horizon(tp, -2), AD_EARG);
    ck_assert_int_eq(ad_tape_horizon(tp), 3);
    ad_value *x = ad_param_from(1, (int[]){ 2 }, (ad_real[]){ 1, 2 }), *g;
    /* Non-scalar output without a seed. */
    ck_assert_int_eq(ad_grad(tp, ad_exp(tp, x), 1, &x, &g, false), AD_ESHAPE);
    ck_assert_ptr_nonnull(strstr(ad_error(), "is not a scalar"));
    /* Seed of the wrong shape. */
    ad_value *seed = ad_const_fill(tp, 1, (int[]){ 3 }, 1);
    ck_assert_int_eq(ad_vjp(tp, ad_exp(tp, x), seed, 1, &x, &g, false), AD_ESHAPE);
    /* An op with no backward rule is named. */
    ad_value *m = ad_node_new(tp, &mystery_op, 0, NULL, 1, &x);
    m->data[0] = 1;
    ck_assert_int_eq(ad_grad(tp, m, 1, &x, &g, false), AD_ENOGRAD);
    ck_assert_str_eq(ad_error(), "grad: op 'mystery' has no backward rule");
    ck_assert_ptr_null(g);
    /* A backward rule that fails: its status comes back and a plain sweep
     * leaves no temporaries on the tape. */
    ad_value *fo = ad_node_new(tp, &failing_op, 0, NULL, 1, &x);
    fo->data[0] = 1;
    size_t before = ad_tape_bytes(tp);
    ck_assert_int_eq(ad_grad(tp, fo, 1, &x, &g, false), AD_EUNSUPPORTED);
    ck_assert_str_eq(ad_error(), "grad: the backward rule of 'failing': failing: on purpose");
    ck_assert_uint_eq(ad_tape_bytes(tp), before);
    /* A failed op upstream. */
    ck_assert_int_eq(ad_grad(tp, NULL, 1, &x, &g, false), AD_EARG);
    /* Bad shapes for leaves. */
    ck_assert_ptr_null(ad_tensor_new(5, (int[]){ 1, 1, 1, 1, 1 }));
    ck_assert_ptr_null(ad_tensor_new(2, (int[]){ 3, 0 }));
    ck_assert_ptr_nonnull(strstr(ad_error(), "not positive"));
    /* Non-finite detection. */
    ad_value *bad = ad_tensor_from(1, (int[]){ 2 }, (ad_real[]){ 1, NAN });
    ck_assert_int_eq(ad_check_finite("hypergradient", bad), AD_ENONFINITE);
    ck_assert_str_eq(ad_error(), "hypergradient: entry 1 is NaN");
    ad_value_free(bad);
    ad_tape_free(tp);
    ad_value_free(x);
}
END_TEST

/* ad_detach cuts the path; ad_leaf cuts it and starts a new one. */
START_TEST(detach_and_leaf)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *x = ad_param_from(1, (int[]){ 2 }, (ad_real[]){ 1.5, -2 }), *g[2];
    /* d/dx Σ x·detach(x) = detach(x), not 2x. */
    ad_value *d = ad_detach(tp, x);
    ck_assert(!d->requires_grad);
    ck_assert_int_eq(ad_grad(tp, ad_dot(tp, x, d), 1, &x, g, false), AD_OK);
    tu_expect_values(g[0], (double[]){ 1.5, -2 }, 2, 0);
    /* y = Σ leaf(3x)²: the gradient reaches the leaf (2·3x) and not x. */
    ad_value *l = ad_leaf(tp, ad_scale(tp, x, 3));
    ck_assert(l->requires_grad);
    ad_value *wrt[2] = { l, x };
    ck_assert_int_eq(ad_grad(tp, ad_sqnorm(tp, l), 2, wrt, g, false), AD_OK);
    tu_expect_values(g[0], (double[]){ 9, -12 }, 2, 0);
    tu_expect_values(g[1], (double[]){ 0, 0 }, 2, 0);
    ad_tape_free(tp);
    ad_value_free(x);
}
END_TEST

/* ---- what a sweep hands back, and leaves behind ---------------------------- */

/* gx belongs to the open step, as ad.h says, even when the gradient passes
 * through unchanged: the reviewer's ad_vjp of y = x + c with seed G gave G
 * itself back (a caller-owned leaf: writing or freeing G changed or freed
 * gx; a seed of an earlier step took gx with it when the horizon released
 * that step). */
START_TEST(vjp_never_returns_a_seed)
{
    ad_tape *tp = ad_tape_new(1);
    ad_value *x = ad_param_from(1, (int[]){ 3 }, (ad_real[]){ 1, 2, 3 });
    ad_value *c = ad_tensor_fill(1, (int[]){ 3 }, 5);
    ad_value *G = ad_param_from(1, (int[]){ 3 }, (ad_real[]){ 1, -2, 0.5 }), *gx = NULL;
    ck_assert_int_eq(ad_tape_step(tp), AD_OK);
    ad_value *y = ad_add(tp, x, c); /* add hands its gradient on unchanged */
    for (int recorded = 0; recorded < 2; recorded++) {
        ck_assert_int_eq(ad_vjp(tp, y, G, 1, &x, &gx, recorded), AD_OK);
        ck_assert_ptr_ne(gx, G);
        ck_assert_ptr_eq(gx->tape, tp);
        ck_assert_int_eq(gx->step, ad_tape_current_step(tp));
        ck_assert(gx->requires_grad == (bool)recorded); /* recorded: a path back to G */
        tu_expect_values(gx, (double[]){ 1, -2, 0.5 }, 3, 0);
    }
    G->data[0] = 100; /* the caller reuses its seed's buffer, then frees it */
    ad_value_free(G);
    ck_assert_int_eq(ad_value_check("test", gx), AD_OK);
    tu_expect_values(gx, (double[]){ 1, -2, 0.5 }, 3, 0);
    /* A target that is also an output (a state entry passed on unchanged),
     * with a seed made in an earlier step: gx stays when that step goes. */
    ad_value *s = ad_const(tp, 1, (int[]){ 3 }, (ad_real[]){ 4, 5, 6 });
    ck_assert_int_eq(ad_tape_step(tp), AD_OK);
    ck_assert_int_eq(ad_vjp_partial(tp, 1, &x, &s, 1, &x, &gx, false), AD_OK);
    ck_assert_ptr_ne(gx, s);
    ck_assert_int_eq(ad_tape_step(tp), AD_OK); /* K = 1: s's step is released */
    ck_assert_int_eq(ad_value_check("test", s), AD_EARG);
    ck_assert_int_eq(ad_value_check("test", gx), AD_OK);
    tu_expect_values(gx, (double[]){ 4, 5, 6 }, 3, 0);
    ad_tape_free(tp);
    ad_value_free(x);
    ad_value_free(c);
}
END_TEST

/* f(u) = the VJP of y = z with seed u, with respect to z: u itself, handed
 * back as a recorded copy in the open step, so u's gradient (first and
 * second order) goes through the copy's rule. */
static ad_value *vjp_of_identity(ad_tape *tp, ad_value *const *x, void *ctx)
{
    (void)ctx;
    ad_value *z = ad_leaf(tp, x[0]), *g = NULL;
    if (z && ad_vjp(tp, z, x[0], 1, &z, &g, true) != AD_OK) g = NULL;
    return g;
}

START_TEST(seed_copy_gradients)
{
    ad_rng rng;
    ad_rng_seed(&rng, 7);
    ad_value *u = gc_param(&rng, 2, (int[]){ 2, 3 }, -2, 2, 0);
    ck_assert_int_eq(gc_check("seed copy", vjp_of_identity, NULL, 1, &u, NULL), 0);
    ad_value_free(u);
}
END_TEST

/* A value that wants no gradient is not a way back: y's gradient with
 * respect to it is zeros, with AD_OK, even when y depends on it (the
 * estimators ask for state entries that may be constants, and count on
 * this).  Computed while not recording is the same. */
START_TEST(no_gradient_for_values_that_want_none)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *c = ad_tensor_scalar(3), *p = ad_param_scalar(2);
    ad_value *y = ad_mul(tp, ad_mul(tp, c, c), p), *xs[2] = { c, p }, *g[2];
    ck_assert_int_eq(ad_grad(tp, y, 2, xs, g, false), AD_OK);
    ck_assert_double_eq(g[0]->data[0], 0); /* not 2cp = 12 */
    ck_assert_double_eq(g[1]->data[0], 9);
    ck_assert_int_eq(ad_no_record_begin(tp), AD_OK);
    ad_value *q = ad_mul(tp, p, p); /* no node: a constant */
    ck_assert_int_eq(ad_no_record_end(tp), AD_OK);
    ck_assert_int_eq(ad_grad(tp, ad_mul(tp, q, p), 2, (ad_value *[]){ q, p }, g, false), AD_OK);
    ck_assert_double_eq(g[0]->data[0], 0);
    ck_assert_double_eq(g[1]->data[0], 4);
    /* Asked for: the gradient is there. */
    ck_assert_int_eq(ad_set_requires_grad(c, true), AD_OK);
    y = ad_mul(tp, ad_mul(tp, c, c), p);
    ck_assert_int_eq(ad_grad(tp, y, 2, xs, g, false), AD_OK);
    ck_assert_double_eq(g[0]->data[0], 12);
    ad_tape_free(tp);
    ad_value_free(c);
    ad_value_free(p);
}
END_TEST

/* ad_tape_reset starts over: no-record scopes left open (an iteration that
 * failed before its ad_no_record_end) end with it.  Before, the tape stayed
 * in the scope and every later gradient came back as zeros with AD_OK. */
START_TEST(reset_ends_no_record_scopes)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *p = ad_param_scalar(2), *g = NULL;
    ck_assert_int_eq(ad_no_record_begin(tp), AD_OK);
    ck_assert_int_eq(ad_no_record_begin(tp), AD_OK);
    ck_assert_int_eq(ad_tape_reset(tp), AD_OK);
    ck_assert(ad_tape_recording(tp));
    ck_assert_int_eq(ad_grad(tp, ad_mul(tp, p, p), 1, &p, &g, false), AD_OK);
    ck_assert_double_eq(g->data[0], 4);
    /* The scopes are gone: an end now has no begin. */
    ck_assert_int_eq(ad_no_record_end(tp), AD_EARG);
    ck_assert(ad_tape_recording(tp));
    ad_tape_free(tp);
    ad_value_free(p);
}
END_TEST

/* A sweep makes its seed only for an output on the way to a target: the
 * reviewer measured 528 bytes a call (a seed and the zeros) where 264 (the
 * zeros) are due, and ad_backward leaked a seed per call when y reaches no
 * parameter. */
START_TEST(unreached_output_makes_no_seed)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *k = ad_tensor_scalar(2), *q = ad_param_scalar(1), *z = ad_param_scalar(3), *g;
    ad_value *off = ad_mul(tp, q, k), *on = ad_mul(tp, z, k); /* off does not depend on z */
    size_t b0 = ad_tape_bytes(tp);
    ck_assert_int_eq(ad_grad(tp, on, 1, &z, &g, false), AD_OK);
    size_t per_call = ad_tape_bytes(tp) - b0; /* the gradient handed back, and nothing else */
    ck_assert_uint_gt(per_call, 0);
    for (int i = 0; i < 10; i++) {
        size_t b = ad_tape_bytes(tp);
        ck_assert_int_eq(ad_grad(tp, off, 1, &z, &g, false), AD_OK);
        ck_assert_double_eq(g->data[0], 0);
        ck_assert_uint_eq(ad_tape_bytes(tp) - b, per_call);
    }
    ad_value *cst = ad_mul(tp, k, k); /* reaches no parameter */
    size_t b = ad_tape_bytes(tp);
    for (int i = 0; i < 10; i++) ck_assert_int_eq(ad_backward(tp, cst), AD_OK);
    ck_assert_uint_eq(ad_tape_bytes(tp), b);
    ad_tape_free(tp);
    ad_value_free(k);
    ad_value_free(q);
    ad_value_free(z);
}
END_TEST

/* ad_tape_rewind frees constants made since the mark that no node uses;
 * values that want a gradient stay — nodes, and leaves made with ad_leaf
 * (the reviewer found those freed too). */
START_TEST(rewind_keeps_leaves)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *x = ad_param_scalar(3), *g = NULL;
    uint64_t mark = ad_tape_mark(tp);
    ad_value *scratch = ad_const_scalar(tp, 1), *leaf = ad_leaf(tp, x);
    ad_value *node = ad_mul(tp, x, x);
    ck_assert_int_eq(ad_tape_rewind(tp, mark), AD_OK);
    ck_assert_int_eq(ad_value_check("test", scratch), AD_EARG);
    ck_assert_int_eq(ad_value_check("test", leaf), AD_OK);
    ck_assert_int_eq(ad_value_check("test", node), AD_OK);
    ck_assert_int_eq(ad_grad(tp, ad_mul(tp, leaf, leaf), 1, &leaf, &g, false), AD_OK);
    ck_assert_double_eq(g->data[0], 6);
    ad_tape_free(tp);
    ad_value_free(x);
}
END_TEST

/* Caller-owned leaves are shared between threads: a sweep on a second thread
 * must leave nothing behind that the first thread's next sweep reads (when
 * sweeps stamped epochs into the values they visited, per-thread counters
 * left a gradient in the leaf that the next sweep read after free).  Sweeps
 * at the same time on one leaf: tests/test_threads.c. */
static ad_value *shared_leaf;

static void *sweep_on_own_tape(void *arg)
{
    double *out = arg;
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *g = NULL;
    int rc = ad_grad(tp, ad_mul(tp, shared_leaf, shared_leaf), 1, &shared_leaf, &g, false);
    *out = rc == AD_OK && g ? g->data[0] : NAN;
    ad_tape_free(tp);
    return NULL;
}

START_TEST(sweeps_on_several_threads)
{
    shared_leaf = ad_param_scalar(3);
    double main_first = NAN, worker = NAN;
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *g;
    ck_assert_int_eq(ad_grad(tp, ad_mul(tp, shared_leaf, shared_leaf), 1, &shared_leaf, &g,
                             false), AD_OK);
    main_first = g->data[0];
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, sweep_on_own_tape, &worker), 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(ad_grad(tp, ad_mul(tp, shared_leaf, shared_leaf), 1, &shared_leaf, &g,
                             false), AD_OK);
    ck_assert_double_eq(main_first, 6);
    ck_assert_double_eq(worker, 6);
    ck_assert_double_eq(g->data[0], 6);
    ad_tape_free(tp);
    ad_value_free(shared_leaf);
}
END_TEST

/* Mistakes in what is passed in come back as error codes, never as a crash
 * or an internal-error abort. */
START_TEST(bad_arguments_are_errors)
{
    /* Sizes whose byte count would wrap around. */
    ck_assert_ptr_null(ad_tensor_new(3, (int[]){ 1 << 30, 1 << 30, 4 }));
    ck_assert_ptr_nonnull(strstr(ad_error(), "too many elements"));
    ck_assert_ptr_null(ad_tensor_new(4, (int[]){ 65536, 65536, 65536, 65536 }));
    ck_assert_ptr_nonnull(strstr(ad_error(), "too many elements"));
    /* The status of the last failure, for ops that can only return NULL. */
    ad_error_clear();
    ck_assert_int_eq(ad_error_code(), AD_OK);
    ck_assert_ptr_null(ad_tensor_new(2, (int[]){ 3, 0 }));
    ck_assert_int_eq(ad_error_code(), AD_ESHAPE);
    /* A recorded op whose input lives on another tape. */
    ad_tape *a = ad_tape_new(1), *b = ad_tape_new(1);
    ad_value *x = ad_param_scalar(1);
    ad_value *c = ad_const_scalar(a, 2);
    ck_assert_ptr_null(ad_mul(b, c, x));
    ck_assert_ptr_nonnull(strstr(ad_error(), "mul: input 0 belongs to another tape"));
    ck_assert_int_eq(ad_error_code(), AD_EARG);
    ad_value *copy = ad_detach(b, c); /* the way across */
    ad_value *y = ad_mul(b, copy, x);
    ck_assert_ptr_nonnull(y);
    ck_assert_double_eq(y->data[0], 2);
    /* A NULL target shape. */
    ad_value *m = ad_const_fill(b, 2, (int[]){ 2, 3 }, 1);
    ck_assert_ptr_null(ad_sum_to(b, m, 2, NULL));
    ck_assert_ptr_nonnull(strstr(ad_error(), "shape is NULL"));
    ck_assert_ptr_null(ad_broadcast_to(b, m, 2, NULL));
    /* An empty range for the PRNG. */
    ad_rng rng;
    ad_rng_seed(&rng, 1);
    ck_assert_uint_eq(ad_rng_below(&rng, 0), 0);
    ad_tape_free(a);
    ad_tape_free(b);
    ad_value_free(x);
}
END_TEST

START_TEST(rng_repeats)
{
    ad_rng a, b;
    ad_rng_seed(&a, 42);
    ad_rng_seed(&b, 42);
    for (int i = 0; i < 100; i++) ck_assert_uint_eq(ad_rng_next(&a), ad_rng_next(&b));
    double s = 0, s2 = 0;
    for (int i = 0; i < 20000; i++) {
        double z = ad_rng_normal(&a);
        s += z;
        s2 += z * z;
    }
    ck_assert_double_lt(fabs(s / 20000), 0.03);
    ck_assert_double_lt(fabs(s2 / 20000 - 1), 0.05);
}
END_TEST

Suite *tape_suite(void);
Suite *tape_suite(void)
{
    Suite *s = suite_create("tape");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, toy_truncation_matches_closed_form);
    tcase_add_test(tc, toy_full_rmd_is_exact);
    tcase_add_test(tc, toy_memory_independent_of_T_linear_in_K);
    tcase_add_test(tc, fan_out_accumulates);
    tcase_add_test(tc, fan_in_sums_round_once);
    tcase_add_test(tc, double_backward_and_hvp);
    tcase_add_test(tc, unused_input_gets_zeros);
    tcase_add_test(tc, no_record_builds_no_nodes);
    tcase_add_test(tc, release_carries_used_values);
    tcase_add_test(tc, dot_export);
    tcase_add_test(tc, dot_options);
    tcase_add_test(tc, error_paths);
    tcase_add_test(tc, rng_repeats);
    tcase_add_test(tc, detach_and_leaf);
    tcase_add_test(tc, sweeps_on_several_threads);
    tcase_add_test(tc, bad_arguments_are_errors);
    tcase_add_test(tc, vjp_never_returns_a_seed);
    tcase_add_test(tc, seed_copy_gradients);
    tcase_add_test(tc, no_gradient_for_values_that_want_none);
    tcase_add_test(tc, reset_ends_no_record_scopes);
    tcase_add_test(tc, unreached_output_makes_no_seed);
    tcase_add_test(tc, rewind_keeps_leaves);
    suite_add_tcase(s, tc);
    return s;
}
