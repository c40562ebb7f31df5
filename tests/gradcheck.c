/* gradcheck.c — see gradcheck.h. */
#include "gradcheck.h"

#include <math.h>
#include <stdlib.h>

#include "ad/node.h"
#include "ops/ops.h"
#include "testutil.h"

/* The recorded and the plain sweep run the same kernels, perhaps adding
 * contributions in another order: a few thousand roundings at most (1e-12 in
 * the double build, 5e-4 in the float build, relative to max(1, |g|)). */
#define GC_REC_TOL TU_TOL(4096)

/* The float build's finite differences.  L and ∇L come out of float
 * arithmetic with a relative noise of a few ε (ε = 1.2e-7), which a central
 * difference of step h divides by h, while its truncation error grows as h²
 * and the chance that the step crosses a kink (relu at 0, a max-pool tie)
 * grows as h.  The double build's h = 1e-6 never meets a kink; the float
 * build's steps are 2^-10 (first order) and 2^-12 (second order: the
 * gradient is noisier, but every input moves at once, so more kinks lie in
 * reach), powers of two so that x ± h and x ± 2h are exact, and an entry
 * that fails the central difference is checked again with the one-sided
 * second-order differences on either side: a kink on one side leaves the
 * other side smooth.  Measured on every check of the suite: errors up to
 * 2.1e-3 (batch-norm), and up to 9.8e-3 on CNN entries where a kink lies in
 * reach but the central difference stays under the tolerance.  The
 * tolerance 1e-2 catches a backward rule off by 5 % (tried on softmax's) but
 * not one off by 2 %, which the double build's checks catch; it is far below
 * the O(1) error of a wrong cblas_s* call or a size computed with the wrong
 * type.  The double build uses the caller's values (or the defaults)
 * unchanged. */
#define GC_FLOAT_STEP 0x1p-10
#define GC_FLOAT_STEP2 0x1p-12
#define GC_FLOAT_TOL 1e-2
#define GC_FLOAT_TOL2 1e-2

typedef struct probe {
    gc_build f;
    void *ctx;
    int n;
    ad_value *const *x;
    ad_value *r; /* the projection, shaped like f(x) */
} probe;

/* L(x) = Σ r ⊙ f(x) + ½ Σ f(x)², evaluated without recording. */
static int eval_L(const probe *p, double *L)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    if (!tp) return AD_ENOMEM;
    ad_no_record_begin(tp);
    ad_value *y = p->f(tp, p->x, p->ctx);
    int rc = y ? AD_OK : AD_EARG;
    if (y && !ad_same_shape(y, p->r)) rc = ad_fail(AD_ESHAPE, "gradcheck: output shape changed");
    if (rc == AD_OK) {
        double s = 0;
        for (size_t i = 0; i < y->size; i++)
            s += (double)y->data[i] * (p->r->data[i] + 0.5 * (double)y->data[i]);
        *L = s;
    }
    ad_no_record_end(tp);
    ad_tape_free(tp);
    return rc;
}

/* ∇L into g[i] (caller-owned copies, NULL for inputs without gradient).
 * With v, the gradient is recorded (create_graph) and hv[i] receives H·v
 * (double backward): both of those passes are what hypergradients use. */
static int grad_L(const probe *p, ad_value *const *v, ad_value **g_out, ad_value **hv_out)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    if (!tp) return AD_ENOMEM;
    ad_value *y = p->f(tp, p->x, p->ctx);
    /* The ½‖y‖² term makes the Hessian non-zero even for a linear op, so its
     * backward rule is itself differentiated (with a cotangent r + y that
     * depends on x) instead of the second-order check comparing 0 with 0. */
    ad_value *L = ad_add(tp, ad_dot(tp, y, ad_detach(tp, p->r)), ad_scale(tp, ad_sqnorm(tp, y), 0.5));
    ad_value *g[8] = { 0 }, *hv[8] = { 0 };
    int rc = L ? AD_OK : AD_EARG;
    if (rc == AD_OK) rc = ad_grad(tp, L, p->n, p->x, g, v != NULL);
    if (rc == AD_OK && v) rc = ad_vjp_many(tp, p->n, g, v, p->n, p->x, hv, false);
    for (int i = 0; i < p->n && rc == AD_OK; i++) {
        bool want = p->x[i]->requires_grad;
        g_out[i] = want ? ad_value_copy(g[i]) : NULL;
        if (v) hv_out[i] = want ? ad_value_copy(hv[i]) : NULL;
    }
    ad_tape_free(tp);
    return rc;
}

