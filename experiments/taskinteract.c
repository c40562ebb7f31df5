/*
 * taskinteract.c — the task-interaction experiment of Sec. 4.2.2 and
 * App. G.2: learn which classes' linear models to tie together (C) and how
 * much to shrink them (ρ), by K-RMD hypergradients for K = 1, 5, 25 and full
 * back-propagation; Table 3 and Figure 6 of the paper.
 *
 *   taskinteract [--dataset cifar|omniglot] [--data DIR] [--trials N]
 *                [--max-iters N] [--patience N] [--K 1,5,25,100] [--out DIR]
 *                [--seed S] [--quick] ...
 *
 * (--help lists every flag and every choice made.)  The problem itself is
 * taskinteract_problem.c.
 *
 * For each trial (seed S + trial) the data are drawn once, and every K runs
 * from the same λ0 on them: Adam with η_τ = η0/√τ on λ = {B, ν}, the test
 * accuracy of ŵ(λ_τ) checked every few hyper-iterations, early stopping when
 * it has not improved for --patience hyper-iterations (App. G.2), and the
 * accuracy at the best check is the trial's result.  In trial 0 the exact
 * hypergradient (full RMD) is also computed every --fig-every
 * hyper-iterations, for Figure 6; its cost is not counted in "s/iter".
 * The trials run --threads at a time (under mpirun, in blocks on the
 * ranks), each writing its rows into memory; they are written in trial
 * order, so the files do not depend on how many ran at once.
 *
 * Outputs in --out/<dataset>/ (default results/taskinteract/cifar, …),
 * each written under a temporary name and renamed when complete:
 *   iters.csv     one row per trial, K and hyper-iteration τ (at λ_τ,
 *                 before the τ-th update; τ = 0 is λ0)
 *   exact.csv     trial 0: ‖dλf‖ (exact) and cos(K-RMD, exact) at every
 *                 --fig-every-th τ
 *   trials.csv    one row per trial and K: iterations run, best τ, test
 *                 accuracy there and at the end, seconds per iteration
 *   inner.csv     the inner loss g(W_t) along t = 0..T at λ0 and at the end
 *                 of trial 0's run for each K (is γ stable?)
 *   C.csv         the learned C for each K (mean over trials for CIFAR)
 *   table3.md     Table 3 for this dataset; ../table3.md joins the datasets
 *   fig6.png      Figure 6: validation loss, ‖dλf‖, cosine against τ
 *   C.png         the learned C as heat maps, one per K
 *   *.gp          the gnuplot scripts that drew them
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "experiments/kit/kit.h"
#include "experiments/taskinteract_problem.h"
#include "optim/hypergrad.h"
#include "optim/outer.h"

#define PROG "taskinteract"
#define STR_(x) #x
#define STR(x) STR_(x)
enum { MAX_KS = 8, MAX_TRIALS = 1000 };

static const char *const cifar_names[DATA_CIFAR_CLASSES] = {
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"
};

/* ---- options ------------------------------------------------------------ */

typedef struct ti_opts {
    const char *dataset, *data, *out;
    bool omniglot, quick;
    int trials, max_iters, patience, T, nK, Ks[MAX_KS], threads;
    int chars, fig_every, eval_every;
    int V; /* classes: --chars, or CIFAR-10's */
    double gamma, eta0, rho0, b0;
    uint64_t seed;
} ti_opts;

static ti_opts opts;

static const ex_flag flags[] = {
    { "--dataset", EX_CHOICE, &opts.dataset, "cifar", .help = "cifar or omniglot",
      .choices = "cifar|omniglot", .meta = "D" },
    { "--data", EX_TEXT, &opts.data, .help = "the dataset's folder (default: "
      "$HYPERTAPE_DATA/<D>, else ../shared/data/<D>)", .meta = "DIR" },
    { "--trials", EX_INT, &opts.trials, "10", 1, MAX_TRIALS, "trials (seeds S, S+1, …)",
      .quick = "2" },
    { "--max-iters", EX_INT, &opts.max_iters, "5000", 1, 10000000, "most hyper-iterations per "
      "run", .quick = "20" },
    { "--patience", EX_INT, &opts.patience, "500", 1, 10000000, "early-stopping patience in "
      "hyper-iterations", .quick = "15" },
    { "--K", EX_INTS, opts.Ks, "1,5,25,100", 1, 100000, "truncations; at most one K >= T (each "
      "is full RMD); --quick: 1,5,T", .max_n = MAX_KS, .n = &opts.nK },
    { "--out", EX_TEXT, &opts.out, "results/taskinteract", .help = "output folder; files go to "
      "DIR/<D>/", .meta = "DIR" },
    { "--seed", EX_SEED, &opts.seed, "1", .help = "seed of trial 0" },
    { "--quick", EX_SWITCH, &opts.quick, .help = "a tiny end-to-end run (under a minute); "
      "flags given explicitly still apply" },
    { "--T", EX_INT, &opts.T, "100", 1, 100000, "inner steps" },
    { "--gamma", EX_REAL, &opts.gamma, "0.1", 0, HUGE_VAL, "inner step size", .open = EX_OPEN_LO },
    { "--eta0", EX_REAL, &opts.eta0, "0.1", 0, HUGE_VAL, "Adam's η0, the same for every K (Adam's "
      "first step has the same size whatever the gradient's norm)", .open = EX_OPEN_LO },
    /* 100: gradient descent on ρ‖W‖² alone diverges once γρ > 1 (ρ > 10 at the default γ),
     * so 100 leaves room for a γ down to 0.01; and ν0 = log(e^ρ0 − 1) overflows past 709.78. */
    { "--rho0", EX_REAL, &opts.rho0, "0.01", 0, 100, "initial ρ (the inner loop diverges once "
      "γρ > 1)", .open = EX_OPEN_LO },
    { "--B0", EX_REAL, &opts.b0, NULL, .help = "initial B entries (default: see above)",
      .meta = "B" },
    { "--chars", EX_INT, &opts.chars, "100", 2, DATA_OMNIGLOT_BACKGROUND_CHARS, "Omniglot "
      "characters (classes)", .quick = "20" },
    { "--eval-every", EX_INT, &opts.eval_every, "10", 1, 1000000, "test-accuracy check period" },
    { "--fig-every", EX_INT, &opts.fig_every, "10", 0, 1000000, "trial 0's exact-hypergradient "
      "period (0: never)", .quick = "5" },
    { "--threads", EX_INT, &opts.threads, NULL, 1, EX_MAX_THREADS, "worker threads: trials run "
      "N at once, each with its own problem and tape; their rows are written in trial order, "
      "so the files do not depend on N (default: the cores, shared among the MPI ranks on one "
      "machine)", .meta = "N" },
};

