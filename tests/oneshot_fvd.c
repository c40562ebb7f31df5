/* oneshot_fvd.c — the float build's one-shot hypergradients against the
 * double build's ("float vs double").
 *
 * The real type is a compile-time choice, so no single program can hold both.
 * This one is built in every build and computes the same small
 * hypergradients: the one-shot problem (experiments/oneshot_problem.h) at
 * 8 channels with oneshot's defaults (ρ0 = 0.1, γ0 = 0.03), T = 5 inner
 * steps, K = 2, for FVD_TASKS tasks of 28×28 synthetic Omniglot-like images
 * (5-way 1-shot, 15 queries per class).  Every input — λ0 and the images — is
 * rounded to a float, so both builds start from exactly the same numbers and
 * any difference is the float build's arithmetic.  The inner loop of this
 * network is badly conditioned (batch-norm over 5 support images), so
 * rounding grows by orders of magnitude on the way: with ad_sum_to summing in
 * float, the largest error below was 8.4e-3 on these tasks (2.4e-2 on the
 * Omniglot ones); with every reduction and the sweep's sums of gradient
 * contributions in double, 2.89e-5 at 1 OpenBLAS thread and 2.94e-5 at 2
 * (1.03e-5 and 1.04e-5 on Omniglot; 2026-12-02), the rest mostly float gemm
 * (measured earlier with a temporary double gemm: 1.2e-6 on the same
 * tensor).  T and K are small here, so the sweep's double sums moved these
 * little (from 2.91e-5/2.95e-5 and 1.05e-5): they matter for long sums
 * (tests/test_hypergrad.c, long_sums_of_shares_round_once).
 *
 *   oneshot-fvd --print             the hypergradients, one entry per line
 *                                   (%.17g), after a header naming the setup
 *   oneshot-fvd --compare FILE      computes them here and compares them with
 *                                   FILE (the double build's --print)
 *   oneshot-fvd --compare-env       the same with FILE = $HYPERTAPE_DOUBLE_REF;
 *                                   when that is unset: exit 77 (skipped), or
 *                                   1 when CI is set (and not "false" or "0")
 *   oneshot-fvd --omniglot DIR ...  the same on FVD_TASKS real Omniglot tasks
 *                                   (drawn from all 1623 characters of DIR's
 *                                   two zips), for measurements by hand
 *
 * The error is measured per task and per λ tensor: ‖g − g_ref‖₂ divided by
 * ‖g_ref‖₂, or by 1e-3 of the task's whole ‖G_ref‖₂ when the tensor is
 * smaller than that.  The floor is there because a tensor whose entries
 * cancel to near zero (a scalar ν, say, at 1e-7 of the whole) cannot be
 * resolved relative to itself in float, however carefully it is summed.
 * Tensors whose gradient is zero in exact arithmetic (a conv bias followed
 * by batch-norm; the double build gives them about 1e-13 of the whole, so
 * below 1e-9 counts as zero) carry pure rounding noise and are measured
 * against the whole instead.  --compare passes (exit 0) when every tensor
 * of every task was compared, the reference holds nothing more, and the
 * largest error is at most 1e-4, printing it with where it came from;
 * otherwise it exits 1.
 *
 * scripts/test.sh runs build/double's --print into a file and hands that file
 * to build/float's tests through HYPERTAPE_DOUBLE_REF. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "experiments/data/omniglot.h"
#include "experiments/oneshot_problem.h"

enum {
    FVD_CHANNELS = 8, FVD_SIDE = 28, FVD_WAY = 5, FVD_QUERY = 15, FVD_T = 5, FVD_K = 2,
    FVD_NS = FVD_WAY, FVD_NQ = FVD_WAY * FVD_QUERY,
    FVD_TASKS = 8,
    FVD_STROKES = 4, FVD_STROKE_LEN = 15 /* about Omniglot's 12 % of pixels inked */
};
#define FVD_SEED 14u       /* λ0 */
#define FVD_TASK_SEED 100u /* task k: FVD_TASK_SEED + k */
#define FVD_TOL 1e-4
#define FVD_FLOOR 1e-3 /* a tensor below this fraction of the whole: measured against it */
#define FVD_ZERO 1e-9  /* a tensor below this fraction of the whole: exactly 0 */
/* The header --print writes and --compare expects: the setup, so a file from
 * another version of this program is refused rather than misread. */
