/*
 * models.h — graph builders: a linear model, a multi-layer perceptron, and
 * the few-shot CNN of the paper (App. G.3, Fig. 8).
 *
 * A model here is two things, kept apart:
 *   - a description of its parameter list (mdl_shapes: how many tensors,
 *     their shapes, names and initialisers), from which caller-owned leaves
 *     can be made with mdl_init_params;
 *   - a forward function that builds the graph on a tape from an input and
 *     a list of parameter *values*.
 * The forward function never owns or caches parameters, so the same builder
 * serves an inner loop, where w are tape values that change every step, and
 * an outer loop, where λ are caller-owned leaves.  In a bilevel problem
 * (optim/hypergrad.h) the inner loss of a 2-layer MLP is
 *
 *     static ad_value *inner(ad_tape *tp, ad_value *const *w,
 *                            ad_value *const *lam, int t, void *ctx)
 *     {
 *         task *c = ctx;                                // x [N,784], y [N]
 *         ad_value *logits = mdl_mlp_forward(tp, &c->net, c->x, w);
 *         return ad_cross_entropy(tp, logits, c->y, NULL, AD_REDUCE_MEAN);
 *     }
 *
 * and the parameters come from the shapes:
 *
 *     mdl_mlp net = { .n_layers = 2, .sizes = { 784, 100, 10 }, .act = MDL_TANH };
 *     mdl_shapes s;
 *     ad_value *w0[MDL_MAX_PARAMS];
 *     if (mdl_mlp_shapes(&net, &s) != AD_OK ||
 *         mdl_init_params(&s, &rng, w0, true) != AD_OK)
 *         fprintf(stderr, "%s\n", ad_error());
 *     ...
 *     mdl_free_params(s.n, w0);
 *
 * Errors follow ops/ops.h: builders return NULL and leave a message naming
 * the model and the layer ("cnn block 2 W: got [8,1,3,3], want [8,8,3,3]",
 * "mlp layer 1: linear: ..."); a NULL input x returns NULL and keeps the
 * earlier message, so a whole expression can be checked once.
 *
 * Files: linear.c (parameter lists, initialisation, the linear model),
 * mlp.c, cnn.c.  Shapes are written [N,C,H,W]; N is the batch.
 */
#ifndef HYPERTAPE_MODELS_H
#define HYPERTAPE_MODELS_H

#include "ad/ad.h"

/* ---- parameter lists (linear.c) ---------------------------------------- */

enum {
    MDL_MAX_PARAMS = 32, /* tensors in one mdl_shapes */
    MDL_NAME_LEN = 32    /* bytes of a parameter's name, with the '\0' */
};

/* How mdl_init_params fills a tensor.  For a weight, fan_in is the size of
 * one output slice (in for [out,in], C·kh·kw for [O,C,kh,kw]) and fan_out
 * the size of one input slice (out, or O·kh·kw). */
typedef enum mdl_init_kind {
    MDL_INIT_HE,     /* uniform in ±√(6 / fan_in): weights followed by relu */
    MDL_INIT_GLOROT, /* uniform in ±√(6 / (fan_in + fan_out)): tanh, logits */
    MDL_INIT_ZEROS,  /* biases, batch-norm β */
    MDL_INIT_ONES    /* batch-norm γ */
} mdl_init_kind;

/* A list of parameter tensors: entry i has shape[i][0..rank[i]-1], a name
 * ("block 2 W") and an initialiser.  Plain data: copy it, edit init[] to
 * change how a tensor starts (e.g. MDL_INIT_ZEROS for a logistic regression
 * that should start at w = 0). */
typedef struct mdl_shapes {
    int n;
    int rank[MDL_MAX_PARAMS];
    int shape[MDL_MAX_PARAMS][AD_MAX_RANK];
    mdl_init_kind init[MDL_MAX_PARAMS];
    char name[MDL_MAX_PARAMS][MDL_NAME_LEN];
} mdl_shapes;

/* Appends one entry (name is copied, cut to MDL_NAME_LEN − 1 bytes).
 * AD_EARG when the list is full or an argument is bad. */
int mdl_shapes_add(mdl_shapes *s, const char *name, int rank, const int *shape,
                   mdl_init_kind init);
