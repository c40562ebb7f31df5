/* hypergrad.c — the estimators.  Every one drives the same problem through
 * hg_state_init / hg_inner_step and differs only in what it keeps and in
 * which direction it carries derivatives. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ops/ops.h"
#include "optim/hypergrad.h"

enum { MAX_T = 64 }; /* tensors in a state list (w and v), or in λ */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void free_list(int n, ad_value **v)
{
    for (int i = 0; i < n; i++) {
        ad_value_free(v[i]);
        v[i] = NULL;
    }
}

/* dst[i] = caller-owned copies of src[i]; fails (freeing them) on NaN/Inf. */
static int copy_out(const char *who, int n, ad_value *const *src, ad_value **dst)
{
    int rc = AD_OK;
    for (int i = 0; i < n; i++) dst[i] = NULL;
    for (int i = 0; i < n && rc == AD_OK; i++) {
        if (!(dst[i] = ad_value_copy(src[i]))) rc = AD_ENOMEM;
        else if (ad_check_finite(who, dst[i]) != AD_OK)
            rc = ad_fail_wrap(AD_ENONFINITE, "%s: hyperparameter %d", who, i);
    }
    if (rc != AD_OK) free_list(n, dst);
    return rc;
}

static int check_common(const char *who, const hg_problem *p, ad_value **dlam)
{
    int rc = hg_problem_check(p);
    if (rc != AD_OK) return ad_fail_wrap(rc, "%s", who);
    if (!dlam) return ad_fail(AD_EARG, "%s: output array is NULL", who);
    if (p->n_w > MAX_T / 2 || p->n_hyper > MAX_T)
        return ad_fail(AD_EARG, "%s: too many tensors (at most %d w, %d λ)", who, MAX_T / 2, MAX_T);
    return AD_OK;
}

static void fill_report(hg_report *r, double t0, size_t peak, size_t kept, double f)
{
    if (!r) return;
    r->seconds = now() - t0;
    r->peak_tape_bytes = peak;
    r->checkpoint_bytes = kept;
    r->outer_loss = f;
}

/* ---- K-RMD ------------------------------------------------------------- */

int hg_krmd(const hg_problem *p, int K, ad_value **dlam, hg_report *report)
{
    int rc = check_common("krmd", p, dlam);
    if (rc != AD_OK) return rc;
    if (K < 1) return ad_fail(AD_EARG, "krmd: K must be >= 1, got %d", K);
    double t0 = now();
    bool full = K >= p->T;
    /* The horizon is a guarantee, not the mechanism: the detached prefix
     * already cuts at T−K; the horizon keeps the prefix's own per-step
     * graphs (for ∇w g) from piling up. */
    ad_tape *tp = ad_tape_new(full ? AD_HORIZON_ALL : K);
    if (!tp) return AD_ENOMEM;
    hg_state st;
    rc = hg_state_init(tp, p, &st, !full);
    for (int t = 1; t <= p->T && rc == AD_OK; t++) {
        ad_tape_step(tp);
        rc = hg_inner_step(tp, p, &st, t, t <= p->T - K);
    }
    ad_value *f = NULL, *g[MAX_T];
    if (rc == AD_OK) {
        ad_tape_step(tp); /* the outer loss in a step of its own */
        f = p->outer(tp, st.w, p->hyper, p->ctx);
        rc = f ? ad_grad(tp, f, p->n_hyper, p->hyper, g, false)
               : ad_fail_wrap(AD_EARG, "krmd: outer loss failed");
    }
    if (rc == AD_OK) rc = copy_out("krmd", p->n_hyper, g, dlam);
    if (rc == AD_OK) fill_report(report, t0, ad_tape_peak_bytes(tp), 0, f->data[0]);
    if (st.w) hg_state_free(&st);
    ad_tape_free(tp);
    return rc;
}

int hg_full_rmd(const hg_problem *p, ad_value **dlam, hg_report *report)
{
    return hg_krmd(p, p ? (p->T > 0 ? p->T : 1) : 1, dlam, report);
}

/* ---- state lists as caller-owned copies ----------------------------------
 * Checkpointing and forward mode keep w (and v) between tapes: a "list" is
 * the 2n tensors w_0..w_{n−1}, v_0..v_{n−1} (n for gradient descent). */

