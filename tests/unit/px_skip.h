/* Skipping a unit test (see tests/README.md, "Skips"). A skip makes the test
 * executable exit PX_SKIP_EXIT (skip_exit.c), which ctest shows as skipped, and
 * tests/run.sh fails make test unless every skip names a reason on the
 * allowlist of tests/README.md ("Allowed skips"):
 *
 *     if (!have_ipv6_loopback())
 *         px_skip("no-ipv6", "no IPv6 loopback on this host");
 *
 * Never call cmocka's skip() directly (lint checks it): it gives no reason. */
#ifndef PX_TESTS_UNIT_PX_SKIP_H
#define PX_TESTS_UNIT_PX_SKIP_H

/* ctest SKIP_RETURN_CODE for every test kind (tests/CMakeLists.txt). */
#define PX_SKIP_EXIT 77

/* Set by px_skip() for the skip() it calls (skip_exit.c prints a refused
 * "px-skip:" line for any other skip). */
extern int px__skip_reason_given;

/* Print "px-skip: <test>: [<id>] <detail>" and skip the running test. */
#define px_skip(id, detail)                                                                        \
    do {                                                                                           \
        print_message("px-skip: %s: [%s] %s\n", __func__, (id), (detail));                         \
        px__skip_reason_given = 1;                                                                 \
        skip();                                                                                    \
    } while (0)

#endif
