/* test_hyperclean.c — the data-hypercleaning problem (experiments/
 * hyperclean_problem.h): its hypergradient against checkpointed RMD and
 * against central differences of the outer loss, on a tiny synthetic set
 * (40 training examples, 6 features and a bias, 3 classes, T = 12); the
 * metric helpers on hand-made inputs; the sampling and the corruption; and
 * the loader on a real 100 + 100 subset of MNIST (Fashion-MNIST when MNIST
 * is absent).  All of it runs in well under a second. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "experiments/data/mnist.h"
#include "experiments/classify.h"
#include "experiments/hyperclean_problem.h"
#include "optim/hypergrad.h"
#include "testutil.h"

Suite *hyperclean_suite(void);

/* ---- a tiny problem ------------------------------------------------------ */

enum { TN = 40, TM = 30, TD = 7, TC = 3, TT = 12 };

typedef struct tiny {
    ad_value *x, *y, *xv, *yv;
    hc_problem hc;
} tiny;

/* Features in [0,1] with a last constant 1; labels from a random linear rule,
 * a quarter of the training ones flipped; λ spread over [−2, 2]. */
static void tiny_init(tiny *t)
{
    ad_rng rng;
    ad_rng_seed(&rng, 42);
    ad_value *truth = ad_tensor_randn(&rng, 2, (int[]){ TD, TC }, 2.0);
    ad_value *sets[2][2];
    const int sizes[2] = { TN, TM };
    for (int s = 0; s < 2; s++) {
        int n = sizes[s];
        ad_value *x = ad_tensor_rand(&rng, 2, (int[]){ n, TD }, 0, 1);
        ad_value *y = ad_tensor_new(1, &n);
        ck_assert_ptr_nonnull(x);
        ck_assert_ptr_nonnull(y);
        for (int i = 0; i < n; i++) {
            x->data[i * TD + TD - 1] = 1;
            int best = 0;
            double score[TC];
            for (int c = 0; c < TC; c++) {
                score[c] = 0;
                for (int j = 0; j < TD; j++)
                    score[c] += x->data[i * TD + j] * truth->data[j * TC + c];
                if (score[c] > score[best]) best = c;
            }
            y->data[i] = (ad_real)(s == 0 && i % 4 == 0 ? (best + 1) % TC : best);
        }
        sets[s][0] = x;
        sets[s][1] = y;
    }
    ad_value_free(truth);
    t->x = sets[0][0];
    t->y = sets[0][1];
    t->xv = sets[1][0];
    t->yv = sets[1][1];
    double gamma = hc_gamma_auto(t->x, TC, HC_DEFAULT_REG, NULL);
    ck_assert(gamma > 0 && isfinite(gamma));
    ck_assert_int_eq(hc_problem_init(&t->hc, t->x, t->y, t->xv, t->yv, TC, TT, gamma, 0.01),
                     AD_OK);
    for (int i = 0; i < TN; i++) t->hc.lam->data[i] = (ad_real)(4 * ad_rng_uniform(&rng) - 2);
}

static void tiny_free(tiny *t)
{
    hc_problem_free(&t->hc);
    ad_value_free(t->x);
    ad_value_free(t->y);
    ad_value_free(t->xv);
    ad_value_free(t->yv);
}

/* f(λ): train from scratch, then the validation loss. */
static double outer_at(tiny *t)
{
    ad_value *w = NULL;
    double f = NAN;
    ck_assert_int_eq(hg_inner_solve(&t->hc.problem, &w, NULL), AD_OK);
    ck_assert_int_eq(ex_evaluate_linear(w, false, t->xv, t->yv, &f, NULL), AD_OK);
    ad_value_free(w);
    return f;
}

