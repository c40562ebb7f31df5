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
 *
 * Outputs in --out/<dataset>/ (default results/taskinteract/cifar, …):
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
 * Exit status: 0 on success (also when gnuplot is missing), 1 on a run-time
 * failure (data, memory, NaN, a file), 2 on bad usage.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "experiments/common.h"
#include "experiments/taskinteract_problem.h"
#include "optim/hypergrad.h"
#include "optim/outer.h"

#define PROG "taskinteract"
enum { MAX_KS = 8, MAX_TRIALS = 1000 };

static const char *const cifar_names[DATA_CIFAR_CLASSES] = {
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"
};

/* ---- options ------------------------------------------------------------ */

typedef struct ti_opts {
    bool omniglot, quick;
    const char *data, *out;
    int trials, max_iters, patience, T, nK, Ks[MAX_KS];
    int chars, fig_every, eval_every;
    double gamma, eta0, rho0, b0;
    bool b0_set;
    uint64_t seed;
    bool trials_set, max_iters_set, patience_set, ks_set, chars_set, fig_every_set;
} ti_opts;

static void usage(FILE *out)
{
    fprintf(out,
"usage: taskinteract [--dataset cifar|omniglot] [--data DIR] [--trials N]\n"
"                    [--max-iters N] [--patience N] [--K LIST] [--out DIR]\n"
"                    [--seed S] [--quick] [more flags below]\n"
"\n"
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
"Data (the paper's ResNet-18 features cannot be obtained here: no ImageNet-\n"
"pretrained weights or precomputed features are available offline, and\n"
"CIFAR-100 is not in the shared data; so raw pixels are used, and the 100-class\n"
"case is Omniglot):\n"
"  cifar     CIFAR-10 (<data>/cifar, JPEG-degraded copy): 5 training and 5\n"
"            validation images per class (m = 50 + 50) drawn per trial from the\n"
"            4000 shared training images; tested on the whole 10000-image test\n"
"            set.  V = 10, d = 3072 + 1.\n"
"  omniglot  100 characters of the background set (seeded choice), each a class;\n"
"            per character 3 training and 3 validation drawers, the other 14\n"
"            test (300 + 300 + 1400 images, 28×28).  V = 100, d = 784 + 1.\n"
"Features: pixels standardized with the mean and spread of the training images\n"
"(Omniglot spreads floored at %g), then scaled by s = √(4/(γ·λmax)), λmax the\n"
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
"Figure 6's exact hypergradients).\n"
"\n", TI_OMNIGLOT_STD_FLOOR);
    fprintf(out,
"  --dataset D      cifar (default) or omniglot\n"
"  --data DIR       the dataset's folder (default: $HYPERTAPE_DATA/<D>, else\n"
"                   ../shared/data/<D>)\n"
"  --trials N       trials (seeds S, S+1, …), 1..%d (default 10)\n"
"  --max-iters N    most hyper-iterations per run (default 5000)\n"
"  --patience N     early-stopping patience in hyper-iterations (default 500)\n"
"  --K LIST         truncations, comma-separated, at most %d (default 1,5,25,100);\n"
"                   no K twice, and at most one K >= T (each is full RMD)\n"
"  --out DIR        output folder; files go to DIR/<D>/ (default\n"
"                   results/taskinteract)\n"
"  --seed S         seed of trial 0 (default 1)\n"
"  --quick          a tiny end-to-end run (2 trials, 20 hyper-iterations, K = 1,\n"
"                   5 and full, 20 Omniglot characters; under a minute); other\n"
"                   flags given explicitly still apply\n"
"  --T N            inner steps (default 100)\n"
"  --gamma G        inner step size (default 0.1)\n"
"  --eta0 E         Adam's η0 (default 0.1, the same for every K: Adam's first\n"
"                   step has the same size whatever the gradient's norm)\n"
"  --rho0 R         initial ρ (default 0.01)\n"
"  --B0 B           initial B entries (default: see above)\n"
"  --chars N        Omniglot characters (classes), 2..964 (default 100)\n"
"  --eval-every N   test-accuracy check period (default 10)\n"
"  --fig-every N    trial 0's exact-hypergradient period (default 10; 0: never)\n"
"  -h, --help       this text\n"
"Values may follow a flag after '=' or as the next argument.  Set\n"
"OPENBLAS_NUM_THREADS=1 on a shared machine.  Progress goes to stderr.\n"
"Outputs in DIR/<D>/: iters.csv, exact.csv, trials.csv, inner.csv, C.csv,\n"
"table3.md (DIR/table3.md joins the datasets), fig6.png, C.png and their .gp.\n"
"Exit status: 0 on success (also without gnuplot), 1 on a run-time failure,\n"
"2 on a bad flag or value.\n",
            MAX_TRIALS, MAX_KS);
}

