/* select.c — ops that pick: |x|, the larger or smaller of two tensors,
 * clamping into a range, and the position of a maximum.
 *
 * Each is piecewise linear, so each backward rule is the incoming gradient
 * times a constant mask of 0s and 1s (sign(x) for abs) saying which piece
 * was taken.  The mask is a constant — its derivative is zero almost
 * everywhere — so the rules are ops like any other and the second
 * derivative (zero inside each piece) comes out of them.  At a kink the
 * gradient is a subgradient, chosen as PyTorch does: abs'(0) = 0; a tie in
 * maximum/minimum splits the gradient half and half; clamp passes it at the
 * bounds themselves. */
#include <math.h>

#include "broadcast.h"
#include "ops.h"

/* ---- masks: constants, no gradient -------------------------------------- */

/* sign(x) ∈ {−1, 0, 1}; NaN stays NaN. */
ad_value *ad_sign(ad_tape *tp, ad_value *x)
{
    if (ad_check_inputs(tp, "sign", 1, &x) != AD_OK) return NULL;
    ad_value *out = ad_const_fill(tp, x->rank, x->shape, 0);
    if (!out) return NULL;
    for (size_t i = 0; i < x->size; i++) {
        ad_real v = x->data[i];
        out->data[i] = v > 0 ? 1 : v < 0 ? -1 : v; /* v is ±0 or NaN */
    }
    return out;
}

/* Walks a op b over the broadcast layout l: out[n] = f(a, b) for each entry
 * n of the result.  [out shape = l.shape] */
typedef ad_real (*pick_fn)(ad_real a, ad_real b);

static void pick_kernel(ad_real *out, const ad_value *a, const ad_value *b, const bc_layout *l,
                        size_t size, pick_fn f)
{
    int i[AD_MAX_RANK] = { 0 };
    for (size_t n = 0; n < size; n++, bc_next(l, i))
        out[n] = f(a->data[bc_offset(l, 0, i)], b->data[bc_offset(l, 1, i)]);
}

/* The share of the gradient that goes to a (b gets 1 − it). */
static ad_real share_max(ad_real a, ad_real b) { return a > b ? 1 : a == b ? (ad_real)0.5 : 0; }
static ad_real share_min(ad_real a, ad_real b) { return a < b ? 1 : a == b ? (ad_real)0.5 : 0; }
static ad_real share_max_b(ad_real a, ad_real b) { return 1 - share_max(a, b); }
static ad_real share_min_b(ad_real a, ad_real b) { return 1 - share_min(a, b); }

/* A constant mask over the broadcast shape of a and b. */
static ad_value *pair_mask(ad_tape *tp, const char *who, ad_value *a, ad_value *b, pick_fn f)
{
    bc_layout l;
    if (ad_check_inputs(tp, who, 2, (ad_value *[]){ a, b }) != AD_OK ||
        bc_binary(who, a, b, &l) != AD_OK)
        return NULL;
    ad_value *m = ad_const_fill(tp, l.rank, l.shape, 0);
    if (m) pick_kernel(m->data, a, b, &l, m->size, f);
    return m;
}

/* ---- abs ------------------------------------------------------------------ */

static int abs_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    gin[0] = ad_mul(tp, g, ad_sign(tp, out->inputs[0])); /* d|x| = sign(x) dx */
    return ad_rule_status(gin[0]);
}

static const ad_op abs_op = { "abs", abs_backward, ad_reads_inputs };

/* [any shape] -> same shape */
ad_value *ad_abs(ad_tape *tp, ad_value *x)
{
    if (ad_check_inputs(tp, "abs", 1, &x) != AD_OK) return NULL;
    ad_value *out = ad_node_new(tp, &abs_op, x->rank, x->shape, 1, &x);
    if (out)
        for (size_t i = 0; i < x->size; i++) out->data[i] = (ad_real)fabs((double)x->data[i]);
    return out;
}

/* ---- maximum / minimum ---------------------------------------------------- */

/* The mask compares a with b, whichever gradient is wanted: both are read. */
static int extremum_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin);
static const ad_op maximum_op = { "maximum", extremum_backward, ad_reads_inputs };
static const ad_op minimum_op = { "minimum", extremum_backward, ad_reads_inputs };

static int extremum_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    ad_value *a = out->inputs[0], *b = out->inputs[1];
    bool is_max = out->op == &maximum_op;
    for (int k = 0; k < 2; k++) {
        if (!ad_input_needs_grad(out, k)) continue;
        pick_fn f = is_max ? (k ? share_max_b : share_max) : (k ? share_min_b : share_min);
        ad_value *x = out->inputs[k];
        gin[k] = ad_sum_to(tp, ad_mul(tp, g, pair_mask(tp, out->op->name, a, b, f)), x->rank,
                           x->shape);
        if (!gin[k]) return ad_rule_status(gin[k]);
    }
    return AD_OK;
}

