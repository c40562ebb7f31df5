/*
 * oneshot.c — one-shot learning on Omniglot (Sec. 4.3 and App. G.3 of the
 * paper): Table 4 and Figure 7, for K-RMD against full RMD and a short
 * horizon.
 *
 *   oneshot [--data DIR] [--channels 64] [--hyper-iters N] [--K 1,10,25,full,short]
 *           [--out results/oneshot] [--seed S] [--quick] [--resume] ...
 *
 * (--help lists every flag.)  The problem is oneshot_problem.c: 5-way
 * tasks with 1 support and 15 query images per class; the CNN's blocks 1–2
 * are the hyper-representation, blocks 3–4 and the classifier are trained
 * by T = 50 steps of gradient descent from learned centres with a learned
 * step size and learned per-layer penalties ρ_l = softplus(ν_l).  The outer
 * loop is Adam on the mean hypergradient of a meta-batch of tasks.
 *
 * Each configuration (a K, full RMD, or the short horizon T = 1) runs in a
 * child process (fork), so that its peak RSS is its own; the full-RMD
 * hypergradients that the cosine of Fig. 7 (plot 3) compares against run in
 * a grandchild, so that they do not count in a truncated K's peak either.  Every child
 * starts from the same λ0 and sees the same sequence of training tasks,
 * the same meta-validation tasks and the same meta-test tasks.
 *
 * Outputs in --out (default results/oneshot), per configuration NAME
 * (K1, K10, K25, full, short):
 *   train_NAME.csv     one row per hyper-iteration: training seconds so far,
 *                      seconds of this iteration, mean outer loss of the
 *                      meta-batch, γ, ρ_1..ρ_3 (after the update)
 *   val_NAME.csv       meta-validation accuracy and loss every few
 *                      hyper-iterations (iteration 0 is λ0)
 *   cos_NAME.csv       (truncated K only) cosine and relative error of the
 *                      K-RMD hypergradient against full RMD on the first
 *                      task of the meta-batch, every few hyper-iterations
 *   summary_NAME.txt   the configuration's Table 4 row (key value lines)
 *   ckpt_NAME.bin      the checkpoint: λ, Adam's moments and step count,
 *                      the iteration, the task RNG, the logs
 * and for the whole run:
 *   relerr.csv         ‖h_{T−K} − dλf‖/‖dλf‖ for K = 1..T at a fixed λ, per
 *                      task, with the learned ρ, with ρ = 0 and with every
 *                      ρ_l set to --relerr-rho; relerr_mean.csv the
 *                      mean over tasks
 *   table4.csv, table4.md   Table 4 (also printed)
 *   fig7.gp, fig7.png  Figure 7's four plots
 * Exit status: 0 on success, 1 on a run-time failure (data, memory, NaN,
 * files), 2 on bad usage.  gnuplot missing or failing is a warning.
 */
#define _XOPEN_SOURCE 700 /* getrusage, isatty */

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "experiments/common.h"
#include "experiments/data/omniglot.h"
#include "experiments/oneshot_problem.h"
#include "optim/hypergrad.h"
#include "optim/outer.h"

#define PROG "oneshot"
enum { MAX_CFG = 8, N_WAY = 5, K_SHOT = 1, K_QUERY = 15 };
static const double STEP_LO = 1e-3, STEP_HI = 2.0;

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
    int relerr_tasks, ckpt_every;
    double lr, rho0, step0, relerr_rho;
    uint64_t seed;
    bool quick, resume, plots;
    bool eval_every_given, cos_every_given; /* on the command line (not derived) */
    cfg cfgs[MAX_CFG];
    int n_cfg;
    const char *k_list; /* --K, or NULL for the default list */
} opts;

static void usage(FILE *out)
{
    fprintf(out,
"usage: " PROG " [flags]\n"
"\n"
"One-shot learning on Omniglot (Shaban et al. 2019, Sec. 4.3, App. G.3):\n"
"5-way tasks, 1 training (support) and 15 validation (query) images per class.\n"
"Network: four blocks of 3x3 conv (C kernels), 2x2 max-pool, batch-norm, relu,\n"
"then a linear 5-way classifier.  Blocks 1-2 are hyperparameters (the hyper-\n"
"representation, frozen in the inner loop); blocks 3-4 and the classifier (w)\n"
"are trained per task by T steps of gradient descent from centres c on\n"
"  CE(support) + sum_l rho_l sum_{j in layer l} ||w_j - c_j||^2,\n"
"rho_l = softplus(nu_l), one per trained layer (3).  Hyperparameters: blocks 1-2,\n"
"c, nu and the inner step size gamma (kept in [%g, %g]).  Outer loss: CE on the\n"
"75 query images; Adam on the mean hypergradient of a meta-batch of tasks.\n"
"Characters are split 1200 / 100 / 323 (meta-train / -validation / -test).\n"
"\n"
"  --data DIR         the Omniglot folder (images_background.zip and\n"
"                     images_evaluation.zip; default $HYPERTAPE_DATA/omniglot,\n"
"                     then ../shared/data/omniglot)\n"
"  --channels N       kernels per conv layer (default 64, the paper's)\n"
"  --hyper-iters N    Adam updates per configuration (default 130: all five\n"
"                     configurations then train in about 35 minutes on the\n"
"                     shared 2-core machine; the paper runs 5000)\n"
"  --K LIST           configurations, comma-separated: a number K (K-RMD; K >= T\n"
"                     is full RMD), 'full' (K = T), 'short' (T = 1, full back-\n"
"                     propagation); no empty entries, none twice (default\n"
"                     1,10,25,full,short, fitted to --T: a K >= T becomes full\n"
"                     RMD and a repeat is dropped, so --T 10 runs 1,full,short)\n"
"  --out DIR          output folder, created if missing (default results/oneshot,\n"
"                     results/oneshot-quick with --quick)\n"
"  --seed S           seeds the split, lambda0 and every task (default 1)\n"
"  --quick            a tiny end-to-end run (well under a minute): 8 channels,\n"
"                     6 hyper-iterations, 4 validation and 10 test tasks\n"
"  --resume           continue from DIR's checkpoints: finished configurations\n"
"                     are kept, an interrupted one goes on from its last\n"
"                     checkpoint.  The flags must describe the same run, but\n"
"                     --hyper-iters may grow, not shrink (finished\n"
"                     configurations then train on), and the schedule may\n"
"                     change: a resumed\n"
"                     configuration keeps its checkpoint's --eval-every and\n"
"                     --cos-every unless they are given, which then apply\n"
"                     from the checkpoint on\n",
            STEP_LO, STEP_HI);
    fprintf(out,
"  --T N              inner steps (default 50)\n"
"  --meta-batch N     tasks per hyper-iteration (default 4)\n"
"  --lr ETA           Adam's step size (constant; default 1e-2)\n"
"  --rho0 R           initial rho_l (default 0.1)\n"
"  --step0 G          initial inner step size gamma (default 0.03)\n"
"                     (these three defaults were picked by 40-iteration probes\n"
"                     of 10-RMD at 32 channels; gamma = 0.1 makes the inner\n"
"                     loop of the random initial network unstable)\n"
"  --val-tasks N      meta-validation tasks for the learning curves (default 20)\n"
"  --eval-every N     meta-validation every N hyper-iterations, and after the\n"
"                     last (default --hyper-iters / 10, at least 1; 2 with\n"
"                     --quick; the checkpoint's on --resume)\n"
"  --test-tasks N     meta-test tasks for Table 4 (default 120, the paper's)\n"
"  --cos-every N      cosine against full RMD every N hyper-iterations, at the\n"
"                     first and after the last, truncated K only (default\n"
"                     --hyper-iters / 20, at least 1; 2 with --quick; the\n"
"                     checkpoint's on --resume; 0: never)\n"
"  --relerr-tasks N   tasks for the relative error against K (Fig. 7, plot 4),\n"
"                     at the final lambda of full RMD (default 3; 0: skip):\n"
"                     with the learned rho, with rho = 0, and with every\n"
"                     rho_l = --relerr-rho\n"
"  --relerr-rho R     the third curve's rho (default 1; 0: no third curve)\n"
"  --ckpt-every S     write the checkpoint every S seconds (default 60) and at\n"
"                     the end of training\n"
"  --no-plots         do not run gnuplot\n"
"  -h, --help         this text\n"
"\n"
"Times: 'training seconds' count hypergradients and updates only; the meta-\n"
"validation, the cosine measurements and the meta-test are timed apart.\n"
"Progress goes to stderr; Table 4 to stdout and DIR/table4.md.\n"
"OPENBLAS_NUM_THREADS sets the BLAS threads (OpenBLAS's default: all cores).\n"
"Exit status: 0 on success, 1 on a run-time failure, 2 on bad usage.\n");
}

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
    if (!*s) return ex_usage_error_old(PROG, "--K: empty list");
    for (const char *p = s;;) { /* p is at the start of an entry */
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char tok[32];
        if (len == 0) return ex_usage_error_old(PROG, "--K: empty entry in '%s'", s);
        if (len >= sizeof tok)
            return ex_usage_error_old(PROG, "--K: entry '%.*s' too long", (int)len, p);
        memcpy(tok, p, len);
        tok[len] = '\0';
        cfg c;
        int K;
        if (!strcmp(tok, "short")) {
            c = (cfg){ .K = 1, .T = 1 };
            snprintf(c.name, sizeof c.name, "short");
            snprintf(c.label, sizeof c.label, "Short horizon (T=1)");
        } else if (!strcmp(tok, "full") || (ex_parse_int(tok, 1, 100000, &K) && K >= o->T)) {
            c = (cfg){ .K = o->T, .T = o->T };
            snprintf(c.name, sizeof c.name, "full");
            snprintf(c.label, sizeof c.label, "Full RMD");
        } else if (ex_parse_int(tok, 1, 100000, &K)) {
            c = (cfg){ .K = K, .T = o->T, .truncated = true };
            snprintf(c.name, sizeof c.name, "K%d", K);
            snprintf(c.label, sizeof c.label, "%d-RMD", K);
        } else {
            return ex_usage_error_old(PROG, "--K: expected numbers, 'full' or 'short', got '%s'",
                                  tok);
        }
        bool repeat = false;
        for (int i = 0; i < o->n_cfg; i++) {
            const cfg *d = &o->cfgs[i];
            /* The same name, or another name for the same computation (with
             * T = 1, "short" is full RMD; any K >= T is "full"). */
            if (!strcmp(d->name, c.name) || (d->K == c.K && d->T == c.T)) {
                if (strict)
                    return ex_usage_error_old(PROG, "--K: '%s' is the same configuration as an "
                                          "earlier entry (%s)", tok, d->label);
                repeat = true;
            }
        }
        if (!repeat) {
            if (o->n_cfg == MAX_CFG) return ex_usage_error_old(PROG, "--K: at most 8 configurations");
            o->cfgs[o->n_cfg++] = c;
        }
        if (!comma) break;
        p = comma + 1;
    }
    return 0;
}

