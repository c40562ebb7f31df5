/* tape.c — steps, truncation, memory accounting and lifetime checks.
 *
 * The tape is a queue of steps; each step is a list of the values made while
 * it was open.  Every node counts, in its inputs' n_uses, the reference it
 * holds.  Releasing a step drops its nodes' references first, then frees each
 * of its values that nobody still uses.  A value a held step still uses is
 * "carried": it loses its node (becoming a constant, so gradients stop there)
 * and waits on the carry list until its last user is released too.
 *
 * A value's data come from the tape's pool (pool.c) and go back there when
 * it is released; its struct is kept a while, marked dead with why and when,
 * so that a later use is reported (value_check_use) rather than read.
 *
 * Lean mode (ad.h): closing a step first marks what its nodes' backward
 * rules read (each op's declaration, ad_rule_reads), then gives the data of
 * every unmarked value of the step back to the pool, except leaves and kept
 * values.  Only the data go: the value stays in its step, with its node, so
 * the release above (and the carry list) work on it unchanged, minus the
 * block already given back.  Only the closing step's values are looked at:
 * no later step exists yet to hold a node on them, and an older value was
 * settled when its own step closed (a later op given a dropped value fails,
 * so no node made since can read one). */
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
    bool lean;       /* closing a step drops the data no rule reads (ad_tape_set_lean) */
    int rewinding;   /* inside ad_tape_rewind: what tape_free_temps frees is its doing */
    sweep *spare;    /* the reverse sweep's working memory, kept for the next sweep */
    pool *mem;       /* data blocks and released headers (pool.c) */
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
    if (!tp || !(tp->mem = pool_new()) || push_step(tp) != AD_OK) {
        if (tp) pool_free(tp->mem);
        free(tp);
        ad_fail(AD_ENOMEM, "tape: out of memory");
        return NULL;
    }
    tp->horizon = horizon;
    return tp;
}

pool *tape_pool(ad_tape *tp) { return tp->mem; }

/* ---- making and releasing values ----------------------------------------- */

/* A value of the open step with uninitialised data, its struct and data from
 * the pool; NULL (message set) on a bad shape or no memory. */
static ad_value *tape_value_new(ad_tape *tp, int rank, const int *shape)
{
    if (ad_check_shape("tensor", rank, shape) != AD_OK) return NULL;
    size_t size = ad_shape_size(rank, shape);
    ad_value *v = pool_header(tp->mem);
    if (!v) return NULL;
    if (!(v->data = pool_take(tp->mem, size * sizeof(ad_real), &v->data_bytes))) {
        pool_bury(tp->mem, v);
        return NULL;
    }
    value_init(v, rank, shape, size);
    step *s = open_step(tp);
    v->tape = tp;
    v->step = v->made_step = s->index;
    list_push(&s->head, &s->tail, v);
    tp->bytes += value_bytes(v);
    if (tp->bytes > tp->peak) tp->peak = tp->bytes;
    return v;
}

/* Frees v (unreferenced now): its data go back to the pool, and its struct,
 * marked dead with `why`, into the pool's FIFO of released values. */
static void drop(ad_tape *tp, ad_value *v, int why)
{
    tp->bytes -= value_bytes(v);
    if (v->data) pool_give(tp->mem, v->data, v->data_bytes); /* not when lean mode did */
    v->data = NULL; /* a read through the struct now stops at once */
    v->magic = AD_MAGIC_DEAD;
    v->gone = why;
    v->gone_step = tp->next_index - 1;
    v->gone_horizon = tp->horizon;
    v->op = NULL;
    v->requires_grad = false;
    v->n_inputs = 0;
    v->n_uses = 0;
    v->prev = v->next = NULL;
    pool_bury(tp->mem, v);
}

/* Drops node v's references to its inputs; frees carried inputs left unused. */
static void release_inputs(ad_tape *tp, ad_value *v, int why)
{
    for (int i = 0; i < v->n_inputs; i++) {
        ad_value *u = v->inputs[i];
        if (!u->tape) continue; /* caller-owned leaves are not counted */
        AD_ASSERT(u->n_uses > 0, "a node's input lost its use count");
        if (--u->n_uses == 0 && u->step == -2) {
            list_unlink(&tp->carry, NULL, u);
            drop(tp, u, why);
        }
    }
    v->n_inputs = 0;
}

