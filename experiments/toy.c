/*
 * toy.c — the paper's toy problem (Sec. 4.1), end to end: Figures 1–4 as
 * CSV files, gnuplot scripts and PNGs, and a query mode that prints every
 * estimator's hypergradient at one λ.  The problem is toy_problem.c; the
 * choices the paper leaves open are listed in the help text below (--help).
 *
 *     toy                       all four figures into results/toy
 *     toy --query --lambda=1,1 --K=10
 *     toy --profile --lambda=1,1 --K=100   h_{T−k} for k = 1..K, one pass
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "experiments/kit/kit.h"
#include "experiments/toy_problem.h"
#include "optim/hypergrad.h"
#include "optim/outer.h"

enum { MAX_KS = 8 };

static const double FIRST_STEP_NORM = 0.6; /* footnote 4 */
/* What a diverged run's message suggests (ex_watch). */
#define TOY_HINT "lower --gamma, the inner step size (gradient descent on g diverges above 2)"

/* f̃ in gnuplot's enhanced text: f with a tilde printed over it, then a
 * space ("&{x}" is blank space as wide as an x).  A combining tilde U+0303
 * on f does not show at this font size. */
#define FT "~f{.9˜}&{x}"

/* ---- options ------------------------------------------------------------ */

typedef struct toy_opts {
    bool query, profile, tilde;
    const char *out;
    double lam[2];   /* --lambda (query) */
    double start[2]; /* --start: λ0 of the trajectories */
    int T, K, iters;
    double gamma;
} toy_opts;

static toy_opts opts;

static const ex_flag flags[] = {
    { "--out", EX_TEXT, &opts.out, "results/toy", .help = "figure mode: the output folder, "
      "created if missing", .meta = "DIR" },
    { "--iters", EX_INT, &opts.iters, "1000", 1, 1000000, "figure mode: hyper-iterations per "
      "trajectory" },
    { "--start", EX_PAIR, opts.start, "-1,1", .help = "figure mode: λ0 of the trajectories",
      .meta = "L1,L2" },
    { "--query", EX_SWITCH, &opts.query, .help = "query mode" },
    { "--profile", EX_SWITCH, &opts.profile, .help = "profile mode" },
    { "--lambda", EX_PAIR, opts.lam, .help = "query and profile modes: the point λ (required)",
      .meta = "L1,L2" },
    { "--K", EX_INT, &opts.K, "10", 1, 100000, "query mode: truncation / iterations / terms; "
      "profile mode: the deepest truncation (at most T)" },
    { "--tilde", EX_SWITCH, &opts.tilde, .help = "query and profile modes: use f̃ instead of f" },
    { "--T", EX_INT, &opts.T, "100", 1, 100000, "inner steps" },
    { "--gamma", EX_REAL, &opts.gamma, "0.1", 0, HUGE_VAL, "inner step size (above 2 the "
      "inner descent diverges)", .open = EX_OPEN_LO },
};

