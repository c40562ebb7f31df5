/* mnist.c — reading IDX files (MNIST, Fashion-MNIST); see mnist.h.
 *
 * The reader trusts nothing in a header until the bytes behind it are there:
 * it reads the header, checks each field, then reads exactly the promised
 * payload into a buffer that grows as data arrive (so a corrupt header
 * claiming a gigabyte costs nothing until a gigabyte actually shows up), and
 * finally reads on to the end of the file, which both catches trailing bytes
 * and makes zlib verify the gzip checksum (bytes after the gzip stream itself
 * are refused by data_gz_read, files.c).
 *
 * Size letters: n images (or labels), each rows x cols bytes; d features. */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "experiments/data/mnist.h"

enum {
    IDX_TYPE_UBYTE = 0x08,
    IDX_RANK_LABELS = 1,
    IDX_RANK_IMAGES = 3,
    /* The first allocation for a payload; it doubles up to the promised
     * size as data arrive. */
    IDX_FIRST_ALLOC = 1 << 24,
};

/* ---- the header --------------------------------------------------------- */

typedef struct idx_header {
    int rank;
    int dim[IDX_RANK_IMAGES];
    size_t payload;    /* product of dim: the bytes that must follow */
    char desc[128];    /* "60000x28x28 = 47040000 bytes of pixels", for messages */
} idx_header;

static uint32_t idx_be32(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static const char *idx_type_name(int type)
{
    switch (type) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "short";
    case 0x0C: return "int";
    case 0x0D: return "float";
    case 0x0E: return "double";
    default: return "not an IDX type";
    }
}

/* Checks the 4 magic bytes 0, 0, type, rank against what the caller wants. */
static int idx_check_magic(const char *path, const unsigned char *m, int want_rank)
{
    uint32_t magic = idx_be32(m);
    uint32_t want = (uint32_t)IDX_TYPE_UBYTE << 8 | (uint32_t)want_rank;
    const char *kind = want_rank == IDX_RANK_IMAGES ? "images" : "labels";
    if (m[0] != 0 || m[1] != 0) {
        /* A gzip signature here means the file was decompressed once and
         * still holds a gzip stream: gzipped twice. */
        bool gz = m[0] == 0x1f && m[1] == 0x8b;
        return ad_fail(AD_EFORMAT, "%s: bad magic 0x%08x: not an IDX file "
                       "(IDX %s start with 0x%08x)%s", path, (unsigned)magic,
                       kind, (unsigned)want, gz ? "; it looks gzipped twice" : "");
    }
    if (m[2] != IDX_TYPE_UBYTE)
        return ad_fail(AD_EFORMAT, "%s: magic 0x%08x: element type 0x%02x (%s), "
                       "but only unsigned bytes (0x08) are supported",
                       path, (unsigned)magic, m[2], idx_type_name(m[2]));
    if (m[3] != want_rank) {
        const char *hint = m[3] == IDX_RANK_LABELS ? " (a labels file?)"
                         : m[3] == IDX_RANK_IMAGES ? " (an images file?)" : "";
        return ad_fail(AD_EFORMAT, "%s: magic 0x%08x: rank %d%s, but IDX %s "
                       "have rank %d (magic 0x%08x)", path, (unsigned)magic, m[3],
                       hint, kind, want_rank, (unsigned)want);
    }
    return AD_OK;
}

/* Fills h->dim from the big-endian extents and checks that each is at least
 * 1 and that their product is a size we are willing to read. */
