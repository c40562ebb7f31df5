/*
 * bench_ops.c — what each op costs at the shapes the experiments use, and
 * what one one-shot hyper-iteration costs end to end.
 *
 *   bench-ops [--csv] [--repeats N] [--match TEXT]
 *   bench-ops --oneshot [--K 1,10,50] [--repeats N] [--channels 64] [--T 50]
 *             [--meta-batch 4] [--threads N] [--csv] [--dump DIR]
 *   bench-ops --tape
 *
 * Op mode.  Every case is one op (or the hypercleaning inner loss, a small
 * composition) on caller-owned inputs that want gradients, and four
 * timings, each the median over the repeats:
 *   fwd      the op on a recording tape (the node is kept);
 *   bwd      a plain vector-Jacobian product with a random seed (a detached
 *            inner step's ∇w g, and the outer sweep through forward nodes);
 *   bwd_rec  the same product recorded (create_graph: a recorded inner step);
 *   hvp      a plain product back through that recorded gradient with
 *            random directions (what K-RMD's outer sweep does through a
 *            recorded step: a Hessian-vector product).
 * tape_fwd and tape_rec are the bytes the tape holds after the forward and
 * after forward + recorded backward.  Each repeat starts from an empty
 * tape, so allocation is counted as it is in the programs.  Shapes:
 *   one-shot (64 channels): conv 3×3 pad 1 at every block's input, support
 *   (5 images) and query (75); 2×2 max-pool, batch-norm (training) and
 *   relu at the conv outputs and pooled maps; the bias broadcast of a conv;
 *   the classifier and the cross-entropy of 5 classes;
 *   hypercleaning: X [5000,785] · Wᵀ [785,10], the weighted cross-entropy
 *   of [5000,10], σ(λ) of [5000], ‖W‖², and the inner loss g(W, λ) whole.
 * scripts/bench_torch.py runs the same cases in PyTorch and joins the two.
 *
 * One-shot mode.  The hyper-iteration of experiments/oneshot.c through the
 * same code (oneshot_problem.c: the split formulation, Adam with step
 * 1e-2, ρ0 = 0.1, γ0 = 0.03) on random images of Omniglot's shape: per
 * task the representation recorded, then os_task_hypergrad at K; the
 * meta-batch's mean hypergradient then one Adam update.  Per K: the median
 * seconds of a hyper-iteration (wall clock, and the process's CPU time,
 * which waiting for a core on a shared machine does not inflate) and the
 * largest tape peak of a task.  Two ways to use the cores: without
 * --threads the tasks run one after the other and the kernels use
 * OPENBLAS_NUM_THREADS threads (intra-op, as PyTorch runs); with --threads
 * N the meta-batch's tasks run on N workers exactly as experiments/oneshot.c
 * runs them (ex_par_run, an os_task each, OpenBLAS and oneDNN on one
 * thread, the hypergradients summed in task order by ex_par_fold), so the
 * numbers are the same for every N.  --dump DIR writes λ0, the first task
 * and its hypergradient at each K (raw float64 files and a manifest) so
 * that bench_torch.py --check DIR can confirm it computes the same thing,
 * and per K the first hyper-iteration's mean hypergradient (mean_K*) and λ
 * after the last (lam_K*): the same bytes at any --threads (tests/bench-
 * ops.sh checks it).
 *
 * Tape mode.  One recorded inner step of hypercleaning and one of one-shot,
 * the programs' own problems (hyperclean_problem.c, oneshot_problem.c)
 * stepped by hg_inner_step as the estimators step them, by op: the bytes of
 * data some backward rule reads later and those none reads (each op's own
 * declaration, ad_op.reads), and the bytes the step holds once closed on a
 * tape that keeps everything and on a lean one (ad_tape_set_lean), which
 * gives the unread back.
 *
 * Threads: OpenBLAS's (OPENBLAS_NUM_THREADS), or with --oneshot --threads
 * one per worker; the header line says how many.  Exit status: 0, 1 on a failure, 2 on bad usage.
 */
#define _XOPEN_SOURCE 700

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ad/node.h" /* --tape reads the ops' names and declarations */
#include "experiments/kit/kit.h"
#include "experiments/hyperclean_problem.h"
#include "experiments/oneshot_problem.h"
#include "models/models.h"
#include "ops/ops.h"
#include "optim/outer.h"

#define PROG "bench-ops"
enum { MAX_IN = 3, MAX_REPEATS = 1000, MAX_K = 8 };

typedef struct opts {
    bool csv, oneshot, tape;
    int repeats; /* 0: adaptive (op mode) or 5 (one-shot mode) */
    const char *match, *dump;
    int channels, T, meta_batch, n_k;
    int threads; /* --oneshot: task workers (0: not given, intra-op) */
    int Ks[MAX_K];
} opts;

/* ---- the op cases --------------------------------------------------------- */

typedef enum {
    C_CONV, C_POOL, C_BN, C_RELU, C_BIAS, C_MUL, C_LINEAR, C_CE,
    C_HC_MATMUL, C_HC_CE, C_HC_SIGMOID, C_HC_SQNORM, C_HC_INNER
} case_kind;

typedef struct op_case {
    const char *op;
    case_kind kind;
    int n, c, h, w; /* the main input's shape (rank from kind) */
} op_case;

/* The one-shot network (64 channels): block 1 on [N,1,28,28], block 2 on
 * [N,64,14,14], block 3 on [N,64,7,7], block 4 on [N,64,3,3]; support N = 5,
 * query N = 75.  A block is conv -> pool -> batch-norm -> relu. */
