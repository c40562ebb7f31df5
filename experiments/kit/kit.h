/*
 * kit.h — the run kit: everything an experiment program needs besides its
 * problem and its loop, written once.  A new experiment copies
 * experiments/example_l2.c (163 lines) and changes the problem:
 *
 *     static struct { int T, iters; const char *out; uint64_t seed; bool quick; } o;
 *     static const ex_flag flags[] = {
 *         { "--T", EX_INT, &o.T, "100", 1, 100000, "inner steps" },
 *         { "--out", EX_TEXT, &o.out, "results/mine", .help = "output folder", .meta = "DIR" },
 *         { "--quick", EX_SWITCH, &o.quick, .help = "a first look" },
 *         ...
 *     };
 *     static int check(void) { return o.iters < o.T ? ex_usage_error("...") : 0; }  // optional
 *     static ex_cmd cmd = { "mine", "[flags]", "What it computes.\n", EX_FLAGS(flags),
 *                           .check = check };
 *
 *     int main(int argc, char **argv)
 *     {
 *         int st = ex_flags_parse(&cmd, argc, argv);     // --help; errors: exit 2
 *         if (st) return st < 0 ? 0 : st;
 *         ex_out out;
 *         int rc = ex_out_open(&out, o.out, true);      // mkdir -p, lock, gnuplot?
 *         ex_file csv;
 *         if (rc == AD_OK) rc = ex_csv_open(&csv, &out, "loss.csv", "iter,loss");
 *         ...fprintf(csv.f, ...) in the loop, ex_progress_line(...) on stderr...
 *         if (rc == AD_OK) rc = ex_file_commit(&csv);   // renamed into place
 *         ex_out_close(&out);
 *         return ex_exit(rc);                           // prints the message once
 *     }
 *
 * Parts: the flag table (declarative; parses strictly, prints --help);
 * the output folder (created, locked against a second run, files written
 * under a temporary name and renamed when complete, gnuplot run when there);
 * progress lines with an ETA; peak memory; divergence stopping the run; a
 * piece of work in a child process that dies with its parent; checkpoints
 * that verify themselves (versioned header, CRC, a range for every field);
 * tables of numbers kept in memory, written as CSV and checkpointed.
 *
 * Errors: ex_flags_parse and ex_usage_error print and return an exit
 * status.  Everything else returns AD_OK or a negative status with the
 * reason in ad_error() (naming the file and, in a checkpoint, the field);
 * the program prints it once, usually through ex_exit.  EX_EUSAGE is the
 * status of bad usage found late (an --out path too long): exit status 2.
 * Nothing here exits.
 *
 * Parallel work (--threads N, mpirun -n P): a program's items (a
 * meta-batch's tasks, trials, Ks) run on a pool of worker threads
 * (ex_pool_run) or of child processes (ex_run_forked_many) in each process,
 * and under mpirun each rank takes a block of them (ex_par_block); results
 * come back per item and are reduced in item order, so no number written
 * depends on N or P.  ex_out.writer is false on every rank but 0 (files and
 * checkpoints are then not written there).  A truncation-profile CSV
 * written every so often is an ex_table plus ex_due.  Divergence is
 * watched by an ex_watch in the program's loop (exit status 1 when a loss
 * blows up); a failed item fails every rank alike (ex_par_agree), so a
 * diverged configuration is recorded and the next one runs whatever the
 * transport.
 */
#ifndef HYPERTAPE_EXPERIMENTS_KIT_H
#define HYPERTAPE_EXPERIMENTS_KIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ad/ad.h"
#include "optim/hypergrad.h"
#include "optim/outer.h"

/* The programs' exit statuses besides 0. */
enum { EX_EXIT_LIB = 1, EX_EXIT_USAGE = 2 };
/* A status (beside ad_status) for bad usage found after parsing. */
enum { EX_EUSAGE = -64 };
/* The longest path the kit builds; the longest file name in a folder. */
enum { EX_PATH_LEN = 4096, EX_NAME_LEN = 128 };

#if defined(__GNUC__)
#define EX_PRINTF(fmt_arg, first_arg) __attribute__((format(printf, fmt_arg, first_arg)))
#else
#define EX_PRINTF(fmt_arg, first_arg)
#endif

