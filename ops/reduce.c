/* reduce.c — sums and their adjoints.
 *
 * Reductions and broadcasts are each other's backward: the gradient of a sum
 * is the incoming gradient stretched back over what was summed, and the
 * gradient of a stretch is a sum.  Writing both as ops closes the loop, so
 * any order of derivative goes through. */
#include <stdlib.h>

#include "broadcast.h"
#include "ops.h"

/* ---- sum_to / broadcast_to -------------------------------------------- */

static int sum_to_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    ad_value *x = out->inputs[0];
    gin[0] = ad_broadcast_to(tp, g, x->rank, x->shape);
    return ad_rule_status(gin[0]);
}

static int broadcast_to_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    ad_value *x = out->inputs[0];
    gin[0] = ad_sum_to(tp, g, x->rank, x->shape);
    return ad_rule_status(gin[0]);
}

/* Each other's adjoint: x's shape is all either rule reads. */
static const ad_op sum_to_op = { "sum_to", sum_to_backward, ad_reads_nothing };
static const ad_op broadcast_to_op = { "broadcast_to", broadcast_to_backward, ad_reads_nothing };

static bool shape_is(const ad_value *x, int rank, const int *shape)
{
    if (x->rank != rank) return false;
    for (int i = 0; i < rank; i++)
        if (x->shape[i] != shape[i]) return false;
    return true;
}

/* out += x summed by the layout l (x -> out, stride 0 where out has extent 1).
 * A run of trailing axes (bc_run) is either summed into one entry or added to
 * a contiguous stretch of out by a tight loop.  Every out entry still
 * receives x's entries in x's order, so the result is bit for bit that of a
 * walk entry by entry.  out is double in every build: a float build sums
 * float entries in double, as PyTorch does, because a float sum of many
 * terms loses digits that the hypergradients need (issue 14). */
static void sum_to_kernel(double *out, const ad_real *x, size_t size, const bc_layout *l)
{
    size_t step[2];
    int top;
    size_t run = bc_run(l, 1, step, &top);
    int i[AD_MAX_RANK] = { 0 };
    for (size_t n = 0; n < size; n += run, bc_next_run(l, i, top)) {
        double *o = out + bc_offset(l, 0, i);
        const ad_real *xs = x + n;
        if (step[0] == 0) {
            double acc = *o;
            for (size_t j = 0; j < run; j++) acc += xs[j];
            *o = acc;
        } else {
            for (size_t j = 0; j < run; j++) o[j] += xs[j];
        }
    }
}

enum { SUM_TO_STACK = 256 }; /* double sums kept on the stack (2 KiB) */

/* x [..., big] summed into out [..., small]: walk x's padded index and add
 * into out at stride 0 along the summed axes.  The double build adds into
 * out's own data (the same additions as ever, bit for bit); the float build
 * into a double scratch array, rounded to float once at the end. */
ad_value *ad_sum_to(ad_tape *tp, ad_value *x, int rank, const int *shape)
{
    if (ad_check_inputs(tp, "sum_to", 1, &x) != AD_OK || ad_check_shape("sum_to", rank, shape) != AD_OK)
        return NULL;
    if (shape_is(x, rank, shape)) return x; /* nothing to sum: no node */
    /* The target must broadcast to x: lay out target -> x, then walk x. */
    ad_value target = { .rank = rank };
    for (int i = 0; i < rank; i++) target.shape[i] = shape[i];
    bc_layout l;
    if (bc_to("sum_to", &target, x->rank, x->shape, &l) != AD_OK) return NULL;
#if HT_REAL_IS_DOUBLE
    ad_value *out = ad_node_new(tp, &sum_to_op, rank, shape, 1, &x);
    if (!out) return NULL;
    double *acc = out->data;
#else
    /* Statistics and bias gradients (the usual targets) fit on the stack, so
     * the heap sees the same calls as in the double build. */
    size_t size = ad_shape_size(rank, shape);
    double small[SUM_TO_STACK], *acc = size <= SUM_TO_STACK ? small : malloc(size * sizeof *acc);
    if (!acc) {
        ad_fail(AD_ENOMEM, "sum_to: out of memory for %zu double sums", size);
        return NULL;
    }
    ad_value *out = ad_node_new(tp, &sum_to_op, rank, shape, 1, &x);
    if (!out) {
        if (acc != small) free(acc);
        return NULL;
    }
#endif
    for (size_t i = 0; i < out->size; i++) acc[i] = 0;
    sum_to_kernel(acc, x->data, x->size, &l);
#if !HT_REAL_IS_DOUBLE
    for (size_t i = 0; i < out->size; i++) out->data[i] = (ad_real)acc[i];
    if (acc != small) free(acc);
#endif
    return out;
}

