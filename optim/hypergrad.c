/* hypergrad.c — the estimators.  Every one drives the same problem through
 * hg_state_init / hg_inner_step and differs only in what it keeps and in
 * which direction it carries derivatives. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ops/ops.h"
#include "optim/hypergrad.h"

enum {
    MAX_T = 64,     /* tensors in λ */
    MAX_LIST = 256  /* tensors in a state list (w and the optimizer's state) */
};

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

/* The status of an op chain or callback that returned NULL. */
static int null_status(void)
{
    int code = ad_error_code();
    return code == AD_OK ? AD_EARG : code;
}

/* Every public estimator names itself once, here, in front of whatever
 * failed below it. */
static int finish(const char *who, int rc)
{
    return rc == AD_OK ? AD_OK : ad_fail_wrap(rc, "%s", who);
}

/* ---- what the inner loss did ----------------------------------------------
 * The inner losses g_t the forward steps computed anyway (hg_state.loss). */

typedef struct track {
    int n;
    double first, last, max_rise;
    int max_rise_step, nonfinite_step;
} track;

static void track_loss(track *k, int t, double g)
{
    if (!k) return;
    if (!isfinite(g) && k->nonfinite_step == 0) k->nonfinite_step = t;
    if (k->n == 0) k->first = g;
    else if (g - k->last > k->max_rise) {
        k->max_rise = g - k->last;
        k->max_rise_step = t;
    }
    k->last = g;
    k->n++;
}

static bool track_diverged(const track *k)
{
    return k->nonfinite_step > 0 || k->last > k->first;
}

/* AD_ENONFINITE: "<what> is NaN", and the inner loss's story when it
 * diverged, which is the usual reason. */
static int fail_nonfinite(const track *k, double x, const char *what)
{
    const char *kind = isnan(x) ? "NaN" : "Inf";
    if (k && k->nonfinite_step > 0)
        return ad_fail(AD_ENONFINITE, "%s is %s; the inner loss was already not finite at step %d "
                       "(g_1 = %g): the inner optimizer diverged", what, kind, k->nonfinite_step,
                       k->first);
    if (k && k->n > 0 && track_diverged(k))
        return ad_fail(AD_ENONFINITE, "%s is %s; the inner loss rose from %g (step 1) to %g "
                       "(step %d): the inner optimizer diverged", what, kind, k->first, k->last,
                       k->n);
    return ad_fail(AD_ENONFINITE, "%s is %s", what, kind);
}

/* dst[i] = caller-owned copies of src[i]; fails (freeing them) on NaN/Inf,
 * naming the hyperparameter and the entry. */
static int copy_out(const track *k, int n, ad_value *const *src, ad_value **dst)
{
    int rc = AD_OK;
    for (int i = 0; i < n; i++) dst[i] = NULL;
    for (int i = 0; i < n && rc == AD_OK; i++) {
        if (!(dst[i] = ad_value_copy(src[i]))) {
            rc = null_status();
            break;
        }
        for (size_t j = 0; j < dst[i]->size; j++)
            if (!isfinite((double)dst[i]->data[j])) {
                char what[96];
                snprintf(what, sizeof what, "the hypergradient of hyperparameter %d, entry %zu",
                         i, j);
                rc = fail_nonfinite(k, (double)dst[i]->data[j], what);
                break;
            }
    }
    if (rc != AD_OK) free_list(n, dst);
    return rc;
}

static int check_common(const hg_problem *p, ad_value **dlam)
{
    int rc = hg_problem_check(p);
    if (rc != AD_OK) return rc;
    if (!dlam) return ad_fail(AD_EARG, "output array is NULL");
    if (hg_state_len(p) > MAX_LIST || p->n_hyper > MAX_T)
        return ad_fail(AD_EARG, "too many tensors (at most %d in the state list, %d in λ)",
                       MAX_LIST, MAX_T);
    return AD_OK;
}

/* A loss a callback returned, checked before its data are read: present
 * (else the callback's own message, or one naming it), readable, and a
 * scalar.  A value an earlier step made may have had its data dropped (a
 * lean tape) or been released (the horizon): ad_value_check refuses it with
 * the reason, as every other use of such a value is refused.  who names the
 * callback and where ("inner (at w_3)"); which is "inner" or "outer". */
static int check_loss(const char *who, const char *which, const ad_value *v)
{
    if (!v) {
        int code = null_status();
        return ad_error()[0] ? ad_fail_wrap(code, "%s", who)
                             : ad_fail(code, "%s: returned NULL without a message", who);
    }
    char what[96];
    snprintf(what, sizeof what, "%s: the loss it returned", who);
    if (ad_value_check(what, v) != AD_OK) return AD_EARG;
    if (v->size != 1) {
        char a[64];
        return ad_fail(AD_ESHAPE, "%s: returned a %s tensor; the %s loss must be a scalar", who,
                       ad_shape_str(v, a, sizeof a), which);
    }
    return AD_OK;
}

/* f's number for a report: NaN when there is none to read. */
static double loss_of(const ad_value *f)
{
    return f && f->data ? (double)f->data[0] : NAN;
}

/* The outer loss at w, checked: a readable scalar, finite.  *f is NULL when
 * there is no value to read. */
static int call_outer(ad_tape *tp, const hg_problem *p, ad_value *const *w, const track *k,
                      ad_value **f)
{
    ad_error_clear();
    *f = p->outer(tp, w, p->hyper, p->ctx);
    int rc = check_loss("outer", "outer", *f);
    if (rc != AD_OK) {
        *f = NULL; /* nothing a report may read */
        return rc;
    }
    double x = (double)(*f)->data[0];
    return isfinite(x) ? AD_OK : fail_nonfinite(k, x, "the outer loss");
}

/* The report is filled when the forward pass ran: on success and on a
 * non-finite result. */
static void fill_report(hg_report *r, int rc, double t0, size_t peak, size_t kept, double f,
                        const track *k)
{
    if (!r || (rc != AD_OK && rc != AD_ENONFINITE)) return;
    *r = (hg_report){
        .seconds = now() - t0,
        .peak_tape_bytes = peak,
        .checkpoint_bytes = kept,
        .outer_loss = f,
        .inner_loss_first = k->n ? k->first : NAN,
        .inner_loss_last = k->n ? k->last : NAN,
        .inner_loss_max_rise = k->max_rise,
        .inner_loss_max_rise_step = k->max_rise_step,
        .inner_nonfinite_step = k->nonfinite_step,
        .diverged = track_diverged(k),
    };
}

