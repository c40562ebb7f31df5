/* shape.c — ops that move entries without doing arithmetic on them.
 *
 * Each is linear, and its backward rule is its adjoint, written as an op:
 *     reshape  <->  reshape back        transpose  <->  transpose
 *     slice    <->  pad with zeros      gather     <->  scatter-add
 *     concat    ->  two slices
 * Since every adjoint pair is closed (the adjoint of the adjoint is the op
 * again), derivatives of any order go through.  Results never share data
 * with their inputs: every op copies, so a value owns its block.
 *
 * Indices and labels arrive as values holding whole numbers; they are
 * checked here, and they carry no gradient (their derivative is zero almost
 * everywhere), so backward rules leave their slot empty. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ad/node.h"
#include "ops.h"

/* "[2,3]" for a shape given as (rank, shape) rather than as a value. */
static char *dims_str(int rank, const int *shape, char *buf, size_t len)
{
    ad_value v = { .rank = rank };
    for (int i = 0; i < rank; i++) v.shape[i] = shape[i];
    return ad_shape_str(&v, buf, len);
}

/* Entries per row: the product of every extent after the first. */
static size_t row_size(const ad_value *x) { return ad_shape_size(x->rank - 1, x->shape + 1); }

/* ---- reshape ----------------------------------------------------------- */

static int reshape_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    ad_value *x = out->inputs[0];
    gin[0] = ad_reshape(tp, g, x->rank, x->shape);
    return ad_rule_status(gin[0]);
}

static const ad_op reshape_op = { "reshape", reshape_backward, ad_reads_nothing };

/* x [any] -> shape, with the same number of entries in the same order. */
ad_value *ad_reshape(ad_tape *tp, ad_value *x, int rank, const int *shape)
{
    if (ad_check_inputs(tp, "reshape", 1, &x) != AD_OK) return NULL;
    if (ad_check_shape("reshape", rank, shape) != AD_OK) return NULL;
    size_t n = ad_shape_size(rank, shape);
    if (n != x->size) {
        char sx[64], st[64];
        ad_fail(AD_ESHAPE, "reshape: %s has %zu entries but %s has %zu", ad_shape_str(x, sx, 64),
                x->size, dims_str(rank, shape, st, 64), n);
        return NULL;
    }
    ad_value *out = ad_node_new(tp, &reshape_op, rank, shape, 1, &x);
    if (out) memcpy(out->data, x->data, n * sizeof(ad_real));
    return out;
}

/* ---- transpose --------------------------------------------------------- */

static int transpose_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    (void)out;
    gin[0] = ad_transpose(tp, g);
    return ad_rule_status(gin[0]);
}

static const ad_op transpose_op = { "transpose", transpose_backward, ad_reads_nothing };

/* x [m,n] -> [n,m] */
ad_value *ad_transpose(ad_tape *tp, ad_value *x)
{
    if (ad_check_inputs(tp, "transpose", 1, &x) != AD_OK) return NULL;
    if (x->rank != 2) {
        char sx[64];
        ad_fail(AD_ESHAPE, "transpose: x must be 2-D: got %s", ad_shape_str(x, sx, 64));
        return NULL;
    }
    int m = x->shape[0], n = x->shape[1];
    ad_value *out = ad_node_new(tp, &transpose_op, 2, (int[]){ n, m }, 1, &x);
    if (!out) return NULL;
    size_t rows = (size_t)m, cols = (size_t)n;
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < cols; j++) out->data[j * rows + i] = x->data[i * cols + j];
    return out;
}

/* ---- slice and pad along one axis -------------------------------------- */
/* Internal: callers have checked axis, start and count.  slice_rows is the
 * axis-0 case; concat's backward uses any axis.  The nodes are named
 * slice_rows/pad_rows on axis 0 and slice/pad elsewhere, for DOT and errors. */

/* Copies `count` positions along an axis from src (extent src_n there,
 * starting at src_at) into dst (extent dst_n, starting at dst_at).  Both
 * tensors are outer × extent × inner around that axis. */
static void copy_along(const ad_real *src, int src_n, int src_at, ad_real *dst, int dst_n,
                       int dst_at, int count, size_t outer, size_t inner)
{
    for (size_t o = 0; o < outer; o++)
        memcpy(dst + (o * (size_t)dst_n + (size_t)dst_at) * inner,
               src + (o * (size_t)src_n + (size_t)src_at) * inner,
               (size_t)count * inner * sizeof(ad_real));
}

static size_t outer_of(const ad_value *x, int axis) { return ad_shape_size(axis, x->shape); }
static size_t inner_of(const ad_value *x, int axis)
{
    return ad_shape_size(x->rank - axis - 1, x->shape + axis + 1);
}

