/* testutil.c — see testutil.h. */
#define _XOPEN_SOURCE 700 /* mkdtemp, nftw */

#include "testutil.h"

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

/* ---- values ------------------------------------------------------------ */

void tu_expect_values(const ad_value *v, const double *want, size_t n, double tol)
{
    ck_assert_ptr_nonnull(v);
    ck_assert_uint_eq(v->size, n);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(fabs((double)v->data[i] - want[i]) <= tol, "entry %zu: %.17g, want %.17g",
                      i, (double)v->data[i], want[i]);
}

void tu_expect_shape(const ad_value *v, int rank, const int *shape)
{
    ck_assert_ptr_nonnull(v);
    ck_assert_int_eq(v->rank, rank);
    for (int i = 0; i < rank; i++) ck_assert_int_eq(v->shape[i], shape[i]);
}

void tu_expect_error(const ad_value *v, const char *want)
{
    ck_assert_ptr_null(v);
    ck_assert_msg(strstr(ad_error(), want) != NULL, "message \"%s\" lacks \"%s\"", ad_error(), want);
}

/* ---- a temporary folder per test ---------------------------------------- */

static char tmp_top[512], tmp_root[600];
static char *made[64]; /* path strings handed out, freed after each test */
static int n_made;

void tu_tmp_top_setup(const char *name)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmp_top, sizeof tmp_top, "%s/%s.XXXXXX", base && base[0] ? base : "/tmp", name);
    ck_assert_msg(mkdtemp(tmp_top) != NULL, "mkdtemp(%s) failed", tmp_top);
}

static int tmp_remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path) == 0 ? 0 : -1;
}

void tu_tmp_top_teardown(void)
{
    if (tmp_top[0])
        nftw(tmp_top, tmp_remove_one, 16, FTW_DEPTH | FTW_PHYS);
    tmp_top[0] = '\0';
}

void tu_tmp_setup(void)
{
    snprintf(tmp_root, sizeof tmp_root, "%s/t.XXXXXX", tmp_top);
    ck_assert_msg(mkdtemp(tmp_root) != NULL, "mkdtemp(%s) failed", tmp_root);
    n_made = 0;
}

void tu_tmp_teardown(void)
{
    while (n_made > 0)
        free(made[--n_made]);
}

const char *tu_tmp_root(void) { return tmp_root; }

const char *tu_tmp_path(const char *name)
{
    size_t len = strlen(tmp_root) + 1 + strlen(name) + 1;
    char *p = malloc(len);
    ck_assert_ptr_nonnull(p);
    snprintf(p, len, "%s/%s", tmp_root, name);
    ck_assert_int_lt(n_made, (int)(sizeof made / sizeof made[0]));
    made[n_made++] = p;
    return p;
}

const char *tu_tmp_mkdir(const char *name)
{
    const char *p = tu_tmp_path(name);
    ck_assert_msg(mkdir(p, 0700) == 0, "mkdir %s", p);
    return p;
}

/* ---- files ------------------------------------------------------------- */

void tu_write_raw(const char *path, const void *b, size_t n)
{
    FILE *fp = fopen(path, "wb");
    ck_assert_msg(fp != NULL, "cannot write %s", path);
    ck_assert_uint_eq(fwrite(b, 1, n, fp), n);
    ck_assert_int_eq(fclose(fp), 0);
}

void tu_write_gz(const char *path, const void *b, size_t n)
{
    gzFile gz = gzopen(path, "wb");
    ck_assert_msg(gz != NULL, "cannot write %s", path);
    ck_assert_int_eq(gzwrite(gz, b, (unsigned)n), (int)n);
    ck_assert_int_eq(gzclose(gz), Z_OK);
}

tu_blob tu_read_file(const char *path, size_t max_bytes)
{
    tu_blob bl = {NULL, 0};
    FILE *fp = fopen(path, "rb");
    ck_assert_msg(fp != NULL, "cannot read %s", path);
    bl.b = malloc(max_bytes);
    ck_assert_ptr_nonnull(bl.b);
    bl.n = fread(bl.b, 1, max_bytes, fp);
    ck_assert_msg(feof(fp), "%s: test file larger than %zu bytes", path, max_bytes);
    fclose(fp);
    return bl;
}

void tu_put_be32(unsigned char *b, uint32_t v)
{
    b[0] = (unsigned char)(v >> 24);
    b[1] = (unsigned char)(v >> 16);
    b[2] = (unsigned char)(v >> 8);
    b[3] = (unsigned char)v;
}

const char *tu_data_root(const char *holding)
{
    const char *env = getenv("HYPERTAPE_DATA");
    if (env && env[0])
        return env;
#ifdef HT_SOURCE_ROOT
    (void)holding;
    return HT_SOURCE_ROOT "/../shared/data";
#else
    ck_abort_msg("data not located: set HYPERTAPE_DATA to the data root (holding %s) or build "
                 "with -DHT_SOURCE_ROOT=\"<repo root>\"", holding);
    return NULL;
#endif
}

bool tu_in_ci(void)
{
    const char *ci = getenv("CI");
    return ci && ci[0] && strcmp(ci, "false") != 0 && strcmp(ci, "0") != 0;
}

bool tu_data_dir(const char *name, char *dir, size_t len)
{
    int n = snprintf(dir, len, "%s/%s", tu_data_root(name), name);
    ck_assert_msg(n > 0 && (size_t)n < len, "data folder path too long for %zu bytes", len);
    struct stat st;
    if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode)) return true;
    ck_assert_msg(!tu_in_ci(), "no folder %s: CI is set and CI has the shared datasets "
                  "(set HYPERTAPE_DATA to their root)", dir);
    fprintf(stderr, "skipped: no folder %s (the shared datasets: set HYPERTAPE_DATA to their "
                    "root to run these tests; with CI=true this is a failure)\n", dir);
    return false;
}
