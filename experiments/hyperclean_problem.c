/* hyperclean_problem.c — see hyperclean_problem.h.  The callbacks are
 * written as a user would write them: graphs of public ops.
 *
 * Size letters: n training examples, m validation examples, d features,
 * C classes. */
#include "hyperclean_problem.h"


#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "experiments/data/mnist.h"
#include "experiments/classify.h"
#include "ops/ops.h"

/* ---- the callbacks ------------------------------------------------------ */

/* W0 = 0, stored as Wᵀ [d,C]; a constant: it does not depend on λ. */
static int hc_w0(ad_tape *tp, ad_value *const *lam, ad_value **w0, void *ctx)
{
    (void)lam;
    const hc_problem *hc = ctx;
    w0[0] = ad_const_fill(tp, 2, (int[]){ hc->x_train->shape[1], hc->n_classes }, 0);
    return w0[0] ? AD_OK : ad_error_code();
}

/* g(W, λ) = 1/n Σᵢ σ(λᵢ) CE(W xᵢ, ỹᵢ) + reg ‖W‖²_F.
 * One gemm: logits = X Wᵀ, x_train [n,d] times w[0] = Wᵀ [d,C] -> [n,C];
 * ∇ is then Xᵀ G and its own backward X Ḡ (see the header on the layout).
 * σ(λ) is recomputed each step (n numbers): a value from a released step
 * would be cut off from λ. */
static ad_value *hc_inner(ad_tape *tp, ad_value *const *w, ad_value *const *lam, int t, void *ctx)
{
    (void)t;
    const hc_problem *hc = ctx;
    ad_value *logits = ad_matmul(tp, hc->x_train, w[0], false, false);
    ad_value *ce = ad_cross_entropy(tp, logits, hc->y_train, ad_sigmoid(tp, lam[0]),
                                    AD_REDUCE_MEAN);
    return ad_add(tp, ce, ad_scale(tp, ad_sqnorm(tp, w[0]), hc->reg));
}

/* f(W) = 1/m Σⱼ CE(W xⱼ, yⱼ); x_val [m,d] -> logits [m,C].  As a side effect
 * it keeps a copy of W, f and the validation accuracy in the problem, so
 * that a caller of hg_krmd learns about ŵ without training again. */
static ad_value *hc_outer(ad_tape *tp, ad_value *const *w, ad_value *const *lam, void *ctx)
{
    (void)lam;
    hc_problem *hc = ctx;
    ad_value *logits = ad_matmul(tp, hc->x_val, w[0], false, false);
    ad_value *f = ad_cross_entropy(tp, logits, hc->y_val, NULL, AD_REDUCE_MEAN);
    if (f) {
        memcpy(hc->w_hat->data, w[0]->data, w[0]->size * sizeof(ad_real));
        hc->val_loss = f->data[0];
        hc->val_acc = ex_accuracy(logits->data, hc->y_val->data, logits->shape[0],
                                  hc->n_classes);
    }
    return f;
}

/* ---- the problem -------------------------------------------------------- */

static bool is_matrix(const ad_value *x) { return x && x->rank == 2; }
static bool is_labels(const ad_value *y, int n) { return y && y->rank == 1 && y->shape[0] == n; }

int hc_problem_init(hc_problem *hc, ad_value *x_train, ad_value *y_train, ad_value *x_val,
                    ad_value *y_val, int n_classes, int T, double gamma, double reg)
{
    memset(hc, 0, sizeof *hc);
    if (!is_matrix(x_train) || !is_matrix(x_val) || x_train->shape[1] != x_val->shape[1])
        return ad_fail(AD_ESHAPE,
                       "hc_problem_init: x_train and x_val must be [n,d] and [m,d]");
    if (!is_labels(y_train, x_train->shape[0]) || !is_labels(y_val, x_val->shape[0]))
        return ad_fail(AD_ESHAPE, "hc_problem_init: y_train and y_val must be [n] and [m]");
    if (x_train->requires_grad || x_val->requires_grad)
        return ad_fail(AD_EARG, "hc_problem_init: the features must be constants");
    if (n_classes < 2) return ad_fail(AD_EARG, "hc_problem_init: n_classes must be >= 2");
    if (!(gamma > 0) || !(reg >= 0))
        return ad_fail(AD_EARG, "hc_problem_init: need gamma > 0 and reg >= 0, got %g and %g",
                       gamma, reg);
    int n = x_train->shape[0], d = x_train->shape[1];
    hc->x_train = x_train;
    hc->y_train = y_train;
    hc->x_val = x_val;
    hc->y_val = y_val;
    hc->n_classes = n_classes;
    hc->reg = reg;
    hc->lam = ad_tensor_new(1, &n); /* zeros */
    hc->w_hat = ad_tensor_new(2, (int[]){ d, n_classes });
    if (!hc->lam || !hc->w_hat) {
        hc_problem_free(hc);
        return ad_fail(AD_ENOMEM, "hc_problem_init: out of memory");
    }
    ad_set_requires_grad(hc->lam, true);
    hc->val_loss = hc->val_acc = NAN;
    hc->problem = (hg_problem){
        .n_w = 1, .n_hyper = 1, .hyper = &hc->lam, .T = T,
        .opt = { .kind = HG_GD, .step = gamma },
        .ctx = hc, .init = hc_w0, .inner = hc_inner, .outer = hc_outer,
    };
    return hg_problem_check(&hc->problem);
}