START_TEST(full_rmd_matches_checkpoint_and_differences)
{
    tiny t;
    tiny_init(&t);
    ad_value *h = NULL, *c = NULL;
    hg_report r;
    ck_assert_int_eq(hg_krmd(&t.hc.problem, TT, &h, &r), AD_OK);
    ck_assert_int_eq(hg_checkpoint(&t.hc.problem, TT, &c, NULL), AD_OK);
    hg_compare cm = hg_compare_grads(1, &h, &c);
    ck_assert_msg(cm.rel_error <= TU_TOL(64), "krmd(T) vs checkpoint: rel error %g", cm.rel_error);
    ck_assert_double_gt(cm.norm_exact, 1e-6); /* not trivially zero */
    /* The outer callback left ŵ and f behind; f agrees with a fresh training. */
    tu_expect_close(r.outer_loss, t.hc.val_loss, 64);
    tu_expect_close(r.outer_loss, outer_at(&t), 64);
    /* Central differences for a few entries, among them a flipped example. */
    const int idx[] = { 0, 3, 17, 38 };
    for (size_t k = 0; k < sizeof idx / sizeof *idx; k++) {
        int i = idx[k];
        double l0 = t.hc.lam->data[i], eps = fmax(1e-5, TU_FD_STEP);
        t.hc.lam->data[i] = (ad_real)(l0 + eps);
        double fp = outer_at(&t);
        t.hc.lam->data[i] = (ad_real)(l0 - eps);
        double fm = outer_at(&t);
        t.hc.lam->data[i] = (ad_real)l0;
        double fd = (fp - fm) / ((double)(ad_real)(l0 + eps) - (double)(ad_real)(l0 - eps));
        double an = h->data[i];
        ck_assert_msg(fabs(fd - an) <= TU_FD_TOL * (cm.norm_exact + fabs(an)),
                      "dλ_%d f: krmd %.12g, central difference %.12g", i, an, fd);
    }
    ad_value_free(h);
    ad_value_free(c);
    /* Truncated: K-RMD and truncated checkpointing give the same numbers,
     * and a short horizon keeps a much smaller tape. */
    hg_report r1, rT;
    ck_assert_int_eq(hg_krmd(&t.hc.problem, 3, &h, &r1), AD_OK);
    ck_assert_int_eq(hg_checkpoint(&t.hc.problem, 3, &c, NULL), AD_OK);
    cm = hg_compare_grads(1, &h, &c);
    ck_assert_msg(cm.rel_error <= TU_TOL(64), "krmd(3) vs checkpoint(3): rel error %g", cm.rel_error);
    ad_value_free(h);
    ad_value_free(c);
    ck_assert_int_eq(hg_krmd(&t.hc.problem, 1, &h, &r1), AD_OK);
    ad_value_free(h);
    ck_assert_int_eq(hg_krmd(&t.hc.problem, TT, &h, &rT), AD_OK);
    ad_value_free(h);
    ck_assert_uint_lt(3 * r1.peak_tape_bytes, rT.peak_tape_bytes);
    tiny_free(&t);
}
END_TEST

START_TEST(inner_loss_decreases)
{
    tiny t;
    tiny_init(&t);
    double g[TT + 1];
    ck_assert_int_eq(hg_inner_solve(&t.hc.problem, NULL, g), AD_OK);
    for (int s = 1; s <= TT; s++)
        ck_assert_msg(g[s] < g[s - 1], "g rose at step %d: %g -> %g", s, g[s - 1], g[s]);
    /* g(W_0 = 0) = mean σ(λ) · log C. */
    double expect = 0;
    for (int i = 0; i < TN; i++) expect += log(TC) / (1 + exp(-t.hc.lam->data[i])) / TN;
    tu_expect_close(g[0], expect, 16);
    tiny_free(&t);
}
END_TEST

START_TEST(problem_errors)
{
    hc_problem hc;
    ad_value *x = ad_tensor_new(2, (int[]){ 4, 3 }), *y = ad_tensor_new(1, (int[]){ 4 });
    ad_value *y5 = ad_tensor_new(1, (int[]){ 5 });
    ck_assert_int_eq(hc_problem_init(&hc, x, y5, x, y, 2, 5, 0.1, 0), AD_ESHAPE);
    ck_assert_ptr_nonnull(strstr(ad_error(), "y_train"));
    hc_problem_free(&hc);
    ck_assert_int_eq(hc_problem_init(&hc, x, y, x, y, 2, 5, -1, 0), AD_EARG);
    hc_problem_free(&hc);
    ck_assert_int_eq(hc_problem_init(&hc, x, y, x, y, 2, 0, 0.1, 0), AD_EARG);
    hc_problem_free(&hc);
    ad_value_free(x);
    ad_value_free(y);
    ad_value_free(y5);
}
END_TEST

/* ---- metrics on hand-made inputs ---------------------------------------- */

START_TEST(f1_by_hand)
{
    /* 8 examples, corrupted: 1 1 1 0 0 0 0 1. */
    const unsigned char bad[8] = { 1, 1, 1, 0, 0, 0, 0, 1 };
    const ad_real lam[8] = { -5, -3.5, -2, -4, 0, 1, -0.5, -3 };
    /* λ < −3 flags 0, 1, 3: tp 2 (0, 1), fp 1 (3), fn 2 (2, 7). */
    hc_f1 r = hc_flag_f1(lam, bad, 8, -3);
    ck_assert_int_eq(r.tp, 2);
    ck_assert_int_eq(r.fp, 1);
    ck_assert_int_eq(r.fn, 2);
    ck_assert_double_eq_tol(r.precision, 2.0 / 3, 1e-15);
    ck_assert_double_eq_tol(r.recall, 0.5, 1e-15);
    ck_assert_double_eq_tol(r.f1, 2 * 2.0 / (2 * 2 + 1 + 2), 1e-15);
    /* λ < −1 flags 0, 1, 2, 3, 7: tp 4, fp 1, fn 0. */
    r = hc_flag_f1(lam, bad, 8, -1);
    ck_assert_int_eq(r.tp, 4);
    ck_assert_int_eq(r.fp, 1);
    ck_assert_int_eq(r.fn, 0);
    ck_assert_double_eq_tol(r.f1, 8.0 / 9, 1e-15);
    /* Nothing flagged: precision, recall and F1 are 0, not NaN. */
    r = hc_flag_f1(lam, bad, 8, -10);
    ck_assert_int_eq(r.tp + r.fp, 0);
    ck_assert_double_eq(r.f1, 0);
    ck_assert_double_eq(r.precision, 0);
}
END_TEST

