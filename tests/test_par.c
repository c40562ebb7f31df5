/* test_par.c — the run kit's parallel work (experiments/kit/par.c and
 * ex_run_forked_many in run.c), in one process: what does not need mpirun.
 *
 * The pool: every item runs once, on a worker of the range, whatever the
 * number of threads and the hand-out order; a failure reports the first
 * failed item in that order (not the first to fail in time) with its
 * message, and no longer hands out items.  Results gathered per item and
 * folded in order by ex_par_fold are the serial loop's bits at 1..8 threads.
 * Children (ex_run_forked_many): results by item, at most n_parallel alive
 * at once, the first failed item in the order named, a child killed by a
 * signal named.  The collective checkpoint read is ex_ckpt_open's in one
 * process.  tests/par.sh runs the programs at several thread counts and
 * under mpirun. */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS */

#include <check.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "experiments/kit/kit.h"
#include "testutil.h"

Suite *par_suite(void);

static void tmp_top_setup(void) { tu_tmp_top_setup("test_par"); }

/* ---- the pool ----------------------------------------------------------------- */

enum { N_ITEMS = 400 };

typedef struct counts {
    atomic_int runs[N_ITEMS];
    atomic_int bad_worker;
    atomic_int total;
    int n_threads;
    int fail_a, fail_b; /* items that fail (−1: none) */
} counts;

static int count_item(void *arg, int worker, int item)
{
    counts *c = arg;
    atomic_fetch_add(&c->runs[item], 1);
    atomic_fetch_add(&c->total, 1);
    if (c->fail_a >= 0) /* 1 ms an item: the failure is seen long before the last */
        nanosleep(&(struct timespec){ 0, 1000000 }, NULL);
    if (worker < 0 || worker >= c->n_threads) atomic_fetch_add(&c->bad_worker, 1);
    if (item == c->fail_a && c->n_threads > 1) /* slow: a later item fails first in time */
        nanosleep(&(struct timespec){ 0, 50000000 }, NULL);
    if (item == c->fail_a || item == c->fail_b)
        return ad_fail(AD_EARG, "item %d failed on purpose", item);
    return AD_OK;
}

static void counts_reset(counts *c, int n_threads, int fail_a, int fail_b)
{
    for (int i = 0; i < N_ITEMS; i++) atomic_init(&c->runs[i], 0);
    atomic_init(&c->bad_worker, 0);
    atomic_init(&c->total, 0);
    c->n_threads = n_threads;
    c->fail_a = fail_a;
    c->fail_b = fail_b;
}

START_TEST(test_pool_every_item_once)
{
    static counts c;
    int order[N_ITEMS / 2];
    for (int i = 0; i < N_ITEMS / 2; i++) order[i] = N_ITEMS - 1 - 2 * i; /* odd items, downwards */
    for (int n_threads = 1; n_threads <= 8; n_threads++) {
        counts_reset(&c, n_threads, -1, -1);
        ck_assert_int_eq(ex_pool_run(n_threads, N_ITEMS, NULL, count_item, &c), AD_OK);
        for (int i = 0; i < N_ITEMS; i++)
            ck_assert_msg(atomic_load(&c.runs[i]) == 1, "%d threads: item %d ran %d times",
                          n_threads, i, atomic_load(&c.runs[i]));
        ck_assert_int_eq(atomic_load(&c.bad_worker), 0);
        counts_reset(&c, n_threads, -1, -1);
        ck_assert_int_eq(ex_pool_run(n_threads, N_ITEMS / 2, order, count_item, &c), AD_OK);
        for (int i = 0; i < N_ITEMS; i++)
            ck_assert_msg(atomic_load(&c.runs[i]) == i % 2, "%d threads, odd items: item %d ran "
                          "%d times", n_threads, i, atomic_load(&c.runs[i]));
    }
    counts_reset(&c, 3, -1, -1);
    ck_assert_int_eq(ex_pool_run(3, 0, NULL, count_item, &c), AD_OK); /* no items */
    ck_assert_int_eq(atomic_load(&c.total), 0);
    /* This process's block is every item (no mpirun). */
    int first = -1, end = -1;
    ex_par_block(N_ITEMS, &first, &end);
    ck_assert_int_eq(first, 0);
    ck_assert_int_eq(end, N_ITEMS);
    ck_assert_int_eq(ex_par_rank(), 0);
    ck_assert_int_eq(ex_par_size(), 1);
    ck_assert_int_ge(ex_par_threads(), 1);
    counts_reset(&c, 4, -1, -1);
    ck_assert_int_eq(ex_par_run(4, 37, count_item, &c), AD_OK);
    ck_assert_int_eq(atomic_load(&c.total), 37);
}
END_TEST

