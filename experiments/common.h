/*
 * common.h — the plumbing the experiment programs share: reading flag
 * values, an output folder that remembers what was written into it,
 * running gnuplot, the clock, and running one piece of work in a child
 * process.  Experiment-layer code, like data.h: the library never includes
 * it.
 *
 * A program that writes figures uses it like this (toy.c, taskinteract.c):
 *
 *     ex_outdir *od = calloc(1, sizeof *od);       // large: keep it off the stack
 *     if (ex_outdir_init(od, "toy", "%s", out) != 0) return EX_EXIT_LIB;
 *     FILE *f = ex_outdir_open(od, "fig1.gp");    // records DIR/fig1.gp
 *     if (!f) return EX_EXIT_LIB;
 *     ...                                          // write the script
 *     if (ex_outdir_close(od, f, "fig1.gp") == 0)
 *         ex_outdir_plot(od, "fig1.gp", "fig1.png");
 *     ex_outdir_list(od);                          // "  DIR/fig1.gp" ... on stderr
 *     free(od);
 *
 * Two error channels, as elsewhere in the experiments.  The ex_outdir_*
 * functions speak for the program: they print "PROG: ..." on stderr
 * themselves and return EX_EXIT_LIB (or NULL), so a caller only passes the
 * status on.  The lower-level helpers (ex_make_dirs, ex_close,
 * ex_run_forked) return AD_OK or a negative ad_status with the reason in
 * ad_error(), and the program prints it its own way.  Nothing here exits.
 */
#ifndef HYPERTAPE_EXPERIMENTS_COMMON_H
#define HYPERTAPE_EXPERIMENTS_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ad/ad.h"
#include "experiments/kit/kit.h"


/* The longest path the programs build, and the longest flag name. */
enum { EX_FLAG_NAME_LEN = 32 };


/* ---- flags --------------------------------------------------------------- */

/* Each parser accepts the whole string or nothing: true and *out set, or
 * false and *out untouched.  White space is refused anywhere, before the
 * number too (where strtol would skip it), and so is anything after it. */

/* ex_parse_int and ex_parse_double: see kit/kit.h. */
/* A whole number >= 0 that fits in 64 bits (a seed), in decimal: digits
 * only, so any sign is refused ("-1" is not 2^64 − 1). */
bool ex_parse_u64(const char *s, uint64_t *out);
/* A comma-separated list of whole numbers in lo..hi, such as "1,5,25", each
 * as ex_parse_int reads it, into out[0..max_n).  Returns how many, or -1
 * when an entry is empty or bad (also " 5" after a comma: no spaces) or
 * there are more than max_n (out may then be partly written).  Repeated
 * values are the caller's business. */
int ex_parse_int_list(const char *s, int lo, int hi, int *out, int max_n);

/* Reads argv[*i] as "--name=value" or "--name value" (then *i moves on to
 * the value).  The name, at most EX_FLAG_NAME_LEN - 1 bytes, must be one of
 * known[0..n_known).  Returns AD_OK with name and *val set, or AD_EARG with
 * the reason in ad_error() (not a flag, an unknown flag, no value), ready
 * for the program's usage message. */
int ex_flag_value(int argc, char **argv, int *i, const char *const *known, size_t n_known,
                  char name[EX_FLAG_NAME_LEN], const char **val);

/* Prints "PROG: <message>" and the line "(PROG --help explains the flags)"
 * on stderr; returns EX_EXIT_USAGE. */
int ex_usage_error_old(const char *prog, const char *fmt, ...) EX_PRINTF(2, 3);

/* ---- files and folders --------------------------------------------------- */

/* mkdir -p: path and every missing folder above it.  AD_OK when path is a
 * folder at the end; AD_EARG (too long) or AD_EIO with the reason in
 * ad_error() otherwise. */
int ex_make_dirs(const char *path);

/* fclose that also reports an earlier write error on f (a full disk shows
 * up in ferror, not in fclose).  AD_OK, or AD_EIO "error writing NAME". */
int ex_close(FILE *f, const char *name);

enum { EX_MAX_OUT_FILES = 32 };