/* ---- flags --------------------------------------------------------------- */

typedef enum ex_flag_type {
    EX_SWITCH, /* no value; dest bool, set true */
    EX_INT,    /* dest int, in lo..hi */
    EX_INTS,   /* "1,5,25": dest int[max_n], each in lo..hi, none twice; count in *n */
    EX_REAL,   /* dest double, finite, in [lo, hi] (open ends: .open) */
    EX_SEED,   /* dest uint64_t, digits only */
    EX_TEXT,   /* dest const char *, not empty, at most hi bytes (0: EX_PATH_LEN − 256) */
    EX_CHOICE, /* dest const char *, one of .choices ("mnist|fashion") */
    EX_PAIR,   /* "a,b": dest double[2], both finite */
} ex_flag_type;

enum { EX_OPEN_LO = 1, EX_OPEN_HI = 2 }; /* ex_flag.open: a range end excluded */

/* One flag.  The first seven fields are usually given in order:
 *     { "--gamma", EX_REAL, &o.gamma, "0.1", 0, 1e9, "inner step size", .open = EX_OPEN_LO }
 * def is the default as it would be typed, parsed into dest before the
 * command line is read (so it obeys the range); NULL leaves dest as the
 * program set it (a default it works out later: say so in help).  quick,
 * when not NULL, is the default instead when --quick is on the command line
 * (a flag given explicitly still wins).  lo == hi means no range. */
typedef struct ex_flag {
    const char *name; /* "--T" */
    ex_flag_type type;
    void *dest;
    const char *def;
    double lo, hi;
    const char *help; /* one paragraph; --help wraps it */
    int open;             /* EX_REAL: EX_OPEN_LO | EX_OPEN_HI */
    int max_n, *n;        /* EX_INTS: capacity of dest, and how many were given */
    const char *choices;  /* EX_CHOICE */
    const char *quick;    /* the default under --quick */
    const char *meta;     /* the value's name in --help: "N", "DIR"; by type when NULL */
} ex_flag;

/* A program's command line: its name, what follows it in the usage line,
 * the prose printed before the flags and after them, the table, and the
 * checks across flags (NULL: none), which return 0 or an exit status
 * (ex_usage_error).  ex_flags_parse fills given. */
typedef struct ex_cmd {
    const char *prog;
    const char *usage;
    const char *about;
    const ex_flag *flags;
    int n_flags;
    const char *after;
    int (*check)(void);
    uint64_t given; /* bit i: flags[i] was on the command line */
} ex_cmd;
#define EX_FLAGS(table) (table), (int)(sizeof(table) / sizeof *(table))

/* Parses argv: "--name=value" or "--name value"; -h and --help print the
 * help on stdout.  Then runs cmd->check.  Returns 0 to go on, −1 after
 * --help, or EX_EXIT_USAGE after printing "PROG: --flag: expected ...,
 * got '...'" (naming the flag) on stderr.  Also names the program for every
 * message of the kit. */
AD_MUST_CHECK int ex_flags_parse(ex_cmd *cmd, int argc, char **argv);
/* Whether the flag was on the command line. */
bool ex_given(const ex_cmd *cmd, const char *name);
/* Prints "PROG: <message>" and "(PROG --help explains the flags)" on
 * stderr; returns EX_EXIT_USAGE. */
int ex_usage_error(const char *fmt, ...) EX_PRINTF(1, 2);
/* The program's name, as ex_flags_parse was given it. */
const char *ex_prog(void);
/* 0 for AD_OK; otherwise prints "PROG: <ad_error()>" and returns the exit
 * status: EX_EXIT_USAGE for EX_EUSAGE, else EX_EXIT_LIB. */
AD_MUST_CHECK int ex_exit(int rc);

/* The number parsers behind the table, for values a program reads itself
 * (a list with words in it).  Each accepts the whole string or nothing:
 * no white space, nothing after the number. */
bool ex_parse_int(const char *s, int lo, int hi, int *out);
bool ex_parse_double(const char *s, double *out);

/* ---- the output folder --------------------------------------------------- */

