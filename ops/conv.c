/* conv.c — 2-D convolution (cross-correlation, as in every NN library), NCHW,
 * by im2col + gemm over blocks of images.
 *
 * Three ops, each the others' backward:
 *   y  = conv2d(x, w, b)            y = w · col(x) + b          [N,O,P,Q]
 *   dx = conv_data_grad(g, w)       col2im(wᵀ · g)              [N,C,H,W]
 *   dw = conv_weight_grad(x, g)     g · col(x)ᵀ                 [O,C,kh,kw]
 * where col(x) is the im2col unfolding [C·kh·kw, N·P·Q] and g is read as
 * [O, N·P·Q].  All three are bilinear; with ⟨u, col2im(c)⟩ = ⟨col(u), c⟩
 * their vector-Jacobian products are again these ops:
 *   conv2d:           dx = conv_data_grad(g, w), dw = conv_weight_grad(x, g),
 *                     db = Σ_{n,p,q} g
 *   conv_data_grad:   dg = conv2d(u, w),         dw = conv_weight_grad(u, g)
 *   conv_weight_grad: dx = conv_data_grad(g, v), dg = conv2d(x, v)
 * so every order of derivative goes through, and no unfolded copy of x is
 * kept on the tape: each op unfolds what it needs into scratch and frees it
 * (the input x is kept instead, 1/(kh·kw) of the columns).  With stride 1
 * the data gradient is also a plain convolution of g (by w flipped), which
 * is how it is computed where that is faster (data_grad_as_conv).
 *
 * The batch is cut into blocks, one gemm per block: an image alone when its
 * P·Q gives the gemm enough columns (CONV_IMAGE_COLS), else as many images
 * as fit CONV_BLOCK_ENTRIES reals of columns (≈ 4 MB in float): large
 * enough for BLAS, small enough for the unfolded block to stay in cache
 * between im2col and gemm.  A block's gemm gives [O, m·P·Q] (m images); the
 * result wants [m, O, P·Q], so a block of several images is copied out with
 * its first two axes swapped (and the bias added on the way); for one image
 * the two layouts are the same and the gemm works in place.
 *
 * With oneDNN (meson -Ddnnl, float build) the three kernels are oneDNN's
 * convolution primitives instead (conv_dnnl.c) wherever it has one for the
 * geometry; the ops, their nodes and their rules are the same.
 *
 * Sizes: N images, C channels in, O out, H×W in, kh×kw kernel, P×Q out with
 * P = (H + 2·pad − kh)/stride + 1; K = C·kh·kw rows of col(x). */
#include <cblas.h>
#include <limits.h>
#include <stdlib.h>

#include "ad/node.h"
#include "conv_dnnl.h"
#include "hypertape_config.h"
#include "ops.h"

enum { CONV_BLOCK_ENTRIES = 1 << 20, CONV_IMAGE_COLS = 128 };

/* The geometry of one convolution (conv_geom, in conv_dnnl.h); every node
 * keeps it in iattr in this order (the data gradient needs H and W, the
 * weight gradient kh and kw). */

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

/* Derived sizes: P, Q, K = C·kh·kw, PQ = P·Q. */
typedef struct conv_dims {
    int P, Q, K;
    size_t PQ, in_image; /* P·Q, and C·H·W: one image of x */
} conv_dims;

static conv_dims dims_of(const conv_geom *g)
{
    conv_dims d;
    d.P = out_extent(g->H, g->kh, g->stride, g->pad);
    d.Q = out_extent(g->W, g->kw, g->stride, g->pad);
    d.K = g->C * g->kh * g->kw;
    d.PQ = (size_t)d.P * (size_t)d.Q;
    d.in_image = (size_t)g->C * g->H * g->W;
    return d;
}

/* Images per block: one when an image alone gives the gemm CONV_IMAGE_COLS
 * columns (then its result is already in place: no swap, and its columns
 * stay in cache); otherwise as many as keep m·P·Q columns of K rows within
 * the budget, at least one. */
