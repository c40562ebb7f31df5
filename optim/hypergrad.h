/*
 * hypergrad.h — bilevel problems as ordinary graph code, and every way this
 * library knows to compute their hypergradient.
 *
 *     min_λ f(ŵ(λ), λ)   where ŵ = w_T,  w_t = Φ(w_{t−1}, λ, t)
 *
 * Φ is a step of a differentiable inner optimizer (gradient descent, heavy
 * ball, Adam, RMSprop, or the caller's own, written with ops) on the inner
 * loss g(w, λ, t).  A problem is three callbacks that
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
 *     if (hg_krmd(&p, 10, &h, &r) != AD_OK)  // 10-step truncated back-prop
 *         fprintf(stderr, "%s\n", ad_error());
 *     else if (r.diverged)                   // the inner loss ended above g_1
 *         fprintf(stderr, "warning: inner loss %g -> %g\n",
 *                 r.inner_loss_first, r.inner_loss_last);
 *
 * Adam as the inner optimizer, its step size learned on a log scale
 * (θ = log γ is one of the hyperparameters, rank 0):
 *
 *     p.opt = hg_opt_adam(0);
 *     p.opt.step_hyper = log_gamma;  p.opt.step_transform = HG_EXP;
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
 *   hg_truncation_profile
 *                  K-RMD for every depth k ≤ K at once: one reverse pass,
 *                  a step at a time, gives each h_{T−k} and each step's
 *                  share of it.  With hg_curvature_estimate (how fast the
 *                  shares can fall) it chooses K for a tolerance
 *                  (hg_choose_k), and hg_sweep compares depths with it.
 */
#ifndef HYPERTAPE_OPTIM_HYPERGRAD_H
#define HYPERTAPE_OPTIM_HYPERGRAD_H

#include "ad/ad.h"

/* ---- the problem -------------------------------------------------------- */

/* The inner optimizer's kinds.  Each is an update Φ on the state list
 * (w, s): the parameters and the optimizer's own state tensors.
 *   GD:        w ← w − γ ∇w g
 *   MOMENTUM:  v ← μ v + ∇w g;  w ← w − γ v              (heavy ball; s = v)
 *   ADAM:      m ← β1 m + (1 − β1) ∇w g;  v ← β2 v + (1 − β2) (∇w g)²;
 *              w ← w − γ m̂ / (√(v̂ + ε_root) + ε),
 *              m̂ = m / (1 − β1ᵗ), v̂ = v / (1 − β2ᵗ)       (s = m, v)
 *   RMSPROP:   v ← β2 v + (1 − β2) (∇w g)²;
 *              w ← w − γ ∇w g / (√(v + ε_root) + ε)      (s = v; PyTorch's α is β2)
 *   CUSTOM:    the caller's hg_update (below).
 * Every state tensor starts at zero (a custom update may say otherwise). */
typedef enum { HG_GD, HG_MOMENTUM, HG_ADAM, HG_RMSPROP, HG_CUSTOM } hg_inner_kind;

/* How a hyperparameter θ becomes the optimizer's setting. */
typedef enum {
    HG_IDENTITY, /* the setting is θ */
    HG_EXP,      /* e^θ: θ is log γ, so γ stays positive and is learned on a log scale */
    HG_SIGMOID   /* 1/(1 + e^−θ): stays in (0, 1), for a momentum */
} hg_transform;

/* A custom inner optimizer: the update Φ written with ops, so that
 * back-propagation goes through it.  Its state is n_state tensors per
 * parameter tensor: state[i·n_state + k] is state k of w[i].
 *
 *     // w ← w − e^θ ⊙ ∇w g: one learned log step size per coordinate,
 *     // θ = lam[1] shaped like w[0]
 *     static int step(ad_tape *tp, int n_w, ad_value *const *w,
 *                     ad_value *const *state, ad_value *const *gw,
 *                     ad_value *const *lam, int t, ad_value **w_new,
 *                     ad_value **state_new, void *ctx)
 *     {
 *         w_new[0] = ad_sub(tp, w[0], ad_mul(tp, ad_exp(tp, lam[1]), gw[0]));
 *         return w_new[0] ? AD_OK : ad_error_code();
 *     }
 *     static const hg_update per_coord = { .name = "per-coordinate GD", .step = step };
 *     ... .opt = { .kind = HG_CUSTOM, .custom = &per_coord } ...
 */
