/* guide_sweep.c — docs/guide.md, step 3: the reverse sweep, watched through an op of our own,
 * `trace`: its forward is the identity, its backward prints the gradient that reached it. */
#include <math.h>
#include <stdio.h>

#include "ad/node.h"
#include "ops/ops.h"

static int trace_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    printf("  rule of %s (#%llu) runs: its gradient is %.6f\n", out->name,
           (unsigned long long)out->id, (double)g->data[0]);
    gin[0] = g; /* the identity's vector-Jacobian product: g itself */
    return AD_OK;
}

static const ad_op trace_op = { "trace", trace_backward, ad_reads_nothing };

/* x, unchanged, as a node named `name` (x: a scalar). */
static ad_value *trace(ad_tape *tp, ad_value *x, const char *name)
{
    ad_value *out = ad_node_new(tp, &trace_op, x->rank, x->shape, 1, &x);
    if (out) out->data[0] = x->data[0], ad_value_set_name(out, name);
    return out;
}

int main(void)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *z = ad_param_scalar(0.5);                       /* the first id, #1 */
    ad_value *k = trace(tp, ad_square(tp, z), "k");           /* k = z²      */
    ad_value *x = ad_param_scalar(1.5);                       /* newer than k */
    ad_value *u = trace(tp, ad_square(tp, x), "u");           /* u = x²      */
    ad_value *v = trace(tp, ad_sin(tp, u), "v");              /* v = sin u   */
    ad_value *w = trace(tp, ad_scale(tp, z, 3), "w");         /* w = 3z      */
    ad_value *y = trace(tp, ad_add(tp, ad_add(tp, v, u), ad_add(tp, w, k)), "y");
    printf("y = sin(x^2) + x^2 + 3z + z^2 = %.6f; ids:", (double)y->data[0]);
    ad_value *all[] = { z, k, x, u, v, w, y };
    for (int i = 0; i < 7; i++) printf(" %c #%llu", "zkxuvwy"[i], (unsigned long long)all[i]->id);
    double x0 = x->data[0], z0 = z->data[0];
    double want[] = { 2 * x0 * cos(x0 * x0) + 2 * x0, 3 + 2 * z0 }; /* dy/dx, dy/dz by hand */

    ad_value *targets[][2] = { { x }, { z }, { x, z } }, *g[2];
    int rc = AD_OK;
    for (int c = 0; c < 3 && rc == AD_OK; c++) {
        int n = c < 2 ? 1 : 2;
        printf("\ngrad(y, %s):\n", (const char *[]){ "x", "z", "x and z" }[c]);
        rc = ad_grad(tp, y, n, targets[c], g, false);
        for (int i = 0; i < n && rc == AD_OK; i++) {
            int j = targets[c][i] == x ? 0 : 1; /* the hand result it must match */
            printf("  dy/d%c = %.6f", "xz"[j], (double)g[i]->data[0]);
            if (fabs(g[i]->data[0] - want[j]) > 1e-12) rc = ad_fail(AD_EARG, "differs by hand");
        }
    }
    printf("\nby hand: dy/dx = 2x cos(x^2) + 2x = %.6f   dy/dz = 3 + 2z = %.6f\n", want[0],
           want[1]);
    if (rc != AD_OK) fprintf(stderr, "error: %s\n", ad_error());
    ad_tape_free(tp), ad_value_free(z), ad_value_free(x);
    return rc == AD_OK ? 0 : 1;
}
