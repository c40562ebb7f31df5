/* profile.c — how fast truncation errors fall, and which K is enough.
 *
 * The truncation profile itself (one reverse pass giving every h_{T−k}) is
 * in hypergrad.c beside K-RMD, whose forward pass it shares.  Here:
 *   - the contraction rate: Lanczos on H = ∇²_w g(ŵ) with Hessian-vector
 *     products, its extreme Ritz values α and L, and q of the optimizer's
 *     step map;
 *   - choosing K for a tolerance, from the measured profile and from
 *     Proposition 3.1's bound with the measured α. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "optim/hypergrad.h"

enum { MAX_W = 256, DEFAULT_ITERS = 30, DEFAULT_WINDOW = 100 };

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int null_status(void)
{
    int code = ad_error_code();
    return code == AD_OK ? AD_EARG : code;
}

/* ---- q: the contraction of one step ---------------------------------------- */

static double setting(const ad_value *theta, hg_transform tr, double num)
{
    if (!theta) return num;
    double x = (double)theta->data[0];
    switch (tr) {
    case HG_EXP: return exp(x);
    case HG_SIGMOID: return 1 / (1 + exp(-x));
    case HG_IDENTITY: break;
    }
    return x;
}

/* The spectral radius of heavy ball's step map on one eigenvector of H
 * (eigenvalue h): (w, v) ↦ (w − γ(μv + hw), μv + hw) has the matrix
 * [[1 − γh, −γμ], [h, μ]], trace b = 1 + μ − γh, determinant μ. */
static double heavy_ball_radius(double gamma, double mu, double h)
{
    double b = 1 + mu - gamma * h, disc = b * b - 4 * mu;
    if (disc < 0) return sqrt(mu); /* a complex pair, |z|² = μ */
    return (fabs(b) + sqrt(disc)) / 2;
}

double hg_contraction(const hg_problem *p, double alpha, double L)
{
    if (!p) {
        ad_fail(AD_EARG, "contraction: the problem is NULL");
        return NAN;
    }
    const hg_inner_opt *o = &p->opt;
    double gamma = setting(o->step_hyper, o->step_transform, o->step);
    switch (o->kind) {
    case HG_GD: /* A = I − γH: its norm is the largest |1 − γh| over the spectrum */
        return fmax(fabs(1 - gamma * alpha), fabs(1 - gamma * L));
    case HG_MOMENTUM: { /* the radius grows with |b|, which is largest at an end */
        double mu = setting(o->momentum_hyper, o->momentum_transform, o->momentum);
        return fmax(heavy_ball_radius(gamma, mu, alpha), heavy_ball_radius(gamma, mu, L));
    }
    default:
        return NAN;
    }
}

/* ---- Hessian-vector products at ŵ ------------------------------------------ */

/* ∇w g(ŵ, λ, T) recorded on a tape of its own, so that H x is the vjp of
 * it seeded with x. */
typedef struct hess {
    const hg_problem *p;
    ad_tape *tp;
    ad_value *w[MAX_W], *gw[MAX_W];
    ad_value *x[MAX_W]; /* the direction, caller-owned, shaped like w */
    size_t dim;
} hess;

static void hess_free(hess *h)
{
    for (int i = 0; h->p && i < h->p->n_w; i++) ad_value_free(h->x[i]);
    ad_tape_free(h->tp);
}

static int hess_setup(hess *h, const hg_problem *p)
{
    *h = (hess){ .p = p };
    if (p->n_w > MAX_W) return ad_fail(AD_EARG, "at most %d parameter tensors", MAX_W);
    ad_value *w_hat[MAX_W] = { 0 };
    int rc = hg_inner_solve(p, w_hat, NULL);
    if (rc == AD_OK && !(h->tp = ad_tape_new(AD_HORIZON_ALL))) rc = null_status();
    for (int i = 0; i < p->n_w && rc == AD_OK; i++) {
        if (!(h->w[i] = ad_leaf(h->tp, w_hat[i])) ||
            !(h->x[i] = ad_tensor_new(w_hat[i]->rank, w_hat[i]->shape)))
            rc = null_status();
        else h->dim += w_hat[i]->size;
    }
    for (int i = 0; i < p->n_w; i++) ad_value_free(w_hat[i]);
    if (rc != AD_OK) return rc;
    ad_error_clear();
    ad_value *g = p->inner(h->tp, h->w, p->hyper, p->T, p->ctx);
    if (!g)
        return ad_error()[0] ? ad_fail_wrap(null_status(), "inner (at ŵ)")
                             : ad_fail(AD_EARG, "inner (at ŵ): returned NULL without a message");
    /* Refused with the reason before use: a value whose data are gone. */
    if (ad_value_check("inner (at ŵ): the loss it returned", g) != AD_OK) return AD_EARG;
    if (g->size != 1) return ad_fail(AD_ESHAPE, "inner (at ŵ): the inner loss must be a scalar");
    return ad_grad(h->tp, g, p->n_w, h->w, h->gw, true);
}

