/* Hugging Face transformers directories (model.h, docs/export.md).
 *
 * scfm's parameters already carry BertForMaskedLM's names, so export adds
 * only what BERT has and scfm does not: a token-type row of zeros (BERT adds
 * row 0 to every token; zeros leave the sum unchanged) and, for a model
 * without positions, zero position embeddings. The decoder is tied to the
 * word embeddings and its bias is cls.predictions.bias, so transformers
 * rebuilds both from tie_word_embeddings. There is no pooler: BertForMaskedLM
 * has none, and writing one would make it report unexpected weights.
 *
 * Import runs the other way and accepts only a BERT that scfm computes
 * exactly: what it cannot represent (pre-LN, relative positions, an untied
 * decoder, unknown tensors) is an error, not a silent approximation. This
 * file lives in src/model/ because it is a question of which tensors mean
 * what; the bytes go through src/io/. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/json.h"
#include "scfm/io.h"
#include "scfm/model.h"

#define CONFIG_FILE "config.json"
#define WEIGHTS_FILE "model.safetensors"
#define TOKENS_FILE "token_dictionary.json"
#define MEDIANS_FILE "gene_median_dictionary.json"
#define SYMBOLS_FILE "gene_name_id_dict.json"

#define WORD_EMB "bert.embeddings.word_embeddings.weight"
#define POS_EMB "bert.embeddings.position_embeddings.weight"
#define TYPE_EMB "bert.embeddings.token_type_embeddings.weight"
#define HEAD_BIAS "cls.predictions.bias"
#define DECODER_W "cls.predictions.decoder.weight"
#define DECODER_B "cls.predictions.decoder.bias"
#define POOLER "bert.pooler."
#define POSITION_IDS "bert.embeddings.position_ids" /* a buffer older transformers saved */

static const char *const special_names[4] = {"<pad>", "<mask>", "<cls>", "<eos>"};

/* ---- files -------------------------------------------------------------- */