static int check_flags(void);
static ex_cmd cmd = {
    PROG, "[--dataset cifar|omniglot] [--data DIR] [--trials N] [--max-iters N]\n"
    "                    [--patience N] [--K LIST] [--out DIR] [--seed S] [--quick] [...]",
"Task interaction (Sec. 4.2.2, App. G.2, Table 3, Figure 6) of Shaban et al.,\n"
"\"Truncated back-propagation for bilevel optimization\".  V linear models w_v,\n"
"one per class (multiclass logistic regression W [V, d+1], bias feature):\n"
"  inner  g = CE(train) + Σ_ij C_ij ‖w_i − w_j‖² + ρ Σ_v ‖w_v‖²,\n"
"         C = A + Aᵀ, A = softplus(B), ρ = softplus(ν);  λ = {B [V,V], ν}\n"
"         ŵ = T = 100 steps of gradient descent, γ = 0.1, from W = 0\n"
"  outer  f = CE(validation) of ŵ; Adam on λ, η_τ = η0/√τ.\n"
"For every trial the K-RMD hypergradient is used for each K in --K (K >= T is\n"
"full RMD), all from the same λ0 on the same data.\n"
"\n"
"Data (the paper uses ImageNet-pretrained ResNet-18 features of CIFAR-10 and\n"
"CIFAR-100; this program has no pretrained network and no CIFAR-100 reader, so\n"
"it uses raw pixels, and its 100-class case is Omniglot):\n"
"  cifar     CIFAR-10: 5 training and 5 validation images per class\n"
"            (m = 50 + 50) drawn per trial from the training images; tested on\n"
"            the whole 10000-image test set.  V = 10, d = 3072 + 1.  The folder\n"
"            holds the official binary version (data_batch_1..5.bin and\n"
"            test_batch.bin, 50000 + 10000 images; scripts/get-cifar10.sh), as is\n"
"            or in its cifar-10-batches-bin/, or the shared subset (4000 + 10000\n"
"            JPEG-degraded images); the official files win when both are there.\n"
"  omniglot  100 characters of the background set (seeded choice), each a class;\n"
"            per character 3 training and 3 validation drawers, the other 14\n"
"            test (300 + 300 + 1400 images, 28×28).  V = 100, d = 784 + 1.\n"
"Features: pixels standardized with the mean and spread of the training images\n"
"(Omniglot spreads floored at " STR(TI_OMNIGLOT_STD_FLOOR) "), then scaled by s = √(4/(γ·λmax)), λmax the\n"
"top eigenvalue of XᵀX/n over the training rows: the training CE's curvature\n"
"is then at most ½·λmax·s² = 2/γ anywhere, and 4/(γV) at W = 0 (raw\n"
"standardized CIFAR pixels, λmax ≈ 10³, make γ = 0.1 diverge).  The inner\n"
"loss along t = 0..T is checked (inner.csv) and a rise is reported on stderr.\n"
"λ0: ν0 = log(e^ρ0 − 1) and B0 with 2·softplus(B0) = 0.125/V, so every tie\n"
"C_ij starts at 0.125/V and the coupling's curvature (≤ 4·V·C_ij = 0.5) is a\n"
"twentieth of 1/γ (B0 = −5.07 for V = 10, −7.38 for V = 100).\n"
"Early stopping (App. G.2): the test accuracy of ŵ(λ_τ) is checked every\n"
"--eval-every hyper-iterations; a run stops when it has not improved for\n"
"--patience hyper-iterations, or after --max-iters; its result is the test\n"
"accuracy at the best check (selected on the test set, as in the paper).\n"
"s/iter counts the hypergradient and the Adam step only (not test checks nor\n"
"Figure 6's exact hypergradients).\n",
    EX_FLAGS(flags),
    "BLAS runs on one thread (its sums change with its thread count); the trials\n"
    "run on --threads workers, and under mpirun -n P each rank takes a block of\n"
    "them (rank 0 prints and writes the files).  Progress goes to stderr.\n"
    "Outputs in DIR/<D>/: iters.csv, exact.csv, trials.csv, inner.csv, C.csv,\n"
    "table3.md (DIR/table3.md joins the datasets), fig6.png, C.png and their .gp.\n"
    "Exit status: 0 on success (also without gnuplot), 1 on a run-time failure,\n"
    "2 on a bad flag or value.\n",
    .check = check_flags,
};