#define FVD_HEADER "oneshot-fvd 2: channels 8, 28x28, 5-way 1-shot 15 queries, T 5, K 2, " \
                   "lambda0 seed 14, 8 tasks from seed 100"
#define FVD_HEADER_OMNIGLOT FVD_HEADER ", Omniglot"

/* x rounded to the nearest float: exact in both builds. */
static ad_real on_float_grid(double x) { return (ad_real)(float)x; }

/* ---- synthetic Omniglot ----------------------------------------------------- */

/* A character: FVD_STROKES strokes, each a start point, a direction and the
 * seed of its turns.  Drawings of it retrace those walks. */
typedef struct fvd_char {
    int r[FVD_STROKES], c[FVD_STROKES], d[FVD_STROKES];
    uint64_t turns[FVD_STROKES];
} fvd_char;

static void fvd_char_make(ad_rng *rng, fvd_char *ch)
{
    for (int s = 0; s < FVD_STROKES; s++) {
        ch->r[s] = 6 + (int)ad_rng_below(rng, FVD_SIDE - 12);
        ch->c[s] = 6 + (int)ad_rng_below(rng, FVD_SIDE - 12);
        ch->d[s] = (int)ad_rng_below(rng, 8);
        ch->turns[s] = ad_rng_next(rng);
    }
}

/* One drawing of ch into the blank image im [28,28]: ink in [0,1] as
 * data_omniglot makes it.  The strokes start shifted by up to 2 pixels, turn
 * where the character turns and now and then elsewhere (the drawer's hand);
 * each pixel gets ink 0.5–1 and its right and lower neighbours 0.1–0.4 (the
 * anti-aliased edge that downsampling leaves). */
static void fvd_draw(ad_rng *rng, const fvd_char *ch, ad_real *im)
{
    const int S = FVD_SIDE;
    const int dr[8] = { -1, -1, 0, 1, 1, 1, 0, -1 }, dc[8] = { 0, 1, 1, 1, 0, -1, -1, -1 };
    int sr = (int)ad_rng_below(rng, 5) - 2, sc = (int)ad_rng_below(rng, 5) - 2;
    for (int s = 0; s < FVD_STROKES; s++) {
        ad_rng turns;
        ad_rng_seed(&turns, ch->turns[s]);
        int r = ch->r[s] + sr, c = ch->c[s] + sc, d = ch->d[s];
        for (int k = 0; k < FVD_STROKE_LEN; k++) {
            if (r >= 0 && r < S && c >= 0 && c < S) {
                im[r * S + c] = on_float_grid(0.5 + 0.5 * ad_rng_uniform(rng));
                if (c + 1 < S && im[r * S + c + 1] == 0)
                    im[r * S + c + 1] = on_float_grid(0.1 + 0.3 * ad_rng_uniform(rng));
                if (r + 1 < S && im[(r + 1) * S + c] == 0)
                    im[(r + 1) * S + c] = on_float_grid(0.1 + 0.3 * ad_rng_uniform(rng));
            }
            if (ad_rng_below(&turns, 4) == 0) d = (d + 7 + (int)ad_rng_below(&turns, 3)) % 8;
            if (ad_rng_below(rng, 8) == 0) d = (d + 7 + (int)ad_rng_below(rng, 3)) % 8;
            r += dr[d], c += dc[d];
        }
    }
}

/* Task k: 5 characters; support image c and query image i are drawings of
 * characters c and i mod 5, labelled so. */
static void fvd_synthetic_task(int k, ad_real *xs, int *ys, ad_real *xq, int *yq)
{
    ad_rng rng;
    ad_rng_seed(&rng, FVD_TASK_SEED + (uint64_t)k);
    fvd_char chars[FVD_WAY];
    for (int c = 0; c < FVD_WAY; c++) fvd_char_make(&rng, &chars[c]);
    const size_t px = FVD_SIDE * FVD_SIDE;
    memset(xs, 0, sizeof *xs * FVD_NS * px);
    memset(xq, 0, sizeof *xq * FVD_NQ * px);
    for (int i = 0; i < FVD_NS; i++) {
        ys[i] = i;
        fvd_draw(&rng, &chars[ys[i]], xs + i * px);
    }
    for (int i = 0; i < FVD_NQ; i++) {
        yq[i] = i % FVD_WAY;
        fvd_draw(&rng, &chars[yq[i]], xq + i * px);
    }
}