static void release_oldest(ad_tape *tp, int why)
{
    step *s = &tp->steps[tp->first];
    for (ad_value *v = s->head; v; v = v->next) release_inputs(tp, v, why);
    ad_value *v = s->head;
    while (v) {
        ad_value *next = v->next;
        if (v->n_uses > 0) { /* a held step still reads it: carry it */
            v->op = NULL;
            v->requires_grad = false;
            v->step = -2;
            list_push(&tp->carry, NULL, v);
        } else {
            drop(tp, v, why);
        }
        v = next;
    }
    tp->first++;
    tp->count--;
}

/* ---- lean mode ----------------------------------------------------------- */

bool ad_rule_reads(const ad_value *out, int i)
{
    if (!out || !out->op) return false;
    return out->op->reads ? out->op->reads(out, i) : true;
}

bool ad_reads_nothing(const ad_value *out, int i)
{
    (void)out, (void)i;
    return false;
}

bool ad_reads_output(const ad_value *out, int i)
{
    (void)out;
    return i == AD_READ_OUTPUT;
}

bool ad_reads_inputs(const ad_value *out, int i)
{
    (void)out;
    return i >= 0;
}

bool ad_reads_other_factor(const ad_value *out, int i)
{
    return (i == 0 || i == 1) && ad_input_needs_grad(out, 1 - i);
}

/* Gives back v's data: the value stays, with its node, its struct counted. */
static void drop_data(ad_tape *tp, ad_value *v)
{
    tp->bytes -= v->size * sizeof(ad_real);
    pool_give(tp->mem, v->data, v->data_bytes);
    v->data = NULL;
    v->data_bytes = 0;
    v->dropped = true;
}

/* Step s closes on a lean tape: mark what its rules read, drop the rest. */
static void lean_close(ad_tape *tp, step *s)
{
    for (ad_value *v = s->head; v; v = v->next) {
        if (!v->op) continue;
        if (ad_rule_reads(v, AD_READ_OUTPUT)) v->read_mark = true;
        for (int i = 0; i < v->n_inputs; i++) {
            ad_value *u = v->inputs[i];
            if (u->step == s->index && !u->read_mark && ad_rule_reads(v, i)) u->read_mark = true;
        }
    }
    for (ad_value *v = s->head; v; v = v->next) {
        bool leaf = v->requires_grad && !v->op;
        if (v->data && !v->read_mark && !v->keep && !leaf) drop_data(tp, v);
        v->read_mark = false;
    }
}

int ad_tape_set_lean(ad_tape *tp, bool on)
{
    if (!tp) return ad_fail(AD_EARG, "tape_set_lean: tape is NULL");
    tp->lean = on;
    return AD_OK;
}

bool ad_tape_lean(const ad_tape *tp)
{
    if (!tp) {
        ad_fail(AD_EARG, "tape_lean: tape is NULL");
        return false;
    }
    return tp->lean;
}

int ad_value_keep(ad_value *v)
{
    int rc = value_check_arg(v ? v->tape : NULL, "value_keep", "the value", v);
    if (rc != AD_OK) return rc; /* NULL, released, or dropped already: too late */
    /* A caller-owned leaf is never dropped, and other threads may be reading
     * it (the thread contract): nothing to mark, so nothing is written. */
    if (v->tape) v->keep = true;
    return AD_OK;
}

int ad_tape_step(ad_tape *tp)
{
    if (!tp) return ad_fail(AD_EARG, "tape_step: tape is NULL");
    int rc = push_step(tp); /* first: a failure leaves the open step as it was */
    if (rc != AD_OK) return rc;
    if (tp->lean) lean_close(tp, &tp->steps[tp->first + tp->count - 2]);
    while (tp->horizon != AD_HORIZON_ALL && tp->count - 1 > (size_t)tp->horizon)
        release_oldest(tp, AD_GONE_HORIZON);
    return AD_OK;
}

