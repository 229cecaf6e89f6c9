/* Shared CUnit runner: CU_basic_run_tests reports success even when
 * assertions fail, so the exit status comes from CU_get_number_of_failures,
 * read before the registry is cleaned up. */
#ifndef SCFM_TEST_HARNESS_H
#define SCFM_TEST_HARNESS_H

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>

static inline int scfm_test_run(const char *suite_name, CU_TestInfo *tests) {
    if (CU_initialize_registry() != CUE_SUCCESS) return 2;
    CU_SuiteInfo suites[] = {{suite_name, NULL, NULL, NULL, NULL, tests}, CU_SUITE_INFO_NULL};
    if (CU_register_suites(suites) != CUE_SUCCESS) {
        fprintf(stderr, "cannot register suite %s: %s\n", suite_name, CU_get_error_msg());
        CU_cleanup_registry();
        return 2;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures();
    unsigned ran = CU_get_number_of_tests_run();
    CU_cleanup_registry();
    if (ran == 0) return 3;
    return failures == 0 ? 0 : 1;
}

/* dir/name for a test's scratch file, creating dir (whose parent must exist)
 * first; the path lives in a buffer that the next call reuses. */
static inline const char *scfm_test_tmp_path(const char *dir, const char *name) {
    static char path[512];
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) CU_FAIL_FATAL("cannot create the test's scratch directory");
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

#endif
