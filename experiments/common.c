/* common.c — see common.h. */
#include "common.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- flags --------------------------------------------------------------- */

/* strtol, strtoull and strtod skip leading white space (and strtoull then
 * takes "-1" as 2^64 − 1): so every parser looks at the first character
 * itself.  A number may open with a sign only where it is signed. */
static bool starts_with_space(const char *s)
{
    return isspace((unsigned char)*s) != 0;
}

bool ex_parse_u64(const char *s, uint64_t *out)
{
    /* A digit first: no white space and no sign (strtoull would take "-1",
     * also " -1", as 2^64 − 1). */
    if (!isdigit((unsigned char)*s)) return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || *end != '\0' || errno == ERANGE) return false;
    *out = v;
    return true;
}

int ex_parse_int_list(const char *s, int lo, int hi, int *out, int max_n)
{
    int n = 0;
    for (;;) { /* s is at the start of an entry */
        if (starts_with_space(s)) return -1; /* "1, 5" as well as " 1" */
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno == ERANGE || v < lo || v > hi || n == max_n) return -1;
        if (*end != ',' && *end != '\0') return -1;
        out[n++] = (int)v;
        if (*end == '\0') return n;
        s = end + 1; /* past the comma */
    }
}

int ex_flag_value(int argc, char **argv, int *i, const char *const *known, size_t n_known,
                  char name[EX_FLAG_NAME_LEN], const char **val)
{
    const char *a = argv[*i];
    if (strncmp(a, "--", 2) != 0) return ad_fail(AD_EARG, "unexpected argument '%s'", a);
    const char *eq = strchr(a, '=');
    size_t len = eq ? (size_t)(eq - a) : strlen(a);
    if (len >= EX_FLAG_NAME_LEN) return ad_fail(AD_EARG, "unknown flag '%s'", a);
    memcpy(name, a, len);
    name[len] = '\0';
    bool is_known = false;
    for (size_t k = 0; k < n_known; k++) is_known |= !strcmp(name, known[k]);
    if (!is_known) return ad_fail(AD_EARG, "unknown flag '%s'", name);
    if (eq) *val = eq + 1;
    else if (*i + 1 < argc) *val = argv[++*i];
    else return ad_fail(AD_EARG, "flag %s needs a value", name);
    return AD_OK;
}

int ex_usage_error_old(const char *prog, const char *fmt, ...)
{
    fprintf(stderr, "%s: ", prog);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(%s --help explains the flags)\n", prog);
    return EX_EXIT_USAGE;
}

/* ---- files and folders --------------------------------------------------- */

int ex_make_dirs(const char *path)
{
    char buf[EX_PATH_LEN];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return ad_fail(AD_EARG, "--out: path too long");
    /* Each prefix ending at a '/' in turn, then the whole path. */
    for (char *s = buf + 1;; s++) {
        char c = *s;
        if (c == '/' || c == '\0') {
            *s = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return ad_fail(AD_EIO, "cannot create folder %s: %s", buf, strerror(errno));
            *s = c;
        }
        if (c == '\0') break;
    }
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return ad_fail(AD_EIO, "%s is not a folder", path);
    return AD_OK;
}

int ex_close(FILE *f, const char *name)
{
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) return ad_fail(AD_EIO, "error writing %s", name);
    return AD_OK;
}

int ex_outdir_init(ex_outdir *od, const char *prog, const char *dir_fmt, ...)
{
    od->prog = prog;
    od->n_files = od->plots_failed = 0;
    od->have_gnuplot = false;
    va_list ap;
    va_start(ap, dir_fmt);
    int n = vsnprintf(od->dir, sizeof od->dir, dir_fmt, ap);
    va_end(ap);
    int rc = n >= 0 && (size_t)n < sizeof od->dir ? ex_make_dirs(od->dir)
                                                  : ad_fail(AD_EARG, "--out: path too long");
    if (rc != AD_OK) {
        fprintf(stderr, "%s: %s\n", prog, ad_error());
        return EX_EXIT_LIB;
    }
    od->have_gnuplot = ex_gnuplot_on_path();
    return 0;
}

/* Adds path to the list (quietly full after EX_MAX_OUT_FILES). */
static void outdir_record(ex_outdir *od, const char *path)
{
    if (od->n_files < EX_MAX_OUT_FILES) snprintf(od->files[od->n_files++], EX_PATH_LEN, "%s", path);
}

FILE *ex_outdir_open(ex_outdir *od, const char *name)
{
    char path[EX_PATH_LEN];
    if (snprintf(path, sizeof path, "%s/%s", od->dir, name) >= (int)sizeof path) {
        fprintf(stderr, "%s: output path too long\n", od->prog);
        return NULL;
    }
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "%s: cannot write %s: %s\n", od->prog, path, strerror(errno));
        return NULL;
    }
    outdir_record(od, path);
    return f;
}

int ex_outdir_close(const ex_outdir *od, FILE *f, const char *name)
{
    if (ex_close(f, name) == AD_OK) return 0;
    fprintf(stderr, "%s: %s\n", od->prog, ad_error());
    return EX_EXIT_LIB;
}

