/* grad.c — the reverse sweep.
 *
 * 1. Collect: depth-first from the outputs through inputs, keeping only values
 *    on a gradient path whose id is at least the smallest target id (inputs
 *    always have smaller ids than their outputs, so nothing older can lead to
 *    a target: this is what keeps one inner step's grad from walking the
 *    whole history).
 * 2. Relevance: in increasing id order, a value is relevant when it is a
 *    target or one of its inputs is.
 * 3. Sweep: in decreasing id order (a topological order), each relevant node
 *    hands its accumulated gradient to its op's backward rule and adds the
 *    results into its inputs' accumulators.
 *
 * With create_graph the rules' ops are recorded, so the gradients are nodes
 * themselves.  Without it the sweep records nothing and frees each
 * temporary as soon as no accumulator needs it, so memory stays near one
 * step's worth even when back-propagating through many steps.
 *
 * The sweep writes nothing into the values it walks: its scratch (which
 * values it has seen, which are targets or relevant, the gradient each has
 * accumulated) sits in arrays of its own, at the value's position in the
 * sorted order, found through a map from value ids.  Caller-owned leaves — λ,
 * the data — may be walked by sweeps on other threads at the same moment
 * (the thread contract at the top of ad.h). */
#include <limits.h>
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

static const ad_op acc_add_op = { "accumulate", acc_add_backward };

static ad_value *acc_add(ad_tape *tp, ad_value *a, ad_value *b)
{
    ad_value *in[2] = { a, b };
    ad_value *out = ad_node_new(tp, &acc_add_op, a->rank, a->shape, 2, in);
    if (out)
        for (size_t i = 0; i < out->size; i++) out->data[i] = a->data[i] + b->data[i];
    return out;
}

static int by_id(const void *a, const void *b)
{
    uint64_t x = (*(ad_value *const *)a)->id, y = (*(ad_value *const *)b)->id;
    return (x > y) - (x < y);
}

/* The sweep's scratch for one collected value. */
typedef struct slot {
    ad_value *acc;          /* gradient accumulated so far, or NULL */
    int in[AD_MAX_INPUTS];  /* the inputs' positions in the order; -1: not collected */
    bool target, relevant;
} slot;

typedef struct sweep {
    ad_tape *tp;
    uint64_t start_id; /* values with a larger id were made by this sweep */
    bool create_graph;
    bool all_leaves;   /* ad_backward: every caller-owned parameter is a target */
    value_list order;  /* the collected values, sorted by id */
    slot *at;          /* at[j]: the scratch of order.v[j] */
    id_map index;      /* id of a collected value → its position j */
    id_map refs;       /* plain sweep: a value the sweep made → how many at[j].acc hold it */
} sweep;

static bool sweep_made(const sweep *s, const ad_value *v) { return !s->create_graph && v->id > s->start_id; }

/* Position of v in the order, or -1 when the sweep did not collect it. */
static int position(const sweep *s, const ad_value *v) { return id_map_get(&s->index, v->id, -1); }

/* Depth-first from the outputs; then sorted by id and numbered in that order. */
static int collect(sweep *s, int m, ad_value *const *ys, uint64_t min_id)
{
    value_list stack = { 0 };
    int rc = AD_OK;
    for (int k = 0; k < m && rc == AD_OK; k++) rc = value_list_push(&stack, ys[k]);
    while (rc == AD_OK && stack.n > 0) {
        ad_value *v = stack.v[--stack.n];
        if (!v->requires_grad || v->id < min_id) continue;
        int *seen = id_map_at(&s->index, v->id, -1);
        if (!seen) rc = AD_ENOMEM;
        else if (*seen >= 0) continue;
        else if (s->order.n >= INT_MAX) rc = ad_fail(AD_ENOMEM, "grad: too many values");
        else *seen = (int)s->order.n;
        if (rc == AD_OK) rc = value_list_push(&s->order, v);
        for (int i = 0; i < v->n_inputs && rc == AD_OK; i++) rc = value_list_push(&stack, v->inputs[i]);
    }
    free(stack.v);
    if (rc != AD_OK) return rc;
    if (s->order.n > 1) qsort(s->order.v, s->order.n, sizeof *s->order.v, by_id);
    s->at = calloc(s->order.n ? s->order.n : 1, sizeof *s->at);
    if (!s->at) return ad_fail(AD_ENOMEM, "grad: out of memory for %zu values", s->order.n);
    for (size_t j = 0; j < s->order.n; j++) /* ids already present: cannot fail */
        *id_map_at(&s->index, s->order.v[j]->id, -1) = (int)j;
    for (size_t j = 0; j < s->order.n; j++) {
        ad_value *v = s->order.v[j];
        for (int i = 0; i < v->n_inputs; i++) s->at[j].in[i] = position(s, v->inputs[i]);
        s->at[j].target = s->all_leaves && !v->tape && !v->op;
    }
    return AD_OK;
}