START_TEST(accuracy_and_evaluate_by_hand)
{
    /* 4 rows of 3 logits; row 2 ties between classes 0 and 2 (the first wins). */
    const ad_real logits[12] = { 1, 2, 0, 5, -1, 4, 3, 0, 3, 0, 0, 1 };
    const ad_real y[4] = { 1, 0, 2, 2 };
    ck_assert_double_eq_tol(ex_accuracy(logits, y, 4, 3), 0.75, 1e-15);
    /* ex_evaluate_linear: Wᵀ = I (x are the logits), loss by hand. */
    ad_value *x = ad_tensor_from(2, (int[]){ 4, 3 }, logits);
    ad_value *yy = ad_tensor_from(1, (int[]){ 4 }, y);
    ad_value *w = ad_tensor_from(2, (int[]){ 3, 3 }, (ad_real[]){ 1, 0, 0, 0, 1, 0, 0, 0, 1 });
    double loss, acc, expect = 0;
    ck_assert_int_eq(ex_evaluate_linear(w, false, x, yy, &loss, &acc), AD_OK);
    for (int i = 0; i < 4; i++) {
        double s = 0;
        for (int c = 0; c < 3; c++) s += exp(logits[i * 3 + c]);
        expect += (log(s) - logits[i * 3 + (int)y[i]]) / 4;
    }
    tu_expect_close(loss, expect, 16);
    ck_assert_double_eq_tol(acc, 0.75, 1e-15);
    ck_assert_int_eq(ex_evaluate_linear(x, false, x, yy, NULL, NULL), AD_ESHAPE); /* [4,3]: d ≠ 3 */
    /* by_class: W [C,d] is read as x·Wᵀ, so a permutation P by class is Pᵀ
     * the other way (the same numbers), and differs from P read as Wᵀ. */
    const ad_real p[9] = { 0, 1, 0, 0, 0, 1, 1, 0, 0 }, pt[9] = { 0, 0, 1, 1, 0, 0, 0, 1, 0 };
    ad_value *wp = ad_tensor_from(2, (int[]){ 3, 3 }, p);
    ad_value *wpt = ad_tensor_from(2, (int[]){ 3, 3 }, pt);
    double l_class, a_class, l_t, a_t, l_p;
    ck_assert_int_eq(ex_evaluate_linear(wp, true, x, yy, &l_class, &a_class), AD_OK);
    ck_assert_int_eq(ex_evaluate_linear(wpt, false, x, yy, &l_t, &a_t), AD_OK);
    ck_assert_int_eq(ex_evaluate_linear(wp, false, x, yy, &l_p, NULL), AD_OK);
    ck_assert(l_class == l_t && a_class == a_t);
    ck_assert(fabs(l_p - l_class) > 0.1);
    ad_value_free(wp);
    ad_value_free(wpt);
    ad_value_free(x);
    ad_value_free(yy);
    ad_value_free(w);
}
END_TEST

/* ---- sampling and corruption --------------------------------------------- */

