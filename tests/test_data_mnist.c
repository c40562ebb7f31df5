/* test_data_mnist.c — the IDX / MNIST loaders (experiments/data/mnist.h).
 *
 * Two halves.  The real files: MNIST must be present when CI is set (CI has
 * it); elsewhere a missing mnist folder skips that test with one line
 * (tu_data_dir), and a folder with a missing file still fails; their counts, first
 * labels and pixel checksums were computed independently with Python's gzip
 * module.  The broken files: small IDX files written to a fresh temporary
 * directory at test time, each broken in one way, each of which must give
 * the right status and a message that names the file.
 *
 * Where the real data are: $HYPERTAPE_DATA (the shared data root, holding
 * mnist/), else HT_SOURCE_ROOT "/../shared/data" when the build defines
 * HT_SOURCE_ROOT (tests run in the build directory, so a relative path would
 * depend on where the build directory is). */
#define _XOPEN_SOURCE 700 /* setenv, strdup */

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

#include "experiments/data/mnist.h"
#include "testutil.h"

Suite *data_mnist_suite(void);

static void tmp_top_setup(void) { tu_tmp_top_setup("test_data_mnist"); }

/* ---- building IDX files ------------------------------------------------- */

/* An IDX file: magic, rank extents, then `payload` bytes (i % 10, so they
 * double as labels) and `extra` trailing bytes.  The payload size is given
 * separately from the extents so that tests can lie in the header. */
static tu_blob idx_blob(uint32_t magic, int rank, const uint32_t *dims,
                        size_t payload, size_t extra)
{
    tu_blob bl;
    bl.n = 4 + 4 * (size_t)rank + payload + extra;
    bl.b = malloc(bl.n ? bl.n : 1);
    ck_assert_ptr_nonnull(bl.b);
    tu_put_be32(bl.b, magic);
    for (int i = 0; i < rank; i++)
        tu_put_be32(bl.b + 4 + 4 * i, dims[i]);
    for (size_t i = 0; i < payload + extra; i++)
        bl.b[4 + 4 * rank + i] = (unsigned char)(i % 10);
    return bl;
}

/* A well-formed images file of n x rows x cols. */
static tu_blob images_blob(uint32_t n, uint32_t rows, uint32_t cols)
{
    uint32_t d[3] = {n, rows, cols};
    return idx_blob(0x00000803, 3, d, (size_t)n * rows * cols, 0);
}

static tu_blob labels_blob(uint32_t n)
{
    uint32_t d[1] = {n};
    return idx_blob(0x00000801, 1, d, n, 0);
}

/* Writes the blob to tu_tmp_root()/name (gzipped if gz), frees it, returns the
 * path. */
static const char *put_file(const char *name, tu_blob bl, bool gz)
{
    const char *p = tu_tmp_path(name);
    if (gz)
        tu_write_gz(p, bl.b, bl.n);
    else
        tu_write_raw(p, bl.b, bl.n);
    free(bl.b);
    return p;
}

/* ---- checking failures -------------------------------------------------- */

/* Reading `path` as images fails with `code` and `what`, leaving out zeroed. */
static void expect_images_fail(const char *path, int code, const char *what)
{
    data_images im;
    memset(&im, 0xA5, sizeof im); /* must come back zeroed */
    ad_error_clear();
    int rc = data_idx_read_images(path, &im);
    tu_fail_with(rc, code, path, what);
    ck_assert_ptr_null(im.pixels);
    ck_assert_int_eq(im.n, 0);
}

static void expect_labels_fail(const char *path, int code, const char *what)
{
    data_labels lb;
    memset(&lb, 0xA5, sizeof lb);
    ad_error_clear();
    int rc = data_idx_read_labels(path, &lb);
    tu_fail_with(rc, code, path, what);
    ck_assert_ptr_null(lb.labels);
    ck_assert_int_eq(lb.n, 0);
}

/* ---- the real files ----------------------------------------------------- */

static uint64_t byte_sum(const unsigned char *b, size_t n)
{
    uint64_t s = 0;
    for (size_t i = 0; i < n; i++)
        s += b[i];
    return s;
}

