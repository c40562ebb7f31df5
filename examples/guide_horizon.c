/* guide_horizon.c — docs/guide.md, step 7: the toy's step w_t = w_{t−1} − γG(w_{t−1} − λ), one tape
 * step each, then f = ½‖w_T‖²: a tape that keeps K steps gives h_{T−K}, not dλf. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ad/ad.h"
#include "ops/ops.h"

/* h into h[2]; returns the tape's peak bytes (0 on failure, with a message).  With `dot` ("before"
 * or "after"), draws w_T around the opening of f's step: on a K = 2 tape with T = 3, a release. */
static size_t run(int K, int T, bool verbose, const char *dot, double h[2])
{
    char name[16]; /* "w1", "w2", …: labels for the drawings (ad_value_set_name copies them) */
    ad_tape *tp = ad_tape_new(K);
    ad_value *lam = ad_param_from(1, (int[]){ 2 }, (ad_real[]){ 1, 1 }), *dlam;
    ad_value *G = ad_tensor_from(1, (int[]){ 2 }, (ad_real[]){ 0.1, 0.05 }); /* γG */
    ad_value *w = ad_tensor_from(1, (int[]){ 2 }, (ad_real[]){ 2, 2 }), *w0 = w;
    ad_value_set_name(lam, "λ"), ad_value_set_name(G, "γG"), ad_value_set_name(w, "w0");
    ad_dot_opts opts = { .values = 2, .steps = true };
    int rc = AD_OK;
    for (int t = 1; t <= T && w && rc == AD_OK; t++) {
        rc = ad_tape_step(tp); /* closes step t−1; releases the oldest beyond K */
        w = ad_sub(tp, w, ad_mul(tp, G, ad_sub(tp, w, lam)));
        if (w) snprintf(name, sizeof name, "w%d", t), ad_value_set_name(w, name);
        if (verbose) printf("  t = %d: %zu steps held, %4zu bytes\n", t, ad_tape_steps_held(tp),
                            ad_tape_bytes(tp));
    }
    if (rc == AD_OK && dot && !strcmp(dot, "before")) rc = ad_dot_write_opts(stdout, 1, &w, &opts);
    if (rc == AD_OK) rc = ad_tape_step(tp); /* f in a step of its own: K held inner steps */
    if (rc == AD_OK && dot && !strcmp(dot, "after")) rc = ad_dot_write_opts(stdout, 1, &w, &opts);
    if (rc == AD_OK) rc = ad_grad(tp, ad_scale(tp, ad_sqnorm(tp, w), 0.5), 1, &lam, &dlam, false);
    size_t peak = rc == AD_OK ? ad_tape_peak_bytes(tp) : 0;
    for (int i = 0; i < 2 && peak; i++) h[i] = dlam->data[i];
    if (!peak) fprintf(stderr, "error: %s\n", ad_error());
    ad_tape_free(tp), ad_value_free(lam), ad_value_free(G), ad_value_free(w0);
    return peak;
}

int main(int argc, char **argv)
{
    double h[2], c[2], worst = 0;
    if (argc > 2 && strcmp(argv[1], "--dot") == 0) return run(2, 3, false, argv[2], h) ? 0 : 1;
    printf("K = 2, T = 6, bytes the tape holds after each step:\n");
    size_t ok = run(2, 6, true, NULL, h);
    for (int K = 1; K <= 6 && ok; K += K < 2 ? 1 : 4) { /* K = 1, 2, and 6 = T: full */
        ok = run(K, 6, false, NULL, h);
        for (int i = 0; i < 2; i++) { /* h_{T−K} = Σ_{k<K} γG (I − γG)^k ∇f, ∇f = w_T */
            double a = 1 - (i ? 0.05 : 0.1), wT = pow(a, 6) * 2 + (1 - pow(a, 6)) * 1;
            c[i] = (1 - pow(a, K)) * wT;
            worst = fmax(worst, fabs(h[i] - c[i]));
        }
        printf("K = %d: tape (%.12f, %.12f)   closed form (%.12f, %.12f)\n", K, h[0], h[1],
               c[0], c[1]);
    }
    for (int T = 100; T <= 1000 && ok; T *= 10)
        printf("T = %4d: peak tape bytes %4zu with K = 2, %6zu with K = all\n", T,
               run(2, T, false, NULL, h), run(AD_HORIZON_ALL, T, false, NULL, h));
    if (ok && worst >= 1e-15) fprintf(stderr, "error: tape and closed form: %.1e apart\n", worst);
    return ok && worst < 1e-15 ? 0 : 1;
}
