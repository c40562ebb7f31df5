/*
 * ops.h — the operations.  Each computes its result at once and, on a
 * recording tape, leaves a node whose backward rule is itself written with
 * these ops, so every gradient can be differentiated again.
 *
 * Conventions, shared by every op:
 *   - the first argument is the tape; results belong to its open step;
 *   - a NULL input makes the op return NULL and keep the earlier message
 *     (with none pending, AD_EARG and "op: input 0 is NULL"), so a whole
 *     expression can be built and checked once:
 *         ad_value *loss = ad_mean(tp, ad_square(tp, ad_sub(tp, pred, y)));
 *         if (!loss) { fprintf(stderr, "%s\n", ad_error()); ... }
 *   - bad shapes or arguments return NULL with a message naming the op and
 *     the shapes, e.g. "matmul: inner dimensions differ: [5000,785] x [10,785]";
 *   - every input must be a caller-owned tensor or a value of the same tape:
 *     one owned by another tape is refused (AD_EARG), since a node holds its
 *     inputs until its step is released; ad_detach or ad_leaf copy across;
 *   - an op that would change nothing (ad_sum_to or ad_broadcast_to to x's
 *     own shape, ad_sum of a scalar) returns x itself: no node, no copy, so
 *     the result is owned by whoever owns x;
 *   - labels and indices are passed as values holding whole numbers;
 *   - an optional input (weights, bias, gamma, beta) given as NULL means
 *     "absent", so the op cannot tell it from a failed expression: check
 *     the expression that computes an optional input before passing it.
 *
 * Files: elementwise.c, reduce.c, linalg.c, shape.c, select.c, softmax.c,
 * conv.c, pool.c, batchnorm.c — forward and backward side by side in each;
 * helpers they share: broadcast.c (index walks), threads.c (the OpenMP
 * cap), conv_dnnl.c (conv2d through oneDNN in a float build that has it).
 */
#ifndef HYPERTAPE_OPS_H
#define HYPERTAPE_OPS_H

#include "ad/ad.h"

/* ---- elementwise.c ------------------------------------------------------
 * Binary ops broadcast NumPy-style: shapes are aligned on the right and an
 * extent of 1 stretches; [3,4] + [4] and [3,4] * [3,1] and x * scalar work. */
ad_value *ad_add(ad_tape *tp, ad_value *a, ad_value *b);
ad_value *ad_sub(ad_tape *tp, ad_value *a, ad_value *b);
ad_value *ad_mul(ad_tape *tp, ad_value *a, ad_value *b);
ad_value *ad_div(ad_tape *tp, ad_value *a, ad_value *b);
ad_value *ad_neg(ad_tape *tp, ad_value *x);
ad_value *ad_scale(ad_tape *tp, ad_value *x, double c);      /* c·x */
ad_value *ad_add_scalar(ad_tape *tp, ad_value *x, double c); /* x + c */
ad_value *ad_exp(ad_tape *tp, ad_value *x);
ad_value *ad_log(ad_tape *tp, ad_value *x);
ad_value *ad_sin(ad_tape *tp, ad_value *x);
ad_value *ad_cos(ad_tape *tp, ad_value *x);
ad_value *ad_tanh(ad_tape *tp, ad_value *x);
ad_value *ad_sigmoid(ad_tape *tp, ad_value *x);
ad_value *ad_softplus(ad_tape *tp, ad_value *x); /* log(1 + eˣ), stable */
ad_value *ad_relu(ad_tape *tp, ad_value *x); /* max(x, 0), +0 for −0; NaN gives NaN */
ad_value *ad_square(ad_tape *tp, ad_value *x);
ad_value *ad_sqrt(ad_tape *tp, ad_value *x);
ad_value *ad_pow(ad_tape *tp, ad_value *x, double p); /* xᵖ, p constant */
/* 1 where x > 0, else 0: a constant (its derivative is zero almost
 * everywhere), used by relu's backward rule. */
ad_value *ad_step(ad_tape *tp, ad_value *x);

/* ---- reduce.c ---------------------------------------------------------- */
ad_value *ad_sum(ad_tape *tp, ad_value *x);  /* all entries -> scalar */
ad_value *ad_mean(ad_tape *tp, ad_value *x);
/* Over one axis (negative counts from the end); the axis is removed. */
ad_value *ad_sum_axis(ad_tape *tp, ad_value *x, int axis);
ad_value *ad_mean_axis(ad_tape *tp, ad_value *x, int axis);
ad_value *ad_dot(ad_tape *tp, ad_value *a, ad_value *b); /* Σ aᵢbᵢ, same shape */
ad_value *ad_sqnorm(ad_tape *tp, ad_value *x);           /* Σ xᵢ² */
/* Sums x down to `shape` (the adjoint of ad_broadcast_to): axes where the
 * target has extent 1, and leading axes it lacks, are summed. */
ad_value *ad_sum_to(ad_tape *tp, ad_value *x, int rank, const int *shape);
/* Stretches x to `shape` by the broadcasting rule above. */
ad_value *ad_broadcast_to(ad_tape *tp, ad_value *x, int rank, const int *shape);

/* ---- linalg.c (OpenBLAS) ----------------------------------------------- */
/* op(a) · op(b) for 2-D a, b; op transposes when the flag is set. */
ad_value *ad_matmul(ad_tape *tp, ad_value *a, ad_value *b, bool trans_a, bool trans_b);
/* x·Wᵀ + b: x [N,in], W [out,in], b [out] or NULL -> [N,out]. */
ad_value *ad_linear(ad_tape *tp, ad_value *x, ad_value *w, ad_value *b);
/* a bᵀ for vectors a [m], b [n] -> [m,n]. */
ad_value *ad_outer(ad_tape *tp, ad_value *a, ad_value *b);