static int state_len(const hg_problem *p) { return p->opt.kind == HG_MOMENTUM ? 2 * p->n_w : p->n_w; }

static void state_to_list(const hg_problem *p, const hg_state *st, ad_value **out)
{
    for (int i = 0; i < p->n_w; i++) {
        out[i] = st->w[i];
        if (st->v) out[p->n_w + i] = st->v[i];
    }
}

static int save_list(int n, ad_value *const *src, ad_value **dst, size_t *bytes)
{
    for (int i = 0; i < n; i++) {
        if (!(dst[i] = ad_value_copy(src[i]))) {
            free_list(i, dst);
            return AD_ENOMEM;
        }
        if (bytes) *bytes += dst[i]->size * sizeof(ad_real);
    }
    return AD_OK;
}

/* A state on tp whose tensors are leaves made from saved copies. */
static int state_from_list(ad_tape *tp, const hg_problem *p, ad_value *const *saved, hg_state *st)
{
    st->n = p->n_w;
    st->w = calloc((size_t)p->n_w, sizeof *st->w);
    st->v = p->opt.kind == HG_MOMENTUM ? calloc((size_t)p->n_w, sizeof *st->v) : NULL;
    if (!st->w || (p->opt.kind == HG_MOMENTUM && !st->v)) {
        hg_state_free(st);
        return ad_fail(AD_ENOMEM, "out of memory");
    }
    for (int i = 0; i < p->n_w; i++) {
        st->w[i] = ad_leaf(tp, saved[i]);
        if (st->v) st->v[i] = ad_leaf(tp, saved[p->n_w + i]);
    }
    return AD_OK;
}

/* Runs steps t0+1..t1 detached from a saved state on a short-lived tape,
 * and saves the final state in `out` (caller-owned). */
static int advance(const hg_problem *p, ad_value *const *from, bool from_init, int t0, int t1,
                   ad_value **out)
{
    ad_tape *tp = ad_tape_new(1);
    if (!tp) return AD_ENOMEM;
    hg_state st = { 0 };
    int rc = from_init ? hg_state_init(tp, p, &st, true) : state_from_list(tp, p, from, &st);
    for (int t = t0 + 1; t <= t1 && rc == AD_OK; t++) {
        ad_tape_step(tp);
        rc = hg_inner_step(tp, p, &st, t, true);
    }
    ad_value *list[MAX_T];
    if (rc == AD_OK) {
        state_to_list(p, &st, list);
        rc = save_list(state_len(p), list, out, NULL);
    }
    if (st.w) hg_state_free(&st);
    ad_tape_free(tp);
    return rc;
}

int hg_inner_solve(const hg_problem *p, ad_value **w_hat, double *inner_losses)
{
    int rc = hg_problem_check(p);
    if (rc != AD_OK) return ad_fail_wrap(rc, "inner_solve");
    ad_tape *tp = ad_tape_new(1);
    if (!tp) return AD_ENOMEM;
    hg_state st = { 0 };
    rc = hg_state_init(tp, p, &st, true);
    for (int t = 0; t <= p->T && rc == AD_OK; t++) {
        if (t > 0) {
            ad_tape_step(tp);
            rc = hg_inner_step(tp, p, &st, t, true);
        }
        if (rc == AD_OK && inner_losses) {
            ad_no_record_begin(tp);
            ad_value *g = p->inner(tp, st.w, p->hyper, t, p->ctx);
            ad_no_record_end(tp);
            if (g) inner_losses[t] = g->data[0];
            else rc = ad_fail_wrap(AD_EARG, "inner_solve: inner loss at step %d", t);
        }
    }
    if (rc == AD_OK && w_hat) rc = save_list(p->n_w, st.w, w_hat, NULL);
    if (st.w) hg_state_free(&st);
    ad_tape_free(tp);
    return rc;
}

/* f at a saved ŵ: fills ∇ŵ f (n_w tensors, caller-owned), ∇λ f (n_hyper)
 * and the loss. */
