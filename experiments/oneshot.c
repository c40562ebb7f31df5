/*
 * oneshot.c — one-shot learning on Omniglot (Sec. 4.3 and App. G.3 of the
 * paper): Table 4 and Figure 7, for K-RMD against full RMD and a short
 * horizon.  --help lists every flag; the problem is oneshot_problem.c:
 * 5-way tasks with 1 support and 15 query images per class; the CNN's
 * blocks 1–2 are the hyper-representation, blocks 3–4 and the classifier
 * are trained by T = 50 steps of gradient descent from learned centres with
 * a learned step size and learned per-layer penalties ρ_l = softplus(ν_l).
 * The outer loop is Adam on the mean hypergradient of a meta-batch of tasks.
 *
 * Each configuration (a K, full RMD, or the short horizon T = 1) runs in a
 * child process, so that its peak RSS is its own; the full-RMD
 * hypergradients that the cosine of Fig. 7 (plot 3) compares against run in
 * a grandchild, so that they do not count in a truncated K's peak either.
 * Every child starts from the same λ0 and sees the same sequence of
 * training tasks, the same meta-validation tasks and the same meta-test
 * tasks.  A configuration is its loop (cfg_iteration) and the kit's pieces:
 * the logs are ex_tables, the checkpoint an ex_ckpt, the progress an
 * ex_progress.
 *
 * Parallel: the tasks of a meta-batch, of the meta-validation, of the
 * meta-test and of the relative-error curves run on --threads workers (each
 * with its own os_task, on the shared λ) and, under mpirun, in blocks on the
 * ranks; each task's result is kept apart and they are reduced in task
 * order (ex_par_fold for the hypergradients), so every number written is
 * the one-thread run's.  Under mpirun the configurations run in the
 * process itself (MPI does not cross fork) and rank 0 alone writes.  A
 * configuration that diverges is recorded as failed and the others still
 * run, with or without mpirun (run()); the exit status is then 1.
 *
 * Outputs in --out (default results/oneshot), per configuration NAME
 * (K1, K10, K25, full, short), each written under a temporary name and
 * renamed when complete:
 *   train_NAME.csv     one row per hyper-iteration: training seconds so far,
 *                      seconds of this iteration, mean outer loss of the
 *                      meta-batch, γ, ρ_1..ρ_3 (after the update)
 *   val_NAME.csv       meta-validation accuracy and loss every few
 *                      hyper-iterations (iteration 0 is λ0)
 *   cos_NAME.csv       (truncated K only) cosine and relative error of the
 *                      K-RMD hypergradient against full RMD on the first
 *                      task of the meta-batch, every few hyper-iterations
 *   ckpt_NAME.bin      the checkpoint (an ex_ckpt: versioned, CRC-checked):
 *                      λ, Adam's state, the iteration, the task RNG, the
 *                      logs, and once the configuration is done its Table 4
 *                      row (what --resume reads instead of running again)
 * and for the whole run:
 *   relerr.csv         ‖h_{T−K} − dλf‖/‖dλf‖ for K = 1..T at a fixed λ, per
 *                      task, with the learned ρ, with ρ = 0 and with every
 *                      ρ_l set to --relerr-rho; relerr_mean.csv the
 *                      mean over tasks
 *   table4.csv, table4.md   Table 4 (also printed)
 *   fig7.gp, fig7.png  Figure 7's four plots
 *   profile_NAME.csv   the truncation profile of one task's hypergradient at
 *                      λ after every --profile-every hyper-iterations (and
 *                      the first and the last): per k = 1..T the share of
 *                      the k-th step back from one reverse pass
 *                      (hg_truncation_profile), and per point q, α, L of
 *                      the inner Hessian and the K a 1 % error needs
 *   profile.gp, profile.png  those shares against k, with q^k beside them
 */
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "experiments/data/omniglot.h"
#include "experiments/kit/kit.h"
#include "experiments/oneshot_problem.h"
#include "optim/hypergrad.h"
#include "optim/outer.h"

#define PROG "oneshot"
enum { MAX_CFG = 8, N_WAY = 5, K_SHOT = 1, K_QUERY = 15 };
static const double STEP_LO = 1e-3, STEP_HI = 2.0;
#define STEP_RANGE "[0.001, 2]" /* STEP_LO, STEP_HI in the help text */

/* ---- options ------------------------------------------------------------ */

typedef struct cfg {
    char name[16];  /* K1, full, short: file names */
    char label[32]; /* 1-RMD, Full RMD, Short horizon (T=1) */
    int K;          /* back-propagated steps (>= T: full) */
    int T;          /* inner steps */
    bool truncated; /* K < T: cosine against full RMD is measured */
} cfg;

typedef struct opts {
    const char *data, *out;
    int channels, iters, T, meta_batch, val_tasks, test_tasks, eval_every, cos_every;
    int relerr_tasks, ckpt_every, profile_every, threads;
    double lr, rho0, step0, relerr_rho, clip_norm;
    uint64_t seed;
    bool quick, resume, no_plots;
    cfg cfgs[MAX_CFG];
    int n_cfg;
    const char *k_list; /* --K, or NULL for the default list */
} opts;

static opts opt = { .eval_every = -1, .cos_every = -1, .profile_every = -1 };

static const ex_flag flags[] = {
    { "--data", EX_TEXT, &opt.data, .help = "the Omniglot folder (images_background.zip and "
      "images_evaluation.zip; default $HYPERTAPE_DATA/omniglot, then ../shared/data/omniglot)",
      .meta = "DIR" },
    { "--channels", EX_INT, &opt.channels, "64", 1, 1024, "kernels per conv layer (the "
      "paper's 64)", .quick = "8" },
    { "--hyper-iters", EX_INT, &opt.iters, "130", 1, 1000000, "Adam updates per configuration "
      "(130: all five configurations then train in about 35 minutes on the shared 2-core "
      "machine; the paper runs 5000)", .quick = "6" },
    { "--K", EX_TEXT, &opt.k_list, .help = "configurations, comma-separated: a number K (K-RMD; "
      "K >= T is full RMD), 'full' (K = T), 'short' (T = 1, full back-propagation); no empty "
      "entries, none twice (default 1,10,25,full,short, fitted to --T: a K >= T becomes full "
      "RMD and a repeat is dropped, so --T 10 runs 1,full,short)", .meta = "LIST" },
    { "--out", EX_TEXT, &opt.out, "results/oneshot", .help = "output folder, created if missing",
      .quick = "results/oneshot-quick", .meta = "DIR" },
    { "--seed", EX_SEED, &opt.seed, "1", .help = "seeds the split, lambda0 and every task" },
    { "--quick", EX_SWITCH, &opt.quick, .help = "a tiny end-to-end run (well under a minute)" },
    { "--resume", EX_SWITCH, &opt.resume, .help = "continue from DIR's checkpoints: finished "
      "configurations are kept, an interrupted one goes on from its last checkpoint.  The flags "
      "must describe the same run, but --hyper-iters may grow, not shrink (finished "
      "configurations then train on), and the schedule may change: a resumed configuration "
      "keeps its checkpoint's --eval-every and --cos-every unless they are given, which then "
      "apply from the checkpoint on" },
    { "--T", EX_INT, &opt.T, "50", 1, 100000, "inner steps" },
    { "--meta-batch", EX_INT, &opt.meta_batch, "4", 1, 1000, "tasks per hyper-iteration" },
    { "--lr", EX_REAL, &opt.lr, "1e-2", 0, HUGE_VAL, "Adam's step size (constant)",
      .open = EX_OPEN_LO, .meta = "ETA" },
    { "--rho0", EX_REAL, &opt.rho0, "0.1", 0, 30, "initial rho_l", .open = EX_OPEN_LO,
      .meta = "R" },
    { "--step0", EX_REAL, &opt.step0, "0.03", 1e-3, 2, "initial inner step size gamma (these "
      "three defaults were picked by 40-iteration probes of 10-RMD at 32 channels; gamma = 0.1 "
      "makes the inner loop of the random initial network unstable)", .meta = "G" },
    { "--val-tasks", EX_INT, &opt.val_tasks, "20", 1, 100000, "meta-validation tasks for the "
      "learning curves", .quick = "4" },
    { "--eval-every", EX_INT, &opt.eval_every, NULL, 1, 1000000, "meta-validation every N "
      "hyper-iterations, and after the last (default --hyper-iters / 10, at least 1; the "
      "checkpoint's on --resume)", .quick = "2" },
    { "--test-tasks", EX_INT, &opt.test_tasks, "120", 1, 100000, "meta-test tasks for Table 4 "
      "(the paper's 120)", .quick = "10" },
    { "--cos-every", EX_INT, &opt.cos_every, NULL, 0, 1000000, "cosine against full RMD every N "
      "hyper-iterations, at the first and after the last, truncated K only (default "
      "--hyper-iters / 20, at least 1; the checkpoint's on --resume; 0: never)", .quick = "2" },
    { "--relerr-tasks", EX_INT, &opt.relerr_tasks, "3", 0, 1000, "tasks for the relative error "
      "against K (Fig. 7, plot 4), at the final lambda of full RMD (0: skip): with the learned "
      "rho, with rho = 0, and with every rho_l = --relerr-rho", .quick = "1" },
    { "--clip-norm", EX_REAL, &opt.clip_norm, "0", 0, HUGE_VAL, "scale the meta-batch's mean "
      "hypergradient down to this 2-norm when it is larger, before Adam's step (0: never); the "
      "norm before clipping is logged as train_NAME.csv's hypergrad_norm", .meta = "C" },
    { "--relerr-rho", EX_REAL, &opt.relerr_rho, "1", 0, 30, "the third curve's rho (0: no third "
      "curve)", .meta = "R" },
    { "--ckpt-every", EX_INT, &opt.ckpt_every, "60", 1, 1000000, "write the checkpoint every S "
      "seconds and at the end of training", .meta = "S" },
    { "--profile-every", EX_INT, &opt.profile_every, NULL, 0, 1000000, "truncation profile of "
      "the last task of the meta-batch (every h_{T-k}, k = 1..T, from one reverse pass, over the "
      "task problem's hyperparameters: centres, nu, gamma and the representation's outputs) "
      "and the contraction rate, at lambda after every P hyper-iterations, the first and the "
      "last, in a child process (full RMD's memory stays out of the peak RSS); restarts with "
      "--resume; 0: never (default --hyper-iters / 5, at least 1)", .quick = "3", .meta = "P" },
    { "--no-plots", EX_SWITCH, &opt.no_plots, .help = "do not run gnuplot" },
    { "--threads", EX_INT, &opt.threads, NULL, 1, EX_MAX_THREADS, "worker threads: the tasks "
      "of a meta-batch, of the meta-validation and of the meta-test run on N threads at once, "
      "each with its own tape (and memory), summed in task order: the numbers written do not "
      "depend on N (default: the cores, shared among the MPI ranks on one machine)",
      .meta = "N" },
};

