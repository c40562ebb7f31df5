/* batchnorm.c — batch normalisation in training mode, as fused kernels.
 *
 * Every channel is normalised with the batch's own mean and biased variance
 * (over N, or over N, H and W), then scaled and shifted:
 *     x̂ = (x − μ)·s,  s = (σ² + ε)^−½,   y = γ ⊙ x̂ + β.
 * The gradient flows through μ and s as well — that is what makes training-
 * mode batch norm differ from a per-channel affine map.  With M entries per
 * channel, ḡ = mean(g) and a = mean(g ⊙ x̂) per channel:
 *     ∂/∂x ⟨g, γx̂⟩ = γ·s·(g − ḡ − x̂·a)                        (input_grad)
 * The map g ↦ g − ḡ − x̂·a is a symmetric projection, which gives the
 * derivative in g; in x, for a second seed u with ū, b = mean(u ⊙ x̂):
 *     ∂/∂x ⟨u, γ·s·P(g)⟩ = −γ·s²·(x̂·(mean(u⊙g) − ū·ḡ − 3ab) + b·(g − ḡ) + a·(u − ū)).
 *
 * Five ops, whose backward rules use only each other and elementwise ops,
 * so every order of derivative goes through:
 *   batchnorm(x, γ, β)   y                 dx = input_grad(x, g, γ), dγ = gamma_grad(x, g),
 *                                          dβ = Σ g
 *   bn_normalize(x)      x̂                 dx = input_grad(x, g, 1)
 *   bn_invstd(x)         s  (stat shape)   dx = −x̂ ⊙ (g·s²/M)
 *   bn_input_grad(x,g,γ) γ·s·P(g)          dg = input_grad(x, u, γ), dγ = Σ u ⊙ input_grad(x, g, 1),
 *                                          dx = the formula above (with bn_normalize, bn_invstd)
 *   bn_gamma_grad(x, g)  Σ g ⊙ x̂  [C]      dg = x̂ ⊙ v, dx = input_grad(x, g, v)
 * (Σ over the stat axes is ad_channel_sum, defined here too: dβ, conv2d's
 * bias gradient and the per-channel means of the rules above.)
 * The forward also leaves `stats`, a constant [2,C] holding μ and s, which
 * every op takes as an input: the backward kernels read the statistics
 * instead of recomputing them (the derivatives through μ and s are in the
 * formulas, not in a path through `stats`).
 *
 * Per-channel sums accumulate in double in both builds (eight partial sums,
 * for speed), and σ² is the centred sum Σ(x − μ)²/M, so the values are
 * those of the composition it replaced (mean, x − μ, square, mean, pow)
 * to round-off.
 *
 * Layout: x is [A, C, R] — A = N images, C channels, R = H·W (1 for [N,C]);
 * the "stat shape" is [1,C] or [1,C,1,1], which broadcasts against x. */
#include <math.h>
#include <stdlib.h>

#include "ad/node.h"
#include "ops.h"
#include "threads.h"

typedef struct bn_dims {
    size_t A, R, M; /* images, entries per channel and image, entries per channel */
    int C;
} bn_dims;

static bn_dims dims_of(const ad_value *x)
{
    bn_dims d = { (size_t)x->shape[0], x->size / ((size_t)x->shape[0] * (size_t)x->shape[1]), 0,
                  x->shape[1] };
    d.M = d.A * d.R;
    return d;
}

/* x[a, c, r] */
static size_t at(const bn_dims *d, size_t a, int c, size_t r) { return (a * (size_t)d->C + (size_t)c) * d->R + r; }

/* ---- kernels -------------------------------------------------------------- */

/* Per-channel sums, in double.  A single chain of dependent additions
 * leaves the adder waiting, and the compiler may not reorder floating-point
 * sums itself: so each sum is kept in BN_LANES partial sums, entry k of a
 * stretch going to lane k mod BN_LANES, a loop the compiler turns into
 * vector instructions (the forward took 1.5x longer with one chain).  A
 * stretch is the R ≥ BN_STRETCH contiguous entries of one image and channel;
 * what is left of one (R mod BN_LANES entries) goes to one more sum.
 *
 * The passes walk x in memory order, image by image and, within one, a
 * group of up to BN_GROUP channels, keeping each channel's lanes: walking
 * one channel across the images instead jumps C·R entries after each
 * stretch, and on [75,64,14,14] (3.7 MB, more than the cache) that made
 * every pass several times slower than a stream.
 *
 * For 1×1 maps and [N,C] inputs, where a channel's entries are single ones
 * C·R apart, SUM4 takes four scalar sums per channel. */
