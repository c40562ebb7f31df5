/* cifar.c — CIFAR-10 binary records, gzipped or not; see cifar.h.
 *
 * A file is a bare sequence of 3073-byte records with no header, so the
 * only checks possible are the ones made here: the unpacked length is a
 * positive whole number of records, the gzip stream is intact to its
 * checksum with nothing after it (data_gz_read, files.c), and every label
 * byte is a class 0..9; an official batch must also hold exactly 10000
 * records, which catches a file cut at a record boundary.  The file is read whole into one buffer that grows as data
 * arrive, then split in place into labels and pixels.
 *
 * The official archive is read extracted rather than in place: tar is on
 * every system, the six plain files can each be checked (by size here, by
 * sha256 in scripts/get-cifar10.sh), and a tar reader of our own would be
 * one more parser to trust.
 *
 * Size letters: n images, P = 3072 pixel bytes, R = 3073 record bytes. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "experiments/data/cifar.h"

enum {
    CF_P = DATA_CIFAR_PIXELS,
    CF_R = DATA_CIFAR_RECORD,
    CF_FIRST_ALLOC = 1 << 24, /* doubles as data arrive */
};

/* ---- reading the whole stream ------------------------------------------- */

/* Doubles the buffer *buf of *cap bytes (CIFAR files are not larger than
 * DATA_CIFAR_MAX_BYTES unpacked: past that it is not one). */
static int cf_grow(const char *path, unsigned char **buf, size_t *cap, size_t got)
{
    if (*cap >= DATA_CIFAR_MAX_BYTES)
        return ad_fail(AD_EFORMAT, "%s: more than %zu bytes unpacked: not a "
                       "CIFAR file", path, (size_t)DATA_CIFAR_MAX_BYTES);
    unsigned char *nb = realloc(*buf, 2 * *cap);
    if (!nb)
        return ad_fail(AD_ENOMEM, "%s: out of memory after %zu bytes", path, got);
    *buf = nb;
    *cap *= 2;
    return AD_OK;
}

/* Reads all of path (gunzipped if gzipped) into *out (caller frees). */
static int cf_read_all(const char *path, unsigned char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    data_gz f;
    int rc = data_gz_open(&f, path);
    if (rc != AD_OK)
        return rc;
    size_t cap = CF_FIRST_ALLOC, got = 0;
    unsigned char *buf = malloc(cap);
    rc = buf ? AD_OK : ad_fail(AD_ENOMEM, "%s: out of memory", path);
    data_gz_stop why = DATA_GZ_END;
    while (rc == AD_OK) {
        if (got == cap && (rc = cf_grow(path, &buf, &cap, got)) != AD_OK)
            break;
        size_t n;
        why = data_gz_read(&f, buf + got, cap - got, &n);
        got += n;
        if (why != DATA_GZ_END || got < cap)
            break; /* end of file or a failure: judged below */
    }
    if (rc == AD_OK && why != DATA_GZ_END && why != DATA_GZ_TRUNCATED)
        rc = data_gz_fail(&f, why, NULL); /* before the close: it quotes zlib */
    data_gz_close(&f);
    if (rc == AD_OK && why == DATA_GZ_TRUNCATED)
        rc = ad_fail(AD_EFORMAT, "%s: truncated gzip stream: it ends after %zu "
                     "unpacked bytes (%zu whole records), before its checksum", path,
                     got, got / CF_R);
    if (rc != AD_OK) {
        free(buf);
        return rc;
    }
    *out = buf;
    *len = got;
    return AD_OK;
}

/* ---- public: files ------------------------------------------------------ */

