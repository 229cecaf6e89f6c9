/* Crash-safe checkpoints (see train.h for the layout). A checkpoint directory
 * is never modified in place: a new one is built beside it and renamed. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "scfm/io.h"
#include "scfm/train.h"

#define MANIFEST_HEADER "scfm-checkpoint 1"
/* What a checkpoint may hold, in MANIFEST order. The weights and the
 * configuration are always there; a training checkpoint adds the optimiser
 * state and the metrics; the vocabulary comes along when the run named one,
 * so that embedding needs nothing but the checkpoint. */
static const char *const checkpoint_files[] = {"model.safetensors", "optimizer.safetensors", "config.cfg",
                                               "metrics.jsonl", SCFM_VOCAB_FILE, SCFM_LABELS_FILE,
                                               SCFM_CONDITIONS_FILE, SCFM_GENES_FILE};
#define N_CHECKPOINT_FILES (int)(sizeof checkpoint_files / sizeof checkpoint_files[0])
/* What a training run keeps in its run directory for every checkpoint to carry. */
static const char *const run_files[] = {"metrics.jsonl", SCFM_LABELS_FILE, SCFM_CONDITIONS_FILE, SCFM_GENES_FILE};
#define N_RUN_FILES (int)(sizeof run_files / sizeof run_files[0])
static const char *const required_files[] = {"model.safetensors", "config.cfg"};
enum { N_REQUIRED_FILES = 2 };

static scfm_status file_crc(const char *path, uint32_t *crc, int64_t *size, scfm_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return scfm_fail(err, SCFM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    unsigned char buf[1 << 16];
    size_t n;
    *crc = 0;
    *size = 0;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        *crc = scfm_crc32(*crc, buf, n);
        *size += (int64_t)n;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) return scfm_fail(err, SCFM_ERR_IO, "%s: read error", path);
    return SCFM_OK;
}

static scfm_status write_manifest(const char *dir, scfm_error *err) {
    char path[SCFM_PATH_MAX], file[SCFM_PATH_MAX];
    scfm_status st = scfm_path_join(path, sizeof path, dir, "MANIFEST", err);
    if (st != SCFM_OK) return st;
    FILE *out = fopen(path, "w");
    if (!out) return scfm_fail(err, SCFM_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    fprintf(out, "%s\n", MANIFEST_HEADER);
    for (int i = 0; i < N_CHECKPOINT_FILES && st == SCFM_OK; i++) {
        uint32_t crc;
        int64_t size;
        struct stat sb;
        st = scfm_path_join(file, sizeof file, dir, checkpoint_files[i], err);
        if (st == SCFM_OK && stat(file, &sb) != 0) continue;
        if (st == SCFM_OK) st = file_crc(file, &crc, &size, err);
        if (st == SCFM_OK) fprintf(out, "%08" PRIx32 " %" PRId64 " %s\n", crc, size, checkpoint_files[i]);
    }
    if (fclose(out) != 0 && st == SCFM_OK) st = scfm_fail(err, SCFM_ERR_IO, "%s: write failed", path);
    if (st == SCFM_OK) st = scfm_fsync_path(path, err);
    return st;
}

scfm_status scfm_checkpoint_verify(const char *step_dir, scfm_error *err) {
    char path[SCFM_PATH_MAX];
    scfm_status st = scfm_path_join(path, sizeof path, step_dir, "MANIFEST", err);
    if (st != SCFM_OK) return st;
    FILE *in = fopen(path, "r");
    if (!in) return scfm_fail(err, SCFM_ERR_FORMAT, "%s: checkpoint has no MANIFEST (incomplete or not a checkpoint)", step_dir);
    char line[512];
    int seen_required = 0;
    if (!fgets(line, sizeof line, in) || strncmp(line, MANIFEST_HEADER, strlen(MANIFEST_HEADER)) != 0)
        st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: not an scfm checkpoint manifest", path);
    while (st == SCFM_OK && fgets(line, sizeof line, in)) {
        uint32_t want_crc, crc;
        int64_t want_size, size;
        char name[256];
        if (sscanf(line, "%" SCNx32 " %" SCNd64 " %255s", &want_crc, &want_size, name) != 3) {
            st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: malformed line '%.80s'", path, line);
            break;
        }
        char file[SCFM_PATH_MAX];
        st = scfm_path_join(file, sizeof file, step_dir, name, err);
        if (st != SCFM_OK) break;
        if (file_crc(file, &crc, &size, err) != SCFM_OK) {
            st = err->status = SCFM_ERR_FORMAT; /* a listed file that cannot be read: a damaged checkpoint */
            break;
        }
        if (size != want_size)
            st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: %" PRId64 " bytes, the manifest says %" PRId64 " (truncated?)",
                           file, size, want_size);
        else if (crc != want_crc)
            st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: checksum %08" PRIx32 " does not match the manifest's %08" PRIx32
                           " (corrupt)", file, crc, want_crc);
        for (int i = 0; i < N_REQUIRED_FILES; i++) seen_required += strcmp(name, required_files[i]) == 0;
    }
    fclose(in);
    if (st == SCFM_OK && seen_required != N_REQUIRED_FILES)
        st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: does not list both %s and %s", path, required_files[0],
                       required_files[1]);
    return st;
}

