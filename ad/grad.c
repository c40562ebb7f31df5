/* grad.c — the reverse sweep.
 *
 * 1. Collect: from the outputs through inputs, always taking the value with
 *    the largest id next (a max-heap of ids), and keeping only values on a
 *    gradient path whose id is at least the smallest target id.  Inputs have
 *    smaller ids than their outputs, so values come out newest first — in
 *    decreasing id order, a topological order — and the copies of a value
 *    reached along several paths come out one after another.  (And nothing
 *    older than the oldest target can lead to one: this is what keeps one
 *    inner step's grad from walking the whole history.)
 * 2. Relevance: in increasing id order, a value is relevant when it is a
 *    target or one of its inputs is.
 * 3. Sweep: in decreasing id order, each relevant node hands its accumulated
 *    gradient to its op's backward rule and adds the results into its
 *    inputs' accumulators.
 *
 * With create_graph the rules' ops are recorded, so the gradients are nodes
 * themselves.  Without it the sweep records nothing and frees each
 * temporary as soon as no accumulator needs it, so memory stays near one
 * step's worth even when back-propagating through many steps.
 *
 * Partial derivatives (ad_vjp_partial): the targets are cut points.  Collect
 * does not go on through a target's inputs, so a target's gradient is only
 * what reaches it from the outputs, never passed further back, and the
 * walk stays between the outputs and the targets.  This is what a
 * step-by-step reverse pass needs: from the state after step t, the targets
 * (state before step t, λ) give v_{t−1} = A_tᵀ v_t and λ's share B_tᵀ v_t of
 * that one step.  Without the cut, λ's entry would also collect every
 * earlier step's share (through the state before step t), and the walk
 * would go back through the whole tape.  The id floor is the same rule as
 * above: a caller-owned λ is old, so the floor is low, but the cut already
 * bounds the walk.  Raising the floor above λ would be wrong: a value made
 * from λ before the cut points (e^λ computed once at the start and read at
 * every step) still leads to λ, and its path is part of the partial.
 *
 * Sums of contributions, float build: a value used many times gets a
 * contribution from each use — λ one from every recorded step of K-RMD — and
 * a float running sum of them drifts: 10⁵ uses of 0.1 came to 9998.56,
 * K-RMD's λ at T = 10⁵ was 7.8e-4 off the double build's.  So in the float
 * build a slot that receives a third contribution keeps its sum in double
 * (slot.wide, scratch from the tape's pool, given back when the slot is
 * emptied), and its float accumulator holds that sum rounded, rewritten
 * after every addition, in plain and recorded sweeps alike (a recorded
 * sum's node gets the rounded total as its value; its rule does not read
 * it).  Not from the second: the float sum of two floats is their exact sum
 * rounded once, the same as a double sum rounded (double has more than
 * 2·24 + 2 bits); and values used twice are common and large (an
 * activation read by two ops), where a double copy for them too cost 5 %
 * of the float one-shot benchmark's CPU time (2.6 % without; both
 * measured on a busy machine).  So every gradient the sweep passes on or
 * hands out is off the exact sum S of its contributions by at most
 * ε·|c₁ + c₂| + ε·|S| (plus double's round-off), however many there are;
 * only when the first two cancel against later ones does ε·|c₁ + c₂|
 * matter.
 * The double build adds into the accumulator as it always did.
 *
 * Backward rules are checked: the sweep clears the error channel before
 * each rule, and a rule that returns a status other than AD_OK, or during
 * which an op failed (ad_error_code() is set), fails the sweep with that
 * op's status and message, named after the node's op.  So a rule may
 * simply return AD_OK after building gin[] with ops.  A message that was
 * set before the sweep is put back when the sweep succeeds.
 *
 * The sweep writes nothing into the values it walks: its scratch (whether a
 * value is a target or relevant, the gradient it has accumulated, where its
 * inputs are) sits in arrays of its own, one slot per collected value in
 * collection order.  Caller-owned leaves — λ, the data — may be walked by
 * sweeps on other threads at the same moment (the thread contract at the
 * top of ad.h). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* The engine's own op: adding two gradient contributions of equal shape. */