static void release_all(ad_tape *tp, int why)
{
    while (tp->count > 0) release_oldest(tp, why);
    /* Carried values are only referenced by released steps now. */
    AD_ASSERT(tp->carry == NULL, "carried values outlived every user");
    AD_ASSERT(tp->bytes == 0, "tape byte count drifted");
}

int ad_tape_reset(ad_tape *tp)
{
    if (!tp) return ad_fail(AD_EARG, "tape_reset: tape is NULL");
    release_all(tp, AD_GONE_RESET);
    tp->first = 0;
    tp->next_index = 0;
    tp->no_record = 0; /* scopes left open end with the round they were opened in */
    push_step(tp); /* cannot fail: cap >= 1 */
    return AD_OK;
}

void ad_tape_free(ad_tape *tp)
{
    if (!tp) return;
    release_all(tp, AD_GONE_FREE);
    sweep_free(tp->spare);
    pool_free(tp->mem);
    free(tp->steps);
    free(tp);
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
    release_inputs(tp, v, AD_GONE_SWEEP);
    list_unlink(&s->head, &s->tail, v);
    drop(tp, v, AD_GONE_SWEEP);
}

void tape_free_temps(ad_tape *tp, uint64_t after_id,
                     bool (*held)(const ad_value *v, void *ctx), void *ctx)
{
    step *s = open_step(tp);
    ad_value *v = s->tail;
    while (v && v->id > after_id) {
        ad_value *prev = v->prev;
        if (v->n_uses == 0 && !v->op && !v->requires_grad && !(held && held(v, ctx))) {
            list_unlink(&s->head, &s->tail, v);
            drop(tp, v, tp->rewinding ? AD_GONE_REWIND : AD_GONE_SWEEP);
        }
        v = prev;
    }
}

/* ---- lifetime checks ------------------------------------------------------ */

static const char *horizon_str(int horizon, char *buf, size_t len)
{
    if (horizon == AD_HORIZON_ALL) snprintf(buf, len, "all");
    else snprintf(buf, len, "%d", horizon);
    return buf;
}

/* The message for a use of dead value v by `who`, as its `what`. */
static int gone_fail(const ad_tape *tp, const char *who, const char *what,
                     const ad_value *v)
{
    char name[80] = "", k[16], now[96] = "", how[224];
    if (v->name) snprintf(name, sizeof name, " ('%.64s')", v->name);
    if (v->gone == AD_GONE_LEAF)
        return ad_fail(AD_EARG, "%s: %s%s is a caller-owned leaf that was freed "
                       "(ad_value_free)", who, what, name);
    horizon_str(v->gone_horizon, k, sizeof k);
    switch (v->gone) {
    case AD_GONE_HORIZON:
        snprintf(how, sizeof how, "when step %ld opened: a tape with horizon K = %s keeps "
                 "the open step and the last K closed ones (keep a copy with "
                 "ad_value_copy, or raise K)", v->gone_step, k);
        break;
    case AD_GONE_RESET:
        snprintf(how, sizeof how, "by ad_tape_reset at step %ld (horizon K = %s)",
                 v->gone_step, k);
        break;
    case AD_GONE_FREE:
        snprintf(how, sizeof how, "by ad_tape_free at step %ld (horizon K = %s)",
                 v->gone_step, k);
        break;
    case AD_GONE_REWIND:
        snprintf(how, sizeof how, "by ad_tape_rewind at step %ld (horizon K = %s)",
                 v->gone_step, k);
        break;
    default:
        snprintf(how, sizeof how, "at step %ld as a gradient sweep's temporary "
                 "(horizon K = %s)", v->gone_step, k);
        break;
    }
    if (!v->tape)
        snprintf(now, sizeof now, "; its tape has been freed");
    else if (v->tape == tp)
        snprintf(now, sizeof now, "; the tape is at step %ld, holding steps %ld..%ld",
                 tp->next_index - 1, tp->steps[tp->first].index, tp->next_index - 1);
    return ad_fail(AD_EARG, "%s: %s%s, made at step %ld, was released %s%s", who, what,
                   name, v->made_step, how, now);
}