/* Every K >= T is full RMD: two of them would be the same run twice, and
 * twice the rows and panels.  A list given with --K must not have them; the
 * default list, at a small --T, loses the repeats quietly.  (Two equal Ks
 * below T cannot occur: the flag table refuses a K given twice, and the
 * --quick list is 1, 5, T.)  Returns 0 or an exit status. */
static int check_ks(ti_opts *o)
{
    int full = -1; /* the first K >= T */
    for (int k = 0; k < o->nK; k++) {
        if (o->Ks[k] < o->T) continue;
        if (full < 0) {
            full = k;
            continue;
        }
        if (ex_given(&cmd, "--K"))
            return ex_usage_error("--K: %d and %d are both full RMD (K >= T = %d); give one of "
                                  "them", o->Ks[full], o->Ks[k], o->T);
        memmove(&o->Ks[k], &o->Ks[k + 1], sizeof *o->Ks * (size_t)(o->nK - k - 1));
        o->nK--;
        k--; /* Ks[k] is the next one now */
    }
    return 0;
}

/* The checks across flags, after parsing: 0 or an exit status. */
static int check_flags(void)
{
    ti_opts *o = &opts;
    o->omniglot = !strcmp(o->dataset, "omniglot");
    if (!o->omniglot && ex_given(&cmd, "--chars"))
        return ex_usage_error("--chars is for --dataset omniglot");
    if (!ex_given(&cmd, "--threads")) o->threads = ex_par_threads();
    o->V = o->omniglot ? o->chars : DATA_CIFAR_CLASSES;
    if (!ex_given(&cmd, "--B0")) o->b0 = ti_default_b0(o->V);
    if (o->quick && !ex_given(&cmd, "--K")) {
        o->nK = 3;
        o->Ks[0] = 1;
        o->Ks[1] = 5;
        o->Ks[2] = o->T;
    }
    return check_ks(o);
}

/* ---- small helpers ------------------------------------------------------- */

static const char *k_label(int K, int T, char *buf, size_t len)
{
    if (K >= T) snprintf(buf, len, "Full RMD");
    else snprintf(buf, len, "%d-RMD", K);
    return buf;
}

/* ---- one run: a trial and a K -------------------------------------------- */

typedef struct run_result {
    int iters;          /* hyper-iterations run (hypergradients computed) */
    bool stopped_early;
    int best_tau;
    double best_acc, final_acc;
    double seconds;     /* hypergradients + Adam steps */
    double final_val_loss;
} run_result;

/* The three files written along the run; each trial writes its rows into
 * memory (experiment.text), and they are copied into the files in trial order. */
enum { F_ITERS, F_EXACT, F_INNER, N_FILES };

typedef struct experiment {
    const ti_opts *o;
    const struct dataset *ds;
    ex_out *od;
    ex_file files[N_FILES];
    run_result *res;   /* [trials][nK] */
    double *C_run;     /* [trials][nK][V·V]: the final C of every run */
    char **text;       /* [N_FILES][trials]: each trial's rows of each file */
    size_t *text_len;  /* [N_FILES][trials] */
    double t_start;
    const char *source; /* the files read, for table3.md; static */
} experiment;

/* g(W_t) for t = 0..T into inner.csv; returns whether it fell at every step
 * (within rounding), and the first and last values.  A failure is told as
 * "<lab>, trial <trial>, <stage>: ...", as run_one's others are. */
static int inner_check(FILE *inner_csv, const ti_problem *p, int K, const char *lab, int trial,
                       const char *stage, bool *monotone, double *g0, double *gT)
{
    int T = p->problem.T;
    /* rises below rounding (of the sum that g is) do not count */
    const double tol = sizeof(ad_real) == sizeof(float) ? 1e-5 : 1e-12;
    double *g = malloc(sizeof *g * (size_t)(T + 1));
    if (!g) return ad_fail(AD_ENOMEM, "out of memory");
    int rc = hg_inner_solve(&p->problem, NULL, g);
    if (rc == AD_OK) {
        *monotone = true;
        for (int t = 0; t <= T; t++) {
            fprintf(inner_csv, "%d,%s,%d,%.17g\n", K, stage, t, g[t]);
            if (t > 0 && g[t] > g[t - 1] + tol * fabs(g[t - 1])) *monotone = false;
        }
        *g0 = g[0];
        *gT = g[T];
        int t = 0; /* the first t where it is not finite, if any */
        while (t <= T && isfinite(g[t])) t++;
        if (t <= T)
            rc = ad_fail(AD_ENONFINITE, "the inner loss is not finite from t = %d (of T = %d)", t,
                         T);
    }
    free(g);
    return rc != AD_OK ? ad_fail_wrap(rc, "%s, trial %d, %s", lab, trial, stage) : rc;
}

static double mean_offdiag(const double *C, int V)
{
    double s = 0;
    for (int i = 0; i < V; i++)
        for (int j = 0; j < V; j++)
            if (i != j) s += C[i * V + j];
    return s / ((double)V * (V - 1));
}

