/*
 * hyperclean_problem.h — data hypercleaning (Sec. 4.2.1 and App. G.1 of the
 * paper) as a hg_problem, plus the data preparation and the metrics that the
 * program (hyperclean.c), the benchmark (bench_hyperclean.c) and the test
 * (tests/test_hyperclean.c) share.
 *
 * A linear classifier W [C,d] is trained on n examples whose labels are
 * partly corrupted; every training example i has a weight σ(λᵢ) that the
 * outer problem learns so that the trained W does well on a clean
 * validation set:
 *
 *     g(W, λ) = 1/n Σᵢ σ(λᵢ) CE(W xᵢ, ỹᵢ) + reg ‖W‖²_F      (inner, T GD steps from W = 0)
 *     f(W)    = 1/m Σⱼ CE(W xⱼ, yⱼ)                          (outer, on validation)
 *
 * (The paper writes g with a sum; the mean only rescales the step size γ
 * and keeps γ meaningful when n changes.)  The bias is a constant feature,
 * so x has d = 785 entries for 28×28 images.
 *
 * The graph of one inner step is as small as it can be: X is a constant
 * caller-owned leaf, the labels a constant value, and nothing that depends
 * on W is precomputed, so a step costs one gemm forward (Z = X Wᵀ) and one
 * for ∇W g; back-propagating through a recorded step costs two more (one
 * when nothing before the step is on the path, as in 1-RMD).
 *
 * Layout: the parameter tensor is Wᵀ, [d,C] = [785,10], not W [C,d].  The
 * numbers are the same; the gemms differ.  With Wᵀ the four gemms of a step
 * are X·Wᵀ, Xᵀ·G [d,C], X·Ḡ and Xᵀ·Ḡ', and OpenBLAS computes the [d,C]
 * gradient Xᵀ·G about 30% faster than the [C,d] one Gᵀ·X (measured on the
 * 2-core test machine: 2.2 ms against 3.1 ms for n = 5000), the step that
 * every detached inner step pays.
 *
 *     hc_data dt;
 *     hc_data_load(&dt, dir, 5000, 5000, 0.5, seed, true);
 *     hc_problem hc;
 *     double gamma = hc_gamma_auto(dt.x_train, dt.n_classes, HC_DEFAULT_REG, NULL);
 *     hc_problem_init(&hc, dt.x_train, dt.y_train, dt.x_val, dt.y_val,
 *                     dt.n_classes, 100, gamma, HC_DEFAULT_REG);
 *     ad_value *h;  hg_report r;
 *     hg_krmd(&hc.problem, 5, &h, &r);    // dλ f, 5-step truncated
 *     ... hc.w_hat, hc.val_loss, hc.val_acc describe ŵ(λ) ...
 *     hg_inner_solve(&hc.problem, &w, NULL);  // ŵ(λ) alone, nothing recorded
 *     hc_problem_free(&hc);  hc_data_free(&dt);
 *
 * Errors: functions return AD_OK or an ad_status with ad_error() set.
 */
#ifndef HYPERTAPE_EXPERIMENTS_HYPERCLEAN_PROBLEM_H
#define HYPERTAPE_EXPERIMENTS_HYPERCLEAN_PROBLEM_H

#include <stdint.h>

#include "experiments/classify.h"
#include "optim/hypergrad.h"

/* The weight of ‖W‖²_F in g (the paper's 0.001). */
#define HC_DEFAULT_REG 0.001

/* ---- data --------------------------------------------------------------- */

/* The examples of one run.  Every tensor is a caller-owned leaf without a
 * gradient; labels are whole numbers stored as ad_real.  hc_data_free
 * releases everything. */
typedef struct hc_data {
    int n_train, n_val, n_test, d, n_classes;
    ad_value *x_train, *y_train; /* [n_train,d], [n_train]: the noisy labels */
    ad_value *y_train_clean;     /* [n_train]: the labels before corruption */
    ad_value *x_val, *y_val;     /* [n_val,d], [n_val]: clean */
    ad_value *x_test, *y_test;   /* [n_test,d], [n_test], or NULL */
    unsigned char *corrupted;    /* [n_train]: 1 where the label was changed */
    int n_relabelled;            /* examples given a random label */
    int n_corrupted;             /* of those, the ones whose label changed */
} hc_data;