enum { EX_MAX_FILES = 64 };

/* A folder a run writes into, locked for the run.  Keep it off small stacks
 * (about 8 KB). */
typedef struct ex_out {
    char dir[EX_PATH_LEN];
    int lock_fd;
    bool plots;       /* run gnuplot: asked for and found on PATH */
    bool writer;      /* this process writes files (false on MPI ranks > 0) */
    int plots_failed;
    int n_files;
    char files[EX_MAX_FILES][EX_NAME_LEN]; /* names written, in order */
} ex_out;

/* Creates dir (and its parents), and takes an exclusive lock on it (a file
 * dir/.lock holding this process's id, host and PID namespace), so two runs
 * cannot write one folder; with the lock held it removes the temporaries
 * (.NAME.partial.XXXXXX, see ex_file_open) an interrupted run left, saying so
 * on stderr; no other file.  want_plots:
 * run gnuplot if it is on PATH; if it is not, prints a warning once.  EX_EUSAGE "--out: path too long"; AD_EIO when the folder
 * cannot be made or "DIR is in use by another run (process N)". */
AD_MUST_CHECK int ex_out_open(ex_out *o, const char *dir, bool want_plots);
/* A folder other runs write too, without a lock or plots: for a file that
 * joins their outputs (still written under a temporary name and renamed). */
AD_MUST_CHECK int ex_out_open_shared(ex_out *o, const char *dir);
/* Releases the lock. */
void ex_out_close(ex_out *o);
/* Lists the files written, "  DIR/NAME" lines on stderr, then a warning if
 * plots failed. */
void ex_out_list(const ex_out *o);

/* A file being written: f is a temporary DIR/.NAME.partial.XXXXXX
 * (.NAME.shared.XXXXXX in a shared folder, never removed by others), opened for
 * appending (so a forked child may write rows too, flushing before it
 * exits), that ex_file_commit renames to DIR/NAME once it is complete: a
 * reader never takes a partial file for a result. */
typedef struct ex_file {
    FILE *f;
    ex_out *out;
    char name[EX_NAME_LEN];
    char tmp[EX_PATH_LEN];
} ex_file;

/* AD_OK, or AD_EIO "cannot write DIR/NAME: <strerror>". */
AD_MUST_CHECK int ex_file_open(ex_file *f, ex_out *o, const char *name);
/* ex_file_open, then the line `header` and a newline (a CSV file). */
AD_MUST_CHECK int ex_csv_open(ex_file *f, ex_out *o, const char *name, const char *header);
/* Flushes, checks every write, fsyncs, renames to DIR/NAME, fsyncs the
 * folder and records NAME.  On any failure the temporary file is removed
 * and the status is AD_EIO "cannot write DIR/NAME: <strerror>" (a full disk
 * says "No space left on device").  A file never opened is AD_OK. */
AD_MUST_CHECK int ex_file_commit(ex_file *f);
/* Closes and removes the temporary file (after a failure elsewhere). */
void ex_file_abandon(ex_file *f);
/* Writes text[0..len) as DIR/NAME in one go (ex_file_open + commit). */
AD_MUST_CHECK int ex_out_save(ex_out *o, const char *name, const char *text, size_t len);

/* Opens the gnuplot script DIR/name (an ex_file) and writes its opening:
 * who wrote it and how to rerun it, UTF-8, pngcairo if this gnuplot has it
 * (else png), a width x height PNG named like the script (.png for .gp),
 * ',' as the separator of the CSV files it reads, a light grid. */
AD_MUST_CHECK int ex_gp_open(ex_file *g, ex_out *o, const char *name, int width, int height);
/* ex_file_commit, then `gnuplot NAME` in the folder when plots are on; the
 * PNG is recorded if it was made.  A plot that fails is a warning printed
 * and counted, not an error: the CSV files are the result and the script
 * redraws them later. */
AD_MUST_CHECK int ex_gp_commit(ex_file *g);

/* ---- time, progress, memory ---------------------------------------------- */

/* Seconds on the monotonic clock. */
double ex_now(void);
/* "42s", "3m07s", "2h05m", or "?" for a negative, NaN or absurd duration,
 * into buf; returns buf. */