/* An output folder, and the list of files written into it (for the summary
 * a program prints at the end).  About 130 KB: allocate it. */
typedef struct ex_outdir {
    const char *prog;                         /* prefixes every message */
    char dir[EX_PATH_LEN];
    char files[EX_MAX_OUT_FILES][EX_PATH_LEN];    /* paths, in the order written */
    int n_files;
    bool have_gnuplot;                        /* gnuplot is on PATH */
    int plots_failed;
} ex_outdir;

/* Sets od up for the folder named by the format (created if missing) and
 * looks for gnuplot on PATH.  Returns 0, or EX_EXIT_LIB after printing why
 * the folder cannot be made. */
int ex_outdir_init(ex_outdir *od, const char *prog, const char *dir_fmt, ...) EX_PRINTF(3, 4);
/* Opens DIR/name for writing and records it; NULL (after printing why) on
 * failure. */
FILE *ex_outdir_open(ex_outdir *od, const char *name);
/* ex_close on behalf of od's program: 0, or EX_EXIT_LIB after printing
 * "PROG: error writing NAME". */
int ex_outdir_close(const ex_outdir *od, FILE *f, const char *name);
/* Runs `gnuplot script` in the folder when gnuplot is there, and records
 * png if it was made.  A failure is a warning (printed and counted in
 * plots_failed), not an error: the CSV files are the result. */
void ex_outdir_plot(ex_outdir *od, const char *script, const char *png);
/* Lists the files written, one "  PATH" line each ("  (none)" when there
 * are none), then a warning if plots failed; all on stderr. */
void ex_outdir_list(const ex_outdir *od);

/* ---- gnuplot ------------------------------------------------------------- */

/* Whether an executable gnuplot is in a folder on PATH. */
bool ex_gnuplot_on_path(void);

/* Runs `gnuplot script` with dir as its working folder, by fork and exec
 * (no shell, so nothing needs quoting), and waits.  Returns 0 when gnuplot
 * exited with status 0; 1 when it failed, or dir or gnuplot could not be
 * entered or run; -1 when no process could be started (errno says why). */
int ex_gnuplot(const char *dir, const char *script);

/* ex_gnuplot, and on failure a warning on stderr, "PROG: warning: cannot
 * start gnuplot: ..." or "PROG: warning: gnuplot SCRIPT failed; PNG was not
 * made".  Returns what ex_gnuplot returned. */
int ex_gnuplot_warn(const char *prog, const char *dir, const char *script, const char *png);

/* The opening of a gnuplot script that draws a width x height PNG from CSV
 * files: a comment naming `writer` (e.g. "toy (experiments/toy.c)") and how
 * to rerun it, UTF-8, pngcairo if this gnuplot has it (else png), the
 * output file, ',' as the separator and a light grid. */
void ex_gp_header_old(FILE *g, const char *writer, const char *png, int width, int height);

/* ---- time ---------------------------------------------------------------- */

/* A duration for a progress line: "42s", "3m07s", "2h05m", or "?" when
 * negative, NaN or absurd. */
void ex_fmt_duration(double seconds, char *buf, size_t len);
/* Classification helpers shared by the programs. */
/* The fraction of rows of logits [n, n_classes] whose largest entry (first
 * on ties) is at the label y[i]; 0 for n <= 0. */
double ex_accuracy(const ad_real *logits, const ad_real *y, int n, int n_classes);
/* A new caller-owned [n] tensor holding the whole-number labels y. */
ad_value *ex_labels_tensor(const int *y, int n);
/* Draws disjoint training and validation index sets by class quota: walks a
 * seeded permutation of 0..n−1 and gives example i (label c) to training while
 * quota_train[c] lasts, then to validation while quota_val[c] lasts.  Labels
 * at or above n_classes are skipped.  The quotas are consumed; filled[2]
 * receives how many of each were drawn (fewer than asked when a class runs
 * out: the caller says what that means).  AD_OK or AD_ENOMEM. */
int ex_sample_by_quota(ad_rng *rng, const unsigned char *labels, int n, int n_classes,
                       int *quota_train, int *quota_val, int *idx_train, int *idx_val,
                       int filled[2]);

#endif
