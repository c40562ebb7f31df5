/* conv_dnnl.c — conv.c's kernels through oneDNN primitives (float build).
 *
 * One primitive per (kind, geometry): convolution forward (training, with or
 * without bias), backward data and backward weights.  oneDNN chooses the
 * layout of each tensor (format "any"): on plain NCHW it falls back to its
 * own im2col + gemm, slower than conv.c's (bench-ops, 75x64x7x7 float, one
 * thread: forward 4.2 ms against 2.8), while its direct kernels want the
 * channels blocked (nChw16c on AVX-512).  So each tensor whose chosen layout
 * is not the plain one is reordered into a buffer of the thread's cache
 * before the run (inputs) or out of it after (the result); the buffers are
 * shared by the thread's primitives, grown to the largest tensor seen.
 * Making a primitive costs far more than a small convolution (oneDNN picks
 * and may JIT-compile a kernel), so each thread keeps the primitives it
 * made in a small cache, CONV_DNNL_CACHE entries, the least recently used
 * one replaced.  The cache hangs off a pthread key whose destructor frees
 * it when its thread exits; the main thread's lives until the process
 * exits, reachable from the thread's key (no leak to report).  Nothing is
 * shared between threads but the key, made once (pthread_once).
 *
 * Threads: Debian's libdnnl is built with OpenMP.  Before each run the
 * calling thread's OpenMP thread count is set to the kernels' count
 * (threads.h: OpenBLAS's current count, capped by what OpenMP allowed this
 * thread at first, i.e. OMP_NUM_THREADS or the cores), so oneDNN uses as
 * many threads as the gemms and the other kernels, and one when the
 * programs run tapes on several threads. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <dnnl.h>
#include <dnnl_debug.h>

#include "ad/node.h"
#include "conv_dnnl.h"
#include "hypertape_config.h"
#include "threads.h"

#if HT_DNNL_OMP
#include <omp.h>
#endif

/* CONV_DNNL_MIN_C: fewer input or output channels than this go to the
 * im2col kernels.  With one input channel (the one-shot network's first
 * layer, 75x1x28x28) oneDNN's forward was no faster and its backward 1.6x
 * slower (5.0 ms against 3.2; bench-ops, one thread): reordering the
 * 64-channel 28x28 maps to and from its blocked layout costs as much as
 * the convolution there. */
enum { CONV_DNNL_CACHE = 24, CONV_DNNL_MIN_C = 16 };

/* One argument of a run: the caller's plain array and, when the primitive
 * wants another layout, that layout's copy in the cache's buffer. */
typedef struct conv_dnnl_arg {
    int arg;                  /* DNNL_ARG_* */
    dnnl_memory_t user;       /* plain layout, on the caller's array; NULL: no such argument */
    dnnl_memory_t inner;      /* the primitive's layout, on a cache buffer; NULL: same as user */
    dnnl_primitive_t reorder; /* user -> inner (inputs), inner -> user (the result) */
    size_t bytes;             /* inner's size */
} conv_dnnl_arg;

/* Slots of conv_dnnl_arg, in conv_dnnl_run's order; OUT is the result. */
enum { SLOT_A, SLOT_B, SLOT_C, SLOT_OUT, SLOTS };

/* A primitive and the memory objects it runs on (their data handles are
 * set at each run). */
struct conv_dnnl_prim {
    conv_dnnl_kind kind;
    conv_geom g;
    int O;
    bool has_bias;
    bool none;          /* no primitive worth using here: the caller's kernels run */
    unsigned long used; /* the cache's clock at the last use */
    dnnl_primitive_desc_t pd, hint; /* hint: the forward pd a backward one was made from */
    dnnl_primitive_t prim;
    conv_dnnl_arg slot[SLOTS];
};

typedef struct conv_dnnl_cache {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    bool off;    /* conv_dnnl_set_enabled(false) */
    unsigned long clock;
    int n;
    conv_dnnl_prim entry[CONV_DNNL_CACHE];
    void *buf[SLOTS]; /* a slot's reordered copy, for whichever primitive runs */
    size_t cap[SLOTS];
} conv_dnnl_cache;

static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static int cache_key_rc; /* pthread_key_create's result, written once under cache_once */