static int block_images(const conv_geom *g, const conv_dims *d)
{
    if (d->PQ >= CONV_IMAGE_COLS) return 1;
    size_t per = (size_t)d->K * d->PQ, m = per ? CONV_BLOCK_ENTRIES / per : 1;
    if (m < 1) m = 1;
    return m < (size_t)g->N ? (int)m : g->N;
}

/* c [m,n] = op(a) · op(b) (+ c when accumulate), row-major. */
static void gemm(bool ta, bool tb, int m, int n, int k, const ad_real *a, int lda,
                 const ad_real *b, int ldb, bool accumulate, ad_real *c)
{
    enum CBLAS_TRANSPOSE opa = ta ? CblasTrans : CblasNoTrans;
    enum CBLAS_TRANSPOSE opb = tb ? CblasTrans : CblasNoTrans;
#if HT_REAL_IS_DOUBLE
    cblas_dgemm(CblasRowMajor, opa, opb, m, n, k, 1.0, a, lda, b, ldb, accumulate ? 1.0 : 0.0, c, n);
#else
    cblas_sgemm(CblasRowMajor, opa, opb, m, n, k, 1.0f, a, lda, b, ldb, accumulate ? 1.0f : 0.0f, c, n);
#endif
}

/* ---- unfolding --------------------------------------------------------- */

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

/* One row of Q cells of the unfolding: the pixels row[w0 + q·stride] for q
 * in the span, zeros outside it (the padding). */
static void unfold_row(ad_real *restrict dst, const ad_real *restrict row, col_span s, int Q,
                       int stride)
{
    for (int q = 0; q < s.lo; q++) dst[q] = 0;
    for (int q = s.lo; q < s.hi; q++) dst[q] = row[s.w0 + q * stride];
    for (int q = s.hi; q < Q; q++) dst[q] = 0;
}

/* The adjoint of unfold_row: each cell in the span is added back. */
static void fold_row(ad_real *restrict row, const ad_real *restrict src, col_span s, int stride)
{
    for (int q = s.lo; q < s.hi; q++) row[s.w0 + q * stride] += src[q];
}

/* With stride 1 and Q = W (same padding) a kernel offset (i, j) unfolds one
 * image's plane into P rows that are the plane itself shifted by
 * (i − pad)·W + (j − pad): one long copy for the rows whose h is inside,
 * then zeros where h or w falls outside.  Row by row, a 3×3 map would cost a
 * call per three entries.  `flat` describes the rows whose h is inside. */
typedef struct flat_rows {
    int p_lo, p_hi; /* rows with h = p − pad + i in 0..H−1 */
    size_t first, n; /* the copied stretch: from cell p_lo·Q + lo, n cells */
} flat_rows;

static bool is_flat(const conv_geom *g, int Q) { return g->stride == 1 && Q == g->W; }

static flat_rows flat_of(const conv_geom *g, int P, int Q, int i, col_span s)
{
    flat_rows f = { g->pad - i, g->H + g->pad - i, 0, 0 };
    if (f.p_lo < 0) f.p_lo = 0;
    if (f.p_hi > P) f.p_hi = P;
    if (f.p_hi < f.p_lo || s.hi <= s.lo) f.p_hi = f.p_lo; /* nothing inside */
    size_t cells = (size_t)(f.p_hi - f.p_lo) * (size_t)Q;
    if (cells > 0) {
        f.first = (size_t)f.p_lo * Q + (size_t)s.lo;
        f.n = cells - (size_t)s.lo - (size_t)(Q - s.hi);
    }
    return f;
}

/* The shift of offset (i, j): cell k of the unfolded plane reads pixel
 * k + shift of the plane (for the cells inside the image). */
static ptrdiff_t flat_shift(const conv_geom *g, int i, col_span s)
{
    return (ptrdiff_t)(i - g->pad) * g->W + s.w0;
}

/* Zeroes the margin cells (q < lo or q ≥ hi) of rows p_lo..p_hi−1 of a
 * [P,Q] plane, column by column: a loop per row would be a memset call per
 * one or two cells. */