/* y = H x, both dim doubles (w's tensors one after another). */
static int hess_apply(hess *h, const double *x, double *y)
{
    int n = h->p->n_w;
    size_t at = 0;
    for (int i = 0; i < n; i++)
        for (size_t j = 0; j < h->x[i]->size; j++) h->x[i]->data[j] = (ad_real)x[at++];
    ad_value *hx[MAX_W];
    uint64_t mark = ad_tape_mark(h->tp); /* each product is scratch */
    int rc = ad_vjp_many(h->tp, n, h->gw, h->x, n, h->w, hx, false);
    at = 0;
    for (int i = 0; i < n && rc == AD_OK; i++)
        for (size_t j = 0; j < hx[i]->size; j++) y[at++] = (double)hx[i]->data[j];
    ad_tape_rewind(h->tp, mark);
    return rc;
}

/* ---- Lanczos ---------------------------------------------------------------- */

static double dot(size_t n, const double *a, const double *b)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* Eigenvalues d and eigenvectors (the columns of V, row-major m × m) of the
 * symmetric m × m matrix A, which is destroyed: cyclic Jacobi rotations,
 * each zeroing one off-diagonal pair, until the off-diagonal part is
 * negligible.  m is Lanczos's step count (tens), so O(m³) per sweep is
 * nothing beside one Hessian-vector product. */
static void jacobi_eigen(int m, double *A, double *d, double *V)
{
    for (int i = 0; i < m * m; i++) V[i] = i % (m + 1) == 0;
    for (int sweep = 0; sweep < 100; sweep++) {
        double off = 0, diag = 0;
        for (int i = 0; i < m; i++)
            for (int j = 0; j < m; j++) {
                if (i == j) diag += A[i * m + j] * A[i * m + j];
                else off += A[i * m + j] * A[i * m + j];
            }
        if (off <= DBL_EPSILON * DBL_EPSILON * diag) break;
        for (int p = 0; p < m; p++)
            for (int q = p + 1; q < m; q++) {
                double apq = A[p * m + q];
                if (apq == 0) continue;
                /* Jᵀ A J with J the rotation by (c, s) in the (p, q) plane,
                 * t = s/c the smaller root of t² + 2θt − 1 = 0. */
                double theta = (A[q * m + q] - A[p * m + p]) / (2 * apq);
                double t = (theta >= 0 ? 1 : -1) / (fabs(theta) + sqrt(theta * theta + 1));
                double c = 1 / sqrt(t * t + 1), s = t * c;
                for (int k = 0; k < m; k++) { /* columns p and q */
                    double akp = A[k * m + p], akq = A[k * m + q];
                    A[k * m + p] = c * akp - s * akq;
                    A[k * m + q] = s * akp + c * akq;
                }
                for (int k = 0; k < m; k++) { /* rows p and q */
                    double apk = A[p * m + k], aqk = A[q * m + k];
                    A[p * m + k] = c * apk - s * aqk;
                    A[q * m + k] = s * apk + c * aqk;
                }
                for (int k = 0; k < m; k++) {
                    double vkp = V[k * m + p], vkq = V[k * m + q];
                    V[k * m + p] = c * vkp - s * vkq;
                    V[k * m + q] = s * vkp + c * vkq;
                }
            }
    }
    for (int i = 0; i < m; i++) d[i] = A[i * m + i];
}

/* m steps of Lanczos from a seeded random vector, with full
 * reorthogonalization (Q keeps every vector): a[j], b[j] of the
 * tridiagonal T.  Returns the steps taken in *steps (fewer when an
 * invariant subspace is found: b ≈ 0, or every dimension is used). */
