/* test_models.c — the graph builders of models/: parameter lists and their
 * initialisation, hand-computed forwards of the linear model, the MLP and
 * one conv block, the CNN against its own composition, first- and
 * second-order gradient checks (including a hypergradient through one inner
 * step of the CNN), parameter counts of the paper's network, and the error
 * messages. */
#include <check.h>
#include <math.h>
#include <string.h>

#include "gradcheck.h"
#include "testutil.h"
#include "models/models.h"
#include "ops/ops.h"

static void expect_same(const ad_value *a, const ad_value *b)
{
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert(ad_same_shape(a, b));
    for (size_t i = 0; i < a->size; i++)
        ck_assert_msg(a->data[i] == b->data[i], "entry %zu: %.17g vs %.17g", i,
                      (double)a->data[i], (double)b->data[i]);
}

/* The call failed and the message contains `want`. */
static void expect_fail(int rc, const char *want)
{
    ck_assert_int_ne(rc, AD_OK);
    ck_assert_msg(strstr(ad_error(), want) != NULL, "message \"%s\" lacks \"%s\"", ad_error(), want);
}

/* A caller-owned [rank,shape] leaf holding `data`. */
static ad_value *leaf(int rank, const int *shape, const ad_real *data)
{
    return ad_param_from(rank, shape, data);
}

/* ---- parameter lists --------------------------------------------------- */

START_TEST(shapes_of_each_model)
{
    mdl_shapes s;
    ck_assert_int_eq(mdl_linear_shapes(&(mdl_linear){ .in = 3, .out = 2 }, &s), AD_OK);
    ck_assert_int_eq(s.n, 2);
    ck_assert_str_eq(s.name[0], "W");
    ck_assert_int_eq(s.shape[0][0], 2);
    ck_assert_int_eq(s.shape[0][1], 3);
    ck_assert_int_eq(s.init[0], MDL_INIT_GLOROT);
    ck_assert_int_eq(s.rank[1], 1);
    ck_assert_int_eq(s.init[1], MDL_INIT_ZEROS);
    ck_assert_uint_eq(mdl_shapes_numel(&s, 0, s.n), 8);
    ck_assert_int_eq(mdl_linear_shapes(&(mdl_linear){ .in = 3, .out = 2, .no_bias = true }, &s), AD_OK);
    ck_assert_int_eq(s.n, 1);

    /* relu hidden layers start He, the logit layer Glorot */
    mdl_mlp m = { .n_layers = 3, .sizes = { 5, 4, 3, 2 }, .act = MDL_RELU };
    ck_assert_int_eq(mdl_mlp_shapes(&m, &s), AD_OK);
    ck_assert_int_eq(s.n, 6);
    ck_assert_str_eq(s.name[2], "layer 2 W");
    ck_assert_str_eq(s.name[5], "layer 3 b");
    ck_assert_int_eq(s.shape[2][0], 3);
    ck_assert_int_eq(s.shape[2][1], 4);
    ck_assert_int_eq(s.init[0], MDL_INIT_HE);
    ck_assert_int_eq(s.init[2], MDL_INIT_HE);
    ck_assert_int_eq(s.init[4], MDL_INIT_GLOROT);
    ck_assert_uint_eq(mdl_shapes_numel(&s, 0, s.n), 5 * 4 + 4 + 4 * 3 + 3 + 3 * 2 + 2);
    m.act = MDL_TANH;
    m.no_bias = true;
    ck_assert_int_eq(mdl_mlp_shapes(&m, &s), AD_OK);
    ck_assert_int_eq(s.n, 3);
    ck_assert_int_eq(s.init[0], MDL_INIT_GLOROT);

    mdl_cnn net = mdl_cnn_omniglot(64);
    ck_assert_int_eq(mdl_cnn_shapes(&net, &s), AD_OK);
    ck_assert_int_eq(s.n, 4 * 4 + 2);
    ck_assert_str_eq(s.name[4], "block 2 W");
    ck_assert_str_eq(s.name[6], "block 2 gamma");
    ck_assert_str_eq(s.name[16], "classifier W");
    const int w1[4] = { 64, 1, 3, 3 }, w2[4] = { 64, 64, 3, 3 };
    for (int d = 0; d < 4; d++) {
        ck_assert_int_eq(s.shape[0][d], w1[d]);
        ck_assert_int_eq(s.shape[12][d], w2[d]);
    }
    ck_assert_int_eq(s.shape[16][0], 5);
    ck_assert_int_eq(s.shape[16][1], 64); /* 28 -> 14 -> 7 -> 3 -> 1 */
    ck_assert_int_eq(s.init[0], MDL_INIT_HE);
    ck_assert_int_eq(s.init[1], MDL_INIT_ZEROS);
    ck_assert_int_eq(s.init[2], MDL_INIT_ONES);
    ck_assert_int_eq(s.init[3], MDL_INIT_ZEROS);
    ck_assert_int_eq(s.init[16], MDL_INIT_GLOROT);
    static const int maps[5][3] = { { 1, 28, 28 }, { 64, 14, 14 }, { 64, 7, 7 }, { 64, 3, 3 },
                                    { 64, 1, 1 } };
    for (int b = 0; b <= 4; b++) {
        int chw[3];
        ck_assert_int_eq(mdl_cnn_map_shape(&net, b, chw), AD_OK);
        for (int d = 0; d < 3; d++) ck_assert_int_eq(chw[d], maps[b][d]);
    }
    /* The centres of a Σ ρ_j ‖w_j − c_j‖² regulariser: the task tensors. */
    mdl_shapes c;
    ck_assert_int_eq(mdl_shapes_slice(&s, 8, 10, &c), AD_OK);
    ck_assert_int_eq(c.n, 10);
    ck_assert_str_eq(c.name[0], "block 3 W");
    ck_assert_uint_eq(mdl_shapes_numel(&c, 0, c.n), mdl_shapes_numel(&s, 8, 10));
    ck_assert_uint_eq(mdl_shapes_numel(&s, 8, 11), 0); /* out of range */
}
END_TEST