/* ---- lean recording ---------------------------------------------------------
 * What crosses from one recorded step to the next is the state list alone:
 * the callbacks build a step from w, λ and their own data, and the optimizer
 * its update from its state — the contract K-RMD's horizon already imposes
 * (a value of an older step is released K steps on, unless a held node
 * reads it).  So a tape that records the unrolled loop can be lean: as a
 * step closes it keeps the state (marked here) and the data some backward
 * rule will read (each op declares which), and gives back the rest.  The
 * sweeps compute the same numbers from what is kept.  A problem that does
 * read older values sets keep_values (hypergrad.h), and the failure says so. */

/* Lean mode for a tape recording p's steps, unless p opts out. */
static int lean_begin(ad_tape *tp, const hg_problem *p)
{
    return ad_tape_set_lean(tp, !p->keep_values);
}

/* The state list outlives its step: the next step (or the outer loss) reads it. */
static int keep_state(int n, ad_value *const *x)
{
    int rc = AD_OK;
    for (int i = 0; i < n && rc == AD_OK; i++) rc = ad_value_keep(x[i]);
    return rc;
}

/* A failure that met dropped data while recording: say what the estimator's
 * caller can do about it (ad's message names ad_value_keep, which the
 * callbacks cannot use on a tape they do not own). */
static int lean_hint(const hg_problem *p, int rc)
{
    if (rc == AD_OK || p->keep_values || !strstr(ad_error(), "had its data dropped")) return rc;
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", ad_error());
    return ad_fail(rc, "%s; the estimators record on lean tapes, where only the state list "
                   "crosses steps: a problem whose callbacks read a value an earlier step made "
                   "sets keep_values", msg);
}

/* ---- K-RMD ------------------------------------------------------------- */

/* K-RMD's forward pass on tp, for W = min(K, T): w0, the first T−W steps
 * detached, the last W recorded, then the outer loss *f in a step of its
 * own.  states (NULL, or (W + 1)·n entries, n = hg_state_len) receives the
 * state list x_t after each recorded step t at row t − (T − W); row 0 is
 * x_0 when all T steps are recorded, and NULL when not (x_{T−W} is then a
 * detached constant that the tape may free: step T−W+1 starts from a leaf
 * copy of it).  The tape's horizon must hold W closed steps. */
static int krmd_forward(ad_tape *tp, const hg_problem *p, int W, track *k, ad_value **states,
                        ad_value **f)
{
    int n = hg_state_len(p), first = p->T - W;
    bool full = W >= p->T;
    hg_state st = { 0 };
    int rc = lean_begin(tp, p);
    if (rc == AD_OK) rc = hg_state_init(tp, p, &st, !full);
    if (rc == AD_OK) rc = keep_state(n, st.w);
    if (rc == AD_OK && states)
        for (int i = 0; i < n; i++) states[i] = full ? st.w[i] : NULL;
    for (int t = 1; t <= p->T && rc == AD_OK; t++) {
        rc = ad_tape_step(tp);
        if (rc == AD_OK) rc = hg_inner_step(tp, p, &st, t, t <= first);
        if (rc == AD_OK) rc = keep_state(n, st.w);
        if (rc == AD_OK) track_loss(k, t, st.loss);
        if (rc == AD_OK && states && t > first)
            memcpy(states + (size_t)(t - first) * (size_t)n, st.w, (size_t)n * sizeof *st.w);
    }
    if (rc == AD_OK) rc = ad_tape_step(tp); /* the outer loss in a step of its own */
    if (rc == AD_OK) rc = call_outer(tp, p, st.w, k, f);
    if (st.w) hg_state_free(&st);
    return lean_hint(p, rc);
}

static int krmd(const hg_problem *p, int K, ad_value **dlam, hg_report *report)
{
    int rc = check_common(p, dlam);
    if (rc != AD_OK) return rc;
    if (K < 1) return ad_fail(AD_EARG, "K must be >= 1, got %d", K);
    double t0 = now();
    bool full = K >= p->T;
    /* The horizon is a guarantee, not the mechanism: the detached prefix
     * already cuts at T−K; the horizon keeps the prefix's own per-step
     * graphs (for ∇w g) from piling up. */
    ad_tape *tp = ad_tape_new(full ? AD_HORIZON_ALL : K);
    if (!tp) return null_status();
    track k = { 0 };
    ad_value *f = NULL, *g[MAX_T];
    rc = krmd_forward(tp, p, full ? p->T : K, &k, NULL, &f);
    if (rc == AD_OK) rc = ad_grad(tp, f, p->n_hyper, p->hyper, g, false);
    if (rc == AD_OK) rc = copy_out(&k, p->n_hyper, g, dlam);
    fill_report(report, rc, t0, ad_tape_peak_bytes(tp), 0, loss_of(f), &k);
    ad_tape_free(tp);
    return rc;
}

int hg_krmd(const hg_problem *p, int K, ad_value **dlam, hg_report *report)
{
    return finish("krmd", krmd(p, K, dlam, report));
}

int hg_full_rmd(const hg_problem *p, ad_value **dlam, hg_report *report)
{
    return finish("full_rmd", krmd(p, p ? (p->T > 0 ? p->T : 1) : 1, dlam, report));
}

/* ---- state lists as caller-owned copies ----------------------------------
 * Checkpointing and forward mode keep the state list (w, then the
 * optimizer's state; hg_state_len entries) between tapes. */

static int save_list(int n, ad_value *const *src, ad_value **dst, size_t *bytes)
{
    for (int i = 0; i < n; i++) {
        if (!(dst[i] = ad_value_copy(src[i]))) {
            free_list(i, dst);
            return null_status();
        }
        if (bytes) *bytes += dst[i]->size * sizeof(ad_real);
    }
    return AD_OK;
}

/* Runs steps t0+1..t1 detached from a saved state on a short-lived tape,
 * and saves the final state in `out` (caller-owned).  Inner losses go to k
 * (may be NULL). */