START_TEST(sampling_and_corruption)
{
    enum { N = 300, C = 3 };
    unsigned char labels[N];
    for (int i = 0; i < N; i++) labels[i] = (unsigned char)(i % 7 == 0 ? 2 : i % C);
    int tr[60], va[31];
    ad_rng rng;
    ad_rng_seed(&rng, 5);
    ck_assert_int_eq(ex_sample_balanced(&rng, labels, N, C, 60, 31, tr, va), AD_OK);
    int count[2][C] = { { 0 } };
    char used[N] = { 0 };
    for (int i = 0; i < 60; i++) {
        ck_assert(!used[tr[i]]);
        used[tr[i]] = 1;
        count[0][labels[tr[i]]]++;
    }
    for (int i = 0; i < 31; i++) {
        ck_assert(!used[va[i]]);
        used[va[i]] = 1;
        count[1][labels[va[i]]]++;
    }
    for (int c = 0; c < C; c++) ck_assert_int_eq(count[0][c], 20);
    ck_assert_int_eq(count[1][0], 11); /* 31 = 11 + 10 + 10 */
    ck_assert_int_eq(count[1][1], 10);
    ck_assert_int_eq(ex_sample_balanced(&rng, labels, 30, C, 60, 0, tr, va), AD_EARG);

    /* Corruption: exactly round(0.5 n) relabelled, flags = "label changed". */
    int y[100], y0[100];
    unsigned char bad[100];
    for (int i = 0; i < 100; i++) y[i] = y0[i] = i % 10;
    ad_rng_seed(&rng, 9);
    int changed = hc_corrupt_labels(&rng, y, 100, 10, 0.5, bad);
    int differ = 0, flagged = 0;
    for (int i = 0; i < 100; i++) {
        ck_assert_int_eq(bad[i], y[i] != y0[i]);
        differ += y[i] != y0[i];
        flagged += bad[i];
        ck_assert(y[i] >= 0 && y[i] < 10);
    }
    ck_assert_int_eq(changed, differ);
    ck_assert_int_eq(changed, flagged);
    ck_assert(changed > 30 && changed <= 50); /* 50 drawn, each kept with p = 1/10 */
    /* Seeded: the same seed gives the same labels. */
    int y2[100];
    unsigned char bad2[100];
    for (int i = 0; i < 100; i++) y2[i] = i % 10;
    ad_rng_seed(&rng, 9);
    ck_assert_int_eq(hc_corrupt_labels(&rng, y2, 100, 10, 0.5, bad2), changed);
    ck_assert_mem_eq(y, y2, sizeof y);
}
END_TEST

/* ---- the loader on real data --------------------------------------------- */

/* MNIST as test_data.c finds it; Fashion-MNIST from Debian's package if not. */
static const char *real_data_dir(void)
{
    static char buf[4096];
    const char *root = getenv("HYPERTAPE_DATA");
#ifdef HT_SOURCE_ROOT
    if (!root || !*root) root = HT_SOURCE_ROOT "/../shared/data";
#endif
    if (root && *root) {
        snprintf(buf, sizeof buf, "%s/mnist/" DATA_MNIST_TRAIN_IMAGES, root);
        FILE *f = fopen(buf, "rb");
        if (f) {
            fclose(f);
            snprintf(buf, sizeof buf, "%s/mnist", root);
            return buf;
        }
    }
    fprintf(stderr, "note: test_hyperclean: no MNIST under %s; using Fashion-MNIST\n",
            root && *root ? root : "(no data root)");
    return data_find_dir(NULL, "fashion");
}

START_TEST(load_real_subset)
{
    const char *dir = real_data_dir();
    ck_assert_msg(dir != NULL, "neither MNIST nor Fashion-MNIST found: %s", ad_error());
    hc_data dt;
    ck_assert_msg(hc_data_load(&dt, dir, 100, 100, 0.5, 3, false) == AD_OK, "%s", ad_error());
    ck_assert_int_eq(dt.d, 785);
    ck_assert_int_eq(dt.n_relabelled, 50);
    ck_assert_ptr_null(dt.x_test);
    int changed = 0, per_class[10] = { 0 };
    for (int i = 0; i < 100; i++) {
        ck_assert_int_eq(dt.corrupted[i], dt.y_train->data[i] != dt.y_train_clean->data[i]);
        changed += dt.corrupted[i];
        per_class[(int)dt.y_train_clean->data[i]]++;
        ck_assert_double_eq(dt.x_train->data[i * 785 + 784], 1); /* the bias feature */
    }
    ck_assert_int_eq(changed, dt.n_corrupted);
    for (int c = 0; c < 10; c++) ck_assert_int_eq(per_class[c], 10);
    hc_data_free(&dt);
    /* Errors: too many examples, a missing folder. */
    ck_assert_int_eq(hc_data_load(&dt, dir, 60000, 100, 0.5, 3, false), AD_EARG);
    ck_assert_int_eq(hc_data_load(&dt, "/nonexistent-hyperclean", 10, 10, 0.5, 3, false), AD_EIO);
    ck_assert_ptr_nonnull(strstr(ad_error(), "/nonexistent-hyperclean"));
}
END_TEST

Suite *hyperclean_suite(void)
{
    Suite *s = suite_create("hyperclean");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, full_rmd_matches_checkpoint_and_differences);
    tcase_add_test(tc, inner_loss_decreases);
    tcase_add_test(tc, problem_errors);
    tcase_add_test(tc, f1_by_hand);
    tcase_add_test(tc, accuracy_and_evaluate_by_hand);
    tcase_add_test(tc, sampling_and_corruption);
    tcase_add_test(tc, load_real_subset);
    suite_add_tcase(s, tc);
    return s;
}
