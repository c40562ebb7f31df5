/*
 * hyperclean.c — the data-hypercleaning experiment of Sec. 4.2.1 and
 * App. G.1: learn one weight σ(λᵢ) per training example, half of whose
 * labels are corrupted, by K-RMD hypergradients, for K = 1, 5, 25, 50, 100.
 * --help lists every flag; the problem itself is hyperclean_problem.c.
 *
 * Each K runs in a child process (ex_run_forked), so that its peak RSS
 * (getrusage ru_maxrss) is its own and not the largest K's, and so that the
 * exact hypergradients of Figure 5 — full RMD, the memory of K = T — are
 * computed after that peak was read: the K-RMD run saves λ every few
 * hyper-iterations and the child evaluates ‖dλf‖ at those iterates at the
 * end.  The Ks run --threads at a time (under mpirun, in blocks on the
 * ranks); each child writes its rows into a temporary file of its own, and
 * the parent copies them into the CSV files in K order, so the files do not
 * depend on how many ran at once.
 *
 * Outputs in --out (default results/hyperclean; with --quick
 * results/hyperclean-quick, so a first look leaves a full run's files alone):
 *   hyperclean.csv          one row per K and hyper-iteration τ, measured at
 *                           λ_τ, before the τ-th update (τ = 1 is λ = 0)
 *   hyperclean_exact.csv    ‖dλf‖ (exact, full RMD) and the K-RMD estimate's
 *                           norm, cosine and relative error at saved iterates
 *   hyperclean_summary.csv  the table below, one row per K
 *   hyperclean_table.md     Table 2 (+ App. G.1's thresholds), also printed
 *   hyperclean_fig5.png     Figure 5: ‖dλf‖ against τ, log scale
 *   hyperclean_val_loss.png validation loss against τ
 *   hyperclean_f1.png       F1 (λ < −3) against τ
 *   hyperclean_profile_K<K>.csv  the truncation profile at λ_τ of K's run,
 *                           every --profile-every hyper-iterations: every
 *                           h_{T−k}, k = 1..T, from one reverse pass
 *                           (hg_truncation_profile), the contraction rate
 *                           q of ∇²g (hg_curvature_estimate) and the K a
 *                           1 % relative error needs (hg_choose_k_from)
 *   hyperclean_profile.png  the shares' norms against k, with q^k beside them
 *   hyperclean_*.gp         the gnuplot scripts that drew them
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "experiments/data/mnist.h"
#include "experiments/hyperclean_problem.h"
#include "experiments/kit/kit.h"
#include "optim/hypergrad.h"
#include "optim/outer.h"

#define PROG "hyperclean"
enum { MAX_K = 16, N_THRESH = 3 };
static const double thresholds[N_THRESH] = { -4, -3, -1 }; /* App. G.1; −3 is Table 2's */
enum { MAIN_THRESH = 1 };

/* ---- configuration ------------------------------------------------------- */

typedef struct config {
    const char *dataset, *data_dir, *out_dir;
    int hyper_iters, n_train, n_val, T, exact_every, profile_every, threads;
    int Ks[MAX_K], nK;
    uint64_t seed;
    double gamma, reg, corrupt, first_step_rms;
    bool quick, no_plots, gamma_check, oracle, no_fork;
} config;

static config cfg = { .exact_every = -1, .profile_every = -1 };

static const ex_flag flags[] = {
    { "--dataset", EX_CHOICE, &cfg.dataset, "mnist", .help = "mnist or fashion (Fashion-MNIST)",
      .choices = "mnist|fashion|fashion-mnist" },
    { "--data", EX_TEXT, &cfg.data_dir, .help = "the folder of the four IDX files (default: "
      "$HYPERTAPE_DATA/mnist or $HYPERTAPE_DATA/fashion-mnist, then ../shared/data/mnist from "
      "the working folder, or /usr/share/datasets/fashion-mnist)", .meta = "DIR" },
    { "--hyper-iters", EX_INT, &cfg.hyper_iters, "1000", 1, 10000000, "Adam updates of lambda "
      "per K (the paper's 1000)", .quick = "50" },
    { "--K", EX_INTS, cfg.Ks, NULL, 1, 1000000, "truncation depths (default 1,5,25,50,100; with "
      "--T below 100: those below T, and T)", .max_n = MAX_K, .n = &cfg.nK },
    { "--out", EX_TEXT, &cfg.out_dir, "results/hyperclean", .help = "output folder, created if "
      "missing", .quick = "results/hyperclean-quick", .meta = "DIR" },
    { "--seed", EX_SEED, &cfg.seed, "1", .help = "seeds the choice of examples and the "
      "corruption" },
    { "--quick", EX_SWITCH, &cfg.quick, .help = "a first look in about a minute: 1000 training "
      "and 1000 validation examples, 50 hyper-iterations, exact hypergradients every 5; T = 100 "
      "and the test set as always" },
    { "--n-train", EX_INT, &cfg.n_train, "5000", 10, 60000, "training examples", .quick = "1000" },
    { "--n-val", EX_INT, &cfg.n_val, "5000", 10, 60000, "validation examples", .quick = "1000" },
    { "--T", EX_INT, &cfg.T, "100", 1, 100000, "inner gradient-descent steps" },
    { "--gamma", EX_REAL, &cfg.gamma, NULL, 0, HUGE_VAL, "inner step size (default: 1/L0, the "
      "inverse of the largest curvature of the inner loss at W = 0, measured on the training "
      "set; about 0.256 for MNIST, 0.089 for Fashion)", .open = EX_OPEN_LO },
    { "--reg", EX_REAL, &cfg.reg, "0.001", 0, HUGE_VAL, "weight of ||W||_F^2 in the inner loss" },
    { "--corrupt", EX_REAL, &cfg.corrupt, "0.5", 0, 1, "fraction of training examples "
      "relabelled" },
    { "--first-step", EX_REAL, &cfg.first_step_rms, "1", 0, HUGE_VAL, "the first Adam update of "
      "lambda has norm R*sqrt(n) for every K (about R per entry); eta0 is chosen per K to make "
      "it so (1: F1 then settles within about 150 hyper-iterations, as App. G.1 reports)",
      .open = EX_OPEN_LO, .meta = "R" },
    { "--exact-every", EX_INT, &cfg.exact_every, NULL, 0, 10000000, "exact hypergradient "
      "(Figure 5) every E hyper-iterations, plus the first and the last; 0: never (default N/50)",
      .quick = "5", .meta = "E" },
    { "--profile-every", EX_INT, &cfg.profile_every, NULL, 0, 10000000, "truncation profile "
      "(every h_{T-k}, k = 1..T, from one reverse pass) and contraction rate at lambda every P "
      "hyper-iterations of each K, plus the first and the last; computed after K's loop, at "
      "the saved lambdas, so that full RMD's memory stays out of K's peak; 0: never (default "
      "N/5)", .quick = "25", .meta = "P" },
    { "--no-plots", EX_SWITCH, &cfg.no_plots, .help = "do not run gnuplot" },
    { "--no-fork", EX_SWITCH, &cfg.no_fork, .help = "run every K in this process (for debuggers "
      "and sanitizers; peak RSS then only grows from one K to the next), on --threads threads; "
      "under mpirun with a transport that forbids fork (InfiniBand verbs, UCX), use it" },
    { "--threads", EX_INT, &cfg.threads, NULL, 1, EX_MAX_THREADS, "Ks run N at once, each in a "
      "child process of its own (with --no-fork: on N threads); their rows are written in K "
      "order, so the files do not depend on N (default: the cores, shared among the MPI ranks "
      "on one machine)", .meta = "N" },
    { "--gamma-check", EX_SWITCH, &cfg.gamma_check, .help = "print the inner loss along the T "
      "steps at weights sigma(lambda) = 1, U[0,1], 0.5 and 0.01, for 0.5, 1, 1.5, 2 and 3 times "
      "gamma, then exit" },
    { "--oracle", EX_SWITCH, &cfg.oracle, .help = "print the validation and test loss and "
      "accuracy after the T inner steps with the oracle weights (sigma = 1 where the label is "
      "intact, 0 where it was changed), a reference for what lambda can reach with this T and "
      "gamma, then exit" },
};

