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
 *
 * Parameter groups (PyTorch's param_groups): one optimizer over tensors that
 * want different step sizes, e.g. a penalty λ and an inner step size γ:
 *
 *     ad_value *hyper[2] = { lam, log_gamma }, *dhyper[2];
 *     opt_outer_init(&o, OPT_ADAM, 0.1, true, 1, &hyper[0]);   // group 0: λ
 *     opt_outer_add_group(&o, 0.01, true, 1, &hyper[1]);       // group 1: log γ
 *     o.groups[1].beta2 = 0.99;                                // optional, before a step
 *     ...
 *     opt_outer_step(&o, dhyper);          // gradients in the order of o.params
 *
 * Every group moves at every step and shares the step count τ. A step is
 * all or nothing: a gradient entry that is NaN or Inf, or one that would make
 * an Adam moment or a parameter entry NaN or Inf (an Adam gradient of 1e308
 * squares to Inf), fails the step with AD_ENONFINITE before anything changes.
 */
#ifndef HYPERTAPE_OPTIM_OUTER_H
#define HYPERTAPE_OPTIM_OUTER_H

#include <stdio.h>

#include "ad/ad.h"

typedef enum { OPT_SGD, OPT_ADAM } opt_kind;

/* One parameter group: consecutive tensors of o->params with step settings of
 * their own.  The settings may be changed between steps; opt_outer_step
 * refuses (AD_EARG) an η0 that is not finite and > 0, a β outside [0, 1) or
 * an ε that is not finite and > 0.  SGD reads only eta0 and sqrt_decay. */
typedef struct opt_group {
    int first, n;               /* its tensors: params[first .. first+n-1] */
    size_t offset, dim;         /* its entries of m and v: [offset, offset+dim) */
    double eta0;                /* the step η0 */
    bool sqrt_decay;            /* η_τ = η0/√τ, else η0 */
    double beta1, beta2, eps;   /* Adam (0.9, 0.999, 1e-8 unless changed) */
} opt_group;

typedef struct opt_outer {
    opt_kind kind;
    int n;                      /* tensors updated, over all groups */
    ad_value **params;          /* those tensors, group by group; the array is owned, the
                                   tensors are not */
    size_t dim;                 /* total entries */
    int n_groups;               /* at least 1 */
    opt_group *groups;          /* owned */
    double *m, *v;              /* Adam moments, dim each (NULL for SGD), owned */
    int tau;                    /* updates done */
} opt_outer;

/* Initializes o with one group: the n caller-owned leaves `params` (λ), which
 * each step updates in place, with step eta0 (> 0), decaying as η0/√τ when
 * sqrt_decay, and Adam's defaults β1 = 0.9, β2 = 0.999, ε = 1e-8.  AD_OK, or
 * AD_EARG (a parameter that is NULL, made by a tape, or listed twice; a bad
 * eta0 or kind) or AD_ENOMEM, with o left empty (opt_outer_free on it is
 * harmless).
 * The tensors must outlive o; release o with opt_outer_free. */
AD_MUST_CHECK int opt_outer_init(opt_outer *o, opt_kind kind, double eta0, bool sqrt_decay, int n,
                                 ad_value *const *params);
/* Adds a group of n more caller-owned leaves after those o holds, with its own
 * eta0 and sqrt_decay; β1, β2 and ε are copied from group 0.  Only before the
 * first step (Adam's bias correction counts from the first step for every
 * group).  AD_OK, or AD_EARG (as opt_outer_init, a tensor already in o, or
 * o has stepped) or AD_ENOMEM, with o as it was. */
AD_MUST_CHECK int opt_outer_add_group(opt_outer *o, double eta0, bool sqrt_decay, int n,
                                      ad_value *const *params);
/* One update from grads[0 .. o->n-1], shaped like o->params (group 0's
 * tensors first, then group 1's, ...): λ ← λ − η_τ · update, for each group
 * with its own η_τ.  AD_OK; AD_EARG for a NULL argument, a released gradient
 * or freed parameter, or bad settings,
 * AD_ESHAPE for a gradient that does not match its parameter; AD_ENONFINITE
 * when a gradient entry is NaN or Inf, or the update would make an Adam
 * moment or a parameter entry NaN or Inf — the message names the tensor
 * (its index in o->params) and the entry.  On failure nothing changes: the
 * parameters, the moments and τ are as before the call. */
AD_MUST_CHECK int opt_outer_step(opt_outer *o, ad_value *const *grads);
/* The η0 for which the first update from `grads` (n tensors) has norm
 * `target`, when every tensor gets the same η0; 0 when every gradient entry
 * is 0 or a gradient is not finite, and (with a message) for NULL arguments. */
double opt_outer_eta0_for_norm(opt_kind kind, int n, ad_value *const *grads, double target);
/* Frees what o owns (not the parameters) and leaves o empty; o may be NULL,
 * zeroed, or left by a failed opt_outer_init. */
void opt_outer_free(opt_outer *o);

/* Writes o's state — kind, groups (sizes and step settings), updates done
 * and Adam's moments, not the parameters — to f, in a binary layout of this
 * machine (resume on the machine that saved).  An optimizer of one group is
 * written in version 1 of the layout, the one every checkpoint used before
 * groups existed, so older readers still read it; several groups need
 * version 2.  AD_OK, or AD_EARG (NULL) or AD_EIO when a write fails. */
AD_MUST_CHECK int opt_outer_save(const opt_outer *o, FILE *f);
/* Reads what opt_outer_save wrote (either version) into o, which must have
 * been initialized with the same kind and groups of the same sizes (number of
 * tensors and entries of each); the step settings and τ come from f.
 * AD_EFORMAT, with a message naming the field, when f ends early, holds
 * another kind or other groups, or a value no optimizer can hold (a step eta0
 * that is not finite and positive, β outside [0, 1), ε not positive, a
 * negative step count, a moment that is not finite, a negative second
 * moment); AD_EARG for NULL.  o is unchanged on failure. */
AD_MUST_CHECK int opt_outer_load(opt_outer *o, FILE *f);

#endif
