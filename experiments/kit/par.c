/* par.c — parallel work: a pool of worker threads, and the MPI ranks a
 * program runs on under mpirun, with the exchanges that keep results in item
 * order; see kit.h. */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if EX_HAVE_MPI
#include <mpi.h>
#endif

#include "experiments/kit/kit.h"

#if EX_HAVE_OPENBLAS_THREADS
void openblas_set_num_threads(int n); /* OpenBLAS's own; cblas.h of other BLAS lacks it */
#endif

/* This process among the ranks; rank 0 of 1 without mpirun. */
static struct {
    int rank, size, local_size;
    bool mpi;       /* MPI_Init was called (and MPI_Finalize is due) */
    FILE *err;      /* failure messages: stderr, or a copy of it on ranks > 0 */
    char agreed[1024]; /* the failure the last ex_par_agree gave every rank ("": none) */
} par = { 0, 1, 1, false, NULL, "" };

/* ---- the ranks ------------------------------------------------------------------ */

/* Whether a launcher started this process as one of several: Open MPI's
 * mpirun sets OMPI_COMM_WORLD_SIZE, PMIx launchers PMIX_RANK, MPICH's
 * hydra and Slurm PMI_SIZE.  Checked before MPI_Init, so that a program run
 * by hand does not pay for (or depend on) a singleton MPI start. */
static int launched_size(void)
{
    const char *v = getenv("OMPI_COMM_WORLD_SIZE");
    if (!v) v = getenv("PMI_SIZE");
    if (v) return atoi(v) > 0 ? atoi(v) : 1;
    return getenv("PMIX_RANK") ? 2 : 1; /* a size to be learnt from MPI itself */
}

/* Ranks > 0 print nothing (rank 0 prints the progress and the tables for
 * all): the stdio streams stdout and stderr go to /dev/null, and failure
 * messages to the original stderr (ex_err).  With glibc only the streams
 * are replaced, so what is written to file descriptor 2 directly (a
 * sanitizer's report) still shows; elsewhere the descriptors themselves go
 * to /dev/null. */
static int quiet_rank(void)
{
#if defined(__GLIBC__)
    FILE *null = fopen("/dev/null", "w");
    if (!null)
        return ad_fail(AD_EIO, "rank %d: cannot open /dev/null: %s", par.rank, strerror(errno));
    fflush(stdout);
    fflush(stderr);
    par.err = stderr;
    stdout = null;
    stderr = null;
    return AD_OK;
#else
    int fd = dup(STDERR_FILENO);
    FILE *err = fd >= 0 ? fdopen(fd, "w") : NULL;
    int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (!err || null < 0 || dup2(null, STDOUT_FILENO) < 0 || dup2(null, STDERR_FILENO) < 0) {
        if (err) fclose(err);
        else if (fd >= 0) close(fd);
        if (null >= 0) close(null);
        return ad_fail(AD_EIO, "rank %d: cannot silence stdout and stderr: %s", par.rank,
                       strerror(errno));
    }
    close(null);
    setvbuf(err, NULL, _IOLBF, 0);
    par.err = err;
    return AD_OK;
#endif
}

int ex_par_init(int *argc, char ***argv)
{
#if EX_HAVE_OPENBLAS_THREADS
    /* OpenBLAS's sums depend on its thread count (a dgemm of [64,576]x[576,980]
     * differs in its last bits between 1 and 2 threads): one BLAS thread, so
     * the numbers never depend on --threads; the parallelism is the items. */
    openblas_set_num_threads(1);
#endif
    if (launched_size() <= 1) return AD_OK;
#if EX_HAVE_MPI
    int provided = 0;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return ad_fail(AD_EIO, "MPI_Init_thread failed");
    par.mpi = true;
    MPI_Comm_rank(MPI_COMM_WORLD, &par.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &par.size);
    /* The ranks on this machine share its cores (ex_par_threads). */
    MPI_Comm node;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) ==
        MPI_SUCCESS) {
        MPI_Comm_size(node, &par.local_size);
        MPI_Comm_free(&node);
    }
    if (provided < MPI_THREAD_FUNNELED)
        return ad_fail(AD_EIO, "this MPI does not allow threads beside the one calling it "
                       "(MPI_THREAD_FUNNELED)");
    return par.rank > 0 ? quiet_rank() : AD_OK;
#else
    (void)argc, (void)argv;
    return ad_fail(AD_EUNSUPPORTED, "started by mpirun, but built without MPI: every process "
                   "would run the whole job; install libopenmpi-dev and rebuild (meson "
                   "-Dmpi=enabled)");
