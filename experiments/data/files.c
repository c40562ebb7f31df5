/* files.c — finding a dataset's folder and reading through zlib; see
 * files.h.  Shared by the MNIST, CIFAR-10 and Omniglot loaders. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "experiments/data/files.h"

enum {
    /* gzread takes an unsigned length; reading in bounded chunks also keeps
     * the byte count in error messages close to the truth, since zlib
     * reports 0 bytes for a call that fails half way. */
    GZ_CHUNK = 1 << 20,
    /* A larger zlib buffer than its 8 KiB default: fewer system calls. */
    GZ_BUF = 1 << 17,
};

/* ---- reading through zlib ------------------------------------------------ */

int data_gz_open(data_gz *f, const char *path)
{
    memset(f, 0, sizeof *f);
    f->path = path;
    errno = 0;
    f->gz = gzopen(path, "rb");
    if (!f->gz) {
        /* zlib leaves errno at 0 when only its own allocation failed. */
        if (errno == 0)
            return ad_fail(AD_ENOMEM, "%s: out of memory opening the file", path);
        return ad_fail(AD_EIO, "%s: cannot open: %s", path, strerror(errno));
    }
    gzbuffer(f->gz, GZ_BUF);
    return AD_OK;
}

void data_gz_close(data_gz *f)
{
    if (f->gz)
        gzclose(f->gz);
    f->gz = NULL;
}

/* After a short read: was it the end of the file, or a failure? */
static data_gz_stop gz_classify(data_gz *f, int sys_errno)
{
    int err;
    const char *msg = gzerror(f->gz, &err);
    f->zmsg = msg;
    f->sys_errno = sys_errno;
    switch (err) {
    case Z_OK: return DATA_GZ_END;
    case Z_BUF_ERROR: return DATA_GZ_TRUNCATED;
    case Z_ERRNO: return DATA_GZ_IO;
    case Z_MEM_ERROR: return DATA_GZ_NOMEM;
    default: return DATA_GZ_CORRUPT;
    }
}

data_gz_stop data_gz_read(data_gz *f, void *buf, size_t len, size_t *got)
{
    unsigned char *p = buf;
    *got = 0;
    while (*got < len) {
        size_t want = len - *got < GZ_CHUNK ? len - *got : GZ_CHUNK;
        errno = 0;
        int r = gzread(f->gz, p + *got, (unsigned)want);
        if (r <= 0)
            return gz_classify(f, errno);
        *got += (size_t)r;
    }
    return DATA_GZ_END;
}

/* zlib's reason for a failure, without the "path: " it puts in front. */
static const char *gz_zlib_reason(const data_gz *f)
{
    const char *m = f->zmsg ? f->zmsg : "unknown zlib error";
    size_t len = strlen(f->path);
    if (strncmp(m, f->path, len) == 0 && strncmp(m + len, ": ", 2) == 0)
        m += len + 2;
    return m;
}

int data_gz_fail(const data_gz *f, data_gz_stop why, const char *part)
{
    switch (why) {
    case DATA_GZ_IO:
        if (part)
            return ad_fail(AD_EIO, "%s: read error while reading the %s: %s", f->path, part,
                           strerror(f->sys_errno));
        return ad_fail(AD_EIO, "%s: read error: %s", f->path, strerror(f->sys_errno));
    case DATA_GZ_NOMEM:
        return ad_fail(AD_ENOMEM, "%s: out of memory while reading%s%s", f->path,
                       part ? " the " : "", part ? part : "");
    default:
        /* No "while reading the ..." here: zlib inflates ahead of what was
         * asked, so the damage may lie anywhere after the bytes read. */
        return ad_fail(AD_EFORMAT, "%s: corrupt gzip stream: %s", f->path,
                       gz_zlib_reason(f));
    }
}

/* ---- paths --------------------------------------------------------------- */

char *data_join(const char *dir, const char *name)
{
    size_t len = strlen(dir) + 1 + strlen(name) + 1;
    char *p = malloc(len);
    if (p)
        snprintf(p, len, "%s/%s", dir, name);
    return p;
}

bool data_file_exists(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (fp)
        fclose(fp);
    return fp != NULL;
}

char *data_std_path(const char *dir, const char *gz_name)
{
    char *path = data_join(dir, gz_name);
    if (!path || data_file_exists(path))
        return path;
    size_t dot = strlen(path) - 3;
    path[dot] = '\0'; /* the unpacked name: ".gz" dropped */
    if (!data_file_exists(path))
        path[dot] = '.'; /* neither is there: the gzipped name again */
    return path;
}

int data_check_idx(const char *who, const int *idx, int n, int limit)
{
    if (n < 0)
        return ad_fail(AD_EARG, "%s: n = %d < 0", who, n);
    if (!idx && n > limit)
        return ad_fail(AD_EARG, "%s: n = %d but there are only %d", who, n, limit);
    for (int k = 0; idx && k < n; k++)
        if (idx[k] < 0 || idx[k] >= limit)
            return ad_fail(AD_EARG, "%s: idx[%d] = %d is outside 0..%d", who, k,
                           idx[k], limit - 1);
    return AD_OK;
}

