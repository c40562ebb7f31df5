/* io.c — printing tensors, and NumPy's .npy format (version 1.0).
 *
 * A .npy file is: the magic "\x93NUMPY", the version bytes 1 0, the header
 * length as a little-endian uint16, the header — a Python dict literal
 *     {'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }
 * padded with spaces and a final newline so the data start on a multiple of
 * 64 bytes — then the entries in C order.  (numpy/lib/format.py is the
 * reference; the writer below reproduces its padding, so our files are byte
 * for byte the ones np.save writes.) */
#include "io.h"

#include "node.h" /* the op record, for its name */

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- printing ------------------------------------------------------------- */

enum { PRINT_THRESHOLD = 1000, PRINT_EDGE = 3, PRINT_DIGITS = 6 };

typedef struct printer {
    FILE *out;
    const ad_value *v;
    size_t stride[AD_MAX_RANK];
    bool summarise;
    int width; /* of the widest entry shown */
} printer;

/* Whether `axis` is cut short: in a summarised tensor, one longer than
 * 2·PRINT_EDGE shows its first and last PRINT_EDGE indices with a "..."
 * between (as NumPy does); any other axis shows every index. */
static bool cut_axis(const printer *p, int axis)
{
    return p->summarise && p->v->shape[axis] > 2 * PRINT_EDGE;
}

/* How many places of `axis` are shown. */
static int shown_count(const printer *p, int axis)
{
    return cut_axis(p, axis) ? 2 * PRINT_EDGE + 1 : p->v->shape[axis];
}

/* The index shown at place k of `axis`, or −1 for the "...". */
static int shown_index(const printer *p, int axis, int k)
{
    if (!cut_axis(p, axis) || k < PRINT_EDGE) return k;
    return k == PRINT_EDGE ? -1 : p->v->shape[axis] - (2 * PRINT_EDGE + 1 - k);
}

static int format_entry(char *buf, size_t len, ad_real x)
{
    return snprintf(buf, len, "%.*g", PRINT_DIGITS, (double)x);
}

/* Visits the shown entries of the block at `offset` from `axis` on: with
 * `measure`, only finds the widest; else prints, nested like NumPy. */
static void walk(printer *p, int axis, size_t offset, bool measure)
{
    char buf[64];
    int n = shown_count(p, axis);
    bool last = axis == p->v->rank - 1;
    if (!measure) fputc('[', p->out);
    for (int k = 0; k < n; k++) {
        if (k > 0 && !measure) {
            fputc(',', p->out);
            if (last) {
                fputc(' ', p->out);
            } else { /* a new line per row, a blank one between blocks of rows */
                for (int b = axis; b < p->v->rank - 2; b++) fputc('\n', p->out);
                fprintf(p->out, "\n%*s", axis + 1, "");
            }
        }
        int i = shown_index(p, axis, k);
        if (i < 0) {
            if (!measure && last) fprintf(p->out, "%*s", p->width, "...");
            else if (!measure) fputs("...", p->out);
        } else if (last) {
            int w = format_entry(buf, sizeof buf, p->v->data[offset + (size_t)i]);
            if (measure && w > p->width) p->width = w;
            if (!measure) fprintf(p->out, "%*s", p->width, buf);
        } else {
            walk(p, axis + 1, offset + (size_t)i * p->stride[axis], measure);
        }
    }
    if (!measure) fputc(']', p->out);
}

/* The header line's details in parentheses: op, step, requires_grad, those
 * that apply.  Written straight to out, so an op's name of any length is
 * printed whole. */
static void print_details(FILE *out, const ad_value *v)
{
    const char *sep = "  (";
    if (v->op) {
        fprintf(out, "%sop %s", sep, v->op->name);
        sep = ", ";
    }
    if (v->tape) {
        if (v->step >= 0) fprintf(out, "%sstep %ld", sep, v->step);
        else fprintf(out, "%scarried", sep);
        sep = ", ";
    }
    if (v->requires_grad) {
        fprintf(out, "%srequires_grad", sep);
        sep = ", ";
    }
    if (sep[0] == ',') fputc(')', out);
}

int ad_print(FILE *out, const char *label, const ad_value *v)
{
    int live = ad_value_check("print", v); /* NULL, or released: nothing to read */
    if (live != AD_OK) return live;
    if (!out) out = stdout;
    char shape[64];
    ad_shape_str(v, shape, sizeof shape);
    fprintf(out, "%s%s%s", label ? label : "", label ? " " : "", shape);
    print_details(out, v);
    fputc('\n', out);
    if (v->rank == 0) {
        char buf[64];
        format_entry(buf, sizeof buf, v->data[0]);
        fprintf(out, "%s\n", buf);
    } else {
        printer p = { .out = out, .v = v, .summarise = v->size > PRINT_THRESHOLD };
        for (int k = v->rank - 1; k >= 0; k--)
            p.stride[k] = k == v->rank - 1 ? 1 : p.stride[k + 1] * (size_t)v->shape[k + 1];
        walk(&p, 0, 0, true);
        walk(&p, 0, 0, false);
        fputc('\n', out);
    }
    return ferror(out) ? ad_fail(AD_EIO, "print: writing failed") : AD_OK;
}

