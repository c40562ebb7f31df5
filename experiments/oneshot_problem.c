/* oneshot_problem.c — see oneshot_problem.h.  The callbacks are written as
 * a user would write them; the only trick is which λ the representation
 * comes from (a leaf h in the split formulation, rep(x; λ_rep) in the
 * naive one). */
#include "oneshot_problem.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "experiments/classify.h"
#include "experiments/kit/kit.h"
#include "ops/ops.h"

/* ---- the hyperparameters ------------------------------------------------ */

int os_hyper_init(os_hyper *hy, mdl_cnn net, ad_rng *rng, double rho0, double step0)
{
    memset(hy, 0, sizeof *hy);
    hy->net = net;
    int rc = mdl_cnn_shapes(&net, &hy->shapes);
    if (rc != AD_OK) return ad_fail_wrap(rc, "oneshot");
    if (!(rho0 > 0) || !(step0 > 0) || !isfinite(rho0) || !isfinite(step0))
        return ad_fail(AD_EARG, "oneshot: rho0 = %g and step0 = %g must both be > 0", rho0, step0);
    hy->n_rep = MDL_CNN_BLOCK_PARAMS * net.n_rep;
    hy->n_task = hy->shapes.n - hy->n_rep;
    hy->n_layers = net.n_blocks - net.n_rep + 1;
    for (int j = 0; j < hy->n_task; j++) {
        int l = j / MDL_CNN_BLOCK_PARAMS;
        hy->layer_of[j] = l < hy->n_layers - 1 ? l : hy->n_layers - 1; /* classifier: last */
    }
    hy->n_list = hy->n_rep + hy->n_task + hy->n_layers + 1;
    /* λ_rep then the centres: one draw of the whole network's initial
     * parameters, so a seed gives the same net as mdl_init_params would. */
    rc = mdl_init_params(&hy->shapes, rng, hy->list, true);
    if (rc != AD_OK) return ad_fail_wrap(rc, "oneshot: initial parameters");
    double nu0 = log(expm1(rho0)); /* softplus⁻¹ */
    int base = hy->n_rep + hy->n_task;
    for (int l = 0; l < hy->n_layers; l++) hy->list[base + l] = ad_param_scalar((ad_real)nu0);
    hy->list[hy->n_list - 1] = ad_param_scalar((ad_real)step0);
    for (int i = base; i < hy->n_list; i++)
        if (!hy->list[i]) {
            os_hyper_free(hy);
            return ad_fail(AD_ENOMEM, "oneshot: out of memory");
        }
    hy->rep = hy->list;
    hy->center = hy->list + hy->n_rep;
    hy->rho_raw = hy->list + base;
    hy->step = hy->list[hy->n_list - 1];
    return AD_OK;
}

void os_hyper_free(os_hyper *hy)
{
    if (!hy) return;
    for (int i = 0; i < OS_MAX_HYPER; i++) ad_value_free(hy->list[i]);
    memset(hy, 0, sizeof *hy);
}

size_t os_hyper_numel(const os_hyper *hy)
{
    size_t n = 0;
    for (int i = 0; i < hy->n_list; i++) n += hy->list[i]->size;
    return n;
}

double os_hyper_rho(const os_hyper *hy, int layer)
{
    double nu = hy->rho_raw[layer]->data[0];
    return nu > 30 ? nu : log1p(exp(nu));
}

bool os_hyper_clamp_step(os_hyper *hy, double lo, double hi)
{
    double g = hy->step->data[0], c = g < lo ? lo : g > hi ? hi : g;
    if (!(c == c)) c = lo; /* NaN */
    hy->step->data[0] = (ad_real)c;
    return c != g;
}

int os_hyper_copy(os_hyper *dst, const os_hyper *src)
{
    if (dst->n_list != src->n_list)
        return ad_fail(AD_EARG, "oneshot: copying λ between different networks");
    for (int i = 0; i < src->n_list; i++) {
        if (!ad_same_shape(dst->list[i], src->list[i]))
            return ad_fail(AD_ESHAPE, "oneshot: copying λ between different networks");
        memcpy(dst->list[i]->data, src->list[i]->data, src->list[i]->size * sizeof(ad_real));
    }
    return AD_OK;
}

void os_hyper_pack(const os_hyper *hy, ad_value *const *g, ad_real *row)
{
    for (int i = 0; i < hy->n_list; row += g[i++]->size)
        memcpy(row, g[i]->data, sizeof(ad_real) * g[i]->size);
}

void os_hyper_unpack(const os_hyper *hy, const ad_real *row, ad_value *const *g)
{
    for (int i = 0; i < hy->n_list; row += g[i++]->size)
        memcpy(g[i]->data, row, sizeof(ad_real) * g[i]->size);
}

/* ---- the callbacks ------------------------------------------------------- */

