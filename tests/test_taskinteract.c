/* test_taskinteract.c — the task-interaction problem (taskinteract_problem.h)
 * on small synthetic data: the coupling term against loops and its closed-
 * form gradient, the hypergradient against central differences of the
 * outer loss, truncation, the inner descent, the sampler, the eigenvalue
 * helper and the default λ0.  No files are read; the whole suite takes well
 * under a second. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "experiments/taskinteract_problem.h"
#include "ops/ops.h"
#include "optim/hypergrad.h"
#include "testutil.h"

/* Tolerances for the real type the library was built with (testutil.h):
 * rounding, and central differences. */
enum { TI_ULPS = 8 };
#define TI_TIGHT TU_TOL(TI_ULPS)
#define TI_FD TU_FD_TOL

/* A tiny dataset: V classes, P random features + bias, n training and m
 * validation rows, labels in turn 0..V−1, each class's mean shifted so the
 * problem is learnable. */
static void synthetic(ti_data *dt, int V, int P, int n, int m, uint64_t seed)
{
    memset(dt, 0, sizeof *dt);
    ad_rng rng;
    ad_rng_seed(&rng, seed);
    dt->V = V;
    dt->d = P + 1;
    dt->n_train = n;
    dt->n_val = m;
    ad_value **xs[2] = { &dt->x_train, &dt->x_val }, **ys[2] = { &dt->y_train, &dt->y_val };
    const int cnt[2] = { n, m };
    for (int s = 0; s < 2; s++) {
        *xs[s] = ad_tensor_new(2, (int[]){ cnt[s], P + 1 });
        *ys[s] = ad_tensor_new(1, &cnt[s]);
        ck_assert_ptr_nonnull(*xs[s]);
        ck_assert_ptr_nonnull(*ys[s]);
        for (int i = 0; i < cnt[s]; i++) {
            int c = i % V;
            (*ys[s])->data[i] = (ad_real)c;
            for (int j = 0; j < P; j++)
                (*xs[s])->data[i * (P + 1) + j] =
                    (ad_real)(0.5 * ad_rng_normal(&rng) + (j % V == c ? 0.8 : 0));
            (*xs[s])->data[i * (P + 1) + P] = 1;
        }
    }
}

/* ---- the coupling term --------------------------------------------------- */

START_TEST(coupling_matches_loops)
{
    enum { V = 4, D = 5 };
    ad_rng rng;
    ad_rng_seed(&rng, 7);
    ad_value *W = ad_tensor_randn(&rng, 2, (int[]){ V, D }, 1.0);
    ad_value *C = ad_tensor_rand(&rng, 2, (int[]){ V, V }, 0.0, 1.0);
    ck_assert_ptr_nonnull(W);
    ck_assert_ptr_nonnull(C);
    for (int i = 0; i < V; i++) /* symmetric, as C = A + Aᵀ is */
        for (int j = 0; j < i; j++) C->data[i * V + j] = C->data[j * V + i];
    ad_set_requires_grad(W, true);
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *pen = ti_coupling(tp, W, C), *gW;
    ck_assert_ptr_nonnull(pen);
    double ref = 0, scale = 0;
    for (int i = 0; i < V; i++)
        for (int j = 0; j < V; j++) {
            double d2 = 0;
            for (int k = 0; k < D; k++) {
                double e = W->data[i * D + k] - W->data[j * D + k];
                d2 += e * e;
            }
            ref += C->data[i * V + j] * d2;
            scale += fabs(C->data[i * V + j] * d2);
        }
    ck_assert_double_le(fabs(pen->data[0] - ref), 10 * TI_TIGHT * scale);
    /* ∂/∂w_i = 4 Σ_j C_ij (w_i − w_j) for a symmetric C. */
    ck_assert_int_eq(ad_grad(tp, pen, 1, &W, &gW, false), AD_OK);
    for (int i = 0; i < V; i++)
        for (int k = 0; k < D; k++) {
            double g = 0;
            for (int j = 0; j < V; j++)
                g += 4 * C->data[i * V + j] * (W->data[i * D + k] - W->data[j * D + k]);
            ck_assert_double_le(fabs(gW->data[i * D + k] - g), 10 * TI_TIGHT * (1 + fabs(g)));
        }
    ad_tape_free(tp);
    ad_value_free(W);
    ad_value_free(C);
}
END_TEST

