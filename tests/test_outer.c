/* test_outer.c — the outer optimizers (optim/outer.h): SGD and Adam against
 * the update written out in plain C; parameter groups against separate
 * optimizers, bit for bit; steps refused whole (non-finite gradients, Adam
 * moments or parameters that would overflow, bad settings) with the state
 * unchanged; saved states of one group (layout version 1, as before groups)
 * and of several (version 2); NULL arguments. */
#include <check.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops/ops.h"
#include "optim/outer.h"
#include "testutil.h"

/* ---- helpers ----------------------------------------------------------------- */

/* A rank-1 caller-owned leaf (param) or constant holding n entries of v. */
static ad_value *vec(bool param, int n, const double *v)
{
    ad_value *x = ad_tensor_new(1, &n);
    ck_assert_ptr_nonnull(x);
    for (int i = 0; i < n; i++) x->data[i] = (ad_real)v[i];
    if (param) ck_assert_int_eq(ad_set_requires_grad(x, true), AD_OK);
    return x;
}

/* Everything a step may change: the parameters' entries, the moments, τ and
 * the groups' settings, copied so a refused step can be shown to leave all
 * of it as it was. */
typedef struct {
    ad_real p[64];
    double m[64], v[64];
    opt_group g[8];
    int tau, n_groups;
    size_t dim;
} snapshot;

static snapshot snap(const opt_outer *o)
{
    snapshot s = { .tau = o->tau, .n_groups = o->n_groups, .dim = o->dim };
    ck_assert(o->dim <= 64 && o->n_groups <= 8);
    size_t k = 0;
    for (int i = 0; i < o->n; i++)
        for (size_t j = 0; j < o->params[i]->size; j++) s.p[k++] = o->params[i]->data[j];
    if (o->m) memcpy(s.m, o->m, sizeof *o->m * o->dim), memcpy(s.v, o->v, sizeof *o->v * o->dim);
    memcpy(s.g, o->groups, sizeof *o->groups * (size_t)o->n_groups);
    return s;
}

/* Field by field: padding bytes of a struct are not part of its value. */
static bool same_group(const opt_group *a, const opt_group *b)
{
    return a->first == b->first && a->n == b->n && a->offset == b->offset && a->dim == b->dim &&
           a->eta0 == b->eta0 && a->sqrt_decay == b->sqrt_decay && a->beta1 == b->beta1 &&
           a->beta2 == b->beta2 && a->eps == b->eps;
}

static void expect_unchanged(const opt_outer *o, const snapshot *before)
{
    snapshot now = snap(o);
    ck_assert_int_eq(now.tau, before->tau);
    ck_assert_int_eq(now.n_groups, before->n_groups);
    ck_assert(now.dim == before->dim);
    ck_assert_msg(memcmp(now.p, before->p, sizeof now.p) == 0, "a parameter changed");
    ck_assert_msg(memcmp(now.m, before->m, sizeof now.m) == 0, "Adam's first moment changed");
    ck_assert_msg(memcmp(now.v, before->v, sizeof now.v) == 0, "Adam's second moment changed");
    for (int i = 0; i < now.n_groups; i++)
        ck_assert_msg(same_group(&now.g[i], &before->g[i]), "group %d changed", i);
}

#define expect_message(part)                                                               \
    ck_assert_msg(strstr(ad_error(), (part)) != NULL, "message lacks \"%s\": %s", (part), \
                  ad_error())

/* ---- updates ------------------------------------------------------------------ */

/* Four steps of SGD and of Adam (with and without η0/√τ) on two tensors
 * against the update written out here: SGD λ −= η_τ g; Adam m ← β1 m +
 * (1−β1) g, v ← β2 v + (1−β2) g², λ −= η_τ m̂/(√v̂ + ε) with m̂ = m/(1−β1^τ),
 * v̂ = v/(1−β2^τ). */