/* The representation of the support (query = false) or query images. */
static ad_value *os_rep(ad_tape *tp, const os_task *t, ad_value *const *lam, bool query)
{
    if (t->split) return lam[t->off_h + (query ? 1 : 0)];
    return mdl_cnn_rep_forward(tp, &t->hy->net, query ? t->x_q : t->x_s, lam + t->off_rep);
}

/* w0 = c: a fresh node per tensor, so that ∇w g is taken with respect to
 * w and not, through the same leaf, to c as well. */
static int os_init_cb(ad_tape *tp, ad_value *const *lam, ad_value **w0, void *ctx)
{
    const os_task *t = ctx;
    for (int j = 0; j < t->hy->n_task; j++)
        if (!(w0[j] = ad_scale(tp, lam[t->off_center + j], 1.0)))
            return ad_fail_wrap(AD_ENOMEM, "oneshot: w0");
    return AD_OK;
}

/* g = CE(support) + Σ_l softplus(ν_l) Σ_{j ∈ l} ‖w_j − c_j‖² */
static ad_value *os_inner_cb(ad_tape *tp, ad_value *const *w, ad_value *const *lam, int step,
                             void *ctx)
{
    (void)step;
    const os_task *t = ctx;
    const os_hyper *hy = t->hy;
    ad_value *logits = mdl_cnn_task_forward(tp, &hy->net, os_rep(tp, t, lam, false), w);
    ad_value *g = ad_cross_entropy(tp, logits, t->y_s, NULL, AD_REDUCE_MEAN);
    if (t->no_reg || !g) return g;
    ad_value *sq[OS_MAX_LAYERS] = { 0 };
    for (int j = 0; j < hy->n_task; j++) {
        ad_value *s = ad_sqnorm(tp, ad_sub(tp, w[j], lam[t->off_center + j]));
        int l = hy->layer_of[j];
        sq[l] = sq[l] ? ad_add(tp, sq[l], s) : s;
        if (!sq[l]) return NULL;
    }
    for (int l = 0; l < hy->n_layers && g; l++)
        g = ad_add(tp, g, ad_mul(tp, ad_softplus(tp, lam[t->off_rho + l]), sq[l]));
    return g;
}

static ad_value *os_outer_cb(ad_tape *tp, ad_value *const *w, ad_value *const *lam, void *ctx)
{
    const os_task *t = ctx;
    ad_value *logits = mdl_cnn_task_forward(tp, &t->hy->net, os_rep(tp, t, lam, true), w);
    return ad_cross_entropy(tp, logits, t->y_q, NULL, AD_REDUCE_MEAN);
}

/* ---- one task ------------------------------------------------------------ */

void os_task_free(os_task *t)
{
    if (!t) return;
    ad_value *own[] = { t->x_s, t->y_s, t->x_q, t->y_q, t->h_s, t->h_q };
    ad_tape_free(t->rep_tp); /* before the leaves it used */
    for (size_t i = 0; i < sizeof own / sizeof *own; i++) ad_value_free(own[i]);
    memset(t, 0, sizeof *t);
}

int os_task_init(os_task *t, const os_hyper *hy, int n_s, int n_q, int T, bool split)
{
    memset(t, 0, sizeof *t);
    t->hy = hy;
    t->split = split;
    t->n_s = n_s;
    t->n_q = n_q;
    const mdl_cnn *m = &hy->net;
    if (n_s < 2 || n_q < 2)
        return ad_fail(AD_EARG, "oneshot: need at least 2 support and 2 query images (batch-norm "
                                "at 1x1), got %d and %d", n_s, n_q);
    if (split && hy->n_rep == 0)
        return ad_fail(AD_EARG, "oneshot: the split formulation needs a representation block");
    int in[3] = { m->in_channels, m->height, m->width }, chw[3];
    int rc = mdl_cnn_map_shape(m, m->n_rep, chw);
    if (rc != AD_OK) return rc;
    t->x_s = ad_tensor_new(4, (int[]){ n_s, in[0], in[1], in[2] });
    t->x_q = ad_tensor_new(4, (int[]){ n_q, in[0], in[1], in[2] });
    t->y_s = ad_tensor_new(1, &n_s);
    t->y_q = ad_tensor_new(1, &n_q);
    bool ok = t->x_s && t->x_q && t->y_s && t->y_q;
    if (split && ok) {
        t->h_s = ad_tensor_new(4, (int[]){ n_s, chw[0], chw[1], chw[2] });
        t->h_q = ad_tensor_new(4, (int[]){ n_q, chw[0], chw[1], chw[2] });
        t->rep_tp = ad_tape_new(AD_HORIZON_ALL);
        ok = t->h_s && t->h_q && t->rep_tp;
        if (ok) {
            ad_set_requires_grad(t->h_s, true);
            ad_set_requires_grad(t->h_q, true);
        }
    }
    if (!ok) {
        os_task_free(t);
        return ad_fail(AD_ENOMEM, "oneshot: out of memory");
    }
    /* The problem's λ: [rep] centres ν γ [h_s h_q]. */
    int n = 0;
    t->off_rep = t->off_h = -1;
    if (!split) {
        t->off_rep = n;
        for (int i = 0; i < hy->n_rep; i++) t->hyper[n++] = hy->rep[i];
    }
    t->off_center = n;
    for (int j = 0; j < hy->n_task; j++) t->hyper[n++] = hy->center[j];
    t->off_rho = n;
    for (int l = 0; l < hy->n_layers; l++) t->hyper[n++] = hy->rho_raw[l];
    t->hyper[n++] = hy->step;
    if (split) {
        t->off_h = n;
        t->hyper[n++] = t->h_s;
        t->hyper[n++] = t->h_q;
    }
    t->problem = (hg_problem){
        .n_w = hy->n_task, .n_hyper = n, .hyper = t->hyper, .T = T,
        .opt = { .kind = HG_GD, .step_hyper = hy->step },
        .ctx = t, .init = os_init_cb, .inner = os_inner_cb, .outer = os_outer_cb,
    };
    rc = hg_problem_check(&t->problem);
    if (rc != AD_OK) os_task_free(t);
    return rc;
}