static const op_case cases[] = {
    { "conv2d", C_CONV, 5, 1, 28, 28 },      { "conv2d", C_CONV, 75, 1, 28, 28 },
    { "conv2d", C_CONV, 5, 64, 14, 14 },     { "conv2d", C_CONV, 75, 64, 14, 14 },
    { "conv2d", C_CONV, 5, 64, 7, 7 },       { "conv2d", C_CONV, 75, 64, 7, 7 },
    { "conv2d", C_CONV, 5, 64, 3, 3 },       { "conv2d", C_CONV, 75, 64, 3, 3 },
    { "maxpool2d", C_POOL, 5, 64, 28, 28 },  { "maxpool2d", C_POOL, 75, 64, 28, 28 },
    { "maxpool2d", C_POOL, 5, 64, 14, 14 },  { "maxpool2d", C_POOL, 75, 64, 14, 14 },
    { "maxpool2d", C_POOL, 5, 64, 7, 7 },    { "maxpool2d", C_POOL, 75, 64, 7, 7 },
    { "maxpool2d", C_POOL, 5, 64, 3, 3 },    { "maxpool2d", C_POOL, 75, 64, 3, 3 },
    { "batchnorm", C_BN, 5, 64, 14, 14 },    { "batchnorm", C_BN, 75, 64, 14, 14 },
    { "batchnorm", C_BN, 5, 64, 7, 7 },      { "batchnorm", C_BN, 75, 64, 7, 7 },
    { "batchnorm", C_BN, 5, 64, 3, 3 },      { "batchnorm", C_BN, 75, 64, 3, 3 },
    { "batchnorm", C_BN, 5, 64, 1, 1 },      { "batchnorm", C_BN, 75, 64, 1, 1 },
    { "relu", C_RELU, 5, 64, 14, 14 },       { "relu", C_RELU, 75, 64, 14, 14 },
    { "relu", C_RELU, 5, 64, 3, 3 },         { "relu", C_RELU, 75, 64, 7, 7 },
    { "add_bias", C_BIAS, 5, 64, 28, 28 },   { "add_bias", C_BIAS, 75, 64, 7, 7 },
    { "mul", C_MUL, 5, 64, 7, 7 },           { "mul", C_MUL, 75, 64, 7, 7 },
    { "linear", C_LINEAR, 5, 64, 0, 0 },     { "linear", C_LINEAR, 75, 64, 0, 0 },
    { "cross_entropy", C_CE, 5, 5, 0, 0 },   { "cross_entropy", C_CE, 75, 5, 0, 0 },
    { "hc_matmul", C_HC_MATMUL, 5000, 785, 0, 0 },
    { "hc_cross_entropy", C_HC_CE, 5000, 10, 0, 0 },
    { "hc_sigmoid", C_HC_SIGMOID, 5000, 0, 0, 0 },
    { "hc_sqnorm", C_HC_SQNORM, 785, 10, 0, 0 },
    { "hc_inner", C_HC_INNER, 5000, 785, 0, 0 },
};
enum { N_CASES = sizeof cases / sizeof cases[0] };

static const int N_OUT = 64, N_CLASSES = 5, HC_CLASSES = 10;
static const double HC_REG = 1e-3;

/* "5x64x14x14": the main input's shape, as the PyTorch script names it. */
static void case_shape(const op_case *c, char *buf, size_t len)
{
    switch (c->kind) {
    case C_LINEAR: case C_CE: case C_HC_MATMUL: case C_HC_CE: case C_HC_SQNORM: case C_HC_INNER:
        snprintf(buf, len, "%dx%d", c->n, c->c);
        break;
    case C_HC_SIGMOID: snprintf(buf, len, "%d", c->n); break;
    default: snprintf(buf, len, "%dx%dx%dx%d", c->n, c->c, c->h, c->w);
    }
}

/* The case's inputs (caller-owned): in[0..*n_in) want gradients, `fixed`
 * holds what does not (labels, X); NULL entries are absent.  hc_inner runs
 * hyperclean_problem.c's own inner loss, through hc's problem. */
typedef struct case_inputs {
    ad_value *in[MAX_IN];
    int n_in;
    ad_value *fixed[2];
    hc_problem hc;
} case_inputs;

static ad_value *param_rand(ad_rng *rng, int rank, const int *shape, double lo, double hi)
{
    ad_value *v = ad_tensor_rand(rng, rank, shape, lo, hi);
    if (v) v->requires_grad = true;
    return v;
}

static ad_value *labels_rand(ad_rng *rng, int n, int classes)
{
    ad_value *y = ad_tensor_new(1, &n);
    if (y)
        for (int i = 0; i < n; i++) y->data[i] = (ad_real)ad_rng_below(rng, (uint64_t)classes);
    return y;
}

static void inputs_free(case_inputs *ci)
{
    for (int i = 0; i < MAX_IN; i++) ad_value_free(ci->in[i]);
    for (int i = 0; i < 2; i++) ad_value_free(ci->fixed[i]);
    hc_problem_free(&ci->hc);
    memset(ci, 0, sizeof *ci);
}

