/* guide_step.c — docs/guide.md, step 6: one inner step of the paper's toy
 * problem, w1 = w0 − γ ∇w g(w0, λ), with ∇w g taken on the tape
 * (create_graph), so that w1 is a graph of w0 and λ; then the paper's
 * A_1 = (∂w1/∂w0)ᵀ and B_1 = (∂w1/∂λ)ᵀ applied to a vector by one reverse sweep.
 * `guide-step --dot` prints the graph of w1 instead (the figure). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ad/ad.h"
#include "ops/ops.h"

int main(int argc, char **argv)
{
    const double gamma = 0.1;
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *lam = ad_param_from(1, (int[]){ 2 }, (ad_real[]){ 1, 1 });
    ad_value *G = ad_tensor_from(1, (int[]){ 2 }, (ad_real[]){ 1, 0.5 }); /* diag(G) */
    ad_value *w0 = ad_param_from(1, (int[]){ 2 }, (ad_real[]){ 2, 2 });
    ad_value_set_name(lam, "λ"), ad_value_set_name(G, "G"), ad_value_set_name(w0, "w0");

    ad_value *d = ad_sub(tp, w0, lam); /* g(w, λ) = ½ (w − λ)ᵀ G (w − λ) */
    ad_value *g = ad_scale(tp, ad_dot(tp, d, ad_mul(tp, G, d)), 0.5), *gw;
    int rc = ad_grad(tp, g, 1, &w0, &gw, true); /* ∇w g = G (w − λ), recorded */
    ad_value *w1 = rc == AD_OK ? ad_sub(tp, w0, ad_scale(tp, gw, gamma)) : NULL;
    if (w1) ad_value_set_name(gw, "∇w g"), ad_value_set_name(w1, "w1");
    if (w1 && argc > 1 && strcmp(argv[1], "--dot") == 0) {
        ad_dot_opts opts = { .values = 2, .input_index = true, .names = true };
        rc = ad_dot_write_opts(stdout, 1, &w1, &opts);
    } else if (w1) {
        printf("w1 = (%.4f, %.4f)   by hand w0 - γG(w0 - λ) = (%.4f, %.4f)\n", w1->data[0],
               w1->data[1], 2 - gamma * 1 * (2 - 1), 2 - gamma * 0.5 * (2 - 1));
        /* One sweep from w1 with seed v gives A_1 v and B_1 v together. */
        ad_value *v = ad_const(tp, 1, (int[]){ 2 }, (ad_real[]){ 1, 1 }), *ab[2];
        rc = ad_vjp(tp, w1, v, 2, (ad_value *[]){ w0, lam }, ab, false);
        if (rc == AD_OK) {
            printf("A_1 v = (%.4f, %.4f)   I - γG = diag(%.4f, %.4f)\n", ab[0]->data[0],
                   ab[0]->data[1], 1 - gamma * 1, 1 - gamma * 0.5);
            printf("B_1 v = (%.4f, %.4f)   γG     = diag(%.4f, %.4f)\n", ab[1]->data[0],
                   ab[1]->data[1], gamma * 1, gamma * 0.5);
            double off = fabs(ab[0]->data[0] - 0.9) + fabs(ab[0]->data[1] - 0.95) +
                         fabs(ab[1]->data[0] - 0.1) + fabs(ab[1]->data[1] - 0.05);
            if (off > 1e-12) rc = ad_fail(AD_EARG, "A_1 or B_1 is not what the formula says");
        }
    }
    if (rc != AD_OK || !w1) fprintf(stderr, "error: %s\n", ad_error());
    ad_tape_free(tp);
    ad_value_free(lam), ad_value_free(G), ad_value_free(w0);
    return rc == AD_OK && w1 ? 0 : 1;
}