int data_cifar_read(const char *path, data_cifar *out)
{
    if (!out)
        return ad_fail(AD_EARG, "data_cifar_read: out is NULL");
    memset(out, 0, sizeof *out);
    if (!path)
        return ad_fail(AD_EARG, "data_cifar_read: path is NULL");
    unsigned char *raw;
    size_t len;
    int rc = cf_read_all(path, &raw, &len);
    if (rc != AD_OK)
        return rc;
    if (len == 0)
        rc = ad_fail(AD_EFORMAT, "%s: empty: no CIFAR records", path);
    else if (len % CF_R != 0)
        rc = ad_fail(AD_EFORMAT, "%s: %zu bytes is not a whole number of %d-byte "
                     "records (%zu records and %zu bytes over): truncated or not a "
                     "CIFAR-10 file", path, len, CF_R, len / CF_R, len % CF_R);
    else if (len / CF_R > (size_t)INT32_MAX)
        rc = ad_fail(AD_EFORMAT, "%s: %zu records is too many", path, len / CF_R);
    size_t n = len / CF_R;
    for (size_t i = 0; rc == AD_OK && i < n; i++)
        if (raw[i * CF_R] >= DATA_CIFAR_CLASSES)
            rc = ad_fail(AD_EFORMAT, "%s: record %zu (byte offset %zu) has label %d, "
                         "not a class 0..%d: not a CIFAR-10 file, or misaligned", path,
                         i, i * CF_R, raw[i * CF_R], DATA_CIFAR_CLASSES - 1);
    unsigned char *labels = rc == AD_OK ? malloc(n) : NULL;
    if (rc == AD_OK && !labels)
        rc = ad_fail(AD_ENOMEM, "%s: out of memory for %zu labels", path, n);
    if (rc != AD_OK) {
        free(raw);
        return rc;
    }
    /* Split in place: pixels of record i move down by i + 1 bytes. */
    for (size_t i = 0; i < n; i++) {
        labels[i] = raw[i * CF_R];
        memmove(raw + i * CF_P, raw + i * CF_R + 1, CF_P);
    }
    unsigned char *pixels = realloc(raw, n * CF_P); /* shrink; may not move */
    out->n = (int)n;
    out->labels = labels;
    out->pixels = pixels ? pixels : raw;
    return AD_OK;
}

int data_cifar_read_batches(const char *const *paths, int n, int each, data_cifar *out)
{
    if (!out)
        return ad_fail(AD_EARG, "data_cifar_read_batches: out is NULL");
    memset(out, 0, sizeof *out);
    if (!paths || n < 1 || each < 1 || (int64_t)n * each > INT32_MAX)
        return ad_fail(AD_EARG, "data_cifar_read_batches: %d files of %d records: both "
                       "must be >= 1 (and their product fit an int)", n, each);
    for (int b = 0; b < n; b++)
        if (!paths[b])
            return ad_fail(AD_EARG, "data_cifar_read_batches: paths[%d] is NULL", b);
    size_t total = (size_t)n * (size_t)each;
    unsigned char *labels = malloc(total), *pixels = malloc(total * CF_P);
    int rc = labels && pixels ? AD_OK : ad_fail(AD_ENOMEM, "%s: out of memory for %zu "
                                                "images", paths[0], total);
    for (int b = 0; b < n && rc == AD_OK; b++) {
        data_cifar one;
        rc = data_cifar_read(paths[b], &one);
        if (rc == AD_OK && one.n != each)
            rc = ad_fail(AD_EFORMAT, "%s: %d records, expected %d: truncated, or not a "
                         "file of this set", paths[b], one.n, each);
        if (rc == AD_OK) {
            size_t at = (size_t)b * (size_t)each;
            memcpy(labels + at, one.labels, (size_t)each);
            memcpy(pixels + at * CF_P, one.pixels, (size_t)each * CF_P);
        }
        data_cifar_free(&one);
    }
    if (rc != AD_OK) {
        free(labels);
        free(pixels);
        return rc;
    }
    out->n = (int)total;
    out->labels = labels;
    out->pixels = pixels;
    return AD_OK;
}

/* Whether `folder` holds file a or file b of a set (either is enough: the
 * loader then names whatever else is missing). */
static int cf_has_either(const char *folder, const char *a, const char *b, bool *has)
{
    char *pa = data_join(folder, a), *pb = data_join(folder, b);
    int rc = pa && pb ? AD_OK : ad_fail(AD_ENOMEM, "data_cifar_load: out of memory");
    *has = rc == AD_OK && (data_file_exists(pa) || data_file_exists(pb));
    free(pa);
    free(pb);
    return rc;
}

