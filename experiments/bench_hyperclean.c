/*
 * bench_hyperclean.c — what one hypercleaning hyper-iteration costs, per K.
 *
 *   bench-hyperclean [--K 1,5,25,50,100] [--repeats 5] [--csv] [--data DIR]
 *                    [--dataset mnist|fashion] [--n-train 5000] [--n-val 5000]
 *
 * For each K it times hg_krmd on the full-size problem (n = 5000 training and
 * 5000 validation examples, d = 785, C = 10, T = 100) several times and
 * reports the median, the floating-point operations of the gemm calls, the
 * time those same gemm calls take alone, and the tape's peak, in all and per
 * recorded step (peak / K).  hg_krmd records on a lean tape (ad.h: each
 * closed step keeps only what a backward rule will read, and the state);
 * --keep-values measures the tape that keeps everything instead
 * (hg_problem.keep_values), the same numbers with more memory.
 *
 * Counting the gemms: the library's gemm (ops/linalg.c) calls
 * cblas_dgemm; this program is linked with -Wl,--wrap=cblas_dgemm (and
 * sgemm), so every call lands first in __wrap_cblas_dgemm below, which
 * records its shape (transposes, m, n, k) and passes it on.  Nothing in the
 * library is changed.  Where the linker cannot wrap (HC_BENCH_WRAP unset),
 * the calls are predicted from the graph instead (expected_gemms), and the
 * output says "model".  When both exist they are compared and a mismatch is
 * reported.
 *
 * gemm-only time: the recorded calls of one hyper-iteration replayed with
 * cblas_dgemm on buffers of the same shapes, in the same rounds as the
 * hypergradients (rounds alternate K's and replays, so a slow patch of a
 * noisy machine hits both).
 *
 * Targets checked at the end: K=1 at least 2x faster than K=100; the tape
 * peak of K=1 at most 1/50 of K=100's; K=100 within 1.5x of its gemm-only
 * time.  The exit status is 0 whether or not they are met (a benchmark on a
 * shared machine should not fail a build).
 */
#define _XOPEN_SOURCE 700

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "experiments/kit/kit.h"
#include "experiments/data/mnist.h"
#include "experiments/hyperclean_problem.h"
#include "optim/hypergrad.h"

#define PROG "bench-hyperclean"
enum { MAX_K = 16, MAX_SHAPES = 32 };

/* ---- the gemm recorder -------------------------------------------------- */

/* One distinct gemm shape and how many times it was called. */
typedef struct gemm_shape {
    int ta, tb, m, n, k;
    long count;
} gemm_shape;

typedef struct gemm_log {
    gemm_shape s[MAX_SHAPES];
    int n;
    bool overflow;
} gemm_log;

static gemm_log *recording; /* where calls are logged, or NULL */

/* The index in g of the shape of s (its count aside), or −1. */
static int find_shape(const gemm_log *g, const gemm_shape *s)
{
    for (int i = 0; i < g->n; i++) {
        const gemm_shape *t = &g->s[i];
        if (t->ta == s->ta && t->tb == s->tb && t->m == s->m && t->n == s->n && t->k == s->k)
            return i;
    }
    return -1;
}

static void log_gemm(gemm_log *g, int ta, int tb, int m, int n, int k, long count)
{
    gemm_shape s = { ta, tb, m, n, k, count };
    int i = find_shape(g, &s);
    if (i >= 0) g->s[i].count += count;
    else if (g->n < MAX_SHAPES) g->s[g->n++] = s;
    else g->overflow = true;
}

static double log_flops(const gemm_log *g)
{
    double f = 0;
    for (int i = 0; i < g->n; i++)
        f += 2.0 * g->s[i].m * g->s[i].n * (double)g->s[i].k * (double)g->s[i].count;
    return f;
}

static long log_calls(const gemm_log *g)
{
    long c = 0;
    for (int i = 0; i < g->n; i++) c += g->s[i].count;
    return c;
}

