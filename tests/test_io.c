/* test_io.c — ad_print's layout, and .npy files: files NumPy 1.24 wrote
 * (their bytes below, from np.save) load; what ad_save_npy writes is those
 * bytes exactly; round trips of every rank; and every kind of file the
 * loader must refuse, each named in the message with the file. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "ad/io.h"
#include "ad/node.h" /* an op of the test's own, for its name */
#include "ops/ops.h"
#include "testutil.h"

/* ---- bytes np.save wrote (numpy 1.24.2) ------------------------------------ */

/* np.save of float64 (2, 3): [-1.0, -0.5, 0.0, 0.5, 1.0, 1.5] (176 bytes) */
static const char np_f8_2x3_header[] = "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }                                                          \n";
static const unsigned char np_f8_2x3_data[] = { 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf0, 0xbf, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xe0, 0xbf, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xe0, 0x3f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf0, 0x3f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf8, 0x3f };
/* np.save of float32 (3,): [1.5, -2.25, 3.0] (140 bytes) */
static const char np_f4_3_header[] = "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }                                                            \n";
static const unsigned char np_f4_3_data[] = { 0x00, 0x00, 0xc0, 0x3f, 0x00, 0x00, 0x10, 0xc0, 0x00, 0x00, 0x40, 0x40 };
/* np.save of float64 (): [7.0] (136 bytes) */
static const char np_f8_scalar_header[] = "{'descr': '<f8', 'fortran_order': False, 'shape': (), }                                                              \n";
static const unsigned char np_f8_scalar_data[] = { 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1c, 0x40 };

/* A .npy file from its parts: version major.minor, header text, data. */
static void write_npy(const char *path, int major, const char *header, const void *data, size_t n)
{
    size_t h = strlen(header);
    unsigned char *b = malloc(10 + h + n);
    ck_assert_ptr_nonnull(b);
    memcpy(b, "\x93NUMPY", 6);
    b[6] = (unsigned char)major, b[7] = 0, b[8] = (unsigned char)(h & 0xff), b[9] = (unsigned char)(h >> 8);
    memcpy(b + 10, header, h);
    if (n) memcpy(b + 10 + h, data, n);
    tu_write_raw(path, b, 10 + h + n);
    free(b);
}

static void tmp_top_setup(void) { tu_tmp_top_setup("test_io"); }

/* ---- files NumPy wrote --------------------------------------------------- */

START_TEST(loads_numpy_files)
{
    const char *p1 = tu_tmp_path("a.npy"), *p2 = tu_tmp_path("b.npy"), *p3 = tu_tmp_path("c.npy");
    write_npy(p1, 1, np_f8_2x3_header, np_f8_2x3_data, sizeof np_f8_2x3_data);
    write_npy(p2, 1, np_f4_3_header, np_f4_3_data, sizeof np_f4_3_data);
    write_npy(p3, 1, np_f8_scalar_header, np_f8_scalar_data, sizeof np_f8_scalar_data);
    ad_value *a = ad_load_npy(p1), *b = ad_load_npy(p2), *c = ad_load_npy(p3);
    tu_expect_shape(a, 2, (int[]){ 2, 3 });
    tu_expect_values(a, (double[]){ -1, -0.5, 0, 0.5, 1, 1.5 }, 6, 0);
    tu_expect_shape(b, 1, (int[]){ 3 });
    tu_expect_values(b, (double[]){ 1.5, -2.25, 3 }, 3, 0);
    tu_expect_shape(c, 0, NULL);
    tu_expect_values(c, (double[]){ 7 }, 1, 0);
    ck_assert(!a->requires_grad && a->tape == NULL);
    ad_value_free(a);
    ad_value_free(b);
    ad_value_free(c);
}
END_TEST

/* What we write is what np.save writes, byte for byte (with '<f4' and
 * 4-byte entries in the float build). */