static int lanczos(hess *h, int m, double *a, double *b, int *steps)
{
    size_t n = h->dim;
    double *Q = malloc(sizeof(double) * n * (size_t)(m + 1)), *y = malloc(sizeof(double) * n);
    if (!Q || !y) {
        free(Q);
        free(y);
        return ad_fail(AD_ENOMEM, "lanczos: out of memory for %d vectors of %zu", m + 1, n);
    }
    ad_rng rng;
    ad_rng_seed(&rng, 1);
    for (size_t i = 0; i < n; i++) Q[i] = ad_rng_normal(&rng);
    double q0 = sqrt(dot(n, Q, Q));
    for (size_t i = 0; i < n; i++) Q[i] /= q0;
    int rc = AD_OK;
    *steps = 0;
    for (int j = 0; j < m && rc == AD_OK; j++) {
        double *q = Q + (size_t)j * n;
        if ((rc = hess_apply(h, q, y)) != AD_OK) break;
        a[j] = dot(n, q, y);
        for (int pass = 0; pass < 2; pass++) /* twice is enough (Parlett) */
            for (int i = 0; i <= j; i++) {
                double c = dot(n, Q + (size_t)i * n, y);
                for (size_t k = 0; k < n; k++) y[k] -= c * Q[(size_t)i * n + k];
            }
        b[j] = sqrt(dot(n, y, y));
        *steps = j + 1;
        if (!isfinite(a[j]) || !isfinite(b[j])) {
            rc = ad_fail(AD_ENONFINITE, "lanczos: a Hessian-vector product is not finite");
            break;
        }
        if ((size_t)(j + 1) >= n || b[j] <= 1e-12 * fabs(a[j])) break;
        for (size_t k = 0; k < n; k++) Q[(size_t)(j + 1) * n + k] = y[k] / b[j];
    }
    free(Q);
    free(y);
    return rc;
}

static int curvature(const hg_problem *p, int iters, hg_curvature *out)
{
    int rc = hg_problem_check(p);
    if (rc != AD_OK) return rc;
    double t0 = now();
    if (iters <= 0) iters = DEFAULT_ITERS;
    hess h;
    rc = hess_setup(&h, p);
    int m = iters, steps = 0;
    if (rc == AD_OK && (size_t)m > h.dim) m = (int)h.dim;
    double *a = calloc((size_t)m + 1, sizeof *a), *b = calloc((size_t)m + 1, sizeof *b);
    size_t mm = (size_t)m * (size_t)m + 1;
    double *T = calloc(mm, sizeof *T), *V = calloc(mm, sizeof *V);
    double *d = calloc((size_t)m + 1, sizeof *d);
    if (rc == AD_OK && (!a || !b || !T || !V || !d)) rc = ad_fail(AD_ENOMEM, "out of memory");
    if (rc == AD_OK) rc = lanczos(&h, m, a, b, &steps);
    if (rc == AD_OK) {
        for (int j = 0; j < steps; j++) {
            T[j * steps + j] = a[j];
            if (j + 1 < steps) T[j * steps + j + 1] = T[(j + 1) * steps + j] = b[j];
        }
        jacobi_eigen(steps, T, d, V);
        int lo = 0, hi = 0;
        for (int i = 1; i < steps; i++) {
            if (d[i] < d[lo]) lo = i;
            if (d[i] > d[hi]) hi = i;
        }
        /* ‖H y − θ y‖ = b_m |last entry of θ's eigenvector of T| */
        double b_last = b[steps - 1];
        *out = (hg_curvature){
            .alpha = d[lo], .L = d[hi], .iters = steps, .dim = (int)h.dim, .kind = p->opt.kind,
            .alpha_resid = b_last * fabs(V[(steps - 1) * steps + lo]),
            .L_resid = b_last * fabs(V[(steps - 1) * steps + hi]),
            .gamma = setting(p->opt.step_hyper, p->opt.step_transform, p->opt.step),
            .momentum = p->opt.kind != HG_MOMENTUM ? 0
                        : setting(p->opt.momentum_hyper, p->opt.momentum_transform, p->opt.momentum),
            .q = hg_contraction(p, d[lo], d[hi]),
            .seconds = now() - t0,
            .peak_tape_bytes = h.tp ? ad_tape_peak_bytes(h.tp) : 0,
        };
    }
    free(a);
    free(b);
    free(T);
    free(V);
    free(d);
    hess_free(&h);
    return rc;
}

int hg_curvature_estimate(const hg_problem *p, int iters, hg_curvature *out)
{
    if (!out) return ad_fail(AD_EARG, "curvature: the result is NULL");
    int rc = curvature(p, iters, out);
    return rc == AD_OK ? AD_OK : ad_fail_wrap(rc, "curvature");
}

/* ---- choosing K ---------------------------------------------------------------- */

/* c_k ≈ C r^k fitted (least squares on log c_k) to the second half of the
 * window; NaN rate when fewer than 3 of those points are positive, rate 0
 * when all of them are 0 (the shares have stopped). */