/* CRC-32 in chunks (crc32 takes an unsigned length). */
static unsigned long byte_crc(const unsigned char *b, size_t n)
{
    uLong c = crc32(0L, Z_NULL, 0);
    for (size_t off = 0; off < n; off += 1u << 20) {
        size_t k = n - off < (1u << 20) ? n - off : (1u << 20);
        c = crc32(c, b + off, (uInt)k);
    }
    return c;
}

START_TEST(test_real_mnist)
{
    char dir[1024];
    if (!tu_data_dir("mnist", dir, sizeof dir)) return;
    data_mnist m;
    int rc = data_mnist_load(dir, &m);
    ck_assert_msg(rc == AD_OK, "MNIST must be loadable from %s (CI has it): %s",
                  dir, ad_error());

    ck_assert_int_eq(m.train_images.n, 60000);
    ck_assert_int_eq(m.train_labels.n, 60000);
    ck_assert_int_eq(m.test_images.n, 10000);
    ck_assert_int_eq(m.test_labels.n, 10000);
    ck_assert_int_eq(m.train_images.rows, 28);
    ck_assert_int_eq(m.train_images.cols, 28);
    ck_assert_int_eq(m.test_images.rows, 28);
    ck_assert_int_eq(m.test_images.cols, 28);

    /* The famous first digits: a 5 (train), a 7 (test). */
    ck_assert_int_eq(m.train_labels.labels[0], 5);
    ck_assert_int_eq(m.test_labels.labels[0], 7);
    ck_assert_uint_eq(byte_sum(m.train_labels.labels, 60000), 267236);
    ck_assert_uint_eq(byte_sum(m.test_labels.labels, 10000), 44434);

    size_t tr = (size_t)60000 * 784, te = (size_t)10000 * 784;
    ck_assert_uint_eq(byte_sum(m.train_images.pixels, tr), 1567298545u);
    ck_assert_uint_eq(byte_sum(m.test_images.pixels, te), 264923200u);
    ck_assert_uint_eq(byte_crc(m.train_images.pixels, tr), 0xf3639b56u);
    ck_assert_uint_eq(byte_crc(m.test_images.pixels, te), 0xe4ca5f57u);

    /* Features of the first training image: its pixels sum to 27525. */
    int d = data_feature_dim(&m.train_images, true), idx[2] = {0, 59999};
    ck_assert_int_eq(d, 785);
    ad_real *x = malloc(sizeof *x * 2 * (size_t)d);
    ck_assert_ptr_nonnull(x);
    ck_assert_int_eq(data_features(&m.train_images, idx, 2, true, x), AD_OK);
    double s = 0;
    for (int j = 0; j < 784; j++)
        s += x[j];
    ck_assert_double_eq_tol(s * 255.0, 27525.0, 1e-3);
    ck_assert_double_eq(x[784], 1.0);
    ck_assert_double_eq(x[785 + 784], 1.0);
    free(x);
    data_mnist_free(&m);
    data_mnist_free(&m); /* freeing twice is harmless */
}
END_TEST

/* Fashion-MNIST (Debian's dataset-fashion-mnist, which scripts/setup.sh
 * installs, or $HYPERTAPE_DATA/fashion-mnist): run-main.sh falls back to it
 * without MNIST.  Absent, the test prints "skipped: ..." and passes, or
 * fails when CI is set (tests/skip.sh's rule; CI runs setup.sh). */
START_TEST(test_real_fashion)
{
    const char *dir = data_find_dir(NULL, "fashion");
    if (!dir) {
        ck_assert_msg(!tu_in_ci(), "Fashion-MNIST not found: CI is set and scripts/setup.sh "
                      "installs it (dataset-fashion-mnist): %s", ad_error());
        fprintf(stderr, "skipped: Fashion-MNIST not found (scripts/setup.sh installs Debian's "
                        "dataset-fashion-mnist; with CI=true this is a failure): %s\n",
                ad_error());
        return;
    }
    data_mnist m;
    ck_assert_msg(data_mnist_load(dir, &m) == AD_OK, "%s", ad_error());
    ck_assert_int_eq(m.train_images.n, 60000);
    ck_assert_int_eq(m.test_images.n, 10000);
    ck_assert_int_eq(m.train_images.rows, 28);
    ck_assert_int_eq(m.test_images.cols, 28);
    ck_assert_int_eq(m.test_labels.labels[0], 9); /* an ankle boot */
    ck_assert_uint_eq(byte_sum(m.train_labels.labels, 60000), 270000); /* 6000 per class */
    ck_assert_uint_eq(byte_sum(m.test_labels.labels, 10000), 45000);   /* 1000 per class */
    data_mnist_free(&m);
}
END_TEST