/* The truncation a K means: K >= T is full RMD (labelled so), whatever K. */
static int k_depth(int K, int T)
{
    return K < T ? K : T;
}

/* Two Ks of the same depth would be the same run twice, and twice the rows
 * and panels: a list given with --K must not have them (K >= T all mean full
 * RMD); the default list, at a small --T, loses the repeats quietly.
 * Returns 0 or an exit status. */
static int check_ks(ti_opts *o)
{
    for (int k = 1; k < o->nK;) {
        int j = 0;
        while (j < k && k_depth(o->Ks[j], o->T) != k_depth(o->Ks[k], o->T)) j++;
        if (j == k) {
            k++;
            continue;
        }
        if (o->ks_set) {
            if (o->Ks[j] == o->Ks[k])
                return ex_usage_error_old(PROG, "--K: %d is given twice", o->Ks[k]);
            return ex_usage_error_old(PROG, "--K: %d and %d are both full RMD (K >= T = %d); "
                                        "give one of them", o->Ks[j], o->Ks[k], o->T);
        }
        memmove(&o->Ks[k], &o->Ks[k + 1], sizeof *o->Ks * (size_t)(o->nK - k - 1));
        o->nK--;
    }
    return 0;
}

/* Returns 0 to go on, -1 after --help, or an exit status. */
static int parse_args(int argc, char **argv, ti_opts *o)
{
    *o = (ti_opts){ .out = "results/taskinteract", .trials = 10, .max_iters = 5000,
                    .patience = 500, .T = 100, .nK = 4, .Ks = { 1, 5, 25, 100 }, .chars = 100,
                    .fig_every = 10, .eval_every = 10, .gamma = 0.1, .eta0 = 0.1,
                    .rho0 = 0.01, .seed = 1 };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return -1;
        }
        if (!strcmp(a, "--quick")) { o->quick = true; continue; }
        static const char *const known[] = { "--dataset", "--data", "--trials", "--max-iters",
                                             "--patience", "--K", "--out", "--seed", "--T",
                                             "--gamma", "--eta0", "--rho0", "--B0", "--chars",
                                             "--eval-every", "--fig-every" };
        char name[EX_FLAG_NAME_LEN];
        const char *val;
        if (ex_flag_value(argc, argv, &i, known, sizeof known / sizeof *known, name, &val) != AD_OK)
            return ex_usage_error_old(PROG, "%s", ad_error());

        double x;
        if (!strcmp(name, "--dataset")) {
            if (!strcmp(val, "cifar")) o->omniglot = false;
            else if (!strcmp(val, "omniglot")) o->omniglot = true;
            else return ex_usage_error_old(PROG, "--dataset: expected cifar or omniglot, "
                                             "got '%s'", val);
        } else if (!strcmp(name, "--data")) {
            if (!*val) return ex_usage_error_old(PROG, "--data: empty folder name");
            o->data = val;
        } else if (!strcmp(name, "--out")) {
            if (!*val) return ex_usage_error_old(PROG, "--out: empty folder name");
            o->out = val;
        } else if (!strcmp(name, "--trials")) {
            if (!ex_parse_int(val, 1, MAX_TRIALS, &o->trials))
                return ex_usage_error_old(PROG, "--trials: expected a whole number in 1..1000, "
                                            "got '%s'", val);
            o->trials_set = true;
        } else if (!strcmp(name, "--max-iters")) {
            if (!ex_parse_int(val, 1, 10000000, &o->max_iters))
                return ex_usage_error_old(PROG, "--max-iters: expected a whole number in 1..10000000, "
                                            "got '%s'", val);
            o->max_iters_set = true;
        } else if (!strcmp(name, "--patience")) {
            if (!ex_parse_int(val, 1, 10000000, &o->patience))
                return ex_usage_error_old(PROG, "--patience: expected a whole number in 1..10000000, "
                                            "got '%s'", val);
            o->patience_set = true;
        } else if (!strcmp(name, "--K")) {
            if ((o->nK = ex_parse_int_list(val, 1, 100000, o->Ks, MAX_KS)) < 1)
                return ex_usage_error_old(PROG, "--K: expected up to %d whole numbers in 1..100000 "
                                            "separated by commas, got '%s'", MAX_KS, val);
            o->ks_set = true;
        } else if (!strcmp(name, "--seed")) {
            if (!ex_parse_u64(val, &o->seed))
                return ex_usage_error_old(PROG, "--seed: expected a whole number >= 0, got '%s'", val);
        } else if (!strcmp(name, "--T")) {
            if (!ex_parse_int(val, 1, 100000, &o->T))
                return ex_usage_error_old(PROG, "--T: expected a whole number in 1..100000, "
                                            "got '%s'", val);
        } else if (!strcmp(name, "--chars")) {
            if (!ex_parse_int(val, 2, DATA_OMNIGLOT_BACKGROUND_CHARS, &o->chars))
                return ex_usage_error_old(PROG, "--chars: expected a whole number in 2..964, "
                                            "got '%s'", val);
            o->chars_set = true;
        } else if (!strcmp(name, "--eval-every")) {
            if (!ex_parse_int(val, 1, 1000000, &o->eval_every))
                return ex_usage_error_old(PROG, "--eval-every: expected a whole number >= 1, "
                                            "got '%s'", val);
        } else if (!strcmp(name, "--fig-every")) {
            if (!ex_parse_int(val, 0, 1000000, &o->fig_every))
                return ex_usage_error_old(PROG, "--fig-every: expected a whole number >= 0, "
                                            "got '%s'", val);
            o->fig_every_set = true;
        } else if (!strcmp(name, "--B0")) {
            if (!ex_parse_double(val, &o->b0))
                return ex_usage_error_old(PROG, "--B0: expected a finite number, got '%s'", val);
            o->b0_set = true;
        } else {
            if (!ex_parse_double(val, &x) || !(x > 0)) /* --gamma, --eta0 or --rho0 */
                return ex_usage_error_old(PROG, "%s: expected a finite number > 0, got '%s'", name,
                                      val);
            if (!strcmp(name, "--gamma")) o->gamma = x;
            else if (!strcmp(name, "--eta0")) o->eta0 = x;
            else o->rho0 = x;
        }
    }
    if (o->omniglot == false && o->chars_set)
        return ex_usage_error_old(PROG, "--chars is for --dataset omniglot");
    if (o->quick) {
        if (!o->trials_set) o->trials = 2;
        if (!o->max_iters_set) o->max_iters = 20;
        if (!o->patience_set) o->patience = 15;
        if (!o->chars_set) o->chars = 20;
        if (!o->fig_every_set) o->fig_every = 5;
        if (!o->ks_set) {
            o->nK = 3;
            o->Ks[0] = 1;
            o->Ks[1] = 5;
            o->Ks[2] = o->T;
        }
    }
    return check_ks(o);
}

