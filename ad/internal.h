/* internal.h — shared by the files of ad/ only. */
#ifndef HYPERTAPE_AD_INTERNAL_H
#define HYPERTAPE_AD_INTERNAL_H

#include "node.h"

/* One block holds the struct and its data; returns NULL (message set) on
 * bad shape or allocation failure.  Data are zeroed when `zero`. */
ad_value *value_alloc(int rank, const int *shape, bool zero);
size_t value_bytes(const ad_value *v);
uint64_t value_next_id(void);

/* tape.c */
ad_value *tape_adopt(ad_tape *tp, ad_value *v); /* into the open step */
void tape_free_value(ad_tape *tp, ad_value *v); /* an unreferenced value */
/* Frees the open step's unreferenced constants made after `after_id`, except
 * those for which held(v, ctx) is true (held may be NULL: none are). */
void tape_free_temps(ad_tape *tp, uint64_t after_id,
                     bool (*held)(const ad_value *v, void *ctx), void *ctx);

/* grad.c: the reverse sweep and its working memory.  A tape keeps a spare
 * one, so that sweeps in the steady state allocate nothing. */
typedef struct sweep sweep;
void sweep_free(sweep *s);
/* tape.c: the tape's spare sweep (NULL while lent out, or before the first). */
sweep **tape_spare_sweep(ad_tape *tp);

/* A growable list of value pointers (the sweep's order, DOT's worklists). */
typedef struct value_list {
    ad_value **v;
    size_t n, cap;
} value_list;
int value_list_push(value_list *l, ad_value *v); /* AD_OK or AD_ENOMEM */

#endif