static scfm_status write_text(const char *dir, const char *name, const scfm_strbuf *b, scfm_error *err) {
    char path[SCFM_PATH_MAX];
    scfm_status st = scfm_path_join(path, sizeof path, dir, name, err);
    if (st != SCFM_OK) return st;
    if (b->failed) return scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory", path);
    FILE *f = fopen(path, "w");
    if (!f) return scfm_fail(err, SCFM_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    size_t n = fwrite(b->data, 1, b->len, f);
    if (fclose(f) != 0 || n != b->len) return scfm_fail(err, SCFM_ERR_IO, "%s: write failed", path);
    return scfm_fsync_path(path, err);
}

static int file_exists(const char *dir, const char *name) {
    char path[SCFM_PATH_MAX];
    struct stat sb;
    scfm_error ignored = {0};
    return scfm_path_join(path, sizeof path, dir, name, &ignored) == SCFM_OK && stat(path, &sb) == 0;
}

/* DIR/name whole, NUL-terminated, in *text (caller frees). */
static scfm_status read_text(const char *path, char **text, size_t *len, scfm_error *err) {
    *text = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return scfm_fail(err, SCFM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    scfm_strbuf b = {0};
    char chunk[1 << 14];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) scfm_strbuf_append(&b, chunk, n);
    int bad = ferror(f);
    fclose(f);
    scfm_strbuf_append(&b, "", 0);
    if (bad || b.failed) {
        scfm_strbuf_free(&b);
        return scfm_fail(err, bad ? SCFM_ERR_IO : SCFM_ERR_NOMEM, "%s: %s", path, bad ? "read error" : "out of memory");
    }
    *text = b.data;
    *len = b.len;
    return SCFM_OK;
}

/* ---- export ------------------------------------------------------------- */

static const char *token_name(const scfm_vocab *v, int64_t token) {
    if (token == SCFM_TOKEN_PAD) return special_names[0];
    if (token == SCFM_TOKEN_MASK) return special_names[1];
    if (token == v->cls) return special_names[2];
    if (token == v->eos) return special_names[3];
    return v->gene_ids[token - v->n_special];
}

static void config_json(scfm_strbuf *b, const scfm_model_config *c, const scfm_vocab *v) {
    const int none = c->position == SCFM_POS_NONE;
    scfm_strbuf_printf(b,
                       "{\n  \"architectures\": [\"BertForMaskedLM\"],\n  \"model_type\": \"bert\",\n"
                       "  \"vocab_size\": %d,\n  \"hidden_size\": %d,\n  \"num_hidden_layers\": %d,\n"
                       "  \"num_attention_heads\": %d,\n  \"intermediate_size\": %d,\n  \"hidden_act\": \"%s\",\n"
                       "  \"hidden_dropout_prob\": %.17g,\n  \"attention_probs_dropout_prob\": %.17g,\n"
                       "  \"max_position_embeddings\": %d,\n  \"type_vocab_size\": 1,\n  \"layer_norm_eps\": %.17g,\n"
                       "  \"initializer_range\": %.17g,\n  \"pad_token_id\": %d,\n"
                       "  \"position_embedding_type\": \"absolute\",\n  \"is_decoder\": false,\n"
                       "  \"tie_word_embeddings\": true,\n  \"torch_dtype\": \"float32\",\n",
                       c->vocab_size, c->hidden, c->layers, c->heads, c->ffn,
                       scfm_config_choice("model.activation", (int)c->activation), c->dropout, c->attention_dropout, c->max_len,
                       c->layer_norm_eps, c->init_std, SCFM_TOKEN_PAD);
    /* What a reader needs to know that BERT's keys cannot say. */
    scfm_strbuf_printf(b,
                       "  \"scfm\": {\n    \"format\": 1,\n    \"norm\": \"post\",\n    \"position\": \"%s\",\n"
                       "    \"zero_tensors\": [\"%s\"%s%s%s],\n",
                       scfm_config_choice("model.position", (int)c->position), TYPE_EMB, none ? ", \"" : "", none ? POS_EMB : "", none ? "\"" : "");
    if (v) {
        scfm_strbuf_printf(b, "    \"vocab_hash\": \"%016llx\",\n    \"special_tokens\": {", (unsigned long long)v->hash);
        for (int t = 0; t < v->n_special; t++) {
            scfm_strbuf_printf(b, "%s", t ? ", " : "");
            scfm_strbuf_json_string(b, token_name(v, t));
            scfm_strbuf_printf(b, ": %d", t);
        }
        scfm_strbuf_printf(b, "},\n");
    }
    scfm_strbuf_printf(b, "    \"value_embeddings\": null\n  }\n}\n");
}

/* Geneformer's three dictionaries as JSON objects: token ids (specials
 * included), medians, and symbol -> gene id for the symbols that name one
 * gene and differ from its id (an object cannot hold a symbol twice). */
static void dictionaries_json(const scfm_vocab *v, scfm_strbuf *tokens, scfm_strbuf *medians, scfm_strbuf *symbols) {
    scfm_strbuf_append(tokens, "{", 1);
    scfm_strbuf_append(medians, "{", 1);
    scfm_strbuf_append(symbols, "{", 1);
    int any_symbol = 0;
    for (int64_t t = 0; t < scfm_vocab_size(v); t++) {
        scfm_strbuf_printf(tokens, "%s\n  ", t ? "," : "");
        scfm_strbuf_json_string(tokens, token_name(v, t));
        scfm_strbuf_printf(tokens, ": %lld", (long long)t);
        if (t < v->n_special) continue;
        int64_t g = t - v->n_special;
        scfm_strbuf_printf(medians, "%s\n  ", g ? "," : "");
        scfm_strbuf_json_string(medians, v->gene_ids[g]);
        scfm_strbuf_printf(medians, ": %.17g", v->medians[g]);
        if (!strcmp(v->symbols[g], v->gene_ids[g]) || scfm_vocab_find(v, v->symbols[g], 1) != t) continue;
        scfm_strbuf_printf(symbols, "%s\n  ", any_symbol++ ? "," : "");
        scfm_strbuf_json_string(symbols, v->symbols[g]);
        scfm_strbuf_append(symbols, ": ", 2);
        scfm_strbuf_json_string(symbols, v->gene_ids[g]);
    }
    scfm_strbuf_append(tokens, "\n}\n", 3);
    scfm_strbuf_append(medians, "\n}\n", 3);
    scfm_strbuf_append(symbols, "\n}\n", 3);
}

static scfm_status write_weights(const scfm_model *m, const char *dir, scfm_error *err) {
    const scfm_model_config *c = scfm_model_get_config(m);
    char path[SCFM_PATH_MAX];
    scfm_status st = scfm_path_join(path, sizeof path, dir, WEIGHTS_FILE, err);
    if (st != SCFM_OK) return st;
    const int n_model = scfm_model_num_tensors(m);
    scfm_st_tensor *t = calloc((size_t)n_model + 2, sizeof *t);
    float *zeros = calloc((size_t)c->max_len * (size_t)c->hidden, sizeof(float));
    if (!t || !zeros) {
        free(t);
        free(zeros);
        return scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory", path);
    }
    const float *params = scfm_model_params((scfm_model *)m);
    int n = 0;
    for (int i = 0; i < n_model; i++) {
        const scfm_tensor_info *ti = scfm_model_tensor(m, i);
        /* A fine-tuned classification head reads scfm's pooled embedding,
         * which no transformers class computes: the encoder and its MLM head
         * are what BertForMaskedLM holds. */
        if (!strncmp(ti->name, "classifier.", 11)) continue;
        t[n++] = (scfm_st_tensor){ti->name, SCFM_DTYPE_F32, ti->ndim, {ti->shape[0], ti->shape[1]},
                                  params + ti->offset};
        if (strcmp(ti->name, WORD_EMB) != 0) continue;
        if (c->position == SCFM_POS_NONE)
            t[n++] = (scfm_st_tensor){POS_EMB, SCFM_DTYPE_F32, 2, {c->max_len, c->hidden}, zeros};
        t[n++] = (scfm_st_tensor){TYPE_EMB, SCFM_DTYPE_F32, 2, {1, c->hidden}, zeros};
    }
    /* transformers refuses a safetensors file whose metadata names no framework. */
    const scfm_st_meta meta[] = {{"format", "pt"}};
    st = scfm_safetensors_write(path, t, n, meta, 1, err);
    free(t);
    free(zeros);
    return st;
}

/* Everything goes into dir.tmp, which is renamed only when complete, so dir
 * is either absent, the old one or the whole new one. */
static scfm_status write_export(const scfm_model *m, const scfm_vocab *v, const char *dir, const char *tmp,
                                scfm_error *err) {
    struct stat sb;
    scfm_status st = SCFM_OK;
    if (stat(tmp, &sb) == 0 && (st = scfm_remove_dir(tmp, err)) != SCFM_OK) return st; /* a crash's leftover */
    /* vocab.tsv first: its writer makes the directory and refuses one with other files. */
    st = v ? scfm_vocab_write(v, tmp, 0, err) : scfm_make_dirs(tmp, err);
    if (st != SCFM_OK) return st;
    scfm_strbuf config = {0}, tokens = {0}, medians = {0}, symbols = {0};
    config_json(&config, scfm_model_get_config(m), v);
    if (v) dictionaries_json(v, &tokens, &medians, &symbols);
    st = write_text(tmp, CONFIG_FILE, &config, err);
    if (st == SCFM_OK) st = write_weights(m, tmp, err);
    if (st == SCFM_OK && v) st = write_text(tmp, TOKENS_FILE, &tokens, err);
    if (st == SCFM_OK && v) st = write_text(tmp, MEDIANS_FILE, &medians, err);
    if (st == SCFM_OK && v) st = write_text(tmp, SYMBOLS_FILE, &symbols, err);
    scfm_strbuf_free(&config);
    scfm_strbuf_free(&tokens);
    scfm_strbuf_free(&medians);
    scfm_strbuf_free(&symbols);
    if (st == SCFM_OK) st = scfm_fsync_path(tmp, err);
    if (st == SCFM_OK && stat(dir, &sb) == 0) st = scfm_remove_dir(dir, err);
    if (st == SCFM_OK && rename(tmp, dir) != 0)
        st = scfm_fail(err, SCFM_ERR_IO, "%s: cannot rename to %s: %s", tmp, dir, strerror(errno));
    if (st == SCFM_OK) st = scfm_fsync_parent(dir, err);
    return st;
}

scfm_status scfm_hf_export(const scfm_model *m, const scfm_vocab *v, const char *dir, int force, scfm_error *err) {
    const scfm_model_config *c = scfm_model_get_config(m);
    if (c->encoder != SCFM_ENCODER_TRANSFORMER)
        return scfm_fail(err, SCFM_ERR_ARG, "only the transformer exports as BertForMaskedLM, not a count encoder "
                         "(model.encoder \"%s\")", scfm_config_choice("model.encoder", (int)c->encoder));
    if (c->norm == SCFM_NORM_PRE)
        return scfm_fail(err, SCFM_ERR_ARG,
                         "a pre-LN model cannot be exported as BertForMaskedLM: BERT normalises after each "
                         "residual and has no place for bert.encoder.final_layer_norm");
    if (v && scfm_vocab_size(v) != c->vocab_size)
        return scfm_fail(err, SCFM_ERR_ARG, "the vocabulary has %lld tokens but the model %d",
                         (long long)scfm_vocab_size(v), c->vocab_size);
    struct stat sb;
    if (!force && stat(dir, &sb) == 0)
        return scfm_fail(err, SCFM_ERR_ARG, "%s exists; choose another directory or pass --force", dir);
    char tmp[SCFM_PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", dir) >= (int)sizeof tmp)
        return scfm_fail(err, SCFM_ERR_ARG, "%s: path too long", dir);
    scfm_status st = write_export(m, v, dir, tmp, err);
    if (st != SCFM_OK && stat(tmp, &sb) == 0) {
        scfm_error ignored = {0};
        scfm_remove_dir(tmp, &ignored);
    }
    return st;
}

/* ---- import: config.json ------------------------------------------------ */

typedef struct {
    scfm_model_config mc;
    int type_vocab_size;
} hf_config;

/* A key config.json must or may hold: sizes into an int of hf_config. */
typedef struct {
    const char *key;
    size_t offset;
    int required;
} int_key;

static const int_key int_keys[] = {
    {"vocab_size", offsetof(hf_config, mc.vocab_size), 1},
    {"hidden_size", offsetof(hf_config, mc.hidden), 1},
    {"num_hidden_layers", offsetof(hf_config, mc.layers), 1},
    {"num_attention_heads", offsetof(hf_config, mc.heads), 1},
    {"intermediate_size", offsetof(hf_config, mc.ffn), 1},
    {"max_position_embeddings", offsetof(hf_config, mc.max_len), 1},
    {"type_vocab_size", offsetof(hf_config, type_vocab_size), 0},
};
enum { N_INT_KEYS = sizeof int_keys / sizeof int_keys[0] };

typedef struct {
    const char *key;
    size_t offset;
} float_key;

static const float_key float_keys[] = {
    {"layer_norm_eps", offsetof(hf_config, mc.layer_norm_eps)},
    {"hidden_dropout_prob", offsetof(hf_config, mc.dropout)},
    {"attention_probs_dropout_prob", offsetof(hf_config, mc.attention_dropout)},
    {"initializer_range", offsetof(hf_config, mc.init_std)},
};
enum { N_FLOAT_KEYS = sizeof float_keys / sizeof float_keys[0] };

/* One value of a known key; 0 with *why set (or j->message) when it is
 * wrong. */
static int config_value(scfm_json *j, const char *key, hf_config *c, int *seen, const char **why) {
    for (int i = 0; i < N_INT_KEYS; i++) {
        if (strcmp(key, int_keys[i].key) != 0) continue;
        int64_t v;
        if (!scfm_json_uint(j, &v)) return 0;
        if (v < 1 || v > 1 << 30) return *why = "must be a positive integer that fits scfm", 0;
        *(int *)((char *)c + int_keys[i].offset) = (int)v;
        seen[i] = 1;
        return 1;
    }
    for (int i = 0; i < N_FLOAT_KEYS; i++)
        if (!strcmp(key, float_keys[i].key)) return scfm_json_number(j, (double *)((char *)c + float_keys[i].offset));
    int flag, ok = 1;
    char *s = NULL;
    if (!strcmp(key, "is_decoder") || !strcmp(key, "add_cross_attention")) {
        if (!scfm_json_bool(j, &flag)) return 0;
        if (flag) *why = "must be false: scfm encoders attend both ways and have no cross-attention";
        return !flag;
    }
    if (!strcmp(key, "tie_word_embeddings")) {
        if (!scfm_json_bool(j, &flag)) return 0;
        if (!flag) *why = "must be true: scfm's decoder is the word embeddings";
        return flag;
    }
    if (!strcmp(key, "model_type")) {
        if (!scfm_json_string(j, &s)) return 0;
        if (strcmp(s, "bert") != 0) ok = 0, *why = "is not \"bert\"; scfm imports BERT models only";
        seen[N_INT_KEYS] = 1;
    } else if (!strcmp(key, "hidden_act")) {
        if (!scfm_json_string(j, &s)) return 0;
        if (!strcmp(s, "gelu")) c->mc.activation = SCFM_ACT_GELU;
        else if (!strcmp(s, "relu")) c->mc.activation = SCFM_ACT_RELU;
        else ok = 0, *why = "must be \"gelu\" (exact, erf) or \"relu\"";
    } else if (!strcmp(key, "position_embedding_type")) {
        if (!scfm_json_string(j, &s)) return 0;
        if (strcmp(s, "absolute") != 0) ok = 0, *why = "must be \"absolute\": scfm has no relative positions";
    } else if (!strcmp(key, "architectures")) {
        if (!scfm_json_expect(j, '[')) return 0;
        if (scfm_json_peek(j) == ']') return j->p++, 1;
        int more = 0;
        do {
            if (!scfm_json_string(j, &s)) return 0;
            if (strcmp(s, "BertForMaskedLM") != 0) ok = 0, *why = "may only name BertForMaskedLM";
            free(s);
            s = NULL;
        } while (ok && (more = scfm_json_next(j, ']')) == 1);
        return ok && more == 0;
    } else if (!strcmp(key, "scfm")) {
        if (!scfm_json_expect(j, '{')) return 0;
        if (scfm_json_peek(j) == '}') return j->p++, 1;
        int more = 0;
        do {
            char *sub;
            if (!scfm_json_string(j, &sub) || !scfm_json_expect(j, ':')) return free(sub), 0;
            if (!strcmp(sub, "position")) {
                ok = scfm_json_string(j, &s);
                if (ok && !strcmp(s, "none")) c->mc.position = SCFM_POS_NONE;
                else if (ok && strcmp(s, "learned") != 0) ok = 0, *why = "position must be \"learned\" or \"none\"";
                free(s);
                s = NULL;
            } else {
                ok = scfm_json_skip(j);
            }
            free(sub);
        } while (ok && (more = scfm_json_next(j, '}')) == 1);
        return ok && more == 0;
    } else {
        return scfm_json_skip(j); /* transformers writes many keys that do not change the computation */
    }
    free(s);
    return ok;
}

/* config.json strictly: valid JSON, one object; BERT and the sizes
 * required; the rest take BertConfig's defaults. */
static scfm_status parse_config(const char *path, hf_config *c, scfm_error *err) {
    char *text;
    size_t len;
    scfm_status st = read_text(path, &text, &len, err);
    if (st != SCFM_OK) return st;
    memset(c, 0, sizeof *c);
    /* keys BERT has no word for (the count encoders') keep a config file's defaults */
    scfm_config defaults;
    scfm_config_defaults(&defaults);
    c->mc = defaults.model;
    c->mc.activation = SCFM_ACT_GELU;
    c->mc.norm = SCFM_NORM_POST;
    c->mc.position = SCFM_POS_LEARNED;
    c->mc.layer_norm_eps = 1e-12;
    c->mc.dropout = c->mc.attention_dropout = 0.1;
    c->mc.init_std = 0.02;
    c->type_vocab_size = 2;
    int seen[N_INT_KEYS + 1] = {0}; /* the last: model_type */
    scfm_json j;
    scfm_json_init(&j, text, len);
    const char *why = NULL;
    char *key = NULL;
    int more = 0;
    if (scfm_json_expect(&j, '{') && scfm_json_peek(&j) != '}') {
        do {
            free(key);
            key = NULL;
            if (!scfm_json_string(&j, &key) || !scfm_json_expect(&j, ':') || !config_value(&j, key, c, seen, &why))
                break;
        } while ((more = scfm_json_next(&j, '}')) == 1);
    } else if (!j.message[0]) {
        j.p++;
    }
    if (why)
        st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s %s", path, key, why);
    else if (j.message[0] || more < 0)
        st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: invalid JSON at byte %zu%s%s%s: %s", path, scfm_json_offset(&j),
                       key ? " (key \"" : "", key ? key : "", key ? "\")" : "", j.message);
    else if (scfm_json_peek(&j) != -1)
        st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: text after the object at byte %zu", path, scfm_json_offset(&j));
    free(key);
    free(text);
    if (st == SCFM_OK && !seen[N_INT_KEYS])
        st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: model_type is missing; scfm imports BERT models only", path);
    for (int i = 0; i < N_INT_KEYS && st == SCFM_OK; i++)
        if (int_keys[i].required && !seen[i]) st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s is missing", path, int_keys[i].key);
    return st;
}

/* The model section must be one scfm accepts from a config file (the same
 * table checks both), so the imported checkpoint loads like any other. */
static scfm_status check_fits(const char *path, const scfm_model_config *mc, scfm_error *err) {
    scfm_config cfg;
    scfm_config_defaults(&cfg);
    cfg.model = *mc;
    scfm_error why = {0};
    if (scfm_config_validate(&cfg, &why) != SCFM_OK)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: scfm cannot hold this model: %s", path, why.message);
    return SCFM_OK;
}

/* ---- import: the vocabulary ---------------------------------------------- */

typedef struct {
    char *key;
    int64_t id;    /* token dictionary */
    double number; /* medians */
    char *text;    /* symbol -> gene id */
} json_pair;

typedef enum { VALUE_UINT, VALUE_NUMBER, VALUE_STRING } value_kind;

static void pairs_free(json_pair *p, int64_t n) {
    for (int64_t i = 0; p && i < n; i++) {
        free(p[i].key);
        free(p[i].text);
    }
    free(p);
}

/* A flat JSON object {"key": value, ...} with values of one kind. */
static scfm_status read_pairs(const char *dir, const char *name, value_kind kind, json_pair **out, int64_t *n,
                              scfm_error *err) {
    char path[SCFM_PATH_MAX], *text;
    size_t len;
    *out = NULL;
    *n = 0;
    scfm_status st = scfm_path_join(path, sizeof path, dir, name, err);
    if (st == SCFM_OK) st = read_text(path, &text, &len, err);
    if (st != SCFM_OK) return st;
    scfm_json j;
    scfm_json_init(&j, text, len);
    int64_t cap = 0;
    int more = 0;
    if (scfm_json_expect(&j, '{') && scfm_json_peek(&j) != '}') {
        do {
            if (*n == cap) {
                cap = cap ? 2 * cap : 1024;
                json_pair *grown = realloc(*out, sizeof **out * (size_t)cap);
                if (!grown) {
                    st = scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory", path);
                    break;
                }
                *out = grown;
            }
            json_pair *p = &(*out)[*n];
            memset(p, 0, sizeof *p);
            (*n)++;
            int ok = scfm_json_string(&j, &p->key) && scfm_json_expect(&j, ':');
            if (ok && kind == VALUE_UINT) ok = scfm_json_uint(&j, &p->id);
            if (ok && kind == VALUE_NUMBER) ok = scfm_json_number(&j, &p->number);
            if (ok && kind == VALUE_STRING) ok = scfm_json_string(&j, &p->text);
            if (!ok) break;
        } while ((more = scfm_json_next(&j, '}')) == 1);
    } else if (!j.message[0]) {
        j.p++;
    }
    if (st == SCFM_OK && (j.message[0] || more < 0))
        st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: invalid JSON at byte %zu: %s", path, scfm_json_offset(&j), j.message);
    else if (st == SCFM_OK && scfm_json_peek(&j) != -1)
        st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: text after the object at byte %zu", path, scfm_json_offset(&j));
    free(text);
    if (st != SCFM_OK) {
        pairs_free(*out, *n);
        *out = NULL;
        *n = 0;
    }
    return st;
}

static int by_key(const void *a, const void *b) { return strcmp(((const json_pair *)a)->key, ((const json_pair *)b)->key); }

/* By gene id, then symbol: the first pair of a gene names its symbol. */
static int by_text(const void *a, const void *b) {
    const json_pair *x = a, *y = b;
    int c = strcmp(x->text, y->text);
    return c ? c : strcmp(x->key, y->key);
}

static int special_index(const char *name) {
    for (int s = 0; s < 4; s++)
        if (!strcmp(name, special_names[s])) return s;
    return -1;
}

/* The vocabulary from the JSON dictionaries: every gene of the token
 * dictionary needs a positive median; symbols are optional (a gene with
 * several takes the first in byte order). Counts behind the medians are not
 * in Geneformer's files, so the vocabulary records none. */
static scfm_status vocab_from_json(const char *dir, const json_pair *tokens, int64_t n_tokens, const int has[4],
                                   scfm_vocab **out, scfm_error *err) {
    json_pair *medians = NULL, *symbols = NULL;
    int64_t n_medians = 0, n_symbols = 0, n_genes = 0;
    scfm_status st = read_pairs(dir, MEDIANS_FILE, VALUE_NUMBER, &medians, &n_medians, err);
    if (st == SCFM_OK && file_exists(dir, SYMBOLS_FILE)) st = read_pairs(dir, SYMBOLS_FILE, VALUE_STRING, &symbols, &n_symbols, err);
    if (st != SCFM_OK) return st;
    qsort(medians, (size_t)n_medians, sizeof *medians, by_key);
    qsort(symbols, (size_t)n_symbols, sizeof *symbols, by_text);
    const char **ids = calloc((size_t)n_tokens, sizeof *ids), **names = calloc((size_t)n_tokens, sizeof *names);
    double *values = calloc((size_t)n_tokens, sizeof *values);
    int64_t *nonzero = calloc((size_t)n_tokens, sizeof *nonzero);
    if (!ids || !names || !values || !nonzero) st = scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory", dir);
    for (int64_t i = 0; i < n_tokens && st == SCFM_OK; i++) {
        if (special_index(tokens[i].key) >= 0) continue;
        json_pair probe = {.key = tokens[i].key, .text = tokens[i].key};
        const json_pair *m = bsearch(&probe, medians, (size_t)n_medians, sizeof *medians, by_key);
        if (!m) {
            st = scfm_fail(err, SCFM_ERR_FORMAT, "%s/%s: no median for gene %s of %s", dir, MEDIANS_FILE, tokens[i].key,
                           TOKENS_FILE);
            break;
        }
        /* the first symbol pair of this gene: binary search for the lowest (gene, "") */
        int64_t lo = 0, hi = n_symbols;
        while (lo < hi) {
            int64_t mid = lo + (hi - lo) / 2;
            if (strcmp(symbols[mid].text, tokens[i].key) < 0) lo = mid + 1;
            else hi = mid;
        }
        ids[n_genes] = tokens[i].key;
        names[n_genes] = lo < n_symbols && !strcmp(symbols[lo].text, tokens[i].key) ? symbols[lo].key : NULL;
        values[n_genes++] = m->number;
    }
    if (st == SCFM_OK) {
        scfm_error why = {0};
        if (scfm_vocab_create(has[2], has[3], n_genes, ids, names, values, nonzero, 0, out, &why) != SCFM_OK)
            st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s", dir, why.message);
    }
    free(ids);
    free(names);
    free(values);
    free(nonzero);
    pairs_free(medians, n_medians);
    pairs_free(symbols, n_symbols);
    return st;
}

/* The vocabulary and, in perm[hf id], the scfm token of every id of the
 * dictionary (NULL when they are the same). vocab.tsv, when the directory
 * has one (an scfm export), is the exact original; the token dictionary must
 * then agree with it. Without a token dictionary there is no vocabulary. */
static scfm_status read_vocab(const char *dir, int V, scfm_vocab **out, int32_t **perm, scfm_hf_import_notes *notes,
                              scfm_error *err) {
    *out = NULL;
    *perm = NULL;
    if (!file_exists(dir, TOKENS_FILE)) return SCFM_OK;
    json_pair *tokens;
    int64_t n;
    scfm_status st = read_pairs(dir, TOKENS_FILE, VALUE_UINT, &tokens, &n, err);
    if (st != SCFM_OK) return st;
    int32_t *p = malloc(sizeof(int32_t) * (size_t)V);
    char *taken = calloc((size_t)V, 1);
    int has[4] = {0};
    if (!p || !taken) st = scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory", dir);
    if (st == SCFM_OK && n != V)
        st = scfm_fail(err, SCFM_ERR_FORMAT, "%s/%s: %lld entries, but config.json's vocab_size is %d", dir, TOKENS_FILE,
                       (long long)n, V);
    for (int64_t i = 0; i < n && st == SCFM_OK; i++) {
        if (tokens[i].id >= V || taken[tokens[i].id])
            st = scfm_fail(err, SCFM_ERR_FORMAT, "%s/%s: %s: token %lld is %s", dir, TOKENS_FILE, tokens[i].key,
                           (long long)tokens[i].id, tokens[i].id >= V ? "past vocab_size" : "taken twice");
        else
            taken[tokens[i].id] = 1;
        int s = special_index(tokens[i].key);
        if (s >= 0) has[s] = 1;
    }
    if (st == SCFM_OK && (!has[0] || !has[1]))
        st = scfm_fail(err, SCFM_ERR_FORMAT, "%s/%s: needs <pad> and <mask>", dir, TOKENS_FILE);
    if (st == SCFM_OK && file_exists(dir, SCFM_VOCAB_FILE)) {
        st = scfm_vocab_read(dir, out, err);
        notes->vocab_from_tsv = 1;
    } else if (st == SCFM_OK) {
        st = vocab_from_json(dir, tokens, n, has, out, err);
    }
    if (st == SCFM_OK && scfm_vocab_size(*out) != V)
        st = scfm_fail(err, SCFM_ERR_FORMAT, "%s/%s: %lld tokens, but config.json's vocab_size is %d", dir,
                       SCFM_VOCAB_FILE, (long long)scfm_vocab_size(*out), V);
    int identity = 1;
    for (int64_t i = 0; i < n && st == SCFM_OK; i++) {
        int s = special_index(tokens[i].key);
        int32_t t = s == 0 ? SCFM_TOKEN_PAD : s == 1 ? SCFM_TOKEN_MASK : s == 2 ? (*out)->cls : s == 3 ? (*out)->eos
                                                                                                   : scfm_vocab_find(*out, tokens[i].key, 0);
        if (t < 0)
            st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s of %s is not in %s", dir, tokens[i].key, TOKENS_FILE,
                           SCFM_VOCAB_FILE);
        else
            p[tokens[i].id] = t;
        identity = identity && t == tokens[i].id;
    }
    pairs_free(tokens, n);
    free(taken);
    if (st != SCFM_OK || identity) {
        free(p);
        p = NULL;
    }
    if (st != SCFM_OK) {
        scfm_vocab_free(*out);
        *out = NULL;
    }
    *perm = p;
    notes->tokens_reordered = p != NULL;
    return st;
}