/* Trial `trial` with K = Ks[ki]: its rows into f[F_*], its result into
 * res and C_run.  Runs on a worker: reads only what the trials share. */
static int run_one(experiment *ex, const ti_data *dt, int trial, int ki, FILE *const *f)
{
    const ti_opts *o = ex->o;
    int K = o->Ks[ki], V = dt->V;
    bool full = K >= o->T, diag = trial == 0 && (o->fig_every > 0 || full);
    run_result *rr = &ex->res[trial * o->nK + ki];
    *rr = (run_result){ .best_acc = -1 };
    char lab[32];
    k_label(K, o->T, lab, sizeof lab);

    ti_problem p;
    int rc = ti_problem_init(&p, dt, o->T, o->gamma, o->b0, o->rho0);
    opt_outer opt = { 0 }; /* freed whether or not it was initialized */
    size_t VV = (size_t)V * (size_t)V;
    double *C = ex->C_run + ((size_t)trial * (size_t)o->nK + (size_t)ki) * VV; /* this run's */
    if (rc == AD_OK) rc = opt_outer_init(&opt, OPT_ADAM, o->eta0, true, 2, p.lam);
    if (rc == AD_OK && trial == 0 && ki == 0) {
        bool mono;
        double g0, gT;
        rc = inner_check(f[F_INNER], &p, 0, lab, trial, "start", &mono, &g0, &gT);
        if (rc == AD_OK)
            fprintf(stderr, PROG ": trial 0 at λ0: inner loss g(W_0) = %.4g -> g(W_T) = %.4g, %s\n",
                    g0, gT, mono ? "decreasing at every step" : "NOT monotone (γ too large?)");
    }
    double last_print = ex_now();
    ex_watch watch; /* a diverged run stops here, exit status 1 */
    ex_watch_init(&watch, "a step size too large? (--gamma: the inner one, --eta0: the outer "
                  "one)");
    int tau;
    for (tau = 0; tau < o->max_iters && rc == AD_OK; tau++) {
        ad_value *h[2] = { NULL, NULL }, *ex_h[2] = { NULL, NULL };
        hg_report rep;
        double t0 = ex_now();
        rc = hg_krmd(&p.problem, K, h, &rep);
        double t_grad = ex_now() - t0;
        if (rc == AD_OK) rc = ex_watch_inner(&watch, &rep);
        if (rc == AD_OK) rc = ex_watch_val(&watch, tau, rep.outer_loss);
        if (rc != AD_OK) {
            ad_fail_wrap(rc, "%s, trial %d, τ = %d", lab, trial, tau);
            ad_value_free(h[0]);
            ad_value_free(h[1]);
            break;
        }
        double val_loss = rep.outer_loss, val_acc = p.val_acc;
        double test_acc = NAN;
        bool check = tau % o->eval_every == 0 || tau + 1 == o->max_iters;
        if (check) {
            rc = ex_evaluate_linear(p.w_hat, true, dt->x_test, dt->y_test, NULL, &test_acc);
            if (rc == AD_OK && test_acc > rr->best_acc) {
                rr->best_acc = test_acc;
                rr->best_tau = tau;
            }
            rr->final_acc = test_acc;
        }
        /* Figure 6: the exact hypergradient at this λ. */
        hg_compare cmp = { .cosine = NAN, .norm_exact = NAN };
        bool exact_now = diag && (full || tau % o->fig_every == 0);
        if (rc == AD_OK && exact_now) {
            if (!full) rc = hg_full_rmd(&p.problem, ex_h, NULL); /* full: h is exact */
            if (rc == AD_OK) cmp = hg_compare_grads(2, h, full ? h : ex_h);
            if (rc == AD_OK)
                fprintf(f[F_EXACT], "%d,%d,%.17g,%.17g,%.17g\n", K, tau, cmp.norm_exact,
                        cmp.cosine, cmp.norm_est);
        }
        ti_current_C(&p, C);
        if (rc == AD_OK) {
            fprintf(f[F_ITERS], "%d,%d,%d,%.17g,%.17g,", trial, K, tau, val_loss, val_acc);
            if (check) fprintf(f[F_ITERS], "%.17g", test_acc);
            fprintf(f[F_ITERS], ",%.17g,%.17g,%.17g,%.6g\n", hg_compare_grads(2, h, h).norm_est,
                    ti_current_rho(&p), mean_offdiag(C, V), t_grad);
        }
        /* the update */
        double t1 = ex_now();
        if (rc == AD_OK) rc = opt_outer_step(&opt, h);
        rr->seconds += t_grad + (ex_now() - t1);
        ad_value_free(h[0]);
        ad_value_free(h[1]);
        ad_value_free(ex_h[0]);
        ad_value_free(ex_h[1]);
        rr->final_val_loss = val_loss;
        if (rc != AD_OK) break;
        if (ex_due(&last_print, 20))
            fprintf(stderr, PROG ": %s trial %d %s τ = %d: val loss %.4f, best test acc %.2f%% "
                    "(τ = %d), %.3f s/iter, %.0f s elapsed\n", o->dataset, trial, lab, tau,
                    val_loss, 100 * rr->best_acc, rr->best_tau, rr->seconds / (tau + 1),
                    ex_now() - ex->t_start);
        if (check && tau - rr->best_tau >= o->patience) {
            rr->stopped_early = true;
            tau++;
            break;
        }
    }
    rr->iters = tau;
    if (rc == AD_OK) ti_current_C(&p, C); /* after the last update */
    if (rc == AD_OK && trial == 0) {
        bool mono;
        double g0, gT;
        rc = inner_check(f[F_INNER], &p, K, lab, trial, "end", &mono, &g0, &gT);
        if (rc == AD_OK)
            fprintf(stderr, PROG ": trial 0 %s at the last λ: ρ = %.4g, mean C_ij = %.4g, inner "
                    "loss %.4g -> %.4g, %s\n", lab, ti_current_rho(&p), mean_offdiag(C, V), g0, gT,
                    mono ? "decreasing at every step" : "NOT monotone (γ too large for this C?)");
    }
    if (rc == AD_OK)
        fprintf(stderr, PROG ": %s trial %d/%d %-8s %5d iters%s, best test acc %.2f%% at τ = %d "
                "(last %.2f%%), val loss %.4f, %.4f s/iter, %.0f s elapsed\n", o->dataset,
                trial + 1, o->trials, lab, rr->iters, rr->stopped_early ? " (early stop)" : "",
                100 * rr->best_acc, rr->best_tau, 100 * rr->final_acc, rr->final_val_loss,
                rr->seconds / (rr->iters > 0 ? rr->iters : 1), ex_now() - ex->t_start);
    opt_outer_free(&opt);
    ti_problem_free(&p);
    return rc;
}

