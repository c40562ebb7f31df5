/* logreg_fixture.c — see logreg_fixture.h. */
#include "logreg_fixture.h"

#include "ops/ops.h"

ad_value *logreg_loss(ad_tape *tp, ad_value *X, ad_value *y, ad_value *w)
{
    ad_value *w_col = ad_reshape(tp, w, 2, (int[]){ LOGREG_D, 1 });
    ad_value *Xw = ad_reshape(tp, ad_matmul(tp, X, w_col, false, false), 1,
                              (int[]){ X ? X->shape[0] : 0 });
    return ad_mean(tp, ad_softplus(tp, ad_neg(tp, ad_mul(tp, y, Xw))));
}

ad_value *logreg_inner(ad_tape *tp, ad_value *const *w, ad_value *const *lam, int t, void *ctx)
{
    (void)t;
    const logreg_data *d = ctx;
    ad_value *pen = ad_scale(tp, ad_dot(tp, ad_exp(tp, lam[0]), ad_square(tp, w[0])), 0.5);
    return ad_add(tp, logreg_loss(tp, d->X, d->y, w[0]), pen);
}

ad_value *logreg_outer(ad_tape *tp, ad_value *const *w, ad_value *const *lam, void *ctx)
{
    (void)lam;
    const logreg_data *d = ctx;
    return logreg_loss(tp, d->Xv, d->yv, w[0]);
}

int logreg_percoord_step(ad_tape *tp, int n_w, ad_value *const *w, ad_value *const *s,
                         ad_value *const *gw, ad_value *const *lam, int t, ad_value **w_new,
                         ad_value **s_new, void *ctx)
{
    (void)n_w, (void)t, (void)ctx;
    s_new[0] = ad_add(tp, ad_scale(tp, s[0], 0.5), gw[0]);
    w_new[0] = ad_sub(tp, w[0], ad_mul(tp, ad_exp(tp, lam[1]), s_new[0]));
    return AD_OK;
}

int logreg_adagrad_init(ad_tape *tp, int n_w, ad_value *const *w0, ad_value *const *lam,
                        ad_value **s0, void *ctx)
{
    (void)n_w, (void)w0, (void)ctx;
    s0[0] = ad_exp(tp, lam[1]);
    return s0[0] ? AD_OK : ad_error_code();
}

int logreg_adagrad_step(ad_tape *tp, int n_w, ad_value *const *w, ad_value *const *s,
                        ad_value *const *gw, ad_value *const *lam, int t, ad_value **w_new,
                        ad_value **s_new, void *ctx)
{
    (void)n_w, (void)lam, (void)t, (void)ctx;
    s_new[0] = ad_add(tp, s[0], ad_square(tp, gw[0]));
    w_new[0] = ad_sub(tp, w[0], ad_scale(tp, ad_div(tp, gw[0], ad_sqrt(tp, s_new[0])), 0.3));
    return AD_OK;
}
