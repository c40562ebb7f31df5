/* testutil.h — checks and fixtures that several test files share.
 *
 * Every helper asserts with Check, so a failure stops the test that called
 * it (the report names testutil.c and the line of the failed check; the
 * message says which entry or file).
 *
 * Values:
 *     tu_expect_values(ad_add(tp, a, b), (double[]){ 11, 22, 33 }, 3, 0);
 *     tu_expect_error(ad_add(tp, a, c), "add: shapes do not broadcast");
 *
 * A fresh temporary folder per test, for files built at test time:
 *     static void tmp_top_setup(void) { tu_tmp_top_setup("test_data"); }
 *     tcase_add_unchecked_fixture(tc, tmp_top_setup, tu_tmp_top_teardown);
 *     tcase_add_checked_fixture(tc, tu_tmp_setup, tu_tmp_teardown);
 *     ...
 *     tu_write_raw(tu_tmp_path("x.bin"), "abc", 3);  // inside a test
 */
#ifndef HYPERTAPE_TESTS_TESTUTIL_H
#define HYPERTAPE_TESTS_TESTUTIL_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ad/ad.h"

/* ---- values ------------------------------------------------------------ */

/* v holds n entries, each within tol of want. */
void tu_expect_values(const ad_value *v, const double *want, size_t n, double tol);
/* v has this rank and shape. */
void tu_expect_shape(const ad_value *v, int rank, const int *shape);
/* The op returned NULL and the message contains `want`. */
void tu_expect_error(const ad_value *v, const char *want);

/* ---- a temporary folder per test ---------------------------------------- */

/* The layout: a top folder, made once per test case in the parent process
 * (an unchecked fixture) and removed with everything in it even when a test
 * fails, holds one fresh folder per test (a checked fixture).  `name` names
 * the top folder ($TMPDIR/name.XXXXXX, /tmp when TMPDIR is unset). */
void tu_tmp_top_setup(const char *name);
void tu_tmp_top_teardown(void);
void tu_tmp_setup(void);
void tu_tmp_teardown(void);
/* This test's folder. */
const char *tu_tmp_root(void);
/* tu_tmp_root()/name.  The string stays valid until the test ends. */
const char *tu_tmp_path(const char *name);
/* Makes the folder tu_tmp_root()/name (it must not exist yet); its path. */
const char *tu_tmp_mkdir(const char *name);

/* ---- files ------------------------------------------------------------- */

/* Bytes a test builds, owned by whoever holds the struct (free b). */
typedef struct tu_blob {
    unsigned char *b;
    size_t n;
} tu_blob;

/* Writes n bytes to path as they are, or gzipped. */
void tu_write_raw(const char *path, const void *b, size_t n);
void tu_write_gz(const char *path, const void *b, size_t n);
/* The whole file at path (at most max_bytes, or the test fails). */
tu_blob tu_read_file(const char *path, size_t max_bytes);
/* v as 4 big-endian bytes at b (IDX headers, PNG chunks). */
void tu_put_be32(unsigned char *b, uint32_t v);

/* The shared data root: $HYPERTAPE_DATA, else HT_SOURCE_ROOT
 * "/../shared/data" when the build defines HT_SOURCE_ROOT (tests run in the
 * build folder, so a relative path would depend on where that is); else the
 * test fails, saying the root should hold `holding` ("mnist/"). */
const char *tu_data_root(const char *holding);

/* The status was `code`, and the message names `path` and contains `what`.
 * A macro, so that a failure reports the caller's line. */
#define tu_fail_with(rc, code, path, what)                                       \
    do {                                                                          \
        ck_assert_int_eq((rc), (code));                                           \
        ck_assert_msg(strstr(ad_error(), (path)) != NULL,                         \
                      "message does not name %s: %s", (path), ad_error());        \
        ck_assert_msg(strstr(ad_error(), (what)) != NULL,                         \
                      "message lacks \"%s\": %s", (what), ad_error());            \
    } while (0)

#endif