/* The error of one entry, |a − n| / max(scale, |a|, |n|): relative for large
 * entries, absolute (times scale) near zero.  The double build's scale is 1.
 * The float build's is the largest entry of the analytic vector (gc_scale):
 * a finite difference in float carries noise proportional to the size of
 * what it differences, not to the entry, so a small entry beside large ones
 * is measured on their scale.  (Not the numeric vector's: a kink crossed
 * can make some of its entries huge.) */
static double entry_error(double a, double n, double scale)
{
    return fabs(a - n) / fmax(scale, fmax(fabs(a), fabs(n)));
}

/* 1, or in the float build max(1, max |a|) over m entries. */
static double gc_scale(const ad_real *a, size_t m)
{
    double s = 1;
#if !HT_REAL_IS_DOUBLE
    for (size_t j = 0; j < m; j++) s = fmax(s, fabs((double)a[j]));
#else
    (void)a, (void)m;
#endif
    return s;
}

/* L with entry j of input i set to v (and put back). */
static int eval_L_at(const probe *p, int i, size_t j, ad_real v, double *L)
{
    ad_real *xj = &p->x[i]->data[j], keep = *xj;
    *xj = v;
    int rc = eval_L(p, L);
    *xj = keep;
    return rc;
}

/* ∂L/∂x_ij by central differences, over the step as stored (in float,
 * x ± eps may round). */
static int central_diff(const probe *p, int i, size_t j, double eps, double *d)
{
    ad_real x = p->x[i]->data[j], xp = (ad_real)(x + eps), xm = (ad_real)(x - eps);
    double lp = 0, lm = 0;
    int rc = eval_L_at(p, i, j, xp, &lp);
    if (rc == AD_OK) rc = eval_L_at(p, i, j, xm, &lm);
    *d = (lp - lm) / ((double)xp - (double)xm);
    return rc;
}

#if !HT_REAL_IS_DOUBLE
/* ∂L/∂x_ij by the one-sided second-order differences on either side,
 * (−3L(x) + 4L(x ± h) − L(x ± 2h)) / ±2h.  The float build's step is large,
 * so a kink (relu at 0, a max-pool tie) can fall inside x ± h where the
 * double build's step never reaches it; it then lies on one side only, and
 * the difference on the other side is smooth.  (The float step is a power of
 * two, so x ± h and x ± 2h are exact.) */
static int one_sided_diffs(const probe *p, int i, size_t j, double h, double d[2])
{
    ad_real x = p->x[i]->data[j];
    double l0 = 0;
    int rc = eval_L(p, &l0);
    for (int side = 0; side < 2 && rc == AD_OK; side++) {
        double s = side ? -h : h, l1 = 0, l2 = 0;
        rc = eval_L_at(p, i, j, (ad_real)(x + s), &l1);
        if (rc == AD_OK) rc = eval_L_at(p, i, j, (ad_real)(x + 2 * s), &l2);
        d[side] = (-3 * l0 + 4 * l1 - l2) / (2 * s);
    }
    return rc;
}
#endif

static int first_order(const probe *p, double eps, double tol, const char *name)
{
    ad_value *g[8] = { 0 };
    int rc = grad_L(p, NULL, g, NULL), bad = 0;
    if (rc != AD_OK) {
        fprintf(stderr, "gradcheck %s: backward failed: %s\n", name, ad_error());
        return 1;
    }
    for (int i = 0; i < p->n && !bad; i++) {
        if (!g[i]) continue;
        size_t m = p->x[i]->size;
        double *num = malloc(m * sizeof *num);
        if (!num) {
            fprintf(stderr, "gradcheck %s: out of memory\n", name);
            bad = 1;
            break;
        }
        for (size_t j = 0; j < m && rc == AD_OK; j++) rc = central_diff(p, i, j, eps, &num[j]);
        double scale = gc_scale(g[i]->data, m);
        for (size_t j = 0; j < m && !bad; j++) {
            double a = g[i]->data[j], err = entry_error(a, num[j], scale);
#if !HT_REAL_IS_DOUBLE
            if (rc == AD_OK && !(err <= tol)) {
                double d[2];
                rc = one_sided_diffs(p, i, j, eps, d);
                err = fmin(err, fmin(entry_error(a, d[0], scale), entry_error(a, d[1], scale)));
            }
#endif
            if (rc != AD_OK || !(err <= tol)) {
                fprintf(stderr, "gradcheck %s: first order, input %d entry %zu: "
                        "analytic %.12g numeric %.12g (error %.3g > %.3g)\n",
                        name, i, j, a, num[j], err, tol);
                bad = 1;
            }
        }
        free(num);
    }
    for (int i = 0; i < p->n; i++) ad_value_free(g[i]);
    return bad;
}