ad_value *ad_broadcast_to(ad_tape *tp, ad_value *x, int rank, const int *shape)
{
    if (ad_check_inputs(tp, "broadcast_to", 1, &x) != AD_OK ||
        ad_check_shape("broadcast_to", rank, shape) != AD_OK)
        return NULL;
    if (shape_is(x, rank, shape)) return x;
    bc_layout l;
    if (bc_to("broadcast_to", x, rank, shape, &l) != AD_OK) return NULL;
    ad_value *out = ad_node_new(tp, &broadcast_to_op, rank, shape, 1, &x);
    if (!out) return NULL;
    if (x->size == 1) {
        for (size_t k = 0; k < out->size; k++) out->data[k] = x->data[0];
        return out;
    }
    int i[AD_MAX_RANK] = { 0 };
    for (size_t n = 0; n < out->size; n++, bc_next(&l, i)) out->data[n] = x->data[bc_offset(&l, 0, i)];
    return out;
}

/* ---- whole-tensor reductions ------------------------------------------- */

ad_value *ad_sum(ad_tape *tp, ad_value *x)
{
    if (ad_check_inputs(tp, "sum", 1, &x) != AD_OK) return NULL;
    return ad_sum_to(tp, x, 0, NULL);
}

ad_value *ad_mean(ad_tape *tp, ad_value *x)
{
    if (ad_check_inputs(tp, "mean", 1, &x) != AD_OK) return NULL;
    return ad_scale(tp, ad_sum(tp, x), 1.0 / (double)x->size);
}

/* dot(a, b) = Σ aᵢbᵢ: d/da = g·b, d/db = g·a (g a scalar, broadcast). */
static int dot_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    ad_value *a = out->inputs[0], *b = out->inputs[1];
    if (ad_input_needs_grad(out, 0) && !(gin[0] = ad_mul(tp, g, b))) return ad_rule_status(gin[0]);
    if (ad_input_needs_grad(out, 1) && !(gin[1] = ad_mul(tp, g, a))) return ad_rule_status(gin[1]);
    return AD_OK;
}

static const ad_op dot_op = { "dot", dot_backward, ad_reads_other_factor };

/* Σ a[i]·b[i] over n entries, in double.  One chain of dependent additions
 * waits on the adder's latency (ad_sqnorm of the one-shot network's weights
 * in every inner step: 2.3-4 % of the step), so the sum is kept in
 * DOT_LANES partial sums, entry i going to lane i mod DOT_LANES, a loop the
 * compiler vectorises, added in pairs at the end; the last n mod DOT_LANES
 * entries go to one more.  The same order whatever the threads. */
enum { DOT_LANES = 8 };

static double dot_kernel(const ad_real *restrict a, const ad_real *restrict b, size_t n)
{
    double t[DOT_LANES] = { 0 }, tail = 0;
    size_t i = 0;
    for (; i + DOT_LANES <= n; i += DOT_LANES)
        for (int l = 0; l < DOT_LANES; l++) t[l] += (double)a[i + l] * b[i + l];
    for (; i < n; i++) tail += (double)a[i] * b[i];
    return (((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]))) + tail;
}

ad_value *ad_dot(ad_tape *tp, ad_value *a, ad_value *b)
{
    ad_value *in[2] = { a, b };
    if (ad_check_inputs(tp, "dot", 2, in) != AD_OK) return NULL;
    if (!ad_same_shape(a, b)) {
        char sa[64], sb[64];
        ad_fail(AD_ESHAPE, "dot: shapes differ: %s and %s", ad_shape_str(a, sa, 64),
                ad_shape_str(b, sb, 64));
        return NULL;
    }
    ad_value *out = ad_node_new(tp, &dot_op, 0, NULL, 2, in);
    if (!out) return NULL;
    out->data[0] = (ad_real)dot_kernel(a->data, b->data, a->size);
    return out;
}