static int check_flags(void);
static ex_cmd cmd = {
    "toy", "[--out DIR] [--T=N] [--gamma=G] [--iters=N] [--start=L1,L2]\n"
    "       toy --query --lambda=L1,L2 [--K=K] [--T=N] [--gamma=G] [--tilde]\n"
    "       toy --profile --lambda=L1,L2 [--K=K] [--T=N] [--gamma=G] [--tilde]",
"The toy problem of Sec. 4.1 of Shaban et al., \"Truncated back-propagation\n"
"for bilevel optimization\": λ, w in R², inner loss g(w,λ) = ½(w−λ)ᵀG(w−λ),\n"
"G = diag(1, 1/2), ŵ = T steps of gradient descent with step γ from w0 = (2,2),\n"
"outer loss f = ‖ŵ‖² + 10‖sin ŵ‖² (or f̃ = f + 5‖λ − (1,0)‖²).\n"
"\n"
"Figure mode (default) writes into DIR, for each figure figN.csv (the data),\n"
"figN.gp (the gnuplot script) and figN.png:\n"
"  fig1  at λ = (1,1): ‖h_{T−K} − dλf‖ and the Prop. 3.1 bound\n"
"        (1−γα)^K/(γα)·‖∇ŵf‖·M_B, α = 1/2, M_B = ‖B_t‖ = γ‖G‖ = γ, vs K = 1..T;\n"
"  fig2  the ratio h_{T−K}·dλf/‖dλf‖² for K = 1, 2, 5, 10, 25, 50 at the\n"
"        iterates λ_τ of the 1-RMD trajectory, for f (left) and f̃ (right);\n"
"  fig3  trajectories on f̃ for K = 1, 5, 25, T, with the optimum of f̃ (red X);\n"
"  fig4  trajectories on f for K = 1, 5, 25, T and ‖λ_τ − λ*‖ vs τ.\n"
"Trajectories: SGD with η_τ = η0/√τ, η0 chosen per K so that the first update\n"
"has norm 0.6 (footnote 4), from λ0 = --start for --iters steps.  λ0 = (−1, 1)\n"
"lies in the basin of λ* (|λᵢ| < 1.75, where f's per-coordinate local maxima\n"
"sit) and left of f̃'s optimum in λ1, so the 1-RMD path on f̃ crosses the region\n"
"where h_{T−1} points against dλf̃ (Fig. 2, right).  Ks above T are dropped;\n"
"K = T is full back-propagation.  PNGs need gnuplot (pngcairo if available,\n"
"else png); without it the CSVs and scripts are still written.\n"
"Optima: λ* of f in closed form: f ≥ 0 with equality only at ŵ = 0, and\n"
"ŵ = C w0 + (I − C) λ with C = (I − γG)^T, so λ*ᵢ = −2Cᵢ/(1 − Cᵢ) exactly\n"
"(offset from the origin because T steps do not solve g); λ̃* of f̃ by a grid\n"
"search per coordinate (step 1e−4 on [−4, 4]; f̃ is a sum of one function per\n"
"coordinate) refined by Newton's method; both are checked with full RMD's\n"
"hypergradient there (printed).  Fig. 2 evaluates the ratio along the 1-RMD\n"
"trajectories, as the paper does for f; its f panel stops once ‖dλf‖ < 1e-9\n"
"of its first value: past that the ratio is rounding noise.  The cost grows\n"
"like T × iters; the default run takes a few seconds.\n"
"\n"
"Query mode prints one hypergradient per line, in this order:\n"
"  krmd        K-RMD h_{T−K}                    (hg_krmd, K)\n"
"  exact       full reverse mode dλf            (hg_full_rmd)\n"
"  fmd         forward mode                     (hg_fmd)\n"
"  checkpoint  checkpointed RMD, same K         (hg_checkpoint, K)\n"
"  cg          implicit differentiation, K CG iterations, tolerance 0\n"
"  neumann     implicit differentiation, K-term Neumann series\n"
"as `NAME v1 v2`, v = (dλ1, dλ2) printed with %.17g, e.g.\n"
"  krmd 7.224983909095207 4.4359241458061591      (--lambda=1,1 --K=10)\n"
"\n"
"Profile mode prints, from one reverse pass over the last K steps\n"
"(hg_truncation_profile), one line per truncation depth k = 1..K:\n"
"  k h1 h2 contribution_norm\n"
"with h = h_{T−k} (the k-step truncated hypergradient) and contribution_norm\n"
"= ‖B_tᵀ v_t‖, t = T−k+1, the share the k-th step back adds (here γG(I−γG)^{k−1}∇ŵf),\n"
"all %.17g; then on stderr the contraction rate q = max|1 − γλ| over the\n"
"eigenvalues of ∇²g (Lanczos) and the K a relative error of 1 %% needs.\n",
    EX_FLAGS(flags),
    "Exit status: 0 on success (also when gnuplot is missing), 1 when the library\n"
    "reports an error (its message is printed) or a file cannot be written,\n"
    "2 on a bad flag or value.\n",
    .check = check_flags,
};

/* The checks across flags, after parsing: 0 or an exit status. */
static int check_flags(void)
{
    toy_opts *o = &opts;
    bool fig_flag = ex_given(&cmd, "--out") || ex_given(&cmd, "--iters") ||
                    ex_given(&cmd, "--start");
    const char *mode = o->query ? "--query" : "--profile";
    if (o->query && o->profile) return ex_usage_error("--query and --profile are two modes: one at a time");
    if ((o->query || o->profile) && !ex_given(&cmd, "--lambda"))
        return ex_usage_error("%s needs --lambda=L1,L2", mode);
    if ((o->query || o->profile) && fig_flag)
        return ex_usage_error("--out, --iters and --start belong to figure mode, not %s", mode);
    if (!o->query && !o->profile &&
        (ex_given(&cmd, "--lambda") || ex_given(&cmd, "--K") || o->tilde))
        return ex_usage_error("--lambda, --K and --tilde belong to --query and --profile modes");
    if (o->profile && o->K > o->T)
        return ex_usage_error("--profile: K = %d is deeper than T = %d", o->K, o->T);
    return 0;
}

/* ---- small helpers ------------------------------------------------------- */

/* ‖∇ŵf‖ at ŵ as the library computes ŵ (hg_inner_solve: T detached inner
 * steps), the outer loss differentiated with respect to a leaf holding ŵ. */
static int grad_w_outer_norm(const hg_problem *p, double *norm)
{
    *norm = NAN;
    ad_value *w_hat = NULL;
    int rc = hg_inner_solve(p, &w_hat, NULL);
    if (rc != AD_OK) return rc;
    ad_tape *tp = ad_tape_new(1);
    ad_value *w = tp ? ad_leaf(tp, w_hat) : NULL, *g = NULL;
    ad_value *f = w ? p->outer(tp, &w, p->hyper, p->ctx) : NULL;
    rc = f ? ad_grad(tp, f, 1, &w, &g, false) : ad_fail_wrap(AD_EARG, "outer loss failed");
    if (rc == AD_OK) *norm = hypot(g->data[0], g->data[1]);
    ad_tape_free(tp);
    ad_value_free(w_hat);
    return rc;
}

/* ---- query mode ---------------------------------------------------------- */

