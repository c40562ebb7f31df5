/* elementwise.c — arithmetic with broadcasting, and the unary functions.
 *
 * Every backward rule is written with ops from this file and reduce.c, so it
 * is recorded when the sweep is, and second derivatives need nothing more.
 * Broadcasting's backward is ad_sum_to: a value stretched over an axis
 * receives the sum of the gradients along it. */
#include <math.h>

#include "broadcast.h"
#include "ops.h"
#include "threads.h"

/* EW_GRAIN: the fewest entries worth a thread of their own (see threads.h);
 * below 2·EW_GRAIN a loop runs on the caller's thread alone.  EW_BLOCK:
 * ranges start at multiples of it (64 bytes of floats), so no two threads
 * write one cache line and each range's vector loop starts aligned as the
 * whole loop would. */
enum { EW_GRAIN = 32768, EW_BLOCK = 16 };

/* ---- binary ops -------------------------------------------------------- */

/* EW_LOOP(n, body) runs body for i = 0..n−1: the first loop's count is a
 * multiple of 8, which is what lets GCC's -O2 vectoriser (its "very cheap"
 * cost model takes no loop whose count it cannot divide) turn it into SIMD
 * code; the second finishes the last few. */
#define EW_LOOP(n, body)                                     \
    do {                                                     \
        size_t n_ = (n), m_ = n_ & ~(size_t)7, i = 0;        \
        for (; i < m_; i++) { body; }                        \
        for (; i < n_; i++) { body; }                        \
    } while (0)

/* A binary kernel fills o[0..n) from a and b, each walked with step 1 or 0
 * (a broadcast constant).  One call per run, not per entry: each op's loop
 * is its own function, specialised for the four layouts.  The arithmetic is
 * in ad_real: for + − × ÷ rounding the double result to float gives the
 * float result, so this is what the double formula it replaced computed,
 * bit for bit. */
typedef void (*binary_kernel)(ad_real *o, const ad_real *a, size_t sa, const ad_real *b,
                              size_t sb, size_t n);

#define BINARY_KERNEL(name, expr)                                                        \
    static void name##_kernel(ad_real *restrict o, const ad_real *restrict a, size_t sa, \
                              const ad_real *restrict b, size_t sb, size_t n)           \
    {                                                                                    \
        if (sa && sb) {                                                                  \
            EW_LOOP(n, ad_real x = a[i]; ad_real y = b[i]; o[i] = (expr));               \
        } else if (sa) {                                                                 \
            const ad_real y = b[0];                                                      \
            EW_LOOP(n, ad_real x = a[i]; o[i] = (expr));                                 \
        } else if (sb) {                                                                 \
            const ad_real x = a[0];                                                      \
            EW_LOOP(n, ad_real y = b[i]; o[i] = (expr));                                 \
        } else { /* (a plain loop: through EW_LOOP it stops GCC vectorising the rest) */ \
            const ad_real x = a[0], y = b[0], v = (expr);                                \
            for (size_t i = 0; i < n; i++) o[i] = v;                                     \
        }                                                                                \
    }

BINARY_KERNEL(add, x + y)
BINARY_KERNEL(sub, x - y)
BINARY_KERNEL(mul, x * y)
BINARY_KERNEL(div, x / y)

/* One binary kernel call on o[0..n), spread over the threads in blocks. */
typedef struct binary_job {
    binary_kernel k;
    ad_real *o;
    const ad_real *a, *b;
    size_t sa, sb, n;
} binary_job;

static void binary_range(void *ctx, size_t lo, size_t hi)
{
    const binary_job *j = ctx;
    size_t from = lo * EW_BLOCK, to = hi * EW_BLOCK < j->n ? hi * EW_BLOCK : j->n;
    j->k(j->o + from, j->a + from * j->sa, j->sa, j->b + from * j->sb, j->sb, to - from);
}

static void binary_run(binary_kernel k, ad_real *o, const ad_real *a, size_t sa,
                       const ad_real *b, size_t sb, size_t n)
{
    binary_job j = { k, o, a, b, sa, sb, n };
    ops_for((n + EW_BLOCK - 1) / EW_BLOCK, EW_GRAIN / EW_BLOCK, binary_range, &j);
}