const char *ex_duration(double seconds, char buf[16]);
/* Whether `every` seconds have passed since *last; if so *last = now. */
bool ex_due(double *last, double every);
/* The median of x[0..n), which it sorts; NaN when n is 0. */
double ex_median(double *x, int n);

/* One progress line on stderr.  On a terminal it is rewritten in place at
 * most four times a second; in a log a line is printed at most every 15
 * seconds.  force prints now (a first or last line).  Worker threads may
 * share one ex_progress: a line is drawn under a lock. */
typedef struct ex_progress {
    bool tty, open;
    double last;
} ex_progress;
void ex_progress_init(ex_progress *p);
void ex_progress_line(ex_progress *p, bool force, const char *fmt, ...) EX_PRINTF(3, 4);
/* Ends the line on a terminal. */
void ex_progress_end(ex_progress *p);

/* Peak resident memory of this process (getrusage), and what it holds now
 * (/proc/self/statm); KiB, 0 when unknown. */
long ex_peak_rss_kb(void);
long ex_rss_now_kb(void);

/* ---- divergence -------------------------------------------------------------
 * A run whose losses blow up still produces numbers — hypergradients of a
 * diverged inner loop, a validation loss of 1e33 — and would exit 0 with a
 * table of them.  Every program watches the same three things instead, and
 * stops (exit status 1, the CSV files not written) at the first of:
 *   - an inner loss that is not finite (the outer loss and the
 *     hypergradient already fail with AD_ENONFINITE in the estimators);
 *   - an inner loss that ends more than `factor` times higher than it
 *     started (T steps made it worse: the inner step size is too large);
 *   - a validation (outer) loss more than `factor` times its first value,
 *     or not finite (the outer optimizer is running away).
 * "Higher by a factor" is measured on the rise, so that it means the same
 * for a loss that starts negative or at 0: x − start > (factor − 1)·|start|.
 *
 *     ex_watch wt;
 *     ex_watch_init(&wt, "lower --gamma (the inner step size)");
 *     ...
 *     rc = hg_krmd(&p, K, h, &rep);
 *     if (rc == AD_OK) rc = ex_watch_inner(&wt, &rep);
 *     if (rc == AD_OK) rc = ex_watch_val(&wt, tau, rep.outer_loss);
 *     if (rc != AD_OK) ad_fail_wrap(rc, "K = %d, hyper-iteration %d", K, tau);
 *
 * The status is AD_ENONFINITE or EX_EDIVERGED, and the message says which
 * loss, its numbers, and the hint.
 *
 * A program that runs several configurations (oneshot's Ks) records a
 * diverged one as failed and goes on with the next, in child processes and
 * under mpirun alike (ex_diverged tells a divergence from a fault; see
 * ex_par_agree for how the ranks learn of it). */
enum { EX_EDIVERGED = -65 };
#define EX_DIVERGE_FACTOR 10.0

typedef struct ex_watch {
    double factor;     /* EX_DIVERGE_FACTOR unless the program sets another */
    const char *hint;  /* what to change, for the message; not owned */
    double val_first;  /* the first validation loss seen (NaN before); a
                          resumed run sets it from its log */
    int val_first_iter;
} ex_watch;

void ex_watch_init(ex_watch *w, const char *hint);
/* The inner losses of an estimate (hg_report): AD_OK, AD_ENONFINITE "the
 * inner loss is not finite from step t (g_1 = ...)", or EX_EDIVERGED "the
 * inner loss rose from g_1 = ... to g_T = ... (more than F times; its
 * largest rise at step t)", each followed by "; HINT". */
AD_MUST_CHECK int ex_watch_inner(const ex_watch *w, const hg_report *r);
/* The validation loss at hyper-iteration iter.  The first call (or
 * val_first set by hand) is the reference.  AD_OK, AD_ENONFINITE, or
 * EX_EDIVERGED "the validation loss rose from ... (hyper-iteration i) to
 * ... (more than F times); HINT". */