static int advance(const hg_problem *p, ad_value *const *from, bool from_init, int t0, int t1,
                   ad_value **out, track *k)
{
    ad_tape *tp = ad_tape_new(1);
    if (!tp) return null_status();
    hg_state st = { 0 };
    int rc = from_init ? hg_state_init(tp, p, &st, true) : hg_state_from_list(tp, p, from, &st);
    for (int t = t0 + 1; t <= t1 && rc == AD_OK; t++) {
        rc = ad_tape_step(tp);
        if (rc == AD_OK) rc = hg_inner_step(tp, p, &st, t, true);
        if (rc == AD_OK) track_loss(k, t, st.loss);
    }
    if (rc == AD_OK) rc = save_list(hg_state_len(p), st.w, out, NULL);
    if (st.w) hg_state_free(&st);
    ad_tape_free(tp);
    return rc;
}

int hg_inner_solve(const hg_problem *p, ad_value **w_hat, double *inner_losses)
{
    int rc = hg_problem_check(p);
    if (rc != AD_OK) return finish("inner_solve", rc);
    ad_tape *tp = ad_tape_new(1);
    if (!tp) return finish("inner_solve", null_status());
    hg_state st = { 0 };
    rc = hg_state_init(tp, p, &st, true);
    for (int t = 0; t <= p->T && rc == AD_OK; t++) {
        if (t > 0) {
            rc = ad_tape_step(tp);
            if (rc == AD_OK) rc = hg_inner_step(tp, p, &st, t, true);
        }
        if (rc == AD_OK && inner_losses) {
            ad_no_record_begin(tp);
            ad_error_clear();
            ad_value *g = p->inner(tp, st.w, p->hyper, t, p->ctx);
            ad_no_record_end(tp);
            char who[32];
            snprintf(who, sizeof who, "inner (at w_%d)", t);
            rc = check_loss(who, "inner", g);
            if (rc == AD_OK) inner_losses[t] = (double)g->data[0];
        }
    }
    if (rc == AD_OK && w_hat) rc = save_list(p->n_w, st.w, w_hat, NULL);
    if (st.w) hg_state_free(&st);
    ad_tape_free(tp);
    return finish("inner_solve", rc);
}

/* f at a saved ŵ: fills ∇ŵ f (n_w tensors, caller-owned), ∇λ f (n_hyper)
 * and the loss (checked finite). */
static int outer_grads(const hg_problem *p, ad_value *const *w_hat, const track *k,
                       ad_value **gw, ad_value **glam, double *f_out)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    if (!tp) return null_status();
    ad_value *w[MAX_LIST], *xs[MAX_LIST + MAX_T], *g[MAX_LIST + MAX_T], *f = NULL;
    int rc = AD_OK;
    for (int i = 0; i < p->n_w && rc == AD_OK; i++)
        if (!(xs[i] = w[i] = ad_leaf(tp, w_hat[i]))) rc = null_status();
    for (int i = 0; i < p->n_hyper; i++) xs[p->n_w + i] = p->hyper[i];
    if (rc == AD_OK) rc = call_outer(tp, p, w, k, &f);
    if (f) *f_out = loss_of(f);
    if (rc == AD_OK) rc = ad_grad(tp, f, p->n_w + p->n_hyper, xs, g, false);
    /* A NaN here would not always reach the result: CG stops at once on a
     * NaN residual and returns ∂λf alone. */
    for (int i = 0; i < p->n_w && rc == AD_OK; i++)
        for (size_t j = 0; j < g[i]->size && rc == AD_OK; j++)
            if (!isfinite((double)g[i]->data[j])) {
                char what[96];
                snprintf(what, sizeof what, "the gradient of the outer loss for w[%d], entry %zu", i, j);
                rc = fail_nonfinite(k, (double)g[i]->data[j], what);
            }
    if (rc == AD_OK) rc = save_list(p->n_w, g, gw, NULL);
    if (rc == AD_OK && (rc = save_list(p->n_hyper, g + p->n_w, glam, NULL)) != AD_OK)
        free_list(p->n_w, gw);
    ad_tape_free(tp);
    return rc;
}

/* acc[i] += c·g[i] for i < n: one addition (a running total is a sum_list,
 * below).  The float build rounds once, the sum and not c·g first. */
static void add_into(int n, ad_value **acc, ad_value *const *g, double c)
{
    for (int i = 0; i < n; i++)
        for (size_t j = 0; j < acc[i]->size; j++)
            if (HT_REAL_IS_DOUBLE)
                acc[i]->data[j] += (ad_real)(c * g[i]->data[j]);
            else
                acc[i]->data[j] = (ad_real)(acc[i]->data[j] + c * g[i]->data[j]);
}

/* ---- running totals ------------------------------------------------------
 * λ's hypergradient collects a share from every step (the profile,
 * checkpointing), a Neumann sum a term per power, CG's solution a step per
 * iteration.  A float running sum of many shares drifts — 3000 steps' shares
 * of λ were 2.7e-5 off the double build's, 10⁵ steps' 7.8e-4 — so the float
 * build keeps each total in double beside its tensors, which hold the total
 * rounded after every addition (they are read between additions: the
 * profile's rows).  As the sweep does (ad/grad.c), the double sum starts at
 * the third term — the first two are added in float, which rounds their
 * exact sum once — so that the profile's h_{T−T} is full RMD's λ gradient
 * bit for bit.  The double build adds into the tensors as it always did,
 * through add_into. */
typedef struct sum_list {
    int n;
    ad_value **v; /* the tensors holding the total (the caller's; not owned) */
    double *wide; /* float build: the entries of v in double, in order; else NULL */
    bool summed;  /* v holds a sum of two terms or more */
} sum_list;

/* t sums into v[0..n), starting from their values; AD_ENOMEM (message set)
 * when the double copy cannot be made.  sum_list_end frees it, also after a
 * failure, and on a zeroed total. */
static int sum_list_begin(sum_list *t, int n, ad_value **v)
{
    *t = (sum_list){ .n = n, .v = v };
    if (HT_REAL_IS_DOUBLE) return AD_OK;
    size_t size = 0;
    for (int i = 0; i < n; i++) size += v[i]->size;
    if (!(t->wide = malloc((size ? size : 1) * sizeof *t->wide)))
        return ad_fail(AD_ENOMEM, "out of memory for %zu double sums", size);
    return AD_OK;
}

/* The total += c·g (g: n tensors shaped as v). */
static void sum_list_add(sum_list *t, ad_value *const *g, double c)
{
    double *w = t->wide;
    if (!w || !t->summed) { /* the double build, or the second term */
        add_into(t->n, t->v, g, c);
        t->summed = true;
        for (int i = 0; w && i < t->n; i++) /* the double sum starts from it */
            for (size_t j = 0; j < t->v[i]->size; j++) *w++ = t->v[i]->data[j];
        return;
    }
    for (int i = 0; i < t->n; i++)
        for (size_t j = 0; j < t->v[i]->size; j++, w++)
            t->v[i]->data[j] = (ad_real)(*w += c * g[i]->data[j]);
}

