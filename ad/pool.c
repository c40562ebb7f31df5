/* pool.c — the tape's memory: data blocks reused by size class, and the
 * headers of released values kept a while for the lifetime checks.
 *
 * Why a pool: a tape makes the same shapes step after step, and the values
 * of a released step are what the next step needs.  Handing every block back
 * to malloc made glibc return large blocks to the kernel and fault them in
 * again, step after step (the one-shot K = 1 run spent up to a third of its
 * time in the kernel).  The pool keeps a released block on a free list of its
 * size class and gives it to the next value of that class.
 *
 * Size classes: a block's bytes rounded up to 64 (to 4 KiB from 64 KiB up:
 * at most 6 % more than asked).  Within a class the block freed last goes
 * out first (it is the one still in cache); when the class has none, the
 * smallest free block up to twice the size does (the value notes the size
 * of its block, ad_value.data_bytes, to give it back to the right class).
 *
 * Bound: a miss (no free block of the class) first gives back free blocks,
 * the longest-unused first, until the pool holds at most twice the most it
 * ever had in use; so a change of shapes cannot pile up blocks no one takes.
 * ad_tape_reset keeps the free blocks for the next round (a tape reset per
 * hyper-iteration reuses them); ad_tape_trim and ad_tape_free give them back.
 *
 * The price: blocks are not split or merged, and a tape's free blocks serve
 * only that tape, so a process holds more than malloc would have kept in use
 * at once.  The one-shot program's representation tape (recorded forward,
 * then a plain sweep whose temporaries come in sizes the forward never asks
 * for again) keeps about 1.3 times its peak live bytes, and another tape
 * running meanwhile cannot use them: its peak RSS grew from 297 to 355 MB at
 * K = 1 (page faults fell from 1.5 million to 97 thousand).  Giving blocks
 * back at ad_tape_reset or ad_tape_rewind was measured too: the faults came
 * back, the RSS stayed within 10 % of this.
 *
 * Not done, measured: a cache that hands a freed tape's blocks to the next
 * tape.  hg_krmd makes a tape per hypergradient, which takes 256 fresh
 * blocks (8.6 MB) per call in the one-shot run (64 channels, K = 1), and
 * those blocks are most of the page faults left.  But with glibc told
 * never to trim or map (GLIBC_TUNABLES mmap_threshold 256 MiB, trim_threshold
 * 1 GiB: more than any such cache could save), `bench-ops --oneshot --K 1
 * --repeats 3` took the same CPU time, A/B ratio 1.00 on one thread and 1.01
 * with two task workers (--threads 2), 2026-12-02: the faults cost little
 * next to the kernels now.
 *
 * Headers: a value's struct is its own small allocation, apart from its data.
 * When a value is released its data go back to the pool, but its struct is
 * kept, marked dead (magic, why, when), in a FIFO of the last POOL_KEEP
 * released values: a stale pointer to it then reads a dead header, and
 * ad_value_check reports the use instead of reading garbage.  Beyond that
 * the struct is reused for a new value of the tape (at most POOL_SPARE_HEADERS
 * wait for one) or freed; a use of it is undefined (AddressSanitizer, under
 * which they are always freed, reports it).  When the tape is freed its FIFO
 * joins a process-wide one that also keeps the structs of freed
 * caller-owned leaves.
 *
 * AddressSanitizer: a free block is poisoned (its bookkeeping lives outside
 * it), so a read through a stale data pointer is reported while the block is
 * free; a block handed out is poisoned past the bytes asked, so an overflow
 * is reported even in a block bigger than asked, and its bytes are set to
 * 0xff (NaN), so that a kernel that reads a result it has not written shows
 * NaN in the tests.  A struct leaving a FIFO is freed, and ASan's own
 * quarantine watches it from there. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#if defined(__SANITIZE_ADDRESS__)
#define POOL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define POOL_ASAN 1
#endif
#endif
#ifdef POOL_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/* A free block: its memory, its class, and its places in two lists. */
typedef struct pool_node {
    void *mem;
    size_t bytes;                       /* its class */
    struct pool_node *next, *prev;      /* its class's free list; next is older */
    struct pool_node *newer, *older;    /* every free block, by when it was freed */
} pool_node;