static ad_value *slice_axis(ad_tape *tp, ad_value *x, int axis, int start, int count);
static ad_value *pad_axis(ad_tape *tp, ad_value *g, int axis, int start, int n);

/* The gradient of a slice is g put back in place among zeros ... */
static int slice_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    ad_value *x = out->inputs[0];
    int axis = out->iattr[0];
    gin[0] = pad_axis(tp, g, axis, out->iattr[1], x->shape[axis]);
    return ad_rule_status(gin[0]);
}

/* ... and the gradient of that padding is the slice again. */
static int pad_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    ad_value *x = out->inputs[0];
    int axis = out->iattr[0];
    gin[0] = slice_axis(tp, g, axis, out->iattr[1], x->shape[axis]);
    return ad_rule_status(gin[0]);
}

static const ad_op slice_rows_op = { "slice_rows", slice_backward, ad_reads_nothing };
static const ad_op slice_op = { "slice", slice_backward, ad_reads_nothing };
static const ad_op pad_rows_op = { "pad_rows", pad_backward, ad_reads_nothing };
static const ad_op pad_op = { "pad", pad_backward, ad_reads_nothing };

/* x [.., n, ..] -> [.., count, ..]: positions start .. start+count-1 of axis */
static ad_value *slice_axis(ad_tape *tp, ad_value *x, int axis, int start, int count)
{
    const ad_op *op = axis == 0 ? &slice_rows_op : &slice_op;
    if (ad_check_inputs(tp, op->name, 1, &x) != AD_OK) return NULL;
    int shape[AD_MAX_RANK];
    memcpy(shape, x->shape, sizeof shape);
    shape[axis] = count;
    ad_value *out = ad_node_new(tp, op, x->rank, shape, 1, &x);
    if (!out) return NULL;
    out->iattr[0] = axis;
    out->iattr[1] = start;
    copy_along(x->data, x->shape[axis], start, out->data, count, 0, count, outer_of(x, axis),
               inner_of(x, axis));
    return out;
}

/* g [.., count, ..] -> [.., n, ..]: zeros, with g at positions start.. */
static ad_value *pad_axis(ad_tape *tp, ad_value *g, int axis, int start, int n)
{
    const ad_op *op = axis == 0 ? &pad_rows_op : &pad_op;
    if (ad_check_inputs(tp, op->name, 1, &g) != AD_OK) return NULL;
    int shape[AD_MAX_RANK];
    memcpy(shape, g->shape, sizeof shape);
    shape[axis] = n;
    ad_value *out = ad_node_new(tp, op, g->rank, shape, 1, &g);
    if (!out) return NULL;
    out->iattr[0] = axis;
    out->iattr[1] = start;
    memset(out->data, 0, out->size * sizeof(ad_real));
    int count = g->shape[axis];
    copy_along(g->data, count, 0, out->data, n, start, count, outer_of(g, axis), inner_of(g, axis));
    return out;
}

/* x [n, ...] -> [count, ...] */
ad_value *ad_slice_rows(ad_tape *tp, ad_value *x, int start, int count)
{
    if (ad_check_inputs(tp, "slice_rows", 1, &x) != AD_OK) return NULL;
    char sx[64];
    if (x->rank < 1) {
        ad_fail(AD_ESHAPE, "slice_rows: x must have rows (rank >= 1): got %s",
                ad_shape_str(x, sx, 64));
        return NULL;
    }
    int n = x->shape[0];
    /* Written so that start + count cannot overflow. */
    if (start < 0 || count < 1 || start >= n || count > n - start) {
        ad_fail(AD_EARG, "slice_rows: %d rows from row %d do not fit in the %d rows of %s", count,
                start, n, ad_shape_str(x, sx, 64));
        return NULL;
    }
    return slice_axis(tp, x, 0, start, count);
}

/* ---- gather and scatter ------------------------------------------------ */

/* AD_OK when idx is a vector of whole numbers in 0 .. limit-1; otherwise a
 * message naming the op `who`, the argument `what` and the first bad entry. */
static int check_indices(const char *who, const char *what, const ad_value *idx, int limit)
{
    char s[64];
    if (ad_value_check(who, idx) != AD_OK) return ad_error_code(); /* released: no data */
    if (idx->rank != 1)
        return ad_fail(AD_ESHAPE, "%s: %s must be a vector: got %s", who, what,
                       ad_shape_str(idx, s, 64));
    for (size_t i = 0; i < idx->size; i++) {
        double v = idx->data[i];
        if (!(v == floor(v))) /* also catches NaN */
            return ad_fail(AD_EARG, "%s: %s[%zu] = %g is not a whole number", who, what, i, v);
        if (v < 0 || v >= limit)
            return ad_fail(AD_EARG, "%s: %s[%zu] = %g is out of range 0..%d", who, what, i, v,
                           limit - 1);
    }
    return AD_OK;
}

