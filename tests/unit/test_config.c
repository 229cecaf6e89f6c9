/* Configuration: defaults, parsing, every error message (their exact text is
 * documented in docs/config.md), overrides, cross-key checks, the write/load
 * round trip and the shipped configs. */
#include "scfm/config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static char path_buf[SCFM_PATH_MAX];

/* Writes text to a file named after the test under the build tree and
 * returns its path (valid until the next call). */
static const char *write_cfg(const char *name, const char *text) {
    snprintf(path_buf, sizeof path_buf, "%s/cfgtest_%s.cfg", SCFM_TEST_BINARY_DIR, name);
    FILE *f = fopen(path_buf, "w");
    CU_ASSERT_FATAL(f != NULL);
    fputs(text, f);
    fclose(f);
    return path_buf;
}

/* Loads text as a file and checks that it fails with exactly
 * "PATH:" followed by suffix. */
static void expect_file_error(const char *name, const char *text, const char *suffix) {
    const char *path = write_cfg(name, text);
    scfm_config cfg;
    scfm_error err = {0};
    CU_ASSERT_EQUAL(scfm_config_load(&cfg, path, NULL, 0, &err), SCFM_ERR_CONFIG);
    CU_ASSERT_EQUAL(err.status, SCFM_ERR_CONFIG);
    char expected[2048];
    snprintf(expected, sizeof expected, "%s:%s", path, suffix);
    CU_ASSERT_STRING_EQUAL(err.message, expected);
    if (strcmp(err.message, expected) != 0)
        fprintf(stderr, "\n  got:      %s\n  expected: %s\n", err.message, expected);
}

/* Applies one override to the defaults and checks the exact message. */
static void expect_override_error(const char *override, const char *expected) {
    scfm_config cfg;
    scfm_error err = {0};
    CU_ASSERT_EQUAL(scfm_config_load(&cfg, NULL, &override, 1, &err), SCFM_ERR_CONFIG);
    CU_ASSERT_STRING_EQUAL(err.message, expected);
    if (strcmp(err.message, expected) != 0)
        fprintf(stderr, "\n  got:      %s\n  expected: %s\n", err.message, expected);
}

static void test_defaults(void) {
    scfm_config cfg;
    scfm_config_defaults(&cfg);
    CU_ASSERT_STRING_EQUAL(cfg.data.shards, "");
    CU_ASSERT_EQUAL(cfg.model.vocab_size, 0);
    CU_ASSERT_EQUAL(cfg.model.max_len, 2048);
    CU_ASSERT_EQUAL(cfg.model.layers, 6);
    CU_ASSERT_EQUAL(cfg.model.hidden, 256);
    CU_ASSERT_EQUAL(cfg.model.heads, 4);
    CU_ASSERT_EQUAL(cfg.model.ffn, 512);
    CU_ASSERT_EQUAL(cfg.model.activation, SCFM_ACT_RELU);
    CU_ASSERT_EQUAL(cfg.model.norm, SCFM_NORM_POST);
    CU_ASSERT_EQUAL(cfg.model.position, SCFM_POS_LEARNED);
    CU_ASSERT_EQUAL(cfg.model.dropout, 0.02);
    CU_ASSERT_EQUAL(cfg.model.attention_dropout, 0.02);
    CU_ASSERT_EQUAL(cfg.model.layer_norm_eps, 1e-12);
    CU_ASSERT_EQUAL(cfg.model.init_std, 0.02);
    CU_ASSERT_EQUAL(cfg.train.steps, 1000);
    CU_ASSERT_EQUAL(cfg.train.micro_batch_tokens, 8192);
    CU_ASSERT_EQUAL(cfg.train.accumulate, 1);
    CU_ASSERT_EQUAL(cfg.train.lr, 1e-3);
    CU_ASSERT_EQUAL(cfg.train.warmup_steps, 100);
    CU_ASSERT_EQUAL(cfg.train.schedule, SCFM_SCHED_LINEAR);
    CU_ASSERT_EQUAL(cfg.train.min_lr_ratio, 0.0);
    CU_ASSERT_EQUAL(cfg.train.weight_decay, 0.001);
    CU_ASSERT_EQUAL(cfg.train.beta1, 0.9);
    CU_ASSERT_EQUAL(cfg.train.beta2, 0.999);
    CU_ASSERT_EQUAL(cfg.train.adam_eps, 1e-8);
    CU_ASSERT_EQUAL(cfg.train.clip_norm, 1.0);
    CU_ASSERT_EQUAL(cfg.train.seed, 42);
    CU_ASSERT_EQUAL(cfg.train.mask_prob, 0.15);
    CU_ASSERT_EQUAL(cfg.train.mask_token_prob, 0.8);
    CU_ASSERT_EQUAL(cfg.train.random_token_prob, 0.1);
    CU_ASSERT_EQUAL(cfg.train.threads, 0);
    CU_ASSERT_EQUAL(cfg.train.log_every_seconds, 5.0);
    CU_ASSERT_STRING_EQUAL(cfg.checkpoint.dir, "checkpoints");
    CU_ASSERT_STRING_EQUAL(cfg.checkpoint.run, "");
    CU_ASSERT_EQUAL(cfg.checkpoint.every, 0);
    CU_ASSERT_EQUAL(cfg.checkpoint.keep, 3);
}