static void zero_margins(ad_real *dst, const flat_rows *f, int Q, col_span s)
{
    for (int q = 0; q < s.lo; q++)
        for (int p = f->p_lo; p < f->p_hi; p++) dst[(size_t)p * Q + (size_t)q] = 0;
    for (int q = s.hi; q < Q; q++)
        for (int p = f->p_lo; p < f->p_hi; p++) dst[(size_t)p * Q + (size_t)q] = 0;
}

/* dst [P,Q] <- the plane shifted for offset (i, j), zeros outside; f and
 * shift are that offset's (flat_of, flat_shift), the same for every image
 * and channel. */
static void unfold_flat(ad_real *restrict dst, const ad_real *restrict plane, const flat_rows *f,
                        ptrdiff_t shift, int P, int Q, col_span s)
{
    /* k ≥ first keeps the index k + shift ≥ 0 (and the pointer is formed
     * only when there is something to copy) */
    if (f->n > 0) {
        const ad_real *src = plane + ((ptrdiff_t)f->first + shift);
        for (size_t k = 0; k < f->n; k++) dst[f->first + k] = src[k];
    }
    /* The cells the copy did not cover, or covered with a neighbour row's pixel. */
    for (size_t k = 0; k < (size_t)f->p_lo * Q; k++) dst[k] = 0;
    zero_margins(dst, f, Q, s);
    for (size_t k = (size_t)f->p_hi * Q; k < (size_t)P * Q; k++) dst[k] = 0;
}

/* The adjoint: src [P,Q] added back into the plane.  The cells outside the
 * image are set to zero first (src is the caller's scratch), so that the one
 * long addition adds nothing where they land. */
static void fold_flat(ad_real *restrict plane, ad_real *restrict src, const flat_rows *f,
                      ptrdiff_t shift, int Q, col_span s)
{
    zero_margins(src, f, Q, s);
    if (f->n > 0) {
        ad_real *dst = plane + ((ptrdiff_t)f->first + shift);
        for (size_t k = 0; k < f->n; k++) dst[k] += src[f->first + k];
    }
}

/* Everything about a kernel offset (i, j) that does not depend on the
 * channel or the image, worked out once per call for up to CONV_OFFSETS
 * offsets (a 3×3 map costs about as much to work this out as to copy). */
enum { CONV_OFFSETS = 64 };

typedef struct offset_plan {
    col_span s;
    flat_rows f;     /* when the shifted-copy path applies */
    ptrdiff_t shift;
} offset_plan;

static offset_plan plan_of(const conv_geom *g, int P, int Q, int i, int j, bool flat)
{
    offset_plan pl = { span_of(g, Q, j), { 0, 0, 0, 0 }, 0 };
    if (flat) pl.f = flat_of(g, P, Q, i, pl.s);
    pl.shift = flat_shift(g, i, pl.s);
    return pl;
}

/* The plans of every offset into plans[] when they fit (returns true). */
static bool plan_all(offset_plan *plans, const conv_geom *g, int P, int Q, bool flat)
{
    if (g->kh * g->kw > CONV_OFFSETS) return false;
    for (int i = 0; i < g->kh; i++)
        for (int j = 0; j < g->kw; j++) plans[i * g->kw + j] = plan_of(g, P, Q, i, j, flat);
    return true;
}

/* m images x [m,C,H,W] -> cols [K, m·P·Q]. */
static void im2col_kernel(ad_real *cols, const ad_real *x, int m, const conv_geom *g,
                          const conv_dims *d)
{
    int P = d->P, Q = d->Q;
    bool flat = is_flat(g, Q);
    offset_plan plans[CONV_OFFSETS];
    bool planned = plan_all(plans, g, P, Q, flat);
    for (int c = 0; c < g->C; c++)
        for (int i = 0; i < g->kh; i++)
            for (int j = 0; j < g->kw; j++) {
                offset_plan pl = planned ? plans[i * g->kw + j] : plan_of(g, P, Q, i, j, flat);
                for (int n = 0; n < m; n++) {
                    const ad_real *plane = x + (size_t)n * d->in_image + (size_t)c * g->H * g->W;
                    if (flat) {
                        unfold_flat(cols, plane, &pl.f, pl.shift, P, Q, pl.s);
                        cols += d->PQ;
                        continue;
                    }
                    for (int p = 0; p < P; p++, cols += Q) {
                        int h = p * g->stride - g->pad + i;
                        if (h < 0 || h >= g->H)
                            for (int q = 0; q < Q; q++) cols[q] = 0;
                        else
                            unfold_row(cols, plane + (size_t)h * g->W, pl.s, Q, g->stride);
                    }
                }
            }
}

