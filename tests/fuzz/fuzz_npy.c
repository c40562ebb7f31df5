/* fuzz_npy.c — the .npy loader (ad/io.h).  The input is the file. */
#include <math.h>

#include "ad/io.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ad_value *v = ad_load_npy(fuzz_as_file(data, size));
    if (v) {
        fuzz_require(v->rank >= 0 && v->rank <= 4, "rank");
        size_t n = 1;
        for (int i = 0; i < v->rank; i++) {
            fuzz_require(v->shape[i] >= 1, "an empty axis");
            n *= (size_t)v->shape[i];
        }
        fuzz_require(n == v->size, "size is not the product of the shape");
        volatile ad_real last = v->data[v->size - 1];
        (void)last;
        ad_value_free(v);
    }
    return 0;
}
