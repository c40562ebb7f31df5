/* test_data_omniglot_cifar.c — the Omniglot and CIFAR-10 loaders
 * (experiments/data/omniglot.h, cifar.h).
 *
 * Three kinds of test.  The real files: Omniglot and CIFAR-10 must be
 * present (CI has them), so a missing copy fails the suite; the pinned
 * values (pixel sums, single downsampled pixels, label histograms, moments)
 * were computed independently in Python: zipfile plus a small PNG decoder
 * written for the purpose and an exact rational area average for Omniglot,
 * the gzip module for CIFAR.  CIFAR-10 is either the shared JPEG subset
 * (pinned as above) or, on a reader's machine, the official binary version
 * from scripts/get-cifar10.sh (counts, labels and the training set's
 * published per-channel moments).  Small files with known answers: PNGs and zips
 * built here, whose downsampled pixels are worked out by hand, and upstream's
 * 5-alphabet images_background_small1.zip (omniglot/original_small/, which
 * scripts/get-omniglot.sh fetches too), checked at several sizes against
 * a direct double-precision area average.  Broken files: each written to a
 * fresh temporary directory and broken in one way, each of which must give
 * the right status, a message naming the file (and the zip entry), and a
 * zeroed output.
 *
 * Where the real data are: $HYPERTAPE_DATA (the shared data root, holding
 * omniglot/ and cifar/), else HT_SOURCE_ROOT "/../shared/data" when the
 * build defines HT_SOURCE_ROOT.  A missing folder skips its tests with one
 * line, or fails them when CI is set (tu_data_dir).
 *
 * Time: loading all of Omniglot (32,460 PNGs) takes about 0.8 s, 1.7 s
 * under ASan; it is done once, in test_omniglot_full. */
#define _XOPEN_SOURCE 700 /* setenv */

#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <zip.h>
#include <zlib.h>

#include "experiments/data/cifar.h"
#include "experiments/data/omniglot.h"
#include "testutil.h"

Suite *data_omniglot_cifar_suite(void);

static void tmp_top_setup(void) { tu_tmp_top_setup("test_data_omniglot_cifar"); }

/* ---- checking failures -------------------------------------------------- */

/* Reading zip `path` fails with `code`, naming `path`, `entry` (when not
 * NULL) and `what`, and leaves the output zeroed. */
static void expect_zip_fail(const char *path, int code, const char *entry,
                            const char *what)
{
    data_omniglot om;
    memset(&om, 0xA5, sizeof om); /* must come back zeroed */
    ad_error_clear();
    int rc = data_omniglot_read_zip(path, 28, &om);
    tu_fail_with(rc, code, path, what);
    if (entry)
        ck_assert_msg(strstr(ad_error(), entry) != NULL, "message does not name "
                      "entry %s: %s", entry, ad_error());
    ck_assert_ptr_null(om.pixels);
    ck_assert_ptr_null(om.names);
    ck_assert_ptr_null(om.ids);
    ck_assert_int_eq(om.n_chars, 0);
}

static void expect_cifar_fail(const char *path, int code, const char *what)
{
    data_cifar c;
    memset(&c, 0xA5, sizeof c);
    ad_error_clear();
    int rc = data_cifar_read(path, &c);
    tu_fail_with(rc, code, path, what);
    ck_assert_ptr_null(c.pixels);
    ck_assert_ptr_null(c.labels);
    ck_assert_int_eq(c.n, 0);
}

/* ---- the real files ----------------------------------------------------- */

static const float *om_image(const data_omniglot *om, int c, int d)
{
    size_t p = (size_t)om->size * (size_t)om->size;
    return om->pixels + ((size_t)c * (size_t)om->n_drawers + (size_t)d) * p;
}

/* Checks a 28x28 image of a 1-bit PNG against values from the Python
 * reference: every pixel is m / 11025 exactly (as a float), with the given
 * sum of m, sum of (p + 1) m over pixels p, and m at three pixels. */
static void check_pinned(const data_omniglot *om, int c, int d, long sum_m,
                         long long wsum_m, const int at[3], const int m_at[3],
                         double float_sum)
{
    const float *x = om_image(om, c, d);
    long s = 0;
    long long ws = 0;
    double fs = 0;
    for (int p = 0; p < 784; p++) {
        long m = lround(x[p] * 11025.0);
        ck_assert_msg(x[p] == (float)(m / 11025.0), "pixel %d of (%d, %d) is %.9g, "
                      "not a multiple of 1/11025", p, c, d, x[p]);
        s += m;
        ws += (long long)(p + 1) * m;
        fs += x[p];
    }
    ck_assert_int_eq(s, sum_m);
    ck_assert_int_eq(ws, wsum_m);
    for (int k = 0; k < 3; k++)
        ck_assert_int_eq(lround(x[at[k]] * 11025.0), m_at[k]);
    /* The float pixels summed in order in double, as Python did. */
    ck_assert_double_eq_tol(fs, float_sum, 1e-12);
    ck_assert_msg(fs > 10 && fs < 200, "implausible stroke area %g", fs);
}

START_TEST(test_omniglot_full)
{
    char dir[1024];
    if (!tu_data_dir("omniglot", dir, sizeof dir)) return;
    data_omniglot om;
    int rc = data_omniglot_load(dir, 28, &om);
    ck_assert_msg(rc == AD_OK, "Omniglot must be loadable from %s (CI has it): %s",
                  dir, ad_error());

    ck_assert_int_eq(om.n_chars, DATA_OMNIGLOT_CHARS);
    ck_assert_int_eq(om.n_drawers, 20);
    ck_assert_int_eq(om.size, 28);
    int n_bg = 0, n_ev = 0;
    for (int c = 0; c < om.n_chars; c++) {
        ck_assert_int_eq(om.ids[c], c + 1); /* ordered by the global id IIII */
        if (strncmp(om.names[c], "images_background/", 18) == 0)
            n_bg++;
        else if (strncmp(om.names[c], "images_evaluation/", 18) == 0)
            n_ev++;
    }
    ck_assert_int_eq(n_bg, 964);
    ck_assert_int_eq(n_ev, 659);
    ck_assert_str_eq(om.names[0], "images_background/Arcadian/character01");
    ck_assert_str_eq(om.names[963], "images_background/Tifinagh/character55");
    ck_assert_str_eq(om.names[964], "images_evaluation/Angelic/character01");
    ck_assert_str_eq(om.names[1622], "images_evaluation/ULOG/character26");

    /* Every pixel in [0, 1]. */
    size_t total = (size_t)om.n_chars * 20 * 784;
    for (size_t i = 0; i < total; i++)
        if (!(om.pixels[i] >= 0.0f && om.pixels[i] <= 1.0f))
            ck_abort_msg("pixel %zu is %g, outside [0, 1]", i, om.pixels[i]);

    /* images_background/Arcadian/character01/0001_01.png: 917 stroke pixels
     * of 105², so the 28x28 sum is 917 * 784 / 11025. */
    const int at0[3] = {152, 153, 207}, m0[3] = {1862, 9310, 11025};
    check_pinned(&om, 0, 0, 718928, 283801532LL, at0, m0, 65.20888896472752);
    ck_assert_double_eq_tol(65.20888896472752, 917.0 * 784 / 11025, 1e-6);
    /* images_evaluation/ULOG/character26/1623_20.png: 455 stroke pixels. */
    const int at1[3] = {174, 175, 202}, m1[3] = {245, 735, 3675};
    check_pinned(&om, 1622, 19, 356720, 115525340LL, at1, m1, 32.355555791407824);

    /* A 20-way task (all 20 drawers used) and a 5-way one from meta-train. */
    ad_rng rng;
    ad_rng_seed(&rng, 7);
    data_char_split sp;
    ck_assert_int_eq(data_char_split_make(om.n_chars, DATA_OMNIGLOT_META_TRAIN,
                                          DATA_OMNIGLOT_META_VAL, &rng, &sp), AD_OK);
    int ways[2] = {20, 5}, ktr[2] = {5, 1}, kva[2] = {15, 15};
    for (int v = 0; v < 2; v++) {
        data_task t;
        ck_assert_int_eq(data_task_init(&t, ways[v], ktr[v], kva[v], 28), AD_OK);
        ck_assert_int_eq(data_omniglot_sample_task(&om, sp.train, sp.n_train, &rng, &t),
                         AD_OK);
        int k = t.k_train + t.k_val;
        for (int c = 0; c < t.n_way; c++) {
            bool in_pool = false;
            for (int i = 0; i < sp.n_train; i++)
                in_pool = in_pool || sp.train[i] == t.chars[c];
            ck_assert_msg(in_pool, "class %d: character %d is not meta-train", c,
                          t.chars[c]);
            for (int c2 = 0; c2 < c; c2++)
                ck_assert_int_ne(t.chars[c], t.chars[c2]);
            const int *dr = t.drawers + c * k;
            for (int j = 0; j < k; j++) {
                ck_assert(dr[j] >= 0 && dr[j] < 20);
                for (int j2 = 0; j2 < j; j2++)
                    ck_assert_int_ne(dr[j], dr[j2]);
            }
            for (int j = 0; j < t.k_train; j++) {
                int row = c * t.k_train + j;
                ck_assert_int_eq(t.y_train[row], c);
                const float *src = om_image(&om, t.chars[c], dr[j]);
                for (int p = 0; p < 784; p++)
                    ck_assert((float)t.x_train[row * 784 + p] == src[p]);
            }
            for (int j = 0; j < t.k_val; j++) {
                int row = c * t.k_val + j;
                ck_assert_int_eq(t.y_val[row], c);
                const float *src = om_image(&om, t.chars[c], dr[t.k_train + j]);
                for (int p = 0; p < 784; p++)
                    ck_assert((float)t.x_val[row * 784 + p] == src[p]);
            }
        }
        data_task_free(&t);
    }
    data_char_split_free(&sp);
    data_omniglot_free(&om);
    data_omniglot_free(&om); /* freeing twice is harmless */
}
END_TEST

