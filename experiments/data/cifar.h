/*
 * cifar.h — CIFAR-10 for the experiments.
 *
 * CIFAR-10 is read in the official binary record layout: records of 3073
 * bytes, a label byte 0..9 then 1024 R, 1024 G, 1024 B bytes (32x32,
 * row-major planes), no header.  Two sets of files hold such records, and
 * data_cifar_load takes whichever a folder has:
 *   - the official binary version, cifar-10-binary.tar.gz from
 *     https://www.cs.toronto.edu/~kriz/cifar.html extracted (its folder
 *     cifar-10-batches-bin/, or that folder's files): data_batch_1.bin …
 *     data_batch_5.bin (50000 training images) and test_batch.bin (10000),
 *     10000 records each; scripts/get-cifar10.sh fetches and checks them;
 *   - the shared data folder's subset: cifar10_train4000_jpeg.bin.gz (the
 *     first 4000 training images) and cifar10_test_jpeg.bin.gz (the 10000
 *     test images, sorted by class), gzipped, pixels decoded from JPEG
 *     copies (so not bit-exact).
 * The archive itself is not read: `tar xzf` (or the script) extracts it,
 * and the loader reads plain files it can check one by one.
 * data_cifar_moments / data_cifar_features turn chosen images into
 * standardized feature rows, with mean and spread fitted on one index set
 * and applied to any other.
 *
 * Errors are those of mnist.h: AD_OK (0) or a negative ad_status with a
 * message in ad_error() that names the file.  AD_EIO: a file cannot be
 * opened or read, or a folder holds neither set.  AD_EFORMAT: a truncated
 * file, a corrupt gzip stream or bytes after it, a label outside 0..9, an
 * official batch without exactly 10000 records.  On failure the output
 * struct is left zeroed.
 */
#ifndef HYPERTAPE_EXPERIMENTS_DATA_CIFAR_H
#define HYPERTAPE_EXPERIMENTS_DATA_CIFAR_H

#include <stdbool.h>
#include <stddef.h>

#include "ad/ad.h"
#include "experiments/data/files.h"

/* data_find_dir(flag_dir, "cifar") finds the folder (files.h). */

/* ---- CIFAR-10 ----------------------------------------------------------- */

/* The shared subset (JPEG-degraded). */
#define DATA_CIFAR_TRAIN "cifar10_train4000_jpeg.bin.gz"
#define DATA_CIFAR_TEST "cifar10_test_jpeg.bin.gz"
/* The official binary version: the archive's folder, its test file, and
 * its training files DATA_CIFAR_OFFICIAL_BATCH1 … data_batch_5.bin. */
#define DATA_CIFAR_OFFICIAL_DIR "cifar-10-batches-bin"
#define DATA_CIFAR_OFFICIAL_TEST "test_batch.bin"
#define DATA_CIFAR_OFFICIAL_BATCH1 "data_batch_1.bin"
#define DATA_CIFAR_OFFICIAL_BATCHES 5
#define DATA_CIFAR_BATCH_RECORDS 10000 /* in every official file */
#define DATA_CIFAR_CLASSES 10
#define DATA_CIFAR_PIXELS 3072 /* 3 planes (R, G, B) of 32 x 32 */
#define DATA_CIFAR_RECORD 3073 /* label byte + pixels */
/* The largest unpacked file this loader accepts (an official batch is 31 MB,
 * all 50000 training images in one file 154 MB), so a corrupt stream cannot
 * eat all memory. */
#define DATA_CIFAR_MAX_BYTES ((size_t)1 << 30)

/* Which files a data_cifar came from. */
typedef enum data_cifar_source {
    DATA_CIFAR_FILES,    /* data_cifar_read / _read_batches: the files named */
    DATA_CIFAR_OFFICIAL, /* data_cifar_load: the official binary version */
    DATA_CIFAR_SUBSET,   /* data_cifar_load: the shared JPEG-degraded subset */
} data_cifar_source;

/* n images: labels[i] in 0..9; pixels[i * 3072 + p * 1024 + r * 32 + c] is
 * plane p (0 R, 1 G, 2 B), row r, column c, as 0..255.  Owns both arrays. */
typedef struct data_cifar {
    int n;
    unsigned char *labels;
    unsigned char *pixels;
    data_cifar_source source;
} data_cifar;

/* Reads one file of 3073-byte records, gzipped or not.  Fails (AD_EFORMAT,
 * naming the file) if it is empty, not a whole number of records, a corrupt
 * or truncated gzip stream or one with bytes after it, or has a label
 * outside 0..9 (the message gives
 * the record).  On failure *out is zeroed. */
int data_cifar_read(const char *path, data_cifar *out);
/* Reads n files of exactly `each` records apiece (each >= 1), in order, into
 * one set of n * each images, as the official training batches are read.
 * Fails like data_cifar_read, naming the file; a file of another whole
 * number of records fails with AD_EFORMAT ("N records, expected EACH").  On
 * failure *out is zeroed. */
int data_cifar_read_batches(const char *const *paths, int n, int each, data_cifar *out);
/* Reads CIFAR-10's training images into *train and its test images into
 * *test from `dir`, whichever set of files it holds:
 *   1. official, when dir or dir/cifar-10-batches-bin holds test_batch.bin
 *      or data_batch_1.bin: data_batch_1..5.bin (50000 images, in order)
 *      and test_batch.bin (10000), each exactly 10000 records;
 *   2. subset, when dir holds DATA_CIFAR_TEST or DATA_CIFAR_TRAIN: those
 *      two files (4000 and 10000 images).
 * The first that applies is read; a file of its set that is missing fails
 * (AD_EIO naming it), and a folder with neither set fails (AD_EIO, saying
 * what was looked for).  Both structs get .source.  On failure both are
 * zeroed. */
int data_cifar_load(const char *dir, data_cifar *train, data_cifar *test);
/* A phrase naming the files of `source` ("the official binary version
 * (data_batch_1..5.bin, test_batch.bin)", …), for messages; static. */
const char *data_cifar_source_name(data_cifar_source source);
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
