/* Checkpoints: exact round trip, pruning, and damaged checkpoints detected
 * with the previous good one used. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "scfm/config.h"
#include "scfm/train.h"

static scfm_config cfg;
static scfm_model *model;
static float *adam_m, *adam_v;
static char run_dir[512];

static void setup(const char *name) {
    scfm_config_defaults(&cfg);
    cfg.model.vocab_size = 30;
    cfg.model.layers = 1;
    cfg.model.hidden = 8;
    cfg.model.heads = 2;
    cfg.model.ffn = 16;
    cfg.model.max_len = 12;
    cfg.checkpoint.keep = 2;
    scfm_error err = {0};
    CU_ASSERT_EQUAL_FATAL(scfm_model_create(&cfg.model, &model, &err), SCFM_OK);
    scfm_model_init_weights(model, 1);
    size_t n = scfm_model_num_params(model);
    adam_m = malloc(sizeof(float) * n);
    adam_v = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) {
        adam_m[i] = (float)i * 1e-3f;
        adam_v[i] = (float)(n - i) * 1e-6f;
    }
    snprintf(run_dir, sizeof run_dir, "%s/checkpoint_%s", SCFM_TEST_BINARY_DIR, name);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", run_dir);
    CU_ASSERT_EQUAL(system(cmd), 0);
    CU_ASSERT_EQUAL(scfm_make_dirs(run_dir, &err), SCFM_OK);
}

static void teardown(void) {
    scfm_model_free(model);
    free(adam_m);
    free(adam_v);
}

static void write_step(int64_t step) {
    scfm_loader_position positions[2] = {{3, 1000 + step}, {4, 1001 + step}};
    scfm_checkpoint_state s = {step, 77 * step, 2, positions};
    scfm_error err = {0};
    CU_ASSERT_EQUAL(scfm_checkpoint_write(run_dir, &cfg, model, adam_m, adam_v, &s, &err), SCFM_OK);
    if (err.status) fprintf(stderr, "\n  %s\n", err.message);
}

static void step_path(char *out, size_t cap, int64_t step, const char *file) {
    snprintf(out, cap, "%s/step_%07lld%s%s", run_dir, (long long)step, file ? "/" : "", file ? file : "");
}

static void test_round_trip(void) {
    setup("round_trip");
    write_step(10);
    scfm_model *other = NULL;
    scfm_error err = {0};
    CU_ASSERT_EQUAL_FATAL(scfm_model_create(&cfg.model, &other, &err), SCFM_OK);
    size_t n = scfm_model_num_params(model);
    float *m2 = calloc(n, sizeof(float)), *v2 = calloc(n, sizeof(float));
    char dir[600], skipped[256];
    CU_ASSERT_EQUAL(scfm_checkpoint_find(run_dir, dir, sizeof dir, skipped, sizeof skipped, &err), SCFM_OK);
    scfm_checkpoint_state s = {0};
    CU_ASSERT_EQUAL(scfm_checkpoint_read(dir, other, m2, v2, &s, &err), SCFM_OK);
    CU_ASSERT_EQUAL(memcmp(scfm_model_params(other), scfm_model_params(model), sizeof(float) * n), 0);
    CU_ASSERT_EQUAL(memcmp(m2, adam_m, sizeof(float) * n), 0);
    CU_ASSERT_EQUAL(memcmp(v2, adam_v, sizeof(float) * n), 0);
    CU_ASSERT_EQUAL(s.step, 10);
    CU_ASSERT_EQUAL_FATAL(s.world_size, 2);
    CU_ASSERT_EQUAL(s.positions[0].epoch, 3);
    CU_ASSERT_EQUAL(s.positions[0].offset, 1010);
    CU_ASSERT_EQUAL(s.positions[1].epoch, 4);
    CU_ASSERT_EQUAL(s.positions[1].offset, 1011);
    CU_ASSERT_EQUAL(s.tokens_seen, 770);
    free(s.positions);
    free(m2);
    free(v2);
    scfm_model_free(other);
    teardown();
}

static void test_keep_prunes(void) {
    setup("keep");
    for (int64_t s = 1; s <= 5; s++) write_step(s);
    struct stat sb;
    char path[600];
    for (int64_t s = 1; s <= 5; s++) {
        step_path(path, sizeof path, s, NULL);
        CU_ASSERT_EQUAL(stat(path, &sb) == 0, s >= 4);
    }
    char latest[700];
    snprintf(latest, sizeof latest, "%s/latest", run_dir);
    FILE *f = fopen(latest, "r");
    char line[64] = "";
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_PTR_NOT_NULL(fgets(line, sizeof line, f));
    fclose(f);
    CU_ASSERT_STRING_EQUAL(line, "step_0000005\n");
    teardown();
}

/* Damages step 2's file, then checks verify's message and that find falls
 * back to step 1. */