START_TEST(updates_against_plain_c)
{
    const double g0[5] = { 0.5, -2, 3e-3, 0, 7 };
    for (int adam = 0; adam < 2; adam++)
        for (int decay = 0; decay < 2; decay++) {
            ad_value *p[2] = { vec(true, 2, (double[]){ 1, -1 }),
                               vec(true, 3, (double[]){ 0, 2, 5 }) };
            ad_value *g[2] = { vec(false, 2, g0), vec(false, 3, g0 + 2) };
            double ref[5] = { 1, -1, 0, 2, 5 }, m[5] = { 0 }, v[5] = { 0 };
            opt_outer o;
            opt_kind kind = adam ? OPT_ADAM : OPT_SGD;
            ck_assert_int_eq(opt_outer_init(&o, kind, 0.3, decay, 2, p), AD_OK);
            for (int tau = 1; tau <= 4; tau++) {
                for (int k = 0; k < 5; k++) { /* the gradient changes from step to step */
                    ad_real *at = k < 2 ? &g[0]->data[k] : &g[1]->data[k - 2];
                    *at = (ad_real)(g0[k] * (1 + 0.25 * tau));
                    double gr = *at, step = gr; /* as stored: float in the float build */
                    if (adam) {
                        m[k] = 0.9 * m[k] + 0.1 * gr;
                        v[k] = 0.999 * v[k] + 0.001 * gr * gr;
                        double mh = m[k] / (1 - pow(0.9, tau)), vh = v[k] / (1 - pow(0.999, tau));
                        step = mh / (sqrt(vh) + 1e-8);
                    }
                    ref[k] -= (decay ? 0.3 / sqrt(tau) : 0.3) * step;
                }
                ck_assert_int_eq(opt_outer_step(&o, g), AD_OK);
                ck_assert_int_eq(o.tau, tau);
                for (int k = 0; k < 5; k++)
                    tu_expect_close(k < 2 ? p[0]->data[k] : p[1]->data[k - 2], ref[k], 16);
            }
            opt_outer_free(&o);
            for (int i = 0; i < 2; i++) ad_value_free(p[i]), ad_value_free(g[i]);
        }
}
END_TEST

/* One optimizer with three groups (own η0, schedule, β2, ε) moves its
 * tensors exactly as three single-group optimizers do, step for step and
 * bit for bit, moments included; for SGD and Adam. */
START_TEST(groups_match_separate_optimizers)
{
    for (int adam = 0; adam < 2; adam++) {
        opt_kind kind = adam ? OPT_ADAM : OPT_SGD;
        const double init[6] = { 1, -2, 0.5, 3, -0.25, 4 };
        ad_value *a[4] = { vec(true, 2, init), vec(true, 1, init + 2), vec(true, 2, init + 3),
                           vec(true, 1, init + 5) };
        ad_value *b[4] = { vec(true, 2, init), vec(true, 1, init + 2), vec(true, 2, init + 3),
                           vec(true, 1, init + 5) };
        ad_value *g[4] = { vec(false, 2, init), vec(false, 1, init), vec(false, 2, init),
                           vec(false, 1, init) };
        opt_outer grouped, sep[3];
        /* groups: {a0, a1} at 0.1 with √τ decay, {a2} at 0.02 constant, {a3} at 1.5 with √τ */
        ck_assert_int_eq(opt_outer_init(&grouped, kind, 0.1, true, 2, a), AD_OK);
        ck_assert_int_eq(opt_outer_add_group(&grouped, 0.02, false, 1, a + 2), AD_OK);
        ck_assert_int_eq(opt_outer_add_group(&grouped, 1.5, true, 1, a + 3), AD_OK);
        grouped.groups[1].beta2 = 0.99;
        grouped.groups[2].eps = 1e-3;
        grouped.groups[2].beta1 = 0.5;
        ck_assert_int_eq(grouped.n, 4);
        ck_assert_int_eq(grouped.n_groups, 3);
        ck_assert(grouped.dim == 6);
        ck_assert(grouped.groups[2].first == 3 && grouped.groups[2].n == 1 &&
                  grouped.groups[2].offset == 5 && grouped.groups[2].dim == 1);
        ck_assert(grouped.groups[1].beta1 == 0.9 && grouped.groups[1].eps == 1e-8); /* copied */
        ck_assert_int_eq(opt_outer_init(&sep[0], kind, 0.1, true, 2, b), AD_OK);
        ck_assert_int_eq(opt_outer_init(&sep[1], kind, 0.02, false, 1, b + 2), AD_OK);
        ck_assert_int_eq(opt_outer_init(&sep[2], kind, 1.5, true, 1, b + 3), AD_OK);
        sep[1].groups[0].beta2 = 0.99;
        sep[2].groups[0].eps = 1e-3;
        sep[2].groups[0].beta1 = 0.5;
        ad_rng rng;
        ad_rng_seed(&rng, 11);
        for (int tau = 1; tau <= 6; tau++) {
            for (int i = 0; i < 4; i++)
                for (size_t j = 0; j < g[i]->size; j++)
                    g[i]->data[j] = (ad_real)(ad_rng_uniform(&rng) * 4 - 2);
            ck_assert_int_eq(opt_outer_step(&grouped, g), AD_OK);
            ck_assert_int_eq(opt_outer_step(&sep[0], g), AD_OK);
            ck_assert_int_eq(opt_outer_step(&sep[1], g + 2), AD_OK);
            ck_assert_int_eq(opt_outer_step(&sep[2], g + 3), AD_OK);
            for (int i = 0; i < 4; i++)
                ck_assert_msg(memcmp(a[i]->data, b[i]->data, sizeof(ad_real) * a[i]->size) == 0,
                              "tensor %d differs at step %d", i, tau);
        }
        if (adam) {
            ck_assert(memcmp(grouped.m, sep[0].m, 3 * sizeof(double)) == 0);
            ck_assert(memcmp(grouped.v + 3, sep[1].v, 2 * sizeof(double)) == 0);
            ck_assert(memcmp(grouped.m + 5, sep[2].m, sizeof(double)) == 0);
            ck_assert(memcmp(grouped.v + 5, sep[2].v, sizeof(double)) == 0);
        }
        /* The groups really differ: the same gradient moves them by different amounts. */
        ck_assert(a[0]->data[0] != init[0] && a[2]->data[0] != init[3]);
        opt_outer_free(&grouped);
        for (int i = 0; i < 3; i++) opt_outer_free(&sep[i]);
        for (int i = 0; i < 4; i++) ad_value_free(a[i]), ad_value_free(b[i]), ad_value_free(g[i]);
    }
}
END_TEST

