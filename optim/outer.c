/* outer.c — SGD and Adam on groups of caller-owned tensors. */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "optim/outer.h"

/* ---- setting up ------------------------------------------------------------ */

/* AD_OK when params[0..n-1] are caller-owned leaves, none listed twice and
 * none already in o (o->params[0..o->n-1]). */
static int check_new_params(const opt_outer *o, int n, ad_value *const *params)
{
    if (n < 1 || !params) return ad_fail(AD_EARG, "outer optimizer: no parameters");
    for (int i = 0; i < n; i++) {
        if (!params[i] || params[i]->tape)
            return ad_fail(AD_EARG, "outer optimizer: parameter %d is not a caller-owned leaf",
                           o->n + i);
        for (int j = 0; j < o->n + i; j++)
            if ((j < o->n ? o->params[j] : params[j - o->n]) == params[i])
                return ad_fail(AD_EARG, "outer optimizer: parameter %d is parameter %d again",
                               o->n + i, j);
    }
    return AD_OK;
}

/* Appends group {eta0, sqrt_decay, betas and eps of `like`} over params to o,
 * growing its arrays; on failure o is as it was (a grown array is harmless).
 * `like` is taken by value: it may be a group of o, which growing moves. */
static int append_group(opt_outer *o, double eta0, bool sqrt_decay, opt_group like, int n,
                        ad_value *const *params)
{
    if (!(eta0 > 0) || !isfinite(eta0))
        return ad_fail(AD_EARG, "outer optimizer: step eta0 must be positive, got %g", eta0);
    int rc = check_new_params(o, n, params);
    if (rc != AD_OK) return rc;
    if (n > INT_MAX - o->n || o->n_groups == INT_MAX)
        return ad_fail(AD_EARG, "outer optimizer: too many parameters");
    size_t dim = 0;
    for (int i = 0; i < n; i++) dim += params[i]->size;
    ad_value **ps = realloc(o->params, sizeof *ps * (size_t)(o->n + n));
    if (ps) o->params = ps;
    opt_group *gs = ps ? realloc(o->groups, sizeof *gs * (size_t)(o->n_groups + 1)) : NULL;
    if (gs) o->groups = gs;
    if (gs && o->kind == OPT_ADAM && dim > 0) {
        double *m = realloc(o->m, sizeof *m * (o->dim + dim));
        if (m) o->m = m;
        double *v = m ? realloc(o->v, sizeof *v * (o->dim + dim)) : NULL;
        if (v) o->v = v;
        if (!v) gs = NULL;
    }
    if (!gs) return ad_fail(AD_ENOMEM, "outer optimizer: out of memory");
    if (o->kind == OPT_ADAM && dim > 0) {
        memset(o->m + o->dim, 0, sizeof *o->m * dim);
        memset(o->v + o->dim, 0, sizeof *o->v * dim);
    }
    o->groups[o->n_groups++] = (opt_group){ .first = o->n, .n = n, .offset = o->dim, .dim = dim,
                                            .eta0 = eta0, .sqrt_decay = sqrt_decay,
                                            .beta1 = like.beta1, .beta2 = like.beta2,
                                            .eps = like.eps };
    memcpy(o->params + o->n, params, sizeof *params * (size_t)n);
    o->n += n;
    o->dim += dim;
    return AD_OK;
}

int opt_outer_init(opt_outer *o, opt_kind kind, double eta0, bool sqrt_decay, int n,
                   ad_value *const *params)
{
    if (!o) return ad_fail(AD_EARG, "outer optimizer: NULL optimizer");
    *o = (opt_outer){ .kind = kind };
    if (kind != OPT_SGD && kind != OPT_ADAM)
        return ad_fail(AD_EARG, "outer optimizer: unknown kind %d", (int)kind);
    const opt_group defaults = { .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8 };
    int rc = append_group(o, eta0, sqrt_decay, defaults, n, params);
    if (rc != AD_OK) opt_outer_free(o);
    return rc;
}

