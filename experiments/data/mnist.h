/*
 * mnist.h — loading MNIST-style datasets (IDX files) for the experiments.
 *
 * The data-hypercleaning experiment trains on MNIST or Fashion-MNIST, which
 * both ship as four IDX files, usually gzipped.  This module reads them into
 * plain byte arrays the experiment owns, checks every header field against
 * the bytes actually present, and turns chosen images into rows of a feature
 * matrix of ad_real.  It is experiment-layer code: the library never
 * includes it.
 *
 *     const char *dir = data_find_dir(flag_data, "mnist");  // --data, env, default
 *     data_mnist m;
 *     if (!dir || data_mnist_load(dir, &m) != AD_OK) {
 *         fprintf(stderr, "hyperclean: %s\n", ad_error());
 *         return 1;
 *     }
 *     int d = data_feature_dim(&m.train_images, true);      // 28*28 + 1 = 785
 *     ad_real *x = malloc(sizeof *x * (size_t)n * (size_t)d);
 *     data_features(&m.train_images, idx, n, true, x);      // x is (n, d)
 *     ...
 *     free(x);
 *     data_mnist_free(&m);
 *
 * The IDX format (http://yann.lecun.com/exdb/mnist/): a big-endian header
 * of a 4-byte magic 0x0000TTRR (TT = element type, 0x08 for unsigned bytes;
 * RR = rank), then RR big-endian uint32 extents, then the elements in
 * row-major order, and nothing after them.  Labels are 0x00000801 (rank 1,
 * n), images 0x00000803 (rank 3, n x rows x cols).
 *
 * Files are read through zlib (data_gz in files.h), so a gzipped file and
 * its gunzipped copy load the same way; bytes after a gzip stream are
 * refused, as bytes after an unpacked file's payload are.
 *
 * Errors: every function that can fail returns an ad_status (AD_OK = 0) and
 * leaves a message in ad_error() that starts with the file's path and says
 * what is wrong, e.g.
 *     "dir/train-images-idx3-ubyte.gz: truncated: header says 60000x28x28 =
 *      47040000 bytes of pixels, found 1234"
 * AD_EIO: the file cannot be opened or read.  AD_EFORMAT: its contents are
 * not what they claim (bad magic, wrong rank or element type, absurd
 * extents, truncated, trailing bytes (after the payload, or after the gzip
 * stream), corrupt gzip stream, counts that do not
 * match).  AD_ENOMEM: out of memory.  AD_EARG: a bad argument.
 * On failure the output struct is left zeroed and nothing is leaked, so
 * calling the matching free function on it is always safe.
 */
#ifndef HYPERTAPE_EXPERIMENTS_DATA_MNIST_H
#define HYPERTAPE_EXPERIMENTS_DATA_MNIST_H

#include <stdbool.h>
#include <stddef.h>

#include "ad/ad.h"
#include "experiments/data/files.h"

/* The largest payload (elements after the header) this loader accepts.
 * MNIST's training images are 47 MB; the limit exists so that a corrupt
 * header cannot make us try to read gigabytes. */
#define DATA_IDX_MAX_BYTES ((size_t)1 << 30)

/* n images of rows x cols unsigned bytes (0 = background, 255 = ink).
 * Image i, pixel (r, c) is pixels[(i * rows + r) * cols + c].
 * The struct owns `pixels`; data_images_free releases it. */
typedef struct data_images {
    int n, rows, cols;
    unsigned char *pixels;
} data_images;

/* n labels, one byte each (MNIST: the digit 0..9).  Owns `labels`. */
typedef struct data_labels {
    int n;
    unsigned char *labels;
} data_labels;

/* Reads an IDX images file (magic 0x00000803), gzipped or not.
 * Returns AD_OK and fills *out, or an error (see the top of this file) with
 * *out zeroed. */
int data_idx_read_images(const char *path, data_images *out);
/* Reads an IDX labels file (magic 0x00000801), gzipped or not. */
int data_idx_read_labels(const char *path, data_labels *out);
/* Free the arrays and zero the struct.  NULL, or an already freed or zeroed
 * struct, is fine. */
void data_images_free(data_images *im);
void data_labels_free(data_labels *lb);

/* ---- the four standard files ------------------------------------------ */

/* The standard file names, shared by MNIST and Fashion-MNIST (and by Debian's
 * dataset-fashion-mnist package, which installs them unchanged). */
#define DATA_MNIST_TRAIN_IMAGES "train-images-idx3-ubyte.gz"
#define DATA_MNIST_TRAIN_LABELS "train-labels-idx1-ubyte.gz"
#define DATA_MNIST_TEST_IMAGES "t10k-images-idx3-ubyte.gz"
#define DATA_MNIST_TEST_LABELS "t10k-labels-idx1-ubyte.gz"

/* The number of classes in MNIST and Fashion-MNIST. */
#define DATA_MNIST_CLASSES 10

/* A training and a test split, as loaded by data_mnist_load.  Owns all four
 * arrays; data_mnist_free releases them. */
typedef struct data_mnist {
    data_images train_images;
    data_labels train_labels;
    data_images test_images;
    data_labels test_labels;
} data_mnist;

/* Loads the four standard files from `dir`.  For each, the gzipped name is
 * tried first, then the same name without ".gz" (for users who unpacked
 * them).  Checks, besides each file on its own, that every images file has as
 * many images as its labels file has labels, that both splits have the same
 * image size, and that every label is a class 0..9.  Fails (AD_EFORMAT)
 * naming both files when counts differ.  On failure *out is zeroed. */
int data_mnist_load(const char *dir, data_mnist *out);
void data_mnist_free(data_mnist *m);

/* data_find_dir(flag_dir, "mnist") or (…, "fashion") finds the folder
 * (files.h). */

/* ---- features ---------------------------------------------------------- */

/* The number of features per image: rows * cols, plus 1 with add_bias. */
int data_feature_dim(const data_images *im, bool add_bias);

/* Writes the (n, d) row-major matrix `out`, d = data_feature_dim(im,
 * add_bias): row k holds image idx[k] as pixel / 255.0 (so features lie in
 * [0, 1]), followed by a constant 1 when add_bias (the bias feature, so a
 * linear model needs no separate bias parameter).  idx == NULL means images
 * 0..n-1.  Indices may repeat.  The caller owns `out` (n * d entries).
 * Returns AD_EARG, writing nothing, if n < 0 or an index is out of range. */
int data_features(const data_images *im, const int *idx, int n, bool add_bias,
                  ad_real *out);

/* Writes the (n, n_classes) one-hot matrix `out`: row k is 1 at column
 * lb->labels[idx[k]], 0 elsewhere.  idx == NULL means labels 0..n-1.
 * Returns AD_EARG, writing nothing, if an index or a label is out of range. */
int data_one_hot(const data_labels *lb, const int *idx, int n, int n_classes,
                 ad_real *out);

#endif