/* Marks the targets xs (those collected) and then every value that leads to one. */
static void find_relevant(sweep *s, int n, ad_value *const *xs)
{
    for (int i = 0; i < n; i++) {
        int j = position(s, xs[i]);
        if (j >= 0) s->at[j].target = true;
    }
    for (size_t j = 0; j < s->order.n; j++) {
        slot *sj = &s->at[j];
        bool rel = sj->target;
        for (int i = 0; i < s->order.v[j]->n_inputs && !rel; i++)
            rel = sj->in[i] >= 0 && s->at[sj->in[i]].relevant;
        sj->relevant = rel;
    }
}

/* For tape_free_temps: a temporary the sweep still holds as an accumulator. */
static bool held(const ad_value *v, void *ctx)
{
    return id_map_get(&((sweep *)ctx)->refs, v->id, 0) > 0;
}

static void unref(sweep *s, ad_value *a)
{
    if (!a || !sweep_made(s, a)) return;
    int *refs = id_map_at(&s->refs, a->id, 0); /* present: cannot fail */
    AD_ASSERT(*refs > 0, "an accumulator released more often than held");
    if (--*refs == 0) tape_free_value(s->tp, a);
}

static int set_acc(sweep *s, int j, ad_value *g)
{
    if (sweep_made(s, g)) {
        int *refs = id_map_at(&s->refs, g->id, 0);
        if (!refs) return AD_ENOMEM;
        ++*refs;
    }
    s->at[j].acc = g;
    return AD_OK;
}

/* The one place gradient contributions meet: set, or add. */
static int accumulate(sweep *s, int j, ad_value *g)
{
    ad_value *old = s->at[j].acc;
    if (!old) return set_acc(s, j, g);
    if (!s->create_graph && sweep_made(s, old) && id_map_get(&s->refs, old->id, 0) == 1) {
        for (size_t i = 0; i < old->size; i++) old->data[i] += g->data[i];
        return AD_OK;
    }
    ad_value *sum = acc_add(s->tp, old, g);
    if (!sum) return AD_ENOMEM;
    int rc = set_acc(s, j, sum);
    if (rc == AD_OK) unref(s, old);
    return rc;
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
    uint64_t mark = value_next_id();
    ad_value *gin[AD_MAX_INPUTS] = { 0 };
    int rc = v->op->backward(s->tp, v, sv->acc, gin);
    for (int i = 0; i < v->n_inputs && rc == AD_OK; i++) {
        int u = sv->in[i];
        if (!gin[i] || u < 0 || !s->at[u].relevant) continue;
        AD_ASSERT(ad_same_shape(gin[i], v->inputs[i]), v->op->name);
        rc = accumulate(s, u, gin[i]);
    }
    if (!s->create_graph) tape_free_temps(s->tp, mark, held, s);
    return rc;
}

/* Clears every accumulator (in a plain sweep freeing the ones not kept) and
 * the sweep's own arrays. */
static void finish(sweep *s, ad_value **keep, int n_keep)
{
    for (int i = 0; i < n_keep; i++) /* a kept accumulator outlives the clearing */
        if (keep[i] && id_map_get(&s->refs, keep[i]->id, 0) > 0) ++*id_map_at(&s->refs, keep[i]->id, 0);
    for (size_t j = s->order.n; s->at && j-- > 0;) {
        ad_value *a = s->at[j].acc;
        s->at[j].acc = NULL;
        unref(s, a);
    }
    free(s->order.v);
    free(s->at);
    id_map_free(&s->index);
    id_map_free(&s->refs);
}

static int seed_outputs(sweep *s, int m, ad_value *const *ys, ad_value *const *gys)
{
    char a[64], b[64];
    for (int k = 0; k < m; k++) {
        ad_value *y = ys[k], *g = gys ? gys[k] : NULL;
        if (!g) {
            if (y->size != 1)
                return ad_fail(AD_ESHAPE, "grad: output %s is not a scalar; "
                               "pass a seed gradient (ad_vjp)", ad_shape_str(y, a, 64));
            g = ad_const_fill(s->tp, y->rank, y->shape, 1);
            if (!g) return AD_ENOMEM;
        } else if (!ad_same_shape(g, y)) {
            return ad_fail(AD_ESHAPE, "vjp: seed %s does not match output %s",
                           ad_shape_str(g, a, 64), ad_shape_str(y, b, 64));
        }
        int j = position(s, y);
        if (j < 0 || !s->at[j].relevant) continue;
        int rc = accumulate(s, j, g);
        if (rc != AD_OK) return rc;
    }
    return AD_OK;
}