static int run_query(const toy_opts *o)
{
    toy t;
    int rc = toy_init(&t, o->lam[0], o->lam[1], o->T, o->gamma, o->tilde);
    if (rc != AD_OK) rc = ad_fail_wrap(rc, "setting up the toy problem");
    static const char *const names[] = { "krmd", "exact", "fmd", "checkpoint", "cg", "neumann" };
    ex_watch watch; /* a diverged inner loop: no numbers, exit status 1 */
    ex_watch_init(&watch, TOY_HINT);
    for (int e = 0; e < 6 && rc == AD_OK; e++) {
        ad_value *h = NULL;
        hg_report r;
        switch (e) {
        case 0: rc = hg_krmd(&t.problem, o->K, &h, &r); break;
        case 1: rc = hg_full_rmd(&t.problem, &h, &r); break;
        case 2: rc = hg_fmd(&t.problem, &h, &r); break;
        case 3: rc = hg_checkpoint(&t.problem, o->K, &h, &r); break;
        case 4: rc = hg_implicit_cg(&t.problem, o->K, 0.0, &h, &r); break;
        default: rc = hg_neumann(&t.problem, o->K, &h, &r); break;
        }
        if (rc == AD_OK) rc = ex_watch_inner(&watch, &r);
        if (rc != AD_OK) rc = ad_fail_wrap(rc, "%s", names[e]);
        else printf("%s %.17g %.17g\n", names[e], (double)h->data[0], (double)h->data[1]);
        ad_value_free(h);
    }
    fflush(stdout);
    toy_free(&t);
    return rc;
}

/* ---- profile mode ----------------------------------------------------------- */

static int run_profile(const toy_opts *o)
{
    toy t;
    int rc = toy_init(&t, o->lam[0], o->lam[1], o->T, o->gamma, o->tilde);
    if (rc != AD_OK) rc = ad_fail_wrap(rc, "setting up the toy problem");
    hg_profile pr = { 0 };
    hg_curvature cv;
    hg_choice ch;
    if (rc == AD_OK) rc = hg_truncation_profile(&t.problem, o->K, &(hg_profile_opts){ .keep_all = true }, &pr);
    for (int k = 1; k <= pr.K && rc == AD_OK; k++) {
        ad_value *h = pr.h[k - 1];
        printf("%d %.17g %.17g %.17g\n", k, (double)h->data[0], (double)h->data[1],
               pr.contrib_norm[k - 1]);
    }
    fflush(stdout);
    if (rc == AD_OK) rc = hg_curvature_estimate(&t.problem, 0, &cv);
    if (rc == AD_OK) rc = hg_choose_k_from(&pr, &cv, 0.01, 0, &ch);
    if (rc == AD_OK)
        fprintf(stderr, "toy: ∇²g eigenvalues in [%.6g, %.6g], q = max|1 − γλ| = %.6g; "
                        "one pass over K = %d steps in %.4f s; relative error < 1%%: K = %d "
                        "(decided by %s; profile %d, bound %d)\n",
                cv.alpha, cv.L, cv.q, pr.K, pr.report.seconds, ch.K, ch.decided_by,
                ch.K_profile, ch.K_bound);
    hg_profile_free(&pr);
    toy_free(&t);
    return rc;
}

/* ---- output files -------------------------------------------------------- */
/* The closed form of the outer loss over the λ plane, for heat-map
 * backgrounds: ŵ = C w0 + (I − C) λ, C = (I − γG)^T. */
static void gp_loss_functions(FILE *g, int T, double gamma)
{
    double C1 = pow(1 - gamma * 1.0, T), C2 = pow(1 - gamma * 0.5, T);
    fprintf(g,
            "# Background: the outer loss as a function of λ by the closed form\n"
            "# ŵ = C w0 + (I − C) λ, C = (I − γG)^T (T = %d, γ = %g).\n"
            "C1 = %.17g; C2 = %.17g\n"
            "w1(x) = 2*C1 + (1 - C1)*x\n"
            "w2(y) = 2*C2 + (1 - C2)*y\n"
            "f(x, y) = w1(x)**2 + w2(y)**2 + 10*(sin(w1(x))**2 + sin(w2(y))**2)\n"
            "ftilde(x, y) = f(x, y) + 5*((x - 1)**2 + y**2)\n"
            "set palette defined (0 '#ffffff', 1 '#c6dbef', 2 '#6baed6', 3 '#2171b5')\n"
            "set samples 300; set isosamples 300\n"
            "set cblabel 'log_{10}(1 + loss)'\n",
            T, gamma, C1, C2);
}

/* Samples fun(x, y) (log10(1 + ·)) over the current ranges into $bg for a
 * heat map.  The '++' grid is read with whitespace separators, so it goes
 * through a datablock before the CSV separator comes back. */
static void gp_background(FILE *g, const char *fun)
{
    fprintf(g,
            "set datafile separator whitespace\n"
            "set table $bg separator comma\n"
            "plot '++' using 1:2:(log10(1 + %s($1, $2))) with table\n"
            "unset table\n"
            "set datafile separator ','\n",
            fun);
}

/* ---- trajectories -------------------------------------------------------- */

typedef struct traj {
    int K;
    int n;            /* points λ_0..λ_{n−1} (n − 1 updates) */
    double (*lam)[2];
    double *loss;     /* outer loss at λ_τ */
    double eta0;
} traj;

/* The trajectories of one figure, and the optimum they are measured against. */
typedef struct traj_set {
    bool tilde;
    int fig;
    int n;
    traj tr[MAX_KS];
    double opt[2];
} traj_set;

static void traj_free(traj *tr)
{
    free(tr->lam);
    free(tr->loss);
    tr->lam = NULL;
    tr->loss = NULL;
}

/* SGD with η_τ = η0/√τ from λ0 using the K-RMD hypergradient; η0 makes the
 * first update's norm FIRST_STEP_NORM.  Where the first hypergradient is
 * zero (below 1e−10), the trajectory stays put. */