static int check_flags(void);
static ex_cmd cmd = {
    PROG, "[flags]",
    "Data hypercleaning (Shaban et al. 2019, Sec. 4.2.1 and App. G.1): a linear\n"
    "classifier W (10 x 785, bias as a constant feature) is trained by T steps of\n"
    "gradient descent on n training examples, half of them given a random label;\n"
    "each example has a weight sigma(lambda_i), and lambda is learned by Adam on\n"
    "K-RMD hypergradients of the validation loss, for every K asked for.\n",
    EX_FLAGS(flags),
    "Progress goes to stderr; the table to stdout and to DIR/hyperclean_table.md.\n"
    "BLAS runs on one thread (its sums change with its thread count); the Ks run\n"
    "on --threads workers, and under mpirun -n P each rank takes a block of them\n"
    "(rank 0 prints and writes the files).\n"
    "Exit status: 0 on success, 1 on a run-time failure (data, memory, NaN, files),\n"
    "2 on bad usage.\n",
    .check = check_flags,
};

/* The checks across flags, after parsing: 0 or an exit status. */
static int check_flags(void)
{
    config *c = &cfg;
    if (!strcmp(c->dataset, "fashion-mnist")) c->dataset = "fashion";
    if (!ex_given(&cmd, "--threads")) c->threads = ex_par_threads();
    if (c->exact_every < 0) /* about 50 evaluations */
        c->exact_every = c->hyper_iters >= 50 ? c->hyper_iters / 50 : 1;
    if (c->profile_every < 0) c->profile_every = c->hyper_iters >= 5 ? c->hyper_iters / 5 : 1;
    if (!ex_given(&cmd, "--K")) { /* the paper's depths, each capped at T, without repeats */
        const int paper_ks[] = { 1, 5, 25, 50, 100 };
        for (size_t k = 0; k < sizeof paper_ks / sizeof *paper_ks; k++) {
            int K = paper_ks[k] < c->T ? paper_ks[k] : c->T;
            if (c->nK == 0 || c->Ks[c->nK - 1] != K) c->Ks[c->nK++] = K;
        }
    }
    for (int k = 0; k < c->nK; k++)
        if (c->Ks[k] > c->T)
            return ex_usage_error("K = %d is larger than T = %d (K = T is already full RMD)",
                                  c->Ks[k], c->T);
    return 0;
}

/* ---- small helpers --------------------------------------------------------- */

static double norm2(const ad_value *v)
{
    double s = 0;
    for (size_t i = 0; i < v->size; i++) s += (double)v->data[i] * v->data[i];
    return sqrt(s);
}

/* ---- the cost model for the ETA ------------------------------------------ */

/* Relative cost of one K-RMD hyper-iteration, in gemms of the training size:
 * 2 per detached step, 4 per recorded step, 2 for the outer loss (its set
 * is usually as large). */
static double unit_cost(int K, int T)
{
    int k = K < T ? K : T;
    return 2.0 * (T - k) + 4.0 * k + 2;
}

/* Whether hyper-iteration tau is one of those done `every` (--exact-every,
 * --profile-every): the first, the last and the multiples; none for 0. */
static bool is_due(const config *c, int every, int tau)
{
    return every > 0 && (tau == 1 || tau == c->hyper_iters || tau % every == 0);
}

static int n_due(const config *c, int every)
{
    int n = 0;
    for (int tau = 1; tau <= c->hyper_iters; tau++) n += is_due(c, every, tau);
    return n;
}

/* Units of work left to the K of index ki after `done` of its
 * hyper-iterations, its exact hypergradients included. */
static double k_units(const config *c, int ki, int done)
{
    double u = (c->hyper_iters - done) * unit_cost(c->Ks[ki], c->T);
    return c->Ks[ki] < c->T ? u + n_due(c, c->exact_every) * unit_cost(c->T, c->T) : u;
}

/* Units of work of the Ks after index ki. */
static double units_after(const config *c, int ki)
{
    double u = 0;
    for (int k = ki + 1; k < c->nK; k++) u += k_units(c, k, 0);
    return u;
}

/* ---- one K (runs in a child process) --------------------------------------- */

/* What a child sends back. */
typedef struct k_result {
    int K;
    double eta0;
    double test_acc, val_acc, val_loss;
    hc_f1 f1[N_THRESH];
    double sec_median, sec_mean; /* seconds of hg_krmd per hyper-iteration */
    double iter_mean;            /* the same with evaluation and the Adam step */
    double loop_seconds, exact_seconds;
    size_t peak_tape;
    long peak_rss_kb, start_rss_kb;
} k_result;

/* What the Ks share while they run.  Each K writes its rows of
 * hyperclean.csv, hyperclean_exact.csv and hyperclean_profile_K<K>.csv into
 * files of its own (rows[ki][0..2], temporary and anonymous), copied into
 * those files in K order when every K is done. */
typedef struct run_ctx {
    const hc_data *dt;
    FILE *(*rows)[3];  /* [nK] */
    struct k_result *res; /* [nK]: where a thread puts its K's result (--no-fork) */
    int parallel;      /* Ks at once on this rank (for the ETA) */
} run_ctx;

