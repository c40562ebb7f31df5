/* inner.c — the differentiable inner optimizers, one step at a time.
 *
 * A recorded step takes ∇w g with create_graph, so the update
 * w − γ∇w g is itself a graph: back-propagating through it multiplies by
 * A_t = I − γ∇²_w g and B_t = −γ∇²_{λw} g, the paper's Jacobians.  A
 * detached step computes the same numbers and keeps nothing: the new state
 * is a constant, which is where K-RMD cuts. */
#include <stdlib.h>

#include "ops/ops.h"
#include "optim/hypergrad.h"

int hg_problem_check(const hg_problem *p)
{
    if (!p) return ad_fail(AD_EARG, "problem: NULL");
    if (p->n_w < 1) return ad_fail(AD_EARG, "problem: n_w must be >= 1, got %d", p->n_w);
    if (p->n_hyper < 1 || !p->hyper)
        return ad_fail(AD_EARG, "problem: at least one hyperparameter is needed");
    for (int i = 0; i < p->n_hyper; i++)
        if (!p->hyper[i] || p->hyper[i]->tape || !p->hyper[i]->requires_grad)
            return ad_fail(AD_EARG, "problem: hyperparameter %d must be a caller-owned "
                                    "leaf that wants a gradient (ad_param_*)", i);
    if (p->T < 1) return ad_fail(AD_EARG, "problem: T must be >= 1, got %d", p->T);
    if (!p->init || !p->inner || !p->outer)
        return ad_fail(AD_EARG, "problem: init, inner and outer callbacks are all required");
    if (p->opt.kind != HG_GD && p->opt.kind != HG_MOMENTUM)
        return ad_fail(AD_EARG, "problem: unknown inner optimizer %d", (int)p->opt.kind);
    const ad_value *named[2] = { p->opt.step_hyper, p->opt.momentum_hyper };
    for (int k = 0; k < 2; k++) {
        if (!named[k]) continue;
        int i = 0;
        while (i < p->n_hyper && p->hyper[i] != named[k]) i++;
        /* rank 0, not just size 1: γ·w must keep w's shape, and a [1] γ would
         * broadcast a scalar w to [1]. */
        if (i == p->n_hyper || named[k]->rank != 0)
            return ad_fail(AD_EARG, "problem: opt.%s_hyper must be one of hyper[] and of "
                           "rank 0", k ? "momentum" : "step");
    }
    return AD_OK;
}

/* The status of an op chain (or callback) that returned NULL: what the op
 * failed with, or AD_EARG if nothing set one (a callback's own NULL). */
static int null_status(void)
{
    int code = ad_error_code();
    return code == AD_OK ? AD_EARG : code;
}

void hg_state_free(hg_state *st)
{
    free(st->w);
    free(st->v);
    st->w = st->v = NULL;
}

int hg_state_init(ad_tape *tp, const hg_problem *p, hg_state *st, bool detached)
{
    st->n = p->n_w;
    st->w = calloc((size_t)p->n_w, sizeof *st->w);
    st->v = p->opt.kind == HG_MOMENTUM ? calloc((size_t)p->n_w, sizeof *st->v) : NULL;
    if (!st->w || (p->opt.kind == HG_MOMENTUM && !st->v)) {
        hg_state_free(st);
        return ad_fail(AD_ENOMEM, "inner: out of memory");
    }
    if (detached) ad_no_record_begin(tp);
    int rc = p->init(tp, p->hyper, st->w, p->ctx);
    for (int i = 0; i < p->n_w && rc == AD_OK; i++) {
        if (!st->w[i]) rc = ad_fail_wrap(AD_EARG, "init: w0[%d] is NULL", i);
        else if (detached && st->w[i]->requires_grad) st->w[i] = ad_detach(tp, st->w[i]);
        else if (!detached && st->w[i]->requires_grad && st->w[i]->tape != tp)
            /* w0 = λ itself (or another caller-owned leaf): "the gradient with
             * respect to w" would also collect λ's own uses in g.  w0 gets a
             * node of its own that still leads back to λ. */
            st->w[i] = ad_scale(tp, st->w[i], 1);
        if (rc == AD_OK && !st->w[i]) rc = ad_fail_wrap(null_status(), "init: w0[%d]", i);
        if (rc == AD_OK && st->v &&
            !(st->v[i] = ad_const_fill(tp, st->w[i]->rank, st->w[i]->shape, 0)))
            rc = AD_ENOMEM;
    }
    if (detached) ad_no_record_end(tp);
    if (rc != AD_OK) hg_state_free(st);
    return rc;
}

/* c·x where c is either a number or a scalar hyperparameter. */
static ad_value *times(ad_tape *tp, ad_value *hyper, double c, ad_value *x)
{
    return hyper ? ad_mul(tp, hyper, x) : ad_scale(tp, x, c);
}

int hg_inner_step(ad_tape *tp, const hg_problem *p, hg_state *st, int t, bool detached)
{
    enum { MAX_W = 64 };
    if (st->n > MAX_W) return ad_fail(AD_EARG, "inner: at most %d parameter tensors", MAX_W);
    /* ∇w g needs w to start a gradient path: an iterate computed without
     * recording (or a constant w0) restarts here as a fresh leaf. */
    ad_value *w[MAX_W], *gw[MAX_W];
    for (int i = 0; i < st->n; i++)
        w[i] = (detached || !st->w[i]->requires_grad) ? ad_leaf(tp, st->w[i]) : st->w[i];
    ad_value *g = p->inner(tp, w, p->hyper, t, p->ctx);
    if (!g) return ad_fail_wrap(null_status(), "inner loss at step %d failed", t);
    int rc = ad_grad(tp, g, st->n, w, gw, !detached);
    if (rc != AD_OK) return rc;
    if (detached) ad_no_record_begin(tp);
    const hg_inner_opt *o = &p->opt;
    for (int i = 0; i < st->n && rc == AD_OK; i++) {
        ad_value *dir = gw[i];
        if (o->kind == HG_MOMENTUM) {
            dir = ad_add(tp, times(tp, o->momentum_hyper, o->momentum, st->v[i]), gw[i]);
            st->v[i] = dir;
        }
        st->w[i] = ad_sub(tp, w[i], times(tp, o->step_hyper, o->step, dir));
        if (!st->w[i]) rc = ad_fail_wrap(null_status(), "inner step %d", t);
    }
    if (detached) ad_no_record_end(tp);
    return rc;
}