START_TEST(test_split)
{
    ad_rng rng;
    data_char_split a, b, c;
    ad_rng_seed(&rng, 42);
    ck_assert_int_eq(data_char_split_make(1623, 1200, 100, &rng, &a), AD_OK);
    ck_assert_int_eq(a.n_train, 1200);
    ck_assert_int_eq(a.n_val, 100);
    ck_assert_int_eq(a.n_test, 323);
    int seen[1623] = {0};
    const int *part[3] = {a.train, a.val, a.test};
    int n[3] = {a.n_train, a.n_val, a.n_test};
    for (int q = 0; q < 3; q++)
        for (int i = 0; i < n[q]; i++) {
            ck_assert(part[q][i] >= 0 && part[q][i] < 1623);
            if (i > 0)
                ck_assert_int_lt(part[q][i - 1], part[q][i]); /* increasing */
            seen[part[q][i]]++;
        }
    for (int i = 0; i < 1623; i++)
        ck_assert_msg(seen[i] == 1, "character %d is in %d parts", i, seen[i]);

    /* The seed fixes the split; another seed gives another. */
    ad_rng_seed(&rng, 42);
    ck_assert_int_eq(data_char_split_make(1623, 1200, 100, &rng, &b), AD_OK);
    ck_assert_int_eq(memcmp(a.train, b.train, sizeof(int) * 1623), 0);
    ad_rng_seed(&rng, 43);
    ck_assert_int_eq(data_char_split_make(1623, 1200, 100, &rng, &c), AD_OK);
    ck_assert_int_ne(memcmp(a.test, c.test, sizeof(int) * 323), 0);
    /* Not all meta-test characters come from one end (it is shuffled). */
    ck_assert_int_lt(a.test[0], 100);
    ck_assert_int_gt(a.test[322], 1523);
    data_char_split_free(&a);
    data_char_split_free(&b);
    data_char_split_free(&c);
    data_char_split_free(&c);

    /* Bad counts. */
    data_char_split d;
    memset(&d, 0xA5, sizeof d);
    ck_assert_int_eq(data_char_split_make(10, 8, 3, &rng, &d), AD_EARG);
    ck_assert_ptr_null(d.train);
    ck_assert_int_eq(data_char_split_make(10, -1, 3, &rng, &d), AD_EARG);
    ck_assert_int_eq(data_char_split_make(10, 4, 3, NULL, &d), AD_EARG);
    ck_assert_int_eq(data_char_split_make(10, 10, 0, &rng, &d), AD_OK); /* all train */
    ck_assert_int_eq(d.n_test, 0);
    data_char_split_free(&d);
}
END_TEST

/* Both sets: the well-known start of data_batch_1 and the class counts of
 * its first 4000 images (the subset's training images) and of the test set. */
static void cifar_real_labels(const data_cifar *tr, const data_cifar *te)
{
    const int first[10] = {6, 9, 9, 4, 1, 1, 2, 7, 8, 3};
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(tr->labels[i], first[i]);
    int hist_te[10] = {0}, hist_tr[10] = {0};
    const int want_tr[10] = {396, 366, 420, 384, 422, 393, 414, 385, 407, 413};
    for (int i = 0; i < te->n; i++)
        hist_te[te->labels[i]]++;
    for (int i = 0; i < 4000; i++)
        hist_tr[tr->labels[i]]++;
    for (int k = 0; k < 10; k++) {
        ck_assert_int_eq(hist_te[k], 1000);
        ck_assert_int_eq(hist_tr[k], want_tr[k]);
    }
}

/* The official binary version (a reader's copy from scripts/get-cifar10.sh;
 * not in CI, so this branch was never run here): the test set's first
 * labels (cat, ship, ship, airplane), 5000 training images per class, and
 * the training set's per-channel mean and spread of pixel/255, the
 * normalization constants quoted across the CIFAR-10 literature
 * (0.49139968, 0.48215841, 0.44653091; 0.24703223, 0.24348513, 0.26158784). */
static void cifar_real_official(const data_cifar *tr, const data_cifar *te)
{
    ck_assert_int_eq(tr->n, 50000);
    ck_assert_int_eq(te->n, 10000);
    cifar_real_labels(tr, te);
    const int first_te[4] = {3, 8, 8, 0};
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(te->labels[i], first_te[i]);
    int hist[10] = {0};
    for (int i = 0; i < tr->n; i++)
        hist[tr->labels[i]]++;
    for (int k = 0; k < 10; k++)
        ck_assert_int_eq(hist[k], 5000);
    const double want_mean[3] = {0.49139968, 0.48215841, 0.44653091};
    const double want_std[3] = {0.24703223, 0.24348513, 0.26158784};
    for (int c = 0; c < 3; c++) {
        double s = 0, q = 0;
        for (size_t i = 0; i < (size_t)tr->n; i++)
            for (int p = 0; p < 1024; p++) {
                double x = tr->pixels[i * 3072 + (size_t)c * 1024 + (size_t)p] / 255.0;
                s += x;
                q += x * x;
            }
        double n = (double)tr->n * 1024, mean = s / n;
        ck_assert_double_eq_tol(mean, want_mean[c], 1e-4);
        ck_assert_double_eq_tol(sqrt(q / n - mean * mean), want_std[c], 1e-4);
    }
}

