/*
 * ad.h — values, the tape, and the reverse sweep.
 *
 * hypertape is define-by-run: every op computes its result at once and, when
 * a tape is recording and an input needs a gradient, also leaves a node that
 * remembers the op and its inputs.  ad_grad() walks those nodes backwards.
 *
 *     ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
 *     ad_value *x = ad_param_scalar(3.0);          // a leaf: gradient wanted
 *     ad_value *y = ad_mul(tp, x, ad_sin(tp, x));  // y = x sin x   (ops/ops.h)
 *     ad_value *dy;
 *     if (ad_grad(tp, y, 1, &x, &dy, true) != AD_OK)   // dy = sin x + x cos x,
 *         fprintf(stderr, "%s\n", ad_error());          // itself on the tape
 *     ad_value *d2y;
 *     ad_grad(tp, dy, 1, &x, &d2y, false);            // 2 cos x − x sin x
 *     ad_tape_free(tp);  ad_value_free(x);
 *
 * Ownership, the one rule: a value made by an op belongs to the tape step that
 * was open when it was made (see ad_tape_step); leaves made with ad_tensor_* /
 * ad_param_* belong to the caller, who frees them with ad_value_free after the
 * last tape that uses them is reset or freed.
 *
 * Truncation: a tape with horizon K keeps the open step plus the last K
 * closed steps.  Closing a step beyond that releases the oldest one; any value
 * of it that a held step still uses stays alive, but as a constant, so the
 * gradient path through it is cut.  That is K-step truncated back-propagation.
 *
 * Lifetimes: a released value (its step fell off the horizon, or the tape was
 * reset or freed, or it was rewound) and a freed leaf may not be used again.
 * Such a use is reported, not read: its struct is kept a while, marked dead,
 * with its data pointer NULL, so an op given it, and every function above the
 * reverse sweep's section, fails with AD_EARG and a message naming its step,
 * how it was released and the tape's horizon:
 *     add: input 0 ('w'), made at step 3, was released when step 5 opened: a
 *     tape with horizon K = 1 keeps the open step and the last K closed ones
 *     (keep a copy with ad_value_copy, or raise K); the tape is at step 5,
 *     holding steps 4..5
 * ad_value_check(who, v) runs the same check.  Each tape keeps the structs of
 * its last 2048 released values, and the process those of the last 4096
 * freed leaves and values of freed tapes; a use of an older one is undefined
 * (the struct may hold another value by then; AddressSanitizer reports it as
 * a heap-use-after-free).  Reading v->data of a released value (or of one
 * whose data a lean tape dropped, below) directly dereferences NULL.  The
 * checks cost a compare per input and a few stores per value made, nothing
 * per entry; they are always on.
 *
 * Memory: a value's data come from its tape's pool, which keeps released
 * blocks by size class for the next values of that size, across steps,
 * sweeps and ad_tape_reset, and gives them back at ad_tape_trim and
 * ad_tape_free.  ad_tape_bytes counts the values alive; ad_tape_pool_bytes
 * what the pool holds from the system (see ad_tape_stats).
 *
 * Lean tapes: most of what a recorded step computes is never read again.  A
 * backward rule reads only some of its node's data — a product the other
 * factor, and only when that factor's gradient is wanted; exp its result;
 * a sum, a reshape or a subtraction nothing but shapes — and each op says
 * which, next to its rule (node.h).  With ad_tape_set_lean(tp, true),
 * closing a step (ad_tape_step) gives back to the pool the data of every
 * value the step made that
 *   - no node of the step reads in its backward rule (as an input, or as
 *     the node's own result),
 *   - is not a leaf of the tape (ad_leaf), and
 *   - was not marked with ad_value_keep.
 * The value itself stays — node, inputs, shape, step — so a sweep walks it
 * as before and computes the same numbers, bit for bit; only its entries
 * are gone (v->data NULL, v->dropped true) and ad_tape_bytes no longer
 * counts them.  What the caller must keep: every value a LATER step reads in
 * its forward ops (an inner optimizer's state: the new w, the velocities)
 * and every value whose entries it reads itself after the step closed.
 * Mark those with ad_value_keep before the step closes.  A value the step
 * made that is read later only by backward rules needs nothing: the rules
 * declared it.  An op (or ad_value_copy, ad_value_check, ad_hvp's
 * directions, a seed) given a dropped value fails with AD_EARG:
 *     add: input 0 ('w'), made at step 3, had its data dropped when step 3
 *     closed (lean tape: mark it with ad_value_keep before its step closes,
 *     or turn lean mode off with ad_tape_set_lean)
 * A sweep's outputs and targets may be dropped: their data are not read.
 * Switching caller-owned leaves to want a gradient (ad_set_requires_grad)
 * after lean steps that use them closed is not supported: a rule may then
 * want data its op declared unread while the leaf wanted none (a product
 * x·c reads x only for c's gradient); the sweep fails with the message
 * above rather than read them.
 *
 * Errors: calls that can fail return an ad_status (0 = AD_OK) or NULL, and
 * leave a message in ad_error().  Ops given a NULL input return NULL and keep
 * the first message, so a whole expression can be checked once at the end
 * (when no message is pending, one is set: "op: input 0 is NULL").  A NULL
 * tape or argument anywhere in this header gives AD_EARG and a message,
 * never a crash: functions returning a count give 0, ad_tape_horizon and
 * ad_tape_current_step give AD_EARG; the two frees accept NULL quietly.
 *
 * Threads — the contract:
 *   - A tape, and every value it owns, is used by one thread at a time (one
 *     tape per thread is the usual way).
 *   - A caller-owned leaf (a hyperparameter λ, a data tensor) may be read by
 *     any number of tapes on any threads at once: by ops, and by ad_grad,
 *     ad_vjp, ad_vjp_many and ad_hvp with respect to it or through it.  A
 *     sweep keeps its scratch to itself and writes nothing into the values
 *     it walks; it only reads their fields.
 *   - ad_backward is the one sweep that writes caller-owned leaves: it adds
 *     into leaf->grad of every parameter it reaches.  It, and the caller's
 *     own writes to a leaf (ad_zero_grad, ad_set_requires_grad,
 *     ad_value_set_name, its data, ad_value_free), must not run while
 *     another thread uses that leaf.  (ad_value_keep writes nothing into a
 *     caller-owned leaf: any thread may call it on a shared one.)
 *   - The library's global state is safe to share: the error message and
 *     code are per thread, value ids come from one atomic counter, the
 *     process-wide FIFO of freed structs (see lifetimes) is behind a lock,
 *     and an ad_rng is the caller's own struct (one per thread).  A tape's
 *     pool is the tape's, like its values.
 *   - The kernels of the ops (elementwise, pooling, batch norm, oneDNN's
 *     convolutions) run on OpenBLAS's thread count, at most OpenMP's count
 *     (OMP_NUM_THREADS) as the calling thread first saw it, through OpenMP
 *     (built with -Domp; one thread without it or without OpenBLAS).  Set
 *     OpenBLAS to one thread (openblas_set_num_threads(1)) when running
 *     tapes on several threads, as the programs do: the kernels then stay
 *     on each caller's thread.  Our kernels give the same bytes whatever
 *     the count; oneDNN's convolution weight gradient (float build) does
 *     not, as it sums over the images in per-thread parts.
 * So the hypergradient estimators of optim/hypergrad.h may run on several
 * threads on one problem, as long as its callbacks only read what they share.
 */
