/* example_l2.c — a new experiment written with the run kit, to copy: one
 * L2 penalty per feature of a logistic regression on generated data,
 * learned by Adam on K-RMD hypergradients, with every K of --K compared
 * against full RMD (hg_sweep) at each hyper-iteration.  Writes sweep.csv
 * (cosine and relative error per K and hyper-iteration), sweep.gp and
 * sweep.png (the relative error) into --out. */
#include <math.h>
#include <stdlib.h>

#include "experiments/classify.h"
#include "experiments/kit/kit.h"
#include "ops/ops.h"
#include "optim/hypergrad.h"
#include "optim/outer.h"

enum { MAX_KS = 8 };
static struct {
    int n, d, T, iters, Ks[MAX_KS], nK, K;
    double gamma, lr;
    uint64_t seed;
    const char *out;
} o;

static const ex_flag flags[] = {
    { "--n", EX_INT, &o.n, "200", 10, 100000, "training and validation examples each" },
    { "--d", EX_INT, &o.d, "20", 1, 10000, "features (the first quarter carry the signal)" },
    { "--T", EX_INT, &o.T, "50", 1, 10000, "inner gradient-descent steps" },
    { "--gamma", EX_REAL, &o.gamma, "0.5", 0, 10, "inner step size", .open = EX_OPEN_LO },
    { "--hyper-iters", EX_INT, &o.iters, "30", 1, 100000, "Adam updates of the penalties" },
    { "--lr", EX_REAL, &o.lr, "0.1", 0, 10, "Adam's step size", .open = EX_OPEN_LO },
    { "--K", EX_INTS, o.Ks, "1,5,25", 1, 10000, "truncations compared with full RMD (at most T)",
      .max_n = MAX_KS, .n = &o.nK },
    { "--K-train", EX_INT, &o.K, "5", 1, 10000, "the truncation whose estimate Adam follows (at "
      "most T)" },
    { "--seed", EX_SEED, &o.seed, "1", .help = "seeds the data" },
    { "--out", EX_TEXT, &o.out, "results/example-l2", .help = "output folder", .meta = "DIR" },
};

/* After parsing: a K above T is full RMD under another name (its error 0 cannot be drawn on
 * the plot's log scale).  0 or exit status 2. */
static int check_ks(void)
{
    int K = o.K; /* the largest of --K-train and --K */
    for (int k = 0; k < o.nK; k++) K = o.Ks[k] > K ? o.Ks[k] : K;
    if (K <= o.T) return 0;
    return ex_usage_error("K = %d is larger than T = %d (K = T is already full RMD)", K, o.T);
}

static ex_cmd cmd = { "example-l2", "[flags]", "Per-feature L2 penalties exp(lambda_j) of a "
                      "logistic regression, learned by K-RMD; hg_sweep compares the Ks.\n",
                      EX_FLAGS(flags), .check = check_ks };

typedef struct l2 { ad_value *x[2], *y[2], *lam; } l2; /* [0] train, [1] validation */

static int w0(ad_tape *tp, ad_value *const *lam, ad_value **w, void *ctx)
{
    w[0] = ad_const_fill(tp, 2, (int[]){ o.d, 2 }, 0);
    return w[0] ? AD_OK : ad_error_code();
}

/* g(W, λ) = CE(X W, y) + Σ_j exp(λ_j) ‖W_j‖²,  X [n,d], W [d,2]. */
static ad_value *inner(ad_tape *tp, ad_value *const *w, ad_value *const *lam, int t, void *ctx)
{
    const l2 *p = ctx;
    ad_value *ce = ad_cross_entropy(tp, ad_matmul(tp, p->x[0], w[0], false, false), p->y[0], NULL,
                                    AD_REDUCE_MEAN);
    return ad_add(tp, ce, ad_dot(tp, ad_exp(tp, lam[0]), ad_sum_axis(tp, ad_square(tp, w[0]), 1)));
}

static ad_value *outer(ad_tape *tp, ad_value *const *w, ad_value *const *lam, void *ctx)
{
    const l2 *p = ctx;
    return ad_cross_entropy(tp, ad_matmul(tp, p->x[1], w[0], false, false), p->y[1], NULL,
                            AD_REDUCE_MEAN);
}

/* Features N(0,1); labels from the first quarter of them plus noise. */
static int make_data(l2 *p)
{
    ad_rng rng;
    ad_rng_seed(&rng, o.seed);
    int *y = malloc(sizeof *y * (size_t)o.n), rc = AD_OK;
    for (int s = 0; s < 2 && rc == AD_OK; s++) {
        p->x[s] = ad_tensor_randn(&rng, 2, (int[]){ o.n, o.d }, 1.0);
        for (int i = 0; y && p->x[s] && i < o.n; i++) {
            double z = ad_rng_normal(&rng);
            for (int j = 0; j < (o.d + 3) / 4; j++) z += p->x[s]->data[(size_t)i * o.d + j];
            y[i] = z > 0;
        }
        p->y[s] = y && p->x[s] ? ex_labels_tensor(y, o.n) : NULL;
        if (!p->y[s]) rc = ad_fail(AD_ENOMEM, "out of memory");
    }
    free(y);
    p->lam = ad_tensor_new(1, &o.d); /* λ = 0: every penalty 1 */
    if (rc == AD_OK && !p->lam) rc = ad_fail(AD_ENOMEM, "out of memory");
    return rc == AD_OK ? ad_set_requires_grad(p->lam, true) : rc;
}

