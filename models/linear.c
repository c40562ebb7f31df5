/* linear.c — parameter lists (shapes, initialisation, checks), shared by
 * every model, and the linear model y = x Wᵀ + b.
 *
 * Sizes: N rows of x, `in` features, `out` outputs. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "models.h"
#include "ops/ops.h"

/* ---- parameter lists --------------------------------------------------- */

int mdl_shapes_add(mdl_shapes *s, const char *name, int rank, const int *shape,
                   mdl_init_kind init)
{
    if (!s || !name || (rank > 0 && !shape))
        return ad_fail(AD_EARG, "shapes_add: NULL argument");
    if (s->n < 0 || s->n >= MDL_MAX_PARAMS)
        return ad_fail(AD_EARG, "shapes_add: %s: the list is full (%d tensors at most)", name,
                       MDL_MAX_PARAMS);
    int rc = ad_check_shape(name, rank, shape);
    if (rc != AD_OK) return ad_fail_wrap(rc, "shapes_add");
    if ((int)init < (int)MDL_INIT_HE || (int)init > (int)MDL_INIT_ONES)
        return ad_fail(AD_EARG, "shapes_add: %s: unknown initialiser %d", name, (int)init);
    int i = s->n++;
    s->rank[i] = rank;
    for (int d = 0; d < AD_MAX_RANK; d++) s->shape[i][d] = d < rank ? shape[d] : 0;
    s->init[i] = init;
    snprintf(s->name[i], MDL_NAME_LEN, "%s", name);
    return AD_OK;
}

static bool range_ok(const mdl_shapes *s, int first, int count)
{
    return s && first >= 0 && count >= 0 && first <= s->n && count <= s->n - first;
}

int mdl_shapes_slice(const mdl_shapes *s, int first, int count, mdl_shapes *out)
{
    if (!out || !range_ok(s, first, count))
        return ad_fail(AD_EARG, "shapes_slice: entries %d..%d are not in a list of %d", first,
                       first + count - 1, s ? s->n : 0);
    mdl_shapes r = { .n = count };
    for (int k = 0; k < count; k++) {
        r.rank[k] = s->rank[first + k];
        memcpy(r.shape[k], s->shape[first + k], sizeof r.shape[k]);
        r.init[k] = s->init[first + k];
        memcpy(r.name[k], s->name[first + k], MDL_NAME_LEN);
    }
    *out = r;
    return AD_OK;
}

size_t mdl_shapes_numel(const mdl_shapes *s, int first, int count)
{
    if (!range_ok(s, first, count)) return 0;
    size_t total = 0;
    for (int k = first; k < first + count; k++) total += ad_shape_size(s->rank[k], s->shape[k]);
    return total;
}

/* A weight's fans (see mdl_init_kind); AD_EARG below rank 2. */
static int fans(const mdl_shapes *s, int i, double *fan_in, double *fan_out)
{
    if (s->rank[i] < 2)
        return ad_fail(AD_EARG, "%s: He and Glorot need a weight of rank 2 or more, "
                       "got rank %d", s->name[i], s->rank[i]);
    double size = (double)ad_shape_size(s->rank[i], s->shape[i]);
    *fan_in = size / s->shape[i][0];
    *fan_out = size / s->shape[i][1];
    return AD_OK;
}

/* Makes entry i of s into *out; a status. */
static int init_one(const mdl_shapes *s, int i, ad_rng *rng, ad_value **out)
{
    double fan_in = 1, fan_out = 1, bound;
    int rc = ad_check_shape(s->name[i], s->rank[i], s->shape[i]);
    if (rc != AD_OK) return rc;
    switch (s->init[i]) {
    case MDL_INIT_ZEROS: *out = ad_tensor_new(s->rank[i], s->shape[i]); break;
    case MDL_INIT_ONES: *out = ad_tensor_fill(s->rank[i], s->shape[i], 1); break;
    case MDL_INIT_HE:
    case MDL_INIT_GLOROT:
        if ((rc = fans(s, i, &fan_in, &fan_out)) != AD_OK) return rc;
        bound = s->init[i] == MDL_INIT_HE ? sqrt(6 / fan_in) : sqrt(6 / (fan_in + fan_out));
        *out = ad_tensor_rand(rng, s->rank[i], s->shape[i], -bound, bound);
        break;
    default:
        return ad_fail(AD_EARG, "%s: unknown initialiser %d", s->name[i], (int)s->init[i]);
    }
    return *out ? AD_OK : ad_fail(AD_ENOMEM, "%s: out of memory", s->name[i]);
}