static void f1_all(const ad_value *lam, const unsigned char *corrupted, hc_f1 *out)
{
    for (int j = 0; j < N_THRESH; j++)
        out[j] = hc_flag_f1(lam->data, corrupted, (int)lam->size, thresholds[j]);
}

/* ---- snapshots of λ ----------------------------------------------------------- */

/* λ (and the estimate h) at the hyper-iterations of one `every`, kept during
 * K's loop and used after it: the exact hypergradient and the truncation
 * profile both hold full RMD's tape, which must not count in K's peak RSS. */
typedef struct snaps {
    int n;
    int *tau;
    ad_real *lam, *h; /* n × n_train each; h NULL when not kept */
} snaps;

/* Room for every hyper-iteration is_due(c, every, ·) picks; false when out
 * of memory (snaps_free frees it either way). */
static bool snaps_init(snaps *s, const config *c, int every, size_t n_lam, bool with_h)
{
    size_t cap = (size_t)n_due(c, every) + 1; /* + 1: never malloc(0), which may be NULL */
    s->n = 0;
    s->tau = malloc(sizeof(int) * cap);
    s->lam = malloc(sizeof(ad_real) * n_lam * cap);
    s->h = with_h ? malloc(sizeof(ad_real) * n_lam * cap) : NULL;
    return s->tau && s->lam && (s->h || !with_h);
}

static void snaps_keep(snaps *s, int tau, const ad_value *lam, const ad_value *h)
{
    s->tau[s->n] = tau;
    memcpy(s->lam + (size_t)s->n * lam->size, lam->data, sizeof(ad_real) * lam->size);
    if (s->h) memcpy(s->h + (size_t)s->n * h->size, h->data, sizeof(ad_real) * h->size);
    s->n++;
}

static void snaps_free(snaps *s)
{
    free(s->tau);
    free(s->lam);
    free(s->h);
}

/* ---- the truncation profile ------------------------------------------------- */

/* (share at k = 1)·q^{k−1}, drawn beside the profile: NaN once it leaves the
 * profile's own range by more than a factor 10 (q > 1 would flatten the
 * plot). */
static double q_line(const double *share, int K, double q, int k)
{
    double lo = INFINITY, hi = 0, y = share[0] * pow(q, k - 1);
    for (int i = 0; i < K; i++)
        if (share[i] > 0) lo = fmin(lo, share[i]), hi = fmax(hi, share[i]);
    return y >= lo / 10 && y <= hi * 10 ? y : NAN;
}

/* The profiles at the kept λs into hyperclean_profile_K<K>.csv: per (τ, k)
 * the share's norm ‖B_tᵀ v_t‖ (t = T − k + 1), ‖v_t‖, ‖h_{T−k}‖, and per τ
 * q, α, L, the fitted rate of the shares and the K for a 1 % relative
 * error, repeated on its rows; q_line (q_line above); rel_error =
 * ‖h_{T−k} − dλf‖ / ‖dλf‖, the truncation error of depth k itself. */
static const char PROFILE_HEADER[] = "iter,k,contribution_norm,adjoint_norm,h_norm,q,alpha,L,"
                                    "fit_rate,K_1pct,q_line,rel_error";

static int profile_pass(ex_progress *pg, FILE *out, hc_problem *hc, int K, const snaps *ps)
{
    ex_table tab = { .header = PROFILE_HEADER,
                     .fmt = "%.0f %.0f %.9g %.9g %.9g %.9g %.9g %.9g %.9g %.0f %.9g %.9g",
                     .n_cols = 12 };
    int rc = AD_OK;
    for (int s = 0; s < ps->n && rc == AD_OK; s++) {
        memcpy(hc->lam->data, ps->lam + (size_t)s * hc->lam->size, sizeof(ad_real) * hc->lam->size);
        hg_profile pr;
        hg_curvature cv;
        hg_choice ch;
        rc = hg_truncation_profile(&hc->problem, hc->problem.T, &(hg_profile_opts){ .keep_all = true },
                                   &pr); /* every row: the 1 % choice sees the true errors */
        if (rc != AD_OK) break;
        rc = hg_curvature_estimate(&hc->problem, 30, &cv);
        if (rc == AD_OK) rc = hg_choose_k_from(&pr, &cv, 0.01, 0, &ch);
        for (int k = 1; k <= pr.K && rc == AD_OK; k++)
            rc = ex_table_push(&tab, (double[]){ ps->tau[s], k, pr.contrib_norm[k - 1],
                                                 pr.adjoint_norm[k - 1], pr.h_norm[k - 1], cv.q,
                                                 cv.alpha, cv.L, ch.rate, ch.K,
                                                 q_line(pr.contrib_norm, pr.K, cv.q, k),
                                                 hg_profile_rel_error(&pr, k) });
        if (rc == AD_OK)
            ex_progress_line(pg, s + 1 == ps->n, PROG ": K=%d  profile %d/%d (iter %d): "
                             "shares fall %.4f per step, q = %.4f (α %.3g, L %.3g); 1%% needs "
                             "K = %d (%s; profile %d, bound %d)", K, s + 1, ps->n, ps->tau[s],
                             ch.rate, cv.q, cv.alpha, cv.L, ch.K, ch.decided_by, ch.K_profile,
                             ch.K_bound);
        hg_profile_free(&pr);
    }
    if (ps->n > 0) ex_progress_end(pg);
    if (rc == AD_OK) ex_table_write(&tab, out);
    if (rc != AD_OK) ad_fail_wrap(rc, "K = %d, truncation profile", K);
    ex_table_free(&tab);
    return rc;
}

/* DIR/name: the header, then the rows text[0..n) that n Ks' runs wrote, in
 * that order. */
static int write_rows(ex_out *od, const char *name, const char *header, char *const *text,
                      const size_t *len, int n)
{
    ex_file f;
    int rc = ex_csv_open(&f, od, name, header);
    for (int k = 0; k < n && rc == AD_OK; k++)
        if (len[k] > 0) fwrite(text[k], 1, len[k], f.f);
    return rc == AD_OK ? ex_file_commit(&f) : rc;
}

/* Left: the profile at the last λ of each K's run, q^k beside it (dashed);
 * right: the largest K's profiles along its run. */
