/* test_kit.c — the experiments' run kit (experiments/kit/kit.h) and the
 * outer optimizer's saved state (opt_outer_save / opt_outer_load).
 *
 * Flags: every type parsed, defaults and --quick defaults, errors naming the
 * flag with exit status 2.  Files: written under a temporary name and
 * renamed, nothing left behind after a write error (a file size limit stands
 * in for a full disk), a second run refused on a locked folder, a path too
 * long.  Checkpoints: a round trip of every field type, then one damage at a
 * time (a flipped byte, a cut, another kind, a value out of range, NaN, an
 * all-zero RNG state, a count past its bound), each refused with a message
 * naming the file and the field.  Children: a result comes back through the
 * pipe, and a worker dies when its parent is killed. */
#define _DEFAULT_SOURCE /* setrlimit, kill */

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "experiments/kit/kit.h"
#include "optim/outer.h"
#include "testutil.h"

Suite *kit_suite(void);

static void tmp_top_setup(void) { tu_tmp_top_setup("test_kit"); }

/* ---- flags ------------------------------------------------------------------ */

static struct {
    int T, Ks[4], nK;
    double gamma, xy[2];
    uint64_t seed;
    const char *out, *data;
    bool quick;
} o;

static const ex_flag table[] = {
    { "--T", EX_INT, &o.T, "100", 1, 1000, "inner steps", .quick = "10" },
    { "--K", EX_INTS, o.Ks, "1,5", 1, 100, "truncations", .max_n = 4, .n = &o.nK },
    { "--gamma", EX_REAL, &o.gamma, "0.1", 0, HUGE_VAL, "step", .open = EX_OPEN_LO },
    { "--start", EX_PAIR, o.xy, "-1,1", .help = "start" },
    { "--seed", EX_SEED, &o.seed, "1", .help = "seed" },
    { "--out", EX_TEXT, &o.out, "results/x", .help = "folder", .meta = "DIR" },
    { "--data", EX_CHOICE, &o.data, "mnist", .help = "data", .choices = "mnist|fashion" },
    { "--quick", EX_SWITCH, &o.quick, .help = "quick" },
};
static ex_cmd cmd = { .prog = "kit-test", .usage = "[flags]", .flags = table, .n_flags = 8 };

/* Runs the parser on a NULL-terminated argument list with stderr in a file;
 * returns the status and leaves what was printed in err. */
