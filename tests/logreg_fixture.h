/* logreg_fixture.h — pieces of the small logistic-regression bilevel problem
 * that the inner_opt and profile suites both build (each with its own sizes,
 * data and variants): the loss and two custom inner updates whose state or
 * step depends on λ.  lam[0] is λ (per-feature log L2), lam[1] the update's
 * θ, shaped like w (LOGREG_D entries). */
#ifndef HYPERTAPE_TESTS_LOGREG_FIXTURE_H
#define HYPERTAPE_TESTS_LOGREG_FIXTURE_H

#include "optim/hypergrad.h"

enum { LOGREG_D = 3 }; /* features */

/* mean softplus(−y ⊙ Xw): X [N,LOGREG_D], y [N] in {−1, +1}, w [LOGREG_D] */
ad_value *logreg_loss(ad_tape *tp, ad_value *X, ad_value *y, ad_value *w);

/* The problem's data, caller-owned: training X [N,LOGREG_D], y [N] in {−1, +1}
 * and validation Xv, yv.  A suite's own problem struct puts it first, so the
 * callbacks below take that struct as their ctx (C11 6.7.2.1: a pointer to a
 * struct, converted, points to its first member). */
typedef struct logreg_data {
    ad_value *X, *y, *Xv, *yv;
} logreg_data;

/* g = logreg_loss(X, y, w) + ½ Σ e^λ ⊙ w² (λ = lam[0], per-feature log L2) */
ad_value *logreg_inner(ad_tape *tp, ad_value *const *w, ad_value *const *lam, int t, void *ctx);
/* f = logreg_loss(Xv, yv, w) */
ad_value *logreg_outer(ad_tape *tp, ad_value *const *w, ad_value *const *lam, void *ctx);

/* Heavy ball with one learned log step per coordinate: v ← 0.5 v + ∇g,
 * w ← w − e^θ ⊙ v. */
int logreg_percoord_step(ad_tape *tp, int n_w, ad_value *const *w, ad_value *const *s,
                         ad_value *const *gw, ad_value *const *lam, int t, ad_value **w_new,
                         ad_value **s_new, void *ctx);

/* AdaGrad with a learned initial accumulator: a_0 = e^θ (so the state's
 * start depends on λ), a ← a + ∇g², w ← w − 0.3 ∇g/√a. */
int logreg_adagrad_init(ad_tape *tp, int n_w, ad_value *const *w0, ad_value *const *lam,
                        ad_value **s0, void *ctx);
int logreg_adagrad_step(ad_tape *tp, int n_w, ad_value *const *w, ad_value *const *s,
                        ad_value *const *gw, ad_value *const *lam, int t, ad_value **w_new,
                        ad_value **s_new, void *ctx);

#endif
