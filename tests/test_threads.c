/* test_threads.c — the thread contract of ad/ad.h, under load.
 *
 * Several threads, each with tapes of its own, differentiate with respect to
 * one shared caller-owned λ (and read one shared constant G) at the same
 * time, over and over: ad_grad through an unrolled inner loop, a Hessian-
 * vector product, hg_krmd, hg_checkpoint, hg_fmd, hg_implicit_cg and
 * hg_neumann, and hg_krmd with the inner step size γ as a second shared
 * hyperparameter.  Every result must be
 * bit for bit the one computed on one thread before the threads started.
 *
 * When a sweep kept its scratch in the values it visits, two sweeps through
 * the shared λ overwrote each other's: results were silently wrong (issue 9
 * saw 2333 of 4000), or a sweep failed with a misleading message.  Under
 * ThreadSanitizer (scripts/test.sh, build/tsan) this suite also shows that
 * nothing else is written where another thread reads.
 *
 * HT_THREAD_ROUNDS (environment) sets the rounds per thread; the default runs
 * several thousand jobs in all. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "experiments/toy_problem.h"
#include "ops/ops.h"
#include "optim/hypergrad.h"
#include "testutil.h"

enum {
    N_THREADS = 4,      /* more threads than the machine's 2 cores: more interleavings */
    DEFAULT_ROUNDS = 1000, /* per thread: 4000 jobs in all */
    TOY_T = 100,
    TOY_K = 10,
    MAX_OUT = 4         /* numbers a job returns */
};

/* What every thread shares, read-only under the contract: the toy problem
 * (λ, G and the callbacks' context) and a second problem that also learns
 * the inner step size γ. */
typedef struct shared {
    toy toy;
    ad_value *gamma;    /* γ, a rank-0 caller-owned leaf */
    ad_value *hyper2[2];
    hg_problem with_gamma;
} shared;

static shared sh;

/* A job computes up to MAX_OUT numbers from the shared problem. */
typedef int (*job_fn)(ad_real *out);

/* The README's example with the shared λ and G, and the outer loss f̃ of the
 * shared toy (λ also appears in it directly): T steps of gradient descent on a
 * tape of horizon K, then f̃ and h_{T−K} = dλ f̃ by ad_grad. */
static ad_value *unroll(ad_tape *tp)
{
    ad_value *lam = sh.toy.lam, *G = sh.toy.G;
    ad_value *w = ad_leaf(tp, ad_const(tp, 1, (int[]){ 2 }, (ad_real[]){ 2, 2 })); /* w0 */
    for (int t = 1; t <= TOY_T && w; t++) {
        if (ad_tape_step(tp) != AD_OK) return NULL;
        ad_value *d = ad_sub(tp, w, lam), *gw;
        ad_value *g = ad_scale(tp, ad_dot(tp, d, ad_mul(tp, G, d)), 0.5);
        if (!g || ad_grad(tp, g, 1, &w, &gw, true) != AD_OK) return NULL;
        w = ad_sub(tp, w, ad_scale(tp, gw, 0.1));
    }
    /* f̃ = ‖ŵ‖² + 10 ‖sin ŵ‖² + 5 ‖λ − (1, 0)‖² */
    if (ad_tape_step(tp) != AD_OK) return NULL;
    ad_value *target = ad_const(tp, 1, (int[]){ 2 }, (ad_real[]){ 1, 0 });
    ad_value *f = ad_add(tp, ad_sqnorm(tp, w), ad_scale(tp, ad_sqnorm(tp, ad_sin(tp, w)), 10));
    return ad_add(tp, f, ad_scale(tp, ad_sqnorm(tp, ad_sub(tp, lam, target)), 5));
}

static int job_unroll_grad(ad_real *out)
{
    ad_tape *tp = ad_tape_new(TOY_K);
    ad_value *f = unroll(tp), *h = NULL;
    int rc = f ? ad_grad(tp, f, 1, &sh.toy.lam, &h, false) : AD_EARG;
    if (rc == AD_OK) memcpy(out, h->data, 2 * sizeof *out);
    ad_tape_free(tp);
    return rc;
}

