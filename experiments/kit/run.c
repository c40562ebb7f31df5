/* run.c — time, progress lines, memory, and work in a child process that
 * dies with its parent; see kit.h. */
#define _DEFAULT_SOURCE /* getrusage, isatty */

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <stdarg.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "experiments/kit/kit.h"

/* ---- time -------------------------------------------------------------------- */

double ex_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

const char *ex_duration(double s, char buf[16])
{
    if (!(s >= 0) || s > 1e8) snprintf(buf, 16, "?");
    else if (s < 60) snprintf(buf, 16, "%.0fs", s);
    else if (s < 3600) snprintf(buf, 16, "%dm%02ds", (int)s / 60, (int)s % 60);
    else snprintf(buf, 16, "%dh%02dm", (int)s / 3600, (int)s / 60 % 60);
    return buf;
}

bool ex_due(double *last, double every)
{
    double t = ex_now();
    if (t - *last < every) return false;
    *last = t;
    return true;
}

double ex_median(double *x, int n)
{
    for (int i = 1; i < n; i++) /* insertion sort: n is small */
        for (int j = i; j > 0 && x[j - 1] > x[j]; j--) {
            double t = x[j];
            x[j] = x[j - 1];
            x[j - 1] = t;
        }
    return n == 0 ? NAN : n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

/* ---- progress ------------------------------------------------------------------ */

/* Set in a child of ex_run_forked_many that runs beside others: its
 * progress lines are whole lines, as in a log, so that several children's
 * lines do not overwrite one another on a terminal. */
static bool progress_as_log;

void ex_progress_init(ex_progress *p)
{
    *p = (ex_progress){ .tty = !progress_as_log && isatty(STDERR_FILENO) != 0, .last = -1e9 };
}

/* Worker threads may draw one progress line (ex_pool_run items). */
static pthread_mutex_t progress_lock = PTHREAD_MUTEX_INITIALIZER;

void ex_progress_line(ex_progress *p, bool force, const char *fmt, ...)
{
    pthread_mutex_lock(&progress_lock);
    double t = ex_now();
    if (!force && t - p->last < (p->tty ? 0.25 : 15)) {
        pthread_mutex_unlock(&progress_lock);
        return;
    }
    p->last = t;
    if (progress_as_log) p->tty = false; /* a progress started before the fork */
    if (p->tty) fputs("\r\033[K", stderr);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (!p->tty) fputc('\n', stderr);
    p->open = p->tty;
    fflush(stderr);
    pthread_mutex_unlock(&progress_lock);
}

void ex_progress_end(ex_progress *p)
{
    if (p->open) fputc('\n', stderr);
    p->open = false;
}

/* ---- memory -------------------------------------------------------------------- */

long ex_peak_rss_kb(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_maxrss : 0; /* KiB on Linux */
}

long ex_rss_now_kb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, rss = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0;
        fclose(f);
    }
    return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

/* ---- a child process ------------------------------------------------------------ */

/* The child's side: dies with the parent, runs the work, sends the result,
 * exits 0 only when the work succeeded and every byte went through. */
static _Noreturn void child(int fd, pid_t parent, ex_work work, void *arg, void *result,
                            size_t size)
{
#ifdef __linux__
    /* SIGKILL when the parent dies; then the parent may have died before
     * this line, leaving us adopted: check. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
    if (getppid() != parent) _exit(1);
    int rc = work(arg, result);
    if (rc != AD_OK) fprintf(ex_err(), "%s: %s\n", ex_prog(), ad_error());
    const char *p = result;
    size_t left = size;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        p += w;
        left -= (size_t)w;
    }
    close(fd);
    fflush(NULL); /* rows the work wrote to files, then stdout and stderr */
    _exit(rc == AD_OK && left == 0 ? 0 : 1);
}

/* Forks a child that runs work(arg, result) and sends its result back through
 * a pipe (child()); *pid and *read_end for the parent.  as_log: the child's
 * progress lines go out as log lines (it runs beside other children). */