/* ---- well-formed small files -------------------------------------------- */

static void check_small_images(const char *path)
{
    data_images im;
    ck_assert_msg(data_idx_read_images(path, &im) == AD_OK, "%s", ad_error());
    ck_assert_int_eq(im.n, 3);
    ck_assert_int_eq(im.rows, 4);
    ck_assert_int_eq(im.cols, 5);
    for (int i = 0; i < 60; i++)
        ck_assert_int_eq(im.pixels[i], i % 10);
    data_images_free(&im);
    ck_assert_ptr_null(im.pixels);
}

START_TEST(test_small_ok_raw_and_gz)
{
    check_small_images(put_file("a.idx3", images_blob(3, 4, 5), false));
    check_small_images(put_file("a.idx3.gz", images_blob(3, 4, 5), true));
    data_labels lb;
    const char *p = put_file("l.idx1.gz", labels_blob(7), true);
    ck_assert_msg(data_idx_read_labels(p, &lb) == AD_OK, "%s", ad_error());
    ck_assert_int_eq(lb.n, 7);
    ck_assert_int_eq(lb.labels[6], 6);
    data_labels_free(&lb);
}
END_TEST

/* A payload bigger than the loader's first allocation, so the buffer grows. */
START_TEST(test_large_payload_grows)
{
    uint32_t d[3] = {2, 4096, 4096}; /* 32 MiB of zeros-to-nines */
    tu_blob bl = idx_blob(0x00000803, 3, d, (size_t)2 * 4096 * 4096, 0);
    const char *p = put_file("big.gz", bl, true);
    data_images im;
    ck_assert_msg(data_idx_read_images(p, &im) == AD_OK, "%s", ad_error());
    size_t n = (size_t)2 * 4096 * 4096;
    ck_assert_int_eq(im.pixels[n - 1], (int)((n - 1) % 10));
    data_images_free(&im);
}
END_TEST

/* ---- broken files ------------------------------------------------------- */

START_TEST(test_missing_file)
{
    const char *p = tu_tmp_path("no-such-file.gz");
    expect_images_fail(p, AD_EIO, "cannot open");
    expect_labels_fail(p, AD_EIO, "cannot open");
    /* A directory opens, but reading it fails. */
    expect_images_fail(tu_tmp_root(), AD_EIO, "read error");
}
END_TEST

START_TEST(test_bad_magic)
{
    uint32_t d[3] = {1, 2, 2};
    const char *p = put_file("magic.gz", idx_blob(0x12345678, 3, d, 4, 0), true);
    expect_images_fail(p, AD_EFORMAT, "bad magic 0x12345678");
    /* A file gzipped twice: the first unpacked bytes are a gzip header. */
    tu_blob raw = images_blob(1, 2, 2);
    const char *once = tu_tmp_path("once.gz");
    tu_write_gz(once, raw.b, raw.n);
    free(raw.b);
    const char *twice = put_file("twice.gz", tu_read_file(once, 1 << 16), true);
    expect_images_fail(twice, AD_EFORMAT, "gzipped twice");
}
END_TEST

START_TEST(test_wrong_type_and_rank)
{
    uint32_t d[3] = {1, 2, 2};
    const char *p = put_file("float.gz", idx_blob(0x00000D03, 3, d, 16, 0), true);
    expect_images_fail(p, AD_EFORMAT, "element type 0x0d (float)");
    /* A labels file where images are expected, and the other way round. */
    const char *lb = put_file("labels.gz", labels_blob(4), true);
    expect_images_fail(lb, AD_EFORMAT, "rank 1 (a labels file?)");
    const char *im = put_file("images.gz", images_blob(1, 2, 2), true);
    expect_labels_fail(im, AD_EFORMAT, "rank 3 (an images file?)");
}
END_TEST