static int check_flags(void);
static ex_cmd cmd = {
    PROG, "[flags]",
    "One-shot learning on Omniglot (Shaban et al. 2019, Sec. 4.3, App. G.3):\n"
    "5-way tasks, 1 training (support) and 15 validation (query) images per class.\n"
    "Network: four blocks of 3x3 conv (C kernels), 2x2 max-pool, batch-norm, relu,\n"
    "then a linear 5-way classifier.  Blocks 1-2 are hyperparameters (the hyper-\n"
    "representation, frozen in the inner loop); blocks 3-4 and the classifier (w)\n"
    "are trained per task by T steps of gradient descent from centres c on\n"
    "  CE(support) + sum_l rho_l sum_{j in layer l} ||w_j - c_j||^2,\n"
    "rho_l = softplus(nu_l), one per trained layer (3).  Hyperparameters: blocks 1-2,\n"
    "c, nu and the inner step size gamma (kept in " STEP_RANGE ").  Outer loss: CE on the\n"
    "75 query images; Adam on the mean hypergradient of a meta-batch of tasks.\n"
    "Characters are split 1200 / 100 / 323 (meta-train / -validation / -test).\n",
    EX_FLAGS(flags),
    "Times: 'training seconds' count hypergradients and updates only; the meta-\n"
    "validation, the cosine measurements and the meta-test are timed apart.\n"
    "Progress goes to stderr; Table 4 to stdout and DIR/table4.md.\n"
    "BLAS runs on one thread (its sums change with its thread count); the tasks\n"
    "run on --threads workers.  Under mpirun -n P each rank takes a block of every\n"
    "set of tasks (and --threads workers for them); rank 0 prints and writes the\n"
    "files and checkpoints; the configurations then run in this process one after\n"
    "another (not in a child each), so the peak RSS of one includes the ones before.\n"
    "Exit status: 0 on success, 1 on a run-time failure, 2 on bad usage.\n",
    .check = check_flags,
};

/* "1,10,25,full,short" into configurations (needs o->T).  A list given by
 * --K is strict: every entry non-empty and known, no configuration named
 * twice.  The default list is fitted to T instead: a K >= T is full RMD, and
 * an entry that repeats a configuration already listed (by name, or by K
 * and T: the short horizon is full RMD when T = 1) is dropped. */
static int parse_k_list(opts *o)
{
    static const char DEFAULT_K[] = "1,10,25,full,short";
    const bool strict = o->k_list != NULL;
    const char *s = strict ? o->k_list : DEFAULT_K;
    o->n_cfg = 0;
    if (!*s) return ex_usage_error("--K: empty list");
    for (const char *p = s;;) { /* p is at the start of an entry */
        size_t len = strcspn(p, ",");
        char tok[32];
        if (len == 0) return ex_usage_error("--K: empty entry in '%s'", s);
        if (len >= sizeof tok)
            return ex_usage_error("--K: entry '%.*s' too long", (int)len, p);
        snprintf(tok, sizeof tok, "%.*s", (int)len, p);
        cfg c;
        int K;
        if (!strcmp(tok, "short")) {
            c = (cfg){ "short", "Short horizon (T=1)", .K = 1, .T = 1 };
        } else if (!strcmp(tok, "full") || (ex_parse_int(tok, 1, 100000, &K) && K >= o->T)) {
            c = (cfg){ "full", "Full RMD", .K = o->T, .T = o->T };
        } else if (ex_parse_int(tok, 1, 100000, &K)) {
            c = (cfg){ .K = K, .T = o->T, .truncated = true };
            snprintf(c.name, sizeof c.name, "K%d", K);
            snprintf(c.label, sizeof c.label, "%d-RMD", K);
        } else {
            return ex_usage_error("--K: expected numbers, 'full' or 'short', got '%s'", tok);
        }
        bool repeat = false;
        for (int i = 0; i < o->n_cfg; i++) {
            const cfg *d = &o->cfgs[i];
            /* The same name, or another name for the same computation (with
             * T = 1, "short" is full RMD; any K >= T is "full"). */
            if (!strcmp(d->name, c.name) || (d->K == c.K && d->T == c.T)) {
                if (strict)
                    return ex_usage_error("--K: '%s' is the same configuration as an earlier "
                                          "entry (%s)", tok, d->label);
                repeat = true;
            }
        }
        if (!repeat) {
            if (o->n_cfg == MAX_CFG) return ex_usage_error("--K: at most 8 configurations");
            o->cfgs[o->n_cfg++] = c;
        }
        if (!p[len]) break;
        p += len + 1;
    }
    return 0;
}

/* The checks across flags, after parsing: 0 or an exit status. */
static int check_flags(void)
{
    opts *o = &opt;
    if (o->eval_every < 0) o->eval_every = o->iters >= 10 ? o->iters / 10 : 1;
    if (o->cos_every < 0) o->cos_every = o->iters >= 20 ? o->iters / 20 : 1;
    if (!ex_given(&cmd, "--threads")) o->threads = ex_par_threads();
    if (o->profile_every < 0) o->profile_every = o->iters >= 5 ? o->iters / 5 : 1;
    return parse_k_list(o);
}

/* ---- small helpers ------------------------------------------------------- */

static void seed_rng(ad_rng *r, uint64_t seed, uint64_t stream)
{
    ad_rng_seed(r, seed * 1000003u + stream);
}

/* The streams of random numbers; every configuration uses the same ones. */
enum { RNG_SPLIT = 0, RNG_LAMBDA0 = 1, RNG_TRAIN = 2, RNG_VAL = 3, RNG_TEST = 4 };

/* Relative cost of one hyper-iteration, for ETAs: the representation
 * (forward and backward), a detached step, a recorded step.  Fitted on the
 * 2-core machine at 64 channels (1.5, 1.9, 2.1, 2.6, 3.4 s for the short
 * horizon, 1-, 10-, 25-RMD and full RMD). */
static double cfg_cost(const cfg *c)
{
    int K = c->K < c->T ? c->K : c->T;
    return 40 + 0.2 * (c->T - K) + 1.0 * K;
}

/* ---- the data ------------------------------------------------------------ */

typedef struct world {
    data_omniglot om;
    data_char_split sp;
    data_task *val; /* the fixed meta-validation tasks */
    int n_val;
} world;

static void world_free(world *w)
{
    for (int i = 0; i < w->n_val; i++) data_task_free(&w->val[i]);
    free(w->val);
    data_char_split_free(&w->sp);
    data_omniglot_free(&w->om);
}

static int world_load(const opts *o, world *w)
{
    memset(w, 0, sizeof *w);
    const char *dir = data_find_dir(o->data, "omniglot");
    if (!dir) return ad_fail_wrap(AD_EIO, "Omniglot");
    double t0 = ex_now();
    int rc = data_omniglot_load(dir, 28, &w->om);
    if (rc != AD_OK) return rc;
    ad_rng rng;
    seed_rng(&rng, o->seed, RNG_SPLIT);
    rc = data_char_split_make(w->om.n_chars, DATA_OMNIGLOT_META_TRAIN, DATA_OMNIGLOT_META_VAL,
                              &rng, &w->sp);
    if (rc == AD_OK && !(w->val = calloc((size_t)o->val_tasks, sizeof *w->val)))
        rc = ad_fail(AD_ENOMEM, "out of memory");
    seed_rng(&rng, o->seed, RNG_VAL);
    for (int i = 0; i < o->val_tasks && rc == AD_OK; i++) {
        rc = data_task_init(&w->val[i], N_WAY, K_SHOT, K_QUERY, 28);
        if (rc == AD_OK) w->n_val++;
        if (rc == AD_OK) rc = data_omniglot_sample_task(&w->om, w->sp.val, w->sp.n_val, &rng, &w->val[i]);
    }
    if (rc != AD_OK) {
        world_free(w);
        return rc;
    }
    fprintf(stderr, PROG ": Omniglot from %s: %d characters (%d / %d / %d), %d validation tasks, "
                    "%.1f s\n", dir, w->om.n_chars, w->sp.n_train, w->sp.n_val, w->sp.n_test,
            w->n_val, ex_now() - t0);
    return AD_OK;
}

static int task_load(os_task *tk, const data_task *d, bool record)
{
    return os_task_load(tk, d->x_train, d->y_train, d->x_val, d->y_val, record);
}

/* ---- logs and the checkpoint --------------------------------------------- */

/* A configuration's three logs, kept in its checkpoint and rewritten as CSV
 * files from it.  train: iter, training seconds so far, seconds of this
 * iteration, outer loss, γ, ρ_1..ρ_L; val: iter, training seconds, accuracy,
 * loss; cos: iter, cosine, relative error, seconds. */
typedef struct logs {
    ex_table tr, va, co;
    char tr_header[128];
} logs;

static void logs_init(logs *lg, int n_layers)
{
    *lg = (logs){
        .tr = { "train", lg->tr_header, "%.0f %.4f %.4f %.6f %.6g", 6 + n_layers },
        .va = { "val", "iter,train_seconds,val_acc,val_loss", "%.0f %.4f %.6f", 4 },
        .co = { "cos", "iter,cosine,rel_error,seconds", "%.0f %.9f %.9g %.3f", 4 },
    };
    int n = snprintf(lg->tr_header, sizeof lg->tr_header,
                     "iter,train_seconds,iter_seconds,outer_loss,step");
    for (int l = 0; l < n_layers && n > 0 && n < (int)sizeof lg->tr_header; l++)
        n += snprintf(lg->tr_header + n, sizeof lg->tr_header - (size_t)n, ",rho%d", l + 1);
    if (n > 0 && n < (int)sizeof lg->tr_header)
        snprintf(lg->tr_header + n, sizeof lg->tr_header - (size_t)n, ",hypergrad_norm");
}

static void logs_free(logs *lg)
{
    ex_table_free(&lg->tr);
    ex_table_free(&lg->va);
    ex_table_free(&lg->co);
}

/* The CSV files of one configuration, rewritten from its logs. */
static int write_logs(ex_out *od, const cfg *c, const logs *lg)
{
    char name[64];
    snprintf(name, sizeof name, "train_%s.csv", c->name);
    int rc = ex_table_save(&lg->tr, od, name);
    snprintf(name, sizeof name, "val_%s.csv", c->name);
    if (rc == AD_OK) rc = ex_table_save(&lg->va, od, name);
    snprintf(name, sizeof name, "cos_%s.csv", c->name);
    if (rc == AD_OK && c->truncated) rc = ex_table_save(&lg->co, od, name);
    return rc;
}

/* One configuration's result: its Table 4 row. */
typedef struct result {
    int iters;
    double test_acc, test_sd, test_ci95, val_acc, val_loss;
    double s_per_iter, train_s, other_s, test_s;
    double peak_tape_mb, peak_rep_mb, peak_rss_mb;
    double step, rho[OS_MAX_LAYERS];
    int n_layers;
    bool ok, from_ckpt; /* from_ckpt: finished in an earlier run (--resume) */
} result;

enum { RESULT_FIXED = 13 }; /* the numbers of a result before its ρs */

/* A result's numbers in the order its checkpoint field holds them (get:
 * from v into r). */
static void result_numbers(result *r, double *v, bool get)
{
    double *x[RESULT_FIXED] = { &r->test_acc, &r->test_sd, &r->test_ci95, &r->val_acc,
                                &r->val_loss, &r->s_per_iter, &r->train_s, &r->other_s,
                                &r->test_s, &r->peak_tape_mb, &r->peak_rep_mb, &r->peak_rss_mb,
                                &r->step };
    for (int i = 0; i < RESULT_FIXED + r->n_layers; i++) {
        double *p = i < RESULT_FIXED ? x[i] : &r->rho[i - RESULT_FIXED];
        if (get) *p = v[i];
        else v[i] = *p;
    }
}

/* Where a configuration stands: what its checkpoint holds besides λ, Adam
 * and the logs. */
typedef struct ckpt_state {
    int iter;
    ad_rng rng;
    double train_s, other_s;
    size_t peak_tape, peak_rep;
} ckpt_state;

/* What a checkpoint must agree on to be resumed: the flags its numbers
 * depend on — not the schedule of its logs, which a resumed run may change —
 * and the size of λ. */
