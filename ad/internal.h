/* internal.h — shared by the files of ad/ only. */
#ifndef HYPERTAPE_AD_INTERNAL_H
#define HYPERTAPE_AD_INTERNAL_H

#include "node.h"

/* ---- values (tensor.c) ---- */

/* ad_value.magic: a value may be used while it holds AD_MAGIC_LIVE; a
 * released one holds AD_MAGIC_DEAD (and `gone` says why) for as long as its
 * struct is kept.  Anything else is not a value. */
enum { AD_MAGIC_LIVE = 0x6c697665, AD_MAGIC_DEAD = 0x64656164 };
/* ad_value.gone: why a value was released. */
enum {
    AD_GONE_HORIZON = 1, /* its step fell off the horizon */
    AD_GONE_RESET,       /* ad_tape_reset */
    AD_GONE_FREE,        /* ad_tape_free */
    AD_GONE_REWIND,      /* ad_tape_rewind */
    AD_GONE_SWEEP,       /* a plain sweep's temporary */
    AD_GONE_LEAF         /* a caller-owned leaf given to ad_value_free */
};

/* A caller-owned leaf: its struct and its data are two allocations (so that
 * the struct can outlive the data, for the lifetime checks); NULL (message
 * set) on bad shape or allocation failure.  Data are zeroed when `zero`. */
ad_value *value_alloc(int rank, const int *shape, bool zero);
/* Fills a fresh (zeroed) struct: shape, size, a new id, live; step -1. */
void value_init(ad_value *v, int rank, const int *shape, size_t size);
/* The bytes a value counts for in ad_tape_bytes: its struct rounded up to
 * 64 bytes, and its data (none once a lean tape dropped them). */
size_t value_bytes(const ad_value *v);
uint64_t value_next_id(void);

/* AD_OK when v may be used; otherwise the status, with a message "who: what
 * ..." saying why (NULL; released: its step, how and when, the horizon, and
 * where tp stands when v is tp's).  For a NULL v a pending message stands
 * (an op given NULL passes the first failure on).  tp may be NULL. */
int value_check_use(const ad_tape *tp, const char *who, const char *what,
                    const ad_value *v);
/* The same for an argument of a call that returns a status: a NULL v is
 * AD_EARG with its own message, whatever message is pending. */
int value_check_arg(const ad_tape *tp, const char *who, const char *what,
                    const ad_value *v);
/* value_check_use on v[0..n), each named "<role> i": the first failure. */
int value_check_list(const ad_tape *tp, const char *who, const char *role, int n,
                     ad_value *const *v);
/* The same three for a use of v's node and shape only (a sweep's outputs
 * and targets, a drawing, a label): a value whose data a lean tape dropped
 * passes; value_check_use and the others fail on it, naming its step. */
int value_check_node_use(const ad_tape *tp, const char *who, const char *what,
                         const ad_value *v);
int value_check_node_arg(const ad_tape *tp, const char *who, const char *what,
                         const ad_value *v);
int value_check_node_list(const ad_tape *tp, const char *who, const char *role, int n,
                          ad_value *const *v);

/* AD_OK unless leaf p's grad is a value the caller freed (ad_value_free on
 * p->grad): then AD_EARG, with a message "who: ..." naming p and what to do. */
int value_check_grad(const char *who, const ad_value *p);

/* ---- tape.c ---- */

void tape_free_value(ad_tape *tp, ad_value *v); /* an unreferenced value */
/* A copy of v in the open step: recorded (an identity node, "copy") when
 * the tape records and v wants a gradient; a constant for a v of another
 * tape.  NULL (message set) when out of memory. */
ad_value *tape_copy_value(ad_tape *tp, ad_value *v);
/* Frees the open step's unreferenced constants made after `after_id` (not
 * leaves made with ad_leaf: they want a gradient), except those for which
 * held(v, ctx) is true (held may be NULL: none are). */
void tape_free_temps(ad_tape *tp, uint64_t after_id,
                     bool (*held)(const ad_value *v, void *ctx), void *ctx);

/* grad.c: the reverse sweep and its working memory.  A tape keeps a spare
 * one, so that sweeps in the steady state allocate nothing. */
typedef struct sweep sweep;
void sweep_free(sweep *s);
/* tape.c: the tape's spare sweep (NULL while lent out, or before the first). */
sweep **tape_spare_sweep(ad_tape *tp);

/* ---- pool.c: the tape's memory (see the top of pool.c) ---- */

typedef struct pool pool;
pool *tape_pool(ad_tape *tp);
pool *pool_new(void);       /* NULL (message set) when out of memory */
/* Gives every block and kept struct back (those kept move to the process-wide
 * FIFO); every value and scratch buffer must have been given back. */
void pool_free(pool *p);
/* A block of at least `bytes`, 64-byte aligned, uninitialised; NULL (message
 * set) when out of memory.  With `cap`, the block may be a bigger free one
 * (up to twice the size), and *cap receives its size; pool_give takes it
 * back given that size (or `bytes`, when taken without `cap`). */
void *pool_take(pool *p, size_t bytes, size_t *cap);
void pool_give(pool *p, void *mem, size_t cap);
void pool_trim(pool *p);    /* gives the free blocks back to the system */
/* A zeroed struct for a value of the tape; NULL (message set). */
ad_value *pool_header(pool *p);
/* Keeps a released value's struct (marked dead) in the tape's FIFO. */
void pool_bury(pool *p, ad_value *v);
/* Keeps a freed leaf's struct (marked dead) in the process-wide FIFO. */
void graveyard_bury(ad_value *v);
void pool_stats(const pool *p, ad_tape_stats *st); /* the pool_* fields */

/* A growable list of value pointers (the sweep's order, DOT's worklists). */
typedef struct value_list {
    ad_value **v;
    size_t n, cap;
} value_list;
int value_list_push(value_list *l, ad_value *v); /* AD_OK or AD_ENOMEM */

#endif