/* What init and add_group refuse, each with o as it was. */
START_TEST(groups_refused)
{
    ad_value *p = vec(true, 2, (double[]){ 1, 2 }), *q = vec(true, 1, (double[]){ 3 });
    ad_value *g[2] = { vec(false, 2, (double[]){ 1, 1 }), vec(false, 1, (double[]){ 1 }) };
    opt_outer o;
    /* a parameter listed twice in one list */
    ck_assert_int_eq(opt_outer_init(&o, OPT_ADAM, 0.1, true, 2, (ad_value *[]){ p, p }), AD_EARG);
    expect_message("parameter 1 is parameter 0 again");
    ck_assert_ptr_null(o.params); /* left empty */
    opt_outer_free(&o);
    ck_assert_int_eq(opt_outer_init(&o, OPT_ADAM, 0.1, true, 1, &p), AD_OK);
    snapshot s = snap(&o);
    /* a tensor of group 0 again, a NULL one, a bad step, none at all */
    ck_assert_int_eq(opt_outer_add_group(&o, 0.5, false, 2, (ad_value *[]){ q, p }), AD_EARG);
    expect_message("parameter 2 is parameter 0 again");
    ck_assert_int_eq(opt_outer_add_group(&o, 0.5, false, 1, (ad_value *[]){ NULL }), AD_EARG);
    expect_message("parameter 1 is not a caller-owned leaf");
    ck_assert_int_eq(opt_outer_add_group(&o, 0, false, 1, &q), AD_EARG);
    expect_message("eta0 must be positive");
    ck_assert_int_eq(opt_outer_add_group(&o, NAN, false, 1, &q), AD_EARG);
    ck_assert_int_eq(opt_outer_add_group(&o, 0.5, false, 0, &q), AD_EARG);
    ck_assert_int_eq(opt_outer_add_group(NULL, 0.5, false, 1, &q), AD_EARG);
    ck_assert_int_eq(o.n, 1);
    expect_unchanged(&o, &s);
    /* a value a tape made */
    ad_tape *tp = ad_tape_new(1);
    ad_value *made = ad_scale(tp, p, 2);
    ck_assert_ptr_nonnull(made);
    ck_assert_int_eq(opt_outer_add_group(&o, 0.5, false, 1, &made), AD_EARG);
    expect_message("not a caller-owned leaf");
    ad_tape_free(tp);
    /* after a step: the new group's bias correction would start late */
    ck_assert_int_eq(opt_outer_step(&o, g), AD_OK);
    ck_assert_int_eq(opt_outer_add_group(&o, 0.5, false, 1, &q), AD_EARG);
    expect_message("before the first step (1 done)");
    ck_assert_int_eq(o.n_groups, 1);
    opt_outer_free(&o);
    /* an uninitialized (zeroed) optimizer takes no group */
    opt_outer z = { 0 };
    ck_assert_int_eq(opt_outer_add_group(&z, 0.5, false, 1, &q), AD_EARG);
    opt_outer_free(&z);
    ad_value_free(p), ad_value_free(q), ad_value_free(g[0]), ad_value_free(g[1]);
}
END_TEST

/* ---- steps refused ------------------------------------------------------------- */