/* out = entries first .. first+count−1 of s (e.g. the shapes of the centres
 * c_j of a regulariser Σ ρ_j ‖w_j − c_j‖², which are those of w). */
int mdl_shapes_slice(const mdl_shapes *s, int first, int count, mdl_shapes *out);
/* Scalars in entries first .. first+count−1 (0 for a bad range). */
size_t mdl_shapes_numel(const mdl_shapes *s, int first, int count);

/* Makes s->n new caller-owned leaves in out[0..n−1], each initialised by its
 * kind (random kinds draw from rng in list order, so a seed gives the same
 * parameters bit for bit), and marked as wanting a gradient if asked.
 * On failure nothing is left allocated and out[] is all NULL. */
int mdl_init_params(const mdl_shapes *s, ad_rng *rng, ad_value **out, bool requires_grad);
/* ad_value_free on params[0..n−1], which are then set to NULL. */
void mdl_free_params(int n, ad_value **params);
/* AD_OK when params[0..count−1] have the shapes of entries first.. of s;
 * else AD_ESHAPE (AD_EARG for a NULL entry) with "<who> <name>: got [..],
 * want [..]". */
int mdl_check_params(const char *who, const mdl_shapes *s, int first, int count,
                     ad_value *const *params);

/* ---- the linear model (linear.c) --------------------------------------- */

/* y = x Wᵀ + b: x [N,in] -> [N,out].
 * Parameters: W [out,in] (Glorot), then b [out] (zeros) unless no_bias. */
typedef struct mdl_linear {
    int in, out;
    bool no_bias;
} mdl_linear;

int mdl_linear_shapes(const mdl_linear *m, mdl_shapes *s);
/* params: W, b (or W alone).  Returns [N,out] on tp, or NULL. */
ad_value *mdl_linear_forward(ad_tape *tp, const mdl_linear *m, ad_value *x,
                             ad_value *const *params);

/* ---- the multi-layer perceptron (mlp.c) -------------------------------- */

enum { MDL_MAX_LAYERS = 15 };

typedef enum mdl_activation { MDL_RELU, MDL_TANH } mdl_activation;

/* n_layers linear layers, sizes[0] inputs -> sizes[n_layers] outputs, with
 * the activation between layers and none after the last (it gives logits).
 * Parameters, layer by layer: W_l [sizes[l], sizes[l−1]] (He for relu,
 * Glorot for tanh and for the last layer), then b_l [sizes[l]] (zeros)
 * unless no_bias. */
typedef struct mdl_mlp {
    int n_layers;
    int sizes[MDL_MAX_LAYERS + 1];
    mdl_activation act;
    bool no_bias;
} mdl_mlp;

int mdl_mlp_shapes(const mdl_mlp *m, mdl_shapes *s);
/* x [N,sizes[0]] -> [N,sizes[n_layers]], or NULL. */
ad_value *mdl_mlp_forward(ad_tape *tp, const mdl_mlp *m, ad_value *x, ad_value *const *params);

/* ---- the few-shot CNN (cnn.c) -------------------------------------------
 *
 *   x [N,C0,H,W] -> n_blocks × conv block -> flatten -> linear -> [N,classes]
 *   conv block:  relu(batchnorm(maxpool2x2(conv3x3_pad1(x))))
 *
 * Each 2×2 max-pool (stride 2) halves H and W, rounding down: the paper's
 * 28×28 Omniglot images go 28 -> 14 -> 7 -> 3 -> 1, so the classifier sees
 * `channels` features.  Batch-norm runs in training mode (the batch's own
 * statistics, as in MAML-style few-shot learning); where the map is 1×1 it
 * normalises over the N images alone, so that batch needs N ≥ 2 (with N = 1
 * the block's output is β and carries no gradient back).
 *
 * The parameter list is 4 tensors per block — W [channels,C,3,3] (He),
 * b [channels] (zeros), γ [channels] (ones), β [channels] (zeros) — then
 * the classifier W [classes,F] (Glorot) and b [classes] (zeros).  (The conv
 * bias is kept to match the paper's count, though batch-norm removes it:
 * its gradient is exactly zero.)
 *
 * The list is cut in two after the first n_rep blocks: those form the
 * "hyper-representation" (hyperparameters λ, frozen in the inner loop), the
 * rest and the classifier are the task parameters w.  So a bilevel
 * problem's inner loss is   mdl_cnn_forward(tp, &net, x, lam, w)   with the
 * 4·n_rep representation tensors first in λ.
 */
