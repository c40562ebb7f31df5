/*
 * files.h — what the dataset loaders share: finding a dataset's folder, and
 * reading a file through zlib (gzipped or not).  Experiment-layer code: the
 * library never includes it.
 *
 *     const char *dir = data_find_dir(flag_data, "omniglot");  // --data, env, default
 *     if (!dir) { fprintf(stderr, "prog: %s\n", ad_error()); return 1; }
 *
 * Errors: AD_OK (0) or a negative ad_status with a message in ad_error()
 * that starts with the file's path.
 */
#ifndef HYPERTAPE_EXPERIMENTS_DATA_FILES_H
#define HYPERTAPE_EXPERIMENTS_DATA_FILES_H

#include <stdbool.h>
#include <stddef.h>

#include "ad/ad.h"

/* Where the files of `dataset` are: "mnist", "fashion" (or
 * "fashion-mnist"), "omniglot" or "cifar".  The first of these that applies
 * wins:
 *   1. flag_dir, if not NULL or empty (the experiment's --data DIR, the
 *      dataset's own folder): returned as given, unchecked, so a wrong --data
 *      fails loudly on load instead of silently using other data;
 *   2. $HYPERTAPE_DATA/<dataset> (HYPERTAPE_DATA is the shared data root;
 *      Fashion-MNIST's folder is fashion-mnist/);
 *   3. ../shared/data/<dataset>, relative to the working directory; for
 *      fashion: /usr/share/datasets/fashion-mnist, where Debian's
 *      dataset-fashion-mnist package installs the four standard files.
 * Candidates 2 and 3 count only if they hold the dataset's probe file: for
 * MNIST and Fashion-MNIST the training images (gzipped or not), for
 * Omniglot images_background.zip, for CIFAR-10 test_batch.bin (in the
 * folder or in its cifar-10-batches-bin/) or the shared subset's
 * cifar10_test_jpeg.bin.gz.
 * Returns flag_dir itself, or a pointer to a thread-local buffer that the
 * next call on this thread overwrites.  Returns NULL, with a message listing
 * every place tried (AD_EIO) or naming an unknown dataset (AD_EARG), when
 * nothing is found. */
const char *data_find_dir(const char *flag_dir, const char *dataset);

/* ---- building blocks the loaders share ------------------------------------ */

/* "dir/name", newly allocated (caller frees), or NULL when out of memory. */
char *data_join(const char *dir, const char *name);
/* Whether path can be opened for reading. */
bool data_file_exists(const char *path);
/* The path of standard file gz_name in dir: the gzipped file if present,
 * else the unpacked one (gz_name without ".gz") if present, else the
 * gzipped name (so that a "cannot open" message names the file expected).
 * Newly allocated (caller frees), or NULL when out of memory. */
char *data_std_path(const char *dir, const char *gz_name);
/* AD_OK when n >= 0 and every index lies in [0, limit) (with idx NULL, the
 * indices are 0..n-1); otherwise AD_EARG with a message starting "who: ". */
int data_check_idx(const char *who, const int *idx, int n, int limit);

/* A file read through zlib, so that a gzipped file and its unpacked copy
 * read the same; zlib also checks the gzip checksum at the end.  A file
 * that starts with gzip's signature (1f 8b) must be gzip members to its
 * last byte: members one after the other read as one stream (as gzip -d
 * does), and any other bytes after one are refused (DATA_GZ_TRAILING),
 * where zlib's gzread would ignore them.  Any other file reads as is.
 *
 *     data_gz f;
 *     if (data_gz_open(&f, path) != AD_OK) return ...;   // message set
 *     size_t got;
 *     data_gz_stop why = data_gz_read(&f, buf, len, &got);
 *     if (why != DATA_GZ_END && why != DATA_GZ_TRUNCATED)
 *         rc = data_gz_fail(&f, why, "pixels");            // before the close
 *     data_gz_close(&f);
 */
typedef struct data_gz_in data_gz_in; /* files.c's: the open file, zlib's state */

/* Why a read returned fewer bytes than asked, or DATA_GZ_END if it did
 * not. */
typedef enum data_gz_stop {
    DATA_GZ_END,       /* all bytes read, or a clean end of file */
    DATA_GZ_TRUNCATED, /* the gzip stream stops in the middle */
    DATA_GZ_CORRUPT,   /* bad deflate data, bad checksum, bad gzip header */
    DATA_GZ_TRAILING,  /* bytes after a gzip member that do not start another */
    DATA_GZ_IO,        /* the operating system failed to read */
    DATA_GZ_NOMEM,     /* zlib ran out of memory */
} data_gz_stop;

typedef struct data_gz {
    data_gz_in *in;   /* owned; data_gz_close frees it */
    const char *path; /* for messages; not owned */
    const char *zmsg; /* zlib's message after a failed read; valid until the close */
    int sys_errno;    /* errno after a failed read */
    unsigned long long trailing_at; /* DATA_GZ_TRAILING: the file offset of those bytes */
} data_gz;

/* AD_OK, or AD_EIO "PATH: cannot open: ..." (AD_ENOMEM when the buffers
 * could not be allocated). */
int data_gz_open(data_gz *f, const char *path);
/* Reads up to len bytes into buf; *got says how many arrived.  DATA_GZ_END
 * when all len arrived or the file ended cleanly before. */
data_gz_stop data_gz_read(data_gz *f, void *buf, size_t len, size_t *got);
/* The message for a read that failed (DATA_GZ_IO, _NOMEM, _CORRUPT or
 * _TRAILING; the callers word a truncation themselves, knowing how much
 * arrived): "PATH: read error while reading the PART: ...", or without PART
 * (NULL) "PATH: read error: ...", "PATH: corrupt gzip stream: ...", "PATH:
 * bytes after the end of the gzip stream, from byte N of the file, are not
 * another gzip member".  Returns the status. */
int data_gz_fail(const data_gz *f, data_gz_stop why, const char *part);
/* Closes the file; a zeroed or closed data_gz is fine. */
void data_gz_close(data_gz *f);

#endif