/* Returns 0 to go on, -1 after --help, or an exit status. */
static int parse_args(int argc, char **argv, opts *o)
{
    *o = (opts){ .channels = 64, .iters = 130, .T = 50, .meta_batch = 4, .val_tasks = 20,
                 .test_tasks = 120, .eval_every = -1, .cos_every = -1, .relerr_tasks = 3,
                 .ckpt_every = 60, .relerr_rho = 1, .lr = 1e-2, .rho0 = 0.1, .step0 = 0.03,
                 .seed = 1, .plots = true };
    enum { SET_CH = 1, SET_IT = 2, SET_VAL = 4, SET_TEST = 8, SET_REL = 16, SET_OUT = 32,
           SET_EV = 64, SET_COS = 128 }; /* flags given explicitly (--quick leaves them) */
    int set = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return -1;
        }
        if (!strcmp(a, "--quick")) { o->quick = true; continue; }
        if (!strcmp(a, "--resume")) { o->resume = true; continue; }
        if (!strcmp(a, "--no-plots")) { o->plots = false; continue; }
        static const char *const known[] = {
            "--data", "--channels", "--hyper-iters", "--K", "--out", "--seed", "--T",
            "--meta-batch", "--lr", "--rho0", "--step0", "--val-tasks", "--eval-every",
            "--test-tasks", "--cos-every", "--relerr-tasks", "--ckpt-every", "--relerr-rho" };
        char name[EX_FLAG_NAME_LEN];
        const char *val;
        if (ex_flag_value(argc, argv, &i, known, sizeof known / sizeof *known, name, &val) != AD_OK)
            return ex_usage_error_old(PROG, "%s", ad_error());

#define INT_FLAG(flag, field, lo, hi, bit)                                                     \
    if (!strcmp(name, flag)) {                                                                 \
        if (!ex_parse_int(val, lo, hi, &o->field))                                             \
            return ex_usage_error_old(PROG, flag ": expected a whole number in " #lo ".." #hi      \
                                             ", got '%s'", val);                               \
        set |= bit;                                                                            \
        continue;                                                                              \
    }
#define POS_FLAG(flag, field)                                                                  \
    if (!strcmp(name, flag)) {                                                                 \
        if (!ex_parse_double(val, &o->field) || !(o->field > 0))                               \
            return ex_usage_error_old(PROG, flag ": expected a finite number > 0, got '%s'", val); \
        continue;                                                                              \
    }
        INT_FLAG("--channels", channels, 1, 1024, SET_CH)
        INT_FLAG("--hyper-iters", iters, 1, 1000000, SET_IT)
        INT_FLAG("--T", T, 1, 100000, 0)
        INT_FLAG("--meta-batch", meta_batch, 1, 1000, 0)
        INT_FLAG("--val-tasks", val_tasks, 1, 100000, SET_VAL)
        INT_FLAG("--eval-every", eval_every, 1, 1000000, SET_EV)
        INT_FLAG("--test-tasks", test_tasks, 1, 100000, SET_TEST)
        INT_FLAG("--cos-every", cos_every, 0, 1000000, SET_COS)
        INT_FLAG("--relerr-tasks", relerr_tasks, 0, 1000, SET_REL)
        INT_FLAG("--ckpt-every", ckpt_every, 1, 1000000, 0)
        POS_FLAG("--lr", lr)
        POS_FLAG("--rho0", rho0)
        POS_FLAG("--step0", step0)
