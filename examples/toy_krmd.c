/* The paper's toy problem, written as graph code, and its K-RMD hypergradient. */
#include <stdio.h>

#include "ad/ad.h"
#include "ops/ops.h"

int main(void)
{
    const int T = 100, K = 10;
    ad_tape *tp = ad_tape_new(K);                 /* keep only the last K steps */
    ad_value *lam = ad_param_from(1, (int[]){ 2 }, (ad_real[]){ 1, 1 });
    ad_value *G = ad_tensor_from(1, (int[]){ 2 }, (ad_real[]){ 1, 0.5 });
    ad_value *w = ad_param_from(1, (int[]){ 2 }, (ad_real[]){ 2, 2 }), *w0 = w;
    int rc = AD_OK;
    for (int t = 1; t <= T && rc == AD_OK; t++) {
        rc = ad_tape_step(tp);                    /* one inner iteration = one step */
        ad_value *d = ad_sub(tp, w, lam);         /* g = ½ (w−λ)ᵀ G (w−λ) */
        ad_value *g = ad_scale(tp, ad_dot(tp, d, ad_mul(tp, G, d)), 0.5), *gw;
        if (rc == AD_OK) rc = ad_grad(tp, g, 1, &w, &gw, true);    /* ∇w g, on the tape */
        if (rc == AD_OK) w = ad_sub(tp, w, ad_scale(tp, gw, 0.1)); /* w ← w − γ ∇w g */
    }
    if (rc == AD_OK) rc = ad_tape_step(tp);       /* f = ‖ŵ‖² + 10 ‖sin ŵ‖² */
    ad_value *f = ad_add(tp, ad_sqnorm(tp, w), ad_scale(tp, ad_sqnorm(tp, ad_sin(tp, w)), 10));
    ad_value *h;                                  /* h_{T−K}: the path stops K steps back */
    if (rc == AD_OK) rc = ad_grad(tp, f, 1, &lam, &h, false);
    if (rc == AD_OK)
        printf("h_{T-K} = (%.10f, %.10f), tape peak %zu bytes\n", h->data[0], h->data[1],
               ad_tape_peak_bytes(tp));
    else
        fprintf(stderr, "error: %s\n", ad_error());
    ad_tape_free(tp);
    ad_value_free(lam), ad_value_free(G), ad_value_free(w0);
    return rc == AD_OK ? 0 : 1;
}