static int run_sweep(sweep *s, int m, ad_value *const *ys, ad_value *const *gys)
{
    int rc = seed_outputs(s, m, ys, gys);
    for (size_t j = s->order.n; j-- > 0 && rc == AD_OK;) {
        slot *sj = &s->at[j];
        if (!sj->acc || !s->order.v[j]->op || !sj->relevant) continue;
        rc = run_node(s, j);
        if (!sj->target) { /* its gradient has been passed on */
            ad_value *a = sj->acc;
            sj->acc = NULL;
            unref(s, a);
        }
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
    for (int k = 0; k < m; k++)
        if (ys[k]->tape && ys[k]->tape != tp)
            return ad_fail(AD_EARG, "grad: output %d belongs to another tape", k);
    return AD_OK;
}

static ad_value *zeros_like(ad_tape *tp, const ad_value *x)
{
    return ad_const_fill(tp, x->rank, x->shape, 0);
}

int ad_vjp_many(ad_tape *tp, int m, ad_value *const *ys, ad_value *const *gys,
                int n, ad_value *const *xs, ad_value **gx, bool create_graph)
{
    int rc = check_args(tp, m, ys, n, xs, gx);
    if (rc != AD_OK) return rc;
    sweep s = { .tp = tp, .create_graph = create_graph };
    uint64_t min_id = UINT64_MAX;
    for (int i = 0; i < n; i++) {
        if (xs[i]->id < min_id) min_id = xs[i]->id;
        gx[i] = NULL;
    }
    /* Recording state: a plain sweep records nothing; a recorded one records
     * even inside a caller's no-record scope (that is what was asked). */
    int depth = 0;
    if (create_graph)
        while (!ad_tape_recording(tp)) { ad_no_record_end(tp); depth++; }
    else
        ad_no_record_begin(tp);
    s.start_id = value_next_id();
    rc = collect(&s, m, ys, min_id);
    if (rc == AD_OK) {
        find_relevant(&s, n, xs);
        rc = run_sweep(&s, m, ys, gys);
    }
    for (int i = 0; i < n && rc == AD_OK; i++) {
        int j = position(&s, xs[i]);
        gx[i] = j >= 0 && s.at[j].acc ? s.at[j].acc : zeros_like(tp, xs[i]);
        if (!gx[i]) rc = AD_ENOMEM;
    }
    finish(&s, gx, rc == AD_OK ? n : 0);
    if (create_graph)
        while (depth-- > 0) ad_no_record_begin(tp);
    else
        ad_no_record_end(tp);
    if (rc != AD_OK)
        for (int i = 0; i < n; i++) gx[i] = NULL;
    return rc;
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
    sweep s = { .tp = tp, .all_leaves = true };
    ad_no_record_begin(tp);
    s.start_id = value_next_id();
    rc = collect(&s, 1, &y, 0);
    if (rc == AD_OK) {
        find_relevant(&s, 0, NULL);
        rc = run_sweep(&s, 1, &y, NULL);
    }
    for (size_t j = 0; j < s.order.n && rc == AD_OK; j++) {
        ad_value *p = s.order.v[j], *acc = s.at[j].acc;
        if (!s.at[j].target || !acc) continue;
        /* The one write into a caller-owned leaf: see ad.h on threads. */
        if (!p->grad && !(p->grad = value_alloc(p->rank, p->shape, true))) {
            rc = AD_ENOMEM;
            break;
        }
        for (size_t i = 0; i < p->size; i++) p->grad->data[i] += acc->data[i];
    }
    finish(&s, NULL, 0);
    ad_no_record_end(tp);
    return rc;
}

void ad_zero_grad(ad_value *leaf)
{
    if (leaf && leaf->grad) memset(leaf->grad->data, 0, leaf->grad->size * sizeof(ad_real));
}

int ad_hvp(ad_tape *tp, ad_value *y, int n, ad_value *const *xs,
           ad_value *const *vs, ad_value **hv, bool create_graph)
{
    if (n < 1 || !vs || !hv) return ad_fail(AD_EARG, "hvp: bad arguments");
    if (ad_any_null(n, vs)) return ad_fail(AD_EARG, "hvp: a direction is NULL");
    ad_value **g = calloc((size_t)n, sizeof *g);
    if (!g) return ad_fail(AD_ENOMEM, "hvp: out of memory");
    /* H v = d/dx (∇y · v): the vjp of the recorded gradient with seed v. */
    int rc = ad_grad(tp, y, n, xs, g, true);
    if (rc == AD_OK) rc = ad_vjp_many(tp, n, g, vs, n, xs, hv, create_graph);
    free(g);
    return rc;
}