static void test_load_without_file(void) {
    scfm_config cfg;
    scfm_error err = {0};
    CU_ASSERT_EQUAL_FATAL(scfm_config_load(&cfg, NULL, NULL, 0, &err), SCFM_OK);
    CU_ASSERT_STRING_EQUAL(cfg.source, "");
    CU_ASSERT_STRING_EQUAL(cfg.checkpoint.run, "run");
    CU_ASSERT_EQUAL(cfg.model.layers, 6);
}

static void test_valid_file(void) {
    const char *path = write_cfg("valid",
                                 "# comment\n"
                                 "data = { shards = \"/data/tokens\"; };\n"
                                 "model : {\n"
                                 "  vocab_size = 25426;\n"
                                 "  layers = 12;\n"
                                 "  hidden = 512;\n"
                                 "  heads = 8;\n"
                                 "  activation = \"gelu\";\n"
                                 "  norm = \"pre\";\n"
                                 "  position = \"none\";\n"
                                 "  dropout = 0;\n" /* an integer is a valid float */
                                 "  layer_norm_eps = 1e-5;\n"
                                 "};\n"
                                 "train = {\n"
                                 "  steps = 5000000000L;\n"
                                 "  warmup_steps = 7;\n"
                                 "  schedule = \"constant\";\n"
                                 "  lr = 1;\n"
                                 "  threads = 2;\n"
                                 "};\n"
                                 "checkpoint = { every = 100; keep = 1; };\n");
    scfm_config cfg;
    scfm_error err = {0};
    CU_ASSERT_EQUAL_FATAL(scfm_config_load(&cfg, path, NULL, 0, &err), SCFM_OK);
    CU_ASSERT_STRING_EQUAL(cfg.source, path);
    CU_ASSERT_STRING_EQUAL(cfg.data.shards, "/data/tokens");
    CU_ASSERT_EQUAL(cfg.model.vocab_size, 25426);
    CU_ASSERT_EQUAL(cfg.model.layers, 12);
    CU_ASSERT_EQUAL(cfg.model.hidden, 512);
    CU_ASSERT_EQUAL(cfg.model.heads, 8);
    CU_ASSERT_EQUAL(cfg.model.activation, SCFM_ACT_GELU);
    CU_ASSERT_EQUAL(cfg.model.norm, SCFM_NORM_PRE);
    CU_ASSERT_EQUAL(cfg.model.position, SCFM_POS_NONE);
    CU_ASSERT_EQUAL(cfg.model.dropout, 0.0);
    CU_ASSERT_EQUAL(cfg.model.layer_norm_eps, 1e-5);
    CU_ASSERT_EQUAL(cfg.model.ffn, 512); /* untouched keys keep their defaults */
    CU_ASSERT_EQUAL(cfg.train.steps, 5000000000LL);
    CU_ASSERT_EQUAL(cfg.train.warmup_steps, 7);
    CU_ASSERT_EQUAL(cfg.train.schedule, SCFM_SCHED_CONSTANT);
    CU_ASSERT_EQUAL(cfg.train.lr, 1.0);
    CU_ASSERT_EQUAL(cfg.train.threads, 2);
    CU_ASSERT_EQUAL(cfg.checkpoint.every, 100);
    CU_ASSERT_EQUAL(cfg.checkpoint.keep, 1);
    CU_ASSERT_STRING_EQUAL(cfg.checkpoint.run, "cfgtest_valid");
}