static int idx_check_dims(const char *path, const unsigned char *b, idx_header *h)
{
    char shape[64] = "";
    size_t used = 0;
    uint64_t total = 1;
    bool zero = false;
    for (int i = 0; i < h->rank; i++) {
        uint32_t e = idx_be32(b + 4 * i);
        used += (size_t)snprintf(shape + used, sizeof shape - used, "%s%lu",
                                 i ? "x" : "", (unsigned long)e);
        zero |= e == 0;
        /* Saturate: once past the limit the exact product does not matter. */
        total = total > DATA_IDX_MAX_BYTES ? total : total * e;
    }
    if (zero)
        return ad_fail(AD_EFORMAT, "%s: header says %s: an extent is 0", path, shape);
    if (total > DATA_IDX_MAX_BYTES)
        return ad_fail(AD_EFORMAT, "%s: header says %s: more than the %zu bytes "
                       "this loader accepts (a corrupt header?)",
                       path, shape, (size_t)DATA_IDX_MAX_BYTES);
    for (int i = 0; i < h->rank; i++)
        h->dim[i] = (int)idx_be32(b + 4 * i); /* <= total <= 2^30: fits an int */
    h->payload = (size_t)total;
    if (h->rank == IDX_RANK_IMAGES)
        snprintf(h->desc, sizeof h->desc, "%s = %zu bytes of pixels", shape, h->payload);
    else
        snprintf(h->desc, sizeof h->desc, "%s labels = %zu bytes", shape, h->payload);
    return AD_OK;
}

/* The message for a header that stops after `got` of its `need` bytes. */
static int idx_fail_short_header(const data_gz *f, int want_rank, size_t need,
                                 size_t got, data_gz_stop why)
{
    if (got == 0 && why == DATA_GZ_END)
        return ad_fail(AD_EFORMAT, "%s: empty file: not an IDX file", f->path);
    return ad_fail(AD_EFORMAT, "%s: truncated header: an IDX %s header is %zu "
                   "bytes, found %zu%s", f->path,
                   want_rank == IDX_RANK_IMAGES ? "images" : "labels", need, got,
                   why == DATA_GZ_TRUNCATED ? " (the gzip stream ends early)" : "");
}

/* Reads and checks the header: 4 magic bytes, then want_rank extents.  The
 * magic is checked before the extents are read, so that a file of the wrong
 * kind is called that, not "truncated". */
static int idx_read_header(data_gz *f, int want_rank, idx_header *h)
{
    unsigned char b[4 + 4 * IDX_RANK_IMAGES];
    size_t need = 4 + 4 * (size_t)want_rank, got, more = 0;

    data_gz_stop why = data_gz_read(f, b, 4, &got);
    if (why != DATA_GZ_END && why != DATA_GZ_TRUNCATED)
        return data_gz_fail(f, why, "header");
    if (got < 4)
        return idx_fail_short_header(f, want_rank, need, got, why);
    int rc = idx_check_magic(f->path, b, want_rank);
    if (rc != AD_OK)
        return rc;

    why = data_gz_read(f, b + 4, need - 4, &more);
    if (why != DATA_GZ_END && why != DATA_GZ_TRUNCATED)
        return data_gz_fail(f, why, "header");
    if (got + more < need)
        return idx_fail_short_header(f, want_rank, need, got + more, why);
    h->rank = want_rank;
    return idx_check_dims(f->path, b + 4, h);
}

/* ---- the payload -------------------------------------------------------- */

/* Reads exactly h->payload bytes into a new buffer (*out, caller frees). */
static int idx_read_payload(data_gz *f, const idx_header *h, const char *part,
                            unsigned char **out)
{
    size_t cap = h->payload < IDX_FIRST_ALLOC ? h->payload : IDX_FIRST_ALLOC;
    size_t got = 0;
    unsigned char *buf = malloc(cap);
    data_gz_stop why = DATA_GZ_END;
    *out = NULL;
    if (!buf)
        return ad_fail(AD_ENOMEM, "%s: out of memory for %s", f->path, h->desc);
    while (got < h->payload) {
        if (got == cap) {
            size_t ncap = cap > h->payload / 2 ? h->payload : 2 * cap;
            unsigned char *nb = realloc(buf, ncap);
            if (!nb) {
                free(buf);
                return ad_fail(AD_ENOMEM, "%s: out of memory for %s", f->path, h->desc);
            }
            buf = nb;
            cap = ncap;
        }
        size_t n;
        why = data_gz_read(f, buf + got, cap - got, &n);
        got += n;
        if (why != DATA_GZ_END || got < cap)
            break; /* end of file or a failure: judged below */
    }
    if (why != DATA_GZ_END && why != DATA_GZ_TRUNCATED) {
        free(buf);
        return data_gz_fail(f, why, part);
    }
    if (got < h->payload) {
        free(buf);
        return ad_fail(AD_EFORMAT, "%s: truncated: header says %s, found %zu%s",
                       f->path, h->desc, got,
                       why == DATA_GZ_TRUNCATED ? " (the gzip stream ends early)" : "");
    }
    *out = buf;
    return AD_OK;
}

