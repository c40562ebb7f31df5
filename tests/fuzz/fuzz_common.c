/* fuzz_common.c — the input as a file, and invariant checks; see fuzz.h. */
#define _GNU_SOURCE /* memfd_create */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"

const char *fuzz_as_file(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("fuzz-input", MFD_CLOEXEC);
        fuzz_require(fd >= 0, "memfd_create");
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    fuzz_require(ftruncate(fd, 0) == 0, "ftruncate");
    for (size_t at = 0; at < size;) {
        ssize_t n = pwrite(fd, data + at, size - at, (off_t)at);
        fuzz_require(n > 0, "pwrite");
        at += (size_t)n;
    }
    return path;
}

void fuzz_require_at(int cond, const char *what, const char *file, int line)
{
    if (cond)
        return;
    fprintf(stderr, "fuzz: %s:%d: %s\n", file, line, what);
    abort();
}
