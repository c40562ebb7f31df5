/* fuzz_cifar.c — the CIFAR-10 reader (3073-byte records), gzipped or raw.
 * Another CIFAR reader gets a file like this one: fuzz_cifar_NAME.c, named
 * in meson.build's list. */
#include <stdlib.h>

#include "experiments/data/cifar.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    data_cifar c;
    if (data_cifar_read(fuzz_as_file(data, size), &c) == AD_OK) {
        fuzz_require(c.n >= 1, "no records, yet AD_OK");
        for (int i = 0; i < c.n; i++)
            fuzz_require(c.labels[i] < DATA_CIFAR_CLASSES, "a label outside 0..9");
        volatile unsigned char last = c.pixels[(size_t)c.n * DATA_CIFAR_PIXELS - 1];
        (void)last;
        int y, idx = c.n - 1;
        fuzz_require(data_cifar_labels(&c, &idx, 1, &y) == AD_OK && y == c.labels[idx],
                     "data_cifar_labels");
    }
    data_cifar_free(&c);
    return 0;
}