/* ---- the hypergradient ---------------------------------------------------- */

/* f(ŵ(λ)) at the problem's current λ. */
static double outer_at(ti_problem *p)
{
    ad_value *w = NULL;
    double f = NAN;
    ck_assert_int_eq(hg_inner_solve(&p->problem, &w, NULL), AD_OK);
    ck_assert_int_eq(ex_evaluate_linear(w, true, p->x_val, p->y_val, &f, NULL), AD_OK);
    ad_value_free(w);
    return f;
}

START_TEST(hypergradient_matches_finite_differences)
{
    enum { V = 3, P = 4, T = 15 };
    ti_data dt;
    synthetic(&dt, V, P, 12, 9, 3);
    ti_problem p;
    /* Larger ties than the default, so that dB is not tiny. */
    ck_assert_int_eq(ti_problem_init(&p, &dt, T, 0.1, -1.0, 0.05), AD_OK);
    /* Off-diagonal entries of B differ, so that B and Bᵀ are told apart. */
    for (int i = 0; i < V * V; i++) p.lam[0]->data[i] += (ad_real)(0.1 * i);
    ad_value *h[2], *hk[2];
    hg_report r;
    ck_assert_int_eq(hg_full_rmd(&p.problem, h, &r), AD_OK);
    ck_assert_double_le(fabs(r.outer_loss - outer_at(&p)), 10 * TI_TIGHT);
    ck_assert_double_eq_tol(p.val_loss, r.outer_loss, 10 * TI_TIGHT);
    /* The diagonal of B multiplies ‖w_i − w_i‖² = n_i + n_i − 2 G_ii: zero up to
     * rounding. */
    for (int i = 0; i < V; i++) ck_assert_double_le(fabs(h[0]->data[i * V + i]), 1e-6 * TI_FD);
    /* Central differences on every entry of B and on ν. */
    const double eps = fmax(1e-5, TU_FD_STEP);
    double worst = 0, norm = 0;
    for (int t = 0; t < 2; t++)
        for (size_t k = 0; k < p.lam[t]->size; k++) {
            ad_real keep = p.lam[t]->data[k];
            p.lam[t]->data[k] = (ad_real)(keep + eps);
            double fp = outer_at(&p);
            p.lam[t]->data[k] = (ad_real)(keep - eps);
            double fm = outer_at(&p);
            p.lam[t]->data[k] = keep;
            double fd = (fp - fm) / ((double)(ad_real)(keep + eps) - (double)(ad_real)(keep - eps));
            worst = fmax(worst, fabs(fd - h[t]->data[k]));
            norm = fmax(norm, fabs(h[t]->data[k]));
        }
    ck_assert_double_gt(norm, 1e-4);
    ck_assert_msg(worst <= TI_FD * norm, "finite differences differ by %g (largest entry %g)",
                  worst, norm);
    /* K ≥ T is full back-propagation; K < T differs but still points downhill. */
    ck_assert_int_eq(hg_krmd(&p.problem, T, hk, NULL), AD_OK);
    hg_compare c = hg_compare_grads(2, hk, h);
    ck_assert_double_le(c.rel_error, 10 * TI_TIGHT);
    ad_value_free(hk[0]);
    ad_value_free(hk[1]);
    ck_assert_int_eq(hg_krmd(&p.problem, 1, hk, NULL), AD_OK);
    c = hg_compare_grads(2, hk, h);
    ck_assert_double_gt(c.rel_error, 1e-6);
    ck_assert_double_gt(c.cosine, 0);
    ad_value_free(hk[0]);
    ad_value_free(hk[1]);
    ad_value_free(h[0]);
    ad_value_free(h[1]);
    ti_problem_free(&p);
    ti_data_free(&dt);
}
END_TEST