int opt_outer_add_group(opt_outer *o, double eta0, bool sqrt_decay, int n,
                        ad_value *const *params)
{
    if (!o || o->n_groups < 1)
        return ad_fail(AD_EARG, "outer optimizer: add a group to an initialized optimizer");
    if (o->tau > 0)
        return ad_fail(AD_EARG, "outer optimizer: groups are added before the first step "
                       "(%d done)", o->tau);
    return append_group(o, eta0, sqrt_decay, o->groups[0], n, params);
}

void opt_outer_free(opt_outer *o)
{
    if (!o) return;
    free(o->params);
    free(o->groups);
    free(o->m);
    free(o->v);
    *o = (opt_outer){ 0 };
}

/* ---- one step ------------------------------------------------------------------ */

/* AD_OK when g's settings are ones an optimizer can step with; else `code`
 * with a message naming group i and the setting. */
static int check_settings(const opt_group *g, int i, int code)
{
    if (!(isfinite(g->eta0) && g->eta0 > 0))
        return ad_fail(code, "outer optimizer: group %d: eta0 is %g, not a finite number > 0",
                       i, g->eta0);
    if (!(g->beta1 >= 0 && g->beta1 < 1) || !(g->beta2 >= 0 && g->beta2 < 1))
        return ad_fail(code, "outer optimizer: group %d: beta1 %g or beta2 %g outside [0, 1)",
                       i, g->beta1, g->beta2);
    if (!(isfinite(g->eps) && g->eps > 0))
        return ad_fail(code, "outer optimizer: group %d: eps is %g, not a finite number > 0",
                       i, g->eps);
    return AD_OK;
}

/* What update τ does to one entry: its step size and bias corrections. */
typedef struct { double eta, c1, c2; } step_coef;

static step_coef step_coef_of(const opt_group *g, int tau)
{
    return (step_coef){ .eta = g->sqrt_decay ? g->eta0 / sqrt((double)tau) : g->eta0,
                        .c1 = 1 - pow(g->beta1, tau), .c2 = 1 - pow(g->beta2, tau) };
}

/* One entry's update: gradient gr, moments *m, *v (Adam) and parameter *p are
 * replaced by their values after the step. Both passes of opt_outer_step go
 * through here, so the values checked are the values stored. */
static void entry_update(opt_kind kind, const opt_group *g, step_coef c, double gr, double *m,
                         double *v, ad_real *p)
{
    double step = gr;
    if (kind == OPT_ADAM) {
        *m = g->beta1 * *m + (1 - g->beta1) * gr;
        *v = g->beta2 * *v + (1 - g->beta2) * gr * gr;
        step = (*m / c.c1) / (sqrt(*v / c.c2) + g->eps);
    }
    *p -= (ad_real)(c.eta * step);
}

static const char *nonfinite_name(double x) { return isnan(x) ? "NaN" : x > 0 ? "Inf" : "-Inf"; }

/* The step from grads at update tau: with apply, stored; without, every
 * value it would store checked, nothing written. */
