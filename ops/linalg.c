/* linalg.c — matrix products, through OpenBLAS.
 *
 * One primitive, ad_matmul, carries the transpose flags of BLAS gemm so that
 * its backward rule needs no explicit transposes: for C = op(A)·op(B) with
 * incoming gradient G, both dA and dB are again matmuls of G with the other
 * operand under some pair of flags.  The rule is thus written in the op
 * itself, and derivatives of any order go through.  ad_linear and ad_outer
 * are compositions and need no rule of their own.
 *
 * Size letters: op(A) is [m,k], op(B) is [k,n], C is [m,n]. */
#include <cblas.h>
#include <string.h>

#include "ad/node.h"
#include "ops.h"

/* ---- the kernel -------------------------------------------------------- */

/* c [m,n] = op(a) [m,k] · op(b) [k,n], row-major.  lda and ldb are the
 * stored row lengths of a and b, i.e. before op. */
static void gemm(bool ta, bool tb, int m, int n, int k, const ad_real *a, int lda,
                 const ad_real *b, int ldb, ad_real *c)
{
    enum CBLAS_TRANSPOSE opa = ta ? CblasTrans : CblasNoTrans;
    enum CBLAS_TRANSPOSE opb = tb ? CblasTrans : CblasNoTrans;
#if HT_REAL_IS_DOUBLE
    cblas_dgemm(CblasRowMajor, opa, opb, m, n, k, 1.0, a, lda, b, ldb, 0.0, c, n);
#else
    cblas_sgemm(CblasRowMajor, opa, opb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, n);
#endif
}

/* ---- matmul ------------------------------------------------------------ */

/* Rows and columns of op(x) for a 2-D x. */
static int op_rows(const ad_value *x, bool t) { return x->shape[t ? 1 : 0]; }
static int op_cols(const ad_value *x, bool t) { return x->shape[t ? 0 : 1]; }

/* "[10,785]" or, when transposed, "[10,785]ᵀ": the shape as the caller gave
 * it, so the message matches what they see in their own code. */
static const char *shape_op_str(const ad_value *x, bool t, char *buf, size_t len)
{
    ad_shape_str(x, buf, len);
    if (t) {
        size_t n = strlen(buf);
        snprintf(buf + n, len - n, "ᵀ");
    }
    return buf;
}

static int matmul_check(const ad_value *a, const ad_value *b, bool ta, bool tb)
{
    char sa[72], sb[72];
    if (a->rank != 2 || b->rank != 2)
        return ad_fail(AD_ESHAPE, "matmul: operands must be 2-D: %s x %s",
                       shape_op_str(a, ta, sa, sizeof sa), shape_op_str(b, tb, sb, sizeof sb));
    if (op_cols(a, ta) != op_rows(b, tb))
        return ad_fail(AD_ESHAPE, "matmul: inner dimensions differ: %s x %s",
                       shape_op_str(a, ta, sa, sizeof sa), shape_op_str(b, tb, sb, sizeof sb));
    return AD_OK;
}

/* For C = op(A)·op(B) and G = dC:
 *   dA = G·op(B)ᵀ        when A is used as is,
 *   dA = (G·op(B)ᵀ)ᵀ = op(B)·Gᵀ when A is transposed,
 * and symmetrically dB = op(A)ᵀ·G or Gᵀ·op(A).  A transpose of op(B) flips
 * B's flag, so every case is one matmul with the flags chosen here. */
static int matmul_backward(ad_tape *tp, ad_value *out, ad_value *g, ad_value **gin)
{
    ad_value *a = out->inputs[0], *b = out->inputs[1];
    bool ta = out->iattr[0], tb = out->iattr[1];
    if (ad_input_needs_grad(out, 0)) {
        gin[0] = ta ? ad_matmul(tp, b, g, tb, true) : ad_matmul(tp, g, b, false, !tb);
        if (!gin[0]) return ad_rule_status(gin[0]);
    }
    if (ad_input_needs_grad(out, 1)) {
        gin[1] = tb ? ad_matmul(tp, g, a, true, ta) : ad_matmul(tp, a, g, !ta, false);
        if (!gin[1]) return ad_rule_status(gin[1]);
    }
    return AD_OK;
}

/* dA needs B, dB needs A: each operand is read for the other's gradient. */
static const ad_op matmul_op = { "matmul", matmul_backward, ad_reads_other_factor };

/* a [m,k] (or [k,m] with trans_a), b [k,n] (or [n,k] with trans_b) -> [m,n] */
ad_value *ad_matmul(ad_tape *tp, ad_value *a, ad_value *b, bool trans_a, bool trans_b)
{
    ad_value *in[2] = { a, b };
    if (ad_check_inputs(tp, "matmul", 2, in) != AD_OK) return NULL;
    if (matmul_check(a, b, trans_a, trans_b) != AD_OK) return NULL;
    int m = op_rows(a, trans_a), k = op_cols(a, trans_a), n = op_cols(b, trans_b);
    ad_value *out = ad_node_new(tp, &matmul_op, 2, (int[]){ m, n }, 2, in);
    if (!out) return NULL;
    out->iattr[0] = trans_a;
    out->iattr[1] = trans_b;
    gemm(trans_a, trans_b, m, n, k, a->data, a->shape[1], b->data, b->shape[1], out->data);
    return out;
}

/* ---- compositions ------------------------------------------------------ */

/* x [N,in], w [out,in], b [out] or NULL -> [N,out].  Checked here, so the
 * message speaks of linear's arguments rather than of the matmul inside. */
ad_value *ad_linear(ad_tape *tp, ad_value *x, ad_value *w, ad_value *b)
{
    if (ad_check_inputs(tp, "linear", 2, (ad_value *[]){ x, w }) != AD_OK) return NULL;
    char sx[64], sw[64], sb[64];
    if (x->rank != 2 || w->rank != 2 || x->shape[1] != w->shape[1]) {
        ad_fail(AD_ESHAPE, "linear: x must be [N,in] and W [out,in]: got x %s, W %s",
                ad_shape_str(x, sx, 64), ad_shape_str(w, sw, 64));
        return NULL;
    }
    if (b && (b->rank != 1 || b->shape[0] != w->shape[0])) {
        ad_fail(AD_ESHAPE, "linear: bias must be [%d] for W %s: got %s", w->shape[0],
                ad_shape_str(w, sw, 64), ad_shape_str(b, sb, 64));
        return NULL;
    }
    ad_value *y = ad_matmul(tp, x, w, false, true);
    return b ? ad_add(tp, y, b) : y; /* b [out] broadcasts over the N rows */
}

/* a [m], b [n] -> [m,n]: the product of a column [m,1] and a row [1,n]. */
ad_value *ad_outer(ad_tape *tp, ad_value *a, ad_value *b)
{
    if (ad_check_inputs(tp, "outer", 2, (ad_value *[]){ a, b }) != AD_OK) return NULL;
    if (a->rank != 1 || b->rank != 1) {
        char sa[64], sb[64];
        ad_fail(AD_ESHAPE, "outer: operands must be vectors: got %s and %s",
                ad_shape_str(a, sa, 64), ad_shape_str(b, sb, 64));
        return NULL;
    }
    ad_value *col = ad_reshape(tp, a, 2, (int[]){ a->shape[0], 1 });
    ad_value *row = ad_reshape(tp, b, 2, (int[]){ 1, b->shape[0] });
    return ad_matmul(tp, col, row, false, false);
}
