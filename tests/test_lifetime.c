/* test_lifetime.c — values used after their lifetime, NULL arguments across
 * ad.h, and the tape's pool (reuse, accounting, bound, scratch, ASan).
 *
 * Every misuse here must come back as a status and a message, never as a
 * read of freed memory: the suite runs in the AddressSanitizer build too,
 * where such a read would stop it. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ad/io.h"
#include "ad/node.h"
#include "ops/ops.h"
#include "testutil.h"

#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif
#ifdef TEST_ASAN
#include <sanitizer/asan_interface.h>
#endif

/* The last call failed with `code` and a message holding each of the
 * strings (a NULL-terminated list).  A macro, for the caller's line. */
#define expect_fail(rc, code, ...)                                                \
    do {                                                                          \
        ck_assert_int_eq((rc), (code));                                           \
        ck_assert_int_eq(ad_error_code(), (code));                                \
        const char *want_[] = { __VA_ARGS__, NULL };                              \
        for (int k_ = 0; want_[k_]; k_++)                                         \
            ck_assert_msg(strstr(ad_error(), want_[k_]) != NULL,                  \
                          "message \"%s\" lacks \"%s\"", ad_error(), want_[k_]);  \
    } while (0)

/* An op's result was NULL for the reason the strings give. */
#define expect_null(v, ...) expect_fail((v) ? AD_OK : ad_error_code(), AD_EARG, __VA_ARGS__)

/* ---- released values ------------------------------------------------------ */

/* The case: a value kept past the horizon.  Before, a release build
 * computed with whatever the freed block held ("add: shapes do not
 * broadcast: [0,4,0,0,0,12,...") and ASan stopped the program; now the op
 * returns NULL with the value's step and the horizon, and nothing is read. */
START_TEST(released_value_is_reported)
{
    ad_tape *tp = ad_tape_new(1);
    ad_value *x = ad_param_from(1, (int[]){ 3 }, (ad_real[]){ 1, 2, 3 });
    ad_value *w = ad_mul(tp, x, x); /* step 0, kept by the caller past the horizon */
    ck_assert_int_eq(ad_value_set_name(w, "w0"), AD_OK);
    ck_assert_int_eq(ad_tape_step(tp), AD_OK); /* step 1: step 0 still held */
    ck_assert_int_eq(ad_value_check("mine", w), AD_OK);
    ck_assert_int_eq(ad_tape_step(tp), AD_OK); /* step 2: step 0 released */
    ck_assert_ptr_null(w->data);               /* nothing left to read */
    ad_error_clear();
    expect_null(ad_add(tp, w, x), "add: input 0 ('w0'), made at step 0, was released when step 2 "
                "opened", "horizon K = 1", "the tape is at step 2, holding steps 1..2");
    expect_null(ad_exp(tp, w), "exp: input 0 ('w0'), made at step 0");
    expect_fail(ad_value_check("mine", w), AD_EARG, "mine: the value ('w0'), made at step 0");
    /* The tape goes on as if nothing happened. */
    ad_value *y = ad_sum(tp, ad_mul(tp, ad_mul(tp, x, x), x)), *g;
    ck_assert_int_eq(ad_grad(tp, y, 1, &x, &g, false), AD_OK);
    tu_expect_values(g, (double[]){ 3, 12, 27 }, 3, 0);
    ad_tape_free(tp);
    ad_value_free(x);
}
END_TEST

/* The gradient sweeps check their outputs, inputs and directions the same
 * way: a released value is named with its step, not walked. */
START_TEST(sweep_refuses_released_values)
{
    ad_tape *tp = ad_tape_new(1);
    ad_value *x = ad_param_from(1, (int[]){ 3 }, (ad_real[]){ 1, 2, 3 });
    ad_value *w = ad_mul(tp, x, x);  /* step 0 */
    ad_value *y0 = ad_sum(tp, w);    /* step 0 */
    ck_assert_int_eq(ad_tape_step(tp), AD_OK);
    ck_assert_int_eq(ad_tape_step(tp), AD_OK); /* step 2: step 0 released */
    ad_value *g = NULL;
    ad_error_clear();
    expect_fail(ad_grad(tp, y0, 1, &x, &g, false), AD_EARG,
                "grad: output 0, made at step 0, was released when step 2 opened");
    ck_assert_ptr_null(g);
    ad_value *y = ad_sum(tp, ad_mul(tp, x, x));
    expect_fail(ad_grad(tp, y, 1, &w, &g, false), AD_EARG, "grad: input 0, made at step 0");
    expect_fail(ad_hvp(tp, y, 1, &x, &w, &g, false), AD_EARG,
                "hvp: direction 0, made at step 0");
    /* and the tape still works */
    ck_assert_int_eq(ad_grad(tp, y, 1, &x, &g, false), AD_OK);
    tu_expect_values(g, (double[]){ 2, 4, 6 }, 3, 0);
    ad_tape_free(tp);
    ad_value_free(x);
}
END_TEST

/* A value a later step still uses is carried, not released: it stays usable
 * until its last user goes, and is then reported with the step it was made
 * at (kept when it was carried). */
START_TEST(carried_value_keeps_its_step)
{
    ad_tape *tp = ad_tape_new(1);
    ad_value *x = ad_param_scalar(2);
    ad_value *a = ad_exp(tp, x); /* step 0 */
    ck_assert_int_eq(ad_tape_step(tp), AD_OK);
    ad_value *b = ad_mul(tp, a, x); /* step 1 uses a */
    ck_assert_int_eq(ad_tape_step(tp), AD_OK); /* step 0 released: a carried */
    ck_assert_int_eq(a->step, -2);
    ck_assert_int_eq(ad_value_check("x", a), AD_OK);
    ck_assert_ptr_nonnull(ad_add(tp, a, b));
    ck_assert_int_eq(ad_tape_step(tp), AD_OK); /* step 1 released: a's last user, and b */
    /* step 2 (the add) released: nothing holds a or b now */
    ck_assert_int_eq(ad_tape_step(tp), AD_OK);
    expect_null(ad_add(tp, a, x), "add: input 0, made at step 0, was released when step");
    expect_null(ad_add(tp, x, b), "add: input 1, made at step 1");
    ad_tape_free(tp);
    ad_value_free(x);
}
END_TEST

START_TEST(value_used_after_reset)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *x = ad_param_scalar(3);
    ck_assert_int_eq(ad_tape_step(tp), AD_OK);
    ck_assert_int_eq(ad_tape_step(tp), AD_OK);
    ad_value *v = ad_sin(tp, x); /* step 2 */
    ck_assert_int_eq(ad_tape_reset(tp), AD_OK);
    expect_null(ad_mul(tp, v, x), "mul: input 0, made at step 2, was released by ad_tape_reset at "
                "step 2 (horizon K = all)", "the tape is at step 0");
    /* Everything that takes a value refuses it, before reading its data. */
    expect_null(ad_detach(tp, v), "detach: the value, made at step 2");
    expect_null(ad_leaf(tp, v), "leaf: the value");
    expect_null(ad_value_copy(v), "value_copy: the value");
    expect_fail(ad_check_finite("loss", v), AD_EARG, "loss: the value, made at step 2");
    expect_fail(ad_set_requires_grad(v, true), AD_EARG, "set_requires_grad: the value");
    expect_fail(ad_value_set_name(v, "late"), AD_EARG, "value_set_name: the value");
    expect_fail(ad_dot_write(stderr, v), AD_EARG, "dot: the root, made at step 2");
    expect_fail(ad_print(stderr, "v", v), AD_EARG, "print: the value, made at step 2");
    expect_fail(ad_save_npy("never-written.npy", v), AD_EARG, "save_npy: the value, made at step 2");
    ad_tape_free(tp);
    ad_value_free(x);
}
END_TEST

START_TEST(value_used_after_tape_free)
{
    ad_tape *tp = ad_tape_new(2), *other = ad_tape_new(2);
    ad_value *x = ad_param_scalar(3);
    ck_assert_int_eq(ad_tape_step(tp), AD_OK);
    ad_value *v = ad_square(tp, x); /* step 1 */
    ad_tape_free(tp);
    expect_null(ad_add(other, v, x), "add: input 0, made at step 1, was released by ad_tape_free "
                "at step 1 (horizon K = 2); its tape has been freed");
    /* ad_value_free on it is reported, and frees nothing. */
    ad_error_clear();
    ad_value_free(v);
    ck_assert_ptr_nonnull(strstr(ad_error(), "value_free: the value, made at step 1"));
    ad_tape_free(other);
    ad_value_free(x);
}
END_TEST

