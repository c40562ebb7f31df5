/* classify.c — see classify.h. */
#include "experiments/classify.h"

#include <stdlib.h>

double ex_accuracy(const ad_real *logits, const ad_real *y, int n, int n_classes)
{
    if (n <= 0) return 0;
    int right = 0;
    for (int i = 0; i < n; i++) {
        const ad_real *row = logits + (size_t)i * (size_t)n_classes;
        int best = 0;
        for (int c = 1; c < n_classes; c++)
            if (row[c] > row[best]) best = c;
        right += best == (int)y[i];
    }
    return (double)right / n;
}

ad_value *ex_labels_tensor(const int *y, int n)
{
    ad_value *v = ad_tensor_new(1, &n);
    if (v)
        for (int i = 0; i < n; i++) v->data[i] = (ad_real)y[i];
    return v;
}

int ex_sample_by_quota(ad_rng *rng, const unsigned char *labels, int n, int n_classes,
                       int *quota_train, int *quota_val, int *idx_train, int *idx_val,
                       int filled[2])
{
    filled[0] = filled[1] = 0;
    int want = 0;
    for (int c = 0; c < n_classes; c++) want += quota_train[c] + quota_val[c];
    int *perm = malloc(sizeof *perm * (size_t)(n > 0 ? n : 1));
    if (!perm) return ad_fail(AD_ENOMEM, "sampling: out of memory");
    ad_rng_permutation(rng, perm, n);
    for (int k = 0; k < n && filled[0] + filled[1] < want; k++) {
        int i = perm[k], c = labels[i];
        if (c >= n_classes) continue;
        if (quota_train[c] > 0) {
            quota_train[c]--;
            idx_train[filled[0]++] = i;
        } else if (quota_val[c] > 0) {
            quota_val[c]--;
            idx_val[filled[1]++] = i;
        }
    }
    free(perm);
    return AD_OK;
}