static int profile_plot(ex_out *od, const int *Ks, int nK)
{
    if (cfg.profile_every <= 0 || nK < 1) return AD_OK;
    ex_file g;
    int rc = ex_gp_open(&g, od, "hyperclean_profile.gp", 1300, 560);
    if (rc != AD_OK) return rc;
    FILE *f = g.f;
    int N = cfg.hyper_iters, Kl = Ks[nK - 1];
    fprintf(f, "set multiplot layout 1,2 title 'Truncation profile: the share ‖B_t^T v_t‖ of the "
               "k-th step back (t = T−k+1), T = %d'\n"
               "set xlabel 'k (steps back)'; set ylabel 'norm'\n"
               "set logscale y; set format y '10^{%%L}'\nset key outside bottom center horizontal\n"
               "set title 'at the last λ of each run (dashed: share at k = 1 times q^{k−1})'\nplot \\\n",
            cfg.T);
    for (int i = 0; i < nK; i++)
        fprintf(f, "  'hyperclean_profile_K%d.csv' skip 1 using 2:($1 == %d ? $3 : NaN) with lines "
                   "lw 2 lc %d title 'K = %d run', \\\n"
                   "  '' skip 1 using 2:($1 == %d ? $11 : NaN) with lines dt 2 lc %d notitle%s\n",
                Ks[i], N, i + 1, Ks[i], N, i + 1, i + 1 < nK ? ", \\" : "");
    fprintf(f, "set title 'along the K = %d run (by hyper-iteration)'\nplot \\\n", Kl);
    int n = n_due(&cfg, cfg.profile_every);
    for (int tau = 1, i = 0; tau <= N; tau++)
        if (is_due(&cfg, cfg.profile_every, tau))
            fprintf(f, "  'hyperclean_profile_K%d.csv' skip 1 using 2:($1 == %d ? $3 : NaN) with "
                       "lines lw 2 title 'τ = %d'%s\n", Kl, tau, tau, ++i < n ? ", \\" : "");
    fprintf(f, "unset multiplot\n");
    return ex_gp_commit(&g);
}

/* Runs the K-RMD sweep for the K of index ki and fills *res; writes its
 * rows of hyperclean.csv and hyperclean_exact.csv into ctx->rows[ki]. */
static int run_k(run_ctx *ctx, int ki, k_result *res)
{
    const config *c = &cfg;
    const hc_data *dt = ctx->dt;
    int K = c->Ks[ki];
    memset(res, 0, sizeof *res);
    res->K = K;
    res->start_rss_kb = ex_rss_now_kb();
    FILE *csv = ctx->rows[ki][0], *xcsv = ctx->rows[ki][1];
    ex_progress pg;
    ex_progress_init(&pg);
    hc_problem hc;
    int rc = hc_problem_init(&hc, dt->x_train, dt->y_train, dt->x_val, dt->y_val, dt->n_classes,
                             c->T, c->gamma, c->reg);
    int N = c->hyper_iters, n = dt->n_train;
    bool exact_free = K >= c->T; /* the estimate is the exact hypergradient */
    double *secs = malloc(sizeof(double) * (size_t)N);
    snaps ex, ps; /* for the exact hypergradients (none needed when exact_free), the profiles */
    bool ok_ex = snaps_init(&ex, c, exact_free ? 0 : c->exact_every, (size_t)n, true);
    bool ok_ps = snaps_init(&ps, c, c->profile_every, (size_t)n, false);
    if (!secs || !ok_ex || !ok_ps) rc = ad_fail(AD_ENOMEM, "out of memory");
    opt_outer o = { 0 }; /* opt_outer_free takes it zeroed too */
    ex_watch watch; /* a diverged run stops here, exit status 1 */
    ex_watch_init(&watch, "a step size too large? (--gamma: the inner one, --first-step: the "
                  "outer one)");
    double target = c->first_step_rms * sqrt((double)n), t_loop = ex_now(), iter_sum = 0;
    for (int tau = 1; tau <= N && rc == AD_OK; tau++) {
        double t_it = ex_now();
        ad_value *h = NULL;
        hg_report r;
        rc = hg_krmd(&hc.problem, K, &h, &r);
        if (rc == AD_OK) rc = ex_watch_inner(&watch, &r);
        if (rc == AD_OK) rc = ex_watch_val(&watch, tau, hc.val_loss);
        if (rc != AD_OK) {
            ad_fail_wrap(rc, "K = %d, hyper-iteration %d", K, tau);
            ad_value_free(h);
            break;
        }
        if (tau == 1) { /* η0 such that the first update has norm `target` */
            res->eta0 = opt_outer_eta0_for_norm(OPT_ADAM, 1, &h, target);
            rc = opt_outer_init(&o, OPT_ADAM, res->eta0, true, 1, &hc.lam);
        }
        double test_acc = NAN, hnorm = norm2(h);
        if (rc == AD_OK && dt->x_test)
            rc = ex_evaluate_linear(hc.w_hat, false, dt->x_test, dt->y_test, NULL, &test_acc);
        hc_f1 f[N_THRESH];
        f1_all(hc.lam, dt->corrupted, f);
        secs[tau - 1] = r.seconds;
        if (r.peak_tape_bytes > res->peak_tape) res->peak_tape = r.peak_tape_bytes;
        if (rc == AD_OK && is_due(c, c->exact_every, tau)) {
            if (exact_free)
                fprintf(xcsv, "%d,%d,%.9g,%.9g,1,0,%.4f\n", K, tau, hnorm, hnorm, r.seconds);
            else
                snaps_keep(&ex, tau, hc.lam, h);
        }
        if (rc == AD_OK && is_due(c, c->profile_every, tau)) snaps_keep(&ps, tau, hc.lam, NULL);
        if (rc == AD_OK) rc = opt_outer_step(&o, &h);
        if (rc != AD_OK) ad_fail_wrap(rc, "K = %d, hyper-iteration %d", K, tau);
        ad_value_free(h);
        double dt_it = ex_now() - t_it;
        iter_sum += dt_it;
        fprintf(csv, "%d,%d,%.9g,%.6f,%.6f,%.6f,%.6f,%.6f,%d,%.9g,%.6f,%.6f,%zu\n", K, tau,
                hc.val_loss, hc.val_acc, test_acc, f[0].f1, f[1].f1, f[2].f1,
                f[MAIN_THRESH].tp + f[MAIN_THRESH].fp, hnorm, r.seconds, dt_it,
                r.peak_tape_bytes);
        /* ETA: this K's measured rate, scaled to the rest by the cost model
         * (the Ks after this one, shared among the Ks running at once). */
        double rate = (ex_now() - t_loop) / (tau * unit_cost(K, c->T));
        char eta_k[16], eta_all[16];
        double left_k = k_units(c, ki, tau);
        ex_progress_line(&pg, tau == 1 || tau == N,
                         PROG ": K=%d  iter %d/%d  val loss %.4f  val acc %.4f  F1(<-3) %.3f  "
                         "%.2f s/it  ETA %s (this K), %s (all)",
                         K, tau, N, hc.val_loss, hc.val_acc, f[MAIN_THRESH].f1, dt_it,
                         ex_duration(left_k * rate, eta_k),
                         ex_duration((left_k + units_after(c, ki) / ctx->parallel) * rate, eta_all));
        fflush(csv);
    }
    res->loop_seconds = ex_now() - t_loop;
    if (rc == AD_OK) { /* the final λ, after N updates: Table 2's numbers */
        ad_value *w = NULL;
        rc = hg_inner_solve(&hc.problem, &w, NULL);
        if (rc == AD_OK)
            rc = ex_evaluate_linear(w, false, dt->x_val, dt->y_val, &res->val_loss, &res->val_acc);
        if (rc == AD_OK) rc = ex_watch_val(&watch, N + 1, res->val_loss);
        if (rc != AD_OK) ad_fail_wrap(rc, "K = %d, after the last update", K);
        res->test_acc = NAN;
        if (rc == AD_OK && dt->x_test)
            rc = ex_evaluate_linear(w, false, dt->x_test, dt->y_test, NULL, &res->test_acc);
        ad_value_free(w);
        f1_all(hc.lam, dt->corrupted, res->f1);
        res->sec_mean = 0;
        for (int i = 0; i < N; i++) res->sec_mean += secs[i] / N;
        res->iter_mean = iter_sum / N;
        res->sec_median = ex_median(secs, N);
        res->peak_rss_kb = ex_peak_rss_kb(); /* read before the exact pass */
    }
    ex_progress_end(&pg);
    /* Figure 5: exact hypergradients at the saved iterates. */
    double t_exact = ex_now();
    for (int s = 0; s < ex.n && rc == AD_OK; s++) {
        memcpy(hc.lam->data, ex.lam + (size_t)s * n, sizeof(ad_real) * (size_t)n);
        ad_value *d = NULL, *h = ad_tensor_from(1, &n, ex.h + (size_t)s * n);
        hg_report r;
        /* h NULL: ad_tensor_from's status, with its message ("out of memory allocating N
         * bytes") for the wrap below */
        rc = h ? hg_full_rmd(&hc.problem, &d, &r) : ad_error_code();
        if (rc == AD_OK) {
            hg_compare cm = hg_compare_grads(1, &h, &d);
            fprintf(xcsv, "%d,%d,%.9g,%.9g,%.9f,%.9g,%.4f\n", K, ex.tau[s], cm.norm_exact,
                    cm.norm_est, cm.cosine, cm.rel_error, r.seconds);
            fflush(xcsv);
            ex_progress_line(&pg, s + 1 == ex.n,
                             PROG ": K=%d  exact hypergradient %d/%d (iter %d): |d f| %.4g, "
                             "cos %.4f", K, s + 1, ex.n, ex.tau[s], cm.norm_exact, cm.cosine);
        } else {
            ad_fail_wrap(rc, "K = %d, exact hypergradient at hyper-iteration %d", K, ex.tau[s]);
        }
        ad_value_free(d);
        ad_value_free(h);
    }
    if (ex.n > 0) ex_progress_end(&pg);
    res->exact_seconds = ex_now() - t_exact;
    if (rc == AD_OK) rc = profile_pass(&pg, ctx->rows[ki][2], &hc, K, &ps);
    opt_outer_free(&o);
    hc_problem_free(&hc);
    free(secs);
    snaps_free(&ex);
    snaps_free(&ps);
    /* A write error (a full disk) is this K's error: the parent cannot see it. */
    for (int i = 0; i < 3 && rc == AD_OK; i++) {
        FILE *f = ctx->rows[ki][i];
        errno = 0;
        if (fflush(f) != 0 || ferror(f))
            rc = ad_fail(AD_EIO, "cannot write the rows of K = %d (a temporary file): %s", K,
                         strerror(errno ? errno : EIO));
    }
    return rc;
}

