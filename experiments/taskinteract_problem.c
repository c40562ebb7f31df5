/* taskinteract_problem.c — see taskinteract_problem.h.  The callbacks are
 * graphs of public ops, written as a user would write them.
 *
 * Size letters: V classes, d features with the bias, n training, m
 * validation, N test examples, P pixels (d − 1). */
#include "taskinteract_problem.h"


#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "experiments/classify.h"
#include "ops/ops.h"

/* ---- the callbacks ------------------------------------------------------ */

/* W0 = 0 [V,d]; a constant: it does not depend on λ. */
static int ti_w0(ad_tape *tp, ad_value *const *lam, ad_value **w0, void *ctx)
{
    (void)lam;
    const ti_problem *p = ctx;
    w0[0] = ad_const_fill(tp, 2, (int[]){ p->V, p->x_train->shape[1] }, 0);
    return w0[0] ? AD_OK : ad_error_code();
}

ad_value *ti_coupling(ad_tape *tp, ad_value *W, ad_value *C)
{
    if (!W || !C) return NULL;
    int V = W->shape[0];
    ad_value *G = ad_matmul(tp, W, W, false, true);                 /* [V,V] */
    ad_value *nrm = ad_sum_axis(tp, ad_square(tp, W), 1);           /* [V] */
    ad_value *col = ad_reshape(tp, nrm, 2, (int[]){ V, 1 });
    ad_value *row = ad_reshape(tp, nrm, 2, (int[]){ 1, V });
    ad_value *D = ad_sub(tp, ad_add(tp, col, row), ad_scale(tp, G, 2)); /* ‖w_i − w_j‖² */
    return ad_sum(tp, ad_mul(tp, C, D));
}

/* g(W, λ): training cross-entropy + coupling + ρ‖W‖².  C and ρ are rebuilt
 * from λ at every step: a value from a released step would be cut off from
 * λ (see ad.h on truncation). */
static ad_value *ti_inner(ad_tape *tp, ad_value *const *w, ad_value *const *lam, int t, void *ctx)
{
    (void)t;
    const ti_problem *p = ctx;
    ad_value *logits = ad_matmul(tp, p->x_train, w[0], false, true); /* [n,V] */
    ad_value *ce = ad_cross_entropy(tp, logits, p->y_train, NULL, AD_REDUCE_MEAN);
    ad_value *A = ad_softplus(tp, lam[0]);
    ad_value *C = ad_add(tp, A, ad_transpose(tp, A));
    ad_value *rho = ad_softplus(tp, lam[1]);
    ad_value *reg = ad_mul(tp, rho, ad_sqnorm(tp, w[0]));
    return ad_add(tp, ad_add(tp, ce, ti_coupling(tp, w[0], C)), reg);
}


/* f(W): validation cross-entropy.  Keeps a copy of ŵ, f and the validation
 * accuracy in the problem, so a caller of hg_krmd learns about ŵ without
 * training again. */
static ad_value *ti_outer(ad_tape *tp, ad_value *const *w, ad_value *const *lam, void *ctx)
{
    (void)lam;
    ti_problem *p = ctx;
    ad_value *logits = ad_matmul(tp, p->x_val, w[0], false, true); /* [m,V] */
    ad_value *f = ad_cross_entropy(tp, logits, p->y_val, NULL, AD_REDUCE_MEAN);
    if (f) {
        memcpy(p->w_hat->data, w[0]->data, w[0]->size * sizeof(ad_real));
        p->val_loss = f->data[0];
        p->val_acc = ex_accuracy(logits->data, p->y_val->data, logits->shape[0], p->V);
    }
    return f;
}

/* ---- the problem -------------------------------------------------------- */

double ti_default_b0(int V)
{
    /* 2 softplus(B0) = 0.125/V */
    return log(expm1(0.0625 / V));
}