enum { BN_LANES = 8, BN_STRETCH = 4, BN_GROUP = 64 };

/* A set of lanes is a struct, copied into a local for a lane loop and back
 * after it: with the sums behind a pointer the compiler kept them in memory
 * and did not vectorise. */
typedef struct bn_lanes {
    double t[BN_LANES], tail;
} bn_lanes;

/* The lanes' total, added in pairs, then the tail. */
static double lanes_total(const bn_lanes *a)
{
    const double *t = a->t;
    return (((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]))) + a->tail;
}

/* a += x[0..n) */
static void lanes_add_x(bn_lanes *restrict a, const ad_real *restrict x, size_t n)
{
    bn_lanes t = *a;
    size_t k = 0;
    for (; k + BN_LANES <= n; k += BN_LANES)
        for (int l = 0; l < BN_LANES; l++) t.t[l] += x[k + l];
    for (; k < n; k++) t.tail += x[k];
    *a = t;
}

/* a += (x[0..n) − μ)² */
static void lanes_add_sq(bn_lanes *restrict a, const ad_real *restrict x, size_t n, double mu)
{
    bn_lanes t = *a;
    size_t k = 0;
    for (; k + BN_LANES <= n; k += BN_LANES)
        for (int l = 0; l < BN_LANES; l++) t.t[l] += (x[k + l] - mu) * (x[k + l] - mu);
    for (; k < n; k++) t.tail += (x[k] - mu) * (x[k] - mu);
    *a = t;
}

/* ag += g[0..n), agx += g ⊙ (x − μ): two loops over the stretch (in cache
 * for the second): with both sums in one, it was not vectorised. */
static void lanes_add_g_gx(bn_lanes *restrict ag, bn_lanes *restrict agx, const ad_real *restrict x,
                           const ad_real *restrict g, size_t n, double mu)
{
    bn_lanes t = *ag, u = *agx;
    size_t k = 0;
    for (; k + BN_LANES <= n; k += BN_LANES)
        for (int l = 0; l < BN_LANES; l++) t.t[l] += g[k + l];
    for (; k < n; k++) t.tail += g[k];
    for (k = 0; k + BN_LANES <= n; k += BN_LANES)
        for (int l = 0; l < BN_LANES; l++) u.t[l] += g[k + l] * (x[k + l] - mu);
    for (; k < n; k++) u.tail += g[k] * (x[k] - mu);
    *ag = t;
    *agx = u;
}

/* The strided case: BODY summed over n entries i = first + k·step into
 * four scalars (SUM4(n, first, step, total, BODY) adds to the double
 * total). */
#define SUM4(n, first, step, total, BODY)                                       \
    do {                                                                        \
        double t0_ = 0, t1_ = 0, t2_ = 0, t3_ = 0;                              \
        size_t k_ = 0, n_ = (n), f_ = (first), s_ = (step), i;                  \
        for (; k_ + 4 <= n_; k_ += 4) {                                         \
            i = f_ + k_ * s_;                                                   \
            t0_ += (BODY);                                                      \
            i += s_;                                                            \
            t1_ += (BODY);                                                      \
            i += s_;                                                            \
            t2_ += (BODY);                                                      \
            i += s_;                                                            \
            t3_ += (BODY);                                                      \
        }                                                                       \
        for (; k_ < n_; k_++) {                                                 \
            i = f_ + k_ * s_;                                                   \
            t0_ += (BODY);                                                      \
        }                                                                       \
        (total) += (t0_ + t1_) + (t2_ + t3_);                                   \
    } while (0)

static bool by_stretch(const bn_dims *d) { return d->R >= BN_STRETCH; }

/* The entries of channel c strided across images: the r-th of each image. */
static size_t image_step(const bn_dims *d) { return (size_t)d->C * d->R; }

/* The channels c0 .. c0 + nc − 1 (nc ≤ BN_GROUP, c0 + nc ≤ end) form a group. */
static int group_size(int c0, int end) { return end - c0 < BN_GROUP ? end - c0 : BN_GROUP; }