/* Two groups of Adam (and of SGD) a step in; then a NaN, an Inf and a −Inf in
 * group 1's second tensor: refused, naming tensor 2 and the entry, with
 * nothing changed; the next finite step goes on as if they never came. */
START_TEST(nonfinite_gradient_refused)
{
    for (int adam = 0; adam < 2; adam++) {
        const double v0[5] = { 1, 2, 3, 4, 5 };
        ad_value *p[3] = { vec(true, 2, v0), vec(true, 1, v0 + 2), vec(true, 2, v0 + 3) };
        ad_value *q[3] = { vec(true, 2, v0), vec(true, 1, v0 + 2), vec(true, 2, v0 + 3) };
        ad_value *g[3] = { vec(false, 2, (double[]){ 0.1, -0.2 }), vec(false, 1, (double[]){ 0.3 }),
                           vec(false, 2, (double[]){ -0.4, 0.5 }) };
        opt_outer o, r; /* r: the reference that never sees the bad gradients */
        ck_assert_int_eq(opt_outer_init(&o, adam ? OPT_ADAM : OPT_SGD, 0.1, true, 1, p), AD_OK);
        ck_assert_int_eq(opt_outer_add_group(&o, 0.05, false, 2, p + 1), AD_OK);
        ck_assert_int_eq(opt_outer_init(&r, adam ? OPT_ADAM : OPT_SGD, 0.1, true, 1, q), AD_OK);
        ck_assert_int_eq(opt_outer_add_group(&r, 0.05, false, 2, q + 1), AD_OK);
        ck_assert_int_eq(opt_outer_step(&o, g), AD_OK);
        ck_assert_int_eq(opt_outer_step(&r, g), AD_OK);
        const double bad[3] = { NAN, INFINITY, -INFINITY };
        const char *said[3] = { "gradient 2 entry 1 is NaN", "gradient 2 entry 1 is Inf",
                                "gradient 2 entry 1 is -Inf" };
        for (int b = 0; b < 3; b++) {
            snapshot s = snap(&o);
            g[2]->data[1] = (ad_real)bad[b];
            ck_assert_int_eq(opt_outer_step(&o, g), AD_ENONFINITE);
            expect_message(said[b]);
            expect_message("the step is not taken");
            expect_unchanged(&o, &s);
        }
        g[2]->data[1] = (ad_real)0.5;
        ck_assert_int_eq(opt_outer_step(&o, g), AD_OK);
        ck_assert_int_eq(opt_outer_step(&r, g), AD_OK);
        ck_assert_int_eq(o.tau, 2);
        for (int i = 0; i < 3; i++)
            ck_assert(memcmp(p[i]->data, q[i]->data, sizeof(ad_real) * p[i]->size) == 0);
        opt_outer_free(&o), opt_outer_free(&r);
        for (int i = 0; i < 3; i++) ad_value_free(p[i]), ad_value_free(q[i]), ad_value_free(g[i]);
    }
}
END_TEST

/* The case: an Adam gradient of 1e308 is finite, but (1−β2)·g² is
 * not, so v became Inf and the coordinate froze (m̂/(√Inf + ε) = 0) with
 * AD_OK.  Now the step is refused, naming the tensor and entry.  Only the
 * double build can hold such a gradient: a float gradient's square always
 * fits in the double moment (there the parameter check below stands in). */
START_TEST(adam_second_moment_overflow_refused)
{
#if HT_REAL_IS_DOUBLE
    ad_value *p[2] = { vec(true, 1, (double[]){ 1 }), vec(true, 3, (double[]){ 1, 2, 3 }) };
    ad_value *g[2] = { vec(false, 1, (double[]){ 0.5 }), vec(false, 3, (double[]){ 1, 1e308, 1 }) };
    opt_outer o;
    ck_assert_int_eq(opt_outer_init(&o, OPT_ADAM, 0.1, true, 1, p), AD_OK);
    ck_assert_int_eq(opt_outer_add_group(&o, 0.1, true, 1, p + 1), AD_OK);
    snapshot s = snap(&o);
    ck_assert_int_eq(opt_outer_step(&o, g), AD_ENONFINITE);
    expect_message("gradient 1 entry 1 = 1e+308 would make Adam's second moment Inf");
    expect_unchanged(&o, &s);
    /* 1e150 squares to 1e300: finite, so the step is taken and moves that entry. */
    g[1]->data[1] = 1e150;
    ck_assert_int_eq(opt_outer_step(&o, g), AD_OK);
    ck_assert(isfinite(o.v[2]) && o.v[2] > 0);
    tu_expect_close(p[1]->data[1], 2 - 0.1, 4); /* Adam's first step: η0·sign(g) */
    opt_outer_free(&o);
    for (int i = 0; i < 2; i++) ad_value_free(p[i]), ad_value_free(g[i]);
#endif
}
END_TEST

