/* Model weights to and from safetensors, under the Hugging Face
 * BertForMaskedLM names, with the shape in the metadata so a reader needs no
 * config. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scfm/io.h"
#include "scfm/model.h"

scfm_status scfm_model_save(const scfm_model *m, const char *path, scfm_error *err) {
    int n = scfm_model_num_tensors(m);
    scfm_st_tensor *t = calloc((size_t)n, sizeof *t);
    if (!t) return scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory", path);
    const float *params = scfm_model_params((scfm_model *)m);
    for (int i = 0; i < n; i++) {
        const scfm_tensor_info *ti = scfm_model_tensor(m, i);
        t[i].name = ti->name;
        t[i].dtype = SCFM_DTYPE_F32;
        t[i].ndim = ti->ndim;
        t[i].shape[0] = ti->shape[0];
        t[i].shape[1] = ti->shape[1];
        t[i].data = params + ti->offset;
    }
    const scfm_model_config *c = scfm_model_get_config(m);
    char values[7][32];
    snprintf(values[0], 32, "%d", c->vocab_size);
    snprintf(values[1], 32, "%d", c->hidden);
    snprintf(values[2], 32, "%d", c->layers);
    snprintf(values[3], 32, "%d", c->heads);
    snprintf(values[4], 32, "%d", c->ffn);
    snprintf(values[5], 32, "%d", c->max_len);
    snprintf(values[6], 32, "%.17g", c->layer_norm_eps);
    const scfm_st_meta meta[] = {
        {"format", "scfm-model"}, {"vocab_size", values[0]}, {"hidden", values[1]},
        {"layers", values[2]},    {"heads", values[3]},      {"ffn", values[4]},
        {"max_len", values[5]},
        {"activation", scfm_config_choice("model.activation", (int)c->activation)},
        {"norm", scfm_config_choice("model.norm", (int)c->norm)},
        {"position", scfm_config_choice("model.position", (int)c->position)},
        {"layer_norm_eps", values[6]},
    };
    /* A count encoder's shape instead of the transformer's, which it ignores. */
    char fc_values[5][32];
    snprintf(fc_values[0], 32, "%d", c->genes);
    snprintf(fc_values[1], 32, "%d", c->latent);
    snprintf(fc_values[2], 32, "%d", c->fc_hidden);
    snprintf(fc_values[3], 32, "%d", c->fc_layers);
    snprintf(fc_values[4], 32, "%d", c->variational);
    const scfm_st_meta fc_meta[] = {
        {"format", "scfm-model"},      {"encoder", scfm_config_choice("model.encoder", (int)c->encoder)}, {"genes", fc_values[0]},
        {"latent", fc_values[1]},      {"fc_hidden", fc_values[2]},       {"fc_layers", fc_values[3]},
        {"variational", fc_values[4]}, {"likelihood", scfm_config_choice("model.likelihood", (int)c->likelihood)},
    };
    const int fc = c->encoder != SCFM_ENCODER_TRANSFORMER;
    scfm_status st = fc ? scfm_safetensors_write(path, t, n, fc_meta, (int)(sizeof fc_meta / sizeof fc_meta[0]), err)
                        : scfm_safetensors_write(path, t, n, meta, (int)(sizeof meta / sizeof meta[0]), err);
    free(t);
    return st;
}

/* Reads every tensor of m from path; with keep_head, the classification
 * head (classifier.*) keeps its values whatever the file holds. A model made
 * without the contrastive head (embedding, export, fine-tuning) leaves the
 * file's contrastive.* out: that head serves only the pretraining loss. */
static scfm_status load(scfm_model *m, const char *path, int keep_head, scfm_error *err) {
    scfm_safetensors *f = NULL;
    scfm_status st = scfm_safetensors_open(path, &f, err);
    if (st != SCFM_OK) return st;
    float *params = scfm_model_params(m);
    int loaded = 0, head = 0;
    for (int i = 0; i < scfm_model_num_tensors(m) && st == SCFM_OK; i++) {
        const scfm_tensor_info *ti = scfm_model_tensor(m, i);
        if (keep_head && !strncmp(ti->name, "classifier.", 11)) continue;
        const int64_t shape[2] = {ti->shape[0], ti->shape[1]};
        const scfm_st_tensor *t = NULL;
        st = scfm_safetensors_expect(f, ti->name, SCFM_DTYPE_F32, ti->ndim, shape, &t, err);
        if (st == SCFM_OK) memcpy(params + ti->offset, t->data, sizeof(float) * ti->size);
        loaded++;
    }
    for (int i = 0; keep_head && i < scfm_safetensors_count(f); i++)
        head += !strncmp(scfm_safetensors_at(f, i)->name, "classifier.", 11);
    for (int i = 0; scfm_model_get_config(m)->projection_dim == 0 && i < scfm_safetensors_count(f); i++)
        head += !strncmp(scfm_safetensors_at(f, i)->name, "contrastive.", 12);
    if (st == SCFM_OK && scfm_safetensors_count(f) - head != loaded)
        st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: %d tensors, but the model has %d (another model shape?)", path,
                       scfm_safetensors_count(f) - head, loaded);
    scfm_safetensors_close(f);
    return st;
}

scfm_status scfm_model_load(scfm_model *m, const char *path, scfm_error *err) { return load(m, path, 0, err); }

scfm_status scfm_model_load_encoder(scfm_model *m, const char *path, scfm_error *err) {
    return load(m, path, 1, err);
}