/* 2: the training log gained hypergrad_norm and the run its --clip-norm. */
enum { CKPT_VERSION = 2 };

static void run_id(const opts *o, const cfg *c, const os_hyper *hy, char *buf, size_t len)
{
    snprintf(buf, len, "ch%d/T%d/K%d/mb%d/seed%llu/lr%.17g/rho%.17g/step%.17g/val%d/numel%zu/"
             "clip%.17g", o->channels, c->T, c->K, o->meta_batch, (unsigned long long)o->seed,
             o->lr, o->rho0, o->step0, o->val_tasks, os_hyper_numel(hy), o->clip_norm);
}

/* Writes ckpt_NAME.bin (atomically: see ex_ckpt_commit); with res, the
 * configuration is finished and its result goes in too. */
static int ckpt_write(ex_out *od, const opts *o, const cfg *c, const os_hyper *hy,
                      const opt_outer *adam, const ckpt_state *st, const logs *lg,
                      const result *res)
{
    ex_ckpt k;
    char id[256], name[64];
    run_id(o, c, hy, id, sizeof id);
    int rc = ex_ckpt_begin(&k);
    ex_ckpt_put_text(&k, "run", id);
    ex_ckpt_put_int(&k, "eval_every", o->eval_every);
    ex_ckpt_put_int(&k, "cos_every", o->cos_every);
    ex_ckpt_put_int(&k, "iter", st->iter);
    for (int i = 0; i < hy->n_list; i++)
        ex_ckpt_put_reals(&k, "lambda", hy->list[i]->data, hy->list[i]->size);
    ex_ckpt_put_rng(&k, "rng", &st->rng);
    ex_ckpt_put_f64(&k, "seconds", (double[]){ st->train_s, st->other_s }, 2);
    ex_ckpt_put_int(&k, "peak_tape", (long long)st->peak_tape);
    ex_ckpt_put_int(&k, "peak_rep", (long long)st->peak_rep);
    ex_ckpt_put_outer(&k, "adam", adam);
    ex_ckpt_put_table(&k, &lg->tr);
    ex_ckpt_put_table(&k, &lg->va);
    ex_ckpt_put_table(&k, &lg->co);
    if (res) {
        double v[RESULT_FIXED + OS_MAX_LAYERS];
        result_numbers((result *)res, v, false);
        ex_ckpt_put_int(&k, "test_tasks", o->test_tasks);
        ex_ckpt_put_f64(&k, "result", v, (size_t)(RESULT_FIXED + res->n_layers));
    }
    snprintf(name, sizeof name, "ckpt_%s.bin", c->name);
    return rc == AD_OK ? ex_ckpt_commit(&k, od, name, PROG, CKPT_VERSION) : rc;
}

/* The part of a checkpoint after λ: where the run stands, Adam, the logs
 * and the result if there is one (res->ok when the configuration finished
 * with as many meta-test tasks as asked now). */
static int ckpt_read_state(ex_ckpt *k, const opts *o, opt_outer *adam, ckpt_state *st,
                           logs *lg, result *res)
{
    long long it = st->iter, tape = 0, rep = 0, tests = 0;
    double sec[2], v[RESULT_FIXED + OS_MAX_LAYERS];
    int rc = ex_ckpt_get_rng(k, "rng", &st->rng);
    if (rc == AD_OK) rc = ex_ckpt_get_f64(k, "seconds", sec, 2, 0, 1e12);
    if (rc == AD_OK) rc = ex_ckpt_get_int(k, "peak_tape", 0, INT64_MAX, &tape);
    if (rc == AD_OK) rc = ex_ckpt_get_int(k, "peak_rep", 0, INT64_MAX, &rep);
    if (rc == AD_OK) rc = ex_ckpt_get_outer(k, "adam", adam);
    if (rc == AD_OK && adam->tau > it)
        rc = ad_fail(AD_EFORMAT, "%s: field 'adam': %d updates at hyper-iteration %lld", k->path,
                     adam->tau, it);
    /* The iteration bounds every count: a training row per hyper-iteration,
     * a validation row per one and λ0's, at most one cosine per one. */
    if (rc == AD_OK) rc = ex_ckpt_get_table(k, &lg->tr, (int)it);
    if (rc == AD_OK) rc = ex_ckpt_get_table(k, &lg->va, (int)it + 1);
    if (rc == AD_OK) rc = ex_ckpt_get_table(k, &lg->co, (int)it);
    if (rc == AD_OK && ex_ckpt_next_is(k, "test_tasks")) {
        rc = ex_ckpt_get_int(k, "test_tasks", 1, 100000, &tests);
        if (rc == AD_OK) rc = ex_ckpt_get_f64(k, "result", v, (size_t)(RESULT_FIXED + res->n_layers), 0, 1e12);
        if (rc == AD_OK && (v[0] > 1 || v[3] > 1))
            rc = ad_fail(AD_EFORMAT, "%s: field 'result': an accuracy above 1", k->path);
        if (rc == AD_OK && tests == o->test_tasks && it == o->iters) {
            result_numbers(res, v, true);
            res->iters = (int)it;
            res->ok = res->from_ckpt = true;
        }
    }
    if (rc == AD_OK) rc = ex_ckpt_end(k);
    if (rc == AD_OK) {
        st->train_s = sec[0];
        st->other_s = sec[1];
        st->peak_tape = (size_t)tape;
        st->peak_rep = (size_t)rep;
    }
    return rc;
}

/* Reads ckpt_NAME.bin: λ into hy (only when the whole checkpoint is sound,
 * or, without adam, its part up to λ), and with adam the rest (see
 * ckpt_read_state) and the schedule into ev_ce (eval_every, cos_every).
 * *found is false when there is no checkpoint; AD_EFORMAT when it belongs
 * to another run, is damaged, or (with adam) is further on than
 * --hyper-iters. */
static int ckpt_read(const opts *o, const cfg *c, os_hyper *hy, opt_outer *adam, ckpt_state *st,
                     logs *lg, int ev_ce[2], result *res, bool *found)
{
    char path[EX_PATH_LEN + 64], id[256], want[256];
    snprintf(path, sizeof path, "%s/ckpt_%s.bin", o->out, c->name);
    /* With adam (resuming a configuration) every rank reads, through rank
     * 0: the folder may be rank 0's alone. */
    *found = adam ? ex_par_exists(path) : access(path, F_OK) == 0;
    if (!*found) return AD_OK;
    run_id(o, c, hy, want, sizeof want);
    long long ev = 0, ce = 0, it = 0;
    size_t numel = os_hyper_numel(hy);
    ad_real *lam = malloc(sizeof *lam * numel);
    ex_ckpt k;
    int rc = !lam ? ad_fail(AD_ENOMEM, "out of memory")
             : adam ? ex_ckpt_open_all(&k, path, PROG, CKPT_VERSION)
                    : ex_ckpt_open(&k, path, PROG, CKPT_VERSION);
    if (rc == AD_OK) rc = ex_ckpt_get_text(&k, "run", id, sizeof id);
    if (rc == AD_OK && strcmp(id, want) != 0)
        rc = ad_fail(AD_EFORMAT, "%s belongs to another run (%s; these flags make %s): start "
                     "afresh without --resume, or use the same flags", path, id, want);
    if (rc == AD_OK) rc = ex_ckpt_get_int(&k, "eval_every", 1, 1000000, &ev);
    if (rc == AD_OK) rc = ex_ckpt_get_int(&k, "cos_every", 0, 1000000, &ce);
    if (rc == AD_OK) rc = ex_ckpt_get_int(&k, "iter", 0, 1000000000, &it);
    if (rc == AD_OK && adam && it > o->iters)
        rc = ad_fail(AD_EFORMAT, "%s is at hyper-iteration %lld, past --hyper-iters %d: on "
                     "--resume --hyper-iters may grow, not shrink", path, it, o->iters);
    for (int i = 0, at = 0; i < hy->n_list && rc == AD_OK; at += (int)hy->list[i++]->size)
        rc = ex_ckpt_get_reals(&k, "lambda", lam + at, hy->list[i]->size, -1e30, 1e30);
    double step = rc == AD_OK ? lam[numel - 1] : 0; /* γ is λ's last tensor */
    if (rc == AD_OK && !(step >= STEP_LO && step <= STEP_HI))
        rc = ad_fail(AD_EFORMAT, "%s: field 'lambda': the step size %g is outside " STEP_RANGE,
                     path, step);
    if (rc == AD_OK && adam) {
        st->iter = (int)it;
        rc = ckpt_read_state(&k, o, adam, st, lg, res);
        ev_ce[0] = (int)ev;
        ev_ce[1] = (int)ce;
    }
    if (rc == AD_OK) os_hyper_unpack(hy, lam, hy->list);
    if (lam) ex_ckpt_free(&k);
    free(lam);
    return rc;
}

/* profile_NAME.csv's columns, as profile_point writes them. */
enum { PROF_COLS = 12 };
static void profile_init(ex_table *t)
{
    *t = (ex_table){ .header = "iter,k,contribution_norm,adjoint_norm,h_norm,q,alpha,L,"
                               "fit_rate,K_1pct,q_line,rel_error",
                     .fmt = "%.0f %.0f %.9g %.9g %.9g %.9g %.9g %.9g %.9g %.0f %.9g %.9g",
                     .n_cols = PROF_COLS };
}

/* On --resume: the rows of DIR/profile_NAME.csv up to hyper-iteration upto
 * back into t (profile_init'ed, empty), since profile_point rewrites the
 * whole file from t.  Rows past upto (points after the checkpoint, which the
 * resumed run computes again) are dropped; no file, no rows.  Read back from
 * the CSV rather than kept in the checkpoint: its rows hold NaNs (q_line out
 * of range, a rate or an error that cannot be fitted), which a checkpoint
 * refuses, and the file is written whole and atomically at each point, so
 * it holds every point up to the checkpoint's iteration; a number printed
 * with %.9g reads back to one that prints the same, so the rewritten file
 * keeps its bytes.  AD_EFORMAT naming the file and line if it is not such a
 * file (t then empty). */