static int parse(char err[1024], const char *a0, ...)
{
    char *argv[16] = { "kit-test" };
    int argc = 1;
    va_list ap;
    va_start(ap, a0);
    for (const char *a = a0; a && argc < 15; a = va_arg(ap, const char *)) argv[argc++] = (char *)a;
    va_end(ap);
    fflush(stderr);
    int saved = dup(2), fd = open(tu_tmp_path("stderr"), O_RDWR | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(fd, 0);
    dup2(fd, 2);
    int rc = ex_flags_parse(&cmd, argc, argv);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    ssize_t n = pread(fd, err, 1023, 0);
    err[n > 0 ? n : 0] = '\0';
    close(fd);
    return rc;
}

START_TEST(test_flags_values)
{
    char err[1024];
    ck_assert_int_eq(parse(err, NULL, NULL), 0);
    ck_assert_int_eq(o.T, 100);
    ck_assert_int_eq(o.nK, 2);
    ck_assert_int_eq(o.Ks[1], 5);
    ck_assert(o.gamma == 0.1 && o.xy[0] == -1 && o.xy[1] == 1 && o.seed == 1);
    ck_assert_str_eq(o.out, "results/x");
    ck_assert(!o.quick && !ex_given(&cmd, "--T"));

    ck_assert_int_eq(parse(err, "--T=7", "--K", "3,2,9", "--gamma", "2e-3", "--start=0.5,-2",
                           "--seed", "18446744073709551615", "--out", "d", "--data=fashion",
                           NULL), 0);
    ck_assert_int_eq(o.T, 7);
    ck_assert_int_eq(o.nK, 3);
    ck_assert_int_eq(o.Ks[2], 9);
    ck_assert(o.gamma == 2e-3 && o.xy[0] == 0.5 && o.xy[1] == -2);
    ck_assert(o.seed == UINT64_MAX);
    ck_assert_str_eq(o.out, "d");
    ck_assert_str_eq(o.data, "fashion");
    ck_assert(ex_given(&cmd, "--T") && !ex_given(&cmd, "--quick"));

    /* --quick changes the defaults; a flag given explicitly still wins. */
    ck_assert_int_eq(parse(err, "--quick", NULL), 0);
    ck_assert(o.quick && o.T == 10);
    ck_assert_int_eq(parse(err, "--T", "33", "--quick", NULL), 0);
    ck_assert_int_eq(o.T, 33);
}
END_TEST

/* Each bad command line: exit status 2 and a message naming the flag. */
START_TEST(test_flags_errors)
{
    static const char *const cases[][3] = {
        { "--T", "0", "--T: expected a whole number in 1..1000, got '0'" },
        { "--T", " 5", "--T: expected a whole number" },
        { "--T", "5x", "--T: expected a whole number" },
        { "--K", "1,,2", "--K: expected up to 4 whole numbers in 1..100" },
        { "--K", "1,2,1", "--K: 1 is given twice" },
        { "--K", "1,2,3,4,5", "--K: expected up to 4" },
        { "--gamma", "0", "--gamma: expected a finite number > 0" },
        { "--gamma", "nan", "--gamma: expected a finite number" },
        { "--start", "1", "--start: expected two finite numbers" },
        { "--seed", "-1", "--seed wants a whole number >= 0" },
        { "--data", "cifar", "--data: expected one of mnist|fashion" },
        { "--out", "", "--out: expected a value" },
        { "--nope", "1", "unknown flag '--nope'" },
        { "--quick=1", NULL, "--quick takes no value" },
        { "--T", NULL, "--T needs a value" },
        { "stray", NULL, "unexpected argument 'stray'" },
    };
    char err[1024];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int rc = parse(err, cases[i][0], cases[i][1], NULL);
        ck_assert_msg(rc == EX_EXIT_USAGE, "%s %s: status %d", cases[i][0], cases[i][1], rc);
        ck_assert_msg(strstr(err, cases[i][2]) != NULL, "%s %s: %s", cases[i][0], cases[i][1], err);
    }
    char long_path[5000];
    memset(long_path, 'x', sizeof long_path - 1);
    long_path[sizeof long_path - 1] = '\0';
    ck_assert_int_eq(parse(err, "--out", long_path, NULL), EX_EXIT_USAGE);
    ck_assert_msg(strstr(err, "--out: path too long") != NULL, "%s", err);
}
END_TEST

/* The number parsers take the whole string or nothing: no white space
 * before the number (where strtol, strtoull and strtod would skip it), no
 * sign on a seed (strtoull would read " -1" as 2^64 − 1), nothing after it;
 * lists have no empty entry and no spaces. */
START_TEST(test_flags_strict)
{
    int v = 7;
    ck_assert(ex_parse_int("-3", -5, 5, &v) && v == -3);
    ck_assert(ex_parse_int("+3", -5, 5, &v) && v == 3);
    v = 7;
    const char *bad_int[] = { "", " 3", "\t3", " -3", "3 ", "3x", "6", "-6", "10x",
                              "99999999999999999999", "- 3" };
    for (size_t i = 0; i < sizeof bad_int / sizeof *bad_int; i++)
        ck_assert_msg(!ex_parse_int(bad_int[i], -5, 5, &v) && v == 7, "ex_parse_int took '%s'",
                      bad_int[i]);
    double d = 7;
    ck_assert(ex_parse_double("-5.07", &d) && d == -5.07);
    ck_assert(ex_parse_double("1e-3", &d) && d == 1e-3);
    d = 7;
    const char *bad_double[] = { "", " 1", "\t1", " -1", "1 ", "1x", "inf", "nan", "1e999" };
    for (size_t i = 0; i < sizeof bad_double / sizeof *bad_double; i++)
        ck_assert_msg(!ex_parse_double(bad_double[i], &d) && d == 7,
                      "ex_parse_double took '%s'", bad_double[i]);
    char err[1024];
    const char *bad_u64[] = { "", " 1", "\t1", "\n1", "-1", " -1", "+1", " +1", "1 ", "1x",
                              "18446744073709551616", "0x10" };
    for (size_t i = 0; i < sizeof bad_u64 / sizeof *bad_u64; i++)
        ck_assert_msg(parse(err, "--seed", bad_u64[i], NULL) == EX_EXIT_USAGE, "--seed took '%s'",
                      bad_u64[i]);
    const char *bad_list[] = { ",", "1,", ",1", "1,,5", " 1", "1, 5", "1 ,5", "1,5 ",
                               "1,5,25,50,60", "0,1", "1,101", "1;5" };
    for (size_t i = 0; i < sizeof bad_list / sizeof *bad_list; i++)
        ck_assert_msg(parse(err, "--K", bad_list[i], NULL) == EX_EXIT_USAGE, "--K took '%s'",
                      bad_list[i]);
}
END_TEST