typedef struct hg_update {
    const char *name; /* in messages ("update" if NULL) */
    int n_state;      /* state tensors per parameter tensor, 0..HG_MAX_STATE */
    /* s_0 (optional; NULL: every state tensor is zeros shaped like its w).
     * Values made on tp, as ops of w0 and λ if need be. */
    int (*init)(ad_tape *tp, int n_w, ad_value *const *w0, ad_value *const *lam,
                ad_value **state0, void *ctx);
    /* One step t (1..T): w_t and s_t from w_{t−1}, s_{t−1}, the gradient
     * gw = ∇w g(w_{t−1}, λ, t), λ and t.  Fills w_new[n_w] and
     * state_new[n_w·n_state] with values made on tp by ops (each keeps its
     * input's shape); returns AD_OK or a status (ad_fail). */
    int (*step)(ad_tape *tp, int n_w, ad_value *const *w, ad_value *const *state,
                ad_value *const *gw, ad_value *const *lam, int t, ad_value **w_new,
                ad_value **state_new, void *ctx);
    /* true when init and step never read lam: only then may implicit
     * differentiation (which sees only the stationary point) be used. */
    bool ignores_hyper;
    void *ctx; /* handed to init and step */
} hg_update;

enum { HG_MAX_STATE = 8 };

/* The inner optimizer.  step (γ) and momentum (μ) are numbers, unless
 * step_hyper / momentum_hyper point at a rank-0 hyperparameter (one of
 * hg_problem.hyper) that holds them, so γ or μ is learned with the rest;
 * NULL (what a designated initializer leaves) means "use the number".  A
 * hyperparameter passes through its transform first (HG_IDENTITY, the
 * zero value, uses it as it is).  beta1, beta2, eps and eps_root are read by
 * Adam and RMSprop only: hg_opt_adam / hg_opt_rmsprop fill PyTorch's
 * defaults.  ε_root > 0 keeps Adam differentiable where a gradient entry is
 * exactly 0 (√ has an infinite slope at 0, and 0·∞ is NaN); ε_root = 0 is
 * the textbook update. */
typedef struct hg_inner_opt {
    hg_inner_kind kind;
    double step;
    double momentum;
    ad_value *step_hyper;     /* NULL or one of hyper[], rank 0 */
    ad_value *momentum_hyper; /* NULL or one of hyper[], rank 0 (HG_MOMENTUM) */
    hg_transform step_transform;
    hg_transform momentum_transform;
    double beta1, beta2;      /* in [0, 1) */
    double eps, eps_root;     /* >= 0, not both 0 */
    const hg_update *custom;  /* HG_CUSTOM: the update (not owned) */
} hg_inner_opt;

/* Adam with step γ, β1 = 0.9, β2 = 0.999, ε = 1e-8, ε_root = 1e-16. */
hg_inner_opt hg_opt_adam(double step);
/* RMSprop with step γ, β2 = 0.99, ε = 1e-8, ε_root = 1e-16. */
hg_inner_opt hg_opt_rmsprop(double step);

