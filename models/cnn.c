/* cnn.c — the few-shot CNN of the paper (App. G.3, Fig. 8): blocks of
 * 3×3 convolution, 2×2 max-pooling, batch-norm and relu, then a linear
 * classifier on the flattened map.
 *
 * Sizes: N images; block b (1-based) maps [N,C,H,W] -> [N,channels,H/2,W/2]
 * (rounded down); F = channels·h·w features reach the classifier. */
#include <limits.h>
#include <stdio.h>

#include "models.h"
#include "ops/ops.h"

mdl_cnn mdl_cnn_omniglot(int channels)
{
    return (mdl_cnn){ .in_channels = 1, .height = 28, .width = 28, .channels = channels,
                      .n_blocks = 4, .n_classes = 5, .n_rep = 2 };
}

int mdl_cnn_check(const mdl_cnn *m)
{
    if (!m) return ad_fail(AD_EARG, "cnn: NULL model");
    if (m->in_channels < 1 || m->height < 1 || m->width < 1)
        return ad_fail(AD_EARG, "cnn: input %dx%dx%d must have every extent at least 1",
                       m->in_channels, m->height, m->width);
    if (m->channels < 1) return ad_fail(AD_EARG, "cnn: channels %d is less than 1", m->channels);
    if (m->n_blocks < 1 || m->n_blocks > MDL_CNN_MAX_BLOCKS)
        return ad_fail(AD_EARG, "cnn: n_blocks %d is not in 1..%d", m->n_blocks, MDL_CNN_MAX_BLOCKS);
    if (m->n_classes < 1) return ad_fail(AD_EARG, "cnn: n_classes %d is less than 1", m->n_classes);
    if (m->n_rep < 0 || m->n_rep > m->n_blocks)
        return ad_fail(AD_EARG, "cnn: n_rep %d is not in 0..%d (n_blocks)", m->n_rep, m->n_blocks);
    int h = m->height, w = m->width;
    for (int b = 1; b <= m->n_blocks; b++, h /= 2, w /= 2)
        if (h < 2 || w < 2)
            return ad_fail(AD_EARG, "cnn: a %dx%d input is %dx%d before block %d, too small for "
                           "2x2 max-pooling", m->height, m->width, h, w, b);
    /* The classifier's F = channels·h·w inputs is a tensor extent, an int:
     * multiplied in int it would overflow (undefined) for a big map.  In two
     * products below 2^62 each, so that long long cannot overflow either
     * (the message's product is a double: it may not fit). */
    long long ch = (long long)m->channels * h;
    if (ch > INT_MAX || ch * w > INT_MAX)
        return ad_fail(AD_EARG, "cnn: the classifier would read %d channels x %dx%d = %.0f "
                       "features, more than %d", m->channels, h, w, (double)ch * w, INT_MAX);
    return AD_OK;
}

int mdl_cnn_map_shape(const mdl_cnn *m, int blocks, int chw[3])
{
    int rc = mdl_cnn_check(m);
    if (rc != AD_OK) return rc;
    if (!chw || blocks < 0 || blocks > m->n_blocks)
        return ad_fail(AD_EARG, "cnn: map after %d blocks: want 0..%d blocks and an output array",
                       blocks, m->n_blocks);
    chw[0] = blocks ? m->channels : m->in_channels;
    chw[1] = m->height >> blocks;
    chw[2] = m->width >> blocks;
    return AD_OK;
}

int mdl_cnn_shapes(const mdl_cnn *m, mdl_shapes *s)
{
    int rc = mdl_cnn_check(m), O = 0, chw[3] = { 0, 0, 0 };
    if (rc != AD_OK) return rc;
    if (!s) return ad_fail(AD_EARG, "cnn: NULL shapes");
    s->n = 0;
    for (int b = 1; b <= m->n_blocks && rc == AD_OK; b++) {
        static const char *const what[MDL_CNN_BLOCK_PARAMS] = { "W", "b", "gamma", "beta" };
        static const mdl_init_kind kind[MDL_CNN_BLOCK_PARAMS] = { MDL_INIT_HE, MDL_INIT_ZEROS,
                                                                  MDL_INIT_ONES, MDL_INIT_ZEROS };
        int C = b == 1 ? m->in_channels : m->channels;
        O = m->channels;
        for (int k = 0; k < MDL_CNN_BLOCK_PARAMS && rc == AD_OK; k++) {
            char name[MDL_NAME_LEN];
            snprintf(name, sizeof name, "block %d %s", b, what[k]);
            rc = k == 0 ? mdl_shapes_add(s, name, 4, (int[]){ O, C, 3, 3 }, kind[k])
                        : mdl_shapes_add(s, name, 1, (int[]){ O }, kind[k]);
        }
    }
    if (rc == AD_OK) rc = mdl_cnn_map_shape(m, m->n_blocks, chw);
    int F = chw[0] * chw[1] * chw[2]; /* mdl_cnn_check: at most INT_MAX */
    if (rc == AD_OK)
        rc = mdl_shapes_add(s, "classifier W", 2, (int[]){ m->n_classes, F }, MDL_INIT_GLOROT);
    if (rc == AD_OK)
        rc = mdl_shapes_add(s, "classifier b", 1, (int[]){ m->n_classes }, MDL_INIT_ZEROS);
    return rc;
}