static void check_damage(const char *name, void (*damage)(const char *path), const char *expect) {
    setup(name);
    write_step(1);
    write_step(2);
    char path[600], dir[600], skipped[1100];
    step_path(path, sizeof path, 2, "model.safetensors");
    damage(path);
    step_path(dir, sizeof dir, 2, NULL);
    scfm_error err = {0};
    CU_ASSERT_EQUAL(scfm_checkpoint_verify(dir, &err), SCFM_ERR_FORMAT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.message, expect));
    if (!strstr(err.message, expect)) fprintf(stderr, "\n  message: %s\n", err.message);
    scfm_error_clear(&err);
    CU_ASSERT_EQUAL(scfm_checkpoint_find(run_dir, dir, sizeof dir, skipped, sizeof skipped, &err), SCFM_OK);
    CU_ASSERT_PTR_NOT_NULL(strstr(dir, "step_0000001"));
    CU_ASSERT_PTR_NOT_NULL(strstr(skipped, "step_0000002"));
    /* and a model read from the bad one fails instead of loading garbage */
    step_path(dir, sizeof dir, 2, NULL);
    scfm_checkpoint_state s;
    CU_ASSERT_EQUAL(scfm_checkpoint_read(dir, model, adam_m, adam_v, &s, &err), SCFM_ERR_FORMAT);
    teardown();
}

static void flip_byte(const char *path) {
    FILE *f = fopen(path, "r+b");
    fseek(f, -5, SEEK_END);
    int c = fgetc(f);
    fseek(f, -5, SEEK_END);
    fputc(c ^ 0x10, f);
    fclose(f);
}
static void truncate_file(const char *path) {
    struct stat sb;
    stat(path, &sb);
    CU_ASSERT_EQUAL(truncate(path, sb.st_size / 2), 0);
}
static void delete_file(const char *path) { CU_ASSERT_EQUAL(remove(path), 0); }

static void test_flipped_byte(void) { check_damage("flip", flip_byte, "checksum"); }
static void test_truncated(void) { check_damage("truncated", truncate_file, "truncated"); }
static void test_missing_file(void) { check_damage("missing", delete_file, "model.safetensors"); }

static void test_nothing_to_resume(void) {
    setup("empty");
    char dir[600], skipped[256];
    scfm_error err = {0};
    CU_ASSERT_EQUAL(scfm_checkpoint_find(run_dir, dir, sizeof dir, skipped, sizeof skipped, &err), SCFM_ERR_IO);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.message, "no valid checkpoint"));
    teardown();
}

/* A weights-only checkpoint (import) carries the vocabulary, resolves as
 * itself, and is not written over an existing directory. A run directory
 * resolves to its newest checkpoint. */
static void test_weights_only(void) {
    setup("weights_only");
    char vocab_dir[600], model_dir[600], resolved[600], path[700];
    snprintf(vocab_dir, sizeof vocab_dir, "%s/vocab", run_dir);
    snprintf(model_dir, sizeof model_dir, "%s/imported", run_dir);
    scfm_error err = {0};
    CU_ASSERT_EQUAL_FATAL(scfm_make_dirs(vocab_dir, &err), SCFM_OK);
    snprintf(path, sizeof path, "%s/vocab.tsv", vocab_dir);
    FILE *f = fopen(path, "w");
    fputs("not parsed here\n", f);
    fclose(f);
    snprintf(cfg.data.vocab, sizeof cfg.data.vocab, "%s", vocab_dir);
    CU_ASSERT_EQUAL(scfm_checkpoint_write_model(model_dir, &cfg, model, 0, &err), SCFM_OK);
    snprintf(path, sizeof path, "%s/vocab.tsv", model_dir);
    struct stat sb;
    CU_ASSERT_EQUAL(stat(path, &sb), 0);
    snprintf(path, sizeof path, "%s/optimizer.safetensors", model_dir);
    CU_ASSERT_NOT_EQUAL(stat(path, &sb), 0);
    CU_ASSERT_EQUAL(scfm_checkpoint_resolve(model_dir, resolved, sizeof resolved, &err), SCFM_OK);
    CU_ASSERT_STRING_EQUAL(resolved, model_dir);
    CU_ASSERT_EQUAL(scfm_checkpoint_write_model(model_dir, &cfg, model, 0, &err), SCFM_ERR_ARG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.message, "exists"));
    scfm_error_clear(&err);
    CU_ASSERT_EQUAL(scfm_checkpoint_write_model(model_dir, &cfg, model, 1, &err), SCFM_OK);
    cfg.data.vocab[0] = '\0';
    write_step(3);
    write_step(5);
    CU_ASSERT_EQUAL(scfm_checkpoint_resolve(run_dir, resolved, sizeof resolved, &err), SCFM_OK);
    step_path(path, sizeof path, 5, NULL);
    CU_ASSERT_STRING_EQUAL(resolved, path);
    snprintf(path, sizeof path, "%s/nowhere", run_dir);
    CU_ASSERT_EQUAL(scfm_checkpoint_resolve(path, resolved, sizeof resolved, &err), SCFM_ERR_IO);
    teardown();
}

static CU_TestInfo tests[] = {
    {"write then read is exact", test_round_trip},
    {"keep prunes old checkpoints, latest names the newest", test_keep_prunes},
    {"flipped byte detected, previous used", test_flipped_byte},
    {"truncated file detected, previous used", test_truncated},
    {"missing file detected, previous used", test_missing_file},
    {"no checkpoint: clear error", test_nothing_to_resume},
    {"weights-only checkpoint, resolving a run or a checkpoint", test_weights_only},
    CU_TEST_INFO_NULL,
};

int main(void) { return scfm_test_run("checkpoint", tests); }
