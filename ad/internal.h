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

/* id_map.c: a map from value ids to ints, for the sweep's scratch.  Zeroed
 * ({ 0 }) it is empty; free it with id_map_free. */
typedef struct id_map_cell {
    uint64_t id; /* 0: an empty cell */
    int val;
} id_map_cell;
typedef struct id_map {
    id_map_cell *cells; /* 2^bits cells, at most half of them used */
    int bits;
    size_t n;
} id_map;
/* The int stored for id, after storing `init` there if id was absent; NULL
 * (message set) when out of memory, which can only happen for an absent id.
 * The pointer is good until the next id_map_at. */
int *id_map_at(id_map *m, uint64_t id, int init);
/* The int stored for id, or `absent`. */
int id_map_get(const id_map *m, uint64_t id, int absent);
void id_map_free(id_map *m);

/* A growable list of value pointers (the sweep's order, DOT's worklists). */
typedef struct value_list {
    ad_value **v;
    size_t n, cap;
} value_list;
int value_list_push(value_list *l, ad_value *v); /* AD_OK or AD_ENOMEM */

#endif