static int run(ex_out *out, const hg_problem *pr, opt_outer *adam)
{
    ex_file csv, gp;
    ex_progress pg;
    ex_progress_init(&pg);
    int Ks[MAX_KS + 1], nK = o.nK;
    int rc = ex_csv_open(&csv, out, "sweep.csv", "iter,K,cosine,rel_error,val_loss");
    for (int k = 0; k < nK; k++) Ks[k] = o.Ks[k];
    Ks[nK++] = o.K; /* the last row is the one Adam follows */
    ex_watch watch; /* a loss blowing up stops the run: exit status 1 */
    ex_watch_init(&watch, "a step size too large? (--gamma: the inner one, --lr: the outer one)");
    for (int it = 1; it <= o.iters && rc == AD_OK; it++) {
        hg_sweep_result sw;
        int swept = rc = hg_sweep(pr, Ks, nK, &sw, NULL);
        if (rc == AD_OK) rc = ex_watch_inner(&watch, &sw.exact_report);
        if (rc == AD_OK) rc = ex_watch_val(&watch, it, sw.rows[0].report.outer_loss);
        if (rc != AD_OK) ad_fail_wrap(rc, "hyper-iteration %d", it);
        for (int k = 0; k < nK - 1 && rc == AD_OK; k++)
            fprintf(csv.f, "%d,%d,%.9f,%.9g,%.9g\n", it, Ks[k], sw.rows[k].cmp.cosine,
                    sw.rows[k].cmp.rel_error, sw.rows[k].report.outer_loss);
        /* λ is one tensor: the last K's estimate is the one Adam follows */
        if (rc == AD_OK) rc = opt_outer_step(adam, &sw.estimates[nK - 1]);
        double val_loss = rc == AD_OK ? sw.rows[0].report.outer_loss : NAN;
        if (swept == AD_OK) hg_sweep_free(&sw);
        ex_progress_line(&pg, it == o.iters, "example-l2: iter %d/%d  val loss %.4f", it, o.iters,
                         val_loss);
    }
    ex_progress_end(&pg);
    if (rc == AD_OK) rc = ex_file_commit(&csv);
    ex_file_abandon(&csv);
    if (rc == AD_OK) rc = ex_gp_open(&gp, out, "sweep.gp", 800, 500);
    if (rc == AD_OK) {
        fprintf(gp.f, "set xlabel 'hyper-iteration'; set ylabel '‖h_{T−K} − d_λf‖ / ‖d_λf‖'\n"
                      "set logscale y; set key bottom right\nKs = '");
        for (int k = 0; k < o.nK; k++) fprintf(gp.f, " %d", o.Ks[k]);
        fprintf(gp.f, "'\nplot for [K in Ks] 'sweep.csv' skip 1 using 1:($2 == K + 0 ? $4 : NaN) "
                      "with points pt 7 ps 0.6 title 'K = '.K\n");
        rc = ex_gp_commit(&gp);
    }
    return rc;
}

int main(int argc, char **argv)
{
    int st = ex_flags_parse(&cmd, argc, argv);
    if (st) return st < 0 ? 0 : st;
    ex_out *out = malloc(sizeof *out);
    l2 p = { 0 };
    opt_outer adam = { 0 };
    int rc = out ? ex_out_open(out, o.out, true) : ad_fail(AD_ENOMEM, "out of memory");
    if (rc == AD_OK) rc = make_data(&p);
    hg_problem pr = { .n_w = 1, .n_hyper = 1, .hyper = &p.lam, .T = o.T, .ctx = &p,
                      .opt = { .kind = HG_GD, .step = o.gamma }, .init = w0, .inner = inner,
                      .outer = outer };
    if (rc == AD_OK) rc = hg_problem_check(&pr);
    if (rc == AD_OK) rc = opt_outer_init(&adam, OPT_ADAM, o.lr, false, 1, &p.lam);
    if (rc == AD_OK) rc = run(out, &pr, &adam);
    if (rc == AD_OK) ex_out_list(out);
    opt_outer_free(&adam);
    for (int s = 0; s < 2; s++) ad_value_free(p.x[s]), ad_value_free(p.y[s]);
    ad_value_free(p.lam);
    if (out) ex_out_close(out);
    free(out);
    return ex_exit(rc);
}
