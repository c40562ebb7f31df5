/* out.c — the output folder: creation, the lock, files written under a
 * temporary name and renamed when complete, gnuplot; see kit.h. */
#define _DEFAULT_SOURCE /* flock, mkstemp, fchmod */

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "experiments/kit/kit.h"

/* mkdir -p: path and every missing folder above it. */
static int make_dirs(const char *path)
{
    char buf[EX_PATH_LEN];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *s = buf + 1;; s++) { /* each prefix ending at a '/', then the whole */
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

/* ex_file_open's temporaries: .NAME.partial.XXXXXX in a locked folder,
 * .NAME.shared.XXXXXX in a shared one (mkstemp fills the X's with letters
 * and digits).  The marker keeps a user's hidden files (.env.backup) and
 * other tools' temporaries out of the clean-up. */
#define TMP_LOCKED ".partial."
#define TMP_SHARED ".shared."

/* Whether name is a temporary of a locked folder's run. */
static bool is_temporary(const char *name)
{
    size_t n = strlen(name), m = sizeof TMP_LOCKED - 1;
    if (n < 2 + m + 6 || name[0] != '.' || strncmp(name + n - 6 - m, TMP_LOCKED, m) != 0)
        return false;
    for (size_t i = n - 6; i < n; i++)
        if (!isalnum((unsigned char)name[i])) return false;
    return true;
}

/* Removes the temporaries an interrupted run left (a kill -9 runs no clean-up
 * of its own).  Only called with the folder's lock held, so no live run that
 * writes them holds the folder; a shared folder's writers (ex_out_open_shared,
 * no lock) mark theirs .shared. and are left alone. */
static void remove_temporaries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return; /* nothing to tidy is no failure */
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        char path[EX_PATH_LEN + EX_NAME_LEN + 16];
        struct stat sb;
        if (!is_temporary(e->d_name) ||
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path ||
            lstat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
            continue;
        n += unlink(path) == 0;
    }
    closedir(d);
    if (n > 0)
        fprintf(stderr, "%s: removed %d unfinished temporary file(s) an interrupted run left in %s\n",
                ex_prog(), n, dir);
}

/* Who holds a lock, written into it as "PID HOST PIDNS": PIDNS is the inode
 * of the process's PID namespace (0 if unknown).  A PID means something only
 * on its machine and in its namespace (a container, NFS). */
typedef struct holder {
    long pid;
    char host[256];
    unsigned long ns;
} holder;

static void holder_self(holder *h)
{
    struct stat sb;
    h->pid = (long)getpid();
    if (gethostname(h->host, sizeof h->host - 1) != 0) snprintf(h->host, sizeof h->host, "?");
    h->host[sizeof h->host - 1] = '\0';
    h->host[strcspn(h->host, " \n")] = '\0';
    h->ns = stat("/proc/self/ns/pid", &sb) == 0 ? (unsigned long)sb.st_ino : 0;
}

/* The holder fd's lock file names; pid 0 when it names none (yet). */
static void holder_read(int fd, holder *h)
{
    char text[300];
    ssize_t n = pread(fd, text, sizeof text - 1, 0);
    text[n > 0 ? n : 0] = '\0';
    *h = (holder){ 0 };
    if (sscanf(text, "%ld %255s %lu", &h->pid, h->host, &h->ns) < 1) h->pid = 0;
}

/* The refusal of a lock held by another: the holder it names (read again
 * after a moment when that is a process gone from here, as a new holder may
 * not have written itself yet). */
static int lock_refused(const char *dir, int fd)
{
    holder me, them;
    holder_self(&me);
    for (int attempt = 0; attempt < 2; attempt++) {
        if (attempt) usleep(100 * 1000);
        holder_read(fd, &them);
        bool here = !strcmp(them.host, me.host) && them.ns == me.ns && me.ns != 0;
        if (!(them.pid > 0 && here && kill((pid_t)them.pid, 0) != 0 && errno == ESRCH)) break;
        if (attempt == 1)
            /* The lock outlives a killed run while its children end (they
             * die with it, PR_SET_PDEATHSIG, but not in the same instant). */
            return ad_fail(AD_EIO, "%s is still held by the child processes of run %ld, which "
                           "has ended; they end with it: try again in a moment", dir, them.pid);
    }
    if (them.pid <= 0)
        return ad_fail(AD_EIO, "%s is in use by another run (process ?); wait for it to end or "
                       "choose another --out", dir);
    bool same_host = !strcmp(them.host, me.host);
    return ad_fail(AD_EIO, "%s is in use by another run (process %ld%s%s); wait for it to end or "
                   "choose another --out", dir, them.pid, same_host ? "" : " on ",
                   same_host ? "" : them.host);
}

/* Takes the lock dir/.lock (kept until the process and its children have
 * all closed it), writes who holds it into it, and removes what an
 * interrupted run left. */