static int inputs_make(const op_case *c, ad_rng *rng, case_inputs *ci)
{
    memset(ci, 0, sizeof *ci);
    int x4[4] = { c->n, c->c, c->h, c->w }, b = 1;
    switch (c->kind) {
    case C_CONV: {
        double bound = sqrt(6.0 / (c->c * 9)); /* He, as the model starts */
        ci->in[0] = param_rand(rng, 4, x4, -1, 1);
        ci->in[1] = param_rand(rng, 4, (int[]){ N_OUT, c->c, 3, 3 }, -bound, bound);
        ci->in[2] = param_rand(rng, 1, &N_OUT, -0.1, 0.1);
        ci->n_in = 3;
        break;
    }
    case C_POOL: case C_RELU:
        ci->in[0] = param_rand(rng, 4, x4, -1, 1);
        ci->n_in = 1;
        break;
    case C_BN:
        ci->in[0] = param_rand(rng, 4, x4, -1, 1);
        ci->in[1] = param_rand(rng, 1, &c->c, 0.5, 1.5);
        ci->in[2] = param_rand(rng, 1, &c->c, -0.5, 0.5);
        ci->n_in = 3;
        break;
    case C_BIAS:
        ci->in[0] = param_rand(rng, 4, x4, -1, 1);
        ci->in[1] = param_rand(rng, 4, (int[]){ 1, c->c, 1, 1 }, -1, 1);
        ci->n_in = 2;
        break;
    case C_MUL:
        ci->in[0] = param_rand(rng, 4, x4, -1, 1);
        ci->in[1] = param_rand(rng, 4, x4, -1, 1);
        ci->n_in = 2;
        break;
    case C_LINEAR:
        ci->in[0] = param_rand(rng, 2, (int[]){ c->n, c->c }, -1, 1);
        ci->in[1] = param_rand(rng, 2, (int[]){ N_CLASSES, c->c }, -0.3, 0.3);
        ci->in[2] = param_rand(rng, 1, &N_CLASSES, -0.1, 0.1);
        ci->n_in = 3;
        break;
    case C_CE:
        ci->in[0] = param_rand(rng, 2, (int[]){ c->n, c->c }, -2, 2);
        ci->fixed[0] = labels_rand(rng, c->n, c->c);
        ci->n_in = 1;
        break;
    case C_HC_MATMUL:
        ci->fixed[0] = ad_tensor_rand(rng, 2, (int[]){ c->n, c->c }, 0, 1);
        ci->in[0] = param_rand(rng, 2, (int[]){ c->c, HC_CLASSES }, -0.01, 0.01);
        ci->n_in = 1;
        break;
    case C_HC_CE:
        ci->in[0] = param_rand(rng, 2, (int[]){ c->n, c->c }, -2, 2);
        ci->in[1] = param_rand(rng, 1, &c->n, -1, 1);
        ci->fixed[0] = labels_rand(rng, c->n, c->c);
        ci->n_in = 2;
        break;
    case C_HC_SIGMOID:
        ci->in[0] = param_rand(rng, 1, &c->n, -3, 3);
        ci->n_in = 1;
        break;
    case C_HC_SQNORM:
        ci->in[0] = param_rand(rng, 2, (int[]){ c->n, c->c }, -1, 1);
        ci->n_in = 1;
        break;
    case C_HC_INNER:
        ci->fixed[0] = ad_tensor_rand(rng, 2, (int[]){ c->n, c->c }, 0, 1);
        ci->fixed[1] = labels_rand(rng, c->n, HC_CLASSES);
        ci->in[0] = param_rand(rng, 2, (int[]){ c->c, HC_CLASSES }, -0.01, 0.01);
        ci->in[1] = param_rand(rng, 1, &c->n, -1, 1);
        ci->n_in = 2;
        break;
    }
    for (int i = 0; i < ci->n_in; i++) b = b && ci->in[i];
    if (c->kind == C_CE || c->kind == C_HC_MATMUL || c->kind == C_HC_CE) b = b && ci->fixed[0];
    if (c->kind == C_HC_INNER) b = b && ci->fixed[0] && ci->fixed[1];
    if (!b) return ad_fail(AD_ENOMEM, "out of memory for the inputs");
    if (c->kind != C_HC_INNER) return AD_OK;
    return hc_problem_init(&ci->hc, ci->fixed[0], ci->fixed[1], ci->fixed[0], ci->fixed[1],
                           HC_CLASSES, 1, 0.25, HC_REG);
}

/* The op of the case on its inputs. */
static ad_value *case_run(ad_tape *tp, const op_case *c, const case_inputs *ci)
{
    ad_value *const *x = ci->in;
    switch (c->kind) {
    case C_CONV: return ad_conv2d(tp, x[0], x[1], x[2], 1, 1);
    case C_POOL: return ad_maxpool2d(tp, x[0], 2, 2);
    case C_BN: return ad_batchnorm(tp, x[0], x[1], x[2], MDL_BN_EPS);
    case C_RELU: return ad_relu(tp, x[0]);
    case C_BIAS: return ad_add(tp, x[0], x[1]);
    case C_MUL: return ad_mul(tp, x[0], x[1]);
    case C_LINEAR: return ad_linear(tp, x[0], x[1], x[2]);
    case C_CE: return ad_cross_entropy(tp, x[0], ci->fixed[0], NULL, AD_REDUCE_MEAN);
    case C_HC_MATMUL: return ad_matmul(tp, ci->fixed[0], x[0], false, false);
    case C_HC_CE:
        return ad_cross_entropy(tp, x[0], ci->fixed[0], ad_sigmoid(tp, x[1]), AD_REDUCE_MEAN);
    case C_HC_SIGMOID: return ad_sigmoid(tp, x[0]);
    case C_HC_SQNORM: return ad_sqnorm(tp, x[0]);
    case C_HC_INNER: /* g(W, λ) at W = x[0], λ = x[1] */
        return ci->hc.problem.inner(tp, x, x + 1, 1, ci->hc.problem.ctx);
    }
    return NULL;
}

/* ---- timing one case ------------------------------------------------------ */

enum { T_FWD, T_BWD, T_REC, T_HVP, N_TIMES };

typedef struct case_result {
    double t[N_TIMES]; /* median seconds */
    size_t tape_fwd, tape_rec;
    int repeats;
} case_result;

/* One repeat: fills t[] with seconds and the tape byte counts. */
static int one_repeat(ad_tape *tp, const op_case *c, const case_inputs *ci, ad_value *gy,
                      ad_value *const *v, double t[N_TIMES], size_t *tape_fwd, size_t *tape_rec)
{
    ad_value *gx[MAX_IN], *hv[MAX_IN];
    ad_tape_reset(tp);
    double t0 = ex_now();
    ad_value *y = case_run(tp, c, ci);
    double t1 = ex_now();
    if (!y) return ad_error_code();
    *tape_fwd = ad_tape_bytes(tp);
    int rc = ad_vjp(tp, y, gy, ci->n_in, ci->in, gx, false);
    double t2 = ex_now();
    ad_tape_reset(tp);
    if (rc == AD_OK && !(y = case_run(tp, c, ci))) rc = ad_error_code();
    double t3 = ex_now();
    if (rc == AD_OK) rc = ad_vjp(tp, y, gy, ci->n_in, ci->in, gx, true);
    double t4 = ex_now();
    *tape_rec = ad_tape_bytes(tp);
    if (rc == AD_OK) rc = ad_vjp_many(tp, ci->n_in, gx, v, ci->n_in, ci->in, hv, false);
    double t5 = ex_now();
    ad_tape_reset(tp);
    t[T_FWD] = t1 - t0;
    t[T_BWD] = t2 - t1;
    t[T_REC] = t4 - t3;
    t[T_HVP] = t5 - t4;
    return rc;
}