static scfm_status write_optimizer(const char *path, size_t n, const float *adam_m, const float *adam_v,
                                   const scfm_checkpoint_state *s, scfm_error *err) {
    char values[3][32];
    snprintf(values[0], 32, "%" PRId64, s->step);
    snprintf(values[1], 32, "%d", s->world_size);
    snprintf(values[2], 32, "%" PRId64, s->tokens_seen);
    int64_t *positions = malloc(sizeof(int64_t) * 2 * (size_t)s->world_size);
    if (!positions) return scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory", path);
    for (int r = 0; r < s->world_size; r++) {
        positions[2 * r] = s->positions[r].epoch;
        positions[2 * r + 1] = s->positions[r].offset;
    }
    const scfm_st_meta meta[] = {{"format", "scfm-optimizer"}, {"step", values[0]}, {"world_size", values[1]},
                                 {"tokens_seen", values[2]}};
    const scfm_st_tensor t[3] = {{"adam.m", SCFM_DTYPE_F32, 1, {(int64_t)n}, adam_m},
                                 {"adam.v", SCFM_DTYPE_F32, 1, {(int64_t)n}, adam_v},
                                 {"loader.positions", SCFM_DTYPE_I64, 2, {s->world_size, 2}, positions}};
    scfm_status st = scfm_safetensors_write(path, t, 3, meta, (int)(sizeof meta / sizeof meta[0]), err);
    free(positions);
    return st;
}

static int is_step_dir(const char *name, int64_t *step) {
    char tail;
    long long value;
    if (sscanf(name, "step_%lld%c", &value, &tail) != 1 || strlen(name) != 12) return 0;
    *step = value;
    return 1;
}

/* Steps of run_dir's step directories, newest first; caller frees. */
static scfm_status list_steps(const char *run_dir, int64_t **steps, int *n, scfm_error *err) {
    *steps = NULL;
    *n = 0;
    DIR *d = opendir(run_dir);
    if (!d) return scfm_fail(err, SCFM_ERR_IO, "%s: cannot open: %s", run_dir, strerror(errno));
    int cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        int64_t step;
        if (!is_step_dir(e->d_name, &step)) continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            int64_t *grown = realloc(*steps, sizeof(int64_t) * (size_t)cap);
            if (!grown) {
                closedir(d);
                return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory listing %s", run_dir);
            }
            *steps = grown;
        }
        (*steps)[(*n)++] = step;
    }
    closedir(d);
    for (int i = 1; i < *n; i++) /* insertion sort, descending: a run keeps few */
        for (int j = i; j > 0 && (*steps)[j] > (*steps)[j - 1]; j--) {
            int64_t t = (*steps)[j];
            (*steps)[j] = (*steps)[j - 1];
            (*steps)[j - 1] = t;
        }
    return SCFM_OK;
}

static void step_name(char *out, size_t cap, int64_t step) { snprintf(out, cap, "step_%07" PRId64, step); }

