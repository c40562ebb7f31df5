/* bench_estimators.c — what each hypergradient estimator costs on the toy
 * problem (Sec. 4.1) at several T: seconds (median of repeats), peak tape
 * bytes and bytes kept outside the tape (checkpoints, tangents).
 *
 *   bench-estimators [--T 100,400] [--K 10] [--repeats 5]
 * Prints a table; the memory columns are exact, the seconds are as noisy as
 * the machine.  --help lists the flags.  Exit status: 0 on success, 1 on a
 * run-time failure, 2 on a bad flag or value. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "experiments/common.h"
#include "experiments/toy_problem.h"

#define PROG "bench-estimators"
enum { MAX_T = 8, MAX_T_VALUE = 1000000, MAX_K_VALUE = 1000000, MAX_REPEATS = 1000 };

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

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void usage(FILE *out)
{
    fprintf(out,
"usage: " PROG " [--T LIST] [--K N] [--repeats N]\n"
"\n"
"What each hypergradient estimator costs on the toy problem (Sec. 4.1): for\n"
"every T in the list and every estimator, the median seconds over the repeats,\n"
"the peak tape bytes and the bytes kept outside the tape (checkpoints,\n"
"tangents), one table row each on stdout.  The memory columns are exact, the\n"
"seconds are as noisy as the machine.\n"
"\n"
"  --T LIST       inner steps, comma-separated, different, at most %d, each\n"
"                 in 1..%d (default 100,400)\n"
"  --K N          the K of krmd(K) and checkpoint(K) (K >= T: full), the CG\n"
"                 iterations and the Neumann terms, 1..%d (default 10)\n"
"  --repeats N    timed runs per row, 1..%d (default 5)\n"
"  -h, --help     this text\n"
"Values may follow a flag after '=' or as the next argument.\n"
"Exit status: 0 on success, 1 on a run-time failure, 2 on a bad flag or value.\n",
            MAX_T, MAX_T_VALUE, MAX_K_VALUE, MAX_REPEATS);
}

/* Returns 0 to go on, -1 after --help, or an exit status. */
static int parse_args(int argc, char **argv, int *Ts, int *nT, int *K, int *repeats)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return -1;
        }
        static const char *const known[] = { "--T", "--K", "--repeats" };
        char name[EX_FLAG_NAME_LEN];
        const char *val;
        if (ex_flag_value(argc, argv, &i, known, sizeof known / sizeof *known, name, &val) != AD_OK)
            return ex_usage_error_old(PROG, "%s", ad_error());
        if (!strcmp(name, "--T")) {
            if ((*nT = ex_parse_int_list(val, 1, MAX_T_VALUE, Ts, MAX_T)) < 1)
                return ex_usage_error_old(PROG, "--T: expected up to %d whole numbers in 1..%d "
                                            "separated by commas, got '%s'",
                                      MAX_T, MAX_T_VALUE, val);
            for (int t = 0; t < *nT; t++)
                for (int u = 0; u < t; u++)
                    if (Ts[u] == Ts[t])
                        return ex_usage_error_old(PROG, "--T: %d is given twice", Ts[t]);
        } else if (!strcmp(name, "--K")) {
            if (!ex_parse_int(val, 1, MAX_K_VALUE, K))
                return ex_usage_error_old(PROG, "--K: expected a whole number in 1..%d, got '%s'",
                                      MAX_K_VALUE, val);
        } else if (!ex_parse_int(val, 1, MAX_REPEATS, repeats)) { /* --repeats */
            return ex_usage_error_old(PROG, "--repeats: expected a whole number in 1..%d, got '%s'",
                                  MAX_REPEATS, val);
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    int Ts[MAX_T] = { 100, 400 }, nT = 2, K = 10, repeats = 5;
    int rc = parse_args(argc, argv, Ts, &nT, &K, &repeats);
    if (rc < 0) return 0;
    if (rc) return rc;
    printf("%-18s %6s %12s %16s %18s\n", "estimator", "T", "median_s", "peak_tape_bytes",
           "kept_bytes");
    for (int t = 0; t < nT; t++)
        for (size_t e = 0; e < sizeof estimators / sizeof *estimators; e++) {
            toy ty;
            if (toy_init(&ty, 1, 1, Ts[t], 0.1, false) != AD_OK) {
                fprintf(stderr, PROG ": %s\n", ad_error());
                return EX_EXIT_LIB;
            }
            double secs[MAX_REPEATS];
            hg_report r = { 0 };
            for (int k = 0; k < repeats; k++) {
                ad_value *out;
                if (estimators[e].f(&ty.problem, K, &out, &r) != AD_OK) {
                    fprintf(stderr, PROG ": %s: %s\n", estimators[e].name, ad_error());
                    toy_free(&ty);
                    return EX_EXIT_LIB;
                }
                ad_value_free(out);
                secs[k] = r.seconds;
            }
            qsort(secs, (size_t)repeats, sizeof *secs, cmp_double);
            printf("%-18s %6d %12.6f %16zu %18zu\n", estimators[e].name, Ts[t], secs[repeats / 2],
                   r.peak_tape_bytes, r.checkpoint_bytes);
            toy_free(&ty);
        }
    return 0;
}