/* Repeats (fixed, or adaptive: at least 5 and until 0.25 s have passed, at
 * most MAX_REPEATS) after one untimed warm-up. */
static int time_case(const op_case *c, int repeats, case_result *res)
{
    ad_rng rng;
    ad_rng_seed(&rng, 1234);
    case_inputs ci = { 0 };
    ad_value *gy = NULL, *v[MAX_IN] = { 0 };
    double samples[N_TIMES][MAX_REPEATS]; /* --repeats allows no more */
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    int rc = tp ? inputs_make(c, &rng, &ci) : ad_fail(AD_ENOMEM, "out of memory");
    if (rc != AD_OK) {
        ad_tape_free(tp);
        inputs_free(&ci); /* what inputs_make made before it failed */
        return rc;
    }
    /* The seeds: one forward to learn the output's shape. */
    ad_no_record_begin(tp);
    ad_value *y = case_run(tp, c, &ci);
    ad_no_record_end(tp);
    if (!y) rc = ad_error_code();
    if (rc == AD_OK && !(gy = ad_tensor_randn(&rng, y->rank, y->shape, 1))) rc = ad_error_code();
    for (int i = 0; i < ci.n_in && rc == AD_OK; i++)
        if (!(v[i] = ad_tensor_randn(&rng, ci.in[i]->rank, ci.in[i]->shape, 1)))
            rc = ad_error_code();
    int cap = repeats > 0 ? repeats : MAX_REPEATS;
    double t[N_TIMES];
    if (rc == AD_OK) rc = one_repeat(tp, c, &ci, gy, v, t, &res->tape_fwd, &res->tape_rec);
    int n = 0;
    double start = ex_now();
    while (rc == AD_OK && n < cap && (repeats > 0 || n < 5 || ex_now() - start < 0.25)) {
        rc = one_repeat(tp, c, &ci, gy, v, t, &res->tape_fwd, &res->tape_rec);
        for (int k = 0; k < N_TIMES; k++) samples[k][n] = t[k];
        n++;
    }
    for (int k = 0; k < N_TIMES && rc == AD_OK; k++) res->t[k] = ex_median(samples[k], n);
    res->repeats = n;
    for (int i = 0; i < MAX_IN; i++) ad_value_free(v[i]);
    ad_value_free(gy);
    ad_tape_free(tp);
    inputs_free(&ci);
    return rc;
}

static int run_ops(const opts *o)
{
    if (o->csv)
        printf("op,shape,fwd_s,bwd_s,bwd_rec_s,hvp_s,tape_fwd_bytes,tape_rec_bytes,repeats\n");
    else
        printf("%-17s %-14s %10s %10s %10s %10s %11s %11s %7s\n", "op", "shape", "fwd ms",
               "bwd ms", "bwd_rec ms", "hvp ms", "tape fwd KB", "tape rec KB", "repeats");
    int shown = 0;
    for (int i = 0; i < N_CASES; i++) {
        const op_case *c = &cases[i];
        char shape[64], name[96];
        case_shape(c, shape, sizeof shape);
        snprintf(name, sizeof name, "%s %s", c->op, shape);
        if (o->match && !strstr(name, o->match)) continue;
        case_result r = { 0 };
        int rc = time_case(c, o->repeats, &r);
        if (rc != AD_OK) {
            fprintf(stderr, PROG ": %s: %s\n", name, ad_error());
            return EX_EXIT_LIB;
        }
        if (o->csv)
            printf("%s,%s,%.9f,%.9f,%.9f,%.9f,%zu,%zu,%d\n", c->op, shape, r.t[0], r.t[1],
                   r.t[2], r.t[3], r.tape_fwd, r.tape_rec, r.repeats);
        else
            printf("%-17s %-14s %10.4f %10.4f %10.4f %10.4f %11.1f %11.1f %7d\n", c->op, shape,
                   1e3 * r.t[0], 1e3 * r.t[1], 1e3 * r.t[2], 1e3 * r.t[3], r.tape_fwd / 1024.0,
                   r.tape_rec / 1024.0, r.repeats);
        fflush(stdout);
        shown++;
    }
    if (shown == 0) {
        fprintf(stderr, PROG ": no case matches '%s'\n", o->match);
        return EX_EXIT_USAGE;
    }
    return 0;
}

/* ---- the one-shot hyper-iteration ----------------------------------------- */

enum { OS_SUPPORT = 5, OS_QUERY = 75, OS_SIDE = 28,
       OS_XS = OS_SUPPORT * OS_SIDE * OS_SIDE, OS_XQ = OS_QUERY * OS_SIDE * OS_SIDE };

/* A random task's numbers and, once it has run, its tape peak (estimator
 * and representation tapes together). */
typedef struct rand_task {
    ad_real x_s[OS_XS], x_q[OS_XQ];
    int y_s[OS_SUPPORT], y_q[OS_QUERY];
    size_t peak;
} rand_task;

/* A random task: images uniform in [0, 1] (Omniglot's ink range), labels
 * 0..4 in turn. */
static void random_task(ad_rng *rng, rand_task *t)
{
    for (int i = 0; i < OS_XS; i++) t->x_s[i] = (ad_real)ad_rng_uniform(rng);
    for (int i = 0; i < OS_XQ; i++) t->x_q[i] = (ad_real)ad_rng_uniform(rng);
    for (int i = 0; i < OS_SUPPORT; i++) t->y_s[i] = i % 5;
    for (int i = 0; i < OS_QUERY; i++) t->y_q[i] = i % 5;
}

/* The meta-batch exactly as experiments/oneshot.c runs it (os_batch), on
 * random tasks all drawn before they run. */
typedef struct bench_batch {
    os_batch mb;
    rand_task *task; /* [mb.B] */
    int K;
} bench_batch;