/* Double backward through the same unroll: ∇²λ f · v, v = (1, −2), kept on
 * the tape (create_graph) so the recorded sweep also targets the shared λ. */
static int job_unroll_hvp(ad_real *out)
{
    ad_tape *tp = ad_tape_new(TOY_K);
    ad_value *f = unroll(tp), *hv = NULL;
    ad_value *v = ad_const(tp, 1, (int[]){ 2 }, (ad_real[]){ 1, -2 });
    int rc = f ? ad_hvp(tp, f, 1, &sh.toy.lam, &v, &hv, true) : AD_EARG;
    if (rc == AD_OK) memcpy(out, hv->data, 2 * sizeof *out);
    ad_tape_free(tp);
    return rc;
}

/* An estimator's dλ, copied out and freed. */
static int copy_hyper(int rc, int n, ad_value **d, ad_real *out)
{
    for (int i = 0, k = 0; i < n && rc == AD_OK; i++)
        for (size_t j = 0; j < d[i]->size; j++) out[k++] = d[i]->data[j];
    for (int i = 0; i < n && rc == AD_OK; i++) ad_value_free(d[i]);
    return rc;
}

static int job_krmd(ad_real *out)
{
    ad_value *d[1];
    return copy_hyper(hg_krmd(&sh.toy.problem, TOY_K, d, NULL), 1, d, out);
}

static int job_checkpoint(ad_real *out)
{
    ad_value *d[1];
    return copy_hyper(hg_checkpoint(&sh.toy.problem, TOY_K, d, NULL), 1, d, out);
}

static int job_fmd(ad_real *out)
{
    ad_value *d[1];
    return copy_hyper(hg_fmd(&sh.toy.problem, d, NULL), 1, d, out);
}

static int job_implicit_cg(ad_real *out)
{
    ad_value *d[1];
    return copy_hyper(hg_implicit_cg(&sh.toy.problem, 10, 1e-14, d, NULL), 1, d, out);
}

static int job_neumann(ad_real *out)
{
    ad_value *d[1];
    return copy_hyper(hg_neumann(&sh.toy.problem, TOY_K, d, NULL), 1, d, out);
}

static int job_krmd_gamma(ad_real *out)
{
    ad_value *d[2];
    return copy_hyper(hg_krmd(&sh.with_gamma, TOY_K, d, NULL), 2, d, out);
}

static const struct {
    const char *name;
    job_fn run;
    int n_out;
} jobs[] = {
    { "ad_grad through the unroll", job_unroll_grad, 2 },
    { "ad_hvp through the unroll", job_unroll_hvp, 2 },
    { "hg_krmd", job_krmd, 2 },
    { "hg_checkpoint", job_checkpoint, 2 },
    { "hg_fmd", job_fmd, 2 },
    { "hg_implicit_cg", job_implicit_cg, 2 },
    { "hg_neumann", job_neumann, 2 },
    { "hg_krmd with a shared step size", job_krmd_gamma, 3 },
};
enum { N_JOBS = sizeof jobs / sizeof *jobs };

static ad_real expected[N_JOBS][MAX_OUT];

typedef struct worker {
    int index, rounds;
    long wrong[N_JOBS], failed[N_JOBS];
    char first_error[256];
} worker;

/* Round r runs job (r + index) mod N_JOBS, so different jobs overlap. */
static void *work(void *arg)
{
    worker *wk = arg;
    for (int r = 0; r < wk->rounds; r++) {
        int j = (r + wk->index) % N_JOBS;
        ad_real got[MAX_OUT] = { 0 };
        if (jobs[j].run(got) != AD_OK) {
            if (!wk->first_error[0])
                snprintf(wk->first_error, sizeof wk->first_error, "%s: %s", jobs[j].name,
                         ad_error());
            wk->failed[j]++;
        } else if (memcmp(got, expected[j], (size_t)jobs[j].n_out * sizeof *got) != 0) {
            wk->wrong[j]++;
        }
    }
    return NULL;
}

