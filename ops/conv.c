/* conv.c — 2-D convolution (cross-correlation, as in every NN library), NCHW,
 * by im2col + one gemm.
 *
 *   cols = im2col(x)                      [C·kh·kw, N·P·Q]
 *   y    = reshape(w) · cols              [O, N·P·Q]        (ad_matmul)
 *   out  = swap_blocks(y)                 [N, O, P, Q]
 *   out += reshape(b) as [1,O,1,1]
 *
 * Putting the whole batch on the columns axis makes one large gemm (good for
 * BLAS) instead of N small ones; the price is the swap of the first two axes
 * at the end.  im2col and col2im are linear and each other's adjoint, and
 * swap_blocks is its own (with the block counts exchanged), so each is the
 * other's backward rule and every order of derivative goes through; the rest
 * is ordinary ops.
 *
 * Memory: cols holds kh·kw copies of x (zero-padded) and stays on the tape
 * for the weight gradient — the usual im2col trade.
 *
 * Sizes: N images, C channels in, O out, H×W in, kh×kw kernel, P×Q out with
 * P = (H + 2·pad − kh)/stride + 1. */
#include <limits.h>

#include "ad/node.h"
#include "ops.h"

/* The geometry of one convolution; im2col and col2im nodes keep it in
 * iattr in this order, so col2im can rebuild x's shape. */
typedef struct conv_geom {
    int N, C, H, W, kh, kw, stride, pad;
} conv_geom;

static int out_extent(int in, int k, int stride, int pad) { return (in + 2 * pad - k) / stride + 1; }

static void geom_store(int *iattr, const conv_geom *g)
{
    const int v[8] = { g->N, g->C, g->H, g->W, g->kh, g->kw, g->stride, g->pad };
    for (int i = 0; i < 8; i++) iattr[i] = v[i];
}

static conv_geom geom_load(const int *a)
{
    return (conv_geom){ a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7] };
}

/* ---- im2col / col2im --------------------------------------------------- */

static ad_value *im2col(ad_tape *tp, ad_value *x, const conv_geom *g);
static ad_value *col2im(ad_tape *tp, ad_value *cols, const conv_geom *g);

static int im2col_backward(ad_tape *tp, ad_value *out, ad_value *gout, ad_value **gin)
{
    conv_geom g = geom_load(out->iattr);
    gin[0] = col2im(tp, gout, &g);
    return gin[0] ? AD_OK : AD_ENOMEM;
}

static int col2im_backward(ad_tape *tp, ad_value *out, ad_value *gout, ad_value **gin)
{
    conv_geom g = geom_load(out->iattr);
    gin[0] = im2col(tp, gout, &g);
    return gin[0] ? AD_OK : AD_ENOMEM;
}

static const ad_op im2col_op = { "im2col", im2col_backward };
static const ad_op col2im_op = { "col2im", col2im_backward };

/* Both kernels walk the same index space: row r = (c, i, j) of the kernel,
 * column (n, p, q) of the output; the pixel is
 * x[n, c, p·stride − pad + i, q·stride − pad + j], zero when outside.  For a
 * fixed row and (n, p) the pixels inside lie at q in [lo, hi): computing that
 * range once keeps the inner loops free of bounds tests. */
typedef struct col_span {
    int lo, hi; /* q range whose pixel lies inside the image */
    int w0;     /* the pixel column for q = 0 (may be negative) */
} col_span;

static col_span span_of(const conv_geom *g, int Q, int j)
{
    col_span s = { 0, Q, j - g->pad };
    while (s.lo < Q && s.w0 + s.lo * g->stride < 0) s.lo++;
    while (s.hi > s.lo && s.w0 + (s.hi - 1) * g->stride >= g->W) s.hi--;
    return s;
}