/* Reads on to the end: an IDX file holds nothing after its payload.  This
 * read is also where zlib checks the gzip trailer (CRC-32 and length). */
static int idx_check_end(data_gz *f, const idx_header *h)
{
    unsigned char scratch[4096];
    size_t extra = 0, n;
    data_gz_stop why;
    do {
        why = data_gz_read(f, scratch, sizeof scratch, &n);
        extra += n;
    } while (why == DATA_GZ_END && n == sizeof scratch);
    if (why == DATA_GZ_TRUNCATED && extra == 0)
        return ad_fail(AD_EFORMAT, "%s: truncated gzip stream: it ends before its "
                       "checksum, so the data cannot be trusted", f->path);
    if (why != DATA_GZ_END && why != DATA_GZ_TRUNCATED)
        return data_gz_fail(f, why, "end of the file");
    if (extra > 0)
        return ad_fail(AD_EFORMAT, "%s: trailing bytes: header says %s, found %zu "
                       "more after them", f->path, h->desc, extra);
    return AD_OK;
}

/* Opens path, reads a header of want_rank, the payload and checks the end. */
static int idx_read_file(const char *path, int want_rank, idx_header *h,
                         unsigned char **data)
{
    data_gz f;
    *data = NULL;
    if (!path)
        return ad_fail(AD_EARG, "data_idx_read: path is NULL");
    int rc = data_gz_open(&f, path);
    if (rc != AD_OK)
        return rc;
    rc = idx_read_header(&f, want_rank, h);
    if (rc == AD_OK)
        rc = idx_read_payload(&f, h, want_rank == IDX_RANK_IMAGES ? "pixels" : "labels",
                              data);
    if (rc == AD_OK) {
        rc = idx_check_end(&f, h);
        if (rc != AD_OK) {
            free(*data);
            *data = NULL;
        }
    }
    data_gz_close(&f);
    return rc;
}

/* ---- public: single files ----------------------------------------------- */

int data_idx_read_images(const char *path, data_images *out)
{
    idx_header h;
    unsigned char *pixels;
    if (!out)
        return ad_fail(AD_EARG, "data_idx_read_images: out is NULL");
    memset(out, 0, sizeof *out);
    int rc = idx_read_file(path, IDX_RANK_IMAGES, &h, &pixels);
    if (rc != AD_OK)
        return rc;
    out->n = h.dim[0];
    out->rows = h.dim[1];
    out->cols = h.dim[2];
    out->pixels = pixels;
    return AD_OK;
}

int data_idx_read_labels(const char *path, data_labels *out)
{
    idx_header h;
    unsigned char *labels;
    if (!out)
        return ad_fail(AD_EARG, "data_idx_read_labels: out is NULL");
    memset(out, 0, sizeof *out);
    int rc = idx_read_file(path, IDX_RANK_LABELS, &h, &labels);
    if (rc != AD_OK)
        return rc;
    out->n = h.dim[0];
    out->labels = labels;
    return AD_OK;
}

void data_images_free(data_images *im)
{
    if (!im)
        return;
    free(im->pixels);
    memset(im, 0, sizeof *im);
}

void data_labels_free(data_labels *lb)
{
    if (!lb)
        return;
    free(lb->labels);
    memset(lb, 0, sizeof *lb);
}

/* ---- public: the four standard files ------------------------------------ */

/* Loads one split (images + labels) and checks that they belong together. */
static int data_load_split(const char *dir, const char *im_name, const char *lb_name,
                           data_images *im, data_labels *lb)
{
    char *im_path = data_std_path(dir, im_name);
    char *lb_path = data_std_path(dir, lb_name);
    int rc = AD_OK;
    if (!im_path || !lb_path)
        rc = ad_fail(AD_ENOMEM, "data_mnist_load: out of memory");
    if (rc == AD_OK)
        rc = data_idx_read_images(im_path, im);
    if (rc == AD_OK)
        rc = data_idx_read_labels(lb_path, lb);
    if (rc == AD_OK && im->n != lb->n)
        rc = ad_fail(AD_EFORMAT, "%s has %d labels but %s has %d images: the "
                     "files do not belong together", lb_path, lb->n, im_path, im->n);
    for (int i = 0; rc == AD_OK && i < lb->n; i++)
        if (lb->labels[i] >= DATA_MNIST_CLASSES)
            rc = ad_fail(AD_EFORMAT, "%s: label %d at index %d is not a class "
                         "0..%d", lb_path, lb->labels[i], i, DATA_MNIST_CLASSES - 1);
    if (rc != AD_OK) {
        data_images_free(im);
        data_labels_free(lb);
    }
    free(im_path);
    free(lb_path);
    return rc;
}

