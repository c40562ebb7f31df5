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
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ad/ad.h"

/* ---- tolerances ----------------------------------------------------------- */

/* Every tolerance on a computed value is written in units of the real type's
 * machine epsilon, so one test serves both builds:
 *     tu_expect_values(ad_exp(tp, x), want, 3, TU_TOL(4));   // 4 roundings
 * TU_EPS is 2.2e-16 in the double build and 1.2e-7 in the float build; k
 * says how many roundings (times the size of the values) the computation
 * may pile up.  Exact results keep tolerance 0 in both builds. */
#if HT_REAL_IS_DOUBLE
#define TU_EPS DBL_EPSILON
#define TU_REAL_MIN DBL_MIN /* the smallest positive normal ad_real */
#else
#define TU_EPS ((double)FLT_EPSILON)
#define TU_REAL_MIN FLT_MIN
#endif
#define TU_TOL(k) ((double)(k) * TU_EPS)

/* Central differences (f(x + h) − f(x − h)) / 2h of something computed in
 * the real type, and how closely they should match a derivative, relative
 * to max(1, |derivative|).  Double: h = 1e-6 leaves rounding (ε/h ≈ 2e-10)
 * and truncation (h² ≈ 1e-12) far below 1e-6.  Float: at h = 1e-6 rounding
 * alone would be 0.1, so h ≈ ∛ε (2^-8), where rounding and truncation are
 * both about ε^(2/3) ≈ 2.4e-5 of the function's scale, times what the
 * computation amplifies; 1e-2 is well above that and well below the O(1)
 * error of a wrong derivative.  (tests/gradcheck.c has its own, per op.) */
#if HT_REAL_IS_DOUBLE
#define TU_FD_STEP 1e-6
#define TU_FD_TOL 1e-6
#else
#define TU_FD_STEP 0x1p-8
#define TU_FD_TOL 1e-2
#endif

/* |got − want| ≤ TU_TOL(k)·max(1, |want|): got is want up to k roundings of a
 * number of want's size (absolute below 1).  A macro, so that a failure
 * reports the caller's line. */
#define tu_expect_close(got, want, k)                                                   \
    do {                                                                                \
        double tu_got_ = (double)(got), tu_want_ = (double)(want);                      \
        double tu_tol_ = TU_TOL(k) * fmax(1.0, fabs(tu_want_));                         \
        ck_assert_msg(fabs(tu_got_ - tu_want_) <= tu_tol_,                              \
                      "%s = %.17g, want %s = %.17g within %.3g (%g eps)", #got, tu_got_, \
                      #want, tu_want_, tu_tol_, (double)(k));                           \
    } while (0)

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

/* A shared dataset's folder, tu_data_root()/name ("mnist", "omniglot",
 * "cifar"), written into dir.  CI has these datasets; a clone elsewhere may
 * not.  When the folder does not exist:
 *   - with CI set (to anything but "", "false" or "0") the test fails;
 *   - otherwise it prints one line on stderr, "skipped: no folder <dir> ...",
 *     and this returns false: the test should return at once.  (Check counts
 *     it as passed; scripts/test.sh counts and reports it as skipped.)
 * A folder that exists but lacks a file still fails, in any case:
 *     char dir[1024];
 *     if (!tu_data_dir("mnist", dir, sizeof dir)) return; */
bool tu_data_dir(const char *name, char *dir, size_t len);
/* True when the environment says this is CI (see tu_data_dir). */
bool tu_in_ci(void);

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