/* run_k as an ex_item_work (a child process per K) and an ex_item_fn (a
 * thread per K, --no-fork). */
static int k_work(void *arg, int ki, void *result)
{
    return run_k(arg, ki, result);
}

static int k_thread(void *arg, int worker, int ki)
{
    run_ctx *ctx = arg;
    (void)worker;
    return run_k(ctx, ki, &ctx->res[ki]);
}

/* The whole of a temporary file into *text (malloc'ed, NUL-terminated). */
static int read_rows(FILE *f, char **text, size_t *len)
{
    long n = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    *len = 0;
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0)
        return ad_fail(AD_EIO, "cannot read a temporary file back: %s", strerror(errno));
    if (!(*text = malloc((size_t)n + 1))) return ad_fail(AD_ENOMEM, "out of memory");
    if (fread(*text, 1, (size_t)n, f) != (size_t)n)
        return ad_fail(AD_EIO, "cannot read a temporary file back: %s", strerror(errno));
    (*text)[n] = '\0';
    *len = (size_t)n;
    return AD_OK;
}

/* Every K of this rank on the workers (the most costly first, so that the
 * last to finish is a small one), then every rank's results and rows to
 * every rank (rows: to rank 0), in K order. */
static int run_ks(const hc_data *dt, k_result *res, char *text[3][MAX_K], size_t len[3][MAX_K])
{
    int first, end, order[MAX_K], rc = AD_OK;
    ex_par_block(cfg.nK, &first, &end);
    int mine = end - first;
    FILE *rows[MAX_K][3] = { { NULL } };
    char labels[MAX_K][32];
    const char *label[MAX_K];
    for (int k = first; k < end && rc == AD_OK; k++) {
        snprintf(labels[k], sizeof labels[k], "K = %d", cfg.Ks[k]);
        label[k] = labels[k];
        for (int i = 0; i < 3 && rc == AD_OK; i++)
            if (!(rows[k][i] = tmpfile()))
                rc = ad_fail(AD_EIO, "cannot make a temporary file: %s", strerror(errno));
        int j = k - first; /* insertion into order, by cost, costliest first */
        while (j > 0 && k_units(&cfg, order[j - 1], 0) < k_units(&cfg, k, 0)) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = k;
    }
    run_ctx ctx = { .dt = dt, .rows = rows, .res = res,
                    .parallel = cfg.threads < mine ? cfg.threads : mine > 0 ? mine : 1 };
    if (rc == AD_OK)
        rc = cfg.no_fork ? ex_pool_run(cfg.threads, mine, order, k_thread, &ctx)
                         : ex_run_forked_many(cfg.threads, mine, order, label, k_work, &ctx, res,
                                              sizeof *res);
    for (int k = first; k < end && rc == AD_OK; k++)
        for (int i = 0; i < 3 && rc == AD_OK; i++) rc = read_rows(rows[k][i], &text[i][k], &len[i][k]);
    for (int k = first; k < end; k++)
        for (int i = 0; i < 3; i++)
            if (rows[k][i]) fclose(rows[k][i]);
    /* Every rank learns whether a K failed anywhere (a diverged one, say)
     * before the exchange, so none waits in it for a rank that stopped; the
     * run then fails on every rank with the message of the first failed K of
     * the lowest rank that had one. */
    rc = ex_par_agree(rc);
    if (rc == AD_OK) rc = ex_par_share(res, sizeof *res, cfg.nK);
    for (int i = 0; i < 3 && rc == AD_OK; i++) rc = ex_par_collect(text[i], len[i], cfg.nK);
    return rc;
}

