/* mlp.c — the multi-layer perceptron: linear layers with relu or tanh
 * between them and none after the last.
 *
 * Sizes: N rows; layer l (1-based) maps sizes[l−1] -> sizes[l]. */
#include <stdio.h>

#include "models.h"
#include "ops/ops.h"

static int mlp_check(const mdl_mlp *m)
{
    if (!m) return ad_fail(AD_EARG, "mlp: NULL model");
    if (m->n_layers < 1 || m->n_layers > MDL_MAX_LAYERS)
        return ad_fail(AD_EARG, "mlp: n_layers %d is not in 1..%d", m->n_layers, MDL_MAX_LAYERS);
    for (int l = 0; l <= m->n_layers; l++)
        if (m->sizes[l] < 1)
            return ad_fail(AD_EARG, "mlp: sizes[%d] is %d, must be at least 1", l, m->sizes[l]);
    if ((int)m->act != MDL_RELU && (int)m->act != MDL_TANH)
        return ad_fail(AD_EARG, "mlp: unknown activation %d", (int)m->act);
    return AD_OK;
}

int mdl_mlp_shapes(const mdl_mlp *m, mdl_shapes *s)
{
    int rc = mlp_check(m);
    if (rc != AD_OK) return rc;
    if (!s) return ad_fail(AD_EARG, "mlp: NULL shapes");
    s->n = 0;
    for (int l = 1; l <= m->n_layers && rc == AD_OK; l++) {
        char name[MDL_NAME_LEN];
        bool last = l == m->n_layers;
        mdl_init_kind kind = m->act == MDL_RELU && !last ? MDL_INIT_HE : MDL_INIT_GLOROT;
        snprintf(name, sizeof name, "layer %d W", l);
        rc = mdl_shapes_add(s, name, 2, (int[]){ m->sizes[l], m->sizes[l - 1] }, kind);
        if (rc == AD_OK && !m->no_bias) {
            snprintf(name, sizeof name, "layer %d b", l);
            rc = mdl_shapes_add(s, name, 1, (int[]){ m->sizes[l] }, MDL_INIT_ZEROS);
        }
    }
    return rc;
}

/* x [N,sizes[0]] -> [N,sizes[n_layers]] */
ad_value *mdl_mlp_forward(ad_tape *tp, const mdl_mlp *m, ad_value *x, ad_value *const *params)
{
    if (!x) return NULL;
    if (!tp) {
        ad_fail(AD_EARG, "mlp: NULL tape");
        return NULL;
    }
    mdl_shapes s;
    if (mdl_mlp_shapes(m, &s) != AD_OK || mdl_check_params("mlp", &s, 0, s.n, params) != AD_OK)
        return NULL;
    if (x->rank != 2 || x->shape[1] != m->sizes[0]) {
        char sx[64];
        ad_fail(AD_ESHAPE, "mlp: input x %s does not fit the model, which wants [N,%d]",
                ad_shape_str(x, sx, sizeof sx), m->sizes[0]);
        return NULL;
    }
    int per_layer = m->no_bias ? 1 : 2;
    ad_value *h = x;
    for (int l = 1; l <= m->n_layers; l++) {
        ad_value *const *p = params + (l - 1) * per_layer;
        h = ad_linear(tp, h, p[0], m->no_bias ? NULL : p[1]);
        if (h && l < m->n_layers) h = m->act == MDL_RELU ? ad_relu(tp, h) : ad_tanh(tp, h);
        if (!h) {
            ad_fail_wrap(AD_EARG, "mlp layer %d", l);
            return NULL;
        }
    }
    return h;
}
