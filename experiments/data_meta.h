/*
 * data_meta.h — Omniglot (few-shot tasks) and CIFAR-10 for the experiments.
 *
 * Omniglot is 1623 handwritten characters from 50 alphabets, each drawn once
 * by each of 20 people ("drawers").  It ships as two zips of 105x105 1-bit
 * PNGs, images_background.zip (964 characters) and images_evaluation.zip
 * (659); this module reads them in place with libzip, decodes every PNG with
 * stb_image and shrinks it to size x size floats, stroke = 1, background = 0.
 * Meta-learning then splits the characters (1200 / 100 / 323) and samples
 * N-way tasks from one part:
 *
 *     const char *dir = data_meta_find_dir(flag_data, "omniglot");
 *     data_omniglot om;
 *     if (!dir || data_omniglot_load(dir, 28, &om) != AD_OK) {
 *         fprintf(stderr, "maml: %s\n", ad_error());
 *         return 1;
 *     }
 *     ad_rng rng;
 *     ad_rng_seed(&rng, 1);
 *     data_char_split sp;                      // 1200 / 100 / 323 characters
 *     data_char_split_make(om.n_chars, DATA_OMNIGLOT_META_TRAIN,
 *                          DATA_OMNIGLOT_META_VAL, &rng, &sp);
 *     data_task t;                             // 5-way, 1 shot, 15 queries
 *     data_task_init(&t, 5, 1, 15, om.size);
 *     data_omniglot_sample_task(&om, sp.train, sp.n_train, &rng, &t);
 *     // t.x_train is (5*1, 1, 28, 28), t.y_train[k] in 0..4, same for val
 *     ...
 *     data_task_free(&t);  data_char_split_free(&sp);  data_omniglot_free(&om);
 *
 * CIFAR-10 here is the official binary record layout, gzipped: records of
 * 3073 bytes, a label byte 0..9 then 1024 R, 1024 G, 1024 B bytes (32x32,
 * row-major planes), no header.  data_cifar_load reads the two files kept in
 * the shared data folder (4000 training and the 10000 test images), and
 * data_cifar_moments / data_cifar_features turn chosen images into
 * standardized feature rows, with mean and spread fitted on one index set
 * and applied to any other.
 *
 * Errors are those of data.h: AD_OK (0) or a negative ad_status with a
 * message in ad_error() that names the file (and, inside a zip, the entry).
 * AD_EIO: a file cannot be opened or read.  AD_EFORMAT: its contents are not
 * what they should be (not a zip, a corrupt zip or gzip stream, a PNG that
 * does not decode or is not 105x105, a character without exactly 20
 * drawers, a truncated CIFAR file, a label outside 0..9).  AD_ENOMEM, AD_EARG
 * as usual.  On failure the output struct is left zeroed and nothing is
 * leaked, so calling its free function is always safe.
 */
#ifndef HYPERTAPE_EXPERIMENTS_DATA_META_H
#define HYPERTAPE_EXPERIMENTS_DATA_META_H

#include <stdbool.h>
#include <stddef.h>

#include "ad/ad.h"

/* Where the files of `dataset` ("omniglot" or "cifar") are; the rules of
 * data_find_dir (data.h), with the same meaning of each candidate:
 *   1. flag_dir, if not NULL or empty: returned as given, unchecked (so it
 *      names the dataset's own folder, as --data does for MNIST);
 *   2. $HYPERTAPE_DATA/<dataset>;
 *   3. ../shared/data/<dataset>, relative to the working directory.
 * Candidates 2 and 3 count only if they hold the dataset's first standard
 * file (images_background.zip, cifar10_test_jpeg.bin.gz).  Returns flag_dir,
 * or a thread-local buffer that the next call on this thread overwrites, or
 * NULL with a message listing every place tried (AD_EIO) or naming an
 * unknown dataset (AD_EARG).  (Defined in data_idx.c, beside data_find_dir:
 * the two run the same search.) */
const char *data_meta_find_dir(const char *flag_dir, const char *dataset);

/* ---- Omniglot ----------------------------------------------------------- */

#define DATA_OMNIGLOT_BACKGROUND "images_background.zip"
#define DATA_OMNIGLOT_EVALUATION "images_evaluation.zip"
#define DATA_OMNIGLOT_SIDE 105       /* every PNG is 105 x 105 */
#define DATA_OMNIGLOT_DRAWERS 20     /* every character is drawn 20 times */
#define DATA_OMNIGLOT_CHARS 1623     /* 964 background + 659 evaluation */
#define DATA_OMNIGLOT_BACKGROUND_CHARS 964
/* The usual meta-learning split of all 1623 characters (the rest, 323, is
 * meta-test). */