static void sum_list_end(sum_list *t)
{
    free(t->wide);
    *t = (sum_list){ 0 };
}

/* ---- the truncation profile ----------------------------------------------
 * K-RMD's forward pass, then the reverse sweep one recorded step at a time:
 * from x_t seeded with v_t, ad_vjp_partial to (x_{t−1}, λ) gives v_{t−1} and
 * step t's share of λ, c_t = B_tᵀ v_t, and nothing of the steps before
 * (they are behind the cut at x_{t−1}).  h_{T−k} is ∂λf plus the shares of
 * the last k steps. */

static double list_norm(int n, ad_value *const *v)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        for (size_t j = 0; j < v[i]->size; j++) s += (double)v[i]->data[j] * v[i]->data[j];
    return sqrt(s);
}

/* Caller-owned copies of src in dst (n tensors, freed on failure). */
static int copy_list(int n, ad_value *const *src, ad_value **dst)
{
    return save_list(n, src, dst, NULL);
}

/* What a pass carries from one step to the one before. */
typedef struct pass {
    const hg_problem *p;
    ad_tape *tp;
    int n, W;             /* state list length; rows */
    ad_value **states;    /* (W + 1) × n: x_t at row t − (T − W) */
    ad_value *v[MAX_LIST];  /* v_t, caller-owned */
    ad_value *h[MAX_T];     /* ∂λf + the shares so far, caller-owned */
    sum_list h_sum;         /* the running total in h */
    hg_profile *out;
    bool *keep;           /* [k−1]: keep h_{T−k} */
} pass;

/* The outer step: ∇ŵf starts v (the optimizer state's part at 0), ∂λf starts h. */
static int pass_outer(pass *ps, ad_value *f)
{
    const hg_problem *p = ps->p;
    ad_value *xs[MAX_LIST + MAX_T], *g[MAX_LIST + MAX_T];
    memcpy(xs, ps->states + (size_t)ps->W * (size_t)ps->n, (size_t)p->n_w * sizeof *xs);
    memcpy(xs + p->n_w, p->hyper, (size_t)p->n_hyper * sizeof *xs);
    uint64_t mark = ad_tape_mark(ps->tp);
    int rc = ad_vjp_partial(ps->tp, 1, &f, NULL, p->n_w + p->n_hyper, xs, g, false);
    if (rc == AD_OK) rc = copy_list(p->n_w, g, ps->v);
    for (int i = p->n_w; i < ps->n && rc == AD_OK; i++) {
        const ad_value *x = ps->states[(size_t)ps->W * (size_t)ps->n + (size_t)i];
        if (!(ps->v[i] = ad_tensor_new(x->rank, x->shape))) rc = null_status();
    }
    if (rc == AD_OK) rc = copy_list(p->n_hyper, g + p->n_w, ps->h);
    if (rc == AD_OK) ps->out->direct_norm = list_norm(p->n_hyper, ps->h);
    ad_tape_rewind(ps->tp, mark);
    return rc;
}

/* From x at row r, seeded with v, to `targets` (m of them): g.  An entry
 * that appears twice in the row is seeded once (its adjoint is the total). */
static int pass_vjp(pass *ps, int r, int m, ad_value *const *targets, ad_value **g)
{
    ad_value *ys[MAX_LIST], *seeds[MAX_LIST], *const *x = ps->states + (size_t)r * (size_t)ps->n;
    int ny = 0;
    for (int i = 0; i < ps->n; i++) {
        bool again = false;
        for (int j = 0; j < i && !again; j++) again = x[j] == x[i];
        if (again) continue;
        ys[ny] = x[i];
        seeds[ny++] = ps->v[i];
    }
    return ad_vjp_partial(ps->tp, ny, ys, seeds, m, targets, g, false);
}

/* Row k of the profile, after step t = T − k + 1's share went into h. */
static int pass_row(pass *ps, int k, double contrib, double adjoint)
{
    hg_profile *o = ps->out;
    int nh = ps->p->n_hyper;
    o->contrib_norm[k - 1] = contrib;
    o->adjoint_norm[k - 1] = adjoint;
    o->h_norm[k - 1] = list_norm(nh, ps->h);
    if (k == ps->W || !ps->keep[k - 1]) return AD_OK;
    return copy_list(nh, ps->h, o->h + (size_t)(k - 1) * (size_t)nh);
}

/* dst[i]'s entries = src[i]'s, for i < n.  The sources are a sweep's
 * results, which are new values of the open step, never its seeds (ad.h), so
 * no source is a destination and a plain copy in order is safe (the test
 * tape: vjp_never_returns_a_seed holds the sweep to that). */
static int assign_list(int n, ad_value *const *dst, ad_value *const *src)
{
    for (int i = 0; i < n; i++) memcpy(dst[i]->data, src[i]->data, src[i]->size * sizeof(ad_real));
    return AD_OK;
}

/* One recorded step t (row r = t − (T − W), profile row k = W − r + 1). */
static int pass_step(pass *ps, int r)
{
    const hg_problem *p = ps->p;
    int n = ps->n, nh = p->n_hyper, k = ps->W - r + 1;
    bool before = ps->states[(size_t)(r - 1) * (size_t)n] != NULL; /* x_{t−1} recorded */
    ad_value *xs[MAX_LIST + MAX_T], *g[MAX_LIST + MAX_T];
    int nx = before ? n : 0;
    if (before) memcpy(xs, ps->states + (size_t)(r - 1) * (size_t)n, (size_t)n * sizeof *xs);
    memcpy(xs + nx, p->hyper, (size_t)nh * sizeof *xs);
    double adjoint = list_norm(n, ps->v);
    uint64_t mark = ad_tape_mark(ps->tp);
    int rc = pass_vjp(ps, r, nx + nh, xs, g);
    if (rc == AD_OK) {
        sum_list_add(&ps->h_sum, g + nx, 1);
        rc = assign_list(nx, ps->v, g); /* v_{t−1} = A_tᵀ v_t */
    }
    double contrib = rc == AD_OK ? list_norm(nh, g + nx) : 0;
    ad_tape_rewind(ps->tp, mark);
    if (rc == AD_OK && k == ps->W && ps->W == p->T) { /* all T steps: add init's share */
        mark = ad_tape_mark(ps->tp);
        rc = pass_vjp(ps, 0, nh, p->hyper, g);
        if (rc == AD_OK) {
            sum_list_add(&ps->h_sum, g, 1);
            ps->out->init_norm = list_norm(nh, g);
        }
        ad_tape_rewind(ps->tp, mark);
    }
    return rc == AD_OK ? pass_row(ps, k, contrib, adjoint) : rc;
}