static int run_traj(const toy_opts *o, bool tilde, int K, traj *tr)
{
    *tr = (traj){ .K = K, .n = o->iters + 1 };
    tr->lam = malloc((size_t)tr->n * sizeof *tr->lam);
    tr->loss = malloc((size_t)tr->n * sizeof *tr->loss);
    toy t = { 0 }; /* zeroed, as opt is: freed at the end whether or not set up */
    int rc = tr->lam && tr->loss ? toy_init(&t, o->start[0], o->start[1], o->T, o->gamma, tilde)
                                 : ad_fail(AD_ENOMEM, "trajectory: out of memory");
    opt_outer opt = { 0 };
    bool moving = false;
    ex_watch watch; /* a diverged run stops here, exit status 1 */
    ex_watch_init(&watch, TOY_HINT);
    for (int tau = 0; tau < tr->n && rc == AD_OK; tau++) {
        tr->lam[tau][0] = t.lam->data[0];
        tr->lam[tau][1] = t.lam->data[1];
        ad_value *h = NULL;
        hg_report r;
        rc = hg_krmd(&t.problem, K, &h, &r);
        if (rc == AD_OK) rc = ex_watch_inner(&watch, &r);
        if (rc == AD_OK) rc = ex_watch_val(&watch, tau, r.outer_loss);
        if (rc != AD_OK) {
            ad_fail_wrap(rc, "%s trajectory of K = %d, hyper-iteration %d", tilde ? "f̃" : "f", K,
                         tau);
            ad_value_free(h);
            break;
        }
        tr->loss[tau] = r.outer_loss;
        if (tau == 0) {
            /* Below 1e−10 the start is stationary to rounding: η0 = 0.6/‖h‖
             * would only amplify noise, so the trajectory stays put. */
            double hn = hypot(h->data[0], h->data[1]);
            tr->eta0 = hn > 1e-10 ? opt_outer_eta0_for_norm(OPT_SGD, 1, &h, FIRST_STEP_NORM) : 0;
            moving = tr->eta0 > 0;
            if (moving) rc = opt_outer_init(&opt, OPT_SGD, tr->eta0, true, 1, &t.lam);
        }
        if (rc == AD_OK && moving && tau + 1 < tr->n) rc = opt_outer_step(&opt, &h);
        ad_value_free(h);
    }
    opt_outer_free(&opt);
    toy_free(&t);
    if (rc != AD_OK) traj_free(tr);
    return rc;
}

/* The K values of a figure: those of `base` below T, then T itself (full). */
static int figure_ks(const int *base, int n_base, int T, int *Ks)
{
    int n = 0;
    for (int i = 0; i < n_base; i++)
        if (base[i] < T) Ks[n++] = base[i];
    Ks[n++] = T;
    return n;
}

static void ks_string(const int *Ks, int nK, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < nK && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s%d", i ? " " : "", Ks[i]);
}

/* The smallest box around every point, padded, for the trajectory panels. */
static void traj_box(const traj *trs, int n, const double extra[2], double box[4])
{
    box[0] = box[2] = extra[0];
    box[1] = box[3] = extra[1];
    for (int i = 0; i < n; i++)
        for (int k = 0; k < trs[i].n; k++) {
            box[0] = fmin(box[0], trs[i].lam[k][0]);
            box[2] = fmax(box[2], trs[i].lam[k][0]);
            box[1] = fmin(box[1], trs[i].lam[k][1]);
            box[3] = fmax(box[3], trs[i].lam[k][1]);
        }
    double pad = 0.15 * fmax(box[2] - box[0], box[3] - box[1]) + 0.1;
    box[0] -= pad;
    box[1] -= pad;
    box[2] += pad;
    box[3] += pad;
}

/* ---- the optima ---------------------------------------------------------- */

/* Coordinate by coordinate, with C = (1 − γGᵢ)^T: λ* of f makes ŵ = 0
 * exactly (see the help text); λ̃* of f̃ minimizes φ(x) = w² + 10 sin² w +
 * 5 (x − cᵢ)², w = 2C + (1 − C) x, by a grid search then Newton on φ'. */
static void optimum(int T, double gamma, bool tilde, double lam[2])
{
    static const double G[2] = { 1.0, 0.5 }, target[2] = { 1, 0 };
    for (int i = 0; i < 2; i++) {
        double C = pow(1 - gamma * G[i], T), b = 1 - C, best = 0, best_phi = INFINITY;
        if (!tilde) {
            lam[i] = -2 * C / (1 - C);
            continue;
        }
        for (int k = -40000; k <= 40000; k++) {
            double x = k * 1e-4, w = 2 * C + b * x, s = sin(w);
            double phi = w * w + 10 * s * s + 5 * (x - target[i]) * (x - target[i]);
            if (phi < best_phi) {
                best_phi = phi;
                best = x;
            }
        }
        double x = best;
        for (int it = 0; it < 50; it++) {
            double w = 2 * C + b * x;
            double d1 = b * (2 * w + 10 * sin(2 * w)) + 10 * (x - target[i]);
            double d2 = b * b * (2 + 20 * cos(2 * w)) + 10;
            double nx = x - d1 / d2;
            if (!(fabs(nx - best) <= 2e-4)) break; /* stay in the grid cell's basin */
            if (nx == x) break;
            x = nx;
        }
        lam[i] = x;
    }
}