START_TEST(test_cifar_real)
{
    char dir[1024];
    if (!tu_data_dir("cifar", dir, sizeof dir)) return;
    data_cifar tr, te;
    int rc = data_cifar_load(dir, &tr, &te);
    ck_assert_msg(rc == AD_OK, "CIFAR-10 must be loadable from %s (CI has it): %s", dir,
                  ad_error());
    if (tr.source == DATA_CIFAR_OFFICIAL) {
        cifar_real_official(&tr, &te);
        data_cifar_free(&tr);
        data_cifar_free(&te);
        return;
    }
    /* The shared subset: the first 4000 training images, and the test file
     * sorted by class. */
    ck_assert_int_eq(tr.source, DATA_CIFAR_SUBSET);
    ck_assert_int_eq(tr.n, 4000);
    ck_assert_int_eq(te.n, 10000);
    cifar_real_labels(&tr, &te);
    ck_assert_int_eq(te.labels[0], 0);
    ck_assert_int_eq(te.labels[9999], 9);

    /* Pixels: sums and CRC-32 of all pixel bytes (Python's gzip module). */
    uint64_t s_tr = 0, s_te = 0;
    for (size_t i = 0; i < (size_t)tr.n * 3072; i++)
        s_tr += tr.pixels[i];
    for (size_t i = 0; i < (size_t)te.n * 3072; i++)
        s_te += te.pixels[i];
    ck_assert_uint_eq(s_tr, 1480899730u);
    ck_assert_uint_eq(s_te, 3732740007u);
    uLong crc = crc32(0L, Z_NULL, 0);
    crc = crc32(crc, tr.pixels, (uInt)((size_t)tr.n * 3072));
    ck_assert_uint_eq(crc, 0xb8d71d4eu);
    /* The first image's top-left pixel in each plane (R, G, B). */
    ck_assert_int_eq(tr.pixels[0], 61);
    ck_assert_int_eq(tr.pixels[1024], 62);
    ck_assert_int_eq(tr.pixels[2048], 67);

    /* Standardization fitted on images 0..49, applied to image 60. */
    double *mean = malloc(sizeof *mean * 3072), *sd = malloc(sizeof *sd * 3072);
    ad_real *x = malloc(sizeof *x * 3073 * 50);
    ck_assert(mean && sd && x);
    ck_assert_int_eq(data_cifar_moments(&tr, NULL, 50, mean, sd), AD_OK);
    ck_assert_double_eq_tol(mean[0], 126.48, 1e-9);
    ck_assert_double_eq_tol(sd[0], 63.525188704953884, 1e-9);
    ck_assert_double_eq_tol(mean[3071], 101.38, 1e-9);
    ck_assert_double_eq_tol(sd[3071], 65.35071231440403, 1e-9);
    int i60 = 60;
    ck_assert_int_eq(data_cifar_features(&tr, &i60, 1, mean, sd, true, x), AD_OK);
    ck_assert_double_eq_tol(x[0], 1.188819766451331, 1e-5);
    ck_assert_double_eq_tol(x[1500], -1.3677562555799418, 1e-5);
    ck_assert_double_eq_tol(x[3071], -0.2506476122432358, 1e-5);
    ck_assert_double_eq(x[3072], 1.0);
    /* On the fitting set itself, every feature has mean 0 and spread 1. */
    ck_assert_int_eq(data_cifar_features(&tr, NULL, 50, mean, sd, false, x), AD_OK);
    for (int j = 0; j < 3072; j += 97) {
        double m = 0, v = 0;
        for (int k = 0; k < 50; k++)
            m += x[k * 3072 + j] / 50.0;
        for (int k = 0; k < 50; k++)
            v += (x[k * 3072 + j] - m) * (x[k * 3072 + j] - m) / 50.0;
        ck_assert_double_eq_tol(m, 0.0, 1e-5);
        ck_assert_double_eq_tol(v, 1.0, 1e-5);
    }
    int y[3], idx3[3] = {0, 1, 3999};
    ck_assert_int_eq(data_cifar_labels(&tr, idx3, 3, y), AD_OK);
    ck_assert_int_eq(y[0], 6);
    ck_assert_int_eq(y[1], 9);
    free(mean);
    free(sd);
    free(x);
    data_cifar_free(&tr);
    data_cifar_free(&te);
    data_cifar_free(&te);
}
END_TEST

/* ---- building PNGs and zips --------------------------------------------- */

/* Appends a PNG chunk (length, type, data, CRC) at b->b + b->n. */
static void png_chunk(tu_blob *b, const char *type, const unsigned char *data, size_t n)
{
    tu_put_be32(b->b + b->n, (uint32_t)n);
    memcpy(b->b + b->n + 4, type, 4);
    if (n)
        memcpy(b->b + b->n + 8, data, n);
    uLong crc = crc32(0L, Z_NULL, 0);
    crc = crc32(crc, b->b + b->n + 4, (uInt)(4 + n));
    tu_put_be32(b->b + b->n + 8 + n, (uint32_t)crc);
    b->n += 12 + n;
}

/* An 8-bit grayscale PNG of w x h: white, except ink[] pixels (row, col,
 * gray) — a list ended by a row of -1. */
static tu_blob png_gray(int w, int h, const int (*ink)[3])
{
    size_t raw_n = (size_t)h * (size_t)(w + 1);
    unsigned char *raw = malloc(raw_n);
    ck_assert_ptr_nonnull(raw);
    memset(raw, 255, raw_n);
    for (int r = 0; r < h; r++)
        raw[(size_t)r * (size_t)(w + 1)] = 0; /* filter: none */
    for (int k = 0; ink && ink[k][0] >= 0; k++)
        raw[(size_t)ink[k][0] * (size_t)(w + 1) + 1 + (size_t)ink[k][1]] =
            (unsigned char)ink[k][2];
    uLongf zn = compressBound((uLong)raw_n);
    unsigned char *z = malloc(zn);
    ck_assert_ptr_nonnull(z);
    ck_assert_int_eq(compress(z, &zn, raw, (uLong)raw_n), Z_OK);
    tu_blob b;
    b.b = malloc(8 + 25 + 12 + zn + 12);
    ck_assert_ptr_nonnull(b.b);
    memcpy(b.b, "\x89PNG\r\n\x1a\n", 8);
    b.n = 8;
    unsigned char ihdr[13] = {0};
    tu_put_be32(ihdr, (uint32_t)w);
    tu_put_be32(ihdr + 4, (uint32_t)h);
    ihdr[8] = 8; /* bit depth; colour type 0 (gray), no interlace */
    png_chunk(&b, "IHDR", ihdr, 13);
    png_chunk(&b, "IDAT", z, zn);
    png_chunk(&b, "IEND", NULL, 0);
    free(raw);
    free(z);
    return b;
}

/* A zip under construction: entries are kept until zip_write. */
enum { ZMAX = 64 };
typedef struct zspec {
    int n;
    char name[ZMAX][128];
    tu_blob data[ZMAX];
} zspec;

static void zadd(zspec *z, const char *name, const void *data, size_t n)
{
    ck_assert_int_lt(z->n, ZMAX);
    snprintf(z->name[z->n], sizeof z->name[0], "%s", name);
    z->data[z->n].b = malloc(n ? n : 1);
    ck_assert_ptr_nonnull(z->data[z->n].b);
    if (n)
        memcpy(z->data[z->n].b, data, n);
    z->data[z->n].n = n;
    z->n++;
}

/* Adds drawers 01..20 of character id `id` in folder (but not those in
 * `skip`, a drawer number or 0), each a copy of png. */
static void zadd_char(zspec *z, const char *folder, int id, const tu_blob *png, int skip)
{
    for (int d = 1; d <= 20; d++) {
        if (d == skip)
            continue;
        char name[128];
        snprintf(name, sizeof name, "%s/%04d_%02d.png", folder, id, d);
        zadd(z, name, png->b, png->n);
    }
}

/* Writes the zip (entries stored, not deflated, so tests can find and break
 * their bytes) to tmp_root/file, frees the entries, returns the path. */
static const char *zwrite(zspec *z, const char *file)
{
    const char *path = tu_tmp_path(file);
    int err = 0;
    zip_t *za = zip_open(path, ZIP_CREATE | ZIP_TRUNCATE, &err);
    ck_assert_msg(za != NULL, "zip_open(%s) failed: %d", path, err);
    for (int i = 0; i < z->n; i++) {
        size_t len = strlen(z->name[i]);
        if (len > 0 && z->name[i][len - 1] == '/') {
            ck_assert_int_ge(zip_dir_add(za, z->name[i], ZIP_FL_ENC_UTF_8), 0);
            continue;
        }
        zip_source_t *src = zip_source_buffer(za, z->data[i].b, z->data[i].n, 0);
        ck_assert_ptr_nonnull(src);
        zip_int64_t at = zip_file_add(za, z->name[i], src, ZIP_FL_ENC_UTF_8);
        ck_assert_msg(at >= 0, "zip_file_add %s: %s", z->name[i], zip_strerror(za));
        ck_assert_int_eq(zip_set_file_compression(za, (zip_uint64_t)at, ZIP_CM_STORE, 0),
                         0);
    }
    ck_assert_msg(zip_close(za) == 0, "zip_close(%s): %s", path, zip_strerror(za));
    for (int i = 0; i < z->n; i++)
        free(z->data[i].b);
    z->n = 0;
    return path;
}

/* The ink pattern of the hand-worked case: a 4x4 black square in the top
 * left, and one mid-gray pixel (gray 127, ink 128/255) in the bottom right. */
static const int hand_ink[][3] = {
    {0, 0, 0}, {0, 1, 0}, {0, 2, 0}, {0, 3, 0}, {1, 0, 0}, {1, 1, 0}, {1, 2, 0},
    {1, 3, 0}, {2, 0, 0}, {2, 1, 0}, {2, 2, 0}, {2, 3, 0}, {3, 0, 0}, {3, 1, 0},
    {3, 2, 0}, {3, 3, 0}, {104, 104, 127}, {-1, -1, -1}};

