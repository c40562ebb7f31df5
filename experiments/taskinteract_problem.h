/*
 * taskinteract_problem.h — task interaction (Sec. 4.2.2 and App. G.2 of the
 * paper) as a hg_problem, with the data preparation and the metrics that the
 * program (taskinteract.c) and the test (tests/test_taskinteract.c) share.
 *
 * V linear models w_v, one per class, form a multiclass logistic regression
 * W [V,d] (the last feature is a constant 1, the bias).  The inner problem
 * ties the models of similar classes together with a learned matrix C:
 *
 *     g(W, λ) = 1/n Σₖ CE(W xₖ, yₖ) + Σ_{i,j} C_ij ‖w_i − w_j‖² + ρ Σ_v ‖w_v‖²
 *     C = A + Aᵀ,  A = softplus(B),  ρ = softplus(ν),   λ = {B [V,V], ν []}
 *     f(W)    = 1/m Σⱼ CE(W xⱼ, yⱼ)          (validation)
 *
 * ŵ = W_T after T steps of gradient descent from W = 0.  The softplus
 * re-parametrization keeps C symmetric and nonnegative and ρ positive (App.
 * G.2).  C's diagonal multiplies ‖w_i − w_i‖² = 0, so B's diagonal gets a
 * zero gradient and never moves.  The penalty is computed with one gemm:
 * with G = W Wᵀ and n_i = ‖w_i‖², ‖w_i − w_j‖² = n_i + n_j − 2 G_ij, an
 * [V,1] + [1,V] broadcast (ti_coupling).
 *
 *     ti_data dt;
 *     ti_data_cifar(&dt, &train, &test, 5, 5, seed, 0.1);   // 50 + 50, test set
 *     ti_problem tp;
 *     ti_problem_init(&tp, &dt, 100, 0.1, ti_default_b0(dt.V), 0.01);
 *     ad_value *h[2];  hg_report r;
 *     hg_krmd(&tp.problem, 5, h, &r);     // dλ f = {dB, dν}, 5-step truncated
 *     ... tp.w_hat, tp.val_loss, tp.val_acc describe ŵ(λ) ...
 *     ti_problem_free(&tp);  ti_data_free(&dt);
 *
 * Feature scale.  The inner step is fixed at γ = 0.1 (App. G.2), so the
 * features are scaled instead: standardized pixels (mean and spread of the
 * training examples) are multiplied by s = √(4 / (γ λmax)), λmax the
 * largest eigenvalue of XᵀX/n over the n standardized training rows.  The
 * softmax Hessian never exceeds ½, so the training CE's curvature is at most
 * ½ λmax s² = 2/γ anywhere (the edge where gradient descent would start to
 * oscillate; in practice it stays well below: inner.csv of the program shows
 * the inner loss falling at every step); at W = 0 along the top direction it
 * is λmax s²/V = 4/(γV) (the softmax Hessian at uniform probabilities is
 * (I − 11ᵀ/V)/V): 4 for CIFAR-10, 0.4 for 100 Omniglot classes.  Raw
 * standardized CIFAR pixels (λmax ≈ 10³) would make γ = 0.1 diverge at
 * once; the rule s² = V/(2γλmax) (curvature 1/(2γ) at W = 0) left a slow
 * oscillation in the 100-class inner loss.  The bias column is not scaled:
 * the standardized columns have mean 0 over the training rows, so it is an
 * eigenvector of XᵀX/n of its own, with eigenvalue 1.
 *
 * Size letters: V classes, d features with the bias, n training, m
 * validation, N test examples.  Errors: AD_OK or an ad_status with
 * ad_error() set.
 */
#ifndef HYPERTAPE_EXPERIMENTS_TASKINTERACT_PROBLEM_H
#define HYPERTAPE_EXPERIMENTS_TASKINTERACT_PROBLEM_H

#include <stdint.h>

#include "experiments/classify.h"
#include "experiments/data/cifar.h"
#include "experiments/data/omniglot.h"
#include "optim/hypergrad.h"

/* Omniglot pixels that hardly vary over the training images would blow up
 * when standardized (a stroke that one of 300 images touches has a spread of
 * 0.06); their spread is floored at this value (pixels are in [0, 1]). */
#define TI_OMNIGLOT_STD_FLOOR 0.1

/* ---- data --------------------------------------------------------------- */

