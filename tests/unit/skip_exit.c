/* Linked into every cmocka test (tests/CMakeLists.txt) with
 * -Wl,--wrap=_skip,--wrap=_cmocka_run_group_tests: a test executable in which a
 * test was skipped and none failed exits PX_SKIP_EXIT (77, ctest's
 * SKIP_RETURN_CODE) instead of 0, so a skip never reads as a pass. cmocka
 * itself only counts failures in its return value. tests/run.sh then accepts
 * the skip only for a reason on the allowlist of tests/README.md, named with
 * px_skip() (px_skip.h); cmocka's bare skip gives no reason and fails make test. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "px_skip.h"

void __real__skip(const char *const file, const int line);
int __real__cmocka_run_group_tests(const char *group_name, const struct CMUnitTest *const tests,
                                   const size_t num_tests, CMFixtureFunction group_setup,
                                   CMFixtureFunction group_teardown);
void __wrap__skip(const char *const file, const int line);
int __wrap__cmocka_run_group_tests(const char *group_name, const struct CMUnitTest *const tests,
                                   const size_t num_tests, CMFixtureFunction group_setup,
                                   CMFixtureFunction group_teardown);

static unsigned skipped;
int px__skip_reason_given;

void __wrap__skip(const char *const file, const int line)
{
    skipped++;
    if (!px__skip_reason_given)
        print_message("px-skip: %s:%d: a skip without a reason (use px_skip)\n", file, line);
    px__skip_reason_given = 0;
    __real__skip(file, line);
}

int __wrap__cmocka_run_group_tests(const char *group_name, const struct CMUnitTest *const tests,
                                   const size_t num_tests, CMFixtureFunction group_setup,
                                   CMFixtureFunction group_teardown)
{
    int failed =
        __real__cmocka_run_group_tests(group_name, tests, num_tests, group_setup, group_teardown);
    if (failed != 0)
        return 1;
    return skipped ? PX_SKIP_EXIT : 0;
}
