/* conv_dnnl.h — conv.c's three numerical kernels through oneDNN (internal).
 *
 * Built when meson's -Ddnnl feature is on (auto: when libdnnl is found and
 * the real type is float; oneDNN has no f64 convolution).  Only the loops
 * change: conv.c's ops, nodes and backward rules stay as they are, and call
 * these in place of im2col + gemm when conv_dnnl_active() says so.
 *
 * Each call looks up a primitive for its shape in a cache of the calling
 * thread (made on first use, freed when the thread exits), so nothing here
 * is shared between threads.  oneDNN's OpenMP threads follow OpenBLAS's
 * thread count, capped by OMP_NUM_THREADS (threads.h, ops_threads): the
 * programs that run tapes on several threads set OpenBLAS to one thread, and
 * oneDNN then runs on one thread too. */
#ifndef HT_OPS_CONV_DNNL_H
#define HT_OPS_CONV_DNNL_H

#include <stdbool.h>

#include "ad/ad.h"

/* The geometry of one convolution, as conv.c keeps it in a node's iattr. */
typedef struct conv_geom {
    int N, C, H, W, kh, kw, stride, pad;
} conv_geom;

/* What a kernel computes. */
typedef enum conv_dnnl_kind {
    CONV_DNNL_FORWARD,     /* x, w (, b) -> y   */
    CONV_DNNL_DATA,        /* gy, w -> dx       */
    CONV_DNNL_WEIGHT,      /* x, gy -> dw       */
} conv_dnnl_kind;

/* A primitive of the calling thread's cache (owned by the cache). */
typedef struct conv_dnnl_prim conv_dnnl_prim;

/* True when this build has the oneDNN path and the calling thread has not
 * turned it off (conv_dnnl_set_enabled). */
bool conv_dnnl_active(void);

/* Turns the oneDNN path off (false) or back on for the calling thread only:
 * the tests compare it with the im2col kernels.  No effect without oneDNN. */
void conv_dnnl_set_enabled(bool on);

/* The primitive for `kind` at geometry g with O output channels (and a bias
 * when has_bias, forward only), from the thread's cache or made now.
 * Returns AD_OK with *prim set; AD_OK with *prim NULL when oneDNN has no
 * implementation for this geometry, or only one that pads the channels to
 * its block, or the channels are too few to pay (CONV_DNNL_MIN_C): the
 * caller uses its own kernel;
 * otherwise an ad_fail status with a message naming `who`.  Called before
 * the op makes its node, so a failure leaves nothing on the tape. */
int conv_dnnl_prepare(conv_dnnl_prim **prim, conv_dnnl_kind kind, const conv_geom *g, int O,
                      bool has_bias, const char *who);

/* Runs a prepared primitive on the caller's arrays (NCHW, OIHW; contiguous):
 *   FORWARD: a = x [N,C,H,W], b = w [O,C,kh,kw], c = bias [O] or NULL,
 *            out = y [N,O,P,Q]
 *   DATA:    a = gy [N,O,P,Q], b = w, out = dx [N,C,H,W]
 *   WEIGHT:  a = x, b = gy, out = dw [O,C,kh,kw]
 * Returns AD_OK, or an ad_fail status when oneDNN fails to run it. */
int conv_dnnl_run(conv_dnnl_prim *prim, ad_real *out, const ad_real *a, const ad_real *b,
                  const ad_real *c, const char *who);

#endif