#define DATA_OMNIGLOT_META_TRAIN 1200
#define DATA_OMNIGLOT_META_VAL 100

/* Characters, each with n_drawers images of size x size floats.
 * Image of character c by drawer d (0-based: file IIII_DD.png is d = DD-1),
 * pixel (r, col), is pixels[((c * n_drawers + d) * size + r) * size + col].
 * Values lie in [0, 1]: the fraction of that output pixel's area covered by
 * stroke (1 = all stroke, 0 = all background).
 * Characters are in order of their global id IIII (the number in every
 * file name: 1..964 background, 965..1623 evaluation), so in a full load
 * character c has id c + 1.  The struct owns every array. */
typedef struct data_omniglot {
    int n_chars;
    int n_drawers; /* DATA_OMNIGLOT_DRAWERS */
    int size;      /* side of the stored images */
    float *pixels;
    int *ids;      /* [n_chars] the global id IIII */
    char **names;  /* [n_chars] "images_background/Latin/character01" */
} data_omniglot;

/* Reads both standard zips from `dir` (background, then evaluation), each
 * image shrunk to size x size, 1 <= size <= 105 (28 is usual; 105 keeps the
 * full resolution).  Expects exactly 1623 characters with distinct ids.
 * Takes about a second (see data_omniglot.c).  On failure *out is zeroed. */
int data_omniglot_load(const char *dir, int size, data_omniglot *out);
/* Reads one zip laid out as <top>/<Alphabet>/characterNN/IIII_DD.png (with
 * or without directory entries; any top folder name), such as one of the
 * two standard zips or upstream's images_background_small1.zip.  Every
 * character folder must hold drawers 01..20 exactly once, all with its id
 * IIII, and no two folders may share an id.  Entries under __MACOSX/ and
 * hidden files (".DS_Store") are skipped; any other entry is an error. */
int data_omniglot_read_zip(const char *path, int size, data_omniglot *out);
/* Frees the arrays and zeroes the struct; NULL or a zeroed struct is fine. */
void data_omniglot_free(data_omniglot *om);

/* A random partition of characters 0..n_chars-1 into n_train, n_val and
 * n_test = n_chars - n_train - n_val, each part in increasing order.  The
 * three arrays share one allocation; data_char_split_free releases it. */
typedef struct data_char_split {
    int n_train, n_val, n_test;
    int *train, *val, *test;
} data_char_split;

/* Shuffles with rng (so a seed fixes the split).  Fails with AD_EARG if a
 * count is negative or n_train + n_val > n_chars.  On failure *out is
 * zeroed. */
int data_char_split_make(int n_chars, int n_train, int n_val, ad_rng *rng,
                         data_char_split *out);
void data_char_split_free(data_char_split *s);

/* One N-way few-shot task: n_way classes, each with k_train training
 * ("support") and k_val validation ("query") images, all of one character
 * by distinct drawers.  Examples are class-major: example j of class c is
 * row c * k_train + j of x_train (c * k_val + j of x_val), label c.
 * Arrays are allocated once by data_task_init and refilled by each sample. */
typedef struct data_task {
    int n_way, k_train, k_val, size;
    ad_real *x_train; /* (n_way * k_train, 1, size, size) */
    int *y_train;     /* [n_way * k_train] labels 0..n_way-1 */
    ad_real *x_val;   /* (n_way * k_val, 1, size, size) */
    int *y_val;       /* [n_way * k_val] */
    int *chars;       /* [n_way] the character of class c */
    int *drawers;     /* [n_way * (k_train + k_val)]: class c's training
                         drawers, then its validation drawers, at
                         c * (k_train + k_val) */
} data_task;

/* Allocates a task of this shape (n_way >= 1, k_train >= 1, k_val >= 0,
 * k_train + k_val <= 20, size >= 1).  On failure *t is zeroed. */
int data_task_init(data_task *t, int n_way, int k_train, int k_val, int size);
void data_task_free(data_task *t);

/* Fills t with a fresh task: n_way distinct characters drawn from
 * pool[0..n_pool-1] (e.g. a part of a data_char_split; entries should be
 * distinct), assigned to labels 0..n_way-1 in random order, and for each
 * k_train + k_val distinct random drawers.  Fails with AD_EARG, changing
 * nothing, if t does not fit om (size, drawers), n_pool < n_way, or any
 * pool entry is not a character of om. */
int data_omniglot_sample_task(const data_omniglot *om, const int *pool, int n_pool,
                              ad_rng *rng, data_task *t);

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