/* Task b (an ex_item_fn) on worker w: loaded into w's os_task, its K-RMD
 * hypergradient into mb.row[b], its tape peak into task[b].peak. */
static int batch_item(void *ctx, int w, int b)
{
    bench_batch *bb = ctx;
    rand_task *t = &bb->task[b];
    hg_report r;
    int rc = os_task_load(&bb->mb.tk[w], t->x_s, t->y_s, t->x_q, t->y_q, true);
    if (rc == AD_OK) rc = os_batch_task(&bb->mb, w, b, bb->K, &r);
    if (rc == AD_OK) t->peak = r.peak_tape_bytes + os_task_rep_tape_bytes(&bb->mb.tk[w]);
    return rc;
}

/* NAME.f64: n doubles; one manifest line "NAME rank d0 d1 ...". */
static int dump_tensor(ex_file *man, ex_out *dir, const char *name, int rank, const int *shape,
                       const ad_real *data)
{
    char file[EX_NAME_LEN];
    snprintf(file, sizeof file, "%s.f64", name);
    ex_file f;
    int rc = ex_file_open(&f, dir, file);
    size_t n = ad_shape_size(rank, shape);
    for (size_t i = 0; i < n && rc == AD_OK; i++) {
        double d = (double)data[i];
        fwrite(&d, sizeof d, 1, f.f); /* checked by ex_file_commit */
    }
    if (rc == AD_OK) rc = ex_file_commit(&f);
    if (rc != AD_OK) return rc;
    fprintf(man->f, "%s %d", name, rank);
    for (int i = 0; i < rank; i++) fprintf(man->f, " %d", shape[i]);
    fprintf(man->f, "\n");
    return AD_OK;
}

static int dump_ints(ex_file *man, ex_out *dir, const char *name, int n, const int *v)
{
    ad_real *r = malloc(sizeof(ad_real) * (size_t)n);
    int rc = r ? AD_OK : ad_fail(AD_ENOMEM, "out of memory");
    for (int i = 0; i < n && rc == AD_OK; i++) r[i] = (ad_real)v[i];
    if (rc == AD_OK) rc = dump_tensor(man, dir, name, 1, &n, r);
    free(r);
    return rc;
}

/* "PREFIX_KK_II" for each tensor of vs (hy->list's shapes). */
static int dump_list(ex_file *man, ex_out *dir, const os_hyper *hy, const char *prefix, int K,
                     ad_value *const *vs)
{
    char name[64];
    int rc = AD_OK;
    for (int i = 0; i < hy->n_list && rc == AD_OK; i++) {
        if (K > 0) snprintf(name, sizeof name, "%s_K%d_%02d", prefix, K, i);
        else snprintf(name, sizeof name, "%s_%02d", prefix, i);
        rc = dump_tensor(man, dir, name, vs[i]->rank, vs[i]->shape, vs[i]->data);
    }
    return rc;
}

/* λ0, the first task and its hypergradient at every K (grad_K*), for
 * bench_torch.py --check; the manifest stays open for what the hyper-
 * iterations add. */
static int dump_first_task(const opts *op, os_hyper *hy, os_task *tk, ad_rng *rng, ex_out *dir,
                           ex_file *man)
{
    rand_task *t = malloc(sizeof *t);
    int rc = t ? AD_OK : ad_fail(AD_ENOMEM, "out of memory");
    if (rc == AD_OK) {
        random_task(rng, t);
        rc = os_task_load(tk, t->x_s, t->y_s, t->x_q, t->y_q, true);
    }
    if (rc == AD_OK)
        fprintf(man->f, "config channels %d T %d support %d query %d bn_eps %g real %s\n",
                op->channels, op->T, OS_SUPPORT, OS_QUERY, MDL_BN_EPS,
                sizeof(ad_real) == 8 ? "double" : "float");
    if (rc == AD_OK) rc = dump_list(man, dir, hy, "lam", 0, hy->list);
    int xs[4] = { OS_SUPPORT, 1, OS_SIDE, OS_SIDE }, xq[4] = { OS_QUERY, 1, OS_SIDE, OS_SIDE };
    if (rc == AD_OK) rc = dump_tensor(man, dir, "x_s", 4, xs, t->x_s);
    if (rc == AD_OK) rc = dump_tensor(man, dir, "x_q", 4, xq, t->x_q);
    if (rc == AD_OK) rc = dump_ints(man, dir, "y_s", OS_SUPPORT, t->y_s);
    if (rc == AD_OK) rc = dump_ints(man, dir, "y_q", OS_QUERY, t->y_q);
    for (int k = 0; k < op->n_k && rc == AD_OK; k++) {
        ad_value *g[OS_MAX_HYPER] = { 0 };
        rc = os_task_hypergrad(tk, op->Ks[k], g, NULL);
        if (rc == AD_OK) rc = dump_list(man, dir, hy, "grad", op->Ks[k], g);
        for (int i = 0; i < hy->n_list; i++) ad_value_free(g[i]);
    }
    free(t);
    return rc;
}

/* Seconds of CPU this process has used (all its threads): on a shared
 * machine, a measure that waiting for a core does not inflate. */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* One hyper-iteration: the meta-batch's tasks drawn from rng in order, their
 * hypergradients at K on the workers, their mean in task order, one Adam
 * update.  *peak gets the largest tape peak of a task (estimator and
 * representation tapes together; with several workers, that many tasks'
 * tapes are alive at once). */
static int hyper_iteration(bench_batch *bb, os_hyper *hy, int K, ad_rng *rng, opt_outer *adam,
                           size_t *peak)
{
    for (int b = 0; b < bb->mb.B; b++) random_task(rng, &bb->task[b]);
    bb->K = K;
    int rc = ex_par_run(bb->mb.n_workers, bb->mb.B, batch_item, bb);
    if (rc == AD_OK) rc = os_batch_mean(&bb->mb);
    if (rc != AD_OK) return rc;
    for (int b = 0; b < bb->mb.B; b++)
        if (bb->task[b].peak > *peak) *peak = bb->task[b].peak;
    rc = opt_outer_step(adam, bb->mb.mean);
    os_hyper_clamp_step(hy, 1e-3, 2.0); /* oneshot's STEP_LO, STEP_HI */
    return rc;
}