static void test_run_name(void) {
    scfm_config cfg;
    scfm_error err = {0};
    /* Characters a run name may not hold become '_'; only the last extension goes. */
    const char *path = write_cfg("my run.v2", "");
    CU_ASSERT_EQUAL_FATAL(scfm_config_load(&cfg, path, NULL, 0, &err), SCFM_OK);
    CU_ASSERT_STRING_EQUAL(cfg.checkpoint.run, "cfgtest_my_run.v2");

    path = write_cfg("named", "checkpoint = { run = \"exp-1.a_b\"; };\n");
    CU_ASSERT_EQUAL_FATAL(scfm_config_load(&cfg, path, NULL, 0, &err), SCFM_OK);
    CU_ASSERT_STRING_EQUAL(cfg.checkpoint.run, "exp-1.a_b");

    const char *set = "checkpoint.run=override";
    CU_ASSERT_EQUAL_FATAL(scfm_config_load(&cfg, path, &set, 1, &err), SCFM_OK);
    CU_ASSERT_STRING_EQUAL(cfg.checkpoint.run, "override");

    expect_file_error("badrun", "checkpoint = {\n  run = \"a/b\";\n};\n",
                      "2: checkpoint.run: 'a/b' is not a run name (letters, digits, '.', '_', "
                      "'-'; not '.' or '..')");
    expect_override_error("checkpoint.run=..",
                          "--set checkpoint.run=..: checkpoint.run: '..' is not a run name "
                          "(letters, digits, '.', '_', '-'; not '.' or '..')");
}

static void test_syntax_error(void) {
    expect_file_error("syntax", "model = {\n  layers = ;\n};\n", "2: syntax error: syntax error");
    expect_file_error("duplicate", "model = {\n  layers = 1;\n  layers = 2;\n};\n",
                      "3: syntax error: duplicate setting name");
}

static void test_unknown_names(void) {
    expect_file_error("unknown_section", "model = { layers = 2; };\n\noptim = { lr = 1.0; };\n",
                      "3: unknown section 'optim'");
    expect_file_error("unknown_key", "model = {\n  layers = 2;\n  depth = 3;\n};\n",
                      "3: unknown key 'model.depth'");
    /* A key of another section is still unknown where it stands. */
    expect_file_error("misplaced_key", "train = {\n  layers = 2;\n};\n",
                      "2: unknown key 'train.layers'");
    expect_file_error("section_not_group", "model = 3;\n", "1: model: expected group, got integer");
    expect_file_error("section_list", "data = ( \"x\" );\n", "1: data: expected group, got list");
}

static void test_wrong_types(void) {
    expect_file_error("int_float", "model = {\n  layers = 2.5;\n};\n",
                      "2: model.layers: expected integer, got float");
    expect_file_error("float_string", "train = {\n  lr = \"fast\";\n};\n",
                      "2: train.lr: expected float, got string");
    expect_file_error("enum_int", "model = {\n  activation = 1;\n};\n",
                      "2: model.activation: expected string, got integer");
    expect_file_error("string_bool", "data = {\n  shards = true;\n};\n",
                      "2: data.shards: expected string, got boolean");
    expect_file_error("int64_group", "train = {\n  steps = { n = 1; };\n};\n",
                      "2: train.steps: expected integer, got group");
    expect_file_error("int_list", "model = {\n  layers = (1, 2);\n};\n",
                      "2: model.layers: expected integer, got list");
    expect_file_error("float_array", "model = {\n  dropout = [0.1, 0.2];\n};\n",
                      "2: model.dropout: expected float, got array");
}

static void test_ranges(void) {
    expect_file_error("layers_zero", "model = {\n  layers = 0;\n};\n",
                      "2: model.layers: value 0 out of range [1, 128]");
    expect_file_error("layers_int64", "model = {\n  layers = 5000000000L;\n};\n",
                      "2: model.layers: value 5000000000 out of range [1, 128]");
    expect_file_error("steps_zero", "train = {\n  steps = 0;\n};\n",
                      "2: train.steps: value 0 out of range [1, 9223372036854775807]");
    expect_file_error("dropout_one", "model = {\n  dropout = 1.0;\n};\n",
                      "2: model.dropout: value 1 out of range [0, 1)");
    expect_file_error("eps_zero", "model = {\n  layer_norm_eps = 0;\n};\n",
                      "2: model.layer_norm_eps: value 0 out of range (0, 1)");
    expect_file_error("lr_high", "train = {\n  lr = 1.5;\n};\n",
                      "2: train.lr: value 1.5 out of range (0, 1]");
    expect_file_error("beta_negative", "train = {\n  beta1 = -0.1;\n};\n",
                      "2: train.beta1: value -0.1 out of range [0, 1)");
    expect_file_error("vocab_two", "model = {\n  vocab_size = 2;\n};\n",
                      "2: model.vocab_size: value 2 out of range [3, 2147483647] (or 0)");

    /* Inclusive bounds and the vocab_size sentinel are accepted. */
    const char *path = write_cfg("bounds",
                                 "model = { vocab_size = 3; layers = 128; init_std = 1; };\n"
                                 "train = { lr = 1.0; min_lr_ratio = 1.0; threads = 1024; "
                                 "warmup_steps = 0; clip_norm = 0; };\n");
    scfm_config cfg;
    scfm_error err = {0};
    CU_ASSERT_EQUAL(scfm_config_load(&cfg, path, NULL, 0, &err), SCFM_OK);
    CU_ASSERT_EQUAL(cfg.model.vocab_size, 3);
    CU_ASSERT_EQUAL(cfg.train.threads, 1024);
    const char *zero = "model.vocab_size=0";
    CU_ASSERT_EQUAL(scfm_config_load(&cfg, path, &zero, 1, &err), SCFM_OK);
    CU_ASSERT_EQUAL(cfg.model.vocab_size, 0);
}

