/* outer.c — SGD and Adam on lists of caller-owned tensors. */
#include <math.h>
#include <stdlib.h>

#include "optim/outer.h"

int opt_outer_init(opt_outer *o, opt_kind kind, double eta0, bool sqrt_decay, int n,
                   ad_value *const *params)
{
    if (!o || n < 1 || !params) return ad_fail(AD_EARG, "outer optimizer: no parameters");
    if (!(eta0 > 0) || !isfinite(eta0))
        return ad_fail(AD_EARG, "outer optimizer: step eta0 must be positive, got %g", eta0);
    *o = (opt_outer){ .kind = kind, .eta0 = eta0, .sqrt_decay = sqrt_decay, .beta1 = 0.9,
                      .beta2 = 0.999, .eps = 1e-8, .n = n };
    o->params = malloc((size_t)n * sizeof *o->params);
    if (!o->params) return ad_fail(AD_ENOMEM, "outer optimizer: out of memory");
    for (int i = 0; i < n; i++) {
        if (!params[i] || params[i]->tape) {
            opt_outer_free(o);
            return ad_fail(AD_EARG, "outer optimizer: parameter %d is not a caller-owned leaf", i);
        }
        o->params[i] = params[i];
        o->dim += params[i]->size;
    }
    if (kind == OPT_ADAM) {
        o->m = calloc(o->dim, sizeof *o->m);
        o->v = calloc(o->dim, sizeof *o->v);
        if (!o->m || !o->v) {
            opt_outer_free(o);
            return ad_fail(AD_ENOMEM, "outer optimizer: out of memory");
        }
    }
    return AD_OK;
}

void opt_outer_free(opt_outer *o)
{
    if (!o) return;
    free(o->params);
    free(o->m);
    free(o->v);
    o->params = NULL;
    o->m = o->v = NULL;
}

int opt_outer_step(opt_outer *o, ad_value *const *grads)
{
    for (int i = 0; i < o->n; i++) {
        if (!grads || !grads[i] || grads[i]->size != o->params[i]->size)
            return ad_fail(AD_ESHAPE, "outer optimizer: gradient %d does not match parameter %d", i, i);
        int rc = ad_check_finite("outer optimizer: gradient", grads[i]);
        if (rc != AD_OK) return rc;
    }
    o->tau++;
    double eta = o->sqrt_decay ? o->eta0 / sqrt((double)o->tau) : o->eta0;
    double c1 = 1 - pow(o->beta1, o->tau), c2 = 1 - pow(o->beta2, o->tau);
    size_t k = 0;
    for (int i = 0; i < o->n; i++)
        for (size_t j = 0; j < grads[i]->size; j++, k++) {
            double g = grads[i]->data[j], step = g;
            if (o->kind == OPT_ADAM) {
                o->m[k] = o->beta1 * o->m[k] + (1 - o->beta1) * g;
                o->v[k] = o->beta2 * o->v[k] + (1 - o->beta2) * g * g;
                step = (o->m[k] / c1) / (sqrt(o->v[k] / c2) + o->eps);
            }
            o->params[i]->data[j] -= (ad_real)(eta * step);
        }
    return AD_OK;
}

double opt_outer_eta0_for_norm(opt_kind kind, int n, ad_value *const *grads, double target)
{
    /* Adam's first update is η0 · g/(|g| + ε) entrywise; SGD's is η0 · g. */
    double s = 0;
    for (int i = 0; i < n; i++)
        for (size_t j = 0; j < grads[i]->size; j++) {
            double g = grads[i]->data[j], u = kind == OPT_ADAM ? g / (fabs(g) + 1e-8) : g;
            s += u * u;
        }
    return s > 0 ? target / sqrt(s) : 0;
}