START_TEST(saves_numpy_bytes)
{
    const struct {
        const char *header;
        int rank, shape[2];
        double values[6];
        size_t n;
    } cases[] = {
        { np_f8_2x3_header, 2, { 2, 3 }, { -1, -0.5, 0, 0.5, 1, 1.5 }, 6 },
        { np_f4_3_header, 1, { 3 }, { 1.5, -2.25, 3 }, 3 },
        { np_f8_scalar_header, 0, { 0 }, { 7 }, 1 },
    };
    for (size_t k = 0; k < 3; k++) {
        ad_real data[6];
        for (size_t i = 0; i < cases[k].n; i++) data[i] = (ad_real)cases[k].values[i];
        ad_value *v = ad_tensor_from(cases[k].rank, cases[k].shape, data);
        const char *path = tu_tmp_path("out.npy");
        ck_assert_int_eq(ad_save_npy(path, v), AD_OK);
        /* the expected file: NumPy's header with our dtype, our entries */
        char header[256];
        snprintf(header, sizeof header, "%s", cases[k].header);
        memcpy(strstr(header, "<f"), sizeof(ad_real) == 8 ? "<f8" : "<f4", 3);
        const char *want_path = tu_tmp_path("want.npy");
        write_npy(want_path, 1, header, data, cases[k].n * sizeof(ad_real)); /* x86: little-endian */
        tu_blob got = tu_read_file(path, 4096), want = tu_read_file(want_path, 4096);
        ck_assert_uint_eq(got.n, want.n);
        ck_assert_mem_eq(got.b, want.b, got.n);
        free(got.b);
        free(want.b);
        ad_value_free(v);
    }
    /* in the double build, the (2, 3) file is NumPy's own, data included */
    if (sizeof(ad_real) == 8) {
        ad_value *v = ad_tensor_from(2, (int[]){ 2, 3 }, (ad_real[]){ -1, -0.5, 0, 0.5, 1, 1.5 });
        ck_assert_int_eq(ad_save_npy(tu_tmp_path("a.npy"), v), AD_OK);
        tu_blob got = tu_read_file(tu_tmp_path("a.npy"), 4096);
        ck_assert_uint_eq(got.n, 176);
        ck_assert_mem_eq(got.b + 10, np_f8_2x3_header, strlen(np_f8_2x3_header));
        ck_assert_mem_eq(got.b + 128, np_f8_2x3_data, sizeof np_f8_2x3_data);
        free(got.b);
        ad_value_free(v);
    }
}
END_TEST

START_TEST(round_trips)
{
    ad_rng rng;
    ad_rng_seed(&rng, 5);
    const int shapes[][4] = { { 0 }, { 7 }, { 3, 4 }, { 2, 1, 5 }, { 3, 5, 7, 11 }, { 100000 } };
    const int ranks[] = { 0, 1, 2, 3, 4, 1 };
    for (int k = 0; k < 6; k++) {
        ad_value *v = ad_tensor_randn(&rng, ranks[k], shapes[k], 1e3);
        v->data[0] = (ad_real)-0.0;
        const char *path = tu_tmp_path("r.npy");
        ck_assert_int_eq(ad_save_npy(path, v), AD_OK);
        ad_value *w = ad_load_npy(path);
        ck_assert_ptr_nonnull(w);
        ck_assert(ad_same_shape(v, w));
        ck_assert_mem_eq(v->data, w->data, v->size * sizeof(ad_real));
        /* the data start on a 64-byte boundary, as NumPy aligns them */
        tu_blob b = tu_read_file(path, 16 << 20);
        size_t hlen = (size_t)b.b[8] | (size_t)b.b[9] << 8;
        ck_assert_uint_eq((10 + hlen) % 64, 0);
        ck_assert_uint_eq(b.n, 10 + hlen + v->size * sizeof(ad_real));
        free(b.b);
        ad_value_free(v);
        ad_value_free(w);
    }
}
END_TEST

/* ---- what the loader refuses ----------------------------------------------- */

