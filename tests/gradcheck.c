/* gradcheck.c — see gradcheck.h. */
#include "gradcheck.h"

#include <math.h>
#include <stdlib.h>

#include "ad/node.h"
#include "ops/ops.h"

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

static double entry_error(double a, double n)
{
    double scale = fmax(1.0, fmax(fabs(a), fabs(n)));
    return fabs(a - n) / scale;
}

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
        for (size_t j = 0; j < p->x[i]->size && !bad; j++) {
            ad_real *xj = &p->x[i]->data[j], keep = *xj;
            double lp = 0, lm = 0;
            *xj = keep + eps;
            rc = eval_L(p, &lp);
            *xj = keep - eps;
            if (rc == AD_OK) rc = eval_L(p, &lm);
            *xj = keep;
            double num = (lp - lm) / (2 * eps), err = entry_error(g[i]->data[j], num);
            if (rc != AD_OK || !(err <= tol)) {
                fprintf(stderr, "gradcheck %s: first order, input %d entry %zu: "
                        "analytic %.12g numeric %.12g (error %.3g > %.3g)\n",
                        name, i, j, (double)g[i]->data[j], num, err, tol);
                bad = 1;
            }
        }
    }
    for (int i = 0; i < p->n; i++) ad_value_free(g[i]);
    return bad;
}

static int second_order(const probe *p, uint64_t seed, double eps, double tol, const char *name)
{
    ad_rng rng;
    ad_rng_seed(&rng, seed);
    ad_value *v[8] = { 0 }, *hv[8] = { 0 }, *gp[8] = { 0 }, *gm[8] = { 0 };
    ad_value *g_rec[8] = { 0 }, *g_plain[8] = { 0 };
    for (int i = 0; i < p->n; i++) v[i] = ad_tensor_randn(&rng, p->x[i]->rank, p->x[i]->shape, 1);
    int rc = grad_L(p, v, g_rec, hv), bad = 0;
    if (rc != AD_OK) {
        fprintf(stderr, "gradcheck %s: double backward failed: %s\n", name, ad_error());
        bad = 1;
    }
    /* The recorded gradient must hold the same numbers as the plain one (which
     * first_order compared with finite differences): the two sweeps
     * accumulate differently. */
    if (!bad && grad_L(p, NULL, g_plain, NULL) != AD_OK) bad = 1;
    for (int i = 0; i < p->n && !bad; i++) {
        if (!g_rec[i]) continue;
        for (size_t j = 0; j < g_rec[i]->size && !bad; j++) {
            double err = entry_error(g_rec[i]->data[j], g_plain[i]->data[j]);
            if (!(err <= 1e-12)) {
                fprintf(stderr, "gradcheck %s: recorded gradient, input %d entry %zu: "
                        "%.17g vs plain %.17g\n", name, i, j, (double)g_rec[i]->data[j],
                        (double)g_plain[i]->data[j]);
                bad = 1;
            }
        }
    }
    /* Move every input along its direction at once: that is H·v. */
    for (int s = 0; s < 2 && !bad; s++) {
        for (int i = 0; i < p->n; i++)
            if (p->x[i]->requires_grad)
                for (size_t j = 0; j < p->x[i]->size; j++)
                    p->x[i]->data[j] += (ad_real)((s == 0 ? eps : -2 * eps) * v[i]->data[j]);
        if (grad_L(p, NULL, s == 0 ? gp : gm, NULL) != AD_OK) bad = 1;
    }
    for (int i = 0; i < p->n; i++) /* restore x */
        if (p->x[i]->requires_grad)
            for (size_t j = 0; j < p->x[i]->size; j++) p->x[i]->data[j] += (ad_real)(eps * v[i]->data[j]);
    for (int i = 0; i < p->n && !bad; i++) {
        if (!hv[i]) continue;
        for (size_t j = 0; j < hv[i]->size && !bad; j++) {
            double num = (gp[i]->data[j] - gm[i]->data[j]) / (2 * eps);
            double err = entry_error(hv[i]->data[j], num);
            if (!(err <= tol)) {
                fprintf(stderr, "gradcheck %s: second order, input %d entry %zu: "
                        "Hv %.12g numeric %.12g (error %.3g > %.3g)\n",
                        name, i, j, (double)hv[i]->data[j], num, err, tol);
                bad = 1;
            }
        }
    }
    for (int i = 0; i < p->n; i++) {
        ad_value_free(v[i]);
        ad_value_free(hv[i]);
        ad_value_free(gp[i]);
        ad_value_free(gm[i]);
        ad_value_free(g_rec[i]);
        ad_value_free(g_plain[i]);
    }
    return bad;
}

int gc_check(const char *name, gc_build f, void *ctx, int n, ad_value *const *x,
             const gc_opts *opts)
{
    gc_opts o = opts ? *opts : (gc_opts){ 0 };
    if (o.eps == 0) o.eps = 1e-6;
    if (o.tol == 0) o.tol = 1e-6;
    if (o.tol2 == 0) o.tol2 = 1e-5;
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
        bad = second_order(&p, seed, o.eps, o.tol2, name);
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