AD_MUST_CHECK int ex_watch_val(ex_watch *w, int iter, double val);
/* Whether status rc says the numbers ran away: EX_EDIVERGED, or
 * AD_ENONFINITE (the watch's non-finite losses, and the estimators' and
 * the outer optimizer's non-finite results).  Such a failure comes out of
 * the run's numbers, which every rank computes alike; any other status
 * (memory, a file, bad usage) may be one process's alone. */
bool ex_diverged(int rc);

/* ---- work in a child process --------------------------------------------- */

/* One piece of work: fills result and returns an ad_status. */
typedef int (*ex_work)(void *arg, void *result);

/* Runs work(arg, result) in a child process and copies *result (size
 * bytes, plain data) back through a pipe.  Why: the child's peak RSS is its
 * own, not the largest of all the work before it, and a crash does not take
 * the program down.  The child dies with its parent (PR_SET_PDEATHSIG, then
 * a check that the parent did not die before that), so a killed run leaves
 * no worker writing into its folder.  When work fails the child prints
 * "PROG: <its message>".  Returns AD_OK when work returned AD_OK and all of
 * result arrived; otherwise "LABEL failed (see the message above)" or
 * "LABEL: the child process died of signal N" (AD_EARG), or names the pipe
 * or fork that failed (AD_EIO). */
AD_MUST_CHECK int ex_run_forked(const char *label, ex_work work, void *arg, void *result,
                                size_t size);

/* One item of several, run in a child process by ex_run_forked_many:
 * fills result (the item's own, plain data) and returns an ad_status. */
typedef int (*ex_item_work)(void *ctx, int item, void *result);

/* Runs work(ctx, item, results + item·size) for items[0..n) (NULL: 0..n−1)
 * in child processes, at most n_parallel at a time, started in that order,
 * each as ex_run_forked runs one (its own peak RSS; dies with the parent).
 * labels[item] names an item in messages.  With more than one at a time,
 * the children's progress lines are whole lines (ex_progress as in a log).
 * Returns AD_OK when every item succeeded; otherwise no item is started
 * after the first failure, the running ones are waited for, and the status
 * is that of the first failed item in the order given (its message as
 * ex_run_forked gives it).  Call it with no other thread running: it forks. */
AD_MUST_CHECK int ex_run_forked_many(int n_parallel, int n, const int *items, const char *const *labels,
                       ex_item_work work, void *ctx, void *results, size_t size);

/* ---- parallel work: worker threads and MPI ranks ----------------------------
 * Items (a meta-batch's tasks, trials, Ks) run on --threads workers in each
 * process and, under `mpirun -n P PROG ...`, on P processes (ranks), each
 * taking a contiguous block of the items.  Every item computes the same
 * numbers wherever it runs; the program keeps each item's result apart and
 * reduces them in item order after the join, so no number written depends
 * on the number of threads or ranks:
 *
 *     int main(int argc, char **argv)
 *     {
 *         int rc = ex_par_init(&argc, &argv);           // MPI_Init under mpirun
 *         int st = rc ? ex_exit(rc) : ex_flags_parse(&cmd, argc, argv);
 *         if (st) return ex_par_end(st < 0 ? 0 : st);
 *         ...
 *         int first, end, items[N];
 *         ex_par_block(n, &first, &end);                 // this rank's items
 *         for (int i = first; i < end; i++) items[i - first] = i;
 *         rc = ex_pool_run(o.threads, end - first, items, one_item, ctx);
 *         if (rc == AD_OK) rc = ex_par_share(recs, sizeof *recs, n);   // to every rank
 *         ...fold recs[0..n) in order...
 *         return ex_par_end(ex_exit(rc));
 *     }
 *
 * MPI is optional (meson -Dmpi=auto) and started only when a launcher
 * (mpirun) started the program; otherwise this process is rank 0 of 1 and
 * every exchange below returns at once.  Only the thread that called
 * ex_par_init calls MPI (MPI_THREAD_FUNNELED): the exchanges are called
 * outside ex_pool_run, never from an item.  On ranks > 0 stdout and stderr
 * go to /dev/null (rank 0 prints for all) and failure messages to ex_err().
 * Every exchange is collective: all ranks call it, in the same order.
 *
 * Failures: after the items, ex_par_run agrees on the status (ex_par_agree),
 * so a failed item — a task whose inner loss diverged, on whichever rank
 * ran it — fails every rank alike, with the message one process would give
 * (the first failed item in order), and no rank is left waiting in the next
 * exchange.  A program may then go on together (oneshot records a diverged
 * configuration as failed and runs the next; ex_diverged) and end with
 * ex_par_end_all.  A failure of one rank alone anywhere else (a file rank 0
 * writes, memory) ends every rank: ex_par_end with a status other than 0
 * calls MPI_Abort, since the others would wait for it forever. */

