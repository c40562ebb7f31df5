/*
 * node.h — what an op author needs: the op record, node creation, and the
 * always-on assert.  Users of the library only need ad.h and ops.h.
 *
 * An op is a builder function plus a static `ad_op` record:
 *
 *     static int exp_backward(ad_tape *tp, ad_value *out, ad_value *gout,
 *                             ad_value **gin)
 *     {
 *         gin[0] = ad_mul(tp, gout, out);    // d exp(x) = exp(x) dx
 *         return ad_rule_status(gin[0]);     // AD_OK, or what ad_mul failed with
 *     }
 *     static const ad_op exp_op = { "exp", exp_backward, ad_reads_output };
 *
 *     ad_value *ad_exp(ad_tape *tp, ad_value *x)
 *     {
 *         ad_value *in[1] = { x };          // x->rank is read below: check first
 *         if (ad_check_inputs(tp, "exp", 1, in) != AD_OK) return NULL;
 *         ad_value *out = ad_node_new(tp, &exp_op, x->rank, x->shape, 1, in);
 *         if (out) for (size_t i = 0; i < x->size; i++) out->data[i] = exp(x->data[i]);
 *         return out;
 *     }
 *
 * The backward rule is written with ops, so it is recorded when the sweep is
 * (create_graph) and second derivatives come for free.  A fused backward
 * kernel must therefore itself be an op with its own rule.
 *
 * The third field says what the rule reads: exp's reads its result and not
 * x.  A lean tape (ad.h) gives back, when a step closes, the data no rule of
 * the step reads, so the declaration must cover everything the rule can
 * touch — a datum read in the rule itself, or handed to an op (which reads
 * it, or records it as an input of its own node) — under the inputs'
 * requires_grad as they are at the step's close.  Only shapes and
 * attributes (x->rank, x->shape, out->iattr) are not data: they stay.  A
 * product reads each factor for the other's gradient only:
 *
 *     static bool mul_reads(const ad_value *out, int i)
 *     {   // gin[0] = g·b needs b, gin[1] = g·a needs a; out: never
 *         return i >= 0 && ad_input_needs_grad(out, 1 - i);
 *     }
 *
 * (that is ad_reads_other_factor, below).  Leaving the field out (NULL) is
 * safe: the rule reads every input and its result, so nothing of the node
 * is dropped — memory lost, never correctness.  Declaring too little is a
 * bug: the rule then meets a dropped input, and the sweep fails with "had
 * its data dropped" (tests/test_lean.c runs every op of ops/ through a lean
 * tape, first and second order).
 */
#ifndef HYPERTAPE_AD_NODE_H
#define HYPERTAPE_AD_NODE_H

#include "ad.h"

/* gin[i] receives the gradient for out->inputs[i], with that input's shape,
 * or stays NULL for "no contribution".  Only inputs with requires_grad need
 * one; ad_input_needs_grad(out, i) tells.  Return AD_OK or a status: when an
 * op inside the rule returned NULL, the status it failed with (ad_rule_status). */
typedef int (*ad_backward_fn)(ad_tape *tp, ad_value *out, ad_value *gout,
                              ad_value **gin);

/* What a backward rule reads: whether node `out`'s rule reads the data of
 * its input i (0 <= i < out->n_inputs), or of `out` itself when i is
 * AD_READ_OUTPUT. */
typedef bool (*ad_reads_fn)(const ad_value *out, int i);
enum { AD_READ_OUTPUT = -1 };

struct ad_op {
    const char *name;
    ad_backward_fn backward; /* NULL: ad_grad fails naming the op */
    ad_reads_fn reads;       /* NULL: every input and the result (safe; keeps all) */
};

/* Declarations that many ops share. */
bool ad_reads_nothing(const ad_value *out, int i);  /* shapes only: sums, moves, add */
bool ad_reads_output(const ad_value *out, int i);   /* its result only: exp, σ, √ */
bool ad_reads_inputs(const ad_value *out, int i);   /* every input, not the result */
/* Bilinear in inputs 0 and 1 (a product): each for the other's gradient;
 * any further input (a bias) and the result are not read. */
bool ad_reads_other_factor(const ad_value *out, int i);
/* Whether out's rule reads input i (or, for AD_READ_OUTPUT, out): the op's
 * declaration, or true when it has none; false for a value without a node. */
bool ad_rule_reads(const ad_value *out, int i);

/* What a backward rule returns for a gradient it has just made, `made`:
 * AD_OK when it is there; when it is NULL, the status of the op inside the
 * rule that failed, whose message stands (the sweep puts "grad: the
 * backward rule of 'OP'" in front).  An op that returned NULL without a
 * message — a bug in that op — gives AD_ENOGRAD (no gradient could be made)
 * with a message saying so, rather than a status made up here. */
static inline int ad_rule_status(const ad_value *made)
{
    if (made) return AD_OK;
    int code = ad_error_code();
    if (code != AD_OK) return code;
    return ad_fail(AD_ENOGRAD, "an op returned NULL without a message (a bug in that op)");
}

/* Makes the result of an op in the open step, data uninitialised.
 * If any input is NULL, returns NULL (the earlier message stands, or one is
 * set when none is pending); a released input or freed leaf gives NULL with
 * AD_EARG and a message naming its step and the horizon (ad_check_inputs).
 * Records a node (op, inputs) when the tape is recording and some input
 * wants a gradient; otherwise the result is a constant. */
ad_value *ad_node_new(ad_tape *tp, const ad_op *op, int rank, const int *shape,
                      int n_inputs, ad_value *const *inputs);
/* True when input i of node `out` is on a gradient path. */
bool ad_input_needs_grad(const ad_value *out, int i);
/* The first NULL among inputs makes an op return NULL: this checks that. */
bool ad_any_null(int n, ad_value *const *v);
/* AD_OK when every input may be used; otherwise the status, with a message
 * "who: input i ..." (a NULL input keeps a pending message: it is an earlier
 * failure passed on; a released value or freed leaf is named with its step
 * and the horizon).  ad_node_new runs it; an op that reads an input's data
 * before making its node (indices, labels), makes a constant without a node
 * (ad_const_fill), or hands an input back unchanged runs it first. */
int ad_check_inputs(ad_tape *tp, const char *who, int n, ad_value *const *inputs);

/* Scratch memory for a kernel (im2col columns, say), from the tape's pool:
 * at least `bytes`, 64-byte aligned, uninitialised (NaN bytes in the
 * AddressSanitizer build); NULL with a message when out of memory.  Give it
 * back with the same `bytes` before the op returns (at the latest before
 * ad_tape_free, which checks).  It reuses released blocks of the same size
 * class, and is not counted in ad_tape_bytes (ad_tape_pool_bytes counts it).
 * One thread, like the tape. */
void *ad_scratch_take(ad_tape *tp, size_t bytes);
void ad_scratch_give(ad_tape *tp, void *mem, size_t bytes);

/* An internal invariant, checked in every build.  Not for user input. */
#define AD_ASSERT(cond, hint)                                                 \
    do {                                                                      \
        if (!(cond)) ad_assert_fail(__FILE__, __LINE__, #cond, (hint));       \
    } while (0)
_Noreturn void ad_assert_fail(const char *file, int line, const char *cond,
                              const char *hint);

#endif