static int outer_grads(const hg_problem *p, ad_value *const *w_hat, ad_value **gw, ad_value **glam,
                       double *f_out)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    if (!tp) return AD_ENOMEM;
    ad_value *w[MAX_T], *xs[2 * MAX_T], *g[2 * MAX_T];
    for (int i = 0; i < p->n_w; i++) xs[i] = w[i] = ad_leaf(tp, w_hat[i]);
    for (int i = 0; i < p->n_hyper; i++) xs[p->n_w + i] = p->hyper[i];
    ad_value *f = p->outer(tp, w, p->hyper, p->ctx);
    int rc = f ? ad_grad(tp, f, p->n_w + p->n_hyper, xs, g, false)
               : ad_fail_wrap(AD_EARG, "outer loss failed");
    if (rc == AD_OK) rc = save_list(p->n_w, g, gw, NULL);
    if (rc == AD_OK && (rc = save_list(p->n_hyper, g + p->n_w, glam, NULL)) != AD_OK)
        free_list(p->n_w, gw);
    if (rc == AD_OK) *f_out = f->data[0];
    ad_tape_free(tp);
    return rc;
}

static void add_into(int n, ad_value **acc, ad_value *const *g, double sign)
{
    for (int i = 0; i < n; i++)
        for (size_t j = 0; j < acc[i]->size; j++) acc[i]->data[j] += (ad_real)(sign * g[i]->data[j]);
}

/* ---- checkpointed RMD -------------------------------------------------- */

/* Back-propagates the adjoint `abar` (state list) through steps t0+1..t1
 * replayed from the saved state `from`, adding the λ part into lbar and
 * replacing abar with the adjoint at t0. */
static int reverse_segment(const hg_problem *p, ad_value *const *from, int t0, int t1,
                           ad_value **abar, ad_value **lbar, size_t *peak)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    if (!tp) return AD_ENOMEM;
    hg_state st;
    int rc = state_from_list(tp, p, from, &st), n = state_len(p);
    ad_value *xs[2 * MAX_T], *ys[MAX_T], *g[2 * MAX_T];
    if (rc == AD_OK) state_to_list(p, &st, xs);
    for (int i = 0; i < p->n_hyper; i++) xs[n + i] = p->hyper[i];
    for (int t = t0 + 1; t <= t1 && rc == AD_OK; t++) {
        ad_tape_step(tp);
        rc = hg_inner_step(tp, p, &st, t, false);
    }
    if (rc == AD_OK) {
        state_to_list(p, &st, ys);
        rc = ad_vjp_many(tp, n, ys, abar, n + p->n_hyper, xs, g, false);
    }
    if (rc == AD_OK) {
        add_into(p->n_hyper, lbar, g + n, 1);
        for (int i = 0; i < n; i++)
            memcpy(abar[i]->data, g[i]->data, g[i]->size * sizeof(ad_real));
    }
    if (ad_tape_peak_bytes(tp) > *peak) *peak = ad_tape_peak_bytes(tp);
    if (st.w) hg_state_free(&st);
    ad_tape_free(tp);
    return rc;
}

/* The adjoint at w0 through init(λ), when w0 depends on λ. */
static int reverse_init(const hg_problem *p, ad_value **abar, ad_value **lbar)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    if (!tp) return AD_ENOMEM;
    hg_state st;
    int rc = hg_state_init(tp, p, &st, false);
    ad_value *g[MAX_T];
    if (rc == AD_OK) {
        bool any = false;
        for (int i = 0; i < p->n_w; i++) any |= st.w[i]->requires_grad;
        if (any) rc = ad_vjp_many(tp, p->n_w, st.w, abar, p->n_hyper, p->hyper, g, false);
        if (any && rc == AD_OK) add_into(p->n_hyper, lbar, g, 1);
        hg_state_free(&st);
    }
    ad_tape_free(tp);
    return rc;
}

