/* pool.c — max pooling over k×k windows moved by `stride`, NCHW, no padding.
 *
 * maxpool(x) is written as pool_select(x, src = x): the window's maximum
 * position is found in the first argument, the value is read from the
 * second.  The position is piecewise constant in x, so the first argument
 * gets no gradient; the op is linear in src, with adjoint
 * pool_scatter(x, g) (g added into zeros at the positions), whose own
 * adjoint is pool_select again.  Two ops, each the other's backward: every
 * order of derivative goes through.
 *
 * Sizes: N images, C channels, H×W in, P×Q out with P = (H − k)/stride + 1. */
#include "ad/node.h"
#include "ops.h"

typedef struct pool_dims {
    int N, C, H, W, P, Q, k, stride;
} pool_dims;

/* The dims of a pool node: in = x's shape, k and stride from iattr. */
static pool_dims dims_of(const ad_value *x, int k, int stride)
{
    pool_dims d = { x->shape[0], x->shape[1], x->shape[2], x->shape[3], 0, 0, k, stride };
    d.P = (d.H - k) / stride + 1;
    d.Q = (d.W - k) / stride + 1;
    return d;
}

/* The offset within one H×W plane of the largest entry of the window whose
 * top-left corner is (h0, w0); the first one wins on ties. */
static size_t window_argmax(const ad_real *plane, const pool_dims *d, int h0, int w0)
{
    size_t best = (size_t)h0 * d->W + (size_t)w0;
    for (int i = 0; i < d->k; i++)
        for (int j = 0; j < d->k; j++) {
            size_t at = (size_t)(h0 + i) * d->W + (size_t)(w0 + j);
            if (plane[at] > plane[best]) best = at;
        }
    return best;
}

static ad_value *pool_select(ad_tape *tp, ad_value *x, ad_value *src, int k, int stride);
static ad_value *pool_scatter(ad_tape *tp, ad_value *x, ad_value *g, int k, int stride);

/* Input 0 only fixes positions: no gradient (gin[0] stays NULL). */
static int pool_select_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    if (!ad_input_needs_grad(out, 1)) return AD_OK;
    gin[1] = pool_scatter(tp, out->inputs[0], g, out->iattr[0], out->iattr[1]);
    return gin[1] ? AD_OK : AD_ENOMEM;
}

static int pool_scatter_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    if (!ad_input_needs_grad(out, 1)) return AD_OK;
    gin[1] = pool_select(tp, out->inputs[0], g, out->iattr[0], out->iattr[1]);
    return gin[1] ? AD_OK : AD_ENOMEM;
}

static const ad_op pool_select_op = { "pool_select", pool_select_backward };
static const ad_op pool_scatter_op = { "pool_scatter", pool_scatter_backward };

/* x, src [N,C,H,W] -> out [N,C,P,Q]: out = src at the argmax of x's window. */
static ad_value *pool_select(ad_tape *tp, ad_value *x, ad_value *src, int k, int stride)
{
    ad_value *in[2] = { x, src };
    if (ad_any_null(2, in)) return NULL;
    AD_ASSERT(ad_same_shape(x, src), "pool_select: positions and values differ in shape");
    pool_dims d = dims_of(x, k, stride);
    ad_value *out = ad_node_new(tp, &pool_select_op, 4, (int[]){ d.N, d.C, d.P, d.Q }, 2, in);
    if (!out) return NULL;
    out->iattr[0] = k;
    out->iattr[1] = stride;
    size_t plane = (size_t)d.H * d.W;
    ad_real *o = out->data;
    for (size_t nc = 0; nc < (size_t)d.N * d.C; nc++) {
        const ad_real *xp = x->data + nc * plane, *sp = src->data + nc * plane;
        for (int p = 0; p < d.P; p++)
            for (int q = 0; q < d.Q; q++) *o++ = sp[window_argmax(xp, &d, p * stride, q * stride)];
    }
    return out;
}

/* x [N,C,H,W], g [N,C,P,Q] -> out [N,C,H,W]: zeros, g added at the argmax of
 * x's windows (added, since overlapping windows may share a maximum). */
static ad_value *pool_scatter(ad_tape *tp, ad_value *x, ad_value *g, int k, int stride)
{
    ad_value *in[2] = { x, g };
    if (ad_any_null(2, in)) return NULL;
    pool_dims d = dims_of(x, k, stride);
    AD_ASSERT(g->rank == 4 && g->size == (size_t)d.N * d.C * d.P * d.Q,
              "pool_scatter: gradient does not match the pooled shape");
    ad_value *out = ad_node_new(tp, &pool_scatter_op, 4, x->shape, 2, in);
    if (!out) return NULL;
    out->iattr[0] = k;
    out->iattr[1] = stride;
    for (size_t i = 0; i < out->size; i++) out->data[i] = 0;
    size_t plane = (size_t)d.H * d.W;
    const ad_real *gp = g->data;
    for (size_t nc = 0; nc < (size_t)d.N * d.C; nc++) {
        const ad_real *xp = x->data + nc * plane;
        ad_real *op = out->data + nc * plane;
        for (int p = 0; p < d.P; p++)
            for (int q = 0; q < d.Q; q++) op[window_argmax(xp, &d, p * stride, q * stride)] += *gp++;
    }
    return out;
}

ad_value *ad_maxpool2d(ad_tape *tp, ad_value *x, int k, int stride)
{
    if (!x) return NULL;
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
    if (k > x->shape[2] || k > x->shape[3]) {
        ad_fail(AD_ESHAPE, "maxpool2d: a %dx%d window does not fit input %s", k, k,
                ad_shape_str(x, s, sizeof s));
        return NULL;
    }
    return pool_select(tp, x, x, k, stride);
}