static int acc_add_backward(ad_tape *tp, ad_value *out, ad_value *gout, ad_value **gin)
{
    (void)tp;
    (void)out;
    gin[0] = gout;
    gin[1] = gout;
    return AD_OK;
}

static const ad_op acc_add_op = { "accumulate", acc_add_backward, ad_reads_nothing };

/* Whether sums of contributions are kept in double (see the top). */
enum { WIDE_SUMS = !HT_REAL_IS_DOUBLE };

/* a + b [a's shape], as a node.  wide: NULL, or (float build) the double sum
 * behind a, to which b is added; the result is then that sum rounded. */
static ad_value *acc_add(ad_tape *tp, ad_value *a, ad_value *b, double *wide)
{
    ad_value *in[2] = { a, b };
    ad_value *out = ad_node_new(tp, &acc_add_op, a->rank, a->shape, 2, in);
    if (!out) return NULL;
    if (wide)
        for (size_t i = 0; i < out->size; i++) out->data[i] = (ad_real)(wide[i] += b->data[i]);
    else
        for (size_t i = 0; i < out->size; i++) out->data[i] = a->data[i] + b->data[i];
    return out;
}

/* The sweep's scratch for one collected value. */
typedef struct slot {
    ad_value *acc;          /* gradient accumulated so far, or NULL */
    double *wide;           /* float build: acc's sum in double, from its third term */
    int held;               /* acc's entry in sweep.held, or -1 (see there) */
    bool summed;            /* acc is a sum (of two terms or more) */
    int in[AD_MAX_INPUTS];  /* the inputs' positions in the order; -1: not collected */
    bool target, relevant;
} slot;
_Static_assert(AD_MAX_INPUTS == 4, "add_slot's initializer of slot.in names every input");

/* Collect's worklist entry: value v, reached as input `in` of the value at
 * position `user` (user −1: v is an output). */
typedef struct reach {
    uint64_t id; /* v->id, the heap's key */
    ad_value *v;
    int user, in;
} reach;

/* A gradient a plain sweep made and keeps in some slots' acc, and how many:
 * it is freed when the last lets go. */
typedef struct held_grad {
    ad_value *v;
    int refs;
} held_grad;

struct sweep {
    ad_tape *tp;
    uint64_t start_id; /* values with a larger id were made by this sweep */
    bool create_graph;
    bool all_leaves;   /* ad_backward: every caller-owned parameter is a target */
    bool cut;          /* ad_vjp_partial: collect stops at the targets */
    uint64_t *cut_ids; /* the targets' ids, sorted (cut sweeps only) */
    size_t cut_n, cut_cap;
    value_list order;  /* the collected values, newest (largest id) first */
    slot *at;          /* at[j]: the scratch of order.v[j] */
    size_t at_cap;
    reach *heap;       /* collect's max-heap by id */
    size_t heap_n, heap_cap;
    held_grad *held;   /* plain sweeps only */
    size_t held_n, held_cap;
    size_t node_held;  /* held_n when the running node's rule started */
    uint64_t node_id;  /* the first id the running node's rule could make */
};

/* A sweep on tp, with the tape's spare working memory when it has one (a
 * sweep started from inside another, by a backward rule, gets its own). */
static sweep *sweep_begin(ad_tape *tp, bool create_graph, bool all_leaves, bool cut)
{
    sweep **spare = tape_spare_sweep(tp), *s = *spare;
    *spare = NULL;
    if (!s && !(s = calloc(1, sizeof *s))) {
        ad_fail(AD_ENOMEM, "grad: out of memory");
        return NULL;
    }
    s->tp = tp;
    s->create_graph = create_graph;
    s->all_leaves = all_leaves;
    s->cut = cut;
    s->order.n = s->heap_n = s->held_n = s->cut_n = 0;
    return s;
}

