/*
 * oneshot_problem.h — one-shot classification on Omniglot (Sec. 4.3 and
 * App. G.3 of the paper) as a hg_problem, built so that the inner loop runs
 * only the part of the network it trains.
 *
 * The network is mdl_cnn_omniglot(channels): four blocks (3×3 conv, 2×2
 * max-pool, batch-norm, relu) and a 5-way linear classifier.  Blocks 1–2
 * are the hyper-representation λ_rep, frozen in the inner loop; blocks 3–4
 * and the classifier are w, fine-tuned on each task from centres c_j:
 *
 *     g(w, λ) = CE(net(x_s; λ_rep, w), y_s) + Σ_l ρ_l Σ_{j ∈ l} ‖w_j − c_j‖²   (inner, T GD steps, w0 = c)
 *     f(w, λ) = CE(net(x_q; λ_rep, w), y_q)                                    (outer)
 *
 * CE is the mean cross-entropy (support: 5 images, query: 75).  There is
 * one ρ per trained layer (block 3, block 4, classifier: three, as in
 * App. G.3), parametrized as ρ_l = softplus(ν_l) so that it stays positive
 * whatever the outer optimizer does; ν_l is the hyperparameter.  The inner
 * step size γ is a hyperparameter too (hg_inner_opt.step_hyper), stored as
 * γ itself: the caller keeps it positive (os_hyper_clamp_step).  So
 *
 *     λ = { λ_rep (8 tensors), c (10, shaped like w), ν (3 scalars), γ }
 *
 * — 112 264 numbers at 64 channels, as the paper's "≈ 110k".
 *
 * The split (exact) formulation.  λ_rep does not change during the inner
 * loop, so h_s = rep(x_s; λ_rep) and h_q = rep(x_q; λ_rep) are computed once
 * per task, on a tape of their own (os_task.rep_tp), and handed to the
 * problem as two more hyperparameter leaves.  The inner loop then runs only
 * blocks 3–4 and the classifier.  After the estimator returns ∂/∂h_s and
 * ∂/∂h_q, one vector-Jacobian product through the recorded rep forward
 * turns them into the gradient of λ_rep.  This is the chain rule and
 * nothing else, for every K: the truncation cuts the path through w, never
 * the one through h (which is a hyperparameter, like λ_rep).  Computing h
 * on the estimator's tape instead, at step 0, would be wrong with K < T: a
 * tape of horizon K releases step 0, h becomes a constant, and the path
 * λ_rep → h → every inner step silently disappears.  The naive formulation
 * (rep inside both callbacks, λ_rep in the problem's list) is kept as the
 * reference; tests/test_oneshot.c checks that both give the same
 * hypergradient to 1e-10.
 *
 * Batch-norm runs in training mode on each batch: the support batch (5
 * images) and the query batch (75) are normalised separately, in both
 * formulations.  At the 1×1 map of block 4 the support batch must have at
 * least 2 images.
 *
 *     os_hyper hy;  os_task tk;
 *     os_hyper_init(&hy, mdl_cnn_omniglot(64), &rng, 0.5, 0.1);
 *     os_task_init(&tk, &hy, 5, 75, 50, true);
 *     os_task_load(&tk, task.x_train, task.y_train, task.x_val, task.y_val, true);
 *     ad_value *g[OS_MAX_HYPER];  hg_report r;
 *     os_task_hypergrad(&tk, 10, g, &r);      // 10-RMD, g in hy.list order
 *     ...
 *     os_task_free(&tk);  os_hyper_free(&hy);
 *
 * Errors: functions return AD_OK or an ad_status with ad_error() set.
 */
#ifndef HYPERTAPE_EXPERIMENTS_ONESHOT_PROBLEM_H
#define HYPERTAPE_EXPERIMENTS_ONESHOT_PROBLEM_H

#include <stdbool.h>
#include <stdio.h>

#include "models/models.h"
#include "optim/hypergrad.h"

enum {
    OS_MAX_LAYERS = MDL_CNN_MAX_BLOCKS + 1, /* trained layers: blocks and the classifier */
    OS_MAX_HYPER = 2 * MDL_MAX_PARAMS + OS_MAX_LAYERS + 3
};

/* ---- the hyperparameters ------------------------------------------------ */

/* λ, every tensor a caller-owned leaf that wants a gradient.  `list` holds
 * them all in one order — rep, centres, ν, γ — for the outer optimizer and
 * for os_task_hypergrad's output.  Owns every tensor. */
typedef struct os_hyper {
    mdl_cnn net;
    mdl_shapes shapes;   /* the whole network's parameter list */
    int n_rep;           /* representation tensors (4 per rep block) */
    int n_task;          /* task tensors w (4 per other block, + 2) */
    int n_layers;        /* trained layers: one ρ each */
    int layer_of[MDL_MAX_PARAMS]; /* task tensor j -> its layer */
    ad_value **rep;      /* [n_rep]   λ_rep            (= list)          */
    ad_value **center;   /* [n_task]  c_j              (= list + n_rep)  */
    ad_value **rho_raw;  /* [n_layers] ν_l, ρ_l = softplus(ν_l)         */
    ad_value *step;      /* γ, a scalar                (= list[n-1])    */
    int n_list;
    ad_value *list[OS_MAX_HYPER];
} os_hyper;

/* λ0: λ_rep and the centres from mdl_init_params (He / Glorot / batch-norm
 * ones and zeros, drawn from rng in that order), every ρ_l = rho0 > 0 and
 * γ = step0 > 0.  On failure *hy is left so that os_hyper_free is safe. */