int hg_checkpoint(const hg_problem *p, int K, ad_value **dlam, hg_report *report)
{
    int rc = check_common("checkpoint", p, dlam);
    if (rc != AD_OK) return rc;
    if (K < 1) return ad_fail(AD_EARG, "checkpoint: K must be >= 1, got %d", K);
    double t0 = now();
    int T = p->T, W = K < T ? K : T, start = T - W, n = state_len(p);
    int S = (int)ceil(sqrt((double)W)), m = (W + S - 1) / S; /* m segments of ≤ S steps */
    ad_value **ckpt = calloc((size_t)m * (size_t)n, sizeof *ckpt);
    ad_value *abar[MAX_T] = { 0 }, *lbar[MAX_T] = { 0 }, *cur[MAX_T] = { 0 };
    if (!ckpt) return ad_fail(AD_ENOMEM, "checkpoint: out of memory");
    size_t kept = 0, peak = 0;
    double f = 0;
    /* Forward: detached, saving the state at each segment start. */
    rc = advance(p, NULL, true, 0, start, cur);
    for (int j = 0; j < m && rc == AD_OK; j++) {
        rc = save_list(n, cur, ckpt + (size_t)j * (size_t)n, &kept);
        int b0 = start + j * S, b1 = b0 + S < T ? b0 + S : T;
        ad_value *next[MAX_T];
        if (rc == AD_OK) rc = advance(p, cur, false, b0, b1, next);
        free_list(n, cur);
        if (rc == AD_OK) memcpy(cur, next, (size_t)n * sizeof *cur);
    }
    /* The outer loss gives the first adjoint; v's adjoint starts at 0. */
    if (rc == AD_OK) rc = outer_grads(p, cur, abar, lbar, &f);
    for (int i = p->n_w; i < n && rc == AD_OK; i++)
        if (!(abar[i] = ad_tensor_new(cur[i]->rank, cur[i]->shape))) rc = AD_ENOMEM;
    for (int j = m - 1; j >= 0 && rc == AD_OK; j--) {
        int b0 = start + j * S, b1 = b0 + S < T ? b0 + S : T;
        rc = reverse_segment(p, ckpt + (size_t)j * (size_t)n, b0, b1, abar, lbar, &peak);
    }
    if (rc == AD_OK && start == 0) rc = reverse_init(p, abar, lbar);
    if (rc == AD_OK) rc = copy_out("checkpoint", p->n_hyper, lbar, dlam);
    if (rc == AD_OK) fill_report(report, t0, peak, kept, f);
    free_list(n, cur);
    free_list(n, abar);
    free_list(p->n_hyper, lbar);
    for (int j = 0; j < m * n; j++) ad_value_free(ckpt[j]);
    free(ckpt);
    return rc;
}

/* ---- forward mode ------------------------------------------------------ */

/* Jacobian-vector product through reverse mode twice: with r a free seed,
 * u(r) = Jᵀr is linear in r, and d/dr ⟨u(r), z⟩ = J z. */
static int jvp(ad_tape *tp, int m, ad_value *const *ys, int n, ad_value *const *xs,
               ad_value *const *zs, ad_value **out)
{
    ad_value *r[MAX_T], *u[2 * MAX_T];
    for (int k = 0; k < m; k++)
        if (!(r[k] = ad_leaf(tp, ad_const_fill(tp, ys[k]->rank, ys[k]->shape, 0)))) return AD_ENOMEM;
    int rc = ad_vjp_many(tp, m, ys, r, n, xs, u, true);
    if (rc == AD_OK) rc = ad_vjp_many(tp, n, u, zs, m, r, out, false);
    return rc;
}

/* One pass of forward mode along the unit direction e (a λ-shaped list):
 * returns dŵ/dλ · e in zw (n_w tensors, caller-owned). */
