/* gradcheck.h — first- and second-order gradient checks against central
 * finite differences, in double.
 *
 * The function under test may return a tensor of any shape; the harness
 * reduces it to the scalar L(x) = Σ r ⊙ f(x) + ½ Σ f(x)² with a fixed random
 * r, so every output entry is weighed, and the Hessian is not zero even for
 * a linear op (whose backward rule is then differentiated too).  Then, for
 * every input that wants a gradient:
 *   first order:  ∇L from ad_grad         vs  (L(x+εeⱼ) − L(x−εeⱼ)) / 2ε
 *   recorded:     ∇L with create_graph    vs  ∇L from the plain sweep (1e-12)
 *   second order: H·v from double backward vs  (∇L(x+εv) − ∇L(x−εv)) / 2ε,
 *                 for two independent random directions v
 * The error of one entry is |a − n| / max(1, |a|, |n|): relative for large
 * entries, absolute near zero, so it never divides by a tiny number.
 * Inputs should keep away from kinks (relu at 0, max ties).
 *
 * In the float build the finite differences cannot use such small steps:
 * the harness overrides the step (2^-10, and 2^-12 for second order) and
 * the tolerances (at least 1e-2), measures an entry's error on the scale of
 * the largest entry of its vector, and lets an entry that fails the central
 * difference pass on a one-sided one (a kink within the step on the other
 * side).  It still fails on a wrong rule or a wrong float kernel; see
 * gradcheck.c for the numbers. */
#ifndef HYPERTAPE_TESTS_GRADCHECK_H
#define HYPERTAPE_TESTS_GRADCHECK_H

#include "ad/ad.h"

typedef ad_value *(*gc_build)(ad_tape *tp, ad_value *const *x, void *ctx);

typedef struct gc_opts {
    double eps;      /* finite-difference step (default 1e-6; float: 2^-10) */
    double tol;      /* first-order tolerance (default 1e-6; float: 1e-2) */
    double tol2;     /* second-order tolerance (default 1e-5; float: 1e-2) */
    bool skip_second; /* only for ops documented as first-order only (none now) */
} gc_opts;

/* Returns 0 when both checks pass; otherwise prints the worst entry to
 * stderr (naming `name`) and returns 1. NULL opts means the defaults. */
int gc_check(const char *name, gc_build f, void *ctx, int n, ad_value *const *x,
             const gc_opts *opts);

/* Random values in [lo, hi] whose magnitude is at least min_abs (away from a
 * kink at 0); caller-owned, marked as wanting a gradient. */
ad_value *gc_param(ad_rng *rng, int rank, const int *shape, double lo, double hi,
                   double min_abs);

#endif