/* The message for a use of v's data, which a lean tape dropped. */
static int dropped_fail(const char *who, const char *what, const ad_value *v)
{
    char name[80] = "";
    if (v->name) snprintf(name, sizeof name, " ('%.64s')", v->name);
    return ad_fail(AD_EARG, "%s: %s%s, made at step %ld, had its data dropped when step %ld "
                   "closed (lean tape: mark it with ad_value_keep before its step closes, or "
                   "turn lean mode off with ad_tape_set_lean)", who, what, name, v->made_step,
                   v->made_step);
}

/* value_check_use, and value_check_node_use when !data. */
static int check_use(const ad_tape *tp, const char *who, const char *what, const ad_value *v,
                     bool data)
{
    if (!who) who = "?";
    if (!v) {
        /* An op given NULL keeps the message of the failure that made it;
         * a NULL from the caller's own hand gets one. */
        if (ad_error_code() != AD_OK) return ad_error_code();
        return ad_fail(AD_EARG, "%s: %s is NULL", who, what);
    }
    if (v->magic == AD_MAGIC_LIVE) return data && v->dropped ? dropped_fail(who, what, v) : AD_OK;
    if (v->magic == AD_MAGIC_DEAD) return gone_fail(tp, who, what, v);
    return ad_fail(AD_EARG, "%s: %s is not a live value (freed memory, or not a value at all)",
                   who, what);
}

int value_check_use(const ad_tape *tp, const char *who, const char *what,
                    const ad_value *v)
{
    return check_use(tp, who, what, v, true);
}

int value_check_node_use(const ad_tape *tp, const char *who, const char *what,
                         const ad_value *v)
{
    return check_use(tp, who, what, v, false);
}

int value_check_arg(const ad_tape *tp, const char *who, const char *what, const ad_value *v)
{
    if (!v) return ad_fail(AD_EARG, "%s: %s is NULL", who ? who : "?", what);
    return value_check_use(tp, who, what, v);
}

int value_check_node_arg(const ad_tape *tp, const char *who, const char *what, const ad_value *v)
{
    if (!v) return ad_fail(AD_EARG, "%s: %s is NULL", who ? who : "?", what);
    return value_check_node_use(tp, who, what, v);
}

int ad_value_check(const char *who, const ad_value *v)
{
    return value_check_arg(NULL, who, "the value", v);
}

int value_check_grad(const char *who, const ad_value *p)
{
    if (!p->grad || p->grad->magic == AD_MAGIC_LIVE) return AD_OK;
    char name[80] = "a parameter";
    if (p->name) snprintf(name, sizeof name, "parameter '%.64s'", p->name);
    return ad_fail(AD_EARG, "%s: the grad of %s was freed by the caller "
                   "(ad_value_free(p->grad)): it belongs to the parameter — "
                   "ad_value_free(p) frees it, ad_zero_grad clears it; to drop it, set "
                   "p->grad = NULL after freeing it", who, name);
}

static int check_list(const ad_tape *tp, const char *who, const char *role, int n,
                      ad_value *const *v, bool data)
{
    if (n > 0 && !v) return value_check_use(tp, who, "the list of values", NULL);
    for (int i = 0; i < n; i++) {
        if (v[i] && v[i]->magic == AD_MAGIC_LIVE && !(data && v[i]->dropped))
            continue; /* the usual case, kept cheap */
        char what[48];
        snprintf(what, sizeof what, "%s %d", role, i);
        return check_use(tp, who, what, v[i], data);
    }
    return AD_OK;
}

int value_check_list(const ad_tape *tp, const char *who, const char *role, int n,
                     ad_value *const *v)
{
    return check_list(tp, who, role, n, v, true);
}

int value_check_node_list(const ad_tape *tp, const char *who, const char *role, int n,
                          ad_value *const *v)
{
    return check_list(tp, who, role, n, v, false);
}

int ad_check_inputs(ad_tape *tp, const char *who, int n, ad_value *const *inputs)
{
    return value_check_list(tp, who, "input", n, inputs);
}