/* ---- tables and figures --------------------------------------------------- */

static void mean_std(const double *x, int n, double *mean, double *sd)
{
    double s = 0, q = 0;
    for (int i = 0; i < n; i++) s += x[i];
    *mean = n > 0 ? s / n : NAN;
    for (int i = 0; i < n; i++) q += (x[i] - *mean) * (x[i] - *mean);
    *sd = n > 1 ? sqrt(q / (n - 1)) : 0;
}

static int write_tables(experiment *ex, double load_s)
{
    const ti_opts *o = ex->o;
    ex_file csv;
    int rc = ex_csv_open(&csv, ex->od, "trials.csv", "trial,seed,K,iters,stopped_early,best_tau,"
                         "best_test_acc,final_test_acc,sec_per_iter,final_val_loss");
    for (int t = 0; t < o->trials && rc == AD_OK; t++)
        for (int k = 0; k < o->nK; k++) {
            const run_result *r = &ex->res[t * o->nK + k];
            fprintf(csv.f, "%d,%llu,%d,%d,%d,%d,%.6f,%.6f,%.6f,%.6f\n", t,
                    (unsigned long long)(o->seed + (uint64_t)t), o->Ks[k], r->iters,
                    r->stopped_early, r->best_tau, r->best_acc, r->final_acc,
                    r->seconds / (r->iters > 0 ? r->iters : 1), r->final_val_loss);
        }
    if (rc == AD_OK) rc = ex_file_commit(&csv);
    if (rc != AD_OK) return rc;

    /* Table 3: into memory, then printed and saved. */
    int n = o->trials;
    double acc[MAX_TRIALS], it[MAX_TRIALS];
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return ad_fail(AD_ENOMEM, "out of memory");
    if (o->omniglot)
        fprintf(f, "### Table 3, Omniglot (in place of CIFAR-100: V = %d characters, 3 + 3 "
                   "drawers each, raw 28×28 pixels)\n\n", o->chars);
    else
        fprintf(f, "### Table 3, CIFAR-10 (V = 10, 50 + 50 examples, raw pixels, not ResNet-18 "
                   "features)\n\n");
    fprintf(f, "| Method | Avg. test acc. (%%) | Avg. iter. | early-stopped | best iter. | "
               "Sec/iter. |\n|---|---|---|---|---|---|\n");
    for (int k = 0; k < o->nK; k++) {
        double secs = 0;
        int iters = 0, early = 0;
        for (int t = 0; t < n; t++) {
            const run_result *r = &ex->res[t * o->nK + k];
            acc[t] = 100 * r->best_acc;
            it[t] = r->best_tau;
            secs += r->seconds;
            iters += r->iters;
            early += r->stopped_early;
        }
        double am, as, bm, bs;
        mean_std(acc, n, &am, &as);
        mean_std(it, n, &bm, &bs);
        char lab[32];
        fprintf(f, "| %s | %.2f ± %.2f | %.0f | %d/%d | %.0f | %.3f |\n",
                k_label(o->Ks[k], o->T, lab, sizeof lab), am, as, (double)iters / n, early, n, bm,
                secs / (iters > 0 ? iters : 1));
    }
    fprintf(f, "\n%d trials (seeds %llu..%llu), T = %d, γ = %g, Adam η0 = %g (η0/√τ), at most %d "
               "hyper-iterations, patience %d (test accuracy checked every %d); mean ± std over "
               "trials of the test accuracy at the best check.  \"Avg. iter.\": hyper-iterations "
               "run; \"best iter.\": mean τ of the best check; Sec/iter: hypergradient + Adam "
               "step, wall clock; arithmetic in %s (the library's real type).  Data: %s, loaded "
               "in %.1f s; the whole run took %.0f s.\n",
            n, (unsigned long long)o->seed, (unsigned long long)(o->seed + (uint64_t)n - 1), o->T,
            o->gamma, o->eta0, o->max_iters, o->patience, o->eval_every,
            sizeof(ad_real) == sizeof(double) ? "double" : "float", ex->source, load_s,
            ex_now() - ex->t_start);
    rc = fclose(f) == 0 ? ex_out_save(ex->od, "table3.md", text, len)
                        : ad_fail(AD_ENOMEM, "out of memory");
    if (rc == AD_OK) fputs(text, stderr);
    free(text);
    return rc;
}