#endif
}

int ex_par_rank(void) { return par.rank; }
int ex_par_size(void) { return par.size; }

/* MPI_Finalize (once), after MPI_Abort when `abort` and status is not 0. */
static int end_ranks(int status, bool abort)
{
#if EX_HAVE_MPI
    if (par.mpi) {
        fflush(NULL);
        if (abort && status != 0 && par.size > 1) MPI_Abort(MPI_COMM_WORLD, status);
        MPI_Finalize();
        par.mpi = false;
    }
#else
    (void)abort;
#endif
    return status;
}

int ex_par_end(int status)
{
    /* A failure on one rank leaves the others waiting in an exchange that
     * will never come: end them all.  Bad usage usually fails alike on
     * every rank, but not always (a check only the writer makes).  A
     * failure every rank learnt from ex_par_agree, though, ends every rank
     * here alike, rank 0 printing it (ex_exit): none waits, and an abort
     * would only race the message to mpirun (it may kill rank 0 first). */
    return end_ranks(status, !ex_par_agreed(ad_error()));
}

int ex_par_end_all(int status)
{
    /* Every rank is here, none waits in an exchange: each ends as it would
     * alone, and mpirun exits with the status (no rank is killed). */
    return end_ranks(status, false);
}

FILE *ex_err(void)
{
    return par.err ? par.err : stderr;
}