static void prim_free(conv_dnnl_prim *p)
{
    for (int i = 0; i < SLOTS; i++) {
        conv_dnnl_arg *a = &p->slot[i];
        if (a->user) dnnl_memory_destroy(a->user);
        if (a->inner) dnnl_memory_destroy(a->inner);
        if (a->reorder) dnnl_primitive_destroy(a->reorder);
    }
    if (p->prim) dnnl_primitive_destroy(p->prim);
    if (p->pd) dnnl_primitive_desc_destroy(p->pd);
    if (p->hint) dnnl_primitive_desc_destroy(p->hint);
    memset(p, 0, sizeof *p);
}

static void cache_free(void *arg)
{
    conv_dnnl_cache *c = arg;
    if (!c) return;
    for (int i = 0; i < c->n; i++) prim_free(&c->entry[i]);
    for (int i = 0; i < SLOTS; i++) free(c->buf[i]);
    if (c->stream) dnnl_stream_destroy(c->stream);
    if (c->engine) dnnl_engine_destroy(c->engine);
    free(c);
}

static void cache_key_make(void) { cache_key_rc = pthread_key_create(&cache_key, cache_free); }

/* The calling thread's cache, made on first use; NULL with a message. */
static conv_dnnl_cache *cache_get(const char *who)
{
    pthread_once(&cache_once, cache_key_make);
    if (cache_key_rc != 0) {
        ad_fail(AD_ENOMEM, "%s: oneDNN: no thread key for the primitive cache", who);
        return NULL;
    }
    conv_dnnl_cache *c = pthread_getspecific(cache_key);
    if (c) return c;
    c = calloc(1, sizeof *c);
    if (!c) {
        ad_fail(AD_ENOMEM, "%s: out of memory for oneDNN's primitive cache", who);
        return NULL;
    }
    dnnl_status_t st = dnnl_engine_create(&c->engine, dnnl_cpu, 0);
    if (st == dnnl_success) st = dnnl_stream_create(&c->stream, c->engine, dnnl_stream_default_flags);
    if (st == dnnl_success && pthread_setspecific(cache_key, c) != 0) st = dnnl_out_of_memory;
    if (st != dnnl_success) {
        cache_free(c);
        ad_fail(AD_ENOMEM, "%s: oneDNN: no CPU engine and stream (%s)", who, dnnl_status2str(st));
        return NULL;
    }
    return c;
}

bool conv_dnnl_active(void)
{
    pthread_once(&cache_once, cache_key_make);
    if (cache_key_rc != 0) return true; /* conv_dnnl_prepare reports it */
    const conv_dnnl_cache *c = pthread_getspecific(cache_key);
    return !c || !c->off;
}

void conv_dnnl_set_enabled(bool on)
{
    conv_dnnl_cache *c = cache_get("conv_dnnl_set_enabled");
    if (c) c->off = !on;
}

/* ---- making a primitive ------------------------------------------------ */

static int out_extent(int in, int k, int stride, int pad) { return (in + 2 * pad - k) / stride + 1; }

/* The four plain memory descriptors: x [N,C,H,W], w [O,C,kh,kw], b [O],
 * y [N,O,P,Q]. */
typedef struct conv_mds {
    dnnl_memory_desc_t x, w, b, y;
} conv_mds;

static dnnl_status_t mds_init(conv_mds *m, const conv_geom *g, int O, bool any)
{
    /* "any": oneDNN picks the layout (the bias stays plain) */
    dnnl_format_tag_t act = any ? dnnl_format_tag_any : dnnl_nchw;
    dnnl_format_tag_t wgt = any ? dnnl_format_tag_any : dnnl_oihw;
    int P = out_extent(g->H, g->kh, g->stride, g->pad), Q = out_extent(g->W, g->kw, g->stride, g->pad);
    dnnl_dims_t dx = { g->N, g->C, g->H, g->W }, dw = { O, g->C, g->kh, g->kw }, db = { O },
                dy = { g->N, O, P, Q };
    dnnl_status_t st = dnnl_memory_desc_init_by_tag(&m->x, 4, dx, dnnl_f32, act);
    if (st == dnnl_success) st = dnnl_memory_desc_init_by_tag(&m->w, 4, dw, dnnl_f32, wgt);
    if (st == dnnl_success) st = dnnl_memory_desc_init_by_tag(&m->b, 1, db, dnnl_f32, dnnl_x);
    if (st == dnnl_success) st = dnnl_memory_desc_init_by_tag(&m->y, 4, dy, dnnl_f32, act);
    return st;
}