/* A zip of two characters (ids 5 and 3, in that order in the zip) in the
 * upstream layout with directory entries, plus entries to skip. */
static const char *hand_zip(const char *file)
{
    zspec z = {0};
    tu_blob png = png_gray(105, 105, hand_ink);
    tu_blob blank = png_gray(105, 105, NULL);
    zadd(&z, "top/", NULL, 0);
    zadd(&z, "top/Alpha/", NULL, 0);
    zadd(&z, "top/Alpha/character02/", NULL, 0);
    zadd_char(&z, "top/Alpha/character02", 5, &blank, 0);
    zadd(&z, "top/Alpha/character01/", NULL, 0);
    zadd_char(&z, "top/Alpha/character01", 3, &png, 0);
    zadd(&z, "__MACOSX/top/Alpha/._character01", "junk", 4);
    zadd(&z, "top/Alpha/.DS_Store", "junk", 4);
    free(png.b);
    free(blank.b);
    return zwrite(&z, file);
}

/* ---- Omniglot: small files with known answers ---------------------------- */

START_TEST(test_omniglot_hand_worked)
{
    const char *path = hand_zip("hand.zip");
    data_omniglot om;
    ck_assert_msg(data_omniglot_read_zip(path, 28, &om) == AD_OK, "%s", ad_error());
    ck_assert_int_eq(om.n_chars, 2);
    ck_assert_int_eq(om.n_drawers, 20);
    /* Ordered by id, not by position in the zip or by name. */
    ck_assert_int_eq(om.ids[0], 3);
    ck_assert_int_eq(om.ids[1], 5);
    ck_assert_str_eq(om.names[0], "top/Alpha/character01");
    ck_assert_str_eq(om.names[1], "top/Alpha/character02");

    /* Output pixel (j, k) is the square [3.75 j, 3.75 (j+1))² of the source.
     * (0,0) lies inside the ink square; (0,1) overlaps it by 0.25 x 3.75;
     * (1,1) by 0.25 x 0.25; (27,27) holds the gray pixel, 1/3.75² of it. */
    for (int d = 0; d < 20; d++) {
        const float *x = om_image(&om, 0, d);
        ck_assert_float_eq(x[0], 1.0f);
        ck_assert_float_eq(x[1], (float)(1.0 / 15));
        ck_assert_float_eq(x[28], (float)(1.0 / 15));
        ck_assert_float_eq(x[29], (float)(1.0 / 225));
        ck_assert_float_eq(x[783], (float)(128.0 / 255 / 14.0625));
        double s = 0;
        for (int p = 0; p < 784; p++)
            s += x[p];
        ck_assert_double_eq_tol(s, (16 + 128.0 / 255) / 14.0625, 1e-6);
        const float *blank = om_image(&om, 1, d);
        for (int p = 0; p < 784; p++)
            ck_assert_float_eq(blank[p], 0.0f);
    }
    data_omniglot_free(&om);

    /* At full size the pixels are the ink itself. */
    ck_assert_msg(data_omniglot_read_zip(path, 105, &om) == AD_OK, "%s", ad_error());
    const float *x = om_image(&om, 0, 7);
    ck_assert_float_eq(x[0], 1.0f);
    ck_assert_float_eq(x[3 * 105 + 3], 1.0f);
    ck_assert_float_eq(x[4], 0.0f);
    ck_assert_float_eq(x[105 * 105 - 1], (float)(128.0 / 255));
    data_omniglot_free(&om);

    /* 1x1: the mean ink of the whole image. */
    ck_assert_msg(data_omniglot_read_zip(path, 1, &om) == AD_OK, "%s", ad_error());
    ck_assert_float_eq(om.pixels[0], (float)((16 + 128.0 / 255) / 11025));
    data_omniglot_free(&om);
}
END_TEST

/* Output (j, k) of a size x size shrink of src (W x W, values 0..1), as the
 * mean of src over the square [j W/size, (j+1) W/size) x [...): computed
 * directly from the geometry in double precision. */
static double area_mean(const float *src, int size, int j, int k)
{
    const int W = 105;
    double step = (double)W / size, s = 0;
    double r0 = j * step, r1 = (j + 1) * step, c0 = k * step, c1 = (k + 1) * step;
    for (int r = (int)r0; r < W && r < r1; r++) {
        double wr = fmin(r + 1.0, r1) - fmax((double)r, r0);
        for (int c = (int)c0; c < W && c < c1; c++) {
            double wc = fmin(c + 1.0, c1) - fmax((double)c, c0);
            s += wr * wc * src[r * W + c];
        }
    }
    return s / (step * step);
}

/* Upstream's images_background_small1.zip (5 alphabets, 136 characters, top
 * folder images_background_small1): counts, order, and every shrink of the
 * first two characters against area_mean. */
START_TEST(test_omniglot_small_zip)
{
    char dir[1024], path[1100];
    if (!tu_data_dir("omniglot", dir, sizeof dir)) return;
    snprintf(path, sizeof path, "%s/original_small/images_background_small1.zip", dir);
    data_omniglot full;
    ck_assert_msg(data_omniglot_read_zip(path, 105, &full) == AD_OK, "%s", ad_error());
    ck_assert_int_eq(full.n_chars, 136);
    ck_assert_int_eq(full.ids[0], 108);
    ck_assert_int_eq(full.ids[135], 708);
    ck_assert_str_eq(full.names[0], "images_background_small1/Balinese/character01");
    ck_assert_str_eq(full.names[135], "images_background_small1/Latin/character26");
    /* 1-bit images at full size are 0 or 1 exactly. */
    for (size_t i = 0; i < (size_t)136 * 20 * 105 * 105; i++)
        if (full.pixels[i] != 0.0f && full.pixels[i] != 1.0f)
            ck_abort_msg("pixel %zu is %g", i, full.pixels[i]);

    const int sizes[3] = {28, 13, 52};
    for (int q = 0; q < 3; q++) {
        int S = sizes[q];
        data_omniglot om;
        ck_assert_msg(data_omniglot_read_zip(path, S, &om) == AD_OK, "%s", ad_error());
        ck_assert_int_eq(om.n_chars, 136);
        ck_assert_int_eq(om.size, S);
        for (int c = 0; c < 2; c++)
            for (int d = 0; d < 20; d++) {
                const float *src = om_image(&full, c, d), *x = om_image(&om, c, d);
                for (int j = 0; j < S; j++)
                    for (int k = 0; k < S; k++) {
                        double want = area_mean(src, S, j, k);
                        ck_assert_msg(fabs(x[j * S + k] - want) < 1e-6, "size %d, char "
                                      "%d, drawer %d, pixel (%d,%d): %.9g, want %.9g",
                                      S, c, d, j, k, x[j * S + k], want);
                    }
            }
        data_omniglot_free(&om);
    }
    data_omniglot_free(&full);
}
END_TEST