START_TEST(refuses_other_files)
{
    static const struct {
        int major;
        const char *header;
        size_t data_bytes;
        int code;
        const char *what;
    } bad[] = {
        { 1, "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }\n", 16, AD_EFORMAT,
          "dtype '<i8' is not '<f8' or '<f4'" },
        { 1, "{'descr': '>f8', 'fortran_order': False, 'shape': (2,), }\n", 16, AD_EFORMAT,
          "dtype '>f8' is not" },
        { 1, "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 2), }\n", 32, AD_EFORMAT,
          "Fortran order is not read" },
        { 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 2, 1, 2, 1), }\n", 32, AD_EFORMAT,
          "more than 4 axes" },
        { 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 0), }\n", 0, AD_EFORMAT,
          "axis 1 has extent 0" },
        { 1, "{'descr': '<f8', 'shape': (2,), }\n", 16, AD_EFORMAT, "the dict lacks 'fortran_order'" },
        { 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), 'foo': 1}\n", 16, AD_EFORMAT,
          "unexpected key 'foo'" },
        { 1, "{'descr': '<f8', 'descr': '<f8', 'fortran_order': False, 'shape': (2,), }\n", 16,
          AD_EFORMAT, "repeated key 'descr'" },
        { 2, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }\n", 16, AD_EFORMAT,
          "format version 2.0: only 1.0 is read" },
        { 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }\n", 40, AD_EFORMAT,
          "the data are cut short: 5 of 6 entries" },
        { 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }\n", 17, AD_EFORMAT,
          "bytes after the 2 entries the header announces" },
        { 1, "hello\n", 0, AD_EFORMAT, "header: expected '{'" },
        { 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), } x\n", 16, AD_EFORMAT,
          "header: text after the dict" },
        { 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2 3), }\n", 48, AD_EFORMAT,
          "expected ',' or ')' in the shape" },
    };
    unsigned char zeros[64] = { 0 };
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        const char *path = tu_tmp_path("bad.npy");
        write_npy(path, bad[k].major, bad[k].header, zeros, bad[k].data_bytes);
        ck_assert_ptr_null(ad_load_npy(path));
        tu_fail_with(ad_error_code(), bad[k].code, path, bad[k].what);
        ck_assert_msg(strncmp(ad_error(), "load_npy: ", 10) == 0, "%s", ad_error());
    }
    /* not .npy at all, a header longer than the file, no file */
    const char *path = tu_tmp_path("bad.npy");
    tu_write_raw(path, "PK\3\4 a zip file", 16);
    ck_assert_ptr_null(ad_load_npy(path));
    tu_fail_with(ad_error_code(), AD_EFORMAT, path, "not a .npy file");
    tu_write_raw(path, "\x93NUMPY\1\0\xff\0{'descr'", 18);
    ck_assert_ptr_null(ad_load_npy(path));
    tu_fail_with(ad_error_code(), AD_EFORMAT, path, "the header is cut short (8 of 255 bytes)");
    path = tu_tmp_path("missing.npy");
    ck_assert_ptr_null(ad_load_npy(path));
    tu_fail_with(ad_error_code(), AD_EIO, path, "No such file");
    ck_assert_ptr_null(ad_load_npy(NULL));
    ck_assert_int_eq(ad_error_code(), AD_EARG);
    /* saving: a folder that does not exist, NULL arguments */
    ad_value *v = ad_tensor_scalar(1);
    path = tu_tmp_path("no/such/folder.npy");
    tu_fail_with(ad_save_npy(path, v), AD_EIO, path, "No such file");
    ck_assert_int_eq(ad_save_npy(path, NULL), AD_EARG);
    ck_assert_int_eq(ad_save_npy(NULL, v), AD_EARG);
    ad_value_free(v);
}
END_TEST

/* ---- printing ------------------------------------------------------------ */

/* What ad_print writes, as a string (free it). */
static char *printed(const char *label, const ad_value *v)
{
    char *s = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&s, &n);
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(ad_print(f, label, v), AD_OK);
    fclose(f);
    return s;
}

static void expect_printed(const char *label, const ad_value *v, const char *want)
{
    char *got = printed(label, v);
    ck_assert_str_eq(got, want);
    free(got);
}