/* ---- settings and accounting --------------------------------------------- */

int ad_tape_set_horizon(ad_tape *tp, int horizon)
{
    if (!tp) return ad_fail(AD_EARG, "tape_set_horizon: tape is NULL");
    if (horizon < 0)
        return ad_fail(AD_EARG, "tape: horizon K must be >= 1 or AD_HORIZON_ALL, got %d",
                       horizon);
    tp->horizon = horizon;
    return AD_OK;
}

int ad_tape_horizon(const ad_tape *tp)
{
    return tp ? tp->horizon : ad_fail(AD_EARG, "tape_horizon: tape is NULL");
}

long ad_tape_current_step(const ad_tape *tp)
{
    return tp ? tp->next_index - 1 : ad_fail(AD_EARG, "tape_current_step: tape is NULL");
}

size_t ad_tape_steps_held(const ad_tape *tp)
{
    if (!tp) {
        ad_fail(AD_EARG, "tape_steps_held: tape is NULL");
        return 0;
    }
    return tp->count;
}

size_t ad_tape_bytes(const ad_tape *tp)
{
    if (!tp) {
        ad_fail(AD_EARG, "tape_bytes: tape is NULL");
        return 0;
    }
    return tp->bytes;
}

size_t ad_tape_peak_bytes(const ad_tape *tp)
{
    if (!tp) {
        ad_fail(AD_EARG, "tape_peak_bytes: tape is NULL");
        return 0;
    }
    return tp->peak;
}

int ad_tape_reset_peak(ad_tape *tp)
{
    if (!tp) return ad_fail(AD_EARG, "tape_reset_peak: tape is NULL");
    tp->peak = tp->bytes;
    return AD_OK;
}

size_t ad_tape_pool_bytes(const ad_tape *tp)
{
    ad_tape_stats st;
    return ad_tape_get_stats(tp, &st) == AD_OK ? st.pool_bytes : 0;
}

int ad_tape_get_stats(const ad_tape *tp, ad_tape_stats *st)
{
    if (!tp || !st) return ad_fail(AD_EARG, "tape_get_stats: %s is NULL", tp ? "stats" : "tape");
    memset(st, 0, sizeof *st);
    st->bytes = tp->bytes;
    st->peak_bytes = tp->peak;
    pool_stats(tp->mem, st);
    return AD_OK;
}

int ad_tape_trim(ad_tape *tp)
{
    if (!tp) return ad_fail(AD_EARG, "tape_trim: tape is NULL");
    pool_trim(tp->mem);
    return AD_OK;
}

int ad_no_record_begin(ad_tape *tp)
{
    if (!tp) return ad_fail(AD_EARG, "no_record_begin: tape is NULL");
    tp->no_record++;
    return AD_OK;
}

int ad_no_record_end(ad_tape *tp)
{
    if (!tp) return ad_fail(AD_EARG, "no_record_end: tape is NULL");
    if (tp->no_record == 0)
        return ad_fail(AD_EARG, "no_record_end: no no-record scope is open "
                       "(an ad_no_record_end without its ad_no_record_begin)");
    tp->no_record--;
    return AD_OK;
}

bool ad_tape_recording(const ad_tape *tp)
{
    if (!tp) {
        ad_fail(AD_EARG, "tape_recording: tape is NULL");
        return false;
    }
    return tp->no_record == 0;
}

sweep **tape_spare_sweep(ad_tape *tp) { return &tp->spare; }

/* ---- nodes and constants -------------------------------------------------- */

bool ad_any_null(int n, ad_value *const *v)
{
    if (n > 0 && !v) return true;
    for (int i = 0; i < n; i++)
        if (!v[i]) return true;
    return false;
}