/* What ad_tape_rewind and a plain sweep free early is reported as such. */
START_TEST(rewound_value_is_reported)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *x = ad_param_scalar(3);
    uint64_t mark = ad_tape_mark(tp);
    ad_value *scratch = ad_const_scalar(tp, 1);
    ck_assert_int_eq(ad_tape_rewind(tp, mark), AD_OK);
    expect_null(ad_add(tp, scratch, x), "made at step 0, was released by ad_tape_rewind at step 0");
    ad_tape_free(tp);
    ad_value_free(x);
}
END_TEST

/* ---- freed leaves ----------------------------------------------------------- */

START_TEST(freed_leaf_is_reported)
{
    ad_tape *tp = ad_tape_new(1);
    ad_value *x = ad_param_scalar(3), *c = ad_tensor_scalar(1);
    ck_assert_int_eq(ad_value_set_name(c, "c"), AD_OK);
    ad_value_free(c);
    expect_null(ad_mul(tp, x, c), "mul: input 1 ('c') is a caller-owned leaf that was freed "
                "(ad_value_free)");
    expect_fail(ad_value_check("user", c), AD_EARG, "user: the value ('c') is a caller-owned leaf");
    /* Freed twice: reported, and the second free touches nothing. */
    ad_error_clear();
    ad_value_free(c);
    ck_assert_int_eq(ad_error_code(), AD_EARG);
    ck_assert_ptr_nonnull(strstr(ad_error(), "value_free: the value ('c') is a caller-owned leaf "
                                             "that was freed"));
    ad_tape_free(tp);
    ad_value_free(x);
}
END_TEST

/* A leaf freed while a node of a held step names it: the tape cannot see the
 * free (leaves are shared read-only between tapes and threads, so they keep
 * no count of their users), but the first backward rule that needs the
 * leaf's value hands it to an op, which refuses it.  What is not caught: a
 * sweep that never needs that value (the gradient of an add passes through
 * without reading its inputs, so its answer is right anyway), and a leaf
 * whose struct has left the process-wide FIFO of the last 4096 freed values
 * (undefined behaviour: AddressSanitizer reports it as a heap-use-after-free). */
START_TEST(leaf_freed_while_a_tape_uses_it)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *w = ad_param_from(1, (int[]){ 2 }, (ad_real[]){ 1, 2 });
    ad_value *lam = ad_tensor_from(1, (int[]){ 2 }, (ad_real[]){ 3, 4 });
    ad_value *y = ad_sum(tp, ad_mul(tp, w, lam)), *g = NULL;
    ad_value *z = ad_sum(tp, ad_add(tp, w, lam));
    ad_value_free(lam); /* too early: the mul's node still names lam */
    ad_error_clear();
    int rc = ad_grad(tp, y, 1, &w, &g, false); /* d/dw needs lam's value */
    ck_assert_int_ne(rc, AD_OK);
    ck_assert_ptr_null(g);
    ck_assert_msg(strstr(ad_error(), "is a caller-owned leaf that was freed (ad_value_free)"),
                  "message: %s", ad_error());
    /* The add's gradient does not need lam: right, and not caught. */
    ck_assert_int_eq(ad_grad(tp, z, 1, &w, &g, false), AD_OK);
    tu_expect_values(g, (double[]){ 1, 1 }, 2, 0);
    ad_tape_free(tp);
    ad_value_free(w);
}
END_TEST

/* Leaves freed on several threads at once go through the process-wide FIFO
 * behind its lock; each stays reported. */
enum { FREE_THREADS = 4, FREE_EACH = 200 };

static void *free_leaves(void *arg)
{
    int *bad = arg;
    ad_value *v[FREE_EACH];
    for (int i = 0; i < FREE_EACH; i++) v[i] = ad_tensor_scalar((ad_real)i);
    for (int i = 0; i < FREE_EACH; i++) ad_value_free(v[i]);
    /* FREE_THREADS * FREE_EACH < 4096: all still kept. */
    for (int i = 0; i < FREE_EACH; i++) *bad += ad_value_check("t", v[i]) != AD_EARG;
    return NULL;
}

START_TEST(leaves_freed_on_several_threads)
{
    pthread_t th[FREE_THREADS];
    int bad[FREE_THREADS] = { 0 };
    for (int t = 0; t < FREE_THREADS; t++)
        ck_assert_int_eq(pthread_create(&th[t], NULL, free_leaves, &bad[t]), 0);
    for (int t = 0; t < FREE_THREADS; t++) {
        ck_assert_int_eq(pthread_join(th[t], NULL), 0);
        ck_assert_int_eq(bad[t], 0);
    }
}
END_TEST

/* ---- every op refuses a released value ----------------------------------------- */

/* Each op gets a released value (d...) in one of its places and live values
 * elsewhere: it returns NULL with AD_EARG, and the message says the value
 * was released, naming its step (the op named may be the one it calls
 * first: ad_sum is ad_sum_to, ad_linear a matmul, ad_conv2d an im2col). */