typedef struct hg_problem {
    int n_w;          /* number of parameter tensors w */
    int n_hyper;      /* number of hyperparameter tensors λ */
    ad_value **hyper; /* λ: caller-owned leaves that want gradients */
    int T;            /* inner steps */
    hg_inner_opt opt;
    void *ctx;        /* handed to every callback */
    /* w0[i] for i < n_w; may depend on λ.  Values made on tp, or caller-owned
     * tensors (λ itself, say: the inner optimizer then starts from a copy on
     * tp, so that ∇w g does not also collect λ's own uses in g).  The same
     * value may fill two entries: every entry of a state list (here, and
     * what an update returns) is an independent variable, ∇w g the partial
     * derivative in each, in every estimator alike. */
    int (*init)(ad_tape *tp, ad_value *const *lam, ad_value **w0, void *ctx);
    /* The inner loss at step t (1..T), at w_{t−1}: a scalar.  Evaluations
     * outside a step pass other t: hg_inner_solve's loss curve g(w_t, λ, t)
     * for t = 0..T, implicit differentiation and hg_curvature_estimate
     * g(ŵ, λ, T); a callback that picks per-step data by t must accept 0. */
    ad_value *(*inner)(ad_tape *tp, ad_value *const *w, ad_value *const *lam, int t, void *ctx);
    /* The outer loss at ŵ: a scalar. */
    ad_value *(*outer)(ad_tape *tp, ad_value *const *w, ad_value *const *lam, void *ctx);
    /* The estimators that record the unrolled loop (hg_krmd, hg_full_rmd,
     * hg_checkpoint, hg_truncation_profile and what is built on it) run
     * their tapes lean (ad.h): as each step closes they keep the state list
     * and give back every datum of the step no backward rule will read —
     * about two thirds of a hypercleaning step — with the same numbers, bit
     * for bit.  That needs the callbacks to build each step from what they
     * are given (w, λ, data of their own), never from a value an earlier
     * step made; such a read fails ("had its data dropped").  A problem
     * whose callbacks do that sets keep_values: its tapes keep everything. */
    bool keep_values;
} hg_problem;

/* What an estimate cost, and how the inner optimization went.
 *
 * The inner losses are the ones the steps computed anyway: g_t =
 * g(w_{t−1}, λ, t) for t = 1..T.  `diverged` is set when one of them is not
 * finite, or when the last ends above the first (the inner optimizer made
 * things worse: usually a step size too large).  An estimator still returns
 * AD_OK for a finite divergence — the number is the derivative of what was
 * computed — so check the flag; it fails with AD_ENONFINITE when the outer
 * loss or the hypergradient is not finite, and fills the report then too. */
typedef struct hg_report {
    double seconds;
    size_t peak_tape_bytes;  /* the tape's peak */
    size_t checkpoint_bytes; /* state kept outside the tape (checkpoints, Z) */
    double outer_loss;       /* f(ŵ, λ) */
    double inner_loss_first; /* g_1, at w0 */
    double inner_loss_last;  /* g_T, at w_{T−1} */
    double inner_loss_max_rise; /* the largest g_t − g_{t−1} (0 if it never rose) */
    int inner_loss_max_rise_step; /* that t (0 if none) */
    int inner_nonfinite_step;     /* the first t whose g_t is NaN/Inf, or 0 */
    bool diverged;
} hg_report;

/* Checks the problem's fields; AD_EARG with a message naming the bad one. */
AD_MUST_CHECK int hg_problem_check(const hg_problem *p);

/* ---- the inner optimizer, one step at a time ---------------------------- */

/* The inner optimizer's state: n_w parameter tensors w and n_s = n_w ×
 * n_state optimizer state tensors s, in one array (s = w + n_w): the list a
 * step maps to the next, Φ: (w_{t−1}, s_{t−1}, λ) ↦ (w_t, s_t).  Whatever
 * the optimizer, reverse mode walks this list one step at a time: replay
 * step t from the saved list x_{t−1} (hg_state_from_list makes its entries
 * leaves), then
 *     ad_vjp_many(tp, n, x_t, v_t, n + n_hyper, {x_{t−1}, λ}, out, false)
 * gives v_{t−1} = A_tᵀ v_t and λ's share B_tᵀ v_t (hg_checkpoint does this a
 * segment at a time).  On one tape recording many steps, x_{t−1} is not a
 * leaf and ad_vjp_many goes on through it (λ's entry would then collect the
 * earlier steps' shares too); ad_vjp_partial stops there, which is how
 * hg_truncation_profile walks the steps of one tape. */
