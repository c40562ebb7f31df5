/* fuzz_idx.c — the IDX readers (MNIST, Fashion-MNIST), gzipped or raw: the
 * input is the file, read as an images file and as a labels file. */
#include <stdlib.h>

#include "experiments/data/mnist.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_as_file(data, size);
    data_images im;
    if (data_idx_read_images(path, &im) == AD_OK) {
        size_t bytes = (size_t)im.n * (size_t)im.rows * (size_t)im.cols;
        fuzz_require(im.n >= 1 && im.rows >= 1 && im.cols >= 1, "images: an extent < 1");
        fuzz_require(bytes <= DATA_IDX_MAX_BYTES, "images: more than the limit");
        volatile unsigned char last = im.pixels[bytes - 1]; /* ASan: all there */
        (void)last;
        /* The consumer: the last image as a feature row. */
        int d = data_feature_dim(&im, true), idx = im.n - 1;
        ad_real *x = malloc(sizeof *x * (size_t)d);
        fuzz_require(x != NULL, "out of memory");
        fuzz_require(data_features(&im, &idx, 1, true, x) == AD_OK, "data_features failed");
        for (int j = 0; j + 1 < d; j++)
            fuzz_require(x[j] >= 0 && x[j] <= 1, "a feature outside [0, 1]");
        free(x);
    }
    data_images_free(&im);
    data_labels lb;
    if (data_idx_read_labels(path, &lb) == AD_OK) {
        fuzz_require(lb.n >= 1 && (size_t)lb.n <= DATA_IDX_MAX_BYTES, "labels: a count out of range");
        volatile unsigned char last = lb.labels[lb.n - 1];
        (void)last;
    }
    data_labels_free(&lb);
    return 0;
}