/* A binary kernel over a broadcast layout, run by run (see bc_run). */
typedef struct broadcast_job {
    binary_kernel k;
    ad_real *o;
    const ad_real *a, *b;
    const bc_layout *l;
    size_t run, step[2];
    int top;
} broadcast_job;

/* Runs [lo, hi): the padded index of run lo is lo's digits on the axes up
 * to top (those after it are 0), then the odometer. */
static void broadcast_range(void *ctx, size_t lo, size_t hi)
{
    const broadcast_job *j = ctx;
    const bc_layout *l = j->l;
    int i[AD_MAX_RANK] = { 0 };
    for (size_t r = lo, k = (size_t)(j->top + 1); k-- > 0;) {
        i[k] = (int)(r % (size_t)l->ext[k]);
        r /= (size_t)l->ext[k];
    }
    for (size_t r = lo; r < hi; r++, bc_next_run(l, i, j->top))
        j->k(j->o + r * j->run, j->a + bc_offset(l, 0, i), j->step[0], j->b + bc_offset(l, 1, i),
             j->step[1], j->run);
}

/* out = a op b elementwise over the broadcast layout. */
static ad_value *binary(ad_tape *tp, const ad_op *op, ad_value *a, ad_value *b, binary_kernel k)
{
    ad_value *in[2] = { a, b };
    if (ad_check_inputs(tp, op->name, 2, in) != AD_OK) return NULL; /* before reading shapes */
    bc_layout l;
    if (bc_binary(op->name, a, b, &l) != AD_OK) return NULL;
    ad_value *out = ad_node_new(tp, op, l.rank, l.shape, 2, in);
    if (!out) return NULL;
    if (a->size == out->size && b->size == out->size) { /* the common case */
        binary_run(k, out->data, a->data, 1, b->data, 1, out->size);
        return out;
    }
    if (b->size == 1 || a->size == 1) { /* a tensor and a scalar */
        binary_run(k, out->data, a->data, a->size != 1, b->data, b->size != 1, out->size);
        return out;
    }
    /* Runs of trailing axes go through the kernel's tight loop (see bc_run),
     * the runs spread over the threads. */
    if (out->size == 0) return out;
    broadcast_job j = { .k = k, .o = out->data, .a = a->data, .b = b->data, .l = &l };
    j.run = bc_run(&l, 2, j.step, &j.top);
    size_t grain = (EW_GRAIN + j.run - 1) / j.run;
    ops_for(out->size / j.run, grain, broadcast_range, &j);
    return out;
}

/* The gradient for input k of a broadcast op, summed back to its shape. */
static ad_value *unbroadcast(ad_tape *tp, ad_value *g, const ad_value *x)
{
    return ad_sum_to(tp, g, x->rank, x->shape);
}

static int add_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    ad_value *a = out->inputs[0], *b = out->inputs[1];
    if (ad_input_needs_grad(out, 0) && !(gin[0] = unbroadcast(tp, g, a)))
        return ad_rule_status(gin[0]);
    if (ad_input_needs_grad(out, 1) && !(gin[1] = unbroadcast(tp, g, b)))
        return ad_rule_status(gin[1]);
    return AD_OK;
}

static int sub_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    ad_value *a = out->inputs[0], *b = out->inputs[1];
    if (ad_input_needs_grad(out, 0) && !(gin[0] = unbroadcast(tp, g, a)))
        return ad_rule_status(gin[0]);
    if (ad_input_needs_grad(out, 1) && !(gin[1] = unbroadcast(tp, ad_neg(tp, g), b)))
        return ad_rule_status(gin[1]);
    return AD_OK;
}

static int mul_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    ad_value *a = out->inputs[0], *b = out->inputs[1];
    if (ad_input_needs_grad(out, 0) && !(gin[0] = unbroadcast(tp, ad_mul(tp, g, b), a)))
        return ad_rule_status(gin[0]);
    if (ad_input_needs_grad(out, 1) && !(gin[1] = unbroadcast(tp, ad_mul(tp, g, a), b)))
        return ad_rule_status(gin[1]);
    return AD_OK;
}

