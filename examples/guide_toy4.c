/* guide_toy4.c — docs/guide.md, step 8: the paper's toy problem, its hypergradient four ways. */
#include <math.h>
#include <stdio.h>

#include "ops/ops.h"
#include "optim/hypergrad.h"

static ad_value *G; /* diag(G) = (1, ½) */

static int init(ad_tape *tp, ad_value *const *lam, ad_value **w0, void *ctx)
{   /* w0 = (2, 2) */
    return (w0[0] = ad_const(tp, 1, (int[]){ 2 }, (ad_real[]){ 2, 2 })) ? AD_OK : ad_error_code();
}

static ad_value *inner(ad_tape *tp, ad_value *const *w, ad_value *const *lam, int t, void *ctx)
{
    ad_value *d = ad_sub(tp, w[0], lam[0]); /* g = ½ (w − λ)ᵀ G (w − λ) */
    return ad_scale(tp, ad_dot(tp, d, ad_mul(tp, G, d)), 0.5);
}

static ad_value *outer(ad_tape *tp, ad_value *const *w, ad_value *const *lam, void *ctx)
{   /* f = ‖w‖² + 10 ‖sin w‖² */
    return ad_add(tp, ad_sqnorm(tp, w[0]), ad_scale(tp, ad_sqnorm(tp, ad_sin(tp, w[0])), 10));
}

int main(void)
{
    G = ad_tensor_from(1, (int[]){ 2 }, (ad_real[]){ 1, 0.5 });
    ad_value *lam = ad_param_from(1, (int[]){ 2 }, (ad_real[]){ 1, 1 }), *h[4] = { 0 };
    hg_problem p = { .n_w = 1, .n_hyper = 1, .hyper = &lam, .init = init, .inner = inner,
                     .outer = outer, .opt = { .kind = HG_GD, .step = 0.1 } };
    const char *name[] = { "K-RMD, K = 10", "full RMD", "FMD", "implicit, CG" };
    int rc = AD_OK;
    double worst = 0;
    for (p.T = 100; p.T <= 400 && rc == AD_OK; p.T *= 4) {
        for (int way = 0; way < 4 && rc == AD_OK; way++) {
            hg_report r;
            rc = way == 0 ? hg_krmd(&p, 10, &h[0], &r)        /* the last 10 steps */
               : way == 1 ? hg_full_rmd(&p, &h[1], &r)         /* all T steps back */
               : way == 2 ? hg_fmd(&p, &h[2], &r)              /* dw_t/dλ carried forward */
               : hg_implicit_cg(&p, 10, 0, &h[3], &r);         /* 10 CG iterations at ŵ */
            if (rc != AD_OK) break;
            printf("T = %d  %-13s (%15.12f, %15.12f)  peak tape %7zu B, kept %2zu B\n",
                   p.T, name[way], h[way]->data[0], h[way]->data[1], r.peak_tape_bytes,
                   r.checkpoint_bytes);
            for (int i = 0; i < 2; i++) { /* the closed forms (below): a = 1 − γGᵢ, C = a^T */
                double a = 1 - 0.1 * G->data[i], C = pow(a, p.T), w = C * 2 + (1 - C) * 1; /* ŵ */
                double k = way == 0 ? 1 - pow(a, 10) : way == 3 ? 1 : 1 - C; /* h = k ∇ŵf */
                worst = fmax(worst, fabs(h[way]->data[i] / (k * (2 * w + 10 * sin(2 * w))) - 1));
            }
        }
        hg_compare c = hg_compare_grads(1, &h[3], &h[1]); /* implicit against full RMD */
        printf("T = %d  implicit vs full: relative difference %.1e\n\n", p.T, c.rel_error);
        for (int way = 0; way < 4; way++) ad_value_free(h[way]), h[way] = NULL;
    }
    if (rc == AD_OK) printf("largest relative difference from the closed forms: %.1e\n", worst);
    if (rc == AD_OK && worst >= 1e-12) rc = ad_fail(AD_EARG, "an estimate is off its closed form");
    if (rc != AD_OK) fprintf(stderr, "error: %s\n", ad_error());
    ad_value_free(lam), ad_value_free(G);
    return rc == AD_OK ? 0 : 1;
}