static int lock_dir(ex_out *o)
{
    char path[EX_PATH_LEN + 8], id[300 + 64];
    if (snprintf(path, sizeof path, "%s/.lock", o->dir) >= (int)sizeof path)
        return ad_fail(EX_EUSAGE, "--out: path too long");
    o->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (o->lock_fd < 0) return ad_fail(AD_EIO, "cannot lock %s: %s", path, strerror(errno));
    if (flock(o->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        int rc = e == EWOULDBLOCK ? lock_refused(o->dir, o->lock_fd)
                                  : ad_fail(AD_EIO, "cannot lock %s: %s", path, strerror(e));
        close(o->lock_fd);
        o->lock_fd = -1;
        return rc;
    }
    holder me;
    holder_self(&me);
    int n = snprintf(id, sizeof id, "%ld %s %lu\n", me.pid, me.host, me.ns);
    if (ftruncate(o->lock_fd, 0) != 0 || pwrite(o->lock_fd, id, (size_t)n, 0) != n) {
        /* the lock holds all the same; the id is only for the message */
    }
    remove_temporaries(o->dir);
    return AD_OK;
}

/* Whether an executable gnuplot is in a folder on PATH. */
static bool gnuplot_on_path(void)
{
    const char *path = getenv("PATH");
    char dir[EX_PATH_LEN];
    for (const char *p = path ? path : ""; *p;) {
        size_t n = strcspn(p, ":");
        if (n > 0 && n + sizeof "/gnuplot" < sizeof dir) {
            snprintf(dir, sizeof dir, "%.*s/gnuplot", (int)n, p);
            if (access(dir, X_OK) == 0) return true;
        }
        p += n + (p[n] == ':');
    }
    return false;
}

int ex_out_open_shared(ex_out *o, const char *dir)
{
    memset(o, 0, sizeof *o);
    o->lock_fd = -1;
    o->writer = ex_par_rank() == 0; /* under mpirun, rank 0 writes for all */
    if (strlen(dir) + 1 + EX_NAME_LEN + 24 > EX_PATH_LEN) /* room for a temporary's name */
        return ad_fail(EX_EUSAGE, "--out: path too long (%zu bytes)", strlen(dir));
    snprintf(o->dir, sizeof o->dir, "%s", dir);
    return o->writer ? make_dirs(dir) : AD_OK;
}

int ex_out_open(ex_out *o, const char *dir, bool want_plots)
{
    int rc = ex_out_open_shared(o, dir);
    if (rc == AD_OK && !o->writer) return AD_OK; /* no folder here: no lock, no plots */
    if (rc == AD_OK) rc = lock_dir(o);
    o->plots = want_plots && gnuplot_on_path();
    if (rc == AD_OK && want_plots && !o->plots)
        fprintf(stderr, "%s: warning: gnuplot is not on PATH (scripts/setup.sh installs it); "
                        "the .gp scripts are written, the PNGs are not\n", ex_prog());
    return rc;
}

void ex_out_close(ex_out *o)
{
    if (o->lock_fd >= 0) close(o->lock_fd);
    o->lock_fd = -1;
}

void ex_out_list(const ex_out *o)
{
    for (int i = 0; i < o->n_files; i++) fprintf(stderr, "  %s/%s\n", o->dir, o->files[i]);
    if (o->n_files == 0) fprintf(stderr, "  (none)\n");
    if (o->plots_failed)
        fprintf(stderr, "%s: warning: %d plot(s) failed (see above)\n", ex_prog(), o->plots_failed);
}

static void record(ex_out *o, const char *name)
{
    for (int i = 0; i < o->n_files; i++)
        if (!strcmp(o->files[i], name)) return; /* rewritten: listed once */
    /* The precision says what snprintf does anyway (a longer name is cut),
     * so gcc -O2 sees the bound and does not warn of a truncation. */
    if (o->n_files < EX_MAX_FILES)
        snprintf(o->files[o->n_files++], EX_NAME_LEN, "%.*s", EX_NAME_LEN - 1, name);
}

/* ---- files ----------------------------------------------------------------- */

int ex_file_open(ex_file *f, ex_out *o, const char *name)
{
    memset(f, 0, sizeof *f);
    f->out = o;
    if (strlen(name) >= EX_NAME_LEN || strchr(name, '/'))
        return ad_fail(AD_EARG, "output file name '%s' too long or not a name", name);
    snprintf(f->name, sizeof f->name, "%s", name);
    if (!o->writer) /* another process writes the files: write nowhere */
        return (f->f = fopen("/dev/null", "w")) ? AD_OK : ad_fail(AD_EIO, "/dev/null: %s", strerror(errno));
    int fd = -1;
    errno = ENAMETOOLONG;
    if (snprintf(f->tmp, sizeof f->tmp, "%s/.%s%sXXXXXX", o->dir, name,
                 o->lock_fd >= 0 ? TMP_LOCKED : TMP_SHARED) < (int)sizeof f->tmp)
        fd = mkstemp(f->tmp);
    /* O_APPEND: a forked child's rows land after the parent's. */
    if (fd >= 0 && (fchmod(fd, 0644) != 0 || fcntl(fd, F_SETFL, O_APPEND) != 0 ||
                    !(f->f = fdopen(fd, "a")))) {
        int e = errno;
        close(fd);
        remove(f->tmp);
        errno = e;
        fd = -1;
    }
    if (fd < 0) {
        f->tmp[0] = '\0';
        return ad_fail(AD_EIO, "cannot write %s/%s: %s", o->dir, name, strerror(errno));
    }
    return AD_OK;
}

int ex_csv_open(ex_file *f, ex_out *o, const char *name, const char *header)
{
    int rc = ex_file_open(f, o, name);
    if (rc == AD_OK && f->f) fprintf(f->f, "%s\n", header);
    return rc;
}

void ex_file_abandon(ex_file *f)
{
    if (f->f) fclose(f->f);
    if (f->tmp[0]) remove(f->tmp);
    f->f = NULL;
    f->tmp[0] = '\0';
}

/* fsync of the folder, so the rename itself survives a crash. */
static int sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return errno;
    int e = fsync(fd) == 0 ? 0 : errno;
    close(fd);
    return e == EINVAL ? 0 : e; /* a file system without fsync of folders */
}

