/* softmax.c — softmax, log-softmax and cross-entropy over the last axis of a
 * 2-D [N,C] input (N rows, C classes).
 *
 * softmax and log_softmax have fused forwards (they subtract the row maximum
 * so exp never overflows) and backward rules written with ops that reuse the
 * result itself, so they can be differentiated again.  cross_entropy is pure
 * composition: log_softmax, then "pick" the label's entry of every row, then
 * weigh, negate and reduce.  pick's backward is "unpick" (the adjoint: put g
 * back at the label's column of a zero matrix) and unpick's backward is pick,
 * so every order of derivative goes through — in particular the mixed one
 * with respect to the weights that hypercleaning needs. */
#include <math.h>

#include "ad/node.h"
#include "ops.h"

/* Both softmax ops need a 2-D input with at least one class. */
static int check_2d(const char *who, const ad_value *x)
{
    if (x->rank == 2) return AD_OK;
    char s[64];
    return ad_fail(AD_ESHAPE, "%s: expected a 2-D [N,C] input, got %s", who,
                   ad_shape_str(x, s, sizeof s));
}

/* The largest entry of one row of C. */
static double row_max(const ad_real *row, int C)
{
    double m = row[0];
    for (int j = 1; j < C; j++)
        if (row[j] > m) m = row[j];
    return m;
}

/* g summed over the classes, kept as [N,1] so it broadcasts against [N,C]. */
static ad_value *row_sums(ad_tape *tp, ad_value *g)
{
    if (ad_check_inputs(tp, "row_sums", 1, &g) != AD_OK) return NULL;
    return ad_sum_to(tp, g, 2, (int[]){ g->shape[0], 1 });
}

/* ---- softmax ----------------------------------------------------------- */

/* s = softmax(x): gx = s ⊙ (g − Σⱼ gⱼsⱼ), the row sum broadcast back. */
static int softmax_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    ad_value *gs = row_sums(tp, ad_mul(tp, g, out));
    gin[0] = ad_mul(tp, out, ad_sub(tp, g, gs));
    return ad_rule_status(gin[0]);
}

static const ad_op softmax_op = { "softmax", softmax_backward, ad_reads_output };

/* x [N,C] -> out [N,C]; each row exp(x − max) / Σ exp(x − max).  The sum is
 * of the exps in double, before the float build rounds them. */
static void softmax_forward(ad_real *out, const ad_real *x, int N, int C)
{
    for (int i = 0; i < N; i++) {
        const ad_real *xi = x + (size_t)i * C;
        ad_real *oi = out + (size_t)i * C;
        double m = row_max(xi, C), s = 0;
        for (int j = 0; j < C; j++) {
            double e = exp(xi[j] - m);
            oi[j] = (ad_real)e;
            s += e;
        }
        for (int j = 0; j < C; j++) oi[j] = (ad_real)(oi[j] / s);
    }
}

ad_value *ad_softmax(ad_tape *tp, ad_value *x)
{
    if (ad_check_inputs(tp, "softmax", 1, &x) != AD_OK) return NULL;
    if (check_2d("softmax", x) != AD_OK) return NULL;
    ad_value *out = ad_node_new(tp, &softmax_op, 2, x->shape, 1, &x);
    if (out) softmax_forward(out->data, x->data, x->shape[0], x->shape[1]);
    return out;
}

/* ---- log_softmax ------------------------------------------------------- */

/* l = log softmax(x): gx = g − softmax(x) ⊙ Σⱼ gⱼ.  softmax(x) is exp(l),
 * taken from the result so no second max-and-sum pass is needed (and exp of
 * l ≤ 0 cannot overflow). */
static int log_softmax_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    gin[0] = ad_sub(tp, g, ad_mul(tp, ad_exp(tp, out), row_sums(tp, g)));
    return ad_rule_status(gin[0]);
}

static const ad_op log_softmax_op = { "log_softmax", log_softmax_backward, ad_reads_output };

/* x [N,C] -> out [N,C]; each row x − max − log Σ exp(x − max). */
static void log_softmax_forward(ad_real *out, const ad_real *x, int N, int C)
{
    for (int i = 0; i < N; i++) {
        const ad_real *xi = x + (size_t)i * C;
        ad_real *oi = out + (size_t)i * C;
        double m = row_max(xi, C), s = 0;
        for (int j = 0; j < C; j++) s += exp(xi[j] - m);
        double lse = m + log(s);
        for (int j = 0; j < C; j++) oi[j] = (ad_real)(xi[j] - lse);
    }
}

ad_value *ad_log_softmax(ad_tape *tp, ad_value *x)
{
    if (ad_check_inputs(tp, "log_softmax", 1, &x) != AD_OK) return NULL;
    if (check_2d("log_softmax", x) != AD_OK) return NULL;
    ad_value *out = ad_node_new(tp, &log_softmax_op, 2, x->shape, 1, &x);
    if (out) log_softmax_forward(out->data, x->data, x->shape[0], x->shape[1]);
    return out;
}

/* ---- pick / unpick ----------------------------------------------------- */

/* Labels were validated by ad_cross_entropy; a caller who edits a label leaf
 * after building the graph would make the backward index out of range, so
 * the kernels check again (cheaply) rather than trust. */
