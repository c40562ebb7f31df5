/* bench_estimators.c — what each hypergradient estimator costs on the toy
 * problem (Sec. 4.1) at several T: seconds (median of repeats), peak tape
 * bytes and bytes kept outside the tape (checkpoints, tangents).
 *
 *   bench-estimators [--T 100,400] [--K 10] [--repeats 5]
 * Prints a table; the memory columns are exact, the seconds are as noisy as
 * the machine. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "experiments/toy_problem.h"

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

static int parse_list(const char *s, int *out, int max)
{
    int n = 0;
    char *end;
    while (*s && n < max) {
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > 1000000) return -1;
        out[n++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return n;
}

int main(int argc, char **argv)
{
    int Ts[8] = { 100, 400 }, nT = 2, K = 10, repeats = 5;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--T") && v) nT = parse_list(argv[++i], Ts, 8);
        else if (!strcmp(a, "--K") && v) K = atoi(argv[++i]);
        else if (!strcmp(a, "--repeats") && v) repeats = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench-estimators [--T 100,400] [--K 10] [--repeats 5]\n");
            return strcmp(a, "--help") ? 2 : 0;
        }
    }
    if (nT < 1 || K < 1 || repeats < 1 || repeats > 1000) {
        fprintf(stderr, "bench-estimators: bad --T, --K or --repeats\n");
        return 2;
    }
    printf("%-18s %6s %12s %16s %18s\n", "estimator", "T", "median_s", "peak_tape_bytes",
           "kept_bytes");
    for (int t = 0; t < nT; t++)
        for (size_t e = 0; e < sizeof estimators / sizeof *estimators; e++) {
            toy ty;
            if (toy_init(&ty, 1, 1, Ts[t], 0.1, false) != AD_OK) {
                fprintf(stderr, "bench-estimators: %s\n", ad_error());
                return 1;
            }
            double secs[1000];
            hg_report r = { 0 };
            for (int k = 0; k < repeats; k++) {
                ad_value *out;
                if (estimators[e].f(&ty.problem, K, &out, &r) != AD_OK) {
                    fprintf(stderr, "bench-estimators: %s: %s\n", estimators[e].name, ad_error());
                    toy_free(&ty);
                    return 1;
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