static int walk(opt_outer *o, ad_value *const *grads, int tau, bool apply)
{
    for (int gi = 0; gi < o->n_groups; gi++) {
        const opt_group *g = &o->groups[gi];
        step_coef c = step_coef_of(g, tau);
        size_t k = g->offset;
        for (int i = g->first; i < g->first + g->n; i++)
            for (size_t j = 0; j < grads[i]->size; j++, k++) {
                double gr = grads[i]->data[j], m = 0, v = 0;
                ad_real p = o->params[i]->data[j];
                if (o->kind == OPT_ADAM) m = o->m[k], v = o->v[k];
                if (!apply && !isfinite(gr))
                    return ad_fail(AD_ENONFINITE, "outer optimizer: gradient %d entry %zu is %s; "
                                   "the step is not taken", i, j, nonfinite_name(gr));
                entry_update(o->kind, g, c, gr, &m, &v, &p);
                if (apply) {
                    if (o->kind == OPT_ADAM) o->m[k] = m, o->v[k] = v;
                    o->params[i]->data[j] = p;
                } else if (!isfinite(m) || !isfinite(v)) {
                    return ad_fail(AD_ENONFINITE, "outer optimizer: gradient %d entry %zu = %g "
                                   "would make Adam's %s moment %s; the step is not taken", i,
                                   j, gr, isfinite(m) ? "second" : "first",
                                   nonfinite_name(isfinite(m) ? v : m));
                } else if (!isfinite((double)p)) {
                    return ad_fail(AD_ENONFINITE, "outer optimizer: the update would make "
                                   "parameter %d entry %zu %s (it is %g, its gradient %g); the "
                                   "step is not taken", i, j, nonfinite_name((double)p),
                                   (double)o->params[i]->data[j], gr);
                }
            }
    }
    return AD_OK;
}

int opt_outer_step(opt_outer *o, ad_value *const *grads)
{
    if (!o || o->n_groups < 1) return ad_fail(AD_EARG, "outer optimizer: not initialized");
    if (!grads) return ad_fail(AD_EARG, "outer optimizer: no gradients");
    for (int i = 0; i < o->n; i++) {
        if (!grads[i]) return ad_fail(AD_EARG, "outer optimizer: gradient %d is NULL", i);
        char who[48];
        snprintf(who, sizeof who, "outer optimizer: gradient %d", i);
        if (ad_value_check(who, grads[i]) != AD_OK) return AD_EARG; /* released: no data */
        snprintf(who, sizeof who, "outer optimizer: parameter %d", i);
        if (ad_value_check(who, o->params[i]) != AD_OK) return AD_EARG; /* freed too early */
        if (grads[i]->size != o->params[i]->size)
            return ad_fail(AD_ESHAPE, "outer optimizer: gradient %d does not match parameter %d",
                           i, i);
    }
    for (int gi = 0; gi < o->n_groups; gi++) {
        int rc = check_settings(&o->groups[gi], gi, AD_EARG);
        if (rc != AD_OK) return rc;
    }
    if (o->tau == INT_MAX)
        return ad_fail(AD_EARG, "outer optimizer: %d steps done, no more can be counted", o->tau);
    int rc = walk(o, grads, o->tau + 1, false); /* check everything, then commit */
    if (rc != AD_OK) return rc;
    walk(o, grads, ++o->tau, true);
    return AD_OK;
}

double opt_outer_eta0_for_norm(opt_kind kind, int n, ad_value *const *grads, double target)
{
    if (n < 0 || (n > 0 && !grads)) {
        ad_fail(AD_EARG, "outer optimizer: eta0_for_norm: no gradients");
        return 0;
    }
    /* Adam's first update is η0 · g/(|g| + ε) entrywise; SGD's is η0 · g. */
    double s = 0;
    for (int i = 0; i < n; i++) {
        if (!grads[i]) {
            ad_fail(AD_EARG, "outer optimizer: eta0_for_norm: gradient %d is NULL", i);
            return 0;
        }
        char who[64];
        snprintf(who, sizeof who, "outer optimizer: eta0_for_norm: gradient %d", i);
        if (ad_value_check(who, grads[i]) != AD_OK) return 0; /* released: no data */
        for (size_t j = 0; j < grads[i]->size; j++) {
            double g = grads[i]->data[j], u = kind == OPT_ADAM ? g / (fabs(g) + 1e-8) : g;
            s += u * u;
        }
    }
    return s > 0 ? target / sqrt(s) : 0;
}