int os_task_load(os_task *t, const ad_real *x_s, const int *y_s, const ad_real *x_q,
                 const int *y_q, bool record)
{
    memcpy(t->x_s->data, x_s, t->x_s->size * sizeof(ad_real));
    memcpy(t->x_q->data, x_q, t->x_q->size * sizeof(ad_real));
    for (int i = 0; i < t->n_s; i++) t->y_s->data[i] = (ad_real)y_s[i];
    for (int i = 0; i < t->n_q; i++) t->y_q->data[i] = (ad_real)y_q[i];
    if (!t->split) return AD_OK;
    /* h = rep(x; λ_rep) at the current λ_rep, once for the whole task. */
    ad_tape_reset(t->rep_tp);
    t->hs_node = t->hq_node = NULL;
    if (!record) ad_no_record_begin(t->rep_tp);
    ad_value *hs = mdl_cnn_rep_forward(t->rep_tp, &t->hy->net, t->x_s, t->hy->rep);
    ad_value *hq = hs ? mdl_cnn_rep_forward(t->rep_tp, &t->hy->net, t->x_q, t->hy->rep) : NULL;
    if (!record) ad_no_record_end(t->rep_tp);
    if (!hs || !hq) return ad_fail_wrap(AD_EARG, "oneshot: representation");
    memcpy(t->h_s->data, hs->data, hs->size * sizeof(ad_real));
    memcpy(t->h_q->data, hq->data, hq->size * sizeof(ad_real));
    if (record) {
        t->hs_node = hs;
        t->hq_node = hq;
    } else {
        ad_tape_reset(t->rep_tp);
    }
    return AD_OK;
}

size_t os_task_rep_tape_bytes(const os_task *t)
{
    return t->rep_tp ? ad_tape_peak_bytes(t->rep_tp) : 0;
}

int os_task_hypergrad(os_task *t, int K, ad_value **grad, hg_report *report)
{
    const os_hyper *hy = t->hy;
    for (int i = 0; i < hy->n_list; i++) grad[i] = NULL;
    if (t->split && !t->hs_node)
        return ad_fail(AD_EARG, "oneshot: the task was loaded without recording the "
                                "representation; os_task_load(..., record = true) first");
    ad_value *d[OS_MAX_HYPER] = { 0 };
    int rc = hg_krmd(&t->problem, K, d, report);
    if (rc != AD_OK) return rc;
    if (!t->split) { /* the problem's list is hy's list */
        memcpy(grad, d, (size_t)hy->n_list * sizeof *grad);
        return AD_OK;
    }
    /* Centres, ν, γ come straight from the estimator ... */
    int n_mid = hy->n_task + hy->n_layers + 1;
    memcpy(grad + hy->n_rep, d, (size_t)n_mid * sizeof *grad);
    /* ... and λ_rep through the recorded rep forward: dλ_rep = J_sᵀ ∂h_s + J_qᵀ ∂h_q. */
    ad_value *ys[2] = { t->hs_node, t->hq_node }, *gys[2] = { d[t->off_h], d[t->off_h + 1] };
    ad_value *g[MDL_MAX_PARAMS];
    uint64_t mark = ad_tape_mark(t->rep_tp); /* the sweep's results are scratch */
    rc = ad_vjp_many(t->rep_tp, 2, ys, gys, hy->n_rep, hy->rep, g, false);
    for (int i = 0; i < hy->n_rep && rc == AD_OK; i++)
        if (!(grad[i] = ad_value_copy(g[i]))) rc = ad_fail(AD_ENOMEM, "oneshot: out of memory");
    ad_tape_rewind(t->rep_tp, mark);
    ad_value_free(gys[0]);
    ad_value_free(gys[1]);
    if (rc != AD_OK)
        for (int i = 0; i < hy->n_list; i++) {
            ad_value_free(grad[i]);
            grad[i] = NULL;
        }
    return rc;
}

