/* Host side of the CUDA backend, run on every CUDA build, GPU or not: the
 * varlen attention plan (cells grouped by length, the CPU's probability
 * offsets) and device detection's answer without a device. */
#include <string.h>

#include "backend/cpu/cpu.h"
#include "backend/cuda/cuda_backend.h"
#include "harness.h"

static void test_groups(void) {
    /* lengths 3, 5, 0, 3, 5, 1: groups 5 {1, 4}, 3 {0, 3}, 1 {5}; the empty
     * cell is in no group but keeps its (empty) place in the offsets */
    const int32_t offsets[] = {0, 3, 8, 8, 11, 16, 17};
    scfm_cuda_varlen_plan plan;
    scfm_error err = {0};
    CU_ASSERT_EQUAL_FATAL(scfm_cuda_varlen_plan_build(&plan, offsets, 6, 2, &err), SCFM_OK);
    CU_ASSERT_EQUAL(plan.n_groups, 3);
    const int lens[] = {5, 3, 1}, starts[] = {0, 2, 4, 5}, order[] = {1, 4, 0, 3, 5};
    for (int g = 0; g < 3; g++) CU_ASSERT_EQUAL(plan.group_len[g], lens[g]);
    for (int g = 0; g <= 3; g++) CU_ASSERT_EQUAL(plan.group_start[g], starts[g]);
    for (int i = 0; i < 5; i++) CU_ASSERT_EQUAL(plan.order[i], order[i]);
    for (int c = 0; c <= 6; c++) CU_ASSERT_EQUAL(plan.cell_offsets[c], offsets[c]);
    /* every cell of a group has the group's length */
    for (int g = 0; g < plan.n_groups; g++)
        for (int i = plan.group_start[g]; i < plan.group_start[g + 1]; i++) {
            int c = plan.order[i];
            CU_ASSERT_EQUAL(offsets[c + 1] - offsets[c], plan.group_len[g]);
        }
    /* probabilities laid out as the CPU's: cell by cell, heads x L x L */
    const size_t want[] = {0, 18, 68, 68, 86, 136};
    for (int c = 0; c < 6; c++) CU_ASSERT_EQUAL(plan.probs_offset[c], want[c]);
    CU_ASSERT_EQUAL(plan.probs_size, scfm_attention_probs_size(offsets, 6, 2));
    scfm_cuda_varlen_plan_free(&plan);
    CU_ASSERT_PTR_NULL(plan.order);
}

static void test_edge_cases(void) {
    scfm_cuda_varlen_plan plan;
    scfm_error err = {0};
    const int32_t none[] = {0};
    CU_ASSERT_EQUAL_FATAL(scfm_cuda_varlen_plan_build(&plan, none, 0, 4, &err), SCFM_OK);
    CU_ASSERT_EQUAL(plan.n_groups, 0);
    CU_ASSERT_EQUAL(plan.probs_size, 0);
    scfm_cuda_varlen_plan_free(&plan);
    const int32_t backwards[] = {0, 4, 2};
    CU_ASSERT_EQUAL(scfm_cuda_varlen_plan_build(&plan, backwards, 2, 1, &err), SCFM_ERR_ARG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.message, "cell 1 ends before it starts"));
}

/* Without a device the count is 0 with a reason; with one, positive and no
 * error. Either way it returns instead of exiting. */
static void test_device_count(void) {
    scfm_error why = {0};
    int n = scfm_cuda_device_count(&why);
    CU_ASSERT(n >= 0);
    if (n == 0) {
        CU_ASSERT_EQUAL(why.status, SCFM_ERR_CONFIG);
        CU_ASSERT_PTR_NOT_NULL(strstr(why.message, "no CUDA device was found"));
    } else {
        CU_ASSERT_EQUAL(why.status, SCFM_OK);
    }
}

/* Flash attention tiles: every cell cut into tiles of 64 rows in batch
 * order (an empty cell has none), the buffers reused by a second build. */
static void test_flash_tiles(void) {
    const int32_t offsets[] = {0, 130, 194, 195, 195, 272, 472};
    static const scfm_cuda_flash_tile want[] = {
        {0, 130, 0, 0},   {0, 130, 64, 0},  {0, 130, 128, 0}, {130, 64, 0, 1},  {194, 1, 0, 2},   {195, 77, 0, 4},
        {195, 77, 64, 4}, {272, 200, 0, 5}, {272, 200, 64, 5}, {272, 200, 128, 5}, {272, 200, 192, 5},
    };
    scfm_error err = {0};
    scfm_cuda_flash_plan plan = {0};
    CU_ASSERT_EQUAL_FATAL(scfm_cuda_flash_plan_build(&plan, offsets, 6, &err), SCFM_OK);
    CU_ASSERT_EQUAL(plan.n_tokens, 472);
    CU_ASSERT_EQUAL_FATAL(plan.n_tiles, (int)(sizeof want / sizeof want[0]));
    for (int i = 0; i < plan.n_tiles; i++) {
        CU_ASSERT_EQUAL(plan.tiles[i].start, want[i].start);
        CU_ASSERT_EQUAL(plan.tiles[i].len, want[i].len);
        CU_ASSERT_EQUAL(plan.tiles[i].first, want[i].first);
        CU_ASSERT_EQUAL(plan.tiles[i].cell, want[i].cell);
    }
    const scfm_cuda_flash_tile *buffer = plan.tiles;
    CU_ASSERT_EQUAL_FATAL(scfm_cuda_flash_plan_build(&plan, offsets + 1, 1, &err), SCFM_OK);
    CU_ASSERT_EQUAL(plan.n_tiles, 1);
    CU_ASSERT_PTR_EQUAL(plan.tiles, buffer);
    CU_ASSERT_EQUAL(plan.tiles[0].start, 130);
    CU_ASSERT_EQUAL(plan.n_tokens, 194);
    const int32_t bad[] = {0, 5, 3};
    CU_ASSERT_EQUAL(scfm_cuda_flash_plan_build(&plan, bad, 2, &err), SCFM_ERR_ARG);
    scfm_cuda_flash_plan_free(&plan);
    CU_ASSERT(scfm_cuda_flash_supported(256, 4));
    CU_ASSERT(scfm_cuda_flash_supported(64, 4));
    CU_ASSERT(!scfm_cuda_flash_supported(96, 4));
    CU_ASSERT(!scfm_cuda_flash_supported(512, 4));
}

static CU_TestInfo tests[] = {
    {"flash attention tiles", test_flash_tiles},
    {"cells grouped by length", test_groups},
    {"empty batch and bad offsets", test_edge_cases},
    {"device count", test_device_count},
    CU_TEST_INFO_NULL,
};

int main(void) { return scfm_test_run("cuda_plan", tests); }
