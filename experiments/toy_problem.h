/* toy_problem.h — the paper's toy problem (Sec. 4.1) as a hg_problem.
 *
 *   g(w, λ) = ½ (w − λ)ᵀ G (w − λ),  G = diag(1, ½),  w0 = (2, 2)
 *   f(w, λ) = ‖w‖² + 10 ‖sin w‖²                       (Fig. 1, 2 left, 4)
 *   f̃(w, λ) = f(w, λ) + 5 ‖λ − (1, 0)‖²                (Fig. 2 right, 3)
 * T steps of gradient descent with step γ. */
#ifndef HYPERTAPE_EXPERIMENTS_TOY_PROBLEM_H
#define HYPERTAPE_EXPERIMENTS_TOY_PROBLEM_H

#include "optim/hypergrad.h"

typedef struct toy {
    ad_value *lam;    /* λ ∈ R², caller-owned, wants a gradient */
    ad_value *G;      /* diag(G) as a vector */
    bool tilde;       /* outer loss f̃ instead of f */
    hg_problem problem;
} toy;

/* Sets up the toy at λ with T steps of step γ; free with toy_free. */
int toy_init(toy *t, double lam1, double lam2, int T, double gamma, bool tilde);
void toy_free(toy *t);
/* The exact ŵ and dλf by the closed form (C = (I − γG)^T), and the
 * truncated h_{T−K}; for tests and for the figures' reference lines. */
void toy_closed_form(const toy *t, int K, double w_hat[2], double h[2]);

#endif