/* ---- saving and loading ----------------------------------------------------
 * Version 1 (one group): the 8 bytes "HTOPTOU1", int32 kind and sqrt_decay,
 * double eta0, beta1, beta2, eps, uint64 dim, int64 tau, then (Adam) m[dim],
 * v[dim].
 * Version 2 (any number of groups): "HTOPTOU2", int32 kind and n_groups,
 * uint64 dim, int64 tau, then per group int32 n (tensors) and sqrt_decay,
 * uint64 dim, double eta0, beta1, beta2, eps; then (Adam) m[dim], v[dim]. */

static const char OPT_MAGIC1[8] = { 'H', 'T', 'O', 'P', 'T', 'O', 'U', '1' };
static const char OPT_MAGIC2[8] = { 'H', 'T', 'O', 'P', 'T', 'O', 'U', '2' };

static bool put(FILE *f, const void *p, size_t size) { return fwrite(p, size, 1, f) == 1; }

/* One group's settings as the layouts store them. */
static void settings_of(const opt_group *g, int32_t *sqrt_decay, double step[4])
{
    *sqrt_decay = g->sqrt_decay;
    step[0] = g->eta0, step[1] = g->beta1, step[2] = g->beta2, step[3] = g->eps;
}

int opt_outer_save(const opt_outer *o, FILE *f)
{
    if (!o || o->n_groups < 1 || !f)
        return ad_fail(AD_EARG, "outer optimizer: save: a NULL argument or an empty optimizer");
    uint64_t dim = o->dim;
    int64_t tau = o->tau;
    int32_t decay;
    double step[4];
    bool ok;
    if (o->n_groups == 1) {
        settings_of(&o->groups[0], &decay, step);
        int32_t head[2] = { (int32_t)o->kind, decay };
        ok = put(f, OPT_MAGIC1, 8) && put(f, head, sizeof head) && put(f, step, sizeof step) &&
             put(f, &dim, sizeof dim) && put(f, &tau, sizeof tau);
    } else {
        int32_t head[2] = { (int32_t)o->kind, o->n_groups };
        ok = put(f, OPT_MAGIC2, 8) && put(f, head, sizeof head) && put(f, &dim, sizeof dim) &&
             put(f, &tau, sizeof tau);
        for (int i = 0; ok && i < o->n_groups; i++) {
            settings_of(&o->groups[i], &decay, step);
            int32_t gh[2] = { o->groups[i].n, decay };
            uint64_t gdim = o->groups[i].dim;
            ok = put(f, gh, sizeof gh) && put(f, &gdim, sizeof gdim) && put(f, step, sizeof step);
        }
    }
    if (ok && o->kind == OPT_ADAM && o->dim > 0)
        ok = fwrite(o->m, sizeof *o->m, o->dim, f) == o->dim &&
             fwrite(o->v, sizeof *o->v, o->dim, f) == o->dim;
    return ok ? AD_OK : ad_fail(AD_EIO, "outer optimizer: cannot save its state");
}

/* Reads n items of size bytes, or says which part ended early. */
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

/* Group i's stored sqrt_decay and step settings into g, checked. */
static int read_settings(opt_group *g, int i, int32_t decay, const double step[4])
{
    if (decay != 0 && decay != 1)
        return ad_fail(AD_EFORMAT, "outer optimizer: group %d: sqrt_decay is %d", i, (int)decay);
    g->sqrt_decay = decay;
    g->eta0 = step[0], g->beta1 = step[1], g->beta2 = step[2], g->eps = step[3];
    return check_settings(g, i, AD_EFORMAT);
}

/* The header of either version into gs (o->n_groups of them, copies of o's
 * with the stored settings) and *tau; AD_EFORMAT when they do not fit o. */