/* The paper: "≈ 110k hyperparameters and ≈ 75k parameters". */
START_TEST(cnn_parameter_counts)
{
    size_t rep, task;
    mdl_cnn net = mdl_cnn_omniglot(64);
    ck_assert_int_eq(mdl_cnn_counts(&net, &rep, &task), AD_OK);
    /* block 1: 64·9 + 3·64; block 2: 64·64·9 + 3·64 */
    ck_assert_uint_eq(rep, 768 + 37056);
    /* blocks 3, 4 as block 2, and the classifier 5·64 + 5 */
    ck_assert_uint_eq(task, 2 * 37056 + 325);
    ck_assert_uint_eq(rep + task + 3, 112264); /* λ: representation, centres, 3 ρ */
    net = mdl_cnn_omniglot(8);
    ck_assert_int_eq(mdl_cnn_counts(&net, &rep, &task), AD_OK);
    ck_assert_uint_eq(rep, (8 * 9 + 24) + (8 * 8 * 9 + 24));
    ck_assert_uint_eq(task, 2 * (8 * 8 * 9 + 24) + 5 * 8 + 5);
    ck_assert_int_eq(mdl_cnn_counts(&net, NULL, &task), AD_OK);
}
END_TEST

START_TEST(init_params_kinds)
{
    mdl_shapes s;
    mdl_cnn net = mdl_cnn_omniglot(64);
    ck_assert_int_eq(mdl_cnn_shapes(&net, &s), AD_OK);
    ad_value *p[MDL_MAX_PARAMS], *q[MDL_MAX_PARAMS];
    ad_rng rng;
    ad_rng_seed(&rng, 7);
    ck_assert_int_eq(mdl_init_params(&s, &rng, p, true), AD_OK);
    /* He on block 2 W: uniform in ±√(6/576); Glorot on the classifier:
     * ±√(6/(64 + 5)).  Check the bound, that it is nearly reached, and the
     * variance bound²/3 (36 864 draws: within a few per cent). */
    const int which[2] = { 4, 16 };
    const double bound[2] = { sqrt(6.0 / 576), sqrt(6.0 / 69) };
    for (int k = 0; k < 2; k++) {
        const ad_value *w = p[which[k]];
        double mx = 0, s2 = 0;
        for (size_t i = 0; i < w->size; i++) {
            mx = fmax(mx, fabs((double)w->data[i]));
            s2 += (double)w->data[i] * w->data[i];
        }
        ck_assert_double_le(mx, bound[k]);
        ck_assert_double_ge(mx, 0.9 * bound[k]);
        if (k == 0) ck_assert_double_le(fabs(s2 / w->size / (bound[k] * bound[k] / 3) - 1), 0.03);
    }
    for (int i = 0; i < s.n; i++) {
        ck_assert(p[i]->requires_grad);
        ck_assert_int_eq(p[i]->rank, s.rank[i]);
        if (s.init[i] == MDL_INIT_ZEROS || s.init[i] == MDL_INIT_ONES)
            for (size_t j = 0; j < p[i]->size; j++)
                ck_assert(p[i]->data[j] == (s.init[i] == MDL_INIT_ONES ? 1 : 0));
    }
    /* A seed gives the same parameters bit for bit. */
    ad_rng_seed(&rng, 7);
    ck_assert_int_eq(mdl_init_params(&s, &rng, q, false), AD_OK);
    for (int i = 0; i < s.n; i++) {
        ck_assert(!q[i]->requires_grad);
        expect_same(p[i], q[i]);
    }
    mdl_free_params(s.n, q);
    ck_assert_ptr_null(q[0]);
    ad_rng_seed(&rng, 8);
    ck_assert_int_eq(mdl_init_params(&s, &rng, q, false), AD_OK);
    ck_assert(p[0]->data[0] != q[0]->data[0]);
    mdl_free_params(s.n, q);
    mdl_free_params(s.n, p);
}
END_TEST