void ex_outdir_plot(ex_outdir *od, const char *script, const char *png)
{
    if (!od->have_gnuplot) return;
    if (ex_gnuplot_warn(od->prog, od->dir, script, png) != 0) {
        od->plots_failed++;
        return;
    }
    char path[EX_PATH_LEN];
    if (snprintf(path, sizeof path, "%s/%s", od->dir, png) < (int)sizeof path &&
        access(path, R_OK) == 0)
        outdir_record(od, path);
}

void ex_outdir_list(const ex_outdir *od)
{
    for (int i = 0; i < od->n_files; i++) fprintf(stderr, "  %s\n", od->files[i]);
    if (od->n_files == 0) fprintf(stderr, "  (none)\n");
    if (od->plots_failed)
        fprintf(stderr, "%s: warning: %d plot(s) failed (see above)\n", od->prog,
                od->plots_failed);
}

/* ---- gnuplot ------------------------------------------------------------- */

bool ex_gnuplot_on_path(void)
{
    const char *path = getenv("PATH");
    if (!path) return false;
    char dir[EX_PATH_LEN];
    while (*path) {
        size_t n = strcspn(path, ":");
        if (n > 0 && n + sizeof "/gnuplot" < sizeof dir) {
            memcpy(dir, path, n);
            snprintf(dir + n, sizeof dir - n, "/gnuplot");
            if (access(dir, X_OK) == 0) return true;
        }
        path += n;
        if (*path == ':') path++;
    }
    return false;
}

int ex_gnuplot(const char *dir, const char *script)
{
    /* What is buffered would otherwise be written twice, by both processes. */
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        if (chdir(dir) != 0) _exit(126);
        execlp("gnuplot", "gnuplot", script, (char *)NULL);
        _exit(127);
    }
    int status;
    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return 1;
    return 0;
}

int ex_gnuplot_warn(const char *prog, const char *dir, const char *script, const char *png)
{
    int rc = ex_gnuplot(dir, script);
    if (rc < 0)
        fprintf(stderr, "%s: warning: cannot start gnuplot: %s\n", prog, strerror(errno));
    else if (rc > 0)
        fprintf(stderr, "%s: warning: gnuplot %s failed; %s was not made\n", prog, script, png);
    return rc;
}

void ex_gp_header_old(FILE *g, const char *writer, const char *png, int width, int height)
{
    fprintf(g,
            "# Written by %s; run `gnuplot %.*s.gp` in this folder.\n"
            "set encoding utf8\n"
            "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
            "    set terminal pngcairo size %d,%d enhanced font 'Sans,10'\n"
            "} else {\n"
            "    set terminal png size %d,%d enhanced\n"
            "}\n"
            "set output '%s'\n"
            "set datafile separator ','\n"
            "set grid lt 0 lw 0.5\n",
            writer, (int)(strlen(png) - 4), png, width, height, width, height, png);
}

/* ---- time ---------------------------------------------------------------- */

void ex_fmt_duration(double s, char *buf, size_t len)
{
    if (!(s >= 0) || s > 1e8) snprintf(buf, len, "?");
    else if (s < 60) snprintf(buf, len, "%.0fs", s);
    else if (s < 3600) snprintf(buf, len, "%dm%02ds", (int)s / 60, (int)s % 60);
    else snprintf(buf, len, "%dh%02dm", (int)s / 3600, (int)s / 60 % 60);
}

double ex_accuracy(const ad_real *logits, const ad_real *y, int n, int n_classes)
{
    if (n <= 0) return 0;
    int right = 0;
    for (int i = 0; i < n; i++) {
        const ad_real *row = logits + (size_t)i * (size_t)n_classes;
        int best = 0;
        for (int c = 1; c < n_classes; c++)
            if (row[c] > row[best]) best = c;
        right += best == (int)y[i];
    }
    return (double)right / n;
}

ad_value *ex_labels_tensor(const int *y, int n)
{
    ad_value *v = ad_tensor_new(1, &n);
    if (v)
        for (int i = 0; i < n; i++) v->data[i] = (ad_real)y[i];
    return v;
}

int ex_sample_by_quota(ad_rng *rng, const unsigned char *labels, int n, int n_classes,
                       int *quota_train, int *quota_val, int *idx_train, int *idx_val,
                       int filled[2])
{
    filled[0] = filled[1] = 0;
    int want = 0;
    for (int c = 0; c < n_classes; c++) want += quota_train[c] + quota_val[c];
    int *perm = malloc(sizeof *perm * (size_t)(n > 0 ? n : 1));
    if (!perm) return ad_fail(AD_ENOMEM, "sampling: out of memory");
    ad_rng_permutation(rng, perm, n);
    for (int k = 0; k < n && filled[0] + filled[1] < want; k++) {
        int i = perm[k], c = labels[i];
        if (c >= n_classes) continue;
        if (quota_train[c] > 0) {
            quota_train[c]--;
            idx_train[filled[0]++] = i;
        } else if (quota_val[c] > 0) {
            quota_val[c]--;
            idx_val[filled[1]++] = i;
        }
    }
    free(perm);
    return AD_OK;
}