/* cols [K, m·P·Q] -> m images x [m,C,H,W] (zeroed by the caller): each cell
 * is added back to the pixel it was read from, rows in order, so a pixel
 * under several windows receives its terms in the order (i, j).  cols is
 * scratch: the flat path zeroes its cells that fall outside the image. */
static void col2im_kernel(ad_real *x, ad_real *cols, int m, const conv_geom *g, const conv_dims *d)
{
    int P = d->P, Q = d->Q;
    bool flat = is_flat(g, Q);
    offset_plan plans[CONV_OFFSETS];
    bool planned = plan_all(plans, g, P, Q, flat);
    for (int c = 0; c < g->C; c++)
        for (int i = 0; i < g->kh; i++)
            for (int j = 0; j < g->kw; j++) {
                offset_plan pl = planned ? plans[i * g->kw + j] : plan_of(g, P, Q, i, j, flat);
                for (int n = 0; n < m; n++) {
                    ad_real *plane = x + (size_t)n * d->in_image + (size_t)c * g->H * g->W;
                    if (flat) {
                        fold_flat(plane, cols, &pl.f, pl.shift, Q, pl.s);
                        cols += d->PQ;
                        continue;
                    }
                    for (int p = 0; p < P; p++, cols += Q) {
                        int h = p * g->stride - g->pad + i;
                        if (h >= 0 && h < g->H) fold_row(plane + (size_t)h * g->W, cols, pl.s, g->stride);
                    }
                }
            }
}

/* y [O, m·PQ] -> out [m, O, PQ] (+ b[o] when b). */
static void unswap_block(ad_real *out, const ad_real *y, int m, int O, size_t PQ, const ad_real *b)
{
    for (int n = 0; n < m; n++)
        for (int o = 0; o < O; o++) {
            const ad_real *src = y + ((size_t)o * m + (size_t)n) * PQ;
            ad_real *dst = out + ((size_t)n * O + (size_t)o) * PQ;
            ad_real bo = b ? b[o] : 0;
            if (b)
                for (size_t k = 0; k < PQ; k++) dst[k] = src[k] + bo;
            else
                for (size_t k = 0; k < PQ; k++) dst[k] = src[k];
        }
}

/* g [m, O, PQ] -> y [O, m·PQ], the block's gradient as the gemm reads it. */
static void swap_block(ad_real *y, const ad_real *g, int m, int O, size_t PQ)
{
    for (int n = 0; n < m; n++)
        for (int o = 0; o < O; o++) {
            const ad_real *src = g + ((size_t)n * O + (size_t)o) * PQ;
            ad_real *dst = y + ((size_t)o * m + (size_t)n) * PQ;
            for (size_t k = 0; k < PQ; k++) dst[k] = src[k];
        }
}

/* Scratch for one call: the unfolded block [K, m·PQ] and, for blocks of
 * several images, the block in gemm layout [O, m·PQ]. */
typedef struct conv_scratch {
    ad_real *cols, *y;
    int nb; /* images per block */
} conv_scratch;

static int scratch_get(conv_scratch *s, const conv_geom *g, const conv_dims *d, int O,
                       const char *who)
{
    s->nb = block_images(g, d);
    size_t cols = (size_t)d->K * d->PQ * (size_t)s->nb, y = s->nb > 1 ? (size_t)O * d->PQ * (size_t)s->nb : 0;
    s->cols = malloc(cols * sizeof(ad_real));
    s->y = y ? malloc(y * sizeof(ad_real)) : NULL;
    if (s->cols && (s->y || !y)) return AD_OK;
    free(s->cols);
    free(s->y);
    return ad_fail(AD_ENOMEM, "%s: out of memory for %zu scratch entries", who, cols + y);
}