static int profile_alloc(hg_profile *o, int W, int T, int nh)
{
    *o = (hg_profile){ .K = W, .T = T, .n_hyper = nh };
    o->contrib_norm = calloc((size_t)W, sizeof(double));
    o->adjoint_norm = calloc((size_t)W, sizeof(double));
    o->h_norm = calloc((size_t)W, sizeof(double));
    o->h = calloc((size_t)W * (size_t)nh, sizeof *o->h);
    if (o->contrib_norm && o->adjoint_norm && o->h_norm && o->h) return AD_OK;
    hg_profile_free(o); /* the caller frees nothing after a failure */
    return ad_fail(AD_ENOMEM, "out of memory");
}

void hg_profile_free(hg_profile *pr)
{
    if (!pr) return;
    if (pr->h) free_list(pr->K * pr->n_hyper, pr->h);
    free(pr->h);
    free(pr->contrib_norm);
    free(pr->adjoint_norm);
    free(pr->h_norm);
    *pr = (hg_profile){ 0 };
}

static int profile(const hg_problem *p, int K, const hg_profile_opts *opts, hg_profile *out)
{
    ad_value *unused[1];
    int rc = check_common(p, unused);
    if (rc != AD_OK) return rc;
    if (K < 1) return ad_fail(AD_EARG, "K must be >= 1, got %d", K);
    double t0 = now();
    int W = K < p->T ? K : p->T, n = hg_state_len(p);
    pass ps = { .p = p, .n = n, .W = W, .out = out };
    if ((rc = profile_alloc(out, W, p->T, p->n_hyper)) != AD_OK) return rc;
    ps.keep = calloc((size_t)W, sizeof *ps.keep);
    ps.states = calloc((size_t)(W + 1) * (size_t)n, sizeof *ps.states);
    if (!ps.keep || !ps.states) rc = ad_fail(AD_ENOMEM, "out of memory");
    for (int i = 0; opts && i < W && rc == AD_OK; i++) ps.keep[i] = opts->keep_all;
    for (int i = 0; opts && opts->keep && i < opts->n_keep && rc == AD_OK; i++)
        if (opts->keep[i] >= 1 && opts->keep[i] <= W) ps.keep[opts->keep[i] - 1] = true;
    /* The tape as K-RMD's: the W recorded steps and the outer one are held. */
    track k = { 0 };
    ad_value *f = NULL;
    if (rc == AD_OK && !(ps.tp = ad_tape_new(W >= p->T ? AD_HORIZON_ALL : W))) rc = null_status();
    if (rc == AD_OK) rc = krmd_forward(ps.tp, p, W, &k, ps.states, &f);
    if (rc == AD_OK) rc = pass_outer(&ps, f);
    if (rc == AD_OK) rc = sum_list_begin(&ps.h_sum, p->n_hyper, ps.h);
    for (int r = W; r >= 1 && rc == AD_OK; r--) rc = pass_step(&ps, r);
    /* h_{T−K}, checked finite as every estimator's result. */
    ad_value **last = out->h + (size_t)(W - 1) * (size_t)p->n_hyper;
    if (rc == AD_OK) rc = copy_out(&k, p->n_hyper, ps.h, last);
    fill_report(&out->report, rc, t0, ps.tp ? ad_tape_peak_bytes(ps.tp) : 0, 0,
                loss_of(f), &k);
    sum_list_end(&ps.h_sum);
    free_list(n, ps.v);
    free_list(p->n_hyper, ps.h);
    free(ps.keep);
    free(ps.states);
    ad_tape_free(ps.tp);
    if (rc != AD_OK) { /* nothing to free, but the report (NaN, divergence) as the estimators' */
        hg_report r = out->report;
        hg_profile_free(out);
        out->report = r;
    }
    return rc;
}

int hg_truncation_profile(const hg_problem *p, int K, const hg_profile_opts *opts, hg_profile *out)
{
    if (!out) return finish("profile", ad_fail(AD_EARG, "the result is NULL"));
    *out = (hg_profile){ 0 };
    return finish("profile", profile(p, K, opts, out));
}

/* ---- checkpointed RMD -------------------------------------------------- */

/* Back-propagates the adjoint `abar` (state list) through steps t0+1..t1
 * replayed from the saved state `from`, adding the λ part into the sum lbar and
 * replacing abar with the adjoint at t0. */
static int reverse_segment(const hg_problem *p, ad_value *const *from, int t0, int t1,
                           ad_value **abar, sum_list *lbar, size_t *peak)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    if (!tp) return null_status();
    hg_state st = { 0 };
    int n = hg_state_len(p), rc = lean_begin(tp, p);
    if (rc == AD_OK) rc = hg_state_from_list(tp, p, from, &st); /* leaves: never dropped */
    ad_value *xs[MAX_LIST + MAX_T], *g[MAX_LIST + MAX_T];
    if (rc == AD_OK) memcpy(xs, st.w, (size_t)n * sizeof *xs);
    for (int i = 0; i < p->n_hyper; i++) xs[n + i] = p->hyper[i];
    for (int t = t0 + 1; t <= t1 && rc == AD_OK; t++) {
        rc = ad_tape_step(tp);
        if (rc == AD_OK) rc = hg_inner_step(tp, p, &st, t, false);
        if (rc == AD_OK) rc = keep_state(n, st.w);
    }
    rc = lean_hint(p, rc);
    if (rc == AD_OK) rc = ad_vjp_many(tp, n, st.w, abar, n + p->n_hyper, xs, g, false);
    if (rc == AD_OK) {
        sum_list_add(lbar, g + n, 1);
        rc = assign_list(n, abar, g);
    }
    if (ad_tape_peak_bytes(tp) > *peak) *peak = ad_tape_peak_bytes(tp);
    if (st.w) hg_state_free(&st);
    ad_tape_free(tp);
    return rc;
}