/* The forward pd (also the hint of the backward ones). */
static dnnl_status_t forward_pd(dnnl_primitive_desc_t *pd, const conv_mds *m, const conv_geom *g,
                                bool has_bias, dnnl_engine_t engine)
{
    dnnl_dims_t strides = { g->stride, g->stride }, pad = { g->pad, g->pad };
    dnnl_convolution_desc_t d;
    dnnl_status_t st = dnnl_convolution_forward_desc_init(&d, dnnl_forward_training,
                                                          dnnl_convolution_direct, &m->x, &m->w,
                                                          has_bias ? &m->b : NULL, &m->y, strides,
                                                          pad, pad);
    return st == dnnl_success ? dnnl_primitive_desc_create(pd, &d, NULL, engine, NULL) : st;
}

static dnnl_status_t backward_pd(dnnl_primitive_desc_t *pd, conv_dnnl_kind kind, const conv_mds *m,
                                 const conv_geom *g, dnnl_primitive_desc_t hint, dnnl_engine_t engine)
{
    dnnl_dims_t strides = { g->stride, g->stride }, pad = { g->pad, g->pad };
    dnnl_convolution_desc_t d;
    dnnl_status_t st =
        kind == CONV_DNNL_DATA
            ? dnnl_convolution_backward_data_desc_init(&d, dnnl_convolution_direct, &m->x, &m->w,
                                                       &m->y, strides, pad, pad)
            : dnnl_convolution_backward_weights_desc_init(&d, dnnl_convolution_direct, &m->x,
                                                          &m->w, NULL, &m->y, strides, pad, pad);
    return st == dnnl_success ? dnnl_primitive_desc_create(pd, &d, NULL, engine, hint) : st;
}

/* The run's arguments, in conv_dnnl_run's order a, b, c, out: their
 * DNNL_ARG_* into p's slots, their plain descriptors (from m) into md. */
static void args_of(conv_dnnl_prim *p, const conv_mds *m, const dnnl_memory_desc_t *md[SLOTS])
{
    static const int fwd[SLOTS] = { DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_BIAS, DNNL_ARG_DST };
    static const int data[SLOTS] = { DNNL_ARG_DIFF_DST, DNNL_ARG_WEIGHTS, 0, DNNL_ARG_DIFF_SRC };
    static const int wgt[SLOTS] = { DNNL_ARG_SRC, DNNL_ARG_DIFF_DST, 0, DNNL_ARG_DIFF_WEIGHTS };
    const int *a = p->kind == CONV_DNNL_FORWARD ? fwd : p->kind == CONV_DNNL_DATA ? data : wgt;
    for (int i = 0; i < SLOTS; i++) p->slot[i].arg = a[i];
    if (p->kind == CONV_DNNL_FORWARD) {
        md[0] = &m->x, md[1] = &m->w, md[2] = p->has_bias ? &m->b : NULL, md[3] = &m->y;
    } else if (p->kind == CONV_DNNL_DATA) {
        md[0] = &m->y, md[1] = &m->w, md[2] = NULL, md[3] = &m->x;
    } else {
        md[0] = &m->x, md[1] = &m->y, md[2] = NULL, md[3] = &m->w;
    }
}

/* A slot's memory: the plain one on the caller's array and, when the
 * primitive's layout `want` differs, the reordered copy and its reorder. */
static dnnl_status_t slot_make(conv_dnnl_arg *a, const dnnl_memory_desc_t *plain,
                               const dnnl_memory_desc_t *want, bool is_out, dnnl_engine_t engine)
{
    dnnl_status_t st = dnnl_memory_create(&a->user, plain, engine, DNNL_MEMORY_NONE);
    if (st != dnnl_success || dnnl_memory_desc_equal(plain, want)) return st;
    st = dnnl_memory_create(&a->inner, want, engine, DNNL_MEMORY_NONE);
    a->bytes = dnnl_memory_desc_get_size(want);
    dnnl_primitive_desc_t rpd = NULL;
    if (st == dnnl_success)
        st = is_out ? dnnl_reorder_primitive_desc_create(&rpd, want, engine, plain, engine, NULL)
                    : dnnl_reorder_primitive_desc_create(&rpd, plain, engine, want, engine, NULL);
    if (st == dnnl_success) st = dnnl_primitive_create(&a->reorder, rpd);
    if (rpd) dnnl_primitive_desc_destroy(rpd);
    return st;
}