START_TEST(test_task_args)
{
    const char *path = hand_zip("hand.zip");
    data_omniglot om;
    ck_assert_msg(data_omniglot_read_zip(path, 28, &om) == AD_OK, "%s", ad_error());
    ad_rng rng;
    ad_rng_seed(&rng, 1);
    data_task t;
    memset(&t, 0xA5, sizeof t);
    ck_assert_int_eq(data_task_init(&t, 2, 10, 11, 28), AD_EARG); /* 21 drawers */
    ck_assert_ptr_null(t.x_train);
    ck_assert_int_eq(data_task_init(&t, 0, 1, 1, 28), AD_EARG);
    ck_assert_int_eq(data_task_init(&t, 2, 0, 1, 28), AD_EARG);

    /* A task of 14x14 images does not fit data of 28x28. */
    ck_assert_int_eq(data_task_init(&t, 2, 1, 1, 14), AD_OK);
    int pool[3] = {0, 1, 2};
    ck_assert_int_eq(data_omniglot_sample_task(&om, pool, 2, &rng, &t), AD_EARG);
    data_task_free(&t);

    /* Two classes from a pool of two: both characters, in some order. With
     * k_val = 0 there is no validation set. */
    ck_assert_int_eq(data_task_init(&t, 2, 20, 0, 28), AD_OK);
    ck_assert_int_eq(data_omniglot_sample_task(&om, pool, 2, &rng, &t), AD_OK);
    ck_assert_int_eq(t.chars[0] + t.chars[1], 1);
    for (int c = 0; c < 2; c++) {
        int used = 0;
        for (int j = 0; j < 20; j++)
            used |= 1 << t.drawers[c * 20 + j];
        ck_assert_int_eq(used, (1 << 20) - 1);
        int row = c * 20; /* character 0 has the ink square, 1 is blank */
        ck_assert_double_eq(t.x_train[row * 784], t.chars[c] == 0 ? 1.0 : 0.0);
    }
    ck_assert_int_eq(data_omniglot_sample_task(&om, pool, 1, &rng, &t), AD_EARG);
    /* A pool entry that is not a character: an error, not a wild read, even
     * when the sample would not have chosen it. */
    ck_assert_int_eq(data_omniglot_sample_task(&om, pool, 3, &rng, &t), AD_EARG);
    ck_assert_msg(strstr(ad_error(), "pool[2] = 2") != NULL, "%s", ad_error());
    data_task_free(&t);

    /* Uniform choices: over 4000 one-way tasks of 3 + 2 drawers, each of
     * the 2 characters comes up ~2000 times and each drawer ~1000 times
     * (standard deviations ~32 and ~27). */
    ck_assert_int_eq(data_task_init(&t, 1, 3, 2, 28), AD_OK);
    int n_char[2] = {0}, n_drawer[20] = {0}, n_first[20] = {0};
    for (int it = 0; it < 4000; it++) {
        ck_assert_int_eq(data_omniglot_sample_task(&om, pool, 2, &rng, &t), AD_OK);
        n_char[t.chars[0]]++;
        n_first[t.drawers[0]]++;
        for (int j = 0; j < 5; j++)
            n_drawer[t.drawers[j]]++;
    }
    ck_assert_int_lt(abs(n_char[0] - 2000), 160);
    for (int d = 0; d < 20; d++) {
        ck_assert_msg(abs(n_drawer[d] - 1000) < 140, "drawer %d: %d", d, n_drawer[d]);
        ck_assert_msg(abs(n_first[d] - 200) < 70, "first drawer %d: %d", d, n_first[d]);
    }
    data_task_free(&t);
    data_task_free(&t);
    data_omniglot_free(&om);
}
END_TEST

/* ---- Omniglot: broken files --------------------------------------------- */

START_TEST(test_omniglot_missing)
{
    const char *p = tu_tmp_path("no-such.zip");
    expect_zip_fail(p, AD_EIO, NULL, "cannot open");
    /* A folder with only the background zip: the message names the other. */
    tu_tmp_mkdir("om");
    char bg[1024];
    snprintf(bg, sizeof bg, "%s/om/" DATA_OMNIGLOT_BACKGROUND, tu_tmp_root());
    const char *hz = hand_zip("hand.zip");
    ck_assert_int_eq(rename(hz, bg), 0);
    data_omniglot om;
    memset(&om, 0xA5, sizeof om);
    ck_assert_int_eq(data_omniglot_load(tu_tmp_path("om"), 28, &om), AD_EIO);
    ck_assert_msg(strstr(ad_error(), DATA_OMNIGLOT_EVALUATION) != NULL, "%s",
                  ad_error());
    ck_assert_ptr_null(om.pixels);
    /* Both zips present and well formed, but not the standard 1623
     * characters (ids 3, 5 and 7): refused, since callers split by id. */
    zspec z = {0};
    tu_blob blank = png_gray(105, 105, NULL);
    zadd_char(&z, "top/Beta/character01", 7, &blank, 0);
    free(blank.b);
    char ev[1024];
    snprintf(ev, sizeof ev, "%s/om/" DATA_OMNIGLOT_EVALUATION, tu_tmp_root());
    ck_assert_int_eq(rename(zwrite(&z, "ev.zip"), ev), 0);
    ck_assert_int_eq(data_omniglot_load(tu_tmp_path("om"), 28, &om), AD_EFORMAT);
    ck_assert_msg(strstr(ad_error(), "character ids are not 1..1623 (id 1 is missing)") != NULL,
                  "%s", ad_error());
    ck_assert_ptr_null(om.pixels);
    ck_assert_int_eq(data_omniglot_load(tu_tmp_path("om"), 0, &om), AD_EARG);
    ck_assert_int_eq(data_omniglot_read_zip(bg, 106, &om), AD_EARG);
    ck_assert_int_eq(data_omniglot_read_zip(NULL, 28, &om), AD_EARG);
}
END_TEST

START_TEST(test_omniglot_not_a_zip)
{
    const char *p = tu_tmp_path("text.zip");
    tu_write_raw(p, "this is not a zip archive\n", 26);
    expect_zip_fail(p, AD_EFORMAT, NULL, "not a zip archive");
    /* A zip cut in half has lost its central directory. */
    const char *hz = hand_zip("hand.zip");
    tu_blob b = tu_read_file(hz, 1 << 20);
    const char *half = tu_tmp_path("half.zip");
    tu_write_raw(half, b.b, b.n / 2);
    expect_zip_fail(half, AD_EFORMAT, NULL, "not a zip archive");
    free(b.b);
    /* An empty archive (just the end-of-directory record) has no images. */
    unsigned char eocd[22] = {'P', 'K', 5, 6};
    const char *empty = tu_tmp_path("empty.zip");
    tu_write_raw(empty, eocd, sizeof eocd);
    expect_zip_fail(empty, AD_EFORMAT, NULL, "no Omniglot images");
    /* The data_omniglot_read_zip of a directory. */
    expect_zip_fail(tu_tmp_root(), AD_EIO, NULL, "read error");
}
END_TEST

START_TEST(test_omniglot_corrupt_entry)
{
    /* Flip one byte inside a stored PNG's IDAT data: the zip is intact but
     * the entry's CRC no longer matches. */
    const char *hz = hand_zip("hand.zip");
    tu_blob b = tu_read_file(hz, 1 << 20);
    tu_blob png = png_gray(105, 105, hand_ink);
    const unsigned char *hit = NULL;
    /* The first copy of the inked PNG is character01's drawer 01. */
    for (size_t i = 0; i + png.n <= b.n && !hit; i++)
        if (memcmp(b.b + i, png.b, png.n) == 0)
            hit = b.b + i;
    ck_assert_ptr_nonnull(hit);
    b.b[(size_t)(hit - b.b) + png.n / 2] ^= 0x55;
    const char *p = tu_tmp_path("crc.zip");
    tu_write_raw(p, b.b, b.n);
    expect_zip_fail(p, AD_EFORMAT, "top/Alpha/character01/0003_01.png", "corrupt entry");
    free(b.b);
    free(png.b);
}
END_TEST

START_TEST(test_omniglot_bad_layout)
{
    tu_blob png = png_gray(105, 105, hand_ink);
    zspec z = {0};

    /* A character with 19 drawers. */
    zadd_char(&z, "t/A/character01", 1, &png, 7);
    const char *p = zwrite(&z, "missing.zip");
    expect_zip_fail(p, AD_EFORMAT, "t/A/character01", "has 19 drawers, expected 20 "
                    "(drawer 07 is missing)");

    /* A drawer beyond 20. */
    zadd_char(&z, "t/A/character01", 1, &png, 0);
    zadd(&z, "t/A/character01/0001_21.png", png.b, png.n);
    p = zwrite(&z, "drawer21.zip");
    expect_zip_fail(p, AD_EFORMAT, "0001_21.png", "outside 01..20");

    /* A file of another character in the folder. */
    zadd_char(&z, "t/A/character01", 1, &png, 4);
    zadd(&z, "t/A/character01/0002_04.png", png.b, png.n);
    p = zwrite(&z, "mixed.zip");
    expect_zip_fail(p, AD_EFORMAT, "0002_04.png", "character id 0002");

    /* Two folders with the same id. */
    zadd_char(&z, "t/A/character01", 9, &png, 0);
    zadd_char(&z, "t/B/character01", 9, &png, 0);
    p = zwrite(&z, "dup.zip");
    expect_zip_fail(p, AD_EFORMAT, "t/B/character01", "same character id 0009");

    /* An entry that is not an Omniglot image. */
    zadd_char(&z, "t/A/character01", 1, &png, 0);
    zadd(&z, "t/A/character01/notes.txt", "hello", 5);
    p = zwrite(&z, "notes.zip");
    expect_zip_fail(p, AD_EFORMAT, "t/A/character01/notes.txt", "unexpected entry");
    zadd_char(&z, "t/A/character01", 1, &png, 0);
    zadd(&z, "t/A/0001_01.png", png.b, png.n); /* one folder short */
    p = zwrite(&z, "short.zip");
    expect_zip_fail(p, AD_EFORMAT, "t/A/0001_01.png", "unexpected entry");
    free(png.b);
}
END_TEST

