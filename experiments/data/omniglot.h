/*
 * omniglot.h — Omniglot (few-shot tasks) for the experiments.
 *
 * Omniglot is 1623 handwritten characters from 50 alphabets, each drawn once
 * by each of 20 people ("drawers").  It ships as two zips of 105x105 1-bit
 * PNGs, images_background.zip (964 characters) and images_evaluation.zip
 * (659); this module reads them in place with libzip, decodes every PNG with
 * stb_image and shrinks it to size x size floats, stroke = 1, background = 0.
 * Meta-learning then splits the characters (1200 / 100 / 323) and samples
 * N-way tasks from one part:
 *
 *     const char *dir = data_find_dir(flag_data, "omniglot");
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
 * Errors are those of mnist.h: AD_OK (0) or a negative ad_status with a
 * message in ad_error() that names the file (and, inside a zip, the entry).
 * AD_EIO: a file cannot be opened or read.  AD_EFORMAT: its contents are not
 * what they should be (not a zip, a corrupt zip stream, a PNG that does not
 * decode or is not 105x105 grayscale, a character without exactly 20
 * drawers).  A PNG's header and chunks are checked before stb_image decodes
 * it, so a hostile one cannot make the decoder allocate more than a few
 * times its own size (see data_omniglot_decode_png).
 * AD_ENOMEM, AD_EARG as usual.  On failure the output struct is left zeroed and nothing is
 * leaked, so calling its free function is always safe.
 */
#ifndef HYPERTAPE_EXPERIMENTS_DATA_OMNIGLOT_H
#define HYPERTAPE_EXPERIMENTS_DATA_OMNIGLOT_H

#include <stdbool.h>
#include <stddef.h>

#include "ad/ad.h"
#include "experiments/data/files.h"

/* data_find_dir(flag_dir, "omniglot") finds the folder (files.h). */

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
 * Takes about a second (see omniglot.c).  On failure *out is zeroed. */
int data_omniglot_load(const char *dir, int size, data_omniglot *out);
/* Reads one zip laid out as <top>/<Alphabet>/characterNN/IIII_DD.png (with
 * or without directory entries; any top folder name), such as one of the
 * two standard zips or upstream's images_background_small1.zip.  Every
 * character folder must hold drawers 01..20 exactly once, all with its id
 * IIII, and no two folders may share an id.  Entries under __MACOSX/ and
 * hidden files (".DS_Store") are skipped; any other entry is an error. */
int data_omniglot_read_zip(const char *path, int size, data_omniglot *out);
/* data_omniglot_read_zip on the zip's bytes zip[0..len) (the caller's;
 * only read, and not kept), named `name` in messages as a path would be. */
int data_omniglot_read_zip_mem(const char *name, const void *zip, size_t len, int size,
                               data_omniglot *out);
/* Frees the arrays and zeroes the struct; NULL or a zeroed struct is fine. */
void data_omniglot_free(data_omniglot *om);

/* Decodes one Omniglot PNG, png[0..len), into out (size x size floats, as
 * in data_omniglot: stroke 1, background 0), 1 <= size <= 105.  Before
 * stb_image sees it, the PNG must have: its signature, IHDR first saying
 * 105x105 grayscale of 1, 2, 4 or 8 bits, not interlaced (Omniglot's are
 * 1-bit); every chunk's length within the bytes present; no empty IDAT; no
 * critical chunk (type starting with an uppercase letter) other than IHDR,
 * PLTE, IDAT and IEND (such as Apple's CgBI, after which stb_image reads the
 * image data another way); an IEND; image data that inflate to exactly the
 * bytes such an image holds.
 * So stb_image never allocates more than about twice len plus a few
 * buffers of 105 x 106 bytes.  AD_EFORMAT "NAME: the image is 104x105,
 * expected 105x105", "NAME: the PNG does not decode: ..." otherwise; out
 * is then unspecified. */
int data_omniglot_decode_png(const char *name, const void *png, size_t len, int size,
                             float *out);

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

#endif