START_TEST(test_zero_and_absurd_dims)
{
    uint32_t zero[3] = {0, 28, 28};
    const char *p = put_file("zero.gz", idx_blob(0x00000803, 3, zero, 0, 0), true);
    expect_images_fail(p, AD_EFORMAT, "header says 0x28x28: an extent is 0");
    uint32_t huge[3] = {4294967295u, 28, 28};
    p = put_file("huge.gz", idx_blob(0x00000803, 3, huge, 100, 0), true);
    expect_images_fail(p, AD_EFORMAT, "4294967295x28x28: more than");
    uint32_t lzero[1] = {0};
    p = put_file("lzero", idx_blob(0x00000801, 1, lzero, 0, 0), false);
    expect_labels_fail(p, AD_EFORMAT, "an extent is 0");
}
END_TEST

START_TEST(test_truncated_data)
{
    uint32_t d[3] = {10, 28, 28}; /* 7840 bytes promised */
    const char *raw = put_file("t.idx3", idx_blob(0x00000803, 3, d, 1234, 0), false);
    expect_images_fail(raw, AD_EFORMAT,
                       "truncated: header says 10x28x28 = 7840 bytes of pixels, found 1234");
    const char *gz = put_file("t.idx3.gz", idx_blob(0x00000803, 3, d, 1234, 0), true);
    expect_images_fail(gz, AD_EFORMAT,
                       "truncated: header says 10x28x28 = 7840 bytes of pixels, found 1234");
    uint32_t l[1] = {100};
    const char *lb = put_file("t.idx1", idx_blob(0x00000801, 1, l, 99, 0), false);
    expect_labels_fail(lb, AD_EFORMAT, "header says 100 labels = 100 bytes, found 99");
}
END_TEST

START_TEST(test_truncated_header)
{
    tu_blob bl = images_blob(1, 2, 2);
    bl.n = 9; /* magic, one extent and a byte of the second */
    const char *p = put_file("th.gz", bl, true);
    expect_images_fail(p, AD_EFORMAT, "truncated header: an IDX images header is "
                                      "16 bytes, found 9");
    tu_blob two = {(unsigned char *)"\0\0", 2};
    p = tu_tmp_path("th2");
    tu_write_raw(p, two.b, two.n);
    expect_labels_fail(p, AD_EFORMAT, "found 2");
    p = tu_tmp_path("empty");
    tu_write_raw(p, (const unsigned char *)"", 0);
    expect_images_fail(p, AD_EFORMAT, "empty file");
}
END_TEST

START_TEST(test_trailing_bytes)
{
    uint32_t d[3] = {2, 3, 3};
    const char *p = put_file("tr.gz", idx_blob(0x00000803, 3, d, 18, 7), true);
    expect_images_fail(p, AD_EFORMAT, "trailing bytes: header says 2x3x3 = 18 bytes "
                                      "of pixels, found 7 more");
    uint32_t l[1] = {5};
    p = put_file("tr.idx1", idx_blob(0x00000801, 1, l, 5, 5000), false);
    expect_labels_fail(p, AD_EFORMAT, "found 5000 more");
}
END_TEST

/* The gzip members of bytes b[0..n) cut at `cut` (two members, as `cat
 * a.gz b.gz` makes; cut = n: one), then `tail` of tail_n bytes; caller frees. */
static tu_blob gz_members(const unsigned char *b, size_t n, size_t cut, const char *tail,
                          size_t tail_n)
{
    const char *p = tu_tmp_path("member.gz");
    tu_write_gz(p, b, cut);
    tu_blob one = tu_read_file(p, 1 << 16);
    tu_blob two = {NULL, 0};
    if (cut < n) {
        tu_write_gz(p, b + cut, n - cut);
        two = tu_read_file(p, 1 << 16);
    }
    tu_blob all = {malloc(one.n + two.n + tail_n + 1), one.n + two.n + tail_n};
    ck_assert_ptr_nonnull(all.b);
    memcpy(all.b, one.b, one.n);
    if (two.n)
        memcpy(all.b + one.n, two.b, two.n);
    memcpy(all.b + one.n + two.n, tail, tail_n);
    free(one.b);
    free(two.b);
    return all;
}