START_TEST(print_layout)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *w = ad_param_from(2, (int[]){ 2, 3 }, (ad_real[]){ 1.5, -2, 0.25, 3, 4, -1 });
    expect_printed("w", w, "w [2,3]  (requires_grad)\n"
                           "[[ 1.5,   -2, 0.25],\n"
                           " [   3,    4,   -1]]\n");
    ck_assert_int_eq(ad_tape_step(tp), AD_OK);
    expect_printed(NULL, ad_sub(tp, w, ad_const_scalar(tp, 1)),
                   "[2,3]  (op sub, step 1, requires_grad)\n"
                   "[[  0.5,    -3, -0.75],\n"
                   " [    2,     3,    -2]]\n");
    expect_printed("s", ad_const_scalar(tp, 3.25), "s []  (step 1)\n3.25\n");
    expect_printed("v", ad_const(tp, 1, (int[]){ 4 }, (ad_real[]){ 1, -2e-7, 123456789, NAN }),
                   "v [4]  (step 1)\n[          1,      -2e-07, 1.23457e+08,         nan]\n");
    /* rank 3: a blank line between the 2-D blocks */
    ad_value *c = ad_const_fill(tp, 3, (int[]){ 2, 2, 3 }, 0);
    for (size_t i = 0; i < c->size; i++) c->data[i] = (ad_real)i / 4;
    expect_printed("c", c, "c [2,2,3]  (step 1)\n"
                           "[[[   0, 0.25,  0.5],\n"
                           "  [0.75,    1, 1.25]],\n"
                           "\n"
                           " [[ 1.5, 1.75,    2],\n"
                           "  [2.25,  2.5, 2.75]]]\n");
    /* more than 1000 entries: 3 at each end of a long axis */
    ad_value *big = ad_const_fill(tp, 2, (int[]){ 5, 1000 }, 0);
    for (size_t i = 0; i < big->size; i++) big->data[i] = (ad_real)i;
    expect_printed("big", big, "big [5,1000]  (step 1)\n"
                               "[[   0,    1,    2,  ...,  997,  998,  999],\n"
                               " [1000, 1001, 1002,  ..., 1997, 1998, 1999],\n"
                               " [2000, 2001, 2002,  ..., 2997, 2998, 2999],\n"
                               " [3000, 3001, 3002,  ..., 3997, 3998, 3999],\n"
                               " [4000, 4001, 4002,  ..., 4997, 4998, 4999]]\n");
    ad_value *tall = ad_const_fill(tp, 2, (int[]){ 1001, 1 }, 2);
    expect_printed(NULL, tall, "[1001,1]  (step 1)\n[[2],\n [2],\n [2],\n ...,\n [2],\n [2],\n [2]]\n");
    /* a value kept past the horizon is a carried constant */
    ad_tape *t1 = ad_tape_new(1);
    ad_value *x = ad_scale(t1, w, 2);
    ck_assert_int_eq(ad_tape_step(t1), AD_OK);
    ad_value *y = ad_add(t1, x, w); /* holds x once its step is released */
    ck_assert_int_eq(ad_tape_step(t1), AD_OK);
    expect_printed("x", x, "x [2,3]  (carried)\n"
                           "[[  3,  -4, 0.5],\n"
                           " [  6,   8,  -2]]\n");
    (void)y;
    ad_tape_free(t1);
    /* errors: nothing to print, a stream that cannot be written */
    ck_assert_int_eq(ad_print(stdout, "none", NULL), AD_EARG);
    FILE *ro = fopen("/dev/null", "r");
    ck_assert_int_eq(ad_print(ro, "w", w), AD_EIO);
    fclose(ro);
    ad_tape_free(tp);
    ad_value_free(w);
}
END_TEST

/* A tensor of at most 1000 entries is printed whole, on every axis: the
 * reviewer's [20] vector came out as its first 7 entries with no "...". */
START_TEST(print_small_tensors_whole)
{
    ad_real d[20];
    for (int i = 0; i < 20; i++) d[i] = (ad_real)i;
    ad_value *v = ad_tensor_from(1, (int[]){ 20 }, d);
    expect_printed("v", v, "v [20]\n[ 0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14, "
                           "15, 16, 17, 18, 19]\n");
    ad_value *m = ad_tensor_from(2, (int[]){ 10, 2 }, d);
    expect_printed("m", m, "m [10,2]\n[[ 0,  1],\n [ 2,  3],\n [ 4,  5],\n [ 6,  7],\n [ 8,  9],\n"
                           " [10, 11],\n [12, 13],\n [14, 15],\n [16, 17],\n [18, 19]]\n");
    ad_value_free(v);
    ad_value_free(m);
    /* 1000 entries exactly: every one, no "..."; 1001 are summarised. */
    ad_value *k = ad_tensor_fill(2, (int[]){ 10, 100 }, 7);
    char *got = printed(NULL, k);
    size_t sevens = 0;
    for (const char *c = got; *c; c++) sevens += *c == '7';
    ck_assert_uint_eq(sevens, 1000);
    ck_assert_ptr_null(strstr(got, "..."));
    free(got);
    ad_value_free(k);
    ad_value *l = ad_tensor_fill(1, (int[]){ 1001 }, 7);
    expect_printed(NULL, l, "[1001]\n[7, 7, 7, ..., 7, 7, 7]\n");
    ad_value_free(l);
    /* in a summarised tensor an axis of 7 is cut too, as NumPy cuts it */
    ad_value *r = ad_tensor_new(2, (int[]){ 143, 7 });
    for (size_t i = 0; i < r->size; i++) r->data[i] = (ad_real)(i % 7);
    got = printed(NULL, r);
    ck_assert_ptr_nonnull(strstr(got, "[[0, 1, 2, ..., 4, 5, 6],\n [0, 1, 2, ..., 4, 5, 6],"));
    free(got);
    ad_value_free(r);
}
END_TEST