static void shared_setup(void)
{
    ck_assert_int_eq(toy_init(&sh.toy, 1, 1, TOY_T, 0.1, true), AD_OK);
    ck_assert_ptr_nonnull(sh.gamma = ad_param_scalar(0.1));
    sh.hyper2[0] = sh.toy.lam;
    sh.hyper2[1] = sh.gamma;
    sh.with_gamma = sh.toy.problem;
    sh.with_gamma.n_hyper = 2;
    sh.with_gamma.hyper = sh.hyper2;
    sh.with_gamma.opt.step_hyper = sh.gamma;
    ck_assert_int_eq(hg_problem_check(&sh.with_gamma), AD_OK);
}

static void shared_teardown(void)
{
    toy_free(&sh.toy);
    ad_value_free(sh.gamma);
}

static int rounds_per_thread(void)
{
    const char *s = getenv("HT_THREAD_ROUNDS");
    int n = s ? atoi(s) : DEFAULT_ROUNDS;
    return n > 0 ? n : DEFAULT_ROUNDS;
}

START_TEST(shared_lambda_bit_identical)
{
    shared_setup();
    for (int j = 0; j < N_JOBS; j++)
        ck_assert_msg(jobs[j].run(expected[j]) == AD_OK, "%s alone: %s", jobs[j].name, ad_error());
    /* The references are the right numbers, not just repeatable ones: K-RMD,
     * checkpointed K-RMD and the K-term Neumann series give the truncated
     * unroll's h_{T−K} to rounding, FMD the closed form's exact dλ f̃. */
    double w_hat[2], h[2];
    toy_closed_form(&sh.toy, TOY_T, w_hat, h);
    for (int i = 0; i < 2; i++) { /* 64 ε, as tests/test_hypergrad.c allows on the toy */
        tu_expect_close(expected[2][i], expected[0][i], 64);
        tu_expect_close(expected[3][i], expected[0][i], 64);
        tu_expect_close(expected[4][i], h[i], 64);
        tu_expect_close(expected[6][i], expected[0][i], 64);
    }
    worker wk[N_THREADS] = { 0 };
    pthread_t th[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        wk[i].index = i;
        wk[i].rounds = rounds_per_thread();
        ck_assert_int_eq(pthread_create(&th[i], NULL, work, &wk[i]), 0);
    }
    for (int i = 0; i < N_THREADS; i++) ck_assert_int_eq(pthread_join(th[i], NULL), 0);
    long total = (long)N_THREADS * wk[0].rounds, bad = 0;
    char report[1024] = "";
    for (int j = 0; j < N_JOBS; j++) {
        long w = 0, f = 0;
        for (int i = 0; i < N_THREADS; i++) w += wk[i].wrong[j], f += wk[i].failed[j];
        bad += w + f;
        if (w + f > 0) {
            size_t n = strlen(report);
            snprintf(report + n, sizeof report - n, " [%s: %ld wrong, %ld failed]",
                     jobs[j].name, w, f);
        }
    }
    const char *err = "";
    for (int i = 0; i < N_THREADS && !err[0]; i++) err = wk[i].first_error;
    ck_assert_msg(bad == 0, "%ld of %ld results on %d threads differ from the one-thread "
                  "result:%s%s%s", bad, total, N_THREADS, report, err[0] ? "; first error: " : "",
                  err);
    /* Nothing was written into the shared values. */
    ck_assert_ptr_null(sh.toy.lam->grad);
    ck_assert(sh.toy.lam->requires_grad && sh.gamma->requires_grad && !sh.toy.G->requires_grad);
    ck_assert(sh.toy.lam->data[0] == 1 && sh.toy.lam->data[1] == 1);
    ck_assert(sh.gamma->data[0] == (ad_real)0.1);
    shared_teardown();
}
END_TEST

Suite *threads_suite(void);
Suite *threads_suite(void)
{
    Suite *s = suite_create("threads");
    TCase *tc = tcase_create("shared");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, shared_lambda_bit_identical);
    suite_add_tcase(s, tc);
    return s;
}