/* ---- the table and the plots ----------------------------------------------- */

static void write_table(FILE *f, const config *c, const hc_data *dt, const char *dir,
                        const k_result *r, int n)
{
    fprintf(f, "Data hypercleaning on %s (%s): %d training examples (%d relabelled, %d "
               "corrupted), %d validation, %d test; T = %d, gamma = %g, reg = %g; %d "
               "hyper-iterations of Adam (eta0/sqrt(tau), first step norm %g*sqrt(n)); "
               "seed %llu.\n\n",
            c->dataset, dir, dt->n_train, dt->n_relabelled, dt->n_corrupted, dt->n_val,
            dt->n_test, c->T, c->gamma, c->reg, c->hyper_iters, c->first_step_rms,
            (unsigned long long)c->seed);
    fprintf(f, "| K | Test Acc. | Val. Acc. | Val. Error | F1 (λ<−3) | F1 λ<−4 | F1 λ<−1 | "
               "precision / recall (λ<−3) | s / hyper-iter | peak tape (MB) | peak RSS (MB) "
               "| η0 |\n");
    fprintf(f, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < n; i++) {
        const k_result *k = &r[i];
        fprintf(f, "| %d | %.2f | %.2f | %.3f | %.2f | %.2f | %.2f | %.2f / %.2f | %.3f | "
                   "%.1f | %.0f | %.4g |\n",
                k->K, 100 * k->test_acc, 100 * k->val_acc, k->val_loss, k->f1[1].f1,
                k->f1[0].f1, k->f1[2].f1, k->f1[1].precision, k->f1[1].recall, k->sec_median,
                k->peak_tape / 1e6, k->peak_rss_kb / 1024.0, k->eta0);
    }
    fprintf(f, "\nVal. Error is the validation cross-entropy (the outer loss f). Metrics are "
               "at λ after the last update. s / hyper-iter is the median time of one K-RMD "
               "hypergradient; peak RSS is the whole process's (it holds the data sets: %.0f MB "
               "at the start of the K).\n",
            n > 0 ? r[0].start_rss_kb / 1024.0 : 0);
    fprintf(f, "\nThe paper (MNIST, 1000 hyper-iterations; Table 2 and App. G.1's F1 at "
               "λ<−4 / −3 / −1):\n\n"
               "| K | Test Acc. | Val. Acc. | Val. Error | F1 | F1 −4/−3/−1 |\n"
               "|---:|---:|---:|---:|---:|---|\n"
               "| 1 | 87.50 | 89.32 | 0.413 | 0.85 | 0.84/0.84/0.84 |\n"
               "| 5 | 88.05 | 89.90 | 0.383 | 0.89 | 0.89/0.89/0.90 |\n"
               "| 25 | 88.12 | 89.94 | 0.382 | 0.89 | 0.89/0.89/0.89 |\n"
               "| 50 | 88.17 | 90.18 | 0.381 | 0.89 | 0.89/0.89/0.89 |\n"
               "| 100 | 88.33 | 90.24 | 0.380 | 0.88 | 0.89/0.89/0.89 |\n");
}

static int write_summary_csv(ex_out *od, const k_result *r, int n)
{
    ex_file f;
    int rc = ex_csv_open(&f, od, "hyperclean_summary.csv", "K,test_acc,val_acc,val_loss,"
                         "f1_lt_m4,f1_lt_m3,f1_lt_m1,precision_lt_m3,recall_lt_m3,median_s,mean_s,"
                         "mean_iter_s,loop_s,exact_s,peak_tape_bytes,peak_rss_kb,start_rss_kb,eta0");
    for (int i = 0; i < n && rc == AD_OK; i++)
        fprintf(f.f, "%d,%.6f,%.6f,%.9g,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.3f,%.3f,%zu,%ld,"
                     "%ld,%.9g\n",
                r[i].K, r[i].test_acc, r[i].val_acc, r[i].val_loss, r[i].f1[0].f1, r[i].f1[1].f1,
                r[i].f1[2].f1, r[i].f1[1].precision, r[i].f1[1].recall, r[i].sec_median,
                r[i].sec_mean, r[i].iter_mean, r[i].loop_seconds, r[i].exact_seconds,
                r[i].peak_tape, r[i].peak_rss_kb, r[i].start_rss_kb, r[i].eta0);
    return rc == AD_OK ? ex_file_commit(&f) : rc;
}

/* One gnuplot script: column `col` of `csv` against column 2, one line per
 * K, drawn into name.png. */
static int write_plot(ex_out *od, const char *name, const char *csv, int col, const char *title,
                      const char *ylabel, bool logy, const k_result *r, int n)
{
    char gp[64];
    snprintf(gp, sizeof gp, "%s.gp", name);
    ex_file g;
    int rc = ex_gp_open(&g, od, gp, 900, 600);
    if (rc != AD_OK) return rc;
    FILE *f = g.f;
    fprintf(f, "set title '%s'\nset xlabel 'hyper-iteration'\nset ylabel '%s'\n", title, ylabel);
    fprintf(f, "set key outside right\n");
    if (logy) fprintf(f, "set logscale y\nset format y '10^{%%L}'\n");
    if (!strcmp(ylabel, "F1")) fprintf(f, "set yrange [0:1]\n");
    if (!strcmp(name, "hyperclean_val_loss") && cfg.hyper_iters >= 20) {
        /* The first few updates fall from ~1.2 to ~0.6 and would flatten the
         * rest: frame the range after them, where the Ks differ. */
        fprintf(f, "stats '%s' skip 1 using ($2 >= 10 ? $%d : 1/0) nooutput\n"
                   "pad = (STATS_max - STATS_min) * 0.1 + 1e-4\n"
                   "set yrange [STATS_min - pad : STATS_max + pad]\n"
                   "set label 1 'y range fitted to hyper-iterations >= 10' at graph 0.98, graph 0.95 right\n",
                csv, col);
    }
    fprintf(f, "plot \\\n");
    for (int i = 0; i < n; i++)
        fprintf(f, "    '%s' skip 1 using 2:(($1 == %d) ? $%d : 1/0) with linespoints pt 7 ps "
                   "0.4 title 'K = %d'%s\n",
                csv, r[i].K, col, r[i].K, i + 1 < n ? ", \\" : "");
    return ex_gp_commit(&g);
}