static int read_head(const opt_outer *o, FILE *f, opt_group *gs, int64_t *tau)
{
    char magic[8];
    int32_t head[2];
    double step[4];
    uint64_t dim;
    int rc = read_part(f, magic, 1, 8, "its magic");
    if (rc != AD_OK) return rc;
    bool v1 = memcmp(magic, OPT_MAGIC1, 8) == 0;
    if (!v1 && memcmp(magic, OPT_MAGIC2, 8) != 0)
        return ad_fail(AD_EFORMAT, "outer optimizer: not a saved state (bad magic)");
    rc = read_part(f, head, sizeof head, 1, "its kind");
    if (rc == AD_OK && v1) rc = read_part(f, step, sizeof step, 1, "its step settings");
    if (rc == AD_OK) rc = read_part(f, &dim, sizeof dim, 1, "its size");
    if (rc == AD_OK) rc = read_part(f, tau, sizeof *tau, 1, "its step count");
    if (rc != AD_OK) return rc;
    int32_t n_groups = v1 ? 1 : head[1];
    if (head[0] != (int32_t)o->kind || dim != o->dim || n_groups != o->n_groups)
        return ad_fail(AD_EFORMAT, "outer optimizer: the state is of kind %d over %llu numbers "
                       "in %d groups, this one of kind %d over %zu in %d", (int)head[0],
                       (unsigned long long)dim, (int)n_groups, (int)o->kind, o->dim, o->n_groups);
    memcpy(gs, o->groups, sizeof *gs * (size_t)o->n_groups);
    if (v1) return read_settings(&gs[0], 0, head[1], step);
    for (int i = 0; i < n_groups && rc == AD_OK; i++) {
        int32_t gh[2];
        uint64_t gdim;
        rc = read_part(f, gh, sizeof gh, 1, "a group's size");
        if (rc == AD_OK) rc = read_part(f, &gdim, sizeof gdim, 1, "a group's size");
        if (rc == AD_OK) rc = read_part(f, step, sizeof step, 1, "a group's step settings");
        if (rc == AD_OK && (gh[0] != gs[i].n || gdim != gs[i].dim))
            rc = ad_fail(AD_EFORMAT, "outer optimizer: group %d of the state has %d tensors "
                         "over %llu numbers, this one's %d over %zu", i, (int)gh[0],
                         (unsigned long long)gdim, gs[i].n, gs[i].dim);
        if (rc == AD_OK) rc = read_settings(&gs[i], i, gh[1], step);
    }
    return rc;
}

int opt_outer_load(opt_outer *o, FILE *f)
{
    if (!o || o->n_groups < 1 || !f)
        return ad_fail(AD_EARG, "outer optimizer: load: a NULL argument or an empty optimizer");
    opt_group *gs = malloc(sizeof *gs * (size_t)o->n_groups);
    double *m = NULL, *v = NULL;
    int64_t tau = 0;
    int rc = gs ? read_head(o, f, gs, &tau) : ad_fail(AD_ENOMEM, "outer optimizer: out of memory");
    if (rc == AD_OK && (tau < 0 || tau >= INT_MAX)) /* INT_MAX: no next step could be counted */
        rc = ad_fail(AD_EFORMAT, "outer optimizer: the step count is %lld", (long long)tau);
    if (rc == AD_OK && o->kind == OPT_ADAM && o->dim > 0) {
        m = malloc(sizeof *m * o->dim);
        v = malloc(sizeof *v * o->dim);
        rc = m && v ? AD_OK : ad_fail(AD_ENOMEM, "outer optimizer: out of memory");
        if (rc == AD_OK) rc = read_part(f, m, sizeof *m, o->dim, "Adam's first moment");
        if (rc == AD_OK) rc = read_part(f, v, sizeof *v, o->dim, "Adam's second moment");
        if (rc == AD_OK) rc = check_moments(m, v, o->dim);
        if (rc == AD_OK) {
            memcpy(o->m, m, sizeof *m * o->dim);
            memcpy(o->v, v, sizeof *v * o->dim);
        }
    }
    if (rc == AD_OK) {
        memcpy(o->groups, gs, sizeof *gs * (size_t)o->n_groups);
        o->tau = (int)tau;
    }
    free(gs);
    free(m);
    free(v);
    return rc;
}