/* ---- forwards: hand-computed values ------------------------------------ */

START_TEST(linear_forward_values)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    mdl_linear m = { .in = 3, .out = 2 };
    ad_value *x = ad_const(tp, 2, (int[]){ 2, 3 }, (ad_real[]){ 1, 2, 3, -1, 0, 4 });
    ad_value *p[2] = { leaf(2, (int[]){ 2, 3 }, (ad_real[]){ 1, 0, -1, 0.5, 2, 1 }),
                       leaf(1, (int[]){ 2 }, (ad_real[]){ 0.5, -1 }) };
    /* row 0: (1 − 3) + 0.5, (0.5 + 4 + 3) − 1; row 1: (−1 − 4) + 0.5, (−0.5 + 4) − 1 */
    ad_value *y = mdl_linear_forward(tp, &m, x, p);
    tu_expect_shape(y, 2, (int[]){ 2, 2 });
    tu_expect_values(y, (double[]){ -1.5, 6.5, -4.5, 2.5 }, 4, 0);
    m.no_bias = true;
    tu_expect_values(mdl_linear_forward(tp, &m, x, p), (double[]){ -2, 7.5, -5, 3.5 }, 4, 0);
    ad_tape_free(tp);
    mdl_free_params(2, p);
}
END_TEST

START_TEST(mlp_forward_values)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    mdl_mlp m = { .n_layers = 2, .sizes = { 2, 2, 1 }, .act = MDL_TANH };
    ad_value *x = ad_const(tp, 2, (int[]){ 2, 2 }, (ad_real[]){ 1, -1, 0.5, 2 });
    ad_value *p[4] = { leaf(2, (int[]){ 2, 2 }, (ad_real[]){ 1, 2, 0, -1 }),
                       leaf(1, (int[]){ 2 }, (ad_real[]){ 0, 0.5 }),
                       leaf(2, (int[]){ 1, 2 }, (ad_real[]){ 2, -1 }),
                       leaf(1, (int[]){ 1 }, (ad_real[]){ 0.25 }) };
    /* hidden pre-activations: x₀ -> (1 − 2, 1 + 0.5) = (−1, 1.5);
     *                         x₁ -> (0.5 + 4, −2 + 0.5) = (4.5, −1.5) */
    ad_value *y = mdl_mlp_forward(tp, &m, x, p);
    tu_expect_shape(y, 2, (int[]){ 2, 1 });
    tu_expect_values(y, (double[]){ 2 * tanh(-1.0) - tanh(1.5) + 0.25, 2 * tanh(4.5) - tanh(-1.5) + 0.25 },
                     2, TU_TOL(8));
    m.act = MDL_RELU; /* (0, 1.5) and (4.5, 0) */
    tu_expect_values(mdl_mlp_forward(tp, &m, x, p), (double[]){ -1.5 + 0.25, 9 + 0.25 }, 2, 0);
    ad_tape_free(tp);
    mdl_free_params(4, p);
}
END_TEST

START_TEST(conv_block_values)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    /* A 1×1 kernel 2, bias 1: conv = 2x + 1; each 2×2 image pools to its
     * maximum, 11 and 9; batch-norm over those two: mean 10, variance 1, so
     * ±1/√(1 + eps); then γ = 3, β = 0.5 and relu. */
    ad_value *x = ad_const(tp, 4, (int[]){ 2, 1, 2, 2 }, (ad_real[]){ 1, 5, 2, 3, 4, 0, -1, 2 });
    ad_value *W = ad_const(tp, 4, (int[]){ 1, 1, 1, 1 }, (ad_real[]){ 2 });
    ad_value *b = ad_const(tp, 1, (int[]){ 1 }, (ad_real[]){ 1 });
    ad_value *g = ad_const(tp, 1, (int[]){ 1 }, (ad_real[]){ 3 });
    ad_value *be = ad_const(tp, 1, (int[]){ 1 }, (ad_real[]){ 0.5 });
    ad_value *y = mdl_conv_block(tp, x, W, b, g, be);
    tu_expect_shape(y, 4, (int[]){ 2, 1, 1, 1 });
    tu_expect_values(y, (double[]){ 0.5 + 3 / sqrt(1 + MDL_BN_EPS), 0 }, 2, TU_TOL(16));
    /* no bias: the same, as batch-norm removes it */
    tu_expect_values(mdl_conv_block(tp, x, W, NULL, g, be),
                     (double[]){ (double)y->data[0], (double)y->data[1] }, 2, TU_TOL(16));
    /* A 3×3 kernel on random data: exactly the ops composed by hand. */
    ad_rng rng;
    ad_rng_seed(&rng, 5);
    ad_value *x3 = ad_tensor_randn(&rng, 4, (int[]){ 3, 2, 6, 5 }, 1);
    ad_value *W3 = ad_tensor_randn(&rng, 4, (int[]){ 4, 2, 3, 3 }, 1);
    ad_value *v4[3] = { ad_tensor_randn(&rng, 1, (int[]){ 4 }, 1),
                        ad_tensor_rand(&rng, 1, (int[]){ 4 }, 0.5, 2),
                        ad_tensor_randn(&rng, 1, (int[]){ 4 }, 1) };
    ad_value *want = ad_relu(tp, ad_batchnorm(tp, ad_maxpool2d(tp, ad_conv2d(tp, x3, W3, v4[0], 1, 1),
                                                               2, 2), v4[1], v4[2], MDL_BN_EPS));
    ad_value *got = mdl_conv_block(tp, x3, W3, v4[0], v4[1], v4[2]);
    tu_expect_shape(got, 4, (int[]){ 3, 4, 3, 2 });
    expect_same(got, want);
    ad_tape_free(tp);
    ad_value_free(x3);
    ad_value_free(W3);
    mdl_free_params(3, v4);
}
END_TEST