START_TEST(test_omniglot_bad_png)
{
    tu_blob png = png_gray(105, 105, hand_ink);
    zspec z = {0};

    /* Not a PNG at all. */
    zadd_char(&z, "t/A/character01", 1, &png, 3);
    zadd(&z, "t/A/character01/0001_03.png", "GIF89a not a png", 16);
    const char *p = zwrite(&z, "gif.zip");
    expect_zip_fail(p, AD_EFORMAT, "t/A/character01/0001_03.png", "not a PNG");

    /* A PNG signature followed by junk. */
    unsigned char junk[64];
    memcpy(junk, png.b, 8);
    memset(junk + 8, 0x42, sizeof junk - 8);
    zadd_char(&z, "t/A/character01", 1, &png, 3);
    zadd(&z, "t/A/character01/0001_03.png", junk, sizeof junk);
    p = zwrite(&z, "junk.zip");
    expect_zip_fail(p, AD_EFORMAT, "t/A/character01/0001_03.png", "does not decode");

    /* A PNG cut short (its IDAT ends early, no IEND). */
    zadd_char(&z, "t/A/character01", 1, &png, 3);
    zadd(&z, "t/A/character01/0001_03.png", png.b, 60);
    p = zwrite(&z, "cut.zip");
    expect_zip_fail(p, AD_EFORMAT, "t/A/character01/0001_03.png", "does not decode");

    /* A PNG of the wrong size. */
    tu_blob small = png_gray(104, 105, NULL);
    zadd_char(&z, "t/A/character01", 1, &png, 20);
    zadd(&z, "t/A/character01/0001_20.png", small.b, small.n);
    p = zwrite(&z, "size.zip");
    expect_zip_fail(p, AD_EFORMAT, "t/A/character01/0001_20.png",
                    "the image is 104x105, expected 105x105");
    free(small.b);
    free(png.b);
}
END_TEST

/* ---- PNG headers and hostile PNGs (checked before stb_image decodes) ---- */

/* An empty PNG of room for cap bytes after its signature. */
static tu_blob png_begin(size_t cap)
{
    tu_blob b = {malloc(8 + cap), 8};
    ck_assert_ptr_nonnull(b.b);
    memcpy(b.b, "\x89PNG\r\n\x1a\n", 8);
    return b;
}

/* IHDR of a w x h image: bit depth, colour type, interlace method. */
static void png_ihdr(tu_blob *b, uint32_t w, uint32_t h, int depth, int type, int interlace)
{
    unsigned char ihdr[13] = {0};
    tu_put_be32(ihdr, w);
    tu_put_be32(ihdr + 4, h);
    ihdr[8] = (unsigned char)depth;
    ihdr[9] = (unsigned char)type;
    ihdr[12] = (unsigned char)interlace;
    png_chunk(b, "IHDR", ihdr, 13);
}

/* zlib's stream of n bytes at raw, at compression level (0..9); caller
 * frees .b. */
static tu_blob png_deflate(const unsigned char *raw, size_t n, int level)
{
    tu_blob z;
    uLongf zn = compressBound((uLong)n);
    z.b = malloc(zn);
    ck_assert_ptr_nonnull(z.b);
    ck_assert_int_eq(compress2(z.b, &zn, raw, (uLong)n, level), Z_OK);
    z.n = zn;
    return z;
}

/* The rows of a rows x 105 1-bit gray image, filter 0: white (bits 1)
 * except a black pixel at (0, 0) and at (104, 104). */
static tu_blob png_raw_1bit(int rows)
{
    const size_t stride = 1 + (105 + 7) / 8; /* 15 */
    tu_blob r = {malloc(stride * (size_t)rows), stride * (size_t)rows};
    ck_assert_ptr_nonnull(r.b);
    memset(r.b, 0xff, r.n);
    for (int i = 0; i < rows; i++)
        r.b[(size_t)i * stride] = 0;
    r.b[1] &= 0x7f;                                 /* (0, 0) */
    if (rows == 105)
        r.b[104 * stride + 1 + 104 / 8] &= (unsigned char)~(0x80 >> (104 % 8)); /* (104, 104) */
    return r;
}

/* An Omniglot-like PNG: 105x105 1-bit gray holding png_raw_1bit(rows). */
static tu_blob png_1bit(int rows)
{
    tu_blob raw = png_raw_1bit(rows), z = png_deflate(raw.b, raw.n, 9);
    tu_blob b = png_begin(25 + 12 + z.n + 12);
    png_ihdr(&b, 105, 105, 1, 0, 0);
    png_chunk(&b, "IDAT", z.b, z.n);
    png_chunk(&b, "IEND", NULL, 0);
    free(raw.b);
    free(z.b);
    return b;
}

/* data_omniglot_decode_png fails with AD_EFORMAT, naming "t.png" and saying `what`. */
static void expect_png_fail(const tu_blob *png, const char *what)
{
    float out[28 * 28];
    ad_error_clear();
    int rc = data_omniglot_decode_png("t.png", png->b, png->n, 28, out);
    tu_fail_with(rc, AD_EFORMAT, "t.png", what);
}