/* d(a/b) = da/b − (a/b)·db/b */
static int div_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    ad_value *a = out->inputs[0], *b = out->inputs[1];
    ad_value *g_over_b = ad_div(tp, g, b);
    if (ad_input_needs_grad(out, 0) && !(gin[0] = unbroadcast(tp, g_over_b, a)))
        return ad_rule_status(gin[0]);
    if (ad_input_needs_grad(out, 1) &&
        !(gin[1] = unbroadcast(tp, ad_neg(tp, ad_mul(tp, g_over_b, out)), b)))
        return ad_rule_status(gin[1]);
    return AD_OK;
}

/* What each rule reads (node.h): add and sub only shapes; mul each factor
 * for the other's gradient; div always b (g/b), and its result only for
 * b's gradient. */
static bool div_reads(const ad_value *out, int i)
{
    return i == 1 || (i == AD_READ_OUTPUT && ad_input_needs_grad(out, 1));
}

static const ad_op add_op = { "add", add_backward, ad_reads_nothing };
static const ad_op sub_op = { "sub", sub_backward, ad_reads_nothing };
static const ad_op mul_op = { "mul", mul_backward, ad_reads_other_factor };
static const ad_op div_op = { "div", div_backward, div_reads };

ad_value *ad_add(ad_tape *tp, ad_value *a, ad_value *b) { return binary(tp, &add_op, a, b, add_kernel); }
ad_value *ad_sub(ad_tape *tp, ad_value *a, ad_value *b) { return binary(tp, &sub_op, a, b, sub_kernel); }
ad_value *ad_mul(ad_tape *tp, ad_value *a, ad_value *b) { return binary(tp, &mul_op, a, b, mul_kernel); }
ad_value *ad_div(ad_tape *tp, ad_value *a, ad_value *b) { return binary(tp, &div_op, a, b, div_kernel); }

/* ---- unary ops --------------------------------------------------------- */

/* A unary kernel fills o[0..n) = f(x[i], c); c is the op's constant (scale,
 * power, …).  Each op's loop is its own function (one call per tensor).  T
 * is the type f is evaluated in: double, as before, except for the ops
 * exact in ad_real (neg, relu, square: the double result rounds to the
 * same float), which then vectorise. */
typedef void (*unary_kernel)(ad_real *o, const ad_real *x, size_t n, double c);

/* One unary kernel call on o[0..n), spread over the threads in blocks. */
typedef struct unary_job {
    unary_kernel k;
    ad_real *o;
    const ad_real *x;
    size_t n;
    double c;
} unary_job;

static void unary_range(void *ctx, size_t lo, size_t hi)
{
    const unary_job *j = ctx;
    size_t from = lo * EW_BLOCK, to = hi * EW_BLOCK < j->n ? hi * EW_BLOCK : j->n;
    j->k(j->o + from, j->x + from, to - from, j->c);
}

static void unary_run(unary_kernel k, ad_real *o, const ad_real *x, size_t n, double c)
{
    unary_job j = { k, o, x, n, c };
    ops_for((n + EW_BLOCK - 1) / EW_BLOCK, EW_GRAIN / EW_BLOCK, unary_range, &j);
}

static ad_value *unary(ad_tape *tp, const ad_op *op, ad_value *x, unary_kernel k, double c)
{
    if (ad_check_inputs(tp, op->name, 1, &x) != AD_OK) return NULL;
    ad_value *out = ad_node_new(tp, op, x->rank, x->shape, 1, &x);
    if (!out) return NULL;
    out->rattr[0] = c;
    unary_run(k, out->data, x->data, x->size, c);
    return out;
}

/* Each rule receives x = out->inputs[0], the result `out`, the incoming
 * gradient g and the op's constant c, and returns the gradient for x.
 * `reads` names what the rule reads (node.h): none, x, out, or the op's
 * own declaration (pow). */