typedef struct hg_state {
    int n_w, n_s;
    ad_value **w; /* n_w + n_s entries */
    ad_value **s; /* = w + n_w */
    double loss;  /* g_t of the last hg_inner_step (NaN before the first) */
} hg_state;

/* Tensors in the state list of p: n_w × (1 + n_state); 0, with a message,
 * for a NULL p or an optimizer hg_problem_check refuses.
 * hg_state_init, hg_state_from_list and hg_inner_step return AD_OK; AD_EARG
 * for a NULL tape, state or saved list, a problem that fails
 * hg_problem_check, or a state that is not this problem's; or a callback's
 * status with the message the estimators pass on ("inner (step 3): ..."). */
int hg_state_len(const hg_problem *p);
/* Runs w0 = init(λ) and s_0 into st (values on tp, caller-owned ones copied
 * onto it).  When `detached`, the result is a constant (no path back to λ). */
AD_MUST_CHECK int hg_state_init(ad_tape *tp, const hg_problem *p, hg_state *st, bool detached);
/* A state on tp from a saved list (n_w + n_s caller-owned tensors, as
 * hg_state_len says): each entry a new leaf, so gradients stop there. */
AD_MUST_CHECK int hg_state_from_list(ad_tape *tp, const hg_problem *p, ad_value *const *saved,
                                     hg_state *st);
/* One inner step t: w ← Φ(w, s, ∇w g(w, λ, t), λ, t).  Recorded
 * (create_graph through ∇w g) unless `detached`, in which case the new state
 * is a constant.  ∇w g is the partial derivative in each w[i] (the others
 * held fixed, even when one was computed from another), so both compute the
 * same numbers.  Sets st->loss to g_t. */
AD_MUST_CHECK int hg_inner_step(ad_tape *tp, const hg_problem *p, hg_state *st, int t,
                                bool detached);
void hg_state_free(hg_state *st); /* frees the array (values are the tape's); NULL is fine */
/* Runs the inner optimizer for T detached steps (memory of one step) and
 * returns ŵ as n_w caller-owned tensors in w_hat (may be NULL).  When
 * inner_losses is not NULL it receives g(w_t, λ, t) for t = 0..T (T + 1
 * numbers): the inner loss curve, for checking a step size. */
AD_MUST_CHECK int hg_inner_solve(const hg_problem *p, ad_value **w_hat, double *inner_losses);

/* ---- estimators ----------------------------------------------------------
 * dlam: an array of n_hyper pointers that receive new caller-owned tensors
 * (free each with ad_value_free).  report may be NULL.  All return AD_OK or
 * a status with ad_error() set, naming the estimator, then the callback
 * (init / inner / outer / the update) and the step t where it failed, e.g.
 *     krmd: inner (step 3): returned a [3,4] tensor; the inner loss must be a scalar
 * (forward mode, which runs the steps again for each entry of λ, names the
 * entry first: "fmd: hyperparameter 1, entry 0: inner (step 3): ...").
 * AD_ENONFINITE when the outer loss or an entry of the hypergradient is NaN
 * or Inf (the message names the hyperparameter and entry, and says when the
 * inner loss diverged first).  Any inner optimizer works with K-RMD,
 * checkpointing and FMD. */
AD_MUST_CHECK int hg_krmd(const hg_problem *p, int K, ad_value **dlam, hg_report *report);
AD_MUST_CHECK int hg_full_rmd(const hg_problem *p, ad_value **dlam, hg_report *report);
/* K as in hg_krmd (K ≥ T: full); segments of about √min(K,T) steps. */
AD_MUST_CHECK int hg_checkpoint(const hg_problem *p, int K, ad_value **dlam, hg_report *report);
AD_MUST_CHECK int hg_fmd(const hg_problem *p, ad_value **dlam, hg_report *report);
/* Implicit differentiation at ŵ; fails with AD_EUNSUPPORTED when a
 * hyperparameter drives the inner optimizer (step size or momentum, or a
 * custom update that does not declare ignores_hyper): its effect is
 * invisible at a stationary point.  hg_neumann's series is gradient
 * descent's, with opt.step: it also refuses Adam, RMSprop and custom updates
 * (hg_implicit_cg does not depend on the optimizer). */