/* x[i] = x0[i] + s·eps·v[i] for every input that wants a gradient (s = 0
 * puts x back exactly). */
static void move_x(const probe *p, ad_value *const *x0, ad_value *const *v, double s, double eps)
{
    for (int i = 0; i < p->n; i++)
        if (p->x[i]->requires_grad)
            for (size_t j = 0; j < p->x[i]->size; j++)
                p->x[i]->data[j] = (ad_real)(x0[i]->data[j] + s * eps * v[i]->data[j]);
}

/* ∇L at x0 + s·eps·v into g (caller-owned copies); x is put back. */
static int grad_at(const probe *p, ad_value *const *x0, ad_value *const *v, double s, double eps,
                   ad_value **g)
{
    move_x(p, x0, v, s, eps);
    int rc = grad_L(p, NULL, g, NULL);
    move_x(p, x0, v, 0, eps);
    return rc;
}

static void free_all(int n, ad_value **v)
{
    for (int i = 0; i < n; i++) ad_value_free(v[i]), v[i] = NULL;
}

/* The directions: N(0,1) entries; in the float build rounded to multiples of
 * 1/16, so that x ± eps·v and x ± 2·eps·v are exact, and then (in both
 * builds) taken from the points as they will be stored, so that H·v is
 * computed along the direction the moves really take. */
static void make_directions(const probe *p, uint64_t seed, double eps, ad_value **v)
{
    ad_rng rng;
    ad_rng_seed(&rng, seed);
    for (int i = 0; i < p->n; i++) {
        v[i] = ad_tensor_randn(&rng, p->x[i]->rank, p->x[i]->shape, 1);
        if (!p->x[i]->requires_grad) continue;
        for (size_t j = 0; j < v[i]->size; j++) {
            double x = p->x[i]->data[j], d = v[i]->data[j];
#if !HT_REAL_IS_DOUBLE
            d = round(d * 16) / 16;
#endif
            d *= eps;
            v[i]->data[j] = (ad_real)(((double)(ad_real)(x + d) - (double)(ad_real)(x - d)) / (2 * eps));
        }
    }
}

/* The recorded gradient must hold the same numbers as the plain one (which
 * first_order compared with finite differences): the two sweeps accumulate
 * differently. */
static int check_recorded(const probe *p, ad_value *const *g_rec, ad_value *const *g_plain,
                          const char *name)
{
    for (int i = 0; i < p->n; i++) {
        if (!g_rec[i]) continue;
        for (size_t j = 0; j < g_rec[i]->size; j++) {
            double err = entry_error(g_rec[i]->data[j], g_plain[i]->data[j], 1);
            if (!(err <= GC_REC_TOL)) {
                fprintf(stderr, "gradcheck %s: recorded gradient, input %d entry %zu: "
                        "%.17g vs plain %.17g\n", name, i, j, (double)g_rec[i]->data[j],
                        (double)g_plain[i]->data[j]);
                return 1;
            }
        }
    }
    return 0;
}