static scfm_status point_latest(const char *run_dir, const char *name, scfm_error *err) {
    char path[SCFM_PATH_MAX], tmp[SCFM_PATH_MAX];
    scfm_status st = scfm_path_join(path, sizeof path, run_dir, "latest", err);
    if (st == SCFM_OK) st = scfm_path_join(tmp, sizeof tmp, run_dir, "latest.tmp", err);
    if (st != SCFM_OK) return st;
    FILE *f = fopen(tmp, "w");
    if (!f) return scfm_fail(err, SCFM_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    fprintf(f, "%s\n", name);
    if (fclose(f) != 0) return scfm_fail(err, SCFM_ERR_IO, "%s: write failed", tmp);
    if ((st = scfm_fsync_path(tmp, err)) != SCFM_OK) return st;
    if (rename(tmp, path) != 0) return scfm_fail(err, SCFM_ERR_IO, "%s: cannot rename: %s", tmp, strerror(errno));
    return scfm_fsync_path(run_dir, err);
}

/* Optional parts of a checkpoint being written. */
typedef struct {
    size_t n_params;
    const float *adam_m, *adam_v;          /* NULL: no optimizer.safetensors */
    const scfm_checkpoint_state *state;
    const char *run_dir;                   /* the run's directory, whose run_files present are copied; NULL: none */
} checkpoint_extras;

/* Builds final_dir as final_dir.tmp (every file and the directory synced)
 * and renames it into place, replacing an older final_dir. */
static scfm_status write_step_dir(const char *final_dir, const scfm_config *cfg, const scfm_model *model,
                                  const checkpoint_extras *x, scfm_error *err) {
    char tmp_dir[SCFM_PATH_MAX], path[SCFM_PATH_MAX], vocab[SCFM_PATH_MAX];
    if (snprintf(tmp_dir, sizeof tmp_dir, "%s.tmp", final_dir) >= (int)sizeof tmp_dir)
        return scfm_fail(err, SCFM_ERR_ARG, "%s: path too long", final_dir);
    struct stat sb;
    scfm_status st = SCFM_OK;
    if (stat(tmp_dir, &sb) == 0 && (st = scfm_remove_dir(tmp_dir, err)) != SCFM_OK) return st; /* a crash's leftover */
    if ((st = scfm_make_dirs(tmp_dir, err)) != SCFM_OK) return st;
    if (st == SCFM_OK) st = scfm_path_join(path, sizeof path, tmp_dir, "model.safetensors", err);
    if (st == SCFM_OK) st = scfm_model_save(model, path, err);
    if (st == SCFM_OK && x->adam_m) st = scfm_path_join(path, sizeof path, tmp_dir, "optimizer.safetensors", err);
    if (st == SCFM_OK && x->adam_m) st = write_optimizer(path, x->n_params, x->adam_m, x->adam_v, x->state, err);
    if (st == SCFM_OK) st = scfm_path_join(path, sizeof path, tmp_dir, "config.cfg", err);
    if (st == SCFM_OK) st = scfm_config_write(cfg, path, err);
    for (int k = 0; x->run_dir && k < N_RUN_FILES && st == SCFM_OK; k++) {
        char from[SCFM_PATH_MAX];
        st = scfm_path_join(from, sizeof from, x->run_dir, run_files[k], err);
        if (st == SCFM_OK && stat(from, &sb) == 0 && (st = scfm_path_join(path, sizeof path, tmp_dir, run_files[k], err)) == SCFM_OK)
            st = scfm_copy_file(from, path, err);
    }
    if (st == SCFM_OK && cfg->data.vocab[0]) st = scfm_path_join(vocab, sizeof vocab, cfg->data.vocab, SCFM_VOCAB_FILE, err);
    if (st == SCFM_OK && cfg->data.vocab[0]) st = scfm_path_join(path, sizeof path, tmp_dir, SCFM_VOCAB_FILE, err);
    if (st == SCFM_OK && cfg->data.vocab[0] && stat(vocab, &sb) != 0)
        st = scfm_fail(err, SCFM_ERR_IO, "%s: cannot copy the vocabulary into the checkpoint: %s", vocab, strerror(errno));
    if (st == SCFM_OK && cfg->data.vocab[0]) st = scfm_copy_file(vocab, path, err);
    if (st == SCFM_OK) st = write_manifest(tmp_dir, err);
    if (st == SCFM_OK) st = scfm_fsync_path(tmp_dir, err);
    /* The same step written again (a resumed run) replaces the old directory. */
    if (st == SCFM_OK && stat(final_dir, &sb) == 0) st = scfm_remove_dir(final_dir, err);
    if (st == SCFM_OK && rename(tmp_dir, final_dir) != 0)
        st = scfm_fail(err, SCFM_ERR_IO, "%s: cannot rename to %s: %s", tmp_dir, final_dir, strerror(errno));
    if (st != SCFM_OK) {
        scfm_error ignored = {0};
        if (stat(tmp_dir, &sb) == 0) scfm_remove_dir(tmp_dir, &ignored);
    }
    return st;
}

scfm_status scfm_checkpoint_write(const char *run_dir, const scfm_config *cfg, const scfm_model *model,
                                  const float *adam_m, const float *adam_v,
                                  const scfm_checkpoint_state *state, scfm_error *err) {
    char name[32], final_dir[SCFM_PATH_MAX], path[SCFM_PATH_MAX];
    step_name(name, sizeof name, state->step);
    scfm_status st = scfm_path_join(final_dir, sizeof final_dir, run_dir, name, err);
    if (st != SCFM_OK) return st;
    checkpoint_extras x = {scfm_model_num_params(model), adam_m, adam_v, state, run_dir};
    if ((st = write_step_dir(final_dir, cfg, model, &x, err)) != SCFM_OK) return st;
    if ((st = scfm_fsync_path(run_dir, err)) != SCFM_OK) return st;
    if ((st = point_latest(run_dir, name, err)) != SCFM_OK) return st;
    int64_t *steps;
    int n;
    if ((st = list_steps(run_dir, &steps, &n, err)) != SCFM_OK) return st;
    for (int i = cfg->checkpoint.keep; i < n && st == SCFM_OK; i++) {
        step_name(name, sizeof name, steps[i]);
        st = scfm_path_join(path, sizeof path, run_dir, name, err);
        if (st == SCFM_OK) st = scfm_remove_dir(path, err);
    }
    free(steps);
    return st;
}

scfm_status scfm_checkpoint_find(const char *run_dir, char *step_dir, size_t cap, char *skipped,
                                 size_t skipped_cap, scfm_error *err) {
    char path[SCFM_PATH_MAX], latest[64] = "";
    skipped[0] = '\0';
    scfm_status st = scfm_path_join(path, sizeof path, run_dir, "latest", err);
    if (st != SCFM_OK) return st;
    FILE *f = fopen(path, "r");
    if (f) {
        if (fgets(latest, sizeof latest, f)) latest[strcspn(latest, "\n")] = '\0';
        fclose(f);
    }
    scfm_error why = {0};
    if (latest[0] && scfm_path_join(step_dir, cap, run_dir, latest, err) == SCFM_OK &&
        scfm_checkpoint_verify(step_dir, &why) == SCFM_OK)
        return SCFM_OK;
    if (latest[0]) snprintf(skipped, skipped_cap, "%s", why.message);
    int64_t *steps;
    int n;
    if ((st = list_steps(run_dir, &steps, &n, err)) != SCFM_OK) return st;
    for (int i = 0; i < n; i++) {
        char name[32];
        step_name(name, sizeof name, steps[i]);
        scfm_error e = {0};
        if (scfm_path_join(step_dir, cap, run_dir, name, &e) == SCFM_OK && scfm_checkpoint_verify(step_dir, &e) == SCFM_OK) {
            free(steps);
            return SCFM_OK;
        }
        if (!skipped[0]) snprintf(skipped, skipped_cap, "%s", e.message);
    }
    free(steps);
    return scfm_fail(err, SCFM_ERR_IO, "%s: no valid checkpoint to resume from%s%s", run_dir,
                     skipped[0] ? "; " : "", skipped);
}

scfm_status scfm_checkpoint_write_model(const char *dir, const scfm_config *cfg, const scfm_model *model, int force,
                                        scfm_error *err) {
    struct stat sb;
    if (!force && stat(dir, &sb) == 0)
        return scfm_fail(err, SCFM_ERR_ARG, "%s exists; choose another path or pass --force", dir);
    checkpoint_extras x = {0};
    scfm_status st = write_step_dir(dir, cfg, model, &x, err);
    if (st != SCFM_OK) return st;
    return scfm_fsync_parent(dir, err);
}

scfm_status scfm_checkpoint_resolve(const char *path, char *step_dir, size_t cap, scfm_error *err) {
    char manifest[SCFM_PATH_MAX], skipped[sizeof err->message];
    struct stat sb;
    scfm_status st = scfm_path_join(manifest, sizeof manifest, path, "MANIFEST", err);
    if (st != SCFM_OK) return st;
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return scfm_fail(err, SCFM_ERR_IO, "%s: not a checkpoint directory: %s", path,
                         stat(path, &sb) != 0 ? strerror(errno) : "not a directory");
    if (stat(manifest, &sb) == 0) {
        if (snprintf(step_dir, cap, "%s", path) >= (int)cap) return scfm_fail(err, SCFM_ERR_ARG, "%s: path too long", path);
        return scfm_checkpoint_verify(step_dir, err);
    }
    return scfm_checkpoint_find(path, step_dir, cap, skipped, sizeof skipped, err);
}

static int64_t meta_int(const scfm_safetensors *f, const char *key, int *ok) {
    const char *v = scfm_safetensors_meta(f, key);
    char *end = NULL;
    long long x = v ? strtoll(v, &end, 10) : 0;
    if (!v || *end != '\0') *ok = 0;
    return x;
}

scfm_status scfm_checkpoint_read(const char *step_dir, scfm_model *model, float *adam_m, float *adam_v,
                                 scfm_checkpoint_state *state, scfm_error *err) {
    char path[SCFM_PATH_MAX];
    scfm_status st = scfm_checkpoint_verify(step_dir, err);
    if (st == SCFM_OK) st = scfm_path_join(path, sizeof path, step_dir, "model.safetensors", err);
    if (st == SCFM_OK) st = scfm_model_load(model, path, err);
    if (st == SCFM_OK) st = scfm_path_join(path, sizeof path, step_dir, "optimizer.safetensors", err);
    if (st != SCFM_OK) return st;
    scfm_safetensors *f = NULL;
    if ((st = scfm_safetensors_open(path, &f, err)) != SCFM_OK) return st;
    const int64_t shape[1] = {(int64_t)scfm_model_num_params(model)};
    const scfm_st_tensor *m = NULL, *v = NULL;
    st = scfm_safetensors_expect(f, "adam.m", SCFM_DTYPE_F32, 1, shape, &m, err);
    if (st == SCFM_OK) st = scfm_safetensors_expect(f, "adam.v", SCFM_DTYPE_F32, 1, shape, &v, err);
    if (st == SCFM_OK) {
        memcpy(adam_m, m->data, sizeof(float) * (size_t)shape[0]);
        memcpy(adam_v, v->data, sizeof(float) * (size_t)shape[0]);
        int ok = 1;
        state->step = meta_int(f, "step", &ok);
        state->world_size = (int)meta_int(f, "world_size", &ok);
        state->tokens_seen = meta_int(f, "tokens_seen", &ok);
        if (!ok || state->world_size < 1)
            st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: metadata step/world_size/tokens_seen missing or not integers", path);
    }
    const scfm_st_tensor *pos = NULL;
    const int64_t pos_shape[2] = {state->world_size, 2};
    if (st == SCFM_OK) st = scfm_safetensors_expect(f, "loader.positions", SCFM_DTYPE_I64, 2, pos_shape, &pos, err);
    if (st == SCFM_OK) {
        state->positions = malloc(sizeof(scfm_loader_position) * (size_t)state->world_size);
        if (!state->positions) st = scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory", path);
        const int64_t *p = pos->data;
        for (int r = 0; st == SCFM_OK && r < state->world_size; r++) {
            state->positions[r].epoch = (uint32_t)p[2 * r];
            state->positions[r].offset = p[2 * r + 1];
        }
    }
    scfm_safetensors_close(f);
    return st;
}
