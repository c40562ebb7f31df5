/* tensor.c — caller-owned leaves, shape helpers and the seeded PRNG. */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Value ids: one counter for the process, so ids are unique across threads
 * and each thread sees its own ids increase.  That is all they promise, so
 * the increment is relaxed: it orders nothing else between threads (and does
 * not hide from ThreadSanitizer an unsynchronized access it would otherwise
 * report: a sequentially consistent increment in every allocation would). */
static _Atomic uint64_t next_id = 1;

uint64_t value_next_id(void) { return atomic_fetch_add_explicit(&next_id, 1, memory_order_relaxed); }

size_t ad_shape_size(int rank, const int *shape)
{
    if (rank > 0 && !shape) {
        ad_fail(AD_EARG, "shape_size: shape is NULL for rank %d", rank);
        return 0;
    }
    size_t n = 1;
    for (int i = 0; i < rank; i++) n *= (size_t)shape[i];
    return n;
}

int ad_check_shape(const char *who, int rank, const int *shape)
{
    if (!who) who = "check_shape";
    if (rank < 0 || rank > AD_MAX_RANK)
        return ad_fail(AD_ESHAPE, "%s: rank %d is outside 0..%d", who, rank,
                       AD_MAX_RANK);
    if (rank > 0 && !shape)
        return ad_fail(AD_EARG, "%s: shape is NULL for rank %d", who, rank);
    /* The byte count must not wrap: a wrapped size would allocate a small
     * block and every kernel would write past it. */
    const size_t max_size = (SIZE_MAX / 2) / sizeof(ad_real);
    size_t n = 1;
    for (int i = 0; i < rank; i++) {
        if (shape[i] < 1)
            return ad_fail(AD_ESHAPE, "%s: extent %d of axis %d is not positive",
                           who, shape[i], i);
        if (n > max_size / (size_t)shape[i])
            return ad_fail(AD_ESHAPE, "%s: %d axes of extents up to %d: too many "
                           "elements to address", who, rank, shape[i]);
        n *= (size_t)shape[i];
    }
    return AD_OK;
}

/* A value counts its struct rounded up to 64 bytes (what one block holding
 * the struct and then 64-byte aligned data took, when a value was one block)
 * and its data: the same count whatever the allocator does underneath. */
static size_t header_bytes(void) { return (sizeof(ad_value) + 63) & ~(size_t)63; }
_Static_assert(sizeof(ad_value) <= 256, "tape byte counts assume a 256-byte value header");

size_t value_bytes(const ad_value *v)
{
    return header_bytes() + (v->dropped ? 0 : v->size * sizeof(ad_real));
}

void value_init(ad_value *v, int rank, const int *shape, size_t size)
{
    v->rank = rank;
    for (int i = 0; i < rank; i++) v->shape[i] = shape[i];
    v->size = size;
    v->magic = AD_MAGIC_LIVE;
    v->step = v->made_step = -1;
    v->id = value_next_id();
}

ad_value *value_alloc(int rank, const int *shape, bool zero)
{
    if (ad_check_shape("tensor", rank, shape) != AD_OK) return NULL;
    size_t size = ad_shape_size(rank, shape);
    size_t bytes = (size * sizeof(ad_real) + 63) & ~(size_t)63; /* 64-byte aligned data */
    ad_value *v = calloc(1, sizeof *v);
    ad_real *data = v ? aligned_alloc(64, bytes) : NULL;
    if (!data) {
        free(v);
        ad_fail(AD_ENOMEM, "out of memory allocating %zu bytes", header_bytes() + bytes);
        return NULL;
    }
    value_init(v, rank, shape, size);
    v->data = data;
    if (zero) memset(v->data, 0, size * sizeof(ad_real));
    return v;
}

ad_value *ad_tensor_new(int rank, const int *shape)
{
    return value_alloc(rank, shape, true);
}

ad_value *ad_tensor_from(int rank, const int *shape, const ad_real *data)
{
    if (!data) {
        ad_fail(AD_EARG, "tensor_from: data is NULL");
        return NULL;
    }
    ad_value *v = value_alloc(rank, shape, false);
    if (v) memcpy(v->data, data, v->size * sizeof(ad_real));
    return v;
}

ad_value *ad_tensor_fill(int rank, const int *shape, ad_real value)
{
    ad_value *v = value_alloc(rank, shape, false);
    if (v)
        for (size_t i = 0; i < v->size; i++) v->data[i] = value;
    return v;
}

ad_value *ad_tensor_scalar(ad_real value) { return ad_tensor_fill(0, NULL, value); }

ad_value *ad_param_from(int rank, const int *shape, const ad_real *data)
{
    ad_value *v = ad_tensor_from(rank, shape, data);
    if (v) v->requires_grad = true;
    return v;
}

ad_value *ad_param_scalar(ad_real value)
{
    ad_value *v = ad_tensor_scalar(value);
    if (v) v->requires_grad = true;
    return v;
}

int ad_set_requires_grad(ad_value *leaf, bool on)
{
    int rc = value_check_arg(NULL, "set_requires_grad", "the value", leaf);
    if (rc != AD_OK) return rc;
    if (leaf->tape)
        return ad_fail(AD_EARG, "set_requires_grad: only caller-owned leaves "
                                "can be marked; this value belongs to a tape");
    leaf->requires_grad = on;
    return AD_OK;
}