/* The network is its blocks composed: 4 blocks and the classifier by hand,
 * the two halves, and the whole in one call all agree exactly. */
START_TEST(cnn_forward_composition)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    mdl_cnn net = mdl_cnn_omniglot(8);
    mdl_shapes s;
    ck_assert_int_eq(mdl_cnn_shapes(&net, &s), AD_OK);
    ad_value *p[MDL_MAX_PARAMS];
    ad_rng rng;
    ad_rng_seed(&rng, 11);
    ck_assert_int_eq(mdl_init_params(&s, &rng, p, true), AD_OK);
    for (int b = 0; b < 4; b++) /* move γ and β off 1 and 0 */
        for (int k = 2; k < 4; k++)
            for (size_t j = 0; j < p[4 * b + k]->size; j++)
                p[4 * b + k]->data[j] += (ad_real)(0.3 * ad_rng_normal(&rng));
    ad_value *x = ad_tensor_rand(&rng, 4, (int[]){ 3, 1, 28, 28 }, 0, 1);

    ad_value *h = x;
    for (int b = 0; b < 4; b++) h = mdl_conv_block(tp, h, p[4 * b], p[4 * b + 1], p[4 * b + 2],
                                                   p[4 * b + 3]);
    tu_expect_shape(h, 4, (int[]){ 3, 8, 1, 1 });
    ad_value *want = ad_linear(tp, ad_reshape(tp, h, 2, (int[]){ 3, 8 }), p[16], p[17]);

    ad_value *y = mdl_cnn_forward(tp, &net, x, p, p + 8);
    tu_expect_shape(y, 2, (int[]){ 3, 5 });
    expect_same(y, want);
    ad_value *rep = mdl_cnn_rep_forward(tp, &net, x, p);
    tu_expect_shape(rep, 4, (int[]){ 3, 8, 7, 7 });
    expect_same(mdl_cnn_task_forward(tp, &net, rep, p + 8), want);
    /* No representation: rep may be NULL and task is the whole list. */
    net.n_rep = 0;
    expect_same(mdl_cnn_forward(tp, &net, x, NULL, p), want);
    ck_assert_ptr_eq(mdl_cnn_rep_forward(tp, &net, x, NULL), x);
    net.n_rep = 4; /* only the classifier is task */
    expect_same(mdl_cnn_forward(tp, &net, x, p, p + 16), want);
    ad_tape_free(tp);
    ad_value_free(x);
    mdl_free_params(s.n, p);
}
END_TEST

/* ---- gradients --------------------------------------------------------- */

static ad_value *call_linear(ad_tape *tp, ad_value *const *x, void *ctx)
{
    return mdl_linear_forward(tp, ctx, x[0], x + 1);
}

static ad_value *call_mlp(ad_tape *tp, ad_value *const *x, void *ctx)
{
    return mdl_mlp_forward(tp, ctx, x[0], x + 1);
}

START_TEST(linear_gradients)
{
    ad_rng rng;
    ad_rng_seed(&rng, 101);
    mdl_linear m = { .in = 4, .out = 3 };
    ad_value *x[3] = { gc_param(&rng, 2, (int[]){ 5, 4 }, -1, 1, 0),
                       gc_param(&rng, 2, (int[]){ 3, 4 }, -1, 1, 0),
                       gc_param(&rng, 1, (int[]){ 3 }, -1, 1, 0) };
    ck_assert_int_eq(gc_check("linear model", call_linear, &m, 3, x, NULL), 0);
    mdl_free_params(3, x);
}
END_TEST