START_TEST(test_png_header)
{
    /* Omniglot's own kind, 1-bit: the two black pixels come out whole at
     * 105 and as 1/105² of their output pixel's area... at 105, exactly. */
    float big[105 * 105];
    tu_blob ok = png_1bit(105);
    ck_assert_msg(data_omniglot_decode_png("t.png", ok.b, ok.n, 105, big) == AD_OK, "%s",
                  ad_error());
    double sum = 0;
    for (int i = 0; i < 105 * 105; i++)
        sum += big[i];
    ck_assert_double_eq(sum, 2.0);
    ck_assert_float_eq(big[0], 1.0f);
    ck_assert_float_eq(big[105 * 105 - 1], 1.0f);
    /* 8-bit gray (what other tools write) decodes too. */
    tu_blob gray8 = png_gray(105, 105, hand_ink);
    ck_assert_msg(data_omniglot_decode_png("t.png", gray8.b, gray8.n, 105, big) == AD_OK, "%s",
                  ad_error());
    ck_assert_float_eq(big[0], 1.0f);

    /* The header: size, colour type, bit depth, interlace, IHDR first. */
    tu_blob small = png_gray(104, 105, NULL);
    expect_png_fail(&small, "the image is 104x105, expected 105x105");
    tu_blob wide = png_begin(64);
    png_ihdr(&wide, 105, 4000000000u, 1, 0, 0);
    png_chunk(&wide, "IEND", NULL, 0);
    expect_png_fail(&wide, "the image is 105x4000000000, expected 105x105");
    const struct { int depth, type, interlace; const char *what; } bad[] = {
        {8, 2, 0, "colour type 2 and bit depth 8"},  /* RGB */
        {8, 3, 0, "colour type 3 and bit depth 8"},  /* palette */
        {16, 0, 0, "colour type 0 and bit depth 16"},
        {3, 0, 0, "colour type 0 and bit depth 3"},  /* not a depth at all */
        {1, 0, 1, "interlaced"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        tu_blob b = png_begin(64);
        png_ihdr(&b, 105, 105, bad[i].depth, bad[i].type, bad[i].interlace);
        png_chunk(&b, "IEND", NULL, 0);
        expect_png_fail(&b, bad[i].what);
        free(b.b);
    }
    tu_blob text_first = png_begin(ok.n + 32);
    png_chunk(&text_first, "tEXt", (const unsigned char *)"a\0b", 3);
    memcpy(text_first.b + text_first.n, ok.b + 8, ok.n - 8);
    text_first.n += ok.n - 8;
    expect_png_fail(&text_first, "does not start with a 13-byte IHDR chunk");

    /* The chunks: cut short, no IEND, image data of the wrong length. */
    tu_blob cut = {ok.b, ok.n - 12}; /* without IEND */
    expect_png_fail(&cut, "without an IEND chunk");
    cut.n = ok.n - 20; /* inside IDAT */
    expect_png_fail(&cut, "only");
    tu_blob short_rows = png_1bit(104);
    expect_png_fail(&short_rows, "its image data inflate to 1560 bytes, a 105x105 image of "
                                 "its type holds 1575");
    tu_blob not_png = {(unsigned char *)"GIF89a", 6};
    expect_png_fail(&not_png, "not a PNG");

    /* Chunks after IHDR: an unknown ancillary one (lowercase first letter)
     * is skipped, as the standard says; an unknown critical one is refused
     * by name: Apple's CgBI (stb_image would then read IDAT as raw deflate,
     * not the zlib stream checked), or any other. */
    const struct { const char *type; const char *what; } extra[] = {
        {"tEXt", NULL},
        {"vpAg", NULL},
        {"CgBI", "a critical chunk \"CgBI\" at byte 33, not one of IHDR, PLTE, IDAT, IEND"},
        {"ABCD", "a critical chunk \"ABCD\" at byte 33"},
        {"I\x01\x7f\xff", "a critical chunk \"I???\" at byte 33"},
    };
    for (size_t i = 0; i < sizeof extra / sizeof *extra; i++) {
        tu_blob b = png_begin(ok.n + 16);
        memcpy(b.b + b.n, ok.b + 8, 25); /* IHDR */
        b.n += 25;
        png_chunk(&b, extra[i].type, (const unsigned char *)"\x50\x00\x20\x06", 4);
        memcpy(b.b + b.n, ok.b + 33, ok.n - 33); /* IDAT, IEND */
        b.n += ok.n - 33;
        if (extra[i].what)
            expect_png_fail(&b, extra[i].what);
        else
            ck_assert_msg(data_omniglot_decode_png("t.png", b.b, b.n, 105, big) == AD_OK,
                          "%s: %s", extra[i].type, ad_error());
        free(b.b);
    }
    free(ok.b);
    free(gray8.b);
    free(small.b);
    free(wide.b);
    free(text_first.b);
    free(short_rows.b);
}
END_TEST

/* The three hostile PNGs of issue 14: each must be refused by the header
 * check, with its own message, before stb_image allocates for it. */
typedef struct hostile { tu_blob png; const char *what; } hostile;

static void hostile_make(hostile h[3])
{
    /* Stored (level 0): any 40 bytes of it are a valid start. */
    tu_blob raw = png_raw_1bit(105), z = png_deflate(raw.b, raw.n, 0);
    ck_assert_uint_gt(z.n, 40);
    /* 169 bytes: a first IDAT of 40 true bytes, then one claiming 2^30
     * (stb_image's largest), of which 72 are there.  stb_image grows its
     * buffer from 4096 by doubling past 40 + 2^30: a 2 GiB realloc. */
    h[0].png = png_begin(161);
    png_ihdr(&h[0].png, 105, 105, 1, 0, 0);
    png_chunk(&h[0].png, "IDAT", z.b, 40);
    unsigned char *at = h[0].png.b + h[0].png.n;
    tu_put_be32(at, 1u << 30);
    memcpy(at + 4, "IDAT", 4);
    memset(at + 8, 0x42, 169 - h[0].png.n - 8);
    h[0].png.n = 169;
    h[0].what = "the chunk at byte 85 claims 1073741824 bytes, only 72 follow";

    /* A zero-length IDAT first (stb_image then copies 0 bytes to NULL + 0). */
    h[1].png = png_begin(25 + 12 + 12 + z.n + 12);
    png_ihdr(&h[1].png, 105, 105, 1, 0, 0);
    png_chunk(&h[1].png, "IDAT", NULL, 0);
    png_chunk(&h[1].png, "IDAT", z.b, z.n);
    png_chunk(&h[1].png, "IEND", NULL, 0);
    h[1].what = "an empty IDAT chunk at byte 33";

    /* A deflate bomb: 64 MiB of zeros in 64 KiB of IDAT, for an image that
     * holds 1575 bytes. */
    size_t big = (size_t)64 << 20;
    unsigned char *zeros = calloc(big, 1);
    ck_assert_ptr_nonnull(zeros);
    tu_blob bomb = png_deflate(zeros, big, 9);
    free(zeros);
    h[2].png = png_begin(25 + 12 + bomb.n + 12);
    png_ihdr(&h[2].png, 105, 105, 1, 0, 0);
    png_chunk(&h[2].png, "IDAT", bomb.b, bomb.n);
    png_chunk(&h[2].png, "IEND", NULL, 0);
    h[2].what = "its image data inflate to more than the 1575 bytes";
    free(bomb.b);
    free(raw.b);
    free(z.b);
}

START_TEST(test_png_hostile)
{
    hostile h[3];
    hostile_make(h);
    ck_assert_uint_eq(h[0].png.n, 169);
    for (int i = 0; i < 3; i++)
        expect_png_fail(&h[i].png, h[i].what);

#if !defined(__SANITIZE_ADDRESS__) && !defined(HT_TEST_ASAN)
    /* The cap itself: with only 64 MiB more address space than the process
     * holds now, each is still refused by the header check (stb_image, let
     * loose, fails with "outofmem" on the first; the bomb needs 64 MiB). */
    long pages = sysconf(_SC_PAGESIZE), vm = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld", &vm) != 1) vm = 0;
        fclose(f);
    }
    struct rlimit old;
    if (vm > 0 && getrlimit(RLIMIT_AS, &old) == 0) {
        struct rlimit lim = old;
        lim.rlim_cur = (rlim_t)vm * (rlim_t)pages + ((rlim_t)64 << 20);
        if (old.rlim_cur == RLIM_INFINITY || lim.rlim_cur < old.rlim_cur) {
            ck_assert_int_eq(setrlimit(RLIMIT_AS, &lim), 0);
            for (int i = 0; i < 3; i++)
                expect_png_fail(&h[i].png, h[i].what);
            ck_assert_int_eq(setrlimit(RLIMIT_AS, &old), 0);
        }
    }
#endif

    /* In a zip, the message names the entry too. */
    zspec z = {0};
    tu_blob png = png_1bit(105);
    zadd_char(&z, "t/A/character01", 1, &png, 3);
    zadd(&z, "t/A/character01/0001_03.png", h[0].png.b, h[0].png.n);
    const char *p = zwrite(&z, "hostile.zip");
    expect_zip_fail(p, AD_EFORMAT, "t/A/character01/0001_03.png", "claims 1073741824 bytes");
    free(png.b);
    for (int i = 0; i < 3; i++)
        free(h[i].png.b);
}
END_TEST

START_TEST(test_find_dir)
{
    ck_assert_str_eq(data_find_dir("/some/where", "omniglot"), "/some/where");
    ck_assert_ptr_null(data_find_dir(NULL, "imagenet"));
    ck_assert_msg(strstr(ad_error(), "imagenet") != NULL, "%s", ad_error());

    /* Run from an empty folder, so ../shared/data is not there either. */
    char cwd[4096], env[4096] = "";
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
    const char *had = getenv("HYPERTAPE_DATA");
    if (had)
        snprintf(env, sizeof env, "%s", had);
    const char *work = tu_tmp_mkdir("work");
    ck_assert_int_eq(chdir(work), 0);
    tu_tmp_mkdir("omniglot");
    setenv("HYPERTAPE_DATA", tu_tmp_root(), 1);
    ck_assert_ptr_null(data_find_dir(NULL, "omniglot"));
    ck_assert_msg(strstr(ad_error(), DATA_OMNIGLOT_BACKGROUND) != NULL, "%s", ad_error());
    tu_write_raw(tu_tmp_path("omniglot/" DATA_OMNIGLOT_BACKGROUND), "x", 1);
    const char *d = data_find_dir("", "omniglot");
    ck_assert_ptr_nonnull(d);
    ck_assert_str_eq(d, tu_tmp_path("omniglot"));
    ck_assert_ptr_null(data_find_dir(NULL, "cifar"));
    unsetenv("HYPERTAPE_DATA");
    ck_assert_ptr_null(data_find_dir(NULL, "cifar"));
    ck_assert_msg(strstr(ad_error(), "not set") != NULL, "%s", ad_error());
    ck_assert_int_eq(chdir(cwd), 0); /* as it was, for CK_FORK=no */
    if (had)
        setenv("HYPERTAPE_DATA", env, 1);
}
END_TEST

/* ---- CIFAR: small and broken files -------------------------------------- */

/* n records: record i has label labels[i] and pixel p = (i + p) % 251. */
static tu_blob cifar_blob(int n, const int *labels)
{
    tu_blob b;
    b.n = (size_t)n * 3073;
    b.b = malloc(b.n ? b.n : 1);
    ck_assert_ptr_nonnull(b.b);
    for (int i = 0; i < n; i++) {
        b.b[(size_t)i * 3073] = (unsigned char)labels[i];
        for (int p = 0; p < 3072; p++)
            b.b[(size_t)i * 3073 + 1 + (size_t)p] = (unsigned char)((i + p) % 251);
    }
    return b;
}