static int run_oneshot(const opts *o)
{
    static ex_out dir; /* large: off the stack */
    ex_file man = { 0 };
    bool have_dir = false;
    ad_rng rng;
    ad_rng_seed(&rng, 1);
    os_hyper hy = { 0 };
    bench_batch bb = { 0 };
    opt_outer adam = { 0 };
    int repeats = o->repeats > 0 ? o->repeats : 5;
    /* Without --threads, the tasks one after the other on this thread, the
     * kernels on OpenBLAS's threads (intra-op, as PyTorch).  As oneshot.c:
     * no idle os_task. */
    int workers = o->threads < 1 ? 1 : o->threads < o->meta_batch ? o->threads : o->meta_batch;
    double secs[MAX_REPEATS], cpus[MAX_REPEATS]; /* --repeats allows no more */
    bb.task = calloc((size_t)o->meta_batch, sizeof *bb.task);
    int rc = bb.task ? AD_OK : ad_fail(AD_ENOMEM, "out of memory");
    if (rc == AD_OK) rc = os_hyper_init(&hy, mdl_cnn_omniglot(o->channels), &rng, 0.1, 0.03);
    if (rc == AD_OK)
        rc = os_batch_init(&bb.mb, &hy, o->meta_batch, workers, OS_SUPPORT, OS_QUERY, o->T);
    if (rc == AD_OK && o->dump && (rc = ex_out_open(&dir, o->dump, false)) == AD_OK) {
        have_dir = true;
        rc = ex_file_open(&man, &dir, "manifest.txt");
        if (rc == AD_OK) rc = dump_first_task(o, &hy, &bb.mb.tk[0], &rng, &dir, &man);
    }
    if (rc == AD_OK) {
        if (o->threads > 0)
            fprintf(stderr, PROG ": the meta-batch's %d tasks on %d worker thread(s), "
                    "kernels on 1 thread each (oneshot --threads %d)\n", o->meta_batch,
                    bb.mb.n_workers, o->threads);
        if (o->csv) printf("K,T,channels,meta_batch,median_s,min_s,max_s,cpu_median_s,peak_tape_bytes,repeats\n");
        else printf("%6s %4s %8s %10s %9s %9s %10s %13s %7s\n", "K", "T", "channels", "median s",
                    "min s", "max s", "cpu s", "peak tape MB", "repeats");
    }
    /* Every K starts from the same λ0 and the same tasks, with a fresh Adam. */
    ad_real *lam0 = rc == AD_OK ? malloc(sizeof *lam0 * bb.mb.numel) : NULL;
    if (rc == AD_OK && !lam0) rc = ad_fail(AD_ENOMEM, "out of memory");
    if (rc == AD_OK) os_hyper_pack(&hy, hy.list, lam0);
    for (int k = 0; k < o->n_k && rc == AD_OK; k++) {
        int K = o->Ks[k];
        ad_rng task_rng;
        ad_rng_seed(&task_rng, 99);
        os_hyper_unpack(&hy, lam0, hy.list);
        if (rc == AD_OK) rc = opt_outer_init(&adam, OPT_ADAM, 1e-2, false, hy.n_list, hy.list);
        size_t peak = 0;
        /* One untimed hyper-iteration first (the allocator and BLAS warm up). */
        for (int r = -1; r < repeats && rc == AD_OK; r++) {
            double t0 = ex_now(), c0 = cpu_now();
            rc = hyper_iteration(&bb, &hy, K, &task_rng, &adam, &peak);
            if (r >= 0) {
                secs[r] = ex_now() - t0;
                cpus[r] = cpu_now() - c0;
            }
            /* The first mean hypergradient and λ after the last update:
             * what does not depend on the number of workers. */
            if (rc == AD_OK && have_dir && r == -1)
                rc = dump_list(&man, &dir, &hy, "mean", K, bb.mb.mean);
        }
        if (rc == AD_OK && have_dir) rc = dump_list(&man, &dir, &hy, "lam", K, hy.list);
        opt_outer_free(&adam);
        if (rc != AD_OK) break;
        double med = ex_median(secs, repeats), cpu = ex_median(cpus, repeats);
        double lo = secs[0], hi = secs[repeats - 1]; /* ex_median sorted them */
        if (o->csv)
            printf("%d,%d,%d,%d,%.6f,%.6f,%.6f,%.6f,%zu,%d\n", K, o->T, o->channels, o->meta_batch,
                   med, lo, hi, cpu, peak, repeats);
        else
            printf("%6d %4d %8d %10.3f %9.3f %9.3f %10.3f %13.1f %7d\n", K, o->T, o->channels, med,
                   lo, hi, cpu, peak / 1e6, repeats);
        fflush(stdout);
    }
    if (have_dir) {
        if (rc == AD_OK) rc = ex_file_commit(&man);
        if (rc == AD_OK) fprintf(stderr, PROG ": wrote %s/manifest.txt and its files\n", o->dump);
        ex_file_abandon(&man);
        ex_out_close(&dir);
    }
    if (rc != AD_OK) fprintf(stderr, PROG ": one-shot: %s\n", ad_error());
    free(lam0);
    os_batch_free(&bb.mb);
    free(bb.task);
    os_hyper_free(&hy);
    return rc == AD_OK ? 0 : EX_EXIT_LIB;
}

/* ---- what one recorded step keeps (--tape) -------------------------------- */

/* Whether a backward rule will read v's data: its own op's, or that of a
 * node of the step that takes it as an input — each op's declaration
 * (ad_op.reads), what a lean tape goes by when the step closes. */
static bool read_later(const ad_value *v, ad_value *const *step, size_t n)
{
    if (ad_rule_reads(v, AD_READ_OUTPUT)) return true;
    for (size_t u = 0; u < n; u++)
        for (int i = 0; i < step[u]->n_inputs; i++)
            if (step[u]->inputs[i] == v && ad_rule_reads(step[u], i)) return true;
    return false;
}

typedef struct step_values {
    ad_value **v;
    size_t n, cap;
} step_values;

