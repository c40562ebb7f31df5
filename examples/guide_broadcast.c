/* guide_broadcast.c — docs/guide.md, step 2: tensors, broadcasting, and why
 * ad_sum_to is broadcasting's gradient. */
#include <float.h>
#include <math.h>
#include <stdio.h>

#include "ad/ad.h"
#include "ops/ops.h"

/* "name [2,3] = 1 2 3 | 4 5 6": a row-major tensor, rows split by |. */
static void show(const char *name, const ad_value *v)
{
    char shape[64];
    printf("%-17s %-5s =", name, ad_shape_str(v, shape, sizeof shape));
    int row = v->rank == 2 ? v->shape[1] : (int)v->size;
    for (size_t i = 0; i < v->size; i++)
        printf("%s %g", i > 0 && i % (size_t)row == 0 ? " |" : "", (double)v->data[i]);
    printf("\n");
}

int main(void)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *x = ad_tensor_from(2, (int[]){ 2, 3 }, (ad_real[]){ 1, 2, 3, 4, 5, 6 });
    ad_value *b = ad_param_from(1, (int[]){ 3 }, (ad_real[]){ 0.5, 0.25, 0.125 }); /* per column */
    ad_value *c = ad_param_from(2, (int[]){ 2, 1 }, (ad_real[]){ 10, 20 });       /* per row */

    /* y[i][j] = x[i][j]·c[i] + b[j]: c stretches along the columns, b along the rows. */
    ad_value *y = ad_add(tp, ad_mul(tp, x, c), b);
    ad_value *L = ad_scale(tp, ad_sqnorm(tp, y), 0.5), *g[2]; /* L = ½ Σ y², so ∂L/∂y = y */
    if (ad_grad(tp, L, 2, (ad_value *[]){ b, c }, g, false) != AD_OK) {
        fprintf(stderr, "error: %s\n", ad_error());
        return 1;
    }
    show("y = x*c + b", y), show("dL/db", g[0]), show("dL/dc", g[1]);

    /* b[j] was used once per row, so its gradient adds up column j of ∂L/∂y; c[i] once per
     * column, so it adds up row i of x ⊙ ∂L/∂y.  Adding up along stretched axes is ad_sum_to: */
    ad_value *sb = ad_sum_to(tp, y, 1, (int[]){ 3 });
    ad_value *sc = ad_sum_to(tp, ad_mul(tp, x, y), 2, (int[]){ 2, 1 });
    show("sum_to(y, [3])", sb), show("sum_to(x*y,[2,1])", sc);

    /* The pair is adjoint: <broadcast_to(v), G> = <v, sum_to(G)> for every v, G, but only up to
     * rounding: the left adds the six vⱼGᵢⱼ, the right sums columns first, so they round up to 6
     * and 4 times, each by ε/2 of Σ|vⱼGᵢⱼ| at most (Higham's bound for sums): 5ε Σ|vⱼGᵢⱼ|. */
    ad_value *v = ad_tensor_from(1, (int[]){ 3 }, (ad_real[]){ 1, -2, 3 });
    ad_value *G = ad_tensor_from(2, (int[]){ 2, 3 }, (ad_real[]){ 0.5, 1, 2, -1, 4, 8 });
    double l = ad_dot(tp, ad_broadcast_to(tp, v, 2, (int[]){ 2, 3 }), G)->data[0], tol = 0;
    double r = ad_dot(tp, v, ad_sum_to(tp, G, 1, (int[]){ 3 }))->data[0];
    const double eps = sizeof(ad_real) == sizeof(float) ? FLT_EPSILON : DBL_EPSILON;
    for (int k = 0; k < 6; k++) tol += 5 * eps * fabs(v->data[k % 3] * G->data[k]);
    printf("<broadcast_to(v), G> = %g   <v, sum_to(G)> = %g\n", l, r);
    const char *bad = fabs(l - r) > tol ? "<broadcast_to(v), G> != <v, sum_to(G)>" : NULL;
    for (int k = 0; k < 3; k++) /* the gradients are these very sums: equal exactly */
        if (g[0]->data[k] != sb->data[k] || (k < 2 && g[1]->data[k] != sc->data[k]))
            bad = "a gradient is not the sum_to above";
    if (bad) fprintf(stderr, "error: %s\n", bad);
    ad_tape_free(tp);
    for (int i = 0; i < 5; i++) ad_value_free((ad_value *[]){ x, b, c, v, G }[i]);
    return bad ? 1 : 0;
}