int os_hyper_init(os_hyper *hy, mdl_cnn net, ad_rng *rng, double rho0, double step0);
void os_hyper_free(os_hyper *hy);
/* Numbers in λ. */
size_t os_hyper_numel(const os_hyper *hy);
/* ρ_l = softplus(ν_l). */
double os_hyper_rho(const os_hyper *hy, int layer);
/* Puts γ back into [lo, hi] (after an outer update); returns true if it
 * moved. */
bool os_hyper_clamp_step(os_hyper *hy, double lo, double hi);
/* Copies every number of src's λ into dst (same network). */
int os_hyper_copy(os_hyper *dst, const os_hyper *src);
/* λ-shaped tensors (os_task_hypergrad's output, hy->list order) as one row
 * of os_hyper_numel(hy) numbers (an os_batch row), and back.  The caller
 * owns row and every tensor; g[i] is shaped like hy->list[i]. */
void os_hyper_pack(const os_hyper *hy, ad_value *const *g, ad_real *row);
void os_hyper_unpack(const os_hyper *hy, const ad_real *row, ad_value *const *g);

/* ---- one task ------------------------------------------------------------ */

typedef struct os_task {
    const os_hyper *hy;
    bool split;   /* the exact split formulation (else the naive reference) */
    bool no_reg;  /* drop the regulariser (ρ = 0; Fig. 7, plot 4) */
    int n_s, n_q; /* support and query images */
    /* Owned, refilled by os_task_load. */
    ad_value *x_s, *y_s, *x_q, *y_q; /* images [N,1,H,W], labels [N]; no gradient */
    ad_value *h_s, *h_q;             /* split: the representation as leaves */
    ad_tape *rep_tp;                 /* split: rep(x_s), rep(x_q) recorded here */
    ad_value *hs_node, *hq_node;     /* on rep_tp, when recorded */
    /* The problem's λ list and where each part sits in it (−1: absent). */
    ad_value *hyper[OS_MAX_HYPER];
    int off_rep, off_center, off_rho, off_h; /* γ is last, hg_inner_opt.step_hyper */
    hg_problem problem;
} os_task;

/* A task of n_s support and n_q query images for hy's network, with T
 * inner steps.  split chooses the formulation.  hy must outlive the task. */
int os_task_init(os_task *t, const os_hyper *hy, int n_s, int n_q, int T, bool split);
void os_task_free(os_task *t);
/* Fills the task: x_* are [n,1,H,W] row-major, y_* labels.  In the split
 * formulation this also computes h_s and h_q at the current λ_rep — on a
 * recording tape if `record` (needed by os_task_hypergrad), else without
 * recording (enough for os_task_evaluate).  Call it again after λ_rep
 * changes. */
int os_task_load(os_task *t, const ad_real *x_s, const int *y_s, const ad_real *x_q,
                 const int *y_q, bool record);
/* The K-RMD hypergradient of this task's outer loss (K >= T: full RMD) as
 * n_list new caller-owned tensors grad[i], shaped like hy->list[i].  Split:
 * ∂/∂h is chained back through the recorded rep forward (the task must
 * have been loaded with record = true; loading once serves any number of
 * calls).  report (may be NULL) is hg_krmd's; its tape peak does not count
 * rep_tp (see os_task_rep_tape_bytes). */
int os_task_hypergrad(os_task *t, int K, ad_value **grad, hg_report *report);
/* Peak bytes of the representation's tape (0 for the naive formulation). */
size_t os_task_rep_tape_bytes(const os_task *t);
/* Runs the T inner steps without recording and evaluates the trained
 * network on the query images: accuracy in [0,1] and mean cross-entropy
 * (either pointer may be NULL). */
int os_task_evaluate(os_task *t, double *acc, double *loss);

/* ---- a meta-batch ---------------------------------------------------------- */

/* The meta-batch as experiments/oneshot.c runs it and bench-ops times it:
 * B tasks on n_workers workers (ex_par_run; under mpirun a block per rank),
 * each worker with an os_task of its own on the shared λ; task b's
 * hypergradient kept as row[b] (os_hyper_pack), the rows summed in task
 * order (ex_par_fold), so the bits do not depend on workers or ranks.  The
 * program loads the tasks and keeps their records.  Owns every pointer. */
typedef struct os_batch {
    const os_hyper *hy;
    int B, n_workers;
    os_task *tk;                  /* [n_workers], the split formulation */
    ad_real **row;                /* [B], allocated for this rank's block only */
    ad_real *sum;                 /* [numel] */
    ad_value *mean[OS_MAX_HYPER]; /* the mean hypergradient, shaped as hy->list */
    size_t numel;                 /* os_hyper_numel(hy) */
} os_batch;

/* Tasks of n_s support and n_q query images and T inner steps.  hy must
 * outlive the batch.  On failure, as on a zeroed struct, os_batch_free is
 * safe. */
int os_batch_init(os_batch *mb, const os_hyper *hy, int B, int n_workers, int n_s, int n_q,
                  int T);
void os_batch_free(os_batch *mb);
/* Task b, loaded (record = true) into worker w's os_task: its K-RMD
 * hypergradient into row[b]; report as os_task_hypergrad's.  An ex_item_fn
 * may call it (it writes w's os_task and row b only). */
int os_batch_task(os_batch *mb, int w, int b, int K, hg_report *report);
/* Collective under mpirun, after every task: mean = the rows' sum in task
 * order over B. */
int os_batch_mean(os_batch *mb);

#endif