static void scratch_free(conv_scratch *s)
{
    free(s->cols);
    free(s->y);
}

/* ---- the three kernels ------------------------------------------------- */

/* For a block of one image, [1, O, PQ] is [O, 1·PQ]: the gemm reads and
 * writes the tensors themselves, and the swaps are skipped. */

/* x [N,C,H,W], w [O,K], b [O] or NULL -> out [N,O,P,Q]. */
static void conv_forward_kernel(ad_real *out, const ad_real *x, const ad_real *w, const ad_real *b,
                                int O, const conv_geom *g, const conv_scratch *s)
{
    conv_dims d = dims_of(g);
    for (int n0 = 0; n0 < g->N; n0 += s->nb) {
        int m = g->N - n0 < s->nb ? g->N - n0 : s->nb, cols = m * (int)d.PQ;
        ad_real *ob = out + (size_t)n0 * O * d.PQ;
        im2col_kernel(s->cols, x + (size_t)n0 * d.in_image, m, g, &d);
        if (s->nb > 1) {
            gemm(false, false, O, cols, d.K, w, d.K, s->cols, cols, false, s->y);
            unswap_block(ob, s->y, m, O, d.PQ, b);
            continue;
        }
        if (b) /* the gemm adds onto the bias */
            for (int o = 0; o < O; o++)
                for (size_t k = 0; k < d.PQ; k++) ob[(size_t)o * d.PQ + k] = b[o];
        gemm(false, false, O, cols, d.K, w, d.K, s->cols, cols, b != NULL, ob);
    }
}

/* gy [N,O,P,Q], w [O,K] -> dx [N,C,H,W] = col2im(wᵀ · gy). */
static void conv_data_kernel(ad_real *dx, const ad_real *gy, const ad_real *w, int O,
                             const conv_geom *g, const conv_scratch *s)
{
    conv_dims d = dims_of(g);
    for (size_t k = 0; k < (size_t)g->N * d.in_image; k++) dx[k] = 0;
    for (int n0 = 0; n0 < g->N; n0 += s->nb) {
        int m = g->N - n0 < s->nb ? g->N - n0 : s->nb, cols = m * (int)d.PQ;
        const ad_real *gb = gy + (size_t)n0 * O * d.PQ;
        if (s->nb > 1) {
            swap_block(s->y, gb, m, O, d.PQ);
            gb = s->y;
        }
        gemm(true, false, d.K, cols, O, w, d.K, gb, cols, false, s->cols);
        col2im_kernel(dx + (size_t)n0 * d.in_image, s->cols, m, g, &d);
    }
}

/* x [N,C,H,W], gy [N,O,P,Q] -> dw [O,K] = gy · col(x)ᵀ, the blocks'
 * products added up by the gemm itself (beta = 1 after the first). */
static void conv_weight_kernel(ad_real *dw, const ad_real *x, const ad_real *gy, int O,
                               const conv_geom *g, const conv_scratch *s)
{
    conv_dims d = dims_of(g);
    for (int n0 = 0; n0 < g->N; n0 += s->nb) {
        int m = g->N - n0 < s->nb ? g->N - n0 : s->nb, cols = m * (int)d.PQ;
        const ad_real *gb = gy + (size_t)n0 * O * d.PQ;
        im2col_kernel(s->cols, x + (size_t)n0 * d.in_image, m, g, &d);
        if (s->nb > 1) {
            swap_block(s->y, gb, m, O, d.PQ);
            gb = s->y;
        }
        gemm(false, true, O, d.K, cols, gb, cols, s->cols, cols, n0 > 0, dw);
    }
}

/* With stride 1 and a square kernel padded by at most k − 1, the data
 * gradient is itself a convolution: of gy by w flipped in space with its
 * channel axes exchanged, padded by k − 1 − pad (the "full" correlation).
 * That unfolds gy and multiplies into dx, where the general path multiplies
 * into columns of x's unfolding ([C·kh·kw, ·], zeroed first by the BLAS)
 * and folds them back, adding into every pixel kh·kw times.  It pays when
 * dx has channels enough for a gemm's rows and the map is not tiny
 * (bench-ops, 3×3 kernel, O = 64: 10-13 % faster from 7×7 maps up; 2x
 * slower at C = 1, 20 % slower on 3×3 maps). */