/* ‖dλ‖ of full RMD at λ: how stationary a claimed optimum is. */
static int exact_norm_at(const toy_opts *o, bool tilde, const double lam[2], double *norm)
{
    toy t;
    int rc = toy_init(&t, lam[0], lam[1], o->T, o->gamma, tilde);
    ad_value *d = NULL;
    if (rc == AD_OK) rc = hg_full_rmd(&t.problem, &d, NULL);
    if (rc == AD_OK) *norm = hypot(d->data[0], d->data[1]);
    ad_value_free(d);
    toy_free(&t);
    return rc;
}

/* ---- Figure 1 ------------------------------------------------------------ */

static int figure1(const toy_opts *o, ex_out *od)
{
    double t0 = ex_now();
    toy t;
    int rc = toy_init(&t, 1, 1, o->T, o->gamma, false);
    if (rc != AD_OK) rc = ad_fail_wrap(rc, "fig1: setting up the toy problem");
    /* Prop. 3.1, eq. (10), g globally α-strongly convex:
     *   ‖h_{T−K} − dλf‖ ≤ (1 − γα)^K / (γα) · ‖∇ŵf‖ · M_B,
     * M_B = max_t ‖B_t‖.  Here B_0 = 0 and B_t = ∇λ[w − γ∇w g] = γG for
     * t ≥ 1 (the paper's Sec. 4.1), so M_B = ‖γG‖ = γ·max eig G = γ, and
     * α = min eig G = ½ (the paper: "α = 1/2, M_B = ‖γG‖ = γ").  α is
     * measured here (Lanczos on ∇²g with Hessian-vector products,
     * hg_curvature_estimate), as it would have to be on a problem without
     * a closed form; it comes out ½ to the last digit. */
    double m_b = o->gamma * 1.0, gw_norm, w_cf[2], h_cf[2];
    hg_curvature cv;
    if (rc == AD_OK && (rc = hg_curvature_estimate(&t.problem, 0, &cv)) != AD_OK)
        rc = ad_fail_wrap(rc, "fig1: α");
    if (rc == AD_OK && (rc = grad_w_outer_norm(&t.problem, &gw_norm)) != AD_OK)
        rc = ad_fail_wrap(rc, "fig1: ∇ŵf");
    if (rc != AD_OK) {
        toy_free(&t);
        return rc;
    }
    double alpha = cv.alpha;
    toy_closed_form(&t, o->T, w_cf, h_cf);
    double gw_cf = hypot(2 * w_cf[0] + 10 * sin(2 * w_cf[0]), 2 * w_cf[1] + 10 * sin(2 * w_cf[1]));

    /* K = 1..T, or at most 150 log-spaced values when T is above 300. */
    int nK = 0, Ks[300];
    hg_sweep_result sw = { 0 };
    if (o->T <= 300) {
        for (int K = 1; K <= o->T; K++) Ks[nK++] = K;
    } else {
        for (int i = 0; i < 150; i++) {
            int K = (int)lround(pow((double)o->T, i / 149.0));
            if (nK == 0 || K > Ks[nK - 1]) Ks[nK++] = K;
        }
    }
    rc = hg_sweep(&t.problem, Ks, nK, &sw, NULL);
    const hg_sweep_row *rows = sw.rows;
    ex_watch watch;
    ex_watch_init(&watch, TOY_HINT);
    if (rc == AD_OK) rc = ex_watch_inner(&watch, &sw.exact_report);
    ex_file csv;
    if (rc == AD_OK) rc = ex_csv_open(&csv, od, "fig1.csv", "K,error,bound,error_closed_form");
    else rc = ad_fail_wrap(rc, "fig1: sweep over K");
    double worst = 0; /* max error/bound */
    for (int i = 0; i < nK && rc == AD_OK; i++) {
        double h[2], e_cf, bound = hg_prop31_bound(o->gamma, alpha, Ks[i], gw_norm, m_b);
        toy_closed_form(&t, Ks[i], w_cf, h);
        e_cf = hypot(h[0] - h_cf[0], h[1] - h_cf[1]);
        fprintf(csv.f, "%d,%.17g,%.17g,%.17g\n", Ks[i], rows[i].cmp.abs_error, bound, e_cf);
        if (bound > 0) worst = fmax(worst, rows[i].cmp.abs_error / bound);
    }
    if (rc == AD_OK) rc = ex_file_commit(&csv);
    int last = nK > 1 ? nK - 2 : 0; /* the deepest K below T (at K = T the error is 0) */
    if (rc == AD_OK) fprintf(stderr,
            "fig1: λ = (1,1), ‖∇ŵf‖ = %.6g (AD; closed form %.6g), α = %.17g (measured), M_B = %g\n"
            "      error K=1: %.3e (bound %.3e); K=%d: %.3e (bound %.3e); max error/bound %.3f%s\n",
            gw_norm, gw_cf, alpha, m_b, rows[0].cmp.abs_error,
            hg_prop31_bound(o->gamma, alpha, Ks[0], gw_norm, m_b), Ks[last],
            rows[last].cmp.abs_error, hg_prop31_bound(o->gamma, alpha, Ks[last], gw_norm, m_b),
            worst, o->gamma * alpha > 1 ? " (γα > 1: the bound does not apply)" : "");

    ex_file g;
    if (rc == AD_OK) rc = ex_gp_open(&g, od, "fig1.gp", 1300, 520);
    if (rc == AD_OK) {
        gp_loss_functions(g.f, o->T, o->gamma);
        fprintf(g.f,
                "set multiplot layout 1,2 title 'Figure 1: the outer loss f, and Prop. 3.1 at λ = (1,1)'\n"
                "set title 'f(ŵ(λ)) over the λ plane'\n"
                "set xlabel 'λ_1'; set ylabel 'λ_2'\n"
                "set xrange [-4:4]; set yrange [-4:4]; set size ratio -1\n"
                "set key bottom left opaque box\n"
                "$point << EOD\n1,1\nEOD\n");
        gp_background(g.f, "f");
        fprintf(g.f,
                "plot $bg using 1:2:3 with image notitle, \\\n"
                "     $point using 1:2 with points pt 7 ps 1.5 lc rgb 'black' title 'λ = (1,1)'\n"
                "set size noratio; unset colorbox\n"
                "set autoscale xy\n"
                "set title 'error of K-RMD against the bound of Prop. 3.1 (10)'\n"
                "set xlabel 'K (steps back-propagated; T = %d; at K = T the error is 0, off the log axis)'\n"
                "set ylabel 'norm'\n"
                "set logscale y; set format y '10^{%%L}'\n"
                "set key top right noopaque nobox\n"
                "plot 'fig1.csv' skip 1 using 1:($2 > 0 ? $2 : NaN) with linespoints pt 7 ps 0.5 lw 2 \\\n"
                "         title '‖h_{T−K} − d_λf‖ (K-RMD vs full RMD)', \\\n"
                "     '' skip 1 using 1:3 with lines lw 2 dt 2 \\\n"
                "         title '(1−γα)^K/(γα) ‖∇_{ŵ}f‖ M_B,  α = %g, M_B = γ‖G‖ = %g'\n"
                "unset multiplot\n",
                o->T, alpha, m_b);
        rc = ex_gp_commit(&g);
    }
    if (rc == AD_OK) fprintf(stderr, "fig1: %d K values in %.2f s\n", nK, ex_now() - t0);
    hg_sweep_free(&sw);
    toy_free(&t);
    return rc;
}