/* DIR/table3.md: the datasets' tables one after the other.  Another run
 * (the other dataset) may write it too: DIR itself is not locked. */
static int join_tables(const char *out)
{
    ex_out *od = malloc(sizeof *od);
    ex_file f;
    int rc = od ? ex_out_open_shared(od, out) : ad_fail(AD_ENOMEM, "out of memory");
    if (rc == AD_OK) rc = ex_file_open(&f, od, "table3.md");
    static const char *const sets[] = { "cifar", "omniglot" };
    for (int s = 0; s < 2 && rc == AD_OK; s++) {
        char src[EX_PATH_LEN];
        snprintf(src, sizeof src, "%s/%s/table3.md", out, sets[s]);
        FILE *in = fopen(src, "r");
        if (!in) continue;
        char line[2048];
        while (fgets(line, sizeof line, in)) fputs(line, f.f);
        fputs("\n", f.f);
        fclose(in);
    }
    if (rc == AD_OK) rc = ex_file_commit(&f);
    free(od);
    return rc;
}

/* C.csv and C.gp: the learned C of each K.  CIFAR-10 has the same classes in
 * every trial, so C is their mean, summed in trial order into trial 0's rows
 * of C_run (which it overwrites); Omniglot's differ, so C is trial 0's. */
static int write_C(experiment *ex)
{
    const ti_opts *o = ex->o;
    int V = o->V;
    size_t VV = (size_t)V * (size_t)V, per_trial = (size_t)o->nK * VV;
    bool mean = !o->omniglot;
    double *C = ex->C_run; /* [nK][V·V] */
    for (int t = 1; mean && t < o->trials; t++)
        for (size_t i = 0; i < per_trial; i++) C[i] += C[(size_t)t * per_trial + i];
    for (size_t i = 0; mean && i < per_trial; i++) C[i] /= o->trials;
    ex_file csv;
    int rc = ex_csv_open(&csv, ex->od, "C.csv", "K,i,j,C");
    for (int k = 0; k < o->nK && rc == AD_OK; k++)
        for (size_t i = 0; i < VV; i++)
            fprintf(csv.f, "%d,%zu,%zu,%.17g\n", o->Ks[k], i / (size_t)V, i % (size_t)V,
                    C[k * VV + i]);
    if (rc == AD_OK) rc = ex_file_commit(&csv);
    int cols = o->nK <= 2 ? o->nK : 2, rows = (o->nK + cols - 1) / cols;
    ex_file gf;
    if (rc == AD_OK) rc = ex_gp_open(&gf, ex->od, "C.gp", o->omniglot ? 620 * cols : 600 * cols,
                                     o->omniglot ? 560 * rows : 540 * rows);
    if (rc != AD_OK) return rc;
    FILE *g = gf.f;
    double c0 = 2 * log1p(exp(o->b0));
    fprintf(g, "set multiplot layout %d,%d title 'Learned task interactions C_{ij} (%s; started at "
               "%.3g everywhere; diagonal unused, blank)'\n",
            rows, cols,
            mean ? "CIFAR-10, mean over trials" : "Omniglot trial 0, characters in the seeded order",
            c0);
    fprintf(g, "unset grid\nset size ratio -1\nset palette defined (0 '#ffffcc', 1 '#fee391', "
               "2 '#fe9929', 3 '#cc4c02', 4 '#662506')\nset xrange [-0.5:%d.5]; set yrange "
               "[%d.5:-0.5]\n", V - 1, V - 1);
    for (int axis = 0; axis < 2 && !o->omniglot; axis++) { /* the class names on both axes */
        fprintf(g, axis ? "set ytics (" : "set xtics rotate by 45 right (");
        for (int c = 0; c < V; c++) fprintf(g, "%s'%s' %d", c ? ", " : "", cifar_names[c], c);
        fprintf(g, ")\n");
    }
    if (o->omniglot) fprintf(g, "set xlabel 'class j'; set ylabel 'class i'\n");
    for (int k = 0; k < o->nK; k++) {
        char lab[32];
        fprintf(g, "$C%d << EOD\n", k);
        for (int i = 0; i < V; i++)
            for (int j = 0; j < V; j++)
                fprintf(g, "%d,%d,%.6g\n", j, i, i == j ? NAN : C[k * VV + (size_t)i * V + j]);
        fprintf(g, "EOD\nset title '%s'\nplot $C%d using 1:2:3 with image notitle\n",
                k_label(o->Ks[k], o->T, lab, sizeof lab), k);
    }
    fprintf(g, "unset multiplot\n");
    return ex_gp_commit(&gf);
}