enum { CONV_FLIP_MIN_C = 16, CONV_FLIP_MIN_PQ = 16 };

static bool data_grad_as_conv(const conv_geom *g, const conv_dims *d)
{
    return g->stride == 1 && g->kh == g->kw && g->pad <= g->kh - 1 && g->C >= CONV_FLIP_MIN_C &&
           d->PQ >= CONV_FLIP_MIN_PQ;
}

/* The geometry of that convolution: gy [N,O,P,Q] in, dx [N,C,H,W] out. */
static conv_geom flipped_geom(const conv_geom *g, int O, const conv_dims *d)
{
    return (conv_geom){ g->N, O, d->P, d->Q, g->kh, g->kw, 1, g->kh - 1 - g->pad };
}

/* w [O,C,kh,kw] -> wf [C,O,kh,kw] with wf[c,o,i,j] = w[o,c,kh−1−i,kw−1−j]. */
static void flip_weights(ad_real *wf, const ad_real *w, int O, int C, int kh, int kw)
{
    size_t k2 = (size_t)kh * kw;
    for (int o = 0; o < O; o++)
        for (int c = 0; c < C; c++) {
            const ad_real *src = w + ((size_t)o * C + (size_t)c) * k2;
            ad_real *dst = wf + ((size_t)c * O + (size_t)o) * k2;
            for (size_t t = 0; t < k2; t++) dst[t] = src[k2 - 1 - t];
        }
}

/* ---- the oneDNN path --------------------------------------------------- */

/* The oneDNN primitive for a kernel, or NULL for the im2col kernels: a build
 * without oneDNN, the path turned off on this thread, or a geometry oneDNN
 * has no implementation for.  Runs before the op makes its node: AD_OK, or
 * the status of a failure (nothing on the tape then). */
static int dnnl_pick(conv_dnnl_prim **prim, conv_dnnl_kind kind, const conv_geom *g, int O,
                     bool has_bias, const char *who)
{
    *prim = NULL;
#if HT_DNNL
    if (conv_dnnl_active()) return conv_dnnl_prepare(prim, kind, g, O, has_bias, who);
#else
    (void)kind, (void)g, (void)O, (void)has_bias, (void)who;
#endif
    return AD_OK;
}

/* The op's node [shape], computed by a picked primitive from its inputs'
 * data: in[0] and in[1] (and the bias in[2] when n_in is 3), in
 * conv_dnnl_run's order.  Should oneDNN fail to run (it has made the
 * primitive; only running out of memory is left), the op returns NULL and
 * the node stays in the open step, unread, until the step is released. */
static ad_value *dnnl_node(ad_tape *tp, const ad_op *op, const int *shape, int n_in,
                           ad_value **in, const conv_geom *g, conv_dnnl_prim *prim, const char *who)
{
#if HT_DNNL
    ad_value *out = ad_node_new(tp, op, 4, shape, n_in, in);
    if (!out) return NULL;
    geom_store(out->iattr, g);
    const ad_real *c = n_in > 2 ? in[2]->data : NULL;
    return conv_dnnl_run(prim, out->data, in[0]->data, in[1]->data, c, who) == AD_OK ? out : NULL;
#else
    (void)tp, (void)op, (void)shape, (void)n_in, (void)in, (void)g, (void)prim, (void)who;
    AD_ASSERT(false, "dnnl_node in a build without oneDNN");
    return NULL;
#endif
}

/* ---- the ops ----------------------------------------------------------- */

static ad_value *conv_op(ad_tape *tp, ad_value *x, ad_value *w, ad_value *b, const conv_geom *g);
static ad_value *conv_data_grad(ad_tape *tp, ad_value *gy, ad_value *w, const conv_geom *g);
static ad_value *conv_weight_grad(ad_tape *tp, ad_value *x, ad_value *gy, const conv_geom *g);

