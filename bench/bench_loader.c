/* The data loader's cost against a training step.
 *
 *   bench_loader [--dir DIR] [--cells N] [--len L] [--budget T] [--prefetch K]
 *                [--batches B] [--runs R] [--step-s S] [--sleep-s s] [--sleep-steps M]
 *                [--cold 0|1]
 *
 * Writes (once; a matching set in DIR is reused) N synthetic cells of exactly
 * L tokens with scfm_synthetic_tokens, then:
 *
 * 1. Cost. R runs, each a fresh loader (micro-batch budget T tokens: 2 cells
 *    of 2048 by default, Geneformer's input; prefetch K) at the start of epoch
 *    r, whose consumer takes B micro-batches without doing anything else, so
 *    the producer is the bottleneck: wall seconds per micro-batch is the
 *    loader's own cost (read, pack, mask). The process CPU seconds per
 *    micro-batch over the same window (the producer's work plus a waiting
 *    consumer) are reported too: on a machine where training uses every
 *    core, that is what the loader takes from the step. K + 1 micro-batches
 *    are taken untimed first, so the ring is in its steady state. The
 *    fraction is median cost / S, S being the measured geneformer-v1-6L step
 *    (1.94 s on the development machine, docs/performance.md) with one
 *    micro-batch per step.
 * 2. Overlap. One loader whose consumer sleeps s seconds (a short stand-in
 *    for the step) after each of M micro-batches: the time it is blocked in
 *    scfm_loader_next is what the training loop reports as data_s.
 *
 * With --cold 1 the shard files are dropped from the page cache
 * (posix_fadvise DONTNEED) before every loader opens, so cells come from the
 * disk; by default they are read from the page cache after the first run.
 *
 * Prints one line of JSON on stdout; progress goes to stderr. */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"
#include "scfm/data.h"

typedef struct {
    const char *dir;
    double cells, len, budget, prefetch, batches, runs, step_s, sleep_s, sleep_steps, cold;
} options;

static int parse_args(int argc, char **argv, options *o) {
    *o = (options){"bench_loader_tokens", 20000, 2048, 4096, 4, 200, 5, 1.94, 0.05, 40, 0};
    struct {
        const char *flag;
        double *value, lo;
    } numbers[] = {
        {"--cells", &o->cells, 1},     {"--len", &o->len, 1},         {"--budget", &o->budget, 1},
        {"--prefetch", &o->prefetch, 1}, {"--batches", &o->batches, 1}, {"--runs", &o->runs, 1},
        {"--step-s", &o->step_s, 1e-6}, {"--sleep-s", &o->sleep_s, 0}, {"--sleep-steps", &o->sleep_steps, 1},
        {"--cold", &o->cold, 0},
    };
    for (int i = 1; i < argc; i += 2) {
        if (i + 1 == argc) {
            fprintf(stderr, "bench_loader: %s needs a value\n", argv[i]);
            return 0;
        }
        if (strcmp(argv[i], "--dir") == 0) {
            o->dir = argv[i + 1];
            continue;
        }
        size_t k = 0, n = sizeof numbers / sizeof *numbers;
        while (k < n && strcmp(argv[i], numbers[k].flag)) k++;
        char *end;
        double v = k < n ? strtod(argv[i + 1], &end) : 0.0;
        if (k == n || *end != '\0' || v < numbers[k].lo) {
            fprintf(stderr, "bench_loader: bad option %s %s\n", argv[i], argv[i + 1]);
            return 0;
        }
        *numbers[k].value = v;
    }
    return 1;
}

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Reuses DIR when it holds exactly the requested cells. */
static scfm_status prepare_tokens(const options *o, scfm_error *err) {
    scfm_shards *s = NULL;
    scfm_error ignored = {0};
    if (scfm_shards_open(o->dir, &s, &ignored) == SCFM_OK) {
        int match = scfm_shards_num_cells(s) == (int64_t)o->cells &&
                    scfm_shards_num_tokens(s) == (int64_t)o->cells * (int64_t)o->len;
        scfm_shards_close(s);
        if (match) return SCFM_OK;
    }
    fprintf(stderr, "bench_loader: writing %.0f cells of %.0f tokens to %s\n", o->cells, o->len, o->dir);
    int len = (int)o->len;
    return scfm_synthetic_tokens(o->dir, (int64_t)o->cells, 2 * len, 8, len, len, 1, err);
}