/* ---- .npy: bytes in little-endian order -------------------------------- */

static const char npy_magic[6] = { '\x93', 'N', 'U', 'M', 'P', 'Y' };

#if HT_REAL_IS_DOUBLE
#define NPY_DESCR "<f8"
#else
#define NPY_DESCR "<f4"
#endif

/* x as `size` (4 or 8) little-endian bytes of a float or double. */
static void put_real(unsigned char *b, ad_real x, int size)
{
    uint64_t bits = 0;
    if (size == 8) {
        double d = (double)x;
        memcpy(&bits, &d, 8);
    } else {
        float f = (float)x;
        uint32_t u;
        memcpy(&u, &f, 4);
        bits = u;
    }
    for (int i = 0; i < size; i++) b[i] = (unsigned char)(bits >> (8 * i));
}

static ad_real get_real(const unsigned char *b, int size)
{
    uint64_t bits = 0;
    for (int i = 0; i < size; i++) bits |= (uint64_t)b[i] << (8 * i);
    if (size == 8) {
        double d;
        memcpy(&d, &bits, 8);
        return (ad_real)d;
    }
    uint32_t u = (uint32_t)bits;
    float f;
    memcpy(&f, &u, 4);
    return (ad_real)f;
}

/* NumPy's header for v: the dict, then spaces up to a multiple of 64 bytes
 * counted from the start of the file, and a newline.  (NumPy also reserves
 * room for the first extent to grow to 21 digits; that changes the padding
 * only for a dict of 98+ characters, i.e. extents of 36+ digits in all —
 * no tensor that fits in memory — so it is left out.) */
static size_t npy_header(char *h, size_t cap, const ad_value *v)
{
    int n = snprintf(h, cap, "{'descr': '%s', 'fortran_order': False, 'shape': (", NPY_DESCR);
    for (int k = 0; k < v->rank; k++)
        n += snprintf(h + n, cap - (size_t)n, k ? ", %d" : "%d", v->shape[k]);
    n += snprintf(h + n, cap - (size_t)n, "%s), }", v->rank == 1 ? "," : "");
    while ((10 + (size_t)n + 1) % 64 != 0) h[n++] = ' ';
    h[n++] = '\n';
    return (size_t)n;
}

int ad_save_npy(const char *path, const ad_value *v)
{
    if (!path) return ad_fail(AD_EARG, "save_npy: path is NULL");
    int live = ad_value_check("save_npy", v); /* NULL, or released: nothing to read */
    if (live != AD_OK) return live;
    char header[512];
    size_t hlen = npy_header(header, sizeof header, v);
    unsigned char pre[10];
    memcpy(pre, npy_magic, 6);
    pre[6] = 1, pre[7] = 0, pre[8] = (unsigned char)(hlen & 0xff), pre[9] = (unsigned char)(hlen >> 8);
    FILE *f = fopen(path, "wb");
    if (!f) return ad_fail(AD_EIO, "save_npy: %s: %s", path, strerror(errno));
    bool ok = fwrite(pre, 1, 10, f) == 10 && fwrite(header, 1, hlen, f) == hlen;
    enum { CHUNK = 1024 };
    unsigned char buf[CHUNK * sizeof(ad_real)];
    for (size_t i = 0; i < v->size && ok; i += CHUNK) {
        size_t m = v->size - i < CHUNK ? v->size - i : CHUNK;
        for (size_t j = 0; j < m; j++) put_real(buf + j * sizeof(ad_real), v->data[i + j], sizeof(ad_real));
        ok = fwrite(buf, sizeof(ad_real), m, f) == m;
    }
    int err = ok ? 0 : errno;
    if (fclose(f) != 0 && ok) {
        ok = false;
        err = errno;
    }
    if (!ok) return ad_fail(AD_EIO, "save_npy: %s: writing failed: %s", path, strerror(err));
    return AD_OK;
}

/* ---- .npy: reading the header -------------------------------------------
 * A small reader for the one dict literal the format allows. */

typedef struct npy_info {
    int item;  /* 4 or 8 bytes */
    int rank;
    int shape[AD_MAX_RANK];
    bool have_descr, have_order, have_shape;
} npy_info;

typedef struct cursor {
    const char *s;
    char why[160]; /* what was wrong, when parsing fails */
} cursor;

static void skip_space(cursor *c)
{
    while (*c->s == ' ' || *c->s == '\t' || *c->s == '\n' || *c->s == '\r') c->s++;
}