static int fmd_direction(const hg_problem *p, ad_value *const *e, ad_value **zw, size_t *peak,
                         size_t *kept)
{
    int n = state_len(p), rc;
    ad_value *state[MAX_T] = { 0 }, *z[MAX_T] = { 0 };
    /* t = 0: z0 = dw0/dλ e (zeros for v). */
    {
        ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
        hg_state st;
        ad_value *ys[MAX_T], *jz[MAX_T];
        rc = hg_state_init(tp, p, &st, false);
        if (rc == AD_OK) {
            state_to_list(p, &st, ys);
            rc = jvp(tp, n, ys, p->n_hyper, p->hyper, e, jz);
            if (rc == AD_OK) rc = save_list(n, jz, z, kept);
            if (rc == AD_OK) rc = save_list(n, ys, state, kept);
            hg_state_free(&st);
        }
        ad_tape_free(tp);
    }
    for (int t = 1; t <= p->T && rc == AD_OK; t++) {
        ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
        hg_state st;
        ad_value *xs[2 * MAX_T], *ys[MAX_T], *zs[2 * MAX_T], *jz[MAX_T];
        rc = state_from_list(tp, p, state, &st);
        if (rc != AD_OK) { ad_tape_free(tp); break; }
        state_to_list(p, &st, xs);
        for (int i = 0; i < n; i++) zs[i] = z[i];
        for (int i = 0; i < p->n_hyper; i++) {
            xs[n + i] = p->hyper[i];
            zs[n + i] = e[i];
        }
        rc = hg_inner_step(tp, p, &st, t, false);
        if (rc == AD_OK) {
            state_to_list(p, &st, ys);
            rc = jvp(tp, n, ys, n + p->n_hyper, xs, zs, jz);
        }
        if (rc == AD_OK) /* z_t = A_t z_{t−1} + B_t e, and the new state */
            for (int i = 0; i < n; i++) {
                memcpy(z[i]->data, jz[i]->data, z[i]->size * sizeof(ad_real));
                memcpy(state[i]->data, ys[i]->data, state[i]->size * sizeof(ad_real));
            }
        if (ad_tape_peak_bytes(tp) > *peak) *peak = ad_tape_peak_bytes(tp);
        hg_state_free(&st);
        ad_tape_free(tp);
    }
    if (rc == AD_OK) memcpy(zw, z, (size_t)p->n_w * sizeof *zw);
    else free_list(p->n_w, z);
    free_list(n - p->n_w, z + p->n_w);
    free_list(n, state);
    return rc;
}

int hg_fmd(const hg_problem *p, ad_value **dlam, hg_report *report)
{
    int rc = check_common("fmd", p, dlam);
    if (rc != AD_OK) return rc;
    double t0 = now(), f = 0;
    size_t peak = 0, kept = 0;
    ad_value *w_hat[MAX_T] = { 0 }, *gw[MAX_T] = { 0 }, *glam[MAX_T] = { 0 }, *e[MAX_T] = { 0 };
    rc = advance(p, NULL, true, 0, p->T, w_hat);
    if (rc == AD_OK) rc = outer_grads(p, w_hat, gw, glam, &f);
    for (int i = 0; i < p->n_hyper && rc == AD_OK; i++)
        if (!(e[i] = ad_tensor_new(p->hyper[i]->rank, p->hyper[i]->shape))) rc = AD_ENOMEM;
    /* One forward pass per scalar hyperparameter: that is FMD's price. */
    for (int h = 0; h < p->n_hyper && rc == AD_OK; h++)
        for (size_t j = 0; j < p->hyper[h]->size && rc == AD_OK; j++) {
            ad_value *zw[MAX_T];
            size_t kept_one = 0;
            e[h]->data[j] = 1;
            rc = fmd_direction(p, e, zw, &peak, &kept_one);
            e[h]->data[j] = 0;
            if (kept_one > kept) kept = kept_one;
            if (rc != AD_OK) break;
            double s = 0; /* dλⱼ f = ∂λⱼ f + ⟨∇ŵ f, Z eⱼ⟩ */
            for (int i = 0; i < p->n_w; i++)
                for (size_t k = 0; k < zw[i]->size; k++) s += (double)gw[i]->data[k] * zw[i]->data[k];
            glam[h]->data[j] += (ad_real)s;
            free_list(p->n_w, zw);
        }
    if (rc == AD_OK) rc = copy_out("fmd", p->n_hyper, glam, dlam);
    if (rc == AD_OK) fill_report(report, t0, peak, kept, f);
    free_list(state_len(p), w_hat);
    free_list(p->n_w, gw);
    free_list(p->n_hyper, glam);
    free_list(p->n_hyper, e);
    return rc;
}

/* ---- implicit differentiation ------------------------------------------ */

typedef struct implicit {
    const hg_problem *p;
    ad_tape *tp;
    ad_value *w[MAX_T];    /* leaves at ŵ */
    ad_value *gw[MAX_T];   /* ∇w g(ŵ, λ), recorded */
    ad_value *b[MAX_T];    /* ∇ŵ f (caller-owned) */
    ad_value *glam[MAX_T]; /* ∂λ f (caller-owned) */
    double f;
} implicit;