#define READS_none ad_reads_nothing
#define READS_x ad_reads_inputs
#define READS_out ad_reads_output
#define UNARY_OP(name, reads, T, fwd, rule_body)                                       \
    static void name##_kernel(ad_real *restrict o, const ad_real *restrict xs, size_t n, \
                              double c)                                                \
    {                                                                                  \
        (void)c;                                                                       \
        EW_LOOP(n, T x = xs[i]; o[i] = (ad_real)(fwd));                                \
    }                                                                                  \
    static ad_value *name##_rule(ad_tape *tp, ad_value *x, ad_value *out, ad_value *g, \
                                 double c)                                             \
    {                                                                                  \
        (void)x; (void)out; (void)c;                                                   \
        return rule_body;                                                              \
    }                                                                                  \
    static int name##_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin) \
    {                                                                                  \
        gin[0] = name##_rule(tp, out->inputs[0], out, g, out->rattr[0]);               \
        return ad_rule_status(gin[0]);                                                 \
    }                                                                                  \
    static const ad_op name##_op = { #name, name##_backward, READS_##reads };

/* relu's backward: 0 where x <= 0, else g — one pass, where g ⊙ step(x) made
 * the mask first (the same numbers, but at a NaN x: there g passes, as in PyTorch's
 * threshold_backward, rather than being dropped).  Linear in g (its own adjoint); x only
 * chooses, so it gets no gradient. */
static ad_value *relu_mask(ad_tape *tp, ad_value *g, ad_value *x);

static int relu_mask_backward(ad_tape *tp, ad_value *out, ad_value *u, ad_value **gin)
{
    if (!ad_input_needs_grad(out, 0)) return AD_OK;
    gin[0] = relu_mask(tp, u, out->inputs[1]);
    return ad_rule_status(gin[0]);
}

/* The rule reads x (input 1) for g's gradient; g itself it does not read. */
static bool relu_mask_reads(const ad_value *out, int i)
{
    return i == 1 && ad_input_needs_grad(out, 0);
}

static const ad_op relu_mask_op = { "relu_mask", relu_mask_backward, relu_mask_reads };

/* o = 0 where x <= 0, else g (a binary kernel: g is a, x is b; both step 1).
 * g·1 or g·0, as g ⊙ step(x) was (a branch here would be mispredicted half
 * the time, and keeps the loop from vectorising). */
static void relu_mask_kernel(ad_real *restrict o, const ad_real *restrict gs, size_t sa,
                             const ad_real *restrict xs, size_t sb, size_t n)
{
    (void)sa, (void)sb;
    EW_LOOP(n, ad_real m = !(xs[i] <= 0); o[i] = gs[i] * m);
}

/* g, x of one shape -> 0 where x <= 0, else g (NaN x: g) */
static ad_value *relu_mask(ad_tape *tp, ad_value *g, ad_value *x)
{
    ad_value *in[2] = { g, x };
    if (ad_check_inputs(tp, "relu_mask", 2, in) != AD_OK) return NULL;
    AD_ASSERT(ad_same_shape(g, x), "relu_mask: gradient and input differ in shape");
    ad_value *out = ad_node_new(tp, &relu_mask_op, x->rank, x->shape, 2, in);
    if (!out) return NULL;
    binary_run(relu_mask_kernel, out->data, g->data, 1, x->data, 1, x->size);
    return out;
}

/* pow's rule reads x unless the power is 0 (see below). */
static bool pow_reads(const ad_value *out, int i) { return i == 0 && out->rattr[0] != 0; }
#define READS_pow pow_reads