static int profile_restore(const opts *o, const cfg *c, int upto, ex_table *t)
{
    char path[EX_PATH_LEN + 64];
    snprintf(path, sizeof path, "%s/profile_%s.csv", o->out, c->name);
    FILE *f = fopen(path, "r");
    if (!f)
        return errno == ENOENT ? AD_OK
                               : ad_fail(AD_EIO, "cannot read %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int rc = AD_OK, ln = 0;
    double last_iter = 1;
    while (rc == AD_OK && (len = getline(&line, &cap, f)) >= 0) {
        if (len > 0 && line[len - 1] == '\n') line[--len] = '\0';
        if (++ln == 1) {
            if (strcmp(line, t->header) != 0) rc = AD_EFORMAT;
            continue;
        }
        double row[PROF_COLS];
        char *p = line, *end;
        for (int j = 0; j < PROF_COLS && rc == AD_OK; j++, p = end + 1) {
            row[j] = strtod(p, &end);
            if (end == p || *end != (j < PROF_COLS - 1 ? ',' : '\0')) rc = AD_EFORMAT;
        }
        /* iter whole, from 1 on and never falling; k whole in 1..T */
        if (rc == AD_OK && (!(row[0] >= last_iter && row[0] <= 1e9) || row[0] != floor(row[0]) ||
                            !(row[1] >= 1 && row[1] <= c->T) || row[1] != floor(row[1])))
            rc = AD_EFORMAT;
        if (rc == AD_OK) last_iter = row[0];
        if (rc == AD_OK && row[0] <= upto) rc = ex_table_push(t, row);
    }
    if (rc == AD_OK && (ferror(f) || ln == 0)) rc = ferror(f) ? AD_EIO : AD_EFORMAT;
    free(line);
    fclose(f);
    if (rc != AD_OK) t->n_rows = 0;
    if (rc == AD_EFORMAT)
        return ad_fail(AD_EFORMAT, "%s, line %d: not oneshot's truncation profile (its header, "
                       "then rows of %d numbers: iter from 1 on, k in 1..%d): move it away to "
                       "resume without its earlier points", path, ln, PROF_COLS, c->T);
    if (rc == AD_EIO) return ad_fail(AD_EIO, "cannot read %s", path);
    return rc; /* AD_OK, or ex_table_push's AD_ENOMEM */
}

/* On --resume, before any work and any write: every configuration's
 * checkpoint, where it has one, read in full as its run will read it (the
 * run it belongs to, its integrity, its iteration against --hyper-iters,
 * its logs and result), and the truncation profile it goes on from
 * (profile_restore).  Every one refused is named (the others are still
 * read, so that one try lists all that stand in the way), and any refusal
 * fails the whole run, the folder untouched: refused later, inside its configuration, it would let
 * the others run and rewrite the folder (relerr*.csv from λ0, Table 4
 * without its row, a new configuration's files beside the old run's).
 * Collective under mpirun (ckpt_read with Adam is). */
static int resume_check(const opts *o)
{
    int rc = AD_OK, first = AD_OK, refused = 0;
    for (int i = 0; i < o->n_cfg; i++) {
        os_hyper hy;
        opt_outer adam = { 0 };
        logs lg;
        ckpt_state st = { 0 };
        result res = { 0 };
        ad_rng rng0;
        int ev_ce[2];
        bool found;
        seed_rng(&rng0, o->seed, RNG_LAMBDA0);
        rc = os_hyper_init(&hy, mdl_cnn_omniglot(o->channels), &rng0, o->rho0, o->step0);
        if (rc != AD_OK) return rc;
        logs_init(&lg, hy.n_layers);
        res.n_layers = hy.n_layers;
        rc = opt_outer_init(&adam, OPT_ADAM, o->lr, false, hy.n_list, hy.list);
        if (rc == AD_OK) rc = ckpt_read(o, &o->cfgs[i], &hy, &adam, &st, &lg, ev_ce, &res, &found);
        /* and the profile an unfinished one will rewrite (rank 0's: it
         * writes the profiles) */
        int prc = AD_OK;
        if (rc == AD_OK && found && !res.ok && ex_par_rank() == 0) {
            ex_table prof;
            profile_init(&prof);
            prc = profile_restore(o, &o->cfgs[i], st.iter, &prof);
            ex_table_free(&prof);
        }
        if (rc == AD_OK) rc = ex_par_agree(prc);
        opt_outer_free(&adam);
        logs_free(&lg);
        os_hyper_free(&hy);
        if (rc == AD_ENOMEM) return rc;
        if (rc != AD_OK && refused++ == 0) first = rc;
        if (rc != AD_OK && ex_par_rank() == 0) fprintf(stderr, "%s: %s\n", PROG, ad_error());
    }
    if (refused == 0) return AD_OK;
    return ad_fail(first, "--resume: %d of %d configurations cannot go on from %s (named above); "
                   "nothing was run or written", refused, o->n_cfg, o->out);
}

/* ---- one configuration (runs in a child process) ---------------------------- */

typedef struct run_ctx {
    const opts *o;
    world *w;
    ex_out *od;
    int ci; /* this configuration's index */
} run_ctx;

/* Seconds left for the configurations after this one, from the best rate known. */
static double eta_rest(const run_ctx *ctx, double rate_per_cost)
{
    const opts *o = ctx->o;
    double s = 0;
    for (int i = ctx->ci + 1; i < o->n_cfg; i++) s += o->iters * rate_per_cost * cfg_cost(&o->cfgs[i]);
    return s;
}

static void lambda_stats(const os_hyper *hy, double *step, double *rho)
{
    *step = hy->step->data[0];
    for (int l = 0; l < hy->n_layers; l++) rho[l] = os_hyper_rho(hy, l);
}

/* Compares a K-RMD hypergradient with full RMD on the same loaded task.
 * Full RMD's tape is the largest memory of all; it is taken in a child
 * process so that it does not count in this configuration's peak RSS
 * (Table 4 reports what K-RMD itself needs). */
typedef struct full_job {
    os_task *tk;
    const ad_real *row; /* the K-RMD hypergradient as os_hyper_pack wrote it */
} full_job;

/* The child's side (an ex_work: meta_batch runs it through ex_run_forked). */
static int full_job_run(void *arg, void *out)
{
    const full_job *job = arg;
    const os_hyper *hy = job->tk->hy;
    ad_value *d[OS_MAX_HYPER], *g[OS_MAX_HYPER] = { 0 };
    int rc = os_task_hypergrad(job->tk, job->tk->problem.T, d, NULL);
    if (rc != AD_OK) return ad_fail_wrap(rc, "full RMD for the cosine");
    for (int i = 0; i < hy->n_list && rc == AD_OK; i++)
        if (!(g[i] = ad_tensor_new(hy->list[i]->rank, hy->list[i]->shape)))
            rc = ad_fail(AD_ENOMEM, "out of memory");
    if (rc == AD_OK) os_hyper_unpack(hy, job->row, g);
    if (rc == AD_OK) *(hg_compare *)out = hg_compare_grads(hy->n_list, g, d);
    for (int i = 0; i < hy->n_list; i++) {
        ad_value_free(d[i]);
        ad_value_free(g[i]);
    }
    return rc;
}

/* What one task of a meta-batch leaves besides its hypergradient. */
typedef struct task_rec {
    double outer_loss;
    unsigned long long peak_tape, peak_rep; /* bytes */
} task_rec;

/* One evaluated task: query accuracy and loss. */
typedef struct eval_rec {
    double acc, loss;
} eval_rec;

/* A configuration while it trains.  Its tasks (the meta-batch's, the
 * meta-validation's, the meta-test's) run on o.threads workers, each with
 * its own os_task and data_task on the one shared λ (read-only while they
 * run); under mpirun each rank takes a block of every set of tasks.  Each
 * task's result is kept apart and they are reduced in task order, so the
 * numbers do not depend on how many workers or ranks there are. */
typedef struct cfg_run {
    opts o; /* its own copy: a resumed one takes its checkpoint's schedule */
    const cfg *c;
    run_ctx *ctx;
    os_hyper hy;
    os_batch mb;          /* the workers' os_tasks, the meta-batch's rows and mean */
    data_task *task;      /* [mb.n_workers] */
    opt_outer adam;
    logs lg;
    ckpt_state st;
    ex_progress pg;
    ex_table prof; /* profile_NAME.csv */
    ex_watch watch; /* a diverged run stops, exit status 1 */
    /* The meta-batch: every task's random stream (drawn in order from
     * st.rng) and its records. */
    data_task draw;
    ad_rng *mb_rng;
    task_rec *mb_rec;
    /* Evaluation: fixed tasks (meta-validation), or each task's random
     * stream (meta-test); the records; tasks done, for the progress line. */
    const data_task *ev_fixed;
    ad_rng *ev_rng;
    eval_rec *ev_rec;
    atomic_int ev_done;
    int ev_mine;
} cfg_run;

/* How many of n tasks this rank gets (its block's size). */
static int rank_share(int n)
{
    int first, end;
    ex_par_block(n, &first, &end);
    return end - first;
}

static int cfg_setup(cfg_run *r, run_ctx *ctx)
{
    memset(r, 0, sizeof *r);
    r->o = *ctx->o;
    r->c = &r->o.cfgs[ctx->ci];
    r->ctx = ctx;
    ex_progress_init(&r->pg);
    ex_watch_init(&r->watch, "a step size too large? (--step0: the inner one to start with, "
                  "--lr: the outer one)");
    ad_rng rng0;
    seed_rng(&rng0, r->o.seed, RNG_LAMBDA0);
    seed_rng(&r->st.rng, r->o.seed, RNG_TRAIN);
    int rc = os_hyper_init(&r->hy, mdl_cnn_omniglot(r->o.channels), &rng0, r->o.rho0, r->o.step0);
    logs_init(&r->lg, r->hy.n_layers);
    profile_init(&r->prof);
    int B = r->o.meta_batch, n_ev = r->o.val_tasks > r->o.test_tasks ? r->o.val_tasks
                                                                       : r->o.test_tasks;
    int most = rank_share(B) > rank_share(n_ev) ? rank_share(B) : rank_share(n_ev);
    int n_workers = r->o.threads < most ? r->o.threads : most > 0 ? most : 1;
    r->task = calloc((size_t)n_workers, sizeof *r->task);
    r->mb_rng = calloc((size_t)B, sizeof *r->mb_rng);
    r->mb_rec = calloc((size_t)B, sizeof *r->mb_rec);
    r->ev_rng = calloc((size_t)r->o.test_tasks, sizeof *r->ev_rng);
    r->ev_rec = calloc((size_t)n_ev, sizeof *r->ev_rec);
    if (rc == AD_OK && (!r->task || !r->mb_rng || !r->mb_rec || !r->ev_rng || !r->ev_rec))
        rc = ad_fail(AD_ENOMEM, "out of memory");
    if (rc == AD_OK)
        rc = os_batch_init(&r->mb, &r->hy, B, n_workers, N_WAY * K_SHOT, N_WAY * K_QUERY, r->c->T);
    if (rc == AD_OK)
        rc = opt_outer_init(&r->adam, OPT_ADAM, r->o.lr, false, r->hy.n_list, r->hy.list);
    for (int i = 0; i < n_workers && rc == AD_OK; i++)
        rc = data_task_init(&r->task[i], N_WAY, K_SHOT, K_QUERY, 28);
    if (rc == AD_OK) rc = data_task_init(&r->draw, N_WAY, K_SHOT, K_QUERY, 28);
    return rc;
}

static void cfg_free(cfg_run *r)
{
    for (int i = 0; i < r->mb.n_workers && r->task; i++) data_task_free(&r->task[i]);
    data_task_free(&r->draw);
    opt_outer_free(&r->adam);
    os_batch_free(&r->mb);
    free(r->task);
    free(r->mb_rng);
    free(r->mb_rec);
    free(r->ev_rng);
    free(r->ev_rec);
    os_hyper_free(&r->hy);
    logs_free(&r->lg);
    ex_table_free(&r->prof);
}

/* With --resume, goes on from the checkpoint, if there is one; res->ok when
 * it says the configuration is done. */
static int cfg_resume(cfg_run *r, result *res)
{
    opts *o = &r->o;
    bool found = false;
    int ev_ce[2];
    res->n_layers = r->hy.n_layers;
    int rc = o->resume ? ckpt_read(o, r->c, &r->hy, &r->adam, &r->st, &r->lg, ev_ce, res, &found)
                       : AD_OK;
    if (rc != AD_OK || !found || res->ok) return rc;
    if (ex_par_rank() == 0) rc = profile_restore(o, r->c, r->st.iter, &r->prof);
    if (rc != AD_OK) return rc;
    bool ev_given = ex_given(&cmd, "--eval-every"), ce_given = ex_given(&cmd, "--cos-every");
    if (!ev_given) o->eval_every = ev_ce[0];
    if (!ce_given) o->cos_every = ev_ce[1];
    fprintf(stderr, PROG ": %s: resuming at hyper-iteration %d (%.0f s of training done); "
                    "meta-validation every %d hyper-iterations (%s), cosine every %d (%s)\n",
            r->c->label, r->st.iter, r->st.train_s, o->eval_every,
            ev_given ? "--eval-every" : "the checkpoint's", o->cos_every,
            ce_given ? "--cos-every" : "the checkpoint's");
    return AD_OK;
}

/* ---- the tasks, on the workers --------------------------------------------- */

/* Evaluation task i (an ex_item_fn): the fixed task, or the one drawn from
 * its stream; its accuracy and loss into ev_rec[i]. */
static int eval_item(void *arg, int worker, int i)
{
    cfg_run *r = arg;
    world *w = r->ctx->w;
    const data_task *d = r->ev_fixed ? &r->ev_fixed[i] : &r->task[worker];
    int rc = AD_OK;
    if (!r->ev_fixed) {
        ad_rng rng = r->ev_rng[i];
        rc = data_omniglot_sample_task(&w->om, w->sp.test, w->sp.n_test, &rng, &r->task[worker]);
    }
    eval_rec e = { 0, 0 };
    if (rc == AD_OK) rc = task_load(&r->mb.tk[worker], d, false);
    if (rc == AD_OK) rc = os_task_evaluate(&r->mb.tk[worker], &e.acc, &e.loss);
    r->ev_rec[i] = e;
    if (rc == AD_OK && !r->ev_fixed) {
        int done = atomic_fetch_add(&r->ev_done, 1) + 1;
        ex_progress_line(&r->pg, done == r->ev_mine, PROG ": %s  meta-test task %d/%d%s",
                         r->c->label, done, r->ev_mine, ex_par_size() > 1 ? " (rank 0's)" : "");
    }
    return rc;
}

/* Evaluates n tasks (fixed, or drawn from ev_rng) on every worker and rank;
 * the sums over tasks, in task order, of the accuracy, its square and the
 * loss. */
static int eval_tasks(cfg_run *r, const data_task *fixed, int n, double *sa, double *sa2,
                      double *sl)
{
    r->ev_fixed = fixed;
    atomic_store(&r->ev_done, 0);
    r->ev_mine = rank_share(n);
    int rc = ex_par_run(r->mb.n_workers, n, eval_item, r);
    if (rc == AD_OK) rc = ex_par_share(r->ev_rec, sizeof *r->ev_rec, n);
    *sa = *sa2 = *sl = 0;
    for (int i = 0; i < n && rc == AD_OK; i++) {
        *sa += r->ev_rec[i].acc;
        *sa2 += r->ev_rec[i].acc * r->ev_rec[i].acc;
        *sl += r->ev_rec[i].loss;
    }
    return rc;
}

/* A meta-validation point after iteration it (0: λ0); *acc its accuracy. */
static int cfg_validate(cfg_run *r, int it, double *acc)
{
    double t0 = ex_now(), sa, sa2, sl;
    const world *w = r->ctx->w;
    int rc = eval_tasks(r, w->val, w->n_val, &sa, &sa2, &sl);
    *acc = sa / w->n_val;
    double loss = sl / w->n_val;
    if (isnan(r->watch.val_first) && r->lg.va.n_rows > 0) { /* resumed: λ0's, from the log */
        r->watch.val_first = r->lg.va.rows[3];
        r->watch.val_first_iter = (int)r->lg.va.rows[0];
    }
    if (rc == AD_OK && (rc = ex_watch_val(&r->watch, it, loss)) != AD_OK)
        ad_fail_wrap(rc, "%s, meta-validation after hyper-iteration %d", r->c->label, it);
    if (rc == AD_OK) rc = ex_table_push(&r->lg.va, (double[]){ it, r->st.train_s, *acc, loss });
    r->st.other_s += ex_now() - t0;
    return rc;
}

/* Meta-batch task b, drawn from its stream into worker's data_task and
 * loaded into its os_task, the representation recorded. */
static int mb_load(cfg_run *r, int worker, int b)
{
    world *w = r->ctx->w;
    ad_rng rng = r->mb_rng[b];
    int rc = data_omniglot_sample_task(&w->om, w->sp.train, w->sp.n_train, &rng, &r->task[worker]);
    return rc == AD_OK ? task_load(&r->mb.tk[worker], &r->task[worker], true) : rc;
}

/* Meta-batch task b (an ex_item_fn): loaded, its K-RMD hypergradient into
 * the row mb.row[b], its records into mb_rec[b]. */
static int mb_item(void *arg, int worker, int b)
{
    cfg_run *r = arg;
    hg_report rep;
    int rc = mb_load(r, worker, b);
    if (rc == AD_OK) rc = os_batch_task(&r->mb, worker, b, r->c->K, &rep);
    if (rc != AD_OK) return rc;
    rc = ex_watch_inner(&r->watch, &rep); /* reads the watch only */
    if (rc != AD_OK) return ad_fail_wrap(rc, "task %d of the meta-batch", b + 1);
    r->mb_rec[b] = (task_rec){ rep.outer_loss, rep.peak_tape_bytes,
                               os_task_rep_tape_bytes(&r->mb.tk[worker]) };
    return AD_OK;
}

/* The meta-batch's mean hypergradient into mb.mean and its mean outer loss.
 * The tasks are drawn in order (they share st.rng), computed on the
 * workers and ranks, and summed in task order.  With `cosine`, the first
 * task's is also compared with full RMD (on rank 0, which holds task 0);
 * *t_other receives the seconds that took. */
static int meta_batch(cfg_run *r, int it, bool cosine, double *loss, double *t_other)
{
    const opts *o = &r->o;
    world *w = r->ctx->w;
    int B = o->meta_batch, rc = AD_OK;
    for (int b = 0; b < B && rc == AD_OK; b++) {
        r->mb_rng[b] = r->st.rng;
        rc = data_omniglot_sample_task(&w->om, w->sp.train, w->sp.n_train, &r->st.rng, &r->draw);
    }
    if (rc == AD_OK) rc = ex_par_run(r->mb.n_workers, B, mb_item, r);
    if (rc == AD_OK) rc = ex_par_share(r->mb_rec, sizeof *r->mb_rec, B);
    *loss = 0;
    for (int b = 0; b < B && rc == AD_OK; b++) {
        *loss += r->mb_rec[b].outer_loss / o->meta_batch;
        if (r->mb_rec[b].peak_tape > r->st.peak_tape) r->st.peak_tape = r->mb_rec[b].peak_tape;
        if (r->mb_rec[b].peak_rep > r->st.peak_rep) r->st.peak_rep = r->mb_rec[b].peak_rep;
    }
    if (rc == AD_OK) rc = os_batch_mean(&r->mb);
    if (rc == AD_OK && cosine && ex_par_rank() == 0) { /* Fig. 7, plot 3: task 0 at full RMD */
        double t0 = ex_now();
        hg_compare cm;
        rc = mb_load(r, 0, 0); /* task 0 again, on worker 0 */
        if (rc == AD_OK)
            rc = ex_run_forked("full RMD for the cosine", full_job_run,
                               &(full_job){ &r->mb.tk[0], r->mb.row[0] }, &cm, sizeof cm);
        if (rc == AD_OK)
            rc = ex_table_push(&r->lg.co, (double[]){ it, cm.cosine, cm.rel_error, ex_now() - t0 });
        *t_other += ex_now() - t0;
    }
    return rc;
}

/* ---- the truncation profile ---------------------------------------------------- */

static bool profile_due(const opts *o, int it)
{
    return o->profile_every > 0 && (it == 1 || it % o->profile_every == 0 || it == o->iters);
}

/* What the child of profile_point sends back: a summary, then T rows of
 * (share, adjoint, ‖h‖, relative error of h_{T−k}). */
typedef struct prof_head {
    double q, alpha, L, rate, seconds;
    int K, K_profile, K_bound;
    char decided_by[24]; /* hg_choice's, copied: the pipe carries bytes, not pointers */
    double rows[];       /* [T][4] */
} prof_head;

/* The child's side (an ex_work): arg the loaded os_task, out a prof_head. */
static int prof_job_run(void *arg, void *out)
{
    const hg_problem *p = &((os_task *)arg)->problem;
    prof_head *hd = out;
    double *rows = hd->rows;
    hg_profile pr;
    hg_curvature cv;
    hg_choice ch;
    double t0 = ex_now();
    int rc = hg_truncation_profile(p, p->T, &(hg_profile_opts){ .keep_all = true }, &pr);
    if (rc != AD_OK) return ad_fail_wrap(rc, "truncation profile");
    rc = hg_curvature_estimate(p, 30, &cv);
    if (rc == AD_OK) rc = hg_choose_k_from(&pr, &cv, 0.01, 0, &ch);
    if (rc == AD_OK) {
        *hd = (prof_head){ cv.q, cv.alpha, cv.L, ch.rate, ex_now() - t0, ch.K, ch.K_profile,
                           ch.K_bound };
        snprintf(hd->decided_by, sizeof hd->decided_by, "%s", ch.decided_by);
        for (int k = 0; k < pr.K; k++) {
            rows[4 * k] = pr.contrib_norm[k];
            rows[4 * k + 1] = pr.adjoint_norm[k];
            rows[4 * k + 2] = pr.h_norm[k];
            rows[4 * k + 3] = hg_profile_rel_error(&pr, k + 1);
        }
    }
    hg_profile_free(&pr);
    return rc;
}

/* The profile at λ after iteration it, on the meta-batch's last task
 * (reloaded: λ_rep has moved), in a child process of rank 0 (the others go
 * on to the next meta-batch); its rows go to profile_NAME.csv (the whole
 * file rewritten from r->prof, which a resumed run reads back first:
 * profile_restore). */
static int profile_point(cfg_run *r, int it)
{
    double t0 = ex_now();
    int T = r->c->T;
    size_t size = sizeof(prof_head) + sizeof(double) * 4 * (size_t)T;
    prof_head *hd = malloc(size);
    /* The last task again, on worker 0. */
    int rc = hd ? mb_load(r, 0, r->o.meta_batch - 1) : ad_fail(AD_ENOMEM, "out of memory");
    if (rc == AD_OK)
        rc = ex_run_forked("truncation profile", prof_job_run, &r->mb.tk[0], hd, size);
    const double *rows = hd ? hd->rows : NULL;
    double lo = INFINITY, hi = 0; /* the q line is drawn within 10× of the shares' range */
    for (int k = 0; k < T && rc == AD_OK; k++)
        if (rows[4 * k] > 0) lo = fmin(lo, rows[4 * k]), hi = fmax(hi, rows[4 * k]);
    for (int k = 1; k <= T && rc == AD_OK; k++) {
        const double *row = rows + 4 * (k - 1), ql = rows[0] * pow(hd->q, k - 1);
        rc = ex_table_push(&r->prof, (double[]){ it, k, row[0], row[1], row[2], hd->q, hd->alpha,
                                                 hd->L, hd->rate, hd->K,
                                                 ql >= lo / 10 && ql <= hi * 10 ? ql : NAN, row[3] });
    }
    char name[64];
    snprintf(name, sizeof name, "profile_%s.csv", r->c->name);
    if (rc == AD_OK) rc = ex_table_save(&r->prof, r->ctx->od, name);
    if (rc == AD_OK)
        fprintf(stderr, PROG ": %s  iter %d: truncation profile over T = %d in %.1f s: shares fall "
                        "%.4f per step, q = %.4f (α %.3g, L %.3g); 1%% needs K = %d (%s; "
                        "profile %d, bound %d)\n",
                r->c->label, it, T, hd->seconds, hd->rate, hd->q, hd->alpha, hd->L, hd->K,
                hd->decided_by, hd->K_profile, hd->K_bound);
    free(hd);
    r->st.other_s += ex_now() - t0;
    return rc == AD_OK ? AD_OK : ad_fail_wrap(rc, "%s, hyper-iteration %d", r->c->label, it);
}

/* Left: the last profile of each configuration, q^k beside it (dashed);
 * right: the first configuration's profiles along its run. */
static int profile_plot(ex_out *od, const opts *o, const result *res)
{
    if (o->profile_every <= 0) return AD_OK;
    int first = -1, n = 0;
    for (int i = 0; i < o->n_cfg; i++)
        if (res[i].ok && first < 0) first = i;
    if (first < 0) return AD_OK;
    ex_file g;
    int rc = ex_gp_open(&g, od, "profile.gp", 1300, 560);
    if (rc != AD_OK) return rc;
    FILE *f = g.f;
    fprintf(f, "set multiplot layout 1,2 title 'Truncation profile of one task: the share "
               "‖B_t^T v_t‖ of the k-th step back (t = T−k+1)'\n"
               "set xlabel 'k (steps back)'; set ylabel 'norm'\n"
               "set logscale y; set format y '10^{%%L}'\nset key outside bottom center horizontal\n"
               "set title 'after the last hyper-iteration (dashed: share at k = 1 times q^{k−1})'\n"
               "plot \\\n");
    for (int i = 0; i < o->n_cfg; i++) {
        if (!res[i].ok) continue;
        fprintf(f, "%s  'profile_%s.csv' skip 1 using 2:($1 == %d ? $3 : NaN) with lines lw 2 "
                   "lc %d title '%s', \\\n"
                   "  '' skip 1 using 2:($1 == %d ? $11 : NaN) with lines dt 2 lc %d notitle",
                n++ ? ", \\\n" : "", o->cfgs[i].name, o->iters, i + 1, o->cfgs[i].label,
                o->iters, i + 1);
    }
    fprintf(f, "\nset title '%s, along its run (by hyper-iteration)'\nplot \\\n",
            o->cfgs[first].label);
    n = 0;
    for (int it = 1; it <= o->iters; it++)
        if (profile_due(o, it))
            fprintf(f, "%s  'profile_%s.csv' skip 1 using 2:($1 == %d ? $3 : NaN) with lines lw 2 "
                       "title 'τ = %d'", n++ ? ", \\\n" : "", o->cfgs[first].name, it, it);
    fprintf(f, "\nunset multiplot\n");
    return ex_gp_commit(&g);
}

/* The 2-norm of the mean hypergradient g (all of λ as one vector), returned;
 * with clip > 0 and a larger norm, g is scaled down to norm clip.  The same
 * numbers on every rank, so clipping keeps the ranks' λ identical. */
static double clip_mean(ad_value *const *g, int n, double clip)
{
    double sq = 0;
    for (int i = 0; i < n; i++)
        for (size_t k = 0; k < g[i]->size; k++) sq += (double)g[i]->data[k] * g[i]->data[k];
    double norm = sqrt(sq);
    if (clip > 0 && norm > clip)
        for (int i = 0; i < n; i++)
            for (size_t k = 0; k < g[i]->size; k++)
                g[i]->data[k] = (ad_real)(g[i]->data[k] * (clip / norm));
    return norm;
}

/* Hyper-iteration it: the meta-batch, the Adam update, the logs, a
 * validation point and a checkpoint when due, the progress line. */
static int cfg_iteration(cfg_run *r, int it, double *last_ckpt)
{
    const opts *o = &r->o;
    const cfg *c = r->c;
    double t_it = ex_now(), t_other = 0, loss = 0;
    bool cosine = c->truncated && o->cos_every > 0 &&
                  (it == 1 || it % o->cos_every == 0 || it == o->iters);
    int rc = meta_batch(r, it, cosine, &loss, &t_other);
    double hg_norm = rc == AD_OK ? clip_mean(r->mb.mean, r->hy.n_list, o->clip_norm) : NAN;
    if (rc == AD_OK) rc = opt_outer_step(&r->adam, r->mb.mean);
    if (rc != AD_OK) return ad_fail_wrap(rc, "%s, hyper-iteration %d", c->label, it);
    os_hyper_clamp_step(&r->hy, STEP_LO, STEP_HI);
    double dt = ex_now() - t_it - t_other;
    r->st.train_s += dt;
    r->st.other_s += t_other;
    r->st.iter = it;
    double row[6 + OS_MAX_LAYERS] = { it, r->st.train_s, dt, loss };
    lambda_stats(&r->hy, &row[4], &row[5]);
    row[5 + r->hy.n_layers] = hg_norm;
    rc = ex_table_push(&r->lg.tr, row);
    if (rc == AD_OK && profile_due(o, it) && ex_par_rank() == 0) rc = profile_point(r, it);
    double acc = 0;
    bool validate = it % o->eval_every == 0 || it == o->iters;
    if (rc == AD_OK && validate) rc = cfg_validate(r, it, &acc);
    if (rc == AD_OK && (ex_due(last_ckpt, o->ckpt_every) || it == o->iters)) {
        rc = ckpt_write(r->ctx->od, o, c, &r->hy, &r->adam, &r->st, &r->lg, NULL);
        if (rc == AD_OK) rc = write_logs(r->ctx->od, c, &r->lg);
    }
    /* Progress: this configuration's rate, the others' by the cost model. */
    double rate = (r->st.train_s + r->st.other_s) / r->lg.tr.n_rows;
    char eta_this[16], eta_all[16], val_msg[32] = "";
    if (validate) snprintf(val_msg, sizeof val_msg, "  val acc %.2f%%", 100 * acc);
    ex_progress_line(&r->pg, validate || it == o->iters,
                     PROG ": %s  iter %d/%d  loss %.4f  γ %.4f  %.2f s/it%s  ETA %s (this), %s "
                     "(all training)", c->label, it, o->iters, loss, row[4], dt, val_msg,
                     ex_duration((o->iters - it) * rate, eta_this),
                     ex_duration((o->iters - it) * rate + eta_rest(r->ctx, rate / cfg_cost(c)), eta_all));
    return rc;
}

/* Table 4's row: the final λ on the meta-test tasks (the same for every
 * configuration), then the logs and the checkpoint with the result. */
static int cfg_test(cfg_run *r, result *res)
{
    const opts *o = &r->o;
    world *w = r->ctx->w;
    res->iters = r->st.iter;
    res->train_s = r->st.train_s;
    res->other_s = r->st.other_s;
    res->s_per_iter = r->st.train_s / r->lg.tr.n_rows; /* mean over the iterations logged */
    res->peak_tape_mb = r->st.peak_tape / 1e6;
    res->peak_rep_mb = r->st.peak_rep / 1e6;
    res->peak_rss_mb = ex_peak_rss_kb() / 1024.0;
    res->n_layers = r->hy.n_layers;
    lambda_stats(&r->hy, &res->step, res->rho);
    const double *last_val = r->lg.va.rows + (size_t)(r->lg.va.n_rows - 1) * 4;
    res->val_acc = last_val[2];
    res->val_loss = last_val[3];
    double t0 = ex_now(), sa = 0, sa2 = 0, sl;
    ad_rng rng;
    seed_rng(&rng, o->seed, RNG_TEST);
    int rc = AD_OK;
    for (int i = 0; i < o->test_tasks && rc == AD_OK; i++) { /* each task's stream, in order */
        r->ev_rng[i] = rng;
        rc = data_omniglot_sample_task(&w->om, w->sp.test, w->sp.n_test, &rng, &r->draw);
    }
    if (rc == AD_OK) rc = eval_tasks(r, NULL, o->test_tasks, &sa, &sa2, &sl);
    ex_progress_end(&r->pg);
    int n = o->test_tasks;
    res->test_acc = sa / n;
    res->test_sd = n > 1 ? sqrt(fmax(0, (sa2 - sa * sa / n) / (n - 1))) : 0; /* sample sd */
    res->test_ci95 = 1.96 * res->test_sd / sqrt(n);
    res->test_s = ex_now() - t0;
    if (rc == AD_OK) rc = write_logs(r->ctx->od, r->c, &r->lg);
    if (rc == AD_OK) rc = ckpt_write(r->ctx->od, o, r->c, &r->hy, &r->adam, &r->st, &r->lg, res);
    if (rc == AD_OK)
        fprintf(stderr, PROG ": %s: test accuracy %.2f%% ± %.2f (95%% CI, %d tasks), %.3f s per "
                        "hyper-iteration, peak tape %.1f MB (+ %.1f MB representation), peak "
                        "RSS %.0f MB\n",
                r->c->label, 100 * res->test_acc, 100 * res->test_ci95, n, res->s_per_iter,
                res->peak_tape_mb, res->peak_rep_mb, res->peak_rss_mb);
    res->ok = rc == AD_OK;
    return rc;
}

/* One configuration: set up, resume, λ0's validation point, the loop, the
 * meta-test.  An ex_work (for ex_run_forked): arg a run_ctx, out its result. */
static int run_cfg(void *arg, void *out)
{
    run_ctx *ctx = arg;
    result *res = out;
    memset(res, 0, sizeof *res);
    cfg_run *r = malloc(sizeof *r);
    if (!r) return ad_fail(AD_ENOMEM, "out of memory");
    int rc = cfg_setup(r, ctx);
    if (rc == AD_OK) rc = cfg_resume(r, res);
    if (rc == AD_OK && !res->ok) {
        size_t rep, tsk;
        rc = mdl_cnn_counts(&r->hy.net, &rep, &tsk); /* rep and tsk are unset when it fails */
        if (rc == AD_OK)
            fprintf(stderr, PROG ": %s: T = %d, K = %d, %d channels: %zu hyperparameters (%zu "
                            "representation), %zu parameters; %d hyper-iterations of %d tasks\n",
                    r->c->label, r->c->T, r->c->K < r->c->T ? r->c->K : r->c->T, r->o.channels,
                    os_hyper_numel(&r->hy), rep, tsk, r->o.iters, r->o.meta_batch);
    }
    double acc;
    if (rc == AD_OK && !res->ok && r->st.iter == 0 && r->lg.va.n_rows == 0) {
        rc = cfg_validate(r, 0, &acc);
        if (rc == AD_OK)
            fprintf(stderr, PROG ": %s: at λ0 meta-validation accuracy %.2f%%, loss %.4f\n",
                    r->c->label, 100 * acc, r->lg.va.rows[3]);
    }
    double last_ckpt = ex_now();
    for (int it = r->st.iter + 1; it <= r->o.iters && rc == AD_OK && !res->ok; it++)
        rc = cfg_iteration(r, it, &last_ckpt);
    ex_progress_end(&r->pg);
    if (rc == AD_OK && !res->ok && r->st.iter >= r->o.iters && r->lg.tr.n_rows > 0)
        rc = cfg_test(r, res);
    cfg_free(r);
    free(r);
    return rc;
}

/* Runs run_cfg in a child and collects its result through a pipe. */
static int run_cfg_forked(run_ctx *ctx, result *res)
{
    const char *label = ctx->o->cfgs[ctx->ci].label;
    int rc = ex_run_forked(label, run_cfg, ctx, res, sizeof *res);
    if (rc == AD_OK && !res->ok) rc = ad_fail(AD_EARG, "%s failed (see the message above)", label);
    return rc;
}

/* ---- Fig. 7, plot 4: relative error against K at a fixed λ ----------------- */

/* The curves' items: (task, variant) pairs, each on a worker with its own
 * copy of λ (the variants set ρ) and its own os_task. */
typedef struct relerr_ctx {
    const opts *o;
    world *w;
    const os_hyper *base; /* λ, with the learned ρ */
    os_hyper *hy;         /* [n_workers] */
    os_task *tk;          /* [n_workers] */
    int n_var, nK;
    const int *Ks;
    double *rec;          /* [items][nK][3]: relative error, cosine, seconds */
    atomic_int done;
    ex_progress pg;
    int n_items;
} relerr_ctx;

/* Variants: 0 the learned ρ, 1 ρ = 0 (no regulariser), 2 every ρ_l set to
 * --relerr-rho (Prop. 3.1's strong convexity made larger by hand). */
static const char *const relerr_var_name[3] = { "reg", "rho0", "rho_set" };

/* Item i (an ex_item_fn): task i / n_var under variant i % n_var, its
 * K-RMD hypergradients for every K against full RMD. */
static int relerr_item(void *arg, int worker, int item)
{
    relerr_ctx *x = arg;
    int ti = item / x->n_var, v = item % x->n_var;
    os_hyper *hy = &x->hy[worker];
    os_task *tk = &x->tk[worker];
    int rc = os_hyper_copy(hy, x->base);
    if (rc != AD_OK) return rc;
    if (v == 2)
        for (int l = 0; l < hy->n_layers; l++)
            hy->rho_raw[l]->data[0] = (ad_real)log(expm1(x->o->relerr_rho));
    tk->no_reg = v == 1;
    /* The representation depends on λ_rep alone: loading under any variant
     * gives the same h. */
    rc = task_load(tk, &x->w->val[ti], true);
    ad_value *d[OS_MAX_HYPER];
    if (rc == AD_OK) rc = os_task_hypergrad(tk, x->o->T, d, NULL);
    if (rc != AD_OK) return rc;
    for (int k = 0; k < x->nK && rc == AD_OK; k++) {
        ad_value *h[OS_MAX_HYPER];
        hg_report r;
        rc = os_task_hypergrad(tk, x->Ks[k], h, &r);
        if (rc != AD_OK) break;
        hg_compare cm = hg_compare_grads(hy->n_list, h, d);
        double *rec = x->rec + ((size_t)item * (size_t)x->nK + (size_t)k) * 3;
        rec[0] = cm.rel_error;
        rec[1] = cm.cosine;
        rec[2] = r.seconds;
        for (int i = 0; i < hy->n_list; i++) ad_value_free(h[i]);
    }
    for (int i = 0; i < hy->n_list; i++) ad_value_free(d[i]);
    int n = atomic_fetch_add(&x->done, 1) + 1;
    if (rc == AD_OK)
        ex_progress_line(&x->pg, false, PROG ": relative error vs K: %d of %d (task, variant) "
                         "done%s", n, x->n_items, ex_par_size() > 1 ? " on rank 0" : "");
    return rc;
}

/* Fig. 7, plot 4: every (task, variant) on the workers and ranks, the rows
 * and the means over tasks in the serial order (task, variant, K). */
static int relerr_run(const opts *o, world *w, ex_out *od, const char **lambda_from)
{
    double t_start = ex_now();
    *lambda_from = "λ0 (no full-RMD checkpoint)";
    os_hyper hy;
    ad_rng rng0;
    seed_rng(&rng0, o->seed, RNG_LAMBDA0);
    int rc = os_hyper_init(&hy, mdl_cnn_omniglot(o->channels), &rng0, o->rho0, o->step0);
    if (rc != AD_OK) return rc;
    /* The final λ of full RMD (of the first configuration if none is full),
     * read by rank 0 and sent to the others. */
    for (int pass = 0; pass < 2 && ex_par_rank() == 0; pass++)
        for (int i = 0; i < o->n_cfg; i++) {
            const cfg *c = &o->cfgs[i];
            if (pass == 0 && strcmp(c->name, "full") != 0) continue;
            bool found;
            if (ckpt_read(o, c, &hy, NULL, NULL, NULL, NULL, NULL, &found) == AD_OK && found) {
                static char msg[64];
                snprintf(msg, sizeof msg, "the final λ of %s", c->label);
                *lambda_from = msg;
                pass = 2;
                break;
            }
        }
    ad_error_clear();
    for (int i = 0; i < hy.n_list && rc == AD_OK; i++)
        rc = ex_par_bcast(hy.list[i]->data, sizeof(ad_real) * hy.list[i]->size, 0);
    int Ks[64], nK = 0;
    static const int base[] = { 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 35, 40, 45, 50,
                                60, 70, 80, 90, 100 };
    for (size_t i = 0; i < sizeof base / sizeof *base; i++)
        if (base[i] < o->T) Ks[nK++] = base[i];
    Ks[nK++] = o->T;
    int n_tasks = o->relerr_tasks < w->n_val ? o->relerr_tasks : w->n_val;
    int n_var = o->relerr_rho > 0 ? 3 : 2, n_items = n_tasks * n_var, first, end;
    ex_par_block(n_items, &first, &end);
    int n_workers = o->threads < end - first ? o->threads : end - first > 0 ? end - first : 1;
    relerr_ctx x = { .o = o, .w = w, .base = &hy, .n_var = n_var, .nK = nK, .Ks = Ks,
                     .n_items = n_items };
    ex_progress_init(&x.pg);
    atomic_init(&x.done, 0);
    x.hy = calloc((size_t)n_workers, sizeof *x.hy);
    x.tk = calloc((size_t)n_workers, sizeof *x.tk);
    x.rec = calloc((size_t)n_items * (size_t)nK * 3, sizeof *x.rec);
    double mean[3][64] = { { 0 } }, mean_cos[3][64] = { { 0 } }; /* [variant][K], as Ks */
    if (rc == AD_OK && (!x.hy || !x.tk || !x.rec))
        rc = ad_fail(AD_ENOMEM, "out of memory");
    for (int i = 0; i < n_workers && rc == AD_OK; i++) {
        ad_rng r0 = rng0; /* any λ: os_hyper_copy overwrites it */
        rc = os_hyper_init(&x.hy[i], mdl_cnn_omniglot(o->channels), &r0, o->rho0, o->step0);
        if (rc == AD_OK) rc = os_task_init(&x.tk[i], &x.hy[i], N_WAY * K_SHOT, N_WAY * K_QUERY,
                                           o->T, true);
    }
    if (rc == AD_OK) rc = ex_par_run(n_workers, n_items, relerr_item, &x);
    if (rc == AD_OK) rc = ex_par_share(x.rec, sizeof *x.rec * (size_t)nK * 3, n_items);
    ex_progress_end(&x.pg);
    ex_file csv;
    if (rc == AD_OK)
        rc = ex_csv_open(&csv, od, "relerr.csv", "variant,task,K,rel_error,cosine,seconds");
    for (int ti = 0; ti < n_tasks && rc == AD_OK; ti++)
        for (int v = 0; v < n_var; v++)
            for (int k = 0; k < nK; k++) {
                const double *rec = x.rec + ((size_t)(ti * n_var + v) * (size_t)nK + (size_t)k) * 3;
                fprintf(csv.f, "%s,%d,%d,%.9g,%.9f,%.3f\n", relerr_var_name[v], ti, Ks[k],
                        rec[0], rec[1], rec[2]);
                mean[v][k] += rec[0] / n_tasks;
                mean_cos[v][k] += rec[1] / n_tasks;
            }
    if (rc == AD_OK) rc = ex_file_commit(&csv);
    if (rc == AD_OK)
        rc = ex_csv_open(&csv, od, "relerr_mean.csv", "K,rel_error_reg,rel_error_rho0,"
                         "rel_error_rho_set,cosine_reg,cosine_rho0,cosine_rho_set");
    if (rc == AD_OK) {
        for (int k = 0; k < nK; k++) /* the third pair is 0 without a third variant */
            fprintf(csv.f, "%d,%.9g,%.9g,%.9g,%.9f,%.9f,%.9f\n", Ks[k], mean[0][k], mean[1][k],
                    mean[2][k], mean_cos[0][k], mean_cos[1][k], mean_cos[2][k]);
        rc = ex_file_commit(&csv);
        int k2 = nK > 1 ? nK - 2 : 0;
        fprintf(stderr, PROG ": relative error vs K at %s over %d tasks (learned ρ / ρ = 0 / ρ = "
                        "%g): K = 1: %.3g / %.3g / %.3g; K = %d: %.3g / %.3g / %.3g; %.0f s\n",
                *lambda_from, n_tasks, o->relerr_rho, mean[0][0], mean[1][0], mean[2][0], Ks[k2],
                mean[0][k2], mean[1][k2], mean[2][k2], ex_now() - t_start);
    }
    for (int i = 0; i < n_workers && x.tk; i++) os_task_free(&x.tk[i]); /* calloc'ed: all */
    for (int i = 0; i < n_workers && x.hy; i++) os_hyper_free(&x.hy[i]);
    free(x.hy);
    free(x.tk);
    free(x.rec);
    os_hyper_free(&hy);
    return rc;
}

/* ---- Table 4 and Figure 7 --------------------------------------------------- */

static void write_table(FILE *f, const opts *o, const result *r)
{
    fprintf(f, "One-shot 5-way Omniglot, %d channels, T = %d, meta-batch %d, Adam η = %g; "
               "%d meta-test tasks (mean ± 95%% CI over tasks); seed %llu.\n\n",
            o->channels, o->T, o->meta_batch, o->lr, o->test_tasks, (unsigned long long)o->seed);
    fprintf(f, "| Method | Test acc. (%%) | Val. acc. (%%) | Hyper-iter. | s / hyper-iter. | "
               "Peak tape (MB) | Rep. tape (MB) | Peak RSS (MB) | γ | ρ |\n");
    fprintf(f, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for (int i = 0; i < o->n_cfg; i++) {
        const result *x = &r[i];
        if (!x->ok) {
            fprintf(f, "| %s | (failed) | | | | | | | | |\n", o->cfgs[i].label);
            continue;
        }
        char rho[96] = "";
        size_t used = 0;
        for (int l = 0; l < x->n_layers && used < sizeof rho; l++)
            used += (size_t)snprintf(rho + used, sizeof rho - used, "%s%.3g", l ? " / " : "", x->rho[l]);
        fprintf(f, "| %s | %.2f ± %.2f | %.2f | %d | %.3f | %.1f | %.1f | %.0f | %.4f | %s |\n",
                o->cfgs[i].label, 100 * x->test_acc, 100 * x->test_ci95, 100 * x->val_acc,
                x->iters, x->s_per_iter, x->peak_tape_mb, x->peak_rep_mb, x->peak_rss_mb, x->step,
                rho);
    }
    fprintf(f, "\nPeak tape: the hypergradient estimator's tape (hg_report); Rep. tape: the "
               "recorded forward of blocks 1–2 for one task (the same for every method); peak "
               "RSS: the configuration's whole process (with ~%.0f MB of Omniglot images). "
               "s / hyper-iter.: training time only (hypergradients of the meta-batch and the "
               "Adam update).\n",
            DATA_OMNIGLOT_CHARS * 20.0 * 28 * 28 * sizeof(float) / 1e6);
    fprintf(f, "\nThe paper (Table 4, 64 channels):\n\n"
               "| Method | Accuracy | iter. | Sec/iter. |\n|---|---:|---:|---:|\n"
               "| 1-RMD | 95.6 | 5000 | 0.4 |\n| 10-RMD | 96.3 | 5000 | 0.7 |\n"
               "| 25-RMD | 96.1 | 5000 | 1.3 |\n| Full RMD | 95.8 | 5000 | 2.2 |\n"
               "| 1-RMD | 97.7 | 15000 | 0.4 |\n| 10-RMD | 97.8 | 15000 | 0.7 |\n"
               "| Short horizon | 96.6 | 15000 | 0.1 |\n");
}

static int write_table_csv(ex_out *od, const opts *o, const result *r)
{
    ex_file f;
    int rc = ex_csv_open(&f, od, "table4.csv", "method,name,K,T,iters,test_acc,test_ci95,test_sd,"
                         "val_acc,s_per_iter,train_s,other_s,test_s,peak_tape_mb,peak_rep_mb,"
                         "peak_rss_mb,step");
    for (int i = 0; i < o->n_cfg && rc == AD_OK; i++)
        if (r[i].ok)
            fprintf(f.f, "%s,%s,%d,%d,%d,%.6f,%.6f,%.6f,%.6f,%.6f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.6g\n",
                    o->cfgs[i].label, o->cfgs[i].name, o->cfgs[i].K, o->cfgs[i].T, r[i].iters,
                    r[i].test_acc, r[i].test_ci95, r[i].test_sd, r[i].val_acc, r[i].s_per_iter,
                    r[i].train_s, r[i].other_s, r[i].test_s, r[i].peak_tape_mb, r[i].peak_rep_mb,
                    r[i].peak_rss_mb, r[i].step);
    return rc == AD_OK ? ex_file_commit(&f) : rc;
}

/* One plot command with a clause per configuration: `using` on file
 * PREFIX_NAME.csv, titled by the label. */
static void gp_plot(FILE *g, const opts *o, const result *r, bool truncated_only,
                    const char *prefix, const char *using)
{
    int n = 0;
    for (int i = 0; i < o->n_cfg; i++) {
        const cfg *c = &o->cfgs[i];
        if (!r[i].ok || (truncated_only && !c->truncated)) continue;
        fprintf(g, "%s'%s_%s.csv' skip 1 using %s with linespoints pt 7 ps 0.6 lw 2 lc %d "
                   "title '%s'",
                n ? ", \\\n     " : "plot ", prefix, c->name, using, i + 1, c->label);
        n++;
    }
    fprintf(g, "\n");
}

static int write_fig7(ex_out *od, const opts *o, const result *r, bool have_relerr,
                      const char *lambda_from)
{
    char rho_learned[96] = "";
    for (int i = 0, used = 0; i < o->n_cfg; i++)
        if (r[i].ok && !strcmp(o->cfgs[i].name, "full"))
            for (int l = 0; l < r[i].n_layers && used < (int)sizeof rho_learned; l++)
                used += snprintf(rho_learned + used, sizeof rho_learned - (size_t)used, "%s%.2g",
                                 l ? "/" : " = ", r[i].rho[l]);
    int n_trunc = 0;
    for (int i = 0; i < o->n_cfg; i++) n_trunc += r[i].ok && o->cfgs[i].truncated;
    ex_file gf;
    int rc = ex_gp_open(&gf, od, "fig7.gp", 1400, 1000);
    if (rc != AD_OK) return rc;
    FILE *g = gf.f;
    fprintf(g,
            "set multiplot layout 2,2 title 'Figure 7: one-shot 5-way Omniglot, %d channels, "
            "T = %d, meta-batch %d, %d hyper-iterations'\n"
            "set key bottom right\n"
            "set title 'meta-validation accuracy (%d tasks) vs hyper-iteration'\n"
            "set xlabel 'hyper-iteration'; set ylabel 'accuracy (%%)'\n",
            o->channels, o->T, o->meta_batch, o->iters, o->val_tasks);
    gp_plot(g, o, r, false, "val", "1:(100*$3)");
    fprintf(g, "set title 'meta-validation accuracy vs training wall time'\n"
               "set xlabel 'training time (s; hypergradients and updates only)'\n");
    gp_plot(g, o, r, false, "val", "2:(100*$3)");
    if (n_trunc > 0) {
        fprintf(g, "set title 'cosine(K-RMD, full RMD) on one task of the meta-batch'\n"
                   "set xlabel 'hyper-iteration'; set ylabel 'cosine similarity'\n"
                   "set yrange [0:1.12]\n"
                   "set key top center horizontal\n");
        gp_plot(g, o, r, true, "cos", "1:2");
        fprintf(g, "set yrange [*:*]\n");
    } else {
        fprintf(g, "set multiplot next\n");
    }
    if (have_relerr)
        fprintf(g,
                "set title 'relative error ‖h_{T−K} − d_λf‖ / ‖d_λf‖ at %s'\n"
                "set xlabel 'K (reverse depth; T = %d)'; set ylabel 'relative ℓ_2 error'\n"
                "set logscale y; set format y '10^{%%L}'\n"
                "set key bottom left vertical maxrows 3\n"
                "set yrange [*:1.5]\n"
                "plot 'relerr_mean.csv' skip 1 using 1:($2 > 0 ? $2 : NaN) with linespoints pt 7 "
                "ps 0.6 lw 2 title 'learned ρ%s', \\\n"
                "     '' skip 1 using 1:($3 > 0 ? $3 : NaN) with linespoints pt 5 ps 0.6 lw 2 "
                "title 'not regularized (ρ = 0)'",
                lambda_from, o->T, rho_learned);
    if (have_relerr && o->relerr_rho > 0)
        fprintf(g, ", \\\n     '' skip 1 using 1:($4 > 0 ? $4 : NaN) with linespoints pt 9 ps 0.6 "
                   "lw 2 title 'every ρ_l = %g (set by hand)'", o->relerr_rho);
    if (have_relerr) fprintf(g, "\n");
    fprintf(g, "unset multiplot\n");
    return ex_gp_commit(&gf);
}

/* ---- main ------------------------------------------------------------------ */

/* Table 4 on stdout and in table4.md and table4.csv, and Figure 7. */
static int report(ex_out *od, const opts *o, const result *res, bool have_relerr,
                  const char *lambda_from)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return ad_fail(AD_ENOMEM, "out of memory");
    write_table(f, o, res);
    int rc = fclose(f) == 0 ? AD_OK : ad_fail(AD_ENOMEM, "out of memory");
    if (rc == AD_OK) {
        fputs(text, stdout);
        fflush(stdout);
        rc = ex_out_save(od, "table4.md", text, len);
    }
    free(text);
    if (rc == AD_OK) rc = write_table_csv(od, o, res);
    if (rc == AD_OK) rc = write_fig7(od, o, res, have_relerr, lambda_from);
    if (rc == AD_OK) rc = profile_plot(od, o, res);
    return rc;
}

/* The run's status after a failure rc: the first fault (not a divergence)
 * wins, since under mpirun it decides how the ranks end (main). */
static int worse(int status, int rc)
{
    return (status == AD_OK || (ex_diverged(status) && !ex_diverged(rc))) ? rc : status;
}

/* Every configuration, the relative-error curves, Table 4 and Figure 7.
 * Returns AD_OK, or the status of a failure, printed already (except a
 * fault under mpirun, returned at once: main prints it). */
static int run(ex_out *od, const opts *o, world *w)
{
    fprintf(stderr, PROG ": %d configurations, %d hyper-iterations each, output in %s%s\n",
            o->n_cfg, o->iters, o->out, o->resume ? " (resuming)" : "");
    result res[MAX_CFG];
    memset(res, 0, sizeof res);
    run_ctx ctx = { .o = o, .w = w, .od = od };
    int status = AD_OK;
    /* A configuration that fails is recorded as failed ("(failed)" in Table
     * 4) and the next one runs; the run exits 1 at the end.  Under mpirun
     * the ranks exchange tasks inside a configuration, which a child process
     * cannot (MPI does not cross fork): every configuration runs here.  Its
     * divergence (ex_diverged) is then the same on every rank, at the same
     * hyper-iteration: a task's inner loss reaches every rank through
     * ex_par_run's agreement, and the validation loss and the update are
     * computed from numbers every rank holds; so the ranks record it and go
     * on together.  Any other failure may be this rank's alone (memory, a
     * file rank 0 writes) and ends the run on every rank (main, ex_par_end),
     * since the others would wait for this rank's tasks. */
    bool mpi = ex_par_size() > 1;
    for (int i = 0; i < o->n_cfg; i++) {
        ctx.ci = i;
        int rc = mpi ? run_cfg(&ctx, &res[i]) : run_cfg_forked(&ctx, &res[i]);
        if (rc != AD_OK && mpi && !ex_diverged(rc)) return rc;
        if (rc != AD_OK) {
            fprintf(stderr, PROG ": %s\n", ad_error()); /* rank 0's stderr alone is shown */
            res[i].ok = false;
            status = worse(status, rc);
        } else if (res[i].from_ckpt) {
            fprintf(stderr, PROG ": %s: already done (%s/ckpt_%s.bin), %.2f%% test accuracy\n",
                    o->cfgs[i].label, o->out, o->cfgs[i].name, 100 * res[i].test_acc);
        }
    }
    bool have_relerr = false;
    const char *lambda_from = "";
    if (o->relerr_tasks > 0) {
        int rc = relerr_run(o, w, od, &lambda_from);
        if (rc == AD_OK) have_relerr = true;
        else {
            fprintf(stderr, PROG ": relative error vs K: %s\n", ad_error());
            status = worse(status, rc);
        }
    }
    int n_ok = 0;
    for (int i = 0; i < o->n_cfg; i++) n_ok += res[i].ok;
    if (n_ok > 0) {
        int rc = report(od, o, res, have_relerr, lambda_from);
        if (rc != AD_OK) {
            fprintf(stderr, PROG ": %s\n", ad_error());
            status = worse(status, rc);
        }
    }
    return status;
}

int main(int argc, char **argv)
{
    int rc = ex_par_init(&argc, &argv);
    int st = rc ? ex_exit(rc) : ex_flags_parse(&cmd, argc, argv);
    if (st) return ex_par_end(st < 0 ? 0 : st);
    double t0 = ex_now();
    ex_out *od = malloc(sizeof *od);
    world w = { 0 };
    rc = od ? ex_out_open(od, opt.out, !opt.no_plots) : ad_fail(AD_ENOMEM, "out of memory");
    if (rc == AD_OK && opt.resume) rc = resume_check(&opt);
    if (rc == AD_OK) rc = world_load(&opt, &w);
    if (rc != AD_OK) {
        if (od) ex_out_close(od); /* world_load frees what it made before it failed */
        free(od);
        return ex_par_end(ex_exit(rc));
    }
    if (ex_par_size() > 1)
        fprintf(stderr, PROG ": %d MPI ranks, %d worker threads each\n", ex_par_size(), opt.threads);
    rc = run(od, &opt, &w);
    char total[16];
    /* Under mpirun a fault may be one rank's: the message (each rank's
     * own), then every rank ends.  Diverged configurations were recorded
     * on every rank alike: the ranks finish together, as one process does. */
    if (rc != AD_OK && ex_par_size() > 1 && !ex_diverged(rc))
        return ex_par_end(ex_exit(rc));
    fprintf(stderr, PROG ": done in %s%s; results in %s\n", ex_duration(ex_now() - t0, total),
            rc ? " (with errors)" : "", opt.out);
    world_free(&w);
    ex_out_close(od);
    free(od);
    return ex_par_end_all(rc == AD_OK ? 0 : rc == EX_EUSAGE ? EX_EXIT_USAGE : EX_EXIT_LIB);
}