#define REFUSES(call)                                                                  \
    do {                                                                               \
        ad_error_clear();                                                              \
        ad_value *r_ = (call);                                                         \
        ck_assert_msg(r_ == NULL, "%s returned a value", #call);                       \
        ck_assert_msg(ad_error_code() == AD_EARG, "%s: code %d", #call, ad_error_code()); \
        ck_assert_msg(strstr(ad_error(), "made at step 0, was released when step 2 opened"), \
                      "%s: %s", #call, ad_error());                                     \
    } while (0)

START_TEST(every_op_refuses_a_released_value)
{
    ad_tape *tp = ad_tape_new(1);
    ad_value *x = ad_param_from(2, (int[]){ 2, 3 }, (ad_real[]){ 1, 2, 3, 4, 5, 6 });
    ad_real pixels[16];
    for (int i = 0; i < 16; i++) pixels[i] = (ad_real)(i % 5);
    ad_value *img = ad_param_from(4, (int[]){ 1, 1, 4, 4 }, pixels);
    ad_value *lab = ad_tensor_from(1, (int[]){ 2 }, (ad_real[]){ 0, 2 });
    ad_value *k3 = ad_tensor_fill(4, (int[]){ 1, 1, 3, 3 }, 1);
    ad_value *v3 = ad_tensor_fill(1, (int[]){ 3 }, 1);
    ad_value *rows = ad_tensor_from(1, (int[]){ 2 }, (ad_real[]){ 1, 0 });
    /* Step 0's values, released when step 2 opens. */
    ad_value *d2 = ad_scale(tp, x, 2);                /* [2,3] */
    ad_value *d4 = ad_scale(tp, img, 2);              /* [1,1,4,4] */
    ad_value *dv = ad_sum_axis(tp, x, 0);             /* [3] */
    ad_value *dl = ad_detach(tp, lab);                /* [2] labels */
    ad_value *dk = ad_detach(tp, k3);                 /* [1,1,3,3] */
    ad_value *d1 = ad_const_fill(tp, 1, (int[]){ 1 }, 1); /* [1] */
    ad_value *ds = ad_const_scalar(tp, 1);            /* a scalar */
    ck_assert_int_eq(ad_tape_step(tp), AD_OK);
    ck_assert_int_eq(ad_tape_step(tp), AD_OK);
    REFUSES(ad_add(tp, d2, x));          REFUSES(ad_sub(tp, x, d2));
    REFUSES(ad_mul(tp, d2, x));          REFUSES(ad_div(tp, x, d2));
    REFUSES(ad_neg(tp, d2));             REFUSES(ad_scale(tp, d2, 3));
    REFUSES(ad_add_scalar(tp, d2, 1));   REFUSES(ad_exp(tp, d2));
    REFUSES(ad_log(tp, d2));             REFUSES(ad_sin(tp, d2));
    REFUSES(ad_cos(tp, d2));             REFUSES(ad_tanh(tp, d2));
    REFUSES(ad_sigmoid(tp, d2));         REFUSES(ad_softplus(tp, d2));
    REFUSES(ad_relu(tp, d2));            REFUSES(ad_square(tp, d2));
    REFUSES(ad_sqrt(tp, d2));            REFUSES(ad_pow(tp, d2, 3));
    REFUSES(ad_step(tp, d2));
    REFUSES(ad_sum(tp, d2));             REFUSES(ad_mean(tp, d2));
    REFUSES(ad_sum_axis(tp, d2, 1));     REFUSES(ad_mean_axis(tp, d2, 0));
    REFUSES(ad_dot(tp, d2, x));          REFUSES(ad_sqnorm(tp, d2));
    REFUSES(ad_sum_to(tp, d2, 1, (int[]){ 3 }));
    REFUSES(ad_broadcast_to(tp, dv, 2, (int[]){ 4, 3 }));
    /* ops that would hand back their input unchanged check it too */
    REFUSES(ad_sum_to(tp, d2, 2, (int[]){ 2, 3 }));
    REFUSES(ad_broadcast_to(tp, d2, 2, (int[]){ 2, 3 }));
    REFUSES(ad_sum(tp, ds));
    REFUSES(ad_matmul(tp, d2, x, false, true));
    REFUSES(ad_matmul(tp, x, d2, false, true));
    REFUSES(ad_linear(tp, x, d2, NULL)); REFUSES(ad_outer(tp, dv, v3));
    REFUSES(ad_reshape(tp, d2, 1, (int[]){ 6 }));
    REFUSES(ad_transpose(tp, d2));       REFUSES(ad_slice_rows(tp, d2, 1, 1));
    REFUSES(ad_gather_rows(tp, d2, rows)); REFUSES(ad_gather_rows(tp, v3, dl));
    REFUSES(ad_scatter_rows(tp, d2, lab, 3)); REFUSES(ad_scatter_rows(tp, x, dl, 3));
    REFUSES(ad_concat(tp, x, d2, 0));    REFUSES(ad_one_hot(tp, dl, 3));
    REFUSES(ad_softmax(tp, d2));         REFUSES(ad_log_softmax(tp, d2));
    REFUSES(ad_cross_entropy(tp, d2, lab, NULL, AD_REDUCE_MEAN));
    REFUSES(ad_cross_entropy(tp, x, dl, NULL, AD_REDUCE_MEAN));
    REFUSES(ad_cross_entropy(tp, x, lab, dl, AD_REDUCE_MEAN));
    REFUSES(ad_conv2d(tp, d4, k3, NULL, 1, 1));
    REFUSES(ad_conv2d(tp, img, dk, NULL, 1, 1));
    REFUSES(ad_conv2d(tp, img, k3, d1, 1, 1));
    REFUSES(ad_maxpool2d(tp, d4, 2, 2));
    REFUSES(ad_batchnorm(tp, d4, NULL, NULL, 1e-5));
    REFUSES(ad_batchnorm(tp, img, d1, NULL, 1e-5));
    REFUSES(ad_channel_sum(tp, d4));
    REFUSES(ad_abs(tp, d2));             REFUSES(ad_sign(tp, d2));
    REFUSES(ad_maximum(tp, d2, x));      REFUSES(ad_minimum(tp, x, d2));
    REFUSES(ad_clamp(tp, d2, 0, 1));     REFUSES(ad_argmax(tp, d2, 1));
    ad_tape_free(tp);
    ad_value *own[] = { x, img, lab, k3, v3, rows };
    for (size_t i = 0; i < sizeof own / sizeof *own; i++) ad_value_free(own[i]);
}
END_TEST
#undef REFUSES

/* ---- NULL everywhere in ad.h ----------------------------------------------------- */

/* Each call gets AD_EARG (or its "nothing" result) and leaves a message;
 * none crashes.  The list follows ad.h from top to bottom. */
START_TEST(null_everywhere)
{
    ad_tape *tp = ad_tape_new(1);
    ad_value *x = ad_param_scalar(1), *g = NULL;
    ad_rng rng;
    ad_rng_seed(&rng, 1);
    char buf[64];
    int sh[1] = { 2 };
#define EXPECT_EARG(call, text)                                                      \
    do {                                                                             \
        ad_error_clear();                                                            \
        AD_IGNORE(call); /* read below, as ad_error_code() */                        \
        ck_assert_msg(ad_error_code() == AD_EARG, "%s: code %d", #call, ad_error_code()); \
        ck_assert_msg(strstr(ad_error(), text) != NULL, "%s: message \"%s\" lacks \"%s\"", \
                      #call, ad_error(), text);                                      \
    } while (0)
    /* errors */
    EXPECT_EARG(ad_fail(AD_EARG, NULL), "without a message");
    /* values */
    EXPECT_EARG(ad_tensor_new(1, NULL), "shape is NULL");
    EXPECT_EARG(ad_tensor_from(1, sh, NULL), "data is NULL");
    EXPECT_EARG(ad_tensor_fill(2, NULL, 0), "shape is NULL");
    EXPECT_EARG(ad_param_from(1, sh, NULL), "data is NULL");
    EXPECT_EARG(ad_set_requires_grad(NULL, true), "set_requires_grad: the value is NULL");
    EXPECT_EARG(ad_value_copy(NULL), "value_copy: the value is NULL");
    EXPECT_EARG(ad_value_set_name(NULL, "n"), "value_set_name: the value is NULL");
    EXPECT_EARG(ad_value_check(NULL, NULL), "?: the value is NULL");
    EXPECT_EARG(ad_same_shape(NULL, x), "same_shape");
    EXPECT_EARG(ad_shape_str(x, NULL, 64), "shape_str");
    EXPECT_EARG(ad_shape_size(2, NULL), "shape_size");
    EXPECT_EARG(ad_check_shape(NULL, 1, NULL), "check_shape: shape is NULL");
    EXPECT_EARG(ad_check_finite(NULL, NULL), "check_finite: the value is NULL");
    EXPECT_EARG(ad_rng_seed(NULL, 1), "rng_seed");
    EXPECT_EARG(ad_rng_next(NULL), "rng");
    EXPECT_EARG(ad_rng_uniform(NULL), "rng");
    EXPECT_EARG(ad_rng_normal(NULL), "rng");
    EXPECT_EARG(ad_rng_below(NULL, 5), "rng");
    EXPECT_EARG(ad_rng_shuffle(NULL, sh, 1), "rng_shuffle: rng is NULL");
    EXPECT_EARG(ad_rng_shuffle(&rng, NULL, 3), "rng_shuffle: the array is NULL");
    EXPECT_EARG(ad_rng_permutation(&rng, NULL, 3), "rng_permutation");
    EXPECT_EARG(ad_tensor_randn(NULL, 1, sh, 1), "tensor_randn: rng is NULL");
    EXPECT_EARG(ad_tensor_rand(NULL, 1, sh, 0, 1), "tensor_rand: rng is NULL");
    /* the tape */
    EXPECT_EARG(ad_tape_reset(NULL), "tape_reset: tape is NULL");
    EXPECT_EARG(ad_tape_set_horizon(NULL, 1), "tape is NULL");
    EXPECT_EARG(ad_tape_horizon(NULL), "tape_horizon: tape is NULL");
    ck_assert_int_eq(ad_tape_horizon(NULL), AD_EARG);
    EXPECT_EARG(ad_tape_step(NULL), "tape is NULL");
    EXPECT_EARG(ad_tape_current_step(NULL), "tape_current_step");
    ck_assert_int_eq(ad_tape_current_step(NULL), AD_EARG);
    EXPECT_EARG(ad_tape_steps_held(NULL), "tape_steps_held");
    EXPECT_EARG(ad_tape_bytes(NULL), "tape_bytes: tape is NULL");
    ck_assert_uint_eq(ad_tape_bytes(NULL), 0);
    EXPECT_EARG(ad_tape_peak_bytes(NULL), "tape_peak_bytes");
    EXPECT_EARG(ad_tape_reset_peak(NULL), "tape_reset_peak");
    EXPECT_EARG(ad_tape_get_stats(NULL, NULL), "tape_get_stats: tape is NULL");
    EXPECT_EARG(ad_tape_get_stats(tp, NULL), "tape_get_stats: stats is NULL");
    EXPECT_EARG(ad_tape_pool_bytes(NULL), "tape_get_stats: tape is NULL");
    EXPECT_EARG(ad_tape_trim(NULL), "tape_trim");
    EXPECT_EARG(ad_no_record_begin(NULL), "no_record_begin: tape is NULL");
    EXPECT_EARG(ad_no_record_end(NULL), "no_record_end: tape is NULL");
    EXPECT_EARG(ad_tape_recording(NULL), "tape_recording");
    EXPECT_EARG(ad_tape_mark(NULL), "tape_mark");
    EXPECT_EARG(ad_tape_rewind(NULL, 0), "tape_rewind");
    EXPECT_EARG(ad_const(NULL, 0, NULL, (ad_real[]){ 1 }), "const: tape is NULL");
    EXPECT_EARG(ad_const(tp, 0, NULL, NULL), "const: data is NULL");
    EXPECT_EARG(ad_const_fill(NULL, 0, NULL, 1), "const_fill: tape is NULL");
    EXPECT_EARG(ad_const_scalar(NULL, 1), "const_fill: tape is NULL");
    EXPECT_EARG(ad_detach(tp, NULL), "detach: the value is NULL");
    EXPECT_EARG(ad_leaf(tp, NULL), "leaf: the value is NULL");
    EXPECT_EARG(ad_detach(NULL, x), "const: tape is NULL");
    /* the reverse sweep */
    EXPECT_EARG(ad_vjp(NULL, x, NULL, 1, &x, &g, false), "tape is NULL");
    EXPECT_EARG(ad_vjp(tp, NULL, NULL, 1, &x, &g, false), "output is NULL");
    EXPECT_EARG(ad_vjp_many(tp, 1, NULL, NULL, 1, &x, &g, false), "no outputs");
    EXPECT_EARG(ad_grad(tp, x, 1, NULL, &g, false), "bad input list");
    EXPECT_EARG(ad_grad(tp, x, 1, &x, NULL, false), "bad input list");
    EXPECT_EARG(ad_grad(tp, x, 1, (ad_value *[]){ NULL }, &g, false), "an input is NULL");
    EXPECT_EARG(ad_backward(NULL, x), "tape is NULL");
    EXPECT_EARG(ad_backward(tp, NULL), "output is NULL");
    EXPECT_EARG(ad_hvp(tp, x, 1, &x, NULL, &g, false), "hvp");
    EXPECT_EARG(ad_hvp(NULL, x, 1, &x, &x, &g, false), "tape is NULL");
    EXPECT_EARG(ad_dot_write(NULL, x), "dot: file is NULL");
    EXPECT_EARG(ad_dot_write(stderr, NULL), "dot: the root is NULL");
    EXPECT_EARG(ad_print(stderr, "x", NULL), "print: the value is NULL");
    EXPECT_EARG(ad_save_npy("unused.npy", NULL), "save_npy: the value is NULL");
    /* Quiet by design: the frees take NULL as free() does, ad_zero_grad too. */
    ad_error_clear();
    ad_tape_free(NULL);
    ad_value_free(NULL);
    ad_zero_grad(NULL);
    ck_assert_int_eq(ad_error_code(), AD_OK);
    /* And the harmless answers. */
    ck_assert(!ad_same_shape(x, NULL));
    ck_assert_str_eq(ad_shape_str(NULL, buf, sizeof buf), "(null)");
    ck_assert(!ad_tape_recording(NULL));
#undef EXPECT_EARG
    ad_tape_free(tp);
    ad_value_free(x);
}
END_TEST

/* An op given a NULL the caller made by hand says so; one given the NULL of
 * an earlier failure keeps that failure's message. */
START_TEST(null_input_messages)
{
    ad_tape *tp = ad_tape_new(1);
    ad_value *x = ad_param_scalar(1);
    ad_error_clear();
    ck_assert_ptr_null(ad_node_new(tp, &(ad_op){ "mine", NULL }, 0, NULL, 2,
                                   (ad_value *[]){ x, NULL }));
    expect_fail(ad_error_code(), AD_EARG, "mine: input 1 is NULL");
    ad_value *bad = ad_log(tp, ad_matmul(tp, x, x, false, false)); /* matmul fails first */
    ck_assert_ptr_null(bad);
    ck_assert_ptr_nonnull(strstr(ad_error(), "matmul"));
    ck_assert_ptr_null(ad_detach(tp, bad));
    ck_assert_ptr_nonnull(strstr(ad_error(), "matmul")); /* still the first failure */
    /* A call that returns a status names its own NULL argument, pending message or not. */
    expect_fail(ad_value_check("mine", NULL), AD_EARG, "mine: the value is NULL");
    ad_fail(AD_EIO, "an earlier failure");
    expect_fail(ad_check_finite("loss", NULL), AD_EARG, "loss: the value is NULL");
    ad_tape_free(tp);
    ad_value_free(x);
}
END_TEST

/* NULL_INPUT(call, text): with no message pending, the op given a NULL says
 * so (AD_EARG, exactly `text`); with one pending — the NULL an earlier op
 * returned — it keeps that message and its status. */
#define NULL_INPUT(call, text)                                                        \
    do {                                                                              \
        ad_error_clear();                                                             \
        ck_assert_msg((call) == NULL, "%s returned a value", #call);                  \
        ck_assert_msg(ad_error_code() == AD_EARG, "%s: code %d", #call, ad_error_code()); \
        ck_assert_msg(strcmp(ad_error(), text) == 0, "%s: \"%s\", want \"%s\"", #call,  \
                      ad_error(), text);                                              \
        ad_fail(AD_EIO, "an earlier failure");                                        \
        ck_assert_msg((call) == NULL, "%s returned a value", #call);                  \
        ck_assert_msg(ad_error_code() == AD_EIO && !strcmp(ad_error(), "an earlier failure"), \
                      "%s replaced the pending failure with %d \"%s\"", #call,        \
                      ad_error_code(), ad_error());                                   \
    } while (0)

/* Every public op, in every input position: one message each (before, a
 * NULL from the caller's own hand came back with ad_error() empty). */
START_TEST(every_op_names_a_null_input)
{
    ad_tape *tp = ad_tape_new(1);
    ad_value *x = ad_param_from(2, (int[]){ 2, 3 }, (ad_real[]){ 1, 2, 3, 4, 5, 6 });
    ad_value *v3 = ad_tensor_fill(1, (int[]){ 3 }, 1);
    ad_value *lab = ad_tensor_from(1, (int[]){ 2 }, (ad_real[]){ 0, 2 });
    ad_value *img = ad_param_from(4, (int[]){ 1, 1, 4, 4 }, (ad_real[16]){ 0 });
    ad_value *k3 = ad_tensor_fill(4, (int[]){ 1, 1, 3, 3 }, 1);
    /* elementwise.c */
    NULL_INPUT(ad_add(tp, NULL, x), "add: input 0 is NULL");
    NULL_INPUT(ad_add(tp, x, NULL), "add: input 1 is NULL");
    NULL_INPUT(ad_sub(tp, NULL, x), "sub: input 0 is NULL");
    NULL_INPUT(ad_mul(tp, x, NULL), "mul: input 1 is NULL");
    NULL_INPUT(ad_div(tp, NULL, x), "div: input 0 is NULL");
    NULL_INPUT(ad_neg(tp, NULL), "neg: input 0 is NULL");
    NULL_INPUT(ad_scale(tp, NULL, 2), "scale: input 0 is NULL");
    NULL_INPUT(ad_add_scalar(tp, NULL, 2), "add_scalar: input 0 is NULL");
    NULL_INPUT(ad_exp(tp, NULL), "exp: input 0 is NULL");
    NULL_INPUT(ad_log(tp, NULL), "log: input 0 is NULL");
    NULL_INPUT(ad_sin(tp, NULL), "sin: input 0 is NULL");
    NULL_INPUT(ad_cos(tp, NULL), "cos: input 0 is NULL");
    NULL_INPUT(ad_tanh(tp, NULL), "tanh: input 0 is NULL");
    NULL_INPUT(ad_sigmoid(tp, NULL), "sigmoid: input 0 is NULL");
    NULL_INPUT(ad_softplus(tp, NULL), "softplus: input 0 is NULL");
    NULL_INPUT(ad_relu(tp, NULL), "relu: input 0 is NULL");
    NULL_INPUT(ad_square(tp, NULL), "square: input 0 is NULL");
    NULL_INPUT(ad_sqrt(tp, NULL), "sqrt: input 0 is NULL");
    NULL_INPUT(ad_pow(tp, NULL, 3), "pow: input 0 is NULL");
    NULL_INPUT(ad_step(tp, NULL), "step: input 0 is NULL");
    /* reduce.c */
    NULL_INPUT(ad_sum(tp, NULL), "sum: input 0 is NULL");
    NULL_INPUT(ad_mean(tp, NULL), "mean: input 0 is NULL");
    NULL_INPUT(ad_sum_axis(tp, NULL, 0), "sum_axis: input 0 is NULL");
    NULL_INPUT(ad_mean_axis(tp, NULL, 0), "mean_axis: input 0 is NULL");
    NULL_INPUT(ad_dot(tp, x, NULL), "dot: input 1 is NULL");
    NULL_INPUT(ad_sqnorm(tp, NULL), "sqnorm: input 0 is NULL");
    NULL_INPUT(ad_sum_to(tp, NULL, 1, (int[]){ 3 }), "sum_to: input 0 is NULL");
    NULL_INPUT(ad_broadcast_to(tp, NULL, 1, (int[]){ 3 }), "broadcast_to: input 0 is NULL");
    /* linalg.c */
    NULL_INPUT(ad_matmul(tp, NULL, x, false, true), "matmul: input 0 is NULL");
    NULL_INPUT(ad_matmul(tp, x, NULL, false, true), "matmul: input 1 is NULL");
    NULL_INPUT(ad_linear(tp, x, NULL, NULL), "linear: input 1 is NULL");
    NULL_INPUT(ad_outer(tp, NULL, v3), "outer: input 0 is NULL");
    /* shape.c */
    NULL_INPUT(ad_reshape(tp, NULL, 1, (int[]){ 6 }), "reshape: input 0 is NULL");
    NULL_INPUT(ad_transpose(tp, NULL), "transpose: input 0 is NULL");
    NULL_INPUT(ad_slice_rows(tp, NULL, 0, 1), "slice_rows: input 0 is NULL");
    NULL_INPUT(ad_gather_rows(tp, NULL, lab), "gather_rows: input 0 is NULL");
    NULL_INPUT(ad_gather_rows(tp, x, NULL), "gather_rows: input 1 is NULL");
    NULL_INPUT(ad_scatter_rows(tp, x, NULL, 3), "scatter_rows: input 1 is NULL");
    NULL_INPUT(ad_concat(tp, x, NULL, 0), "concat: input 1 is NULL");
    NULL_INPUT(ad_one_hot(tp, NULL, 3), "one_hot: input 0 is NULL");
    /* softmax.c */
    NULL_INPUT(ad_softmax(tp, NULL), "softmax: input 0 is NULL");
    NULL_INPUT(ad_log_softmax(tp, NULL), "log_softmax: input 0 is NULL");
    NULL_INPUT(ad_cross_entropy(tp, NULL, lab, NULL, AD_REDUCE_MEAN),
               "cross_entropy: input 0 is NULL");
    NULL_INPUT(ad_cross_entropy(tp, x, NULL, NULL, AD_REDUCE_MEAN),
               "cross_entropy: input 1 is NULL");
    /* conv.c, pool.c, batchnorm.c */
    NULL_INPUT(ad_conv2d(tp, NULL, k3, NULL, 1, 1), "conv2d: input 0 is NULL");
    NULL_INPUT(ad_conv2d(tp, img, NULL, NULL, 1, 1), "conv2d: input 1 is NULL");
    NULL_INPUT(ad_maxpool2d(tp, NULL, 2, 2), "maxpool2d: input 0 is NULL");
    NULL_INPUT(ad_batchnorm(tp, NULL, NULL, NULL, 1e-5), "batchnorm: input 0 is NULL");
    NULL_INPUT(ad_channel_sum(tp, NULL), "channel_sum: input 0 is NULL");
    /* select.c */
    NULL_INPUT(ad_abs(tp, NULL), "abs: input 0 is NULL");
    NULL_INPUT(ad_sign(tp, NULL), "sign: input 0 is NULL");
    NULL_INPUT(ad_maximum(tp, NULL, x), "maximum: input 0 is NULL");
    NULL_INPUT(ad_minimum(tp, x, NULL), "minimum: input 1 is NULL");
    NULL_INPUT(ad_clamp(tp, NULL, 0, 1), "clamp: input 0 is NULL");
    NULL_INPUT(ad_argmax(tp, NULL, 0), "argmax: input 0 is NULL");
    ad_tape_free(tp);
    ad_value *own[] = { x, v3, lab, img, k3 };
    for (size_t i = 0; i < sizeof own / sizeof *own; i++) ad_value_free(own[i]);
}
END_TEST
#undef NULL_INPUT

/* ---- backward rules report the status of the op that failed ------------------ */

/* Every node reachable from some roots, and one node per op. */
enum { SEEN_MAX = 8192, OPS_MAX = 128 };
typedef struct seen {
    ad_value *v[SEEN_MAX];
    int n;
    const ad_op *op[OPS_MAX];
    int n_ops;
} seen;

static void seen_walk(seen *s, ad_value *v)
{
    if (!v || !v->op) return;
    for (int i = 0; i < s->n; i++)
        if (s->v[i] == v) return;
    ck_assert_int_lt(s->n, SEEN_MAX);
    s->v[s->n++] = v;
    int k = 0;
    while (k < s->n_ops && s->op[k] != v->op) k++;
    if (k == s->n_ops) {
        ck_assert_int_lt(s->n_ops, OPS_MAX);
        s->op[s->n_ops++] = v->op;
    }
    for (int i = 0; i < v->n_inputs; i++) seen_walk(s, v->inputs[i]);
}

/* Runs v's rule seeded with ones: true when it made a gradient for some
 * input (so it has one to fail at). */
static bool rule_makes_something(ad_tape *tp, ad_value *v)
{
    ad_value *gin[AD_MAX_INPUTS] = { 0 }, *g = ad_const_fill(tp, v->rank, v->shape, 1);
    ck_assert_ptr_nonnull(g);
    ck_assert_int_eq(v->op->backward(tp, v, g, gin), AD_OK);
    for (int i = 0; i < v->n_inputs; i++)
        if (gin[i]) return true;
    return false;
}

/* Each op's backward rule, called as if an op inside it had failed (its
 * incoming gradient is the NULL a failed op returns, with that op's status
 * AD_EIO pending), returns AD_EIO and leaves the message alone — not an
 * AD_ENOMEM of its own.  The nodes come from a graph that uses every op and
 * its first and second derivatives, so the fused backward ops (relu_mask,
 * pool_scatter, unpick, conv_data_grad, bn_input_grad, ...) are there too. */
START_TEST(rules_return_the_failing_ops_status)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_real px[6] = { 0.5, -1.5, 2.5, 3, -0.25, 1.25 }, pimg[16];
    for (int i = 0; i < 16; i++) pimg[i] = (ad_real)((i * 7) % 5) - 1.5;
    ad_value *x = ad_param_from(2, (int[]){ 2, 3 }, px);
    ad_value *b = ad_param_from(1, (int[]){ 3 }, (ad_real[]){ 0.5, 2, -1 });
    ad_value *img = ad_param_from(4, (int[]){ 1, 2, 4, 4 }, (ad_real[32]){ 0 });
    for (int i = 0; i < 32; i++) img->data[i] = pimg[i % 16] + (ad_real)(i / 16);
    ad_value *k = ad_param_from(4, (int[]){ 2, 2, 3, 3 }, (ad_real[36]){ 0 });
    for (int i = 0; i < 36; i++) k->data[i] = (ad_real)(i % 7) * 0.25 - 0.5;
    ad_value *kb = ad_param_from(1, (int[]){ 2 }, (ad_real[]){ 0.1, -0.2 });
    ad_value *gam = ad_param_from(1, (int[]){ 3 }, (ad_real[]){ 1, 2, 0.5 });
    ad_value *bet = ad_param_from(1, (int[]){ 3 }, (ad_real[]){ 0, 1, -1 });
    ad_value *wts = ad_param_from(1, (int[]){ 2 }, (ad_real[]){ 0.3, 0.7 });
    ad_value *lab = ad_tensor_from(1, (int[]){ 2 }, (ad_real[]){ 2, 0 });
    ad_value *rows = ad_tensor_from(1, (int[]){ 2 }, (ad_real[]){ 1, 1 });
    ad_value *params[] = { x, b, img, k, kb, gam, bet, wts };
    enum { NP = sizeof params / sizeof *params };
    ad_value *pos = ad_add_scalar(tp, ad_square(tp, x), 1);
    ad_value *ys[] = {
        ad_add(tp, x, b), ad_sub(tp, x, b), ad_mul(tp, x, b),
        ad_div(tp, x, ad_add_scalar(tp, ad_square(tp, b), 1)), ad_neg(tp, x), ad_scale(tp, x, 3),
        ad_exp(tp, x), ad_log(tp, pos), ad_sin(tp, x), ad_cos(tp, x),
        ad_tanh(tp, x), ad_sigmoid(tp, x), ad_softplus(tp, x), ad_relu(tp, x), ad_sqrt(tp, pos),
        ad_pow(tp, x, 3), ad_mean_axis(tp, x, 0), ad_broadcast_to(tp, b, 2, (int[]){ 4, 3 }),
        ad_matmul(tp, x, x, false, true), ad_linear(tp, x, x, ad_sum_axis(tp, x, 1)),
        ad_outer(tp, b, b),
        ad_reshape(tp, x, 1, (int[]){ 6 }), ad_transpose(tp, x), ad_slice_rows(tp, x, 1, 1),
        ad_gather_rows(tp, x, rows), ad_scatter_rows(tp, x, rows, 3),
        ad_concat(tp, x, x, 0), ad_concat(tp, x, x, 1), ad_softmax(tp, x), ad_log_softmax(tp, x),
        ad_cross_entropy(tp, x, lab, wts, AD_REDUCE_MEAN), ad_conv2d(tp, img, k, kb, 1, 1),
        ad_maxpool2d(tp, img, 2, 2), ad_batchnorm(tp, x, gam, bet, 1e-5), ad_abs(tp, x),
        ad_maximum(tp, x, b), ad_minimum(tp, x, b), ad_clamp(tp, x, 0, 2.75),
    };
    enum { NY = sizeof ys / sizeof *ys };
    ad_value *loss = ad_const_scalar(tp, 0);
    for (int i = 0; i < NY; i++) loss = ad_add(tp, loss, ad_sqnorm(tp, ys[i]));
    ck_assert_msg(loss != NULL, "%s", ad_error());
    ad_value *g1[NP], *g2[NP];
    ck_assert_int_eq(ad_grad(tp, loss, NP, params, g1, true), AD_OK);
    ad_value *loss2 = ad_const_scalar(tp, 0);
    for (int i = 0; i < NP; i++) loss2 = ad_add(tp, loss2, ad_sqnorm(tp, g1[i]));
    ck_assert_int_eq(ad_grad(tp, loss2, NP, params, g2, true), AD_OK);
    static seen s; /* large: not on the stack */
    s.n = s.n_ops = 0;
    seen_walk(&s, loss2);
    for (int i = 0; i < NP; i++) seen_walk(&s, g2[i]);
    /* Each op, at its first node whose rule has something to make. */
    const char *tried[OPS_MAX];
    int n_tried = 0;
    for (int j = 0; j < s.n_ops; j++) {
        for (int i = 0; i < s.n; i++) {
            ad_value *v = s.v[i];
            /* (the sweep's own "accumulate" hands its gradient on, making nothing) */
            if (v->op != s.op[j] || !v->op->backward || !strcmp(v->op->name, "accumulate") ||
                !rule_makes_something(tp, v))
                continue;
            ad_value *gin[AD_MAX_INPUTS] = { 0 };
            ad_fail(AD_EIO, "the op that failed");
            int rc = v->op->backward(tp, v, NULL, gin);
            ck_assert_msg(rc == AD_EIO, "%s's rule returned %d, not the failing op's %d",
                          v->op->name, rc, AD_EIO);
            ck_assert_str_eq(ad_error(), "the op that failed");
            tried[n_tried++] = v->op->name;
            break;
        }
    }
    static const char *const every[] = {
        "add", "sub", "mul", "div", "neg", "scale", "add_scalar", "exp", "log", "sin", "cos",
        "tanh", "sigmoid", "softplus", "relu", "relu_mask", "square", "sqrt", "pow", "sum_to",
        "broadcast_to", "dot", "sum_axis", "expand_axis", "matmul", "reshape", "transpose",
        "slice_rows", "pad_rows", "slice", "pad", "gather_rows", "scatter_rows", "concat",
        "softmax", "log_softmax", "pick", "unpick", "conv2d", "conv_data_grad",
        "conv_weight_grad", "pool_select", "pool_scatter", "batchnorm", "bn_normalize",
        "bn_invstd", "bn_input_grad", "bn_gamma_grad", "channel_sum", "abs", "maximum", "minimum", "clamp",
    };
    for (size_t e = 0; e < sizeof every / sizeof *every; e++) {
        bool found = false;
        for (int t = 0; t < n_tried && !found; t++) found = !strcmp(tried[t], every[e]);
        ck_assert_msg(found, "no node of '%s' was tried", every[e]);
    }
    ad_tape_free(tp);
    for (int i = 0; i < NP; i++) ad_value_free(params[i]);
    ad_value_free(lab);
    ad_value_free(rows);
}
END_TEST

/* And through the sweep: maximum's rule reads its inputs to choose, so a
 * leaf freed too early is reported by the op in the rule — with that op's
 * status — rather than read (it was a segmentation fault). */
START_TEST(rule_failure_through_the_sweep)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *p = ad_param_from(1, (int[]){ 2 }, (ad_real[]){ 1, 2 });
    ad_value *c = ad_tensor_from(1, (int[]){ 2 }, (ad_real[]){ 3, 0 });
    ad_value *y = ad_sum(tp, ad_maximum(tp, p, c)), *g = NULL;
    ad_value_free(c);
    ad_error_clear();
    expect_fail(ad_grad(tp, y, 1, &p, &g, false), AD_EARG,
                "grad: the backward rule of 'maximum': maximum: input 1 is a caller-owned leaf "
                "that was freed (ad_value_free)");
    ck_assert_ptr_null(g);
    ad_tape_free(tp);
    ad_value_free(p);
}
END_TEST

/* An optional input (γ, β) given as a released value is refused, with or
 * without a gradient to record: without one, batchnorm used to read γ's
 * NULL data as "no γ" and return a number. */
START_TEST(optional_inputs_are_checked)
{
    ad_tape *tp = ad_tape_new(1);
    ad_value *x = ad_tensor_fill(2, (int[]){ 2, 3 }, 1); /* no gradient: no node */
    ad_value *gamma = ad_const_fill(tp, 1, (int[]){ 3 }, 2);
    ad_value *beta = ad_const_fill(tp, 1, (int[]){ 3 }, 0);
    ck_assert_int_eq(ad_tape_step(tp), AD_OK);
    ck_assert_int_eq(ad_tape_step(tp), AD_OK); /* gamma and beta released */
    ad_error_clear();
    ck_assert_ptr_null(ad_batchnorm(tp, x, gamma, NULL, 1e-5));
    expect_fail(ad_error_code(), AD_EARG, "batchnorm: gamma", "was released when step 2 opened");
    ck_assert_ptr_null(ad_batchnorm(tp, x, NULL, beta, 1e-5));
    expect_fail(ad_error_code(), AD_EARG, "batchnorm: beta", "was released");
    ad_tape_free(tp);
    ad_value_free(x);
}
END_TEST

/* An end without its begin is the caller's mistake: a status and a
 * message, and the tape's recording state is left as it was. */
START_TEST(unmatched_no_record_end)
{
    ad_tape *tp = ad_tape_new(1);
    ad_value *x = ad_param_scalar(2);
    expect_fail(ad_no_record_end(tp), AD_EARG, "no_record_end: no no-record scope is open");
    ck_assert(ad_tape_recording(tp));
    ck_assert_int_eq(ad_no_record_begin(tp), AD_OK);
    ck_assert(!ad_tape_recording(tp));
    ck_assert_int_eq(ad_no_record_end(tp), AD_OK);
    expect_fail(ad_no_record_end(tp), AD_EARG, "no_record_end");
    ck_assert(ad_tape_recording(tp));
    ck_assert_ptr_nonnull(ad_mul(tp, x, x)->op); /* still records */
    ad_tape_free(tp);
    ad_value_free(x);
}
END_TEST

/* Names are copied: labels written from one loop buffer stay distinct. */
START_TEST(set_name_copies)
{
    ad_value *v[6];
    char label[8];
    for (int i = 0; i < 6; i++) {
        v[i] = ad_tensor_scalar(0);
        snprintf(label, sizeof label, "w%d", i);
        ck_assert_int_eq(ad_value_set_name(v[i], label), AD_OK);
    }
    strcpy(label, "gone"); /* the caller's buffer changes; the names do not */
    for (int i = 0; i < 6; i++) {
        char want[8];
        snprintf(want, sizeof want, "w%d", i);
        ck_assert_str_eq(v[i]->name, want);
        ck_assert_ptr_ne(v[i]->name, label);
    }
    ck_assert_int_eq(ad_value_set_name(v[0], "again"), AD_OK); /* the old copy is freed */
    ck_assert_str_eq(v[0]->name, "again");
    ck_assert_int_eq(ad_value_set_name(v[1], NULL), AD_OK);
    ck_assert_ptr_null(v[1]->name);
    /* A tape value's name goes with it. */
    ad_tape *tp = ad_tape_new(1);
    ck_assert_int_eq(ad_value_set_name(ad_const_scalar(tp, 1), "temp"), AD_OK);
    ad_tape_free(tp);
    for (int i = 0; i < 6; i++) ad_value_free(v[i]);
}
END_TEST

/* p->grad belongs to p (ad_value_free(p) frees it).  A caller who frees it
 * alone gets AD_EARG from the next ad_backward and ad_zero_grad, naming the
 * parameter, instead of a write through NULL (the reviewer's segfault); set
 * p->grad to NULL after freeing it and the next ad_backward starts anew. */
START_TEST(backward_after_grad_freed)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_value *p = ad_param_scalar(2);
    ck_assert_int_eq(ad_value_set_name(p, "p"), AD_OK);
    ad_value *y = ad_mul(tp, p, p);
    ck_assert_int_eq(ad_backward(tp, y), AD_OK);
    ck_assert_double_eq(p->grad->data[0], 4);
    ad_value_free(p->grad);
    expect_fail(ad_backward(tp, y), AD_EARG, "backward: the grad of parameter 'p' was freed",
                "ad_value_free(p) frees it");
    ad_error_clear();
    ad_zero_grad(p);
    expect_fail(ad_error_code(), AD_EARG, "zero_grad: the grad of parameter 'p' was freed");
    p->grad = NULL;
    ck_assert_int_eq(ad_backward(tp, y), AD_OK);
    ck_assert_double_eq(p->grad->data[0], 4);
    ad_tape_free(tp);
    ad_value_free(p);
}
END_TEST

/* ad_value_keep writes nothing into a caller-owned leaf (never dropped, so
 * there is nothing to mark): threads sharing a λ may all call it while
 * others read λ (under ThreadSanitizer, the write it made was a race). */
static ad_value *kept_leaf;

static void *keep_and_read(void *arg)
{
    int *bad = arg;
    ad_tape *tp = ad_tape_new(1);
    for (int i = 0; i < 100; i++) {
        *bad += ad_value_keep(kept_leaf) != AD_OK;
        ad_value *y = ad_mul(tp, kept_leaf, kept_leaf);
        *bad += !y || ad_value_keep(y) != AD_OK || !y->keep;
        *bad += ad_tape_step(tp) != AD_OK;
    }
    ad_tape_free(tp);
    return NULL;
}

START_TEST(keep_writes_no_caller_leaf)
{
    kept_leaf = ad_param_scalar(2);
    ck_assert_int_eq(ad_value_keep(kept_leaf), AD_OK);
    ck_assert(!kept_leaf->keep);
    pthread_t th[2];
    int bad[2] = { 0, 0 };
    for (int i = 0; i < 2; i++) ck_assert_int_eq(pthread_create(&th[i], NULL, keep_and_read, &bad[i]), 0);
    for (int i = 0; i < 2; i++) ck_assert_int_eq(pthread_join(th[i], NULL), 0);
    ck_assert_int_eq(bad[0] + bad[1], 0);
    ck_assert(!kept_leaf->keep);
    ad_value_free(kept_leaf);
}
END_TEST

/* ---- the pool -------------------------------------------------------------------- */

/* One inner step of a small model: a few shapes, the same every step. */
static int pool_step(ad_tape *tp, ad_value *w, ad_value *x, ad_value **next)
{
    ad_value *h = ad_tanh(tp, ad_matmul(tp, x, w, false, false));
    ad_value *loss = ad_mean(tp, ad_square(tp, h)), *g;
    int rc = ad_grad(tp, loss, 1, &w, &g, true);
    if (rc == AD_OK) *next = ad_sub(tp, w, ad_scale(tp, g, 0.1));
    return rc;
}

/* With horizon 1 a step's values are released two steps later, and the
 * next step takes their blocks: after the first few steps the tape asks the
 * system for nothing more. */
START_TEST(pool_reuses_released_blocks)
{
    ad_rng rng;
    ad_rng_seed(&rng, 5);
    ad_value *x = ad_tensor_randn(&rng, 2, (int[]){ 40, 30 }, 1);
    ad_value *w0 = ad_tensor_randn(&rng, 2, (int[]){ 30, 20 }, 0.1);
    ck_assert_int_eq(ad_set_requires_grad(w0, true), AD_OK);
    ad_tape *tp = ad_tape_new(1);
    ad_value *w = w0;
    ad_tape_stats at5 = { 0 }, at50;
    for (int t = 1; t <= 50; t++) {
        ck_assert_int_eq(ad_tape_step(tp), AD_OK);
        ck_assert_int_eq(pool_step(tp, w, x, &w), AD_OK);
        if (t == 5) ck_assert_int_eq(ad_tape_get_stats(tp, &at5), AD_OK);
    }
    ck_assert_int_eq(ad_tape_get_stats(tp, &at50), AD_OK);
    ck_assert_uint_gt(at5.blocks_fresh, 0);
    ck_assert_uint_eq(at50.blocks_fresh, at5.blocks_fresh);
    ck_assert_uint_gt(at50.blocks_reused, at5.blocks_reused);
    /* The accounting: live values as before, the pool's footprint apart. */
    ck_assert_uint_eq(at50.bytes, ad_tape_bytes(tp));
    ck_assert_uint_ge(at50.pool_bytes, at50.pool_free_bytes + at50.pool_header_bytes);
    ck_assert_uint_gt(at50.pool_bytes, 0);
    ck_assert_uint_eq(ad_tape_pool_bytes(tp), at50.pool_bytes);
    ad_tape_free(tp);
    ad_value_free(x);
    ad_value_free(w0);
}
END_TEST

/* ad_tape_bytes counts each value as a 256-byte struct and its data, as it
 * always did (the README's numbers depend on it); the pool is apart. */
START_TEST(pool_keeps_byte_counts)
{
    ad_tape *tp = ad_tape_new(1);
    ad_const_fill(tp, 1, (int[]){ 10 }, 1);
    ck_assert_uint_eq(ad_tape_bytes(tp), 256 + 10 * sizeof(ad_real));
    ad_const_scalar(tp, 1);
    ck_assert_uint_eq(ad_tape_bytes(tp), 2 * 256 + 11 * sizeof(ad_real));
    ck_assert_uint_eq(ad_tape_peak_bytes(tp), ad_tape_bytes(tp));
    /* Reset: no value left, the blocks kept for the next round. */
    ck_assert_int_eq(ad_tape_reset(tp), AD_OK);
    ad_tape_stats st;
    ad_tape_get_stats(tp, &st);
    ck_assert_uint_eq(st.bytes, 0);
    ck_assert_uint_eq(st.peak_bytes, 2 * 256 + 11 * sizeof(ad_real));
    size_t ten = (10 * sizeof(ad_real) + 63) / 64 * 64; /* its size class */
    ck_assert_uint_eq(st.pool_free_bytes, ten + 64);
    ad_const_fill(tp, 1, (int[]){ 10 }, 1);
    ad_tape_get_stats(tp, &st);
    ck_assert_uint_eq(st.blocks_fresh, 2);
    ck_assert_uint_eq(st.blocks_reused, 1);
    ck_assert_uint_eq(st.pool_free_bytes, 64);
    /* Trim: the free blocks go back; values stay. */
    ck_assert_int_eq(ad_tape_trim(tp), AD_OK);
    ad_tape_get_stats(tp, &st);
    ck_assert_uint_eq(st.pool_free_bytes, 0);
    ck_assert_uint_eq(st.bytes, 256 + 10 * sizeof(ad_real));
    ad_tape_free(tp);
}
END_TEST

/* A value may take a free block up to twice its size, and gives it back to
 * that block's class. */
START_TEST(pool_best_fit)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    ad_tape_stats st;
    uint64_t mark = ad_tape_mark(tp);
    ad_const_fill(tp, 1, (int[]){ 3000 }, 1);
    ad_tape_rewind(tp, mark);
    ad_value *v = ad_const_fill(tp, 1, (int[]){ 2000 }, 2); /* fits in the free one */
    ad_tape_get_stats(tp, &st);
    ck_assert_uint_eq(st.blocks_fresh, 1);
    ck_assert_uint_eq(v->data_bytes, (3000 * sizeof(ad_real) + 63) / 64 * 64);
    ad_value *u = ad_const_fill(tp, 1, (int[]){ 500 }, 2); /* 6x smaller: a block of its own */
    ad_tape_get_stats(tp, &st);
    ck_assert_uint_eq(st.blocks_fresh, 2);
    ck_assert_uint_eq(u->data_bytes, (500 * sizeof(ad_real) + 63) / 64 * 64);
    ad_tape_free(tp);
}
END_TEST

/* Shapes that change from round to round cannot pile up blocks: the pool
 * stays within twice the most it had in use (plus the block asked for). */
START_TEST(pool_is_bounded)
{
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    size_t most_used = 0;
    for (int round = 0; round < 20; round++) {
        int n = 1000 * (round + 1) * (round + 1); /* a new size class every round */
        for (int k = 0; k < 4; k++) ad_const_fill(tp, 1, &n, 1);
        size_t used = 4 * ((n * sizeof(ad_real) + 4095) / 4096 * 4096);
        if (used > most_used) most_used = used;
        ad_tape_stats st;
        ad_tape_get_stats(tp, &st);
        ck_assert_uint_le(st.pool_peak_block_bytes, 2 * most_used + used);
        ad_tape_reset(tp);
    }
    ad_tape_free(tp);
}
END_TEST

START_TEST(scratch_from_the_pool)
{
    ad_tape *tp = ad_tape_new(1);
    size_t n = 100000;
    ad_real *a = ad_scratch_take(tp, n * sizeof(ad_real));
    ck_assert_ptr_nonnull(a);
    ck_assert_uint_eq((uintptr_t)a % 64, 0);
    for (size_t i = 0; i < n; i++) a[i] = (ad_real)i; /* all of it writable */
    ck_assert_uint_eq(ad_tape_bytes(tp), 0);          /* not a value */
    ck_assert_uint_ge(ad_tape_pool_bytes(tp), n * sizeof(ad_real));
    ad_scratch_give(tp, a, n * sizeof(ad_real));
    ad_real *b = ad_scratch_take(tp, n * sizeof(ad_real)); /* the same block again */
    ck_assert_ptr_eq(a, b);
    ad_tape_stats st;
    ad_tape_get_stats(tp, &st);
    ck_assert_uint_eq(st.blocks_fresh, 1);
    ad_scratch_give(tp, b, n * sizeof(ad_real));
    ck_assert_ptr_null(ad_scratch_take(NULL, 8));
    ck_assert_int_eq(ad_error_code(), AD_EARG);
    ad_tape_free(tp);
}
END_TEST

/* Each tape keeps the structs of its last 2048 released values. */
START_TEST(released_structs_kept_are_bounded)
{
    ad_tape *tp = ad_tape_new(1);
    for (int t = 0; t < 3000; t++) {
        ck_assert_int_eq(ad_tape_step(tp), AD_OK);
        ad_const_scalar(tp, 1);
    }
    ad_tape_stats st;
    ad_tape_get_stats(tp, &st);
    ck_assert_uint_eq(st.released_kept, 2048);
    /* The structs: 2 live values, the 2048 kept, and a few spare ones. */
    ck_assert_uint_ge(st.pool_header_bytes, (2048 + 2) * sizeof(ad_value));
    ck_assert_uint_le(st.pool_header_bytes, (2048 + 2 + 64) * sizeof(ad_value));
    ad_tape_free(tp);
}
END_TEST

#ifdef TEST_ASAN
/* ASan still sees what the pool hands out and takes back: a free block is
 * poisoned, a block in use is poisoned past the bytes asked (an overflow
 * even inside a bigger block), and a block handed out holds NaN until
 * written. */
START_TEST(pool_under_asan)
{
    ad_tape *tp = ad_tape_new(1);
    ad_value *v = ad_const_fill(tp, 1, (int[]){ 100 }, 1);
    ad_real *stale = v->data;
    ck_assert(!__asan_address_is_poisoned(stale));
    ck_assert_int_eq(ad_tape_step(tp), AD_OK);
    ck_assert_int_eq(ad_tape_step(tp), AD_OK); /* v released: its block is free */
    ck_assert(__asan_address_is_poisoned(stale));
    ck_assert(__asan_address_is_poisoned(stale + 99));
    ad_value *u = ad_node_new(tp, &(ad_op){ "raw", NULL }, 1, (int[]){ 90 }, 0, NULL);
    ck_assert_ptr_eq(u->data, stale); /* the same block, bigger than asked */
    ck_assert(!__asan_address_is_poisoned(u->data + 89));
    ck_assert(__asan_address_is_poisoned(u->data + 90));
    ck_assert(isnan(u->data[0]) && isnan(u->data[89]));
    ad_tape_free(tp);
}
END_TEST
#endif

Suite *lifetime_suite(void);
Suite *lifetime_suite(void)
{
    Suite *s = suite_create("lifetime");
    TCase *tc = tcase_create("misuse");
    tcase_add_test(tc, released_value_is_reported);
    tcase_add_test(tc, sweep_refuses_released_values);
    tcase_add_test(tc, carried_value_keeps_its_step);
    tcase_add_test(tc, value_used_after_reset);
    tcase_add_test(tc, value_used_after_tape_free);
    tcase_add_test(tc, rewound_value_is_reported);
    tcase_add_test(tc, freed_leaf_is_reported);
    tcase_add_test(tc, leaf_freed_while_a_tape_uses_it);
    tcase_add_test(tc, leaves_freed_on_several_threads);
    tcase_add_test(tc, every_op_refuses_a_released_value);
    tcase_add_test(tc, null_everywhere);
    tcase_add_test(tc, null_input_messages);
    tcase_add_test(tc, every_op_names_a_null_input);
    tcase_add_test(tc, optional_inputs_are_checked);
    tcase_add_test(tc, rules_return_the_failing_ops_status);
    tcase_add_test(tc, rule_failure_through_the_sweep);
    tcase_add_test(tc, unmatched_no_record_end);
    tcase_add_test(tc, set_name_copies);
    tcase_add_test(tc, backward_after_grad_freed);
    tcase_add_test(tc, keep_writes_no_caller_leaf);
    suite_add_tcase(s, tc);
    TCase *pool = tcase_create("pool");
    tcase_add_test(pool, pool_reuses_released_blocks);
    tcase_add_test(pool, pool_keeps_byte_counts);
    tcase_add_test(pool, pool_best_fit);
    tcase_add_test(pool, pool_is_bounded);
    tcase_add_test(pool, scratch_from_the_pool);
    tcase_add_test(pool, released_structs_kept_are_bounded);
#ifdef TEST_ASAN
    tcase_add_test(pool, pool_under_asan);
#endif
    suite_add_tcase(s, pool);
    return s;
}