/* ---- public: finding the data ------------------------------------------- */

/* The search: --data as given, else $HYPERTAPE_DATA + env_sub, else a fixed
 * fallback folder; a candidate counts when it holds one of the dataset's
 * probe files. */
enum { DATA_MAX_PROBES = 3 };
typedef struct data_where {
    const char *name;     /* "mnist", as data_find_dir is asked */
    const char *env_sub;  /* "/mnist": appended to $HYPERTAPE_DATA */
    const char *fallback; /* "../shared/data/mnist" */
    const char *probe[DATA_MAX_PROBES]; /* files, one of which must be there */
    bool unpacked_ok;     /* a probe without its ".gz" counts too */
    const char *hint;     /* the last way out the message offers */
} data_where;

static const data_where data_places[] = {
    { "mnist", "/mnist", "../shared/data/mnist", { "train-images-idx3-ubyte.gz" }, true,
      "fetch the files with scripts/get-mnist.sh --download DIR" },
    { "fashion", "/fashion-mnist", "/usr/share/datasets/fashion-mnist",
      { "train-images-idx3-ubyte.gz" }, true, "install Debian's dataset-fashion-mnist" },
    { "fashion-mnist", "/fashion-mnist", "/usr/share/datasets/fashion-mnist",
      { "train-images-idx3-ubyte.gz" }, true, "install Debian's dataset-fashion-mnist" },
    { "omniglot", "/omniglot", "../shared/data/omniglot", { "images_background.zip" }, false,
      "fetch the files with scripts/get-omniglot.sh --download DIR" },
    /* The official binary version extracted (as is, or its folder's files),
     * or the shared subset: cifar.h. */
    { "cifar", "/cifar", "../shared/data/cifar",
      { "test_batch.bin", "cifar-10-batches-bin/test_batch.bin", "cifar10_test_jpeg.bin.gz" },
      false, "fetch the official files with scripts/get-cifar10.sh --download DIR" },
};

/* Appends to a message being built in a fixed buffer (truncating quietly). */
static void data_note(char *msg, size_t len, const char *fmt, const char *a,
                      const char *b)
{
    size_t used = strlen(msg);
    if (used < len && snprintf(msg + used, len - used, fmt, a, b) < 0)
        msg[used] = '\0';
}

/* Writes prefix + suffix into buf if it fits and that folder holds the
 * probe file; says why not in msg. */
static bool data_try_dir(char *buf, size_t len, const char *prefix, const char *suffix,
                         const data_where *w, char *msg, size_t msg_len)
{
    int n = snprintf(buf, len, "%s%s", prefix, suffix);
    if (n < 0 || (size_t)n >= len) {
        data_note(msg, msg_len, "; %s%s (path too long)", prefix, suffix);
        return false;
    }
    bool ok = false;
    char names[512] = "";
    for (int i = 0; i < DATA_MAX_PROBES && w->probe[i] && !ok; i++) {
        char *path = w->unpacked_ok ? data_std_path(buf, w->probe[i])
                                    : data_join(buf, w->probe[i]);
        ok = path && data_file_exists(path);
        free(path);
        bool last = i + 1 == DATA_MAX_PROBES || !w->probe[i + 1];
        data_note(names, sizeof names, "%s%s", i == 0 ? "" : last ? " or " : ", ",
                  w->probe[i]);
    }
    if (!ok)
        data_note(msg, msg_len, "; %s (no %s there)", buf, names);
    return ok;
}

const char *data_find_dir(const char *flag_dir, const char *dataset)
{
    static _Thread_local char found[4096];
    char tried[1024] = "";

    if (flag_dir && flag_dir[0])
        return flag_dir;
    if (!dataset) {
        ad_fail(AD_EARG, "data_find_dir: dataset is NULL");
        return NULL;
    }
    const data_where *w = NULL;
    for (size_t i = 0; i < sizeof data_places / sizeof *data_places; i++)
        if (strcmp(dataset, data_places[i].name) == 0)
            w = &data_places[i];
    if (!w) {
        ad_fail(AD_EARG, "data_find_dir: unknown dataset '%s' (expected mnist, fashion, "
                "omniglot or cifar)", dataset);
        return NULL;
    }
    /* No --data: $HYPERTAPE_DATA + env_sub, else the fallback, if it holds a probe. */
    const char *root = getenv("HYPERTAPE_DATA");
    if (!root || !root[0])
        data_note(tried, sizeof tried, "; %s%s", "$HYPERTAPE_DATA", " (not set)");
    else if (data_try_dir(found, sizeof found, root, w->env_sub, w, tried, sizeof tried))
        return found;
    if (data_try_dir(found, sizeof found, w->fallback, "", w, tried, sizeof tried))
        return found;
    ad_fail(AD_EIO, "no %s data found (tried: %s); pass --data DIR, set HYPERTAPE_DATA to "
            "the data root, or %s", dataset, tried + 2, w->hint);
    return NULL;
}