static void geometric_fit(const hg_profile *pr, double *rate, double *c_at_W)
{
    int W = pr->K, first = (W + 1) / 2, n = 0, zeros = 0;
    double sk = 0, sy = 0, skk = 0, sky = 0;
    for (int k = first; k <= W; k++) {
        double c = pr->contrib_norm[k - 1];
        if (c > 0) {
            double y = log(c);
            n++, sk += k, sy += y, skk += (double)k * k, sky += k * y;
        } else zeros++;
    }
    *rate = NAN;
    *c_at_W = NAN;
    if (n == 0 && zeros > 0) {
        *rate = 0;
        *c_at_W = 0;
    } else if (n >= 3) {
        double slope = (n * sky - sk * sy) / (n * skk - sk * sk), icpt = (sy - slope * sk) / n;
        *rate = exp(slope);
        *c_at_W = exp(icpt + slope * W);
    }
}

/* Σ_{k=K+1..T} ĉ_W r^{k−W} for K ≥ W: the fitted shares beyond depth K. */
static double fitted_tail(double c_W, double r, int W, int K, int T)
{
    if (K >= T || c_W == 0) return 0;
    if (r == 1) return c_W * (T - K);
    return c_W * (pow(r, K - W + 1) - pow(r, T - W + 1)) / (1 - r);
}

static bool every_row_kept(const hg_profile *pr)
{
    for (int i = 0; i < pr->K * pr->n_hyper; i++)
        if (!pr->h || !pr->h[i]) return false;
    return true;
}

/* ‖h_{T−K} − h_{T−W}‖ over all of λ, from the kept rows. */
static double row_distance(const hg_profile *pr, int K, int W)
{
    double s = 0;
    for (int j = 0; j < pr->n_hyper; j++) {
        const ad_value *a = pr->h[(size_t)(K - 1) * pr->n_hyper + j];
        const ad_value *b = pr->h[(size_t)(W - 1) * pr->n_hyper + j];
        for (size_t i = 0; i < a->size; i++) {
            double d = (double)a->data[i] - b->data[i];
            s += d * d;
        }
    }
    return sqrt(s);
}

double hg_profile_rel_error(const hg_profile *pr, int k)
{
    if (!pr) {
        ad_fail(AD_EARG, "profile_rel_error: the profile is NULL");
        return NAN;
    }
    if (!pr->h || !pr->h_norm || k < 1 || k > pr->K) return NAN;
    for (int j = 0; j < pr->n_hyper; j++)
        if (!pr->h[(size_t)(k - 1) * pr->n_hyper + j]) return NAN;
    double H = pr->h_norm[pr->K - 1];
    return H > 0 ? row_distance(pr, k, pr->K) / H : NAN;
}

/* The profile's estimate of the absolute error at each K: the measured
 * shares beyond K inside the window, then the fitted tail.  0 when it
 * gives none (a window short of T without a fit). */
static int choose_by_profile(const hg_profile *pr, double q, double tol, double H, hg_choice *c,
                             double *err_at)
{
    int W = pr->K, T = pr->T;
    double r, c_W;
    geometric_fit(pr, &r, &c_W);
    c->rate = r;
    /* Far enough back the shares fall at the slowest rate the step map
     * allows, q: a window that saw only faster modes would underestimate
     * the tail, so it decays at the slower of the two. */
    if (isfinite(r) && q >= 0 && q < 1 && q > r) r = q;
    if (!isfinite(r) && q >= 0 && q < 1) { /* too few points to fit: q from the last share */
        r = q;
        c_W = pr->contrib_norm[W - 1];
    }
    c->tail_rate = r;
    bool tail_known = W == T || isfinite(r);
    if (!tail_known) return 0;
    double beyond = W == T ? 0 : fitted_tail(c_W, r, W, W, T);
    /* Inside the window, from the deepest K down: err(K) = ‖h_{T−K} − h_{T−W}‖
     * when every row was kept, else the upper estimate Σ_{k>K} c_k; plus
     * the tail.  The smallest K whose error and every deeper one's are
     * below tol. */
    bool rows = every_row_kept(pr);
    c->exact_in_window = rows;
    int best = 0;
    double sum = W == T ? pr->init_norm : 0;
    for (int K = W; K >= 1; K--) {
        double in = rows ? row_distance(pr, K, W) : sum;
        double err = K == T ? 0 : (in + beyond) / H;
        err_at[K - 1] = err;
        if (err < tol) best = K;
        else break;
        sum += pr->contrib_norm[K - 1];
    }
    if (best > 0) return best;
    /* Beyond the window: the fitted tail alone. */
    for (int K = W + 1; K <= T; K++) {
        double err = fitted_tail(c_W, r, W, K, T) / H;
        if (err < tol) {
            c->est_error = err;
            return K;
        }
    }
    return T;
}