AD_MUST_CHECK int hg_implicit_cg(const hg_problem *p, int iters, double tol, ad_value **dlam,
                                 hg_report *report);
AD_MUST_CHECK int hg_neumann(const hg_problem *p, int K, ad_value **dlam, hg_report *report);

/* ---- diagnostics -------------------------------------------------------- */

typedef struct hg_compare {
    double cosine;    /* cos(h, d) */
    double rel_error; /* ‖h − d‖ / ‖d‖ */
    double abs_error; /* ‖h − d‖ */
    double norm_est;  /* ‖h‖ */
    double norm_exact;/* ‖d‖ */
    double ratio;     /* h·d / ‖d‖² (Fig. 2) */
} hg_compare;

/* h and d are n tensor lists, compared as one long vector each.  Every
 * field is NaN when they cannot be (a NULL or released tensor, sizes that
 * differ), with AD_EARG and a message in ad_error(). */
hg_compare hg_compare_grads(int n, ad_value *const *h, ad_value *const *d);
/* Proposition 3.1: ‖h_{T−K} − dλf‖ ≤ (1 − γα)^K / (γα) · ‖∇ŵf‖ · M_B, for a
 * γα in (0, 1]. */
double hg_prop31_bound(double gamma, double alpha, int K, double grad_w_norm, double m_b);

/* ---- the truncation profile: every depth from one reverse pass -----------
 *
 * Back-propagating through the last K steps one step at a time passes every
 * shorter truncation on its way:
 *     h_{T−k} = ∂λf + Σ_{t=T−k+1..T} B_tᵀ v_t,   v_t = A_{t+1}ᵀ…A_Tᵀ v_T,
 * with v_t the adjoint of the whole state list x_t after step t (w and the
 * optimizer's state; v_T = (∇ŵf, 0)), B_tᵀ v_t step t's share of λ and
 * A_tᵀ v_t = v_{t−1} (ad_vjp_partial gives both).  So one pass gives
 * h_{T−k} for every k ≤ K — h_{T−K} is hg_krmd(K)'s to round-off — at about
 * the cost of that one K-RMD: the same forward pass and memory, and the
 * reverse sweep in K pieces.  Any inner optimizer, any hyperparameter.
 *
 *     hg_profile pr;
 *     if (hg_truncation_profile(&p, 50, NULL, &pr) == AD_OK)
 *         for (int k = 1; k <= pr.K; k++)
 *             printf("%d %g %g\n", k, pr.contrib_norm[k - 1], pr.h_norm[k - 1]);
 *     hg_profile_free(&pr);
 */
typedef struct hg_profile {
    int K;                /* rows k = 1..K: the K asked for, at most T */
    int T, n_hyper;
    double *contrib_norm; /* [k−1]: ‖B_tᵀ v_t‖, t = T − k + 1 (all of λ as one vector) */
    double *adjoint_norm; /* [k−1]: ‖v_t‖ (k = 1: ‖∇ŵf‖) */
    double *h_norm;       /* [k−1]: ‖h_{T−k}‖ */
    double direct_norm;   /* ‖∂λf‖, the k = 0 term */
    /* When K = T: the share of the path through init (w0(λ), s0(λ)),
     * included in h_{T−T} (it is what makes it full RMD); 0 otherwise. */
    double init_norm;
    /* K × n_hyper caller-owned tensors: h[(k−1)·n_hyper + j] is λ_j's part of
     * h_{T−k}, NULL for the depths not kept.  Row K is always kept. */
    ad_value **h;
    hg_report report;     /* the whole pass: forward and the K pieces */
} hg_profile;