/*       name        reads  type      forward                     backward: dx = …              */
UNARY_OP(neg,        none,  ad_real,  -x,                         ad_neg(tp, g))
UNARY_OP(scale,      none,  double,   c * x,                      ad_scale(tp, g, c))
UNARY_OP(add_scalar, none,  double,   x + c,                      g)
UNARY_OP(exp,        out,   double,   exp(x),                     ad_mul(tp, g, out))
UNARY_OP(log,        x,     double,   log(x),                     ad_div(tp, g, x))
UNARY_OP(sin,        x,     double,   sin(x),                     ad_mul(tp, g, ad_cos(tp, x)))
UNARY_OP(cos,        x,     double,   cos(x),                     ad_neg(tp, ad_mul(tp, g, ad_sin(tp, x))))
/* tanh' = 1 − tanh² */
UNARY_OP(tanh,       out,   double,   tanh(x),                    ad_mul(tp, g, ad_add_scalar(tp, ad_neg(tp, ad_square(tp, out)), 1)))
/* σ' = σ(1 − σ) */
UNARY_OP(sigmoid,    out,   double,   1 / (1 + exp(-x)),          ad_mul(tp, g, ad_mul(tp, out, ad_add_scalar(tp, ad_neg(tp, out), 1))))
/* log(1 + eˣ) = max(x, 0) + log1p(e^−|x|) never overflows; its derivative is σ */
UNARY_OP(softplus,   x,     double,   fmax(x, 0) + log1p(exp(-fabs(x))), ad_mul(tp, g, ad_sigmoid(tp, x)))
/* x <= 0 ? 0 : x, not x > 0 ? x : 0: NaN passes through (and −0 -> +0). */
UNARY_OP(relu,       x,     ad_real,  x <= 0 ? 0 : x,             relu_mask(tp, g, x))
UNARY_OP(square,     x,     ad_real,  x * x,                      ad_mul(tp, g, ad_scale(tp, x, 2)))
UNARY_OP(sqrt,       out,   double,   sqrt(x),                    ad_div(tp, g, ad_scale(tp, out, 2)))
/* pow(x, 0) is constant: its derivative 0·x⁻¹ would be NaN at x = 0. */
UNARY_OP(pow,        pow,   double,   pow(x, c),                  c == 0 ? ad_scale(tp, g, 0)
                                                                  : ad_mul(tp, g, ad_scale(tp, ad_pow(tp, x, c - 1), c)))

ad_value *ad_neg(ad_tape *tp, ad_value *x) { return unary(tp, &neg_op, x, neg_kernel, 0); }
ad_value *ad_scale(ad_tape *tp, ad_value *x, double c) { return unary(tp, &scale_op, x, scale_kernel, c); }
ad_value *ad_add_scalar(ad_tape *tp, ad_value *x, double c) { return unary(tp, &add_scalar_op, x, add_scalar_kernel, c); }
ad_value *ad_exp(ad_tape *tp, ad_value *x) { return unary(tp, &exp_op, x, exp_kernel, 0); }
ad_value *ad_log(ad_tape *tp, ad_value *x) { return unary(tp, &log_op, x, log_kernel, 0); }
ad_value *ad_sin(ad_tape *tp, ad_value *x) { return unary(tp, &sin_op, x, sin_kernel, 0); }
ad_value *ad_cos(ad_tape *tp, ad_value *x) { return unary(tp, &cos_op, x, cos_kernel, 0); }
ad_value *ad_tanh(ad_tape *tp, ad_value *x) { return unary(tp, &tanh_op, x, tanh_kernel, 0); }
ad_value *ad_sigmoid(ad_tape *tp, ad_value *x) { return unary(tp, &sigmoid_op, x, sigmoid_kernel, 0); }
ad_value *ad_softplus(ad_tape *tp, ad_value *x) { return unary(tp, &softplus_op, x, softplus_kernel, 0); }
ad_value *ad_relu(ad_tape *tp, ad_value *x) { return unary(tp, &relu_op, x, relu_kernel, 0); }
ad_value *ad_square(ad_tape *tp, ad_value *x) { return unary(tp, &square_op, x, square_kernel, 0); }
ad_value *ad_sqrt(ad_tape *tp, ad_value *x) { return unary(tp, &sqrt_op, x, sqrt_kernel, 0); }
ad_value *ad_pow(ad_tape *tp, ad_value *x, double p) { return unary(tp, &pow_op, x, pow_kernel, p); }

ad_value *ad_step(ad_tape *tp, ad_value *x)
{
    if (ad_check_inputs(tp, "step", 1, &x) != AD_OK) return NULL;
    ad_value *out = ad_const_fill(tp, x->rank, x->shape, 0);
    if (out)
        for (size_t i = 0; i < x->size; i++) out->data[i] = x->data[i] > 0 ? 1 : 0;
    return out;
}