static int write_fig6(experiment *ex)
{
    const ti_opts *o = ex->o;
    ex_file gf;
    int rc = ex_gp_open(&gf, ex->od, "fig6.gp", 1500, 480);
    if (rc != AD_OK) return rc;
    FILE *g = gf.f;
    fprintf(g, "Ks = '");
    for (int k = 0; k < o->nK; k++) fprintf(g, "%s%d", k ? " " : "", o->Ks[k]);
    fprintf(g, "'; nK = words(Ks); T = %d\n"
               "label(K) = (K >= T ? 'Full RMD' : sprintf('%%d-RMD', K))\n"
               "set multiplot layout 1,3 title 'Figure 6, %s (trial 0, seed %llu): K-RMD "
               "hyper-iterations; exact (full RMD) hypergradient every %d'\n"
               "set xlabel 'hyper-iteration τ'\n"
               "set key top right\n"
               "set title 'validation loss f(ŵ(λ_τ))'\n"
               "plot for [i=1:nK] 'iters.csv' skip 1 using ($1 == 0 && $2 == word(Ks, i) + 0 ? $3 "
               ": NaN):4 with lines lw 1.5 lc i title label(word(Ks, i) + 0)\n"
               "set title 'norm of the exact hypergradient ‖d_λf‖'\n"
               "set logscale y\n"
               "plot for [i=1:nK] 'exact.csv' skip 1 using ($1 == word(Ks, i) + 0 ? $2 : NaN):3 "
               "with lines lw 1.5 lc i title label(word(Ks, i) + 0)\n"
               "unset logscale y\n"
               "set title 'cosine similarity of h_{T−K} and d_λf'\n"
               "set autoscale y\n"
               "set key bottom left\n"
               "plot for [i=1:nK] 'exact.csv' skip 1 using ($1 == word(Ks, i) + 0 ? $2 : NaN):4 "
               "with lines lw 1.5 lc i title label(word(Ks, i) + 0)\n"
               "unset multiplot\n",
            o->T, o->omniglot ? "Omniglot" : "CIFAR-10", (unsigned long long)o->seed,
            o->fig_every);
    return ex_gp_commit(&gf);
}

/* ---- main ----------------------------------------------------------------- */

typedef struct dataset {
    data_cifar train, test;
    data_omniglot om;
} dataset;

static int load_data(const ti_opts *o, dataset *ds)
{
    memset(ds, 0, sizeof *ds);
    const char *dir = data_find_dir(o->data, o->dataset);
    if (!dir) return ad_fail_wrap(AD_EIO, "finding the data (give --data DIR)");
    int rc = o->omniglot ? data_omniglot_load(dir, 28, &ds->om)
                         : data_cifar_load(dir, &ds->train, &ds->test);
    return rc == AD_OK ? AD_OK : ad_fail_wrap(rc, o->omniglot ? "loading Omniglot" : "loading CIFAR-10");
}

static void free_data(dataset *ds)
{
    data_cifar_free(&ds->train);
    data_cifar_free(&ds->test);
    data_omniglot_free(&ds->om);
}

/* Opens the output folder and the three CSV files written along the run. */
static int open_outputs(experiment *ex)
{
    const ti_opts *o = ex->o;
    char dir[EX_PATH_LEN];
    if (snprintf(dir, sizeof dir, "%s/%s", o->out, o->dataset) >= (int)sizeof dir)
        return ad_fail(EX_EUSAGE, "--out: path too long");
    int rc = ex_out_open(ex->od, dir, true);
    static const char *const name[3] = { "iters.csv", "exact.csv", "inner.csv" };
    static const char *const header[3] = {
        "trial,K,tau,val_loss,val_acc,test_acc,norm_h,rho,C_mean,sec_hypergrad",
        "K,tau,norm_exact,cosine,norm_est", "K,stage,t,g" };
    if (rc != AD_OK) return rc;
    for (int i = 0; i < 3 && rc == AD_OK; i++) {
        rc = ex_csv_open(&ex->files[i], ex->od, name[i], header[i]);
        if (rc != AD_OK)
            for (int j = 0; j < i; j++) ex_file_abandon(&ex->files[j]);
    }
    if (rc != AD_OK) ex_out_close(ex->od); /* the caller closes it only after a success */
    return rc;
}

/* Trial t (an ex_item_fn): its data drawn from seed + t, then every K on
 * them; its rows go into memory (ex->text), copied into the files later. */
static int run_trial(void *arg, int worker, int t)
{
    experiment *ex = arg;
    const ti_opts *o = ex->o;
    const dataset *ds = ex->ds;
    FILE *f[N_FILES] = { NULL };
    char **text = ex->text;
    size_t *len = ex->text_len;
    int rc = AD_OK;
    for (int i = 0; i < N_FILES && rc == AD_OK; i++) {
        size_t at = (size_t)i * (size_t)o->trials + (size_t)t;
        if (!(f[i] = open_memstream(&text[at], &len[at]))) rc = ad_fail(AD_ENOMEM, "out of memory");
    }
    ti_data dt;
    uint64_t seed = o->seed + (uint64_t)t;
    if (rc == AD_OK) {
        rc = o->omniglot ? ti_data_omniglot(&dt, &ds->om, DATA_OMNIGLOT_BACKGROUND_CHARS,
                                            o->chars, 3, 3, seed, o->gamma)
                         : ti_data_cifar(&dt, &ds->train, &ds->test, 5, 5, seed, o->gamma);
        if (rc != AD_OK) rc = ad_fail_wrap(rc, "preparing a trial's data");
    }
    if (rc == AD_OK) {
        fprintf(stderr, PROG ": trial %d (seed %llu): %d train, %d val, %d test examples, "
                        "λmax(XᵀX/n) = %.4g, feature scale s = %.4g\n",
                t, (unsigned long long)seed, dt.n_train, dt.n_val, dt.n_test, dt.lmax, dt.scale);
        for (int k = 0; k < o->nK && rc == AD_OK; k++) {
            rc = run_one(ex, &dt, t, k, f);
            if (rc != AD_OK) rc = ad_fail_wrap(rc, "hyper-iterations");
        }
        ti_data_free(&dt);
    }
    for (int i = 0; i < N_FILES; i++)
        if (f[i] && fclose(f[i]) != 0 && rc == AD_OK) rc = ad_fail(AD_ENOMEM, "out of memory");
    return rc;
}