typedef struct pool_class {
    size_t bytes;   /* the blocks' size */
    pool_node *top; /* the block freed last, or NULL */
} pool_class;

/* The released headers a FIFO keeps: a ring of `cap` entries. */
typedef struct grave {
    ad_value **v;
    size_t cap, first, n;
} grave;

struct pool {
    pool_class *cls;      /* sorted by bytes */
    size_t cls_cap, cls_n;
    pool_node *newest, *oldest;
    pool_node *spare;     /* unused nodes, a list through next */
    size_t n_nodes;       /* nodes allocated, in use or spare */
    size_t used, free;    /* block bytes handed out, and kept free */
    size_t peak_used, peak_total;
    size_t live_headers;
    ad_value *spare_headers; /* structs out of the FIFO, for new values (a list through next) */
    size_t n_spare_headers;
    size_t n_fresh, n_reused, n_scratch;
    grave kept;
};



/* ---- size classes ------------------------------------------------------ */

static size_t class_of(size_t bytes)
{
    size_t g = bytes >= ((size_t)64 << 10) ? 4096 : 64;
    if (bytes == 0) bytes = 1;
    return (bytes + g - 1) / g * g;
}

/* The first class of at least `bytes` (cls_n when none). */
static size_t lower_bound(const pool *p, size_t bytes)
{
    size_t lo = 0, hi = p->cls_n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (p->cls[mid].bytes < bytes) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static pool_class *find_class(const pool *p, size_t bytes)
{
    size_t i = lower_bound(p, bytes);
    return i < p->cls_n && p->cls[i].bytes == bytes ? &p->cls[i] : NULL;
}

/* The class of `bytes`, added when missing; NULL only when out of memory. */
static pool_class *class_for(pool *p, size_t bytes)
{
    size_t i = lower_bound(p, bytes);
    if (i < p->cls_n && p->cls[i].bytes == bytes) return &p->cls[i];
    if (p->cls_n == p->cls_cap) {
        size_t cap = p->cls_cap ? 2 * p->cls_cap : 64;
        pool_class *t = realloc(p->cls, cap * sizeof *t);
        if (!t) return NULL;
        p->cls = t;
        p->cls_cap = cap;
    }
    memmove(p->cls + i + 1, p->cls + i, (p->cls_n - i) * sizeof *p->cls);
    p->cls[i] = (pool_class){ bytes, NULL };
    p->cls_n++;
    return &p->cls[i];
}

/* ---- free lists -------------------------------------------------------- */

static void unlink_node(pool *p, pool_class *c, pool_node *b)
{
    if (b->prev) b->prev->next = b->next; else c->top = b->next;
    if (b->next) b->next->prev = b->prev;
    if (b->newer) b->newer->older = b->older; else p->newest = b->older;
    if (b->older) b->older->newer = b->newer; else p->oldest = b->newer;
    b->next = p->spare; /* the node is spare now */
    p->spare = b;
    p->free -= b->bytes;
}

/* Gives the longest-unused free block back to the system. */
static void evict_oldest(pool *p)
{
    pool_node *b = p->oldest;
    pool_class *c = find_class(p, b->bytes);
    AD_ASSERT(c != NULL, "a free block without its size class");
    void *mem = b->mem;
    unlink_node(p, c, b);
    UNPOISON(mem, b->bytes);
    free(mem);
}

pool *pool_new(void)
{
    pool *p = calloc(1, sizeof *p);
    if (!p) ad_fail(AD_ENOMEM, "tape: out of memory for its pool");
    return p;
}

void pool_trim(pool *p)
{
    while (p->oldest) evict_oldest(p);
}

void *pool_take(pool *p, size_t bytes, size_t *cap)
{
    size_t n = class_of(bytes), i = lower_bound(p, n);
    /* The smallest free block that fits, up to twice the ask when the
     * caller can take a bigger block (cap != NULL). */
    size_t most = cap ? 2 * n : n;
    while (i < p->cls_n && p->cls[i].bytes <= most && !p->cls[i].top) i++;
    void *mem;
    if (i < p->cls_n && p->cls[i].bytes <= most) {
        pool_node *b = p->cls[i].top;
        mem = b->mem;
        n = b->bytes;
        unlink_node(p, &p->cls[i], b);
        UNPOISON(mem, n);
        p->n_reused++;
    } else {
        /* A miss: first make sure the pool stays within twice its peak use. */
        size_t bound = 2 * (p->peak_used > p->used + n ? p->peak_used : p->used + n);
        while (p->oldest && p->used + p->free + n > bound) evict_oldest(p);
        mem = aligned_alloc(64, n);
        if (!mem && p->oldest) { /* short of memory: give back every free block, once */
            pool_trim(p);
            mem = aligned_alloc(64, n);
        }
        if (!mem) {
            ad_fail(AD_ENOMEM, "out of memory allocating %zu bytes", bytes);
            return NULL;
        }
        p->n_fresh++;
    }
#ifdef POOL_ASAN
    memset(mem, 0xff, bytes);                   /* NaN: "not written yet" */
    POISON((char *)mem + bytes, n - bytes);     /* past the end: an overflow */
#endif
    p->used += n;
    if (p->used > p->peak_used) p->peak_used = p->used;
    if (p->used + p->free > p->peak_total) p->peak_total = p->used + p->free;
    if (cap) *cap = n;
    return mem;
}

/* Takes back a block pool_take handed out: `cap` is the capacity it said
 * (or the bytes asked, when it was asked for no capacity). */
void pool_give(pool *p, void *mem, size_t cap)
{
    if (!mem) return;
    size_t n = class_of(cap);
    AD_ASSERT(p->used >= n, "the pool got back more than it handed out");
    p->used -= n;
    pool_class *c = class_for(p, n);
    pool_node *b = p->spare;
    if (b) p->spare = b->next;
    else if (c && (b = malloc(sizeof *b))) p->n_nodes++;
    if (!c || !b) { /* no room to keep it: give it back at once */
        if (b) { b->next = p->spare; p->spare = b; }
        free(mem);
        return;
    }
    *b = (pool_node){ .mem = mem, .bytes = n, .next = c->top, .older = p->newest };
    if (c->top) c->top->prev = b;
    c->top = b;
    if (p->newest) p->newest->newer = b; else p->oldest = b;
    p->newest = b;
    p->free += n;
    POISON(mem, n);
}

/* ---- scratch for op authors (node.h) ------------------------------------ */

void *ad_scratch_take(ad_tape *tp, size_t bytes)
{
    if (!tp) {
        ad_fail(AD_EARG, "scratch: tape is NULL");
        return NULL;
    }
    pool *p = tape_pool(tp);
    void *mem = pool_take(p, bytes, NULL);
    if (mem) p->n_scratch++;
    return mem;
}

void ad_scratch_give(ad_tape *tp, void *mem, size_t bytes)
{
    if (!tp || !mem) return;
    pool *p = tape_pool(tp);
    AD_ASSERT(p->n_scratch > 0, "ad_scratch_give without ad_scratch_take");
    p->n_scratch--;
    pool_give(p, mem, bytes);
}

/* ---- headers, and the FIFOs of released ones ----------------------------- */

/* Ring sizes: powers of two (the ring index is masked).  A tape also keeps
 * up to POOL_SPARE_HEADERS structs that left its ring, for its next values. */
enum { POOL_KEEP = 2048, GLOBAL_KEEP = 4096, POOL_SPARE_HEADERS = 64 };

static void header_free(ad_value *v)
{
    free((char *)v->name);
    free(v);
}

ad_value *pool_header(pool *p)
{
    ad_value *v = p->spare_headers;
    if (v) { /* one that left the FIFO: reused rather than freed and made again */
        p->spare_headers = v->next;
        p->n_spare_headers--;
        free((char *)v->name);
        memset(v, 0, sizeof *v);
    } else if (!(v = calloc(1, sizeof *v))) {
        ad_fail(AD_ENOMEM, "out of memory for a value");
        return NULL;
    }
    p->live_headers++;
    return v;
}

/* Pushes v on ring g (allocated on first use with `cap` entries, a power of
 * two) and returns the entry it pushed out, if any, for the caller to free;
 * v itself when the ring cannot be allocated. */
static ad_value *grave_push(grave *g, size_t cap, ad_value *v)
{
    if (!g->v) {
        if (!(g->v = malloc(cap * sizeof *g->v))) return v;
        g->cap = cap;
    }
    ad_value *out = NULL;
    if (g->n == g->cap) {
        out = g->v[g->first];
        g->first = (g->first + 1) & (g->cap - 1);
        g->n--;
    }
    g->v[(g->first + g->n++) & (g->cap - 1)] = v;
    return out;
}

void pool_bury(pool *p, ad_value *v)
{
    p->live_headers--;
    ad_value *out = grave_push(&p->kept, POOL_KEEP, v);
    if (!out) return;
#ifndef POOL_ASAN
    if (p->n_spare_headers < POOL_SPARE_HEADERS) { /* for the next value */
        out->next = p->spare_headers;
        p->spare_headers = out;
        p->n_spare_headers++;
        return;
    }
#endif
    header_free(out); /* under ASan always: its quarantine watches it from here */
}

/* The process-wide FIFO: structs of freed leaves, and those a freed tape
 * kept.  A spin lock: it is taken once per ad_value_free and ad_tape_free,
 * and held for a few stores (the frees happen outside it). */
static grave global_kept;
static ad_value *global_ring[GLOBAL_KEEP];
static atomic_flag global_lock = ATOMIC_FLAG_INIT;

static void global_bury_n(size_t n, ad_value *const *vs)
{
    enum { BATCH = 64 };
    for (size_t k = 0; k < n; k += BATCH) {
        ad_value *out[BATCH];
        size_t m = n - k < BATCH ? n - k : BATCH, n_out = 0;
        while (atomic_flag_test_and_set_explicit(&global_lock, memory_order_acquire)) {}
        if (!global_kept.v) {
            global_kept.v = global_ring;
            global_kept.cap = GLOBAL_KEEP;
        }
        for (size_t i = 0; i < m; i++) {
            ad_value *o = grave_push(&global_kept, GLOBAL_KEEP, vs[k + i]);
            if (o) out[n_out++] = o;
        }
        atomic_flag_clear_explicit(&global_lock, memory_order_release);
        for (size_t i = 0; i < n_out; i++) header_free(out[i]);
    }
}

void graveyard_bury(ad_value *v)
{
    global_bury_n(1, &v);
}

void pool_free(pool *p)
{
    if (!p) return;
    AD_ASSERT(p->n_scratch == 0, "a scratch buffer was not given back before ad_tape_free");
    AD_ASSERT(p->live_headers == 0, "values outlived their tape");
    pool_trim(p);
    for (pool_node *b = p->spare, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    /* The tape's kept headers join the process-wide FIFO, oldest first; they
     * no longer name the tape, which is about to go. */
    ad_value *batch[64];
    size_t n = 0;
    for (size_t i = 0; i < p->kept.n; i++) {
        ad_value *v = p->kept.v[(p->kept.first + i) & (p->kept.cap - 1)];
        v->tape = NULL;
        batch[n++] = v;
        if (n == 64 || i + 1 == p->kept.n) {
            global_bury_n(n, batch);
            n = 0;
        }
    }
    for (ad_value *v = p->spare_headers, *next; v; v = next) {
        next = v->next;
        header_free(v);
    }
    free(p->kept.v);
    free(p->cls);
    free(p);
}

void pool_stats(const pool *p, ad_tape_stats *st)
{
    size_t header = sizeof(ad_value), kept = p->kept.n;
    size_t meta = p->n_nodes * sizeof(pool_node) + p->cls_cap * sizeof(pool_class)
                  + p->kept.cap * sizeof(ad_value *);
    size_t headers = (p->live_headers + kept + p->n_spare_headers) * header;
    st->pool_bytes = p->used + p->free + headers + meta;
    st->pool_free_bytes = p->free;
    st->pool_peak_block_bytes = p->peak_total;
    st->pool_header_bytes = headers;
    st->blocks_fresh = p->n_fresh;
    st->blocks_reused = p->n_reused;
    st->released_kept = kept;
}