int mdl_init_params(const mdl_shapes *s, ad_rng *rng, ad_value **out, bool requires_grad)
{
    if (!s || !rng || !out) return ad_fail(AD_EARG, "init_params: NULL argument");
    if (s->n < 0 || s->n > MDL_MAX_PARAMS)
        return ad_fail(AD_EARG, "init_params: %d tensors is not in 0..%d", s->n, MDL_MAX_PARAMS);
    for (int i = 0; i < s->n; i++) out[i] = NULL;
    for (int i = 0; i < s->n; i++) {
        int rc = init_one(s, i, rng, &out[i]);
        if (rc == AD_OK) rc = ad_set_requires_grad(out[i], requires_grad);
        if (rc != AD_OK) {
            mdl_free_params(s->n, out);
            return ad_fail_wrap(rc, "init_params");
        }
    }
    return AD_OK;
}

void mdl_free_params(int n, ad_value **params)
{
    if (!params) return;
    for (int i = 0; i < n; i++) {
        ad_value_free(params[i]);
        params[i] = NULL;
    }
}

int mdl_check_params(const char *who, const mdl_shapes *s, int first, int count,
                     ad_value *const *params)
{
    if (!range_ok(s, first, count))
        return ad_fail(AD_EARG, "%s: entries %d..%d are not in a list of %d", who, first,
                       first + count - 1, s ? s->n : 0);
    if (count > 0 && !params) return ad_fail(AD_EARG, "%s: the parameter list is NULL", who);
    for (int k = 0; k < count; k++) {
        const ad_value *p = params[k];
        int i = first + k;
        if (!p) return ad_fail_wrap(AD_EARG, "%s %s: parameter %d is NULL", who, s->name[i], k);
        bool same = p->rank == s->rank[i];
        for (int d = 0; same && d < p->rank; d++) same = p->shape[d] == s->shape[i][d];
        if (!same) {
            char got[64], want[64] = "[";
            for (int d = 0; d < s->rank[i]; d++) {
                size_t len = strlen(want);
                snprintf(want + len, sizeof want - len, d ? ",%d" : "%d", s->shape[i][d]);
            }
            strcat(want, "]");
            return ad_fail(AD_ESHAPE, "%s %s: got %s, want %s", who, s->name[i],
                           ad_shape_str(p, got, sizeof got), want);
        }
    }
    return AD_OK;
}

/* ---- the linear model -------------------------------------------------- */

int mdl_linear_shapes(const mdl_linear *m, mdl_shapes *s)
{
    if (!m || !s) return ad_fail(AD_EARG, "linear: NULL argument");
    if (m->in < 1 || m->out < 1)
        return ad_fail(AD_EARG, "linear: in %d and out %d must both be at least 1", m->in, m->out);
    s->n = 0;
    int rc = mdl_shapes_add(s, "W", 2, (int[]){ m->out, m->in }, MDL_INIT_GLOROT);
    if (rc == AD_OK && !m->no_bias) rc = mdl_shapes_add(s, "b", 1, (int[]){ m->out }, MDL_INIT_ZEROS);
    return rc;
}

/* x [N,in] -> [N,out] */
ad_value *mdl_linear_forward(ad_tape *tp, const mdl_linear *m, ad_value *x,
                             ad_value *const *params)
{
    if (!x) return NULL;
    mdl_shapes s;
    char sx[64];
    if (!tp) {
        ad_fail(AD_EARG, "linear: NULL tape");
        return NULL;
    }
    if (mdl_linear_shapes(m, &s) != AD_OK || mdl_check_params("linear", &s, 0, s.n, params) != AD_OK)
        return NULL;
    if (x->rank != 2 || x->shape[1] != m->in) {
        ad_fail(AD_ESHAPE, "linear: input x %s does not fit the model, which wants [N,%d]",
                ad_shape_str(x, sx, sizeof sx), m->in);
        return NULL;
    }
    ad_value *y = ad_linear(tp, x, params[0], m->no_bias ? NULL : params[1]);
    if (!y) ad_fail_wrap(AD_EARG, "linear");
    return y;
}
