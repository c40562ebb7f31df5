/* outer.c — SGD and Adam on lists of caller-owned tensors. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

/* ---- saving and loading ----------------------------------------------------
 * Layout: the 8 bytes "HTOPTOU1", then int32 kind and sqrt_decay, double
 * eta0, beta1, beta2, eps, uint64 dim, int64 tau, then (Adam) m[dim], v[dim]. */

static const char OPT_MAGIC[8] = { 'H', 'T', 'O', 'P', 'T', 'O', 'U', '1' };

int opt_outer_save(const opt_outer *o, FILE *f)
{
    int32_t head[2] = { (int32_t)o->kind, o->sqrt_decay };
    double step[4] = { o->eta0, o->beta1, o->beta2, o->eps };
    uint64_t dim = o->dim;
    int64_t tau = o->tau;
    bool adam = o->kind == OPT_ADAM;
    bool ok = fwrite(OPT_MAGIC, 1, 8, f) == 8 && fwrite(head, sizeof head, 1, f) == 1 &&
              fwrite(step, sizeof step, 1, f) == 1 && fwrite(&dim, sizeof dim, 1, f) == 1 &&
              fwrite(&tau, sizeof tau, 1, f) == 1;
    if (ok && adam && o->dim > 0)
        ok = fwrite(o->m, sizeof *o->m, o->dim, f) == o->dim &&
             fwrite(o->v, sizeof *o->v, o->dim, f) == o->dim;
    return ok ? AD_OK : ad_fail(AD_EIO, "outer optimizer: cannot save its state");
}

/* Reads n bytes, or says which part ended early. */
static int read_part(FILE *f, void *p, size_t size, size_t n, const char *what)
{
    if (n == 0 || fread(p, size, n, f) == n) return AD_OK;
    return ad_fail(AD_EFORMAT, "outer optimizer: the state ends within %s", what);
}

/* Every moment finite, every second moment >= 0. */
static int check_moments(const double *m, const double *v, size_t dim)
{
    for (size_t k = 0; k < dim; k++) {
        if (!isfinite(m[k]))
            return ad_fail(AD_EFORMAT, "outer optimizer: Adam's first moment m[%zu] is %g", k, m[k]);
        if (!isfinite(v[k]) || v[k] < 0)
            return ad_fail(AD_EFORMAT, "outer optimizer: Adam's second moment v[%zu] is %g, not "
                           "a finite number >= 0", k, v[k]);
    }
    return AD_OK;
}

int opt_outer_load(opt_outer *o, FILE *f)
{
    char magic[8];
    int32_t head[2];
    double step[4];
    uint64_t dim;
    int64_t tau;
    int rc = read_part(f, magic, 1, 8, "its magic");
    if (rc == AD_OK && memcmp(magic, OPT_MAGIC, 8) != 0)
        return ad_fail(AD_EFORMAT, "outer optimizer: not a saved state (bad magic)");
    if (rc == AD_OK) rc = read_part(f, head, sizeof head, 1, "its kind");
    if (rc == AD_OK) rc = read_part(f, step, sizeof step, 1, "its step settings");
    if (rc == AD_OK) rc = read_part(f, &dim, sizeof dim, 1, "its size");
    if (rc == AD_OK) rc = read_part(f, &tau, sizeof tau, 1, "its step count");
    if (rc != AD_OK) return rc;
    if (head[0] != (int32_t)o->kind || dim != o->dim)
        return ad_fail(AD_EFORMAT, "outer optimizer: the state is of kind %d over %llu numbers, "
                       "this one of kind %d over %zu", (int)head[0], (unsigned long long)dim,
                       (int)o->kind, o->dim);
    if (head[1] != 0 && head[1] != 1) return ad_fail(AD_EFORMAT, "outer optimizer: sqrt_decay is %d", (int)head[1]);
    if (!(isfinite(step[0]) && step[0] > 0))
        return ad_fail(AD_EFORMAT, "outer optimizer: eta0 is %g, not a finite number > 0", step[0]);
    if (!(step[1] >= 0 && step[1] < 1) || !(step[2] >= 0 && step[2] < 1))
        return ad_fail(AD_EFORMAT, "outer optimizer: beta1 %g or beta2 %g outside [0, 1)", step[1], step[2]);
    if (!(isfinite(step[3]) && step[3] > 0))
        return ad_fail(AD_EFORMAT, "outer optimizer: eps is %g, not a finite number > 0", step[3]);
    if (tau < 0 || tau > INT32_MAX)
        return ad_fail(AD_EFORMAT, "outer optimizer: the step count is %lld", (long long)tau);
    double *m = NULL, *v = NULL;
    if (o->kind == OPT_ADAM && dim > 0) {
        m = malloc(sizeof *m * dim);
        v = malloc(sizeof *v * dim);
        rc = m && v ? AD_OK : ad_fail(AD_ENOMEM, "outer optimizer: out of memory");
        if (rc == AD_OK) rc = read_part(f, m, sizeof *m, dim, "Adam's first moment");
        if (rc == AD_OK) rc = read_part(f, v, sizeof *v, dim, "Adam's second moment");
        if (rc == AD_OK) rc = check_moments(m, v, dim);
        if (rc == AD_OK) {
            memcpy(o->m, m, sizeof *m * dim);
            memcpy(o->v, v, sizeof *v * dim);
        }
    }
    free(m);
    free(v);
    if (rc != AD_OK) return rc;
    o->sqrt_decay = head[1];
    o->eta0 = step[0];
    o->beta1 = step[1];
    o->beta2 = step[2];
    o->eps = step[3];
    o->tau = (int)tau;
    return AD_OK;
}