static int second_order(const probe *p, uint64_t seed, double eps, double tol, const char *name)
{
    ad_value *v[8] = { 0 }, *hv[8] = { 0 }, *x0[8] = { 0 }, *g_rec[8] = { 0 }, *g_plain[8] = { 0 };
    /* ∇L at x0 + s·eps·v for s = 1, −1, and (when needed) 0, 2, −2. */
    ad_value *gp[8] = { 0 }, *gm[8] = { 0 }, *g0[8] = { 0 }, *gp2[8] = { 0 }, *gm2[8] = { 0 };
    for (int i = 0; i < p->n; i++) x0[i] = ad_value_copy(p->x[i]);
    make_directions(p, seed, eps, v);
    int bad = 0;
    if (grad_L(p, v, g_rec, hv) != AD_OK) {
        fprintf(stderr, "gradcheck %s: double backward failed: %s\n", name, ad_error());
        bad = 1;
    }
    if (!bad && grad_L(p, NULL, g_plain, NULL) != AD_OK) bad = 1;
    if (!bad) bad = check_recorded(p, g_rec, g_plain, name);
    /* Move every input along its direction at once: that is H·v. */
    if (!bad && (grad_at(p, x0, v, 1, eps, gp) != AD_OK || grad_at(p, x0, v, -1, eps, gm) != AD_OK))
        bad = 1;
    bool one_sided = false;
    for (int i = 0; i < p->n && !bad; i++) {
        if (!hv[i]) continue;
        size_t m = hv[i]->size;
        double *num = malloc(m * sizeof *num);
        if (!num) {
            bad = 1;
            break;
        }
        for (size_t j = 0; j < m; j++) num[j] = (gp[i]->data[j] - gm[i]->data[j]) / (2 * eps);
        double scale = gc_scale(hv[i]->data, m);
        for (size_t j = 0; j < m && !bad; j++) {
            double a = hv[i]->data[j], err = entry_error(a, num[j], scale);
#if !HT_REAL_IS_DOUBLE
            if (!(err <= tol) && !one_sided) { /* the one-sided differences, once */
                one_sided = true;
                if (grad_at(p, x0, v, 0, eps, g0) != AD_OK || grad_at(p, x0, v, 2, eps, gp2) != AD_OK ||
                    grad_at(p, x0, v, -2, eps, gm2) != AD_OK)
                    bad = 1;
            }
            if (!(err <= tol) && !bad) {
                double g = g0[i]->data[j];
                double dp = (-3 * g + 4 * gp[i]->data[j] - gp2[i]->data[j]) / (2 * eps);
                double dm = (3 * g - 4 * gm[i]->data[j] + gm2[i]->data[j]) / (2 * eps);
                err = fmin(err, fmin(entry_error(a, dp, scale), entry_error(a, dm, scale)));
            }
#endif
            if (!(err <= tol)) {
                fprintf(stderr, "gradcheck %s: second order, input %d entry %zu: "
                        "Hv %.12g numeric %.12g (error %.3g > %.3g)\n",
                        name, i, j, a, num[j], err, tol);
                bad = 1;
            }
        }
        free(num);
    }
    (void)one_sided;
    ad_value **all[] = { v, hv, x0, g_rec, g_plain, gp, gm, g0, gp2, gm2 };
    for (size_t k = 0; k < sizeof all / sizeof *all; k++) free_all(p->n, all[k]);
    return bad;
}

int gc_check(const char *name, gc_build f, void *ctx, int n, ad_value *const *x,
             const gc_opts *opts)
{
    gc_opts o = opts ? *opts : (gc_opts){ 0 };
    if (o.eps == 0) o.eps = 1e-6;
    if (o.tol == 0) o.tol = 1e-6;
    if (o.tol2 == 0) o.tol2 = 1e-5;
#if !HT_REAL_IS_DOUBLE
    o.eps = fmax(o.eps, GC_FLOAT_STEP);
    o.tol = fmax(o.tol, GC_FLOAT_TOL);
    o.tol2 = fmax(o.tol2, GC_FLOAT_TOL2);
    double eps2 = GC_FLOAT_STEP2;
#else
    double eps2 = o.eps;
#endif
    if (n < 1 || n > 8) {
        fprintf(stderr, "gradcheck %s: 1..8 inputs supported\n", name);
        return 1;
    }
    /* Build once to learn the output shape, then fix the projection r. */
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *y = f(tp, x, ctx);
    if (!y) {
        fprintf(stderr, "gradcheck %s: forward failed: %s\n", name, ad_error());
        ad_tape_free(tp);
        return 1;
    }
    ad_rng rng;
    ad_rng_seed(&rng, 0x5eed1);
    probe p = { f, ctx, n, x, ad_tensor_rand(&rng, y->rank, y->shape, -1, 1) };
    ad_tape_free(tp);
    int bad = first_order(&p, o.eps, o.tol, name);
    /* Two directions: a Hessian error that one v happens to miss (E·v ≈ 0)
     * is unlikely to be missed by an independent second one. */
    for (uint64_t seed = 0x5eed2; seed <= 0x5eed3 && !bad && !o.skip_second; seed++)
        bad = second_order(&p, seed, eps2, o.tol2, name);
    ad_value_free(p.r);
    return bad;
}

ad_value *gc_param(ad_rng *rng, int rank, const int *shape, double lo, double hi,
                   double min_abs)
{
    ad_value *v = ad_tensor_rand(rng, rank, shape, lo, hi);
    if (!v) return NULL;
    for (size_t i = 0; i < v->size; i++)
        while (fabs((double)v->data[i]) < min_abs)
            v->data[i] = (ad_real)(lo + (hi - lo) * ad_rng_uniform(rng));
    v->requires_grad = true;
    return v;
}
