/*
 * hypergrad.h — bilevel problems as ordinary graph code, and every way this
 * library knows to compute their hypergradient.
 *
 *     min_λ f(ŵ(λ), λ)   where ŵ = w_T,  w_t = Φ(w_{t−1}, λ, t)
 *
 * Φ is a step of a differentiable inner optimizer (gradient descent or heavy
 * ball) on the inner loss g(w, λ, t).  A problem is three callbacks that
 * build graphs — w0(λ), g(w, λ, t), f(w, λ) — plus T and the optimizer:
 *
 *     static ad_value *inner(ad_tape *tp, ad_value *const *w,
 *                            ad_value *const *lam, int t, void *ctx)
 *     {   // ½ (w − λ)ᵀ G (w − λ)
 *         ad_value *d = ad_sub(tp, w[0], lam[0]);
 *         return ad_scale(tp, ad_dot(tp, d, ad_mul(tp, G, d)), 0.5);
 *     }
 *     ...
 *     hg_problem p = { .n_w = 1, .n_hyper = 1, .hyper = &lam, .T = 100,
 *                      .init = init, .inner = inner, .outer = outer,
 *                      .opt = { .kind = HG_GD, .step = 0.1 } };
 *     ad_value *h;  hg_report r;
 *     hg_krmd(&p, 10, &h, &r);       // 10-step truncated back-propagation
 *
 * Estimators (each returns dλ as caller-owned tensors shaped like λ, and a
 * report of what it cost):
 *   hg_krmd        K-RMD: the first T−K steps run detached, the last K on a
 *                  tape of horizon K; K ≥ T is full RMD (exact).
 *   hg_checkpoint  full or K-truncated RMD keeping the state only at about
 *                  √(window) checkpoints and replaying each segment
 *                  backwards: the same numbers, O(M√T) memory.
 *   hg_fmd         forward mode: carries Z_t = dw_t/dλ one direction at a
 *                  time; exact; memory independent of T; cost × dim λ.
 *   hg_implicit_cg / hg_neumann
 *                  implicit differentiation at ŵ (treats ŵ as a stationary
 *                  point of g): conjugate gradient on ∇²g v = ∇ŵf, or the
 *                  K-term Neumann series that h_{T−K} approximates (Sec. 3.3).
 */
#ifndef HYPERTAPE_OPTIM_HYPERGRAD_H
#define HYPERTAPE_OPTIM_HYPERGRAD_H

#include "ad/ad.h"

/* ---- the problem -------------------------------------------------------- */

typedef enum { HG_GD, HG_MOMENTUM } hg_inner_kind;

/* The inner optimizer.  step (γ) and momentum (μ) are numbers, unless
 * step_hyper / momentum_hyper point at a rank-0 hyperparameter (one of
 * hg_problem.hyper) that holds them, so γ or μ is learned with the rest;
 * NULL (what a designated initializer leaves) means "use the number".
 *   GD:        w ← w − γ ∇w g
 *   momentum:  v ← μ v + ∇w g;  w ← w − γ v     (v starts at 0)            */
typedef struct hg_inner_opt {
    hg_inner_kind kind;
    double step;
    double momentum;
    ad_value *step_hyper;     /* NULL or one of hyper[], rank 0 */
    ad_value *momentum_hyper; /* NULL or one of hyper[], rank 0 */
} hg_inner_opt;

typedef struct hg_problem {
    int n_w;          /* number of parameter tensors w */
    int n_hyper;      /* number of hyperparameter tensors λ */
    ad_value **hyper; /* λ: caller-owned leaves that want gradients */
    int T;            /* inner steps */
    hg_inner_opt opt;
    void *ctx;        /* handed to every callback */
    /* w0[i] for i < n_w; may depend on λ.  Values made on tp, or caller-owned
     * tensors (λ itself, say: the inner optimizer then starts from a copy on
     * tp, so that ∇w g does not also collect λ's own uses in g). */
    int (*init)(ad_tape *tp, ad_value *const *lam, ad_value **w0, void *ctx);
    /* The inner loss at step t (1..T): a scalar. */
    ad_value *(*inner)(ad_tape *tp, ad_value *const *w, ad_value *const *lam, int t, void *ctx);
    /* The outer loss at ŵ: a scalar. */
    ad_value *(*outer)(ad_tape *tp, ad_value *const *w, ad_value *const *lam, void *ctx);
} hg_problem;

