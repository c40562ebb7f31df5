/*
 * cifar.h — CIFAR-10 for the experiments.
 *
 * CIFAR-10 here is the official binary record layout, gzipped: records of
 * 3073 bytes, a label byte 0..9 then 1024 R, 1024 G, 1024 B bytes (32x32,
 * row-major planes), no header.  data_cifar_load reads the two files kept in
 * the shared data folder (4000 training and the 10000 test images), and
 * data_cifar_moments / data_cifar_features turn chosen images into
 * standardized feature rows, with mean and spread fitted on one index set
 * and applied to any other.
 *
 * Errors are those of mnist.h: AD_OK (0) or a negative ad_status with a
 * message in ad_error() that names the file.  AD_EIO: a file cannot be
 * opened or read.  AD_EFORMAT: a truncated file, a corrupt gzip stream, a
 * label outside 0..9.  On failure the output struct is left zeroed.
 */
#ifndef HYPERTAPE_EXPERIMENTS_DATA_CIFAR_H
#define HYPERTAPE_EXPERIMENTS_DATA_CIFAR_H

#include <stdbool.h>
#include <stddef.h>

#include "ad/ad.h"
#include "experiments/data/files.h"

/* data_find_dir(flag_dir, "cifar") finds the folder (files.h). */

/* ---- CIFAR-10 ----------------------------------------------------------- */

#define DATA_CIFAR_TRAIN "cifar10_train4000_jpeg.bin.gz"
#define DATA_CIFAR_TEST "cifar10_test_jpeg.bin.gz"
#define DATA_CIFAR_CLASSES 10
#define DATA_CIFAR_PIXELS 3072 /* 3 planes (R, G, B) of 32 x 32 */
#define DATA_CIFAR_RECORD 3073 /* label byte + pixels */
/* The largest unpacked file this loader accepts (the official 50000-image
 * training set is 154 MB), so a corrupt stream cannot eat all memory. */
#define DATA_CIFAR_MAX_BYTES ((size_t)1 << 30)

/* n images: labels[i] in 0..9; pixels[i * 3072 + p * 1024 + r * 32 + c] is
 * plane p (0 R, 1 G, 2 B), row r, column c, as 0..255.  Owns both arrays. */
typedef struct data_cifar {
    int n;
    unsigned char *labels;
    unsigned char *pixels;
} data_cifar;

/* Reads one file of 3073-byte records, gzipped or not.  Fails (AD_EFORMAT,
 * naming the file) if it is empty, not a whole number of records, a corrupt
 * or truncated gzip stream, or has a label outside 0..9 (the message gives
 * the record).  On failure *out is zeroed. */
int data_cifar_read(const char *path, data_cifar *out);
/* Reads DATA_CIFAR_TRAIN into *train and DATA_CIFAR_TEST into *test from
 * `dir`.  On failure both are zeroed. */
int data_cifar_load(const char *dir, data_cifar *train, data_cifar *test);
void data_cifar_free(data_cifar *c);

/* Per-feature mean and standard deviation (population, divisor n) of the
 * pixel values 0..255 over images idx[0..n-1] (idx NULL: 0..n-1), written to
 * mean[3072] and std[3072].  A feature that does not vary (std below 1e-6,
 * as when n = 1) gets std = 1, so standardizing leaves it at 0.
 * Fails with AD_EARG if n < 1 or an index is out of range. */
int data_cifar_moments(const data_cifar *c, const int *idx, int n, double *mean,
                       double *std);
/* Writes the (n, d) row-major matrix out, d = 3072 (+1 with add_bias): row
 * k is image idx[k] (idx NULL: k) as (pixel - mean[j]) / std[j], or
 * pixel / 255 when mean and std are NULL, then a constant 1 with add_bias.
 * Returns AD_EARG, writing nothing, if n < 0 or an index is out of range. */
int data_cifar_features(const data_cifar *c, const int *idx, int n, const double *mean,
                        const double *std, bool add_bias, ad_real *out);
/* Writes labels[idx[k]] (idx NULL: k) as ints into y[0..n-1]. */
int data_cifar_labels(const data_cifar *c, const int *idx, int n, int *y);

#endif