START_TEST(mlp_tanh_gradients)
{
    ad_rng rng;
    ad_rng_seed(&rng, 102);
    mdl_mlp m = { .n_layers = 2, .sizes = { 3, 4, 2 }, .act = MDL_TANH };
    ad_value *x[5] = { gc_param(&rng, 2, (int[]){ 3, 3 }, -1, 1, 0),
                       gc_param(&rng, 2, (int[]){ 4, 3 }, -1, 1, 0),
                       gc_param(&rng, 1, (int[]){ 4 }, -1, 1, 0),
                       gc_param(&rng, 2, (int[]){ 2, 4 }, -1, 1, 0),
                       gc_param(&rng, 1, (int[]){ 2 }, -1, 1, 0) };
    ck_assert_int_eq(gc_check("mlp tanh", call_mlp, &m, 5, x, NULL), 0);
    mdl_free_params(5, x);
}
END_TEST

/* A 2-block CNN with 2 channels on one 8×8 image (8 -> 4 -> 2), 3 classes,
 * cross-entropy.  all[0] is the image, all[1..10] the parameter list; gc
 * takes at most 8 inputs, so each case names which of all[] it moves. */
typedef struct cnn_case {
    mdl_cnn net;
    ad_value *all[11];
    ad_value *labels;
    int n, idx[8];
} cnn_case;

static ad_value *call_cnn(ad_tape *tp, ad_value *const *x, void *ctx)
{
    const cnn_case *c = ctx;
    ad_value *v[11];
    memcpy(v, c->all, sizeof v);
    for (int k = 0; k < c->n; k++) v[c->idx[k]] = x[k];
    ad_value *logits = mdl_cnn_forward(tp, &c->net, v[0], v + 1, v + 1 + 4 * c->net.n_rep);
    return ad_cross_entropy(tp, logits, c->labels, NULL, AD_REDUCE_SUM);
}

/* x and block 1; block 2 and the classifier; a mix across all layers.
 * Never the conv biases (all[2], all[6]): each conv is followed by max-pool
 * then batch-norm, which removes any per-channel constant, so their gradient
 * is identically zero and a wrong bias rule would pass here.  The nn
 * suite's conv2d-with-bias check is the check of that rule. */
static const struct { int n, idx[8]; } cnn_groups[] = {
    { 4, { 0, 1, 3, 4 } },
    { 5, { 5, 7, 8, 9, 10 } },
    { 8, { 1, 3, 4, 5, 7, 8, 9, 10 } },
};

static void cnn_case_init(cnn_case *c, ad_rng *rng, int N)
{
    c->net = (mdl_cnn){ .in_channels = 1, .height = 8, .width = 8, .channels = 2,
                        .n_blocks = 2, .n_classes = 3, .n_rep = 1 };
    mdl_shapes s;
    ck_assert_int_eq(mdl_cnn_shapes(&c->net, &s), AD_OK);
    ck_assert_int_eq(s.n, 10);
    c->all[0] = gc_param(rng, 4, (int[]){ N, 1, 8, 8 }, -1, 1, 0);
    for (int i = 0; i < s.n; i++) { /* γ around 1, everything else around 0 */
        bool gamma = i % 4 == 2 && i < 8;
        c->all[1 + i] = gc_param(rng, s.rank[i], s.shape[i], gamma ? 0.5 : -1, gamma ? 1.5 : 1, 0);
    }
    ad_real lab[4] = { 2, 0, 1, 1 };
    c->labels = ad_tensor_from(1, (int[]){ N }, lab);
}

static void cnn_case_free(cnn_case *c)
{
    mdl_free_params(11, c->all);
    ad_value_free(c->labels);
}

START_TEST(cnn_gradients)
{
    ad_rng rng;
    ad_rng_seed(&rng, 103);
    cnn_case c;
    cnn_case_init(&c, &rng, 1);
    c.n = cnn_groups[_i].n;
    ad_value *x[8];
    for (int k = 0; k < c.n; k++) x[k] = c.all[c.idx[k] = cnn_groups[_i].idx[k]];
    ck_assert_msg(gc_check("cnn", call_cnn, &c, c.n, x, NULL) == 0, "cnn group %d", _i);
    cnn_case_free(&c);
}
END_TEST

/* The one-shot experiment's hypergradient in miniature: λ is block 1 (the
 * representation), w block 2 and the classifier; one inner step
 * w₁ = w − η ∇w CE(support) and the outer loss CE(query; λ, w₁).  Its
 * gradient in λ needs the CNN's mixed second derivatives, and gc's
 * second-order check the third.  Checked in λ's W, γ and β: block 1's conv
 * bias has a zero gradient (batch-norm follows; see cnn_groups). */