/* What an estimate cost. */
typedef struct hg_report {
    double seconds;
    size_t peak_tape_bytes;  /* the tape's peak */
    size_t checkpoint_bytes; /* state kept outside the tape (checkpoints, Z) */
    double outer_loss;       /* f(ŵ, λ) */
} hg_report;

/* Checks the problem's fields; AD_EARG with a message naming the bad one. */
int hg_problem_check(const hg_problem *p);

/* ---- the inner optimizer, one step at a time ---------------------------- */

/* The inner optimizer's state: w and (for momentum) v, n_w tensors each. */
typedef struct hg_state {
    int n;
    ad_value **w, **v; /* v is NULL for gradient descent */
} hg_state;

/* Runs w0 = init(λ) into st (values on tp, caller-owned ones copied onto it;
 * v = 0).  When `detached`,
 * the result is a constant (no path back to λ). */
int hg_state_init(ad_tape *tp, const hg_problem *p, hg_state *st, bool detached);
/* One inner step t.  Recorded (create_graph through ∇w g) unless `detached`,
 * in which case the new state is a constant. */
int hg_inner_step(ad_tape *tp, const hg_problem *p, hg_state *st, int t, bool detached);
void hg_state_free(hg_state *st); /* frees the arrays (values are the tape's) */
/* Runs the inner optimizer for T detached steps (memory of one step) and
 * returns ŵ as n_w caller-owned tensors in w_hat (may be NULL).  When
 * inner_losses is not NULL it receives g(w_t, λ, t) for t = 0..T (T + 1
 * numbers): the inner loss curve, for checking a step size. */
int hg_inner_solve(const hg_problem *p, ad_value **w_hat, double *inner_losses);

/* ---- estimators ----------------------------------------------------------
 * dlam: an array of n_hyper pointers that receive new caller-owned tensors
 * (free each with ad_value_free).  report may be NULL.  All return AD_OK or
 * a status with ad_error() set; AD_ENONFINITE if the result has NaN/Inf. */
int hg_krmd(const hg_problem *p, int K, ad_value **dlam, hg_report *report);
int hg_full_rmd(const hg_problem *p, ad_value **dlam, hg_report *report);
/* K as in hg_krmd (K ≥ T: full); segments of about √min(K,T) steps. */
int hg_checkpoint(const hg_problem *p, int K, ad_value **dlam, hg_report *report);
int hg_fmd(const hg_problem *p, ad_value **dlam, hg_report *report);
/* Implicit differentiation at ŵ; fails with AD_EUNSUPPORTED when a
 * hyperparameter drives the inner optimizer (step size or momentum): its
 * effect is invisible at a stationary point. */
int hg_implicit_cg(const hg_problem *p, int iters, double tol, ad_value **dlam,
                   hg_report *report);
int hg_neumann(const hg_problem *p, int K, ad_value **dlam, hg_report *report);

/* ---- diagnostics -------------------------------------------------------- */

typedef struct hg_compare {
    double cosine;    /* cos(h, d) */
    double rel_error; /* ‖h − d‖ / ‖d‖ */
    double abs_error; /* ‖h − d‖ */
    double norm_est;  /* ‖h‖ */
    double norm_exact;/* ‖d‖ */
    double ratio;     /* h·d / ‖d‖² (Fig. 2) */
} hg_compare;

/* h and d are n tensor lists, compared as one long vector each. */
hg_compare hg_compare_grads(int n, ad_value *const *h, ad_value *const *d);
/* Proposition 3.1: ‖h_{T−K} − dλf‖ ≤ (1 − γα)^K / (γα) · ‖∇ŵf‖ · M_B, for a
 * γα in (0, 1]. */
double hg_prop31_bound(double gamma, double alpha, int K, double grad_w_norm, double m_b);

/* ---- comparing truncation depths ---------------------------------------- */

typedef struct hg_sweep_row {
    int K;
    hg_compare cmp;
    hg_report report;
} hg_sweep_row;

/* For each K in Ks: the K-RMD estimate, compared with the exact (full RMD)
 * hypergradient, and its cost.  rows[nK] is filled; estimates[i] (optional,
 * may be NULL) receives the n_hyper tensors for K = Ks[i] (caller frees).
 * If table is not NULL, prints a table there.  exact_report may be NULL. */
int hg_sweep(const hg_problem *p, const int *Ks, int nK, hg_sweep_row *rows,
             ad_value ***estimates, hg_report *exact_report, FILE *table);

#endif
