/* pool.c — max pooling over k×k windows moved by `stride`, NCHW, no padding.
 *
 * The forward finds each window's maximum once and keeps where it was: idx,
 * a constant [N,C,P,Q] holding the position inside the window (i·k + j for
 * row i, column j; whole numbers, exact in float for k ≤ 4096).  Then
 *     maxpool(x) = pool_select(idx, x)
 * reads x at those positions.  The positions are piecewise constant in x,
 * so idx carries no gradient; pool_select is linear in x, with adjoint
 * pool_scatter(idx, g) (g added into zeros at the positions), whose own
 * adjoint is pool_select again.  Two ops, each the other's backward: every
 * order of derivative goes through, and no backward pass searches a window
 * again.
 *
 * Sizes: N images, C channels, H×W in, P×Q out with P = (H − k)/stride + 1. */
#include <math.h>
#include <stdbool.h>

#include "ad/node.h"
#include "ops.h"
#include "threads.h"

enum { POOL_MAX_K = 4096 }; /* i·k + j < 2^24: exact in float */

typedef struct pool_dims {
    int N, C, H, W, P, Q, k, stride;
} pool_dims;

/* The kernels run over image-channel planes, spread over the threads
 * (threads.h) when they walk at least 2·POOL_GRAIN entries: a plane is one
 * thread's, so its results are the same whoever computes them.  (8192:
 * bench-ops at 2 threads, 5x64x14x14, forward 0.057 -> 0.013 ms against
 * main's one thread, where 32768 kept it on one thread.) */
enum { POOL_GRAIN = 8192 };

/* What a plane loop reads and writes: out, idx, src as each kernel names them. */
typedef struct pool_job {
    ad_real *out, *idx;
    const ad_real *src, *pos;
    const pool_dims *d;
} pool_job;

/* Runs f over the N·C planes of d; `per_plane` is the entries f walks in
 * each (H·W for the forward and the scatter, P·Q for select, which reads
 * one entry per window). */
static void pool_planes(const pool_dims *d, size_t per_plane, ops_range_fn f, pool_job *j)
{
    ops_for((size_t)d->N * d->C, (POOL_GRAIN + per_plane - 1) / per_plane, f, j);
}

/* The geometry of a pool node: k, stride, H, W in iattr[0..3]. */
static pool_dims dims_make(int N, int C, int H, int W, int k, int stride)
{
    return (pool_dims){ N, C, H, W, (H - k) / stride + 1, (W - k) / stride + 1, k, stride };
}

static void dims_store(int *iattr, const pool_dims *d)
{
    iattr[0] = d->k;
    iattr[1] = d->stride;
    iattr[2] = d->H;
    iattr[3] = d->W;
}

/* From idx [N,C,P,Q] and a node's iattr. */
static pool_dims dims_load(const ad_value *idx, const int *iattr)
{
    return dims_make(idx->shape[0], idx->shape[1], iattr[2], iattr[3], iattr[0], iattr[1]);
}

/* Window (p, q)'s first entry within an H×W plane. */
static size_t corner(const pool_dims *d, int p, int q)
{
    return (size_t)(p * d->stride) * (size_t)d->W + (size_t)(q * d->stride);
}

/* Entry r = i·k + j of a window, from the window's corner. */
static size_t in_window(const pool_dims *d, int r)
{
    return (size_t)(r / d->k) * (size_t)d->W + (size_t)(r % d->k);
}

/* For windows of at most POOL_TABLE entries, off[r] = in_window(d, r) for
 * each r, and off is returned: the kernels then look offsets up instead of
 * dividing by k for every window (the division was most of the 2×2
 * scatter's time).  NULL for larger windows. */
enum { POOL_TABLE = 64 };

static const size_t *offsets_table(const pool_dims *d, size_t off[POOL_TABLE])
{
    if (d->k * d->k > POOL_TABLE) return NULL;
    for (int r = 0; r < d->k * d->k; r++) off[r] = in_window(d, r);
    return off;
}

/* The offset within the plane of window (p, q)'s entry r (off: the table,
 * or NULL). */
static size_t plane_offset(const pool_dims *d, const size_t *off, int p, int q, int r)
{
    return corner(d, p, q) + (off ? off[r] : in_window(d, r));
}

static ad_value *pool_select(ad_tape *tp, ad_value *idx, ad_value *src, const pool_dims *d);
static ad_value *pool_scatter(ad_tape *tp, ad_value *idx, ad_value *g, const pool_dims *d);

/* Input 0 (the positions) gets no gradient: gin[0] stays NULL. */
static int pool_select_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    if (!ad_input_needs_grad(out, 1)) return AD_OK;
    pool_dims d = dims_load(out->inputs[0], out->iattr);
    gin[1] = pool_scatter(tp, out->inputs[0], g, &d);
    return ad_rule_status(gin[1]);
}

static int pool_scatter_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    if (!ad_input_needs_grad(out, 1)) return AD_OK;
    pool_dims d = dims_load(out->inputs[0], out->iattr);
    gin[1] = pool_select(tp, out->inputs[0], g, &d);
    return ad_rule_status(gin[1]);
}

