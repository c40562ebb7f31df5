/* guide_op.c — docs/guide.md, step 5: a new op, cube(x) = x³, with its
 * backward rule written in ops, checked by the harness every op of the
 * library passes (tests/gradcheck.c) — and a wrong rule, which it catches. */
#include <stdio.h>

#include "ad/node.h"
#include "ops/ops.h"
#include "tests/gradcheck.h"

static int wrong; /* 1: use the wrong rule d(x³) = 2x² dx */

/* d(x³) = 3x² dx: the incoming gradient g times 3x², both made by ops */
static int cube_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    ad_value *x = out->inputs[0];
    gin[0] = ad_mul(tp, g, ad_scale(tp, ad_square(tp, x), wrong ? 2 : 3));
    return gin[0] ? AD_OK : ad_error_code();
}

static const ad_op cube_op = { "cube", cube_backward, ad_reads_inputs }; /* the rule reads x */

/* x [any shape] -> x³, same shape */
static ad_value *cube(ad_tape *tp, ad_value *x)
{
    if (!x) return NULL; /* an earlier op failed: keep its message */
    ad_value *out = ad_node_new(tp, &cube_op, x->rank, x->shape, 1, &x);
    for (size_t i = 0; out && i < x->size; i++) out->data[i] = x->data[i] * x->data[i] * x->data[i];
    return out;
}

static ad_value *build(ad_tape *tp, ad_value *const *x, void *ctx) { return cube(tp, x[0]); }

int main(void)
{
    ad_rng rng;
    ad_rng_seed(&rng, 5);
    ad_value *x = gc_param(&rng, 2, (int[]){ 2, 3 }, -2, 2, 0); /* [2,3], entries in [−2, 2] */
    int surprises = 0;
    for (wrong = 0; wrong < 2; wrong++) {
        const char *name = wrong ? "cube, wrong rule" : "cube";
        fflush(stdout); /* the harness explains a failure on stderr */
        int bad = gc_check(name, build, NULL, 1, &x, NULL);
        printf("%-16s gradient checks: %s\n", name, bad ? "FAIL" : "pass");
        surprises += bad != wrong;
    }
    ad_value_free(x);
    if (surprises) fprintf(stderr, "error: the checks must pass the right rule, fail the wrong\n");
    return surprises == 0 ? 0 : 1;
}
