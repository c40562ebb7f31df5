/*
 * fuzz.h — what the libFuzzer targets in tests/fuzz share.
 *
 * Each target is one file, fuzz_NAME.c, built as fuzz-NAME when meson is
 * configured with -Dfuzz=true (clang; see meson.build here and run.sh).  It
 * defines LLVMFuzzerTestOneInput: hand the input to one reader, and when the
 * reader says AD_OK, check what it returned (counts in range, every byte it
 * claims readable, values finite) with fuzz_require, which aborts — a crash
 * libFuzzer reports like any other.  A reader that fails must only return
 * its status: ASan, UBSan and the leak checker watch the rest.
 *
 * Readers that take a path get the input through fuzz_as_file.
 */
#ifndef HYPERTAPE_TESTS_FUZZ_FUZZ_H
#define HYPERTAPE_TESTS_FUZZ_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The input as a file: one memfd per process, rewritten with data[0..size)
 * on each call; the path is "/proc/self/fd/N" (valid until the next call),
 * which a reader opens like any file, from its first byte. */
const char *fuzz_as_file(const uint8_t *data, size_t size);

/* Aborts with "fuzz: FILE:LINE: what" when cond is false: an invariant of a
 * reader's result that does not hold is a bug the fuzzer found. */
#define fuzz_require(cond, what) fuzz_require_at((cond), (what), __FILE__, __LINE__)
void fuzz_require_at(int cond, const char *what, const char *file, int line);

#endif