int mdl_cnn_counts(const mdl_cnn *m, size_t *rep, size_t *task)
{
    mdl_shapes s;
    int rc = mdl_cnn_shapes(m, &s);
    if (rc != AD_OK) return rc;
    int n_rep = MDL_CNN_BLOCK_PARAMS * m->n_rep;
    if (rep) *rep = mdl_shapes_numel(&s, 0, n_rep);
    if (task) *task = mdl_shapes_numel(&s, n_rep, s.n - n_rep);
    return AD_OK;
}

/* ---- the block --------------------------------------------------------- */

/* x [N,C,H,W] -> [N,O,H/2,W/2]; W [O,C,k,k] with k odd. */
static ad_value *block(ad_tape *tp, ad_value *x, ad_value *W, ad_value *b, ad_value *gamma,
                       ad_value *beta)
{
    ad_value *y = ad_conv2d(tp, x, W, b, 1, (W->shape[2] - 1) / 2);
    return ad_relu(tp, ad_batchnorm(tp, ad_maxpool2d(tp, y, 2, 2), gamma, beta, MDL_BN_EPS));
}

ad_value *mdl_conv_block(ad_tape *tp, ad_value *x, ad_value *W, ad_value *b, ad_value *gamma,
                         ad_value *beta)
{
    if (!x || !W || !gamma || !beta) return NULL; /* an earlier failure: keep its message */
    if (!tp) {
        ad_fail(AD_EARG, "conv block: NULL tape");
        return NULL;
    }
    if (W->rank != 4 || W->shape[2] != W->shape[3] || W->shape[2] % 2 == 0) {
        char sw[64];
        ad_fail(AD_ESHAPE, "conv block: W %s must be [O,C,k,k] with k odd (same padding)",
                ad_shape_str(W, sw, sizeof sw));
        return NULL;
    }
    ad_value *y = block(tp, x, W, b, gamma, beta);
    if (!y) ad_fail_wrap(AD_EARG, "conv block");
    return y;
}

/* ---- the network ------------------------------------------------------- */

/* Blocks first..last−1 (0-based) of the network on h, with p the list of
 * their parameters, 4 per block. */
static ad_value *blocks(ad_tape *tp, ad_value *h, int first, int last, ad_value *const *p)
{
    for (int b = first; b < last && h; b++, p += MDL_CNN_BLOCK_PARAMS)
        if (!(h = block(tp, h, p[0], p[1], p[2], p[3]))) ad_fail_wrap(AD_EARG, "cnn block %d", b + 1);
    return h;
}

/* Checks that h is [N, map after `after` blocks]. */
static int check_map(const mdl_cnn *m, const ad_value *h, int after)
{
    int chw[3];
    int rc = mdl_cnn_map_shape(m, after, chw);
    if (rc != AD_OK) return rc;
    if (h->rank == 4 && h->shape[1] == chw[0] && h->shape[2] == chw[1] && h->shape[3] == chw[2])
        return AD_OK;
    char sh[64];
    if (after == 0)
        return ad_fail(AD_ESHAPE, "cnn: input x %s does not fit the model, which wants [N,%d,%d,%d]",
                       ad_shape_str(h, sh, sizeof sh), chw[0], chw[1], chw[2]);
    return ad_fail(AD_ESHAPE, "cnn: representation h %s does not fit the task part, which wants "
                   "[N,%d,%d,%d] (the map after block %d)", ad_shape_str(h, sh, sizeof sh),
                   chw[0], chw[1], chw[2], after);
}

/* x [N,C0,H,W] -> h [N,channels,H>>n_rep,W>>n_rep] (x itself when n_rep = 0) */
ad_value *mdl_cnn_rep_forward(ad_tape *tp, const mdl_cnn *m, ad_value *x, ad_value *const *rep)
{
    if (!x) return NULL;
    mdl_shapes s;
    if (!tp) {
        ad_fail(AD_EARG, "cnn: NULL tape");
        return NULL;
    }
    if (mdl_cnn_shapes(m, &s) != AD_OK || check_map(m, x, 0) != AD_OK ||
        mdl_check_params("cnn", &s, 0, MDL_CNN_BLOCK_PARAMS * m->n_rep, rep) != AD_OK)
        return NULL;
    return blocks(tp, x, 0, m->n_rep, rep);
}

/* h [N, map after n_rep blocks] -> logits [N,n_classes] */
ad_value *mdl_cnn_task_forward(ad_tape *tp, const mdl_cnn *m, ad_value *h, ad_value *const *task)
{
    if (!h) return NULL;
    mdl_shapes s;
    if (!tp) {
        ad_fail(AD_EARG, "cnn: NULL tape");
        return NULL;
    }
    if (mdl_cnn_shapes(m, &s) != AD_OK || check_map(m, h, m->n_rep) != AD_OK)
        return NULL;
    int first = MDL_CNN_BLOCK_PARAMS * m->n_rep, n_task = s.n - first;
    if (mdl_check_params("cnn", &s, first, n_task, task) != AD_OK) return NULL;
    h = blocks(tp, h, m->n_rep, m->n_blocks, task);
    if (!h) return NULL;
    int N = h->shape[0], F = (int)(h->size / (size_t)N);
    ad_value *y = ad_linear(tp, ad_reshape(tp, h, 2, (int[]){ N, F }), task[n_task - 2],
                            task[n_task - 1]);
    if (!y) ad_fail_wrap(AD_EARG, "cnn classifier");
    return y;
}

ad_value *mdl_cnn_forward(ad_tape *tp, const mdl_cnn *m, ad_value *x, ad_value *const *rep,
                          ad_value *const *task)
{
    return mdl_cnn_task_forward(tp, m, mdl_cnn_rep_forward(tp, m, x, rep), task);
}