static const int lab3[3] = {3, 0, 9};

START_TEST(test_cifar_small)
{
    tu_blob b = cifar_blob(3, lab3);
    const char *raw = tu_tmp_path("three.bin"), *gz = tu_tmp_path("three.bin.gz");
    tu_write_raw(raw, b.b, b.n);
    tu_write_gz(gz, b.b, b.n);
    free(b.b);
    const char *paths[2] = {raw, gz};
    for (int q = 0; q < 2; q++) {
        data_cifar c;
        ck_assert_msg(data_cifar_read(paths[q], &c) == AD_OK, "%s", ad_error());
        ck_assert_int_eq(c.n, 3);
        for (int i = 0; i < 3; i++) {
            ck_assert_int_eq(c.labels[i], lab3[i]);
            for (int p = 0; p < 3072; p += 511)
                ck_assert_int_eq(c.pixels[i * 3072 + p], (i + p) % 251);
        }
        /* Moments over images 0 and 2: feature p is (p, p + 2) % 251. */
        double mean[3072], sd[3072];
        int idx[2] = {0, 2};
        ck_assert_int_eq(data_cifar_moments(&c, idx, 2, mean, sd), AD_OK);
        ck_assert_double_eq(mean[0], 1.0);
        ck_assert_double_eq(sd[0], 1.0);
        ck_assert_double_eq(mean[250], (250 + 1) / 2.0); /* (250, 1) */
        ck_assert_double_eq(sd[250], 124.5);
        /* One image: nothing varies, std falls back to 1. */
        ck_assert_int_eq(data_cifar_moments(&c, idx + 1, 1, mean, sd), AD_OK);
        ck_assert_double_eq(sd[17], 1.0);
        ad_real x[2 * 3073];
        ck_assert_int_eq(data_cifar_features(&c, idx, 2, mean, sd, true, x), AD_OK);
        /* Fitted on image 2 alone (feature 17 is 19, std 1): image 0 has 17. */
        ck_assert_double_eq(x[17], -2.0);
        ck_assert_double_eq(x[3073 + 17], 0.0);
        ck_assert_double_eq(x[3072], 1.0);
        ck_assert_int_eq(data_cifar_features(&c, NULL, 1, NULL, NULL, false, x), AD_OK);
        ck_assert_double_eq_tol(x[250], 250 / 255.0, 1e-7);
        /* Bad arguments. */
        ck_assert_int_eq(data_cifar_moments(&c, idx, 0, mean, sd), AD_EARG);
        int out_of_range[1] = {3};
        ck_assert_int_eq(data_cifar_moments(&c, out_of_range, 1, mean, sd), AD_EARG);
        ck_assert_int_eq(data_cifar_features(&c, out_of_range, 1, NULL, NULL, false, x),
                         AD_EARG);
        ck_assert_int_eq(data_cifar_features(&c, idx, 1, mean, NULL, false, x), AD_EARG);
        int y[1];
        ck_assert_int_eq(data_cifar_labels(&c, out_of_range, 1, y), AD_EARG);
        data_cifar_free(&c);
    }
}
END_TEST

START_TEST(test_cifar_broken)
{
    expect_cifar_fail(tu_tmp_path("no-such.bin.gz"), AD_EIO, "cannot open");
    const char *empty = tu_tmp_path("empty.bin.gz");
    tu_write_gz(empty, "", 0);
    expect_cifar_fail(empty, AD_EFORMAT, "empty");

    /* 2.5 records: not a whole number. */
    int lab[3] = {1, 2, 3};
    tu_blob b = cifar_blob(3, lab);
    const char *part = tu_tmp_path("part.bin.gz");
    tu_write_gz(part, b.b, 3073 * 2 + 1536);
    expect_cifar_fail(part, AD_EFORMAT, "is not a whole number of 3073-byte records "
                      "(2 records and 1536 bytes over)");

    /* A label byte of 10 in record 1. */
    b.b[3073] = 10;
    const char *lbl = tu_tmp_path("label.bin.gz");
    tu_write_gz(lbl, b.b, b.n);
    expect_cifar_fail(lbl, AD_EFORMAT, "record 1 (byte offset 3073) has label 10");
    free(b.b);

    /* The gzip stream cut short, and one with a damaged byte. */
    tu_blob full = cifar_blob(3, lab);
    const char *good = tu_tmp_path("good.bin.gz");
    tu_write_gz(good, full.b, full.n);
    free(full.b);
    tu_blob gz = tu_read_file(good, 1 << 20);
    const char *cut = tu_tmp_path("cut.bin.gz");
    tu_write_raw(cut, gz.b, gz.n - 12);
    expect_cifar_fail(cut, AD_EFORMAT, "truncated gzip stream");
    gz.b[gz.n / 2] ^= 0xFF;
    const char *bad = tu_tmp_path("bad.bin.gz");
    tu_write_raw(bad, gz.b, gz.n);
    expect_cifar_fail(bad, AD_EFORMAT, "corrupt gzip stream");
    gz.b[gz.n / 2] ^= 0xFF;
    /* Bytes after the gzip stream (zlib's gzread ignored them: n = 3). */
    tu_blob after = {malloc(gz.n + 11), gz.n + 11};
    ck_assert_ptr_nonnull(after.b);
    memcpy(after.b, gz.b, gz.n);
    memcpy(after.b + gz.n, "hello world", 11);
    const char *tail = tu_tmp_path("after.bin.gz");
    tu_write_raw(tail, after.b, after.n);
    char want[128];
    snprintf(want, sizeof want, "bytes after the end of the gzip stream, from byte %zu of "
             "the file, are not another gzip member", gz.n);
    expect_cifar_fail(tail, AD_EFORMAT, want);
    free(after.b);
    free(gz.b);

    /* data_cifar_load names the missing file and leaves both zeroed. */
    tu_tmp_mkdir("c");
    tu_blob one = cifar_blob(1, lab);
    tu_write_gz(tu_tmp_path("c/" DATA_CIFAR_TRAIN), one.b, one.n);
    free(one.b);
    data_cifar tr, te;
    memset(&tr, 0xA5, sizeof tr);
    memset(&te, 0xA5, sizeof te);
    tu_fail_with(data_cifar_load(tu_tmp_path("c"), &tr, &te), AD_EIO, DATA_CIFAR_TEST,
                 "cannot open");
    ck_assert_ptr_null(tr.pixels);
    ck_assert_ptr_null(te.pixels);
    ck_assert_int_eq(tr.n, 0);
}
END_TEST

Suite *data_omniglot_cifar_suite(void)
{
    Suite *s = suite_create("data_omniglot_cifar");

    TCase *real = tcase_create("real");
    tcase_set_timeout(real, 120); /* ~2 s normally, ~4 s under ASan */
    tcase_add_test(real, test_omniglot_full);
    tcase_add_test(real, test_cifar_real);
    tcase_add_test(real, test_split);
    suite_add_tcase(s, real);

    TCase *om = tcase_create("omniglot_files");
    tcase_set_timeout(om, 60);
    tcase_add_unchecked_fixture(om, tmp_top_setup, tu_tmp_top_teardown);
    tcase_add_checked_fixture(om, tu_tmp_setup, tu_tmp_teardown);
    tcase_add_test(om, test_omniglot_hand_worked);
    tcase_add_test(om, test_omniglot_small_zip);
    tcase_add_test(om, test_task_args);
    tcase_add_test(om, test_omniglot_missing);
    tcase_add_test(om, test_omniglot_not_a_zip);
    tcase_add_test(om, test_omniglot_corrupt_entry);
    tcase_add_test(om, test_omniglot_bad_layout);
    tcase_add_test(om, test_omniglot_bad_png);
    tcase_add_test(om, test_png_header);
    tcase_add_test(om, test_png_hostile);
    tcase_add_test(om, test_find_dir);
    suite_add_tcase(s, om);

    TCase *cf = tcase_create("cifar_files");
    tcase_set_timeout(cf, 60);
    tcase_add_unchecked_fixture(cf, tmp_top_setup, tu_tmp_top_teardown);
    tcase_add_checked_fixture(cf, tu_tmp_setup, tu_tmp_teardown);
    tcase_add_test(cf, test_cifar_small);
    tcase_add_test(cf, test_cifar_broken);
    suite_add_tcase(s, cf);
    return s;
}