#ifndef HYPERTAPE_AD_H
#define HYPERTAPE_AD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "hypertape_config.h"

#if HT_REAL_IS_DOUBLE
typedef double ad_real;
#else
typedef float ad_real;
#endif

/* AD_MUST_CHECK marks a function whose status must be read: dropping it is
 * a warning (an error in the --werror builds), so that no failure passes
 * unseen.  It marks every function here, in optim/hypergrad.h, optim/outer.h
 * and the experiments' kit that can fail at run time (memory, shapes,
 * numbers, files, a callback) or whose whole purpose is the check.  Not
 * marked: functions that fail only on an argument the caller can see is
 * right (a NULL tape or rng, an unmatched ad_no_record_end, a K below 0:
 * ad_rng_seed(&rng, 1) is not worth a test), ad_value_set_name (a label
 * that fails leaves the value as it was, unlabelled), and those that return
 * a value or a pointer.  Where ignoring a marked status is right (a cleanup
 * path that already reports an earlier failure), write AD_IGNORE(call) with
 * a comment saying why: GCC does not take a (void) cast as reading it. */
#if defined(__GNUC__)
#define AD_MUST_CHECK __attribute__((warn_unused_result))
#else
#define AD_MUST_CHECK
#endif
#define AD_IGNORE(status) ((void)!(status))