/* An update that would overflow the parameter (SGD, η0 = 1e300 times a
 * gradient of 1e30: Inf in double, and in float), or a parameter that is
 * already NaN: refused, naming the parameter and entry. */
START_TEST(parameter_overflow_refused)
{
    ad_value *p[2] = { vec(true, 2, (double[]){ 1, 2 }), vec(true, 2, (double[]){ 3, 4 }) };
    ad_value *g[2] = { vec(false, 2, (double[]){ 1, 1 }), vec(false, 2, (double[]){ 0, 1e30 }) };
    opt_outer o;
    ck_assert_int_eq(opt_outer_init(&o, OPT_SGD, 1e-3, false, 1, p), AD_OK);
    ck_assert_int_eq(opt_outer_add_group(&o, 1e300, false, 1, p + 1), AD_OK);
    snapshot s = snap(&o);
    ck_assert_int_eq(opt_outer_step(&o, g), AD_ENONFINITE);
    expect_message("the update would make parameter 1 entry 1 -Inf");
    expect_unchanged(&o, &s);
    g[1]->data[1] = 1;
    p[0]->data[1] = (ad_real)NAN;
    s = snap(&o);
    ck_assert_int_eq(opt_outer_step(&o, g), AD_ENONFINITE);
    expect_message("parameter 0 entry 1 NaN");
    ck_assert_int_eq(o.tau, 0);
    ck_assert(isnan(p[0]->data[1]) && p[0]->data[0] == 1 && p[1]->data[0] == 3);
    opt_outer_free(&o);
    for (int i = 0; i < 2; i++) ad_value_free(p[i]), ad_value_free(g[i]);
}
END_TEST

/* Settings a step cannot use, set by hand on a group: AD_EARG naming the
 * group, nothing changed. */
START_TEST(settings_checked)
{
    ad_value *p[2] = { vec(true, 1, (double[]){ 1 }), vec(true, 1, (double[]){ 2 }) };
    ad_value *g[2] = { vec(false, 1, (double[]){ 1 }), vec(false, 1, (double[]){ 1 }) };
    opt_outer o;
    ck_assert_int_eq(opt_outer_init(&o, OPT_ADAM, 0.1, true, 1, p), AD_OK);
    ck_assert_int_eq(opt_outer_add_group(&o, 0.1, true, 1, p + 1), AD_OK);
    snapshot s = snap(&o);
    struct { double *field, value; const char *said; } cases[] = {
        { &o.groups[1].beta1, 1, "group 1: beta1 1 or beta2 0.999 outside [0, 1)" },
        { &o.groups[1].beta2, -0.5, "group 1: beta1 0.9 or beta2 -0.5 outside [0, 1)" },
        { &o.groups[1].eps, 0, "group 1: eps is 0" },
        { &o.groups[0].eta0, INFINITY, "group 0: eta0 is inf" },
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        double keep = *cases[c].field;
        *cases[c].field = cases[c].value;
        ck_assert_int_eq(opt_outer_step(&o, g), AD_EARG);
        expect_message(cases[c].said);
        *cases[c].field = keep;
        expect_unchanged(&o, &s);
    }
    ck_assert_int_eq(opt_outer_step(&o, g), AD_OK);
    opt_outer_free(&o);
    for (int i = 0; i < 2; i++) ad_value_free(p[i]), ad_value_free(g[i]);
}
END_TEST

/* ---- saved states ---------------------------------------------------------------- */

/* o's saved state, in a buffer the caller frees. */
static char *save(const opt_outer *o, size_t *len)
{
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(opt_outer_save(o, f), AD_OK);
    ck_assert_int_eq(fclose(f), 0);
    return buf;
}

static int load(opt_outer *o, const void *buf, size_t len)
{
    FILE *f = fmemopen((void *)buf, len, "rb");
    ck_assert_ptr_nonnull(f);
    int rc = opt_outer_load(o, f);
    fclose(f);
    return rc;
}

/* A version-1 state (the layout every checkpoint used before groups) of Adam
 * over 3 numbers after tau steps, written here from the layout's description
 * in outer.c. */
enum { V1_DIM = 3, V1_LEN = 8 + 8 + 32 + 8 + 8 + 16 * V1_DIM };