/* Collects the values of `step` that out reaches through inputs (once each). */
static int collect_step(step_values *sv, ad_value *out, long step)
{
    if (!out || !out->tape || out->step != step) return AD_OK;
    for (size_t k = 0; k < sv->n; k++)
        if (sv->v[k] == out) return AD_OK;
    if (sv->n == sv->cap) {
        size_t cap = sv->cap ? 2 * sv->cap : 256;
        ad_value **p = realloc(sv->v, cap * sizeof *p);
        if (!p) return ad_fail(AD_ENOMEM, "out of memory");
        sv->v = p;
        sv->cap = cap;
    }
    sv->v[sv->n++] = out;
    for (int i = 0; i < out->n_inputs; i++) {
        int rc = collect_step(sv, out->inputs[i], step);
        if (rc != AD_OK) return rc;
    }
    return AD_OK;
}

/* Prints, by op, the bytes of the step's values a later backward rule reads
 * and those it never reads; `keep` (the step's results) count as read. */
static void print_step(const char *what, const step_values *sv, ad_value *const *keep, int n_keep,
                       size_t total, size_t lean)
{
    enum { MAX_ROWS = 64 };
    struct tape_row {
        const char *op;
        int n;
        size_t read, unread;
    } rows[MAX_ROWS];
    int n_rows = 0;
    size_t read = 0, unread = 0;
    for (size_t k = 0; k < sv->n; k++) {
        ad_value *v = sv->v[k];
        bool r = read_later(v, sv->v, sv->n);
        for (int j = 0; j < n_keep; j++) r = r || keep[j] == v;
        const char *op = v->op ? v->op->name : "(constant)";
        int row = 0;
        while (row < n_rows && strcmp(rows[row].op, op)) row++;
        if (row == n_rows && n_rows < MAX_ROWS) rows[n_rows++] = (struct tape_row){ op, 0, 0, 0 };
        if (row == MAX_ROWS) continue;
        size_t b = v->size * sizeof(ad_real);
        rows[row].n++;
        if (r) rows[row].read += b, read += b;
        else rows[row].unread += b, unread += b;
    }
    printf("%s: %zu bytes on the tape for the step; %zu once it closed on a lean tape (%.3f)\n",
           what, total, lean, (double)lean / (double)total);
    printf("  %-18s %7s %14s %14s\n", "op", "values", "read later B", "never read B");
    for (int i = 0; i < n_rows; i++)
        if (rows[i].read + rows[i].unread >= 1024)
            printf("  %-18s %7d %14zu %14zu\n", rows[i].op, rows[i].n, rows[i].read, rows[i].unread);
    printf("  data a backward rule reads later %zu B, data none reads %zu B, the rest (headers, "
           "values the step's results do not reach) %zd B\n\n", read, unread,
           (ptrdiff_t)total - (ptrdiff_t)(read + unread));
}

/* One inner step of problem p recorded as the estimators record it
 * (hg_inner_step, create_graph, the state kept), on a tape of its own, lean
 * or not: *bytes = what the step holds once closed.  The step measured is
 * the second: the first starts from a leaf copy of the detached w0
 * (hg_state_init), as K-RMD's first recorded step does, and every later one
 * from the state the step before it made.  With sv, the values the new state
 * reaches are collected and print_step shows them beside `lean_bytes`. */
static int record_step(const char *what, const hg_problem *p, bool lean, step_values *sv,
                       size_t lean_bytes, size_t *bytes)
{
    int n = hg_state_len(p);
    hg_state st = { 0 };
    ad_tape *tp = ad_tape_new(AD_HORIZON_ALL);
    int rc = !tp ? ad_fail(AD_ENOMEM, "out of memory") : n < 1 ? ad_error_code() : AD_OK;
    if (rc == AD_OK) rc = ad_tape_set_lean(tp, lean);
    if (rc == AD_OK) rc = hg_state_init(tp, p, &st, true);
    size_t b0 = 0;
    long step = 0;
    for (int t = 1; t <= 2 && rc == AD_OK; t++) {
        for (int i = 0; i < n && rc == AD_OK; i++) rc = ad_value_keep(st.w[i]);
        if (rc == AD_OK) rc = ad_tape_step(tp);
        b0 = ad_tape_bytes(tp);
        step = ad_tape_current_step(tp);
        if (rc == AD_OK) rc = hg_inner_step(tp, p, &st, t, false);
    }
    for (int i = 0; i < n && rc == AD_OK; i++) rc = ad_value_keep(st.w[i]); /* the next step's */
    for (int i = 0; i < n && rc == AD_OK && sv; i++) rc = collect_step(sv, st.w[i], step);
    if (rc == AD_OK) rc = ad_tape_step(tp);
    if (rc == AD_OK) *bytes = ad_tape_bytes(tp) - b0;
    if (rc == AD_OK && sv) print_step(what, sv, st.w, n, *bytes, lean_bytes);
    if (st.w) hg_state_free(&st);
    ad_tape_free(tp);
    return rc;
}

/* record_step on a lean tape, then on one that keeps everything (printed). */
static int both_tapes(const char *what, const hg_problem *p, step_values *sv)
{
    size_t lean = 0, bytes = 0;
    int rc = record_step(what, p, true, NULL, 0, &lean);
    if (rc == AD_OK) rc = record_step(what, p, false, sv, lean, &bytes);
    sv->n = 0;
    return rc;
}

/* hyperclean_problem.c's problem (its g, gradient descent) on random data of
 * MNIST's size. */
static int tape_hyperclean(step_values *sv)
{
    ad_rng rng;
    ad_rng_seed(&rng, 1);
    int n = 5000, d = 785, C = 10;
    ad_value *X = ad_tensor_rand(&rng, 2, (int[]){ n, d }, 0, 1), *y = labels_rand(&rng, n, C);
    hc_problem hc = { 0 };
    int rc = X && y ? hc_problem_init(&hc, X, y, X, y, C, 1, 0.25, HC_REG)
                    : ad_fail(AD_ENOMEM, "out of memory");
    if (rc == AD_OK)
        rc = both_tapes("hypercleaning, one recorded step (n 5000, d 785, C 10)", &hc.problem, sv);
    hc_problem_free(&hc);
    ad_value_free(X);
    ad_value_free(y);
    return rc;
}

