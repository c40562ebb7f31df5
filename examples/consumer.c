/* consumer.c — a program built against an installed hypertape (the
 * README's "Installing" section; tests/test_install.sh builds and runs it
 * with the README's command line).
 *
 * The paper's toy problem, with Adam as the inner optimizer and its step
 * size learned on a log scale: the 10-step truncated hypergradient for λ
 * and for log γ, printed, saved to dlam.npy and read back. */
#include <math.h>
#include <stdio.h>

#include <hypertape/hypertape.h>

static int init(ad_tape *tp, ad_value *const *lam, ad_value **w0, void *ctx)
{
    (void)lam, (void)ctx;
    w0[0] = ad_const(tp, 1, (int[]){ 2 }, (ad_real[]){ 2, 2 });
    return w0[0] ? AD_OK : ad_error_code();
}

static ad_value *inner(ad_tape *tp, ad_value *const *w, ad_value *const *lam, int t, void *ctx)
{
    (void)t;
    ad_value *G = ctx, *d = ad_sub(tp, w[0], lam[0]); /* ½ (w − λ)ᵀ G (w − λ) */
    return ad_scale(tp, ad_dot(tp, d, ad_mul(tp, G, d)), 0.5);
}

static ad_value *outer(ad_tape *tp, ad_value *const *w, ad_value *const *lam, void *ctx)
{
    (void)lam, (void)ctx; /* ‖ŵ‖² + 10 ‖sin ŵ‖² */
    return ad_add(tp, ad_sqnorm(tp, w[0]), ad_scale(tp, ad_sqnorm(tp, ad_sin(tp, w[0])), 10));
}

int main(void)
{
    ad_value *G = ad_tensor_from(1, (int[]){ 2 }, (ad_real[]){ 1, 0.5 });
    ad_value *lam = ad_param_from(1, (int[]){ 2 }, (ad_real[]){ 1, 1 });
    ad_value *log_step = ad_param_scalar((ad_real)log(0.1));
    ad_value *hyper[2] = { lam, log_step }, *h[2] = { NULL, NULL }, *back = NULL;
    hg_problem p = { .n_w = 1, .n_hyper = 2, .hyper = hyper, .T = 100, .ctx = G,
                     .init = init, .inner = inner, .outer = outer };
    p.opt = hg_opt_adam(0);           /* Adam, with γ = e^θ and θ = log_step */
    p.opt.step_hyper = log_step;
    p.opt.step_transform = HG_EXP;

    hg_report r;
    int rc = hg_krmd(&p, 10, h, &r);
    if (rc == AD_OK && r.diverged)
        fprintf(stderr, "warning: the inner loss rose from %g to %g\n", r.inner_loss_first,
                r.inner_loss_last);
    if (rc == AD_OK) {
        printf("f(w_T) = %.6f, inner loss %.3g -> %.3g\n", r.outer_loss, r.inner_loss_first,
               r.inner_loss_last);
        ad_print(stdout, "d/dlambda", h[0]);
        ad_print(stdout, "d/dlog(gamma)", h[1]);
        rc = ad_save_npy("dlam.npy", h[0]); /* np.load("dlam.npy") in Python */
    }
    if (rc == AD_OK && !(back = ad_load_npy("dlam.npy"))) rc = ad_error_code();
    if (rc == AD_OK && (back->data[0] != h[0]->data[0] || back->data[1] != h[0]->data[1]))
        rc = ad_fail(AD_EFORMAT, "dlam.npy does not hold what was saved");
    if (rc != AD_OK) fprintf(stderr, "error: %s\n", ad_error());
    ad_value *all[] = { G, lam, log_step, h[0], h[1], back };
    for (int i = 0; i < 6; i++) ad_value_free(all[i]);
    return rc == AD_OK ? 0 : 1;
}
