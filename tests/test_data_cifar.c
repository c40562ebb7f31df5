/* test_data_cifar.c — CIFAR-10's official binary version (cifar.h):
 * data_cifar_read_batches, data_cifar_load's choice between the official
 * files and the shared subset, and data_find_dir's probes for them.
 *
 * Every file is written here in the official layout (3073-byte records, no
 * header), with contents that say where each record came from: record j of
 * batch b has label (7j + b) mod 10 and pixel p equal to (31b + j + p) mod
 * 251, so a record read from the wrong file or place shows.  Small files
 * test the checks one by one; one full-size set (five training batches and
 * the test batch, 10000 records each, 184 MB in the test's temporary
 * folder, written once) tests data_cifar_load as a user's extracted archive
 * meets it, then broken one way at a time.  The real shared subset is tested in
 * test_data_omniglot_cifar.c. */
#define _XOPEN_SOURCE 700 /* setenv, truncate */

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "experiments/data/cifar.h"
#include "testutil.h"

Suite *data_cifar_suite(void);

enum { REC = DATA_CIFAR_RECORD, PIX = DATA_CIFAR_PIXELS, FULL = DATA_CIFAR_BATCH_RECORDS };

static void tmp_top_setup(void) { tu_tmp_top_setup("test_data_cifar"); }

/* ---- files in the official layout --------------------------------------- */

static int rec_label(int b, int j) { return (7 * j + b) % 10; }
static int rec_pixel(int b, int j, int p) { return (31 * b + j + p) % 251; }

/* Batch b: n records as described at the top. */
static tu_blob batch_blob(int b, int n)
{
    /* pattern[k] = k mod 251: a record's pixels are 3072 bytes of it */
    static unsigned char pattern[251 + PIX];
    for (int k = 0; k < 251 + PIX; k++)
        pattern[k] = (unsigned char)(k % 251);
    tu_blob bl = { malloc((size_t)n * REC + 1), (size_t)n * REC };
    ck_assert_ptr_nonnull(bl.b);
    for (int j = 0; j < n; j++) {
        unsigned char *r = bl.b + (size_t)j * REC;
        r[0] = (unsigned char)rec_label(b, j);
        memcpy(r + 1, pattern + rec_pixel(b, j, 0), PIX);
    }
    return bl;
}

static void write_batch(const char *path, int b, int n, bool gz)
{
    tu_blob bl = batch_blob(b, n);
    if (gz)
        tu_write_gz(path, bl.b, bl.n);
    else
        tu_write_raw(path, bl.b, bl.n);
    free(bl.b);
}

/* Image i of c is record j of batch b. */
static void expect_record(const data_cifar *c, int i, int b, int j)
{
    ck_assert_msg(c->labels[i] == rec_label(b, j), "image %d: label %d, want %d (batch %d, "
                  "record %d)", i, c->labels[i], rec_label(b, j), b, j);
    const unsigned char *x = c->pixels + (size_t)i * PIX;
    for (int p = 0; p < PIX; p += 1023)
        ck_assert_msg(x[p] == rec_pixel(b, j, p), "image %d pixel %d: %d, want %d", i, p,
                      x[p], rec_pixel(b, j, p));
    ck_assert_int_eq(x[PIX - 1], rec_pixel(b, j, PIX - 1));
}

static void expect_zeroed(const data_cifar *c)
{
    ck_assert_ptr_null(c->labels);
    ck_assert_ptr_null(c->pixels);
    ck_assert_int_eq(c->n, 0);
}

/* data_cifar_read_batches on paths fails with code, naming path and what. */
static void expect_batches_fail(const char *const *paths, int n, int each, int code,
                                const char *path, const char *what)
{
    data_cifar c;
    memset(&c, 0xA5, sizeof c);
    ad_error_clear();
    tu_fail_with(data_cifar_read_batches(paths, n, each, &c), code, path, what);
    expect_zeroed(&c);
}

/* data_cifar_load(dir) fails with code, naming path and what; both zeroed. */
static void expect_load_fail(const char *dir, int code, const char *path, const char *what)
{
    data_cifar tr, te;
    memset(&tr, 0xA5, sizeof tr);
    memset(&te, 0xA5, sizeof te);
    ad_error_clear();
    tu_fail_with(data_cifar_load(dir, &tr, &te), code, path, what);
    expect_zeroed(&tr);
    expect_zeroed(&te);
}