/* ---- small helpers ------------------------------------------------------- */

static int lib_fail(const char *what)
{
    fprintf(stderr, PROG ": %s: %s\n", what, ad_error());
    return EX_EXIT_LIB;
}

static const char *k_label(int K, int T, char *buf, size_t len)
{
    if (K >= T) snprintf(buf, len, "Full RMD");
    else snprintf(buf, len, "%d-RMD", K);
    return buf;
}

/* The opening of every script: PNG terminal, CSV input. */
static void gp_header(FILE *g, const char *png, int width, int height)
{
    ex_gp_header_old(g, PROG " (experiments/taskinteract.c)", png, width, height);
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

typedef struct experiment {
    const ti_opts *o;
    const char *dataset;
    ex_outdir *od;
    FILE *iters_csv, *exact_csv, *inner_csv;
    int V;
    run_result *res;   /* [trials][nK] */
    double *C_sum;     /* [nK][V·V]: sum over trials of the final C */
    double *C_trial0;  /* [nK][V·V] */
    double t_start;
} experiment;

/* g(W_t) for t = 0..T into inner.csv; returns whether it fell at every step
 * (within rounding), and the first and last values. */
static int inner_check(experiment *ex, const ti_problem *p, int K, const char *stage,
                       bool *monotone, double *g0, double *gT)
{
    int T = p->problem.T;
    /* rises below rounding (of the sum that g is) do not count */
    const double tol = sizeof(ad_real) == sizeof(float) ? 1e-5 : 1e-12;
    double *g = malloc(sizeof *g * (size_t)(T + 1));
    if (!g) return ad_fail(AD_ENOMEM, "out of memory");
    int rc = ti_train(p, g, NULL);
    if (rc == AD_OK) {
        *monotone = true;
        for (int t = 0; t <= T; t++) {
            fprintf(ex->inner_csv, "%d,%s,%d,%.17g\n", K, stage, t, g[t]);
            if (t > 0 && g[t] > g[t - 1] + tol * fabs(g[t - 1])) *monotone = false;
        }
        *g0 = g[0];
        *gT = g[T];
        if (!isfinite(g[T])) rc = ad_fail(AD_ENONFINITE, "inner loss is not finite at t = T");
    }
    free(g);
    return rc;
}

static double mean_offdiag(const double *C, int V)
{
    double s = 0;
    for (int i = 0; i < V; i++)
        for (int j = 0; j < V; j++)
            if (i != j) s += C[i * V + j];
    return s / ((double)V * (V - 1));
}

static int run_one(experiment *ex, const ti_data *dt, int trial, int ki)
{
    const ti_opts *o = ex->o;
    int K = o->Ks[ki], V = dt->V;
    bool full = K >= o->T, diag = trial == 0 && (o->fig_every > 0 || full);
    run_result *rr = &ex->res[trial * o->nK + ki];
    *rr = (run_result){ .best_acc = -1 };
    char lab[32];
    k_label(K, o->T, lab, sizeof lab);

    ti_problem p;
    double b0 = o->b0_set ? o->b0 : ti_default_b0(V);
    int rc = ti_problem_init(&p, dt, o->T, o->gamma, b0, o->rho0);
    opt_outer opt;
    bool opt_ok = false;
    double *C = malloc(sizeof *C * (size_t)V * (size_t)V);
    if (rc == AD_OK && !C) rc = ad_fail(AD_ENOMEM, "out of memory");
    if (rc == AD_OK) {
        rc = opt_outer_init(&opt, OPT_ADAM, o->eta0, true, 2, p.lam);
        opt_ok = rc == AD_OK;
    }
    if (rc == AD_OK && trial == 0 && ki == 0) {
        bool mono;
        double g0, gT;
        rc = inner_check(ex, &p, 0, "start", &mono, &g0, &gT);
        if (rc == AD_OK)
            fprintf(stderr, PROG ": trial 0 at λ0: inner loss g(W_0) = %.4g -> g(W_T) = %.4g, %s\n",
                    g0, gT, mono ? "decreasing at every step" : "NOT monotone (γ too large?)");
    }
    double last_print = ex_now();
    int tau;
    for (tau = 0; tau < o->max_iters && rc == AD_OK; tau++) {
        ad_value *h[2] = { NULL, NULL }, *ex_h[2] = { NULL, NULL };
        hg_report rep;
        double t0 = ex_now();
        rc = hg_krmd(&p.problem, K, h, &rep);
        double t_grad = ex_now() - t0;
        if (rc != AD_OK) {
            ad_fail_wrap(rc, "%s, trial %d, τ = %d", lab, trial, tau);
            break;
        }
        double val_loss = rep.outer_loss, val_acc = p.val_acc;
        double test_acc = NAN;
        bool check = tau % o->eval_every == 0 || tau + 1 == o->max_iters;
        if (check) {
            rc = ti_evaluate(p.w_hat, dt->x_test, dt->y_test, NULL, &test_acc);
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
            if (full) {
                cmp = hg_compare_grads(2, h, h);
            } else {
                rc = hg_full_rmd(&p.problem, ex_h, NULL);
                if (rc == AD_OK) cmp = hg_compare_grads(2, h, ex_h);
            }
            if (rc == AD_OK)
                fprintf(ex->exact_csv, "%d,%d,%.17g,%.17g,%.17g\n", K, tau, cmp.norm_exact,
                        cmp.cosine, cmp.norm_est);
        }
        double norm_h = 0;
        for (int i = 0; i < 2 && h[i]; i++)
            for (size_t j = 0; j < h[i]->size; j++) norm_h += (double)h[i]->data[j] * h[i]->data[j];
        ti_current_C(&p, C);
        if (rc == AD_OK) {
            fprintf(ex->iters_csv, "%d,%d,%d,%.17g,%.17g,", trial, K, tau, val_loss, val_acc);
            if (check) fprintf(ex->iters_csv, "%.17g", test_acc);
            fprintf(ex->iters_csv, ",%.17g,%.17g,%.17g,%.6g\n", sqrt(norm_h),
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
        if (ex_now() - last_print > 20) {
            last_print = ex_now();
            fprintf(stderr, PROG ": %s trial %d %s τ = %d: val loss %.4f, best test acc %.2f%% "
                    "(τ = %d), %.3f s/iter, %.0f s elapsed\n", ex->dataset, trial, lab, tau,
                    val_loss, 100 * rr->best_acc, rr->best_tau, rr->seconds / (tau + 1),
                    ex_now() - ex->t_start);
        }
        if (check && tau - rr->best_tau >= o->patience) {
            rr->stopped_early = true;
            tau++;
            break;
        }
    }
    rr->iters = tau;
    if (rc == AD_OK) {
        ti_current_C(&p, C);
        size_t VV = (size_t)V * (size_t)V;
        for (size_t i = 0; i < VV; i++) {
            ex->C_sum[ki * VV + i] += C[i];
            if (trial == 0) ex->C_trial0[ki * VV + i] = C[i];
        }
    }
    if (rc == AD_OK && trial == 0) {
        bool mono;
        double g0, gT;
        rc = inner_check(ex, &p, K, "end", &mono, &g0, &gT);
        if (rc == AD_OK)
            fprintf(stderr, PROG ": trial 0 %s at the last λ: ρ = %.4g, mean C_ij = %.4g, inner "
                    "loss %.4g -> %.4g, %s\n", lab, ti_current_rho(&p), mean_offdiag(C, V), g0, gT,
                    mono ? "decreasing at every step" : "NOT monotone (γ too large for this C?)");
    }
    if (rc == AD_OK)
        fprintf(stderr, PROG ": %s trial %d/%d %-8s %5d iters%s, best test acc %.2f%% at τ = %d "
                "(last %.2f%%), val loss %.4f, %.4f s/iter, %.0f s elapsed\n", ex->dataset,
                trial + 1, o->trials, lab, rr->iters, rr->stopped_early ? " (early stop)" : "",
                100 * rr->best_acc, rr->best_tau, 100 * rr->final_acc, rr->final_val_loss,
                rr->seconds / (rr->iters > 0 ? rr->iters : 1), ex_now() - ex->t_start);
    fflush(ex->iters_csv);
    if (opt_ok) opt_outer_free(&opt);
    ti_problem_free(&p);
    free(C);
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
    FILE *f = ex_outdir_open(ex->od, "trials.csv");
    if (!f) return EX_EXIT_LIB;
    fprintf(f, "trial,seed,K,iters,stopped_early,best_tau,best_test_acc,final_test_acc,"
               "sec_per_iter,final_val_loss\n");
    for (int t = 0; t < o->trials; t++)
        for (int k = 0; k < o->nK; k++) {
            const run_result *r = &ex->res[t * o->nK + k];
            fprintf(f, "%d,%llu,%d,%d,%d,%d,%.6f,%.6f,%.6f,%.6f\n", t,
                    (unsigned long long)(o->seed + (uint64_t)t), o->Ks[k], r->iters,
                    r->stopped_early, r->best_tau, r->best_acc, r->final_acc,
                    r->seconds / (r->iters > 0 ? r->iters : 1), r->final_val_loss);
        }
    int status = ex_outdir_close(ex->od, f, "trials.csv");
    if (status) return status;

    f = ex_outdir_open(ex->od, "table3.md");
    if (!f) return EX_EXIT_LIB;
    int n = o->trials;
    double *acc = malloc(sizeof *acc * (size_t)n), *it = malloc(sizeof *it * (size_t)n);
    if (!acc || !it) {
        free(acc);
        free(it);
        fclose(f);
        fprintf(stderr, PROG ": out of memory\n");
        return EX_EXIT_LIB;
    }
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
               "step, wall clock on a shared 2-core machine; arithmetic in %s (the library's real "
               "type).  Data loaded in %.1f s; the whole run took %.0f s.\n",
            n, (unsigned long long)o->seed, (unsigned long long)(o->seed + (uint64_t)n - 1), o->T,
            o->gamma, o->eta0, o->max_iters, o->patience, o->eval_every,
            sizeof(ad_real) == sizeof(double) ? "double" : "float", load_s,
            ex_now() - ex->t_start);
    free(acc);
    free(it);
    status = ex_outdir_close(ex->od, f, "table3.md");
    if (status) return status;
    /* print it (the path fits: the file was just written there) */
    char path[EX_PATH_LEN];
    FILE *in = snprintf(path, sizeof path, "%s/table3.md", ex->od->dir) < (int)sizeof path
                   ? fopen(path, "r")
                   : NULL;
    if (in) {
        char line[1024];
        while (fgets(line, sizeof line, in)) fputs(line, stderr);
        fclose(in);
    }
    return 0;
}

/* DIR/table3.md: the datasets' tables one after the other. */
static int join_tables(const ex_outdir *od, const char *out)
{
    char path[EX_PATH_LEN];
    snprintf(path, sizeof path, "%s/table3.md", out);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, PROG ": cannot write %s: %s\n", path, strerror(errno));
        return EX_EXIT_LIB;
    }
    static const char *const sets[] = { "cifar", "omniglot" };
    for (int s = 0; s < 2; s++) {
        char src[EX_PATH_LEN];
        snprintf(src, sizeof src, "%s/%s/table3.md", out, sets[s]);
        FILE *in = fopen(src, "r");
        if (!in) continue;
        char line[2048];
        while (fgets(line, sizeof line, in)) fputs(line, f);
        fputs("\n", f);
        fclose(in);
    }
    return ex_outdir_close(od, f, path);
}