void sweep_free(sweep *s)
{
    if (!s) return;
    free(s->order.v);
    free(s->at);
    free(s->heap);
    free(s->held);
    free(s->cut_ids);
    free(s);
}

static bool sweep_made(const sweep *s, const ad_value *v)
{
    return !s->create_graph && v->id > s->start_id;
}

/* Array a of *cap entries of `size` bytes, made twice as long (16 entries
 * at first); NULL (message set; a and *cap unchanged) when out of memory. */
static void *grow_array(void *a, size_t *cap, size_t size)
{
    size_t c = *cap ? 2 * *cap : 16;
    void *p = realloc(a, c * size);
    if (!p) {
        ad_fail(AD_ENOMEM, "grad: out of memory for the sweep's %zu entries", c);
        return NULL;
    }
    *cap = c;
    return p;
}

/* Position of v in the order, or -1 when the sweep did not collect it (a
 * binary search: the order is sorted by id, largest first). */
static int position(const sweep *s, const ad_value *v)
{
    size_t lo = 0, hi = s->order.n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint64_t id = s->order.v[mid]->id;
        if (id == v->id) return (int)mid;
        if (id > v->id) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

/* ---- 1 and 2: collect, relevance ---- */

static int heap_push(sweep *s, reach r)
{
    if (s->heap_n == s->heap_cap) {
        reach *h = grow_array(s->heap, &s->heap_cap, sizeof *h);
        if (!h) return AD_ENOMEM;
        s->heap = h;
    }
    size_t i = s->heap_n++; /* sift up */
    while (i > 0 && s->heap[(i - 1) / 2].id < r.id) {
        s->heap[i] = s->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    s->heap[i] = r;
    return AD_OK;
}

static reach heap_pop(sweep *s)
{
    reach top = s->heap[0], last = s->heap[--s->heap_n];
    size_t i = 0, n = s->heap_n; /* sift the last entry down from the root */
    for (size_t c; (c = 2 * i + 1) < n; i = c) {
        if (c + 1 < n && s->heap[c + 1].id > s->heap[c].id) c++;
        if (s->heap[c].id <= last.id) break;
        s->heap[i] = s->heap[c];
    }
    if (n > 0) s->heap[i] = last;
    return top;
}

/* Reaching v matters only on a gradient path not older than the targets. */
static int reach_value(sweep *s, ad_value *v, int user, int in, uint64_t min_id)
{
    if (!v->requires_grad || v->id < min_id) return AD_OK;
    return heap_push(s, (reach){ v->id, v, user, in });
}

/* Appends v to the order with a fresh slot. */
static int add_slot(sweep *s, ad_value *v)
{
    if (s->order.n >= INT_MAX) return ad_fail(AD_ENOMEM, "grad: too many values");
    if (s->order.n == s->at_cap) {
        slot *at = grow_array(s->at, &s->at_cap, sizeof *at);
        if (!at) return AD_ENOMEM;
        s->at = at;
    }
    s->at[s->order.n] = (slot){ .held = -1, .in = { -1, -1, -1, -1 },
                                .target = s->all_leaves && !v->tape && !v->op };
    return value_list_push(&s->order, v);
}

static int cmp_id(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* A cut sweep's targets, by id, sorted for is_cut. */
static int set_cut_points(sweep *s, int n, ad_value *const *xs)
{
    while (s->cut_cap < (size_t)n) {
        uint64_t *ids = grow_array(s->cut_ids, &s->cut_cap, sizeof *ids);
        if (!ids) return AD_ENOMEM;
        s->cut_ids = ids;
    }
    for (int i = 0; i < n; i++) s->cut_ids[i] = xs[i]->id;
    s->cut_n = (size_t)n;
    qsort(s->cut_ids, s->cut_n, sizeof *s->cut_ids, cmp_id);
    return AD_OK;
}

/* Whether collect stops at v: a target of a cut sweep (binary search). */
static bool is_cut(const sweep *s, const ad_value *v)
{
    size_t lo = 0, hi = s->cut_n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->cut_ids[mid] == v->id) return true;
        if (s->cut_ids[mid] < v->id) lo = mid + 1;
        else hi = mid;
    }
    return false;
}

static int collect(sweep *s, int m, ad_value *const *ys, uint64_t min_id)
{
    int rc = AD_OK;
    for (int k = 0; k < m && rc == AD_OK; k++) rc = reach_value(s, ys[k], -1, 0, min_id);
    while (rc == AD_OK && s->heap_n > 0) {
        reach r = heap_pop(s);
        size_t n = s->order.n;
        bool seen = n > 0 && s->order.v[n - 1] == r.v; /* copies come out together */
        if (!seen) {
            rc = add_slot(s, r.v);
            /* A cut point keeps its slot.in at -1: the sweep will not run its
             * node, and what lies behind it is not collected. */
            bool cut = s->cut_n > 0 && is_cut(s, r.v);
            for (int i = 0; i < r.v->n_inputs && rc == AD_OK && !cut; i++)
                rc = reach_value(s, r.v->inputs[i], (int)n, i, min_id);
        }
        if (r.user >= 0) s->at[r.user].in[r.in] = (int)(seen ? n - 1 : n);
    }
    if (rc != AD_OK) s->order.n = 0; /* nothing for finish to clear */
    return rc;
}

/* Marks the targets xs (those collected) and then every value that leads to one. */
static void find_relevant(sweep *s, int n, ad_value *const *xs)
{
    for (int i = 0; i < n; i++) {
        int j = position(s, xs[i]);
        if (j >= 0) s->at[j].target = true;
    }
    for (size_t j = s->order.n; j-- > 0;) { /* oldest first: inputs before their users */
        slot *sj = &s->at[j];
        bool rel = sj->target;
        for (int i = 0; i < s->order.v[j]->n_inputs && !rel; i++)
            rel = sj->in[i] >= 0 && s->at[sj->in[i]].relevant;
        sj->relevant = rel;
    }
}

/* ---- 3: the sweep ---- */

/* g's entry in s->held, made on first sight; *h = -1 when the sweep keeps g
 * anyway (a recorded sweep keeps every gradient; a seed may be the caller's).
 * A backward rule hands back values it made itself, or gout — the node's own
 * accumulator, entry `own` — so anything else made earlier is an error. */
static int hold(sweep *s, ad_value *g, int own, int *h)
{
    *h = -1;
    if (!sweep_made(s, g)) return AD_OK;
    if (own >= 0 && s->held[own].v == g) {
        *h = own;
        return AD_OK;
    }
    for (size_t k = s->node_held; k < s->held_n; k++)
        if (s->held[k].v == g) {
            *h = (int)k;
            return AD_OK;
        }
    AD_ASSERT(g->id >= s->node_id, "a backward rule returned a gradient of another node");
    if (s->held_n == s->held_cap) {
        held_grad *more = grow_array(s->held, &s->held_cap, sizeof *more);
        if (!more) return AD_ENOMEM;
        s->held = more;
    }
    s->held[s->held_n] = (held_grad){ g, 0 };
    *h = (int)s->held_n++;
    return AD_OK;
}

/* Lets go of entry h: the last one to let go frees the value. */
static void let_go(sweep *s, int h)
{
    if (h < 0) return;
    AD_ASSERT(s->held[h].refs > 0, "a gradient released more often than held");
    if (--s->held[h].refs == 0) tape_free_value(s->tp, s->held[h].v);
}

/* Empties a slot's accumulator (and gives its double sum back). */
static void clear_acc(sweep *s, slot *sl)
{
    int h = sl->held;
    if (sl->wide) ad_scratch_give(s->tp, sl->wide, sl->acc->size * sizeof *sl->wide);
    sl->wide = NULL;
    sl->summed = false;
    sl->acc = NULL;
    sl->held = -1;
    let_go(s, h);
}

static int set_acc(sweep *s, slot *sl, ad_value *g, int own)
{
    int h, rc = hold(s, g, own, &h);
    if (rc != AD_OK) return rc;
    if (h >= 0) s->held[h].refs++;
    sl->acc = g;
    sl->held = h;
    return AD_OK;
}

/* For tape_free_temps: a value the running node's rule made that a slot
 * holds (those it made earlier have smaller ids than any it asks about). */
static bool holds(const ad_value *v, void *ctx)
{
    const sweep *s = ctx;
    for (size_t k = s->node_held; k < s->held_n; k++)
        if (s->held[k].v == v) return s->held[k].refs > 0;
    return false;
}

/* Float build, a slot's third contribution: its double sum, from the first
 * two (acc) — scratch memory of the tape, held until clear_acc. */
static int widen(sweep *s, slot *sl)
{
    size_t n = sl->acc->size;
    if (!(sl->wide = ad_scratch_take(s->tp, n * sizeof *sl->wide)))
        return ad_fail_wrap(AD_ENOMEM, "grad: the double sum of a gradient");
    for (size_t i = 0; i < n; i++) sl->wide[i] = sl->acc->data[i];
    return AD_OK;
}

/* acc += g, into the slot's own accumulator (through its double sum when
 * it has one, acc rounded from it). */
static void add_in_place(slot *sl, const ad_value *g)
{
    ad_real *acc = sl->acc->data;
    if (sl->wide)
        for (size_t i = 0; i < sl->acc->size; i++) acc[i] = (ad_real)(sl->wide[i] += g->data[i]);
    else
        for (size_t i = 0; i < sl->acc->size; i++) acc[i] += g->data[i];
}

/* The one place gradient contributions meet: set, or add.  `own` as in hold. */
static int accumulate(sweep *s, int j, ad_value *g, int own)
{
    slot *sl = &s->at[j];
    if (!sl->acc) return set_acc(s, sl, g, own);
    if (WIDE_SUMS && sl->summed && !sl->wide && widen(s, sl) != AD_OK) return AD_ENOMEM;
    sl->summed = true;
    if (sl->held >= 0 && s->held[sl->held].refs == 1) { /* plain, and ours alone */
        add_in_place(sl, g);
        return AD_OK;
    }
    ad_value *sum = acc_add(s->tp, sl->acc, g, sl->wide);
    if (!sum) return AD_ENOMEM;
    int old = sl->held, rc = set_acc(s, sl, sum, -1);
    if (rc == AD_OK) let_go(s, old);
    return rc;
}

/* A backward rule returned `rc`, and ad_error_code() says whether an op
 * failed while it ran (the channel was cleared before): AD_OK when neither,
 * else the op's status (or the rule's, when no op failed) with a message
 * naming the node's op. */
static int check_rule(const ad_value *v, int rc)
{
    int code = ad_error_code();
    if (rc == AD_OK && code == AD_OK) return AD_OK;
    if (code == AD_OK) /* the rule failed without saying why */
        return ad_fail(rc, "grad: the backward rule of '%s' failed (status %d) and left no "
                       "message", v->op->name, rc);
    return ad_fail_wrap(code, "grad: the backward rule of '%s'", v->op->name);
}

static int run_node(sweep *s, size_t j)
{
    ad_value *v = s->order.v[j];
    const slot *sv = &s->at[j];
    bool any = false;
    for (int i = 0; i < v->n_inputs; i++) any |= sv->in[i] >= 0 && s->at[sv->in[i]].relevant;
    if (!any) return AD_OK;
    if (!v->op->backward)
        return ad_fail(AD_ENOGRAD, "grad: op '%s' has no backward rule", v->op->name);
    s->node_id = value_next_id();
    s->node_held = s->held_n;
    ad_value *gin[AD_MAX_INPUTS] = { 0 };
    ad_error_clear(); /* so that check_rule sees what this rule did */
    int rc = check_rule(v, v->op->backward(s->tp, v, sv->acc, gin));
    for (int i = 0; i < v->n_inputs && rc == AD_OK; i++) {
        int u = sv->in[i];
        if (!gin[i] || u < 0 || !s->at[u].relevant) continue;
        AD_ASSERT(ad_same_shape(gin[i], v->inputs[i]), v->op->name);
        rc = accumulate(s, u, gin[i], sv->held);
    }
    if (!s->create_graph) tape_free_temps(s->tp, s->node_id, holds, s);
    return rc;
}

/* Empties every slot (in a plain sweep freeing what no one keeps) and hands
 * the working memory back to the tape for the next sweep. */
static void finish(sweep *s)
{
    for (size_t j = 0; j < s->order.n; j++) clear_acc(s, &s->at[j]);
    sweep **spare = tape_spare_sweep(s->tp);
    if (!*spare) *spare = s;
    else sweep_free(s);
}

static int seed_outputs(sweep *s, int m, ad_value *const *ys, ad_value *const *gys)
{
    char a[64], b[64];
    s->node_id = s->start_id; /* the seeds: made by the sweep itself, or the caller's */
    s->node_held = 0;
    for (int k = 0; k < m; k++) {
        ad_value *y = ys[k], *g = gys ? gys[k] : NULL;
        if (!g && y->size != 1)
            return ad_fail(AD_ESHAPE, "grad: output %s is not a scalar; "
                           "pass a seed gradient (ad_vjp)", ad_shape_str(y, a, 64));
        if (g && !ad_same_shape(g, y))
            return ad_fail(AD_ESHAPE, "vjp: seed %s does not match output %s",
                           ad_shape_str(g, a, 64), ad_shape_str(y, b, 64));
        int j = position(s, y);
        if (j < 0 || !s->at[j].relevant) continue; /* no seed made for it: none to leave */
        if (!g) {
            g = ad_const_fill(s->tp, y->rank, y->shape, 1);
            if (!g) return AD_ENOMEM;
            ad_value_set_name(g, "seed"); /* so a drawing of a recorded sweep says so */
        }
        int rc = accumulate(s, j, g, -1);
        if (rc != AD_OK) return rc;
    }
    return AD_OK;
}

static int run_sweep(sweep *s, int m, ad_value *const *ys, ad_value *const *gys)
{
    int rc = seed_outputs(s, m, ys, gys);
    for (size_t j = 0; j < s->order.n && rc == AD_OK; j++) { /* newest first */
        slot *sj = &s->at[j];
        if (!sj->acc || !s->order.v[j]->op || !sj->relevant) continue;
        rc = run_node(s, j);
        if (!sj->target) clear_acc(s, sj); /* its gradient has been passed on */
    }
    return rc;
}

static int check_args(ad_tape *tp, int m, ad_value *const *ys, int n,
                      ad_value *const *xs, ad_value **gx)
{
    if (!tp) return ad_fail(AD_EARG, "grad: tape is NULL");
    if (m < 1 || !ys) return ad_fail(AD_EARG, "grad: no outputs");
    if (n < 0 || (n > 0 && (!xs || !gx))) return ad_fail(AD_EARG, "grad: bad input list");
    if (ad_any_null(m, ys)) return ad_fail(AD_EARG, "grad: an output is NULL "
                                           "(an earlier op failed: check its message)");
    if (ad_any_null(n, xs)) return ad_fail(AD_EARG, "grad: an input is NULL");
    /* A released value (beyond the horizon, or its tape trimmed) is named with
     * the step that made it and when it went, not walked.  The sweep reads
     * no output's or target's data: a lean tape may have dropped them. */
    int rc = value_check_node_list(tp, "grad", "output", m, ys);
    if (rc == AD_OK) rc = value_check_node_list(tp, "grad", "input", n, xs);
    if (rc != AD_OK) return rc;
    for (int k = 0; k < m; k++)
        if (ys[k]->tape && ys[k]->tape != tp)
            return ad_fail(AD_EARG, "grad: output %d belongs to another tape", k);
    return AD_OK;
}

static ad_value *zeros_like(ad_tape *tp, const ad_value *x)
{
    return ad_const_fill(tp, x->rank, x->shape, 0);
}

/* The error channel as it was before a sweep, which clears it before each
 * backward rule (check_rule): put back when the sweep succeeds, so that a
 * caller's earlier message survives a sweep that did not fail. */
typedef struct earlier_error {
    int code;
    char message[1024];
} earlier_error;

static void error_save(earlier_error *e)
{
    e->code = ad_error_code();
    e->message[0] = '\0';
    if (e->code != AD_OK || ad_error()[0])
        snprintf(e->message, sizeof e->message, "%s", ad_error());
}

static void error_restore(const earlier_error *e, int rc)
{
    if (rc != AD_OK) return;
    if (e->code != AD_OK || e->message[0]) ad_fail(e->code, "%s", e->message);
    else ad_error_clear();
}

/* ad_vjp_many and ad_vjp_partial: the same sweep, with or without cuts. */
static int vjp(ad_tape *tp, int m, ad_value *const *ys, ad_value *const *gys, int n,
               ad_value *const *xs, ad_value **gx, bool create_graph, bool cut)
{
    int rc = check_args(tp, m, ys, n, xs, gx);
    for (int k = 0; gys && k < m && rc == AD_OK; k++) /* seeds are added: their data are read */
        if (gys[k]) rc = value_check_use(tp, "grad", "a seed", gys[k]);
    if (rc != AD_OK) return rc;
    sweep *s = sweep_begin(tp, create_graph, false, cut);
    if (!s) return AD_ENOMEM;
    earlier_error before;
    error_save(&before);
    uint64_t min_id = UINT64_MAX;
    for (int i = 0; i < n; i++) {
        if (xs[i]->id < min_id) min_id = xs[i]->id;
        gx[i] = NULL;
    }
    if (cut) rc = set_cut_points(s, n, xs);
    /* Recording state: a plain sweep records nothing; a recorded one records
     * even inside a caller's no-record scope (that is what was asked). */
    int depth = 0;
    if (create_graph)
        while (!ad_tape_recording(tp)) { ad_no_record_end(tp); depth++; }
    else
        ad_no_record_begin(tp);
    s->start_id = value_next_id();
    if (rc == AD_OK) rc = collect(s, m, ys, min_id);
    if (rc == AD_OK) {
        find_relevant(s, n, xs);
        rc = run_sweep(s, m, ys, gys);
    }
    for (int i = 0; i < n && rc == AD_OK; i++) {
        int j = position(s, xs[i]);
        if (j >= 0 && s->at[j].acc) {
            gx[i] = s->at[j].acc;
            if (s->at[j].held >= 0) s->held[s->at[j].held].refs++; /* the caller's now */
        } else if (!(gx[i] = zeros_like(tp, xs[i]))) {
            rc = AD_ENOMEM;
        }
    }
    for (int i = 0; i < n && rc == AD_OK; i++) /* a seed passed through: gx is the step's own */
        if (gx[i]->id < s->start_id && !(gx[i] = tape_copy_value(tp, gx[i]))) rc = ad_error_code();
    finish(s);
    if (create_graph)
        while (depth-- > 0) ad_no_record_begin(tp);
    else
        ad_no_record_end(tp);
    if (rc != AD_OK)
        for (int i = 0; i < n; i++) gx[i] = NULL;
    error_restore(&before, rc);
    return rc;
}

int ad_vjp_many(ad_tape *tp, int m, ad_value *const *ys, ad_value *const *gys,
                int n, ad_value *const *xs, ad_value **gx, bool create_graph)
{
    return vjp(tp, m, ys, gys, n, xs, gx, create_graph, false);
}

int ad_vjp_partial(ad_tape *tp, int m, ad_value *const *ys, ad_value *const *gys,
                   int n, ad_value *const *xs, ad_value **gx, bool create_graph)
{
    return vjp(tp, m, ys, gys, n, xs, gx, create_graph, true);
}

int ad_vjp(ad_tape *tp, ad_value *y, ad_value *gy, int n, ad_value *const *xs,
           ad_value **gx, bool create_graph)
{
    return ad_vjp_many(tp, 1, &y, gy ? &gy : NULL, n, xs, gx, create_graph);
}

int ad_grad(ad_tape *tp, ad_value *y, int n, ad_value *const *xs, ad_value **gx,
            bool create_graph)
{
    return ad_vjp_many(tp, 1, &y, NULL, n, xs, gx, create_graph);
}

int ad_backward(ad_tape *tp, ad_value *y)
{
    int rc = check_args(tp, 1, &y, 0, NULL, NULL);
    if (rc != AD_OK) return rc;
    sweep *s = sweep_begin(tp, false, true, false);
    if (!s) return AD_ENOMEM;
    earlier_error before;
    error_save(&before);
    ad_no_record_begin(tp);
    s->start_id = value_next_id();
    rc = collect(s, 1, &y, 0);
    if (rc == AD_OK) {
        find_relevant(s, 0, NULL);
        rc = run_sweep(s, 1, &y, NULL);
    }
    for (size_t j = 0; j < s->order.n && rc == AD_OK; j++) /* before any write: a freed grad */
        if (s->at[j].target && s->at[j].acc) rc = value_check_grad("backward", s->order.v[j]);
    for (size_t j = 0; j < s->order.n && rc == AD_OK; j++) {
        ad_value *p = s->order.v[j], *acc = s->at[j].acc;
        if (!s->at[j].target || !acc) continue;
        /* The one write into a caller-owned leaf: see ad.h on threads.  This
         * sweep's contributions arrive summed (in double, float build);
         * across calls the leaf's grad is a running sum in ad_real, as
         * PyTorch's .grad is in the parameter's dtype: the caller decides
         * how many calls it adds up and can zero or read it in between,
         * which a hidden double copy would not follow. */
        if (!p->grad && !(p->grad = value_alloc(p->rank, p->shape, true))) {
            rc = AD_ENOMEM;
            break;
        }
        for (size_t i = 0; i < p->size; i++) p->grad->data[i] += acc->data[i];
    }
    finish(s);
    ad_no_record_end(tp);
    error_restore(&before, rc);
    return rc;
}

int ad_zero_grad(ad_value *leaf)
{
    if (!leaf) return AD_OK; /* quiet, as the frees */
    int rc = value_check_node_use(NULL, "zero_grad", "the leaf", leaf);
    if (rc == AD_OK) rc = value_check_grad("zero_grad", leaf);
    if (rc == AD_OK && leaf->grad) memset(leaf->grad->data, 0, leaf->grad->size * sizeof(ad_real));
    return rc;
}

int ad_hvp(ad_tape *tp, ad_value *y, int n, ad_value *const *xs,
           ad_value *const *vs, ad_value **hv, bool create_graph)
{
    if (n < 1 || !vs || !hv) return ad_fail(AD_EARG, "hvp: bad arguments");
    if (ad_any_null(n, vs)) return ad_fail(AD_EARG, "hvp: a direction is NULL");
    int live = value_check_list(tp, "hvp", "direction", n, vs);
    if (live != AD_OK) return live;
    ad_value **g = calloc((size_t)n, sizeof *g);
    if (!g) return ad_fail(AD_ENOMEM, "hvp: out of memory");
    /* H v = d/dx (∇y · v): the vjp of the recorded gradient with seed v. */
    int rc = ad_grad(tp, y, n, xs, g, true);
    if (rc == AD_OK) rc = ad_vjp_many(tp, n, g, vs, n, xs, hv, create_graph);
    free(g);
    return rc;
}