/* out[j] = Σ x over channel c0 + j of the group. */
static void group_sum_x(const ad_real *x, const bn_dims *d, int c0, int nc, double *out)
{
    if (!by_stretch(d)) {
        for (int j = 0; j < nc; j++) {
            out[j] = 0;
            for (size_t r = 0; r < d->R; r++)
                SUM4(d->A, at(d, 0, c0 + j, r), image_step(d), out[j], (double)x[i]);
        }
        return;
    }
    bn_lanes L[BN_GROUP] = { { { 0 }, 0 } };
    for (size_t a = 0; a < d->A; a++)
        for (int j = 0; j < nc; j++) lanes_add_x(&L[j], x + at(d, a, c0 + j, 0), d->R);
    for (int j = 0; j < nc; j++) out[j] = lanes_total(&L[j]);
}

/* out[j] = Σ (x − mu[j])² over channel c0 + j. */
static void group_sum_sq(const ad_real *x, const bn_dims *d, int c0, int nc, const double *mu,
                         double *out)
{
    if (!by_stretch(d)) {
        for (int j = 0; j < nc; j++) {
            double m = mu[j];
            out[j] = 0;
            for (size_t r = 0; r < d->R; r++)
                SUM4(d->A, at(d, 0, c0 + j, r), image_step(d), out[j], (x[i] - m) * (x[i] - m));
        }
        return;
    }
    bn_lanes L[BN_GROUP] = { { { 0 }, 0 } };
    for (size_t a = 0; a < d->A; a++)
        for (int j = 0; j < nc; j++) lanes_add_sq(&L[j], x + at(d, a, c0 + j, 0), d->R, mu[j]);
    for (int j = 0; j < nc; j++) out[j] = lanes_total(&L[j]);
}

/* sg[j] = Σ g and sgx[j] = Σ g ⊙ x̂ over channel c = c0 + j, x̂ from x and
 * the kept stats (μ = stats[c], s = stats[C + c]). */
static void group_grad_sums(const ad_real *x, const ad_real *g, const ad_real *stats,
                            const bn_dims *d, int c0, int nc, double *sg, double *sgx)
{
    if (!by_stretch(d)) {
        for (int j = 0; j < nc; j++) {
            double mu = stats[c0 + j];
            sg[j] = sgx[j] = 0;
            for (size_t r = 0; r < d->R; r++) {
                SUM4(d->A, at(d, 0, c0 + j, r), image_step(d), sg[j], (double)g[i]);
                SUM4(d->A, at(d, 0, c0 + j, r), image_step(d), sgx[j], g[i] * (x[i] - mu));
            }
        }
    } else {
        bn_lanes Lg[BN_GROUP] = { { { 0 }, 0 } }, Lgx[BN_GROUP] = { { { 0 }, 0 } };
        for (size_t a = 0; a < d->A; a++)
            for (int j = 0; j < nc; j++) {
                size_t o = at(d, a, c0 + j, 0);
                lanes_add_g_gx(&Lg[j], &Lgx[j], x + o, g + o, d->R, stats[c0 + j]);
            }
        for (int j = 0; j < nc; j++) sg[j] = lanes_total(&Lg[j]), sgx[j] = lanes_total(&Lgx[j]);
    }
    for (int j = 0; j < nc; j++) sgx[j] *= stats[d->C + c0 + j];
}

/* x -> stats [2,C] (μ, s) and y = ((x − μ)·s)·γ + β (γ, β may be NULL):
 * per group, the two sums then the pass that writes y. */
static void forward_kernel(ad_real *y, ad_real *stats, const ad_real *x, const ad_real *gamma,
                           const ad_real *beta, const bn_dims *d, double eps, int c_lo, int c_hi)
{
    double per = 1.0 / (double)d->M;
    for (int c0 = c_lo; c0 < c_hi; c0 += BN_GROUP) {
        int nc = group_size(c0, c_hi);
        double mu[BN_GROUP], s[BN_GROUP];
        group_sum_x(x, d, c0, nc, mu);
        for (int j = 0; j < nc; j++) mu[j] *= per;
        group_sum_sq(x, d, c0, nc, mu, s); /* σ² biased, from the centred sum */
        for (int j = 0; j < nc; j++) s[j] = 1 / sqrt(s[j] * per + eps);
        if (stats)
            for (int j = 0; j < nc; j++) {
                stats[c0 + j] = (ad_real)mu[j];
                stats[d->C + c0 + j] = (ad_real)s[j];
            }
        /* γ = 1 and β = 0 when absent: the product and sum are then exact,
         * so one loop without branches gives the same values. */
        ad_real m[BN_GROUP], sr[BN_GROUP], gc[BN_GROUP], bc[BN_GROUP];
        for (int j = 0; j < nc; j++) {
            m[j] = (ad_real)mu[j];
            sr[j] = (ad_real)s[j];
            gc[j] = gamma ? gamma[c0 + j] : 1;
            bc[j] = beta ? beta[c0 + j] : 0;
        }
        for (size_t a = 0; a < d->A; a++)
            for (int j = 0; j < nc; j++) {
                ad_real mj = m[j], sj = sr[j], gj = gc[j], bj = bc[j];
                const ad_real *restrict xs = x + at(d, a, c0 + j, 0);
                ad_real *restrict ys = y + at(d, a, c0 + j, 0);
                for (size_t r = 0; r < d->R; r++) ys[r] = (xs[r] - mj) * sj * gj + bj;
            }
    }
}