/* Bytes after the gzip stream are refused (zlib's gzread ignores them), as
 * the same bytes after the unpacked file are; a second gzip member is read
 * on, as gzip -d does. */
START_TEST(test_bytes_after_gzip)
{
    tu_blob raw = images_blob(2, 3, 3);
    tu_blob two = gz_members(raw.b, raw.n, 10, "", 0);
    const char *p = tu_tmp_path("two-members.gz");
    tu_write_raw(p, two.b, two.n);
    data_images im;
    ck_assert_msg(data_idx_read_images(p, &im) == AD_OK, "%s", ad_error());
    ck_assert_int_eq(im.n, 2);
    ck_assert_int_eq(im.pixels[17], 7);
    data_images_free(&im);

    const struct { size_t cut; const char *tail; size_t tail_n; } bad[] = {
        {raw.n, "garbage!", 8}, /* the reviewer's case: accepted before */
        {raw.n, "\x1f", 1},     /* half a gzip signature */
        {raw.n, "\0\0\0\0", 4}, /* zero padding */
        {10, "x", 1},           /* after the second of two members */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        tu_blob b = gz_members(raw.b, raw.n, bad[i].cut, bad[i].tail, bad[i].tail_n);
        char want[128];
        snprintf(want, sizeof want, "bytes after the end of the gzip stream, from byte %zu "
                 "of the file, are not another gzip member", b.n - bad[i].tail_n);
        p = tu_tmp_path("after.gz");
        tu_write_raw(p, b.b, b.n);
        expect_images_fail(p, AD_EFORMAT, want);
        free(b.b);
    }
    /* Labels too (the same reader). */
    tu_blob lb = labels_blob(5);
    tu_blob b = gz_members(lb.b, lb.n, lb.n, "hello world", 11);
    p = tu_tmp_path("labels-after.gz");
    tu_write_raw(p, b.b, b.n);
    expect_labels_fail(p, AD_EFORMAT, "bytes after the end of the gzip stream");
    free(b.b);
    free(lb.b);
    free(two.b);
    free(raw.b);
}
END_TEST

/* Three ways a gzip stream goes bad: a wrong checksum, undecodable deflate
 * data, and a download cut short. */
START_TEST(test_corrupt_gzip)
{
    const char *good = put_file("good.gz", images_blob(4, 10, 10), true);
    tu_blob gz = tu_read_file(good, 1 << 16);

    gz.b[gz.n - 8] ^= 0x55; /* the trailer's CRC-32 */
    const char *crc = tu_tmp_path("crc.gz");
    tu_write_raw(crc, gz.b, gz.n);
    expect_images_fail(crc, AD_EFORMAT, "corrupt gzip stream: incorrect data check");
    gz.b[gz.n - 8] ^= 0x55;

    unsigned char first = gz.b[10];
    gz.b[10] = 0xFF; /* first deflate block: final, type 3 (reserved) */
    const char *blk = tu_tmp_path("block.gz");
    tu_write_raw(blk, gz.b, gz.n);
    expect_images_fail(blk, AD_EFORMAT, "corrupt gzip stream: invalid block type");
    gz.b[10] = first;

    const char *cut = tu_tmp_path("cut.gz");
    tu_write_raw(cut, gz.b, gz.n / 2);
    expect_images_fail(cut, AD_EFORMAT, "the gzip stream ends early");

    /* All data present but the 8-byte trailer missing: cannot be trusted. */
    const char *notrailer = tu_tmp_path("notrailer.gz");
    tu_write_raw(notrailer, gz.b, gz.n - 8);
    expect_images_fail(notrailer, AD_EFORMAT, "before its checksum");
    free(gz.b);
}
END_TEST

/* ---- a directory of four files ------------------------------------------ */

/* Writes the four standard files, n_train / n_test images of 2x3 and
 * labels counts l_train / l_test, into tmp_root/sub. */