static void test_enum_choices(void) {
    expect_file_error("activation", "model = {\n  activation = \"swish\";\n};\n",
                      "2: model.activation: 'swish' is not one of gelu, relu");
    expect_file_error("schedule", "train = {\n  schedule = \"Cosine\";\n};\n",
                      "2: train.schedule: 'Cosine' is not one of linear, cosine, constant");
}

static void test_string_too_long(void) {
    char text[1500];
    char run[300];
    memset(run, 'a', sizeof run - 1);
    run[sizeof run - 1] = '\0';
    snprintf(text, sizeof text, "checkpoint = {\n  run = \"%s\";\n};\n", run);
    expect_file_error("long_run", text,
                      "2: checkpoint.run: string too long (299 bytes, at most 255)");
}

static void test_missing_file(void) {
    scfm_config cfg;
    scfm_error err = {0};
    const char *path = SCFM_TEST_BINARY_DIR "/no-such-dir/missing.cfg";
    CU_ASSERT_EQUAL(scfm_config_load(&cfg, path, NULL, 0, &err), SCFM_ERR_CONFIG);
    CU_ASSERT_STRING_EQUAL(err.message, SCFM_TEST_BINARY_DIR
                           "/no-such-dir/missing.cfg: cannot read: No such file or directory");
    /* A directory must fail here, not inside libconfig's scanner. */
    scfm_error err2 = {0};
    CU_ASSERT_EQUAL(scfm_config_load(&cfg, SCFM_TEST_BINARY_DIR, NULL, 0, &err2), SCFM_ERR_CONFIG);
    CU_ASSERT_STRING_EQUAL(err2.message, SCFM_TEST_BINARY_DIR ": cannot read: Is a directory");
}

static void test_overrides_valid(void) {
    const char *path = write_cfg("overridden", "model = { layers = 3; };\n");
    /* model.layers is set twice: the last one wins. Values are typed by the
     * key, so clip_norm=2 is a float and steps needs no L suffix. */
    const char *sets[] = {"model.layers=4",    "model.layers=5",     "train.steps=6000000000",
                          "train.lr=0.25",     "train.clip_norm=2",  "model.norm=pre",
                          "data.shards=/x/y z", "checkpoint.dir="};
    scfm_config cfg;
    scfm_error err = {0};
    CU_ASSERT_EQUAL_FATAL(
        scfm_config_load(&cfg, path, sets, (int)(sizeof sets / sizeof sets[0]), &err), SCFM_OK);
    CU_ASSERT_EQUAL(cfg.model.layers, 5);
    CU_ASSERT_EQUAL(cfg.train.steps, 6000000000LL);
    CU_ASSERT_EQUAL(cfg.train.lr, 0.25);
    CU_ASSERT_EQUAL(cfg.train.clip_norm, 2.0);
    CU_ASSERT_EQUAL(cfg.model.norm, SCFM_NORM_PRE);
    CU_ASSERT_STRING_EQUAL(cfg.data.shards, "/x/y z");
    CU_ASSERT_STRING_EQUAL(cfg.checkpoint.dir, "");
}

