/* diagnostics.c — how far an estimate is from the exact hypergradient, and
 * the comparison of truncation depths on any problem. */
#include <math.h>
#include <stdlib.h>

#include "optim/hypergrad.h"

hg_compare hg_compare_grads(int n, ad_value *const *h, ad_value *const *d)
{
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

static void print_table(FILE *out, const hg_sweep_row *rows, int nK, const hg_report *exact)
{
    fprintf(out, "%6s  %10s  %10s  %12s  %12s  %10s  %14s\n", "K", "cosine", "rel_error",
            "|h|", "|dlam f|", "seconds", "peak_tape_B");
    for (int i = 0; i < nK; i++)
        fprintf(out, "%6d  %10.6f  %10.3e  %12.6g  %12.6g  %10.4f  %14zu\n", rows[i].K,
                rows[i].cmp.cosine, rows[i].cmp.rel_error, rows[i].cmp.norm_est,
                rows[i].cmp.norm_exact, rows[i].report.seconds, rows[i].report.peak_tape_bytes);
    if (exact)
        fprintf(out, "%6s  %10s  %10s  %12s  %12s  %10.4f  %14zu\n", "full", "1", "0", "", "",
                exact->seconds, exact->peak_tape_bytes);
}

int hg_sweep(const hg_problem *p, const int *Ks, int nK, hg_sweep_row *rows,
             ad_value ***estimates, hg_report *exact_report, FILE *table)
{
    if (!Ks || nK < 1 || !rows) return ad_fail(AD_EARG, "sweep: no K given");
    int n = p ? p->n_hyper : 0;
    ad_value **exact = calloc(n > 0 ? (size_t)n : 1, sizeof *exact);
    ad_value **est = calloc(n > 0 ? (size_t)n : 1, sizeof *est);
    hg_report er;
    int rc = exact && est ? hg_full_rmd(p, exact, &er) : ad_fail(AD_ENOMEM, "sweep: out of memory");
    for (int i = 0; i < nK && rc == AD_OK; i++) {
        rows[i].K = Ks[i];
        rc = hg_krmd(p, Ks[i], est, &rows[i].report);
        if (rc != AD_OK) break;
        rows[i].cmp = hg_compare_grads(n, est, exact);
        for (int j = 0; j < n; j++) {
            if (estimates) estimates[i][j] = est[j];
            else ad_value_free(est[j]);
        }
    }
    if (rc == AD_OK && exact_report) *exact_report = er;
    if (rc == AD_OK && table) print_table(table, rows, nK, &er);
    if (exact)
        for (int j = 0; j < n; j++) ad_value_free(exact[j]);
    free(exact);
    free(est);
    return rc;
}