#undef INT_FLAG
#undef POS_FLAG
        if (!strcmp(name, "--relerr-rho")) {
            if (!ex_parse_double(val, &o->relerr_rho) || o->relerr_rho < 0 || o->relerr_rho > 30)
                return ex_usage_error_old(PROG, "--relerr-rho: expected a number in [0, 30], got '%s'",
                                      val);
        } else if (!strcmp(name, "--data")) {
            if (!*val) return ex_usage_error_old(PROG, "--data: empty folder name");
            o->data = val;
        } else if (!strcmp(name, "--out")) {
            if (!*val) return ex_usage_error_old(PROG, "--out: empty folder name");
            o->out = val;
            set |= SET_OUT;
        } else if (!strcmp(name, "--K")) {
            o->k_list = val;
        } else if (!ex_parse_u64(val, &o->seed)) { /* --seed */
            return ex_usage_error_old(PROG, "--seed: expected a whole number >= 0, got '%s'", val);
        }
    }
    if (o->quick) { /* explicit flags win */
        if (!(set & SET_CH)) o->channels = 8;
        if (!(set & SET_IT)) o->iters = 6;
        if (!(set & SET_VAL)) o->val_tasks = 4;
        if (!(set & SET_TEST)) o->test_tasks = 10;
        if (!(set & SET_REL)) o->relerr_tasks = 1;
        if (!(set & SET_EV)) o->eval_every = 2;
        if (!(set & SET_COS)) o->cos_every = 2;
    }
    if (!(set & SET_OUT)) o->out = o->quick ? "results/oneshot-quick" : "results/oneshot";
    o->eval_every_given = set & SET_EV;
    o->cos_every_given = set & SET_COS;
    if (o->eval_every < 0) o->eval_every = o->iters >= 10 ? o->iters / 10 : 1;
    if (o->cos_every < 0) o->cos_every = o->iters >= 20 ? o->iters / 20 : 1;
    if (o->rho0 > 30) return ex_usage_error_old(PROG, "--rho0: at most 30");
    if (o->step0 < STEP_LO || o->step0 > STEP_HI)
        return ex_usage_error_old(PROG, "--step0: must lie in [1e-3, 2]");
    return parse_k_list(o);
}

/* ---- small helpers ------------------------------------------------------- */

static void out_path(const opts *o, const char *name, char *path)
{
    snprintf(path, EX_PATH_LEN, "%s/%s", o->out, name);
}

static FILE *open_out(const opts *o, const char *name, const char *mode)
{
    char path[EX_PATH_LEN];
    out_path(o, name, path);
    FILE *f = fopen(path, mode);
    if (!f) ad_fail(AD_EIO, "cannot write %s: %s", path, strerror(errno));
    return f;
}

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

