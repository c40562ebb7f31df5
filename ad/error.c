/* error.c — the message channel for recoverable failures, and the always-on
 * assert for broken invariants. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "node.h"

static _Thread_local char message[1024];
static _Thread_local int last_code = AD_OK;

const char *ad_error(void) { return message; }

int ad_error_code(void) { return last_code; }

void ad_error_clear(void)
{
    message[0] = '\0';
    last_code = AD_OK;
}

int ad_fail(int code, const char *fmt, ...)
{
    last_code = code;
    if (!fmt) { /* a caller's slip must not become a crash here */
        snprintf(message, sizeof message, "(failure %d without a message)", code);
        return code;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    return code;
}

int ad_fail_wrap(int code, const char *fmt, ...)
{
    last_code = code;
    if (!fmt) return code; /* no context to add */
    char old[sizeof message / 2]; /* context first; the old message may be cut */
    snprintf(old, sizeof old, "%.*s", (int)sizeof old - 1, message);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof message / 2 && old[0])
        snprintf(message + n, sizeof message - (size_t)n, ": %s", old);
    return code;
}

_Noreturn void ad_assert_fail(const char *file, int line, const char *cond,
                              const char *hint)
{
    fprintf(stderr, "hypertape: internal error at %s:%d: %s (%s)\n"
                    "This is a bug in hypertape, not in your program.\n",
            file, line, cond, hint);
    abort();
}
