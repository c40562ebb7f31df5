/* classify.c — see classify.h. */
#include "experiments/classify.h"

#include <stdlib.h>

#include "ops/ops.h"

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

int ex_evaluate_linear(const ad_value *w, bool by_class, const ad_value *x, const ad_value *y,
                       double *loss, double *acc)
{
    int d = x && x->rank == 2 ? x->shape[1] : -1;
    if (!w || w->rank != 2 || d < 0 || w->shape[by_class ? 1 : 0] != d || !y || y->rank != 1 ||
        y->shape[0] != x->shape[0])
        return ad_fail(AD_ESHAPE, "evaluate: wants w %s, x [n,d], y [n]",
                       by_class ? "[C,d]" : "[d,C]");
    ad_tape *tp = ad_tape_new(1);
    if (!tp) return ad_fail(AD_ENOMEM, "evaluate: out of memory");
    ad_no_record_begin(tp);
    /* The ops take non-const inputs but only read them without a tape
     * recording: nothing is written. */
    ad_value *logits = ad_matmul(tp, (ad_value *)x, (ad_value *)w, false, by_class);
    ad_value *ce = loss ? ad_cross_entropy(tp, logits, (ad_value *)y, NULL, AD_REDUCE_MEAN)
                        : logits;
    int rc = ce ? AD_OK : ad_fail_wrap(AD_EARG, "evaluate");
    if (rc == AD_OK && loss) *loss = ce->data[0];
    if (rc == AD_OK && acc)
        *acc = ex_accuracy(logits->data, y->data, x->shape[0], w->shape[by_class ? 0 : 1]);
    ad_no_record_end(tp);
    ad_tape_free(tp);
    return rc;
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

int ex_sample_balanced(ad_rng *rng, const unsigned char *labels, int n_avail, int n_classes,
                       int n_train, int n_val, int *idx_train, int *idx_val)
{
    if (n_train < 0 || n_val < 0 || n_classes < 1 || n_classes > 256)
        return ad_fail(AD_EARG, "sample_balanced: bad sample sizes");
    int quota[2][256], filled[2];
    for (int c = 0; c < n_classes; c++) {
        quota[0][c] = n_train / n_classes + (c < n_train % n_classes);
        quota[1][c] = n_val / n_classes + (c < n_val % n_classes);
    }
    int rc = ex_sample_by_quota(rng, labels, n_avail, n_classes, quota[0], quota[1], idx_train,
                                idx_val, filled);
    if (rc != AD_OK) return ad_fail_wrap(rc, "sample_balanced");
    if (filled[0] < n_train || filled[1] < n_val)
        return ad_fail(AD_EARG, "sample_balanced: cannot draw %d + %d class-balanced "
                       "examples of %d classes from %d (a class has too few)", n_train, n_val,
                       n_classes, n_avail);
    return AD_OK;
}