/* ---- data_cifar_read_batches on small files ----------------------------- */

START_TEST(test_batches_small)
{
    /* Three batches of 4: raw, gzipped, raw. */
    const char *p[3] = { tu_tmp_path("b0.bin"), tu_tmp_path("b1.bin.gz"), tu_tmp_path("b2.bin") };
    for (int b = 0; b < 3; b++)
        write_batch(p[b], b, 4, b == 1);
    data_cifar c;
    memset(&c, 0xA5, sizeof c);
    ck_assert_msg(data_cifar_read_batches(p, 3, 4, &c) == AD_OK, "%s", ad_error());
    ck_assert_int_eq(c.n, 12);
    ck_assert_int_eq(c.source, DATA_CIFAR_FILES);
    for (int b = 0; b < 3; b++)
        for (int j = 0; j < 4; j++)
            expect_record(&c, b * 4 + j, b, j);
    data_cifar_free(&c);
    expect_zeroed(&c);

    /* One file alone, and the files in another order. */
    ck_assert_int_eq(data_cifar_read_batches(p + 2, 1, 4, &c), AD_OK);
    ck_assert_int_eq(c.n, 4);
    expect_record(&c, 3, 2, 3);
    data_cifar_free(&c);
    const char *q[2] = { p[2], p[0] };
    ck_assert_int_eq(data_cifar_read_batches(q, 2, 4, &c), AD_OK);
    expect_record(&c, 0, 2, 0);
    expect_record(&c, 4, 0, 0);
    data_cifar_free(&c);
}
END_TEST

START_TEST(test_batches_broken)
{
    const char *good = tu_tmp_path("good.bin");
    write_batch(good, 0, 4, false);

    /* A record short, a record over, half a record over. */
    const char *three = tu_tmp_path("three.bin"), *five = tu_tmp_path("five.bin");
    write_batch(three, 1, 3, false);
    write_batch(five, 1, 5, true);
    const char *p[2] = { good, three };
    expect_batches_fail(p, 2, 4, AD_EFORMAT, three, "3 records, expected 4");
    p[1] = five;
    expect_batches_fail(p, 2, 4, AD_EFORMAT, five, "5 records, expected 4");
    tu_blob bl = batch_blob(1, 5);
    const char *half = tu_tmp_path("half.bin");
    tu_write_raw(half, bl.b, 4 * REC + REC / 2);
    p[1] = half;
    expect_batches_fail(p, 2, 4, AD_EFORMAT, half, "is not a whole number of 3073-byte records "
                        "(4 records and 1536 bytes over)");

    /* A label byte of 11 in record 2 of the second file. */
    bl.b[2 * REC] = 11;
    const char *label = tu_tmp_path("label.bin");
    tu_write_raw(label, bl.b, 4 * REC);
    p[1] = label;
    expect_batches_fail(p, 2, 4, AD_EFORMAT, label, "record 2 (byte offset 6146) has label 11");
    free(bl.b);

    /* Missing and empty files. */
    p[1] = tu_tmp_path("data_batch_9.bin");
    expect_batches_fail(p, 2, 4, AD_EIO, p[1], "cannot open");
    const char *empty = tu_tmp_path("empty.bin");
    tu_write_raw(empty, "", 0);
    p[0] = empty;
    expect_batches_fail(p, 2, 4, AD_EFORMAT, empty, "empty");

    /* Bad arguments: nothing read, output zeroed. */
    p[0] = good;
    expect_batches_fail(p, 0, 4, AD_EARG, "data_cifar_read_batches", "must be >= 1");
    expect_batches_fail(p, 1, 0, AD_EARG, "data_cifar_read_batches", "must be >= 1");
    expect_batches_fail(NULL, 1, 4, AD_EARG, "data_cifar_read_batches", "must be >= 1");
    p[1] = NULL;
    expect_batches_fail(p, 2, 4, AD_EARG, "data_cifar_read_batches", "paths[1] is NULL");
    ck_assert_int_eq(data_cifar_read_batches(p, 1, 4, NULL), AD_EARG);
}
END_TEST