static int fork_child(bool as_log, ex_work work, void *arg, void *result, size_t size, pid_t *pid,
                      int *read_end)
{
    int fd[2];
    if (pipe(fd) != 0) return ad_fail(AD_EIO, "pipe: %s", strerror(errno));
    fflush(NULL); /* else both processes would write what is buffered */
    pid_t parent = getpid(), p = fork();
    if (p < 0) {
        close(fd[0]);
        close(fd[1]);
        return ad_fail(AD_EIO, "fork: %s", strerror(errno));
    }
    if (p == 0) {
        close(fd[0]);
        progress_as_log = as_log;
        child(fd[1], parent, work, arg, result, size);
    }
    close(fd[1]);
    *pid = p;
    *read_end = fd[0];
    return AD_OK;
}

/* ---- children: one, or several at once ------------------------------------------- */

/* One item's work as an ex_work, for child(). */
typedef struct item_job {
    ex_item_work work;
    void *ctx;
    int item;
} item_job;

static int item_job_run(void *arg, void *result)
{
    const item_job *j = arg;
    return j->work(j->ctx, j->item, result);
}

/* A child at work: where its result goes and how much of it came. */
typedef struct slot {
    pid_t pid;
    int fd, pos, item;
    size_t got;
} slot;

/* Starts the child for position pos of the hand-out order into s. */
static int start_child(slot *s, int pos, int item, bool beside_others, ex_item_work work,
                       void *ctx, char *result, size_t size)
{
    item_job j = { work, ctx, item }; /* the child has its own copy */
    pid_t pid;
    int fd;
    int rc = fork_child(beside_others, item_job_run, &j, result, size, &pid, &fd);
    if (rc == AD_OK) *s = (slot){ .pid = pid, .fd = fd, .pos = pos, .item = item };
    return rc;
}

/* Reads what the child sent; at the end of its pipe, waits for it and
 * returns 1 with *rc its status (AD_OK, or a failure with the message set);
 * 0 while it is still running. */