static const char *put_split_dir(const char *sub, uint32_t n_train, uint32_t l_train,
                                 uint32_t n_test, uint32_t l_test, bool gz)
{
    const char *dir = tu_tmp_mkdir(sub);
    char name[256];
    const char *files[4] = {DATA_MNIST_TRAIN_IMAGES, DATA_MNIST_TRAIN_LABELS,
                            DATA_MNIST_TEST_IMAGES, DATA_MNIST_TEST_LABELS};
    tu_blob blobs[4] = {images_blob(n_train, 2, 3), labels_blob(l_train),
                        images_blob(n_test, 2, 3), labels_blob(l_test)};
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "%s/%s", sub, files[i]);
        if (!gz)
            name[strlen(name) - 3] = '\0'; /* the unpacked names */
        put_file(name, blobs[i], gz);
    }
    return dir;
}

START_TEST(test_mnist_dir_small)
{
    data_mnist m;
    const char *dir = put_split_dir("gz", 12, 12, 5, 5, true);
    ck_assert_msg(data_mnist_load(dir, &m) == AD_OK, "%s", ad_error());
    ck_assert_int_eq(m.train_images.n, 12);
    ck_assert_int_eq(m.test_labels.n, 5);
    ck_assert_int_eq(m.test_labels.labels[4], 4);
    data_mnist_free(&m);

    /* Unpacked copies load the same way. */
    dir = put_split_dir("raw", 12, 12, 5, 5, false);
    ck_assert_msg(data_mnist_load(dir, &m) == AD_OK, "%s", ad_error());
    ck_assert_int_eq(m.train_labels.n, 12);
    data_mnist_free(&m);
}
END_TEST

START_TEST(test_mnist_count_mismatch)
{
    data_mnist m;
    const char *dir = put_split_dir("mis", 12, 11, 5, 5, true);
    ad_error_clear();
    int rc = data_mnist_load(dir, &m);
    tu_fail_with(rc, AD_EFORMAT, DATA_MNIST_TRAIN_LABELS, "has 11 labels");
    ck_assert_msg(strstr(ad_error(), DATA_MNIST_TRAIN_IMAGES) &&
                  strstr(ad_error(), "12 images"), "%s", ad_error());
    ck_assert_ptr_null(m.train_images.pixels);
    ck_assert_ptr_null(m.train_labels.labels);

    dir = put_split_dir("mis2", 12, 12, 5, 6, true);
    rc = data_mnist_load(dir, &m);
    tu_fail_with(rc, AD_EFORMAT, DATA_MNIST_TEST_LABELS, "has 6 labels");
    /* The training split had loaded: it must have been released. */
    ck_assert_ptr_null(m.train_images.pixels);
    ck_assert_int_eq(m.train_images.n, 0);
}
END_TEST

START_TEST(test_mnist_bad_label_and_missing)
{
    data_mnist m;
    const char *dir = put_split_dir("lab", 12, 12, 11, 11, true);
    /* Eleven labels i % 10 are fine; overwrite with a label 200. */
    uint32_t d[1] = {11};
    tu_blob bl = idx_blob(0x00000801, 1, d, 11, 0);
    bl.b[8 + 3] = 200;
    put_file("lab/" DATA_MNIST_TEST_LABELS, bl, true);
    int rc = data_mnist_load(dir, &m);
    tu_fail_with(rc, AD_EFORMAT, DATA_MNIST_TEST_LABELS, "label 200 at index 3");

    const char *empty = tu_tmp_mkdir("emptydir");
    rc = data_mnist_load(empty, &m);
    tu_fail_with(rc, AD_EIO, DATA_MNIST_TRAIN_IMAGES, "cannot open");
}
END_TEST

/* ---- features ----------------------------------------------------------- */