void hc_problem_free(hc_problem *hc)
{
    ad_value_free(hc->lam);
    ad_value_free(hc->w_hat);
    hc->lam = hc->w_hat = NULL;
}

/* The largest eigenvalue of XᵀX/n, x [n,d], by power iteration from the
 * all-ones direction (XᵀX has a wide gap for features that are all ≥ 0, so
 * it converges in a few dozen rounds).  Plain loops: it runs once. */
static double top_eigenvalue(const ad_value *x)
{
    int n = x->shape[0], d = x->shape[1];
    double *v = malloc(sizeof(double) * (size_t)d), *u = malloc(sizeof(double) * (size_t)d);
    double lam = 0;
    if (v && u) {
        for (int j = 0; j < d; j++) v[j] = 1 / sqrt((double)d);
        for (int it = 0; it < 500; it++) {
            memset(u, 0, sizeof(double) * (size_t)d);
            for (int i = 0; i < n; i++) {
                const ad_real *row = x->data + (size_t)i * (size_t)d;
                double s = 0;
                for (int j = 0; j < d; j++) s += row[j] * v[j];
                for (int j = 0; j < d; j++) u[j] += s * row[j];
            }
            double nu = 0;
            for (int j = 0; j < d; j++) nu += u[j] * u[j];
            nu = sqrt(nu);
            if (nu == 0) break;
            for (int j = 0; j < d; j++) v[j] = u[j] / nu;
            bool done = fabs(nu / n - lam) <= 1e-9 * lam;
            lam = nu / n;
            if (done) break;
        }
    }
    free(v);
    free(u);
    return lam;
}

double hc_gamma_auto(const ad_value *x_train, int n_classes, double reg, double *lmax_out)
{
    double lmax = top_eigenvalue(x_train);
    if (lmax_out) *lmax_out = lmax;
    return 1 / (lmax / n_classes + 2 * reg);
}

/* ---- metrics ------------------------------------------------------------ */

hc_f1 hc_flag_f1(const ad_real *lam, const unsigned char *corrupted, int n, double threshold)
{
    hc_f1 r = { 0 };
    for (int i = 0; i < n; i++) {
        bool flagged = lam[i] < threshold;
        r.tp += flagged && corrupted[i];
        r.fp += flagged && !corrupted[i];
        r.fn += !flagged && corrupted[i];
    }
    r.precision = r.tp + r.fp > 0 ? (double)r.tp / (r.tp + r.fp) : 0;
    r.recall = r.tp + r.fn > 0 ? (double)r.tp / (r.tp + r.fn) : 0;
    r.f1 = 2 * r.tp + r.fp + r.fn > 0 ? 2.0 * r.tp / (2 * r.tp + r.fp + r.fn) : 0;
    return r;
}

/* ---- data --------------------------------------------------------------- */

int hc_corrupt_labels(ad_rng *rng, int *labels, int n, int n_classes, double frac,
                      unsigned char *corrupted)
{
    int n_flip = (int)lround(frac * n);
    if (n_flip > n) n_flip = n;
    if (n_flip < 0) n_flip = 0;
    int *perm = malloc(sizeof *perm * (size_t)(n > 0 ? n : 1)), changed = 0;
    if (!perm) return ad_fail(AD_ENOMEM, "hc_corrupt_labels: out of memory");
    for (int i = 0; i < n; i++) {
        perm[i] = i;
        corrupted[i] = 0;
    }
    for (int k = 0; k < n_flip; k++) { /* the first n_flip of a Fisher–Yates shuffle */
        int j = k + (int)ad_rng_below(rng, (uint64_t)(n - k)), s = perm[k];
        perm[k] = perm[j];
        perm[j] = s;
        int i = perm[k], y = (int)ad_rng_below(rng, (uint64_t)n_classes);
        corrupted[i] = y != labels[i];
        changed += corrupted[i];
        labels[i] = y;
    }
    free(perm);
    return changed;
}