/* ---- where the tasks come from ------------------------------------------------ */

typedef struct fvd_source {
    bool omniglot; /* else synthetic */
    data_omniglot om;
    int *pool;     /* [om.n_chars] every character */
    ad_rng rng;    /* draws the Omniglot tasks, one after the other */
    data_task task;
} fvd_source;

static int fvd_source_open(fvd_source *src, const char *omniglot_dir)
{
    memset(src, 0, sizeof *src);
    if (!omniglot_dir) return AD_OK;
    src->omniglot = true;
    ad_rng_seed(&src->rng, FVD_TASK_SEED);
    int rc = data_omniglot_load(omniglot_dir, FVD_SIDE, &src->om);
    if (rc == AD_OK) rc = data_task_init(&src->task, FVD_WAY, 1, FVD_QUERY, FVD_SIDE);
    if (rc == AD_OK && !(src->pool = malloc(sizeof *src->pool * (size_t)src->om.n_chars)))
        rc = ad_fail(AD_ENOMEM, "out of memory");
    for (int i = 0; rc == AD_OK && i < src->om.n_chars; i++) src->pool[i] = i;
    return rc;
}

static void fvd_source_close(fvd_source *src)
{
    free(src->pool);
    data_task_free(&src->task);
    data_omniglot_free(&src->om);
}

/* The next task (the k-th) into xs, ys, xq, yq. */
static int fvd_source_task(fvd_source *src, int k, ad_real *xs, int *ys, ad_real *xq, int *yq)
{
    if (!src->omniglot) {
        fvd_synthetic_task(k, xs, ys, xq, yq);
        return AD_OK;
    }
    data_task *t = &src->task;
    int rc = data_omniglot_sample_task(&src->om, src->pool, src->om.n_chars, &src->rng, t);
    if (rc != AD_OK) return rc;
    for (int i = 0; i < FVD_NS * FVD_SIDE * FVD_SIDE; i++) xs[i] = on_float_grid(t->x_train[i]);
    for (int i = 0; i < FVD_NQ * FVD_SIDE * FVD_SIDE; i++) xq[i] = on_float_grid(t->x_val[i]);
    memcpy(ys, t->y_train, sizeof *ys * FVD_NS);
    memcpy(yq, t->y_val, sizeof *yq * FVD_NQ);
    return AD_OK;
}

/* ---- the hypergradients ------------------------------------------------------- */

/* λ0 into hy (the caller frees it with os_hyper_free, also on failure). */
static int fvd_hyper(os_hyper *hy)
{
    ad_rng rng;
    ad_rng_seed(&rng, FVD_SEED);
    int rc = os_hyper_init(hy, mdl_cnn_omniglot(FVD_CHANNELS), &rng, 0.1, 0.03);
    for (int i = 0; i < hy->n_list && rc == AD_OK; i++)
        for (size_t k = 0; k < hy->list[i]->size; k++)
            hy->list[i]->data[k] = on_float_grid(hy->list[i]->data[k]);
    return rc;
}

/* Task k's K-RMD hypergradient at λ0 into g[0..hy->n_list) (caller-owned). */
static int fvd_hypergrad(const os_hyper *hy, fvd_source *src, int k, ad_value **g)
{
    static ad_real xs[FVD_NS * FVD_SIDE * FVD_SIDE], xq[FVD_NQ * FVD_SIDE * FVD_SIDE];
    int ys[FVD_NS], yq[FVD_NQ];
    int rc = fvd_source_task(src, k, xs, ys, xq, yq);
    if (rc != AD_OK) return rc;
    os_task tk;
    rc = os_task_init(&tk, hy, FVD_NS, FVD_NQ, FVD_T, true);
    if (rc != AD_OK) return rc;
    rc = os_task_load(&tk, xs, ys, xq, yq, true);
    if (rc == AD_OK) rc = os_task_hypergrad(&tk, FVD_K, g, NULL);
    os_task_free(&tk);
    return rc;
}

