/* inner.c — the differentiable inner optimizers, one step at a time.
 *
 * A recorded step takes ∇w g with create_graph, so the update Φ(w, s, ∇w g,
 * λ, t) is itself a graph: back-propagating through it multiplies by
 * A_t = ∂(w_t, s_t)/∂(w_{t−1}, s_{t−1}) and B_t = ∂(w_t, s_t)/∂λ, the
 * paper's Jacobians (for GD, A_t = I − γ∇²_w g and B_t = −γ∇²_{λw} g).  A
 * detached step computes the same numbers and keeps nothing: the new state
 * is a constant, which is where K-RMD cuts.
 *
 * Every optimizer is an hg_update — the built-in ones below as much as a
 * caller's — so the estimators see one thing: a map from one state list to
 * the next. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "ops/ops.h"
#include "optim/hypergrad.h"

enum { MAX_LIST = 256 }; /* tensors in a state list (w and s) */

hg_inner_opt hg_opt_adam(double step)
{
    return (hg_inner_opt){ .kind = HG_ADAM, .step = step, .beta1 = 0.9, .beta2 = 0.999,
                           .eps = 1e-8, .eps_root = 1e-16 };
}

hg_inner_opt hg_opt_rmsprop(double step)
{
    return (hg_inner_opt){ .kind = HG_RMSPROP, .step = step, .beta2 = 0.99, .eps = 1e-8,
                           .eps_root = 1e-16 };
}

/* ---- the built-in updates ------------------------------------------------ */

/* A setting as a value: the transform of its hyperparameter. */
static ad_value *transformed(ad_tape *tp, ad_value *theta, hg_transform tr)
{
    switch (tr) {
    case HG_EXP: return ad_exp(tp, theta);
    case HG_SIGMOID: return ad_sigmoid(tp, theta);
    case HG_IDENTITY: break;
    }
    return theta;
}

/* c·x where c is either the number `num` or a (transformed) hyperparameter. */
static ad_value *times(ad_tape *tp, ad_value *theta, hg_transform tr, double num, ad_value *x)
{
    return theta ? ad_mul(tp, transformed(tp, theta, tr), x) : ad_scale(tp, x, num);
}

/* w − γ·d */
static ad_value *descend(ad_tape *tp, const hg_inner_opt *o, ad_value *w, ad_value *d)
{
    return ad_sub(tp, w, times(tp, o->step_hyper, o->step_transform, o->step, d));
}

/* The status of an op chain that returned NULL: what the op failed with. */
static int null_status(void)
{
    int code = ad_error_code();
    return code == AD_OK ? AD_EARG : code;
}

static int gd_step(ad_tape *tp, int n_w, ad_value *const *w, ad_value *const *s,
                   ad_value *const *gw, ad_value *const *lam, int t, ad_value **w_new,
                   ad_value **s_new, void *ctx)
{
    (void)s, (void)lam, (void)t, (void)s_new;
    for (int i = 0; i < n_w; i++) w_new[i] = descend(tp, ctx, w[i], gw[i]);
    return AD_OK;
}

static int momentum_step(ad_tape *tp, int n_w, ad_value *const *w, ad_value *const *v,
                         ad_value *const *gw, ad_value *const *lam, int t, ad_value **w_new,
                         ad_value **v_new, void *ctx)
{
    (void)lam, (void)t;
    const hg_inner_opt *o = ctx;
    for (int i = 0; i < n_w; i++) {
        v_new[i] = ad_add(tp, times(tp, o->momentum_hyper, o->momentum_transform, o->momentum, v[i]),
                          gw[i]);
        w_new[i] = descend(tp, o, w[i], v_new[i]);
    }
    return AD_OK;
}

/* β v + (1 − β) g², the running mean of squared gradients. */
static ad_value *mean_square(ad_tape *tp, double beta, ad_value *v, ad_value *g)
{
    return ad_add(tp, ad_scale(tp, v, beta), ad_scale(tp, ad_square(tp, g), 1 - beta));
}