/* ---- import: model.safetensors ------------------------------------------ */

static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
    float magnitude;
    if (exp == 0) magnitude = ldexpf((float)frac, -24);  /* zero and subnormals */
    else if (exp == 31) magnitude = frac ? NAN : INFINITY;
    else magnitude = ldexpf((float)(frac | 0x400), (int)exp - 25);
    uint32_t bits;
    memcpy(&bits, &magnitude, 4);
    bits |= sign;
    float out;
    memcpy(&out, &bits, 4);
    return out;
}

/* Tensor name, of the shape config.json implies, widened to float in dst. */
static scfm_status read_tensor(const scfm_safetensors *f, const char *name, int ndim, const int64_t *shape, float *dst,
                               scfm_error *err) {
    const char *path = scfm_safetensors_path(f);
    const scfm_st_tensor *t = scfm_safetensors_find(f, name);
    if (!t) return scfm_fail(err, SCFM_ERR_FORMAT, "%s: tensor %s is missing", path, name);
    int same = t->ndim == ndim;
    for (int d = 0; same && d < ndim; d++) same = t->shape[d] == shape[d];
    if (!same) {
        char have[64] = "", want[64] = "";
        for (int d = 0; d < t->ndim && d < 4; d++)
            snprintf(have + strlen(have), sizeof have - strlen(have), "%s%lld", d ? ", " : "", (long long)t->shape[d]);
        for (int d = 0; d < ndim; d++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", d ? ", " : "", (long long)shape[d]);
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: tensor %s has shape [%s]; config.json's sizes make it [%s]", path,
                         name, have, want);
    }
    int64_t n = scfm_st_tensor_numel(t);
    if (t->dtype == SCFM_DTYPE_F32) {
        memcpy(dst, t->data, sizeof(float) * (size_t)n);
    } else if (t->dtype == SCFM_DTYPE_BF16) {
        const uint16_t *s = t->data;
        for (int64_t i = 0; i < n; i++) {
            uint32_t bits = (uint32_t)s[i] << 16;
            memcpy(&dst[i], &bits, 4);
        }
    } else if (t->dtype == SCFM_DTYPE_F16) {
        const uint16_t *s = t->data;
        for (int64_t i = 0; i < n; i++) dst[i] = half_to_float(s[i]);
    } else {
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: tensor %s is %s; scfm reads F32, F16 and BF16", path, name,
                         scfm_dtype_name(t->dtype));
    }
    return SCFM_OK;
}