/* The three plots. */
static int plots(ex_out *od, const k_result *r, int n)
{
    struct { const char *name, *csv, *title, *ylabel; int col; bool logy; } p[] = {
        { "hyperclean_fig5", "hyperclean_exact.csv",
          "Figure 5: exact hypergradient norm at the K-RMD iterates",
          "||d_{/Symbol l} f|| (full RMD)", 3, true },
        { "hyperclean_val_loss", "hyperclean.csv", "Validation loss (outer objective f)",
          "validation cross-entropy", 3, false },
        { "hyperclean_f1", "hyperclean.csv", "Flagging corrupted labels by {/Symbol l}_i < -3",
          "F1", 7, false },
    };
    int rc = AD_OK;
    for (size_t i = 0; i < sizeof p / sizeof *p && rc == AD_OK; i++)
        rc = write_plot(od, p[i].name, p[i].csv, p[i].col, p[i].title, p[i].ylabel, p[i].logy, r, n);
    return rc == AD_OK ? profile_plot(od, cfg.Ks, cfg.nK) : rc;
}

/* ---- --gamma-check -------------------------------------------------------- */

static int gamma_check(const config *c, const hc_data *dt)
{
    double lmax;
    hc_gamma_auto(dt->x_train, dt->n_classes, c->reg, &lmax);
    double L = 0.5 * lmax + 2 * c->reg, L0 = lmax / dt->n_classes + 2 * c->reg;
    printf("gamma check on %d training examples: lambda_max(X^T X / n) = %.4g\n", dt->n_train,
           lmax);
    printf("  smoothness of g for weights <= 1: L <= lambda_max/2 + 2 reg = %.4g "
           "(descent guaranteed for gamma < 2/L = %.4g)\n", L, 2 / L);
    printf("  curvature at W = 0 with all weights 1: L0 = lambda_max/C + 2 reg = %.4g "
           "(oscillation from 2/L0 = %.4g; the default gamma is 1/L0 = %.4g)\n", L0, 2 / L0,
           1 / L0);
    const double mult[] = { 0.5, 1, 1.5, 2, 3 };
    const char *names[] = { "sigma=1", "sigma=U[0,1]", "sigma=0.5", "sigma=0.01" };
    hc_problem hc;
    double *g = malloc(sizeof(double) * (size_t)(c->T + 1));
    if (!g) return ad_fail(AD_ENOMEM, "out of memory");
    int rc = AD_OK;
    printf("  %-8s %-13s %9s %9s %9s %9s  %s\n", "gamma", "weights", "g(W_0)", "g(W_10)",
           "g(W_T/2)", "g(W_T)", "decreasing at every step?");
    for (size_t m = 0; m < sizeof mult / sizeof *mult && rc == AD_OK; m++) {
        for (int w = 0; w < 4 && rc == AD_OK; w++) {
            double gamma = c->gamma * mult[m];
            rc = hc_problem_init(&hc, dt->x_train, dt->y_train, dt->x_val, dt->y_val,
                                 dt->n_classes, c->T, gamma, c->reg);
            ad_rng rng;
            ad_rng_seed(&rng, c->seed + 17);
            for (int i = 0; i < dt->n_train && rc == AD_OK; i++) {
                double s = w == 0 ? 1 - 1e-12 : w == 1 ? ad_rng_uniform(&rng) : w == 2 ? 0.5 : 0.01;
                if (s < 1e-9) s = 1e-9;
                hc.lam->data[i] = (ad_real)log(s / (1 - s));
            }
            if (rc == AD_OK) rc = hg_inner_solve(&hc.problem, NULL, g);
            if (rc == AD_OK) {
                int ups = 0;
                double worst = 0;
                for (int t = 1; t <= c->T; t++)
                    if (g[t] > g[t - 1]) {
                        ups++;
                        if (g[t] - g[t - 1] > worst) worst = g[t] - g[t - 1];
                    }
                printf("  %-8.4g %-13s %9.4f %9.4f %9.4f %9.4f  ", gamma, names[w], g[0],
                       g[c->T < 10 ? c->T : 10], g[c->T / 2], g[c->T]);
                if (ups) printf("no: %d increases, largest %.3g\n", ups, worst);
                else printf("yes\n");
            }
            hc_problem_free(&hc);
        }
    }
    free(g);
    return rc;
}

/* ---- --oracle ------------------------------------------------------------- */

/* A reference for what the outer problem can reach with this inner budget:
 * ŵ trained with σ = 1 on the examples whose label is intact and 0 on those
 * whose label was changed (λ = ±40: σ within 1e-17 of 1 and 0).  Not a
 * bound: other weights may do better on the validation set. */
static int oracle(const config *c, const hc_data *dt)
{
    hc_problem hc;
    int rc = hc_problem_init(&hc, dt->x_train, dt->y_train, dt->x_val, dt->y_val, dt->n_classes,
                             c->T, c->gamma, c->reg);
    for (int i = 0; i < dt->n_train && rc == AD_OK; i++)
        hc.lam->data[i] = dt->corrupted[i] ? -40 : 40;
    ad_value *w = NULL;
    double val_loss, val_acc, test_loss, test_acc;
    if (rc == AD_OK) rc = hg_inner_solve(&hc.problem, &w, NULL);
    if (rc == AD_OK) rc = ex_evaluate_linear(w, false, dt->x_val, dt->y_val, &val_loss, &val_acc);
    if (rc == AD_OK)
        rc = ex_evaluate_linear(w, false, dt->x_test, dt->y_test, &test_loss, &test_acc);
    if (rc == AD_OK)
        printf("oracle weights (1 on the %d examples with intact labels, 0 on the %d whose label "
               "was changed), T = %d, gamma = %.4g, reg = %g:\n  validation loss %.4f, accuracy "
               "%.2f %%; test loss %.4f, accuracy %.2f %%\n", dt->n_train - dt->n_corrupted,
               dt->n_corrupted, c->T, c->gamma, c->reg, val_loss, 100 * val_acc, test_loss,
               100 * test_acc);
    ad_value_free(w);
    hc_problem_free(&hc);
    return rc;
}