/* ---- the output folder ------------------------------------------------------ */

static bool exists(const char *path) { return access(path, F_OK) == 0; }

/* How many entries of dir start with '.' (temporary files), the lock aside. */
static int hidden_files(const char *dir)
{
    char cmdline[1200];
    snprintf(cmdline, sizeof cmdline, "ls -A '%s' | grep -v '^\\.lock$' | grep -c '^\\.'", dir);
    FILE *p = popen(cmdline, "r");
    int n = -1;
    ck_assert(p && fscanf(p, "%d", &n) == 1);
    pclose(p);
    return n;
}

START_TEST(test_out_files)
{
    ex_out *out = malloc(sizeof *out);
    const char *dir = tu_tmp_path("a/b/out");
    ck_assert_int_eq(ex_out_open(out, dir, false), AD_OK);
    ex_file f;
    ck_assert_int_eq(ex_csv_open(&f, out, "x.csv", "a,b"), AD_OK);
    fprintf(f.f, "1,2\n");
    ck_assert(!exists(tu_tmp_path("a/b/out/x.csv"))); /* not before it is complete */
    ck_assert_int_eq(hidden_files(dir), 1);
    ck_assert_int_eq(ex_file_commit(&f), AD_OK);
    tu_blob b = tu_read_file(tu_tmp_path("a/b/out/x.csv"), 100);
    ck_assert_int_eq((int)b.n, 8);
    ck_assert(memcmp(b.b, "a,b\n1,2\n", 8) == 0);
    free(b.b);
    ck_assert_int_eq(hidden_files(dir), 0);
    ck_assert_int_eq(out->n_files, 1);

    /* Abandoned: nothing left. */
    ck_assert_int_eq(ex_file_open(&f, out, "y.csv"), AD_OK);
    ex_file_abandon(&f);
    ck_assert(!exists(tu_tmp_path("a/b/out/y.csv")));
    ck_assert_int_eq(hidden_files(dir), 0);

    /* A second run on the folder is refused while the first holds it. */
    ex_out *other = malloc(sizeof *other);
    ck_assert_int_eq(ex_out_open(other, dir, false), AD_EIO);
    ck_assert_msg(strstr(ad_error(), "is in use by another run (process ") != NULL, "%s",
                  ad_error());
    ex_out_close(out);

    /* What a killed run left (its temporaries) goes when the next run takes
     * the folder; other hidden files stay: a user's (.env.backup has the
     * shape .NAME.XXXXXX), and a shared folder's writer's, which the lock
     * does not cover. */
    const char *left[] = { "a/b/out/.x.csv.partial.aB3dE9", "a/b/out/.keep",
                           "a/b/out/.env.backup", "a/b/out/.t.md.shared.aB3dE9",
                           "a/b/out/.x.csv.partial.ab" };
    for (int i = 0; i < 5; i++) {
        FILE *lf = fopen(tu_tmp_path(left[i]), "w");
        ck_assert(lf && fclose(lf) == 0);
    }
    ck_assert_int_eq(hidden_files(dir), 5);
    ck_assert_int_eq(ex_out_open(other, dir, false), AD_OK);
    ck_assert(!exists(tu_tmp_path(left[0])));
    for (int i = 1; i < 5; i++) ck_assert_msg(exists(tu_tmp_path(left[i])), "%s removed", left[i]);
    ex_out_close(other);

    char long_dir[4200];
    memset(long_dir, 'y', sizeof long_dir - 1);
    long_dir[sizeof long_dir - 1] = '\0';
    ck_assert_int_eq(ex_out_open(other, long_dir, false), EX_EUSAGE);
    ck_assert_msg(strstr(ad_error(), "--out: path too long") != NULL, "%s", ad_error());
    free(out);
    free(other);
}
END_TEST

/* A killed run's children still hold its folder for a moment: the refusal
 * says so rather than naming a run that has ended.  Run A locks the folder,
 * forks B (which shares the lock) and exits; B waits on a pipe. */