/* db = Σ over n, p, q of g [N,O,P,Q], as [O]. */
static ad_value *bias_grad(ad_tape *tp, ad_value *g) { return ad_channel_sum(tp, g); }

static int conv_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    conv_geom ge = geom_load(out->iattr);
    ad_value *x = out->inputs[0], *w = out->inputs[1];
    if (ad_input_needs_grad(out, 0) && !(gin[0] = conv_data_grad(tp, g, w, &ge)))
        return ad_rule_status(gin[0]);
    if (ad_input_needs_grad(out, 1) && !(gin[1] = conv_weight_grad(tp, x, g, &ge)))
        return ad_rule_status(gin[1]);
    if (ad_input_needs_grad(out, 2) && !(gin[2] = bias_grad(tp, g))) return ad_rule_status(gin[2]);
    return AD_OK;
}

/* out = conv_data_grad(gy, w): linear in gy (adjoint: conv2d) and in w. */
static int conv_data_grad_backward(ad_tape *tp, ad_value *out, ad_value *u, ad_value **gin)
{
    conv_geom ge = geom_load(out->iattr);
    ad_value *gy = out->inputs[0], *w = out->inputs[1];
    if (ad_input_needs_grad(out, 0) && !(gin[0] = conv_op(tp, u, w, NULL, &ge)))
        return ad_rule_status(gin[0]);
    if (ad_input_needs_grad(out, 1) && !(gin[1] = conv_weight_grad(tp, u, gy, &ge)))
        return ad_rule_status(gin[1]);
    return AD_OK;
}

/* out = conv_weight_grad(x, gy): linear in x (adjoint: the data gradient)
 * and in gy (adjoint: conv2d). */
static int conv_weight_grad_backward(ad_tape *tp, ad_value *out, ad_value *v, ad_value **gin)
{
    conv_geom ge = geom_load(out->iattr);
    ad_value *x = out->inputs[0], *gy = out->inputs[1];
    if (ad_input_needs_grad(out, 0) && !(gin[0] = conv_data_grad(tp, gy, v, &ge)))
        return ad_rule_status(gin[0]);
    if (ad_input_needs_grad(out, 1) && !(gin[1] = conv_op(tp, x, v, NULL, &ge)))
        return ad_rule_status(gin[1]);
    return AD_OK;
}

/* All three are bilinear in inputs 0 and 1, each read for the other's
 * gradient; conv2d's bias (input 2) is not read (db = Σ g). */
static const ad_op conv2d_op = { "conv2d", conv_backward, ad_reads_other_factor };
static const ad_op conv_data_grad_op = { "conv_data_grad", conv_data_grad_backward, ad_reads_other_factor };
static const ad_op conv_weight_grad_op = { "conv_weight_grad", conv_weight_grad_backward,
                                           ad_reads_other_factor };

/* Each op takes its scratch before it makes its node, so a failure leaves
 * nothing on the tape. */

/* x [N,C,H,W], w [O,C,kh,kw], b [O] or NULL -> [N,O,P,Q] */
static ad_value *conv_op(ad_tape *tp, ad_value *x, ad_value *w, ad_value *b, const conv_geom *g)
{
    ad_value *in[3] = { x, w, b };
    if (ad_check_inputs(tp, "conv2d", b ? 3 : 2, in) != AD_OK) return NULL;
    conv_dims d = dims_of(g);
    int O = w->shape[0];
    conv_dnnl_prim *prim;
    if (dnnl_pick(&prim, CONV_DNNL_FORWARD, g, O, b != NULL, "conv2d") != AD_OK) return NULL;
    if (prim) return dnnl_node(tp, &conv2d_op, (int[]){ g->N, O, d.P, d.Q }, b ? 3 : 2, in, g, prim, "conv2d");
    conv_scratch s;
    if (scratch_get(&s, g, &d, O, "conv2d") != AD_OK) return NULL;
    ad_value *out = ad_node_new(tp, &conv2d_op, 4, (int[]){ g->N, O, d.P, d.Q }, b ? 3 : 2, in);
    if (out) {
        geom_store(out->iattr, g);
        conv_forward_kernel(out->data, x->data, w->data, b ? b->data : NULL, O, g, &s);
    }
    scratch_free(&s);
    return out;
}