static int all_zero(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (x[i] != 0.0f) return 0;
    return 1;
}

/* Every tensor of the file must be one scfm uses or one it may leave out. */
static scfm_status check_names(const scfm_safetensors *f, const scfm_model *m, scfm_hf_import_notes *notes,
                               scfm_error *err) {
    for (int i = 0; i < scfm_safetensors_count(f); i++) {
        const char *name = scfm_safetensors_at(f, i)->name;
        if (!strncmp(name, POOLER, strlen(POOLER))) {
            notes->pooler_dropped = 1;
            continue;
        }
        if (scfm_model_find_tensor(m, name) || !strcmp(name, POS_EMB) || !strcmp(name, TYPE_EMB) ||
            !strcmp(name, DECODER_W) || !strcmp(name, DECODER_B) || !strcmp(name, POSITION_IDS))
            continue;
        return scfm_fail(err, SCFM_ERR_FORMAT,
                         "%s: tensor %s is not part of a post-LN BertForMaskedLM with absolute positions, "
                         "which is what scfm runs", scfm_safetensors_path(f), name);
    }
    return SCFM_OK;
}

/* What BERT has beyond scfm's tensors: checked, folded or dropped. */
static scfm_status read_extras(const scfm_safetensors *f, scfm_model *m, scfm_hf_import_notes *notes, scfm_error *err) {
    const scfm_model_config *c = scfm_model_get_config(m);
    const char *path = scfm_safetensors_path(f);
    const size_t C = (size_t)c->hidden, V = (size_t)c->vocab_size, P = (size_t)c->max_len;
    float *params = scfm_model_params(m);
    float *wte = params + scfm_model_find_tensor(m, WORD_EMB)->offset;
    float *bias = params + scfm_model_find_tensor(m, HEAD_BIAS)->offset;
    const scfm_tensor_info *pos = scfm_model_find_tensor(m, POS_EMB);
    const scfm_st_tensor *types = scfm_safetensors_find(f, TYPE_EMB);
    size_t rows = types && types->ndim == 2 ? (size_t)types->shape[0] : 1;
    size_t most = V > P ? V : P;
    float *scratch = malloc(sizeof(float) * C * (most > rows ? most : rows));
    if (!scratch) return scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory", path);
    scfm_status st = SCFM_OK;
    if (!pos && scfm_safetensors_find(f, POS_EMB)) { /* exported by scfm from a model without positions */
        const int64_t shape[2] = {c->max_len, c->hidden};
        st = read_tensor(f, POS_EMB, 2, shape, scratch, err);
        if (st == SCFM_OK && !all_zero(scratch, P * C))
            st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: config.json says scfm.position \"none\" but %s is not zero", path,
                           POS_EMB);
    }
    if (st == SCFM_OK && types) {
        /* BERT adds token_type_embeddings[0] to every token (one segment):
         * the same as adding it to every position row. */
        const int64_t shape[2] = {(int64_t)rows, c->hidden};
        st = read_tensor(f, TYPE_EMB, 2, shape, scratch, err);
        if (st == SCFM_OK && !all_zero(scratch, C)) {
            if (!pos)
                st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s row 0 is not zero and the model has no position embeddings "
                               "to fold it into", path, TYPE_EMB);
            for (size_t p = 0; st == SCFM_OK && p < P; p++)
                for (size_t k = 0; k < C; k++) params[pos->offset + p * C + k] += scratch[k];
            notes->token_type_folded = st == SCFM_OK;
        }
        notes->token_type_rows_dropped = (int)rows - 1;
    }
    if (st == SCFM_OK && scfm_safetensors_find(f, DECODER_W)) {
        const int64_t shape[2] = {c->vocab_size, c->hidden};
        st = read_tensor(f, DECODER_W, 2, shape, scratch, err);
        if (st == SCFM_OK && memcmp(scratch, wte, sizeof(float) * V * C) != 0)
            st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s differs from %s; scfm ties the decoder to the word embeddings",
                           path, DECODER_W, WORD_EMB);
    }
    if (st == SCFM_OK && scfm_safetensors_find(f, DECODER_B)) {
        const int64_t shape[1] = {c->vocab_size};
        st = read_tensor(f, DECODER_B, 1, shape, scratch, err);
        if (st == SCFM_OK && memcmp(scratch, bias, sizeof(float) * V) != 0)
            st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s differs from %s", path, DECODER_B, HEAD_BIAS);
    }
    free(scratch);
    return st;
}