START_TEST(test_features)
{
    unsigned char px[3 * 2 * 2] = {0, 255, 51, 102, 1, 2, 3, 4, 10, 20, 30, 40};
    data_images im = {3, 2, 2, px};
    ad_real x[2 * 5];
    int idx[2] = {2, 0};
    ck_assert_int_eq(data_feature_dim(&im, true), 5);
    ck_assert_int_eq(data_feature_dim(&im, false), 4);
    ck_assert_int_eq(data_features(&im, idx, 2, true, x), AD_OK);
    ck_assert_double_eq_tol(x[0], 10 / 255.0, 1e-6);
    ck_assert_double_eq_tol(x[3], 40 / 255.0, 1e-6);
    ck_assert_double_eq(x[4], 1.0);
    ck_assert_double_eq(x[5], 0.0);
    ck_assert_double_eq(x[6], 1.0);
    ck_assert_double_eq_tol(x[7], 0.2, 1e-6);
    ck_assert_double_eq(x[9], 1.0);

    /* idx == NULL: the first n images, here without the bias column. */
    ck_assert_int_eq(data_features(&im, NULL, 2, false, x), AD_OK);
    ck_assert_double_eq_tol(x[4], 1 / 255.0, 1e-6);

    /* Bad indices write nothing. */
    for (int i = 0; i < 10; i++)
        x[i] = -7;
    int bad[2] = {0, 3};
    ck_assert_int_eq(data_features(&im, bad, 2, true, x), AD_EARG);
    ck_assert_msg(strstr(ad_error(), "idx[1] = 3"), "%s", ad_error());
    ck_assert_int_eq(data_features(&im, NULL, 4, true, x), AD_EARG);
    ck_assert_int_eq(data_features(&im, NULL, -1, true, x), AD_EARG);
    ck_assert_double_eq(x[0], -7.0);
}
END_TEST

START_TEST(test_one_hot)
{
    unsigned char l[4] = {3, 0, 9, 12};
    data_labels lb = {4, l};
    ad_real y[2 * 10];
    int idx[2] = {2, 0};
    ck_assert_int_eq(data_one_hot(&lb, idx, 2, 10, y), AD_OK);
    for (int c = 0; c < 10; c++) {
        ck_assert_double_eq(y[c], c == 9 ? 1.0 : 0.0);
        ck_assert_double_eq(y[10 + c], c == 3 ? 1.0 : 0.0);
    }
    ck_assert_int_eq(data_one_hot(&lb, NULL, 4, 10, y), AD_EARG); /* label 12 */
    ck_assert_msg(strstr(ad_error(), "label 12 at index 3"), "%s", ad_error());
}
END_TEST

/* ---- finding the data --------------------------------------------------- */

/* Runs with HYPERTAPE_DATA set to `root` (or unset if NULL) and the working
 * directory `cwd`, then restores both. */
typedef struct env_saved {
    char *data;
    char cwd[1024];
} env_saved;

static void env_enter(env_saved *s, const char *root, const char *cwd)
{
    const char *old = getenv("HYPERTAPE_DATA");
    s->data = old ? strdup(old) : NULL;
    ck_assert_ptr_nonnull(getcwd(s->cwd, sizeof s->cwd));
    if (root)
        setenv("HYPERTAPE_DATA", root, 1);
    else
        unsetenv("HYPERTAPE_DATA");
    ck_assert_int_eq(chdir(cwd), 0);
}

static void env_leave(env_saved *s)
{
    if (s->data)
        setenv("HYPERTAPE_DATA", s->data, 1);
    else
        unsetenv("HYPERTAPE_DATA");
    free(s->data);
    ck_assert_int_eq(chdir(s->cwd), 0);
}

