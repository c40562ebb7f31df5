/* test_oneshot.c — the one-shot problem (experiments/oneshot_problem.h) on a
 * tiny network: 2 channels, 16×16 images, 5 support and 10 query images,
 * T = 3.  (16 is the smallest side the paper's four 2×2-pooling blocks
 * accept: 16 → 8 → 4 → 2 → 1; an 8×8 image is 1×1 before block 4.)
 *
 *   split_equals_naive  the split formulation (h = rep(x) computed once,
 *                       handed in as leaves, its gradient chained back
 *                       through the recorded rep forward) gives the naive
 *                       formulation's hypergradient (rep inside the inner
 *                       and outer losses) to 1e-10, for K = 1, 2 and T:
 *                       the proof that the trick is exact;
 *   hypergrad_matches_fd    the full-RMD hypergradient against central
 *                       differences of the outer loss along a random
 *                       direction of λ (every part: λ_rep, c, ν, γ); double
 *                       build only (see oneshot_suite);
 *   no_reg_and_eval     with ρ dropped the ν gradient is exactly 0;
 *                       evaluation gives a finite loss and an accuracy in
 *                       [0,1] in both formulations, and the same one;
 *   batch_mean          an os_batch of 3 tasks on 2 workers: its mean is
 *                       the tasks' hypergradients, each computed alone,
 *                       summed in task order over 3, bit for bit. */
#include <check.h>
#include <math.h>
#include <stdlib.h>

#include "experiments/oneshot_problem.h"
#include "testutil.h"

enum { NS = 5, NQ = 10, TINY_T = 3, SIDE = 16 };
/* Two formulations of the same hypergradient, relative: ε-units of
 * rounding through a few convolutions, batch-norms and T = 3 steps. */
enum { OS_ULPS = 1024 };

static mdl_cnn tiny_net(void)
{
    return (mdl_cnn){ .in_channels = 1, .height = SIDE, .width = SIDE, .channels = 2,
                      .n_blocks = 4, .n_classes = 5, .n_rep = 2 };
}

/* Random images in [0,1); labels c for support image c, c mod 5 for query. */
static void tiny_data(ad_rng *rng, ad_real *xs, int *ys, ad_real *xq, int *yq)
{
    for (int i = 0; i < NS * SIDE * SIDE; i++) xs[i] = (ad_real)ad_rng_uniform(rng);
    for (int i = 0; i < NQ * SIDE * SIDE; i++) xq[i] = (ad_real)ad_rng_uniform(rng);
    for (int i = 0; i < NS; i++) ys[i] = i;
    for (int i = 0; i < NQ; i++) yq[i] = i % 5;
}

typedef struct fixture {
    os_hyper hy;
    os_task naive, split;
    ad_real xs[NS * SIDE * SIDE], xq[NQ * SIDE * SIDE];
    int ys[NS], yq[NQ];
} fixture;

static void fixture_init(fixture *f, uint64_t seed)
{
    ad_rng rng;
    ad_rng_seed(&rng, seed);
    ck_assert_int_eq(os_hyper_init(&f->hy, tiny_net(), &rng, 0.5, 0.3), AD_OK);
    /* Move the batch-norm β and the biases off zero so that no gradient
     * vanishes by symmetry. */
    for (int i = 0; i < f->hy.n_list; i++)
        if (f->hy.list[i]->rank == 1)
            for (size_t k = 0; k < f->hy.list[i]->size; k++)
                f->hy.list[i]->data[k] += (ad_real)(0.1 * ad_rng_normal(&rng));
    tiny_data(&rng, f->xs, f->ys, f->xq, f->yq);
    ck_assert_int_eq(os_task_init(&f->naive, &f->hy, NS, NQ, TINY_T, false), AD_OK);
    ck_assert_int_eq(os_task_init(&f->split, &f->hy, NS, NQ, TINY_T, true), AD_OK);
    ck_assert_int_eq(os_task_load(&f->naive, f->xs, f->ys, f->xq, f->yq, true), AD_OK);
    ck_assert_int_eq(os_task_load(&f->split, f->xs, f->ys, f->xq, f->yq, true), AD_OK);
}

static void fixture_free(fixture *f)
{
    os_task_free(&f->naive);
    os_task_free(&f->split);
    os_hyper_free(&f->hy);
}

static void free_n(int n, ad_value **v)
{
    for (int i = 0; i < n; i++) ad_value_free(v[i]);
}

static double norm(const ad_value *v)
{
    double s = 0;
    for (size_t i = 0; i < v->size; i++) s += (double)v->data[i] * v->data[i];
    return sqrt(s);
}