/* ---- data_cifar_load on a full-size official set ------------------------ */

/* Writes the official set into folder: batches 0..4 as data_batch_1..5.bin,
 * batch 5 as test_batch.bin. */
static void write_official(const char *folder)
{
    char path[4096];
    for (int b = 0; b < 6; b++) {
        if (b < 5)
            snprintf(path, sizeof path, "%s/data_batch_%d.bin", folder, b + 1);
        else
            snprintf(path, sizeof path, "%s/%s", folder, DATA_CIFAR_OFFICIAL_TEST);
        write_batch(path, b, FULL, false);
    }
}

/* data_cifar_load(dir) reads the set write_official wrote. */
static void expect_official(const char *dir)
{
    data_cifar tr, te;
    ck_assert_msg(data_cifar_load(dir, &tr, &te) == AD_OK, "%s", ad_error());
    ck_assert_int_eq(tr.source, DATA_CIFAR_OFFICIAL);
    ck_assert_int_eq(te.source, DATA_CIFAR_OFFICIAL);
    ck_assert_int_eq(tr.n, 5 * FULL);
    ck_assert_int_eq(te.n, FULL);
    const int js[] = { 0, 1, FULL / 2, FULL - 1 };
    for (int b = 0; b < 5; b++)
        for (int k = 0; k < 4; k++)
            expect_record(&tr, b * FULL + js[k], b, js[k]);
    for (int k = 0; k < 4; k++)
        expect_record(&te, js[k], 5, js[k]);
    int hist[10] = { 0 };
    for (int i = 0; i < tr.n; i++)
        hist[tr.labels[i]]++;
    for (int c = 0; c < 10; c++)
        ck_assert_int_eq(hist[c], 5000);
    ck_assert_str_eq(data_cifar_source_name(tr.source),
                     "the official binary version (data_batch_1..5.bin, test_batch.bin)");
    data_cifar_free(&tr);
    data_cifar_free(&te);
}

/* Breaking the set write_official wrote in folder (dir holds it, or its
 * cifar-10-batches-bin/ does). */
static void official_broken(const char *dir, const char *folder)
{
    char b3[4096], b4[4096], moved[4096], te[4096];
    snprintf(b3, sizeof b3, "%s/data_batch_3.bin", folder);
    snprintf(b4, sizeof b4, "%s/data_batch_4.bin", folder);
    snprintf(moved, sizeof moved, "%s/elsewhere.bin", folder);
    snprintf(te, sizeof te, "%s/%s", folder, DATA_CIFAR_OFFICIAL_TEST);

    /* A batch cut at a record boundary: only the count can tell. */
    ck_assert_int_eq(truncate(b3, (off_t)(FULL - 1) * REC), 0);
    expect_load_fail(dir, AD_EFORMAT, b3, "9999 records, expected 10000");
    write_batch(b3, 2, FULL, false);

    /* A missing batch. */
    ck_assert_int_eq(rename(b4, moved), 0);
    expect_load_fail(dir, AD_EIO, b4, "cannot open");
    ck_assert_int_eq(rename(moved, b4), 0);

    /* The test batch's last record with label 10. */
    FILE *fp = fopen(te, "r+b");
    ck_assert_ptr_nonnull(fp);
    ck_assert_int_eq(fseek(fp, (long)(FULL - 1) * REC, SEEK_SET), 0);
    ck_assert_int_eq(fputc(10, fp), 10);
    ck_assert_int_eq(fclose(fp), 0);
    expect_load_fail(dir, AD_EFORMAT, te, "record 9999 (byte offset 30726927) has label 10");

    /* Without test_batch.bin the training batches still say the set is the
     * official one (the subset's files beside them do not count), and the
     * message names the missing file. */
    ck_assert_int_eq(remove(te), 0);
    expect_load_fail(dir, AD_EIO, te, "cannot open");

    /* A folder with neither set says what it looked for. */
    const char *none = tu_tmp_mkdir("none");
    expect_load_fail(none, AD_EIO, none, "no CIFAR-10 files");
    ck_assert_msg(strstr(ad_error(), "test_batch.bin") && strstr(ad_error(), DATA_CIFAR_TEST) &&
                  strstr(ad_error(), "scripts/get-cifar10.sh"), "%s", ad_error());
    expect_load_fail(tu_tmp_path("no-such-folder"), AD_EIO, "no-such-folder",
                     "no CIFAR-10 files");
}

