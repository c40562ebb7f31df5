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
    /* inflate takes an unsigned length; reading in bounded chunks also
     * keeps the byte count in error messages close to the truth. */
    GZ_CHUNK = 1 << 20,
    /* What is read from the file at a time (zlib's gzread reads 8 KiB by
     * default): fewer system calls. */
    GZ_BUF = 1 << 17,
};

/* ---- reading through zlib ------------------------------------------------
 * Not zlib's gzread: after a gzip member it ignores whatever is not another
 * member, so a gzipped IDX or CIFAR file with bytes appended read as if
 * they were not there, while the same bytes after an unpacked file are
 * refused.  So inflate here, and look at what follows each member. */

typedef enum gz_mode { GZ_UNKNOWN, GZ_PLAIN, GZ_GZIP, GZ_DONE } gz_mode;

struct data_gz_in {
    FILE *fp;
    gz_mode mode;             /* unknown until the first read looks */
    bool zinit, eof;          /* inflateInit2 done; fread found the end */
    bool between;             /* a member ended: what follows is not looked at yet */
    unsigned long long pos;   /* bytes taken from the file so far */
    z_stream z;               /* next_in/avail_in: the read-ahead bytes in buf */
    unsigned char buf[GZ_BUF];
};

int data_gz_open(data_gz *f, const char *path)
{
    memset(f, 0, sizeof *f);
    f->path = path;
    data_gz_in *in = calloc(1, sizeof *in);
    if (!in)
        return ad_fail(AD_ENOMEM, "%s: out of memory opening the file", path);
    errno = 0;
    in->fp = fopen(path, "rb");
    if (!in->fp) {
        int e = errno;
        free(in);
        return ad_fail(AD_EIO, "%s: cannot open: %s", path, strerror(e));
    }
    in->z.next_in = in->buf;
    f->in = in;
    return AD_OK;
}

void data_gz_close(data_gz *f)
{
    data_gz_in *in = f->in;
    if (in) {
        if (in->zinit)
            inflateEnd(&in->z);
        fclose(in->fp);
        free(in);
    }
    f->in = NULL;
}

/* Tops up the read-ahead to at least k (<= GZ_BUF) bytes, or as many as the
 * file has left; DATA_GZ_END unless the read failed. */
static data_gz_stop gz_need(data_gz *f, size_t k)
{
    data_gz_in *in = f->in;
    while (in->z.avail_in < k && !in->eof) {
        memmove(in->buf, in->z.next_in, in->z.avail_in);
        in->z.next_in = in->buf;
        errno = 0;
        size_t n = fread(in->buf + in->z.avail_in, 1, GZ_BUF - in->z.avail_in, in->fp);
        if (n == 0 && ferror(in->fp)) {
            f->sys_errno = errno;
            return DATA_GZ_IO;
        }
        in->eof = n == 0;
        in->z.avail_in += (uInt)n;
        in->pos += n;
    }
    return DATA_GZ_END;
}

/* The first read: a gzip signature makes it a gzip file. */
static data_gz_stop gz_look(data_gz *f)
{
    data_gz_in *in = f->in;
    data_gz_stop why = gz_need(f, 2);
    if (why != DATA_GZ_END)
        return why;
    if (in->z.avail_in < 2 || in->buf[0] != 0x1f || in->buf[1] != 0x8b) {
        in->mode = GZ_PLAIN;
        return DATA_GZ_END;
    }
    int zr = inflateInit2(&in->z, 15 + 16); /* +16: a gzip header and trailer */
    if (zr != Z_OK) {
        f->zmsg = zr == Z_MEM_ERROR ? "out of memory" : "zlib cannot start";
        return zr == Z_MEM_ERROR ? DATA_GZ_NOMEM : DATA_GZ_CORRUPT;
    }
    in->zinit = true;
    in->mode = GZ_GZIP;
    return DATA_GZ_END;
}