/* The examples of one trial.  Tensors are caller-owned leaves without a
 * gradient; labels are whole numbers 0..V−1 stored as ad_real.  Rows of x
 * are scaled standardized pixels, then a constant 1 (see the top). */
typedef struct ti_data {
    int V, d, n_train, n_val, n_test;
    ad_value *x_train, *y_train; /* [n,d], [n] */
    ad_value *x_val, *y_val;     /* [m,d], [m] */
    ad_value *x_test, *y_test;   /* [N,d], [N] */
    double lmax;                 /* λmax of XᵀX/n before scaling */
    double scale;                /* s */
} ti_data;

/* CIFAR-10: per_train and per_val images of each class, disjoint, drawn
 * from `train` with an ad_rng seeded with `seed`; every image of `test` is
 * the test set.  gamma fixes the feature scale (see the top). */
int ti_data_cifar(ti_data *out, const data_cifar *train, const data_cifar *test, int per_train,
                  int per_val, uint64_t seed, double gamma);
/* Omniglot: n_chars distinct characters among the first `pool` of om
 * (pool = DATA_OMNIGLOT_BACKGROUND_CHARS: the background set), each a
 * class; of its 20 drawers, k_train train, k_val validate and the rest
 * test, all chosen with an ad_rng seeded with `seed`. */
int ti_data_omniglot(ti_data *out, const data_omniglot *om, int pool, int n_chars, int k_train,
                     int k_val, uint64_t seed, double gamma);
/* Frees everything and zeroes the struct; a zeroed struct is fine. */
void ti_data_free(ti_data *dt);

/* The largest eigenvalue of XᵀX/n for x [n,d] (row-major doubles) into
 * *lmax, by power iteration on the n × n Gram matrix X Xᵀ/n (the same
 * nonzero spectrum).  AD_OK, or AD_ENOMEM (and *lmax = 0) when that matrix
 * cannot be allocated. */
int ti_top_eigenvalue(const double *x, int n, int d, double *lmax);

/* ---- the problem -------------------------------------------------------- */

typedef struct ti_problem {
    /* Not owned: the caller keeps them alive while the problem is used. */
    ad_value *x_train, *y_train, *x_val, *y_val;
    int V;
    /* Owned. */
    ad_value *lam[2];  /* λ = {B [V,V], ν []}: leaves wanting gradients */
    ad_value *w_hat;   /* W [V,d]: the last ŵ the outer loss was evaluated at */
    double val_loss;   /* f there */
    double val_acc;    /* validation accuracy there, in [0,1] */
    hg_problem problem;
} ti_problem;

/* Sets up the problem on dt's training and validation sets (not copied),
 * with T steps of gradient descent of step gamma from W = 0, B = b0
 * everywhere and ν = log(e^ρ0 − 1) (so ρ = ρ0).  AD_EARG when gamma or rho0
 * is not > 0, b0 is not finite, or ν is not (ρ0 above ≈ 709.78).  Free with
 * ti_problem_free (also after a failure). */
int ti_problem_init(ti_problem *tp, const ti_data *dt, int T, double gamma, double b0,
                    double rho0);
void ti_problem_free(ti_problem *tp);

/* The default B0: every off-diagonal C_ij = 2 softplus(B0) equals 0.125/V,
 * so the coupling's Hessian 4 L_C ⊗ I (L_C = diag(C1) − C, largest
 * eigenvalue V·C_ij) starts at 0.5, a twentieth of 1/γ for γ = 0.1: the tie
 * starts weak next to the data term, and the step stays stable while C
 * grows.  −5.07 for V = 10, −7.38 for V = 100. */
double ti_default_b0(int V);

/* Σ_{i,j} C_ij ‖w_i − w_j‖² for W [V,d], C [V,V], as graph ops (the inner
 * loss's coupling term; differentiable twice). */
ad_value *ti_coupling(ad_tape *tp, ad_value *W, ad_value *C);

/* C = softplus(B) + softplus(B)ᵀ into C [V·V] (row-major), and ρ. */
void ti_current_C(const ti_problem *tp, double *C);
double ti_current_rho(const ti_problem *tp);
/* Loss and accuracy of W [V,d] (as in ti_problem.w_hat):
 * ex_evaluate_linear(W, true, x, y, &loss, &acc) from classify.h. */

#endif
