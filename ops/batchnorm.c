/* batchnorm.c — batch normalisation in training mode, by composition.
 *
 * Every channel is normalised with the batch's own mean and biased variance
 * (over N, or over N, H and W):
 *     y = gamma ⊙ (x − mean) / sqrt(var + eps) + beta.
 * The statistics are kept in a "stat" shape — [1,C] or [1,C,1,1] — that
 * broadcasts against x, so ad_sum_to computes them and broadcasting spreads
 * them back; no reshapes or transposes of x are needed.  Nothing is fused:
 * the gradient flows through the statistics as well (that is what makes
 * training-mode batch norm differ from a per-channel affine map), and every
 * order of derivative comes from the ops used. */
#include <math.h>

#include "ops.h"

/* A per-channel [C] vector laid out to broadcast against x: [C] already
 * broadcasts against [N,C]; against [N,C,H,W] it must become [1,C,1,1]. */
static ad_value *per_channel(ad_tape *tp, ad_value *v, const ad_value *x)
{
    if (x->rank == 2) return v;
    return ad_reshape(tp, v, 4, (int[]){ 1, x->shape[1], 1, 1 });
}

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
    return AD_OK;
}

ad_value *ad_batchnorm(ad_tape *tp, ad_value *x, ad_value *gamma, ad_value *beta, double eps)
{
    if (!x) return NULL;
    if (check_batchnorm(x, gamma, beta, eps) != AD_OK) return NULL;
    int stat[4] = { 1, x->shape[1], 1, 1 };                   /* [1,C] or [1,C,1,1] */
    double per_stat = 1.0 / (double)(x->size / (size_t)x->shape[1]); /* 1 / (N·H·W) */
    ad_value *mean = ad_scale(tp, ad_sum_to(tp, x, x->rank, stat), per_stat);
    ad_value *xc = ad_sub(tp, x, mean);
    ad_value *var = ad_scale(tp, ad_sum_to(tp, ad_square(tp, xc), x->rank, stat), per_stat);
    ad_value *y = ad_mul(tp, xc, ad_pow(tp, ad_add_scalar(tp, var, eps), -0.5));
    if (gamma) y = ad_mul(tp, y, per_channel(tp, gamma, x));
    if (beta) y = ad_add(tp, y, per_channel(tp, beta, x));
    return y;
}