static int gather_rows_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    ad_value *x = out->inputs[0], *idx = out->inputs[1];
    if (ad_input_needs_grad(out, 0) && !(gin[0] = ad_scatter_rows(tp, g, idx, x->shape[0])))
        return ad_rule_status(gin[0]);
    return AD_OK; /* gin[1] stays empty: indices have no gradient */
}

static int scatter_rows_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    ad_value *idx = out->inputs[1];
    if (ad_input_needs_grad(out, 0) && !(gin[0] = ad_gather_rows(tp, g, idx)))
        return ad_rule_status(gin[0]);
    return AD_OK;
}

/* Both read the indices (input 1) for input 0's gradient, x only for its shape. */
static bool indices_reads(const ad_value *out, int i)
{
    return i == 1 && ad_input_needs_grad(out, 0);
}

static const ad_op gather_rows_op = { "gather_rows", gather_rows_backward, indices_reads };
static const ad_op scatter_rows_op = { "scatter_rows", scatter_rows_backward, indices_reads };

/* x [n, ...], idx [len] -> [len, ...]; out row i = x row idx[i] */
ad_value *ad_gather_rows(ad_tape *tp, ad_value *x, ad_value *idx)
{
    ad_value *in[2] = { x, idx };
    if (ad_check_inputs(tp, "gather_rows", 2, in) != AD_OK) return NULL;
    if (x->rank < 1) {
        char sx[64];
        ad_fail(AD_ESHAPE, "gather_rows: x must have rows (rank >= 1): got %s",
                ad_shape_str(x, sx, 64));
        return NULL;
    }
    if (check_indices("gather_rows", "idx", idx, x->shape[0]) != AD_OK) return NULL;
    int shape[AD_MAX_RANK];
    memcpy(shape, x->shape, sizeof shape);
    shape[0] = idx->shape[0];
    ad_value *out = ad_node_new(tp, &gather_rows_op, x->rank, shape, 2, in);
    if (!out) return NULL;
    size_t row = row_size(x);
    for (int i = 0; i < shape[0]; i++)
        memcpy(out->data + (size_t)i * row, x->data + (size_t)idx->data[i] * row,
               row * sizeof(ad_real));
    return out;
}

enum { SCATTER_STACK = 256 }; /* double sums kept on the stack (2 KiB), as in ad_sum_to */

/* acc [n_rows·row] = 0, then acc row idx[i] += g row i for i = 0..len−1, in
 * that order. */
static void scatter_rows_kernel(double *restrict acc, size_t size, const ad_real *restrict g,
                                const ad_real *restrict idx, int len, size_t row)
{
    for (size_t k = 0; k < size; k++) acc[k] = 0;
    for (int i = 0; i < len; i++) {
        double *dst = acc + (size_t)idx[i] * row;
        const ad_real *src = g + (size_t)i * row;
        for (size_t k = 0; k < row; k++) dst[k] += src[k];
    }
}

/* g [len, ...], idx [len] -> [n_rows, ...]; out row idx[i] += g row i, so a
 * repeated index collects the sum of its rows, as gather's adjoint must.
 * That sum is a broadcast's gradient: as ad_sum_to, the double build adds
 * into out's own data, the float build into a double scratch array rounded
 * to float once at the end (a float sum of 10⁶ repeats of 0.1 was off by
 * 1 %, and one of 2²⁵ ones stalled at 2²⁴). */
ad_value *ad_scatter_rows(ad_tape *tp, ad_value *g, ad_value *idx, int n_rows)
{
    ad_value *in[2] = { g, idx };
    if (ad_check_inputs(tp, "scatter_rows", 2, in) != AD_OK) return NULL;
    char sg[64], si[64];
    if (g->rank < 1 || idx->rank != 1 || idx->shape[0] != g->shape[0]) {
        ad_fail(AD_ESHAPE, "scatter_rows: g must be [len,...] and idx [len]: got g %s, idx %s",
                ad_shape_str(g, sg, 64), ad_shape_str(idx, si, 64));
        return NULL;
    }
    if (n_rows < 1) {
        ad_fail(AD_EARG, "scatter_rows: n_rows must be positive: got %d", n_rows);
        return NULL;
    }
    if (check_indices("scatter_rows", "idx", idx, n_rows) != AD_OK) return NULL;
    int shape[AD_MAX_RANK];
    memcpy(shape, g->shape, sizeof shape);
    shape[0] = n_rows;
    size_t row = row_size(g);
#if HT_REAL_IS_DOUBLE
    ad_value *out = ad_node_new(tp, &scatter_rows_op, g->rank, shape, 2, in);
    if (!out) return NULL;
    scatter_rows_kernel(out->data, out->size, g->data, idx->data, g->shape[0], row);
#else
    /* Allocated before the node, so that a failure leaves no node behind. */
    size_t size = ad_shape_size(g->rank, shape);
    double small[SCATTER_STACK], *acc = size <= SCATTER_STACK ? small : malloc(size * sizeof *acc);
    if (!acc) {
        ad_fail(AD_ENOMEM, "scatter_rows: out of memory for %zu double sums", size);
        return NULL;
    }
    ad_value *out = ad_node_new(tp, &scatter_rows_op, g->rank, shape, 2, in);
    if (out) {
        scatter_rows_kernel(acc, size, g->data, idx->data, g->shape[0], row);
        for (size_t k = 0; k < size; k++) out->data[k] = (ad_real)acc[k];
    }
    if (acc != small) free(acc);
#endif
    return out;
}