static long peak_rss_kb(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_maxrss : 0;
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

/* The sample standard deviation of n values from their sum and sum of
 * squares (0 for one value). */
static double sd_from_sums(double sum, double sum_sq, int n)
{
    return n > 1 ? sqrt(fmax(0, (sum_sq - sum * sum / n) / (n - 1))) : 0;
}

/* Mean query accuracy and loss over tasks; optionally the standard
 * deviation of the accuracy over tasks. */
static int evaluate_tasks(os_task *tk, const data_task *tasks, int n, double *acc, double *loss,
                          double *acc_sd)
{
    double sa = 0, sa2 = 0, sl = 0;
    for (int i = 0; i < n; i++) {
        double a = 0, l = 0;
        int rc = task_load(tk, &tasks[i], false);
        if (rc == AD_OK) rc = os_task_evaluate(tk, &a, &l);
        if (rc != AD_OK) return rc;
        sa += a;
        sa2 += a * a;
        sl += l;
    }
    *acc = sa / n;
    *loss = sl / n;
    if (acc_sd) *acc_sd = sd_from_sums(sa, sa2, n);
    return AD_OK;
}

/* ---- logs and the checkpoint --------------------------------------------- */

typedef struct train_row {
    double iter, train_s, iter_s, loss, step, rho[OS_MAX_LAYERS];
} train_row;

typedef struct val_row {
    double iter, train_s, acc, loss;
} val_row;

typedef struct cos_row {
    double iter, cosine, rel_error, seconds;
} cos_row;

/* Growable arrays of plain rows. */
typedef struct logs {
    train_row *tr;
    val_row *va;
    cos_row *co;
    int n_tr, n_va, n_co, cap_tr, cap_va, cap_co;
} logs;

static int grow(void **p, int *cap, int need, size_t size)
{
    if (need <= *cap) return AD_OK;
    int c = *cap > 0 ? *cap : 64;
    while (c < need) c = c > INT_MAX / 2 ? need : 2 * c; /* no overflow */
    if ((size_t)c > SIZE_MAX / size) return ad_fail(AD_ENOMEM, "out of memory");
    void *q = realloc(*p, (size_t)c * size);
    if (!q) return ad_fail(AD_ENOMEM, "out of memory");
    *p = q;
    *cap = c;
    return AD_OK;
}

#define LOG_PUSH(lg, arr, n, cap, row)                                                         \
    (grow((void **)&(lg)->arr, &(lg)->cap, (lg)->n + 1, sizeof *(lg)->arr) == AD_OK            \
         ? ((lg)->arr[(lg)->n++] = (row), AD_OK)                                               \
         : AD_ENOMEM)

static void logs_free(logs *lg)
{
    free(lg->tr);
    free(lg->va);
    free(lg->co);
    memset(lg, 0, sizeof *lg);
}

/* What a checkpoint must agree on to be resumed, but for eval_every and
 * cos_every: they are stored here (the layout of HTOSCK01 files) and only
 * say when the logs take a point, so a resumed run may change them (and
 * keeps the stored ones unless the flags are given; see run_cfg). */
typedef struct ckpt_id {
    char magic[8];
    int channels, T, K, meta_batch, n_list, val_tasks, eval_every, cos_every;
    uint64_t seed;
    double lr, rho0, step0;
    size_t numel;
} ckpt_id;

typedef struct ckpt_state {
    int iter;
    ad_rng rng;
    double train_s, other_s;
    size_t peak_tape, peak_rep;
} ckpt_state;

static ckpt_id make_id(const opts *o, const cfg *c, const os_hyper *hy)
{
    ckpt_id id;
    memset(&id, 0, sizeof id); /* padding too: the struct is written as bytes */
    memcpy(id.magic, "HTOSCK01", 8);
    id.channels = o->channels;
    id.T = c->T;
    id.K = c->K;
    id.meta_batch = o->meta_batch;
    id.n_list = hy->n_list;
    id.val_tasks = o->val_tasks;
    id.eval_every = o->eval_every;
    id.cos_every = o->cos_every;
    id.seed = o->seed;
    id.lr = o->lr;
    id.rho0 = o->rho0;
    id.step0 = o->step0;
    id.numel = os_hyper_numel(hy);
    return id;
}

static bool put(FILE *f, const void *p, size_t size, size_t n)
{
    return n == 0 || fwrite(p, size, n, f) == n;
}

static bool get(FILE *f, void *p, size_t size, size_t n)
{
    return n == 0 || fread(p, size, n, f) == n;
}

/* Writes the checkpoint to a temporary file and renames it over the old
 * one, so an interruption never leaves half a checkpoint. */
static int ckpt_write(const opts *o, const cfg *c, const os_hyper *hy, const opt_outer *adam,
                      const ckpt_state *st, const logs *lg)
{
    char path[EX_PATH_LEN], tmp[EX_PATH_LEN + 8], name[64];
    snprintf(name, sizeof name, "ckpt_%s.bin", c->name);
    out_path(o, name, path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return ad_fail(AD_EIO, "cannot write %s: %s", tmp, strerror(errno));
    ckpt_id id = make_id(o, c, hy);
    bool ok = put(f, &id, sizeof id, 1) && put(f, st, sizeof *st, 1) &&
              put(f, &adam->tau, sizeof adam->tau, 1) && put(f, &adam->dim, sizeof adam->dim, 1);
    for (int i = 0; i < hy->n_list && ok; i++)
        ok = put(f, hy->list[i]->data, sizeof(ad_real), hy->list[i]->size);
    ok = ok && put(f, adam->m, sizeof(double), adam->dim) && put(f, adam->v, sizeof(double), adam->dim);
    ok = ok && put(f, &lg->n_tr, sizeof lg->n_tr, 1) && put(f, lg->tr, sizeof *lg->tr, (size_t)lg->n_tr);
    ok = ok && put(f, &lg->n_va, sizeof lg->n_va, 1) && put(f, lg->va, sizeof *lg->va, (size_t)lg->n_va);
    ok = ok && put(f, &lg->n_co, sizeof lg->n_co, 1) && put(f, lg->co, sizeof *lg->co, (size_t)lg->n_co);
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        remove(tmp);
        return ad_fail(AD_EIO, "cannot write the checkpoint %s", path);
    }
    return AD_OK;
}

/* Reads one log of a checkpoint: its row count, which must lie in 0..max
 * (a larger one cannot come from this run: a corrupt file), then the rows. */
static int read_log(FILE *f, const char *path, const char *what, int max, void **rows, int *n,
                    int *cap, size_t size)
{
    int k;
    if (!get(f, &k, sizeof k, 1))
        return ad_fail(AD_EFORMAT, "%s is truncated: it ends before the %s log", path, what);
    if (k < 0 || k > max)
        return ad_fail(AD_EFORMAT, "%s is corrupt: its %s log has %d rows, not 0..%d", path,
                       what, k, max);
    int rc = grow(rows, cap, k, size);
    if (rc != AD_OK) return rc;
    if (!get(f, *rows, size, (size_t)k))
        return ad_fail(AD_EFORMAT, "%s is truncated: its %s log ends early", path, what);
    *n = k;
    return AD_OK;
}

/* Reads a checkpoint into hy (λ), adam, st and lg, and its schedule into
 * *eval_every and *cos_every (either may be NULL).  λ only when adam is
 * NULL (Fig. 7 plot 4 reads the final λ of full RMD).  AD_EIO if there is
 * no file; AD_EFORMAT if it belongs to another run, is truncated or
 * corrupt, or (with adam) is further on than --hyper-iters. */
static int ckpt_read(const opts *o, const cfg *c, os_hyper *hy, opt_outer *adam, ckpt_state *st,
                     logs *lg, int *eval_every, int *cos_every)
{
    char path[EX_PATH_LEN], name[64];
    snprintf(name, sizeof name, "ckpt_%s.bin", c->name);
    out_path(o, name, path);
    FILE *f = fopen(path, "rb");
    if (!f) return ad_fail(AD_EIO, "no checkpoint %s", path);
    ckpt_id id, want = make_id(o, c, hy);
    ckpt_state s;
    int tau = 0, rc = AD_OK;
    size_t dim = 0;
    if (!(get(f, &id, sizeof id, 1) && get(f, &s, sizeof s, 1) && get(f, &tau, sizeof tau, 1) &&
          get(f, &dim, sizeof dim, 1))) {
        rc = ad_fail(AD_EFORMAT, "%s is truncated: it ends within its header", path);
        goto done;
    }
    int ev = id.eval_every, ce = id.cos_every; /* not part of the identity */
    id.eval_every = want.eval_every;
    id.cos_every = want.cos_every;
    if (memcmp(&id, &want, sizeof id) != 0) {
        rc = ad_fail(AD_EFORMAT, "%s belongs to another run (other flags or version): start "
                                 "afresh without --resume, or use the same flags", path);
        goto done;
    }
    if (ev < 1 || ev > 1000000 || ce < 0 || ce > 1000000) {
        rc = ad_fail(AD_EFORMAT, "%s is corrupt: --eval-every %d, --cos-every %d", path, ev, ce);
        goto done;
    }
    bool ok = true;
    for (int i = 0; i < hy->n_list && ok; i++)
        ok = get(f, hy->list[i]->data, sizeof(ad_real), hy->list[i]->size);
    if (!ok) {
        rc = ad_fail(AD_EFORMAT, "%s is truncated: it ends within λ", path);
        goto done;
    }
    if (adam) {
        /* The iteration bounds every count below: one training row per
         * hyper-iteration, a validation row per one and λ0's, at most one
         * cosine per one, one Adam step per one. */
        if (s.iter < 0 || tau < 0 || tau > s.iter || dim != adam->dim) {
            rc = ad_fail(AD_EFORMAT, "%s is corrupt: hyper-iteration %d, %d Adam steps of %zu "
                                     "entries (%zu expected)",
                         path, s.iter, tau, dim, adam->dim);
            goto done;
        }
        if (s.iter > o->iters) {
            rc = ad_fail(AD_EFORMAT, "%s is at hyper-iteration %d, past --hyper-iters %d: on "
                                     "--resume --hyper-iters may grow, not shrink",
                         path, s.iter, o->iters);
            goto done;
        }
        if (!(get(f, adam->m, sizeof(double), dim) && get(f, adam->v, sizeof(double), dim))) {
            rc = ad_fail(AD_EFORMAT, "%s is truncated: it ends within Adam's moments", path);
            goto done;
        }
        rc = read_log(f, path, "training", s.iter, (void **)&lg->tr, &lg->n_tr, &lg->cap_tr,
                      sizeof *lg->tr);
        if (rc == AD_OK)
            rc = read_log(f, path, "validation", s.iter + 1, (void **)&lg->va, &lg->n_va,
                          &lg->cap_va, sizeof *lg->va);
        if (rc == AD_OK)
            rc = read_log(f, path, "cosine", s.iter, (void **)&lg->co, &lg->n_co, &lg->cap_co,
                          sizeof *lg->co);
        if (rc == AD_OK && fgetc(f) != EOF)
            rc = ad_fail(AD_EFORMAT, "%s is corrupt: bytes after its last log", path);
        if (rc != AD_OK) goto done;
        adam->tau = tau;
        *st = s;
    }
    if (eval_every) *eval_every = ev;
    if (cos_every) *cos_every = ce;
done:
    fclose(f);
    return rc;
}

/* The CSV files of one configuration, rewritten from the logs. */
static int write_logs(const opts *o, const cfg *c, const os_hyper *hy, const logs *lg)
{
    char name[64];
    snprintf(name, sizeof name, "train_%s.csv", c->name);
    FILE *f = open_out(o, name, "w");
    if (!f) return AD_EIO;
    fprintf(f, "iter,train_seconds,iter_seconds,outer_loss,step");
    for (int l = 0; l < hy->n_layers; l++) fprintf(f, ",rho%d", l + 1);
    fprintf(f, "\n");
    for (int i = 0; i < lg->n_tr; i++) {
        const train_row *r = &lg->tr[i];
        fprintf(f, "%.0f,%.4f,%.4f,%.6f,%.6g", r->iter, r->train_s, r->iter_s, r->loss, r->step);
        for (int l = 0; l < hy->n_layers; l++) fprintf(f, ",%.6g", r->rho[l]);
        fprintf(f, "\n");
    }
    int rc = ex_close(f, name);
    snprintf(name, sizeof name, "val_%s.csv", c->name);
    if (rc == AD_OK && !(f = open_out(o, name, "w"))) rc = AD_EIO;
    if (rc == AD_OK) {
        fprintf(f, "iter,train_seconds,val_acc,val_loss\n");
        for (int i = 0; i < lg->n_va; i++)
            fprintf(f, "%.0f,%.4f,%.6f,%.6f\n", lg->va[i].iter, lg->va[i].train_s, lg->va[i].acc,
                    lg->va[i].loss);
        rc = ex_close(f, name);
    }
    if (rc == AD_OK && c->truncated) {
        snprintf(name, sizeof name, "cos_%s.csv", c->name);
        if (!(f = open_out(o, name, "w"))) return AD_EIO;
        fprintf(f, "iter,cosine,rel_error,seconds\n");
        for (int i = 0; i < lg->n_co; i++)
            fprintf(f, "%.0f,%.9f,%.9g,%.3f\n", lg->co[i].iter, lg->co[i].cosine,
                    lg->co[i].rel_error, lg->co[i].seconds);
        rc = ex_close(f, name);
    }
    return rc;
}

/* ---- one configuration's result (summary_NAME.txt) ------------------------ */

typedef struct result {
    int iters;
    double test_acc, test_sd, test_ci95, val_acc, val_loss;
    double s_per_iter, train_s, other_s, test_s;
    double peak_tape_mb, peak_rep_mb, peak_rss_mb;
    double step, rho[OS_MAX_LAYERS];
    int n_layers;
    bool ok;
} result;

/* The flags a finished configuration's result depends on, as one token,
 * and the schedule of its logs (/evN/cosN), which read_summary ignores. */
static void run_id(const opts *o, const cfg *c, char *buf, size_t len)
{
    snprintf(buf, len, "v1/ch%d/T%d/K%d/mb%d/seed%llu/lr%.9g/rho%.9g/step%.9g/val%d/ev%d/cos%d/test%d",
             o->channels, c->T, c->K, o->meta_batch, (unsigned long long)o->seed, o->lr, o->rho0,
             o->step0, o->val_tasks, o->eval_every, o->cos_every, o->test_tasks);
}

static int write_summary(const opts *o, const cfg *c, const result *r)
{
    char name[64], id[256];
    run_id(o, c, id, sizeof id);
    snprintf(name, sizeof name, "summary_%s.txt", c->name);
    FILE *f = open_out(o, name, "w");
    if (!f) return AD_EIO;
    fprintf(f, "id %s\n", id);
    fprintf(f, "name %s\nK %d\nT %d\niters %d\ntest_acc %.6f\ntest_sd %.6f\ntest_ci95 %.6f\n"
               "val_acc %.6f\nval_loss %.6f\ns_per_iter %.6f\ntrain_s %.3f\nother_s %.3f\n"
               "test_s %.3f\npeak_tape_mb %.3f\npeak_rep_mb %.3f\npeak_rss_mb %.3f\nstep %.6g\n"
               "n_layers %d\n",
            c->name, c->K, c->T, r->iters, r->test_acc, r->test_sd, r->test_ci95, r->val_acc,
            r->val_loss, r->s_per_iter, r->train_s, r->other_s, r->test_s, r->peak_tape_mb,
            r->peak_rep_mb, r->peak_rss_mb, r->step, r->n_layers);
    for (int l = 0; l < r->n_layers; l++) fprintf(f, "rho%d %.6g\n", l + 1, r->rho[l]);
    return ex_close(f, name);
}

/* Drops the /evN and /cosN parts of a run_id in place: when the logs took
 * their points does not change the result (the final λ, the meta-test and
 * the last meta-validation point), and a resumed configuration keeps its
 * checkpoint's schedule, which may differ from the one the flags derive. */
static void strip_schedule(char *id)
{
    for (char *p = id; (p = strchr(p, '/'));) {
        char *q = p + 1;
        if (!strncmp(q, "ev", 2)) q += 2;
        else if (!strncmp(q, "cos", 3)) q += 3;
        char *d = q;
        while (isdigit((unsigned char)*d)) d++;
        if (q != p + 1 && d != q && (*d == '/' || *d == '\0')) memmove(p, d, strlen(d) + 1);
        else p++;
    }
}

/* Reads summary_NAME.txt; false if absent, for other flags (but for the
 * schedule of the logs) or for another number of hyper-iterations. */
static bool read_summary(const opts *o, const cfg *c, result *r)
{
    char name[64], path[EX_PATH_LEN], key[256], id[256];
    bool same_id = false;
    run_id(o, c, id, sizeof id);
    strip_schedule(id);
    snprintf(name, sizeof name, "summary_%s.txt", c->name);
    out_path(o, name, path);
    FILE *f = fopen(path, "r");
    if (!f) return false;
    memset(r, 0, sizeof *r);
    double v;
    int seen = 0;
    while (fscanf(f, "%255s", key) == 1) {
        if (!strcmp(key, "name")) {
            if (fscanf(f, "%255s", key) != 1) break;
            continue;
        }
        if (!strcmp(key, "id")) {
            if (fscanf(f, "%255s", key) != 1) break;
            strip_schedule(key);
            same_id = !strcmp(key, id);
            continue;
        }
        if (fscanf(f, "%lf", &v) != 1) break;
        seen++;
        if (!strcmp(key, "iters")) r->iters = (int)v;
        else if (!strcmp(key, "test_acc")) r->test_acc = v;
        else if (!strcmp(key, "test_sd")) r->test_sd = v;
        else if (!strcmp(key, "test_ci95")) r->test_ci95 = v;
        else if (!strcmp(key, "val_acc")) r->val_acc = v;
        else if (!strcmp(key, "val_loss")) r->val_loss = v;
        else if (!strcmp(key, "s_per_iter")) r->s_per_iter = v;
        else if (!strcmp(key, "train_s")) r->train_s = v;
        else if (!strcmp(key, "other_s")) r->other_s = v;
        else if (!strcmp(key, "test_s")) r->test_s = v;
        else if (!strcmp(key, "peak_tape_mb")) r->peak_tape_mb = v;
        else if (!strcmp(key, "peak_rep_mb")) r->peak_rep_mb = v;
        else if (!strcmp(key, "peak_rss_mb")) r->peak_rss_mb = v;
        else if (!strcmp(key, "step")) r->step = v;
        else if (!strcmp(key, "n_layers")) r->n_layers = (int)v;
        else if (!strncmp(key, "rho", 3)) {
            int l = atoi(key + 3) - 1;
            if (l >= 0 && l < OS_MAX_LAYERS) r->rho[l] = v;
        }
    }
    fclose(f);
    r->ok = same_id && seen >= 17 && r->iters == o->iters;
    return r->ok;
}

/* ---- one configuration (runs in a child process) ---------------------------- */

typedef struct run_ctx {
    const opts *o;
    world *w;
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

/* Compares the hypergradient g (hy.list order) with full RMD on the same
 * loaded task.  Full RMD's tape is the largest memory of all; it is taken
 * in a child process so that it does not count in this configuration's
 * peak RSS (Table 4 reports what K-RMD itself needs). */
typedef struct full_job {
    os_task *tk;
    ad_value *const *g;
} full_job;

/* The child's side of compare_full_forked, an ex_work. */
static int full_job_run(void *arg, void *out)
{
    const full_job *job = arg;
    ad_value *d[OS_MAX_HYPER];
    int rc = os_task_hypergrad(job->tk, job->tk->problem.T, d, NULL);
    if (rc != AD_OK) return ad_fail_wrap(rc, "full RMD for the cosine");
    *(hg_compare *)out = hg_compare_grads(job->tk->hy->n_list, job->g, d);
    for (int i = 0; i < job->tk->hy->n_list; i++) ad_value_free(d[i]);
    return AD_OK;
}

static int compare_full_forked(os_task *tk, ad_value *const *g, hg_compare *cm)
{
    return ex_run_forked("full RMD for the cosine", full_job_run, &(full_job){ tk, g }, cm,
                         sizeof *cm);
}

static int run_cfg(run_ctx *ctx, result *res)
{
    /* This configuration's copy of the options: a resumed one takes its
     * checkpoint's schedule (eval_every, cos_every) unless the flags gave it. */
    opts own = *ctx->o;
    opts *o = &own;
    const cfg *c = &o->cfgs[ctx->ci];
    world *w = ctx->w;
    memset(res, 0, sizeof *res);
    os_hyper hy;
    os_task tk;
    opt_outer adam;
    logs lg = { 0 };
    ad_value *gsum[OS_MAX_HYPER] = { 0 };
    bool have_tk = false, have_adam = false;
    data_task task = { 0 };
    ad_rng rng_train, rng_test;
    seed_rng(&rng_train, o->seed, RNG_TRAIN);
    ad_rng rng0;
    seed_rng(&rng0, o->seed, RNG_LAMBDA0);
    int rc = os_hyper_init(&hy, mdl_cnn_omniglot(o->channels), &rng0, o->rho0, o->step0);
    if (rc == AD_OK && (rc = os_task_init(&tk, &hy, N_WAY * K_SHOT, N_WAY * K_QUERY, c->T, true)) == AD_OK)
        have_tk = true;
    if (rc == AD_OK && (rc = opt_outer_init(&adam, OPT_ADAM, o->lr, false, hy.n_list, hy.list)) == AD_OK)
        have_adam = true;
    if (rc == AD_OK) rc = data_task_init(&task, N_WAY, K_SHOT, K_QUERY, 28);
    for (int i = 0; i < hy.n_list && rc == AD_OK; i++)
        if (!(gsum[i] = ad_tensor_new(hy.list[i]->rank, hy.list[i]->shape)))
            rc = ad_fail(AD_ENOMEM, "out of memory");
    ckpt_state st = { .iter = 0, .rng = rng_train };
    if (rc == AD_OK && o->resume) {
        int ev = 0, ce = 0;
        int r = ckpt_read(o, c, &hy, &adam, &st, &lg, &ev, &ce);
        if (r == AD_OK) {
            if (!o->eval_every_given) o->eval_every = ev;
            if (!o->cos_every_given) o->cos_every = ce;
            fprintf(stderr, PROG ": %s: resuming at hyper-iteration %d (%.0f s of training "
                            "done); meta-validation every %d hyper-iterations (%s), cosine "
                            "every %d (%s)\n",
                    c->label, st.iter, st.train_s, o->eval_every,
                    o->eval_every_given ? "--eval-every" : "the checkpoint's", o->cos_every,
                    o->cos_every_given ? "--cos-every" : "the checkpoint's");
        } else if (r == AD_EIO) {
            ad_error_clear();
        } else {
            rc = r;
        }
    }
    rng_train = st.rng;
    if (rc == AD_OK) {
        size_t rep, tsk;
        mdl_cnn net = mdl_cnn_omniglot(o->channels);
        mdl_cnn_counts(&net, &rep, &tsk);
        fprintf(stderr, PROG ": %s: T = %d, K = %d, %d channels: %zu hyperparameters (%zu "
                        "representation), %zu parameters; %d hyper-iterations of %d tasks\n",
                c->label, c->T, c->K < c->T ? c->K : c->T, o->channels, os_hyper_numel(&hy),
                rep, tsk, o->iters, o->meta_batch);
    }
    /* λ0's meta-validation point. */
    if (rc == AD_OK && st.iter == 0 && lg.n_va == 0) {
        double t0 = ex_now(), a = 0, l = 0;
        rc = evaluate_tasks(&tk, w->val, w->n_val, &a, &l, NULL);
        if (rc == AD_OK) rc = LOG_PUSH(&lg, va, n_va, cap_va, ((val_row){ 0, 0, a, l }));
        st.other_s += ex_now() - t0;
        if (rc == AD_OK)
            fprintf(stderr, PROG ": %s: at λ0 meta-validation accuracy %.2f%%, loss %.4f\n",
                    c->label, 100 * a, l);
    }
    double last_ckpt = ex_now(), cost = cfg_cost(c);
    bool tty = isatty(STDERR_FILENO);
    for (int it = st.iter + 1; it <= o->iters && rc == AD_OK; it++) {
        double t_it = ex_now(), t_other = 0, loss = 0;
        for (int i = 0; i < hy.n_list; i++) memset(gsum[i]->data, 0, gsum[i]->size * sizeof(ad_real));
        for (int b = 0; b < o->meta_batch && rc == AD_OK; b++) {
            ad_value *g[OS_MAX_HYPER];
            hg_report r;
            rc = data_omniglot_sample_task(&w->om, w->sp.train, w->sp.n_train, &rng_train, &task);
            if (rc == AD_OK) rc = task_load(&tk, &task, true);
            if (rc == AD_OK) rc = os_task_hypergrad(&tk, c->K, g, &r);
            if (rc != AD_OK) break;
            loss += r.outer_loss / o->meta_batch;
            if (r.peak_tape_bytes > st.peak_tape) st.peak_tape = r.peak_tape_bytes;
            if (os_task_rep_tape_bytes(&tk) > st.peak_rep) st.peak_rep = os_task_rep_tape_bytes(&tk);
            for (int i = 0; i < hy.n_list; i++)
                for (size_t k = 0; k < g[i]->size; k++) gsum[i]->data[k] += g[i]->data[k] / o->meta_batch;
            /* Fig. 7, plot 3: the same task's full-RMD hypergradient. */
            if (c->truncated && b == 0 && o->cos_every > 0 &&
                (it == 1 || it % o->cos_every == 0 || it == o->iters)) {
                double t0 = ex_now();
                hg_compare cm;
                rc = compare_full_forked(&tk, g, &cm);
                if (rc == AD_OK)
                    rc = LOG_PUSH(&lg, co, n_co, cap_co,
                                  ((cos_row){ it, cm.cosine, cm.rel_error, ex_now() - t0 }));
                t_other += ex_now() - t0;
            }
            for (int i = 0; i < hy.n_list; i++) ad_value_free(g[i]);
        }
        if (rc == AD_OK) rc = opt_outer_step(&adam, gsum);
        if (rc != AD_OK) {
            ad_fail_wrap(rc, "%s, hyper-iteration %d", c->label, it);
            break;
        }
        os_hyper_clamp_step(&hy, STEP_LO, STEP_HI);
        double dt = ex_now() - t_it - t_other;
        st.train_s += dt;
        st.other_s += t_other;
        st.iter = it;
        st.rng = rng_train;
        train_row row = { .iter = it, .train_s = st.train_s, .iter_s = dt, .loss = loss };
        lambda_stats(&hy, &row.step, row.rho);
        rc = LOG_PUSH(&lg, tr, n_tr, cap_tr, row);
        char val_msg[64] = "";
        if (rc == AD_OK && (it % o->eval_every == 0 || it == o->iters)) {
            double t0 = ex_now(), a = 0, l = 0;
            rc = evaluate_tasks(&tk, w->val, w->n_val, &a, &l, NULL);
            if (rc == AD_OK) rc = LOG_PUSH(&lg, va, n_va, cap_va, ((val_row){ it, st.train_s, a, l }));
            st.other_s += ex_now() - t0;
            snprintf(val_msg, sizeof val_msg, "  val acc %.2f%%", 100 * a);
        }
        if (rc == AD_OK && (ex_now() - last_ckpt >= o->ckpt_every || it == o->iters)) {
            rc = ckpt_write(o, c, &hy, &adam, &st, &lg);
            if (rc == AD_OK) rc = write_logs(o, c, &hy, &lg);
            last_ckpt = ex_now();
        }
        /* Progress: this configuration's rate, the others' by the cost model. */
        double rate = (st.train_s + st.other_s) / (lg.n_tr > 0 ? lg.n_tr : 1);
        char eta_this[32], eta_all[32];
        ex_fmt_duration((o->iters - it) * rate, eta_this, sizeof eta_this);
        ex_fmt_duration((o->iters - it) * rate + eta_rest(ctx, rate / cost), eta_all, sizeof eta_all);
        if (tty) fputs("\r\033[K", stderr);
        fprintf(stderr, PROG ": %s  iter %d/%d  loss %.4f  γ %.4f  %.2f s/it%s  ETA %s (this), %s "
                        "(all training)%s",
                c->label, it, o->iters, loss, row.step, dt, val_msg, eta_this, eta_all,
                tty ? "" : "\n");
        fflush(stderr);
    }
    if (tty) fputc('\n', stderr);
    if (rc == AD_OK && st.iter >= o->iters && lg.n_tr > 0) { /* λ after the last update */
        res->iters = st.iter;
        res->train_s = st.train_s;
        res->other_s = st.other_s;
        res->s_per_iter = st.train_s / lg.n_tr; /* mean over the iterations logged */
        res->peak_tape_mb = st.peak_tape / 1e6;
        res->peak_rep_mb = st.peak_rep / 1e6;
        res->peak_rss_mb = peak_rss_kb() / 1024.0;
        res->n_layers = hy.n_layers;
        lambda_stats(&hy, &res->step, res->rho);
        res->val_acc = lg.va[lg.n_va - 1].acc;
        res->val_loss = lg.va[lg.n_va - 1].loss;
        /* Table 4: the meta-test tasks, the same for every configuration. */
        double t0 = ex_now(), sa = 0, sa2 = 0;
        seed_rng(&rng_test, o->seed, RNG_TEST);
        for (int i = 0; i < o->test_tasks && rc == AD_OK; i++) {
            double a = 0, l = 0;
            rc = data_omniglot_sample_task(&w->om, w->sp.test, w->sp.n_test, &rng_test, &task);
            if (rc == AD_OK) rc = task_load(&tk, &task, false);
            if (rc == AD_OK) rc = os_task_evaluate(&tk, &a, &l);
            sa += a;
            sa2 += a * a;
            if (tty || i + 1 == o->test_tasks) {
                if (tty) fputs("\r\033[K", stderr);
                fprintf(stderr, PROG ": %s  meta-test task %d/%d  accuracy so far %.2f%%%s",
                        c->label, i + 1, o->test_tasks, 100 * sa / (i + 1), tty ? "" : "\n");
            }
        }
        if (tty) fputc('\n', stderr);
        int n = o->test_tasks;
        res->test_acc = sa / n;
        res->test_sd = sd_from_sums(sa, sa2, n);
        res->test_ci95 = 1.96 * res->test_sd / sqrt(n);
        res->test_s = ex_now() - t0;
        if (rc == AD_OK) rc = write_logs(o, c, &hy, &lg);
        if (rc == AD_OK) rc = write_summary(o, c, res);
        if (rc == AD_OK)
            fprintf(stderr, PROG ": %s: test accuracy %.2f%% ± %.2f (95%% CI, %d tasks), %.3f s per "
                            "hyper-iteration, peak tape %.1f MB (+ %.1f MB representation), peak "
                            "RSS %.0f MB\n",
                    c->label, 100 * res->test_acc, 100 * res->test_ci95, n, res->s_per_iter,
                    res->peak_tape_mb, res->peak_rep_mb, res->peak_rss_mb);
        res->ok = rc == AD_OK;
    }
    data_task_free(&task);
    for (int i = 0; i < OS_MAX_HYPER; i++) ad_value_free(gsum[i]);
    if (have_adam) opt_outer_free(&adam);
    if (have_tk) os_task_free(&tk);
    os_hyper_free(&hy);
    logs_free(&lg);
    return rc;
}

/* run_cfg as an ex_work, for ex_run_forked. */
static int run_cfg_work(void *arg, void *out)
{
    return run_cfg(arg, out);
}

/* Runs run_cfg in a child and collects its result through a pipe. */
static int run_cfg_forked(run_ctx *ctx, result *res)
{
    const char *label = ctx->o->cfgs[ctx->ci].label;
    int rc = ex_run_forked(label, run_cfg_work, ctx, res, sizeof *res);
    if (rc == AD_OK && !res->ok) rc = ad_fail(AD_EARG, "%s failed (see the message above)", label);
    return rc;
}

/* ---- Fig. 7, plot 4: relative error against K at a fixed λ ----------------- */

static int relerr_run(const opts *o, world *w, const char **lambda_from)
{
    double t_start = ex_now();
    *lambda_from = "λ0 (no full-RMD checkpoint)";
    os_hyper hy;
    ad_rng rng0;
    seed_rng(&rng0, o->seed, RNG_LAMBDA0);
    int rc = os_hyper_init(&hy, mdl_cnn_omniglot(o->channels), &rng0, o->rho0, o->step0);
    if (rc != AD_OK) return rc;
    /* The final λ of full RMD (of the first configuration if none is full). */
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < o->n_cfg; i++) {
            const cfg *c = &o->cfgs[i];
            if (pass == 0 && strcmp(c->name, "full") != 0) continue;
            if (ckpt_read(o, c, &hy, NULL, NULL, NULL, NULL, NULL) == AD_OK) {
                static char msg[64];
                snprintf(msg, sizeof msg, "the final λ of %s", c->label);
                *lambda_from = msg;
                pass = 2;
                break;
            }
        }
    ad_error_clear();
    int Ks[64], nK = 0;
    static const int base[] = { 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 35, 40, 45, 50,
                                60, 70, 80, 90, 100 };
    for (size_t i = 0; i < sizeof base / sizeof *base; i++)
        if (base[i] < o->T) Ks[nK++] = base[i];
    Ks[nK++] = o->T;
    os_task tk;
    rc = os_task_init(&tk, &hy, N_WAY * K_SHOT, N_WAY * K_QUERY, o->T, true);
    if (rc != AD_OK) {
        os_hyper_free(&hy);
        return rc;
    }
    int n_tasks = o->relerr_tasks < w->n_val ? o->relerr_tasks : w->n_val;
    /* Variants: 0 the learned ρ, 1 ρ = 0 (no regulariser), 2 every ρ_l set
     * to --relerr-rho (Prop. 3.1's strong convexity made larger by hand). */
    int n_var = o->relerr_rho > 0 ? 3 : 2;
    static const char *const var_name[3] = { "reg", "rho0", "rho_set" };
    double nu_learned[OS_MAX_LAYERS];
    for (int l = 0; l < hy.n_layers; l++) nu_learned[l] = hy.rho_raw[l]->data[0];
    double *mean = calloc((size_t)3 * (size_t)nK, sizeof *mean);
    double *mean_cos = calloc((size_t)3 * (size_t)nK, sizeof *mean_cos);
    FILE *f = mean && mean_cos ? open_out(o, "relerr.csv", "w") : NULL;
    if (!mean || !mean_cos) rc = ad_fail(AD_ENOMEM, "out of memory");
    else if (!f) rc = AD_EIO;
    if (f) fprintf(f, "variant,task,K,rel_error,cosine,seconds\n");
    for (int ti = 0; ti < n_tasks && rc == AD_OK; ti++) {
        rc = task_load(&tk, &w->val[ti], true);
        for (int v = 0; v < n_var && rc == AD_OK; v++) {
            tk.no_reg = v == 1;
            for (int l = 0; l < hy.n_layers; l++)
                hy.rho_raw[l]->data[0] = (ad_real)(v == 2 ? log(expm1(o->relerr_rho)) : nu_learned[l]);
            ad_value *d[OS_MAX_HYPER];
            rc = os_task_hypergrad(&tk, o->T, d, NULL);
            bool have_d = rc == AD_OK;
            for (int k = 0; k < nK && rc == AD_OK; k++) {
                ad_value *h[OS_MAX_HYPER];
                hg_report r;
                rc = os_task_hypergrad(&tk, Ks[k], h, &r);
                if (rc != AD_OK) break;
                hg_compare cm = hg_compare_grads(hy.n_list, h, d);
                fprintf(f, "%s,%d,%d,%.9g,%.9f,%.3f\n", var_name[v], ti, Ks[k], cm.rel_error,
                        cm.cosine, r.seconds);
                mean[v * nK + k] += cm.rel_error / n_tasks;
                mean_cos[v * nK + k] += cm.cosine / n_tasks;
                for (int i = 0; i < hy.n_list; i++) ad_value_free(h[i]);
                bool tty = isatty(STDERR_FILENO);
                if (tty || k + 2 == nK) /* a log gets the last K < T only */
                    fprintf(stderr, "%s" PROG ": relative error vs K: task %d/%d, %s, K = %d: %.3g%s",
                            tty ? "\r\033[K" : "", ti + 1, n_tasks, var_name[v], Ks[k],
                            cm.rel_error, tty ? "" : "\n");
            }
            if (have_d)
                for (int i = 0; i < hy.n_list; i++) ad_value_free(d[i]);
        }
    }
    if (isatty(STDERR_FILENO)) fputc('\n', stderr);
    tk.no_reg = false;
    for (int l = 0; l < hy.n_layers; l++) hy.rho_raw[l]->data[0] = (ad_real)nu_learned[l];
    if (f) {
        int r2 = ex_close(f, "relerr.csv");
        if (rc == AD_OK) rc = r2;
    }
    if (rc == AD_OK && (f = open_out(o, "relerr_mean.csv", "w"))) {
        fprintf(f, "K,rel_error_reg,rel_error_rho0,rel_error_rho_set,cosine_reg,cosine_rho0,"
                   "cosine_rho_set\n");
        for (int k = 0; k < nK; k++) /* the third pair is 0 without a third variant */
            fprintf(f, "%d,%.9g,%.9g,%.9g,%.9f,%.9f,%.9f\n", Ks[k], mean[k], mean[nK + k],
                    mean[2 * nK + k], mean_cos[k], mean_cos[nK + k], mean_cos[2 * nK + k]);
        rc = ex_close(f, "relerr_mean.csv");
        int k2 = nK > 1 ? nK - 2 : 0;
        fprintf(stderr, PROG ": relative error vs K at %s over %d tasks (learned ρ / ρ = 0 / ρ = "
                        "%g): K = 1: %.3g / %.3g / %.3g; K = %d: %.3g / %.3g / %.3g; %.0f s\n",
                *lambda_from, n_tasks, o->relerr_rho, mean[0], mean[nK], mean[2 * nK], Ks[k2],
                mean[k2], mean[nK + k2], mean[2 * nK + k2], ex_now() - t_start);
    } else if (rc == AD_OK) {
        rc = AD_EIO;
    }
    free(mean);
    free(mean_cos);
    os_task_free(&tk);
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

static int write_table_csv(const opts *o, const result *r)
{
    FILE *f = open_out(o, "table4.csv", "w");
    if (!f) return AD_EIO;
    fprintf(f, "method,name,K,T,iters,test_acc,test_ci95,test_sd,val_acc,s_per_iter,train_s,"
               "other_s,test_s,peak_tape_mb,peak_rep_mb,peak_rss_mb,step\n");
    for (int i = 0; i < o->n_cfg; i++)
        if (r[i].ok)
            fprintf(f, "%s,%s,%d,%d,%d,%.6f,%.6f,%.6f,%.6f,%.6f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.6g\n",
                    o->cfgs[i].label, o->cfgs[i].name, o->cfgs[i].K, o->cfgs[i].T, r[i].iters,
                    r[i].test_acc, r[i].test_ci95, r[i].test_sd, r[i].val_acc, r[i].s_per_iter,
                    r[i].train_s, r[i].other_s, r[i].test_s, r[i].peak_tape_mb, r[i].peak_rep_mb,
                    r[i].peak_rss_mb, r[i].step);
    return ex_close(f, "table4.csv");
}

/* Runs `gnuplot script` inside the output folder; a failure is a warning. */
static void run_gnuplot(const opts *o, const char *script, const char *png)
{
    if (!o->plots) return;
    if (!ex_gnuplot_on_path()) {
        fprintf(stderr, PROG ": warning: gnuplot is not on PATH; run `gnuplot %s` in %s\n", script,
                o->out);
        return;
    }
    ex_gnuplot_warn(PROG, o->out, script, png);
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

static int write_fig7(const opts *o, const result *r, bool have_relerr, const char *lambda_from)
{
    char rho_learned[96] = "";
    for (int i = 0, used = 0; i < o->n_cfg; i++)
        if (r[i].ok && !strcmp(o->cfgs[i].name, "full"))
            for (int l = 0; l < r[i].n_layers && used < (int)sizeof rho_learned; l++)
                used += snprintf(rho_learned + used, sizeof rho_learned - (size_t)used, "%s%.2g",
                                 l ? "/" : " = ", r[i].rho[l]);
    int n_trunc = 0;
    for (int i = 0; i < o->n_cfg; i++) n_trunc += r[i].ok && o->cfgs[i].truncated;
    FILE *g = open_out(o, "fig7.gp", "w");
    if (!g) return AD_EIO;
    ex_gp_header_old(g, PROG " (experiments/oneshot.c)", "fig7.png", 1400, 1000);
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
    int rc = ex_close(g, "fig7.gp");
    if (rc == AD_OK) run_gnuplot(o, "fig7.gp", "fig7.png");
    return rc;
}

/* ---- main ------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    opts o;
    int st = parse_args(argc, argv, &o);
    if (st < 0) return 0;
    if (st) return st;
    double t0 = ex_now();
    world w;
    if (ex_make_dirs(o.out) != AD_OK || world_load(&o, &w) != AD_OK) {
        fprintf(stderr, PROG ": %s\n", ad_error());
        return EX_EXIT_LIB;
    }
    fprintf(stderr, PROG ": %d configurations, %d hyper-iterations each, output in %s%s\n", o.n_cfg,
            o.iters, o.out, o.resume ? " (resuming)" : "");
    result res[MAX_CFG];
    memset(res, 0, sizeof res);
    run_ctx ctx = { .o = &o, .w = &w };
    int status = 0;
    for (int i = 0; i < o.n_cfg; i++) {
        ctx.ci = i;
        if (o.resume && read_summary(&o, &o.cfgs[i], &res[i])) {
            fprintf(stderr, PROG ": %s: already done (%s/summary_%s.txt), %.2f%% test accuracy\n",
                    o.cfgs[i].label, o.out, o.cfgs[i].name, 100 * res[i].test_acc);
        } else if (run_cfg_forked(&ctx, &res[i]) != AD_OK) {
            fprintf(stderr, PROG ": %s\n", ad_error());
            res[i].ok = false;
            status = EX_EXIT_LIB;
            continue;
        }
    }
    bool have_relerr = false;
    const char *lambda_from = "";
    if (o.relerr_tasks > 0) {
        if (relerr_run(&o, &w, &lambda_from) == AD_OK) have_relerr = true;
        else {
            fprintf(stderr, PROG ": relative error vs K: %s\n", ad_error());
            status = EX_EXIT_LIB;
        }
    }
    int n_ok = 0;
    for (int i = 0; i < o.n_cfg; i++) n_ok += res[i].ok;
    if (n_ok > 0) {
        write_table(stdout, &o, res);
        FILE *f = open_out(&o, "table4.md", "w");
        if (f) {
            write_table(f, &o, res);
            if (ex_close(f, "table4.md") != AD_OK) f = NULL;
        }
        if (!f || write_table_csv(&o, res) != AD_OK ||
            write_fig7(&o, res, have_relerr, lambda_from) != AD_OK) {
            fprintf(stderr, PROG ": %s\n", ad_error());
            status = EX_EXIT_LIB;
        }
    }
    char total[32];
    ex_fmt_duration(ex_now() - t0, total, sizeof total);
    fprintf(stderr, PROG ": done in %s%s; results in %s\n", total, status ? " (with errors)" : "",
            o.out);
    world_free(&w);
    return status;
}