/* The adjoint at (w0, s0) through init(λ), when they depend on λ. */
static int reverse_init(const hg_problem *p, ad_value **abar, sum_list *lbar)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    if (!tp) return null_status();
    hg_state st = { 0 };
    int n = hg_state_len(p), rc = hg_state_init(tp, p, &st, false);
    ad_value *g[MAX_T];
    if (rc == AD_OK) {
        bool any = false;
        for (int i = 0; i < n; i++) any |= st.w[i]->requires_grad;
        if (any) rc = ad_vjp_many(tp, n, st.w, abar, p->n_hyper, p->hyper, g, false);
        if (any && rc == AD_OK) sum_list_add(lbar, g, 1);
        hg_state_free(&st);
    }
    ad_tape_free(tp);
    return rc;
}

static int checkpoint(const hg_problem *p, int K, ad_value **dlam, hg_report *report)
{
    int rc = check_common(p, dlam);
    if (rc != AD_OK) return rc;
    if (K < 1) return ad_fail(AD_EARG, "K must be >= 1, got %d", K);
    double t0 = now();
    int T = p->T, W = K < T ? K : T, start = T - W, n = hg_state_len(p);
    int S = (int)ceil(sqrt((double)W)), m = (W + S - 1) / S; /* m segments of ≤ S steps */
    ad_value **ckpt = calloc((size_t)m * (size_t)n, sizeof *ckpt);
    ad_value *abar[MAX_LIST] = { 0 }, *lbar[MAX_T] = { 0 }, *cur[MAX_LIST] = { 0 };
    if (!ckpt) return ad_fail(AD_ENOMEM, "out of memory");
    size_t kept = 0, peak = 0;
    double f = NAN;
    track k = { 0 };
    /* Forward: detached, saving the state at each segment start. */
    rc = advance(p, NULL, true, 0, start, cur, &k);
    for (int j = 0; j < m && rc == AD_OK; j++) {
        rc = save_list(n, cur, ckpt + (size_t)j * (size_t)n, &kept);
        int b0 = start + j * S, b1 = b0 + S < T ? b0 + S : T;
        ad_value *next[MAX_LIST];
        if (rc == AD_OK) rc = advance(p, cur, false, b0, b1, next, &k);
        free_list(n, cur);
        if (rc == AD_OK) memcpy(cur, next, (size_t)n * sizeof *cur);
    }
    /* The outer loss gives the first adjoint; the optimizer state's starts at 0. */
    if (rc == AD_OK) rc = outer_grads(p, cur, &k, abar, lbar, &f);
    sum_list lsum = { 0 }; /* the segments' shares, summed into lbar */
    if (rc == AD_OK) rc = sum_list_begin(&lsum, p->n_hyper, lbar);
    for (int i = p->n_w; i < n && rc == AD_OK; i++)
        if (!(abar[i] = ad_tensor_new(cur[i]->rank, cur[i]->shape))) rc = null_status();
    for (int j = m - 1; j >= 0 && rc == AD_OK; j--) {
        int b0 = start + j * S, b1 = b0 + S < T ? b0 + S : T;
        rc = reverse_segment(p, ckpt + (size_t)j * (size_t)n, b0, b1, abar, &lsum, &peak);
    }
    if (rc == AD_OK && start == 0) rc = reverse_init(p, abar, &lsum);
    sum_list_end(&lsum);
    if (rc == AD_OK) rc = copy_out(&k, p->n_hyper, lbar, dlam);
    fill_report(report, rc, t0, peak, kept, f, &k);
    free_list(n, cur);
    free_list(n, abar);
    free_list(p->n_hyper, lbar);
    for (int j = 0; j < m * n; j++) ad_value_free(ckpt[j]);
    free(ckpt);
    return rc;
}

int hg_checkpoint(const hg_problem *p, int K, ad_value **dlam, hg_report *report)
{
    return finish("checkpoint", checkpoint(p, K, dlam, report));
}

/* ---- forward mode ------------------------------------------------------ */

/* Jacobian-vector product through reverse mode twice: with r a free seed,
 * u(r) = Jᵀr is linear in r, and d/dr ⟨u(r), z⟩ = J z. */
static int jvp(ad_tape *tp, int m, ad_value *const *ys, int n, ad_value *const *xs,
               ad_value *const *zs, ad_value **out)
{
    ad_value *r[MAX_LIST], *u[MAX_LIST + MAX_T];
    for (int k = 0; k < m; k++)
        if (!(r[k] = ad_leaf(tp, ad_const_fill(tp, ys[k]->rank, ys[k]->shape, 0)))) return null_status();
    int rc = ad_vjp_many(tp, m, ys, r, n, xs, u, true);
    if (rc == AD_OK) rc = ad_vjp_many(tp, n, u, zs, m, r, out, false);
    return rc;
}

/* One pass of forward mode along the unit direction e (a λ-shaped list):
 * returns dŵ/dλ · e in zw (n_w tensors, caller-owned). */