/* The official set from `folder`: data_batch_1..5.bin, then test_batch.bin. */
static int cf_load_official(const char *folder, data_cifar *train, data_cifar *test)
{
    char *tr[DATA_CIFAR_OFFICIAL_BATCHES] = { NULL }, *te = NULL;
    int rc = AD_OK;
    for (int b = 0; b < DATA_CIFAR_OFFICIAL_BATCHES && rc == AD_OK; b++) {
        char name[32];
        snprintf(name, sizeof name, "data_batch_%d.bin", b + 1);
        if (!(tr[b] = data_join(folder, name)))
            rc = ad_fail(AD_ENOMEM, "data_cifar_load: out of memory");
    }
    if (rc == AD_OK && !(te = data_join(folder, DATA_CIFAR_OFFICIAL_TEST)))
        rc = ad_fail(AD_ENOMEM, "data_cifar_load: out of memory");
    if (rc == AD_OK)
        rc = data_cifar_read_batches((const char *const *)tr, DATA_CIFAR_OFFICIAL_BATCHES,
                                     DATA_CIFAR_BATCH_RECORDS, train);
    if (rc == AD_OK)
        rc = data_cifar_read_batches((const char *const *)&te, 1, DATA_CIFAR_BATCH_RECORDS,
                                     test);
    for (int b = 0; b < DATA_CIFAR_OFFICIAL_BATCHES; b++)
        free(tr[b]);
    free(te);
    return rc;
}

/* The subset from `dir`: DATA_CIFAR_TRAIN, then DATA_CIFAR_TEST. */
static int cf_load_subset(const char *dir, data_cifar *train, data_cifar *test)
{
    char *tr = data_join(dir, DATA_CIFAR_TRAIN), *te = data_join(dir, DATA_CIFAR_TEST);
    int rc = tr && te ? AD_OK : ad_fail(AD_ENOMEM, "data_cifar_load: out of memory");
    if (rc == AD_OK)
        rc = data_cifar_read(tr, train);
    if (rc == AD_OK)
        rc = data_cifar_read(te, test);
    free(tr);
    free(te);
    return rc;
}

int data_cifar_load(const char *dir, data_cifar *train, data_cifar *test)
{
    if (!train || !test)
        return ad_fail(AD_EARG, "data_cifar_load: train or test is NULL");
    memset(train, 0, sizeof *train);
    memset(test, 0, sizeof *test);
    if (!dir)
        return ad_fail(AD_EARG, "data_cifar_load: dir is NULL");
    /* The official files in dir, else in dir/cifar-10-batches-bin, else
     * the subset in dir. */
    char *sub = data_join(dir, DATA_CIFAR_OFFICIAL_DIR);
    const char *folders[2] = { dir, sub }, *official = NULL;
    bool has = false, subset = false;
    int rc = sub ? AD_OK : ad_fail(AD_ENOMEM, "data_cifar_load: out of memory");
    for (int i = 0; i < 2 && rc == AD_OK && !official; i++) {
        rc = cf_has_either(folders[i], DATA_CIFAR_OFFICIAL_TEST, DATA_CIFAR_OFFICIAL_BATCH1, &has);
        official = has ? folders[i] : NULL;
    }
    if (rc == AD_OK && !official)
        rc = cf_has_either(dir, DATA_CIFAR_TEST, DATA_CIFAR_TRAIN, &subset);
    data_cifar_source src = official ? DATA_CIFAR_OFFICIAL : DATA_CIFAR_SUBSET;
    if (rc == AD_OK && !official && !subset)
        rc = ad_fail(AD_EIO, "%s: no CIFAR-10 files: expected the official binary version "
                     "(test_batch.bin and data_batch_1.bin … data_batch_5.bin, here or in "
                     "%s/; scripts/get-cifar10.sh fetches them) or the shared subset "
                     "(%s, %s)", dir, DATA_CIFAR_OFFICIAL_DIR, DATA_CIFAR_TRAIN,
                     DATA_CIFAR_TEST);
    if (rc == AD_OK)
        rc = official ? cf_load_official(official, train, test)
                      : cf_load_subset(dir, train, test);
    free(sub);
    if (rc != AD_OK) {
        data_cifar_free(train);
        data_cifar_free(test);
        return rc;
    }
    train->source = test->source = src;
    return AD_OK;
}

