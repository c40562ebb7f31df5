/* elementwise.c — arithmetic with broadcasting, and the unary functions.
 *
 * Every backward rule is written with ops from this file and reduce.c, so it
 * is recorded when the sweep is, and second derivatives need nothing more.
 * Broadcasting's backward is ad_sum_to: a value stretched over an axis
 * receives the sum of the gradients along it. */
#include <math.h>

#include "broadcast.h"
#include "ops.h"

/* ---- binary ops -------------------------------------------------------- */

typedef double (*binary_fn)(double, double);

/* out = f(a, b) elementwise over the broadcast layout. */
static ad_value *binary(ad_tape *tp, const ad_op *op, ad_value *a, ad_value *b, binary_fn f)
{
    if (!a || !b) return NULL;
    bc_layout l;
    if (bc_binary(op->name, a, b, &l) != AD_OK) return NULL;
    ad_value *in[2] = { a, b };
    ad_value *out = ad_node_new(tp, op, l.rank, l.shape, 2, in);
    if (!out) return NULL;
    ad_real *o = out->data;
    if (a->size == out->size && b->size == out->size) { /* the common case */
        for (size_t i = 0; i < out->size; i++) o[i] = (ad_real)f(a->data[i], b->data[i]);
        return out;
    }
    /* Runs of trailing axes go through a tight loop (see bc_run). */
    size_t step[2];
    int top;
    size_t run = bc_run(&l, 2, step, &top);
    int i[AD_MAX_RANK] = { 0 };
    for (size_t n = 0; n < out->size; n += run, bc_next_run(&l, i, top)) {
        const ad_real *pa = a->data + bc_offset(&l, 0, i), *pb = b->data + bc_offset(&l, 1, i);
        for (size_t j = 0; j < run; j++) o[n + j] = (ad_real)f(pa[j * step[0]], pb[j * step[1]]);
    }
    return out;
}

/* The gradient for input k of a broadcast op, summed back to its shape. */
static ad_value *unbroadcast(ad_tape *tp, ad_value *g, const ad_value *x)
{
    return ad_sum_to(tp, g, x->rank, x->shape);
}

static double f_add(double a, double b) { return a + b; }
static double f_sub(double a, double b) { return a - b; }
static double f_mul(double a, double b) { return a * b; }
static double f_div(double a, double b) { return a / b; }

static int add_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    ad_value *a = out->inputs[0], *b = out->inputs[1];
    if (ad_input_needs_grad(out, 0) && !(gin[0] = unbroadcast(tp, g, a))) return AD_ENOMEM;
    if (ad_input_needs_grad(out, 1) && !(gin[1] = unbroadcast(tp, g, b))) return AD_ENOMEM;
    return AD_OK;
}

static int sub_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    ad_value *a = out->inputs[0], *b = out->inputs[1];
    if (ad_input_needs_grad(out, 0) && !(gin[0] = unbroadcast(tp, g, a))) return AD_ENOMEM;
    if (ad_input_needs_grad(out, 1) && !(gin[1] = unbroadcast(tp, ad_neg(tp, g), b)))
        return AD_ENOMEM;
    return AD_OK;
}

static int mul_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    ad_value *a = out->inputs[0], *b = out->inputs[1];
    if (ad_input_needs_grad(out, 0) && !(gin[0] = unbroadcast(tp, ad_mul(tp, g, b), a)))
        return AD_ENOMEM;
    if (ad_input_needs_grad(out, 1) && !(gin[1] = unbroadcast(tp, ad_mul(tp, g, a), b)))
        return AD_ENOMEM;
    return AD_OK;
}

/* d(a/b) = da/b − (a/b)·db/b */
static int div_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    ad_value *a = out->inputs[0], *b = out->inputs[1];
    ad_value *g_over_b = ad_div(tp, g, b);
    if (ad_input_needs_grad(out, 0) && !(gin[0] = unbroadcast(tp, g_over_b, a))) return AD_ENOMEM;
    if (ad_input_needs_grad(out, 1) &&
        !(gin[1] = unbroadcast(tp, ad_neg(tp, ad_mul(tp, g_over_b, out)), b)))
        return AD_ENOMEM;
    return AD_OK;
}

static const ad_op add_op = { "add", add_backward };
static const ad_op sub_op = { "sub", sub_backward };
static const ad_op mul_op = { "mul", mul_backward };
static const ad_op div_op = { "div", div_backward };

ad_value *ad_add(ad_tape *tp, ad_value *a, ad_value *b) { return binary(tp, &add_op, a, b, f_add); }
ad_value *ad_sub(ad_tape *tp, ad_value *a, ad_value *b) { return binary(tp, &sub_op, a, b, f_sub); }
ad_value *ad_mul(ad_tape *tp, ad_value *a, ad_value *b) { return binary(tp, &mul_op, a, b, f_mul); }
ad_value *ad_div(ad_tape *tp, ad_value *a, ad_value *b) { return binary(tp, &div_op, a, b, f_div); }

/* ---- unary ops --------------------------------------------------------- */

typedef double (*unary_fn)(double x, double c);

/* out = f(x, c) elementwise; c is the op's constant (scale, power, …). */
static ad_value *unary(ad_tape *tp, const ad_op *op, ad_value *x, unary_fn f, double c)
{
    if (!x) return NULL;
    ad_value *out = ad_node_new(tp, op, x->rank, x->shape, 1, &x);
    if (!out) return NULL;
    out->rattr[0] = c;
    for (size_t i = 0; i < x->size; i++) out->data[i] = (ad_real)f(x->data[i], c);
    return out;
}

