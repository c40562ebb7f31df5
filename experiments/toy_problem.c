/* toy_problem.c — see toy_problem.h.  Written as a user would: callbacks
 * that build graphs. */
#include "toy_problem.h"

#include <math.h>

#include "ops/ops.h"

static int toy_w0(ad_tape *tp, ad_value *const *lam, ad_value **w0, void *ctx)
{
    (void)lam;
    (void)ctx;
    w0[0] = ad_const(tp, 1, (int[]){ 2 }, (ad_real[]){ 2, 2 });
    return w0[0] ? AD_OK : ad_error_code();
}

static ad_value *toy_inner(ad_tape *tp, ad_value *const *w, ad_value *const *lam, int t, void *ctx)
{
    (void)t;
    const toy *ty = ctx;
    ad_value *d = ad_sub(tp, w[0], lam[0]);
    return ad_scale(tp, ad_dot(tp, d, ad_mul(tp, ty->G, d)), 0.5);
}

static ad_value *toy_outer(ad_tape *tp, ad_value *const *w, ad_value *const *lam, void *ctx)
{
    const toy *ty = ctx;
    ad_value *f = ad_add(tp, ad_sqnorm(tp, w[0]), ad_scale(tp, ad_sqnorm(tp, ad_sin(tp, w[0])), 10));
    if (ty->tilde) {
        ad_value *target = ad_const(tp, 1, (int[]){ 2 }, (ad_real[]){ 1, 0 });
        f = ad_add(tp, f, ad_scale(tp, ad_sqnorm(tp, ad_sub(tp, lam[0], target)), 5));
    }
    return f;
}

int toy_init(toy *t, double lam1, double lam2, int T, double gamma, bool tilde)
{
    t->lam = ad_param_from(1, (int[]){ 2 }, (ad_real[]){ (ad_real)lam1, (ad_real)lam2 });
    t->G = ad_tensor_from(1, (int[]){ 2 }, (ad_real[]){ 1.0, 0.5 });
    t->tilde = tilde;
    if (!t->lam || !t->G) {
        int rc = ad_error_code(); /* what the tensor failed with */
        toy_free(t);
        return rc;
    }
    t->problem = (hg_problem){
        .n_w = 1, .n_hyper = 1, .hyper = &t->lam, .T = T,
        .opt = { .kind = HG_GD, .step = gamma },
        .ctx = t, .init = toy_w0, .inner = toy_inner, .outer = toy_outer,
    };
    return hg_problem_check(&t->problem);
}

void toy_free(toy *t)
{
    ad_value_free(t->lam);
    ad_value_free(t->G);
    t->lam = t->G = NULL;
}

void toy_closed_form(const toy *t, int K, double w_hat[2], double h[2])
{
    int T = t->problem.T;
    double gamma = t->problem.opt.step;
    for (int i = 0; i < 2; i++) {
        double a = 1 - gamma * t->G->data[i], C = pow(a, T), lam = t->lam->data[i];
        w_hat[i] = C * 2 + (1 - C) * lam;
        double df = 2 * w_hat[i] + 10 * sin(2 * w_hat[i]), s = 0;
        for (int k = 0; k < (K < T ? K : T); k++) s += gamma * t->G->data[i] * pow(a, k);
        h[i] = s * df;
        if (t->tilde) h[i] += 10 * (lam - (i == 0 ? 1 : 0));
    }
}
