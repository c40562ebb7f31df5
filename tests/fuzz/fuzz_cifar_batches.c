/* fuzz_cifar_batches.c — the official CIFAR-10 batches' reader
 * (data_cifar_read_batches: files of exactly EACH records, read in order
 * into one set).  Byte 0 picks EACH (1..4; the official files hold 10000,
 * too many to allocate for every input); the rest is the file, read as two
 * batches (the same file twice), gzipped or raw. */
#include <string.h>

#include "experiments/data/cifar.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    int each = 1 + data[0] % 4;
    const char *path = fuzz_as_file(data + 1, size - 1);
    const char *paths[2] = { path, path };
    data_cifar c;
    if (data_cifar_read_batches(paths, 2, each, &c) == AD_OK) {
        fuzz_require(c.n == 2 * each, "not 2 x EACH images, yet AD_OK");
        for (int i = 0; i < c.n; i++)
            fuzz_require(c.labels[i] < DATA_CIFAR_CLASSES, "a label outside 0..9");
        fuzz_require(memcmp(c.labels, c.labels + each, (size_t)each) == 0 &&
                     memcmp(c.pixels, c.pixels + (size_t)each * DATA_CIFAR_PIXELS,
                            (size_t)each * DATA_CIFAR_PIXELS) == 0,
                     "the same file read twice gave two different batches");
    }
    data_cifar_free(&c);
    return 0;
}