int ti_problem_init(ti_problem *tp, const ti_data *dt, int T, double gamma, double b0,
                    double rho0)
{
    memset(tp, 0, sizeof *tp);
    if (!dt || !dt->x_train || !dt->x_val || dt->V < 2)
        return ad_fail(AD_EARG, "taskinteract: no data (V >= 2 classes needed)");
    if (!(gamma > 0) || !(rho0 > 0) || !isfinite(b0))
        return ad_fail(AD_EARG, "taskinteract: need gamma > 0, rho0 > 0 and a finite B0, got "
                       "%g, %g, %g", gamma, rho0, b0);
    double nu0 = log(expm1(rho0)); /* softplus⁻¹(ρ0): +inf past ρ0 ≈ 709.78 */
    if (!isfinite(nu0))
        return ad_fail(AD_EARG, "taskinteract: rho0 = %g is too large: softplus^-1(rho0) = "
                       "log(e^rho0 - 1) is not finite", rho0);
    int V = dt->V, d = dt->d;
    tp->x_train = dt->x_train;
    tp->y_train = dt->y_train;
    tp->x_val = dt->x_val;
    tp->y_val = dt->y_val;
    tp->V = V;
    tp->lam[0] = ad_tensor_fill(2, (int[]){ V, V }, (ad_real)b0);
    tp->lam[1] = ad_param_scalar((ad_real)nu0);
    tp->w_hat = ad_tensor_new(2, (int[]){ V, d });
    if (!tp->lam[0] || !tp->lam[1] || !tp->w_hat) {
        ti_problem_free(tp);
        return ad_fail(AD_ENOMEM, "taskinteract: out of memory");
    }
    ad_set_requires_grad(tp->lam[0], true);
    tp->val_loss = tp->val_acc = NAN;
    tp->problem = (hg_problem){
        .n_w = 1, .n_hyper = 2, .hyper = tp->lam, .T = T,
        .opt = { .kind = HG_GD, .step = gamma },
        .ctx = tp, .init = ti_w0, .inner = ti_inner, .outer = ti_outer,
    };
    return hg_problem_check(&tp->problem);
}

void ti_problem_free(ti_problem *tp)
{
    ad_value_free(tp->lam[0]);
    ad_value_free(tp->lam[1]);
    ad_value_free(tp->w_hat);
    tp->lam[0] = tp->lam[1] = tp->w_hat = NULL;
}

static double softplus(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }

void ti_current_C(const ti_problem *tp, double *C)
{
    int V = tp->V;
    const ad_real *B = tp->lam[0]->data;
    for (int i = 0; i < V; i++)
        for (int j = 0; j < V; j++)
            C[i * V + j] = softplus(B[i * V + j]) + softplus(B[j * V + i]);
}

double ti_current_rho(const ti_problem *tp) { return softplus(tp->lam[1]->data[0]); }

/* ---- data --------------------------------------------------------------- */

int ti_top_eigenvalue(const double *x, int n, int d, double *lmax)
{
    double *K = malloc(sizeof(double) * (size_t)n * (size_t)n);
    double *v = malloc(sizeof(double) * (size_t)n), *u = malloc(sizeof(double) * (size_t)n);
    double lam = 0;
    /* Not 0 on failure: the feature scale would then be 1, and γ = 0.1 diverges on raw
     * standardized CIFAR pixels (see the header). */
    int rc = K && v && u ? AD_OK
                         : ad_fail(AD_ENOMEM, "taskinteract: out of memory for the %d x %d Gram "
                                   "matrix", n, n);
    if (rc == AD_OK) {
        for (int i = 0; i < n; i++)
            for (int j = 0; j <= i; j++) {
                double s = 0;
                for (int k = 0; k < d; k++) s += x[(size_t)i * d + k] * x[(size_t)j * d + k];
                K[i * n + j] = K[j * n + i] = s / n;
            }
        for (int i = 0; i < n; i++) v[i] = 1 / sqrt((double)n) * (1 + 0.01 * (i % 7));
        for (int it = 0; it < 1000; it++) {
            double nu = 0;
            for (int i = 0; i < n; i++) {
                double s = 0;
                for (int j = 0; j < n; j++) s += K[i * n + j] * v[j];
                u[i] = s;
                nu += s * s;
            }
            nu = sqrt(nu);
            if (nu == 0) break;
            for (int i = 0; i < n; i++) v[i] = u[i] / nu;
            bool done = fabs(nu - lam) <= 1e-10 * nu;
            lam = nu;
            if (done) break;
        }
    }
    free(K);
    free(v);
    free(u);
    *lmax = lam;
    return rc;
}