/* Proposition 3.1 with the measured α: the smallest K with
 * q^K/(1 − q) ‖∇ŵf‖ M_B < tol·H; 0 when it does not apply. */
static int choose_by_bound(const hg_profile *pr, const hg_curvature *cv, double tol, double H,
                           double m_b, hg_choice *c)
{
    if (!cv || cv->kind != HG_GD || !(cv->alpha > 0) || !(cv->q >= 0 && cv->q < 1)) return 0;
    if (!(m_b > 0)) /* the largest gain B_tᵀ showed on the adjoints it met */
        for (int k = 1; k <= pr->K; k++)
            if (pr->adjoint_norm[k - 1] > 0)
                m_b = fmax(m_b, pr->contrib_norm[k - 1] / pr->adjoint_norm[k - 1]);
    c->m_b = m_b;
    double scale = pr->adjoint_norm[0] * m_b / (1 - cv->q); /* the bound at K = 0 */
    if (!(scale > 0) || cv->q == 0) return 1;
    double K = ceil(log(tol * H / scale) / log(cv->q));
    if (!(K >= 1)) return 1;
    return K > pr->T ? pr->T : (int)K;
}

int hg_choose_k_from(const hg_profile *pr, const hg_curvature *cv, double tol, double m_b,
                     hg_choice *out)
{
    if (!out) return ad_fail(AD_EARG, "choose_k: the result is NULL");
    if (!pr || pr->K < 1 || !pr->contrib_norm || !pr->adjoint_norm || !pr->h_norm)
        return ad_fail(AD_EARG, "choose_k: the profile is empty");
    if (!(tol > 0 && tol < 1))
        return ad_fail(AD_EARG, "choose_k: tol must be in (0, 1), got %g", tol);
    *out = (hg_choice){ .window = pr->K, .rate = NAN, .tail_rate = NAN };
    double H = pr->h_norm[pr->K - 1]; /* ‖h_{T−W}‖: the best estimate of ‖dλf‖ at hand */
    if (!(H > 0)) H = DBL_MIN;
    double *err_at = calloc((size_t)pr->K, sizeof *err_at);
    if (!err_at) return ad_fail(AD_ENOMEM, "choose_k: out of memory");
    out->est_error = NAN;
    out->K_profile = choose_by_profile(pr, cv ? cv->q : NAN, tol, H, out, err_at);
    if (out->K_profile >= 1 && out->K_profile <= pr->K) out->est_error = err_at[out->K_profile - 1];
    out->K_bound = choose_by_bound(pr, cv, tol, H, m_b, out);
    free(err_at);
    int kp = out->K_profile, kb = out->K_bound;
    if (kp > 0 && (kb == 0 || kp < kb)) out->K = kp, out->decided_by = "profile";
    else if (kb > 0 && (kp == 0 || kb < kp)) out->K = kb, out->decided_by = "bound";
    else if (kp > 0) out->K = kp, out->decided_by = "profile and bound";
    else out->K = pr->T, out->decided_by = "T";
    return AD_OK;
}

int hg_choose_k(const hg_problem *p, double tol, const hg_choose_opts *opts, hg_choice *out,
                hg_curvature *curv)
{
    int rc = hg_problem_check(p);
    if (rc != AD_OK) return ad_fail_wrap(rc, "choose_k");
    if (!out) return ad_fail(AD_EARG, "choose_k: the result is NULL");
    if (!(tol > 0 && tol < 1))
        return ad_fail(AD_EARG, "choose_k: tol must be in (0, 1), got %g", tol);
    int W = opts && opts->window > 0 ? opts->window : DEFAULT_WINDOW;
    if (W > p->T) W = p->T;
    hg_profile pr;
    hg_curvature cv;
    bool norms = opts && opts->norms_only;
    rc = hg_truncation_profile(p, W, &(hg_profile_opts){ .keep_all = !norms }, &pr);
    if (rc == AD_OK) {
        rc = hg_curvature_estimate(p, opts ? opts->lanczos_iters : 0, &cv);
        if (rc == AD_OK) rc = hg_choose_k_from(&pr, &cv, tol, opts ? opts->m_b : 0, out);
        if (rc == AD_OK && curv) *curv = cv;
        hg_profile_free(&pr);
    }
    return rc == AD_OK ? AD_OK : ad_fail_wrap(rc, "choose_k");
}