/* Which h_{T−k} to keep as tensors besides k = K (NULL options: none). */
typedef struct hg_profile_opts {
    bool keep_all;
    const int *keep; /* or these depths (those above K are ignored) */
    int n_keep;
} hg_profile_opts;

/* Fills *out (everything new; hg_profile_free).  K ≥ 1; K ≥ T means all T
 * steps (K = T rows).  Errors as the estimators (AD_ENONFINITE when h_{T−K}
 * is not finite); on failure *out holds nothing to free, only its report
 * (filled as the estimators fill theirs). */
AD_MUST_CHECK int hg_truncation_profile(const hg_problem *p, int K, const hg_profile_opts *opts,
                                        hg_profile *out);
void hg_profile_free(hg_profile *pr); /* NULL, or twice, is fine */
/* ‖h_{T−k} − h_{T−K}‖ / ‖h_{T−K}‖ from the kept rows k and K: with K = T
 * the relative truncation error of depth k (0 at k = K).  NaN when row k
 * was not kept, k is out of 1..K, or h_{T−K} is 0 (and, with a message,
 * when pr is NULL). */
double hg_profile_rel_error(const hg_profile *pr, int k);

/* ---- the contraction rate ------------------------------------------------
 * How fast the profile can fall: Lanczos on H = ∇²_w g(ŵ, λ, T) with
 * Hessian-vector products (double backward through ∇w g) gives its
 * smallest and largest eigenvalues α and L, hence the contraction of one
 * step, q: for gradient descent max |1 − γλ| over [α, L] (the largest
 * ‖A_t‖ near ŵ); for heavy ball the spectral radius of its step map
 * (w, v) ↦ (w − γ(μv + Hw), μv + Hw) over [α, L].  ‖v_t‖, and so the
 * profile, then falls about like q^k.  Adam, RMSprop and custom updates
 * have no such formula: q is NaN (the profile's own fitted rate stands). */
typedef struct hg_curvature {
    double alpha, L;          /* the extreme Ritz values: α ≥ λ_min(H), L ≤ λ_max(H) */
    double alpha_resid, L_resid; /* ‖H y − θ y‖ of their Ritz vectors: an eigenvalue of
                                    H lies within this of each */
    int iters;                /* Lanczos steps taken (fewer when dim w is smaller) */
    int dim;                  /* entries of w */
    hg_inner_kind kind;       /* the inner optimizer's */
    double gamma, momentum;   /* the settings used for q (transforms applied) */
    double q;                 /* the contraction rate, or NaN */
    double seconds;           /* the inner solve and the products */
    size_t peak_tape_bytes;
} hg_curvature;

/* iters ≤ 0: 30.  Starts from a seeded random vector, so it repeats bit for
 * bit.  Keeps the Lanczos vectors for full reorthogonalization: iters ×
 * dim w doubles. */
AD_MUST_CHECK int hg_curvature_estimate(const hg_problem *p, int iters, hg_curvature *out);
/* q for the optimizer of p at curvatures [alpha, L] (NaN when it has no
 * formula, and with a message when p is NULL).  γ and μ from p's numbers or
 * hyperparameters (transformed). */
double hg_contraction(const hg_problem *p, double alpha, double L);

/* ---- choosing K -------------------------------------------------------------
 * The smallest K whose estimated relative truncation error
 * ‖h_{T−K} − dλf‖ / ‖dλf‖ is below tol, two ways:
 *   profile  inside the measured window W, ‖h_{T−K} − h_{T−W}‖ when the
 *            profile kept every row (exact), else Σ_{k>K} ‖B_tᵀ v_t‖ (an
 *            upper estimate: shares that partly cancel count in full);
 *            plus the tail beyond W: a geometric fit c_k ≈ C r^k of the
 *            window's second half, decaying at max(r, q) (far back the
 *            shares fall at the slowest rate the step map allows; q alone
 *            from the last share when the window is too short to fit),
 *            summed to T; all over ‖h_{T−W}‖.  With W = T there is no tail
 *            and the kept rows give the true error.
 *   bound    Proposition 3.1, (1 − γα)^K / (γα) · ‖∇ŵf‖ · M_B, with α
 *            measured (written as q^K/(1 − q), q = max|1 − γλ| over
 *            [α, L], the same when γ(α + L) ≤ 2), for gradient descent with
 *            α > 0 and q < 1.  M_B = max_t ‖B_t‖: the caller's, or the
 *            largest ‖B_tᵀ v_t‖ / ‖v_t‖ the window showed (a lower estimate
 *            of M_B, so then the bound is an estimate too).
 * The smaller of the two is chosen, and decided_by says whose it was. */