/* ---- errors ------------------------------------------------------------ */

typedef enum ad_status {
    AD_OK = 0,
    AD_ESHAPE = -1,     /* shapes do not fit the op */
    AD_EARG = -2,       /* a bad argument (K < 1, NULL, out of range) */
    AD_ENOMEM = -3,     /* allocation failed */
    AD_ENOGRAD = -4,    /* an op on the path has no backward rule */
    AD_ENONFINITE = -5, /* NaN or Inf where a finite number was required */
    AD_EIO = -6,        /* a file could not be opened or read */
    AD_EFORMAT = -7,    /* a file's contents are not what they claim */
    AD_EUNSUPPORTED = -8 /* the request is well formed but cannot be answered */
} ad_status;

/* The message of the most recent failure on this thread ("" if none). */
const char *ad_error(void);
/* Its status (AD_OK if none): what an op that returned NULL failed with. */
int ad_error_code(void);
/* Sets the message (printf-style) and returns `code`, so callers can write
 * `return ad_fail(AD_ESHAPE, "matmul: ...")`. */
int ad_fail(int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Puts context in front of the current message: "<fmt>: <message>". */
int ad_fail_wrap(int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
void ad_error_clear(void); /* message "" and code AD_OK */

/* ---- values ------------------------------------------------------------ */

enum { AD_MAX_RANK = 4, AD_MAX_INPUTS = 4, AD_MAX_IATTR = 8, AD_MAX_RATTR = 2 };

typedef struct ad_op ad_op;
typedef struct ad_tape ad_tape;
typedef struct ad_value ad_value;

/* A contiguous row-major tensor of rank 0..4, and — when an op made it on a
 * recording tape — the node that says how. Read the fields freely; change
 * `data` only on leaves you own. */
struct ad_value {
    int rank;
    int shape[AD_MAX_RANK];
    size_t size; /* product of shape; 1 for a scalar */
    ad_real *data;      /* NULL once the value is released or freed, or its
                           data dropped by a lean tape (see ad_tape_set_lean) */
    bool requires_grad; /* a parameter, or computed from one while recording */
    bool keep;          /* lean tapes: keep the data when the step closes (ad_value_keep) */
    bool dropped;       /* lean tapes: the data went back when the step closed */
    bool read_mark;     /* scratch of a lean step close (internal) */
    uint32_t magic;     /* lifetime checks: live, or released (ad_value_check) */

    /* The node (op == NULL for leaves and constants). */
    const ad_op *op;
    int n_inputs;
    ad_value *inputs[AD_MAX_INPUTS];
    int iattr[AD_MAX_IATTR];    /* op attributes: axes, strides, flags */
    double rattr[AD_MAX_RATTR]; /* op attributes: scales, exponents */

    /* Bookkeeping (read-only for users). */
    const char *name;     /* optional label (DOT, messages): the value's own copy */
    ad_tape *tape;        /* owner, or NULL for a caller-owned leaf */
    long step;            /* step that made it; -1 caller-owned; -2 carried */
    uint64_t id;          /* creation order: inputs always have smaller ids */
    int n_uses;           /* held nodes that name it as an input */
    int gone;             /* once released: how (lifetime checks) */
    ad_value *grad;       /* ad_backward's accumulator, owned by this leaf */
    ad_value *prev, *next; /* the owning step's list */
    long made_step;       /* step that made it, kept when carried; -1 caller-owned */
    size_t data_bytes;    /* the bytes of the block behind data (tape values) */
    long gone_step;       /* once released: the tape's open step then */
    int gone_horizon;     /* once released: the tape's horizon then */
};

/* Caller-owned leaves. `shape` has `rank` entries; data are copied. */
ad_value *ad_tensor_new(int rank, const int *shape);          /* zeros */
ad_value *ad_tensor_from(int rank, const int *shape, const ad_real *data);
ad_value *ad_tensor_fill(int rank, const int *shape, ad_real value);
ad_value *ad_tensor_scalar(ad_real value);
/* The same, marked as wanting a gradient. */
ad_value *ad_param_from(int rank, const int *shape, const ad_real *data);
ad_value *ad_param_scalar(ad_real value);
/* Marks (or unmarks) a caller-owned leaf as wanting a gradient. */
int ad_set_requires_grad(ad_value *leaf, bool on);
/* Frees a caller-owned leaf and its grad; NULL is fine. Values that belong to
 * a tape are not freed here (the tape owns them) and are left untouched.  A
 * leaf freed twice, or a released value, is reported in ad_error() and left
 * alone.  Free a leaf after the last tape that uses it is reset or freed: a
 * node of a held step keeps a pointer to it, and a sweep through that node
 * reads it (an op a backward rule gives it then fails with the message above). */
void ad_value_free(ad_value *v);
/* A new caller-owned leaf holding a copy of v's data (no gradient path). */
ad_value *ad_value_copy(const ad_value *v);
/* Labels v with a copy of `name` (NULL removes the label); AD_OK, AD_EARG
 * for a NULL or released v, AD_ENOMEM. */
int ad_value_set_name(ad_value *v, const char *name);
/* AD_OK when v may be used; AD_EARG, with a message that starts "who: " and
 * says why (NULL; released: its step, how, and the horizon; a freed leaf),
 * when not. */
AD_MUST_CHECK int ad_value_check(const char *who, const ad_value *v);

/* Shape helpers. */
bool ad_same_shape(const ad_value *a, const ad_value *b); /* false for NULL */
/* Writes "[5000,785]" into buf (at least 64 bytes) and returns buf
 * ("(null)" for a NULL v). */
char *ad_shape_str(const ad_value *v, char *buf, size_t len);
size_t ad_shape_size(int rank, const int *shape); /* 0 for a NULL shape, rank > 0 */
/* Checks rank in 0..4 and every extent >= 1; names `who` in the message. */
AD_MUST_CHECK int ad_check_shape(const char *who, int rank, const int *shape);
/* AD_OK if every entry is finite, else AD_ENONFINITE with `who` named. */
AD_MUST_CHECK int ad_check_finite(const char *who, const ad_value *v);

/* A small seeded PRNG (xoshiro256**), so results repeat bit for bit. */
typedef struct ad_rng { uint64_t s[4]; } ad_rng;
int ad_rng_seed(ad_rng *rng, uint64_t seed); /* AD_OK; AD_EARG for NULL */
uint64_t ad_rng_next(ad_rng *rng);
double ad_rng_uniform(ad_rng *rng);         /* [0, 1) */
double ad_rng_normal(ad_rng *rng);          /* N(0, 1) */
uint64_t ad_rng_below(ad_rng *rng, uint64_t n); /* uniform in [0, n); 0 when n = 0 */
/* Shuffles a[0..n) in place (Fisher–Yates, from the last entry down). */
int ad_rng_shuffle(ad_rng *rng, int *a, int n);
/* out[0..n) = a random permutation of 0..n−1 (identity, then shuffled). */
int ad_rng_permutation(ad_rng *rng, int *out, int n);
ad_value *ad_tensor_randn(ad_rng *rng, int rank, const int *shape, double stddev);
ad_value *ad_tensor_rand(ad_rng *rng, int rank, const int *shape, double lo, double hi);

/* ---- the tape ---------------------------------------------------------- */

#define AD_HORIZON_ALL 0

/* A new tape with step 0 open. horizon: K >= 1, or AD_HORIZON_ALL. */
ad_tape *ad_tape_new(int horizon);
/* Releases every value and gives all the tape's memory back; NULL is fine. */
void ad_tape_free(ad_tape *tp);
/* Releases every step (all values the tape owns); the tape starts again at
 * an open step 0, recording: no-record scopes left open (a round that
 * failed before its ad_no_record_end) end too, so an ad_no_record_end after
 * the reset has no begin (AD_EARG).  Horizon, lean mode and peak bytes are
 * kept (see ad_tape_reset_peak), and so are the pool's free blocks, for the
 * values of the next round. */
int ad_tape_reset(ad_tape *tp);
int ad_tape_set_horizon(ad_tape *tp, int horizon);
int ad_tape_horizon(const ad_tape *tp);
/* Closes the open step and opens the next.  If more than K closed steps are
 * then held, the oldest are released (see the top of this file). */
AD_MUST_CHECK int ad_tape_step(ad_tape *tp);
long ad_tape_current_step(const ad_tape *tp);
size_t ad_tape_steps_held(const ad_tape *tp);
/* Lean mode (see "Lean tapes" at the top of this file): while on, each step
 * ad_tape_step closes gives back the data no backward rule reads, except
 * leaves' and kept values'.  Off for a new tape; switching it changes what
 * later closes do, never brings dropped data back.  AD_OK; AD_EARG for a
 * NULL tape (ad_tape_lean then gives false). */
int ad_tape_set_lean(ad_tape *tp, bool on);
bool ad_tape_lean(const ad_tape *tp);
/* Marks v to keep its data when its step closes on a lean tape: a value a
 * later step's forward reads, or one you read yourself.  AD_OK (also for a
 * caller-owned leaf, which is never dropped: nothing is written into it,
 * so threads sharing it may all call this; and on a tape that is not lean);
 * AD_EARG for NULL, a released value, or one whose data are already dropped
 * (too late: mark it before its step closes). */
AD_MUST_CHECK int ad_value_keep(ad_value *v);
/* Bytes of values the tape owns now, and the most it has owned; a value
 * whose data a lean tape dropped counts its struct only.  (Not
 * counted: the reverse sweep's working arrays — about 40 bytes per value it
 * walks, plus slack and collect's heap — which the tape keeps, sized for its
 * largest sweep, until it is freed.) */
size_t ad_tape_bytes(const ad_tape *tp);
size_t ad_tape_peak_bytes(const ad_tape *tp);
int ad_tape_reset_peak(ad_tape *tp);

/* The memory behind the tape's values, from its pool.  ad_tape_bytes counts
 * each live value as its 256-byte struct and its data, whatever the pool
 * keeps; the pool's own footprint is counted here. */
typedef struct ad_tape_stats {
    size_t bytes, peak_bytes;  /* ad_tape_bytes, ad_tape_peak_bytes */
    size_t pool_bytes;         /* all the pool holds from the system: data
                                  blocks in use and free (rounded up to their
                                  size class), value structs (live, and
                                  released ones kept for the lifetime checks)
                                  and its own lists */
    size_t pool_free_bytes;    /* of which data blocks kept free for reuse */
    size_t pool_header_bytes;  /* of which value structs */
    size_t pool_peak_block_bytes; /* the most data-block bytes it has held */
    size_t blocks_fresh;       /* data blocks taken from the system so far */
    size_t blocks_reused;      /* data blocks the pool handed out again */
    size_t released_kept;      /* released values whose use is still reported */
} ad_tape_stats;
int ad_tape_get_stats(const ad_tape *tp, ad_tape_stats *stats);
size_t ad_tape_pool_bytes(const ad_tape *tp); /* stats.pool_bytes */
/* Gives the pool's free data blocks back to the system (values stay). */
int ad_tape_trim(ad_tape *tp);

/* No-record scopes nest. Inside one, ops compute values but build no nodes:
 * results are constants owned by the open step (a gradient with respect to
 * one is zeros: see ad_vjp).  Every end must match a begin, like braces: an
 * end without an open scope changes nothing and returns AD_EARG with a
 * message.  ad_tape_reset ends every open scope. */
int ad_no_record_begin(ad_tape *tp);
int ad_no_record_end(ad_tape *tp);
bool ad_tape_recording(const ad_tape *tp);

/* Scratch in a long-lived step: ad_tape_rewind frees the open step's
 * constants made since ad_tape_mark that no node uses (results already
 * copied out, say) — a plain sweep's gx among them.  Values that want a
 * gradient are kept: those with nodes, and leaves made with ad_leaf. */
uint64_t ad_tape_mark(ad_tape *tp);
int ad_tape_rewind(ad_tape *tp, uint64_t mark);

/* A constant owned by the open step (no gradient). */
ad_value *ad_const(ad_tape *tp, int rank, const int *shape, const ad_real *data);
ad_value *ad_const_fill(ad_tape *tp, int rank, const int *shape, ad_real value);
ad_value *ad_const_scalar(ad_tape *tp, ad_real value);
/* A constant copy of v's data in the open step: the gradient path stops.
 * (ad_detach and ad_leaf given NULL return NULL, as ops do.) */
ad_value *ad_detach(ad_tape *tp, ad_value *v);
/* A copy of v's data in the open step that is a new leaf wanting a gradient:
 * gradients can be taken with respect to it, and stop there.  (An inner
 * optimizer uses this to restart from an iterate computed without recording.) */
ad_value *ad_leaf(ad_tape *tp, ad_value *v);

/* ---- the reverse sweep ------------------------------------------------- */

/* Vector-Jacobian product: gx[i] = (dy/dxs[i])ᵀ gy, for i < n.
 * gy has y's shape (NULL means ones, allowed only for a scalar y).
 * With create_graph the sweep is recorded: gx are nodes on the tape and can
 * be differentiated again.  gx are new values owned by the open step, never
 * the caller's gy: where the gradient reaches x unchanged (y = x + c, or x
 * is y itself) gx is a copy of gy (a recorded one, with create_graph, when
 * gy wants a gradient).  An x that y does not depend on gets zeros.  So
 * does an x that wants no gradient (x->requires_grad false: a tensor made
 * with ad_tensor_*, a constant, ad_detach's result, a value computed while
 * not recording), even when y's value depends on it: the sweep only goes
 * back through values that want a gradient, and the estimators rely on
 * these zeros for state entries that are constants; to get the gradient,
 * mark a caller-owned leaf with ad_set_requires_grad before the ops that
 * use it.  Fails with AD_ENOGRAD, naming the op, when a node
 * on a path has no backward rule; when a backward rule fails (an op inside
 * it failed, or it returned a status), with that op's status and message
 * after "grad: the backward rule of 'OP'".  A message set before a sweep
 * that succeeds is left as it was.  Precision: a value used several times
 * gets the sum of its uses' gradients; the float build adds them in double
 * from the third on, so the error does not grow with their number: the
 * total is off the exact sum S by at most ε·|c₁ + c₂| (the first two, added
 * in float) + ε·|S| (the final rounding) + terms of double's ε (10⁵ uses of
 * 0.1·x give 10⁴, not 9998.56; where c₁ + c₂ cancels against later terms the
 * first rounding can dominate, as in any float sum). */
AD_MUST_CHECK int ad_vjp(ad_tape *tp, ad_value *y, ad_value *gy, int n, ad_value *const *xs,
                         ad_value **gx, bool create_graph);
/* The same for several outputs at once: gx[i] = Σ_k (dys[k]/dxs[i])ᵀ gys[k].
 * (gys[k] may be NULL only for a scalar ys[k].) */
AD_MUST_CHECK int ad_vjp_many(ad_tape *tp, int m, ad_value *const *ys, ad_value *const *gys, int n,
                              ad_value *const *xs, ad_value **gx, bool create_graph);
/* Partial derivatives: ad_vjp_many where every xs[i] counts as an
 * independent input.  The sweep stops at each x — it adds what reaches x
 * from the outputs and goes no further back — so a path from an output to
 * one x through another x is not followed.  Example: y = x·λ with x = λ²;
 * ad_vjp_partial(…, {x, λ}, …) gives (λ, x), where ad_vjp_many gives
 * (λ, x + 2λ²) (λ's entry also takes the path through x).  A
 * step-by-step reverse pass uses it: from the state after step t, with
 * targets (the state before step t, λ), it gives A_tᵀ v and λ's share of
 * that one step only, and walks that step's graph, not the whole tape.
 * Ownership, create_graph and errors as for ad_vjp_many. */
AD_MUST_CHECK int ad_vjp_partial(ad_tape *tp, int m, ad_value *const *ys, ad_value *const *gys,
                                 int n, ad_value *const *xs, ad_value **gx, bool create_graph);
/* ad_vjp with gy = 1 for a scalar y. */
AD_MUST_CHECK int ad_grad(ad_tape *tp, ad_value *y, int n, ad_value *const *xs, ad_value **gx,
                          bool create_graph);
/* Adds dy/dp into p->grad for every caller-owned leaf p that wants a
 * gradient and that y depends on (y must be a scalar); a y that reaches no
 * such leaf changes nothing and leaves nothing on the tape.  p->grad is made
 * on the first call (zeros plus dy/dp); read and write its entries freely,
 * clear them with ad_zero_grad, but do not free it alone — if you do, set
 * p->grad = NULL after, and the next call makes a new one; otherwise the
 * next ad_backward or ad_zero_grad fails with AD_EARG naming p, before
 * writing any leaf (a check that sees the freed struct while the lifetime
 * checks keep it: see lifetimes, at the top).  p->grad is freed with p, a
 * caller-owned tensor that ad_value_free(p) frees.  It writes those leaves:
 * no other thread may use them meanwhile (see threads, at the top).  dy/dp
 * is summed as ad_vjp's (in double, float build); across calls p->grad is
 * a running sum in ad_real, as PyTorch's .grad is in the parameter's type. */
AD_MUST_CHECK int ad_backward(ad_tape *tp, ad_value *y);
/* Sets every entry of leaf->grad to zero (if it has one).  AD_OK (also for
 * a NULL leaf, quietly, as the frees); AD_EARG for a freed leaf, or when
 * the caller freed leaf->grad itself (see ad_backward). */
int ad_zero_grad(ad_value *leaf);
/* Hessian-vector product by double backward:
 * hv[i] = Σ_j (∂² y / ∂xs[i] ∂xs[j]) vs[j], for a scalar y. */
AD_MUST_CHECK int ad_hvp(ad_tape *tp, ad_value *y, int n, ad_value *const *xs, ad_value *const *vs,
                         ad_value **hv, bool create_graph);

/* ---- Graphviz ---------------------------------------------------------- */

/* Writes the graph that reaches `root` in Graphviz DOT: one box per value
 * with its op, shape and step; leaves and carried constants drawn apart.
 * Render with  dot -Tpng graph.dot -o graph.png.  AD_OK, AD_EARG for a NULL
 * file or root, AD_EIO when a write fails. */
AD_MUST_CHECK int ad_dot_write(FILE *out, ad_value *root);

/* What ad_dot_write_opts adds to that compact drawing; all zero is the same
 * drawing as ad_dot_write's. */
typedef struct ad_dot_opts {
    int values;       /* each value's first `values` entries, "= [2, 1.8, …]" (0: none) */
    bool input_index; /* each edge labelled with the input it is: 0, 1, … */
    bool names;       /* an unnamed constant named by its contents when that is
                         one number: "ones", "zeros", "0.5" (a sweep names its
                         seeds "seed" itself) */
    bool ids;         /* each value's id, "#12": creation order, the order the
                         reverse sweep goes by */
    bool steps;       /* one frame per step around the values it made (which
                         then say no "step N" themselves) */
} ad_dot_opts;
/* The graph that reaches any of roots[0..n), drawn with opts (NULL: none). */
AD_MUST_CHECK int ad_dot_write_opts(FILE *out, int n, ad_value *const *roots,
                                    const ad_dot_opts *opts);

#endif