/* Both rules read the positions (input 0) for input 1's gradient, and
 * nothing else: the geometry is in the positions' shape and iattr. */
static bool positions_reads(const ad_value *out, int i)
{
    return i == 0 && ad_input_needs_grad(out, 1);
}

static const ad_op pool_select_op = { "pool_select", pool_select_backward, positions_reads };
static const ad_op pool_scatter_op = { "pool_scatter", pool_scatter_backward, positions_reads };

/* planes [lo, hi) of: pos [N,C,P,Q], src [N,C,H,W] -> out [N,C,P,Q] */
static void select_planes(void *ctx, size_t lo, size_t hi)
{
    const pool_job *j = ctx;
    const pool_dims *d = j->d;
    size_t plane = (size_t)d->H * d->W, pq = (size_t)d->P * d->Q, table[POOL_TABLE];
    const size_t *off = offsets_table(d, table);
    const ad_real *r = j->pos + lo * pq;
    ad_real *o = j->out + lo * pq;
    for (size_t nc = lo; nc < hi; nc++) {
        const ad_real *sp = j->src + nc * plane;
        for (int p = 0; p < d->P; p++)
            for (int q = 0; q < d->Q; q++, r++)
                *o++ = sp[plane_offset(d, off, p, q, (int)*r)];
    }
}

/* idx [N,C,P,Q], src [N,C,H,W] -> out [N,C,P,Q]: src at the kept positions. */
static ad_value *pool_select(ad_tape *tp, ad_value *idx, ad_value *src, const pool_dims *d)
{
    ad_value *in[2] = { idx, src };
    if (ad_check_inputs(tp, "pool_select", 2, in) != AD_OK) return NULL;
    AD_ASSERT(src->rank == 4 && src->shape[2] == d->H && src->shape[3] == d->W &&
              src->size == (size_t)d->N * d->C * d->H * d->W, "pool_select: values do not match the positions");
    ad_value *out = ad_node_new(tp, &pool_select_op, 4, idx->shape, 2, in);
    if (!out) return NULL;
    dims_store(out->iattr, d);
    pool_planes(d, (size_t)d->P * d->Q, select_planes,
                &(pool_job){ .out = out->data, .pos = idx->data, .src = src->data, .d = d });
    return out;
}

/* planes [lo, hi) of: pos, g (src) [N,C,P,Q] -> out [N,C,H,W], zeros with
 * g added at the positions.  (Writing each entry once instead, g or 0 by
 * the position, was 6x slower at [5,64,28,28]: a branch per entry that the
 * random positions mispredict; the zero fill is a plain stream.) */
static void scatter_planes(void *ctx, size_t lo, size_t hi)
{
    const pool_job *j = ctx;
    const pool_dims *d = j->d;
    size_t plane = (size_t)d->H * d->W, pq = (size_t)d->P * d->Q;
    for (size_t i = lo * plane; i < hi * plane; i++) j->out[i] = 0;
    size_t table[POOL_TABLE];
    const size_t *off = offsets_table(d, table);
    const ad_real *r = j->pos + lo * pq, *gp = j->src + lo * pq;
    for (size_t nc = lo; nc < hi; nc++) {
        ad_real *op = j->out + nc * plane;
        for (int p = 0; p < d->P; p++)
            for (int q = 0; q < d->Q; q++, r++)
                op[plane_offset(d, off, p, q, (int)*r)] += *gp++;
    }
}

/* Whether v takes the lead from best, the window's maximum so far: when it
 * is larger, or when it is NaN and best is not, so that the first NaN of a
 * window wins (and takes the gradient), as in ad_maximum and ad_argmax; a
 * plain v > best would drop a NaN that is not first in its window. */
static inline bool pool_beats(ad_real v, ad_real best)
{
    return v > best || (isnan(v) && !isnan(best));
}

/* idx, g [N,C,P,Q] -> out [N,C,H,W]: zeros, g added at the kept positions
 * (added, since overlapping windows may share a maximum). */
static ad_value *pool_scatter(ad_tape *tp, ad_value *idx, ad_value *g, const pool_dims *d)
{
    ad_value *in[2] = { idx, g };
    if (ad_check_inputs(tp, "pool_scatter", 2, in) != AD_OK) return NULL;
    AD_ASSERT(ad_same_shape(idx, g), "pool_scatter: gradient does not match the pooled shape");
    ad_value *out = ad_node_new(tp, &pool_scatter_op, 4, (int[]){ d->N, d->C, d->H, d->W }, 2, in);
    if (!out) return NULL;
    dims_store(out->iattr, d);
    pool_planes(d, (size_t)d->H * d->W, scatter_planes,
                &(pool_job){ .out = out->data, .pos = idx->data, .src = g->data, .d = d });
    return out;
}

/* maxpool_planes for 2×2 windows, stride 2 (the one-shot network's): the
 * same comparisons in the same order (the first maximum wins, or the first
 * NaN), without the general loop's window walk (the forward took 6.8 % of
 * the one-shot step).  pool_beats still compiles to branch-free vector code
 * here; it costs the forward 5–35 % against a plain v > best (bench-ops,
 * release builds), less than what was tried instead: a NaN test folded into
 * this loop stopped it vectorising in double (5× slower), a separate NaN
 * pass over the plane did not vectorise there either (1.8×). */
