/*
 * hypertape.h — the whole public API in one include:
 *
 *     #include <hypertape/hypertape.h>
 *
 *   ad/ad.h            values, the tape (steps, horizon K), the reverse sweep, errors
 *   ad/io.h            ad_print, .npy save/load
 *   ops/ops.h          the operations, each differentiable to any order
 *   models/models.h    graph builders: linear, MLP, few-shot CNN
 *   optim/hypergrad.h  bilevel problems, inner optimizers, hypergradient estimators
 *   optim/outer.h      optimizers for the hyperparameters (SGD, Adam)
 *
 * (ad/node.h, for writing a new op, is installed beside them but not
 * included here.)  Build against an installed hypertape with pkg-config:
 *
 *     cc -std=c11 prog.c -o prog $(pkg-config --cflags --libs hypertape) \
 *        -Wl,-rpath,"$(pkg-config --variable=libdir hypertape)"
 */
#ifndef HYPERTAPE_H
#define HYPERTAPE_H

#include "ad/ad.h"
#include "ad/io.h"
#include "models/models.h"
#include "ops/ops.h"
#include "optim/hypergrad.h"
#include "optim/outer.h"

#endif