/* A member ended: the file ends, another member starts, or it is refused. */
static data_gz_stop gz_next_member(data_gz *f)
{
    data_gz_in *in = f->in;
    data_gz_stop why = gz_need(f, 2);
    if (why != DATA_GZ_END)
        return why;
    in->between = false;
    if (in->z.avail_in == 0) {
        in->mode = GZ_DONE;
        return DATA_GZ_END;
    }
    if (in->z.avail_in >= 2 && in->z.next_in[0] == 0x1f && in->z.next_in[1] == 0x8b) {
        inflateReset(&in->z);
        return DATA_GZ_END;
    }
    f->trailing_at = in->pos - in->z.avail_in;
    f->zmsg = "bytes after the end of the gzip stream";
    return DATA_GZ_TRAILING;
}

/* Inflates up to n bytes into p (*got says how many); DATA_GZ_END when all
 * n came or the last member ended with the file. */
static data_gz_stop gz_inflate(data_gz *f, unsigned char *p, size_t n, size_t *got)
{
    data_gz_in *in = f->in;
    in->z.next_out = p;
    in->z.avail_out = (uInt)n;
    data_gz_stop why = DATA_GZ_END;
    while (in->z.avail_out > 0 && in->mode == GZ_GZIP && why == DATA_GZ_END) {
        if (in->between) {
            why = gz_next_member(f);
            continue;
        }
        if ((why = gz_need(f, 1)) != DATA_GZ_END)
            break;
        if (in->z.avail_in == 0) {
            f->zmsg = "unexpected end of file";
            why = DATA_GZ_TRUNCATED;
            break;
        }
        int zr = inflate(&in->z, Z_NO_FLUSH);
        if (zr == Z_STREAM_END)
            in->between = true;
        else if (zr == Z_MEM_ERROR)
            f->zmsg = "out of memory", why = DATA_GZ_NOMEM;
        else if (zr != Z_OK && !(zr == Z_BUF_ERROR && in->z.avail_in == 0))
            f->zmsg = in->z.msg ? in->z.msg : "compressed data error", why = DATA_GZ_CORRUPT;
    }
    *got = n - in->z.avail_out;
    return why;
}

/* The bytes of a file that is not gzipped, the read-ahead first. */
static data_gz_stop gz_plain(data_gz *f, unsigned char *p, size_t n, size_t *got)
{
    data_gz_in *in = f->in;
    size_t k = in->z.avail_in < n ? in->z.avail_in : n;
    memcpy(p, in->z.next_in, k);
    in->z.next_in += k;
    in->z.avail_in -= (uInt)k;
    errno = 0;
    size_t r = k < n ? fread(p + k, 1, n - k, in->fp) : 0;
    *got = k + r;
    if (*got < n && ferror(in->fp)) {
        f->sys_errno = errno;
        return DATA_GZ_IO;
    }
    return DATA_GZ_END;
}

data_gz_stop data_gz_read(data_gz *f, void *buf, size_t len, size_t *got)
{
    unsigned char *p = buf;
    *got = 0;
    data_gz_stop why = f->in->mode == GZ_UNKNOWN ? gz_look(f) : DATA_GZ_END;
    while (why == DATA_GZ_END && *got < len && f->in->mode != GZ_DONE) {
        size_t want = len - *got < GZ_CHUNK ? len - *got : GZ_CHUNK, n;
        why = f->in->mode == GZ_PLAIN ? gz_plain(f, p + *got, want, &n)
                                      : gz_inflate(f, p + *got, want, &n);
        *got += n;
        if (n < want && why == DATA_GZ_END)
            break; /* the end of the file */
    }
    return why;
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
    case DATA_GZ_TRAILING:
        return ad_fail(AD_EFORMAT, "%s: bytes after the end of the gzip stream, from byte "
                       "%llu of the file, are not another gzip member", f->path,
                       f->trailing_at);
    default:
        /* No "while reading the ..." here: zlib inflates ahead of what was
         * asked, so the damage may lie anywhere after the bytes read. */
        return ad_fail(AD_EFORMAT, "%s: corrupt gzip stream: %s", f->path,
                       f->zmsg ? f->zmsg : "unknown zlib error");
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
