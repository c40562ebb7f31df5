/* tape.c — steps, truncation and memory accounting.
 *
 * The tape is a queue of steps; each step is a list of the values made while
 * it was open.  Every node counts, in its inputs' n_uses, the reference it
 * holds.  Releasing a step drops its nodes' references first, then frees each
 * of its values that nobody still uses.  A value a held step still uses is
 * "carried": it loses its node (becoming a constant, so gradients stop there)
 * and waits on the carry list until its last user is released too. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef struct step {
    long index;
    ad_value *head, *tail;
} step;

struct ad_tape {
    int horizon;     /* AD_HORIZON_ALL or K >= 1 closed steps kept */
    step *steps;     /* steps[first .. first+count-1]; the last is open */
    size_t cap, first, count;
    long next_index;
    ad_value *carry; /* carried constants, a list through prev/next */
    size_t bytes, peak;
    int no_record;   /* depth of no-record scopes */
    sweep *spare;    /* the reverse sweep's working memory, kept for the next sweep */
};

static void list_push(ad_value **head, ad_value **tail, ad_value *v)
{
    v->prev = tail ? *tail : NULL;
    v->next = NULL;
    if (tail) {
        if (*tail) (*tail)->next = v; else *head = v;
        *tail = v;
    } else { /* a list without a tail pointer: push at the front */
        v->prev = NULL;
        v->next = *head;
        if (*head) (*head)->prev = v;
        *head = v;
    }
}

static void list_unlink(ad_value **head, ad_value **tail, ad_value *v)
{
    if (v->prev) v->prev->next = v->next; else *head = v->next;
    if (v->next) v->next->prev = v->prev; else if (tail) *tail = v->prev;
    v->prev = v->next = NULL;
}

static step *open_step(ad_tape *tp) { return &tp->steps[tp->first + tp->count - 1]; }

static int push_step(ad_tape *tp)
{
    if (tp->first + tp->count == tp->cap) {
        if (tp->first > 0) { /* slide the held steps to the front */
            memmove(tp->steps, tp->steps + tp->first, tp->count * sizeof(step));
            tp->first = 0;
        } else {
            size_t cap = tp->cap ? 2 * tp->cap : 16;
            step *s = realloc(tp->steps, cap * sizeof(step));
            if (!s) return ad_fail(AD_ENOMEM, "tape: out of memory for steps");
            tp->steps = s;
            tp->cap = cap;
        }
    }
    tp->steps[tp->first + tp->count] = (step){ tp->next_index++, NULL, NULL };
    tp->count++;
    return AD_OK;
}

ad_tape *ad_tape_new(int horizon)
{
    if (horizon < 0) {
        ad_fail(AD_EARG, "tape: horizon K must be >= 1 or AD_HORIZON_ALL, got %d",
                horizon);
        return NULL;
    }
    ad_tape *tp = calloc(1, sizeof *tp);
    if (!tp || push_step(tp) != AD_OK) {
        free(tp);
        ad_fail(AD_ENOMEM, "tape: out of memory");
        return NULL;
    }
    tp->horizon = horizon;
    return tp;
}

static void drop(ad_tape *tp, ad_value *v)
{
    tp->bytes -= value_bytes(v);
    free(v);
}

/* Drops node v's references to its inputs; frees carried inputs left unused. */
static void release_inputs(ad_tape *tp, ad_value *v)
{
    for (int i = 0; i < v->n_inputs; i++) {
        ad_value *u = v->inputs[i];
        if (!u->tape) continue; /* caller-owned leaves are not counted */
        AD_ASSERT(u->n_uses > 0, "a node's input lost its use count");
        if (--u->n_uses == 0 && u->step == -2) {
            list_unlink(&tp->carry, NULL, u);
            drop(tp, u);
        }
    }
    v->n_inputs = 0;
}