/* ---- Figure 2 ------------------------------------------------------------ */

/* The ratio h_{T−K}·dλ/‖dλ‖² for each K at each λ_τ of tr, one CSV row per τ.
 * Stops once ‖dλ‖ has fallen below 1e−9 of its first value: at the optimum
 * of f both vectors are rounding noise and the ratio means nothing. */
static int fig2_rows(const toy_opts *o, bool tilde, const traj *tr, const int *Ks, int nK,
                     FILE *csv, double *min_ratio, int *rows_written)
{
    toy t;
    int rc = toy_init(&t, tr->lam[0][0], tr->lam[0][1], o->T, o->gamma, tilde);
    double first = 0;
    *min_ratio = INFINITY;
    *rows_written = 0;
    for (int tau = 0; tau < tr->n && rc == AD_OK; tau++) {
        t.lam->data[0] = (ad_real)tr->lam[tau][0];
        t.lam->data[1] = (ad_real)tr->lam[tau][1];
        hg_sweep_result sw;
        rc = hg_sweep(&t.problem, Ks, nK, &sw, NULL);
        if (rc != AD_OK) break;
        const hg_sweep_row *rows = sw.rows;
        double nd = rows[0].cmp.norm_exact;
        if (tau == 0) first = nd;
        if (!(nd > 1e-9 * first)) {
            hg_sweep_free(&sw);
            break;
        }
        fprintf(csv, "%s,%d,%.17g,%.17g,%.17g", tilde ? "ftilde" : "f", tau, tr->lam[tau][0],
                tr->lam[tau][1], nd);
        for (int i = 0; i < nK; i++) {
            fprintf(csv, ",%.17g", rows[i].cmp.ratio);
            *min_ratio = fmin(*min_ratio, rows[i].cmp.ratio);
        }
        fprintf(csv, "\n");
        ++*rows_written;
        hg_sweep_free(&sw);
    }
    toy_free(&t);
    return rc;
}

