/* id_map.c — a small open-addressing hash map from value ids to ints.
 *
 * The reverse sweep keeps its scratch in arrays of its own and finds a
 * value's entry through this map (ad_value holds no sweep state, so that
 * sweeps on several threads can read one shared leaf).  Ids are unique for
 * the life of the process and never 0, so 0 marks an empty cell and nothing
 * is ever deleted: a sweep's map lives as long as the sweep.  Ids are handed
 * out in sequence, which Fibonacci hashing (multiply by 2⁶⁴/φ, keep the top
 * bits) spreads evenly over the table; collisions probe the next cell. */
#include <stdlib.h>

#include "internal.h"

enum { ID_MAP_FIRST_BITS = 6 }; /* the first table has 2⁶ = 64 cells */

static size_t home(const id_map *m, uint64_t id)
{
    return (size_t)((id * 0x9e3779b97f4a7c15ull) >> (64 - m->bits));
}

/* The cell that holds id, or the empty cell where it would go. */
static id_map_cell *probe(const id_map *m, uint64_t id)
{
    size_t mask = ((size_t)1 << m->bits) - 1, i = home(m, id);
    while (m->cells[i].id != 0 && m->cells[i].id != id) i = (i + 1) & mask;
    return &m->cells[i];
}

/* Doubles the table (or makes the first one) and puts every entry back. */
static int grow(id_map *m)
{
    id_map old = *m;
    int bits = old.cells ? old.bits + 1 : ID_MAP_FIRST_BITS;
    m->cells = calloc((size_t)1 << bits, sizeof *m->cells);
    if (!m->cells) {
        *m = old;
        return ad_fail(AD_ENOMEM, "grad: out of memory for the sweep's map of %zu values",
                       old.n);
    }
    m->bits = bits;
    for (size_t i = 0; old.cells && i < ((size_t)1 << old.bits); i++)
        if (old.cells[i].id != 0) *probe(m, old.cells[i].id) = old.cells[i];
    free(old.cells);
    return AD_OK;
}

int *id_map_at(id_map *m, uint64_t id, int init)
{
    AD_ASSERT(id != 0, "value ids start at 1");
    id_map_cell *c = m->cells ? probe(m, id) : NULL;
    if (c && c->id == id) return &c->val; /* present: never fails */
    /* Keep at most half the cells full, so probe sequences stay short. */
    if (!m->cells || 2 * (m->n + 1) > ((size_t)1 << m->bits)) {
        if (grow(m) != AD_OK) return NULL;
        c = probe(m, id);
    }
    c->id = id;
    c->val = init;
    m->n++;
    return &c->val;
}

int id_map_get(const id_map *m, uint64_t id, int absent)
{
    if (!m->cells) return absent;
    const id_map_cell *c = probe(m, id);
    return c->id == id ? c->val : absent;
}

void id_map_free(id_map *m)
{
    free(m->cells);
    *m = (id_map){ 0 };
}