START_TEST(inner_descent_and_current_values)
{
    enum { V = 4, P = 6, T = 40 };
    ti_data dt;
    synthetic(&dt, V, P, 16, 8, 11);
    ti_problem p;
    double b0 = ti_default_b0(V);
    ck_assert_int_eq(ti_problem_init(&p, &dt, T, 0.1, b0, 0.01), AD_OK);
    double g[T + 1], C[V * V];
    ck_assert_int_eq(hg_inner_solve(&p.problem, NULL, g), AD_OK);
    ck_assert_double_eq_tol(g[0], log((double)V), 10 * TI_TIGHT); /* W = 0: uniform */
    for (int t = 1; t <= T; t++) ck_assert_double_le(g[t], g[t - 1] + TI_TIGHT);
    ck_assert_double_lt(g[T], 0.9 * g[0]);
    /* λ0: every tie 0.125/V, ρ = ρ0. */
    ti_current_C(&p, C);
    for (int i = 0; i < V; i++)
        for (int j = 0; j < V; j++) ck_assert_double_eq_tol(C[i * V + j], 0.125 / V, 1e-6);
    ck_assert_double_eq_tol(ti_current_rho(&p), 0.01, 1e-6);
    ck_assert_double_eq_tol(ti_default_b0(10), -5.07, 0.01);
    ck_assert_double_eq_tol(ti_default_b0(100), -7.38, 0.01);
    /* Bad arguments fail with a message, not a crash. */
    ti_problem q;
    ck_assert_int_eq(ti_problem_init(&q, &dt, T, -1, b0, 0.01), AD_EARG);
    ti_problem_free(&q);
    ck_assert_int_eq(ti_problem_init(&q, NULL, T, 0.1, b0, 0.01), AD_EARG);
    ti_problem_free(&q);
    /* ρ0 past ≈ 709.78: ν0 = log(e^ρ0 − 1) is +inf, refused by name (it made every inner
     * loss infinite); just below, ν0 is finite and the problem is made. */
    ck_assert_int_eq(ti_problem_init(&q, &dt, T, 0.1, b0, 710), AD_EARG);
    ck_assert_ptr_nonnull(strstr(ad_error(), "rho0 = 710"));
    ti_problem_free(&q);
    ck_assert_int_eq(ti_problem_init(&q, &dt, T, 0.1, b0, 709), AD_OK);
    ck_assert(isfinite(ti_current_rho(&q)));
    ti_problem_free(&q);
    ti_problem_free(&p);
    ti_data_free(&dt);
}
END_TEST

/* ---- helpers -------------------------------------------------------------- */

START_TEST(balanced_sampler)
{
    enum { N = 200, CL = 5 };
    unsigned char labels[N];
    for (int i = 0; i < N; i++) labels[i] = (unsigned char)((i * 7) % CL);
    int it[CL * 3], iv[CL * 2], seen[N] = { 0 };
    ad_rng rng;
    ad_rng_seed(&rng, 5);
    ck_assert_int_eq(ex_sample_balanced(&rng, labels, N, CL, 3 * CL, 2 * CL, it, iv), AD_OK);
    int per_t[CL] = { 0 }, per_v[CL] = { 0 };
    for (int i = 0; i < CL * 3; i++) {
        ck_assert_int_eq(seen[it[i]]++, 0);
        per_t[labels[it[i]]]++;
    }
    for (int i = 0; i < CL * 2; i++) {
        ck_assert_int_eq(seen[iv[i]]++, 0);
        per_v[labels[iv[i]]]++;
    }
    for (int c = 0; c < CL; c++) {
        ck_assert_int_eq(per_t[c], 3);
        ck_assert_int_eq(per_v[c], 2);
    }
    /* Same seed, same draw; too few examples of a class: AD_EARG. */
    int it2[CL * 3], iv2[CL * 2];
    ad_rng_seed(&rng, 5);
    ck_assert_int_eq(ex_sample_balanced(&rng, labels, N, CL, 3 * CL, 2 * CL, it2, iv2), AD_OK);
    ck_assert_int_eq(memcmp(it, it2, sizeof it), 0);
    ck_assert_int_eq(ex_sample_balanced(&rng, labels, 12, CL, 2 * CL, 1 * CL, it2, iv2), AD_EARG);
}
END_TEST