/* ---- shape.c ----------------------------------------------------------- */
ad_value *ad_reshape(ad_tape *tp, ad_value *x, int rank, const int *shape);
ad_value *ad_transpose(ad_tape *tp, ad_value *x); /* 2-D */
/* Rows start .. start+count-1 of x (axis 0). */
ad_value *ad_slice_rows(ad_tape *tp, ad_value *x, int start, int count);
/* Rows idx[0], idx[1], … of x; idx is a rank-1 value of whole numbers. */
ad_value *ad_gather_rows(ad_tape *tp, ad_value *x, ad_value *idx);
/* The adjoint of gather: a [n_rows, …] tensor of zeros with row idx[i]
 * incremented by g's row i (the sums accumulate in double and round once,
 * in the float build too). */
ad_value *ad_scatter_rows(ad_tape *tp, ad_value *g, ad_value *idx, int n_rows);
/* a and b joined along `axis`; the other extents must agree. */
ad_value *ad_concat(ad_tape *tp, ad_value *a, ad_value *b, int axis);
/* [N] whole-number labels -> [N,n_classes] constant of zeros and ones. */
ad_value *ad_one_hot(ad_tape *tp, ad_value *labels, int n_classes);

/* ---- softmax.c (over the last axis of a 2-D [N,C] input) --------------- */
ad_value *ad_softmax(ad_tape *tp, ad_value *x);
ad_value *ad_log_softmax(ad_tape *tp, ad_value *x);
typedef enum { AD_REDUCE_MEAN, AD_REDUCE_SUM } ad_reduction;
/* −Σᵢ wᵢ log softmax(logits)ᵢ,yᵢ, then mean (÷N) or sum.  labels [N] whole
 * numbers in 0..C−1; weights [N] or NULL (all ones); both may be values
 * with gradients (weights usually are: that is hypercleaning). */
ad_value *ad_cross_entropy(ad_tape *tp, ad_value *logits, ad_value *labels,
                           ad_value *weights, ad_reduction reduction);

/* ---- conv.c (NCHW) ----------------------------------------------------- */
/* x [N,C,H,W], w [O,C,kh,kw], b [O] or NULL -> [N,O,H',W'] with
 * H' = (H + 2·pad − kh)/stride + 1.  im2col + gemm (oneDNN's kernels in
 * a float build with -Ddnnl, conv_dnnl.c). */
ad_value *ad_conv2d(ad_tape *tp, ad_value *x, ad_value *w, ad_value *b, int stride, int pad);

/* ---- pool.c ------------------------------------------------------------ */
/* Max over k×k windows moved by `stride`: [N,C,H,W] -> [N,C,H',W'].  The
 * gradient goes to the entry that gives the maximum: the first in the window
 * (row by row) on a tie; a window holding NaN gives NaN, and its first NaN
 * takes the gradient (as ad_maximum and ad_argmax, and PyTorch's
 * max_pool2d). */
ad_value *ad_maxpool2d(ad_tape *tp, ad_value *x, int k, int stride);

/* ---- batchnorm.c (training mode) --------------------------------------- */
/* Normalises each channel with the batch's own mean and variance, then
 * scales and shifts: x [N,C] or [N,C,H,W]; gamma, beta [C] (either NULL
 * for 1 and 0).  Refuses (AD_ESHAPE) an x with one value per channel
 * (N·H·W = 1), which would give β whatever x is.  eps ≥ 0 is added to the
 * variance: with eps = 0 a constant channel (variance 0) gives NaN. */
ad_value *ad_batchnorm(ad_tape *tp, ad_value *x, ad_value *gamma, ad_value *beta, double eps);
/* Σ over every axis but axis 1: x [N,C] or [N,C,H,W] (any rank ≥ 2) -> [C]
 * (what ad_sum_to to [1,C,1,1] and a reshape give, summed faster): the
 * gradient of a per-channel bias. */
ad_value *ad_channel_sum(ad_tape *tp, ad_value *x);

/* ---- select.c: ops that pick -------------------------------------------
 * Piecewise linear; each backward rule is the gradient times a constant
 * mask of the piece taken.  At a kink the gradient is PyTorch's subgradient:
 * abs'(0) = 0, a tie in maximum/minimum gives each input half, clamp passes
 * the gradient at its bounds.  NaN inputs give NaN results. */
ad_value *ad_abs(ad_tape *tp, ad_value *x);
/* −1, 0 or 1 (NaN for NaN): a constant, like ad_step. */
ad_value *ad_sign(ad_tape *tp, ad_value *x);
/* The larger / smaller of a and b, entry by entry, broadcasting. */
ad_value *ad_maximum(ad_tape *tp, ad_value *a, ad_value *b);
ad_value *ad_minimum(ad_tape *tp, ad_value *a, ad_value *b);
/* min(max(x, lo), hi); lo ≤ hi, either may be ±INFINITY (one-sided). */
ad_value *ad_clamp(ad_tape *tp, ad_value *x, double lo, double hi);
/* The index of the largest entry along `axis` (negative counts from the
 * end), which is removed: [N,C] with axis 1 -> [N].  Ties give the first,
 * and a NaN counts as largest (NumPy's rule).  A constant of whole numbers:
 * it has no gradient. */
ad_value *ad_argmax(ad_tape *tp, ad_value *x, int axis);

#endif