typedef struct hyper_case {
    cnn_case c; /* all[0] the support images, all[1..4] λ, all[5..10] w */
    ad_value *query, *query_labels;
} hyper_case;

static ad_value *call_hyper(ad_tape *tp, ad_value *const *x, void *ctx)
{
    const hyper_case *h = ctx;
    ad_value *const lam[4] = { x[0], h->c.all[2], x[1], x[2] }; /* W, b (fixed), γ, β */
    bool paused = !ad_tape_recording(tp); /* gc evaluates L without recording */
    if (paused) ad_no_record_end(tp);
    ad_value *const *w = h->c.all + 5;
    ad_value *gw[6], *w1[6], *out = NULL;
    ad_value *inner = ad_cross_entropy(tp, mdl_cnn_forward(tp, &h->c.net, h->c.all[0], lam, w),
                                       h->c.labels, NULL, AD_REDUCE_MEAN);
    if (inner && ad_grad(tp, inner, 6, w, gw, true) == AD_OK) {
        for (int i = 0; i < 6; i++) w1[i] = ad_sub(tp, w[i], ad_scale(tp, gw[i], 0.5));
        out = ad_cross_entropy(tp, mdl_cnn_forward(tp, &h->c.net, h->query, lam, w1),
                               h->query_labels, NULL, AD_REDUCE_MEAN);
    }
    if (paused) ad_no_record_begin(tp);
    return out;
}

START_TEST(cnn_hypergradient_one_step)
{
    ad_rng rng;
    ad_rng_seed(&rng, 104);
    hyper_case h;
    cnn_case_init(&h.c, &rng, 3);
    h.query = ad_tensor_rand(&rng, 4, (int[]){ 3, 1, 8, 8 }, -1, 1);
    h.query_labels = ad_tensor_from(1, (int[]){ 3 }, (ad_real[]){ 1, 2, 0 });
    ck_assert_int_eq(gc_check("cnn hypergradient", call_hyper, &h, 3,
                              (ad_value *[]){ h.c.all[1], h.c.all[3], h.c.all[4] }, NULL), 0);
    cnn_case_free(&h.c);
    ad_value_free(h.query);
    ad_value_free(h.query_labels);
}
END_TEST

/* ---- errors ------------------------------------------------------------ */

START_TEST(param_list_errors)
{
    mdl_shapes s = { 0 };
    expect_fail(mdl_shapes_add(&s, "v", 1, (int[]){ 0 }, MDL_INIT_ZEROS), "shapes_add: v:");
    expect_fail(mdl_shapes_add(&s, "v", 1, (int[]){ 2 }, (mdl_init_kind)9), "unknown initialiser 9");
    ck_assert_int_eq(s.n, 0);
    for (int i = 0; i < MDL_MAX_PARAMS; i++)
        ck_assert_int_eq(mdl_shapes_add(&s, "v", 1, (int[]){ 2 }, MDL_INIT_ONES), AD_OK);
    expect_fail(mdl_shapes_add(&s, "v", 1, (int[]){ 2 }, MDL_INIT_ONES), "the list is full");
    expect_fail(mdl_shapes_slice(&s, 30, 3, &s), "entries 30..32 are not in a list of 32");

    /* He needs fans; a failed init leaves nothing behind. */
    s.n = 0;
    ck_assert_int_eq(mdl_shapes_add(&s, "weight", 2, (int[]){ 2, 3 }, MDL_INIT_HE), AD_OK);
    ck_assert_int_eq(mdl_shapes_add(&s, "bias", 1, (int[]){ 2 }, MDL_INIT_HE), AD_OK);
    ad_value *p[2] = { NULL, NULL };
    ad_rng rng;
    ad_rng_seed(&rng, 1);
    expect_fail(mdl_init_params(&s, &rng, p, true),
                "init_params: bias: He and Glorot need a weight of rank 2 or more, got rank 1");
    ck_assert_ptr_null(p[0]);
    ck_assert_ptr_null(p[1]);
    expect_fail(mdl_init_params(&s, NULL, p, true), "init_params: NULL argument");

    s.init[1] = MDL_INIT_ZEROS;
    ck_assert_int_eq(mdl_init_params(&s, &rng, p, true), AD_OK);
    expect_fail(mdl_check_params("toy", &s, 0, 2, (ad_value *[]){ p[1], p[0] }),
                "toy weight: got [2], want [2,3]");
    ad_error_clear();
    expect_fail(mdl_check_params("toy", &s, 0, 2, (ad_value *[]){ p[0], NULL }),
                "toy bias: parameter 1 is NULL");
    expect_fail(mdl_check_params("toy", &s, 1, 2, p), "toy: entries 1..2 are not in a list of 2");
    ck_assert_int_eq(mdl_check_params("toy", &s, 1, 1, p + 1), AD_OK);
    mdl_free_params(2, p);
}
END_TEST

