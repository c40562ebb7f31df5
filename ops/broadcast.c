/* broadcast.c — see broadcast.h. */
#include "broadcast.h"

/* Pads `shape` of `rank` to 4 axes and gives its strides (0 where extent 1
 * meets a larger result extent). */
static void pad(int rank, const int *shape, const int ext[AD_MAX_RANK], size_t stride[AD_MAX_RANK])
{
    int p[AD_MAX_RANK];
    int off = AD_MAX_RANK - rank;
    for (int i = 0; i < AD_MAX_RANK; i++) p[i] = i < off ? 1 : shape[i - off];
    size_t s = 1;
    for (int i = AD_MAX_RANK - 1; i >= 0; i--) {
        stride[i] = (p[i] == 1 && ext[i] != 1) ? 0 : s;
        s *= (size_t)p[i];
    }
}

static int shape_error(const char *who, const ad_value *a, int rank, const int *shape)
{
    char sa[64], sb[64];
    ad_value tmp = { .rank = rank };
    for (int i = 0; i < rank; i++) tmp.shape[i] = shape[i];
    return ad_fail(AD_ESHAPE, "%s: shapes do not broadcast: %s and %s", who,
                   ad_shape_str(a, sa, sizeof sa), ad_shape_str(&tmp, sb, sizeof sb));
}

int bc_binary(const char *who, const ad_value *a, const ad_value *b, bc_layout *l)
{
    l->rank = a->rank > b->rank ? a->rank : b->rank;
    for (int i = 0; i < AD_MAX_RANK; i++) {
        int ia = i - (AD_MAX_RANK - a->rank), ib = i - (AD_MAX_RANK - b->rank);
        int ea = ia >= 0 ? a->shape[ia] : 1, eb = ib >= 0 ? b->shape[ib] : 1;
        if (ea != eb && ea != 1 && eb != 1) return shape_error(who, a, b->rank, b->shape);
        l->ext[i] = ea > eb ? ea : eb;
    }
    for (int i = 0; i < l->rank; i++) l->shape[i] = l->ext[AD_MAX_RANK - l->rank + i];
    pad(a->rank, a->shape, l->ext, l->stride[0]);
    pad(b->rank, b->shape, l->ext, l->stride[1]);
    return AD_OK;
}

int bc_to(const char *who, const ad_value *x, int rank, const int *shape, bc_layout *l)
{
    int rc = ad_check_shape(who, rank, shape);
    if (rc != AD_OK) return rc;
    if (x->rank > rank) return shape_error(who, x, rank, shape);
    l->rank = rank;
    for (int i = 0; i < AD_MAX_RANK; i++) {
        int it = i - (AD_MAX_RANK - rank), ix = i - (AD_MAX_RANK - x->rank);
        l->ext[i] = it >= 0 ? shape[it] : 1;
        int ex = ix >= 0 ? x->shape[ix] : 1;
        if (ex != l->ext[i] && ex != 1) return shape_error(who, x, rank, shape);
    }
    for (int i = 0; i < rank; i++) l->shape[i] = shape[i];
    pad(x->rank, x->shape, l->ext, l->stride[0]);
    return AD_OK;
}
