/* guide_hvp.c — docs/guide.md, step 4: create_graph and double backward.
 * `guide-hvp --dot` prints the graph of d²/dx² (x sin x) (the figure). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ad/ad.h"
#include "ops/ops.h"

/* f(x) = ¼ (x·x)² + Σ sin xᵢ, whose Hessian is (x·x) I + 2 x xᵀ − diag(sin x). */
static ad_value *f(ad_tape *tp, ad_value *x)
{
    ad_value *r = ad_sqnorm(tp, x);
    return ad_add(tp, ad_scale(tp, ad_mul(tp, r, r), 0.25), ad_sum(tp, ad_sin(tp, x)));
}

int main(int argc, char **argv)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *s = ad_param_scalar(2.0), *d1, *d2; /* y = x sin x, differentiated twice */
    ad_value_set_name(s, "x");
    int rc = ad_grad(tp, ad_mul(tp, s, ad_sin(tp, s)), 1, &s, &d1, true); /* recorded */
    if (rc == AD_OK) rc = ad_grad(tp, d1, 1, &s, &d2, true);             /* its gradient */
    if (rc == AD_OK && argc > 1 && strcmp(argv[1], "--dot") == 0) {
        rc = ad_dot_write_opts(stdout, 1, &d2, &(ad_dot_opts){ .values = 1, .names = true });
        ad_tape_free(tp), ad_value_free(s);
        return rc == AD_OK ? 0 : 1;
    }
    const double hand = 2 * cos(2.0) - 2.0 * sin(2.0);
    if (rc == AD_OK)
        printf("d2y/dx2: tape %.12f   by hand 2 cos x - x sin x = %.12f\n", d2->data[0], hand);
    if (rc == AD_OK && !(fabs(d2->data[0] - hand) <= 1e-12)) /* a few roundings; NaN fails too */
        rc = ad_fail(AD_EARG, "d2y/dx2: the tape and the hand formula differ");

    ad_value *x = ad_param_from(1, (int[]){ 3 }, (ad_real[]){ 0.5, -1, 2 }), *g, *hv, *gp, *gm;
    ad_value *v = ad_tensor_from(1, (int[]){ 3 }, (ad_real[]){ 1, 2, -1 });
    /* H v = ∇(∇f · v): a recorded gradient, dotted with v, differentiated again. */
    if (rc == AD_OK) rc = ad_grad(tp, f(tp, x), 1, &x, &g, true);
    if (rc == AD_OK) rc = ad_grad(tp, ad_dot(tp, g, v), 1, &x, &hv, false);
    /* Central differences: ∇f(x ± h v), the gradient of f(x ± h v) with respect to x. */
    double h = 1e-5, r = 0, xv = 0, worst = 0, off = 0; /* off: from the formula */
    ad_value *step = ad_scale(tp, v, h); /* h v, a constant */
    if (rc == AD_OK) rc = ad_grad(tp, f(tp, ad_add(tp, x, step)), 1, &x, &gp, false);
    if (rc == AD_OK) rc = ad_grad(tp, f(tp, ad_sub(tp, x, step)), 1, &x, &gm, false);
    for (int i = 0; i < 3; i++) r += x->data[i] * x->data[i], xv += x->data[i] * v->data[i];
    for (int i = 0; i < 3 && rc == AD_OK; i++) {
        double exact = r * v->data[i] + 2 * x->data[i] * xv - sin(x->data[i]) * v->data[i];
        double fd = (gp->data[i] - gm->data[i]) / (2 * h);
        printf("(Hv)[%d]: double backward %.10f  formula %.10f  finite differences %.10f\n", i,
               (double)hv->data[i], exact, fd);
        worst = fmax(worst, fabs(hv->data[i] - fd) / fmax(1, fabs(fd)));
        off = fmax(off, fabs(hv->data[i] - exact) / fmax(1, fabs(exact)));
    }
    if (rc == AD_OK) printf("largest difference from finite differences: %.1e\n", worst);
    if (rc == AD_OK && (off > 1e-12 || worst > 1e-8)) /* rounding; and h² + ε/h, ≈ 1e-10 */
        rc = ad_fail(AD_EARG, "H v: double backward and the %s differ", off > 1e-12 ? "formula" :
                     "finite differences");
    if (rc != AD_OK) fprintf(stderr, "error: %s\n", ad_error());
    ad_tape_free(tp), ad_value_free(s), ad_value_free(x), ad_value_free(v);
    return rc == AD_OK ? 0 : 1;
}