START_TEST(test_pool_first_failure)
{
    static counts c;
    int down[N_ITEMS];
    for (int i = 0; i < N_ITEMS; i++) down[i] = N_ITEMS - 1 - i;
    for (int n_threads = 1; n_threads <= 6; n_threads++) {
        /* Items 90 and 92 fail, 90 after 50 ms: in the order 0, 1, ... the first is 90
         * although 92 fails first in time; the items after it need not run, a few may
         * have started. */
        counts_reset(&c, n_threads, 90, 92);
        ck_assert_int_eq(ex_pool_run(n_threads, N_ITEMS, NULL, count_item, &c), AD_EARG);
        ck_assert_msg(strstr(ad_error(), "item 90 failed on purpose"), "%d threads: %s",
                      n_threads, ad_error());
        for (int i = 0; i <= 90; i++) ck_assert_int_eq(atomic_load(&c.runs[i]), 1);
        /* Items 300 and 90 fail. */
        counts_reset(&c, n_threads, 300, 90);
        ck_assert_int_eq(ex_pool_run(n_threads, N_ITEMS, NULL, count_item, &c), AD_EARG);
        ck_assert_msg(strstr(ad_error(), "item 90 failed on purpose"), "%d threads: %s",
                      n_threads, ad_error());
        for (int i = 0; i <= 90; i++) ck_assert_int_eq(atomic_load(&c.runs[i]), 1);
        ck_assert_msg(atomic_load(&c.total) < N_ITEMS, "%d threads: every item ran after a "
                      "failure at the 91st", n_threads);
        /* Downwards, 300 comes first. */
        counts_reset(&c, n_threads, 300, 90);
        ck_assert_int_eq(ex_pool_run(n_threads, N_ITEMS, down, count_item, &c), AD_EARG);
        ck_assert_msg(strstr(ad_error(), "item 300 failed on purpose"), "%d threads: %s",
                      n_threads, ad_error());
    }
}
END_TEST

/* Item i's row: numbers of mixed sizes whose sum in float arithmetic depends
 * on its order. */
enum { ROW = 1000, ROWS = 23 };

static void make_row(int item, ad_real *row)
{
    ad_rng rng;
    ad_rng_seed(&rng, 1000 + (uint64_t)item);
    for (int k = 0; k < ROW; k++)
        row[k] = (ad_real)(ad_rng_normal(&rng) * pow(10, (int)(ad_rng_uniform(&rng) * 12) - 6));
}

typedef struct rows_job {
    ad_real *rows[ROWS];
} rows_job;

static int row_item(void *arg, int worker, int item)
{
    rows_job *j = arg;
    (void)worker;
    make_row(item, j->rows[item]);
    return AD_OK;
}

START_TEST(test_fold_in_order)
{
    static ad_real store[ROWS][ROW], want[ROW], got[ROW], reversed[ROW];
    rows_job j;
    for (int i = 0; i < ROWS; i++) j.rows[i] = store[i];
    memset(want, 0, sizeof want);
    memset(reversed, 0, sizeof reversed);
    for (int i = 0; i < ROWS; i++) { /* the serial loop a program had */
        ad_real row[ROW];
        make_row(i, row);
        for (int k = 0; k < ROW; k++) want[k] += row[k] / ROWS;
    }
    for (int i = ROWS - 1; i >= 0; i--) {
        ad_real row[ROW];
        make_row(i, row);
        for (int k = 0; k < ROW; k++) reversed[k] += row[k] / ROWS;
    }
    /* The rows' order matters here: the test would see a fold out of order. */
    ck_assert_msg(memcmp(want, reversed, sizeof want) != 0, "the sum does not depend on order");
    for (int n_threads = 1; n_threads <= 8; n_threads++) {
        memset(store, 0, sizeof store);
        ck_assert_int_eq(ex_par_run(n_threads, ROWS, row_item, &j), AD_OK);
        memset(got, 0, sizeof got);
        ck_assert_int_eq(ex_par_fold(got, ROW, j.rows, ROWS, ROWS), AD_OK);
        ck_assert_msg(memcmp(got, want, sizeof got) == 0, "%d threads: the folded rows differ "
                      "from the serial sum", n_threads);
    }
}
END_TEST

/* ---- children ------------------------------------------------------------------ */

typedef struct child_job {
    atomic_int *alive, *most; /* shared with the children (MAP_SHARED) */
    int fail_a, fail_b, kill_item;
} child_job;

static int child_item(void *arg, int item, void *result)
{
    child_job *j = arg;
    int now = atomic_fetch_add(j->alive, 1) + 1, most = atomic_load(j->most);
    while (now > most && !atomic_compare_exchange_weak(j->most, &most, now)) {
    }
    nanosleep(&(struct timespec){ 0, 60000000 }, NULL); /* 60 ms: the others start meanwhile */
    atomic_fetch_sub(j->alive, 1);
    if (item == j->kill_item) raise(SIGKILL);
    if (item == j->fail_a || item == j->fail_b) return ad_fail(AD_EARG, "item %d: no", item);
    *(long *)result = 1000L * item + 7;
    return AD_OK;
}