typedef struct hg_choice {
    int K;                  /* the depth chosen, 1..T */
    int K_profile, K_bound; /* each estimate's depth, or 0 when it gives none */
    const char *decided_by; /* "profile", "bound", "profile and bound", or "T" when
                               neither gives a depth (no decay seen, no bound) */
    double est_error;       /* the estimated relative error at K */
    double rate;            /* r of the geometric fit (NaN: too few points) */
    double tail_rate;       /* the rate the tail was summed at: max(r, q) */
    bool exact_in_window;   /* the window's errors came from the kept rows */
    double m_b;             /* the M_B the bound used (0: no bound) */
    int window;             /* the profile's K */
} hg_choice;

typedef struct hg_choose_opts {
    int window;       /* the profile's K (0: min(T, 100)) */
    int lanczos_iters;/* 0: 30 */
    double m_b;       /* M_B when known (0: estimated from the profile) */
    bool norms_only;  /* keep no rows (window × dim λ numbers): the window's
                         errors are then the sums of the shares' norms */
} hg_choose_opts;

/* Measures the profile and the curvature, then chooses (opts may be NULL).
 * curv may be NULL; otherwise it receives the curvature measured. */
AD_MUST_CHECK int hg_choose_k(const hg_problem *p, double tol, const hg_choose_opts *opts,
                              hg_choice *out, hg_curvature *curv);
/* The choice from a profile and a curvature already measured (curv NULL,
 * or q NaN: no bound); m_b as in hg_choose_opts.  AD_EARG for tol outside
 * (0, 1) or an empty profile. */
AD_MUST_CHECK int hg_choose_k_from(const hg_profile *pr, const hg_curvature *curv, double tol,
                                   double m_b, hg_choice *out);

/* ---- comparing truncation depths ---------------------------------------- */

typedef struct hg_sweep_row {
    int K;
    hg_compare cmp;   /* the K-RMD estimate against the exact hypergradient */
    hg_report report; /* the one pass that gave every row (the same in each) */
} hg_sweep_row;

/* What hg_sweep allocates; release with hg_sweep_free. */
typedef struct hg_sweep_result {
    int nK, n_hyper;
    hg_sweep_row *rows;    /* nK rows, in the order of Ks */
    ad_value **estimates;  /* nK × n_hyper: estimates[i·n_hyper + j] is λ_j's
                              entry for K = Ks[i] */
    ad_value **exact;      /* n_hyper: the exact hypergradient (full RMD) */
    hg_report exact_report;
} hg_sweep_result;

/* For each K in Ks: the K-RMD estimate h_{T−K}, compared with the exact
 * (full RMD) hypergradient.  All from one truncation profile over all T
 * steps (hg_truncation_profile): the cost of one full RMD, whatever the
 * number of Ks; the estimates equal hg_krmd(K)'s and the exact one
 * hg_full_rmd's to round-off.  Fills *out (everything in it is new and
 * the caller's: hg_sweep_free); on failure *out is empty and needs no
 * free.  If table is not NULL, prints a table there. */
AD_MUST_CHECK int hg_sweep(const hg_problem *p, const int *Ks, int nK, hg_sweep_result *out,
                           FILE *table);
void hg_sweep_free(hg_sweep_result *r);

#endif