static void maxpool_2x2(const pool_job *job, size_t lo, size_t hi)
{
    const pool_dims *d = job->d;
    size_t plane = (size_t)d->H * d->W, pq = (size_t)d->P * d->Q;
    for (size_t nc = lo; nc < hi; nc++) {
        ad_real *out = job->out + nc * pq, *idx = job->idx ? job->idx + nc * pq : NULL;
        for (int p = 0; p < d->P; p++) {
            const ad_real *r0 = job->src + nc * plane + (size_t)(2 * p) * d->W, *r1 = r0 + d->W;
            for (int q = 0; q < d->Q; q++) {
                ad_real v[4] = { r0[2 * q], r0[2 * q + 1], r1[2 * q], r1[2 * q + 1] };
                ad_real best = v[0];
                int at = 0;
                for (int e = 1; e < 4; e++)
                    if (pool_beats(v[e], best)) best = v[e], at = e;
                out[(size_t)p * d->Q + q] = best;
                if (idx) idx[(size_t)p * d->Q + q] = (ad_real)at;
            }
        }
    }
}

/* planes [lo, hi) of: x (src) [N,C,H,W] -> out [N,C,P,Q], the windows'
 * maxima, and idx (or NULL) their positions i·k + j; the first one wins on
 * ties, the first NaN over everything (pool_beats). */
static void maxpool_planes(void *ctx, size_t lo, size_t hi)
{
    const pool_job *job = ctx;
    const pool_dims *d = job->d;
    if (d->k == 2 && d->stride == 2) {
        maxpool_2x2(job, lo, hi);
        return;
    }
    size_t plane = (size_t)d->H * d->W, pq = (size_t)d->P * d->Q;
    ad_real *out = job->out + lo * pq, *idx = job->idx ? job->idx + lo * pq : NULL;
    for (size_t nc = lo; nc < hi; nc++) {
        const ad_real *xp = job->src + nc * plane;
        for (int p = 0; p < d->P; p++)
            for (int q = 0; q < d->Q; q++) {
                const ad_real *corner = xp + (size_t)(p * d->stride) * d->W + (size_t)(q * d->stride);
                ad_real best = corner[0];
                int at = 0;
                for (int i = 0; i < d->k; i++)
                    for (int j = 0; j < d->k; j++)
                        if (pool_beats(corner[(size_t)i * d->W + (size_t)j], best)) {
                            best = corner[(size_t)i * d->W + (size_t)j];
                            at = i * d->k + j;
                        }
                *out++ = best;
                if (idx) *idx++ = (ad_real)at;
            }
    }
}

ad_value *ad_maxpool2d(ad_tape *tp, ad_value *x, int k, int stride)
{
    if (ad_check_inputs(tp, "maxpool2d", 1, &x) != AD_OK) return NULL;
    char s[64];
    if (x->rank != 4) {
        ad_fail(AD_ESHAPE, "maxpool2d: expected a 4-D [N,C,H,W] input, got %s",
                ad_shape_str(x, s, sizeof s));
        return NULL;
    }
    if (k < 1 || stride < 1) {
        ad_fail(AD_EARG, "maxpool2d: window %d and stride %d must both be at least 1", k, stride);
        return NULL;
    }
    if (k > POOL_MAX_K) {
        ad_fail(AD_EARG, "maxpool2d: window %d is larger than %d", k, POOL_MAX_K);
        return NULL;
    }
    if (k > x->shape[2] || k > x->shape[3]) {
        ad_fail(AD_ESHAPE, "maxpool2d: a %dx%d window does not fit input %s", k, k,
                ad_shape_str(x, s, sizeof s));
        return NULL;
    }
    if (!tp) {
        ad_fail(AD_EARG, "maxpool2d: tape is NULL");
        return NULL;
    }
    pool_dims d = dims_make(x->shape[0], x->shape[1], x->shape[2], x->shape[3], k, stride);
    int shape[4] = { d.N, d.C, d.P, d.Q };
    /* Without a gradient to route, the positions are not kept. */
    if (!(ad_tape_recording(tp) && x->requires_grad)) {
        ad_value *out = ad_node_new(tp, &pool_select_op, 4, shape, 1, &x);
        if (out)
            pool_planes(&d, (size_t)d.H * d.W, maxpool_planes,
                        &(pool_job){ .out = out->data, .src = x->data, .d = &d });
        return out;
    }
    ad_value *idx = ad_node_new(tp, &pool_select_op, 4, shape, 0, NULL); /* a constant */
    if (!idx) return NULL;
    ad_value *in[2] = { idx, x };
    ad_value *out = ad_node_new(tp, &pool_select_op, 4, shape, 2, in);
    if (!out) return NULL;
    dims_store(out->iattr, &d);
    pool_planes(&d, (size_t)d.H * d.W, maxpool_planes,
                &(pool_job){ .out = out->data, .idx = idx->data, .src = x->data, .d = &d });
    return out;
}