START_TEST(split_equals_naive)
{
    fixture f;
    fixture_init(&f, 11);
    const int Ks[] = { 1, 2, TINY_T };
    for (size_t k = 0; k < sizeof Ks / sizeof *Ks; k++) {
        ad_value *gn[OS_MAX_HYPER], *gs[OS_MAX_HYPER];
        hg_report rn, rs;
        ck_assert_int_eq(os_task_hypergrad(&f.naive, Ks[k], gn, &rn), AD_OK);
        ck_assert_int_eq(os_task_hypergrad(&f.split, Ks[k], gs, &rs), AD_OK);
        tu_expect_close(rn.outer_loss, rs.outer_loss, 64);
        int n = f.hy.n_list;
        hg_compare c = hg_compare_grads(n, gs, gn);
        ck_assert_double_le(c.rel_error, TU_TOL(OS_ULPS));
        /* Tensor by tensor too, so that a small part cannot hide. */
        double rep_norm = 0;
        for (int i = 0; i < n; i++) {
            hg_compare ci = hg_compare_grads(1, &gs[i], &gn[i]);
            if (ci.abs_error > TU_TOL(OS_ULPS) * (ci.norm_exact + c.norm_exact))
                ck_abort_msg("K = %d, λ tensor %d: ‖split − naive‖ = %g, ‖naive‖ = %g", Ks[k], i,
                             ci.abs_error, ci.norm_exact);
            if (i < f.hy.n_rep) rep_norm += ci.norm_exact * ci.norm_exact;
        }
        /* The representation's gradient is there and not negligible. */
        ck_assert_double_gt(sqrt(rep_norm), 1e-4 * c.norm_exact);
        free_n(n, gn);
        free_n(n, gs);
    }
    /* The split tape holds the inner loop without the rep blocks. */
    fixture_free(&f);
}
END_TEST

/* Double build only.  In float the outer loss along this direction carries
 * rounding noise of about 4e-7 (3 ulps), so steps below 1e-5 are off by 1 %
 * or more, and larger steps meet relu and max-pool switches amplified by the
 * 5-image batch-norm: central differences at 2^-14, 2^-12 and 2^-8 gave
 * −5.77, −4.08 and −20.9 for a derivative of −3.50 (measured).  The float
 * build's one-shot hypergradient is checked against the double build's
 * instead (tests/oneshot_fvd.c, float-vs-double-*). */
#if HT_REAL_IS_DOUBLE
START_TEST(hypergrad_matches_fd)
{
    fixture f;
    fixture_init(&f, 12);
    int n = f.hy.n_list;
    ad_value *g[OS_MAX_HYPER], *dir[OS_MAX_HYPER];
    hg_report r;
    ck_assert_int_eq(os_task_hypergrad(&f.split, TINY_T, g, &r), AD_OK);
    ad_rng rng;
    ad_rng_seed(&rng, 5);
    double dg = 0;
    for (int i = 0; i < n; i++) {
        dir[i] = ad_tensor_randn(&rng, f.hy.list[i]->rank, f.hy.list[i]->shape, 1.0);
        ck_assert_ptr_nonnull(dir[i]);
        for (size_t k = 0; k < dir[i]->size; k++) dg += (double)dir[i]->data[k] * g[i]->data[k];
    }
    const double eps = 1e-6;
    double fpm[2];
    for (int s = 0; s < 2; s++) {
        double sign = s ? -1 : 1;
        for (int i = 0; i < n; i++)
            for (size_t k = 0; k < dir[i]->size; k++)
                f.hy.list[i]->data[k] += (ad_real)(sign * eps * dir[i]->data[k]);
        ad_value *tmp[OS_MAX_HYPER];
        hg_report rr;
        ck_assert_int_eq(os_task_hypergrad(&f.naive, TINY_T, tmp, &rr), AD_OK);
        fpm[s] = rr.outer_loss;
        free_n(n, tmp);
        for (int i = 0; i < n; i++)
            for (size_t k = 0; k < dir[i]->size; k++)
                f.hy.list[i]->data[k] -= (ad_real)(sign * eps * dir[i]->data[k]);
    }
    double fd = (fpm[0] - fpm[1]) / (2 * eps);
    ck_assert_msg(fabs(fd - dg) <= 1e-6 * fmax(1, fabs(dg)), "directional derivative: AD %.12g, "
                  "finite differences %.12g", dg, fd);
    free_n(n, g);
    free_n(n, dir);
    fixture_free(&f);
}
END_TEST
#endif

