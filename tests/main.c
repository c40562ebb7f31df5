/* main.c — one Check runner for every suite.
 *
 *   tests/hypertape-tests            runs everything
 *   CK_RUN_SUITE=tape tests/...      runs one suite (Check's own variable;
 *                                    meson registers one test per suite)
 * Exit status is non-zero when any check fails, and when no check ran at all:
 * a suite name that matches nothing (a renamed suite_create, a typo in
 * tests/meson.build's list) or a CK_RUN_CASE / CK_INCLUDE_TAGS /
 * CK_EXCLUDE_TAGS that filters every test out would otherwise pass silently. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>

#include "suites.h"

#define DECLARE(name) Suite *name##_suite(void);
HT_SUITES(DECLARE)

/* The value of Check's variable name, or "(unset)", for the message. */
static const char *main_env(const char *name)
{
    const char *v = getenv(name);
    return v ? v : "(unset)";
}

int main(void)
{
    SRunner *sr = srunner_create(NULL);
#define ADD(name) srunner_add_suite(sr, name##_suite());
    HT_SUITES(ADD)
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr), ran = srunner_ntests_run(sr);
    srunner_free(sr);
    if (ran == 0) {
        fprintf(stderr, "hypertape-tests: FAILED: no check ran (CK_RUN_SUITE=%s, CK_RUN_CASE=%s, "
                        "CK_INCLUDE_TAGS=%s, CK_EXCLUDE_TAGS=%s): no suite or test case of that "
                        "name, or the tags filter every test out\n", main_env("CK_RUN_SUITE"),
                main_env("CK_RUN_CASE"), main_env("CK_INCLUDE_TAGS"), main_env("CK_EXCLUDE_TAGS"));
        return EXIT_FAILURE;
    }
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
