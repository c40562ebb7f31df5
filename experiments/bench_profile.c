/*
 * bench_profile.c — what the truncation profile costs beside one K-RMD, and
 * what hg_sweep costs now that it is one pass, on the hypercleaning problem
 * (Sec. 4.2.1: n = 5000 training and 5000 validation MNIST examples, d = 785,
 * C = 10, T = 100, γ = 1/L0 as hyperclean picks it).
 *
 *   bench-profile --what ab [--K 100] [--repeats 5]
 *       hg_krmd(K) and hg_truncation_profile(K) in turn, in one process:
 *       each one's median seconds and peak tape, and the median of the
 *       per-pair ratios profile / krmd.
 *   bench-profile --what krmd|profile [--K 100] [--repeats 1]
 *       only that one, repeats times (for timing whole processes A/B).
 *   bench-profile --what sweep|loop [--Ks 1,5,25,50,100]
 *       hg_sweep over the Ks (one profile over all T steps), or what
 *       hg_sweep did before: hg_full_rmd, then hg_krmd for each K.
 *   bench-profile --what curvature
 *       hg_curvature_estimate with 30 Lanczos steps (what hyperclean adds
 *       to each profile), and the α, L, q it finds.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "experiments/data/files.h"
#include "experiments/hyperclean_problem.h"
#include "experiments/kit/kit.h"
#include "optim/hypergrad.h"

#define PROG "bench-profile"
enum { MAX_K = 16, MAX_REPEATS = 100 };

static struct {
    const char *what, *data;
    int K, repeats, n_train, n_val, T, Ks[MAX_K], nK;
} o;

static const ex_flag flags[] = {
    { "--what", EX_CHOICE, &o.what, "ab", .help = "ab: krmd and profile in turn, and their "
      "ratio; krmd or profile alone; sweep: hg_sweep over --Ks; loop: full RMD, then krmd per K; "
      "curvature: hg_curvature_estimate", .choices = "ab|krmd|profile|sweep|loop|curvature" },
    { "--K", EX_INT, &o.K, "100", 1, 100000, "the depth of krmd and of the profile" },
    { "--Ks", EX_INTS, o.Ks, "1,5,25,50,100", 1, 100000, "the depths of a sweep", .max_n = MAX_K,
      .n = &o.nK },
    { "--repeats", EX_INT, &o.repeats, "5", 1, MAX_REPEATS, "timed runs (ab: pairs)" },
    { "--T", EX_INT, &o.T, "100", 1, 100000, "inner steps" },
    { "--n-train", EX_INT, &o.n_train, "5000", 10, 60000, "training examples" },
    { "--n-val", EX_INT, &o.n_val, "5000", 10, 60000, "validation examples" },
    { "--data", EX_TEXT, &o.data, .help = "MNIST's folder (default: $HYPERTAPE_DATA/mnist, then "
      "../shared/data/mnist)", .meta = "DIR" },
};

static ex_cmd cmd = {
    PROG, "[--what ab|krmd|profile|sweep|loop|curvature] [--K N] [--Ks LIST] [--repeats N]",
    "The truncation profile's cost beside one K-RMD, and hg_sweep's before and\n"
    "after it became one pass, on data hypercleaning (MNIST).  Seconds are the\n"
    "library's own (hg_report.seconds: the estimate, without loading the data).\n",
    EX_FLAGS(flags),
    "OPENBLAS_NUM_THREADS sets the BLAS threads.  Exit status: 0 on success, 1 on a\n"
    "run-time failure, 2 on bad usage.\n",
};

typedef struct timed {
    double seconds;
    size_t peak;
} timed;

static int run_krmd(hg_problem *p, int K, timed *t)
{
    ad_value *h;
    hg_report r;
    int rc = hg_krmd(p, K, &h, &r);
    if (rc == AD_OK) {
        *t = (timed){ r.seconds, r.peak_tape_bytes };
        ad_value_free(h);
    }
    return rc;
}

static int run_profile(hg_problem *p, int K, timed *t)
{
    hg_profile pr;
    int rc = hg_truncation_profile(p, K, NULL, &pr);
    if (rc == AD_OK) *t = (timed){ pr.report.seconds, pr.report.peak_tape_bytes };
    hg_profile_free(&pr);
    return rc;
}

static int run_sweep(hg_problem *p, timed *t)
{
    double t0 = ex_now();
    hg_sweep_result sw;
    int rc = hg_sweep(p, o.Ks, o.nK, &sw, NULL);
    if (rc == AD_OK) *t = (timed){ ex_now() - t0, sw.exact_report.peak_tape_bytes };
    hg_sweep_free(&sw);
    return rc;
}

static int run_curvature(hg_problem *p, timed *t)
{
    hg_curvature cv;
    int rc = hg_curvature_estimate(p, 30, &cv);
    if (rc == AD_OK) {
        *t = (timed){ cv.seconds, cv.peak_tape_bytes };
        fprintf(stderr, PROG ": α %.6g (residual %.2g), L %.6g (residual %.2g), q %.6g, %d steps\n",
                cv.alpha, cv.alpha_resid, cv.L, cv.L_resid, cv.q, cv.iters);
    }
    return rc;
}

/* hg_sweep as it was: the exact hypergradient, then one K-RMD per K. */
static int run_loop(hg_problem *p, timed *t)
{
    double t0 = ex_now();
    ad_value *h;
    hg_report r;
    int rc = hg_full_rmd(p, &h, &r);
    size_t peak = r.peak_tape_bytes;
    if (rc == AD_OK) ad_value_free(h);
    for (int i = 0; i < o.nK && rc == AD_OK; i++) {
        rc = hg_krmd(p, o.Ks[i], &h, &r);
        if (rc == AD_OK) ad_value_free(h);
        if (r.peak_tape_bytes > peak) peak = r.peak_tape_bytes;
    }
    *t = (timed){ ex_now() - t0, peak };
    return rc;
}