START_TEST(top_eigenvalue)
{
    /* XᵀX/n for these rows is [[4.5, 0], [0, 0.5]]. */
    const double x[] = { 3, 0, 0, 1 };
    double lmax = -1;
    ck_assert_int_eq(ti_top_eigenvalue(x, 2, 2, &lmax), AD_OK);
    ck_assert_double_eq_tol(lmax, 4.5, 1e-9);
    /* Rank one: every row a multiple of (1, 2, 2); λ = Σ aᵢ² ‖v‖² / n. */
    const double y[] = { 1, 2, 2, 2, 4, 4, -1, -2, -2 };
    ck_assert_int_eq(ti_top_eigenvalue(y, 3, 3, &lmax), AD_OK);
    ck_assert_double_eq_tol(lmax, (1 + 4 + 1) * 9.0 / 3, 1e-9);
}
END_TEST

/* The n × n Gram matrix cannot be allocated: AD_ENOMEM with a message, not a silent 0 (which
 * made the feature scale 1, and γ = 0.1 diverge on CIFAR).  n = 2^17 asks for 128 GiB, with
 * only 64 MiB of address space to spare (RLIMIT_AS); x itself is never read then.  Not under
 * ASan (not registered there), which needs its address space and aborts on a failed
 * allocation. */
#if !defined(__SANITIZE_ADDRESS__)
START_TEST(top_eigenvalue_out_of_memory)
{
    enum { N = 1 << 17 };
    double *x = calloc(N, sizeof *x), lmax = -1;
    ck_assert_ptr_nonnull(x);
    struct rlimit old, lim;
    long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fscanf(f, "%ld", &pages), 1);
    fclose(f);
    ck_assert_int_eq(getrlimit(RLIMIT_AS, &old), 0);
    lim = old;
    lim.rlim_cur = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + ((rlim_t)64 << 20);
    if (old.rlim_cur != RLIM_INFINITY && old.rlim_cur < lim.rlim_cur) lim.rlim_cur = old.rlim_cur;
    ck_assert_int_eq(setrlimit(RLIMIT_AS, &lim), 0);
    int rc = ti_top_eigenvalue(x, N, 1, &lmax);
    ck_assert_int_eq(setrlimit(RLIMIT_AS, &old), 0);
    free(x);
    ck_assert_int_eq(rc, AD_ENOMEM);
    ck_assert_msg(strstr(ad_error(), "131072 x 131072") != NULL, "message: %s", ad_error());
    ck_assert_double_eq(lmax, 0);
}
END_TEST
#endif

Suite *taskinteract_suite(void);
Suite *taskinteract_suite(void)
{
    Suite *s = suite_create("taskinteract");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, coupling_matches_loops);
    tcase_add_test(tc, hypergradient_matches_finite_differences);
    tcase_add_test(tc, inner_descent_and_current_values);
    tcase_add_test(tc, balanced_sampler);
    tcase_add_test(tc, top_eigenvalue);
#if !defined(__SANITIZE_ADDRESS__)
    tcase_add_test(tc, top_eigenvalue_out_of_memory);
#endif
    suite_add_tcase(s, tc);
    return s;
}