/* num / (√(den + ε_root) + ε) */
static ad_value *rescale(ad_tape *tp, const hg_inner_opt *o, ad_value *num, ad_value *den)
{
    if (o->eps_root != 0) den = ad_add_scalar(tp, den, o->eps_root);
    return ad_div(tp, num, ad_add_scalar(tp, ad_sqrt(tp, den), o->eps));
}

/* state[2i] = m, state[2i+1] = v of w[i]; t counts the updates (bias correction). */
static int adam_step(ad_tape *tp, int n_w, ad_value *const *w, ad_value *const *s,
                     ad_value *const *gw, ad_value *const *lam, int t, ad_value **w_new,
                     ad_value **s_new, void *ctx)
{
    (void)lam;
    const hg_inner_opt *o = ctx;
    double c1 = 1 / (1 - pow(o->beta1, t)), c2 = 1 / (1 - pow(o->beta2, t));
    for (int i = 0; i < n_w; i++) {
        ad_value *m = ad_add(tp, ad_scale(tp, s[2 * i], o->beta1), ad_scale(tp, gw[i], 1 - o->beta1));
        ad_value *v = mean_square(tp, o->beta2, s[2 * i + 1], gw[i]);
        s_new[2 * i] = m;
        s_new[2 * i + 1] = v;
        w_new[i] = descend(tp, o, w[i], rescale(tp, o, ad_scale(tp, m, c1), ad_scale(tp, v, c2)));
    }
    return AD_OK;
}

static int rmsprop_step(ad_tape *tp, int n_w, ad_value *const *w, ad_value *const *v,
                        ad_value *const *gw, ad_value *const *lam, int t, ad_value **w_new,
                        ad_value **v_new, void *ctx)
{
    (void)lam, (void)t;
    const hg_inner_opt *o = ctx;
    for (int i = 0; i < n_w; i++) {
        v_new[i] = mean_square(tp, o->beta2, v[i], gw[i]);
        w_new[i] = descend(tp, o, w[i], rescale(tp, o, gw[i], v_new[i]));
    }
    return AD_OK;
}

/* Built-in updates read their settings from the hg_inner_opt (their ctx);
 * they read λ only through step_hyper / momentum_hyper.  A NULL among their
 * results (an op that failed) is reported by check_update_result, with the
 * op's message. */
static const hg_update builtin[] = {
    [HG_GD] = { .name = "gd", .n_state = 0, .step = gd_step },
    [HG_MOMENTUM] = { .name = "momentum", .n_state = 1, .step = momentum_step },
    [HG_ADAM] = { .name = "adam", .n_state = 2, .step = adam_step },
    [HG_RMSPROP] = { .name = "rmsprop", .n_state = 1, .step = rmsprop_step },
};

/* The update of p and the ctx to hand it; NULL (no message) for an unknown
 * kind or a custom one without its update. */
static const hg_update *update_of(const hg_problem *p, void **ctx)
{
    *ctx = NULL;
    if (p->opt.kind == HG_CUSTOM) {
        if (!p->opt.custom) return NULL;
        *ctx = p->opt.custom->ctx;
        return p->opt.custom;
    }
    if (p->opt.kind < HG_GD || p->opt.kind >= HG_CUSTOM) return NULL;
    *ctx = (void *)&p->opt;
    return &builtin[p->opt.kind];
}

static const char *update_name(const hg_update *u) { return u->name ? u->name : "update"; }

/* ---- checking a problem ---------------------------------------------------- */

static int check_named_hyper(const hg_problem *p, const ad_value *named, const char *field)
{
    if (!named) return AD_OK;
    int i = 0;
    while (i < p->n_hyper && p->hyper[i] != named) i++;
    /* rank 0, not just size 1: γ·w must keep w's shape, and a [1] γ would
     * broadcast a scalar w to [1]. */
    if (i == p->n_hyper || named->rank != 0)
        return ad_fail(AD_EARG, "problem: opt.%s must be one of hyper[] and of rank 0", field);
    return AD_OK;
}