#ifdef HC_BENCH_WRAP
/* The linker sends the library's calls here (-Wl,--wrap=...).  The library
 * calls the gemm of its real type only (ops/linalg.c, ops/conv.c), so one
 * wrapper, in ad_real, is enough. */
#if HT_REAL_IS_DOUBLE
#define WRAP_GEMM __wrap_cblas_dgemm
#define REAL_GEMM __real_cblas_dgemm
#else
#define WRAP_GEMM __wrap_cblas_sgemm
#define REAL_GEMM __real_cblas_sgemm
#endif
void REAL_GEMM(enum CBLAS_ORDER o, enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, blasint m,
               blasint n, blasint k, ad_real alpha, const ad_real *a, blasint lda,
               const ad_real *b, blasint ldb, ad_real beta, ad_real *c, blasint ldc);
void WRAP_GEMM(enum CBLAS_ORDER o, enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, blasint m,
               blasint n, blasint k, ad_real alpha, const ad_real *a, blasint lda,
               const ad_real *b, blasint ldb, ad_real beta, ad_real *c, blasint ldc);

void WRAP_GEMM(enum CBLAS_ORDER o, enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, blasint m,
               blasint n, blasint k, ad_real alpha, const ad_real *a, blasint lda,
               const ad_real *b, blasint ldb, ad_real beta, ad_real *c, blasint ldc)
{
    if (recording)
        log_gemm(recording, ta == CblasTrans, tb == CblasTrans, (int)m, (int)n, (int)k, 1);
    REAL_GEMM(o, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
#elif HT_REAL_IS_DOUBLE
#define REAL_GEMM cblas_dgemm
#else
#define REAL_GEMM cblas_sgemm
#endif

/* The gemms of one hg_krmd call as the graph predicts them (hyperclean_
 * problem.h: parameter Wᵀ [d,C]):
 *   every inner step:   Z = X·Wᵀ       (N,N) [n,d]·[d,C]
 *                       ∇ = Xᵀ·G       (T,N) [d,n]·[n,C]
 *   recorded steps, back-propagated:
 *                       Ḡ  = X·∇̄        (N,N)   — through ∇ = XᵀG (λ enters G)
 *                       W̄  = Xᵀ·Z̄       (T,N)   — through Z = XWᵀ, except in
 *                                                the first recorded step, whose
 *                                                W is not on the path to λ
 *   the outer loss:     X_val·Wᵀ and X_valᵀ·Z̄_val.
 * So 2(T−K) + 4K − 1 + 2 calls: 203 for K = 1, 401 for K = T = 100. */
static void expected_gemms(gemm_log *g, int n, int m, int d, int C, int T, int K)
{
    int k = K < T ? K : T;
    memset(g, 0, sizeof *g);
    log_gemm(g, 0, 0, n, C, d, T + k);
    log_gemm(g, 1, 0, d, C, n, T + k - 1);
    log_gemm(g, 0, 0, m, C, d, 1);
    log_gemm(g, 1, 0, d, C, m, 1);
}

static bool same_log(const gemm_log *a, const gemm_log *b)
{
    if (a->n != b->n) return false;
    for (int i = 0; i < a->n; i++) {
        int j = find_shape(b, &a->s[i]);
        if (j < 0 || b->s[j].count != a->s[i].count) return false;
    }
    return true;
}

/* One K's measurements. */
typedef struct k_row {
    int K;
    gemm_log gemms;
    bool counted; /* gemms recorded from the calls (else from the model) */
    bool model_agrees;
    double *secs, *gemm_secs;
    double median_s, gemm_only_s;
    size_t peak_tape;
} k_row;

/* ---- replaying the gemms alone ------------------------------------------ */

/* One set of buffers for every replayed call: the first operand is always
 * the big one (X or X_val, [n,d], transposed or not), and in the real run it
 * is the same X every time, so one shared buffer is the fair comparison. */
typedef struct replay {
    ad_real *a, *b, *c;
} replay;

static int replay_init(replay *r, const k_row *rows, int n_rows, ad_rng *rng)
{
    size_t na = 1, nb = 1, nc = 1;
    for (int l = 0; l < n_rows; l++)
        for (int i = 0; i < rows[l].gemms.n; i++) {
            const gemm_shape *s = &rows[l].gemms.s[i];
            size_t a = (size_t)s->m * s->k, b = (size_t)s->k * s->n, c = (size_t)s->m * s->n;
            na = a > na ? a : na;
            nb = b > nb ? b : nb;
            nc = c > nc ? c : nc;
        }
    r->a = malloc(na * sizeof(ad_real));
    r->b = malloc(nb * sizeof(ad_real));
    r->c = calloc(nc, sizeof(ad_real));
    if (!r->a || !r->b || !r->c) return ad_fail(AD_ENOMEM, "out of memory");
    for (size_t j = 0; j < na; j++) r->a[j] = (ad_real)ad_rng_uniform(rng);
    for (size_t j = 0; j < nb; j++) r->b[j] = (ad_real)(ad_rng_uniform(rng) - 0.5);
    return AD_OK;
}

static void replay_free(replay *r)
{
    free(r->a);
    free(r->b);
    free(r->c);
}

/* Runs every call of g once, alternating shapes as a hyper-iteration does;
 * returns the seconds. */
static double replay_run(const replay *r, const gemm_log *g)
{
    long left[MAX_SHAPES], total = 0;
    for (int i = 0; i < g->n; i++) total += left[i] = g->s[i].count;
    double t0 = ex_now();
    while (total > 0)
        for (int i = 0; i < g->n; i++) {
            if (left[i] == 0) continue;
            const gemm_shape *s = &g->s[i];
            /* Row-major, as ops/linalg.c calls it: lda, ldb are stored row lengths. */
            int lda = s->ta ? s->m : s->k, ldb = s->tb ? s->k : s->n;
            REAL_GEMM(CblasRowMajor, s->ta ? CblasTrans : CblasNoTrans,
                      s->tb ? CblasTrans : CblasNoTrans, s->m, s->n, s->k, 1, r->a, lda, r->b,
                      ldb, 0, r->c, s->n);
            left[i]--;
            total--;
        }
    return ex_now() - t0;
}

/* ---- flags -------------------------------------------------------------- */

typedef struct config {
    int Ks[MAX_K], nK, repeats, n_train, n_val, T;
    bool csv, keep_values;
    const char *dataset, *data_dir;
} config;

static config c;

static const ex_flag flags[] = {
    { "--K", EX_INTS, c.Ks, NULL, 1, 100000, "truncation depths (default 1,5,25,50,100; with "
      "--T below 100: those below T, and T)", .max_n = MAX_K, .n = &c.nK },
    { "--repeats", EX_INT, &c.repeats, "5", 1, 1000, "timed hyper-iterations per K" },
    { "--csv", EX_SWITCH, &c.csv, .help = "print only K,median_s,gflop,gemm_only_s,"
      "peak_tape_bytes on stdout (the line naming the data goes to stderr)" },
    { "--data", EX_TEXT, &c.data_dir, .help = "MNIST files (default: found as by the "
      "experiments; else Fashion-MNIST; else synthetic features of the same size)", .meta = "DIR" },
    { "--dataset", EX_CHOICE, &c.dataset, "mnist", .help = "mnist or fashion",
      .choices = "mnist|fashion|fashion-mnist" },
    { "--n-train", EX_INT, &c.n_train, "5000", 10, 60000, "training examples" },
    { "--n-val", EX_INT, &c.n_val, "5000", 10, 60000, "validation examples" },
    { "--T", EX_INT, &c.T, "100", 1, 100000, "inner steps" },
    { "--keep-values", EX_SWITCH, &c.keep_values, .help = "hg_krmd's tape keeps every value of "
      "a recorded step (hg_problem.keep_values) instead of only what a backward rule reads: the "
      "peak without lean mode, for comparison" },
};

static int check_flags(void);
static ex_cmd cmd = {
    PROG, "[--K 1,5,25,50,100] [--repeats N] [--csv] [--data DIR]\n"
    "                        [--dataset mnist|fashion] [--n-train N] [--n-val N] [--T N]\n"
    "                        [--keep-values]",
    "Times one data-hypercleaning hyper-iteration (hg_krmd, T = 100 inner steps,\n"
    "5000 + 5000 examples, d = 785) per K, over N repeats, and reports the median\n"
    "seconds, the GFLOP of its gemm calls (counted), the time those gemm calls take\n"
    "alone, and the tape's peak bytes (in all, and per recorded step).\n",
    EX_FLAGS(flags),
    "Exit status: 0 whether or not the targets are met, 1 on errors, 2 on bad usage.\n",
    .check = check_flags,
};

/* The checks across flags, after parsing: 0 or an exit status. */
static int check_flags(void)
{
    if (!strcmp(c.dataset, "fashion-mnist")) c.dataset = "fashion";
    if (!ex_given(&cmd, "--K")) { /* the default depths, each capped at T, without repeats */
        static const int ks[] = { 1, 5, 25, 50, 100 };
        for (int k = 0; k < 5; k++) {
            int K = ks[k] < c.T ? ks[k] : c.T;
            if (c.nK == 0 || c.Ks[c.nK - 1] != K) c.Ks[c.nK++] = K;
        }
    }
    for (int k = 0; k < c.nK; k++)
        if (c.Ks[k] > c.T) return ex_usage_error("K = %d is larger than T = %d", c.Ks[k], c.T);
    return 0;
}

/* ---- data --------------------------------------------------------------- */

/* Real data when some is found, else random features of the same shape
 * (the timing does not depend on the pixel values). */
static int load(const config *cf, hc_data *dt, char *what, size_t len)
{
    const char *dir = data_find_dir(cf->data_dir, cf->dataset);
    if (!dir && !cf->data_dir && !strcmp(cf->dataset, "mnist"))
        dir = data_find_dir(NULL, "fashion");
    if (dir) {
        snprintf(what, len, "%s", dir);
        return hc_data_load(dt, dir, cf->n_train, cf->n_val, 0.5, 1, false);
    }
    if (cf->data_dir) return AD_EIO; /* an explicit --data must exist */
    snprintf(what, len, "synthetic (no MNIST or Fashion-MNIST found)");
    memset(dt, 0, sizeof *dt);
    ad_rng rng;
    ad_rng_seed(&rng, 1);
    dt->n_train = cf->n_train;
    dt->n_val = cf->n_val;
    dt->d = 785;
    dt->n_classes = 10;
    dt->x_train = ad_tensor_rand(&rng, 2, (int[]){ cf->n_train, dt->d }, 0, 1);
    dt->x_val = ad_tensor_rand(&rng, 2, (int[]){ cf->n_val, dt->d }, 0, 1);
    dt->y_train = ad_tensor_new(1, &dt->n_train);
    dt->y_val = ad_tensor_new(1, &dt->n_val);
    if (!dt->x_train || !dt->x_val || !dt->y_train || !dt->y_val) {
        hc_data_free(dt);
        return ad_fail(AD_ENOMEM, "out of memory");
    }
    for (int i = 0; i < dt->n_train; i++) dt->y_train->data[i] = (ad_real)(i % 10);
    for (int i = 0; i < dt->n_val; i++) dt->y_val->data[i] = (ad_real)(i % 10);
    return AD_OK;
}

/* ---- main --------------------------------------------------------------- */

/* The medians of rows[0..c.nK), printed: the CSV (--csv), or the table, the
 * gemm shapes and the targets. */
static void report(k_row *rows)
{
    for (int k = 0; k < c.nK; k++) {
        rows[k].median_s = ex_median(rows[k].secs, c.repeats);
        rows[k].gemm_only_s = ex_median(rows[k].gemm_secs, c.repeats);
    }
    if (c.csv) {
        printf("K,median_s,gflop,gemm_only_s,peak_tape_bytes,peak_tape_bytes_per_step\n");
        for (int k = 0; k < c.nK; k++)
            printf("%d,%.6f,%.6f,%.6f,%zu,%.0f\n", rows[k].K, rows[k].median_s,
                   log_flops(&rows[k].gemms) / 1e9, rows[k].gemm_only_s, rows[k].peak_tape,
                   (double)rows[k].peak_tape / rows[k].K);
        return;
    }
    printf("\n%5s %10s %9s %8s %8s %12s %8s %14s %9s  %s\n", "K", "median s", "GFLOP",
           "gemms", "GFLOP/s", "gemm-only s", "ratio", "peak tape MB", "MB/step",
           "gemm count");
    for (int k = 0; k < c.nK; k++) {
        k_row *r = &rows[k];
        double fl = log_flops(&r->gemms) / 1e9;
        printf("%5d %10.3f %9.2f %8ld %8.1f %12.3f %8.2f %14.1f %9.3f  %s%s\n", r->K,
               r->median_s, fl, log_calls(&r->gemms), fl / r->median_s, r->gemm_only_s,
               r->median_s / r->gemm_only_s, r->peak_tape / 1e6,
               r->peak_tape / 1e6 / r->K,
               r->counted ? "counted" : "model",
               r->counted && !r->model_agrees ? " (DIFFERS from the graph model!)" : "");
    }
    int i1 = -1, i100 = -1;
    for (int k = 0; k < c.nK; k++) {
        if (rows[k].K == 1) i1 = k;
        if (rows[k].K == c.T) i100 = k;
    }
    printf("\n(gemm shapes of K = %d:", rows[c.nK - 1].K);
    for (int i = 0; i < rows[c.nK - 1].gemms.n; i++) {
        const gemm_shape *s = &rows[c.nK - 1].gemms.s[i];
        printf(" %ldx[%c%c %dx%dx%d]", s->count, s->ta ? 'T' : 'N', s->tb ? 'T' : 'N',
               s->m, s->n, s->k);
    }
    printf(")\n");
    if (i1 >= 0 && i100 >= 0) {
        double speed = rows[i100].median_s / rows[i1].median_s;
        double mem = (double)rows[i100].peak_tape / (double)rows[i1].peak_tape;
        double eff = rows[i100].median_s / rows[i100].gemm_only_s;
        printf("\ntargets:\n");
        printf("  K=1 at least 2x faster than K=%d:      %.2fx  %s\n", c.T, speed,
               speed >= 2 ? "met" : "NOT met");
        /* Every inner step needs its two gemms forward whatever K is, and a
         * step's backward costs two more: the ratio of gemm times is the
         * limit the speed-up approaches as everything else gets cheaper. */
        printf("    (the same ratio of gemm-only times: %.2fx; of gemm counts: "
               "%ld/%ld = %.2fx)\n", rows[i100].gemm_only_s / rows[i1].gemm_only_s,
               log_calls(&rows[i100].gemms), log_calls(&rows[i1].gemms),
               (double)log_calls(&rows[i100].gemms) / (double)log_calls(&rows[i1].gemms));
        printf("  K=1 tape peak at most 1/50 of K=%d's:  1/%.0f  %s\n", c.T, mem,
               mem >= 50 ? "met" : "NOT met");
        printf("  K=%d within 1.5x of its gemm-only time: %.2fx  %s\n", c.T, eff,
               eff <= 1.5 ? "met" : "NOT met");
    }
}

int main(int argc, char **argv)
{
    int st = ex_flags_parse(&cmd, argc, argv);
    if (st) return st < 0 ? 0 : st;
    hc_data dt;
    char what[EX_PATH_LEN + 64];
    int rc = load(&c, &dt, what, sizeof what);
    if (rc != AD_OK) return ex_exit(rc);
    double gamma = hc_gamma_auto(dt.x_train, dt.n_classes, HC_DEFAULT_REG, NULL);
    hc_problem hc;
    rc = hc_problem_init(&hc, dt.x_train, dt.y_train, dt.x_val, dt.y_val, dt.n_classes, c.T,
                             gamma, HC_DEFAULT_REG);
    hc.problem.keep_values = c.keep_values;
    /* A λ away from 0, as during a run (the cost does not depend on it). */
    ad_rng rng;
    ad_rng_seed(&rng, 2);
    for (size_t i = 0; rc == AD_OK && i < hc.lam->size; i++)
        hc.lam->data[i] = (ad_real)(4 * ad_rng_uniform(&rng) - 2);
    k_row rows[MAX_K];
    memset(rows, 0, sizeof rows);
    const char *threads = getenv("OPENBLAS_NUM_THREADS");
    /* What was timed, always said: on stderr when stdout is kept for the CSV. */
    FILE *about = c.csv ? stderr : stdout;
    fprintf(about, PROG ": data %s; n = %d, m = %d, d = %d, C = %d, T = %d, gamma = %.4g; "
            "%d repeats; %s tape; OPENBLAS_NUM_THREADS=%s",
            what, dt.n_train, dt.n_val, dt.d, dt.n_classes, c.T, gamma, c.repeats,
            c.keep_values ? "full (--keep-values)" : "lean", threads ? threads : "(unset)");
#ifdef OPENBLAS_VERSION
    fprintf(about, " (OpenBLAS uses %d)", openblas_get_num_threads());
#endif
    fprintf(about, "\n");
    fflush(about);
    /* Warm-up and count: one hypergradient per K with the recorder on. */
    for (int k = 0; k < c.nK && rc == AD_OK; k++) {
        k_row *r = &rows[k];
        r->K = c.Ks[k];
        r->secs = calloc((size_t)c.repeats, sizeof(double));
        r->gemm_secs = calloc((size_t)c.repeats, sizeof(double));
        if (!r->secs || !r->gemm_secs) rc = ad_fail(AD_ENOMEM, "out of memory");
        gemm_log model;
        expected_gemms(&model, dt.n_train, dt.n_val, dt.d, dt.n_classes, c.T, r->K);
        ad_value *h = NULL;
        recording = &r->gemms;
        if (rc == AD_OK) rc = hg_krmd(&hc.problem, r->K, &h, NULL);
        recording = NULL;
        ad_value_free(h);
#ifdef HC_BENCH_WRAP
        r->counted = !r->gemms.overflow;
#endif
        if (!r->counted) r->gemms = model;
        r->model_agrees = same_log(&r->gemms, &model);
    }
    replay rp = { 0 };
    if (rc == AD_OK) rc = replay_init(&rp, rows, c.nK, &rng);
    /* Rounds: every K once, then its gemms alone, in each round. */
    for (int rep = 0; rep < c.repeats && rc == AD_OK; rep++)
        for (int k = 0; k < c.nK && rc == AD_OK; k++) {
            k_row *r = &rows[k];
            ad_value *h = NULL;
            hg_report report;
            double t0 = ex_now();
            rc = hg_krmd(&hc.problem, r->K, &h, &report);
            r->secs[rep] = ex_now() - t0;
            ad_value_free(h);
            if (rc == AD_OK && report.peak_tape_bytes > r->peak_tape)
                r->peak_tape = report.peak_tape_bytes;
            r->gemm_secs[rep] = replay_run(&rp, &r->gemms);
            if (!c.csv) {
                fprintf(stderr, "\r" PROG ": round %d/%d, K=%d: %.3f s (gemms alone %.3f s)   ",
                        rep + 1, c.repeats, r->K, r->secs[rep], r->gemm_secs[rep]);
                fflush(stderr);
            }
        }
    if (!c.csv) fprintf(stderr, "\n");
    if (rc == AD_OK) report(rows);
    replay_free(&rp);
    for (int k = 0; k < c.nK; k++) {
        free(rows[k].secs);
        free(rows[k].gemm_secs);
    }
    hc_problem_free(&hc);
    hc_data_free(&dt);
    return ex_exit(rc);
}
