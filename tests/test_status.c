/* test_status.c — optim/'s statuses and messages: every public function of
 * optim/ given NULL (or released) arguments returns AD_EARG, or its
 * "nothing" result, with a message, never a crash; and when a callback of
 * the problem fails at step t, every estimator's message names the
 * estimator, the callback and the step, once each, then the failure. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "experiments/toy_problem.h"
#include "ops/ops.h"
#include "optim/hypergrad.h"
#include "optim/outer.h"
#include "testutil.h"

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

/* ---- NULL arguments across optim/ ------------------------------------------- */

/* The call fails with AD_EARG (its status, or ad_error_code() for calls that
 * return something else) and a message holding `text`. */
#define EXPECT_EARG(call, text)                                                           \
    do {                                                                                  \
        ad_error_clear();                                                                 \
        AD_IGNORE(call); /* read below, as ad_error_code() */                             \
        ck_assert_msg(ad_error_code() == AD_EARG, "%s: code %d (%s)", #call,              \
                      ad_error_code(), ad_error());                                       \
        ck_assert_msg(strstr(ad_error(), text) != NULL, "%s: message \"%s\" lacks \"%s\"", \
                      #call, ad_error(), text);                                           \
    } while (0)

START_TEST(null_arguments)
{
    toy t;
    ck_assert_int_eq(toy_init(&t, 1, 1, 10, 0.1, false), AD_OK);
    hg_problem *p = &t.problem, bad = t.problem;
    ad_value *h = NULL, *lam = t.lam;
    hg_report r;
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    hg_state st = { 0 };
    /* the problem and its state */
    EXPECT_EARG(hg_problem_check(NULL), "problem: NULL");
    EXPECT_EARG(hg_state_len(NULL), "state_len: the problem is NULL");
    ck_assert_int_eq(hg_state_len(NULL), 0);
    bad.opt.kind = HG_CUSTOM; /* without its update */
    EXPECT_EARG(hg_state_len(&bad), "opt.custom");
    ck_assert_int_eq(hg_state_len(&bad), 0);
    bad.opt.kind = (hg_inner_kind)42;
    EXPECT_EARG(hg_state_len(&bad), "unknown inner optimizer 42");
    EXPECT_EARG(hg_state_init(NULL, p, &st, false), "state_init: the tape is NULL");
    EXPECT_EARG(hg_state_init(tp, NULL, &st, false), "state_init: problem: NULL");
    EXPECT_EARG(hg_state_init(tp, p, NULL, false), "state_init: the state is NULL");
    EXPECT_EARG(hg_state_init(tp, &bad, &st, false), "state_init: problem: unknown inner");
    EXPECT_EARG(hg_state_from_list(NULL, p, &lam, &st), "state_from_list: the tape is NULL");
    EXPECT_EARG(hg_state_from_list(tp, p, NULL, &st), "state_from_list: the saved list is NULL");
    EXPECT_EARG(hg_state_from_list(tp, p, &lam, NULL), "state_from_list: the state is NULL");
    EXPECT_EARG(hg_state_from_list(tp, p, (ad_value *[]){ NULL }, &st), "leaf: the value is NULL");
    ck_assert_ptr_null(st.w);
    EXPECT_EARG(hg_inner_step(NULL, p, &st, 1, false), "inner_step: the tape is NULL");
    EXPECT_EARG(hg_inner_step(tp, NULL, &st, 1, false), "inner_step: problem: NULL");
    EXPECT_EARG(hg_inner_step(tp, p, NULL, 1, false), "inner_step: the state is NULL");
    EXPECT_EARG(hg_inner_step(tp, p, &st, 1, false), "inner_step: the state does not fit");
    hg_state_free(NULL); /* fine, as is an empty state */
    hg_state_free(&st);
    EXPECT_EARG(hg_inner_solve(NULL, NULL, NULL), "inner_solve: problem: NULL");
    /* a freed hyperparameter is named, not read */
    ad_value *gone = ad_param_scalar(1);
    ad_value_free(gone);
    bad = t.problem;
    bad.hyper = &gone;
    EXPECT_EARG(hg_problem_check(&bad), "problem: hyperparameter 0: the value is a caller-owned "
                                        "leaf that was freed");
    /* the estimators */
    EXPECT_EARG(hg_krmd(NULL, 5, &h, &r), "krmd: problem: NULL");
    EXPECT_EARG(hg_krmd(p, 5, NULL, &r), "krmd: output array is NULL");
    EXPECT_EARG(hg_full_rmd(NULL, &h, NULL), "full_rmd: problem: NULL");
    EXPECT_EARG(hg_checkpoint(NULL, 5, &h, NULL), "checkpoint: problem: NULL");
    EXPECT_EARG(hg_checkpoint(p, 5, NULL, NULL), "checkpoint: output array is NULL");
    EXPECT_EARG(hg_fmd(NULL, &h, NULL), "fmd: problem: NULL");
    EXPECT_EARG(hg_fmd(p, NULL, NULL), "fmd: output array is NULL");
    EXPECT_EARG(hg_implicit_cg(NULL, 5, 0, &h, NULL), "implicit_cg: problem: NULL");
    EXPECT_EARG(hg_implicit_cg(p, 5, 0, NULL, NULL), "implicit_cg: output array is NULL");
    EXPECT_EARG(hg_neumann(NULL, 5, &h, NULL), "neumann: problem: NULL");
    EXPECT_EARG(hg_neumann(p, 5, NULL, NULL), "neumann: output array is NULL");
    ck_assert_ptr_null(h);
    /* diagnostics */
    hg_compare c;
    EXPECT_EARG((c = hg_compare_grads(1, NULL, &lam)).cosine, "compare_grads: the list h is NULL");
    ck_assert(isnan(c.cosine) && isnan(c.rel_error) && isnan(c.ratio));
    EXPECT_EARG(hg_compare_grads(1, &lam, (ad_value *[]){ NULL }).cosine,
                "compare_grads: d[0]: the value is NULL");
    EXPECT_EARG(hg_compare_grads(1, &gone, &lam).cosine,
                "compare_grads: h[0]: the value is a caller-owned");
    EXPECT_EARG(hg_compare_grads(1, &lam, (ad_value *[]){ ad_const_scalar(tp, 1) }).cosine,
                "h[0] has 2 entries, d[0] 1");
    EXPECT_EARG(hg_compare_grads(-1, &lam, &lam).cosine, "compare_grads: n = -1");
    /* the profile, the curvature, choosing K, the sweep */
    hg_profile pr;
    hg_curvature cv;
    hg_choice ch;
    hg_sweep_result sw;
    EXPECT_EARG(hg_truncation_profile(p, 5, NULL, NULL), "profile: the result is NULL");
    EXPECT_EARG(hg_truncation_profile(NULL, 5, NULL, &pr), "profile: problem: NULL");
    ck_assert_ptr_null(pr.h);
    hg_profile_free(NULL);
    EXPECT_EARG(hg_profile_rel_error(NULL, 1), "profile_rel_error: the profile is NULL");
    ck_assert(isnan(hg_profile_rel_error(NULL, 1)));
    EXPECT_EARG(hg_curvature_estimate(p, 5, NULL), "curvature: the result is NULL");
    EXPECT_EARG(hg_curvature_estimate(NULL, 5, &cv), "curvature: problem: NULL");
    EXPECT_EARG(hg_contraction(NULL, 0.5, 1), "contraction: the problem is NULL");
    ck_assert(isnan(hg_contraction(NULL, 0.5, 1)));
    EXPECT_EARG(hg_choose_k(NULL, 0.1, NULL, &ch, NULL), "choose_k: problem: NULL");
    EXPECT_EARG(hg_choose_k(p, 0.1, NULL, NULL, NULL), "choose_k: the result is NULL");
    EXPECT_EARG(hg_choose_k_from(NULL, NULL, 0.1, 0, &ch), "choose_k: the profile is empty");
    EXPECT_EARG(hg_choose_k_from(&(hg_profile){ .K = 3, .contrib_norm = (double[3]){ 0 } }, NULL,
                                 0.1, 0, &ch), "choose_k: the profile is empty");
    EXPECT_EARG(hg_choose_k_from(&pr, NULL, 0.1, 0, NULL), "choose_k: the result is NULL");
    EXPECT_EARG(hg_sweep(p, (int[]){ 1 }, 1, NULL, NULL), "sweep: the result is NULL");
    EXPECT_EARG(hg_sweep(p, NULL, 1, &sw, NULL), "sweep: no K given");
    EXPECT_EARG(hg_sweep(NULL, (int[]){ 1 }, 1, &sw, NULL), "sweep: problem: NULL");
    ck_assert_ptr_null(sw.rows);
    hg_sweep_free(NULL);
    /* the outer optimizer */
    opt_outer o;
    EXPECT_EARG(opt_outer_init(NULL, OPT_ADAM, 0.1, true, 1, &lam), "NULL optimizer");
    EXPECT_EARG(opt_outer_init(&o, OPT_ADAM, 0.1, true, 1, NULL), "no parameters");
    EXPECT_EARG(opt_outer_init(&o, OPT_ADAM, 0.1, true, 1, (ad_value *[]){ NULL }),
                "parameter 0 is not a caller-owned leaf");
    EXPECT_EARG(opt_outer_add_group(NULL, 0.1, true, 1, &lam), "initialized optimizer");
    EXPECT_EARG(opt_outer_step(NULL, &lam), "not initialized");
    ck_assert_int_eq(opt_outer_init(&o, OPT_ADAM, 0.1, true, 1, &lam), AD_OK);
    EXPECT_EARG(opt_outer_add_group(&o, 0.1, true, 1, NULL), "no parameters");
    EXPECT_EARG(opt_outer_step(&o, NULL), "no gradients");
    EXPECT_EARG(opt_outer_step(&o, (ad_value *[]){ NULL }), "gradient 0 is NULL");
    /* a gradient released with its tape: named, not read */
    ad_tape *tmp = ad_tape_new(1);
    ad_value *g_gone = ad_const_fill(tmp, 1, (int[]){ 2 }, 1);
    ad_tape_free(tmp);
    EXPECT_EARG(opt_outer_step(&o, &g_gone),
                "outer optimizer: gradient 0: the value, made at step 0");
    EXPECT_EARG(opt_outer_eta0_for_norm(OPT_ADAM, 1, &g_gone, 1), "eta0_for_norm: gradient 0: ");
    EXPECT_EARG(opt_outer_eta0_for_norm(OPT_ADAM, 1, NULL, 1), "eta0_for_norm: no gradients");
    EXPECT_EARG(opt_outer_save(NULL, stdout), "save: a NULL argument");
    EXPECT_EARG(opt_outer_save(&o, NULL), "save: a NULL argument");
    EXPECT_EARG(opt_outer_load(NULL, stdin), "load: a NULL argument");
    EXPECT_EARG(opt_outer_load(&o, NULL), "load: a NULL argument");
    ck_assert_int_eq(o.tau, 0);
    opt_outer_free(&o);
    opt_outer_free(NULL);
    ad_tape_free(tp);
    toy_free(&t);
}
END_TEST
#undef EXPECT_EARG

/* ---- callbacks that fail at step t -------------------------------------------- */

enum { T_STEPS = 20, K_TRUNC = 5 };

/* What fails, and where: the toy's callbacks, one of which makes an op fail
 * (a shape that does not broadcast) at step `at` (inner, update) or at once
 * (init, outer); `pass` > 0: only on that call of the step (FMD replays the
 * steps once per hyperparameter entry). */
typedef enum { FAIL_INNER, FAIL_INNER_GRAD, FAIL_INIT, FAIL_OUTER, FAIL_UPDATE } fail_kind;

typedef struct failing {
    toy *t;
    fail_kind kind;
    int at, pass, calls;
} failing;

/* [2] minus [4]: "sub: shapes do not broadcast: [2] and [4]" */
static ad_value *broken(ad_tape *tp, ad_value *x)
{
    return ad_sub(tp, x, ad_concat(tp, x, x, 0));
}

static bool fails_now(failing *f, fail_kind kind, int t)
{
    if (f->kind != kind || t != f->at) return false;
    return ++f->calls == f->pass || f->pass == 0;
}

static int fl_init(ad_tape *tp, ad_value *const *lam, ad_value **w0, void *ctx)
{
    failing *f = ctx;
    w0[0] = f->kind == FAIL_INIT ? broken(tp, lam[0])
                                 : ad_const(tp, 1, (int[]){ 2 }, (ad_real[]){ 2, 2 });
    return w0[0] ? AD_OK : ad_error_code();
}

static ad_value *fl_inner(ad_tape *tp, ad_value *const *w, ad_value *const *lam, int t, void *ctx)
{
    failing *f = ctx;
    ad_value *d = ad_sub(tp, w[0], lam[0]);
    if (fails_now(f, FAIL_INNER, t)) d = broken(tp, d);
    if (fails_now(f, FAIL_INNER_GRAD, t)) {
        /* The loss is made, but its gradient needs a leaf freed meanwhile:
         * the backward rule of 'maximum' fails inside ad_grad. */
        ad_value *c = ad_tensor_fill(1, (int[]){ 2 }, 0);
        ad_value *g = ad_sum(tp, ad_maximum(tp, d, c));
        ad_value_free(c);
        return g;
    }
    return ad_scale(tp, ad_dot(tp, d, ad_mul(tp, f->t->G, d)), 0.5);
}

static ad_value *fl_outer(ad_tape *tp, ad_value *const *w, ad_value *const *lam, void *ctx)
{
    failing *f = ctx;
    (void)lam;
    ad_value *x = f->kind == FAIL_OUTER ? broken(tp, w[0]) : w[0];
    return ad_add(tp, ad_sqnorm(tp, x), ad_scale(tp, ad_sqnorm(tp, ad_sin(tp, x)), 10));
}

/* Gradient descent as a custom update ("mine"), which can fail at a step. */
static int fl_step(ad_tape *tp, int n_w, ad_value *const *w, ad_value *const *s,
                   ad_value *const *gw, ad_value *const *lam, int t, ad_value **w_new,
                   ad_value **s_new, void *ctx)
{
    failing *f = ctx;
    (void)n_w, (void)s, (void)lam, (void)s_new;
    ad_value *d = ad_scale(tp, gw[0], 0.1);
    if (fails_now(f, FAIL_UPDATE, t)) d = broken(tp, d);
    w_new[0] = ad_sub(tp, w[0], d);
    return w_new[0] ? AD_OK : ad_error_code();
}

typedef int (*estimator)(const hg_problem *p, ad_value **h);

static int e_krmd(const hg_problem *p, ad_value **h) { return hg_krmd(p, K_TRUNC, h, NULL); }
static int e_full(const hg_problem *p, ad_value **h) { return hg_full_rmd(p, h, NULL); }
static int e_ckpt(const hg_problem *p, ad_value **h) { return hg_checkpoint(p, K_TRUNC, h, NULL); }
static int e_ckpt_full(const hg_problem *p, ad_value **h)
{
    return hg_checkpoint(p, p->T, h, NULL);
}
static int e_fmd(const hg_problem *p, ad_value **h) { return hg_fmd(p, h, NULL); }
static int e_cg(const hg_problem *p, ad_value **h) { return hg_implicit_cg(p, 10, 1e-12, h, NULL); }
static int e_neumann(const hg_problem *p, ad_value **h) { return hg_neumann(p, 10, h, NULL); }

static int e_profile(const hg_problem *p, ad_value **h)
{
    hg_profile pr;
    int rc = hg_truncation_profile(p, K_TRUNC, NULL, &pr);
    if (rc == AD_OK) *h = ad_value_copy(pr.h[K_TRUNC - 1]);
    hg_profile_free(&pr);
    return rc;
}

static int e_sweep(const hg_problem *p, ad_value **h)
{
    hg_sweep_result sw;
    int rc = hg_sweep(p, (int[]){ 1, K_TRUNC }, 2, &sw, NULL);
    if (rc == AD_OK) *h = ad_value_copy(sw.exact[0]);
    hg_sweep_free(&sw);
    return rc;
}

static int e_solve(const hg_problem *p, ad_value **h) { return hg_inner_solve(p, h, NULL); }

static int e_curvature(const hg_problem *p, ad_value **h)
{
    hg_curvature cv;
    int rc = hg_curvature_estimate(p, 2, &cv);
    if (rc == AD_OK) *h = ad_tensor_scalar(cv.L);
    return rc;
}

static int e_choose(const hg_problem *p, ad_value **h)
{
    hg_choice ch;
    hg_choose_opts opts = { .window = K_TRUNC, .lanczos_iters = 2 };
    int rc = hg_choose_k(p, 0.1, &opts, &ch, NULL);
    if (rc == AD_OK) *h = ad_tensor_scalar(ch.K);
    return rc;
}

static const struct {
    const char *prefix; /* what the message starts with */
    estimator f;
    bool implicit;      /* refuses a hyperparameter in the update; Neumann: GD only */
} estimators[] = {
    { "krmd: ", e_krmd, false },
    { "full_rmd: ", e_full, false },
    { "checkpoint: ", e_ckpt, false },
    { "checkpoint: ", e_ckpt_full, false },
    { "fmd: ", e_fmd, false },
    { "profile: ", e_profile, false },
    { "sweep: profile: ", e_sweep, false },
    { "implicit_cg: ", e_cg, true },
    { "neumann: ", e_neumann, true },
    { "inner_solve: ", e_solve, false },
    { "curvature: inner_solve: ", e_curvature, false },
    { "choose_k: profile: ", e_choose, false },
};
enum { N_EST = sizeof estimators / sizeof *estimators };

/* Runs estimator e with the failure f on the toy; the message must be
 * exactly prefix + `what` and name each of `once` exactly once. */
static void expect_message(int e, failing *f, int code, const char *what, const char *const *once)
{
    hg_update mine = { .name = "mine", .step = fl_step, .ignores_hyper = true, .ctx = f };
    hg_problem p = f->t->problem;
    p.ctx = f;
    p.init = fl_init;
    p.inner = fl_inner;
    p.outer = fl_outer;
    if (f->kind == FAIL_UPDATE) p.opt = (hg_inner_opt){ .kind = HG_CUSTOM, .custom = &mine };
    f->calls = 0;
    ad_value *h = NULL;
    ad_fail(AD_EIO, "a stale message"); /* must not pass for the callback's */
    int rc = estimators[e].f(&p, &h);
    char want[512];
    snprintf(want, sizeof want, "%s%s", estimators[e].prefix, what);
    ck_assert_msg(rc == code && !strcmp(ad_error(), want),
                  "estimator %d (%s): status %d, message\n  \"%s\", want %d\n  \"%s\"", e,
                  estimators[e].prefix, rc, ad_error(), code, want);
    for (int k = 0; once && once[k]; k++)
        ck_assert_msg(count(ad_error(), once[k]) == 1, "\"%s\" names \"%s\" %d times",
                      ad_error(), once[k], count(ad_error(), once[k]));
    ck_assert_ptr_null(h);
}

#define SHAPES "sub: shapes do not broadcast: [2] and [4]"

/* The inner loss fails at step 7 (in K-RMD's detached prefix: T − K = 15)
 * and at step 18 (inside the recorded window). */
START_TEST(inner_fails_at_step_t)
{
    toy t;
    ck_assert_int_eq(toy_init(&t, 1, 1, T_STEPS, 0.1, false), AD_OK);
    for (int e = 0; e < N_EST; e++) {
        const int steps[] = { 7, 18 };
        for (int k = 0; k < 2; k++) {
            failing f = { .t = &t, .kind = FAIL_INNER, .at = steps[k] };
            char what[128], step[32];
            snprintf(step, sizeof step, "(step %d)", steps[k]);
            snprintf(what, sizeof what, "inner %s: " SHAPES, step);
            const char *once[] = { "inner (", step, estimators[e].prefix, "sub: ", NULL };
            expect_message(e, &f, AD_ESHAPE, what, once);
        }
    }
    toy_free(&t);
}
END_TEST

/* The inner loss is made, but the backward rule of one of its ops fails in
 * ∇w g at step t: the rule's op's message, under the callback and step. */
START_TEST(inner_gradient_fails_at_step_t)
{
    toy t;
    ck_assert_int_eq(toy_init(&t, 1, 1, T_STEPS, 0.1, false), AD_OK);
    for (int e = 0; e < N_EST; e++) {
        failing f = { .t = &t, .kind = FAIL_INNER_GRAD, .at = 18 };
        expect_message(e, &f, AD_EARG,
                       "inner (step 18): the gradient of the inner loss: grad: the backward rule "
                       "of 'maximum': maximum: input 1 is a caller-owned leaf that was freed "
                       "(ad_value_free)",
                       (const char *[]){ "inner (", "step 18", "grad: ", NULL });
    }
    toy_free(&t);
}
END_TEST

/* init and outer fail (no step to name), and a custom update at step t. */
START_TEST(init_outer_update_fail)
{
    toy t;
    ck_assert_int_eq(toy_init(&t, 1, 1, T_STEPS, 0.1, false), AD_OK);
    for (int e = 0; e < N_EST; e++) {
        failing f = { .t = &t, .kind = FAIL_INIT };
        expect_message(e, &f, AD_ESHAPE, "init: " SHAPES, (const char *[]){ "init: ", NULL });
        /* The inner solve and the curvature never evaluate the outer loss. */
        if (estimators[e].f != e_solve && estimators[e].f != e_curvature) {
            f = (failing){ .t = &t, .kind = FAIL_OUTER };
            expect_message(e, &f, AD_ESHAPE, "outer: " SHAPES, (const char *[]){ "outer: ", NULL });
        }
        if (estimators[e].f == e_neumann) continue; /* GD's series: it refuses custom updates */
        f = (failing){ .t = &t, .kind = FAIL_UPDATE, .at = 9 };
        expect_message(e, &f, AD_ESHAPE, "mine (step 9): " SHAPES,
                       (const char *[]){ "mine (", "step 9", NULL });
    }
    toy_free(&t);
}
END_TEST

/* Forward mode replays the steps once per hyperparameter entry: a failure in
 * one of those passes names the entry, once, before the callback and step. */
START_TEST(fmd_names_the_hyperparameter_entry)
{
    toy t;
    ck_assert_int_eq(toy_init(&t, 1, 1, T_STEPS, 0.1, false), AD_OK);
    /* Call 1 of step 7 is the forward solve, 2 the pass of entry 0, 3 entry 1. */
    failing f = { .t = &t, .kind = FAIL_INNER, .at = 7, .pass = 3 };
    int e = 4;
    ck_assert_str_eq(estimators[e].prefix, "fmd: ");
    expect_message(e, &f, AD_ESHAPE, "hyperparameter 0, entry 1: inner (step 7): " SHAPES,
                   (const char *[]){ "hyperparameter", "entry 1", "inner (", "step 7", NULL });
    toy_free(&t);
}
END_TEST

Suite *status_suite(void);
Suite *status_suite(void)
{
    Suite *s = suite_create("status");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, null_arguments);
    tcase_add_test(tc, inner_fails_at_step_t);
    tcase_add_test(tc, inner_gradient_fails_at_step_t);
    tcase_add_test(tc, init_outer_update_fail);
    tcase_add_test(tc, fmd_names_the_hyperparameter_entry);
    suite_add_tcase(s, tc);
    return s;
}