static int write_C(experiment *ex)
{
    const ti_opts *o = ex->o;
    int V = ex->V;
    size_t VV = (size_t)V * (size_t)V;
    bool mean = !o->omniglot; /* the same classes in every trial */
    FILE *f = ex_outdir_open(ex->od, "C.csv");
    if (!f) return EX_EXIT_LIB;
    fprintf(f, "K,i,j,C\n");
    for (int k = 0; k < o->nK; k++)
        for (size_t i = 0; i < VV; i++)
            fprintf(f, "%d,%zu,%zu,%.17g\n", o->Ks[k], i / (size_t)V, i % (size_t)V,
                    mean ? ex->C_sum[k * VV + i] / o->trials : ex->C_trial0[k * VV + i]);
    int status = ex_outdir_close(ex->od, f, "C.csv");
    if (status) return status;

    FILE *g = ex_outdir_open(ex->od, "C.gp");
    if (!g) return EX_EXIT_LIB;
    int cols = o->nK <= 2 ? o->nK : 2, rows = (o->nK + cols - 1) / cols;
    gp_header(g, "C.png", o->omniglot ? 620 * cols : 600 * cols, o->omniglot ? 560 * rows : 540 * rows);
    double b0 = o->b0_set ? o->b0 : ti_default_b0(V);
    double c0 = 2 * log1p(exp(b0));
    fprintf(g, "set multiplot layout %d,%d title 'Learned task interactions C_{ij} (%s; started at "
               "%.3g everywhere; diagonal unused, blank)'\n",
            rows, cols,
            mean ? "CIFAR-10, mean over trials" : "Omniglot trial 0, characters in the seeded order",
            c0);
    fprintf(g, "unset grid\nset size ratio -1\nset palette defined (0 '#ffffcc', 1 '#fee391', "
               "2 '#fe9929', 3 '#cc4c02', 4 '#662506')\nset xrange [-0.5:%d.5]; set yrange "
               "[%d.5:-0.5]\n", V - 1, V - 1);
    if (!o->omniglot) {
        fprintf(g, "set xtics rotate by 45 right (");
        for (int c = 0; c < V; c++) fprintf(g, "%s'%s' %d", c ? ", " : "", cifar_names[c], c);
        fprintf(g, ")\nset ytics (");
        for (int c = 0; c < V; c++) fprintf(g, "%s'%s' %d", c ? ", " : "", cifar_names[c], c);
        fprintf(g, ")\n");
    } else {
        fprintf(g, "set xlabel 'class j'; set ylabel 'class i'\n");
    }
    for (int k = 0; k < o->nK; k++) {
        char lab[32];
        fprintf(g, "$C%d << EOD\n", k);
        for (int i = 0; i < V; i++)
            for (int j = 0; j < V; j++) {
                double c = mean ? ex->C_sum[k * VV + (size_t)i * V + j] / o->trials
                                : ex->C_trial0[k * VV + (size_t)i * V + j];
                fprintf(g, "%d,%d,%.6g\n", j, i, i == j ? NAN : c);
            }
        fprintf(g, "EOD\nset title '%s'\nplot $C%d using 1:2:3 with image notitle\n",
                k_label(o->Ks[k], o->T, lab, sizeof lab), k);
    }
    fprintf(g, "unset multiplot\n");
    status = ex_outdir_close(ex->od, g, "C.gp");
    if (!status) ex_outdir_plot(ex->od, "C.gp", "C.png");
    return status;
}