static int implicit_setup(const char *who, const hg_problem *p, implicit *im)
{
    memset(im, 0, sizeof *im);
    ad_value *unused[1];
    int rc = check_common(who, p, unused);
    if (rc != AD_OK) return rc;
    im->p = p; /* from here on implicit_free has lists to free (at most MAX_T long) */
    if (p->opt.step_hyper || p->opt.momentum_hyper)
        return ad_fail(AD_EUNSUPPORTED,
                       "%s: a hyperparameter drives the inner optimizer (%s); implicit "
                       "differentiation sees only the stationary point, which does not depend "
                       "on it — use K-RMD, checkpointing or FMD", who,
                       p->opt.step_hyper ? "step size" : "momentum");
    ad_value *w_hat[MAX_T] = { 0 };
    rc = advance(p, NULL, true, 0, p->T, w_hat);
    if (rc == AD_OK) rc = outer_grads(p, w_hat, im->b, im->glam, &im->f);
    if (rc == AD_OK && !(im->tp = ad_tape_new(AD_HORIZON_ALL))) rc = AD_ENOMEM;
    if (rc == AD_OK) {
        for (int i = 0; i < p->n_w; i++) im->w[i] = ad_leaf(im->tp, w_hat[i]);
        ad_value *g = p->inner(im->tp, im->w, p->hyper, p->T, p->ctx);
        rc = g ? ad_grad(im->tp, g, p->n_w, im->w, im->gw, true)
               : ad_fail_wrap(AD_EARG, "%s: inner loss failed", who);
    }
    free_list(state_len(p), w_hat);
    return rc;
}

static void implicit_free(implicit *im)
{
    if (!im->p) return;
    free_list(im->p->n_w, im->b);
    free_list(im->p->n_hyper, im->glam);
    ad_tape_free(im->tp);
}

/* H v with H = ∇²_w g(ŵ): the vjp of the recorded gradient, seeded with v.
 * The result is copied into `out` (caller-owned, same shapes). */
static int hess_vec(implicit *im, ad_value *const *v, ad_value **out)
{
    ad_value *hv[MAX_T];
    uint64_t mark = ad_tape_mark(im->tp); /* each product is scratch: memory stays flat */
    int rc = ad_vjp_many(im->tp, im->p->n_w, im->gw, v, im->p->n_w, im->w, hv, false);
    for (int i = 0; i < im->p->n_w && rc == AD_OK; i++)
        memcpy(out[i]->data, hv[i]->data, hv[i]->size * sizeof(ad_real));
    ad_tape_rewind(im->tp, mark);
    return rc;
}

/* dλf = ∂λf − ∇²_{λw} g · v, the mixed term again a vjp of ∇w g. */
static int implicit_finish(const char *who, implicit *im, ad_value *const *v, ad_value **dlam,
                           hg_report *report, double t0)
{
    ad_value *mixed[MAX_T];
    int rc = ad_vjp_many(im->tp, im->p->n_w, im->gw, v, im->p->n_hyper, im->p->hyper, mixed, false);
    if (rc == AD_OK) {
        add_into(im->p->n_hyper, im->glam, mixed, -1);
        rc = copy_out(who, im->p->n_hyper, im->glam, dlam);
    }
    if (rc == AD_OK) fill_report(report, t0, ad_tape_peak_bytes(im->tp), 0, im->f);
    return rc;
}

static double list_dot(int n, ad_value *const *a, ad_value *const *b)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        for (size_t j = 0; j < a[i]->size; j++) s += (double)a[i]->data[j] * b[i]->data[j];
    return s;
}

/* y += c x */
static void list_axpy(int n, ad_value **y, double c, ad_value *const *x)
{
    add_into(n, y, x, c);
}

static int new_like(int n, ad_value *const *x, ad_value **out)
{
    for (int i = 0; i < n; i++)
        if (!(out[i] = ad_tensor_new(x[i]->rank, x[i]->shape))) {
            free_list(i, out);
            return ad_fail(AD_ENOMEM, "out of memory");
        }
    return AD_OK;
}