static void test_overrides_invalid(void) {
    expect_override_error("model.layers=0",
                          "--set model.layers=0: model.layers: value 0 out of range [1, 128]");
    expect_override_error("model.layers=12x",
                          "--set model.layers=12x: model.layers: expected integer, got '12x'");
    expect_override_error("model.layers=",
                          "--set model.layers=: model.layers: expected integer, got ''");
    expect_override_error("model.layers=2.0",
                          "--set model.layers=2.0: model.layers: expected integer, got '2.0'");
    expect_override_error("train.lr=fast",
                          "--set train.lr=fast: train.lr: expected float, got 'fast'");
    expect_override_error("train.lr=nan",
                          "--set train.lr=nan: train.lr: value nan out of range (0, 1]");
    expect_override_error("train.steps=99999999999999999999",
                          "--set train.steps=99999999999999999999: train.steps: value "
                          "99999999999999999999 out of range [1, 9223372036854775807]");
    expect_override_error("model.activation=tanh",
                          "--set model.activation=tanh: model.activation: 'tanh' is not one of "
                          "gelu, relu");
    expect_override_error("model.layers",
                          "--set model.layers: malformed override, expected section.key=value");
    expect_override_error("layers=3",
                          "--set layers=3: malformed override, expected section.key=value");
    expect_override_error(".layers=3",
                          "--set .layers=3: malformed override, expected section.key=value");
    expect_override_error("model.=3",
                          "--set model.=3: malformed override, expected section.key=value");
    expect_override_error("model.depth=3", "--set model.depth=3: unknown key 'model.depth'");
    expect_override_error("optim.lr=0.1", "--set optim.lr=0.1: unknown key 'optim.lr'");
    /* A '.' in the value does not make a key. */
    expect_override_error("x=model.layers",
                          "--set x=model.layers: malformed override, expected section.key=value");
}

static void test_cross_keys(void) {
    expect_file_error("heads", "model = { hidden = 250; heads = 4; };\n",
                      " model.hidden (250) must be divisible by model.heads (4)");
    expect_file_error("mask_sum", "train = { mask_token_prob = 0.9; random_token_prob = 0.2; };\n",
                      " train.mask_token_prob (0.9) + train.random_token_prob (0.2) must be <= 1");
    expect_file_error("warmup", "train = { steps = 1000; warmup_steps = 2000; };\n",
                      " train.warmup_steps (2000) must be <= train.steps (1000)");
    /* Without a file the message has no location. */
    expect_override_error("model.heads=3",
                          "model.hidden (256) must be divisible by model.heads (3)");

    /* Checked after overrides: an override can repair the file. */
    const char *path = write_cfg("repaired", "model = { hidden = 250; heads = 4; };\n");
    const char *fix = "model.hidden=256";
    scfm_config cfg;
    scfm_error err = {0};
    CU_ASSERT_EQUAL(scfm_config_load(&cfg, path, &fix, 1, &err), SCFM_OK);
    /* Decimal probabilities that add up to exactly 1 pass. */
    const char *sum[] = {"train.mask_token_prob=0.7", "train.random_token_prob=0.3"};
    CU_ASSERT_EQUAL(scfm_config_load(&cfg, NULL, sum, 2, &err), SCFM_OK);
}

/* The count encoders' rules: value/MVC and transformer-only heads refused,
 * scMAE needs the squared error, augmentations need the contrastive
 * objective, and the transformer refuses the count encoders' objectives. */
/* A file error whose message holds part (after the file's name). */
static void expect_file_error_part(const char *name, const char *text, const char *part) {
    const char *path = write_cfg(name, text);
    scfm_config cfg;
    scfm_error err = {0};
    CU_ASSERT_EQUAL(scfm_config_load(&cfg, path, NULL, 0, &err), SCFM_ERR_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.message, path));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.message, part));
    if (!strstr(err.message, part)) fprintf(stderr, "\n  got: %s\n  expected a part: %s\n", err.message, part);
}

static void test_count_encoder_keys(void) {
    expect_file_error_part("fc_value", "model = { encoder = \"mlp\"; };\nobjective = { value = 1.0; };\n",
                      "objective.value and objective.mvc need the transformer");
    expect_file_error_part("fc_labels", "model = { encoder = \"linear\"; num_labels = 3; };\n",
                      "model.num_labels needs the transformer");
    expect_file_error_part("fc_bins", "model = { encoder = \"mlp\"; value_bins = 11; };\n",
                      "model.value_bins with model.encoder \"mlp\" is the bins of model.input \"bin\"");
    expect_file_error_part("fc_mae", "model = { encoder = \"mlp\"; };\nobjective = { mae_mask_prob = 0.5; };\n",
                      "objective.mae_mask_prob > 0 (scMAE) needs model.likelihood \"mse\"");
    expect_file_error_part("fc_aug", "model = { encoder = \"mlp\"; };\nobjective = { aug_noise = 0.1; };\n",
                      "objective.aug_* augment the views of the contrastive objective");
    expect_file_error_part("fc_nothing",
                      "model = { encoder = \"mlp\"; variational = 0; };\nobjective = { reconstruction = 0.0; };\n",
                      "nothing to train");
    expect_file_error_part("tf_mae", "objective = { mae_mask_prob = 0.5; };\n",
                      "apply to count encoders only");
    const char *ok[] = {"model.encoder=mlp", "model.likelihood=mse", "objective.mae_mask_prob=0.5",
                        "objective.contrastive=1", "objective.aug_swap=0.1", "model.condition_into=both"};
    scfm_config cfg;
    scfm_error err = {0};
    CU_ASSERT_EQUAL(scfm_config_load(&cfg, NULL, ok, 6, &err), SCFM_OK);
    CU_ASSERT_EQUAL(cfg.model.encoder, SCFM_ENCODER_MLP);
    CU_ASSERT_EQUAL(cfg.model.likelihood, SCFM_LIK_MSE);
    CU_ASSERT_EQUAL(cfg.model.condition_into, SCFM_COND_BOTH);
    CU_ASSERT_EQUAL(cfg.model.latent, 10);
    CU_ASSERT_EQUAL(cfg.model.fc_hidden, 128);
    CU_ASSERT_EQUAL(cfg.model.input, SCFM_COUNTS_LOG1P);
    CU_ASSERT_EQUAL(cfg.objective.kl_warmup_steps, 400);
}