START_TEST(test_official)
{
    tu_tmp_mkdir("cifar");
    const char *dir = tu_tmp_path("cifar"), *sub = tu_tmp_mkdir("cifar/" DATA_CIFAR_OFFICIAL_DIR);
    write_official(sub);
    /* The archive extracted into the dataset's folder, or its folder itself. */
    expect_official(dir);
    expect_official(sub);

    /* Next to the subset's files, the official ones win. */
    tu_blob one = batch_blob(0, 2);
    tu_write_gz(tu_tmp_path("cifar/" DATA_CIFAR_TRAIN), one.b, one.n);
    tu_write_gz(tu_tmp_path("cifar/" DATA_CIFAR_TEST), one.b, one.n);
    free(one.b);
    expect_official(dir);

    /* Then broken one way at a time, each repaired before the next. */
    official_broken(dir, sub);
}
END_TEST

/* ---- data_find_dir's probes --------------------------------------------- */

START_TEST(test_find_dir_cifar)
{
    /* From an empty folder, so ../shared/data is not found either. */
    char cwd[4096], env[4096] = "";
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
    const char *had = getenv("HYPERTAPE_DATA");
    if (had)
        snprintf(env, sizeof env, "%s", had);
    ck_assert_int_eq(chdir(tu_tmp_mkdir("work")), 0);
    setenv("HYPERTAPE_DATA", tu_tmp_root(), 1);
    const char *want = tu_tmp_mkdir("cifar");

    ck_assert_ptr_null(data_find_dir(NULL, "cifar"));
    ck_assert_msg(strstr(ad_error(), "no test_batch.bin, cifar-10-batches-bin/test_batch.bin or "
                         DATA_CIFAR_TEST " there") != NULL, "%s", ad_error());
    ck_assert_msg(strstr(ad_error(), "scripts/get-cifar10.sh") != NULL, "%s", ad_error());

    /* Each probe alone is enough. */
    /* (the subset's name is built at run time: clang's -Wstring-concatenation takes an array
     * entry made of two literals for a forgotten comma) */
    char subset_probe[256];
    snprintf(subset_probe, sizeof subset_probe, "cifar/%s", DATA_CIFAR_TEST);
    const char *probes[3] = { "cifar/test_batch.bin", "cifar/cifar-10-batches-bin/test_batch.bin",
                              subset_probe };
    tu_tmp_mkdir("cifar/cifar-10-batches-bin");
    for (int i = 0; i < 3; i++) {
        const char *path = tu_tmp_path(probes[i]);
        tu_write_raw(path, "x", 1);
        const char *d = data_find_dir(NULL, "cifar");
        ck_assert_msg(d != NULL, "%s: %s", probes[i], ad_error());
        ck_assert_str_eq(d, want);
        ck_assert_int_eq(remove(path), 0);
    }
    ck_assert_ptr_null(data_find_dir(NULL, "cifar"));

    ck_assert_int_eq(chdir(cwd), 0); /* as it was, for CK_FORK=no */
    if (had)
        setenv("HYPERTAPE_DATA", env, 1);
    else
        unsetenv("HYPERTAPE_DATA");
}
END_TEST

Suite *data_cifar_suite(void)
{
    Suite *s = suite_create("data_cifar");
    TCase *tc = tcase_create("official");
    tcase_set_timeout(tc, 120); /* ~1 s normally, a few under ASan */
    tcase_add_unchecked_fixture(tc, tmp_top_setup, tu_tmp_top_teardown);
    tcase_add_checked_fixture(tc, tu_tmp_setup, tu_tmp_teardown);
    tcase_add_test(tc, test_batches_small);
    tcase_add_test(tc, test_batches_broken);
    tcase_add_test(tc, test_official);
    tcase_add_test(tc, test_find_dir_cifar);
    suite_add_tcase(s, tc);
    return s;
}
