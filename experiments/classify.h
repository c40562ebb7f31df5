/* classify.h — what the classification problems share (hyperclean,
 * taskinteract): accuracy from logits, a linear classifier's loss and
 * accuracy, labels as a tensor, and drawing training and validation examples
 * by class quota.  Experiment-layer code. */
#ifndef HYPERTAPE_EXPERIMENTS_CLASSIFY_H
#define HYPERTAPE_EXPERIMENTS_CLASSIFY_H

#include "ad/ad.h"

/* The fraction of rows of logits [n, n_classes] whose largest entry (first
 * on ties) is at the label y[i]; 0 for n <= 0. */
double ex_accuracy(const ad_real *logits, const ad_real *y, int n, int n_classes);
/* Mean cross-entropy and accuracy (in [0,1]) of the linear classifier w on
 * x [n,d], y [n]: logits x·w for w [d,C] (hyperclean's Wᵀ), x·wᵀ for w [C,d]
 * when by_class (taskinteract's W).  Either output may be NULL.  Runs without
 * recording and writes nothing into w, x or y.  AD_ESHAPE names the shapes. */
int ex_evaluate_linear(const ad_value *w, bool by_class, const ad_value *x, const ad_value *y,
                       double *loss, double *acc);
/* A new caller-owned [n] tensor holding the whole-number labels y. */
ad_value *ex_labels_tensor(const int *y, int n);
/* Draws disjoint training and validation index sets by class quota: walks a
 * seeded permutation of 0..n−1 and gives example i (label c) to training while
 * quota_train[c] lasts, then to validation while quota_val[c] lasts.  Labels
 * at or above n_classes are skipped.  The quotas are consumed; filled[2]
 * receives how many of each were drawn (fewer than asked when a class runs
 * out: the caller says what that means).  AD_OK or AD_ENOMEM. */
int ex_sample_by_quota(ad_rng *rng, const unsigned char *labels, int n, int n_classes,
                       int *quota_train, int *quota_val, int *idx_train, int *idx_val,
                       int filled[2]);
/* Picks n_train + n_val distinct indices of labels[0..n_avail) into
 * idx_train and idx_val, each class-balanced (class c gets ⌊n/C⌋ examples,
 * one more for the first n mod C classes: per_class · C gives per_class of
 * each), in the order of a random permutation (ex_sample_by_quota).  AD_EARG
 * if some class has too few examples. */
int ex_sample_balanced(ad_rng *rng, const unsigned char *labels, int n_avail, int n_classes,
                       int n_train, int n_val, int *idx_train, int *idx_val);

#endif