static void assert_configs_equal(const scfm_config *a, const scfm_config *b) {
#define SAME(f) CU_ASSERT_EQUAL(a->f, b->f)
#define SAME_STR(f) CU_ASSERT_STRING_EQUAL(a->f, b->f)
    SAME_STR(data.shards);
    SAME(model.vocab_size); SAME(model.max_len); SAME(model.layers); SAME(model.hidden);
    SAME(model.heads); SAME(model.ffn); SAME(model.activation); SAME(model.norm);
    SAME(model.position); SAME(model.dropout); SAME(model.attention_dropout);
    SAME(model.layer_norm_eps); SAME(model.init_std);
    SAME(train.steps); SAME(train.micro_batch_tokens); SAME(train.accumulate); SAME(train.lr);
    SAME(train.warmup_steps); SAME(train.schedule); SAME(train.min_lr_ratio);
    SAME(train.weight_decay); SAME(train.beta1); SAME(train.beta2); SAME(train.adam_eps);
    SAME(train.clip_norm); SAME(train.seed); SAME(train.mask_prob); SAME(train.mask_token_prob);
    SAME(train.random_token_prob); SAME(train.threads); SAME(train.log_every_seconds);
    SAME_STR(checkpoint.dir); SAME_STR(checkpoint.run); SAME(checkpoint.every);
    SAME(checkpoint.keep);
#undef SAME
#undef SAME_STR
}