/* Drops the shard files of dir from the page cache. */
static void evict(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[2048];
    while (d && (e = readdir(d))) {
        if (strncmp(e->d_name, "shard_", 6)) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        int fd = open(path, O_RDONLY);
        if (fd < 0) continue;
        fdatasync(fd);
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
    if (d) closedir(d);
}

static scfm_loader_config loader_config(const options *o) {
    scfm_loader_config c = {0};
    c.seed = 42;
    c.world = 1;
    c.max_len = (int)o->len;
    c.micro_batch_tokens = (int64_t)o->budget;
    c.prefetch = (int)o->prefetch;
    c.mask = (scfm_mask_config){0.15, 0.8, 0.1, SCFM_TOKEN_MASK + 1, 0};
    return c;
}

/* Takes n micro-batches, each into b. */
static scfm_status take(scfm_loader *l, scfm_batch *b, int n, scfm_error *err) {
    uint32_t epoch;
    for (int i = 0; i < n; i++)
        if (scfm_loader_next(l, b, &epoch, err) != SCFM_OK) return err->status;
    return SCFM_OK;
}

int main(int argc, char **argv) {
    options o;
    if (!parse_args(argc, argv, &o)) return 2;
    scfm_error err = {0};
    if (prepare_tokens(&o, &err) != SCFM_OK) {
        fprintf(stderr, "bench_loader: %s\n", err.message);
        return 1;
    }
    const scfm_loader_config c = loader_config(&o);
    const int runs = (int)o.runs, batches = (int)o.batches, warm = (int)o.prefetch + 1;
    const int steps = (int)o.sleep_steps;
    double *wall = malloc(sizeof(double) * runs), *cpu = malloc(sizeof(double) * runs);
    double *open_s = malloc(sizeof(double) * runs), *blocked = malloc(sizeof(double) * steps);
    scfm_batch b;
    scfm_batch_init(&b);
    scfm_loader *l = NULL;
    int64_t tokens = 0, cells = 0;
    if (!wall || !cpu || !open_s || !blocked) {
        fprintf(stderr, "bench_loader: out of memory\n");
        return 1;
    }
    for (int r = 0; r < runs; r++) {
        scfm_loader_position start = {(uint32_t)r, 0};
        if (o.cold) evict(o.dir);
        double t0 = scfm_now();
        if (scfm_loader_open(o.dir, &c, &start, &l, &err) != SCFM_OK) goto fail;
        open_s[r] = scfm_now() - t0;
        if (take(l, &b, warm, &err) != SCFM_OK) goto fail;
        double w0 = scfm_now(), c0 = cpu_now();
        for (int i = 0; i < batches; i++) {
            uint32_t epoch;
            if (scfm_loader_next(l, &b, &epoch, &err) != SCFM_OK) goto fail;
            tokens += b.n_tokens;
            cells += b.n_cells;
        }
        wall[r] = (scfm_now() - w0) / batches;
        cpu[r] = (cpu_now() - c0) / batches;
        scfm_loader_close(l);
        l = NULL;
        fprintf(stderr, "bench_loader: run %d: %.3f ms per micro-batch, %.3f ms CPU, open %.3f s\n", r + 1,
                1e3 * wall[r], 1e3 * cpu[r], open_s[r]);
    }
    if (o.cold) evict(o.dir);
    if (scfm_loader_open(o.dir, &c, NULL, &l, &err) != SCFM_OK || take(l, &b, warm, &err) != SCFM_OK) goto fail;
    struct timespec nap = {(time_t)o.sleep_s, (long)((o.sleep_s - (double)(time_t)o.sleep_s) * 1e9)};
    for (int i = 0; i < steps; i++) {
        double t0 = scfm_now();
        if (take(l, &b, 1, &err) != SCFM_OK) goto fail;
        blocked[i] = scfm_now() - t0;
        nanosleep(&nap, NULL);
    }
    scfm_loader_close(l);
    scfm_batch_free(&b);

    bench_sort(wall, runs); /* wall[0] and wall[runs - 1] are reported too */
    bench_sort(blocked, steps);
    double batch_s = bench_median(wall, runs), cpu_s = bench_median(cpu, runs);
    double blocked_med = bench_median(blocked, steps), blocked_max = blocked[steps - 1];
    fprintf(stderr,
            "bench_loader: %.3f ms per micro-batch of %.0f tokens (%.3f ms CPU): %.4f%% of a %.2f s step; "
            "blocked %.1f us per %.3f s step (median, max %.1f us)\n",
            1e3 * batch_s, (double)tokens / ((double)runs * batches), 1e3 * cpu_s, 100.0 * batch_s / o.step_s,
            o.step_s, 1e6 * blocked_med, o.sleep_s, 1e6 * blocked_max);
    printf("{\"cells\": %.0f, \"len\": %.0f, \"budget\": %.0f, \"prefetch\": %.0f, \"cold\": %.0f, \"runs\": %d, "
           "\"batches_per_run\": %d, \"tokens_per_batch\": %.1f, \"cells_per_batch\": %.3f, "
           "\"batch_s\": %.6e, \"batch_s_min\": %.6e, \"batch_s_max\": %.6e, \"cpu_s_per_batch\": %.6e, "
           "\"open_s\": %.4f, \"step_s\": %.3f, \"fraction_of_step\": %.6f, \"cpu_fraction_of_step\": %.6f, "
           "\"sleep_s\": %.4f, \"sleep_steps\": %d, \"blocked_s\": %.6e, \"blocked_s_max\": %.6e}\n",
           o.cells, o.len, o.budget, o.prefetch, o.cold, runs, batches, (double)tokens / ((double)runs * batches),
           (double)cells / ((double)runs * batches), batch_s, wall[0], wall[runs - 1], cpu_s, bench_median(open_s, runs),
           o.step_s, batch_s / o.step_s, cpu_s / o.step_s, o.sleep_s, steps, blocked_med, blocked_max);
    free(wall);
    free(cpu);
    free(open_s);
    free(blocked);
    return 0;
fail:
    fprintf(stderr, "bench_loader: %s\n", err.message);
    scfm_loader_close(l);
    scfm_batch_free(&b);
    return 1;
}