static int drain_child(slot *s, char *result, size_t size, const char *label, int *rc)
{
    char extra;
    ssize_t r = s->got < size ? read(s->fd, result + s->got, size - s->got)
                              : read(s->fd, &extra, 1);
    if (r < 0 && (errno == EINTR || errno == EAGAIN)) return 0;
    if (r > 0) {
        if (s->got < size) s->got += (size_t)r;
        return 0;
    }
    close(s->fd);
    int status = 0;
    while (waitpid(s->pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (s->got == size && WIFEXITED(status) && WEXITSTATUS(status) == 0) *rc = AD_OK;
    else if (WIFSIGNALED(status))
        *rc = ad_fail(AD_EARG, "%s: the child process died of signal %d", label, WTERMSIG(status));
    else *rc = ad_fail(AD_EARG, "%s failed (see the message above)", label);
    return 1;
}

int ex_run_forked(const char *label, ex_work work, void *arg, void *result, size_t size)
{
    slot s = { 0 }; /* read to the end of its pipe (blocking), then waited for */
    int rc = fork_child(progress_as_log, work, arg, result, size, &s.pid, &s.fd);
    while (rc == AD_OK && !drain_child(&s, result, size, label, &rc)) {
    }
    return rc;
}

int ex_run_forked_many(int n_parallel, int n, const int *items, const char *const *labels,
                       ex_item_work work, void *ctx, void *results, size_t size)
{
    if (n <= 0) return AD_OK;
    if (n_parallel > n) n_parallel = n;
    if (n_parallel > EX_MAX_THREADS) n_parallel = EX_MAX_THREADS;
    if (n_parallel < 1) n_parallel = 1;
    slot run[EX_MAX_THREADS];
    struct pollfd pf[EX_MAX_THREADS];
    int running = 0, next = 0, fail_pos = n, fail_rc = AD_OK;
    char fail_msg[1024] = "";
    char *res = results;
    for (;;) {
        /* Start children while there are free places and no failure. */
        while (running < n_parallel && next < n && fail_pos == n) {
            int item = items ? items[next] : next;
            int rc = start_child(&run[running], next, item, n_parallel > 1, work, ctx,
                                 res + (size_t)item * size, size);
            if (rc != AD_OK) {
                fail_pos = next;
                fail_rc = rc;
                snprintf(fail_msg, sizeof fail_msg, "%s", ad_error());
                break;
            }
            running++;
            next++;
        }
        if (running <= 0) break;
        for (int i = 0; i < running; i++) pf[i] = (struct pollfd){ .fd = run[i].fd, .events = POLLIN };
        if (poll(pf, (nfds_t)running, -1) < 0 && errno != EINTR) {
            fail_rc = ad_fail(AD_EIO, "poll: %s", strerror(errno));
            snprintf(fail_msg, sizeof fail_msg, "%s", ad_error());
            fail_pos = -1; /* before every item: nothing else is reported */
            for (int i = 0; i < running; i++) { /* end the children without reading: a */
                close(run[i].fd);                 /* later child holds this pipe open too */
                kill(run[i].pid, SIGKILL);
                while (waitpid(run[i].pid, NULL, 0) < 0 && errno == EINTR) {
                }
            }
            break;
        }
        for (int i = running - 1; i >= 0; i--) {
            if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            int rc;
            slot *s = &run[i];
            if (!drain_child(s, res + (size_t)s->item * size, size, labels[s->item], &rc)) continue;
            if (rc != AD_OK && s->pos < fail_pos) {
                fail_pos = s->pos;
                fail_rc = rc;
                snprintf(fail_msg, sizeof fail_msg, "%s", ad_error());
            }
            run[i] = run[--running];
        }
    }
    return fail_rc == AD_OK ? AD_OK : ad_fail(fail_rc, "%s", fail_msg);
}

/* ---- divergence ---------------------------------------------------------------- */

void ex_watch_init(ex_watch *w, const char *hint)
{
    *w = (ex_watch){ .factor = EX_DIVERGE_FACTOR, .hint = hint, .val_first = NAN };
}

/* Whether x rose from `start` by more than (factor − 1)·|start|. */
static bool risen(const ex_watch *w, double start, double x)
{
    return x - start > (w->factor - 1) * fabs(start);
}

int ex_watch_inner(const ex_watch *w, const hg_report *r)
{
    const char *sep = w->hint ? "; " : "", *hint = w->hint ? w->hint : "";
    if (r->inner_nonfinite_step > 0 || !isfinite(r->inner_loss_first))
        return ad_fail(AD_ENONFINITE, "diverged: the inner loss is not finite from step %d "
                       "(g_1 = %g)%s%s", r->inner_nonfinite_step > 0 ? r->inner_nonfinite_step : 1,
                       r->inner_loss_first, sep, hint);
    if (!isfinite(r->inner_loss_last) || risen(w, r->inner_loss_first, r->inner_loss_last))
        return ad_fail(EX_EDIVERGED, "diverged: the inner loss rose from g_1 = %g to g_T = %g "
                       "(more than %g times; its largest rise at step %d)%s%s",
                       r->inner_loss_first, r->inner_loss_last, w->factor,
                       r->inner_loss_max_rise_step, sep, hint);
    return AD_OK;
}

bool ex_diverged(int rc)
{
    return rc == EX_EDIVERGED || rc == AD_ENONFINITE;
}

int ex_watch_val(ex_watch *w, int iter, double val)
{
    const char *sep = w->hint ? "; " : "", *hint = w->hint ? w->hint : "";
    if (!isfinite(val))
        return ad_fail(AD_ENONFINITE, "diverged: the validation loss is %g%s%s", val, sep, hint);
    if (isnan(w->val_first)) {
        w->val_first = val;
        w->val_first_iter = iter;
    } else if (risen(w, w->val_first, val)) {
        return ad_fail(EX_EDIVERGED, "diverged: the validation loss rose from %g (hyper-iteration "
                       "%d) to %g (more than %g times)%s%s", w->val_first, w->val_first_iter, val,
                       w->factor, sep, hint);
    }
    return AD_OK;
}