static int bench(hg_problem *p)
{
    double a[MAX_REPEATS], b[MAX_REPEATS], ratio[MAX_REPEATS];
    timed ta = { 0 }, tb = { 0 };
    int rc = AD_OK;
    bool ab = !strcmp(o.what, "ab");
    for (int i = 0; i < o.repeats && rc == AD_OK; i++) {
        if (ab) {
            rc = run_krmd(p, o.K, &ta);
            if (rc == AD_OK) rc = run_profile(p, o.K, &tb);
            a[i] = ta.seconds, b[i] = tb.seconds, ratio[i] = tb.seconds / ta.seconds;
            fprintf(stderr, PROG ": pair %d: krmd %.4f s, profile %.4f s\n", i + 1, a[i], b[i]);
            continue;
        }
        switch (o.what[0]) {
        case 'k': rc = run_krmd(p, o.K, &ta); break;
        case 'p': rc = run_profile(p, o.K, &ta); break;
        case 's': rc = run_sweep(p, &ta); break;
        case 'c': rc = run_curvature(p, &ta); break;
        default: rc = run_loop(p, &ta); break;
        }
        a[i] = ta.seconds;
    }
    if (rc != AD_OK) return rc;
    double lo = INFINITY, hi = -INFINITY;
    for (int i = 0; ab && i < o.repeats; i++) lo = fmin(lo, ratio[i]), hi = fmax(hi, ratio[i]);
    if (ab)
        printf("K = %d, %d pairs: krmd median %.4f s (peak tape %.1f MB), profile median %.4f s "
               "(peak tape %.1f MB), profile/krmd median of pairs %.3f (min %.3f, max %.3f)\n",
               o.K, o.repeats, ex_median(a, o.repeats), ta.peak / 1e6, ex_median(b, o.repeats),
               tb.peak / 1e6, ex_median(ratio, o.repeats), lo, hi);
    else
        printf("%s: median %.4f s over %d, peak tape %.1f MB\n", o.what, ex_median(a, o.repeats),
               o.repeats, ta.peak / 1e6);
    return AD_OK;
}

int main(int argc, char **argv)
{
    int st = ex_flags_parse(&cmd, argc, argv);
    if (st) return st < 0 ? 0 : st;
    const char *dir = data_find_dir(o.data, "mnist");
    if (!dir) return ex_exit(AD_EIO);
    hc_data dt;
    int rc = hc_data_load(&dt, dir, o.n_train, o.n_val, 0.5, 1, false);
    if (rc != AD_OK) return ex_exit(rc);
    hc_problem hc;
    double gamma = hc_gamma_auto(dt.x_train, dt.n_classes, HC_DEFAULT_REG, NULL);
    rc = hc_problem_init(&hc, dt.x_train, dt.y_train, dt.x_val, dt.y_val, dt.n_classes, o.T, gamma,
                         HC_DEFAULT_REG);
    if (rc == AD_OK) rc = bench(&hc.problem);
    hc_problem_free(&hc);
    hc_data_free(&dt);
    return ex_exit(rc);
}