ad_value *ad_node_new(ad_tape *tp, const ad_op *op, int rank, const int *shape,
                      int n_inputs, ad_value *const *inputs)
{
    const char *who = op && op->name ? op->name : "op";
    if (n_inputs < 0 || n_inputs > AD_MAX_INPUTS) {
        ad_fail(AD_EARG, "%s: %d inputs (at most %d)", who, n_inputs, AD_MAX_INPUTS);
        return NULL;
    }
    if (ad_check_inputs(tp, who, n_inputs, inputs) != AD_OK) return NULL;
    if (!tp) {
        ad_fail(AD_EARG, "%s: tape is NULL", who);
        return NULL;
    }
    /* A node holds its inputs until its step is released, so an input owned by
     * another tape could be freed under it: keep values of one tape apart
     * (ad_leaf or ad_detach copy a value across). */
    for (int i = 0; i < n_inputs; i++)
        if (inputs[i]->tape && inputs[i]->tape != tp) {
            ad_fail(AD_EARG, "%s: input %d belongs to another tape (copy it with ad_detach "
                             "or ad_leaf, or make it a caller-owned tensor)", who, i);
            return NULL;
        }
    ad_value *v = tape_value_new(tp, rank, shape);
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
    return v;
}

bool ad_input_needs_grad(const ad_value *out, int i)
{
    return out && i >= 0 && i < out->n_inputs && out->inputs[i]->requires_grad;
}

ad_value *ad_const(ad_tape *tp, int rank, const int *shape, const ad_real *data)
{
    if (!tp || !data) {
        ad_fail(AD_EARG, "const: %s is NULL", tp ? "data" : "tape");
        return NULL;
    }
    ad_value *v = tape_value_new(tp, rank, shape);
    if (v) memcpy(v->data, data, v->size * sizeof(ad_real));
    return v;
}

ad_value *ad_const_fill(ad_tape *tp, int rank, const int *shape, ad_real value)
{
    if (!tp) {
        ad_fail(AD_EARG, "const_fill: tape is NULL");
        return NULL;
    }
    ad_value *v = tape_value_new(tp, rank, shape);
    if (v)
        for (size_t i = 0; i < v->size; i++) v->data[i] = value;
    return v;
}

ad_value *ad_const_scalar(ad_tape *tp, ad_real value)
{
    return ad_const_fill(tp, 0, NULL, value);
}

/* ad_detach and ad_leaf: a copy of v in the open step (a leaf when `leaf`). */
static ad_value *copy_in(ad_tape *tp, ad_value *v, const char *who, bool leaf)
{
    if (value_check_use(tp, who, "the value", v) != AD_OK) return NULL;
    ad_value *c = ad_const(tp, v->rank, v->shape, v->data);
    if (c) c->requires_grad = leaf;
    return c;
}

ad_value *ad_detach(ad_tape *tp, ad_value *v) { return copy_in(tp, v, "detach", false); }

ad_value *ad_leaf(ad_tape *tp, ad_value *v) { return copy_in(tp, v, "leaf", true); }

/* The engine's copy (a sweep's gradient that would be the caller's seed):
 * the identity, so its gradient is the incoming one, itself differentiable. */
static int copy_backward(ad_tape *tp, ad_value *out, ad_value *gout, ad_value **gin)
{
    (void)tp, (void)out;
    gin[0] = gout;
    return AD_OK;
}

static const ad_op copy_op = { "copy", copy_backward, ad_reads_nothing };

/* out [shape of v] = v, in the open step */
ad_value *tape_copy_value(ad_tape *tp, ad_value *v)
{
    if (v->tape && v->tape != tp) return ad_const(tp, v->rank, v->shape, v->data); /* no path across */
    ad_value *c = ad_node_new(tp, &copy_op, v->rank, v->shape, 1, &v);
    if (c) memcpy(c->data, v->data, v->size * sizeof(ad_real));
    return c;
}

uint64_t ad_tape_mark(ad_tape *tp)
{
    if (!tp) {
        ad_fail(AD_EARG, "tape_mark: tape is NULL");
        return 0;
    }
    return value_next_id();
}

int ad_tape_rewind(ad_tape *tp, uint64_t mark)
{
    if (!tp) return ad_fail(AD_EARG, "tape_rewind: tape is NULL");
    tp->rewinding++;
    tape_free_temps(tp, mark, NULL, NULL);
    tp->rewinding--;
    return AD_OK;
}