static void release_oldest(ad_tape *tp)
{
    step *s = &tp->steps[tp->first];
    for (ad_value *v = s->head; v; v = v->next) release_inputs(tp, v);
    ad_value *v = s->head;
    while (v) {
        ad_value *next = v->next;
        if (v->n_uses > 0) { /* a held step still reads it: carry it */
            v->op = NULL;
            v->requires_grad = false;
            v->step = -2;
            list_push(&tp->carry, NULL, v);
        } else {
            drop(tp, v);
        }
        v = next;
    }
    tp->first++;
    tp->count--;
}

int ad_tape_step(ad_tape *tp)
{
    if (!tp) return ad_fail(AD_EARG, "tape_step: tape is NULL");
    int rc = push_step(tp);
    if (rc != AD_OK) return rc;
    while (tp->horizon != AD_HORIZON_ALL && tp->count - 1 > (size_t)tp->horizon)
        release_oldest(tp);
    return AD_OK;
}

void ad_tape_reset(ad_tape *tp)
{
    if (!tp) return;
    while (tp->count > 0) release_oldest(tp);
    /* Carried values are only referenced by released steps now. */
    AD_ASSERT(tp->carry == NULL, "carried values outlived every user");
    AD_ASSERT(tp->bytes == 0, "tape byte count drifted");
    tp->first = 0;
    tp->next_index = 0;
    push_step(tp); /* cannot fail: cap >= 1 */
}

void ad_tape_free(ad_tape *tp)
{
    if (!tp) return;
    while (tp->count > 0) release_oldest(tp);
    AD_ASSERT(tp->carry == NULL, "carried values outlived every user");
    sweep_free(tp->spare);
    free(tp->steps);
    free(tp);
}

int ad_tape_set_horizon(ad_tape *tp, int horizon)
{
    if (!tp) return ad_fail(AD_EARG, "tape_set_horizon: tape is NULL");
    if (horizon < 0)
        return ad_fail(AD_EARG, "tape: horizon K must be >= 1 or AD_HORIZON_ALL, got %d",
                       horizon);
    tp->horizon = horizon;
    return AD_OK;
}

int ad_tape_horizon(const ad_tape *tp) { return tp->horizon; }
long ad_tape_current_step(const ad_tape *tp) { return tp->next_index - 1; }
size_t ad_tape_steps_held(const ad_tape *tp) { return tp->count; }
size_t ad_tape_bytes(const ad_tape *tp) { return tp->bytes; }
size_t ad_tape_peak_bytes(const ad_tape *tp) { return tp->peak; }
void ad_tape_reset_peak(ad_tape *tp) { tp->peak = tp->bytes; }

void ad_no_record_begin(ad_tape *tp) { tp->no_record++; }

void ad_no_record_end(ad_tape *tp)
{
    AD_ASSERT(tp->no_record > 0, "ad_no_record_end without a matching begin");
    tp->no_record--;
}

bool ad_tape_recording(const ad_tape *tp) { return tp->no_record == 0; }

sweep **tape_spare_sweep(ad_tape *tp) { return &tp->spare; }

ad_value *tape_adopt(ad_tape *tp, ad_value *v)
{
    step *s = open_step(tp);
    v->tape = tp;
    v->step = s->index;
    list_push(&s->head, &s->tail, v);
    tp->bytes += value_bytes(v);
    if (tp->bytes > tp->peak) tp->peak = tp->bytes;
    return v;
}

void tape_free_value(ad_tape *tp, ad_value *v)
{
    AD_ASSERT(v->tape == tp && v->n_uses == 0 && v->step >= 0,
              "only an unreferenced value of a held step can be freed early");
    step *s = NULL;
    for (size_t i = tp->count; i-- > 0;)
        if (tp->steps[tp->first + i].index == v->step) {
            s = &tp->steps[tp->first + i];
            break;
        }
    AD_ASSERT(s != NULL, "value names a step the tape does not hold");
    release_inputs(tp, v);
    list_unlink(&s->head, &s->tail, v);
    drop(tp, v);
}