START_TEST(linear_mlp_errors)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    mdl_shapes s;
    ad_rng rng;
    ad_rng_seed(&rng, 2);
    expect_fail(mdl_linear_shapes(&(mdl_linear){ .in = 0, .out = 2 }, &s),
                "linear: in 0 and out 2 must both be at least 1");
    mdl_linear lin = { .in = 3, .out = 2 };
    ad_value *p[MDL_MAX_PARAMS];
    ck_assert_int_eq(mdl_linear_shapes(&lin, &s), AD_OK);
    ck_assert_int_eq(mdl_init_params(&s, &rng, p, true), AD_OK);
    ad_value *x = ad_const_fill(tp, 2, (int[]){ 4, 3 }, 1);
    ad_value *x4 = ad_const_fill(tp, 2, (int[]){ 4, 4 }, 1);
    tu_expect_error(mdl_linear_forward(tp, &lin, x4, p),
                    "linear: input x [4,4] does not fit the model, which wants [N,3]");
    tu_expect_error(mdl_linear_forward(tp, &lin, x, (ad_value *[]){ p[1], p[1] }),
                    "linear W: got [2], want [2,3]");
    /* A NULL input passes the earlier failure through. */
    tu_expect_error(mdl_linear_forward(tp, &lin, ad_matmul(tp, x, x, false, false), p),
                    "matmul: inner dimensions differ");
    ad_value *lin_p[2] = { p[0], p[1] }; /* freed after the tape that uses them */

    expect_fail(mdl_mlp_shapes(&(mdl_mlp){ .n_layers = 0 }, &s), "mlp: n_layers 0 is not in 1..15");
    expect_fail(mdl_mlp_shapes(&(mdl_mlp){ .n_layers = 16 }, &s), "mlp: n_layers 16");
    expect_fail(mdl_mlp_shapes(&(mdl_mlp){ .n_layers = 2, .sizes = { 3, 0, 2 } }, &s),
                "mlp: sizes[1] is 0, must be at least 1");
    expect_fail(mdl_mlp_shapes(&(mdl_mlp){ .n_layers = 1, .sizes = { 3, 2 }, .act = 5 }, &s),
                "mlp: unknown activation 5");
    mdl_mlp m = { .n_layers = 2, .sizes = { 3, 5, 2 }, .act = MDL_RELU };
    ck_assert_int_eq(mdl_mlp_shapes(&m, &s), AD_OK);
    ck_assert_int_eq(mdl_init_params(&s, &rng, p, true), AD_OK);
    tu_expect_error(mdl_mlp_forward(tp, &m, x4, p),
                    "mlp: input x [4,4] does not fit the model, which wants [N,3]");
    tu_expect_error(mdl_mlp_forward(tp, &m, x, (ad_value *[]){ p[0], p[1], p[0], p[3] }),
                    "mlp layer 2 W: got [5,3], want [2,5]");
    ck_assert_ptr_nonnull(mdl_mlp_forward(tp, &m, x, p));
    ad_tape_free(tp);
    mdl_free_params(s.n, p);
    mdl_free_params(2, lin_p);
}
END_TEST