enum { EX_MAX_THREADS = 256 }; /* the most workers of a pool */

/* Call first in main.  Keeps OpenBLAS at one thread (its sums change with
 * its thread count, and the parallelism is the items'), and under mpirun
 * initializes MPI (MPI_THREAD_FUNNELED) and silences ranks > 0.  AD_OK;
 * AD_EUNSUPPORTED "started by mpirun, but built without MPI"; AD_EIO when
 * MPI cannot start. */
AD_MUST_CHECK int ex_par_init(int *argc, char ***argv);
/* This process's rank, and how many there are (0 and 1 without mpirun). */
int ex_par_rank(void);
int ex_par_size(void);
/* Ends MPI and returns status: the program's `return ex_par_end(status)`.
 * With a status other than 0 under several ranks it does not return: it
 * ends them all (MPI_Abort), after the failing rank printed its message —
 * unless the failure in ad_error() is one every rank holds from
 * ex_par_agree (ex_par_agreed): then every rank gets here with it, rank 0
 * printed it, and each ends by itself with status, as without mpirun. */
int ex_par_end(int status);
/* As ex_par_end, but collective and without MPI_Abort: for a run that
 * every rank finished together, its failures agreed (ex_par_agree) and
 * recorded, so that none waits for another.  Each rank returns status;
 * mpirun exits with it. */
int ex_par_end_all(int status);
/* Where failure messages go: stderr, or on ranks > 0 a copy of the stderr
 * the rank started with. */
FILE *ex_err(void);
/* The default of --threads: the cores divided among the ranks on this
 * machine, at least 1. */
int ex_par_threads(void);

/* This rank's items of n: [*first, *end), contiguous blocks in rank order
 * whose sizes differ by at most one, the larger first: rank 0's holds item
 * 0 when n > 0 (all of them without mpirun). */
void ex_par_block(int n, int *first, int *end);

/* One item, on worker `worker` (0..n_threads−1: an index for per-worker
 * state such as a tape).  Returns an ad_status. */
typedef int (*ex_item_fn)(void *ctx, int worker, int item);

/* Runs fn on items[0..n) (NULL: 0..n−1), handed out in that order to
 * n_threads workers: the calling thread and n_threads − 1 new threads,
 * joined before it returns (none if n_threads is 1; fewer if the system
 * refuses a thread).  Each item runs once,
 * on one worker; fn must only read what items share.  Returns AD_OK, or
 * after a failure the status and message of the first failed item in the
 * order given (the items handed out before it still run; once a failure is
 * seen no further item is handed out).  Not for MPI calls inside fn. */
AD_MUST_CHECK int ex_pool_run(int n_threads, int n, const int *items, ex_item_fn fn, void *ctx);
/* ex_pool_run on this rank's block of items 0..n−1 (ex_par_block), in
 * order, then ex_par_agree on the status: collective under mpirun (every
 * rank calls it, one without items too).  Returns, on every rank, AD_OK or
 * the status and message of the first failed item of all n. */
AD_MUST_CHECK int ex_par_run(int n_threads, int n, ex_item_fn fn, void *ctx);
/* Collective: the ranks' statuses after work each did alone (its items),
 * made one, so that the ranks go on or stop together.  AD_OK when rc is
 * AD_OK on every rank; otherwise, on every rank, the status and message of
 * the lowest rank whose rc is not AD_OK (whose items come first: the
 * failure one process would report).  ex_par_run calls it; a program whose
 * ranks run their block otherwise (ex_pool_run, ex_run_forked_many) calls
 * it before the next exchange.  Without mpirun it returns rc. */