static char *read_all(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    static char buf[16384];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void test_write_round_trip(void) {
    /* Every key away from its default, with floats that have no short exact
     * decimal form and strings that need escapes. */
    const char *sets[] = {"data.shards=/tmp/a \"quoted\" \\ dir\tx", "model.vocab_size=25426",
                          "model.max_len=4096", "model.layers=12", "model.hidden=768",
                          "model.heads=12", "model.ffn=3072", "model.activation=gelu",
                          "model.norm=pre", "model.position=none", "train.steps=5000000000",
                          "train.micro_batch_tokens=3000000000", "train.accumulate=3",
                          "train.warmup_steps=2500000000", "train.schedule=cosine",
                          "train.seed=9000000000000000000", "train.threads=7",
                          "checkpoint.dir=out dir", "checkpoint.run=r-1.x",
                          "checkpoint.every=500", "checkpoint.keep=9"};
    int n_sets = (int)(sizeof sets / sizeof sets[0]);
    scfm_config cfg;
    scfm_error err = {0};
    CU_ASSERT_EQUAL_FATAL(scfm_config_load(&cfg, NULL, sets, n_sets, &err), SCFM_OK);
    cfg.model.dropout = 0.1;
    cfg.model.attention_dropout = 1.0 / 3.0;
    cfg.model.layer_norm_eps = 1e-300;
    cfg.model.init_std = 1.0; /* integral: must still be written as a float */
    cfg.train.lr = nextafter(1e-3, 1.0);
    cfg.train.min_lr_ratio = 0.5;
    cfg.train.weight_decay = 10.0;
    cfg.train.beta1 = 0.0;
    cfg.train.beta2 = 0.98;
    cfg.train.adam_eps = 1e-6;
    cfg.train.clip_norm = 1e6;
    cfg.train.mask_prob = 0.3;
    cfg.train.mask_token_prob = 0.5;
    cfg.train.random_token_prob = 0.25;
    cfg.train.log_every_seconds = 86400.0;

    char path[SCFM_PATH_MAX];
    snprintf(path, sizeof path, "%s/cfgtest_written.cfg", SCFM_TEST_BINARY_DIR);
    CU_ASSERT_EQUAL_FATAL(scfm_config_write(&cfg, path, &err), SCFM_OK);
    char tmp[SCFM_PATH_MAX + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CU_ASSERT_NOT_EQUAL(access(tmp, F_OK), 0);

    scfm_config back;
    scfm_error err2 = {0};
    CU_ASSERT_EQUAL_FATAL(scfm_config_load(&back, path, NULL, 0, &err2), SCFM_OK);
    CU_ASSERT_STRING_EQUAL(back.source, path);
    assert_configs_equal(&cfg, &back);

    const char *text = read_all(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "# source: (none"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "  init_std = 1.0;\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "  dropout = 0.1;\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "  steps = 5000000000L;\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "  layers = 12;\n"));

    /* print writes the same text as write. */
    char *mem = NULL;
    size_t mem_len = 0;
    FILE *out = open_memstream(&mem, &mem_len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    scfm_config_print(&cfg, out);
    fclose(out);
    CU_ASSERT_STRING_EQUAL(mem, text);
    free(mem);

    /* A loaded file's path is recorded in the copy written from it. */
    CU_ASSERT_EQUAL_FATAL(scfm_config_write(&back, path, &err2), SCFM_OK);
    char expected[SCFM_PATH_MAX + 16];
    snprintf(expected, sizeof expected, "# source: %s\n", path);
    text = read_all(path);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, expected));
}

static void test_write_error(void) {
    scfm_config cfg;
    scfm_config_defaults(&cfg);
    scfm_error err = {0};
    CU_ASSERT_EQUAL(scfm_config_write(&cfg, SCFM_TEST_BINARY_DIR "/no-such-dir/out.cfg", &err),
                    SCFM_ERR_IO);
    CU_ASSERT_STRING_EQUAL(err.message, SCFM_TEST_BINARY_DIR
                           "/no-such-dir/out.cfg.tmp: cannot write: No such file or directory");
}

static void test_shipped_configs(void) {
    scfm_config cfg;
    scfm_error err = {0};
    CU_ASSERT_EQUAL_FATAL(scfm_config_load(&cfg, SCFM_TEST_SOURCE_DIR "/../configs/tiny.cfg",
                                           NULL, 0, &err),
                          SCFM_OK);
    CU_ASSERT_STRING_EQUAL(cfg.data.shards, "build/quickstart/shards");
    CU_ASSERT_STRING_EQUAL(cfg.data.vocab, "build/quickstart/vocab");
    CU_ASSERT_EQUAL(cfg.model.layers, 2);
    CU_ASSERT_EQUAL(cfg.model.hidden, 64);
    CU_ASSERT_EQUAL(cfg.model.activation, SCFM_ACT_GELU);
    CU_ASSERT_EQUAL(cfg.model.dropout, 0.0);
    CU_ASSERT_EQUAL(cfg.train.steps, 300);
    CU_ASSERT_EQUAL(cfg.train.schedule, SCFM_SCHED_COSINE);
    CU_ASSERT_EQUAL(cfg.train.lr, 5e-3);
    CU_ASSERT_EQUAL(cfg.checkpoint.keep, 2);
    CU_ASSERT_STRING_EQUAL(cfg.checkpoint.run, "tiny");

    CU_ASSERT_EQUAL_FATAL(scfm_config_load(&cfg, SCFM_TEST_SOURCE_DIR
                                           "/../configs/geneformer-v1-6L.cfg", NULL, 0, &err),
                          SCFM_OK);
    CU_ASSERT_EQUAL(cfg.model.layers, 6);
    CU_ASSERT_EQUAL(cfg.model.hidden, 256);
    CU_ASSERT_EQUAL(cfg.model.heads, 4);
    CU_ASSERT_EQUAL(cfg.model.ffn, 512);
    CU_ASSERT_EQUAL(cfg.model.max_len, 2048);
    CU_ASSERT_EQUAL(cfg.model.activation, SCFM_ACT_RELU);
    CU_ASSERT_EQUAL(cfg.train.micro_batch_tokens, 12 * 2048);
    CU_ASSERT_EQUAL(cfg.train.warmup_steps, 10000);
    CU_ASSERT_EQUAL(cfg.train.weight_decay, 0.001);
    CU_ASSERT_EQUAL(cfg.checkpoint.every, 1000);
    CU_ASSERT_STRING_EQUAL(cfg.checkpoint.run, "geneformer-v1-6L");
}

/* Enum values named as a file writes them, from the key table. */
static void test_choice_names(void) {
    CU_ASSERT_STRING_EQUAL(scfm_config_choice("model.encoder", SCFM_ENCODER_MLP), "mlp");
    CU_ASSERT_STRING_EQUAL(scfm_config_choice("model.likelihood", SCFM_LIK_ZINB), "zinb");
    CU_ASSERT_STRING_EQUAL(scfm_config_choice("model.position", SCFM_POS_NONE), "none");
    CU_ASSERT_STRING_EQUAL(scfm_config_choice("model.activation", SCFM_ACT_GELU), "gelu");
    CU_ASSERT_STRING_EQUAL(scfm_config_choice("model.encoder", 3), "?");
    CU_ASSERT_STRING_EQUAL(scfm_config_choice("model.encoder", -1), "?");
    CU_ASSERT_STRING_EQUAL(scfm_config_choice("model.layers", 0), "?");
    CU_ASSERT_STRING_EQUAL(scfm_config_choice("encoder", 0), "?");
}

static void test_reference(void) {
    char *mem = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&mem, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    scfm_config_print_reference(out);
    fclose(out);
    CU_ASSERT_EQUAL(strncmp(mem, "| key | type | default | allowed | meaning |\n", 45), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(mem, "| `model.layers` | int | `6` | [1, 128] |"));
    CU_ASSERT_PTR_NOT_NULL(strstr(mem, "| `model.vocab_size` | int | `0` | 0 or >= 3 |"));
    CU_ASSERT_PTR_NOT_NULL(strstr(mem, "| `train.steps` | int64 | `1000` | >= 1 |"));
    CU_ASSERT_PTR_NOT_NULL(strstr(mem, "| `model.layer_norm_eps` | float | `1e-12` | (0, 1) |"));
    CU_ASSERT_PTR_NOT_NULL(
        strstr(mem, "| `model.activation` | enum | `\"relu\"` | `gelu`, `relu` |"));
    CU_ASSERT_PTR_NOT_NULL(strstr(mem, "| `checkpoint.dir` | string | `\"checkpoints\"` |"));
    /* One row per key: 76 keys plus the two header lines. */
    int lines = 0;
    for (const char *p = mem; *p; p++) lines += *p == '\n';
    CU_ASSERT_EQUAL(lines, 78);
    free(mem);
}

/* A configuration filled in code meets the same checks as a file. */
static void test_validate(void) {
    scfm_config cfg;
    scfm_config_defaults(&cfg);
    scfm_error err = {0};
    CU_ASSERT_EQUAL(scfm_config_validate(&cfg, &err), SCFM_OK);
    cfg.model.layers = 0;
    CU_ASSERT_EQUAL(scfm_config_validate(&cfg, &err), SCFM_ERR_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.message, "config: model.layers: value 0 out of range [1, 128]"));
    scfm_config_defaults(&cfg);
    snprintf(cfg.source, sizeof cfg.source, "x.json");
    cfg.model.activation = (scfm_activation)7;
    scfm_error_clear(&err);
    CU_ASSERT_EQUAL(scfm_config_validate(&cfg, &err), SCFM_ERR_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.message, "x.json: model.activation: 7 is not a choice"));
    scfm_config_defaults(&cfg);
    cfg.model.hidden = 250;
    scfm_error_clear(&err);
    CU_ASSERT_EQUAL(scfm_config_validate(&cfg, &err), SCFM_ERR_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.message, "must be divisible by model.heads"));
}

static CU_TestInfo tests[] = {
    {"defaults", test_defaults},
    {"load without a file", test_load_without_file},
    {"valid file", test_valid_file},
    {"run name", test_run_name},
    {"syntax error", test_syntax_error},
    {"unknown section and key", test_unknown_names},
    {"wrong types", test_wrong_types},
    {"ranges", test_ranges},
    {"enum choices", test_enum_choices},
    {"string too long", test_string_too_long},
    {"missing file", test_missing_file},
    {"overrides", test_overrides_valid},
    {"invalid overrides", test_overrides_invalid},
    {"cross-key checks", test_cross_keys},
    {"count encoder keys", test_count_encoder_keys},
    {"a configuration filled in code is validated", test_validate},
    {"write and load round trip", test_write_round_trip},
    {"write error", test_write_error},
    {"shipped configs", test_shipped_configs},
    {"enum values by name", test_choice_names},
    {"reference table", test_reference},
    CU_TEST_INFO_NULL,
};

int main(void) { return scfm_test_run("config", tests); }