START_TEST(test_forked_many)
{
    atomic_int *shared = mmap(NULL, 2 * sizeof(atomic_int), PROT_READ | PROT_WRITE,
                              MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(shared, MAP_FAILED);
    const char *labels[] = { "item 0", "item 1", "item 2", "item 3", "item 4", "item 5" };
    int order[] = { 5, 4, 3, 2, 1, 0 };
    for (int par = 1; par <= 3; par++) {
        atomic_init(&shared[0], 0);
        atomic_init(&shared[1], 0);
        child_job j = { &shared[0], &shared[1], -1, -1, -1 };
        long res[6] = { 0 };
        ck_assert_int_eq(ex_run_forked_many(par, 6, NULL, labels, child_item, &j, res, sizeof *res),
                         AD_OK);
        for (int i = 0; i < 6; i++) ck_assert_int_eq(res[i], 1000L * i + 7);
        ck_assert_msg(atomic_load(&shared[1]) <= par, "%d children at once, %d allowed",
                      atomic_load(&shared[1]), par);
        if (par > 1) /* 60 ms each: with 6 of them some overlap */
            ck_assert_msg(atomic_load(&shared[1]) >= 2, "never 2 children at once (%d allowed)", par);
        /* Items 1 and 4 fail: in the order 5, 4, ... item 4 is named. */
        j.fail_a = 1;
        j.fail_b = 4;
        ck_assert_int_eq(ex_run_forked_many(par, 6, order, labels, child_item, &j, res,
                                            sizeof *res), AD_EARG);
        ck_assert_msg(strstr(ad_error(), "item 4 failed"), "%d at once: %s", par, ad_error());
        ck_assert_int_eq(ex_run_forked_many(par, 6, NULL, labels, child_item, &j, res,
                                            sizeof *res), AD_EARG);
        ck_assert_msg(strstr(ad_error(), "item 1 failed"), "%d at once: %s", par, ad_error());
        j = (child_job){ &shared[0], &shared[1], -1, -1, 2 };
        ck_assert_int_eq(ex_run_forked_many(par, 6, NULL, labels, child_item, &j, res,
                                            sizeof *res), AD_EARG);
        ck_assert_msg(strstr(ad_error(), "item 2: the child process died of signal 9"), "%s",
                      ad_error());
    }
    munmap(shared, 2 * sizeof(atomic_int));
}
END_TEST

/* ---- the collective checkpoint read, in one process ---------------------------- */

START_TEST(test_ckpt_open_all)
{
    ex_out *o = malloc(sizeof *o);
    ck_assert_ptr_nonnull(o);
    ck_assert_int_eq(ex_out_open(o, tu_tmp_path("out"), false), AD_OK);
    ex_ckpt c;
    ck_assert_int_eq(ex_ckpt_begin(&c), AD_OK);
    ex_ckpt_put_int(&c, "iter", 42);
    ex_ckpt_put_reals(&c, "lambda", (ad_real[]){ 1.5, -2.25 }, 2);
    ck_assert_int_eq(ex_ckpt_commit(&c, o, "ck.bin", "test", 3), AD_OK);
    char path[EX_PATH_LEN + 16];
    snprintf(path, sizeof path, "%s/ck.bin", o->dir);
    ck_assert(ex_par_exists(path));
    long long it = 0;
    ad_real lam[2];
    ck_assert_int_eq(ex_ckpt_open_all(&c, path, "test", 3), AD_OK);
    ck_assert_int_eq(ex_ckpt_get_int(&c, "iter", 0, 100, &it), AD_OK);
    ck_assert_int_eq(ex_ckpt_get_reals(&c, "lambda", lam, 2, -10, 10), AD_OK);
    ck_assert_int_eq(ex_ckpt_end(&c), AD_OK);
    ex_ckpt_free(&c);
    ck_assert_int_eq(it, 42);
    ck_assert(lam[0] == 1.5 && lam[1] == -2.25);
    ck_assert_int_eq(ex_ckpt_open_all(&c, path, "other", 3), AD_EFORMAT);
    ck_assert_msg(strstr(ad_error(), "is a test checkpoint"), "%s", ad_error());
    ex_ckpt_free(&c);
    snprintf(path, sizeof path, "%s/none.bin", o->dir);
    ck_assert(!ex_par_exists(path));
    ck_assert_int_eq(ex_ckpt_open_all(&c, path, "test", 3), AD_EIO);
    ck_assert_msg(strstr(ad_error(), "none.bin"), "%s", ad_error());
    ex_ckpt_free(&c);
    ex_out_close(o);
    free(o);
}
END_TEST

Suite *par_suite(void)
{
    Suite *s = suite_create("par");
    TCase *tc = tcase_create("core");
    tcase_add_unchecked_fixture(tc, tmp_top_setup, tu_tmp_top_teardown);
    tcase_add_checked_fixture(tc, tu_tmp_setup, tu_tmp_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_pool_every_item_once);
    tcase_add_test(tc, test_pool_first_failure);
    tcase_add_test(tc, test_fold_in_order);
    tcase_add_test(tc, test_forked_many);
    tcase_add_test(tc, test_ckpt_open_all);
    suite_add_tcase(s, tc);
    return s;
}