static int write_fig6(experiment *ex)
{
    const ti_opts *o = ex->o;
    FILE *g = ex_outdir_open(ex->od, "fig6.gp");
    if (!g) return EX_EXIT_LIB;
    gp_header(g, "fig6.png", 1500, 480);
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
    int status = ex_outdir_close(ex->od, g, "fig6.gp");
    if (!status) ex_outdir_plot(ex->od, "fig6.gp", "fig6.png");
    return status;
}

/* ---- main ----------------------------------------------------------------- */

typedef struct dataset {
    data_cifar train, test;
    data_omniglot om;
} dataset;

static int load_data(const ti_opts *o, dataset *ds)
{
    memset(ds, 0, sizeof *ds);
    const char *name = o->omniglot ? "omniglot" : "cifar";
    const char *dir = data_find_dir(o->data, name);
    if (!dir) return lib_fail("finding the data (give --data DIR)");
    int rc = o->omniglot ? data_omniglot_load(dir, 28, &ds->om)
                         : data_cifar_load(dir, &ds->train, &ds->test);
    if (rc != AD_OK) return lib_fail(o->omniglot ? "loading Omniglot" : "loading CIFAR-10");
    return 0;
}

static void free_data(dataset *ds)
{
    data_cifar_free(&ds->train);
    data_cifar_free(&ds->test);
    data_omniglot_free(&ds->om);
}