/* out = γ·s·(g − ḡ − x̂·a) (γ = 1 when NULL).  The sums are double; the
 * pass over the entries is in ad_real, (x − μ) as the forward forms it,
 * as PyTorch's kernel does in float: within round-off of a double pass, and
 * a loop the compiler vectorises. */
static void input_grad_kernel(ad_real *out, const ad_real *x, const ad_real *g, const ad_real *gamma,
                              const ad_real *stats, const bn_dims *d, int c_lo, int c_hi)
{
    for (int c0 = c_lo; c0 < c_hi; c0 += BN_GROUP) {
        int nc = group_size(c0, c_hi);
        double sg[BN_GROUP], sgx[BN_GROUP];
        ad_real gbar[BN_GROUP], sa[BN_GROUP], k[BN_GROUP];
        group_grad_sums(x, g, stats, d, c0, nc, sg, sgx);
        for (int j = 0; j < nc; j++) {
            int c = c0 + j;
            double s = stats[d->C + c];
            gbar[j] = (ad_real)(sg[j] / (double)d->M);
            sa[j] = (ad_real)(s * (sgx[j] / (double)d->M));
            k[j] = (ad_real)((gamma ? gamma[c] : 1) * s);
        }
        for (size_t a = 0; a < d->A; a++)
            for (int j = 0; j < nc; j++) {
                int c = c0 + j;
                ad_real mu = stats[c], gb = gbar[j], sj = sa[j], kj = k[j]; /* per channel */
                const ad_real *restrict xs = x + at(d, a, c, 0), *restrict gs = g + at(d, a, c, 0);
                ad_real *restrict os = out + at(d, a, c, 0);
                for (size_t r = 0; r < d->R; r++) os[r] = kj * ((gs[r] - gb) - (xs[r] - mu) * sj);
            }
    }
}

/* ---- over the threads ------------------------------------------------------- */

/* Every kernel above works on a range of channels, each channel's sums in
 * one thread, so a channel gets the same additions in the same order
 * whoever computes it: the ranges are spread over the threads (threads.h)
 * when there are at least 2·BN_GRAIN entries.  (8192: bench-ops at 2
 * threads, 5x64x14x14, forward 0.045 -> 0.030 ms and backward 0.088 ->
 * 0.055 against main's one thread, where 32768 kept it on one thread.) */
enum { BN_GRAIN = 8192 };

/* What a channel loop reads and writes (each kernel names its own). */
typedef struct bn_job {
    const bn_dims *d;
    ad_real *out, *stats_out;
    const ad_real *x, *g, *gamma, *beta, *stats;
    double eps;
} bn_job;

static void bn_for(const bn_dims *d, ops_range_fn f, bn_job *job)
{
    job->d = d;
    ops_for((size_t)d->C, (BN_GRAIN + d->M - 1) / (d->M ? d->M : 1), f, job);
}

static void forward_channels(void *ctx, size_t lo, size_t hi)
{
    const bn_job *j = ctx;
    forward_kernel(j->out, j->stats_out, j->x, j->gamma, j->beta, j->d, j->eps, (int)lo, (int)hi);
}

static void input_grad_channels(void *ctx, size_t lo, size_t hi)
{
    const bn_job *j = ctx;
    input_grad_kernel(j->out, j->x, j->g, j->gamma, j->stats, j->d, (int)lo, (int)hi);
}