/* ---- main ----------------------------------------------------------------- */

/* The data, from --data or found; prints what was loaded. */
static int load(hc_data *dt, char *dir_out, size_t len)
{
    const char *dir = data_find_dir(cfg.data_dir, cfg.dataset);
    if (!dir && !strcmp(cfg.dataset, "mnist")) {
        char why[1024];
        snprintf(why, sizeof why, "%s", ad_error());
        return ad_fail(AD_EIO, "%s\n" PROG ": scripts/get-mnist.sh says where to get MNIST; or "
                       "run --dataset fashion (Debian's dataset-fashion-mnist)", why);
    }
    if (!dir) return AD_EIO;
    snprintf(dir_out, len, "%s", dir);
    printf("dataset: %s (%s)\n", cfg.dataset, dir_out);
    fflush(stdout);
    double t0 = ex_now();
    /* The test set: for the run and --oracle (which reports its loss), not --gamma-check. */
    int rc = hc_data_load(dt, dir_out, cfg.n_train, cfg.n_val, cfg.corrupt, cfg.seed,
                          !cfg.gamma_check || cfg.oracle);
    if (rc != AD_OK) return rc;
    fprintf(stderr, PROG ": loaded %d + %d + %d examples in %.1f s\n", dt->n_train, dt->n_val,
            dt->n_test, ex_now() - t0);
    if (cfg.gamma == 0) { /* the default: 1/L0 (hc_gamma_auto) */
        double lmax;
        cfg.gamma = hc_gamma_auto(dt->x_train, dt->n_classes, cfg.reg, &lmax);
        fprintf(stderr, PROG ": gamma = 1/(lambda_max(X^T X/n)/C + 2 reg) = 1/(%.4g/%d + %g) = "
                        "%.4g\n", lmax, dt->n_classes, 2 * cfg.reg, cfg.gamma);
    }
    return AD_OK;
}

/* Every K, its rows into the two CSV files, then the table and the plots. */
static int run(ex_out *od, const hc_data *dt, const char *dir)
{
    printf("%d training examples (%d relabelled, %d corrupted), %d validation, %d test, "
           "d = %d; T = %d, gamma = %g, reg = %g; %d hyper-iterations per K, K = ",
           dt->n_train, dt->n_relabelled, dt->n_corrupted, dt->n_val, dt->n_test, dt->d, cfg.T,
           cfg.gamma, cfg.reg, cfg.hyper_iters);
    for (int k = 0; k < cfg.nK; k++) printf("%d%s", cfg.Ks[k], k + 1 < cfg.nK ? "," : "\n");
    printf("outputs in %s\n", cfg.out_dir);
    fflush(stdout);
    k_result res[MAX_K];
    memset(res, 0, sizeof res);
    char *text[3][MAX_K] = { { NULL } };
    size_t len[3][MAX_K] = { { 0 } };
    double t_start = ex_now();
    int rc = run_ks(dt, res, text, len);
    for (int k = 0; k < cfg.nK && rc == AD_OK; k++)
        fprintf(stderr, PROG ": K=%d done: %.3f s per hypergradient (median), loop %.0f s, "
                        "exact pass %.0f s, peak tape %.1f MB, peak RSS %.0f MB\n",
                cfg.Ks[k], res[k].sec_median, res[k].loop_seconds, res[k].exact_seconds,
                res[k].peak_tape / 1e6, res[k].peak_rss_kb / 1024.0);
    if (rc == AD_OK)
        rc = write_rows(od, "hyperclean.csv", "K,iter,val_loss,val_acc,test_acc,f1_lt_m4,"
                        "f1_lt_m3,f1_lt_m1,flagged_lt_m3,hypergrad_norm,hg_seconds,iter_seconds,"
                        "peak_tape_bytes", text[0], len[0], cfg.nK);
    if (rc == AD_OK)
        rc = write_rows(od, "hyperclean_exact.csv", "K,iter,exact_norm,estimate_norm,cosine,"
                        "rel_error,seconds", text[1], len[1], cfg.nK);
    for (int k = 0; k < cfg.nK && rc == AD_OK; k++) { /* each K's profile, when it has one */
        char name[64];
        snprintf(name, sizeof name, "hyperclean_profile_K%d.csv", cfg.Ks[k]);
        if (len[2][k] > 0) rc = write_rows(od, name, PROFILE_HEADER, &text[2][k], &len[2][k], 1);
    }
    for (int k = 0; k < MAX_K; k++)
        for (int i = 0; i < 3; i++) free(text[i][k]);
    ex_file t;
    if (rc == AD_OK) {
        write_table(stdout, &cfg, dt, dir, res, cfg.nK);
        rc = ex_file_open(&t, od, "hyperclean_table.md");
    }
    if (rc == AD_OK) {
        write_table(t.f, &cfg, dt, dir, res, cfg.nK);
        rc = ex_file_commit(&t);
    }
    if (rc == AD_OK) rc = write_summary_csv(od, res, cfg.nK);
    if (rc == AD_OK) rc = plots(od, res, cfg.nK);
    if (rc == AD_OK)
        printf("\nwrote %s/hyperclean{.csv,_exact.csv,_summary.csv,_table.md}%s in %.0f s\n",
               cfg.out_dir, od->plots && !od->plots_failed ? " and hyperclean_{fig5,val_loss,f1}.png" : "",
               ex_now() - t_start);
    return rc;
}

int main(int argc, char **argv)
{
    int rc = ex_par_init(&argc, &argv);
    int st = rc ? ex_exit(rc) : ex_flags_parse(&cmd, argc, argv);
    if (st) return ex_par_end(st < 0 ? 0 : st);
    ex_out *od = malloc(sizeof *od);
    if (!od) return ex_par_end(ex_exit(ad_fail(AD_ENOMEM, "out of memory")));
    bool report_only = cfg.gamma_check || cfg.oracle; /* no run, no output folder */
    rc = report_only ? AD_OK : ex_out_open(od, cfg.out_dir, !cfg.no_plots);
    hc_data dt = { 0 };
    char dir[EX_PATH_LEN];
    if (rc == AD_OK) rc = load(&dt, dir, sizeof dir);
    if (rc == AD_OK && cfg.gamma_check) rc = gamma_check(&cfg, &dt);
    if (rc == AD_OK && cfg.oracle) rc = oracle(&cfg, &dt);
    if (rc == AD_OK && !report_only) rc = run(od, &dt, dir);
    hc_data_free(&dt);
    if (!report_only) ex_out_close(od);
    free(od);
    return ex_par_end(ex_exit(rc));
}