static int figure2(const toy_opts *o, ex_out *od, const traj *tr_f, const traj *tr_ft)
{
    double t0 = ex_now();
    static const int base[] = { 1, 2, 5, 10, 25, 50 };
    int Ks[MAX_KS], nK = figure_ks(base, 6, o->T, Ks);
    if (nK > 1) nK--; /* without K = T: its ratio is 1, unless no other K is below T */
    ex_file csv;
    int rc = ex_file_open(&csv, od, "fig2.csv");
    if (rc != AD_OK) return rc;
    fprintf(csv.f, "objective,tau,lambda1,lambda2,norm_dlam");
    for (int i = 0; i < nK; i++) fprintf(csv.f, ",ratio_K%d", Ks[i]);
    fprintf(csv.f, "\n");
    double min_f, min_ft;
    int n_f, n_ft;
    rc = fig2_rows(o, false, tr_f, Ks, nK, csv.f, &min_f, &n_f);
    if (rc == AD_OK) rc = fig2_rows(o, true, tr_ft, Ks, nK, csv.f, &min_ft, &n_ft);
    if (rc != AD_OK) {
        ex_file_abandon(&csv);
        return ad_fail_wrap(rc, "fig2");
    }
    rc = ex_file_commit(&csv);
    if (rc != AD_OK) return rc;
    fprintf(stderr,
            "fig2: ratio along the 1-RMD trajectories: f: %d iterates (until ‖dλf‖ < 1e-9 of its "
            "start), smallest ratio %.4g; f̃: %d iterates, smallest ratio %.4g\n",
            n_f, min_f, n_ft, min_ft);

    char ks[128];
    ks_string(Ks, nK, ks, sizeof ks);
    ex_file g;
    rc = ex_gp_open(&g, od, "fig2.gp", 1300, 520);
    if (rc != AD_OK) return rc;
    fprintf(g.f,
            "Ks = '%s'; nK = words(Ks)\n"
            "first_col = 6  # ratio_K<first K>\n"
            "set multiplot layout 1,2 title 'Figure 2: h_{T−K}·d_λf / ‖d_λf‖² along the 1-RMD trajectory'\n"
            "set xlabel 'hyper-iteration τ'\n"
            "set ylabel 'h_{T−K}·d_λf / ‖d_λf‖²'\n"
            "set logscale x\n"
            "set xrange [1:*]; set autoscale xfixmax\n"
            "set key bottom right\n"
            "set title 'f (stops when λ_τ reaches λ*)'\n"
            "plot for [i=1:nK] 'fig2.csv' skip 1 using ($2 + 1):(strcol(1) eq 'f' ? column(first_col + i - 1) : NaN) \\\n"
            "         with lines lw 2 title 'K = '.word(Ks, i), \\\n"
            "     0 with lines lc rgb 'black' dt 2 notitle\n"
            "set title '"FT"= f + 5‖λ − (1,0)‖²  (the ratio can be negative)'\n"
            "plot for [i=1:nK] 'fig2.csv' skip 1 using ($2 + 1):(strcol(1) eq 'ftilde' ? column(first_col + i - 1) : NaN) \\\n"
            "         with lines lw 2 title 'K = '.word(Ks, i), \\\n"
            "     0 with lines lc rgb 'black' dt 2 notitle\n"
            "unset multiplot\n"
            "# x is τ + 1 so that the start (τ = 0) fits on the log axis.\n",
            ks);
    rc = ex_gp_commit(&g);
    fprintf(stderr, "fig2: %.2f s\n", ex_now() - t0);
    return rc;
}

/* ---- Figures 3 and 4: trajectories ---------------------------------------- */

/* Left: trajectories over the loss's heat map, optimum marked; right:
 * distance to the optimum against τ. */
static int traj_gp(ex_out *od, const toy_opts *o, const traj_set *ts)
{
    char gp[16], csv[16], ks[128];
    snprintf(gp, sizeof gp, "fig%d.gp", ts->fig);
    snprintf(csv, sizeof csv, "fig%d.csv", ts->fig);
    int Ks[MAX_KS];
    for (int i = 0; i < ts->n; i++) Ks[i] = ts->tr[i].K;
    ks_string(Ks, ts->n, ks, sizeof ks);
    double box[4];
    traj_box(ts->tr, ts->n, ts->opt, box);
    ex_file gf;
    int rc = ex_gp_open(&gf, od, gp, 1300, 560);
    if (rc != AD_OK) return rc;
    FILE *g = gf.f;
    gp_loss_functions(g, o->T, o->gamma);
    const char *optname = ts->tilde ? "λ̃*" : "λ*";
    fprintf(g,
            "Ks = '%s'; nK = words(Ks); T = %d\n"
            "$opt << EOD\n%.17g,%.17g\nEOD\n"
            "label(K) = (K == T ? sprintf('K = %%d (full)', K) : sprintf('K = %%d', K))\n"
            "set multiplot layout 1,2 title 'Figure %d: %s, SGD η_τ = η_0/√τ, first step of norm %g, "
            "from λ_0 = (%g, %g)'\n"
            "set title 'trajectories λ_τ over %s'\n"
            "set xlabel 'λ_1'; set ylabel 'λ_2'\n"
            "set xrange [%.6g:%.6g]; set yrange [%.6g:%.6g]; set size ratio -1\n"
            "set key outside bottom center horizontal\n",
            ks, o->T, ts->opt[0], ts->opt[1], ts->fig,
            ts->tilde ? "biased convergence on "FT"= f + 5‖λ − (1,0)‖²" : "convergence on f",
            FIRST_STEP_NORM, o->start[0], o->start[1],
            ts->tilde ? FT"(ŵ(λ), λ)" : "f(ŵ(λ))", box[0], box[2], box[1], box[3]);
    gp_background(g, ts->tilde ? "ftilde" : "f");
    fprintf(g,
            "plot $bg using 1:2:3 with image notitle, \\\n"
            "     for [i=1:nK] '%s' skip 1 using ($1 == word(Ks, i) + 0 ? $3 : NaN):4 \\\n"
            "         with linespoints lw 1.5 ps 0.4 pt 7 lc i title label(word(Ks, i) + 0), \\\n"
            "     $opt using 1:2 with points pt 2 ps 3 lw 3 lc rgb 'red' title '%s (the optimum)'\n"
            "set size noratio; unset colorbox\n"
            "set autoscale xy; set autoscale xfixmax\n"
            "set title 'distance to the optimum %s'\n"
            "set xlabel 'hyper-iteration τ'; set ylabel '‖λ_τ − %s‖'\n"
            "set logscale y; set format y '10^{%%L}'\n"
            "set key inside top right noopaque nobox\n"
            "plot for [i=1:nK] '%s' skip 1 using ($1 == word(Ks, i) + 0 ? $2 : NaN):($6 > 0 ? $6 : NaN) \\\n"
            "         with lines lw 2 lc i title label(word(Ks, i) + 0)\n"
            "unset multiplot\n",
            csv, optname, optname, optname, csv);
    return ex_gp_commit(&gf);
}

