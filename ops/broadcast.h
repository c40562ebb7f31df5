/* broadcast.h — NumPy broadcasting, shared by elementwise.c and reduce.c.
 * Shapes are right-aligned into 4 padded axes; an input's stride along an
 * axis where it has extent 1 is 0, so one index walk serves every case. */
#ifndef HYPERTAPE_OPS_BROADCAST_H
#define HYPERTAPE_OPS_BROADCAST_H

#include "ad/node.h"

typedef struct bc_layout {
    int rank;                 /* rank of the result */
    int shape[AD_MAX_RANK];   /* result shape (rank entries) */
    int ext[AD_MAX_RANK];     /* result shape padded on the left with 1s */
    size_t stride[2][AD_MAX_RANK]; /* per operand, 0 where it broadcasts */
} bc_layout;

/* Lays out a op b; fails with a message naming `who` and both shapes. */
int bc_binary(const char *who, const ad_value *a, const ad_value *b, bc_layout *out);
/* Lays out x stretched to (rank, shape); operand 0 is x. */
int bc_to(const char *who, const ad_value *x, int rank, const int *shape, bc_layout *out);
/* Offset into operand k for the padded index i[4]. */
static inline size_t bc_offset(const bc_layout *l, int k, const int i[AD_MAX_RANK])
{
    return i[0] * l->stride[k][0] + i[1] * l->stride[k][1] + i[2] * l->stride[k][2] +
           i[3] * l->stride[k][3];
}

/* Advances the padded index i[4] over the result, last axis fastest (an
 * odometer): walking n = 0..size−1 with it visits entries in row-major order. */
static inline void bc_next(const bc_layout *l, int i[AD_MAX_RANK])
{
    for (int k = AD_MAX_RANK - 1; k >= 0; k--) {
        if (++i[k] < l->ext[k]) return;
        i[k] = 0;
    }
}

/* The trailing axes over which each of the first n operands is either
 * contiguous or constant (stride 0) form a run that a tight loop can walk:
 * returns its length, sets step[k] to 1 or 0 (operand k's stride inside the
 * run) and *top to the last padded axis outside it (−1: the whole result). */
static inline size_t bc_run(const bc_layout *l, int n, size_t step[2], int *top)
{
    size_t run = 1;
    bool started = false;
    int t = AD_MAX_RANK - 1;
    for (; t >= 0; t--) {
        if (l->ext[t] == 1) continue;
        bool fits = true;
        for (int k = 0; k < n; k++) {
            if (!started) step[k] = l->stride[k][t] ? 1 : 0;
            fits = fits && l->stride[k][t] == step[k] * run;
        }
        started = true;
        if (!fits) break;
        run *= (size_t)l->ext[t];
    }
    if (!started)
        for (int k = 0; k < n; k++) step[k] = 0;
    *top = t;
    return run;
}

/* Advances the padded index i[4] to the next run: the odometer of bc_next on
 * the axes up to top (those after it stay 0). */
static inline void bc_next_run(const bc_layout *l, int i[AD_MAX_RANK], int top)
{
    for (int k = top; k >= 0; k--) {
        if (++i[k] < l->ext[k]) return;
        i[k] = 0;
    }
}

#endif