/* out[c] = Σ g ⊙ x̂ over channel c */
static void gamma_grad_channels(void *ctx, size_t lo, size_t hi)
{
    const bn_job *j = ctx;
    for (int c0 = (int)lo; c0 < (int)hi; c0 += BN_GROUP) {
        int nc = group_size(c0, (int)hi);
        double sg[BN_GROUP], sgx[BN_GROUP];
        group_grad_sums(j->x, j->g, j->stats, j->d, c0, nc, sg, sgx);
        for (int k = 0; k < nc; k++) j->out[c0 + k] = (ad_real)sgx[k];
    }
}

/* out[c] = Σ x over channel c */
static void channel_sum_channels(void *ctx, size_t lo, size_t hi)
{
    const bn_job *j = ctx;
    for (int c0 = (int)lo; c0 < (int)hi; c0 += BN_GROUP) {
        int nc = group_size(c0, (int)hi);
        double sum[BN_GROUP];
        group_sum_x(j->x, j->d, c0, nc, sum);
        for (int k = 0; k < nc; k++) j->out[c0 + k] = (ad_real)sum[k];
    }
}

/* out = (x − μ)·s on channels [lo, hi) */
static void normalize_channels(void *ctx, size_t lo, size_t hi)
{
    const bn_job *j = ctx;
    const bn_dims *d = j->d;
    for (size_t a = 0; a < d->A; a++)
        for (size_t c = lo; c < hi; c++) {
            ad_real mu = j->stats[c], s = j->stats[(size_t)d->C + c];
            const ad_real *restrict xs = j->x + at(d, a, (int)c, 0);
            ad_real *restrict os = j->out + at(d, a, (int)c, 0);
            for (size_t r = 0; r < d->R; r++) os[r] = (xs[r] - mu) * s;
        }
}

/* ---- the ops -------------------------------------------------------------- */

static ad_value *bn_normalize(ad_tape *tp, ad_value *x, ad_value *stats);
static ad_value *bn_invstd(ad_tape *tp, ad_value *x, ad_value *stats);
static ad_value *bn_input_grad(ad_tape *tp, ad_value *x, ad_value *stats, ad_value *g, ad_value *gamma);
static ad_value *bn_gamma_grad(ad_tape *tp, ad_value *x, ad_value *stats, ad_value *g);

/* The stat shape of x: [1,C] or [1,C,1,1]. */
static int stat_shape(const ad_value *x, int shape[4])
{
    shape[0] = 1;
    shape[1] = x->shape[1];
    shape[2] = shape[3] = 1;
    return x->rank;
}

/* A [C] vector laid out in the stat shape. */
static ad_value *per_channel(ad_tape *tp, ad_value *v, const ad_value *x)
{
    int S[4];
    return ad_reshape(tp, v, stat_shape(x, S), S);
}

/* The mean over the stat axes of t, kept in the stat shape. */
static ad_value *stat_mean(ad_tape *tp, ad_value *t, const ad_value *x)
{
    return ad_scale(tp, per_channel(tp, ad_channel_sum(tp, t), x), 1.0 / (double)dims_of(x).M);
}

/* batchnorm: inputs x, stats, then γ and β when present (iattr[0], [1]). */
static int batchnorm_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    ad_value *x = out->inputs[0], *stats = out->inputs[1];
    int k = 2, ig = out->iattr[0] ? k++ : -1, ib = out->iattr[1] ? k++ : -1;
    ad_value *gamma = ig >= 0 ? out->inputs[ig] : NULL;
    if (ad_input_needs_grad(out, 0) && !(gin[0] = bn_input_grad(tp, x, stats, g, gamma)))
        return ad_rule_status(gin[0]);
    if (ig >= 0 && ad_input_needs_grad(out, ig) && !(gin[ig] = bn_gamma_grad(tp, x, stats, g)))
        return ad_rule_status(gin[ig]);
    if (ib >= 0 && ad_input_needs_grad(out, ib) && !(gin[ib] = ad_channel_sum(tp, g)))
        return ad_rule_status(gin[ib]);
    return AD_OK;
}

static int normalize_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    gin[0] = bn_input_grad(tp, out->inputs[0], out->inputs[1], g, NULL);
    return ad_rule_status(gin[0]);
}