START_TEST(no_reg_and_eval)
{
    fixture f;
    fixture_init(&f, 13);
    f.split.no_reg = f.naive.no_reg = true;
    int n = f.hy.n_list;
    ad_value *gn[OS_MAX_HYPER], *gs[OS_MAX_HYPER];
    ck_assert_int_eq(os_task_hypergrad(&f.naive, TINY_T, gn, NULL), AD_OK);
    ck_assert_int_eq(os_task_hypergrad(&f.split, TINY_T, gs, NULL), AD_OK);
    ck_assert_double_le(hg_compare_grads(n, gs, gn).rel_error, TU_TOL(OS_ULPS));
    int nu = f.hy.n_rep + f.hy.n_task;
    for (int l = 0; l < f.hy.n_layers; l++) ck_assert_double_eq(norm(gs[nu + l]), 0);
    ck_assert_double_gt(norm(gs[n - 1]), 0); /* γ still matters */
    free_n(n, gn);
    free_n(n, gs);
    f.split.no_reg = f.naive.no_reg = false;

    /* Evaluation, also after loading without recording. */
    double an, ln, as, ls;
    ck_assert_int_eq(os_task_load(&f.split, f.xs, f.ys, f.xq, f.yq, false), AD_OK);
    ck_assert_int_eq(os_task_evaluate(&f.naive, &an, &ln), AD_OK);
    ck_assert_int_eq(os_task_evaluate(&f.split, &as, &ls), AD_OK);
    ck_assert(an >= 0 && an <= 1 && isfinite(ln));
    ck_assert_double_eq(an, as);
    tu_expect_close(ln, ls, 64);
    /* Without the recorded rep forward, a hypergradient is refused. */
    ad_value *g[OS_MAX_HYPER];
    ck_assert_int_eq(os_task_hypergrad(&f.split, 1, g, NULL), AD_EARG);
    /* γ is kept in range. */
    f.hy.step->data[0] = -1;
    ck_assert(os_hyper_clamp_step(&f.hy, 1e-3, 2));
    ck_assert_double_eq(f.hy.step->data[0], (ad_real)1e-3);
    tu_expect_close(os_hyper_rho(&f.hy, 0), 0.5, 4);
    fixture_free(&f);
}
END_TEST

START_TEST(batch_mean)
{
    enum { B = 3, K = 2 };
    fixture f;
    fixture_init(&f, 7);
    ad_rng rng;
    ad_rng_seed(&rng, 11);
    os_batch mb;
    ck_assert_int_eq(os_batch_init(&mb, &f.hy, B, 2, NS, NQ, TINY_T), AD_OK);
    ad_real *want = calloc(mb.numel, sizeof *want), *row = malloc(sizeof *row * mb.numel);
    ck_assert(want && row);
    for (int b = 0; b < B; b++) { /* worker 0 gets tasks 0 and 2 */
        tiny_data(&rng, f.xs, f.ys, f.xq, f.yq);
        ck_assert_int_eq(os_task_load(&mb.tk[b % 2], f.xs, f.ys, f.xq, f.yq, true), AD_OK);
        hg_report r;
        ck_assert_int_eq(os_batch_task(&mb, b % 2, b, K, &r), AD_OK);
        ck_assert_double_gt(r.peak_tape_bytes, 0);
        ad_value *g[OS_MAX_HYPER];
        ck_assert_int_eq(os_task_load(&f.split, f.xs, f.ys, f.xq, f.yq, true), AD_OK);
        ck_assert_int_eq(os_task_hypergrad(&f.split, K, g, NULL), AD_OK);
        os_hyper_pack(&f.hy, g, row);
        for (size_t k = 0; k < mb.numel; k++) want[k] += row[k] / B;
        free_n(f.hy.n_list, g);
    }
    ck_assert_int_eq(os_batch_mean(&mb), AD_OK);
    os_hyper_pack(&f.hy, mb.mean, row);
    for (size_t k = 0; k < mb.numel; k++) ck_assert_double_eq(row[k], want[k]);
    free(want);
    free(row);
    os_batch_free(&mb);
    os_batch_free(&mb); /* a zeroed struct */
    fixture_free(&f);
}
END_TEST

Suite *oneshot_suite(void);
Suite *oneshot_suite(void)
{
    Suite *s = suite_create("oneshot");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, split_equals_naive);
#if HT_REAL_IS_DOUBLE
    tcase_add_test(tc, hypergrad_matches_fd);
#endif
    tcase_add_test(tc, no_reg_and_eval);
    tcase_add_test(tc, batch_mean);
    suite_add_tcase(s, tc);
    return s;
}