START_TEST(cnn_errors)
{
    mdl_shapes s;
    mdl_cnn net = mdl_cnn_omniglot(8);
    net.n_blocks = 5;
    expect_fail(mdl_cnn_shapes(&net, &s),
                "cnn: a 28x28 input is 1x1 before block 5, too small for 2x2 max-pooling");
    net = mdl_cnn_omniglot(0);
    expect_fail(mdl_cnn_check(&net), "cnn: channels 0 is less than 1");
    net = mdl_cnn_omniglot(8);
    net.n_rep = 5;
    expect_fail(mdl_cnn_check(&net), "cnn: n_rep 5 is not in 0..4 (n_blocks)");
    net.n_rep = 2;
    net.n_blocks = 8;
    expect_fail(mdl_cnn_check(&net), "cnn: n_blocks 8 is not in 1..7");
    net.n_blocks = 4;
    net.n_classes = 0;
    expect_fail(mdl_cnn_check(&net), "cnn: n_classes 0");
    net.n_classes = 5;
    int chw[3];
    expect_fail(mdl_cnn_map_shape(&net, 5, chw), "cnn: map after 5 blocks");
    /* The classifier's extent F = 5·32768·32768 = 5·2^30 does not fit an int
     * (it used to overflow: UBSan's signed overflow, then [2, 1073741824]). */
    mdl_cnn big = { .in_channels = 1, .height = 65536, .width = 65536, .channels = 5,
                    .n_blocks = 1, .n_classes = 2, .n_rep = 0 };
    expect_fail(mdl_cnn_shapes(&big, &s), "cnn: the classifier would read 5 channels x "
                                          "32768x32768 = 5368709120 features, more than 2147483647");
    big.channels = 1 << 16, big.height = big.width = 1 << 14; /* channels·h alone is 2^29 */
    expect_fail(mdl_cnn_check(&big), "cnn: the classifier would read 65536 channels x 8192x8192");
    big.channels = 1, big.height = big.width = 2 * 46341; /* F = 2 147 488 281: one too many */
    expect_fail(mdl_cnn_check(&big), "= 2147488281 features, more than 2147483647");
    big.width = 2 * 46340; /* F = 2 147 441 940: fits */
    ck_assert_int_eq(mdl_cnn_check(&big), AD_OK);

    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *p[MDL_MAX_PARAMS];
    ad_rng rng;
    ad_rng_seed(&rng, 3);
    ck_assert_int_eq(mdl_cnn_shapes(&net, &s), AD_OK);
    ck_assert_int_eq(mdl_init_params(&s, &rng, p, true), AD_OK);
    ad_value *x = ad_const_fill(tp, 4, (int[]){ 2, 1, 28, 28 }, 0.5);
    ad_value *x3 = ad_const_fill(tp, 4, (int[]){ 2, 3, 28, 28 }, 0.5);
    tu_expect_error(mdl_cnn_forward(tp, &net, x3, p, p + 8),
                    "cnn: input x [2,3,28,28] does not fit the model, which wants [N,1,28,28]");
    ad_value *bad[8];
    memcpy(bad, p, sizeof bad);
    bad[4] = p[0];
    tu_expect_error(mdl_cnn_forward(tp, &net, x, bad, p + 8), "cnn block 2 W: got [8,1,3,3], want [8,8,3,3]");
    ad_value *cls[10];
    memcpy(cls, p + 8, sizeof cls);
    cls[3] = NULL;
    tu_expect_error(mdl_cnn_forward(tp, &net, x, p, cls), "cnn block 3 beta: parameter 3 is NULL");
    cls[3] = p[8 + 3];
    cls[8] = p[16 + 1];
    tu_expect_error(mdl_cnn_forward(tp, &net, x, p, cls), "cnn classifier W: got [5], want [5,8]");
    tu_expect_error(mdl_cnn_task_forward(tp, &net, x, p + 8),
                    "cnn: representation h [2,1,28,28] does not fit the task part, which wants "
                    "[N,8,7,7] (the map after block 2)");
    tu_expect_error(mdl_cnn_forward(tp, NULL, x, p, p + 8), "cnn: NULL model");

    /* The block on its own: errors name the op inside it. */
    ad_value *W5 = ad_const_fill(tp, 4, (int[]){ 8, 1, 2, 2 }, 1);
    tu_expect_error(mdl_conv_block(tp, x, W5, NULL, p[2], p[3]),
                    "conv block: W [8,1,2,2] must be [O,C,k,k] with k odd");
    tu_expect_error(mdl_conv_block(tp, x3, p[0], p[1], p[2], p[3]),
                    "conv block: conv2d: channels differ");
    ad_value *tiny = ad_const_fill(tp, 4, (int[]){ 2, 1, 1, 1 }, 0.5);
    tu_expect_error(mdl_conv_block(tp, tiny, p[0], p[1], p[2], p[3]),
                    "conv block: maxpool2d: a 2x2 window does not fit input [2,8,1,1]");
    tu_expect_error(mdl_conv_block(tp, x, p[0], p[1], p[16 + 1], p[3]),
                    "conv block: batchnorm: gamma [5] does not match the 8 channels");
    /* A NULL input passes the earlier failure through, unchanged. */
    tu_expect_error(mdl_cnn_forward(tp, &net, mdl_conv_block(tp, tiny, p[0], p[1], p[2], p[3]), p, p + 8),
                    "conv block: maxpool2d");
    ck_assert_ptr_eq(strstr(ad_error(), "cnn"), NULL);
    ad_tape_free(tp);
    mdl_free_params(s.n, p);
}
END_TEST

Suite *models_suite(void);
Suite *models_suite(void)
{
    Suite *s = suite_create("models");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, shapes_of_each_model);
    tcase_add_test(tc, cnn_parameter_counts);
    tcase_add_test(tc, init_params_kinds);
    tcase_add_test(tc, linear_forward_values);
    tcase_add_test(tc, mlp_forward_values);
    tcase_add_test(tc, conv_block_values);
    tcase_add_test(tc, cnn_forward_composition);
    tcase_add_test(tc, linear_gradients);
    tcase_add_test(tc, mlp_tanh_gradients);
    tcase_add_loop_test(tc, cnn_gradients, 0, sizeof cnn_groups / sizeof *cnn_groups);
    tcase_add_test(tc, cnn_hypergradient_one_step);
    tcase_add_test(tc, param_list_errors);
    tcase_add_test(tc, linear_mlp_errors);
    tcase_add_test(tc, cnn_errors);
    suite_add_tcase(s, tc);
    return s;
}
