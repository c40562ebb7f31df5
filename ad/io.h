/*
 * io.h — looking at tensors: printing them, and saving and loading them as
 * NumPy .npy files, so that results open in Python (np.load) and arrays made
 * in Python come in.
 *
 *     ad_print(stdout, "w", w);
 *         w [2,3]  (op sub, step 4, requires_grad)
 *         [[ 1.5,   -2, 0.25],
 *          [   3,    4,   -1]]
 *     if (ad_save_npy("w.npy", w) != AD_OK) fprintf(stderr, "%s\n", ad_error());
 *     ad_value *back = ad_load_npy("w.npy");      // caller-owned; ad_value_free
 *
 *     >>> numpy.load("w.npy")                     # in Python
 *     array([[ 1.5 , -2.  ,  0.25], [ 3.  ,  4.  , -1.  ]])
 */
#ifndef HYPERTAPE_AD_IO_H
#define HYPERTAPE_AD_IO_H

#include <stdio.h>

#include "ad.h"

/* Writes v to out (stdout when NULL): a line with the label (may be NULL),
 * the shape and, for a value with a node or a tape, its op, step and
 * whether it wants a gradient; then the entries, nested by axis as NumPy
 * prints them, 6 significant digits, right-aligned.  A tensor of at most
 * 1000 entries is printed whole; one of more is summarised: 3 entries (or
 * rows, …) at each end of every axis longer than 6, with "..." between.
 * The op's name is printed whole, however long.  AD_OK, AD_EARG for a NULL
 * v, AD_EIO if writing failed. */
int ad_print(FILE *out, const char *label, const ad_value *v);

/* Saves v's data to path as a .npy file: format 1.0, little-endian, C order,
 * '<f8' in the double build and '<f4' in the float build, the header laid
 * out byte for byte as NumPy writes it.  Replaces an existing file.  AD_OK,
 * AD_EARG for a NULL path or a NULL or released v, or AD_EIO with a message
 * naming the file.  Marked AD_MUST_CHECK (ad.h): a lost result is a failure
 * that must not pass unseen; ad_print's, like printf's, may be dropped. */
AD_MUST_CHECK int ad_save_npy(const char *path, const ad_value *v);

/* Loads a .npy file of format 1.0 holding a '<f8' or '<f4' array of rank
 * 0..4 in C order with no empty axis — what ad_save_npy writes, and what
 * np.save writes for a float64 or float32 array — converted to ad_real (a
 * float build rounds '<f8' data).  Returns a new caller-owned tensor (no
 * gradient; free with ad_value_free), or NULL with AD_EIO when the file
 * cannot be opened or read, AD_EFORMAT for anything else (another dtype or
 * byte order, Fortran order, rank 5+, another format version, a damaged
 * header, too few or too many data bytes); the message names the file. */
ad_value *ad_load_npy(const char *path);

#endif
