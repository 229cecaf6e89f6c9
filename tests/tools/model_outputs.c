/* scfm's side of the export tests: the final hidden states and MLM logits
 * of a checkpoint on given cells.
 *   model_outputs CHECKPOINT CELLS.txt OUT.safetensors
 * CELLS.txt has one cell per line, its token ids separated by spaces. OUT
 * holds "hidden" [T, hidden] and "logits" [T, vocab] for the T tokens of all
 * cells in order, and "cell_offsets" [cells + 1] (I64).
 *
 * The hidden states are scfm_model_forward's (eval mode). The library keeps
 * no logits past its loss, so they are computed here from those hidden
 * states and the checkpoint's head weights, in double; the tool then checks
 * that the cross-entropy of these logits at every position equals the loss
 * scfm_model_forward reported for the same targets, which ties them to
 * scfm's own head (any other head, activation or LayerNorm would not match). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scfm/io.h"
#include "scfm/model.h"
#include "scfm/train.h"

static const float *tensor(scfm_model *m, const char *name) {
    return scfm_model_params(m) + scfm_model_find_tensor(m, name)->offset;
}

/* logits[V] = LN(act(h W_t^T + b_t)) wte^T + bias, in double. */
static void head(scfm_model *m, const float *h, double *t, float *logits) {
    const scfm_model_config *c = scfm_model_get_config(m);
    const int C = c->hidden, V = c->vocab_size;
    const float *w = tensor(m, "cls.predictions.transform.dense.weight");
    const float *b = tensor(m, "cls.predictions.transform.dense.bias");
    const float *lw = tensor(m, "cls.predictions.transform.LayerNorm.weight");
    const float *lb = tensor(m, "cls.predictions.transform.LayerNorm.bias");
    const float *wte = tensor(m, "bert.embeddings.word_embeddings.weight"), *bias = tensor(m, "cls.predictions.bias");
    double mean = 0.0, var = 0.0;
    for (int o = 0; o < C; o++) {
        double s = b[o];
        for (int i = 0; i < C; i++) s += (double)w[(size_t)o * C + i] * h[i];
        t[o] = c->activation == SCFM_ACT_GELU ? 0.5 * s * (1.0 + erf(s / sqrt(2.0))) : (s > 0 ? s : 0);
        mean += t[o] / C;
    }
    for (int o = 0; o < C; o++) var += (t[o] - mean) * (t[o] - mean) / C;
    for (int o = 0; o < C; o++) t[o] = (t[o] - mean) / sqrt(var + c->layer_norm_eps) * lw[o] + lb[o];
    for (int v = 0; v < V; v++) {
        double s = bias[v];
        for (int i = 0; i < C; i++) s += (double)wte[(size_t)v * C + i] * t[i];
        logits[v] = (float)s;
    }
}

static int fail(const char *what) {
    fprintf(stderr, "model_outputs: %s\n", what);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: model_outputs CHECKPOINT CELLS.txt OUT.safetensors\n");
        return 2;
    }
    scfm_error err = {0};
    char step[SCFM_PATH_MAX], path[SCFM_PATH_MAX];
    scfm_config cfg;
    scfm_safetensors *f = NULL;
    if (scfm_checkpoint_resolve(argv[1], step, sizeof step, &err) != SCFM_OK ||
        scfm_path_join(path, sizeof path, step, "config.cfg", &err) != SCFM_OK ||
        scfm_config_load(&cfg, path, NULL, 0, &err) != SCFM_OK ||
        scfm_path_join(path, sizeof path, step, "model.safetensors", &err) != SCFM_OK ||
        scfm_safetensors_open(path, &f, &err) != SCFM_OK)
        return fail(err.message);
    /* config.cfg may leave the vocabulary size to the shards; the weights record it */
    cfg.model.vocab_size = atoi(scfm_safetensors_meta(f, "vocab_size"));
    scfm_safetensors_close(f);
    scfm_model *m = NULL;
    if (scfm_model_create(&cfg.model, &m, &err) != SCFM_OK || scfm_model_load(m, path, &err) != SCFM_OK)
        return fail(err.message);

    FILE *in = fopen(argv[2], "r");
    if (!in) return fail("cannot open the cells file");
    scfm_batch b;
    scfm_batch_init(&b);
    char line[1 << 16];
    int32_t tokens[4096];
    int64_t cell = 0;
    while (fgets(line, sizeof line, in)) {
        int n = 0;
        for (char *tok = strtok(line, " \n"); tok && n < 4096; tok = strtok(NULL, " \n")) tokens[n++] = atoi(tok);
        if (n && scfm_batch_add_cell(&b, cell++, tokens, n, &err) != SCFM_OK) return fail(err.message);
    }
    fclose(in);
    /* every position a target whose label is its own token: the loss then
     * covers the logits of every token */
    const int T = b.n_tokens, C = cfg.model.hidden, V = cfg.model.vocab_size;
    b.n_targets = T; /* the batch holds room for a target per token */
    for (int t = 0; t < T; t++) b.target_index[t] = t, b.target_label[t] = b.tokens[t];
    double loss = 0.0;
    if (scfm_model_forward(m, &b, 0, 0, 0, &loss, &err) != SCFM_OK) return fail(err.message);

    float *hidden = malloc(sizeof(float) * (size_t)T * C), *logits = malloc(sizeof(float) * (size_t)T * V);
    double *scratch = malloc(sizeof(double) * (size_t)C), own = 0.0;
    int64_t *offsets = malloc(sizeof(int64_t) * (size_t)(b.n_cells + 1));
    memcpy(hidden, scfm_model_hidden(m), sizeof(float) * (size_t)T * C);
    for (int t = 0; t < T; t++) {
        float *z = logits + (size_t)t * V;
        head(m, hidden + (size_t)t * C, scratch, z);
        double mx = z[0], sum = 0.0;
        for (int v = 1; v < V; v++) mx = z[v] > mx ? z[v] : mx;
        for (int v = 0; v < V; v++) sum += exp(z[v] - mx);
        own += log(sum) + mx - z[b.tokens[t]];
    }
    for (int c = 0; c <= b.n_cells; c++) offsets[c] = b.cell_offsets[c];
    int status = 0;
    if (fabs(own - loss) > 1e-4 * fabs(loss)) {
        fprintf(stderr, "model_outputs: these logits give a loss of %.9g, scfm_model_forward %.9g\n", own, loss);
        status = 1;
    }
    const scfm_st_tensor out[3] = {{"hidden", SCFM_DTYPE_F32, 2, {T, C}, hidden},
                                   {"logits", SCFM_DTYPE_F32, 2, {T, V}, logits},
                                   {"cell_offsets", SCFM_DTYPE_I64, 1, {b.n_cells + 1}, offsets}};
    if (!status && scfm_safetensors_write(argv[3], out, 3, NULL, 0, &err) != SCFM_OK) status = fail(err.message);
    if (!status) printf("model_outputs: %d cells, %d tokens, loss %.6f (logits agree with scfm's loss)\n", b.n_cells, T, loss);
    free(hidden);
    free(logits);
    free(scratch);
    free(offsets);
    scfm_batch_free(&b);
    scfm_model_free(m);
    return status;
}