/* x [N,C,H,W] -> cols [C·kh·kw, N·P·Q]. */
static void im2col_kernel(ad_real *cols, const ad_real *x, const conv_geom *g, int P, int Q)
{
    for (int c = 0; c < g->C; c++)
        for (int i = 0; i < g->kh; i++)
            for (int j = 0; j < g->kw; j++) {
                col_span s = span_of(g, Q, j);
                for (int n = 0; n < g->N; n++) {
                    const ad_real *plane = x + ((size_t)n * g->C + (size_t)c) * g->H * g->W;
                    for (int p = 0; p < P; p++, cols += Q) {
                        int h = p * g->stride - g->pad + i;
                        for (int q = 0; q < Q; q++) cols[q] = 0;
                        if (h < 0 || h >= g->H) continue;
                        const ad_real *row = plane + (size_t)h * g->W;
                        for (int q = s.lo; q < s.hi; q++) cols[q] = row[s.w0 + q * g->stride];
                    }
                }
            }
}

/* cols [C·kh·kw, N·P·Q] -> x [N,C,H,W] (zeroed by the caller): each cell is
 * added back to the pixel it was read from. */
static void col2im_kernel(ad_real *x, const ad_real *cols, const conv_geom *g, int P, int Q)
{
    for (int c = 0; c < g->C; c++)
        for (int i = 0; i < g->kh; i++)
            for (int j = 0; j < g->kw; j++) {
                col_span s = span_of(g, Q, j);
                for (int n = 0; n < g->N; n++) {
                    ad_real *plane = x + ((size_t)n * g->C + (size_t)c) * g->H * g->W;
                    for (int p = 0; p < P; p++, cols += Q) {
                        int h = p * g->stride - g->pad + i;
                        if (h < 0 || h >= g->H) continue;
                        ad_real *row = plane + (size_t)h * g->W;
                        for (int q = s.lo; q < s.hi; q++) row[s.w0 + q * g->stride] += cols[q];
                    }
                }
            }
}

/* x [N,C,H,W] -> cols [C·kh·kw, N·P·Q] (a copy per kernel offset). */
static ad_value *im2col(ad_tape *tp, ad_value *x, const conv_geom *g)
{
    if (!x) return NULL;
    int P = out_extent(g->H, g->kh, g->stride, g->pad), Q = out_extent(g->W, g->kw, g->stride, g->pad);
    int shape[2] = { g->C * g->kh * g->kw, g->N * P * Q };
    ad_value *out = ad_node_new(tp, &im2col_op, 2, shape, 1, &x);
    if (!out) return NULL;
    geom_store(out->iattr, g);
    im2col_kernel(out->data, x->data, g, P, Q);
    return out;
}

/* cols [C·kh·kw, N·P·Q] -> x [N,C,H,W]: the adjoint, each cell added back to
 * the pixel it was read from (a pixel under several windows gets the sum). */
static ad_value *col2im(ad_tape *tp, ad_value *cols, const conv_geom *g)
{
    if (!cols) return NULL;
    int P = out_extent(g->H, g->kh, g->stride, g->pad), Q = out_extent(g->W, g->kw, g->stride, g->pad);
    ad_value *out = ad_node_new(tp, &col2im_op, 4, (int[]){ g->N, g->C, g->H, g->W }, 1, &cols);
    if (!out) return NULL;
    geom_store(out->iattr, g);
    for (size_t k = 0; k < out->size; k++) out->data[k] = 0;
    col2im_kernel(out->data, cols->data, g, P, Q);
    return out;
}

/* ---- swap_blocks ------------------------------------------------------- */

/* The gemm gives [O, N·P·Q]; the result is [N, O, P, Q].  Viewing the first
 * as [A=O, B=N, inner=P·Q], the second is its first two axes swapped.  The
 * swap is a permutation, so its adjoint is the reverse swap; taking the target
 * shape as an argument saves a reshape (a copy) on each side. */
static ad_value *swap_blocks(ad_tape *tp, ad_value *x, int A, int B, int rank, const int *shape);

static int swap_blocks_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    ad_value *x = out->inputs[0];
    gin[0] = swap_blocks(tp, g, out->iattr[1], out->iattr[0], x->rank, x->shape);
    return gin[0] ? AD_OK : AD_ENOMEM;
}

static const ad_op swap_blocks_op = { "swap_blocks", swap_blocks_backward };