static bool expect(cursor *c, char ch)
{
    skip_space(c);
    if (*c->s == ch) {
        c->s++;
        return true;
    }
    snprintf(c->why, sizeof c->why, "header: expected '%c' at \"%.12s\"", ch, c->s);
    return false;
}

/* A quoted string ('…' or "…") into out. */
static bool quoted(cursor *c, char *out, size_t cap)
{
    skip_space(c);
    char q = *c->s;
    const char *end = (q == '\'' || q == '"') ? strchr(c->s + 1, q) : NULL;
    if (!end || (size_t)(end - c->s - 1) >= cap) {
        snprintf(c->why, sizeof c->why, "header: expected a short quoted string at \"%.12s\"", c->s);
        return false;
    }
    memcpy(out, c->s + 1, (size_t)(end - c->s - 1));
    out[end - c->s - 1] = '\0';
    c->s = end + 1;
    return true;
}

static bool read_descr(cursor *c, npy_info *in)
{
    char d[32];
    if (!quoted(c, d, sizeof d)) return false;
    if (strcmp(d, "<f8") == 0) in->item = 8;
    else if (strcmp(d, "<f4") == 0) in->item = 4;
    else {
        snprintf(c->why, sizeof c->why, "dtype '%s' is not '<f8' or '<f4' (little-endian float64 "
                 "or float32)", d);
        return false;
    }
    return true;
}

static bool read_order(cursor *c)
{
    skip_space(c);
    if (strncmp(c->s, "False", 5) == 0) {
        c->s += 5;
        return true;
    }
    if (strncmp(c->s, "True", 4) == 0)
        snprintf(c->why, sizeof c->why, "Fortran order is not read (save a C-ordered array: "
                 "np.ascontiguousarray)");
    else
        snprintf(c->why, sizeof c->why, "header: fortran_order is neither True nor False");
    return false;
}

/* (), (n,) or (n, m, ...) */
static bool read_shape(cursor *c, npy_info *in)
{
    if (!expect(c, '(')) return false;
    in->rank = 0;
    for (;;) {
        skip_space(c);
        if (*c->s == ')') break;
        if (*c->s < '0' || *c->s > '9') {
            snprintf(c->why, sizeof c->why, "header: expected an extent at \"%.12s\"", c->s);
            return false;
        }
        long long e = 0;
        while (*c->s >= '0' && *c->s <= '9' && e <= INT_MAX) e = 10 * e + (*c->s++ - '0');
        if (in->rank == AD_MAX_RANK) {
            snprintf(c->why, sizeof c->why, "more than %d axes: hypertape tensors have rank 0..%d",
                     AD_MAX_RANK, AD_MAX_RANK);
            return false;
        }
        if (e < 1 || e > INT_MAX) {
            snprintf(c->why, sizeof c->why, "axis %d has extent %s: hypertape tensors are not empty "
                     "and at most %d long", in->rank, e < 1 ? "0" : "too large", INT_MAX);
            return false;
        }
        in->shape[in->rank++] = (int)e;
        skip_space(c);
        if (*c->s == ',') c->s++;
        else if (*c->s != ')') {
            snprintf(c->why, sizeof c->why, "header: expected ',' or ')' in the shape at \"%.12s\"", c->s);
            return false;
        }
    }
    c->s++;
    return true;
}

/* The dict: its three keys, each once, in any order. */
static bool read_dict(cursor *c, npy_info *in)
{
    if (!expect(c, '{')) return false;
    for (;;) {
        skip_space(c);
        if (*c->s == '}') break;
        char key[32];
        if (!quoted(c, key, sizeof key) || !expect(c, ':')) return false;
        bool *seen = strcmp(key, "descr") == 0 ? &in->have_descr
                   : strcmp(key, "fortran_order") == 0 ? &in->have_order
                   : strcmp(key, "shape") == 0 ? &in->have_shape : NULL;
        if (!seen || *seen) {
            snprintf(c->why, sizeof c->why, "header: %s key '%s'", seen ? "repeated" : "unexpected", key);
            return false;
        }
        *seen = true;
        bool ok = seen == &in->have_descr ? read_descr(c, in)
                : seen == &in->have_order ? read_order(c) : read_shape(c, in);
        if (!ok) return false;
        skip_space(c);
        if (*c->s == ',') c->s++;
        else if (*c->s != '}') {
            snprintf(c->why, sizeof c->why, "header: expected ',' or '}' at \"%.12s\"", c->s);
            return false;
        }
    }
    c->s++;
    skip_space(c);
    if (*c->s != '\0') {
        snprintf(c->why, sizeof c->why, "header: text after the dict: \"%.12s\"", c->s);
        return false;
    }
    if (!in->have_descr || !in->have_order || !in->have_shape) {
        snprintf(c->why, sizeof c->why, "header: the dict lacks '%s'",
                 !in->have_descr ? "descr" : !in->have_order ? "fortran_order" : "shape");
        return false;
    }
    return true;
}