static int run(const ti_opts *o)
{
    double t0 = ex_now();
    for (int k = 0; k < o->nK; k++)
        if (o->Ks[k] > o->T) {
            fprintf(stderr, PROG ": note: K = %d > T = %d is full RMD\n", o->Ks[k], o->T);
        }
    dataset ds;
    int status = load_data(o, &ds);
    if (status) return status;
    double load_s = ex_now() - t0;
    int V = o->omniglot ? o->chars : DATA_CIFAR_CLASSES;

    ex_outdir *od = calloc(1, sizeof *od);
    experiment ex = { .o = o, .dataset = o->omniglot ? "omniglot" : "cifar", .od = od, .V = V,
                      .t_start = t0 };
    size_t VV = (size_t)V * (size_t)V;
    ex.res = calloc((size_t)o->trials * (size_t)o->nK, sizeof *ex.res);
    ex.C_sum = calloc((size_t)o->nK * VV, sizeof *ex.C_sum);
    ex.C_trial0 = calloc((size_t)o->nK * VV, sizeof *ex.C_trial0);
    if (!od || !ex.res || !ex.C_sum || !ex.C_trial0) {
        fprintf(stderr, PROG ": out of memory\n");
        status = EX_EXIT_LIB;
    }
    if (!status) status = ex_outdir_init(od, PROG, "%s/%s", o->out, ex.dataset);
    if (!status) {
        if (!od->have_gnuplot)
            fprintf(stderr, PROG ": warning: gnuplot was not found on PATH; writing CSV files and "
                            "scripts only\n");
        if (!(ex.iters_csv = ex_outdir_open(od, "iters.csv")) ||
            !(ex.exact_csv = ex_outdir_open(od, "exact.csv")) ||
            !(ex.inner_csv = ex_outdir_open(od, "inner.csv")))
            status = EX_EXIT_LIB;
    }
    if (!status) {
        fprintf(ex.iters_csv, "trial,K,tau,val_loss,val_acc,test_acc,norm_h,rho,C_mean,"
                              "sec_hypergrad\n");
        fprintf(ex.exact_csv, "K,tau,norm_exact,cosine,norm_est\n");
        fprintf(ex.inner_csv, "K,stage,t,g\n");
        fprintf(stderr, PROG ": %s, %d trials, K =", ex.dataset, o->trials);
        for (int k = 0; k < o->nK; k++) fprintf(stderr, " %d", o->Ks[k]);
        fprintf(stderr, ", T = %d, γ = %g, at most %d hyper-iterations, patience %d; data "
                        "loaded in %.1f s; output in %s\n",
                o->T, o->gamma, o->max_iters, o->patience, load_s, od->dir);
    }
    for (int t = 0; t < o->trials && !status; t++) {
        ti_data dt;
        uint64_t seed = o->seed + (uint64_t)t;
        int rc = o->omniglot ? ti_data_omniglot(&dt, &ds.om, DATA_OMNIGLOT_BACKGROUND_CHARS,
                                                o->chars, 3, 3, seed, o->gamma)
                             : ti_data_cifar(&dt, &ds.train, &ds.test, 5, 5, seed, o->gamma);
        if (rc != AD_OK) {
            status = lib_fail("preparing a trial's data");
            break;
        }
        fprintf(stderr, PROG ": trial %d (seed %llu): %d train, %d val, %d test examples, "
                        "λmax(XᵀX/n) = %.4g, feature scale s = %.4g\n",
                t, (unsigned long long)seed, dt.n_train, dt.n_val, dt.n_test, dt.lmax, dt.scale);
        for (int k = 0; k < o->nK && !status; k++)
            if (run_one(&ex, &dt, t, k) != AD_OK) status = lib_fail("hyper-iterations");
        ti_data_free(&dt);
    }
    FILE *fs[3] = { ex.iters_csv, ex.exact_csv, ex.inner_csv };
    static const char *const fn[3] = { "iters.csv", "exact.csv", "inner.csv" };
    for (int i = 0; i < 3; i++)
        if (fs[i]) {
            int s = ex_outdir_close(od, fs[i], fn[i]);
            if (!status) status = s;
        }
    if (!status) status = write_tables(&ex, load_s);
    if (!status) status = join_tables(od, o->out);
    if (!status) status = write_fig6(&ex);
    if (!status) status = write_C(&ex);
    if (od) {
        fprintf(stderr, PROG ": done in %.1f s%s; files written:\n", ex_now() - t0,
                status ? " (with errors)" : "");
        ex_outdir_list(od);
    }
    free(ex.res);
    free(ex.C_sum);
    free(ex.C_trial0);
    free(od);
    free_data(&ds);
    return status;
}

int main(int argc, char **argv)
{
    ti_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc < 0) return 0;
    if (rc) return rc;
    return run(&o);
}