/* x viewed as [A, B, inner] -> out [B, A, inner], given the shape `shape`. */
static ad_value *swap_blocks(ad_tape *tp, ad_value *x, int A, int B, int rank, const int *shape)
{
    if (!x) return NULL;
    size_t inner = x->size / ((size_t)A * (size_t)B);
    AD_ASSERT(inner * A * B == x->size && ad_shape_size(rank, shape) == x->size,
              "swap_blocks: the blocks do not tile the tensor");
    ad_value *out = ad_node_new(tp, &swap_blocks_op, rank, shape, 1, &x);
    if (!out) return NULL;
    out->iattr[0] = A;
    out->iattr[1] = B;
    for (int a = 0; a < A; a++)
        for (int b = 0; b < B; b++) {
            const ad_real *src = x->data + ((size_t)a * B + (size_t)b) * inner;
            ad_real *dst = out->data + ((size_t)b * A + (size_t)a) * inner;
            for (size_t k = 0; k < inner; k++) dst[k] = src[k];
        }
    return out;
}

/* ---- conv2d ------------------------------------------------------------ */

static int check_conv(const ad_value *x, const ad_value *w, const ad_value *b, int stride, int pad)
{
    char sx[64], sw[64], sb[64];
    ad_shape_str(x, sx, sizeof sx);
    ad_shape_str(w, sw, sizeof sw);
    if (x->rank != 4 || w->rank != 4)
        return ad_fail(AD_ESHAPE, "conv2d: want x [N,C,H,W] and w [O,C,kh,kw], got %s and %s", sx, sw);
    if (x->shape[1] != w->shape[1])
        return ad_fail(AD_ESHAPE, "conv2d: channels differ: x %s has %d, w %s has %d", sx,
                       x->shape[1], sw, w->shape[1]);
    if (b && (b->rank != 1 || b->shape[0] != w->shape[0]))
        return ad_fail(AD_ESHAPE, "conv2d: bias %s does not match w %s (want [%d])",
                       ad_shape_str(b, sb, sizeof sb), sw, w->shape[0]);
    if (stride < 1) return ad_fail(AD_EARG, "conv2d: stride %d is less than 1", stride);
    if (pad < 0) return ad_fail(AD_EARG, "conv2d: pad %d is negative", pad);
    /* The geometry is computed in int below (and handed to BLAS as int): check
     * it in 64 bits first, so a huge pad or input cannot wrap. */
    long long hp = x->shape[2] + 2LL * pad, wp = x->shape[3] + 2LL * pad;
    if (w->shape[2] > hp || w->shape[3] > wp)
        return ad_fail(AD_ESHAPE, "conv2d: kernel %s is larger than input %s padded by %d",
                       sw, sx, pad);
    long long P = (hp - w->shape[2]) / stride + 1, Q = (wp - w->shape[3]) / stride + 1;
    long long rows = (long long)w->shape[1] * w->shape[2] * w->shape[3];
    /* Each product is checked before it is formed: N·P·Q could pass 2^63. */
    if (hp > INT_MAX || wp > INT_MAX || rows > INT_MAX || P > INT_MAX / Q ||
        P * Q > INT_MAX / x->shape[0])
        return ad_fail(AD_ESHAPE, "conv2d: x %s, w %s, pad %d: the unfolded input would "
                       "have more than %d rows or columns", sx, sw, pad, INT_MAX);
    return AD_OK;
}

ad_value *ad_conv2d(ad_tape *tp, ad_value *x, ad_value *w, ad_value *b, int stride, int pad)
{
    if (!x || !w) return NULL;
    if (check_conv(x, w, b, stride, pad) != AD_OK) return NULL;
    conv_geom g = { x->shape[0], x->shape[1], x->shape[2], x->shape[3],
                    w->shape[2], w->shape[3], stride, pad };
    int O = w->shape[0], P = out_extent(g.H, g.kh, stride, pad), Q = out_extent(g.W, g.kw, stride, pad);
    ad_value *wmat = ad_reshape(tp, w, 2, (int[]){ O, g.C * g.kh * g.kw });
    ad_value *y = ad_matmul(tp, wmat, im2col(tp, x, &g), false, false); /* [O, N·P·Q] */
    ad_value *out = swap_blocks(tp, y, O, g.N, 4, (int[]){ g.N, O, P, Q });
    if (b) out = ad_add(tp, out, ad_reshape(tp, b, 4, (int[]){ 1, O, 1, 1 }));
    return out;
}
