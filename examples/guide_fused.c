/* guide_fused.c — docs/guide.md, step 5: cube(x) = x³ again, its backward now
 * one fused kernel cube_grad(x, g) = 3x²·g.  The kernel is an op, so it needs
 * a backward rule of its own, or second derivatives stop there. */
#include <stdio.h>

#include "ad/node.h"
#include "ops/ops.h"
#include "tests/gradcheck.h"

static ad_value *cube_grad(ad_tape *tp, ad_value *x, ad_value *g);

static int cube_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    gin[0] = cube_grad(tp, out->inputs[0], g);
    return gin[0] ? AD_OK : ad_error_code();
}

/* cube_grad(x, g) = 3x²·g is linear in g, so its adjoint in g is itself;
 * its derivative in x is 6x·g. */
static int cube_grad_backward(ad_tape *tp, ad_value *out, ad_value *gg, ad_value **gin)
{
    ad_value *x = out->inputs[0], *g = out->inputs[1];
    ad_value *x6g = ad_scale(tp, ad_mul(tp, x, g), 6);
    if (ad_input_needs_grad(out, 0) && !(gin[0] = ad_mul(tp, x6g, gg))) return ad_error_code();
    if (ad_input_needs_grad(out, 1) && !(gin[1] = cube_grad(tp, x, gg))) return ad_error_code();
    return AD_OK;
}

static const ad_op cube_op = { "cube", cube_backward };
static int no_rule; /* 1: cube_grad's op has no rule (what ggml's *_back ops do) */
static const ad_op cube_grad_ops[2] = { { "cube_grad", cube_grad_backward },
                                        { "cube_grad", NULL } };

/* x [any shape] -> x³, same shape */
static ad_value *cube(ad_tape *tp, ad_value *x)
{
    ad_value *out = ad_node_new(tp, &cube_op, x->rank, x->shape, 1, &x);
    for (size_t i = 0; out && i < x->size; i++) out->data[i] = x->data[i] * x->data[i] * x->data[i];
    return out;
}

/* x, g [same shape] -> 3x²·g in one pass (the rule in ops made three values) */
static ad_value *cube_grad(ad_tape *tp, ad_value *x, ad_value *g)
{
    ad_value *in[2] = { x, g };
    ad_value *out = ad_node_new(tp, &cube_grad_ops[no_rule], x->rank, x->shape, 2, in);
    for (size_t i = 0; out && i < x->size; i++)
        out->data[i] = 3 * x->data[i] * x->data[i] * g->data[i];
    return out;
}

static ad_value *build(ad_tape *tp, ad_value *const *x, void *ctx) { return cube(tp, x[0]); }

int main(void)
{
    ad_rng rng;
    ad_rng_seed(&rng, 5);
    ad_value *x = gc_param(&rng, 2, (int[]){ 2, 3 }, -2, 2, 0);
    int surprises = 0;
    for (no_rule = 0; no_rule < 2; no_rule++) {
        const char *name = no_rule ? "fused, no rule" : "fused, own rule";
        fflush(stdout); /* the harness explains a failure on stderr */
        int bad = gc_check(name, build, NULL, 1, &x, NULL);
        printf("%-15s gradient checks: %s\n", name, bad ? "FAIL" : "pass");
        surprises += bad != no_rule;
    }
    ad_value_free(x);
    return surprises == 0 ? 0 : 1;
}