/* The cores this process may run on (its CPU affinity), at least 1. */
static int cores(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int ex_par_threads(void)
{
    int n = cores() / (par.local_size > 0 ? par.local_size : 1);
    return n > 0 ? n : 1;
}

/* ---- items over ranks ---------------------------------------------------------- */

/* Items [first, end) of n belong to rank r: contiguous blocks in rank order,
 * sizes differing by at most one, the larger ones first (so rank 0 has item
 * 0 whenever there is one). */
static void block_of(int r, int n, int *first, int *end)
{
    long long P = par.size;
    *first = (int)(((long long)n * r + P - 1) / P);
    *end = (int)(((long long)n * (r + 1) + P - 1) / P);
}

void ex_par_block(int n, int *first, int *end)
{
    block_of(par.rank, n, first, end);
}

/* ---- the worker pool -------------------------------------------------------------- */

/* What the workers share: the hand-out counter and the first failure (the
 * smallest position in the hand-out order, whatever the timing). */
typedef struct pool {
    ex_item_fn fn;
    void *ctx;
    const int *items; /* NULL: the items offset, offset + 1, ... */
    int n, offset;
    atomic_int next;
    atomic_bool stop;
    pthread_mutex_t lock;
    int fail_pos, fail_rc;
    char fail_msg[1024];
} pool;

typedef struct worker {
    pool *p;
    int index;
} worker;

static void *worker_main(void *arg)
{
    const worker *w = arg;
    pool *p = w->p;
    for (;;) {
        if (atomic_load(&p->stop)) break;
        int pos = atomic_fetch_add(&p->next, 1);
        if (pos >= p->n) break;
        int item = p->items ? p->items[pos] : p->offset + pos;
        int rc = p->fn(p->ctx, w->index, item);
        if (rc == AD_OK) continue;
        /* Items after this one need not run; those before it were handed out
         * already and finish, so the failure reported is the first in order. */
        atomic_store(&p->stop, true);
        pthread_mutex_lock(&p->lock);
        if (pos < p->fail_pos) { /* ad_error is per thread: carry the message */
            p->fail_pos = pos;
            p->fail_rc = rc;
            snprintf(p->fail_msg, sizeof p->fail_msg, "%s", ad_error());
        }
        pthread_mutex_unlock(&p->lock);
    }
    return NULL;
}

static int pool_run(int n_threads, int n, const int *items, int offset, ex_item_fn fn, void *ctx)
{
    if (n <= 0) return AD_OK;
    if (n_threads > n) n_threads = n;
    if (n_threads < 1) n_threads = 1;
    pool p = { .fn = fn, .ctx = ctx, .items = items, .n = n, .offset = offset, .fail_pos = n };
    atomic_init(&p.next, 0);
    atomic_init(&p.stop, false);
    pthread_mutex_init(&p.lock, NULL);
    worker ws[EX_MAX_THREADS];
    pthread_t tids[EX_MAX_THREADS];
    if (n_threads > EX_MAX_THREADS) n_threads = EX_MAX_THREADS;
    int started = 1; /* the calling thread is worker 0 */
    for (int i = 1; i < n_threads; i++) {
        ws[i] = (worker){ &p, i };
        if (pthread_create(&tids[i], NULL, worker_main, &ws[i]) != 0) break; /* fewer, then */
        started++;
    }
    ws[0] = (worker){ &p, 0 };
    worker_main(&ws[0]);
    for (int i = 1; i < started; i++) pthread_join(tids[i], NULL);
    pthread_mutex_destroy(&p.lock);
    if (p.fail_pos < n) return ad_fail(p.fail_rc, "%s", p.fail_msg);
    return AD_OK;
}

int ex_pool_run(int n_threads, int n, const int *items, ex_item_fn fn, void *ctx)
{
    return pool_run(n_threads, n, items, 0, fn, ctx);
}

int ex_par_run(int n_threads, int n, ex_item_fn fn, void *ctx)
{
    int first, end;
    ex_par_block(n, &first, &end);
    /* A rank whose item failed would otherwise leave the others waiting in
     * the exchange that follows: every rank learns the status first. */
    return ex_par_agree(pool_run(n_threads, end - first, NULL, first, fn, ctx));
}

/* ---- exchanges between ranks ------------------------------------------------------- */

#if EX_HAVE_MPI
/* MPI counts are ints: a message of `bytes` goes in pieces of at most this. */
enum { PIECE = 1 << 30 };

static int mpi_fail(const char *what)
{
    return ad_fail(AD_EIO, "MPI: %s failed", what);
}

/* bytes of buf in pieces: sent to peer ('s'), received from it ('r'), or
 * broadcast from it ('b'). */
static int pieces(char how, void *buf, size_t bytes, int peer, int tag)
{
    char *p = buf;
    for (size_t at = 0; at < bytes; at += PIECE) {
        int len = (int)(bytes - at < PIECE ? bytes - at : PIECE), rc;
        if (how == 's') rc = MPI_Send(p + at, len, MPI_BYTE, peer, tag, MPI_COMM_WORLD);
        else if (how == 'r')
            rc = MPI_Recv(p + at, len, MPI_BYTE, peer, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        else rc = MPI_Bcast(p + at, len, MPI_BYTE, peer, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS)
            return mpi_fail(how == 's' ? "MPI_Send" : how == 'r' ? "MPI_Recv" : "MPI_Bcast");
    }
    return AD_OK;
}
#endif

int ex_par_agree(int rc)
{
#if EX_HAVE_MPI
    if (par.size > 1) {
        /* The lowest rank that failed holds the earliest items (blocks go in
         * rank order), so its first failure is the first in item order: the
         * one a single process would report. */
        int mine = rc != AD_OK ? par.rank : par.size, lowest = par.size;
        if (MPI_Allreduce(&mine, &lowest, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD) != MPI_SUCCESS)
            return mpi_fail("MPI_Allreduce");
        par.agreed[0] = '\0';
        if (lowest == par.size) return AD_OK;
        struct { int rc; char msg[sizeof par.agreed]; } f = { rc, "" };
        if (par.rank == lowest) snprintf(f.msg, sizeof f.msg, "%s", ad_error());
        int st = ex_par_bcast(&f, sizeof f, lowest);
        if (st != AD_OK) return st;
        f.msg[sizeof f.msg - 1] = '\0';
        snprintf(par.agreed, sizeof par.agreed, "%s", f.msg);
        return ad_fail(f.rc, "%s", f.msg);
    }
#endif
    return rc;
}

bool ex_par_agreed(const char *msg)
{
    /* ad_fail_wrap puts context before a message: the agreed one may end
     * msg (unless the wrap cut it; a message then shows twice). */
    size_t n = strlen(msg), a = strlen(par.agreed);
    return a > 0 && n >= a && strcmp(msg + n - a, par.agreed) == 0;
}

int ex_par_bcast(void *buf, size_t bytes, int root)
{
#if EX_HAVE_MPI
    if (par.size > 1) return pieces('b', buf, bytes, root, 0);
#else
    (void)buf, (void)bytes, (void)root;
#endif
    return AD_OK;
}

int ex_par_share(void *records, size_t size, int n)
{
#if EX_HAVE_MPI
    if (par.size > 1 && n > 0) {
        /* Each block goes from its rank to every other, as one broadcast per
         * rank: the records are small (a few numbers per item). */
        for (int r = 0; r < par.size; r++) {
            int first, end;
            block_of(r, n, &first, &end);
            int rc = ex_par_bcast((char *)records + (size_t)first * size,
                                  (size_t)(end - first) * size, r);
            if (rc != AD_OK) return rc;
        }
    }
#else
    (void)records, (void)size, (void)n;
#endif
    return AD_OK;
}

/* acc[k] += row[k] / divisor for k in [lo, hi), for each of the rows in
 * order: the serial loop, whose order the result depends on. */
static void fold_rows(ad_real *acc, size_t lo, size_t hi, ad_real *const *rows, int first,
                      int end, int divisor)
{
    for (int i = first; i < end; i++)
        for (size_t k = lo; k < hi; k++) acc[k] += rows[i][k] / divisor;
}

int ex_par_fold(ad_real *acc, size_t len, ad_real *const *rows, int n, int divisor)
{
    int first, end;
    ex_par_block(n, &first, &end);
#if EX_HAVE_MPI
    if (par.size > 1) {
        /* A chain: rank r takes the partial sums of items < first from rank
         * r − 1, adds its own items in order and passes them on; the last rank
         * has the sum of all, as one process makes it, and sends it to every
         * rank.  In pieces, so that the ranks work at once on different parts
         * of the vector (each element's sum is independent of the others'). */
        const size_t piece = (size_t)1 << 13; /* 64 KiB of doubles */
        MPI_Datatype t = sizeof(ad_real) == sizeof(double) ? MPI_DOUBLE : MPI_FLOAT;
        int last = par.size - 1, rc = MPI_SUCCESS;
        for (size_t lo = 0; lo < len && rc == MPI_SUCCESS; lo += piece) {
            size_t hi = len - lo < piece ? len : lo + piece;
            if (par.rank > 0)
                rc = MPI_Recv(acc + lo, (int)(hi - lo), t, par.rank - 1, 7, MPI_COMM_WORLD,
                              MPI_STATUS_IGNORE);
            fold_rows(acc, lo, hi, rows, first, end, divisor);
            if (rc == MPI_SUCCESS && par.rank < last)
                rc = MPI_Send(acc + lo, (int)(hi - lo), t, par.rank + 1, 7, MPI_COMM_WORLD);
        }
        for (size_t lo = 0; lo < len && rc == MPI_SUCCESS; lo += piece) {
            size_t hi = len - lo < piece ? len : lo + piece;
            rc = MPI_Bcast(acc + lo, (int)(hi - lo), t, last, MPI_COMM_WORLD);
        }
        return rc == MPI_SUCCESS ? AD_OK : mpi_fail("the ordered sum");
    }
#endif
    fold_rows(acc, 0, len, rows, first, end, divisor);
    return AD_OK;
}

int ex_par_collect(char **text, size_t *len, int n)
{
#if EX_HAVE_MPI
    if (par.size > 1) {
        int first, end;
        ex_par_block(n, &first, &end);
        int rc = AD_OK;
        if (par.rank > 0) {
            for (int i = first; i < end && rc == AD_OK; i++) {
                unsigned long long l = len[i];
                rc = pieces('s', &l, sizeof l, 0, 8);
                if (rc == AD_OK) rc = pieces('s', text[i], len[i], 0, 9);
            }
            return rc;
        }
        for (int r = 1; r < par.size; r++) {
            int f, e;
            block_of(r, n, &f, &e);
            for (int i = f; i < e; i++) {
                unsigned long long l = 0;
                if (rc == AD_OK) rc = pieces('r', &l, sizeof l, r, 8);
                text[i] = NULL;
                len[i] = 0;
                if (rc == AD_OK && !(text[i] = malloc(l + 1)))
                    rc = ad_fail(AD_ENOMEM, "out of memory");
                if (rc == AD_OK) rc = pieces('r', text[i], l, r, 9);
                if (rc == AD_OK) {
                    text[i][l] = '\0';
                    len[i] = l;
                }
                /* after a failure keep receiving nothing: the run ends (ex_par_end) */
            }
        }
        return rc;
    }
#else
    (void)text, (void)len, (void)n;
#endif
    return AD_OK;
}

bool ex_par_exists(const char *path)
{
    int found = par.rank == 0 && access(path, F_OK) == 0;
    /* A failed broadcast leaves the other ranks with "not found"; MPI's own
     * error handler has already ended the run by then (MPI_ERRORS_ARE_FATAL). */
    AD_IGNORE(ex_par_bcast(&found, sizeof found, 0));
    return found;
}
