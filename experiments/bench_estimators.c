/* bench_estimators.c — what each hypergradient estimator costs on the toy
 * problem (Sec. 4.1) at several T: seconds (median of repeats), peak tape
 * bytes and bytes kept outside the tape (checkpoints, tangents).  --help
 * says more. */
#include <stdio.h>

#include "experiments/kit/kit.h"
#include "experiments/toy_problem.h"

enum { MAX_T = 8, MAX_REPEATS = 1000 };

typedef int (*estimator)(const hg_problem *p, int K, ad_value **out, hg_report *r);

static int est_krmd(const hg_problem *p, int K, ad_value **o, hg_report *r) { return hg_krmd(p, K, o, r); }
static int est_full(const hg_problem *p, int K, ad_value **o, hg_report *r) { (void)K; return hg_full_rmd(p, o, r); }
static int est_ckpt(const hg_problem *p, int K, ad_value **o, hg_report *r) { (void)K; return hg_checkpoint(p, p->T, o, r); }
static int est_ckpt_k(const hg_problem *p, int K, ad_value **o, hg_report *r) { return hg_checkpoint(p, K, o, r); }
static int est_fmd(const hg_problem *p, int K, ad_value **o, hg_report *r) { (void)K; return hg_fmd(p, o, r); }
static int est_cg(const hg_problem *p, int K, ad_value **o, hg_report *r) { return hg_implicit_cg(p, K, 0, o, r); }
static int est_neumann(const hg_problem *p, int K, ad_value **o, hg_report *r) { return hg_neumann(p, K, o, r); }

static const struct { const char *name; estimator f; } estimators[] = {
    { "krmd(K)", est_krmd },           { "full_rmd", est_full },
    { "checkpoint(full)", est_ckpt },  { "checkpoint(K)", est_ckpt_k },
    { "fmd", est_fmd },                { "implicit_cg(K)", est_cg },
    { "neumann(K)", est_neumann },
};

static struct { int Ts[MAX_T], nT, K, repeats; } o;

static const ex_flag flags[] = {
    { "--T", EX_INTS, o.Ts, "100,400", 1, 1000000, "inner steps", .max_n = MAX_T, .n = &o.nT },
    { "--K", EX_INT, &o.K, "10", 1, 1000000, "the K of krmd(K) and checkpoint(K) (K >= T: full), "
      "the CG iterations and the Neumann terms" },
    { "--repeats", EX_INT, &o.repeats, "5", 1, MAX_REPEATS, "timed runs per row" },
};

static ex_cmd cmd = {
    "bench-estimators", "[--T LIST] [--K N] [--repeats N]",
    "What each hypergradient estimator costs on the toy problem (Sec. 4.1): for\n"
    "every T in the list and every estimator, the median seconds over the repeats,\n"
    "the peak tape bytes and the bytes kept outside the tape (checkpoints,\n"
    "tangents), one table row each on stdout.  The memory columns are exact, the\n"
    "seconds are as noisy as the machine.\n",
    EX_FLAGS(flags),
    "Exit status: 0 on success, 1 on a run-time failure, 2 on a bad flag or value.\n",
};

/* One row: the estimator e at T, timed over the repeats. */
static int row(int e, int T)
{
    toy ty;
    int rc = toy_init(&ty, 1, 1, T, 0.1, false);
    double secs[MAX_REPEATS];
    hg_report r = { 0 };
    for (int k = 0; k < o.repeats && rc == AD_OK; k++) {
        ad_value *out;
        rc = estimators[e].f(&ty.problem, o.K, &out, &r);
        if (rc != AD_OK) rc = ad_fail_wrap(rc, "%s", estimators[e].name);
        else ad_value_free(out);
        secs[k] = r.seconds;
    }
    if (rc == AD_OK)
        printf("%-18s %6d %12.6f %16zu %18zu\n", estimators[e].name, T,
               ex_median(secs, o.repeats), r.peak_tape_bytes, r.checkpoint_bytes);
    toy_free(&ty);
    return rc;
}

int main(int argc, char **argv)
{
    int st = ex_flags_parse(&cmd, argc, argv);
    if (st) return st < 0 ? 0 : st;
    printf("%-18s %6s %12s %16s %18s\n", "estimator", "T", "median_s", "peak_tape_bytes",
           "kept_bytes");
    int rc = AD_OK;
    for (int t = 0; t < o.nT && rc == AD_OK; t++)
        for (size_t e = 0; e < sizeof estimators / sizeof *estimators && rc == AD_OK; e++)
            rc = row((int)e, o.Ts[t]);
    return ex_exit(rc);
}