/* Every trial on the workers (and ranks), then their results and Cs to
 * every rank and their rows into the files, in trial order. */
static int run_trials(experiment *ex, double load_s)
{
    const ti_opts *o = ex->o;
    fprintf(stderr, PROG ": %s, %d trials, K =", o->dataset, o->trials);
    for (int k = 0; k < o->nK; k++) fprintf(stderr, " %d", o->Ks[k]);
    fprintf(stderr, ", T = %d, γ = %g, at most %d hyper-iterations, patience %d; data: %s, "
                    "loaded in %.1f s; output in %s; %d worker thread%s%s\n",
            o->T, o->gamma, o->max_iters, o->patience, ex->source, load_s, ex->od->dir,
            o->threads, o->threads > 1 ? "s" : "", ex_par_size() > 1 ? " per MPI rank" : "");
    size_t VV = (size_t)o->V * (size_t)o->V, per_trial = (size_t)o->nK * VV;
    int rc = ex_par_run(o->threads, o->trials, run_trial, ex);
    if (rc == AD_OK) rc = ex_par_share(ex->res, sizeof *ex->res * (size_t)o->nK, o->trials);
    if (rc == AD_OK) rc = ex_par_share(ex->C_run, sizeof *ex->C_run * per_trial, o->trials);
    for (int i = 0; i < N_FILES && rc == AD_OK; i++)
        rc = ex_par_collect(ex->text + (size_t)i * (size_t)o->trials,
                            ex->text_len + (size_t)i * (size_t)o->trials, o->trials);
    for (int i = 0; i < N_FILES && rc == AD_OK; i++)
        for (int t = 0; t < o->trials; t++) {
            size_t at = (size_t)i * (size_t)o->trials + (size_t)t;
            if (ex->text_len[at] > 0) fwrite(ex->text[at], 1, ex->text_len[at], ex->files[i].f);
        }
    for (int i = 0; i < N_FILES && rc == AD_OK; i++) rc = ex_file_commit(&ex->files[i]);
    return rc;
}

static int run(const ti_opts *o)
{
    double t0 = ex_now();
    for (int k = 0; k < o->nK; k++)
        if (o->Ks[k] > o->T) fprintf(stderr, PROG ": note: K = %d > T = %d is full RMD\n", o->Ks[k], o->T);
    size_t VV = (size_t)o->V * (size_t)o->V;
    experiment ex = { .o = o, .od = malloc(sizeof(ex_out)), .t_start = t0 };
    size_t runs = (size_t)o->trials * (size_t)o->nK;
    ex.res = calloc(runs, sizeof *ex.res);
    ex.C_run = calloc(runs * VV, sizeof *ex.C_run);
    ex.text = calloc((size_t)N_FILES * (size_t)o->trials, sizeof *ex.text);
    ex.text_len = calloc((size_t)N_FILES * (size_t)o->trials, sizeof *ex.text_len);
    dataset ds = { 0 };
    ex.ds = &ds;
    int rc = ex.od && ex.res && ex.C_run && ex.text && ex.text_len
                 ? open_outputs(&ex) : ad_fail(AD_ENOMEM, "out of memory");
    bool opened = rc == AD_OK;
    if (rc == AD_OK) rc = load_data(o, &ds);
    double load_s = ex_now() - t0;
    if (rc == AD_OK)
        ex.source = o->omniglot ? "Omniglot's " DATA_OMNIGLOT_BACKGROUND
                                : data_cifar_source_name(ds.train.source);
    if (rc == AD_OK) rc = run_trials(&ex, load_s);
    for (int i = 0; opened && i < N_FILES; i++) ex_file_abandon(&ex.files[i]); /* after a failure */
    if (rc == AD_OK) rc = write_tables(&ex, load_s);
    if (rc == AD_OK) rc = join_tables(o->out);
    if (rc == AD_OK) rc = write_fig6(&ex);
    if (rc == AD_OK) rc = write_C(&ex);
    if (opened) {
        fprintf(stderr, PROG ": done in %.1f s%s; files written:\n", ex_now() - t0,
                rc ? " (with errors)" : "");
        ex_out_list(ex.od);
        ex_out_close(ex.od);
    }
    for (size_t i = 0; ex.text && i < (size_t)N_FILES * (size_t)o->trials; i++) free(ex.text[i]);
    free(ex.text);
    free(ex.text_len);
    free(ex.res);
    free(ex.C_run);
    free(ex.od);
    free_data(&ds);
    return rc;
}

int main(int argc, char **argv)
{
    int rc = ex_par_init(&argc, &argv);
    int st = rc ? ex_exit(rc) : ex_flags_parse(&cmd, argc, argv);
    if (st) return ex_par_end(st < 0 ? 0 : st);
    return ex_par_end(ex_exit(run(&opts)));
}