static int fmd_direction(const hg_problem *p, ad_value *const *e, ad_value **zw, size_t *peak,
                         size_t *kept)
{
    int n = hg_state_len(p), rc;
    ad_value *state[MAX_LIST] = { 0 }, *z[MAX_LIST] = { 0 };
    /* t = 0: z0 = d(w0, s0)/dλ e. */
    {
        ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
        hg_state st = { 0 };
        ad_value *jz[MAX_LIST];
        rc = tp ? hg_state_init(tp, p, &st, false) : null_status();
        if (rc == AD_OK) {
            rc = jvp(tp, n, st.w, p->n_hyper, p->hyper, e, jz);
            if (rc == AD_OK) rc = save_list(n, jz, z, kept);
            if (rc == AD_OK) rc = save_list(n, st.w, state, kept);
            hg_state_free(&st);
        }
        ad_tape_free(tp);
    }
    for (int t = 1; t <= p->T && rc == AD_OK; t++) {
        ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
        hg_state st = { 0 };
        ad_value *xs[MAX_LIST + MAX_T], *zs[MAX_LIST + MAX_T], *jz[MAX_LIST];
        rc = tp ? hg_state_from_list(tp, p, state, &st) : null_status();
        if (rc != AD_OK) { ad_tape_free(tp); break; }
        memcpy(xs, st.w, (size_t)n * sizeof *xs);
        memcpy(zs, z, (size_t)n * sizeof *zs);
        for (int i = 0; i < p->n_hyper; i++) {
            xs[n + i] = p->hyper[i];
            zs[n + i] = e[i];
        }
        rc = hg_inner_step(tp, p, &st, t, false);
        if (rc == AD_OK) rc = jvp(tp, n, st.w, n + p->n_hyper, xs, zs, jz);
        if (rc == AD_OK) /* z_t = A_t z_{t−1} + B_t e, and the new state */
            for (int i = 0; i < n; i++) {
                memcpy(z[i]->data, jz[i]->data, z[i]->size * sizeof(ad_real));
                memcpy(state[i]->data, st.w[i]->data, state[i]->size * sizeof(ad_real));
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

static int fmd(const hg_problem *p, ad_value **dlam, hg_report *report)
{
    int rc = check_common(p, dlam);
    if (rc != AD_OK) return rc;
    double t0 = now(), f = NAN;
    size_t peak = 0, kept = 0;
    track k = { 0 };
    ad_value *w_hat[MAX_LIST] = { 0 }, *gw[MAX_LIST] = { 0 }, *glam[MAX_T] = { 0 }, *e[MAX_T] = { 0 };
    rc = advance(p, NULL, true, 0, p->T, w_hat, &k);
    if (rc == AD_OK) rc = outer_grads(p, w_hat, &k, gw, glam, &f);
    for (int i = 0; i < p->n_hyper && rc == AD_OK; i++)
        if (!(e[i] = ad_tensor_new(p->hyper[i]->rank, p->hyper[i]->shape))) rc = null_status();
    /* One forward pass per scalar hyperparameter: that is FMD's price. */
    for (int h = 0; h < p->n_hyper && rc == AD_OK; h++)
        for (size_t j = 0; j < p->hyper[h]->size && rc == AD_OK; j++) {
            ad_value *zw[MAX_LIST];
            size_t kept_one = 0;
            e[h]->data[j] = 1;
            rc = fmd_direction(p, e, zw, &peak, &kept_one);
            e[h]->data[j] = 0;
            if (kept_one > kept) kept = kept_one;
            if (rc != AD_OK) { /* which pass: the callbacks run again in each */
                rc = ad_fail_wrap(rc, "hyperparameter %d, entry %zu", h, j);
                break;
            }
            double s = 0; /* dλⱼ f = ∂λⱼ f + ⟨∇ŵ f, Z eⱼ⟩ */
            for (int i = 0; i < p->n_w; i++)
                for (size_t q = 0; q < zw[i]->size; q++) s += (double)gw[i]->data[q] * zw[i]->data[q];
            glam[h]->data[j] += (ad_real)s;
            free_list(p->n_w, zw);
        }
    if (rc == AD_OK) rc = copy_out(&k, p->n_hyper, glam, dlam);
    fill_report(report, rc, t0, peak, kept, f, &k);
    free_list(hg_state_len(p), w_hat);
    free_list(p->n_w, gw);
    free_list(p->n_hyper, glam);
    free_list(p->n_hyper, e);
    return rc;
}

int hg_fmd(const hg_problem *p, ad_value **dlam, hg_report *report)
{
    return finish("fmd", fmd(p, dlam, report));
}

/* ---- implicit differentiation ------------------------------------------ */

typedef struct implicit {
    const hg_problem *p;
    ad_tape *tp;
    ad_value *w[MAX_LIST];  /* leaves at ŵ */
    ad_value *gw[MAX_LIST]; /* ∇w g(ŵ, λ), recorded */
    ad_value *b[MAX_LIST];  /* ∇ŵ f (caller-owned) */
    ad_value *glam[MAX_T];  /* ∂λ f (caller-owned) */
    double f;
    track k;
} implicit;

/* Does λ reach the update other than through ŵ?  Then implicit
 * differentiation, which sees only the stationary point, misses it. */
static const char *hyper_in_optimizer(const hg_problem *p)
{
    if (p->opt.step_hyper) return "its step size";
    if (p->opt.momentum_hyper) return "its momentum";
    if (p->opt.kind == HG_CUSTOM && !p->opt.custom->ignores_hyper)
        return "a custom update that does not declare ignores_hyper";
    return NULL;
}

/* g(ŵ, λ, T) on im->tp, and its gradient, recorded. */
static int implicit_inner(implicit *im)
{
    const hg_problem *p = im->p;
    ad_error_clear();
    ad_value *g = p->inner(im->tp, im->w, p->hyper, p->T, p->ctx);
    int rc = check_loss("inner (at ŵ)", "inner", g);
    if (rc != AD_OK) return rc;
    return ad_grad(im->tp, g, p->n_w, im->w, im->gw, true);
}

static int implicit_setup(const hg_problem *p, bool neumann, ad_value **dlam, implicit *im)
{
    memset(im, 0, sizeof *im);
    int rc = check_common(p, dlam);
    if (rc != AD_OK) return rc;
    im->p = p; /* from here on implicit_free has lists to free */
    const char *why = hyper_in_optimizer(p);
    if (why)
        return ad_fail(AD_EUNSUPPORTED,
                       "a hyperparameter drives the inner optimizer (%s); implicit "
                       "differentiation sees only the stationary point, which does not depend "
                       "on it — use K-RMD, checkpointing or FMD", why);
    if (neumann && p->opt.kind != HG_GD && p->opt.kind != HG_MOMENTUM)
        return ad_fail(AD_EUNSUPPORTED, "the Neumann series is gradient descent's, and the inner "
                                        "optimizer is not: use implicit_cg, K-RMD or FMD");
    ad_value *w_hat[MAX_LIST] = { 0 };
    rc = advance(p, NULL, true, 0, p->T, w_hat, &im->k);
    if (rc == AD_OK) rc = outer_grads(p, w_hat, &im->k, im->b, im->glam, &im->f);
    if (rc == AD_OK && !(im->tp = ad_tape_new(AD_HORIZON_ALL))) rc = null_status();
    for (int i = 0; i < p->n_w && rc == AD_OK; i++)
        if (!(im->w[i] = ad_leaf(im->tp, w_hat[i]))) rc = null_status();
    if (rc == AD_OK) rc = implicit_inner(im);
    free_list(hg_state_len(p), w_hat);
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
    ad_value *hv[MAX_LIST];
    uint64_t mark = ad_tape_mark(im->tp); /* each product is scratch: memory stays flat */
    int rc = ad_vjp_many(im->tp, im->p->n_w, im->gw, v, im->p->n_w, im->w, hv, false);
    for (int i = 0; i < im->p->n_w && rc == AD_OK; i++)
        memcpy(out[i]->data, hv[i]->data, hv[i]->size * sizeof(ad_real));
    ad_tape_rewind(im->tp, mark);
    return rc;
}

/* dλf = ∂λf − ∇²_{λw} g · v, the mixed term again a vjp of ∇w g. */
static int implicit_finish(implicit *im, ad_value *const *v, ad_value **dlam)
{
    ad_value *mixed[MAX_T];
    int rc = ad_vjp_many(im->tp, im->p->n_w, im->gw, v, im->p->n_hyper, im->p->hyper, mixed, false);
    if (rc == AD_OK) {
        add_into(im->p->n_hyper, im->glam, mixed, -1);
        rc = copy_out(&im->k, im->p->n_hyper, im->glam, dlam);
    }
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

static int implicit_cg(const hg_problem *p, int iters, double tol, ad_value **dlam,
                       hg_report *report)
{
    double t0 = now();
    if (iters < 1) return ad_fail(AD_EARG, "iterations must be >= 1, got %d", iters);
    if (!(tol >= 0 && tol < INFINITY)) /* a NaN would skip the solve and still succeed */
        return ad_fail(AD_EARG, "tolerance must be finite and >= 0, got %g", tol);
    implicit im;
    int rc = implicit_setup(p, false, dlam, &im);
    int n = rc == AD_OK ? p->n_w : 0;
    ad_value *x[MAX_LIST] = { 0 }, *r[MAX_LIST] = { 0 }, *d[MAX_LIST] = { 0 }, *hd[MAX_LIST] = { 0 };
    if (rc == AD_OK && (rc = new_like(n, im.b, x)) == AD_OK && (rc = new_like(n, im.b, hd)) == AD_OK &&
        (rc = save_list(n, im.b, r, NULL)) == AD_OK)
        rc = save_list(n, im.b, d, NULL);
    sum_list xsum = { 0 }; /* x: a step per iteration (r is a recurrence, not a sum) */
    if (rc == AD_OK) rc = sum_list_begin(&xsum, n, x);
    /* Conjugate gradient on H x = b from x = 0 (H is symmetric; positive
     * definite where g is locally strongly convex). */
    double rr = rc == AD_OK ? list_dot(n, r, r) : 0, stop = tol * tol * rr;
    /* A residual this small is the working precision's floor (tol = 0 runs
     * on past it): there d and H d underflow, and dᵀHd = 0 says nothing of H. */
    double eps = HT_REAL_IS_DOUBLE ? DBL_EPSILON : FLT_EPSILON, floor = eps * eps * rr;
    for (int k = 0; k < iters && rc == AD_OK && rr > stop && rr > 0; k++) {
        rc = hess_vec(&im, d, hd);
        if (rc != AD_OK) break;
        double dhd = list_dot(n, d, hd);
        if (!(dhd > 0) && dhd == dhd && rr <= floor) break; /* converged */
        if (!(dhd > 0)) {
            rc = ad_fail(AD_ENONFINITE, "the inner Hessian is not positive definite along a "
                                        "search direction (dᵀHd = %g)", dhd);
            break;
        }
        double alpha = rr / dhd;
        sum_list_add(&xsum, d, alpha);
        list_axpy(n, r, -alpha, hd);
        double rr_new = list_dot(n, r, r);
        for (int i = 0; i < n; i++) /* d = r + (rr_new/rr) d */
            for (size_t j = 0; j < d[i]->size; j++)
                d[i]->data[j] = r[i]->data[j] + (ad_real)(rr_new / rr) * d[i]->data[j];
        rr = rr_new;
    }
    sum_list_end(&xsum);
    if (rc == AD_OK) rc = implicit_finish(&im, x, dlam);
    fill_report(report, rc, t0, im.tp ? ad_tape_peak_bytes(im.tp) : 0, 0, im.f, &im.k);
    free_list(n, x);
    free_list(n, r);
    free_list(n, d);
    free_list(n, hd);
    implicit_free(&im);
    return rc;
}

int hg_implicit_cg(const hg_problem *p, int iters, double tol, ad_value **dlam, hg_report *report)
{
    return finish("implicit_cg", implicit_cg(p, iters, tol, dlam, report));
}

static int neumann(const hg_problem *p, int K, ad_value **dlam, hg_report *report)
{
    double t0 = now();
    if (K < 1) return ad_fail(AD_EARG, "K must be >= 1, got %d", K);
    implicit im;
    int rc = implicit_setup(p, true, dlam, &im);
    int n = rc == AD_OK ? p->n_w : 0;
    double gamma = rc == AD_OK ? p->opt.step : 0;
    ad_value *term[MAX_LIST] = { 0 }, *sum[MAX_LIST] = { 0 }, *hterm[MAX_LIST] = { 0 };
    if (rc == AD_OK && (rc = save_list(n, im.b, term, NULL)) == AD_OK &&
        (rc = save_list(n, im.b, sum, NULL)) == AD_OK)
        rc = new_like(n, im.b, hterm);
    sum_list ssum = { 0 }; /* sum: a term per power (term itself is a recurrence) */
    if (rc == AD_OK) rc = sum_list_begin(&ssum, n, sum);
    /* v = γ Σ_{k<K} (I − γH)^k ∇ŵf: term ← term − γ H term. */
    for (int k = 1; k < K && rc == AD_OK; k++) {
        rc = hess_vec(&im, term, hterm);
        if (rc != AD_OK) break;
        list_axpy(n, term, -gamma, hterm);
        sum_list_add(&ssum, term, 1);
    }
    sum_list_end(&ssum);
    for (int i = 0; i < n && rc == AD_OK; i++)
        for (size_t j = 0; j < sum[i]->size; j++) sum[i]->data[j] *= (ad_real)gamma;
    if (rc == AD_OK) rc = implicit_finish(&im, sum, dlam);
    fill_report(report, rc, t0, im.tp ? ad_tape_peak_bytes(im.tp) : 0, 0, im.f, &im.k);
    free_list(n, term);
    free_list(n, sum);
    free_list(n, hterm);
    implicit_free(&im);
    return rc;
}

int hg_neumann(const hg_problem *p, int K, ad_value **dlam, hg_report *report)
{
    return finish("neumann", neumann(p, K, dlam, report));
}