/* s = (σ² + ε)^−½: ∂s/∂x = −s²·x̂/M per channel. */
static int invstd_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    ad_value *x = out->inputs[0];
    ad_value *k = ad_scale(tp, ad_mul(tp, g, ad_square(tp, out)), -1.0 / (double)dims_of(x).M);
    gin[0] = ad_mul(tp, bn_normalize(tp, x, out->inputs[1]), k);
    return ad_rule_status(gin[0]);
}

/* out = γ·s·P(g): inputs x, stats, g, then γ when present. */
static int input_grad_backward(ad_tape *tp, ad_value *out, ad_value *u, ad_value **gin)
{
    ad_value *x = out->inputs[0], *stats = out->inputs[1], *g = out->inputs[2];
    ad_value *gamma = out->n_inputs > 3 ? out->inputs[3] : NULL;
    if (ad_input_needs_grad(out, 2) && !(gin[2] = bn_input_grad(tp, x, stats, u, gamma)))
        return ad_rule_status(gin[2]);
    if (gamma && ad_input_needs_grad(out, 3) &&
        !(gin[3] = ad_channel_sum(tp, ad_mul(tp, u, bn_input_grad(tp, x, stats, g, NULL)))))
        return ad_rule_status(gin[3]);
    if (!ad_input_needs_grad(out, 0)) return AD_OK;
    /* −γ·s²·(x̂·(mean(u⊙g) − ū·ḡ − 3ab) + b·(g − ḡ) + a·(u − ū)) */
    ad_value *xh = bn_normalize(tp, x, stats), *s = bn_invstd(tp, x, stats);
    ad_value *ubar = stat_mean(tp, u, x), *gbar = stat_mean(tp, g, x);
    ad_value *a = stat_mean(tp, ad_mul(tp, g, xh), x), *b = stat_mean(tp, ad_mul(tp, u, xh), x);
    ad_value *coef = ad_sub(tp, ad_sub(tp, stat_mean(tp, ad_mul(tp, u, g), x), ad_mul(tp, ubar, gbar)),
                            ad_scale(tp, ad_mul(tp, a, b), 3));
    ad_value *inner = ad_add(tp, ad_add(tp, ad_mul(tp, xh, coef), ad_mul(tp, b, ad_sub(tp, g, gbar))),
                             ad_mul(tp, a, ad_sub(tp, u, ubar)));
    ad_value *k = ad_neg(tp, ad_square(tp, s));
    if (gamma) k = ad_mul(tp, k, per_channel(tp, gamma, x));
    gin[0] = ad_mul(tp, inner, k);
    return ad_rule_status(gin[0]);
}

/* out = Σ g ⊙ x̂ [C]; v is its gradient [C]. */
static int gamma_grad_backward(ad_tape *tp, ad_value *out, ad_value *v, ad_value **gin)
{
    ad_value *x = out->inputs[0], *stats = out->inputs[1], *g = out->inputs[2];
    if (ad_input_needs_grad(out, 2) &&
        !(gin[2] = ad_mul(tp, bn_normalize(tp, x, stats), per_channel(tp, v, x))))
        return ad_rule_status(gin[2]);
    if (ad_input_needs_grad(out, 0) && !(gin[0] = bn_input_grad(tp, x, stats, g, v)))
        return ad_rule_status(gin[0]);
    return AD_OK;
}

/* What the rules above read (node.h).  x and the statistics go into every
 * kernel; g, γ only into some; β and the results into none, except s, whose
 * rule squares it. */

/* batchnorm (x, stats, γ?, β?): x and stats for dx or dγ, γ for dx. */
static bool batchnorm_reads(const ad_value *out, int i)
{
    int ig = out->iattr[0] ? 2 : -1;
    bool dx = ad_input_needs_grad(out, 0), dgamma = ig >= 0 && ad_input_needs_grad(out, ig);
    if (i == 0 || i == 1) return dx || dgamma;
    return i == ig && dx;
}

static bool invstd_reads(const ad_value *out, int i)
{
    (void)out, (void)i;
    return true; /* x, stats and s itself */
}

/* bn_input_grad (x, stats, g, γ?): x and stats always; g for dx or dγ; γ for
 * dx or dg. */
static bool input_grad_reads(const ad_value *out, int i)
{
    bool dx = ad_input_needs_grad(out, 0), dg = ad_input_needs_grad(out, 2),
         dgamma = ad_input_needs_grad(out, 3);
    if (i == 0 || i == 1) return true;
    if (i == 2) return dx || dgamma;
    return i == 3 && (dx || dg);
}