int data_mnist_load(const char *dir, data_mnist *out)
{
    if (!out)
        return ad_fail(AD_EARG, "data_mnist_load: out is NULL");
    memset(out, 0, sizeof *out);
    if (!dir)
        return ad_fail(AD_EARG, "data_mnist_load: dir is NULL");
    int rc = data_load_split(dir, DATA_MNIST_TRAIN_IMAGES, DATA_MNIST_TRAIN_LABELS,
                             &out->train_images, &out->train_labels);
    if (rc == AD_OK)
        rc = data_load_split(dir, DATA_MNIST_TEST_IMAGES, DATA_MNIST_TEST_LABELS,
                             &out->test_images, &out->test_labels);
    const data_images *tr = &out->train_images, *te = &out->test_images;
    if (rc == AD_OK && (tr->rows != te->rows || tr->cols != te->cols))
        rc = ad_fail(AD_EFORMAT, "%s: training images are %dx%d but test images "
                     "are %dx%d", dir, tr->rows, tr->cols, te->rows, te->cols);
    if (rc != AD_OK)
        data_mnist_free(out);
    return rc;
}

void data_mnist_free(data_mnist *m)
{
    if (!m)
        return;
    data_images_free(&m->train_images);
    data_labels_free(&m->train_labels);
    data_images_free(&m->test_images);
    data_labels_free(&m->test_labels);
}

/* ---- public: features --------------------------------------------------- */

int data_feature_dim(const data_images *im, bool add_bias)
{
    return im->rows * im->cols + (add_bias ? 1 : 0);
}

int data_features(const data_images *im, const int *idx, int n, bool add_bias,
                  ad_real *out)
{
    if (!im || (n > 0 && (!out || !im->pixels)))
        return ad_fail(AD_EARG, "data_features: NULL images or output");
    int rc = data_check_idx("data_features", idx, n, im->n);
    if (rc != AD_OK)
        return rc;
    size_t p = (size_t)im->rows * (size_t)im->cols;
    size_t d = p + (add_bias ? 1 : 0);
    for (int k = 0; k < n; k++) {
        const unsigned char *src = im->pixels + (size_t)(idx ? idx[k] : k) * p;
        ad_real *row = out + (size_t)k * d;
        for (size_t j = 0; j < p; j++)
            row[j] = (ad_real)(src[j] / 255.0);
        if (add_bias)
            row[p] = 1;
    }
    return AD_OK;
}

int data_one_hot(const data_labels *lb, const int *idx, int n, int n_classes,
                 ad_real *out)
{
    if (!lb || (n > 0 && (!out || !lb->labels)))
        return ad_fail(AD_EARG, "data_one_hot: NULL labels or output");
    if (n_classes < 1)
        return ad_fail(AD_EARG, "data_one_hot: n_classes = %d < 1", n_classes);
    int rc = data_check_idx("data_one_hot", idx, n, lb->n);
    if (rc != AD_OK)
        return rc;
    for (int k = 0; k < n; k++) {
        int i = idx ? idx[k] : k;
        if (lb->labels[i] >= n_classes)
            return ad_fail(AD_EARG, "data_one_hot: label %d at index %d is not a "
                           "class 0..%d", lb->labels[i], i, n_classes - 1);
    }
    for (int k = 0; k < n; k++) {
        ad_real *row = out + (size_t)k * (size_t)n_classes;
        for (int c = 0; c < n_classes; c++)
            row[c] = 0;
        row[lb->labels[idx ? idx[k] : k]] = 1;
    }
    return AD_OK;
}