int hg_implicit_cg(const hg_problem *p, int iters, double tol, ad_value **dlam, hg_report *report)
{
    double t0 = now();
    if (iters < 1) return ad_fail(AD_EARG, "implicit_cg: iterations must be >= 1, got %d", iters);
    if (!(tol >= 0 && tol < INFINITY)) /* a NaN would skip the solve and still succeed */
        return ad_fail(AD_EARG, "implicit_cg: tolerance must be finite and >= 0, got %g", tol);
    implicit im;
    int rc = implicit_setup("implicit_cg", p, &im);
    if (rc != AD_OK) {
        implicit_free(&im);
        return rc;
    }
    int n = p->n_w;
    ad_value *x[MAX_T] = { 0 }, *r[MAX_T] = { 0 }, *d[MAX_T] = { 0 }, *hd[MAX_T] = { 0 };
    if (rc == AD_OK && (rc = new_like(n, im.b, x)) == AD_OK && (rc = new_like(n, im.b, hd)) == AD_OK &&
        (rc = save_list(n, im.b, r, NULL)) == AD_OK)
        rc = save_list(n, im.b, d, NULL);
    /* Conjugate gradient on H x = b from x = 0 (H is symmetric; positive
     * definite where g is locally strongly convex). */
    double rr = rc == AD_OK ? list_dot(n, r, r) : 0, stop = tol * tol * rr;
    for (int k = 0; k < iters && rc == AD_OK && rr > stop && rr > 0; k++) {
        rc = hess_vec(&im, d, hd);
        if (rc != AD_OK) break;
        double dhd = list_dot(n, d, hd);
        if (!(dhd > 0)) {
            rc = ad_fail(AD_ENONFINITE, "implicit_cg: the inner Hessian is not positive "
                                        "definite along a search direction (dᵀHd = %g)", dhd);
            break;
        }
        double alpha = rr / dhd;
        list_axpy(n, x, alpha, d);
        list_axpy(n, r, -alpha, hd);
        double rr_new = list_dot(n, r, r);
        for (int i = 0; i < n; i++) /* d = r + (rr_new/rr) d */
            for (size_t j = 0; j < d[i]->size; j++)
                d[i]->data[j] = r[i]->data[j] + (ad_real)(rr_new / rr) * d[i]->data[j];
        rr = rr_new;
    }
    if (rc == AD_OK) rc = implicit_finish("implicit_cg", &im, x, dlam, report, t0);
    free_list(n, x);
    free_list(n, r);
    free_list(n, d);
    free_list(n, hd);
    implicit_free(&im);
    return rc;
}

int hg_neumann(const hg_problem *p, int K, ad_value **dlam, hg_report *report)
{
    double t0 = now();
    if (K < 1) return ad_fail(AD_EARG, "neumann: K must be >= 1, got %d", K);
    implicit im;
    int rc = implicit_setup("neumann", p, &im);
    if (rc != AD_OK) {
        implicit_free(&im);
        return rc;
    }
    int n = p->n_w;
    double gamma = p->opt.step;
    ad_value *term[MAX_T] = { 0 }, *sum[MAX_T] = { 0 }, *hterm[MAX_T] = { 0 };
    if (rc == AD_OK && (rc = save_list(n, im.b, term, NULL)) == AD_OK &&
        (rc = save_list(n, im.b, sum, NULL)) == AD_OK)
        rc = new_like(n, im.b, hterm);
    /* v = γ Σ_{k<K} (I − γH)^k ∇ŵf: term ← term − γ H term. */
    for (int k = 1; k < K && rc == AD_OK; k++) {
        rc = hess_vec(&im, term, hterm);
        if (rc != AD_OK) break;
        list_axpy(n, term, -gamma, hterm);
        list_axpy(n, sum, 1, term);
    }
    for (int i = 0; i < n && rc == AD_OK; i++)
        for (size_t j = 0; j < sum[i]->size; j++) sum[i]->data[j] *= (ad_real)gamma;
    if (rc == AD_OK) rc = implicit_finish("neumann", &im, sum, dlam, report, t0);
    free_list(n, term);
    free_list(n, sum);
    free_list(n, hterm);
    implicit_free(&im);
    return rc;
}