/* True when a layout pads an axis: oneDNN blocks channels by 16 (AVX-512),
 * so 1 or 3 channels become 16 and the kernel does up to 16 times the work
 * (bench-ops, 75x1x28x28: the data gradient into one channel took 7.8 ms
 * against 3.2 for the im2col kernels' whole backward).  Such a geometry is
 * left to the im2col kernels. */
static bool padded(const dnnl_memory_desc_t *md)
{
    for (int i = 0; i < md->ndims; i++)
        if (md->padded_dims[i] != md->dims[i]) return true;
    return false;
}

/* Makes p's primitive, in the layouts oneDNN prefers, and its slots (p's
 * key fields set). */
static dnnl_status_t prim_make(conv_dnnl_prim *p, dnnl_engine_t engine)
{
    conv_mds plain, any;
    dnnl_status_t st = mds_init(&plain, &p->g, p->O, false);
    if (st == dnnl_success) st = mds_init(&any, &p->g, p->O, true);
    if (st != dnnl_success) return st;
    if (p->kind == CONV_DNNL_FORWARD) {
        st = forward_pd(&p->pd, &any, &p->g, p->has_bias, engine);
    } else {
        st = forward_pd(&p->hint, &any, &p->g, false, engine);
        if (st == dnnl_success) st = backward_pd(&p->pd, p->kind, &any, &p->g, p->hint, engine);
    }
    if (st == dnnl_success) st = dnnl_primitive_create(&p->prim, p->pd);
    const dnnl_memory_desc_t *md[SLOTS];
    args_of(p, &plain, md);
    for (int i = 0; i < SLOTS && st == dnnl_success; i++) {
        if (!md[i]) continue;
        const dnnl_memory_desc_t *want =
            dnnl_primitive_desc_query_md(p->pd, dnnl_query_exec_arg_md, p->slot[i].arg);
        if (!want) return dnnl_runtime_error;
        if (padded(want)) return dnnl_unimplemented;
        st = slot_make(&p->slot[i], md[i], want, i == SLOT_OUT, engine);
    }
    return st;
}

/* The cache's buffers large enough for p's reordered copies. */
static dnnl_status_t buffers_fit(conv_dnnl_cache *c, const conv_dnnl_prim *p)
{
    for (int i = 0; i < SLOTS; i++) {
        size_t need = p->slot[i].bytes;
        if (need <= c->cap[i]) continue;
        free(c->buf[i]);
        c->cap[i] = 0;
        /* 64-byte aligned, as oneDNN's own allocations (a multiple of 64 for aligned_alloc) */
        c->buf[i] = aligned_alloc(64, (need + 63) / 64 * 64);
        if (!c->buf[i]) return dnnl_out_of_memory;
        c->cap[i] = need;
    }
    return dnnl_success;
}

static void set_threads(const conv_dnnl_cache *c);

static bool same_key(const conv_dnnl_prim *p, conv_dnnl_kind kind, const conv_geom *g, int O,
                     bool has_bias)
{
    return (p->prim || p->none) && p->kind == kind && p->O == O && p->has_bias == has_bias &&
           memcmp(&p->g, g, sizeof *g) == 0;
}