void hc_data_free(hc_data *dt)
{
    ad_value *all[] = { dt->x_train, dt->y_train, dt->y_train_clean, dt->x_val,
                        dt->y_val,   dt->x_test,  dt->y_test };
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) ad_value_free(all[i]);
    free(dt->corrupted);
    memset(dt, 0, sizeof *dt);
}

/* The [n,d] features of images idx (all n images when idx is NULL). */
static ad_value *features_tensor(const data_images *im, const int *idx, int n)
{
    int d = data_feature_dim(im, true);
    ad_value *v = ad_tensor_new(2, (int[]){ n, d });
    if (v && data_features(im, idx, n, true, v->data) != AD_OK) {
        ad_value_free(v);
        return NULL;
    }
    return v;
}

int hc_data_load(hc_data *out, const char *dir, int n_train, int n_val, double corrupt_frac,
                 uint64_t seed, bool with_test)
{
    memset(out, 0, sizeof *out);
    if (n_train < 1 || n_val < 1)
        return ad_fail(AD_EARG, "hc_data_load: need at least one training and one validation "
                       "example, got %d and %d", n_train, n_val);
    if (!(corrupt_frac >= 0 && corrupt_frac <= 1))
        return ad_fail(AD_EARG, "hc_data_load: the corrupted fraction must be in [0,1], got %g",
                       corrupt_frac);
    data_mnist m;
    int rc = data_mnist_load(dir, &m);
    if (rc != AD_OK) return rc;
    if ((long)n_train + n_val > m.train_images.n) {
        rc = ad_fail(AD_EARG, "hc_data_load: %d + %d examples asked for, the training split "
                     "has %d", n_train, n_val, m.train_images.n);
        data_mnist_free(&m);
        return rc;
    }
    int *idx_train = malloc(sizeof(int) * (size_t)n_train);
    int *idx_val = malloc(sizeof(int) * (size_t)n_val);
    int *y = malloc(sizeof(int) * (size_t)n_train);
    out->corrupted = malloc((size_t)n_train);
    ad_rng rng;
    ad_rng_seed(&rng, seed);
    if (!idx_train || !idx_val || !y || !out->corrupted)
        rc = ad_fail(AD_ENOMEM, "hc_data_load: out of memory");
    if (rc == AD_OK)
        rc = ex_sample_balanced(&rng, m.train_labels.labels, m.train_labels.n,
                                DATA_MNIST_CLASSES, n_train, n_val, idx_train, idx_val);
    if (rc == AD_OK) {
        out->n_train = n_train;
        out->n_val = n_val;
        out->n_classes = DATA_MNIST_CLASSES;
        out->d = data_feature_dim(&m.train_images, true);
        for (int i = 0; i < n_train; i++) y[i] = m.train_labels.labels[idx_train[i]];
        out->y_train_clean = ex_labels_tensor(y, n_train);
        out->n_relabelled = (int)lround(corrupt_frac * n_train);
        out->n_corrupted = hc_corrupt_labels(&rng, y, n_train, DATA_MNIST_CLASSES,
                                             corrupt_frac, out->corrupted);
        if (out->n_corrupted < 0) rc = out->n_corrupted;
    }
    if (rc == AD_OK) {
        out->y_train = ex_labels_tensor(y, n_train);
        out->x_train = features_tensor(&m.train_images, idx_train, n_train);
        out->x_val = features_tensor(&m.train_images, idx_val, n_val);
        out->y_val = ad_tensor_new(1, &n_val);
        if (out->y_val)
            for (int i = 0; i < n_val; i++)
                out->y_val->data[i] = m.train_labels.labels[idx_val[i]];
        if (!out->y_train_clean || !out->y_train || !out->x_train || !out->x_val || !out->y_val)
            rc = ad_fail(AD_ENOMEM, "hc_data_load: out of memory");
    }
    if (rc == AD_OK && with_test) {
        out->n_test = m.test_images.n;
        out->x_test = features_tensor(&m.test_images, NULL, out->n_test);
        out->y_test = ad_tensor_new(1, &out->n_test);
        if (out->y_test)
            for (int i = 0; i < out->n_test; i++) out->y_test->data[i] = m.test_labels.labels[i];
        if (!out->x_test || !out->y_test) rc = ad_fail(AD_ENOMEM, "hc_data_load: out of memory");
    }
    free(idx_train);
    free(idx_val);
    free(y);
    data_mnist_free(&m);
    if (rc != AD_OK) hc_data_free(out);
    return rc;
}