enum { MDL_CNN_BLOCK_PARAMS = 4, MDL_CNN_MAX_BLOCKS = 7 };
#define MDL_BN_EPS 1e-5

typedef struct mdl_cnn {
    int in_channels, height, width; /* the input image */
    int channels;                   /* 3×3 kernels per conv (64 in the paper) */
    int n_blocks;                   /* 1 .. MDL_CNN_MAX_BLOCKS */
    int n_classes;
    int n_rep;                      /* 0 .. n_blocks: blocks in the first list */
} mdl_cnn;

/* The paper's network for 5-way Omniglot: 1×28×28 input, 4 blocks of
 * `channels` kernels (64 in the paper; 8 makes a quick one), 5 classes,
 * the first 2 blocks as the representation. */
mdl_cnn mdl_cnn_omniglot(int channels);
/* AD_EARG naming the bad field, e.g. "cnn: a 28x28 input is 1x1 before
 * block 5, too small for 2x2 max-pooling"; also when the classifier's
 * input (channels × the last map) would exceed INT_MAX features. */
int mdl_cnn_check(const mdl_cnn *m);
/* The whole list: 4·n_blocks block tensors, then classifier W and b.  The
 * first 4·n_rep entries are the representation's. */
int mdl_cnn_shapes(const mdl_cnn *m, mdl_shapes *s);
/* Scalars in the representation (first n_rep blocks) and in the task
 * parameters (the other blocks and the classifier); either may be NULL.
 * The paper's net (64 channels): 37 824 + 74 437.  Its ≈110k hyperparameters
 * are the representation, the centres (one per task tensor: 74 437 more)
 * and 3 ρ — 112 264; its ≈75k parameters are the task part. */
int mdl_cnn_counts(const mdl_cnn *m, size_t *rep, size_t *task);
/* The feature map after the first `blocks` blocks: [channels,h,w] (or the
 * input's [in_channels,height,width] for 0 blocks). */
int mdl_cnn_map_shape(const mdl_cnn *m, int blocks, int chw[3]);

/* One block on its own: relu(batchnorm(maxpool(conv(x, W, b), 2, 2), γ, β))
 * with "same" padding ((k−1)/2 for a k×k kernel, k odd).  x [N,C,H,W],
 * W [O,C,k,k], b [O] or NULL, gamma, beta [O] -> [N,O,H/2,W/2].
 * Errors read "conv block: <op>: ...". */
ad_value *mdl_conv_block(ad_tape *tp, ad_value *x, ad_value *W, ad_value *b, ad_value *gamma,
                         ad_value *beta);

/* The whole network: rep holds the first 4·n_rep tensors of the list, task
 * the rest (rep may be NULL when n_rep is 0).  x [N,in_channels,height,width]
 * -> logits [N,n_classes]. */
ad_value *mdl_cnn_forward(ad_tape *tp, const mdl_cnn *m, ad_value *x, ad_value *const *rep,
                          ad_value *const *task);
/* The two halves, for callers that compute the representation once per
 * task (it does not change in the inner loop):
 *   h = mdl_cnn_rep_forward(tp, m, x, rep)     [N, mdl_cnn_map_shape(m, n_rep)]
 *   y = mdl_cnn_task_forward(tp, m, h, task)   [N,n_classes]
 * (With a truncated tape, mind that a value from a released step is a
 * constant: h made once at step 0 cuts the inner steps' path back to λ.
 * Treating h as a leaf of its own, and chaining its gradient back through
 * rep_forward afterwards, keeps the hypergradient whole.) */
ad_value *mdl_cnn_rep_forward(ad_tape *tp, const mdl_cnn *m, ad_value *x, ad_value *const *rep);
ad_value *mdl_cnn_task_forward(ad_tape *tp, const mdl_cnn *m, ad_value *h,
                               ad_value *const *task);

#endif