void ad_value_free(ad_value *v)
{
    if (!v) return;
    if (v->magic != AD_MAGIC_LIVE) { /* freed twice, or released: report, touch nothing */
        value_check_use(NULL, "value_free", "the value", v);
        return;
    }
    if (v->tape) return;
    ad_value_free(v->grad);
    free(v->data);
    /* The struct stays readable a while, marked dead, so that a later use of
     * the leaf is reported (see pool.c). */
    v->data = NULL;
    v->grad = NULL;
    v->magic = AD_MAGIC_DEAD;
    v->gone = AD_GONE_LEAF;
    v->requires_grad = false;
    graveyard_bury(v);
}

ad_value *ad_value_copy(const ad_value *v)
{
    if (value_check_use(NULL, "value_copy", "the value", v) != AD_OK) return NULL;
    return ad_tensor_from(v->rank, v->shape, v->data);
}

int ad_value_set_name(ad_value *v, const char *name)
{
    int rc = value_check_node_arg(NULL, "value_set_name", "the value", v); /* a label, not data */
    if (rc != AD_OK) return rc;
    char *copy = NULL;
    if (name && !(copy = strdup(name)))
        return ad_fail(AD_ENOMEM, "value_set_name: out of memory for a %zu-byte name",
                       strlen(name) + 1);
    free((char *)v->name);
    v->name = copy;
    return AD_OK;
}

bool ad_same_shape(const ad_value *a, const ad_value *b)
{
    if (!a || !b) {
        ad_fail(AD_EARG, "same_shape: value %s is NULL", a ? "b" : "a");
        return false;
    }
    if (a->rank != b->rank) return false;
    for (int i = 0; i < a->rank; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

char *ad_shape_str(const ad_value *v, char *buf, size_t len)
{
    if (!buf || len == 0) {
        ad_fail(AD_EARG, "shape_str: no buffer");
        return buf;
    }
    if (!v) {
        snprintf(buf, len, "(null)");
        return buf;
    }
    size_t n = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < v->rank && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, i ? ",%d" : "%d", v->shape[i]);
    if (n < len) snprintf(buf + n, len - n, "]");
    return buf;
}

int ad_check_finite(const char *who, const ad_value *v)
{
    if (!who) who = "check_finite";
    int rc = value_check_arg(NULL, who, "the value", v);
    if (rc != AD_OK) return rc;
    for (size_t i = 0; i < v->size; i++)
        if (!isfinite((double)v->data[i]))
            return ad_fail(AD_ENONFINITE, "%s: entry %zu is %s", who, i,
                           isnan((double)v->data[i]) ? "NaN" : "Inf");
    return AD_OK;
}

/* ---- xoshiro256** seeded through splitmix64 (public domain algorithms) --- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int ad_rng_seed(ad_rng *rng, uint64_t seed)
{
    if (!rng) return ad_fail(AD_EARG, "rng_seed: rng is NULL");
    for (int i = 0; i < 4; i++) rng->s[i] = splitmix64(&seed);
    return AD_OK;
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t ad_rng_next(ad_rng *rng)
{
    if (!rng) {
        ad_fail(AD_EARG, "rng: rng is NULL");
        return 0;
    }
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double ad_rng_uniform(ad_rng *rng) { return (double)(ad_rng_next(rng) >> 11) * 0x1.0p-53; }

double ad_rng_normal(ad_rng *rng)
{
    /* Box–Muller; 1 − u keeps the log argument in (0, 1]. */
    double u = 1.0 - ad_rng_uniform(rng), v = ad_rng_uniform(rng);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586476925 * v);
}

uint64_t ad_rng_below(ad_rng *rng, uint64_t n)
{
    if (n == 0) return 0; /* an empty range: defined, rather than a division by zero */
    /* Rejection removes the modulo bias. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n, x;
    do x = ad_rng_next(rng); while (x >= limit);
    return x % n;
}

int ad_rng_shuffle(ad_rng *rng, int *a, int n)
{
    if (!rng || (!a && n > 1))
        return ad_fail(AD_EARG, "rng_shuffle: %s is NULL", rng ? "the array" : "rng");
    for (int i = n - 1; i > 0; i--) {
        int j = (int)ad_rng_below(rng, (uint64_t)i + 1), t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
    return AD_OK;
}

int ad_rng_permutation(ad_rng *rng, int *out, int n)
{
    if (!rng || (!out && n > 0))
        return ad_fail(AD_EARG, "rng_permutation: %s is NULL", rng ? "the array" : "rng");
    for (int i = 0; i < n; i++) out[i] = i;
    return ad_rng_shuffle(rng, out, n);
}

ad_value *ad_tensor_randn(ad_rng *rng, int rank, const int *shape, double stddev)
{
    if (!rng) {
        ad_fail(AD_EARG, "tensor_randn: rng is NULL");
        return NULL;
    }
    ad_value *v = value_alloc(rank, shape, false);
    if (v)
        for (size_t i = 0; i < v->size; i++)
            v->data[i] = (ad_real)(stddev * ad_rng_normal(rng));
    return v;
}

ad_value *ad_tensor_rand(ad_rng *rng, int rank, const int *shape, double lo, double hi)
{
    if (!rng) {
        ad_fail(AD_EARG, "tensor_rand: rng is NULL");
        return NULL;
    }
    ad_value *v = value_alloc(rank, shape, false);
    if (v)
        for (size_t i = 0; i < v->size; i++)
            v->data[i] = (ad_real)(lo + (hi - lo) * ad_rng_uniform(rng));
    return v;
}

int value_list_push(value_list *l, ad_value *v)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        ad_value **p = realloc(l->v, cap * sizeof *p);
        if (!p) return ad_fail(AD_ENOMEM, "out of memory for a list of %zu values", cap);
        l->v = p;
        l->cap = cap;
    }
    l->v[l->n++] = v;
    return AD_OK;
}