bool ad_any_null(int n, ad_value *const *v)
{
    for (int i = 0; i < n; i++)
        if (!v[i]) return true;
    return false;
}

ad_value *ad_node_new(ad_tape *tp, const ad_op *op, int rank, const int *shape,
                      int n_inputs, ad_value *const *inputs)
{
    if (ad_any_null(n_inputs, inputs)) return NULL;
    if (!tp) {
        ad_fail(AD_EARG, "%s: tape is NULL", op ? op->name : "op");
        return NULL;
    }
    AD_ASSERT(n_inputs >= 0 && n_inputs <= AD_MAX_INPUTS, "too many op inputs");
    /* A node holds its inputs until its step is released, so an input owned by
     * another tape could be freed under it: keep values of one tape apart
     * (ad_leaf or ad_detach copy a value across). */
    for (int i = 0; i < n_inputs; i++)
        if (inputs[i]->tape && inputs[i]->tape != tp) {
            ad_fail(AD_EARG, "%s: input %d belongs to another tape (copy it with ad_detach "
                             "or ad_leaf, or make it a caller-owned tensor)", op ? op->name : "op", i);
            return NULL;
        }
    ad_value *v = value_alloc(rank, shape, false);
    if (!v) return NULL;
    bool needs = false;
    for (int i = 0; i < n_inputs; i++) needs |= inputs[i]->requires_grad;
    if (needs && tp->no_record == 0) {
        v->op = op;
        v->requires_grad = true;
        v->n_inputs = n_inputs;
        for (int i = 0; i < n_inputs; i++) {
            v->inputs[i] = inputs[i];
            if (inputs[i]->tape) inputs[i]->n_uses++;
        }
    }
    return tape_adopt(tp, v);
}

bool ad_input_needs_grad(const ad_value *out, int i)
{
    return i < out->n_inputs && out->inputs[i]->requires_grad;
}

ad_value *ad_const(ad_tape *tp, int rank, const int *shape, const ad_real *data)
{
    if (!tp || !data) {
        ad_fail(AD_EARG, "const: %s is NULL", tp ? "data" : "tape");
        return NULL;
    }
    ad_value *v = value_alloc(rank, shape, false);
    if (!v) return NULL;
    memcpy(v->data, data, v->size * sizeof(ad_real));
    return tape_adopt(tp, v);
}

ad_value *ad_const_fill(ad_tape *tp, int rank, const int *shape, ad_real value)
{
    if (!tp) {
        ad_fail(AD_EARG, "const_fill: tape is NULL");
        return NULL;
    }
    ad_value *v = value_alloc(rank, shape, false);
    if (!v) return NULL;
    for (size_t i = 0; i < v->size; i++) v->data[i] = value;
    return tape_adopt(tp, v);
}

ad_value *ad_const_scalar(ad_tape *tp, ad_real value)
{
    return ad_const_fill(tp, 0, NULL, value);
}

ad_value *ad_detach(ad_tape *tp, ad_value *v)
{
    if (!v) return NULL;
    return ad_const(tp, v->rank, v->shape, v->data);
}

void tape_free_temps(ad_tape *tp, uint64_t after_id,
                     bool (*held)(const ad_value *v, void *ctx), void *ctx)
{
    step *s = open_step(tp);
    ad_value *v = s->tail;
    while (v && v->id > after_id) {
        ad_value *prev = v->prev;
        if (v->n_uses == 0 && !v->op && !(held && held(v, ctx))) {
            list_unlink(&s->head, &s->tail, v);
            drop(tp, v);
        }
        v = prev;
    }
}

ad_value *ad_leaf(ad_tape *tp, ad_value *v)
{
    ad_value *c = ad_detach(tp, v);
    if (c) c->requires_grad = true;
    return c;
}

uint64_t ad_tape_mark(ad_tape *tp)
{
    (void)tp;
    return value_next_id();
}

void ad_tape_rewind(ad_tape *tp, uint64_t mark)
{
    if (tp) tape_free_temps(tp, mark, NULL, NULL);
}