AD_MUST_CHECK int ex_par_agree(int rc);
/* Whether msg (a message in ad_error()) is, or ends with, the failure the
 * last ex_par_agree gave every rank: rank 0 prints that one (ex_exit). */
bool ex_par_agreed(const char *msg);

/* Collective: records[i] (size bytes each) of every item i of n, filled by
 * the rank that owns i (ex_par_block), are copied to every rank. */
AD_MUST_CHECK int ex_par_share(void *records, size_t size, int n);
/* Collective: acc[k] += rows[i][k] / divisor for every item i of n in
 * order 0..n−1 and k in 0..len−1, with the rows on the ranks that own them
 * (rows[i] is read on i's rank only) — the same operations in the same
 * order as one process's loop, so the same bits.  acc is zero (or a start)
 * on rank 0 and is the sum on every rank after.  Ranks pass the partial
 * sums along in rank order (in pieces of 64 KiB, so they overlap), then the
 * last rank broadcasts the sum: each rank sends len numbers once or twice. */
AD_MUST_CHECK int ex_par_fold(ad_real *acc, size_t len, ad_real *const *rows, int n, int divisor);
/* Collective: text[i] (len[i] bytes) of every item i of n, made by the rank
 * that owns it, arrives on rank 0 (malloc'ed there, NUL-terminated; its own
 * items untouched).  Other ranks' arrays are left as they were. */
AD_MUST_CHECK int ex_par_collect(char **text, size_t *len, int n);
/* Collective: bytes of buf from rank root to every rank. */
AD_MUST_CHECK int ex_par_bcast(void *buf, size_t bytes, int root);
/* Collective: whether path exists, as rank 0 sees it. */
bool ex_par_exists(const char *path);

/* ---- tables of numbers --------------------------------------------------- */

/* Rows of doubles kept in memory: a log written as CSV and checkpointed.
 * fmt gives each column's printf format, separated by spaces; the last one
 * serves the columns after it ("%.0f %.4f %.6g" for 5 columns: the last
 * three "%.6g"). */
typedef struct ex_table {
    const char *name;   /* its field in a checkpoint */
    const char *header; /* the CSV header line */
    const char *fmt;
    int n_cols, n_rows, cap;
    double *rows;       /* n_rows x n_cols, owned */
} ex_table;

/* Appends one row (n_cols numbers).  AD_OK or AD_ENOMEM. */
AD_MUST_CHECK int ex_table_push(ex_table *t, const double *row);
/* Its rows as CSV lines (no header) into f, as ex_table_save writes them. */
void ex_table_write(const ex_table *t, FILE *f);
/* Writes DIR/name: the header, then one line per row. */
AD_MUST_CHECK int ex_table_save(const ex_table *t, ex_out *o, const char *name);
void ex_table_free(ex_table *t);

/* ---- checkpoints ----------------------------------------------------------
 * A file that verifies itself: a header line
 *     hypertape-checkpoint 1 KIND VERSION BYTES CRC32
 * then BYTES bytes of named fields, each a name, a type and a count before
 * its values.  Reading checks the header (kind and version as expected),
 * the length, the CRC32 of the fields (zlib's), and then every field as it
 * is asked for by name, with a range for every number and a bound for every
 * count; a message names the file and the field.
 *
 *     ex_ckpt c;
 *     ex_ckpt_begin(&c);
 *     ex_ckpt_put_int(&c, "iter", it);
 *     ex_ckpt_put_reals(&c, "lambda", lam->data, lam->size);
 *     rc = ex_ckpt_commit(&c, &out, "ckpt.bin", "mine", 1);  // atomic
 *     ...
 *     rc = ex_ckpt_open(&c, path, "mine", 1);
 *     if (rc == AD_OK) rc = ex_ckpt_get_int(&c, "iter", 0, iters, &it);
 *     if (rc == AD_OK) rc = ex_ckpt_get_reals(&c, "lambda", lam->data, lam->size, -1e6, 1e6);
 *     if (rc == AD_OK) rc = ex_ckpt_end(&c);     // nothing left over
 *     ex_ckpt_free(&c);
 */
