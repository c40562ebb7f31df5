/* main.c — one Check runner for every suite.
 *
 *   tests/hypertape-tests            runs everything
 *   CK_RUN_SUITE=tape tests/...      runs one suite (Check's own variable;
 *                                    meson registers one test per suite)
 * Exit status is non-zero when any check fails. */
#include <check.h>
#include <stdlib.h>

#include "suites.h"

#define DECLARE(name) Suite *name##_suite(void);
HT_SUITES(DECLARE)

int main(void)
{
    SRunner *sr = srunner_create(NULL);
#define ADD(name) srunner_add_suite(sr, name##_suite());
    HT_SUITES(ADD)
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
