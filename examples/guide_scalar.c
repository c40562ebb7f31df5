/* guide_scalar.c — docs/guide.md, step 1: y = x·sin x and dy/dx, by hand and
 * by the tape.  `guide-scalar --dot` prints the graph instead (the figure). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ad/ad.h"
#include "ad/node.h" /* struct ad_op, to print a node's op by name */
#include "ops/ops.h"

int main(int argc, char **argv)
{
    const double x0 = 2.0;
    const bool dot = argc > 1 && strcmp(argv[1], "--dot") == 0;

    /* By hand: a forward pass that keeps its intermediate s, then a reverse
     * pass from ȳ = dy/dy = 1 that visits the operations newest first. */
    double s = sin(x0), y = x0 * s;
    double y_bar = 1;
    double x_bar = y_bar * s;  /* y = x·s: ∂y/∂x = s   (x's first use) */
    double s_bar = y_bar * x0; /*          ∂y/∂s = x */
    x_bar += s_bar * cos(x0);  /* s = sin x: ∂s/∂x = cos x   (x's second use adds in) */
    if (!dot) printf("by hand: y = %.12f   dy/dx = %.12f\n", y, x_bar);

    /* By the tape: the same forward pass, written with ops, leaves nodes. */
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *x = ad_param_scalar(x0); /* a leaf that wants a gradient */
    ad_value_set_name(x, "x");
    ad_value *sx = ad_sin(tp, x);
    ad_value *yv = ad_mul(tp, x, sx);
    ad_value_set_name(sx, "s"), ad_value_set_name(yv, "y");
    if (dot) {
        ad_dot_opts opts = { .values = 1, .input_index = true };
        int rc = ad_dot_write_opts(stdout, 1, &yv, &opts);
        ad_tape_free(tp), ad_value_free(x);
        return rc == AD_OK ? 0 : 1;
    }
    ad_value *dx;
    int rc = ad_grad(tp, yv, 1, &x, &dx, false); /* the reverse pass */
    if (rc == AD_OK) {
        printf("tape:    y = %.12f   dy/dx = %.12f\n", yv->data[0], dx->data[0]);
        if (fabs(dx->data[0] - x_bar) > 1e-15) rc = ad_fail(AD_EARG, "tape and hand disagree");
        /* What the tape holds: each value knows its op and its inputs. */
        ad_value *v[] = { yv, sx, x };
        for (int i = 0; i < 3; i++) {
            char ins[64] = "";
            for (int k = 0, n = 0; k < v[i]->n_inputs; k++)
                n += snprintf(ins + n, sizeof ins - (size_t)n, " in[%d] = #%llu", k,
                              (unsigned long long)v[i]->inputs[k]->id);
            printf("  #%llu %-4s%-24s value %.12f\n", (unsigned long long)v[i]->id,
                   v[i]->op ? v[i]->op->name : "leaf", ins, v[i]->data[0]);
        }
    }
    if (rc != AD_OK) fprintf(stderr, "error: %s\n", ad_error());
    ad_tape_free(tp);
    ad_value_free(x);
    return rc == AD_OK ? 0 : 1;
}