const char *data_cifar_source_name(data_cifar_source source)
{
    switch (source) {
    case DATA_CIFAR_OFFICIAL:
        return "the official binary version (data_batch_1..5.bin, test_batch.bin)";
    case DATA_CIFAR_SUBSET:
        return "the shared JPEG-degraded subset (" DATA_CIFAR_TRAIN ", " DATA_CIFAR_TEST ")";
    default:
        return "the files named";
    }
}

void data_cifar_free(data_cifar *c)
{
    if (!c)
        return;
    free(c->labels);
    free(c->pixels);
    memset(c, 0, sizeof *c);
}

/* ---- public: features --------------------------------------------------- */

int data_cifar_moments(const data_cifar *c, const int *idx, int n, double *mean,
                       double *std)
{
    if (!c || !c->pixels || !mean || !std)
        return ad_fail(AD_EARG, "data_cifar_moments: NULL data or output");
    if (n < 1)
        return ad_fail(AD_EARG, "data_cifar_moments: n = %d < 1", n);
    int rc = data_check_idx("data_cifar_moments", idx, n, c->n);
    if (rc != AD_OK)
        return rc;
    /* Two passes (mean, then squared deviations): no cancellation. */
    for (int j = 0; j < CF_P; j++)
        mean[j] = std[j] = 0;
    for (int k = 0; k < n; k++) {
        const unsigned char *x = c->pixels + (size_t)(idx ? idx[k] : k) * CF_P;
        for (int j = 0; j < CF_P; j++)
            mean[j] += x[j];
    }
    for (int j = 0; j < CF_P; j++)
        mean[j] /= n;
    for (int k = 0; k < n; k++) {
        const unsigned char *x = c->pixels + (size_t)(idx ? idx[k] : k) * CF_P;
        for (int j = 0; j < CF_P; j++)
            std[j] += (x[j] - mean[j]) * (x[j] - mean[j]);
    }
    for (int j = 0; j < CF_P; j++) {
        std[j] = sqrt(std[j] / n);
        if (std[j] < 1e-6)
            std[j] = 1;
    }
    return AD_OK;
}

int data_cifar_features(const data_cifar *c, const int *idx, int n, const double *mean,
                        const double *std, bool add_bias, ad_real *out)
{
    if (!c || (n > 0 && (!out || !c->pixels)))
        return ad_fail(AD_EARG, "data_cifar_features: NULL data or output");
    if (!mean != !std)
        return ad_fail(AD_EARG, "data_cifar_features: give both mean and std, or "
                       "neither");
    int rc = data_check_idx("data_cifar_features", idx, n, c->n);
    if (rc != AD_OK)
        return rc;
    size_t d = CF_P + (add_bias ? 1 : 0);
    for (int k = 0; k < n; k++) {
        const unsigned char *x = c->pixels + (size_t)(idx ? idx[k] : k) * CF_P;
        ad_real *row = out + (size_t)k * d;
        for (int j = 0; j < CF_P; j++)
            row[j] = mean ? (ad_real)((x[j] - mean[j]) / std[j]) : (ad_real)(x[j] / 255.0);
        if (add_bias)
            row[CF_P] = 1;
    }
    return AD_OK;
}

int data_cifar_labels(const data_cifar *c, const int *idx, int n, int *y)
{
    if (!c || (n > 0 && (!y || !c->labels)))
        return ad_fail(AD_EARG, "data_cifar_labels: NULL data or output");
    int rc = data_check_idx("data_cifar_labels", idx, n, c->n);
    if (rc != AD_OK)
        return rc;
    for (int k = 0; k < n; k++)
        y[k] = c->labels[idx ? idx[k] : k];
    return AD_OK;
}
