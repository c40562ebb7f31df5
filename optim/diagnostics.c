/* diagnostics.c — how far an estimate is from the exact hypergradient, and
 * the comparison of truncation depths on any problem. */
#include <math.h>
#include <stdlib.h>

#include "optim/hypergrad.h"

/* AD_OK for lists that can be compared entry by entry; else AD_EARG and a
 * message saying why. */
static int comparable(int n, ad_value *const *h, ad_value *const *d)
{
    if (n < 0) return ad_fail(AD_EARG, "compare_grads: n = %d", n);
    if (n > 0 && (!h || !d))
        return ad_fail(AD_EARG, "compare_grads: the list %s is NULL", !h ? "h" : "d");
    for (int i = 0; i < n; i++) {
        char who[48];
        snprintf(who, sizeof who, "compare_grads: h[%d]", i);
        if (ad_value_check(who, h[i]) != AD_OK) return AD_EARG;
        snprintf(who, sizeof who, "compare_grads: d[%d]", i);
        if (ad_value_check(who, d[i]) != AD_OK) return AD_EARG;
        if (h[i]->size != d[i]->size)
            return ad_fail(AD_EARG, "compare_grads: h[%d] has %zu entries, d[%d] %zu", i,
                           h[i]->size, i, d[i]->size);
    }
    return AD_OK;
}

hg_compare hg_compare_grads(int n, ad_value *const *h, ad_value *const *d)
{
    if (comparable(n, h, d) != AD_OK) return (hg_compare){ NAN, NAN, NAN, NAN, NAN, NAN };
    double hd = 0, hh = 0, dd = 0, ee = 0;
    for (int i = 0; i < n; i++)
        for (size_t j = 0; j < h[i]->size; j++) {
            double a = h[i]->data[j], b = d[i]->data[j];
            hd += a * b;
            hh += a * a;
            dd += b * b;
            ee += (a - b) * (a - b);
        }
    hg_compare c = { 0 };
    c.norm_est = sqrt(hh);
    c.norm_exact = sqrt(dd);
    c.abs_error = sqrt(ee);
    c.cosine = hh > 0 && dd > 0 ? hd / (c.norm_est * c.norm_exact) : 0;
    c.rel_error = dd > 0 ? c.abs_error / c.norm_exact : c.abs_error;
    c.ratio = dd > 0 ? hd / dd : 0;
    return c;
}

double hg_prop31_bound(double gamma, double alpha, int K, double grad_w_norm, double m_b)
{
    double ga = gamma * alpha;
    if (!(ga > 0 && ga <= 1) || K < 0) return NAN;
    return pow(1 - ga, K) / ga * grad_w_norm * m_b;
}

static void print_table(FILE *out, const hg_sweep_row *rows, int nK, const hg_report *pass)
{
    fprintf(out, "%6s  %10s  %10s  %12s  %12s\n", "K", "cosine", "rel_error", "|h|", "|dlam f|");
    for (int i = 0; i < nK; i++)
        fprintf(out, "%6d  %10.6f  %10.3e  %12.6g  %12.6g\n", rows[i].K, rows[i].cmp.cosine,
                rows[i].cmp.rel_error, rows[i].cmp.norm_est, rows[i].cmp.norm_exact);
    fprintf(out, "every row from one reverse pass over all steps: %.4f s, peak tape %zu B\n",
            pass->seconds, pass->peak_tape_bytes);
}

void hg_sweep_free(hg_sweep_result *r)
{
    if (!r) return;
    if (r->estimates)
        for (size_t i = 0; i < (size_t)r->nK * (size_t)r->n_hyper; i++) ad_value_free(r->estimates[i]);
    if (r->exact)
        for (int j = 0; j < r->n_hyper; j++) ad_value_free(r->exact[j]);
    free(r->estimates);
    free(r->exact);
    free(r->rows);
    *r = (hg_sweep_result){ 0 };
}

/* One truncation profile over all T steps, keeping h_{T−K} for each K (a K
 * at or beyond T is full RMD, the profile's last row). */
static int sweep(const hg_problem *p, const int *Ks, int nK, hg_sweep_result *r, FILE *table)
{
    if (!Ks || nK < 1) return ad_fail(AD_EARG, "no K given");
    for (int i = 0; i < nK; i++)
        if (Ks[i] < 1) return ad_fail(AD_EARG, "K must be >= 1, got %d (Ks[%d])", Ks[i], i);
    int rc = hg_problem_check(p);
    if (rc != AD_OK) return rc;
    int n = p->n_hyper, T = p->T;
    r->nK = nK;
    r->n_hyper = n;
    r->rows = calloc((size_t)nK, sizeof *r->rows);
    r->estimates = calloc((size_t)nK * (size_t)n, sizeof *r->estimates);
    r->exact = calloc((size_t)n, sizeof *r->exact);
    if (!r->rows || !r->estimates || !r->exact) return ad_fail(AD_ENOMEM, "out of memory");
    hg_profile pr;
    rc = hg_truncation_profile(p, T, &(hg_profile_opts){ .keep = Ks, .n_keep = nK }, &pr);
    if (rc != AD_OK) return rc;
    ad_value **exact = pr.h + (size_t)(T - 1) * (size_t)n;
    for (int j = 0; j < n && rc == AD_OK; j++)
        if (!(r->exact[j] = ad_value_copy(exact[j]))) rc = ad_error_code();
    r->exact_report = pr.report;
    for (int i = 0; i < nK && rc == AD_OK; i++) {
        int k = Ks[i] < T ? Ks[i] : T;
        ad_value **est = r->estimates + (size_t)i * (size_t)n;
        ad_value **h = pr.h + (size_t)(k - 1) * (size_t)n;
        for (int j = 0; j < n && rc == AD_OK; j++)
            if (!(est[j] = ad_value_copy(h[j]))) rc = ad_error_code();
        if (rc != AD_OK) break; /* comparing NULLs would overwrite the copy's message */
        r->rows[i] = (hg_sweep_row){ .K = Ks[i], .cmp = hg_compare_grads(n, est, r->exact),
                                     .report = pr.report };
    }
    hg_profile_free(&pr);
    if (rc == AD_OK && table) print_table(table, r->rows, nK, &r->exact_report);
    return rc;
}

int hg_sweep(const hg_problem *p, const int *Ks, int nK, hg_sweep_result *out, FILE *table)
{
    if (!out) return ad_fail(AD_EARG, "sweep: the result is NULL");
    *out = (hg_sweep_result){ 0 };
    int rc = sweep(p, Ks, nK, out, table);
    if (rc != AD_OK) {
        hg_sweep_free(out);
        return ad_fail_wrap(rc, "sweep");
    }
    return AD_OK;
}