void ti_data_free(ti_data *dt)
{
    ad_value *v[] = { dt->x_train, dt->y_train, dt->x_val, dt->y_val, dt->x_test, dt->y_test };
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) ad_value_free(v[i]);
    memset(dt, 0, sizeof *dt);
}


/* s = √(4 / (γ λmax)): see the header. */
static double feature_scale(double lmax, double gamma)
{
    return lmax > 0 ? sqrt(4 / (gamma * lmax)) : 1;
}

int ti_data_cifar(ti_data *out, const data_cifar *train, const data_cifar *test, int per_train,
                  int per_val, uint64_t seed, double gamma)
{
    memset(out, 0, sizeof *out);
    enum { V = DATA_CIFAR_CLASSES, P = DATA_CIFAR_PIXELS, d = P + 1 };
    if (!train || !test || train->n < 1 || test->n < 1 || per_train < 1 || per_val < 1 ||
        !(gamma > 0))
        return ad_fail(AD_EARG, "taskinteract: cifar: bad arguments");
    int n = V * per_train, m = V * per_val, N = test->n;
    int *it = malloc(sizeof *it * (size_t)n), *iv = malloc(sizeof *iv * (size_t)m);
    int *y = malloc(sizeof *y * (size_t)(N > n + m ? N : n + m));
    double *mean = malloc(sizeof *mean * P), *sd = malloc(sizeof *sd * P);
    double *x = malloc(sizeof *x * (size_t)n * P);
    ad_real *buf = malloc(sizeof *buf * (size_t)(N > n ? N : n) * d);
    int rc = it && iv && y && mean && sd && x && buf ? AD_OK
                                                     : ad_fail(AD_ENOMEM, "taskinteract: out of memory");
    ad_rng rng;
    ad_rng_seed(&rng, seed);
    if (rc == AD_OK)
        rc = ex_sample_balanced(&rng, train->labels, train->n, V, V * per_train, V * per_val, it,
                                iv);
    if (rc == AD_OK) rc = data_cifar_moments(train, it, n, mean, sd);
    if (rc == AD_OK) rc = data_cifar_features(train, it, n, mean, sd, false, buf);
    if (rc == AD_OK) {
        for (size_t i = 0; i < (size_t)n * P; i++) x[i] = buf[i];
        rc = ti_top_eigenvalue(x, n, P, &out->lmax);
    }
    if (rc == AD_OK) {
        out->scale = feature_scale(out->lmax, gamma);
        for (int j = 0; j < P; j++) sd[j] /= out->scale; /* folds s into the spread */
    }
    /* train, val, test: features then labels */
    const data_cifar *src[3] = { train, train, test };
    const int *idx[3] = { it, iv, NULL }, cnt[3] = { n, m, N };
    ad_value **xs[3] = { &out->x_train, &out->x_val, &out->x_test };
    ad_value **ys[3] = { &out->y_train, &out->y_val, &out->y_test };
    for (int s = 0; s < 3 && rc == AD_OK; s++) {
        rc = data_cifar_features(src[s], idx[s], cnt[s], mean, sd, true, buf);
        if (rc == AD_OK) rc = data_cifar_labels(src[s], idx[s], cnt[s], y);
        if (rc == AD_OK) {
            *xs[s] = ad_tensor_from(2, (int[]){ cnt[s], d }, buf);
            *ys[s] = ex_labels_tensor(y, cnt[s]);
            if (!*xs[s] || !*ys[s]) rc = ad_fail(AD_ENOMEM, "taskinteract: out of memory");
        }
    }
    if (rc == AD_OK) {
        out->V = V;
        out->d = d;
        out->n_train = n;
        out->n_val = m;
        out->n_test = N;
    }
    free(it);
    free(iv);
    free(y);
    free(mean);
    free(sd);
    free(x);
    free(buf);
    if (rc != AD_OK) ti_data_free(out);
    return rc;
}