static void v1_state(unsigned char blob[V1_LEN], int64_t tau)
{
    unsigned char *b = blob;
    int32_t head[2] = { OPT_ADAM, 1 };
    double step[4] = { 0.25, 0.8, 0.99, 1e-6 };
    double mv[2 * V1_DIM] = { 0.1, -0.2, 0.3, 0.01, 0.04, 0.09 };
    uint64_t dim = V1_DIM;
    memcpy(b, "HTOPTOU1", 8), b += 8;
    memcpy(b, head, sizeof head), b += sizeof head;
    memcpy(b, step, sizeof step), b += sizeof step;
    memcpy(b, &dim, sizeof dim), b += sizeof dim;
    memcpy(b, &tau, sizeof tau), b += sizeof tau;
    memcpy(b, mv, sizeof mv);
}

/* A state of one group is written in layout version 1: a hand-written one
 * loads, and saving it again gives the same bytes. */
START_TEST(one_group_is_version_1)
{
    unsigned char blob[V1_LEN];
    v1_state(blob, 7);
    ad_value *p[2] = { vec(true, 1, (double[]){ 1 }), vec(true, 2, (double[]){ 2, 3 }) };
    opt_outer o;
    ck_assert_int_eq(opt_outer_init(&o, OPT_ADAM, 1, false, 2, p), AD_OK);
    ck_assert_int_eq(load(&o, blob, sizeof blob), AD_OK);
    ck_assert_int_eq(o.tau, 7);
    ck_assert(o.groups[0].eta0 == 0.25 && o.groups[0].sqrt_decay && o.groups[0].beta1 == 0.8 &&
              o.groups[0].beta2 == 0.99 && o.groups[0].eps == 1e-6);
    ck_assert(o.m[1] == -0.2 && o.v[2] == 0.09);
    size_t len;
    char *again = save(&o, &len);
    ck_assert_uint_eq(len, V1_LEN);
    ck_assert(memcmp(again, blob, len) == 0);
    free(again);
    /* A version-1 state does not fit an optimizer of two groups, even of the same size. */
    opt_outer two;
    ck_assert_int_eq(opt_outer_init(&two, OPT_ADAM, 1, false, 1, p), AD_OK);
    ck_assert_int_eq(opt_outer_add_group(&two, 1, false, 1, p + 1), AD_OK);
    ck_assert_int_eq(load(&two, blob, sizeof blob), AD_EFORMAT);
    expect_message("in 1 groups, this one of kind 1 over 3 in 2");
    opt_outer_free(&o), opt_outer_free(&two);
    ad_value_free(p[0]), ad_value_free(p[1]);
}
END_TEST

/* The step count: a state of INT_MAX steps could not step again (τ + 1
 * overflows), so load refuses it; one fewer loads, steps once, and then
 * the step is refused.  (fuzz-ckpt found the first: regress/ckpt/
 * adam-steps-int-max.bin.) */
START_TEST(step_count_bounds)
{
    unsigned char blob[V1_LEN];
    ad_value *p = vec(true, 3, (double[]){ 1, 2, 3 }), *g = vec(false, 3, (double[]){ 1, 1, 1 });
    opt_outer o;
    ck_assert_int_eq(opt_outer_init(&o, OPT_ADAM, 1, false, 1, &p), AD_OK);
    v1_state(blob, INT_MAX);
    ck_assert_int_eq(load(&o, blob, sizeof blob), AD_EFORMAT);
    expect_message("the step count is 2147483647");
    v1_state(blob, -1);
    ck_assert_int_eq(load(&o, blob, sizeof blob), AD_EFORMAT);
    ck_assert_int_eq(o.tau, 0);
    v1_state(blob, INT_MAX - 1);
    ck_assert_int_eq(load(&o, blob, sizeof blob), AD_OK);
    ck_assert_int_eq(opt_outer_step(&o, &g), AD_OK);
    ck_assert_int_eq(o.tau, INT_MAX);
    snapshot s = snap(&o);
    ck_assert_int_eq(opt_outer_step(&o, &g), AD_EARG);
    expect_message("no more can be counted");
    expect_unchanged(&o, &s);
    opt_outer_free(&o);
    ad_value_free(p), ad_value_free(g);
}
END_TEST

/* Several groups: version 2.  A loaded state continues exactly as the saved
 * one, its settings and τ restored; states of other groups, cut short or
 * holding a setting no optimizer can use are refused, o unchanged. */