START_TEST(test_out_lock_orphan)
{
    const char *dir = tu_tmp_path("orphan");
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t a = fork();
    ck_assert(a >= 0);
    if (a == 0) {
        static ex_out held;
        if (ex_out_open(&held, dir, false) != AD_OK) _exit(1);
        close(fds[1]);
        pid_t b = fork();
        if (b == 0) {
            char c;
            while (read(fds[0], &c, 1) > 0) {
            }
            _exit(0);
        }
        _exit(b > 0 ? 0 : 1);
    }
    close(fds[0]);
    int status;
    ck_assert(waitpid(a, &status, 0) == a && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ex_out *out = malloc(sizeof *out);
    ck_assert_int_eq(ex_out_open(out, dir, false), AD_EIO);
    char want[96];
    snprintf(want, sizeof want, "held by the child processes of run %ld, which has ended", (long)a);
    ck_assert_msg(strstr(ad_error(), want) != NULL, "%s", ad_error());
    /* The same id written from another machine (or PID namespace) names a
     * run that may well be alive there: in use, not "ended". */
    FILE *lf = fopen(tu_tmp_path("orphan/.lock"), "w");
    ck_assert(lf && fprintf(lf, "%ld elsewhere 12345\n", (long)a) > 0 && fclose(lf) == 0);
    ck_assert_int_eq(ex_out_open(out, dir, false), AD_EIO);
    snprintf(want, sizeof want, "in use by another run (process %ld on elsewhere)", (long)a);
    ck_assert_msg(strstr(ad_error(), want) != NULL, "%s", ad_error());
    close(fds[1]); /* B ends, and the folder is free */
    int rc = AD_EIO;
    for (int i = 0; i < 200 && (rc = ex_out_open(out, dir, false)) != AD_OK; i++) usleep(10000);
    ck_assert_int_eq(rc, AD_OK);
    ex_out_close(out);
    free(out);
}
END_TEST

/* A write error (here: past a file size limit, as a full disk would be)
 * leaves neither the file nor its temporary, and says why. */
START_TEST(test_out_write_error)
{
    ex_out *out = malloc(sizeof *out);
    const char *dir = tu_tmp_path("full");
    ck_assert_int_eq(ex_out_open(out, dir, false), AD_OK);
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = { 4096, 4096 };
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    ex_file f;
    ck_assert_int_eq(ex_csv_open(&f, out, "big.csv", "k,v"), AD_OK);
    for (int i = 0; i < 10000; i++) fprintf(f.f, "%d,%d\n", i, i * i);
    ck_assert_int_eq(ex_file_commit(&f), AD_EIO);
    ck_assert_msg(strstr(ad_error(), "cannot write") && strstr(ad_error(), "big.csv: File too large"),
                  "%s", ad_error());
    ck_assert(!exists(tu_tmp_path("full/big.csv")));
    ck_assert_int_eq(hidden_files(dir), 0);
    ex_out_close(out);
    free(out);
}
END_TEST

START_TEST(test_table_csv)
{
    ex_out *out = malloc(sizeof *out);
    ck_assert_int_eq(ex_out_open(out, tu_tmp_path("t"), false), AD_OK);
    ex_table t = { .name = "log", .header = "i,x,y,z", .fmt = "%.0f %.2f %g", .n_cols = 4 };
    ck_assert_int_eq(ex_table_push(&t, (double[]){ 1, 0.125, 3, 4.5 }), AD_OK);
    ck_assert_int_eq(ex_table_push(&t, (double[]){ 2, 2, 1e-9, NAN }), AD_OK);
    ck_assert_int_eq(ex_table_save(&t, out, "log.csv"), AD_OK);
    tu_blob b = tu_read_file(tu_tmp_path("t/log.csv"), 200);
    const char want[] = "i,x,y,z\n1,0.12,3,4.5\n2,2.00,1e-09,nan\n";
    ck_assert_int_eq((int)b.n, (int)strlen(want));
    ck_assert(memcmp(b.b, want, b.n) == 0);
    free(b.b);
    ex_table_free(&t);
    ex_out_close(out);
    free(out);
}
END_TEST

/* ---- checkpoints -------------------------------------------------------------- */

/* A checkpoint with one field of each kind, written into dir as c.bin. */
static void write_ckpt(ex_out *out, double lam1, uint64_t rng0, int rows)
{
    ex_ckpt c;
    ck_assert_int_eq(ex_ckpt_begin(&c), AD_OK);
    ex_ckpt_put_text(&c, "run", "v1/T5");
    ex_ckpt_put_int(&c, "iter", 3);
    ad_real lam[3] = { 1, (ad_real)lam1, -2 };
    ex_ckpt_put_reals(&c, "lambda", lam, 3);
    ad_rng rng = { { rng0, 0, 0, 0 } };
    ex_ckpt_put_rng(&c, "rng", &rng);
    ex_table t = { .name = "log", .header = "a,b", .fmt = "%g", .n_cols = 2 };
    for (int i = 0; i < rows; i++) ck_assert_int_eq(ex_table_push(&t, (double[]){ i, 2.0 * i }), AD_OK);
    ex_ckpt_put_table(&c, &t);
    ex_table_free(&t);
    ck_assert_int_eq(ex_ckpt_commit(&c, out, "c.bin", "test", 2), AD_OK);
}

/* Reads c.bin back with every check; returns the status. */
static int read_ckpt(const char *path)
{
    ex_ckpt c;
    char run[16];
    long long iter;
    ad_real lam[3];
    ad_rng rng;
    ex_table t = { .name = "log", .header = "a,b", .fmt = "%g", .n_cols = 2 };
    int rc = ex_ckpt_open(&c, path, "test", 2);
    if (rc == AD_OK) rc = ex_ckpt_get_text(&c, "run", run, sizeof run);
    if (rc == AD_OK) rc = ex_ckpt_get_int(&c, "iter", 0, 10, &iter);
    if (rc == AD_OK) rc = ex_ckpt_get_reals(&c, "lambda", lam, 3, -10, 10);
    if (rc == AD_OK) rc = ex_ckpt_get_rng(&c, "rng", &rng);
    if (rc == AD_OK) rc = ex_ckpt_get_table(&c, &t, (int)iter);
    if (rc == AD_OK) rc = ex_ckpt_end(&c);
    if (rc == AD_OK) {
        ck_assert_str_eq(run, "v1/T5");
        ck_assert(iter == 3 && lam[1] == (ad_real)0.5 && rng.s[0] == 7 && t.n_rows == 3);
        ck_assert(t.rows[5] == 4);
    }
    ex_table_free(&t);
    ex_ckpt_free(&c);
    return rc;
}

/* path's bytes with one changed (or cut at n_keep when n_keep >= 0). */
static void damage(const char *path, long at, int n_keep)
{
    tu_blob b = tu_read_file(path, 1 << 20);
    if (at >= 0) b.b[at] ^= 0x40;
    tu_write_raw(path, b.b, n_keep >= 0 ? (size_t)n_keep : b.n);
    free(b.b);
}

#define EXPECT_BAD(what)                                                                      \
    do {                                                                                      \
        ck_assert_int_eq(read_ckpt(path), AD_EFORMAT);                                        \
        ck_assert_msg(strstr(ad_error(), path) && strstr(ad_error(), what), "%s", ad_error()); \
    } while (0)

START_TEST(test_ckpt)
{
    ex_out *out = malloc(sizeof *out);
    ck_assert_int_eq(ex_out_open(out, tu_tmp_path("ck"), false), AD_OK);
    const char *path = tu_tmp_path("ck/c.bin");
    write_ckpt(out, 0.5, 7, 3);
    ck_assert_msg(read_ckpt(path) == AD_OK, "%s", ad_error());
    tu_blob b = tu_read_file(path, 1 << 20);
    long size = (long)b.n;
    free(b.b);

    damage(path, size - 5, -1);
    EXPECT_BAD("is damaged: the CRC32");
    write_ckpt(out, 0.5, 7, 3);
    damage(path, -1, 100);
    EXPECT_BAD("c.bin is truncated");
    write_ckpt(out, 0.5, 7, 3);
    damage(path, 2, -1);
    EXPECT_BAD("is not a hypertape checkpoint");
    write_ckpt(out, 0.5, 7, 3);
    ex_ckpt c;
    ck_assert_int_eq(ex_ckpt_open(&c, path, "other", 2), AD_EFORMAT);
    ck_assert_msg(strstr(ad_error(), "is a test checkpoint of version 2"), "%s", ad_error());
    ex_ckpt_free(&c);
    ck_assert_int_eq(ex_ckpt_open(&c, path, "test", 3), AD_EFORMAT);
    ex_ckpt_free(&c);

    /* Valid CRC, bad contents. */
    write_ckpt(out, NAN, 7, 3);
    EXPECT_BAD("field 'lambda'[1] is nan");
    write_ckpt(out, 11, 7, 3);
    EXPECT_BAD("field 'lambda'[1] is 11");
    write_ckpt(out, 0.5, 0, 3);
    EXPECT_BAD("field 'rng' is all zero");
    write_ckpt(out, 0.5, 7, 4); /* more log rows than iterations */
    EXPECT_BAD("field 'log' holds 8 numbers");
    ex_out_close(out);
    free(out);
}
END_TEST

/* ---- the outer optimizer's state ----------------------------------------------- */

START_TEST(test_outer_save_load)
{
    ad_value *p = ad_param_from(1, (int[]){ 3 }, (ad_real[]){ 1, 2, 3 });
    ad_value *q = ad_param_from(1, (int[]){ 3 }, (ad_real[]){ 1, 2, 3 });
    ad_value *g = ad_tensor_from(1, (int[]){ 3 }, (ad_real[]){ 0.5, -1, 2 });
    opt_outer a, b;
    ck_assert_int_eq(opt_outer_init(&a, OPT_ADAM, 0.1, true, 1, &p), AD_OK);
    ck_assert_int_eq(opt_outer_init(&b, OPT_ADAM, 0.7, false, 1, &q), AD_OK);
    for (int i = 0; i < 3; i++) ck_assert_int_eq(opt_outer_step(&a, &g), AD_OK);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ck_assert_int_eq(opt_outer_save(&a, f), AD_OK);
    fclose(f);
    f = fmemopen(buf, len, "rb");
    ck_assert_int_eq(opt_outer_load(&b, f), AD_OK);
    fclose(f);
    /* b now continues exactly as a does. */
    memcpy(q->data, p->data, sizeof(ad_real) * 3);
    ck_assert_int_eq(opt_outer_step(&a, &g), AD_OK);
    ck_assert_int_eq(opt_outer_step(&b, &g), AD_OK);
    for (int i = 0; i < 3; i++) ck_assert(p->data[i] == q->data[i]);
    ck_assert(b.tau == 4 && b.groups[0].eta0 == 0.1 && b.groups[0].sqrt_decay);

    /* Damaged states: a negative second moment, NaN first moment, cut short. */
    double *v = (double *)(buf + 8 + 8 + 32 + 8 + 8) + 3; /* v[0] after m[3] */
    double keep = *v;
    *v = -1;
    f = fmemopen(buf, len, "rb");
    ck_assert_int_eq(opt_outer_load(&b, f), AD_EFORMAT);
    ck_assert_msg(strstr(ad_error(), "second moment v[0]"), "%s", ad_error());
    fclose(f);
    *v = keep;
    v[-3] = NAN;
    f = fmemopen(buf, len, "rb");
    ck_assert_int_eq(opt_outer_load(&b, f), AD_EFORMAT);
    ck_assert_msg(strstr(ad_error(), "first moment m[0]"), "%s", ad_error());
    fclose(f);
    f = fmemopen(buf, len - 4, "rb");
    ck_assert_int_eq(opt_outer_load(&b, f), AD_EFORMAT);
    ck_assert_msg(strstr(ad_error(), "ends within Adam's second moment"), "%s", ad_error());
    fclose(f);
    ck_assert(b.tau == 4); /* unchanged by the failures */
    free(buf);
    opt_outer_free(&a);
    opt_outer_free(&b);
    ad_value_free(p);
    ad_value_free(q);
    ad_value_free(g);
}
END_TEST

/* ---- children --------------------------------------------------------------------- */

static int square(void *arg, void *result)
{
    int x = *(int *)arg;
    if (x < 0) return ad_fail(AD_EARG, "negative");
    *(int *)result = x * x;
    return AD_OK;
}

/* Writes this process's id to the pipe, then sleeps until killed. */
static int sleeper(void *arg, void *result)
{
    pid_t me = getpid();
    if (write(*(int *)arg, &me, sizeof me) != sizeof me) return AD_EIO;
    for (;;) pause();
    return AD_OK;
}

/* Dead, or a zombie nobody reaps yet (in a container PID 1 may not). */
static bool gone(pid_t pid)
{
    char path[64], state = 0;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return kill(pid, 0) != 0 && errno == ESRCH;
    bool z = fscanf(f, "%*d %*s %c", &state) == 1 && (state == 'Z' || state == 'X');
    fclose(f);
    return z;
}

START_TEST(test_forked)
{
    int x = 7, r = 0;
    ck_assert_int_eq(ex_run_forked("seven", square, &x, &r, sizeof r), AD_OK);
    ck_assert_int_eq(r, 49);
    x = -1;
    ck_assert_int_eq(ex_run_forked("minus one", square, &x, &r, sizeof r), AD_EARG);
    ck_assert_msg(strstr(ad_error(), "minus one failed"), "%s", ad_error());

    /* A parent running a worker is killed: the worker must not survive it. */
    int fd[2];
    ck_assert_int_eq(pipe(fd), 0);
    pid_t parent = fork();
    ck_assert_int_ge(parent, 0);
    if (parent == 0) {
        close(fd[0]);
        _exit(ex_run_forked("sleeper", sleeper, &fd[1], &r, sizeof r) == AD_OK ? 0 : 1);
    }
    close(fd[1]);
    pid_t worker = 0;
    ck_assert_int_eq((int)read(fd[0], &worker, sizeof worker), (int)sizeof worker);
    close(fd[0]);
    ck_assert(!gone(worker));
    kill(parent, SIGKILL);
    waitpid(parent, NULL, 0);
    for (int i = 0; i < 500 && !gone(worker); i++) nanosleep(&(struct timespec){ 0, 10000000 }, NULL);
    bool dead = gone(worker);
    if (!dead) kill(worker, SIGKILL);
    ck_assert_msg(dead, "the worker %d outlived its killed parent", (int)worker);
}
END_TEST

/* ---- a checkpoint in memory, and divergence --------------------------------------- */

/* ex_ckpt_open_mem reads the bytes of a file as ex_ckpt_open reads the file. */
START_TEST(test_ckpt_mem)
{
    ex_out *out = malloc(sizeof *out);
    ck_assert_int_eq(ex_out_open(out, tu_tmp_path("cm"), false), AD_OK);
    write_ckpt(out, 0.5, 7, 3);
    tu_blob b = tu_read_file(tu_tmp_path("cm/c.bin"), 1 << 20);
    ex_ckpt c;
    ck_assert_msg(ex_ckpt_open_mem(&c, "mem.bin", b.b, b.n, "test", 2) == AD_OK, "%s",
                  ad_error());
    char run[16];
    long long it;
    ck_assert_int_eq(ex_ckpt_get_text(&c, "run", run, sizeof run), AD_OK);
    ck_assert_str_eq(run, "v1/T5");
    ck_assert_int_eq(ex_ckpt_get_int(&c, "iter", 0, 100, &it), AD_OK);
    ck_assert_int_eq(it, 3);
    ex_ckpt_free(&c);
    b.b[b.n - 1] ^= 1;
    ck_assert_int_eq(ex_ckpt_open_mem(&c, "mem.bin", b.b, b.n, "test", 2), AD_EFORMAT);
    ck_assert_msg(strstr(ad_error(), "mem.bin is damaged: the CRC32"), "%s", ad_error());
    ex_ckpt_free(&c);
    ck_assert_int_eq(ex_ckpt_open_mem(&c, "empty", NULL, 0, "test", 2), AD_EFORMAT);
    ex_ckpt_free(&c);
    free(b.b);

    /* A finite double beyond float's range: as ad_real it would be Inf, so
     * the float build refuses it whatever range the caller gave. */
    ex_ckpt w;
    ck_assert_int_eq(ex_ckpt_begin(&w), AD_OK);
    ex_ckpt_put_f64(&w, "big", (double[]){ 1e39 }, 1);
    ck_assert_int_eq(ex_ckpt_commit(&w, out, "big.bin", "test", 2), AD_OK);
    ck_assert_int_eq(ex_ckpt_open(&c, tu_tmp_path("cm/big.bin"), "test", 2), AD_OK);
    ad_real big = 0;
    int rc = ex_ckpt_get_reals(&c, "big", &big, 1, -1e300, 1e300);
    if (sizeof(ad_real) < sizeof(double)) {
        ck_assert_int_eq(rc, AD_EFORMAT);
        ck_assert_msg(strstr(ad_error(), "field 'big'[0] is 1e+39, not a finite number"), "%s",
                      ad_error());
    } else {
        ck_assert_int_eq(rc, AD_OK);
        ck_assert_double_eq(big, 1e39);
    }
    ex_ckpt_free(&c);
    ex_out_close(out);
    free(out);
}
END_TEST

static hg_report report(double first, double last, int nonfinite)
{
    return (hg_report){ .inner_loss_first = first, .inner_loss_last = last,
                        .inner_nonfinite_step = nonfinite, .inner_loss_max_rise_step = 4 };
}

START_TEST(test_watch)
{
    ex_watch w;
    ex_watch_init(&w, "lower --gamma");
    ck_assert_double_eq(w.factor, EX_DIVERGE_FACTOR);
    /* The inner loss: falling, rising a little, rising past the factor. */
    hg_report r = report(2.3, 0.5, 0);
    ck_assert_int_eq(ex_watch_inner(&w, &r), AD_OK);
    r = report(2.3, 22.9, 0); /* 9.96 times */
    ck_assert_int_eq(ex_watch_inner(&w, &r), AD_OK);
    r = report(2.3, 23.1, 0);
    ck_assert_int_eq(ex_watch_inner(&w, &r), EX_EDIVERGED);
    ck_assert_msg(strstr(ad_error(), "diverged: the inner loss rose from g_1 = 2.3 to g_T = 23.1 "
                         "(more than 10 times; its largest rise at step 4); lower --gamma"),
                  "%s", ad_error());
    /* Measured on the rise: from −1, 8 is a rise of 9 (allowed), 8.5 is not. */
    r = report(-1, 8, 0);
    ck_assert_int_eq(ex_watch_inner(&w, &r), AD_OK);
    r = report(-1, 8.5, 0);
    ck_assert_int_eq(ex_watch_inner(&w, &r), EX_EDIVERGED);
    r = report(1.5, NAN, 48);
    ck_assert_int_eq(ex_watch_inner(&w, &r), AD_ENONFINITE);
    ck_assert_msg(strstr(ad_error(), "not finite from step 48 (g_1 = 1.5); lower --gamma"), "%s",
                  ad_error());
    r = report(1.5, INFINITY, 0);
    ck_assert_int_eq(ex_watch_inner(&w, &r), EX_EDIVERGED);

    /* The validation loss: the first value is the reference. */
    ck_assert_int_eq(ex_watch_val(&w, 1, 0.5), AD_OK);
    ck_assert_int_eq(ex_watch_val(&w, 2, 4.9), AD_OK);
    ck_assert_int_eq(ex_watch_val(&w, 3, 0.1), AD_OK);
    ck_assert_int_eq(ex_watch_val(&w, 4, 5.1), EX_EDIVERGED);
    ck_assert_msg(strstr(ad_error(), "the validation loss rose from 0.5 (hyper-iteration 1) to "
                         "5.1 (more than 10 times); lower --gamma"), "%s", ad_error());
    ck_assert_int_eq(ex_watch_val(&w, 5, NAN), AD_ENONFINITE);
    ex_watch_init(&w, NULL); /* no hint: the message ends after the numbers */
    w.factor = 2;
    ck_assert_int_eq(ex_watch_val(&w, 0, 1e33), AD_OK);
    ck_assert_int_eq(ex_watch_val(&w, 1, 2.5e33), EX_EDIVERGED);
    ck_assert_msg(strstr(ad_error(), "(more than 2 times)") && !strstr(ad_error(), "; "), "%s",
                  ad_error());
    ck_assert_int_eq(ex_exit(EX_EDIVERGED), EX_EXIT_LIB);
}
END_TEST

Suite *kit_suite(void)
{
    Suite *s = suite_create("kit");
    TCase *tc = tcase_create("kit");
    tcase_add_unchecked_fixture(tc, tmp_top_setup, tu_tmp_top_teardown);
    tcase_add_checked_fixture(tc, tu_tmp_setup, tu_tmp_teardown);
    tcase_add_test(tc, test_flags_values);
    tcase_add_test(tc, test_flags_errors);
    tcase_add_test(tc, test_flags_strict);
    tcase_add_test(tc, test_out_files);
    tcase_add_test(tc, test_out_lock_orphan);
    tcase_add_test(tc, test_out_write_error);
    tcase_add_test(tc, test_table_csv);
    tcase_add_test(tc, test_ckpt);
    tcase_add_test(tc, test_outer_save_load);
    tcase_add_test(tc, test_forked);
    tcase_add_test(tc, test_ckpt_mem);
    tcase_add_test(tc, test_watch);
    suite_add_tcase(s, tc);
    return s;
}