int ti_data_omniglot(ti_data *out, const data_omniglot *om, int pool, int n_chars, int k_train,
                     int k_val, uint64_t seed, double gamma)
{
    memset(out, 0, sizeof *out);
    if (!om || !om->pixels || pool < 1 || pool > om->n_chars || n_chars < 2 || n_chars > pool ||
        k_train < 1 || k_val < 1 || k_train + k_val >= om->n_drawers || !(gamma > 0))
        return ad_fail(AD_EARG, "taskinteract: omniglot: bad arguments (%d characters of %d, "
                       "%d + %d drawers of %d)", n_chars, pool, k_train, k_val,
                       om ? om->n_drawers : 0);
    int V = n_chars, P = om->size * om->size, d = P + 1, D = om->n_drawers;
    int k_test = D - k_train - k_val;
    int cnt[3] = { V * k_train, V * k_val, V * k_test };
    int most = cnt[0] > cnt[1] ? cnt[0] : cnt[1];
    most = most > cnt[2] ? most : cnt[2];
    int *perm = malloc(sizeof *perm * (size_t)pool), *y = malloc(sizeof *y * (size_t)most);
    double *mean = calloc((size_t)P, sizeof *mean), *sd = calloc((size_t)P, sizeof *sd);
    double *x = malloc(sizeof *x * (size_t)cnt[0] * (size_t)P); /* for λmax */
    const float **img[3] = { malloc(sizeof(float *) * (size_t)cnt[0]),
                             malloc(sizeof(float *) * (size_t)cnt[1]),
                             malloc(sizeof(float *) * (size_t)cnt[2]) };
    int rc = perm && y && mean && sd && x && img[0] && img[1] && img[2]
                 ? AD_OK
                 : ad_fail(AD_ENOMEM, "taskinteract: out of memory");
    ad_rng rng;
    ad_rng_seed(&rng, seed);
    if (rc == AD_OK) {
        /* The characters: the first V of a shuffled pool; for each, a
         * shuffled list of drawers split k_train / k_val / the rest. */
        ad_rng_permutation(&rng, perm, pool);
        int fill[3] = { 0, 0, 0 }, dr[DATA_OMNIGLOT_DRAWERS];
        for (int v = 0; v < V; v++) {
            int c = perm[v];
            ad_rng_permutation(&rng, dr, D);
            for (int k = 0; k < D; k++) {
                int s = k < k_train ? 0 : k < k_train + k_val ? 1 : 2;
                img[s][fill[s]++] = om->pixels + ((size_t)c * D + (size_t)dr[k]) * (size_t)P;
            }
        }
        /* Mean and spread per pixel over the training images. */
        int n = cnt[0];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < P; j++) mean[j] += img[0][i][j];
        for (int j = 0; j < P; j++) mean[j] /= n;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < P; j++) sd[j] += (img[0][i][j] - mean[j]) * (img[0][i][j] - mean[j]);
        for (int j = 0; j < P; j++) sd[j] = fmax(sqrt(sd[j] / n), TI_OMNIGLOT_STD_FLOOR);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < P; j++) x[(size_t)i * P + j] = (img[0][i][j] - mean[j]) / sd[j];
        rc = ti_top_eigenvalue(x, n, P, &out->lmax);
        out->scale = feature_scale(out->lmax, gamma);
    }
    ad_value **xs[3] = { &out->x_train, &out->x_val, &out->x_test };
    ad_value **ys[3] = { &out->y_train, &out->y_val, &out->y_test };
    const int per[3] = { k_train, k_val, k_test };
    for (int s = 0; s < 3 && rc == AD_OK; s++) {
        ad_value *xt = *xs[s] = ad_tensor_new(2, (int[]){ cnt[s], d });
        for (int i = 0; xt && i < cnt[s]; i++) {
            ad_real *row = xt->data + (size_t)i * d;
            for (int j = 0; j < P; j++)
                row[j] = (ad_real)(out->scale * (img[s][i][j] - mean[j]) / sd[j]);
            row[P] = 1;
            y[i] = i / per[s]; /* class-major */
        }
        *ys[s] = xt ? ex_labels_tensor(y, cnt[s]) : NULL;
        if (!*xs[s] || !*ys[s]) rc = ad_fail(AD_ENOMEM, "taskinteract: out of memory");
    }
    if (rc == AD_OK) {
        out->V = V;
        out->d = d;
        out->n_train = cnt[0];
        out->n_val = cnt[1];
        out->n_test = cnt[2];
    }
    free(perm);
    free(y);
    free(mean);
    free(sd);
    free(x);
    for (int s = 0; s < 3; s++) free((void *)img[s]);
    if (rc != AD_OK) ti_data_free(out);
    return rc;
}