ad_value *ad_sqnorm(ad_tape *tp, ad_value *x)
{
    if (ad_check_inputs(tp, "sqnorm", 1, &x) != AD_OK) return NULL;
    return ad_dot(tp, x, x);
}

/* ---- one axis ---------------------------------------------------------- */

/* Splits x's shape around `axis` into outer × n × inner. */
static int axis_split(const char *who, const ad_value *x, int *axis, size_t *outer, int *n, size_t *inner)
{
    int a = *axis < 0 ? *axis + x->rank : *axis;
    if (a < 0 || a >= x->rank) {
        char s[64];
        return ad_fail(AD_EARG, "%s: axis %d is out of range for %s", who, *axis,
                       ad_shape_str(x, s, sizeof s));
    }
    *axis = a;
    *outer = ad_shape_size(a, x->shape);
    *n = x->shape[a];
    *inner = ad_shape_size(x->rank - a - 1, x->shape + a + 1);
    return AD_OK;
}

static ad_value *expand_axis(ad_tape *tp, ad_value *g, int axis, int n);

static int sum_axis_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    ad_value *x = out->inputs[0];
    gin[0] = expand_axis(tp, g, out->iattr[0], x->shape[out->iattr[0]]);
    return ad_rule_status(gin[0]);
}

/* expand_axis inserts axis `axis` of extent n, copying along it. */
static int expand_axis_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    gin[0] = ad_sum_axis(tp, g, out->iattr[0]);
    return ad_rule_status(gin[0]);
}

static const ad_op sum_axis_op = { "sum_axis", sum_axis_backward, ad_reads_nothing };
static const ad_op expand_axis_op = { "expand_axis", expand_axis_backward, ad_reads_nothing };

ad_value *ad_sum_axis(ad_tape *tp, ad_value *x, int axis)
{
    if (ad_check_inputs(tp, "sum_axis", 1, &x) != AD_OK) return NULL;
    size_t outer = 0, inner = 0;
    int n = 0;
    if (axis_split("sum_axis", x, &axis, &outer, &n, &inner) != AD_OK) return NULL;
    int shape[AD_MAX_RANK], r = 0;
    for (int i = 0; i < x->rank; i++)
        if (i != axis) shape[r++] = x->shape[i];
    ad_value *out = ad_node_new(tp, &sum_axis_op, r, shape, 1, &x);
    if (!out) return NULL;
    out->iattr[0] = axis;
    for (size_t o = 0; o < outer; o++)
        for (size_t k = 0; k < inner; k++) {
            double s = 0;
            for (int j = 0; j < n; j++) s += x->data[(o * (size_t)n + (size_t)j) * inner + k];
            out->data[o * inner + k] = (ad_real)s;
        }
    return out;
}

static ad_value *expand_axis(ad_tape *tp, ad_value *g, int axis, int n)
{
    if (ad_check_inputs(tp, "expand_axis", 1, &g) != AD_OK) return NULL;
    int shape[AD_MAX_RANK], r = 0;
    for (int i = 0; i < g->rank + 1; i++) shape[i] = i == axis ? n : g->shape[r++];
    ad_value *out = ad_node_new(tp, &expand_axis_op, g->rank + 1, shape, 1, &g);
    if (!out) return NULL;
    out->iattr[0] = axis;
    size_t outer = ad_shape_size(axis, shape), inner = ad_shape_size(g->rank - axis, g->shape + axis);
    for (size_t o = 0; o < outer; o++)
        for (int j = 0; j < n; j++)
            for (size_t k = 0; k < inner; k++)
                out->data[(o * (size_t)n + (size_t)j) * inner + k] = g->data[o * inner + k];
    return out;
}

ad_value *ad_mean_axis(ad_tape *tp, ad_value *x, int axis)
{
    if (ad_check_inputs(tp, "mean_axis", 1, &x) != AD_OK) return NULL;
    int a = axis < 0 ? axis + x->rank : axis;
    ad_value *s = ad_sum_axis(tp, x, axis);
    return s ? ad_scale(tp, s, 1.0 / x->shape[a]) : NULL;
}