/* ---- .npy: loading ------------------------------------------------------ */

static ad_value *load_fail(FILE *f, int code, const char *path, const char *what)
{
    if (f) fclose(f);
    ad_fail(code, "load_npy: %s: %s", path, what);
    return NULL;
}

/* Reads the prefix and header of f into in; a message in why on failure. */
static int read_header(FILE *f, npy_info *in, char *why, size_t cap)
{
    unsigned char pre[10];
    if (fread(pre, 1, 10, f) != 10 || memcmp(pre, npy_magic, 6) != 0) {
        snprintf(why, cap, "not a .npy file (it does not start with \\x93NUMPY)");
        return AD_EFORMAT;
    }
    if (pre[6] != 1 || pre[7] != 0) {
        snprintf(why, cap, "format version %d.%d: only 1.0 is read", pre[6], pre[7]);
        return AD_EFORMAT;
    }
    size_t hlen = (size_t)pre[8] | (size_t)pre[9] << 8;
    char *h = malloc(hlen + 1);
    if (!h) {
        snprintf(why, cap, "out of memory for a header of %zu bytes", hlen);
        return AD_ENOMEM;
    }
    size_t got = fread(h, 1, hlen, f);
    h[got] = '\0';
    cursor c = { .s = h };
    int rc = AD_OK;
    if (got != hlen) {
        snprintf(why, cap, "the header is cut short (%zu of %zu bytes)", got, hlen);
        rc = AD_EFORMAT;
    } else if (strlen(h) != hlen) {
        snprintf(why, cap, "the header holds a NUL byte");
        rc = AD_EFORMAT;
    } else if (!read_dict(&c, in)) {
        snprintf(why, cap, "%s", c.why);
        rc = AD_EFORMAT;
    }
    free(h);
    return rc;
}

/* A header of a few bytes may announce gigabytes: in a plain file, check
 * the entries are there before allocating for them (a 140-byte file with
 * shape (2, 1, 31111111, 3) asked for 1.5 GB, found by fuzz-npy). */
static int data_present(FILE *f, const npy_info *in, char *why, size_t cap)
{
    if (ad_check_shape("load_npy", in->rank, in->shape) != AD_OK) {
        snprintf(why, cap, "%s", ad_error());
        return AD_EFORMAT;
    }
    struct stat st;
    long at = ftell(f);
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || at < 0)
        return AD_OK; /* a pipe, say: the reading finds out */
    size_t n = ad_shape_size(in->rank, in->shape);
    unsigned long long have = st.st_size > at ? (unsigned long long)(st.st_size - at) : 0;
    if (have / (unsigned)in->item < n) {
        snprintf(why, cap, "the data are cut short: %llu of %zu entries", have / (unsigned)in->item, n);
        return AD_EFORMAT;
    }
    return AD_OK;
}

ad_value *ad_load_npy(const char *path)
{
    if (!path) {
        ad_fail(AD_EARG, "load_npy: path is NULL");
        return NULL;
    }
    FILE *f = fopen(path, "rb");
    if (!f) return load_fail(NULL, AD_EIO, path, strerror(errno));
    npy_info in = { 0 };
    char why[200];
    int rc = read_header(f, &in, why, sizeof why);
    if (rc == AD_OK) rc = data_present(f, &in, why, sizeof why);
    if (rc != AD_OK) return load_fail(f, ferror(f) ? AD_EIO : rc, path, why);
    ad_value *v = ad_tensor_new(in.rank, in.shape);
    if (!v) {
        fclose(f);
        ad_fail_wrap(ad_error_code(), "load_npy: %s", path);
        return NULL;
    }
    enum { CHUNK = 1024 };
    unsigned char buf[CHUNK * 8];
    size_t done = 0;
    while (done < v->size) {
        size_t m = v->size - done < CHUNK ? v->size - done : CHUNK;
        size_t got = fread(buf, (size_t)in.item, m, f);
        for (size_t j = 0; j < got; j++) v->data[done + j] = get_real(buf + j * (size_t)in.item, in.item);
        done += got;
        if (got < m) break;
    }
    if (done < v->size || fgetc(f) != EOF) {
        bool io = ferror(f);
        if (io) snprintf(why, sizeof why, "reading failed");
        else if (done < v->size)
            snprintf(why, sizeof why, "the data are cut short: %zu of %zu entries", done, v->size);
        else
            snprintf(why, sizeof why, "bytes after the %zu entries the header announces", v->size);
        ad_value_free(v);
        return load_fail(f, io ? AD_EIO : AD_EFORMAT, path, why);
    }
    fclose(f);
    return v;
}