typedef struct ex_ckpt {
    FILE *f;       /* the fields, in memory */
    char *buf;
    size_t len, pos;
    int rc;        /* writing: the first failure */
    char path[EX_PATH_LEN];
} ex_ckpt;

AD_MUST_CHECK int ex_ckpt_begin(ex_ckpt *c);
/* Each put appends a field; a failure is kept and returned by commit. */
void ex_ckpt_put_int(ex_ckpt *c, const char *field, long long v);
void ex_ckpt_put_f64(ex_ckpt *c, const char *field, const double *v, size_t n);
void ex_ckpt_put_reals(ex_ckpt *c, const char *field, const ad_real *v, size_t n);
void ex_ckpt_put_text(ex_ckpt *c, const char *field, const char *s);
void ex_ckpt_put_rng(ex_ckpt *c, const char *field, const ad_rng *rng);
void ex_ckpt_put_outer(ex_ckpt *c, const char *field, const opt_outer *o);
void ex_ckpt_put_table(ex_ckpt *c, const ex_table *t);
/* Writes DIR/name atomically (ex_file: temporary name, fsync, rename,
 * fsync of the folder) and frees the fields. */
AD_MUST_CHECK int ex_ckpt_commit(ex_ckpt *c, ex_out *o, const char *name, const char *kind,
                                 int version);

/* Reads and verifies path: AD_EIO when it cannot be read (errno ENOENT:
 * there is none), AD_EFORMAT "PATH is not a hypertape checkpoint", "...is
 * a KIND checkpoint, not ...", "...was written by version N", "...is
 * truncated", "...is damaged (CRC ...)". */
AD_MUST_CHECK int ex_ckpt_open(ex_ckpt *c, const char *path, const char *kind, int version);

/* Collective (every rank calls it): rank 0 reads path and every rank gets
 * its bytes, status and message; then as ex_ckpt_open. */
AD_MUST_CHECK int ex_ckpt_open_all(ex_ckpt *c, const char *path, const char *kind, int version);

/* ex_ckpt_open on a copy of data[0..len), named `name` in messages as the
 * path would be (the fuzz target's entry; a checkpoint held in memory). */
AD_MUST_CHECK int ex_ckpt_open_mem(ex_ckpt *c, const char *name, const void *data, size_t len,
                                   const char *kind, int version);
/* The next field must be `field` of the right type: AD_EFORMAT naming the
 * file and field otherwise, or when a value is out of range or not finite. */
AD_MUST_CHECK int ex_ckpt_get_int(ex_ckpt *c, const char *field, long long lo, long long hi,
                                  long long *out);
AD_MUST_CHECK int ex_ckpt_get_f64(ex_ckpt *c, const char *field, double *v, size_t n,
                                  double lo, double hi);
/* As ex_ckpt_get_f64 into ad_real; [lo, hi] is cut to ad_real's finite
 * range (±FLT_MAX in the float build), so every value read is finite. */
AD_MUST_CHECK int ex_ckpt_get_reals(ex_ckpt *c, const char *field, ad_real *v, size_t n,
                                    double lo, double hi);
AD_MUST_CHECK int ex_ckpt_get_text(ex_ckpt *c, const char *field, char *s, size_t cap);
/* A state xoshiro can be in (not all zero). */
AD_MUST_CHECK int ex_ckpt_get_rng(ex_ckpt *c, const char *field, ad_rng *rng);
/* opt_outer_load into o (initialized over the same parameters). */
AD_MUST_CHECK int ex_ckpt_get_outer(ex_ckpt *c, const char *field, opt_outer *o);
/* t's rows (t->n_cols columns, at most max_rows rows, every value finite). */
AD_MUST_CHECK int ex_ckpt_get_table(ex_ckpt *c, ex_table *t, int max_rows);
/* Whether the next field is `field` (an optional part). */
bool ex_ckpt_next_is(const ex_ckpt *c, const char *field);
/* AD_EFORMAT if bytes are left after the last field read. */
AD_MUST_CHECK int ex_ckpt_end(ex_ckpt *c);
void ex_ckpt_free(ex_ckpt *c);

#endif