/* Loads MNIST or Fashion-MNIST from `dir` (data_mnist_load) and prepares a
 * run, everything drawn from one ad_rng seeded with `seed`:
 *   - n_train and n_val disjoint, class-balanced examples of the training
 *     split (ex_sample_balanced, classify.h);
 *   - round(corrupt_frac · n_train) training examples, chosen at random, get
 *     a uniformly random label (hc_corrupt_labels);
 *   - with_test: the whole test split (10000 images).
 * Features are pixel/255 plus a constant 1 (d = 785).  On failure *out is
 * zeroed and nothing leaks. */
int hc_data_load(hc_data *out, const char *dir, int n_train, int n_val, double corrupt_frac,
                 uint64_t seed, bool with_test);
void hc_data_free(hc_data *dt);

/* Gives n_flip = round(frac · n) examples, chosen uniformly without
 * replacement, a label drawn uniformly from 0..C−1 (it may equal the old
 * one).  corrupted[i] becomes 1 exactly where the label changed (and 0
 * elsewhere).  Returns the number changed. */
int hc_corrupt_labels(ad_rng *rng, int *labels, int n, int n_classes, double frac,
                      unsigned char *corrupted);

/* ---- the problem -------------------------------------------------------- */

typedef struct hc_problem {
    /* Not owned: the caller keeps them alive while the problem is used. */
    ad_value *x_train, *y_train, *x_val, *y_val;
    int n_classes;
    double reg;
    /* Owned. */
    ad_value *lam;   /* [n_train]: λ, a leaf wanting a gradient, starts at 0 */
    ad_value *w_hat; /* Wᵀ [d,C]: the last W the outer loss was evaluated at */
    double val_loss; /* f there */
    double val_acc;  /* validation accuracy there, in [0,1] */
    hg_problem problem;
} hc_problem;

/* Sets up the problem on the given sets (not copied; see hc_problem), with
 * T steps of gradient descent of step gamma from W = 0 and the penalty
 * reg ‖W‖²_F.  free with hc_problem_free (also after a failure). */
int hc_problem_init(hc_problem *hc, ad_value *x_train, ad_value *y_train, ad_value *x_val,
                    ad_value *y_val, int n_classes, int T, double gamma, double reg);
void hc_problem_free(hc_problem *hc);

/* The default inner step size: γ = 1/L0, where
 *     L0 = λmax(XᵀX/n)/C + 2 reg
 * is the largest curvature of g at W = 0 with every weight σ(λᵢ) = 1 (the
 * softmax cross-entropy's Hessian at uniform probabilities is (I − 11ᵀ/C)/C,
 * and weights below 1 only lower it).  Gradient descent first oscillates
 * along the top direction at γ = 2/L0; 1/L0 leaves a factor of 2.  (The
 * global bound L ≤ λmax/2 + 2 reg holds everywhere but is 5 times more
 * cautious and learns slowly in T = 100 steps.)  λmax comes from power
 * iteration on x_train [n,d]; *lmax_out (if not NULL) receives it.
 * MNIST, 5000 examples: λmax ≈ 39.0, γ ≈ 0.256; Fashion-MNIST: λmax ≈ 112,
 * γ ≈ 0.089. */
double hc_gamma_auto(const ad_value *x_train, int n_classes, double reg, double *lmax_out);

/* ---- metrics ------------------------------------------------------------ */

/* Loss and accuracy of the classifier Wᵀ [d,C] (as in hc_problem.w_hat):
 * ex_evaluate_linear(w, false, x, y, &loss, &acc) from classify.h. */


/* Flagging: example i is marked corrupted when λᵢ < threshold. */
typedef struct hc_f1 {
    int tp, fp, fn;   /* true and false positives, false negatives */
    double precision, recall, f1; /* 0 when their denominator is 0 */
} hc_f1;
hc_f1 hc_flag_f1(const ad_real *lam, const unsigned char *corrupted, int n, double threshold);

#endif