/* ---- --print and --compare ----------------------------------------------------- */

static void fvd_print(int k, int n, ad_value *const *g)
{
    for (int i = 0; i < n; i++) {
        printf("task %d tensor %d size %zu\n", k, i, g[i]->size);
        for (size_t j = 0; j < g[i]->size; j++) printf("%.17g\n", (double)g[i]->data[j]);
    }
}

/* Reads task k's part of the reference fp into ref[i] (g[i]->size doubles
 * each, malloc'd; the caller frees them).  false (message on stderr) if the
 * file does not fit this build's shapes. */
static bool fvd_read(FILE *fp, const char *path, int k, int n, ad_value *const *g, double **ref)
{
    bool ok = true;
    for (int i = 0; ok && i < n; i++) {
        int tk = -1, idx = -1;
        size_t size = 0;
        ok = fscanf(fp, "task %d tensor %d size %zu\n", &tk, &idx, &size) == 3 && tk == k &&
             idx == i && size == g[i]->size && (ref[i] = malloc(size * sizeof **ref));
        for (size_t j = 0; ok && j < size; j++) ok = fscanf(fp, "%lf\n", &ref[i][j]) == 1;
    }
    if (!ok)
        fprintf(stderr, "oneshot-fvd: %s: task %d does not fit this setup (%d tensors per task, "
                        "one line per entry)\n", path, k, n);
    return ok;
}

typedef struct fvd_worst {
    double err;
    int task, tensor;
} fvd_worst;

static double sq(double x) { return x * x; }

/* Compares task k's g with ref; prints one line per tensor; keeps the worst.
 * Returns the number of tensors compared. */
static int fvd_compare(int k, const os_hyper *hy, ad_value *const *g, double *const *ref,
                        fvd_worst *w)
{
    int n = hy->n_list;
    double total = 0, total_err = 0;
    for (int i = 0; i < n; i++)
        for (size_t j = 0; j < g[i]->size; j++) total += sq(ref[i][j]);
    total = sqrt(total);
    for (int i = 0; i < n; i++) {
        double d = 0, r = 0;
        for (size_t j = 0; j < g[i]->size; j++) {
            d += sq((double)g[i]->data[j] - ref[i][j]);
            r += sq(ref[i][j]);
        }
        total_err += d;
        d = sqrt(d), r = sqrt(r);
        bool zero = r <= FVD_ZERO * total;
        double e = d / (zero ? total : fmax(r, FVD_FLOOR * total));
        const char *part = i < hy->n_rep                ? "representation"
                           : i < hy->n_rep + hy->n_task ? "centre"
                           : i < n - 1                  ? "nu (rho)"
                                                        : "gamma";
        printf("  task %d, lambda tensor %2d (%s) [%zu]: |ref| %.3e, |diff| %.3e, error %.3g%s\n",
               k, i, part, g[i]->size, r, d, e, zero ? " (of the whole: 0 in exact arithmetic)" : "");
        if (!(e <= w->err)) *w = (fvd_worst){ e, k, i }; /* NaN counts as worst */
    }
    printf("  task %d: whole hypergradient: |ref| %.3e, relative error %.3g\n", k, total,
           sqrt(total_err) / total);
    return n;
}

static int usage(void)
{
    fprintf(stderr, "usage: oneshot-fvd [--omniglot DIR] --print | --compare FILE | --compare-env\n");
    return 2;
}

static bool in_ci(void)
{
    const char *ci = getenv("CI");
    return ci && ci[0] && strcmp(ci, "false") && strcmp(ci, "0");
}

/* true when fp has nothing left but white space; else (message on stderr)
 * false: the reference holds more tasks or entries than this setup. */
static bool fvd_at_end(FILE *fp, const char *path)
{
    int c;
    while ((c = fgetc(fp)) != EOF && (c == ' ' || c == '\n' || c == '\t' || c == '\r')) {
    }
    if (c == EOF) return true;
    fprintf(stderr, "oneshot-fvd: %s: more entries after the last one compared (this setup "
                    "has %d tasks)\n", path, FVD_TASKS);
    return false;
}