int conv_dnnl_prepare(conv_dnnl_prim **prim, conv_dnnl_kind kind, const conv_geom *g, int O,
                      bool has_bias, const char *who)
{
    *prim = NULL;
    if (g->C < CONV_DNNL_MIN_C || O < CONV_DNNL_MIN_C) return AD_OK;
    conv_dnnl_cache *c = cache_get(who);
    if (!c) return ad_error_code();
    set_threads(c); /* making a primitive may run parallel regions too */
    has_bias = has_bias && kind == CONV_DNNL_FORWARD;
    conv_dnnl_prim *p = NULL;
    for (int i = 0; i < c->n && !p; i++)
        if (same_key(&c->entry[i], kind, g, O, has_bias)) p = &c->entry[i];
    if (!p) {
        if (c->n < CONV_DNNL_CACHE) {
            p = &c->entry[c->n++];
        } else { /* the least recently used gives way */
            p = &c->entry[0];
            for (int i = 1; i < c->n; i++)
                if (c->entry[i].used < p->used) p = &c->entry[i];
            prim_free(p);
        }
        *p = (conv_dnnl_prim){ .kind = kind, .g = *g, .O = O, .has_bias = has_bias };
        dnnl_status_t st = prim_make(p, c->engine);
        if (st == dnnl_success) st = buffers_fit(c, p);
        if (st != dnnl_success) {
            prim_free(p); /* a free slot (prim NULL, none false): never matched, reused next */
            if (st == dnnl_unimplemented) { /* remembered: the caller's kernels, at once */
                *p = (conv_dnnl_prim){ .kind = kind, .g = *g, .O = O, .has_bias = has_bias,
                                       .none = true, .used = ++c->clock };
                return AD_OK;
            }
            return ad_fail(st == dnnl_out_of_memory ? AD_ENOMEM : AD_EARG,
                           "%s: oneDNN could not make a convolution primitive for x [%d,%d,%d,%d], "
                           "%d outputs, kernel %dx%d, stride %d, pad %d: %s", who, g->N, g->C,
                           g->H, g->W, O, g->kh, g->kw, g->stride, g->pad, dnnl_status2str(st));
        }
    }
    p->used = ++c->clock;
    *prim = p->none ? NULL : p;
    return AD_OK;
}

/* ---- running it -------------------------------------------------------- */

/* OpenMP threads for this run: the kernels' count (threads.h). */
static void set_threads(const conv_dnnl_cache *c)
{
    (void)c;
#if HT_DNNL_OMP
    int n = ops_threads();
    if (omp_get_max_threads() != n) omp_set_num_threads(n);
#endif
}

/* Runs a reorder from memory `from` to memory `to`. */
static dnnl_status_t reorder_run(dnnl_primitive_t r, dnnl_memory_t from, dnnl_memory_t to,
                                 dnnl_stream_t stream)
{
    dnnl_exec_arg_t args[2] = { { DNNL_ARG_FROM, from }, { DNNL_ARG_TO, to } };
    return dnnl_primitive_execute(r, stream, 2, args);
}

int conv_dnnl_run(conv_dnnl_prim *p, ad_real *out, const ad_real *a, const ad_real *b,
                  const ad_real *c, const char *who)
{
    conv_dnnl_cache *cache = pthread_getspecific(cache_key);
    AD_ASSERT(cache && p, "conv_dnnl_run without conv_dnnl_prepare on this thread");
    set_threads(cache);
    /* oneDNN's handles are void *; the inputs are only read */
    void *h[SLOTS] = { (void *)a, (void *)b, (void *)c, out };
    dnnl_exec_arg_t args[SLOTS];
    int n = 0;
    dnnl_status_t st = dnnl_success;
    for (int i = 0; i < SLOTS && st == dnnl_success; i++) {
        conv_dnnl_arg *s = &p->slot[i];
        if (!s->user) continue;
        st = dnnl_memory_set_data_handle(s->user, h[i]);
        if (st == dnnl_success && s->inner) st = dnnl_memory_set_data_handle(s->inner, cache->buf[i]);
        if (st == dnnl_success && s->inner && i != SLOT_OUT)
            st = reorder_run(s->reorder, s->user, s->inner, cache->stream);
        args[n++] = (dnnl_exec_arg_t){ s->arg, s->inner ? s->inner : s->user };
    }
    if (st == dnnl_success) st = dnnl_primitive_execute(p->prim, cache->stream, n, args);
    conv_dnnl_arg *o = &p->slot[SLOT_OUT];
    if (st == dnnl_success && o->inner) st = reorder_run(o->reorder, o->inner, o->user, cache->stream);
    if (st == dnnl_success) st = dnnl_stream_wait(cache->stream);
    if (st == dnnl_success) return AD_OK;
    return ad_fail(st == dnnl_out_of_memory ? AD_ENOMEM : AD_EARG, "%s: oneDNN failed to run: %s",
                   who, dnnl_status2str(st));
}