/* bn_gamma_grad (x, stats, g): x and stats always; g for dx. */
static bool gamma_grad_reads(const ad_value *out, int i)
{
    return i == 0 || i == 1 || (i == 2 && ad_input_needs_grad(out, 0));
}

static const ad_op batchnorm_op = { "batchnorm", batchnorm_backward, batchnorm_reads };
static const ad_op normalize_op = { "bn_normalize", normalize_backward, ad_reads_inputs };
static const ad_op invstd_op = { "bn_invstd", invstd_backward, invstd_reads };
static const ad_op input_grad_op = { "bn_input_grad", input_grad_backward, input_grad_reads };
static const ad_op gamma_grad_op = { "bn_gamma_grad", gamma_grad_backward, gamma_grad_reads };

/* x [A,C,R], stats [2,C] -> x̂ */
static ad_value *bn_normalize(ad_tape *tp, ad_value *x, ad_value *stats)
{
    ad_value *in[2] = { x, stats };
    ad_value *out = ad_node_new(tp, &normalize_op, x->rank, x->shape, 2, in);
    if (!out) return NULL;
    bn_dims d = dims_of(x);
    bn_for(&d, normalize_channels, &(bn_job){ .out = out->data, .x = x->data, .stats = stats->data });
    return out;
}

/* x [A,C,R], stats [2,C] -> s in the stat shape */
static ad_value *bn_invstd(ad_tape *tp, ad_value *x, ad_value *stats)
{
    int S[4], C = x->shape[1];
    ad_value *in[2] = { x, stats };
    ad_value *out = ad_node_new(tp, &invstd_op, stat_shape(x, S), S, 2, in);
    if (out)
        for (int c = 0; c < C; c++) out->data[c] = stats->data[C + c];
    return out;
}

/* x, g [A,C,R], stats [2,C], γ [C] or NULL -> γ·s·P(g) [A,C,R] */
static ad_value *bn_input_grad(ad_tape *tp, ad_value *x, ad_value *stats, ad_value *g, ad_value *gamma)
{
    ad_value *in[4] = { x, stats, g, gamma };
    if (ad_check_inputs(tp, "bn_input_grad", gamma ? 4 : 3, in) != AD_OK) return NULL;
    ad_value *out = ad_node_new(tp, &input_grad_op, x->rank, x->shape, gamma ? 4 : 3, in);
    if (!out) return NULL;
    bn_dims d = dims_of(x);
    bn_for(&d, input_grad_channels,
           &(bn_job){ .out = out->data, .x = x->data, .g = g->data,
                      .gamma = gamma ? gamma->data : NULL, .stats = stats->data });
    return out;
}

/* x, g [A,C,R], stats [2,C] -> Σ g ⊙ x̂ [C] */
static ad_value *bn_gamma_grad(ad_tape *tp, ad_value *x, ad_value *stats, ad_value *g)
{
    ad_value *in[3] = { x, stats, g };
    if (ad_check_inputs(tp, "bn_gamma_grad", 3, in) != AD_OK) return NULL;
    int C = x->shape[1];
    ad_value *out = ad_node_new(tp, &gamma_grad_op, 1, &C, 3, in);
    if (!out) return NULL;
    bn_dims d = dims_of(x);
    bn_for(&d, gamma_grad_channels, &(bn_job){ .out = out->data, .x = x->data, .g = g->data, .stats = stats->data });
    return out;
}

/* ---- channel_sum ------------------------------------------------------------- */

/* Σ over every axis but 1, as [C]: the gradient of a per-channel shift
 * (batchnorm's β, conv2d's bias) and batchnorm's per-channel means.  The
 * same as ad_sum_to to [1,C,1,…] then a reshape, to round-off, but summed
 * in the lanes above: sum_to's walk adds each entry of the result as one
 * chain of dependent additions, which on [75,64,14,14] took longer than
 * batchnorm's whole input gradient.  Linear; its adjoint broadcasts back,
 * and needs only x's shape. */
static int channel_sum_backward(ad_tape *tp, ad_value *out, ad_value *v, ad_value **gin)
{
    ad_value *x = out->inputs[0];
    int S[AD_MAX_RANK];
    for (int i = 0; i < x->rank; i++) S[i] = i == 1 ? x->shape[1] : 1;
    gin[0] = ad_broadcast_to(tp, ad_reshape(tp, v, x->rank, S), x->rank, x->shape);
    return ad_rule_status(gin[0]);
}