int os_task_evaluate(os_task *t, double *acc, double *loss)
{
    ad_value *w[MDL_MAX_PARAMS] = { 0 };
    int rc = hg_inner_solve(&t->problem, w, NULL); /* T detached steps: ŵ */
    if (rc != AD_OK) return ad_fail_wrap(rc, "oneshot: evaluation");
    ad_tape *tp = ad_tape_new(1);
    if (!tp) rc = ad_fail(AD_ENOMEM, "oneshot: out of memory");
    if (rc == AD_OK) {
        ad_no_record_begin(tp);
        ad_value *h = t->split ? t->h_q : mdl_cnn_rep_forward(tp, &t->hy->net, t->x_q, t->hy->rep);
        ad_value *logits = mdl_cnn_task_forward(tp, &t->hy->net, h, w);
        ad_value *ce = ad_cross_entropy(tp, logits, t->y_q, NULL, AD_REDUCE_MEAN);
        ad_no_record_end(tp);
        if (!ce) {
            rc = ad_fail_wrap(AD_EARG, "oneshot: evaluation");
        } else {
            if (acc) *acc = ex_accuracy(logits->data, t->y_q->data, t->n_q, logits->shape[1]);
            if (loss) *loss = ce->data[0];
            if (!isfinite(ce->data[0]))
                rc = ad_fail(AD_ENONFINITE, "oneshot: the query loss is not finite (the inner "
                                            "loop diverged? step size %g)",
                             (double)t->hy->step->data[0]);
        }
    }
    ad_tape_free(tp);
    for (int j = 0; j < t->hy->n_task; j++) ad_value_free(w[j]);
    return rc;
}

/* ---- a meta-batch ---------------------------------------------------------- */

int os_batch_init(os_batch *mb, const os_hyper *hy, int B, int n_workers, int n_s, int n_q,
                  int T)
{
    memset(mb, 0, sizeof *mb);
    mb->hy = hy;
    mb->B = B;
    mb->n_workers = n_workers;
    mb->numel = os_hyper_numel(hy);
    mb->tk = calloc((size_t)n_workers, sizeof *mb->tk);
    mb->row = calloc((size_t)B, sizeof *mb->row);
    mb->sum = malloc(sizeof *mb->sum * mb->numel);
    int rc = mb->tk && mb->row && mb->sum ? AD_OK : ad_fail(AD_ENOMEM, "out of memory");
    int first, end;
    ex_par_block(B, &first, &end);
    for (int b = first; b < end && rc == AD_OK; b++)
        if (!(mb->row[b] = malloc(sizeof **mb->row * mb->numel)))
            rc = ad_fail(AD_ENOMEM, "out of memory");
    for (int i = 0; i < hy->n_list && rc == AD_OK; i++)
        if (!(mb->mean[i] = ad_tensor_new(hy->list[i]->rank, hy->list[i]->shape)))
            rc = ad_fail(AD_ENOMEM, "out of memory");
    for (int w = 0; w < n_workers && rc == AD_OK; w++)
        rc = os_task_init(&mb->tk[w], hy, n_s, n_q, T, true);
    return rc;
}

void os_batch_free(os_batch *mb)
{
    for (int w = 0; w < mb->n_workers && mb->tk; w++) os_task_free(&mb->tk[w]);
    for (int b = 0; b < mb->B && mb->row; b++) free(mb->row[b]);
    for (int i = 0; i < OS_MAX_HYPER; i++) ad_value_free(mb->mean[i]);
    free(mb->tk);
    free(mb->row);
    free(mb->sum);
    memset(mb, 0, sizeof *mb);
}

int os_batch_task(os_batch *mb, int w, int b, int K, hg_report *report)
{
    ad_value *g[OS_MAX_HYPER];
    int rc = os_task_hypergrad(&mb->tk[w], K, g, report);
    if (rc != AD_OK) return rc;
    os_hyper_pack(mb->hy, g, mb->row[b]);
    for (int i = 0; i < mb->hy->n_list; i++) ad_value_free(g[i]);
    return AD_OK;
}

int os_batch_mean(os_batch *mb)
{
    memset(mb->sum, 0, sizeof *mb->sum * mb->numel);
    int rc = ex_par_fold(mb->sum, mb->numel, mb->row, mb->B, mb->B);
    if (rc == AD_OK) os_hyper_unpack(mb->hy, mb->sum, mb->mean);
    return rc;
}
