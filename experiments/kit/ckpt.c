/* ckpt.c — tables of numbers, and checkpoints that verify themselves; see
 * kit.h.
 *
 * The layout after the header line: fields, each
 *     name length (1 byte, 1..63), the name, the type (1 byte), the count
 *     (8 bytes), then count values (8 bytes each, or 1 for bytes)
 * in this machine's byte order: a checkpoint resumes a run on the machine
 * that wrote it, and the CRC catches the rest. */
#define _DEFAULT_SOURCE /* open_memstream, fmemopen */

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <zlib.h>

#include "experiments/kit/kit.h"

enum { T_INT = 1, T_F64 = 2, T_BYTES = 3 };
static const char MAGIC[] = "hypertape-checkpoint";
enum { FORMAT = 1, MAX_NAME = 63 };
/* The largest checkpoint read: a corrupt header must not make us try more. */
#define MAX_BYTES ((size_t)1 << 32)

/* ---- tables -------------------------------------------------------------------- */

int ex_table_push(ex_table *t, const double *row)
{
    if (t->n_rows == t->cap) {
        int cap = t->cap ? 2 * t->cap : 64;
        double *r = cap > t->cap ? realloc(t->rows, sizeof *r * (size_t)cap * (size_t)t->n_cols)
                                 : NULL;
        if (!r) return ad_fail(AD_ENOMEM, "%s log: out of memory", t->name);
        t->rows = r;
        t->cap = cap;
    }
    memcpy(t->rows + (size_t)t->n_rows++ * (size_t)t->n_cols, row, sizeof *row * (size_t)t->n_cols);
    return AD_OK;
}

void ex_table_write(const ex_table *t, FILE *f)
{
    for (int i = 0; i < t->n_rows; i++) {
        const char *fmt = t->fmt;
        for (int j = 0; j < t->n_cols; j++) {
            size_t len = strcspn(fmt, " ");
            char one[16];
            snprintf(one, sizeof one, "%.*s", (int)len, fmt);
            if (j) fputc(',', f);
            fprintf(f, one, t->rows[(size_t)i * (size_t)t->n_cols + (size_t)j]);
            if (fmt[len] == ' ') fmt += len + 1; /* else the last format serves on */
        }
        fputc('\n', f);
    }
}

int ex_table_save(const ex_table *t, ex_out *o, const char *name)
{
    ex_file f;
    int rc = ex_csv_open(&f, o, name, t->header);
    if (rc != AD_OK) return rc;
    ex_table_write(t, f.f);
    return ex_file_commit(&f);
}

void ex_table_free(ex_table *t)
{
    free(t->rows);
    t->rows = NULL;
    t->n_rows = t->cap = 0;
}

/* ---- writing ---------------------------------------------------------------------- */

int ex_ckpt_begin(ex_ckpt *c)
{
    memset(c, 0, sizeof *c);
    c->f = open_memstream(&c->buf, &c->len);
    return c->f ? AD_OK : (c->rc = ad_fail(AD_ENOMEM, "checkpoint: out of memory"));
}

static void put(ex_ckpt *c, const char *field, int type, const void *v, uint64_t n)
{
    size_t len = strlen(field), elem = type == T_BYTES ? 1 : 8;
    unsigned char head[2] = { (unsigned char)len, (unsigned char)type };
    if (c->rc != AD_OK) return;
    if (len == 0 || len > MAX_NAME) {
        c->rc = ad_fail(AD_EARG, "checkpoint: bad field name '%s'", field);
        return;
    }
    if (fwrite(head, 1, 1, c->f) != 1 || fwrite(field, 1, len, c->f) != len ||
        fwrite(head + 1, 1, 1, c->f) != 1 || fwrite(&n, sizeof n, 1, c->f) != 1 ||
        (n > 0 && fwrite(v, elem, n, c->f) != n))
        c->rc = ad_fail(AD_ENOMEM, "checkpoint: out of memory");
}

void ex_ckpt_put_int(ex_ckpt *c, const char *field, long long v)
{
    int64_t x = v;
    put(c, field, T_INT, &x, 1);
}

void ex_ckpt_put_f64(ex_ckpt *c, const char *field, const double *v, size_t n)
{
    put(c, field, T_F64, v, n);
}