/* NaN in either input gives NaN, as in NumPy. */
static ad_real pick_max(ad_real a, ad_real b) { return a > b || isnan((double)a) ? a : b; }
static ad_real pick_min(ad_real a, ad_real b) { return a < b || isnan((double)a) ? a : b; }

/* [a] op [b] broadcast -> [broadcast shape] */
static ad_value *extremum(ad_tape *tp, const ad_op *op, ad_value *a, ad_value *b, pick_fn pick)
{
    ad_value *in[2] = { a, b };
    if (ad_check_inputs(tp, op->name, 2, in) != AD_OK) return NULL; /* before reading shapes */
    bc_layout l;
    if (bc_binary(op->name, a, b, &l) != AD_OK) return NULL;
    ad_value *out = ad_node_new(tp, op, l.rank, l.shape, 2, in);
    if (out) pick_kernel(out->data, a, b, &l, out->size, pick);
    return out;
}

ad_value *ad_maximum(ad_tape *tp, ad_value *a, ad_value *b) { return extremum(tp, &maximum_op, a, b, pick_max); }
ad_value *ad_minimum(ad_tape *tp, ad_value *a, ad_value *b) { return extremum(tp, &minimum_op, a, b, pick_min); }

/* ---- clamp ------------------------------------------------------------------
 * rattr = { lo, hi }. */

/* 1 where lo ≤ x ≤ hi (the gradient passes), else 0. */
static ad_value *inside_mask(ad_tape *tp, ad_value *x, double lo, double hi)
{
    if (ad_check_inputs(tp, "clamp", 1, &x) != AD_OK) return NULL; /* a freed leaf, say */
    ad_value *m = ad_const_fill(tp, x->rank, x->shape, 0);
    if (m)
        for (size_t i = 0; i < x->size; i++)
            m->data[i] = x->data[i] >= lo && x->data[i] <= hi ? 1 : 0;
    return m;
}

static int clamp_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    gin[0] = ad_mul(tp, g, inside_mask(tp, out->inputs[0], out->rattr[0], out->rattr[1]));
    return ad_rule_status(gin[0]);
}

static const ad_op clamp_op = { "clamp", clamp_backward, ad_reads_inputs };

/* [any shape] -> same shape */
ad_value *ad_clamp(ad_tape *tp, ad_value *x, double lo, double hi)
{
    if (ad_check_inputs(tp, "clamp", 1, &x) != AD_OK) return NULL;
    if (isnan(lo) || isnan(hi) || lo > hi) {
        ad_fail(AD_EARG, "clamp: the range [%g, %g] is empty or NaN", lo, hi);
        return NULL;
    }
    ad_value *out = ad_node_new(tp, &clamp_op, x->rank, x->shape, 1, &x);
    if (!out) return NULL;
    out->rattr[0] = lo;
    out->rattr[1] = hi;
    for (size_t i = 0; i < x->size; i++) {
        double v = x->data[i];
        out->data[i] = (ad_real)(v < lo ? lo : v > hi ? hi : v); /* NaN stays NaN */
    }
    return out;
}

/* ---- argmax -------------------------------------------------------------- */

/* x [outer, n, inner] (axis of extent n) -> [outer, inner] of indices: the
 * first maximum, or the first NaN (NumPy's rule). */
static void argmax_kernel(ad_real *out, const ad_real *x, size_t outer, int n, size_t inner)
{
    for (size_t o = 0; o < outer; o++)
        for (size_t i = 0; i < inner; i++) {
            const ad_real *col = x + o * (size_t)n * inner + i;
            int best = 0;
            for (int k = 1; k < n && !isnan((double)col[(size_t)best * inner]); k++) {
                double v = col[(size_t)k * inner];
                if (v > col[(size_t)best * inner] || isnan(v)) best = k;
            }
            out[o * inner + i] = (ad_real)best;
        }
}

ad_value *ad_argmax(ad_tape *tp, ad_value *x, int axis)
{
    if (ad_check_inputs(tp, "argmax", 1, &x) != AD_OK) return NULL;
    if (x->rank < 1) {
        ad_fail(AD_ESHAPE, "argmax: x is a scalar; it needs an axis");
        return NULL;
    }
    if (axis < -x->rank || axis >= x->rank) {
        ad_fail(AD_EARG, "argmax: axis %d is outside %d..%d", axis, -x->rank, x->rank - 1);
        return NULL;
    }
    if (axis < 0) axis += x->rank;
    int shape[AD_MAX_RANK], r = 0;
    size_t outer = 1, inner = 1;
    for (int k = 0; k < x->rank; k++) {
        if (k != axis) shape[r++] = x->shape[k];
        if (k < axis) outer *= (size_t)x->shape[k];
        if (k > axis) inner *= (size_t)x->shape[k];
    }
    ad_value *out = ad_const_fill(tp, r, shape, 0);
    if (out) argmax_kernel(out->data, x->data, outer, x->shape[axis], inner);
    return out;
}