static int check_opt(const hg_problem *p)
{
    const hg_inner_opt *o = &p->opt;
    if (o->kind < HG_GD || o->kind > HG_CUSTOM)
        return ad_fail(AD_EARG, "problem: unknown inner optimizer %d", (int)o->kind);
    const hg_transform tr[2] = { o->step_transform, o->momentum_transform };
    for (int k = 0; k < 2; k++)
        if (tr[k] < HG_IDENTITY || tr[k] > HG_SIGMOID)
            return ad_fail(AD_EARG, "problem: opt.%s_transform: unknown transform %d",
                           k ? "momentum" : "step", (int)tr[k]);
    if (o->kind == HG_CUSTOM) {
        const hg_update *u = o->custom;
        if (!u || !u->step)
            return ad_fail(AD_EARG, "problem: opt.custom (with its step) is required for HG_CUSTOM");
        if (u->n_state < 0 || u->n_state > HG_MAX_STATE)
            return ad_fail(AD_EARG, "problem: %s: n_state must be in 0..%d, got %d",
                           update_name(u), HG_MAX_STATE, u->n_state);
        if (o->step_hyper || o->momentum_hyper)
            return ad_fail(AD_EARG, "problem: a custom update reads its hyperparameters from "
                                    "lam itself; opt.step_hyper and opt.momentum_hyper must be NULL");
        return AD_OK;
    }
    if (o->custom) return ad_fail(AD_EARG, "problem: opt.custom is set but opt.kind is not HG_CUSTOM");
    if (o->momentum_hyper && o->kind != HG_MOMENTUM)
        return ad_fail(AD_EARG, "problem: opt.momentum_hyper is set but the optimizer has no momentum");
    if (o->kind == HG_ADAM || o->kind == HG_RMSPROP) {
        bool adam = o->kind == HG_ADAM;
        if (adam && !(o->beta1 >= 0 && o->beta1 < 1))
            return ad_fail(AD_EARG, "problem: opt.beta1 must be in [0, 1), got %g", o->beta1);
        if (!(o->beta2 >= 0 && o->beta2 < 1))
            return ad_fail(AD_EARG, "problem: opt.beta2 must be in [0, 1), got %g", o->beta2);
        /* Both 0 is what a designated initializer leaves: the step would divide by |∇g|. */
        if (!(o->eps >= 0 && o->eps_root >= 0 && isfinite(o->eps) && isfinite(o->eps_root)) ||
            o->eps + o->eps_root == 0)
            return ad_fail(AD_EARG, "problem: opt.eps and opt.eps_root must be finite, >= 0 and "
                           "not both 0 (hg_opt_%s fills the defaults)", adam ? "adam" : "rmsprop");
    }
    int rc = check_named_hyper(p, o->step_hyper, "step_hyper");
    return rc == AD_OK ? check_named_hyper(p, o->momentum_hyper, "momentum_hyper") : rc;
}

int hg_problem_check(const hg_problem *p)
{
    if (!p) return ad_fail(AD_EARG, "problem: NULL");
    if (p->n_w < 1) return ad_fail(AD_EARG, "problem: n_w must be >= 1, got %d", p->n_w);
    if (p->n_hyper < 1 || !p->hyper)
        return ad_fail(AD_EARG, "problem: at least one hyperparameter is needed");
    for (int i = 0; i < p->n_hyper; i++) {
        char who[48];
        snprintf(who, sizeof who, "problem: hyperparameter %d", i);
        if (p->hyper[i] && ad_value_check(who, p->hyper[i]) != AD_OK) /* a freed leaf, say */
            return AD_EARG;
        if (!p->hyper[i] || p->hyper[i]->tape || !p->hyper[i]->requires_grad)
            return ad_fail(AD_EARG, "problem: hyperparameter %d must be a caller-owned "
                                    "leaf that wants a gradient (ad_param_*)", i);
    }
    if (p->T < 1) return ad_fail(AD_EARG, "problem: T must be >= 1, got %d", p->T);
    if (!p->init || !p->inner || !p->outer)
        return ad_fail(AD_EARG, "problem: init, inner and outer callbacks are all required");
    int rc = check_opt(p);
    if (rc != AD_OK) return rc;
    const hg_update *u = update_of(p, &(void *){ 0 });
    if ((long long)p->n_w * (1 + u->n_state) > MAX_LIST)
        return ad_fail(AD_EARG, "problem: %d parameter tensors with %d state tensors each: at "
                       "most %d tensors in all", p->n_w, u->n_state, MAX_LIST);
    return AD_OK;
}