/* Opens the reference at path and checks its header; NULL (message on
 * stderr) if it cannot be read or is another setup's. */
static FILE *fvd_open_ref(const char *path, const char *header)
{
    FILE *fp = fopen(path, "r");
    if (!fp) {
        fprintf(stderr, "oneshot-fvd: cannot read the reference %s\n", path);
        return NULL;
    }
    char line[256];
    if (!fgets(line, sizeof line, fp) || strcspn(line, "\n") != strlen(header) ||
        strncmp(line, header, strlen(header))) {
        fprintf(stderr, "oneshot-fvd: %s is not this setup's reference (want the header "
                        "\"%s\")\n", path, header);
        fclose(fp);
        return NULL;
    }
    return fp;
}

int main(int argc, char **argv)
{
    const char *path = NULL, *omniglot = NULL;
    if (argc >= 3 && !strcmp(argv[1], "--omniglot")) {
        omniglot = argv[2];
        argc -= 2, argv += 2;
    }
    if (argc == 3 && !strcmp(argv[1], "--compare")) {
        path = argv[2];
    } else if (argc == 2 && !strcmp(argv[1], "--compare-env")) {
        path = getenv("HYPERTAPE_DOUBLE_REF");
        if (!path || !path[0]) {
            printf("oneshot-fvd: %s: HYPERTAPE_DOUBLE_REF is not set (scripts/test.sh sets it "
                   "to build/double's oneshot-fvd --print output)\n", in_ci() ? "FAILED" : "skipped");
            return in_ci() ? 1 : 77;
        }
    } else if (argc != 2 || strcmp(argv[1], "--print")) {
        return usage();
    }
    const char *header = omniglot ? FVD_HEADER_OMNIGLOT : FVD_HEADER;
    FILE *fp = NULL;
    if (path && !(fp = fvd_open_ref(path, header))) return 1;
    if (!path) printf("%s\n", header);
    os_hyper hy;
    fvd_source src = { 0 };
    int rc = fvd_hyper(&hy), status = 0;
    if (rc == AD_OK) rc = fvd_source_open(&src, omniglot);
    /* NaN until a tensor is compared: a comparison of nothing cannot pass. */
    fvd_worst worst = { NAN, -1, -1 };
    int compared = 0; /* tensors, over the tasks */
    for (int k = 0; k < FVD_TASKS && rc == AD_OK && status == 0; k++) {
        ad_value *g[OS_MAX_HYPER] = { 0 };
        double *ref[OS_MAX_HYPER] = { 0 };
        if ((rc = fvd_hypergrad(&hy, &src, k, g)) != AD_OK) {
            /* reported below */
        } else if (!fp) {
            fvd_print(k, hy.n_list, g);
        } else if (fvd_read(fp, path, k, hy.n_list, g, ref)) {
            compared += fvd_compare(k, &hy, g, ref, &worst);
        } else {
            status = 1;
        }
        for (int i = 0; i < OS_MAX_HYPER; i++) {
            ad_value_free(g[i]);
            free(ref[i]);
        }
    }
    if (rc != AD_OK) {
        fprintf(stderr, "oneshot-fvd: %s\n", ad_error());
        status = 1;
    }
    if (fp && status == 0 && !fvd_at_end(fp, path)) status = 1;
    if (fp && status == 0 && (compared == 0 || compared != FVD_TASKS * hy.n_list)) {
        fprintf(stderr, "oneshot-fvd: %s: %d tensors compared, not %d (%d tasks of %d)\n", path,
                compared, FVD_TASKS * hy.n_list, FVD_TASKS, hy.n_list);
        status = 1;
    }
    if (fp && status == 0) {
        status = worst.err <= FVD_TOL ? 0 : 1;
        printf("oneshot-fvd: %s build against %s: largest relative error %.3g (task %d, lambda "
               "tensor %d), tolerance %g: %s\n", HT_REAL_IS_DOUBLE ? "double" : "float", path,
               worst.err, worst.task, worst.tensor, FVD_TOL, status ? "FAILED" : "ok");
    }
    if (fp) fclose(fp);
    if (!fp && (fflush(stdout) != 0 || ferror(stdout))) status = 1;
    fvd_source_close(&src);
    os_hyper_free(&hy);
    return status;
}