/* Moves row h of the word embeddings and entry h of the head bias to perm[h]. */
static scfm_status permute_tokens(scfm_model *m, const int32_t *perm, scfm_error *err) {
    const size_t C = (size_t)scfm_model_get_config(m)->hidden, V = (size_t)scfm_model_get_config(m)->vocab_size;
    float *params = scfm_model_params(m);
    float *wte = params + scfm_model_find_tensor(m, WORD_EMB)->offset;
    float *bias = params + scfm_model_find_tensor(m, HEAD_BIAS)->offset;
    float *copy = malloc(sizeof(float) * V * (C + 1));
    if (!copy) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory reordering the vocabulary");
    memcpy(copy, wte, sizeof(float) * V * C);
    memcpy(copy + V * C, bias, sizeof(float) * V);
    for (size_t h = 0; h < V; h++) {
        memcpy(wte + (size_t)perm[h] * C, copy + h * C, sizeof(float) * C);
        bias[perm[h]] = copy[V * C + h];
    }
    free(copy);
    return SCFM_OK;
}

scfm_status scfm_hf_import(const char *dir, scfm_model **model, scfm_vocab **vocab, scfm_hf_import_notes *notes,
                           scfm_error *err) {
    *model = NULL;
    *vocab = NULL;
    memset(notes, 0, sizeof *notes);
    notes->dtype = SCFM_DTYPE_F32;
    char config_path[SCFM_PATH_MAX], weights_path[SCFM_PATH_MAX];
    hf_config c;
    scfm_status st = scfm_path_join(config_path, sizeof config_path, dir, CONFIG_FILE, err);
    if (st == SCFM_OK) st = scfm_path_join(weights_path, sizeof weights_path, dir, WEIGHTS_FILE, err);
    if (st == SCFM_OK) st = parse_config(config_path, &c, err);
    if (st == SCFM_OK) st = check_fits(config_path, &c.mc, err);
    int32_t *perm = NULL;
    if (st == SCFM_OK) st = read_vocab(dir, c.mc.vocab_size, vocab, &perm, notes, err);
    if (st == SCFM_OK && *vocab) c.mc.special_tokens = (*vocab)->n_special;
    scfm_model *m = NULL;
    scfm_safetensors *f = NULL;
    if (st == SCFM_OK) st = scfm_model_create(&c.mc, &m, err);
    if (st == SCFM_OK) st = scfm_safetensors_open(weights_path, &f, err);
    if (st == SCFM_OK) st = check_names(f, m, notes, err);
    for (int i = 0; st == SCFM_OK && i < scfm_model_num_tensors(m); i++) {
        const scfm_tensor_info *ti = scfm_model_tensor(m, i);
        const int64_t shape[2] = {ti->shape[0], ti->shape[1]};
        st = read_tensor(f, ti->name, ti->ndim, shape, scfm_model_params(m) + ti->offset, err);
        if (st == SCFM_OK && scfm_safetensors_find(f, ti->name)->dtype != SCFM_DTYPE_F32)
            notes->dtype = scfm_safetensors_find(f, ti->name)->dtype;
    }
    if (st == SCFM_OK) st = read_extras(f, m, notes, err);
    if (st == SCFM_OK && perm) st = permute_tokens(m, perm, err);
    scfm_safetensors_close(f);
    free(perm);
    if (st != SCFM_OK) {
        scfm_model_free(m);
        scfm_vocab_free(*vocab);
        *vocab = NULL;
        return st;
    }
    *model = m;
    return SCFM_OK;
}
