/*
 * outer.h — optimizers for the hyperparameters λ: SGD and Adam, with the
 * decaying step η_τ = η0/√τ the paper uses, and a helper that picks η0 so
 * the first update has a given norm (the paper tunes η0 per K this way, so
 * that every K starts with the same step).
 *
 *     opt_outer o;
 *     opt_outer_init(&o, OPT_ADAM, eta0, true, n, lam);
 *     for (int tau = 1; tau <= 1000; tau++) {
 *         hg_krmd(&problem, K, dlam, NULL);
 *         opt_outer_step(&o, dlam);        // λ ← λ − η_τ · update
 *         ...free dlam...
 *     }
 *     opt_outer_free(&o);
 */
#ifndef HYPERTAPE_OPTIM_OUTER_H
#define HYPERTAPE_OPTIM_OUTER_H

#include <stdio.h>

#include "ad/ad.h"

typedef enum { OPT_SGD, OPT_ADAM } opt_kind;

typedef struct opt_outer {
    opt_kind kind;
    double eta0;
    bool sqrt_decay;            /* η_τ = η0/√τ, else η0 */
    double beta1, beta2, eps;   /* Adam (0.9, 0.999, 1e-8 by default) */
    int n;                      /* tensors updated */
    ad_value **params;          /* not owned */
    size_t dim;                 /* total entries */
    double *m, *v;              /* Adam moments, owned */
    int tau;                    /* updates done */
} opt_outer;

/* params: n caller-owned leaves (λ) that each step updates in place. */
int opt_outer_init(opt_outer *o, opt_kind kind, double eta0, bool sqrt_decay, int n,
                   ad_value *const *params);
/* One update from the gradients (shaped like params). Rejects NaN/Inf
 * gradients with AD_ENONFINITE and leaves params untouched. */
int opt_outer_step(opt_outer *o, ad_value *const *grads);
/* The η0 for which the first update from `grads` has norm `target`. */
double opt_outer_eta0_for_norm(opt_kind kind, int n, ad_value *const *grads, double target);
void opt_outer_free(opt_outer *o);

/* Writes o's state — kind, step settings, updates done and Adam's moments,
 * not the parameters — to f, in a binary layout of this machine (resume on
 * the machine that saved).  AD_OK, or AD_EIO when a write fails. */
int opt_outer_save(const opt_outer *o, FILE *f);
/* Reads what opt_outer_save wrote into o, which must have been initialized
 * (opt_outer_init) with the same kind over parameters of the same total
 * size.  AD_EFORMAT, with a message naming the field, when f ends early,
 * holds another kind or size, or a value no optimizer can hold (a step eta0
 * that is not finite and positive, β outside [0, 1), ε not positive, a
 * negative step count, a moment that is not finite, a negative second
 * moment).  o is unchanged on failure. */
int opt_outer_load(opt_outer *o, FILE *f);

#endif
