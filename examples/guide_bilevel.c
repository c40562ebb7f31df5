/* guide_bilevel.c — docs/guide.md, step 9: tuning ridge regression's penalty and step size. */
#include <math.h>
#include <stdio.h>

#include "ops/ops.h"
#include "optim/hypergrad.h"
#include "optim/outer.h"

enum { N = 12, D = 8 };       /* examples per set, features */
static ad_value *X[2], *Y[2]; /* [0] training, [1] validation: X [N,D], Y [N,1] */

static int init(ad_tape *tp, ad_value *const *lam, ad_value **w0, void *ctx)
{
    return (w0[0] = ad_const_fill(tp, 2, (int[]){ D, 1 }, 0)) ? AD_OK : ad_error_code();
}

static ad_value *inner(ad_tape *tp, ad_value *const *w, ad_value *const *lam, int t, void *ctx)
{   /* g = mean (X w − Y)² + e^ρ ‖w‖² on the training set */
    ad_value *r = ad_sub(tp, ad_matmul(tp, X[0], w[0], false, false), Y[0]);
    ad_value *penalty = ad_mul(tp, ad_exp(tp, lam[0]), ad_sqnorm(tp, w[0]));
    return ad_add(tp, ad_mean(tp, ad_square(tp, r)), penalty);
}

static ad_value *outer(ad_tape *tp, ad_value *const *w, ad_value *const *lam, void *ctx)
{   /* f = mean (X w − Y)² on the validation set */
    return ad_mean(tp, ad_square(tp, ad_sub(tp, ad_matmul(tp, X[1], w[0], false, false), Y[1])));
}

int main(void)
{
    ad_rng rng;
    ad_rng_seed(&rng, 3);
    for (int s = 0; s < 2; s++) { /* y = Σ_j x_j · j/D + noise */
        X[s] = ad_tensor_randn(&rng, 2, (int[]){ N, D }, 1);
        Y[s] = ad_tensor_randn(&rng, 2, (int[]){ N, 1 }, 1);
        for (int i = 0; i < N * D; i++) Y[s]->data[i / D] += X[s]->data[i] * (i % D) / D;
    }
    ad_value *lam[2] = { ad_param_scalar(-3), ad_param_scalar(log(0.05)) }, *h[2]; /* ρ, θ */
    hg_problem p = { .n_w = 1, .n_hyper = 2, .hyper = lam, .T = 50, .init = init, .inner = inner,
                     .outer = outer, .opt = { .step_hyper = lam[1], .step_transform = HG_EXP } };
    hg_sweep_result sw; /* K-RMD for each K, and full RMD, from one reverse pass over the T steps */
    int rc = hg_sweep(&p, (int[]){ 1, 5, 25, 50 }, 4, &sw, NULL);
    for (int i = 0; i < sw.nK && rc == AD_OK; i++) { /* (none if hg_sweep failed) */
        double th = *sw.estimates[2 * i + 1]->data, c = sw.rows[i].cmp.cosine, K = sw.rows[i].K;
        printf("K = %2d: d rho %9.6f  d theta %9.6f  cosine %.6f\n", sw.rows[i].K,
               *sw.estimates[2 * i]->data, th, c);
        if (!(c > 0 && fabs(th / (K / p.T * *sw.exact[1]->data) - 1) <= 1e-10)) /* and not NaN */
            rc = ad_fail(AD_EARG, "K = %g: d theta is not K/T of the exact one, or cosine <= 0", K);
    }
    opt_outer o = { 0 }; /* then 100 steps of Adam on λ along 5-RMD's estimate */
    if (rc == AD_OK) rc = opt_outer_init(&o, OPT_ADAM, 0.1, false, 2, lam);
    hg_report r[2]; /* the first hyper-iteration's and the last one's */
    for (int tau = 1; tau <= 100 && rc == AD_OK; tau++) {
        if ((rc = hg_krmd(&p, 5, h, &r[tau > 1])) != AD_OK) break;
        rc = opt_outer_step(&o, h); /* λ ← λ − Adam's step */
        ad_value_free(h[0]), ad_value_free(h[1]);
    }
    if (rc == AD_OK && r[1].outer_loss >= r[0].outer_loss) rc = ad_fail(AD_EARG, "Adam raised f");
    if (rc != AD_OK) fprintf(stderr, "error: %s\n", ad_error());
    else printf("Adam: validation loss %.6f -> %.6f, penalty %.4f, step %.4f\n", r[0].outer_loss,
                r[1].outer_loss, exp(lam[0]->data[0]), exp(lam[1]->data[0]));
    hg_sweep_free(&sw), opt_outer_free(&o);
    for (int i = 0; i < 2; i++) ad_value_free(X[i]), ad_value_free(Y[i]), ad_value_free(lam[i]);
    return rc == AD_OK ? 0 : 1;
}