/* ---- concat ------------------------------------------------------------ */

/* Each input gets back its own stretch of the gradient along the axis. */
static int concat_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    ad_value *a = out->inputs[0], *b = out->inputs[1];
    int axis = out->iattr[0], na = a->shape[axis], nb = b->shape[axis];
    if (ad_input_needs_grad(out, 0) && !(gin[0] = slice_axis(tp, g, axis, 0, na)))
        return ad_rule_status(gin[0]);
    if (ad_input_needs_grad(out, 1) && !(gin[1] = slice_axis(tp, g, axis, na, nb)))
        return ad_rule_status(gin[1]);
    return AD_OK;
}

static const ad_op concat_op = { "concat", concat_backward, ad_reads_nothing };

/* Same rank, same extents except along axis (negative counts from the end). */
static int concat_check(const ad_value *a, const ad_value *b, int *axis)
{
    char sa[64], sb[64];
    ad_shape_str(a, sa, 64);
    ad_shape_str(b, sb, 64);
    if (a->rank != b->rank || a->rank < 1)
        return ad_fail(AD_ESHAPE, "concat: operands need the same rank >= 1: got %s and %s", sa, sb);
    int ax = *axis < 0 ? *axis + a->rank : *axis;
    if (ax < 0 || ax >= a->rank)
        return ad_fail(AD_EARG, "concat: axis %d is out of range for %s and %s", *axis, sa, sb);
    for (int i = 0; i < a->rank; i++)
        if (i != ax && a->shape[i] != b->shape[i])
            return ad_fail(AD_ESHAPE, "concat: %s and %s differ off axis %d", sa, sb, ax);
    *axis = ax;
    return AD_OK;
}

/* a [.., na, ..], b [.., nb, ..] -> [.., na+nb, ..] */
ad_value *ad_concat(ad_tape *tp, ad_value *a, ad_value *b, int axis)
{
    ad_value *in[2] = { a, b };
    if (ad_check_inputs(tp, "concat", 2, in) != AD_OK) return NULL;
    if (concat_check(a, b, &axis) != AD_OK) return NULL;
    int shape[AD_MAX_RANK], na = a->shape[axis], nb = b->shape[axis];
    memcpy(shape, a->shape, sizeof shape);
    shape[axis] = na + nb;
    ad_value *out = ad_node_new(tp, &concat_op, a->rank, shape, 2, in);
    if (!out) return NULL;
    out->iattr[0] = axis;
    size_t outer = outer_of(a, axis), inner = inner_of(a, axis);
    copy_along(a->data, na, 0, out->data, na + nb, 0, na, outer, inner);
    copy_along(b->data, nb, 0, out->data, na + nb, na, nb, outer, inner);
    return out;
}

/* ---- one_hot ----------------------------------------------------------- */

/* labels [N] -> [N,n_classes], a constant: labels are discrete, so there is
 * no gradient to pass back to them, whatever they were computed from. */
ad_value *ad_one_hot(ad_tape *tp, ad_value *labels, int n_classes)
{
    if (ad_check_inputs(tp, "one_hot", 1, &labels) != AD_OK) return NULL;
    if (!tp) {
        ad_fail(AD_EARG, "one_hot: tape is NULL");
        return NULL;
    }
    if (n_classes < 1) {
        ad_fail(AD_EARG, "one_hot: n_classes must be positive: got %d", n_classes);
        return NULL;
    }
    if (check_indices("one_hot", "labels", labels, n_classes) != AD_OK) return NULL;
    int n = labels->shape[0];
    ad_value *out = ad_const_fill(tp, 2, (int[]){ n, n_classes }, 0);
    if (!out) return NULL;
    for (size_t i = 0; i < (size_t)n; i++)
        out->data[i * (size_t)n_classes + (size_t)labels->data[i]] = 1;
    return out;
}