/* An op's name of any length is printed whole and the details after it are
 * kept: a 300-character name overflowed a 128-byte buffer on the stack
 * (AddressSanitizer: stack-buffer-overflow), a 110-character one cut the
 * line short. */
static int pass_through_backward(ad_tape *tp, ad_value *out, ad_value *gout, ad_value **gin)
{
    (void)tp, (void)out;
    gin[0] = gout;
    return AD_OK;
}

START_TEST(print_long_op_names)
{
    for (int len = 110; len <= 300; len += 190) {
        char name[301];
        for (int i = 0; i < len; i++) name[i] = (char)('a' + i % 26);
        name[len] = '\0';
        const ad_op op = { name, pass_through_backward, ad_reads_nothing };
        ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
        ad_value *p = ad_param_scalar(2);
        for (int t = 0; t < 12345; t++) ck_assert_int_eq(ad_tape_step(tp), AD_OK);
        ad_value *y = ad_node_new(tp, &op, 0, NULL, 1, &p);
        ck_assert_ptr_nonnull(y);
        y->data[0] = 2;
        char want[512];
        snprintf(want, sizeof want, "y []  (op %s, step 12345, requires_grad)\n2\n", name);
        expect_printed("y", y, want);
        ad_tape_free(tp);
        ad_value_free(p);
    }
}
END_TEST

/* A header announcing far more than the file holds is refused before
 * anything is allocated for it: fuzz-npy found a 140-byte file whose shape
 * (2, 1, 31111111, 3) made the loader allocate 1.5 GB first.  Outside ASan
 * the load runs with only 64 MiB of address space to spare, so the old
 * order fails there with AD_ENOMEM instead. */
START_TEST(refuses_before_allocating)
{
    const char *path = tu_tmp_path("huge.npy");
    unsigned char eight[8] = { 0 };
    write_npy(path, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 1, 31111111, 3), }\n",
              eight, sizeof eight);
#if !defined(__SANITIZE_ADDRESS__)
    struct rlimit old, lim;
    long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld", &pages) != 1) pages = 0;
        fclose(f);
    }
    bool limited = pages > 0 && getrlimit(RLIMIT_AS, &old) == 0;
    if (limited) {
        lim = old;
        lim.rlim_cur = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + ((rlim_t)64 << 20);
        limited = (old.rlim_cur == RLIM_INFINITY || lim.rlim_cur < old.rlim_cur) &&
                  setrlimit(RLIMIT_AS, &lim) == 0;
    }
#endif
    ad_value *v = ad_load_npy(path);
    int code = ad_error_code();
#if !defined(__SANITIZE_ADDRESS__)
    if (limited) ck_assert_int_eq(setrlimit(RLIMIT_AS, &old), 0);
#endif
    ck_assert_ptr_null(v);
    tu_fail_with(code, AD_EFORMAT, path, "the data are cut short: 1 of 186666666 entries");
}
END_TEST

Suite *io_suite(void);
Suite *io_suite(void)
{
    Suite *s = suite_create("io");
    TCase *tc = tcase_create("core");
    tcase_add_unchecked_fixture(tc, tmp_top_setup, tu_tmp_top_teardown);
    tcase_add_checked_fixture(tc, tu_tmp_setup, tu_tmp_teardown);
    tcase_add_test(tc, loads_numpy_files);
    tcase_add_test(tc, saves_numpy_bytes);
    tcase_add_test(tc, round_trips);
    tcase_add_test(tc, refuses_other_files);
    tcase_add_test(tc, refuses_before_allocating);
    tcase_add_test(tc, print_layout);
    tcase_add_test(tc, print_small_tensors_whole);
    tcase_add_test(tc, print_long_op_names);
    suite_add_tcase(s, tc);
    return s;
}