/* gy [N,O,P,Q], w [O,C,kh,kw] -> [N,C,H,W] */
static ad_value *conv_data_grad(ad_tape *tp, ad_value *gy, ad_value *w, const conv_geom *g)
{
    ad_value *in[2] = { gy, w };
    if (ad_check_inputs(tp, "conv_data_grad", 2, in) != AD_OK) return NULL;
    conv_dims d = dims_of(g);
    int O = w->shape[0];
    conv_dnnl_prim *prim;
    if (dnnl_pick(&prim, CONV_DNNL_DATA, g, O, false, "conv2d backward") != AD_OK) return NULL;
    if (prim)
        return dnnl_node(tp, &conv_data_grad_op, (int[]){ g->N, g->C, g->H, g->W }, 2, in, g, prim,
                         "conv2d backward");
    bool as_conv = data_grad_as_conv(g, &d);
    conv_geom gf = flipped_geom(g, O, &d);
    conv_dims df = dims_of(&gf);
    conv_scratch s;
    int rc = as_conv ? scratch_get(&s, &gf, &df, g->C, "conv2d backward")
                     : scratch_get(&s, g, &d, O, "conv2d backward");
    if (rc != AD_OK) return NULL;
    ad_real *wf = as_conv ? malloc(sizeof(ad_real) * w->size) : NULL;
    if (as_conv && !wf) {
        scratch_free(&s);
        ad_fail(AD_ENOMEM, "conv2d backward: out of memory for %zu entries", w->size);
        return NULL;
    }
    ad_value *out = ad_node_new(tp, &conv_data_grad_op, 4, (int[]){ g->N, g->C, g->H, g->W }, 2, in);
    if (out) {
        geom_store(out->iattr, g);
        if (as_conv) {
            flip_weights(wf, w->data, O, g->C, g->kh, g->kw);
            conv_forward_kernel(out->data, gy->data, wf, NULL, g->C, &gf, &s);
        } else {
            conv_data_kernel(out->data, gy->data, w->data, O, g, &s);
        }
    }
    free(wf);
    scratch_free(&s);
    return out;
}

/* x [N,C,H,W], gy [N,O,P,Q] -> [O,C,kh,kw] */
static ad_value *conv_weight_grad(ad_tape *tp, ad_value *x, ad_value *gy, const conv_geom *g)
{
    ad_value *in[2] = { x, gy };
    if (ad_check_inputs(tp, "conv_weight_grad", 2, in) != AD_OK) return NULL;
    int O = gy->shape[1];
    conv_dims d = dims_of(g);
    conv_dnnl_prim *prim;
    if (dnnl_pick(&prim, CONV_DNNL_WEIGHT, g, O, false, "conv2d backward") != AD_OK) return NULL;
    if (prim)
        return dnnl_node(tp, &conv_weight_grad_op, (int[]){ O, g->C, g->kh, g->kw }, 2, in, g, prim,
                         "conv2d backward");
    conv_scratch s;
    if (scratch_get(&s, g, &d, O, "conv2d backward") != AD_OK) return NULL;
    ad_value *out = ad_node_new(tp, &conv_weight_grad_op, 4, (int[]){ O, g->C, g->kh, g->kw }, 2, in);
    if (out) {
        geom_store(out->iattr, g);
        conv_weight_kernel(out->data, x->data, gy->data, O, g, &s);
    }
    scratch_free(&s);
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
    ad_value *in[3] = { x, w, b };
    if (ad_check_inputs(tp, "conv2d", b ? 3 : 2, in) != AD_OK) return NULL;
    if (check_conv(x, w, b, stride, pad) != AD_OK) return NULL;
    conv_geom g = { x->shape[0], x->shape[1], x->shape[2], x->shape[3],
                    w->shape[2], w->shape[3], stride, pad };
    return conv_op(tp, x, w, b, &g);
}