void ex_ckpt_put_reals(ex_ckpt *c, const char *field, const ad_real *v, size_t n)
{
    double *d = malloc(sizeof *d * (n ? n : 1)); /* as doubles: exact for either build */
    if (!d) {
        if (c->rc == AD_OK) c->rc = ad_fail(AD_ENOMEM, "checkpoint: out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++) d[i] = v[i];
    put(c, field, T_F64, d, n);
    free(d);
}

void ex_ckpt_put_text(ex_ckpt *c, const char *field, const char *s)
{
    put(c, field, T_BYTES, s, strlen(s));
}

void ex_ckpt_put_rng(ex_ckpt *c, const char *field, const ad_rng *rng)
{
    put(c, field, T_BYTES, rng->s, sizeof rng->s);
}

void ex_ckpt_put_outer(ex_ckpt *c, const char *field, const opt_outer *o)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    int rc = f ? opt_outer_save(o, f) : AD_ENOMEM;
    if (f && fclose(f) != 0 && rc == AD_OK) rc = AD_ENOMEM;
    if (rc == AD_OK) put(c, field, T_BYTES, buf, len);
    else if (c->rc == AD_OK) c->rc = ad_fail(rc, "checkpoint: cannot save the outer optimizer");
    free(buf);
}

void ex_ckpt_put_table(ex_ckpt *c, const ex_table *t)
{
    put(c, t->name, T_F64, t->rows, (uint64_t)t->n_rows * (uint64_t)t->n_cols);
}

int ex_ckpt_commit(ex_ckpt *c, ex_out *o, const char *name, const char *kind, int version)
{
    int rc = c->rc;
    if (c->f && fclose(c->f) != 0 && rc == AD_OK) rc = ad_fail(AD_ENOMEM, "checkpoint: out of memory");
    c->f = NULL;
    ex_file f;
    if (rc == AD_OK) rc = ex_file_open(&f, o, name);
    if (rc == AD_OK) {
        fprintf(f.f, "%s %d %s %d %zu %08lx\n", MAGIC, FORMAT, kind, version, c->len,
                crc32_z(0L, (const Bytef *)c->buf, c->len));
        if (c->len > 0 && fwrite(c->buf, 1, c->len, f.f) != c->len) {
            /* ferror is set: the commit reports it */
        }
        rc = ex_file_commit(&f);
    }
    ex_ckpt_free(c);
    return rc;
}

/* ---- reading ----------------------------------------------------------------------- */

/* The whole file into c->buf, NUL-terminated (at most MAX_BYTES). */
static int slurp(ex_ckpt *c)
{
    FILE *f = fopen(c->path, "rb");
    if (!f) return ad_fail(AD_EIO, "cannot read %s: %s", c->path, strerror(errno));
    struct stat sb;
    int rc = AD_OK;
    if (fstat(fileno(f), &sb) != 0) rc = ad_fail(AD_EIO, "cannot read %s: %s", c->path, strerror(errno));
    else if ((uint64_t)sb.st_size > MAX_BYTES)
        rc = ad_fail(AD_EFORMAT, "%s is not a checkpoint (larger than 4 GiB)", c->path);
    else if (!(c->buf = malloc((size_t)sb.st_size + 1)))
        rc = ad_fail(AD_ENOMEM, "%s: out of memory", c->path);
    else if ((c->len = fread(c->buf, 1, (size_t)sb.st_size, f)) != (size_t)sb.st_size)
        rc = ad_fail(AD_EIO, "cannot read %s: %s", c->path, ferror(f) ? strerror(errno) : "it shrank");
    if (c->buf) c->buf[c->len] = '\0';
    fclose(f);
    return rc;
}

/* Checks the header line of c->buf[0..len) and the fields' length and CRC. */
static int verify(ex_ckpt *c, const char *kind, int version)
{
    const char *path = c->path;
    char magic[32] = "", k[64] = "";
    int format = 0, ver = 0, used = 0;
    size_t n = 0;
    unsigned long crc = 0;
    char *nl = memchr(c->buf, '\n', c->len < 256 ? c->len : 256);
    if (!nl || sscanf(c->buf, "%31s %d %63s %d %zu %8lx%n", magic, &format, k, &ver, &n, &crc,
                      &used) != 6 || c->buf + used != nl || strcmp(magic, MAGIC) != 0)
        return ad_fail(AD_EFORMAT, "%s is not a hypertape checkpoint (its first line is not "
                       "'%s 1 KIND VERSION BYTES CRC32')", path, MAGIC);
    if (format != FORMAT || strcmp(k, kind) != 0 || ver != version)
        return ad_fail(AD_EFORMAT, "%s is a %s checkpoint of version %d (format %d); this "
                       "program reads %s version %d (format %d): start afresh without --resume",
                       path, k, ver, format, kind, version, FORMAT);
    c->pos = (size_t)(nl + 1 - c->buf);
    if (c->len - c->pos < n)
        return ad_fail(AD_EFORMAT, "%s is truncated: its header promises %zu bytes of fields, "
                       "%zu are there", path, n, c->len - c->pos);
    if (c->len - c->pos > n)
        return ad_fail(AD_EFORMAT, "%s is damaged: %zu bytes after the %zu its header "
                       "promises", path, c->len - c->pos - n, n);
    unsigned long got = crc32_z(0L, (const Bytef *)c->buf + c->pos, n);
    if (got != crc)
        return ad_fail(AD_EFORMAT, "%s is damaged: the CRC32 of its fields is %08lx, its "
                       "header says %08lx", path, got, crc);
    return AD_OK;
}

int ex_ckpt_open(ex_ckpt *c, const char *path, const char *kind, int version)
{
    memset(c, 0, sizeof *c);
    snprintf(c->path, sizeof c->path, "%s", path);
    int rc = slurp(c);
    return rc == AD_OK ? verify(c, kind, version) : rc;
}

int ex_ckpt_open_all(ex_ckpt *c, const char *path, const char *kind, int version)
{
    if (ex_par_size() == 1) return ex_ckpt_open(c, path, kind, version);
    memset(c, 0, sizeof *c);
    snprintf(c->path, sizeof c->path, "%s", path);
    /* Rank 0 reads; the others get its status (and message) or its bytes. */
    struct { int rc; unsigned long long len; } head = { AD_OK, 0 };
    char msg[1024] = "";
    if (ex_par_rank() == 0) {
        head.rc = slurp(c);
        head.len = c->len;
        if (head.rc != AD_OK) snprintf(msg, sizeof msg, "%s", ad_error());
    }
    int rc = ex_par_bcast(&head, sizeof head, 0);
    if (rc == AD_OK && head.rc != AD_OK) {
        rc = ex_par_bcast(msg, sizeof msg, 0);
        return rc == AD_OK ? ad_fail(head.rc, "%s", msg) : rc;
    }
    if (rc == AD_OK && ex_par_rank() > 0) {
        c->len = (size_t)head.len;
        if (!(c->buf = malloc(c->len + 1))) return ad_fail(AD_ENOMEM, "%s: out of memory", path);
        c->buf[c->len] = '\0';
    }
    if (rc == AD_OK) rc = ex_par_bcast(c->buf, c->len, 0);
    return rc == AD_OK ? verify(c, kind, version) : rc;
}

int ex_ckpt_open_mem(ex_ckpt *c, const char *name, const void *data, size_t len,
                     const char *kind, int version)
{
    memset(c, 0, sizeof *c);
    snprintf(c->path, sizeof c->path, "%s", name);
    if (len > MAX_BYTES)
        return ad_fail(AD_EFORMAT, "%s is not a checkpoint (larger than 4 GiB)", name);
    if (!(c->buf = malloc(len + 1))) return ad_fail(AD_ENOMEM, "%s: out of memory", name);
    if (len > 0) memcpy(c->buf, data, len);
    c->buf[len] = '\0';
    c->len = len;
    return verify(c, kind, version);
}

/* The next field's header, which must be `field` of `type`: *n its count
 * and *data its values (0 and NULL on failure: set first, so callers'
 * variables are never read uninitialized, as gcc -O2 suspected). */
static int next(ex_ckpt *c, const char *field, int type, uint64_t *n, const unsigned char **data)
{
    *n = 0;
    *data = NULL;
    const unsigned char *b = (const unsigned char *)c->buf;
    size_t left = c->len - c->pos, len = left > 0 ? b[c->pos] : 0;
    if (left < 1 + len + 1 + 8 || len == 0)
        return ad_fail(AD_EFORMAT, "%s: field '%s' is missing (the fields end before it)",
                       c->path, field);
    const unsigned char *name = b + c->pos + 1;
    if (len != strlen(field) || memcmp(name, field, len) != 0)
        return ad_fail(AD_EFORMAT, "%s: field '%s' expected, '%.*s' found", c->path, field,
                       (int)len, (const char *)name);
    int t = name[len];
    memcpy(n, name + len + 1, sizeof *n);
    size_t elem = t == T_BYTES ? 1 : 8, at = c->pos + 1 + len + 1 + 8;
    if (t != type) {
        *n = 0;
        return ad_fail(AD_EFORMAT, "%s: field '%s' has type %d, not %d", c->path, field, t, type);
    }
    if (*n > (c->len - at) / elem) {
        uint64_t claimed = *n;
        *n = 0;
        return ad_fail(AD_EFORMAT, "%s: field '%s' claims %" PRIu64 " values, more than the "
                       "file holds", c->path, field, claimed);
    }
    *data = b + at;
    c->pos = at + (size_t)*n * elem;
    return AD_OK;
}

bool ex_ckpt_next_is(const ex_ckpt *c, const char *field)
{
    size_t len = c->pos < c->len ? (unsigned char)c->buf[c->pos] : 0;
    return len == strlen(field) && c->len - c->pos > len &&
           memcmp(c->buf + c->pos + 1, field, len) == 0;
}

int ex_ckpt_get_int(ex_ckpt *c, const char *field, long long lo, long long hi, long long *out)
{
    uint64_t n;
    const unsigned char *d;
    int rc = next(c, field, T_INT, &n, &d);
    int64_t v = 0;
    if (rc == AD_OK && n != 1)
        return ad_fail(AD_EFORMAT, "%s: field '%s' holds %" PRIu64 " numbers, not 1", c->path,
                       field, n);
    if (rc == AD_OK) memcpy(&v, d, sizeof v);
    if (rc == AD_OK && (v < lo || v > hi))
        return ad_fail(AD_EFORMAT, "%s: field '%s' is %" PRId64 ", outside %lld..%lld", c->path,
                       field, v, lo, hi);
    if (rc == AD_OK) *out = v;
    return rc;
}

/* Checks n doubles at d (unaligned) and hands each to put(i, value). */
static int get_doubles(ex_ckpt *c, const char *field, size_t n, double lo, double hi,
                       void (*store)(void *, size_t, double), void *dst)
{
    uint64_t m;
    const unsigned char *d;
    int rc = next(c, field, T_F64, &m, &d);
    if (rc == AD_OK && m != n)
        return ad_fail(AD_EFORMAT, "%s: field '%s' holds %" PRIu64 " numbers, not %zu", c->path,
                       field, m, n);
    for (size_t i = 0; i < n && rc == AD_OK; i++) {
        double v;
        memcpy(&v, d + 8 * i, sizeof v);
        if (!isfinite(v) || v < lo || v > hi)
            return ad_fail(AD_EFORMAT, "%s: field '%s'[%zu] is %g, not a finite number in "
                           "[%g, %g]", c->path, field, i, v, lo, hi);
        store(dst, i, v);
    }
    return rc;
}

static void store_f64(void *dst, size_t i, double v) { ((double *)dst)[i] = v; }
static void store_real(void *dst, size_t i, double v) { ((ad_real *)dst)[i] = (ad_real)v; }

int ex_ckpt_get_f64(ex_ckpt *c, const char *field, double *v, size_t n, double lo, double hi)
{
    return get_doubles(c, field, n, lo, hi, store_f64, v);
}

int ex_ckpt_get_reals(ex_ckpt *c, const char *field, ad_real *v, size_t n, double lo, double hi)
{
    /* In the float build a range wider than float's would let a finite
     * double through as Inf: the range is cut to what ad_real holds. */
    double top = sizeof(ad_real) < sizeof(double) ? FLT_MAX : DBL_MAX;
    return get_doubles(c, field, n, lo > -top ? lo : -top, hi < top ? hi : top, store_real, v);
}

int ex_ckpt_get_text(ex_ckpt *c, const char *field, char *s, size_t cap)
{
    uint64_t n;
    const unsigned char *d;
    int rc = next(c, field, T_BYTES, &n, &d);
    if (rc == AD_OK && (n >= cap || memchr(d, '\0', (size_t)n)))
        return ad_fail(AD_EFORMAT, "%s: field '%s' is not a text of at most %zu bytes", c->path,
                       field, cap - 1);
    if (rc == AD_OK) {
        memcpy(s, d, (size_t)n);
        s[n] = '\0';
    }
    return rc;
}

int ex_ckpt_get_rng(ex_ckpt *c, const char *field, ad_rng *rng)
{
    uint64_t n;
    const unsigned char *d;
    ad_rng r;
    int rc = next(c, field, T_BYTES, &n, &d);
    if (rc == AD_OK && n != sizeof r.s)
        return ad_fail(AD_EFORMAT, "%s: field '%s' holds %" PRIu64 " bytes, not a random "
                       "number generator's %zu", c->path, field, n, sizeof r.s);
    if (rc == AD_OK) memcpy(r.s, d, sizeof r.s);
    if (rc == AD_OK && !(r.s[0] | r.s[1] | r.s[2] | r.s[3]))
        return ad_fail(AD_EFORMAT, "%s: field '%s' is all zero, a state the generator cannot "
                       "be in", c->path, field);
    if (rc == AD_OK) *rng = r;
    return rc;
}

int ex_ckpt_get_outer(ex_ckpt *c, const char *field, opt_outer *o)
{
    uint64_t n;
    const unsigned char *d;
    int rc = next(c, field, T_BYTES, &n, &d);
    FILE *f = rc == AD_OK && n > 0 ? fmemopen((void *)d, (size_t)n, "rb") : NULL;
    if (rc == AD_OK && !f) return ad_fail(AD_EFORMAT, "%s: field '%s' is empty", c->path, field);
    if (rc == AD_OK) rc = opt_outer_load(o, f);
    if (rc == AD_OK && fgetc(f) != EOF)
        rc = ad_fail(AD_EFORMAT, "bytes after the optimizer's state");
    if (f) fclose(f);
    return rc == AD_OK ? AD_OK : ad_fail_wrap(rc, "%s: field '%s'", c->path, field);
}

int ex_ckpt_get_table(ex_ckpt *c, ex_table *t, int max_rows)
{
    size_t save = c->pos;
    uint64_t n;
    const unsigned char *d;
    int rc = next(c, t->name, T_F64, &n, &d);
    c->pos = save;
    if (rc == AD_OK && (n % (uint64_t)t->n_cols || n / (uint64_t)t->n_cols > (uint64_t)max_rows))
        return ad_fail(AD_EFORMAT, "%s: field '%s' holds %" PRIu64 " numbers: not rows of %d, "
                       "or more than %d rows", c->path, t->name, n, t->n_cols, max_rows);
    int rows = rc == AD_OK ? (int)(n / (uint64_t)t->n_cols) : 0;
    t->n_rows = 0;
    if (rc == AD_OK && rows > t->cap) {
        double *r = realloc(t->rows, sizeof *r * (size_t)n);
        if (!r) return ad_fail(AD_ENOMEM, "%s: out of memory", c->path);
        t->rows = r;
        t->cap = rows;
    }
    if (rc == AD_OK) rc = ex_ckpt_get_f64(c, t->name, t->rows, (size_t)n, -HUGE_VAL, HUGE_VAL);
    if (rc == AD_OK) t->n_rows = rows;
    return rc;
}

int ex_ckpt_end(ex_ckpt *c)
{
    if (c->pos != c->len)
        return ad_fail(AD_EFORMAT, "%s is damaged: %zu bytes after its last field", c->path,
                       c->len - c->pos);
    return AD_OK;
}

void ex_ckpt_free(ex_ckpt *c)
{
    if (c->f) fclose(c->f);
    free(c->buf);
    c->f = NULL;
    c->buf = NULL;
    c->len = c->pos = 0;
}