/* ---- the state ----------------------------------------------------------- */

int hg_state_len(const hg_problem *p)
{
    if (!p) {
        ad_fail(AD_EARG, "state_len: the problem is NULL");
        return 0;
    }
    void *ctx;
    const hg_update *u = update_of(p, &ctx);
    if (!u || p->n_w < 0 || u->n_state < 0 || u->n_state > HG_MAX_STATE ||
        (long long)p->n_w * (1 + u->n_state) > MAX_LIST) {
        AD_IGNORE(hg_problem_check(p)); /* it fails too, and its message says why */
        return 0;
    }
    return p->n_w * (1 + u->n_state);
}

void hg_state_free(hg_state *st)
{
    if (!st) return;
    free(st->w);
    st->w = st->s = NULL;
}

/* The arguments of the state functions: a tape, a state to fill or step,
 * and a problem that passes hg_problem_check. */
static int check_state_args(const char *who, const ad_tape *tp, const hg_problem *p,
                            const hg_state *st)
{
    if (!tp) return ad_fail(AD_EARG, "%s: the tape is NULL", who);
    if (!st) return ad_fail(AD_EARG, "%s: the state is NULL", who);
    int rc = hg_problem_check(p);
    return rc == AD_OK ? AD_OK : ad_fail_wrap(rc, "%s", who);
}

static int state_alloc(const hg_problem *p, hg_state *st)
{
    int n = hg_state_len(p);
    st->n_w = p->n_w;
    st->n_s = n - p->n_w;
    st->loss = NAN;
    st->w = calloc((size_t)n, sizeof *st->w);
    st->s = st->w ? st->w + p->n_w : NULL;
    return st->w ? AD_OK : ad_fail(AD_ENOMEM, "inner: out of memory");
}

/* "<who>: <message of the failure>", who formatted from fmt.  Callbacks
 * run with the message cleared, so an empty one means the callback failed
 * without saying why: a NULL it returned (`null`), or a bad status.  (Only
 * called on failure: the steps format nothing while all is well.) */