START_TEST(groups_save_load)
{
    const double v0[4] = { 1, -1, 0.5, 2 };
    ad_value *p[3] = { vec(true, 2, v0), vec(true, 1, v0 + 2), vec(true, 1, v0 + 3) };
    ad_value *q[3] = { vec(true, 2, v0), vec(true, 1, v0 + 2), vec(true, 1, v0 + 3) };
    ad_value *g[3] = { vec(false, 2, (double[]){ 0.3, -1 }), vec(false, 1, (double[]){ 2 }),
                       vec(false, 1, (double[]){ -0.7 }) };
    opt_outer a, b;
    ck_assert_int_eq(opt_outer_init(&a, OPT_ADAM, 0.1, true, 1, p), AD_OK);
    ck_assert_int_eq(opt_outer_add_group(&a, 0.01, false, 2, p + 1), AD_OK);
    a.groups[1].beta2 = 0.9;
    ck_assert_int_eq(opt_outer_init(&b, OPT_ADAM, 3, false, 1, q), AD_OK);
    ck_assert_int_eq(opt_outer_add_group(&b, 3, true, 2, q + 1), AD_OK);
    for (int i = 0; i < 3; i++) ck_assert_int_eq(opt_outer_step(&a, g), AD_OK);
    size_t len;
    char *buf = save(&a, &len);
    ck_assert(memcmp(buf, "HTOPTOU2", 8) == 0);
    /* magic, kind and n_groups, dim, tau, 2 × (n, sqrt_decay, dim, 4 settings), m, v */
    ck_assert_uint_eq(len, 8 + 8 + 8 + 8 + 2 * (8 + 8 + 32) + 2 * 4 * 8);
    ck_assert_int_eq(load(&b, buf, len), AD_OK);
    ck_assert_int_eq(b.tau, 3);
    ck_assert(same_group(&b.groups[0], &a.groups[0]) && same_group(&b.groups[1], &a.groups[1]));
    for (int i = 0; i < 3; i++) memcpy(q[i]->data, p[i]->data, sizeof(ad_real) * p[i]->size);
    ck_assert_int_eq(opt_outer_step(&a, g), AD_OK);
    ck_assert_int_eq(opt_outer_step(&b, g), AD_OK);
    for (int i = 0; i < 3; i++)
        ck_assert(memcmp(p[i]->data, q[i]->data, sizeof(ad_real) * p[i]->size) == 0);

    snapshot s = snap(&b);
    /* group 1's beta2: after magic, head, dim, tau (32), group 0 (48), group 1's n, sqrt_decay,
     * dim (16), eta0, beta1 (16) */
    double *beta2 = (double *)(buf + 32 + 48 + 16 + 16), keep = *beta2;
    *beta2 = 1;
    ck_assert_int_eq(load(&b, buf, len), AD_EFORMAT);
    expect_message("group 1: beta1 0.9 or beta2 1 outside [0, 1)");
    *beta2 = keep;
    ck_assert_int_eq(load(&b, buf, len - 8), AD_EFORMAT);
    expect_message("ends within Adam's second moment");
    ck_assert_int_eq(load(&b, buf, 40), AD_EFORMAT);
    expect_message("ends within a group's");
    expect_unchanged(&b, &s);
    /* the same three tensors split otherwise: {p0, p1}, {p2} */
    opt_outer c;
    ck_assert_int_eq(opt_outer_init(&c, OPT_ADAM, 0.1, true, 2, q), AD_OK);
    ck_assert_int_eq(opt_outer_add_group(&c, 0.1, true, 1, q + 2), AD_OK);
    ck_assert_int_eq(load(&c, buf, len), AD_EFORMAT);
    expect_message("group 0 of the state has 1 tensors over 2 numbers, this one's 2 over 3");
    ck_assert_int_eq(c.tau, 0);
    opt_outer_free(&c);
    /* one group over the same numbers: refused too */
    ck_assert_int_eq(opt_outer_init(&c, OPT_ADAM, 0.1, true, 3, q), AD_OK);
    ck_assert_int_eq(load(&c, buf, len), AD_EFORMAT);
    expect_message("in 2 groups, this one of kind 1 over 4 in 1");
    opt_outer_free(&c);
    /* SGD: no moments, the groups' settings still restored */
    opt_outer sa, sb;
    ck_assert_int_eq(opt_outer_init(&sa, OPT_SGD, 0.1, true, 1, p), AD_OK);
    ck_assert_int_eq(opt_outer_add_group(&sa, 0.2, false, 2, p + 1), AD_OK);
    ck_assert_int_eq(opt_outer_init(&sb, OPT_SGD, 1, false, 1, q), AD_OK);
    ck_assert_int_eq(opt_outer_add_group(&sb, 1, true, 2, q + 1), AD_OK);
    ck_assert_int_eq(opt_outer_step(&sa, g), AD_OK);
    free(buf);
    buf = save(&sa, &len);
    ck_assert_uint_eq(len, 8 + 8 + 8 + 8 + 2 * (8 + 8 + 32));
    ck_assert_int_eq(load(&sb, buf, len), AD_OK);
    ck_assert(sb.tau == 1 && sb.groups[1].eta0 == 0.2 && !sb.groups[1].sqrt_decay);
    ck_assert_int_eq(load(&b, buf, len), AD_EFORMAT); /* an SGD state into Adam */
    free(buf);
    opt_outer_free(&a), opt_outer_free(&b), opt_outer_free(&sa), opt_outer_free(&sb);
    for (int i = 0; i < 3; i++) ad_value_free(p[i]), ad_value_free(q[i]), ad_value_free(g[i]);
}
END_TEST

