/* fuzz_ckpt.c — checkpoints (experiments/kit: ex_ckpt_open and every
 * getter, opt_outer_load through ex_ckpt_get_outer).
 *
 * The input: byte 0 says what the rest is — odd: the fields alone, to which
 * the target puts a header line with their true length and CRC (so that
 * mutations get past the CRC to the getters); even: a whole file, header
 * line included.  Byte 1 picks the tables' column count (1..4).  Then the
 * target reads field after field the way a program does, choosing each
 * getter by the type the next field says it has (a program knows its
 * fields; the fuzzer then reaches every getter with every kind of damage),
 * and stops at the first failure, as a program does.  Field names with a
 * meaning: "rng" (a generator's state), "adam" (Adam's state over 3
 * numbers), "adam2" (the same numbers in two groups, 1 + 2), names starting
 * with 't' (tables); other bytes are text. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "experiments/kit/kit.h"
#include "fuzz.h"

enum { T_INT = 1, T_F64 = 2, T_BYTES = 3, MAX_FIELDS = 64, MAX_VALUES = 1 << 16, ADAM_DIM = 3 };

/* The next field's name, type and count as the layout puts them (ckpt.c's
 * top comment); false when they are not all there. */
static bool peek(const ex_ckpt *c, char name[64], int *type, uint64_t *count)
{
    const unsigned char *b = (const unsigned char *)c->buf;
    size_t left = c->len - c->pos, len = left > 0 ? b[c->pos] : 0;
    if (len == 0 || len > 63 || left < 1 + len + 1 + 8) return false;
    memcpy(name, b + c->pos + 1, len);
    name[len] = '\0';
    *type = b[c->pos + 1 + len];
    memcpy(count, b + c->pos + 2 + len, 8);
    return strlen(name) == len; /* a NUL inside: no getter could ask for it */
}

static int read_field(ex_ckpt *c, const char *name, int type, uint64_t count, int n_cols,
                      const ad_value *adam_param)
{
    long long i;
    static double v[MAX_VALUES];
    static ad_real r[MAX_VALUES];
    char text[256];
    if (type == T_INT) return ex_ckpt_get_int(c, name, -5, 1000000000, &i);
    if (type == T_F64 && name[0] == 't') {
        ex_table t = { .name = name, .header = "", .fmt = "%g", .n_cols = n_cols };
        int rc = ex_ckpt_get_table(c, &t, 1000);
        fuzz_require(rc != AD_OK || (t.n_rows >= 0 && t.n_rows <= 1000), "table rows");
        ex_table_free(&t);
        return rc;
    }
    size_t n = count < MAX_VALUES ? (size_t)count : 1; /* a wrong count: refused */
    if (type == T_F64 && count % 2) { /* odd counts as ad_real, even as double: both getters */
        int rc = ex_ckpt_get_reals(c, name, r, n, -1e300, 1e300);
        for (size_t k = 0; rc == AD_OK && k < n; k++)
            fuzz_require(isfinite(r[k]) && r[k] >= -1e300 && r[k] <= 1e300, "a real out of range");
        return rc;
    }
    if (type == T_F64) {
        int rc = ex_ckpt_get_f64(c, name, v, n, -1e300, 1e300);
        for (size_t k = 0; rc == AD_OK && k < n; k++)
            fuzz_require(isfinite(v[k]) && v[k] >= -1e300 && v[k] <= 1e300, "a double out of range");
        return rc;
    }
    if (type == T_BYTES && strcmp(name, "rng") == 0) {
        ad_rng g;
        int rc = ex_ckpt_get_rng(c, name, &g);
        fuzz_require(rc != AD_OK || (g.s[0] | g.s[1] | g.s[2] | g.s[3]), "an all-zero rng");
        return rc;
    }
    if (type == T_BYTES && (strcmp(name, "adam") == 0 || strcmp(name, "adam2") == 0)) {
        /* adam2: two groups, over one number and over two (a version-2 state) */
        static ad_value *pair[2], *pair_g[2];
        if (!pair[0])
            for (int k = 0; k < 2; k++) {
                pair[k] = ad_param_from(1, (int[]){ k + 1 }, (ad_real[]){ 0, 0 });
                pair_g[k] = ad_tensor_from(1, (int[]){ k + 1 }, (ad_real[]){ 1, 1 });
            }
        static ad_value *g;
        if (!g) g = ad_tensor_from(1, (int[]){ ADAM_DIM }, (ad_real[]){ 1, 1, 1 });
        opt_outer o;
        ad_value *p = (ad_value *)adam_param;
        bool two = name[4] == '2';
        int rc = opt_outer_init(&o, OPT_ADAM, 0.1, false, 1, two ? pair : &p);
        if (rc == AD_OK && two) rc = opt_outer_add_group(&o, 0.1, false, 1, pair + 1);
        fuzz_require(rc == AD_OK, "opt_outer_init");
        rc = ex_ckpt_get_outer(c, name, &o);
        if (rc == AD_OK) { /* what load accepts, a step can use: it fails only on overflow */
            for (int k = 0; k < o.n; k++)
                memset(o.params[k]->data, 0, sizeof(ad_real) * o.params[k]->size);
            int st = opt_outer_step(&o, two ? pair_g : &g);
            fuzz_require(st == AD_OK || st == AD_ENONFINITE, "a loaded state a step refuses");
        }
        opt_outer_free(&o);
        return rc;
    }
    return ex_ckpt_get_text(c, name, text, sizeof text); /* also any unknown type */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ad_value *adam_param;
    if (!adam_param) adam_param = ad_param_from(1, (int[]){ ADAM_DIM }, (ad_real[]){ 0, 0, 0 });
    if (size < 2) return 0;
    int n_cols = 1 + data[1] % 4;
    const uint8_t *rest = data + 2;
    size_t len = size - 2;
    char *file = NULL;
    if (data[0] % 2) { /* the fields: put the true header in front */
        char head[128];
        int h = snprintf(head, sizeof head, "hypertape-checkpoint 1 fuzz 1 %zu %08lx\n", len,
                         crc32_z(0L, rest, len));
        file = malloc((size_t)h + len + 1);
        fuzz_require(file != NULL, "out of memory");
        memcpy(file, head, (size_t)h);
        if (len) memcpy(file + h, rest, len);
        rest = (const uint8_t *)file;
        len += (size_t)h;
    }
    ex_ckpt c;
    int rc = ex_ckpt_open_mem(&c, "fuzz.ckpt", rest, len, "fuzz", 1);
    for (int k = 0; k < MAX_FIELDS && rc == AD_OK && c.pos < c.len; k++) {
        char name[64];
        int type;
        uint64_t count;
        if (!peek(&c, name, &type, &count)) {
            rc = ex_ckpt_get_int(&c, "x", 0, 0, &(long long){ 0 }); /* what is left is no field */
            fuzz_require(rc != AD_OK, "a field read where there is none");
            break;
        }
        fuzz_require(ex_ckpt_next_is(&c, name), "ex_ckpt_next_is disagrees");
        rc = read_field(&c, name, type, count, n_cols, adam_param);
    }
    if (rc == AD_OK) {
        rc = ex_ckpt_end(&c);
        fuzz_require((rc == AD_OK) == (c.pos == c.len), "ex_ckpt_end");
    }
    ex_ckpt_free(&c);
    free(file);
    return 0;
}