START_TEST(test_find_dir)
{
    env_saved s;
    /* tmp/root/{mnist,fashion-mnist} as a data root; tmp/work/ as a cwd with
     * ../shared/data/mnist beside it. */
    tu_tmp_mkdir("root");
    tu_tmp_mkdir("root/mnist");
    put_file("root/mnist/" DATA_MNIST_TRAIN_IMAGES, images_blob(1, 1, 1), true);
    tu_tmp_mkdir("root/fashion-mnist");
    /* An unpacked file counts too. */
    put_file("root/fashion-mnist/train-images-idx3-ubyte", images_blob(1, 1, 1), false);
    const char *work = tu_tmp_mkdir("work");
    tu_tmp_mkdir("shared");
    tu_tmp_mkdir("shared/data");
    tu_tmp_mkdir("shared/data/mnist");
    put_file("shared/data/mnist/" DATA_MNIST_TRAIN_IMAGES, images_blob(1, 1, 1), true);
    const char *empty = tu_tmp_mkdir("emptyroot");
    const char *nowhere = tu_tmp_mkdir("emptyroot/sub"); /* no ../shared either */
    char want[1024];

    /* 1. An explicit --data wins, unchecked. */
    ck_assert_str_eq(data_find_dir("/nowhere", "mnist"), "/nowhere");

    /* 2. $HYPERTAPE_DATA/<dataset>. */
    snprintf(want, sizeof want, "%s/root", tu_tmp_root());
    env_enter(&s, want, work);
    const char *got = data_find_dir(NULL, "mnist");
    ck_assert_msg(got != NULL, "%s", ad_error());
    ck_assert_str_eq(got, tu_tmp_path("root/mnist"));
    got = data_find_dir("", "fashion");
    ck_assert_msg(got != NULL, "%s", ad_error());
    ck_assert_str_eq(got, tu_tmp_path("root/fashion-mnist"));
    env_leave(&s);

    /* 3. A root without mnist/ falls through to ../shared/data/mnist. */
    env_enter(&s, empty, work);
    got = data_find_dir(NULL, "mnist");
    ck_assert_msg(got != NULL, "%s", ad_error());
    ck_assert_str_eq(got, "../shared/data/mnist");
    env_leave(&s);

    /* Nothing anywhere: NULL and a message listing what was tried. */
    env_enter(&s, NULL, nowhere);
    ck_assert_ptr_null(data_find_dir(NULL, "mnist"));
    ck_assert_msg(strstr(ad_error(), "HYPERTAPE_DATA") &&
                  strstr(ad_error(), "../shared/data/mnist") &&
                  strstr(ad_error(), "--data"), "%s", ad_error());
    env_leave(&s);

    ck_assert_ptr_null(data_find_dir(NULL, "imagenet"));
    ck_assert_msg(strstr(ad_error(), "unknown dataset 'imagenet'"), "%s", ad_error());
}
END_TEST

Suite *data_mnist_suite(void)
{
    Suite *s = suite_create("data_mnist");

    TCase *real = tcase_create("real");
    tcase_set_timeout(real, 60); /* ~1 s normally; generous for valgrind */
    tcase_add_test(real, test_real_mnist);
    tcase_add_test(real, test_real_fashion);
    suite_add_tcase(s, real);

    TCase *idx = tcase_create("idx");
    tcase_set_timeout(idx, 60);
    tcase_add_unchecked_fixture(idx, tmp_top_setup, tu_tmp_top_teardown);
    tcase_add_checked_fixture(idx, tu_tmp_setup, tu_tmp_teardown);
    tcase_add_test(idx, test_small_ok_raw_and_gz);
    tcase_add_test(idx, test_large_payload_grows);
    tcase_add_test(idx, test_missing_file);
    tcase_add_test(idx, test_bad_magic);
    tcase_add_test(idx, test_wrong_type_and_rank);
    tcase_add_test(idx, test_zero_and_absurd_dims);
    tcase_add_test(idx, test_truncated_data);
    tcase_add_test(idx, test_truncated_header);
    tcase_add_test(idx, test_trailing_bytes);
    tcase_add_test(idx, test_bytes_after_gzip);
    tcase_add_test(idx, test_corrupt_gzip);
    suite_add_tcase(s, idx);

    TCase *dir = tcase_create("mnist_dir");
    tcase_add_unchecked_fixture(dir, tmp_top_setup, tu_tmp_top_teardown);
    tcase_add_checked_fixture(dir, tu_tmp_setup, tu_tmp_teardown);
    tcase_add_test(dir, test_mnist_dir_small);
    tcase_add_test(dir, test_mnist_count_mismatch);
    tcase_add_test(dir, test_mnist_bad_label_and_missing);
    tcase_add_test(dir, test_find_dir);
    suite_add_tcase(s, dir);

    TCase *feat = tcase_create("features");
    tcase_add_test(feat, test_features);
    tcase_add_test(feat, test_one_hot);
    suite_add_tcase(s, feat);
    return s;
}