static size_t label_at(const ad_value *labels, int i, int C)
{
    double y = labels->data[i];
    AD_ASSERT(y >= 0 && y < C && y == floor(y), "a label changed after cross_entropy checked it");
    return (size_t)y;
}

static ad_value *pick(ad_tape *tp, ad_value *x, ad_value *labels);
static ad_value *unpick(ad_tape *tp, ad_value *g, ad_value *labels, int C);

/* Labels are piecewise constant: they get no gradient (gin[1] stays NULL). */
static int pick_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    ad_value *x = out->inputs[0], *labels = out->inputs[1];
    if (!ad_input_needs_grad(out, 0)) return AD_OK;
    gin[0] = unpick(tp, g, labels, x->shape[1]);
    return ad_rule_status(gin[0]);
}

static int unpick_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    if (!ad_input_needs_grad(out, 0)) return AD_OK;
    gin[0] = pick(tp, g, out->inputs[1]);
    return ad_rule_status(gin[0]);
}

/* Both read the labels (input 1) for input 0's gradient, and x only for
 * its shape. */
static bool labels_reads(const ad_value *out, int i)
{
    return i == 1 && ad_input_needs_grad(out, 0);
}

static const ad_op pick_op = { "pick", pick_backward, labels_reads };
static const ad_op unpick_op = { "unpick", unpick_backward, labels_reads };

/* x [N,C], labels [N] -> out [N]; out[i] = x[i, labels[i]]. */
static ad_value *pick(ad_tape *tp, ad_value *x, ad_value *labels)
{
    ad_value *in[2] = { x, labels };
    if (ad_check_inputs(tp, "pick", 2, in) != AD_OK) return NULL;
    int N = x->shape[0], C = x->shape[1];
    ad_value *out = ad_node_new(tp, &pick_op, 1, &N, 2, in);
    if (!out) return NULL;
    for (int i = 0; i < N; i++) out->data[i] = x->data[(size_t)i * C + label_at(labels, i, C)];
    return out;
}

/* g [N], labels [N] -> out [N,C]: zeros, with out[i, labels[i]] = g[i]. */
static ad_value *unpick(ad_tape *tp, ad_value *g, ad_value *labels, int C)
{
    ad_value *in[2] = { g, labels };
    if (ad_check_inputs(tp, "unpick", 2, in) != AD_OK) return NULL;
    int N = g->shape[0];
    ad_value *out = ad_node_new(tp, &unpick_op, 2, (int[]){ N, C }, 2, in);
    if (!out) return NULL;
    for (size_t k = 0; k < out->size; k++) out->data[k] = 0;
    for (int i = 0; i < N; i++) out->data[(size_t)i * C + label_at(labels, i, C)] = g->data[i];
    return out;
}

/* ---- cross_entropy ----------------------------------------------------- */

/* logits [N,C]; labels [N] of whole numbers in 0..C−1; weights [N] or NULL. */
static int check_cross_entropy(const ad_value *logits, const ad_value *labels,
                               const ad_value *weights, ad_reduction reduction)
{
    char s[64], t[64];
    if (check_2d("cross_entropy", logits) != AD_OK) return AD_ESHAPE;
    int N = logits->shape[0], C = logits->shape[1];
    if (labels->rank != 1 || labels->shape[0] != N)
        return ad_fail(AD_ESHAPE, "cross_entropy: labels %s do not match logits %s (want [%d])",
                       ad_shape_str(labels, s, sizeof s), ad_shape_str(logits, t, sizeof t), N);
    if (weights && (weights->rank != 1 || weights->shape[0] != N))
        return ad_fail(AD_ESHAPE, "cross_entropy: weights %s do not match logits %s (want [%d])",
                       ad_shape_str(weights, s, sizeof s), ad_shape_str(logits, t, sizeof t), N);
    for (int i = 0; i < N; i++) {
        double y = labels->data[i];
        if (!(y >= 0 && y < C && y == floor(y))) /* also rejects NaN */
            return ad_fail(AD_EARG, "cross_entropy: label %g at index %d is not a whole "
                           "number in 0..%d", y, i, C - 1);
    }
    if (reduction != AD_REDUCE_MEAN && reduction != AD_REDUCE_SUM)
        return ad_fail(AD_EARG, "cross_entropy: unknown reduction %d", (int)reduction);
    return AD_OK;
}

ad_value *ad_cross_entropy(ad_tape *tp, ad_value *logits, ad_value *labels,
                           ad_value *weights, ad_reduction reduction)
{
    if (ad_check_inputs(tp, "cross_entropy", 2, (ad_value *[]){ logits, labels }) != AD_OK)
        return NULL;
    if (check_cross_entropy(logits, labels, weights, reduction) != AD_OK) return NULL;
    ad_value *picked = pick(tp, ad_log_softmax(tp, logits), labels); /* [N] */
    ad_value *losses = weights ? ad_mul(tp, weights, picked) : picked;
    losses = ad_neg(tp, losses);
    return reduction == AD_REDUCE_MEAN ? ad_mean(tp, losses) : ad_sum(tp, losses);
}