int ex_file_commit(ex_file *f)
{
    if (!f->tmp[0]) { /* never opened, or not the writer */
        if (f->f) fclose(f->f);
        f->f = NULL;
        return AD_OK;
    }
    ex_out *o = f->out;
    int bad = ferror(f->f), e = 0;
    errno = 0;
    if (fflush(f->f) != 0 || bad) e = errno ? errno : EIO;
    if (!e && fsync(fileno(f->f)) != 0) e = errno;
    if (fclose(f->f) != 0 && !e) e = errno ? errno : EIO;
    f->f = NULL;
    char path[EX_PATH_LEN + EX_NAME_LEN];
    snprintf(path, sizeof path, "%s/%s", o->dir, f->name);
    if (!e && rename(f->tmp, path) != 0) e = errno;
    if (!e) e = sync_dir(o->dir);
    if (e) {
        remove(f->tmp);
        f->tmp[0] = '\0';
        return ad_fail(AD_EIO, "cannot write %s: %s", path, strerror(e));
    }
    f->tmp[0] = '\0';
    record(o, f->name);
    return AD_OK;
}

int ex_out_save(ex_out *o, const char *name, const char *text, size_t len)
{
    ex_file f;
    int rc = ex_file_open(&f, o, name);
    if (rc == AD_OK && f.f && len > 0 && fwrite(text, 1, len, f.f) != len) {
        /* ferror is set: the commit reports it */
    }
    return rc == AD_OK ? ex_file_commit(&f) : rc;
}

/* ---- gnuplot ----------------------------------------------------------------- */

int ex_gp_open(ex_file *g, ex_out *o, const char *name, int width, int height)
{
    int rc = ex_file_open(g, o, name);
    if (rc != AD_OK) return rc;
    int stem = (int)strlen(name) - (int)(strlen(name) > 3 ? 3 : 0); /* without ".gp" */
    fprintf(g->f,
            "# Written by %s; run `gnuplot %s` in this folder.\n"
            "set encoding utf8\n"
            "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
            "    set terminal pngcairo size %d,%d enhanced font 'Sans,10'\n"
            "} else {\n"
            "    set terminal png size %d,%d enhanced\n"
            "}\n"
            "set output '%.*s.png'\n"
            "set datafile separator ','\n"
            "set grid lt 0 lw 0.5\n",
            ex_prog(), name, width, height, width, height, stem, name);
    return AD_OK;
}

/* Runs `gnuplot script` in dir by fork and exec (no shell: nothing to
 * quote) and waits: 0 when it exited 0, 1 when it failed, −1 when no
 * process could be started. */
static int gnuplot(const char *dir, const char *script)
{
    fflush(NULL); /* what is buffered would be written twice */
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        if (chdir(dir) == 0) execlp("gnuplot", "gnuplot", script, (char *)NULL);
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return 1;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

int ex_gp_commit(ex_file *g)
{
    ex_out *o = g->out;
    int rc = ex_file_commit(g);
    if (rc != AD_OK || !o->plots || !o->writer) return rc;
    const char *script = g->name;
    char png[EX_NAME_LEN + 8];
    size_t n = strlen(script);
    snprintf(png, sizeof png, "%.*s.png", (int)(n > 3 ? n - 3 : n), script);
    int r = gnuplot(o->dir, script);
    if (r < 0)
        fprintf(stderr, "%s: warning: cannot start gnuplot: %s\n", ex_prog(), strerror(errno));
    else if (r > 0)
        fprintf(stderr, "%s: warning: gnuplot %s failed; %s was not made\n", ex_prog(), script, png);
    char path[EX_PATH_LEN + 2 * EX_NAME_LEN];
    snprintf(path, sizeof path, "%s/%s", o->dir, png);
    if (r != 0) o->plots_failed++;
    else if (access(path, R_OK) == 0) record(o, png);
    return AD_OK;
}