/* ---- NULL arguments ---------------------------------------------------------------- */

START_TEST(null_arguments)
{
    ad_value *p = vec(true, 2, (double[]){ 1, 2 }), *g = vec(false, 2, (double[]){ 1, 1 });
    opt_outer o, z = { 0 };
    ck_assert_int_eq(opt_outer_init(NULL, OPT_SGD, 0.1, true, 1, &p), AD_EARG);
    ck_assert_int_eq(opt_outer_init(&o, OPT_SGD, 0.1, true, 1, NULL), AD_EARG);
    ck_assert_int_eq(opt_outer_init(&o, (opt_kind)7, 0.1, true, 1, &p), AD_EARG);
    expect_message("unknown kind 7");
    ck_assert_int_eq(opt_outer_step(NULL, &g), AD_EARG);
    ck_assert_int_eq(opt_outer_step(&z, &g), AD_EARG);
    expect_message("not initialized");
    ck_assert_int_eq(opt_outer_init(&o, OPT_ADAM, 0.1, true, 1, &p), AD_OK);
    ck_assert_int_eq(opt_outer_step(&o, NULL), AD_EARG);
    ck_assert_int_eq(opt_outer_step(&o, (ad_value *[]){ NULL }), AD_EARG);
    expect_message("gradient 0 is NULL");
    ad_value *short_g = vec(false, 1, (double[]){ 1 });
    ck_assert_int_eq(opt_outer_step(&o, &short_g), AD_ESHAPE);
    ck_assert_int_eq(o.tau, 0);
    ck_assert_int_eq(opt_outer_save(NULL, stdout), AD_EARG);
    ck_assert_int_eq(opt_outer_save(&o, NULL), AD_EARG);
    ck_assert_int_eq(opt_outer_save(&z, stdout), AD_EARG);
    ck_assert_int_eq(opt_outer_load(NULL, stdin), AD_EARG);
    ck_assert_int_eq(opt_outer_load(&o, NULL), AD_EARG);
    ck_assert_int_eq(opt_outer_load(&z, stdin), AD_EARG);
    ck_assert(opt_outer_eta0_for_norm(OPT_ADAM, 1, NULL, 1) == 0);
    expect_message("eta0_for_norm: no gradients");
    ck_assert(opt_outer_eta0_for_norm(OPT_ADAM, 1, (ad_value *[]){ NULL }, 1) == 0);
    expect_message("gradient 0 is NULL");
    /* η0 from the gradients: Adam's first update η0·g/(|g| + ε) has norm target */
    tu_expect_close(opt_outer_eta0_for_norm(OPT_ADAM, 1, &g, 2), sqrt(2.0) * (1 + 1e-8), 4);
    tu_expect_close(opt_outer_eta0_for_norm(OPT_SGD, 1, &g, 2), sqrt(2.0), 4);
    opt_outer_free(&o);
    opt_outer_free(&o); /* twice, zeroed, NULL: harmless */
    opt_outer_free(&z);
    opt_outer_free(NULL);
    ad_value_free(p), ad_value_free(g), ad_value_free(short_g);
}
END_TEST

Suite *outer_suite(void);
Suite *outer_suite(void)
{
    Suite *s = suite_create("outer");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, updates_against_plain_c);
    tcase_add_test(tc, groups_match_separate_optimizers);
    tcase_add_test(tc, groups_refused);
    tcase_add_test(tc, nonfinite_gradient_refused);
    tcase_add_test(tc, adam_second_moment_overflow_refused);
    tcase_add_test(tc, parameter_overflow_refused);
    tcase_add_test(tc, settings_checked);
    tcase_add_test(tc, one_group_is_version_1);
    tcase_add_test(tc, step_count_bounds);
    tcase_add_test(tc, groups_save_load);
    tcase_add_test(tc, null_arguments);
    suite_add_tcase(s, tc);
    return s;
}