static int callback_failed(int code, bool null, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static int callback_failed(int code, bool null, const char *fmt, ...)
{
    char who[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(who, sizeof who, fmt, ap);
    va_end(ap);
    if (ad_error()[0]) return ad_fail_wrap(code, "%s", who);
    if (null) return ad_fail(code, "%s: returned NULL without a message", who);
    return ad_fail(code, "%s: returned status %d without a message", who, code);
}

/* s_0: the update's init, or zeros shaped like each w. */
static int init_optimizer_state(ad_tape *tp, const hg_problem *p, hg_state *st)
{
    void *ctx;
    const hg_update *u = update_of(p, &ctx);
    if (u->init) {
        ad_error_clear();
        int rc = u->init(tp, st->n_w, st->w, p->hyper, st->s, ctx);
        if (rc != AD_OK) return callback_failed(rc, false, "%s init", update_name(u));
        for (int j = 0; j < st->n_s; j++) {
            const ad_value *w = st->w[j / u->n_state];
            char a[64], b[64];
            if (!st->s[j]) return callback_failed(null_status(), true, "%s init", update_name(u));
            if (!ad_same_shape(st->s[j], w))
                return ad_fail(AD_ESHAPE, "%s init: state %d of w[%d] is %s, w[%d] is %s", update_name(u),
                               j % u->n_state, j / u->n_state, ad_shape_str(st->s[j], a, 64),
                               j / u->n_state, ad_shape_str(w, b, 64));
        }
        return AD_OK;
    }
    for (int j = 0; j < st->n_s; j++) {
        const ad_value *w = st->w[j / u->n_state];
        if (!(st->s[j] = ad_const_fill(tp, w->rank, w->shape, 0))) return null_status();
    }
    return AD_OK;
}

/* Whether x[j] is one of x[0..j−1]. */
static bool repeats_earlier(int j, ad_value *const *x)
{
    for (int k = 0; k < j; k++)
        if (x[k] == x[j]) return true;
    return false;
}

/* The trajectory every estimator differentiates is the one a detached step
 * computes: each entry of the state list an independent variable, so ∇w g
 * is the partial derivative in each w[i] with the others held fixed.  On a
 * recorded tape an entry that is not a node of its own breaks that:
 *   - λ itself (or another caller-owned leaf wanting a gradient): the
 *     gradient "with respect to w" would also collect λ's own uses in g,
 *     and a step-by-step reverse pass (targets x_{t−1} and λ) would name λ
 *     twice;
 *   - the same value twice (w0[1] = w0[0]): both entries would get the sum
 *     of the two partials, and the reverse pass would seed it twice.
 * Such an entry gets a copy x·1 (exact: the numbers do not change) that is
 * a node of its own and still leads back to what it copies.  The copy is
 * then built from another entry, as w[1] = 2·w[0] is: hg_inner_step's
 * ad_vjp_partial cuts at every w[i], so no path through one entry reaches
 * another's gradient.  Both are needed: without the copies a repeated entry
 * is one target, without the cut the copy's path adds into the original. */
static int distinct_state(ad_tape *tp, int n, ad_value **x)
{
    for (int j = 0; j < n; j++) {
        bool foreign = x[j]->requires_grad && x[j]->tape != tp;
        if ((foreign || repeats_earlier(j, x)) && !(x[j] = ad_scale(tp, x[j], 1)))
            return null_status();
    }
    return AD_OK;
}

int hg_state_init(ad_tape *tp, const hg_problem *p, hg_state *st, bool detached)
{
    int rc = check_state_args("state_init", tp, p, st);
    if (rc == AD_OK) rc = state_alloc(p, st);
    if (rc != AD_OK) return rc;
    if (detached) ad_no_record_begin(tp);
    ad_error_clear();
    rc = p->init(tp, p->hyper, st->w, p->ctx);
    if (rc != AD_OK) rc = callback_failed(rc, false, "init");
    for (int i = 0; i < p->n_w && rc == AD_OK; i++) {
        if (!st->w[i])
            rc = ad_error()[0] ? ad_fail_wrap(null_status(), "init: w0[%d]", i)
                               : ad_fail(AD_EARG, "init: w0[%d] is NULL", i);
        else if (detached && st->w[i]->requires_grad) st->w[i] = ad_detach(tp, st->w[i]);
        if (rc == AD_OK && !st->w[i]) rc = ad_fail_wrap(null_status(), "init: w0[%d]", i);
    }
    if (rc == AD_OK) rc = init_optimizer_state(tp, p, st);
    if (rc == AD_OK && !detached) rc = distinct_state(tp, st->n_w + st->n_s, st->w);
    if (detached) ad_no_record_end(tp);
    if (rc != AD_OK) hg_state_free(st);
    return rc;
}

int hg_state_from_list(ad_tape *tp, const hg_problem *p, ad_value *const *saved, hg_state *st)
{
    int rc = check_state_args("state_from_list", tp, p, st);
    if (rc == AD_OK && !saved) rc = ad_fail(AD_EARG, "state_from_list: the saved list is NULL");
    if (rc == AD_OK) rc = state_alloc(p, st);
    if (rc != AD_OK) return rc;
    for (int i = 0; i < st->n_w + st->n_s && rc == AD_OK; i++)
        if (!(st->w[i] = ad_leaf(tp, saved[i]))) rc = null_status();
    if (rc != AD_OK && st->w) hg_state_free(st);
    return rc;
}

/* The new state list from the update: present, and shaped like the old. */
static int check_update_result(const hg_update *u, int t, int n, ad_value *const *old,
                               ad_value *const *new)
{
    char a[64], b[64];
    for (int j = 0; j < n; j++) {
        if (!new[j]) return callback_failed(null_status(), true, "%s (step %d)", update_name(u), t);
        if (!ad_same_shape(new[j], old[j]))
            return ad_fail(AD_ESHAPE, "%s (step %d): entry %d of the new state is %s, was %s",
                           update_name(u), t, j, ad_shape_str(new[j], a, 64),
                           ad_shape_str(old[j], b, 64));
    }
    return AD_OK;
}

/* An entry the update passed on unchanged from an earlier step (a swap of
 * two state entries, say) is read by no op of this step, so no node of a
 * held step holds it when the horizon releases the step that made it — and
 * the next step, or the outer loss, would find it gone.  A copy made here
 * (x·1: exact, on the gradient path when recorded, a constant otherwise)
 * lives as long as this step.  So does a copy of an entry that is not the
 * tape's (λ, a caller's constant) or repeats an earlier entry, for the
 * reasons of distinct_state: every entry of the new state is then a value
 * of this step, made once. */
static int own_state(ad_tape *tp, int n, ad_value **next, bool detached)
{
    long now = ad_tape_current_step(tp);
    int rc = detached ? ad_no_record_begin(tp) : AD_OK;
    for (int j = 0; j < n && rc == AD_OK; j++)
        if ((next[j]->tape != tp || next[j]->step != now || repeats_earlier(j, next)) &&
            !(next[j] = ad_scale(tp, next[j], 1)))
            rc = null_status();
    if (detached) AD_IGNORE(ad_no_record_end(tp)); /* matched by the begin above */
    return rc;
}

int hg_inner_step(ad_tape *tp, const hg_problem *p, hg_state *st, int t, bool detached)
{
    int rc = check_state_args("inner_step", tp, p, st);
    if (rc != AD_OK) return rc;
    int n = st->n_w + st->n_s;
    if (!st->w || st->n_w != p->n_w || n != hg_state_len(p))
        return ad_fail(AD_EARG, "inner_step: the state does not fit the problem (%d + %d tensors, "
                       "the problem's %d + %d; make it with hg_state_init)", st->n_w, st->n_s,
                       p->n_w, hg_state_len(p) - p->n_w);
    /* ∇w g needs w to start a gradient path: an iterate computed without
     * recording (or a constant w0) restarts here as a fresh leaf. */
    ad_value *w[MAX_LIST], *gw[MAX_LIST], *next[MAX_LIST] = { 0 };
    for (int i = 0; i < st->n_w; i++) {
        w[i] = (detached || !st->w[i]->requires_grad) ? ad_leaf(tp, st->w[i]) : st->w[i];
        if (!w[i]) return null_status();
    }
    ad_error_clear();
    ad_value *g = p->inner(tp, w, p->hyper, t, p->ctx);
    if (!g) return callback_failed(null_status(), true, "inner (step %d)", t);
    /* A value an earlier step made (its data dropped on a lean tape, or
     * released) is refused with the reason, before its data are read. */
    char who[64];
    snprintf(who, sizeof who, "inner (step %d): the loss it returned", t);
    if (ad_value_check(who, g) != AD_OK) return AD_EARG;
    if (g->size != 1) {
        char a[64];
        return ad_fail(AD_ESHAPE, "inner (step %d): returned a %s tensor; the inner loss must be "
                       "a scalar", t, ad_shape_str(g, a, sizeof a));
    }
    st->loss = (double)g->data[0];
    /* Partial derivatives (cut at every w[i]): when one entry was built from
     * another (w[1] = 2·w[0] in the last update), ad_grad would add the path
     * through w[1] into w[0]'s gradient — a total derivative, and another
     * trajectory than the detached steps' (see distinct_state).  With
     * independent entries the two are the same sweep. */
    rc = ad_vjp_partial(tp, 1, &g, NULL, st->n_w, w, gw, !detached);
    if (rc != AD_OK) return ad_fail_wrap(rc, "inner (step %d): the gradient of the inner loss", t);
    void *ctx;
    const hg_update *u = update_of(p, &ctx);
    if (detached) ad_no_record_begin(tp);
    ad_error_clear();
    rc = u->step(tp, st->n_w, w, st->s, gw, p->hyper, t, next, next + st->n_w, ctx);
    if (detached) ad_no_record_end(tp);
    if (rc != AD_OK) return callback_failed(rc, false, "%s (step %d)", update_name(u), t);
    rc = check_update_result(u, t, n, st->w, next);
    if (rc == AD_OK) rc = own_state(tp, n, next, detached);
    for (int j = 0; j < n && rc == AD_OK; j++) st->w[j] = next[j];
    return rc;
}