/* Each rule receives x = out->inputs[0], the result `out`, the incoming
 * gradient g and the op's constant c, and returns the gradient for x. */
typedef ad_value *(*unary_rule)(ad_tape *tp, ad_value *x, ad_value *out, ad_value *g, double c);

#define UNARY_OP(name, fwd, rule_body)                                                 \
    static double name##_fwd(double x, double c) { (void)c; return fwd; }              \
    static ad_value *name##_rule(ad_tape *tp, ad_value *x, ad_value *out, ad_value *g, \
                                 double c)                                             \
    {                                                                                  \
        (void)x; (void)out; (void)c;                                                   \
        return rule_body;                                                              \
    }                                                                                  \
    static int name##_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin) \
    {                                                                                  \
        gin[0] = name##_rule(tp, out->inputs[0], out, g, out->rattr[0]);               \
        return gin[0] ? AD_OK : AD_ENOMEM;                                             \
    }                                                                                  \
    static const ad_op name##_op = { #name, name##_backward };

/*        name      forward                      backward: dx = …                         */
UNARY_OP(neg,       -x,                          ad_neg(tp, g))
UNARY_OP(scale,     c * x,                       ad_scale(tp, g, c))
UNARY_OP(add_scalar, x + c,                      g)
UNARY_OP(exp,       exp(x),                      ad_mul(tp, g, out))
UNARY_OP(log,       log(x),                      ad_div(tp, g, x))
UNARY_OP(sin,       sin(x),                      ad_mul(tp, g, ad_cos(tp, x)))
UNARY_OP(cos,       cos(x),                      ad_neg(tp, ad_mul(tp, g, ad_sin(tp, x))))
/* tanh' = 1 − tanh² */
UNARY_OP(tanh,      tanh(x),                     ad_mul(tp, g, ad_add_scalar(tp, ad_neg(tp, ad_square(tp, out)), 1)))
/* σ' = σ(1 − σ) */
UNARY_OP(sigmoid,   1 / (1 + exp(-x)),           ad_mul(tp, g, ad_mul(tp, out, ad_add_scalar(tp, ad_neg(tp, out), 1))))
/* log(1 + eˣ) = max(x, 0) + log1p(e^−|x|) never overflows; its derivative is σ */
UNARY_OP(softplus,  fmax(x, 0) + log1p(exp(-fabs(x))), ad_mul(tp, g, ad_sigmoid(tp, x)))
UNARY_OP(relu,      x > 0 ? x : 0,               ad_mul(tp, g, ad_step(tp, x)))
UNARY_OP(square,    x * x,                       ad_mul(tp, g, ad_scale(tp, x, 2)))
UNARY_OP(sqrt,      sqrt(x),                     ad_div(tp, g, ad_scale(tp, out, 2)))
/* pow(x, 0) is constant: its derivative 0·x⁻¹ would be NaN at x = 0. */
UNARY_OP(pow,       pow(x, c),                   c == 0 ? ad_scale(tp, g, 0)
                                                        : ad_mul(tp, g, ad_scale(tp, ad_pow(tp, x, c - 1), c)))

ad_value *ad_neg(ad_tape *tp, ad_value *x) { return unary(tp, &neg_op, x, neg_fwd, 0); }
ad_value *ad_scale(ad_tape *tp, ad_value *x, double c) { return unary(tp, &scale_op, x, scale_fwd, c); }
ad_value *ad_add_scalar(ad_tape *tp, ad_value *x, double c) { return unary(tp, &add_scalar_op, x, add_scalar_fwd, c); }
ad_value *ad_exp(ad_tape *tp, ad_value *x) { return unary(tp, &exp_op, x, exp_fwd, 0); }
ad_value *ad_log(ad_tape *tp, ad_value *x) { return unary(tp, &log_op, x, log_fwd, 0); }
ad_value *ad_sin(ad_tape *tp, ad_value *x) { return unary(tp, &sin_op, x, sin_fwd, 0); }
ad_value *ad_cos(ad_tape *tp, ad_value *x) { return unary(tp, &cos_op, x, cos_fwd, 0); }
ad_value *ad_tanh(ad_tape *tp, ad_value *x) { return unary(tp, &tanh_op, x, tanh_fwd, 0); }
ad_value *ad_sigmoid(ad_tape *tp, ad_value *x) { return unary(tp, &sigmoid_op, x, sigmoid_fwd, 0); }
ad_value *ad_softplus(ad_tape *tp, ad_value *x) { return unary(tp, &softplus_op, x, softplus_fwd, 0); }
ad_value *ad_relu(ad_tape *tp, ad_value *x) { return unary(tp, &relu_op, x, relu_fwd, 0); }
ad_value *ad_square(ad_tape *tp, ad_value *x) { return unary(tp, &square_op, x, square_fwd, 0); }
ad_value *ad_sqrt(ad_tape *tp, ad_value *x) { return unary(tp, &sqrt_op, x, sqrt_fwd, 0); }
ad_value *ad_pow(ad_tape *tp, ad_value *x, double p) { return unary(tp, &pow_op, x, pow_fwd, p); }

ad_value *ad_step(ad_tape *tp, ad_value *x)
{
    if (ad_check_inputs(tp, "step", 1, &x) != AD_OK) return NULL;
    ad_value *out = ad_const_fill(tp, x->rank, x->shape, 0);
    if (out)
        for (size_t i = 0; i < x->size; i++) out->data[i] = x->data[i] > 0 ? 1 : 0;
    return out;
}