/* The trajectories of Fig. 3 (f̃) or Fig. 4 (f), the optimum, and a summary. */
static int traj_set_run(const toy_opts *o, bool tilde, traj_set *ts)
{
    double t0 = ex_now();
    static const int base[] = { 1, 5, 25 };
    int Ks[MAX_KS], nK = figure_ks(base, 3, o->T, Ks);
    *ts = (traj_set){ .tilde = tilde, .fig = tilde ? 3 : 4 };
    const char *name = tilde ? "f̃" : "f", *optname = tilde ? "λ̃*" : "λ*";
    for (int i = 0; i < nK; i++) {
        int rc = run_traj(o, tilde, Ks[i], &ts->tr[i]);
        if (rc != AD_OK) return ad_fail_wrap(rc, "fig%d: trajectory K=%d", ts->fig, Ks[i]);
        ts->n++;
    }
    optimum(o->T, o->gamma, tilde, ts->opt);
    double opt_grad;
    int rc = exact_norm_at(o, tilde, ts->opt, &opt_grad);
    if (rc != AD_OK) return ad_fail_wrap(rc, "optimum check");
    fprintf(stderr, "fig%d: optimum of %s: %s = (%.17g, %.17g); full RMD there: ‖dλ%s‖ = %.3g\n",
            ts->fig, name, optname, ts->opt[0], ts->opt[1], name, opt_grad);
    for (int i = 0; i < ts->n; i++) {
        const traj *tr = &ts->tr[i];
        const double *end = tr->lam[tr->n - 1];
        fprintf(stderr, "fig%d: K=%-3d η0 = %-9.4g λ_%d = (%.6g, %.6g)  ‖λ − %s‖ = %.3e  %s = %.6g\n",
                ts->fig, tr->K, tr->eta0, tr->n - 1, end[0], end[1], optname,
                hypot(end[0] - ts->opt[0], end[1] - ts->opt[1]), name, tr->loss[tr->n - 1]);
    }
    fprintf(stderr, "fig%d: %d trajectories of %d steps in %.2f s\n", ts->fig, ts->n, o->iters,
            ex_now() - t0);
    return 0;
}

/* figN.csv (K, τ, λ, loss, ‖λ_τ − opt‖), then figN.gp. */
static int traj_set_write(const toy_opts *o, ex_out *od, const traj_set *ts)
{
    char name[16];
    snprintf(name, sizeof name, "fig%d.csv", ts->fig);
    ex_file csv;
    int rc = ex_csv_open(&csv, od, name, "K,tau,lambda1,lambda2,loss,dist_to_opt");
    for (int i = 0; i < ts->n && rc == AD_OK; i++)
        for (int k = 0; k < ts->tr[i].n; k++) {
            const double *l = ts->tr[i].lam[k];
            fprintf(csv.f, "%d,%d,%.17g,%.17g,%.17g,%.17g\n", ts->tr[i].K, k, l[0], l[1],
                    ts->tr[i].loss[k], hypot(l[0] - ts->opt[0], l[1] - ts->opt[1]));
        }
    if (rc == AD_OK) rc = ex_file_commit(&csv);
    return rc == AD_OK ? traj_gp(od, o, ts) : rc;
}

static int run_figures(const toy_opts *o)
{
    double t0 = ex_now();
    ex_out *od = malloc(sizeof *od); /* kept off the stack (kit.h) */
    traj_set ts[2] = { 0 }; /* [0]: f (Fig. 4), [1]: f̃ (Fig. 3) */
    if (!od) return ad_fail(AD_ENOMEM, "out of memory");
    fprintf(stderr, "toy: T = %d, γ = %g, %d hyper-iterations from λ0 = (%g, %g), output in %s\n",
            o->T, o->gamma, o->iters, o->start[0], o->start[1], o->out);
    int rc = ex_out_open(od, o->out, true);
    if (rc == AD_OK) rc = figure1(o, od);
    if (rc == AD_OK) rc = traj_set_run(o, false, &ts[0]);
    if (rc == AD_OK) rc = traj_set_run(o, true, &ts[1]);
    /* Fig. 2 runs along the K = 1 trajectories (the first of each set). */
    if (rc == AD_OK) rc = figure2(o, od, &ts[0].tr[0], &ts[1].tr[0]);
    if (rc == AD_OK) rc = traj_set_write(o, od, &ts[1]);
    if (rc == AD_OK) rc = traj_set_write(o, od, &ts[0]);
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < ts[k].n; i++) traj_free(&ts[k].tr[i]);
    if (rc != EX_EUSAGE) {
        fprintf(stderr, "toy: done in %.1f s%s; files written:\n", ex_now() - t0,
                rc ? " (with errors)" : "");
        ex_out_list(od);
    }
    ex_out_close(od);
    free(od);
    return rc;
}

int main(int argc, char **argv)
{
    int st = ex_flags_parse(&cmd, argc, argv);
    if (st) return st < 0 ? 0 : st;
    return ex_exit(opts.query ? run_query(&opts) : opts.profile ? run_profile(&opts)
                                                                 : run_figures(&opts));
}