/* oneshot_problem.c's split task (blocks 3–4 and the classifier on the
 * representation of 5 random support images, 64 channels), as oneshot runs it. */
static int tape_oneshot(step_values *sv)
{
    ad_rng rng;
    ad_rng_seed(&rng, 2);
    os_hyper hy = { 0 };
    os_task tk = { 0 };
    rand_task *t = malloc(sizeof *t);
    int rc = t ? os_hyper_init(&hy, mdl_cnn_omniglot(64), &rng, 0.1, 0.03)
               : ad_fail(AD_ENOMEM, "out of memory");
    if (rc == AD_OK) rc = os_task_init(&tk, &hy, OS_SUPPORT, OS_QUERY, 1, true);
    if (rc == AD_OK) {
        random_task(&rng, t);
        rc = os_task_load(&tk, t->x_s, t->y_s, t->x_q, t->y_q, false);
    }
    if (rc == AD_OK)
        rc = both_tapes("one-shot, one recorded inner step (64 channels, 5 support images)",
                        &tk.problem, sv);
    os_task_free(&tk);
    os_hyper_free(&hy);
    free(t);
    return rc;
}

/* Both problems: by op, what a rule reads later and what none does, and the
 * bytes a step keeps once closed, on a tape that keeps everything and on a
 * lean one. */
static int run_tape(void)
{
    step_values sv = { 0 };
    int rc = tape_hyperclean(&sv);
    if (rc == AD_OK) rc = tape_oneshot(&sv);
    free(sv.v);
    if (rc != AD_OK) fprintf(stderr, PROG ": --tape: %s\n", ad_error());
    return rc == AD_OK ? 0 : EX_EXIT_LIB;
}

/* ---- flags ---------------------------------------------------------------- */

static opts o;
static const ex_flag flags[] = {
    { "--csv", EX_SWITCH, &o.csv, .help = "CSV on stdout instead of a table" },
    { "--repeats", EX_INT, &o.repeats, NULL, 1, MAX_REPEATS,
      "repeats per case (default: at least 5 and 0.25 s per case; --oneshot: 5)" },
    { "--match", EX_TEXT, &o.match, .help = "keep the cases whose 'op shape' contains TEXT",
      .meta = "TEXT" },
    { "--oneshot", EX_SWITCH, &o.oneshot,
      .help = "time one-shot hyper-iterations (experiments/oneshot.c's, on random images) instead "
              "of the ops" },
    { "--K", EX_INTS, o.Ks, NULL, 1, 100000, "--oneshot: the truncation depths (default 1,10,T)",
      .max_n = MAX_K, .n = &o.n_k, .meta = "LIST" },
    { "--channels", EX_INT, &o.channels, "64", 1, 1024, "--oneshot: the network's channels" },
    { "--T", EX_INT, &o.T, "50", 1, 100000, "--oneshot: inner steps" },
    { "--meta-batch", EX_INT, &o.meta_batch, "4", 1, 1000, "--oneshot: tasks per hyper-iteration" },
    { "--threads", EX_INT, &o.threads, NULL, 1, EX_MAX_THREADS,
      "--oneshot: run the meta-batch's tasks on N worker threads as experiments/oneshot.c does "
      "(each with its own tapes; OpenBLAS and oneDNN on 1 thread each, summed in task order: the "
      "numbers do not depend on N); without it the tasks run one after the other and the kernels "
      "use OPENBLAS_NUM_THREADS threads (intra-op, as PyTorch)", .meta = "N" },
    { "--dump", EX_TEXT, &o.dump,
      .help = "--oneshot: also write lambda0, the first task and its hypergradients into DIR, for "
              "scripts/bench_torch.py check DIR", .meta = "DIR" },
    { "--tape", EX_SWITCH, &o.tape,
      .help = "list what one recorded hypercleaning step and one recorded one-shot inner step "
              "leave on the tape, by op: the bytes some backward rule reads later and the bytes "
              "none does (each op's declaration, ad_op.reads), and the bytes the step keeps once "
              "closed, on a tape that keeps everything and on a lean one" },
};

static int check(void)
{
    if (!o.oneshot && (o.n_k > 0 || o.dump || o.threads))
        return ex_usage_error("--K, --threads and --dump go with --oneshot");
    if (o.n_k == 0) {
        int def[3] = { 1, 10, o.T };
        for (int k = 0; k < 3; k++)
            if (def[k] <= o.T && (o.n_k == 0 || def[k] > o.Ks[o.n_k - 1])) o.Ks[o.n_k++] = def[k];
    }
    return 0;
}

static ex_cmd cmd = {
    PROG, "[--csv] [--repeats N] [--match TEXT] | --oneshot [...] | --tape",
    "Times the ops at the one-shot (64 channels) and hypercleaning shapes: forward on a recording "
    "tape, plain backward, recorded backward (create_graph) and a Hessian-vector product back "
    "through it; the median of the repeats.\n",
    EX_FLAGS(flags),
    "OpenBLAS threads: OPENBLAS_NUM_THREADS.  Exit status 0, 1 on failure, 2 on bad usage.\n",
    .check = check,
};

int main(int argc, char **argv)
{
    int st = ex_flags_parse(&cmd, argc, argv);
    if (st) return st < 0 ? 0 : st;
    /* Task workers: one BLAS thread, as the programs set it (ex_par_init). */
    if (o.threads > 0 && (st = ex_par_init(&argc, &argv)) != AD_OK) return ex_exit(st);
    fprintf(stderr, PROG ": %s build, OpenBLAS %d thread(s)\n",
            sizeof(ad_real) == 8 ? "double" : "float", openblas_get_num_threads());
    if (o.tape) return run_tape();
    if (!o.oneshot) return run_ops(&o);
    st = run_oneshot(&o);
    return o.threads > 0 ? ex_par_end(st) : st;
}