static const ad_op channel_sum_op = { "channel_sum", channel_sum_backward, ad_reads_nothing };

/* x [A,C,…] -> [C] */
ad_value *ad_channel_sum(ad_tape *tp, ad_value *x)
{
    if (ad_check_inputs(tp, "channel_sum", 1, &x) != AD_OK) return NULL;
    if (x->rank < 2) {
        char sx[64];
        ad_fail(AD_ESHAPE, "channel_sum: want x [N,C,...], got %s", ad_shape_str(x, sx, sizeof sx));
        return NULL;
    }
    int C = x->shape[1];
    ad_value *out = ad_node_new(tp, &channel_sum_op, 1, &C, 1, &x);
    if (!out) return NULL;
    bn_dims d = dims_of(x);
    bn_for(&d, channel_sum_channels, &(bn_job){ .out = out->data, .x = x->data });
    return out;
}

/* ---- batchnorm ---------------------------------------------------------------- */

static int check_batchnorm(const ad_value *x, const ad_value *gamma, const ad_value *beta,
                           double eps)
{
    char sx[64], sv[64];
    ad_shape_str(x, sx, sizeof sx);
    if (x->rank != 2 && x->rank != 4)
        return ad_fail(AD_ESHAPE, "batchnorm: expected x [N,C] or [N,C,H,W], got %s", sx);
    const ad_value *vs[2] = { gamma, beta };
    const char *names[2] = { "gamma", "beta" };
    for (int k = 0; k < 2; k++)
        if (vs[k] && (vs[k]->rank != 1 || vs[k]->shape[0] != x->shape[1]))
            return ad_fail(AD_ESHAPE, "batchnorm: %s %s does not match the %d channels of x %s",
                           names[k], ad_shape_str(vs[k], sv, sizeof sv), x->shape[1], sx);
    if (!(eps >= 0) || !isfinite(eps))
        return ad_fail(AD_EARG, "batchnorm: eps %g must be finite and not negative", eps);
    /* With one entry per channel x̂ = 0 whatever x is: y = β and every
     * gradient to x and γ is zero (NaN with eps = 0) — refused, as PyTorch
     * refuses it in training. */
    if (x->size / (size_t)x->shape[1] < 2)
        return ad_fail(AD_ESHAPE,
                       "batchnorm: expected more than 1 value per channel (N*H*W), got x %s", sx);
    return AD_OK;
}

ad_value *ad_batchnorm(ad_tape *tp, ad_value *x, ad_value *gamma, ad_value *beta, double eps)
{
    /* γ and β are optional (NULL: absent), so only a given one is checked;
     * without a gradient they are read, not held by a node. */
    if (ad_check_inputs(tp, "batchnorm", 1, &x) != AD_OK ||
        (gamma && ad_value_check("batchnorm: gamma", gamma) != AD_OK) ||
        (beta && ad_value_check("batchnorm: beta", beta) != AD_OK))
        return NULL;
    if (check_batchnorm(x, gamma, beta, eps) != AD_OK) return NULL;
    if (!tp) {
        ad_fail(AD_EARG, "batchnorm: tape is NULL");
        return NULL;
    }
    bn_dims d = dims_of(x);
    bool grad = ad_tape_recording(tp) && (x->requires_grad || (gamma && gamma->requires_grad) ||
                                          (beta && beta->requires_grad));
    /* The statistics are kept only for a backward to read. */
    ad_value *stats = grad ? ad_node_new(tp, &batchnorm_op, 2, (int[]){ 2, d.C }, 0, NULL) : NULL;
    if (grad && !stats) return NULL;
    ad_value *in[4] = { x, stats, NULL, NULL };
    int n = 2;
    if (gamma) in[n++] = gamma;
    if (beta) in[n++] = beta;
    ad_value *out = grad ? ad_node_new(tp, &batchnorm_op, x->rank, x->shape, n, in)
                         : ad_node_new(tp, &batchnorm_op, x->rank, x->shape, 1, &x);
    if (!out) return NULL;
    out->iattr[0] = gamma != NULL;
    out->iattr[1] = beta != NULL;
    bn_for(&d, forward_channels,
           &(bn_job){ .out = out->data, .stats_out = stats ? stats->data : NULL, .x = x->data,
                      .gamma = gamma ? gamma->data : NULL, .beta = beta ? beta->data : NULL,
                      .eps = eps });
    return out;
}
