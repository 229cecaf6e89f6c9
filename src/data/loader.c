/* The training data loader. A producer thread streams this rank's share of a
 * global per-epoch order of the cells from the token shards, packs the cells
 * into micro-batches by token budget (or a fixed number of cells), masks
 * them, and hands them to the training loop through a ring of at most
 * `prefetch` ready micro-batches. Count shards' cells carry their counts and
 * library size and are not masked: their tokens are columns of a gene set,
 * which the count encoders read as a vector, not vocabulary tokens.
 *
 * Order. Epoch e visits every cell once: sequence position p holds cell
 * scfm_shuffle_index(seed, e, n, p), a keyed bijection evaluated per
 * position, so no array of n cell ids ever exists and the order does not
 * depend on the number of ranks. Rank r of W reads positions r, r + W,
 * r + 2W, ... in order: once every rank has taken k cells, together they have
 * taken positions [0, kW) of the same sequence, whatever W is. With packing
 * by token budget the ranks take different numbers of cells per micro-batch
 * and drift apart within an epoch; evening them out is the distributed
 * loop's business.
 *
 * Epochs. A micro-batch never spans two epochs: the last one of an epoch is
 * closed early. So one epoch keys the masks and dropout of all its cells, as
 * scfm_batch_mask and scfm_model_forward expect, and a cell is masked the
 * same way whatever batch it lands in.
 *
 * Threads. This HDF5 build is not thread-safe, so the producer owns the
 * shards for its whole life: it opens them, reads them and closes them, and
 * no other thread calls HDF5 through the loader (but for the library's
 * initialisation, see scfm_loader_open). Its failures (a missing
 * shard, a read error) travel to the consumer as an scfm_error, after the
 * micro-batches it finished before failing. */
#include <hdf5.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "scfm/data.h"

/* The round function of the Feistel network: Philox keyed by the seed, with
 * the round and the epoch in the counter, cut to the half-width mask. */
static uint32_t round_key(uint64_t seed, uint32_t epoch, uint32_t round, uint32_t x, uint32_t mask) {
    uint32_t counter[4] = {x, round, epoch, SCFM_STREAM_SHUFFLE}, r[4];
    scfm_philox(seed, counter, r);
    return r[0] & mask;
}

/* Four Feistel rounds (Luby-Rackoff: a pseudo-random permutation) over
 * 2 * half bits, 4^half >= n; the walk from p through values outside [0, n)
 * stays on p's cycle, which returns to [0, n) at the latest at p itself, so
 * the result is a bijection of [0, n). Each step lands inside with
 * probability n / 4^half > 1/4. */
int scfm_holdout_cell(uint64_t seed, int64_t cell, double fraction) {
    if (fraction <= 0.0) return 0;
    uint32_t counter[4] = {(uint32_t)cell, (uint32_t)((uint64_t)cell >> 32), 0, SCFM_STREAM_HOLDOUT}, r[4];
    scfm_philox(seed, counter, r);
    return scfm_u01(r[0]) < fraction;
}

int64_t scfm_shuffle_index(uint64_t seed, uint32_t epoch, int64_t n, int64_t p) {
    int half = 1;
    while (half < 32 && ((uint64_t)1 << (2 * half)) < (uint64_t)n) half++;
    const uint32_t mask = (uint32_t)(((uint64_t)1 << half) - 1);
    uint64_t x = (uint64_t)p;
    do {
        uint32_t left = (uint32_t)(x >> half), right = (uint32_t)x & mask;
        for (uint32_t round = 0; round < 4; round++) {
            uint32_t next = left ^ round_key(seed, epoch, round, right, mask);
            left = right;
            right = next;
        }
        x = (uint64_t)left << half | right;
    } while (x >= (uint64_t)n);
    return (int64_t)x;
}

typedef struct {
    scfm_batch batch;
    uint32_t epoch;             /* of all its cells */
    scfm_loader_position after; /* where this rank's stream goes on */
} slot;

struct scfm_loader {
    char *dir;
    scfm_loader_config cfg;
    scfm_loader_position start;    /* the producer's first cell */
    scfm_loader_position consumed; /* after the last batch the consumer took */
    slot *ring;
    int depth;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t ready, space;
    /* Under lock: the ready slots are ring[(head + i) % depth], i < count. */
    int head, count;
    int opened, stopping, failed;
    scfm_error error;              /* the producer's failure */
    int64_t n_cells;               /* set by the producer before `opened` */
    int vocab_size;
    int n_genes;                   /* count shards: the columns of the gene set; 0: token shards */
};

/* Makes `s` ready (masked, with the position after it) and waits for the
 * next free slot, which it returns cleared for the epoch of `after`; NULL
 * once the loader is closing. */
static slot *publish(scfm_loader *l, slot *s, scfm_loader_position after, int *tail) {
    if (l->n_genes == 0) scfm_batch_mask(&s->batch, &l->cfg.mask, l->cfg.seed, s->epoch);
    if (l->cfg.value_bins > 0)
        scfm_batch_mask_values(&s->batch, l->cfg.value_mask_prob, l->cfg.mask.first_gene_token, l->cfg.value_bins,
                               l->cfg.seed, s->epoch);
    s->after = after;
    pthread_mutex_lock(&l->lock);
    l->count++;
    pthread_cond_signal(&l->ready);
    while (l->count == l->depth && !l->stopping) pthread_cond_wait(&l->space, &l->lock);
    int stopping = l->stopping;
    pthread_mutex_unlock(&l->lock);
    if (stopping) return NULL;
    /* ring[tail] is free: the producer alone fills ring[(head + count) % depth]. */
    *tail = (*tail + 1) % l->depth;
    slot *next = &l->ring[*tail];
    scfm_batch_clear(&next->batch);
    next->epoch = after.epoch;
    return next;
}

static scfm_status check_shards(scfm_loader *l, const scfm_shards *shards, scfm_error *err) {
    const scfm_loader_config *c = &l->cfg;
    int64_t n = scfm_shards_num_cells(shards);
    if (n < c->world)
        return scfm_fail(err, SCFM_ERR_ARG, "%s: %lld cells cannot feed %d ranks", l->dir, (long long)n,
                         c->world);
    if (l->start.offset >= n)
        return scfm_fail(err, SCFM_ERR_ARG, "%s: loader position %lld is past the %lld cells", l->dir,
                         (long long)l->start.offset, (long long)n);
    if (c->value_bins > 0 && strcmp(scfm_shards_mode(shards), "bin") != 0)
        return scfm_fail(err, SCFM_ERR_CONFIG, "%s: a value objective needs shards of `scfm tokenize --mode bin`, "
                         "these are in %s mode", l->dir, scfm_shards_mode(shards));
    if (c->mask.vocab_size == 0) l->cfg.mask.vocab_size = scfm_shards_vocab_size(shards);
    const int32_t *genes;
    scfm_shards_gene_set(shards, &genes, &l->n_genes);
    l->n_cells = n;
    l->vocab_size = scfm_shards_vocab_size(shards);
    return SCFM_OK;
}

/* Cells are packed greedily: a cell joins the current micro-batch unless it
 * would take it over the token budget; a cell longer than the budget gets a
 * micro-batch of its own. With micro_batch_cells, a micro-batch is full at
 * that many cells instead. Either way it is closed when the next cell comes,
 * so its position after is that cell's. Empty cells are skipped, but for
 * count shards' cells without a count in the gene set: a zero vector is
 * data to a count encoder. */
static scfm_status stream(scfm_loader *l, scfm_shards *shards, scfm_error *err) {
    const scfm_loader_config *c = &l->cfg;
    scfm_loader_position at = l->start;
    int tail = 0;
    slot *s = &l->ring[0];
    s->epoch = at.epoch;
    while (s) {
        int64_t id = scfm_shuffle_index(c->seed, at.epoch, l->n_cells, at.offset);
        const int32_t *tokens = NULL;
        int length = 0;
        scfm_status st = SCFM_OK;
        const int wanted = !(c->labels && c->labels[id] < 0) && !scfm_holdout_cell(c->seed, id, c->holdout_fraction);
        if (wanted && (st = scfm_shards_cell(shards, id, &tokens, &length, err)) != SCFM_OK) return st;
        if (length > c->max_len && l->n_genes == 0) length = c->max_len;
        const int full = c->micro_batch_cells > 0
                             ? s->batch.n_cells >= c->micro_batch_cells
                             : s->batch.n_cells > 0 && s->batch.n_tokens + (int64_t)length > c->micro_batch_tokens;
        if (full) {
            /* tokens stays valid: publish makes no call into the shards */
            if (!(s = publish(l, s, at, &tail))) break;
        }
        const int add = wanted && (length > 0 || l->n_genes > 0);
        if (add && (st = scfm_batch_add_cell(&s->batch, id, tokens, length, err)) != SCFM_OK) return st;
        if (add && c->labels) s->batch.labels[s->batch.n_cells - 1] = c->labels[id];
        if (add && c->conditions) s->batch.conditions[s->batch.n_cells - 1] = c->conditions[id];
        if (add && c->value_bins > 0) {
            const uint8_t *values;
            int n_values;
            if ((st = scfm_shards_cell_values(shards, id, &values, &n_values, err)) != SCFM_OK) return st;
            scfm_batch_set_values(&s->batch, values);
        }
        if (add && l->n_genes > 0) {
            const float *counts;
            int n_counts;
            if ((st = scfm_shards_cell_counts(shards, id, &counts, &n_counts, err)) != SCFM_OK) return st;
            scfm_batch_set_counts(&s->batch, counts, scfm_shards_cell_library(shards, id));
        }
        at.offset += c->world;
        if (at.offset >= l->n_cells) {
            at.epoch++;
            at.offset = c->rank;
            s = publish(l, s, at, &tail);
        }
    }
    return SCFM_OK;
}

static void *produce(void *arg) {
    scfm_loader *l = arg;
    scfm_error err = {0};
    scfm_shards *shards = NULL;
    scfm_status st = scfm_shards_open(l->dir, &shards, &err);
    if (st == SCFM_OK) st = check_shards(l, shards, &err);
    pthread_mutex_lock(&l->lock);
    l->opened = st == SCFM_OK;
    pthread_cond_broadcast(&l->ready);
    pthread_mutex_unlock(&l->lock);
    if (st == SCFM_OK) st = stream(l, shards, &err);
    scfm_shards_close(shards);
    pthread_mutex_lock(&l->lock);
    if (st != SCFM_OK) {
        l->failed = 1;
        l->error = err;
    }
    pthread_cond_broadcast(&l->ready);
    pthread_mutex_unlock(&l->lock);
    return NULL;
}

/* Frees what scfm_loader_open allocated; the producer has ended or never
 * started. */
static void free_loader(scfm_loader *l) {
    for (int i = 0; l->ring && i < l->depth; i++) scfm_batch_free(&l->ring[i].batch);
    pthread_cond_destroy(&l->space);
    pthread_cond_destroy(&l->ready);
    pthread_mutex_destroy(&l->lock);
    free(l->ring);
    free(l->dir);
    free(l);
}

static scfm_status check_config(const scfm_loader_config *c, const scfm_loader_position *start,
                                scfm_error *err) {
    if (c->world < 1 || c->rank < 0 || c->rank >= c->world)
        return scfm_fail(err, SCFM_ERR_ARG, "loader: rank %d outside a world of %d", c->rank, c->world);
    if (c->max_len < 1 || (c->micro_batch_tokens < 1 && c->micro_batch_cells < 1) || c->micro_batch_cells < 0 ||
        c->prefetch < 0)
        return scfm_fail(err, SCFM_ERR_ARG, "loader: max_len and micro_batch_tokens (or micro_batch_cells) must be "
                         "positive and micro_batch_cells and prefetch not negative");
    if (start->offset < 0 || start->offset % c->world != c->rank)
        return scfm_fail(err, SCFM_ERR_ARG, "loader: position %lld does not belong to rank %d of %d",
                         (long long)start->offset, c->rank, c->world);
    return SCFM_OK;
}

scfm_status scfm_loader_open(const char *dir, const scfm_loader_config *cfg, const scfm_loader_position *start,
                             scfm_loader **out, scfm_error *err) {
    *out = NULL;
    scfm_loader_position from = start ? *start : (scfm_loader_position){0, cfg->rank};
    scfm_status st = check_config(cfg, &from, err);
    if (st != SCFM_OK) return st;
    scfm_loader *l = calloc(1, sizeof *l);
    if (!l) return scfm_fail(err, SCFM_ERR_NOMEM, "loader: out of memory");
    pthread_mutex_init(&l->lock, NULL);
    pthread_cond_init(&l->ready, NULL);
    pthread_cond_init(&l->space, NULL);
    l->depth = cfg->prefetch > 0 ? cfg->prefetch : SCFM_LOADER_PREFETCH;
    l->ring = calloc((size_t)l->depth, sizeof(slot));
    l->dir = strdup(dir);
    if (!l->ring || !l->dir) {
        free_loader(l);
        return scfm_fail(err, SCFM_ERR_NOMEM, "loader: out of memory");
    }
    l->cfg = *cfg;
    l->start = l->consumed = from;
    /* The first HDF5 call initialises the library, which in this parallel
     * build registers a hook on MPI_COMM_SELF when MPI is running: that MPI
     * call belongs on this thread (MPI runs at thread level FUNNELED), before
     * the producer exists. */
    if (H5open() < 0) {
        free_loader(l);
        return scfm_fail(err, SCFM_ERR_IO, "loader: cannot initialise the HDF5 library");
    }
    int rc = pthread_create(&l->thread, NULL, produce, l);
    if (rc != 0) {
        free_loader(l);
        return scfm_fail(err, SCFM_ERR_NOMEM, "loader: cannot start the producer thread: %s", strerror(rc));
    }
    pthread_mutex_lock(&l->lock);
    while (!l->opened && !l->failed) pthread_cond_wait(&l->ready, &l->lock);
    pthread_mutex_unlock(&l->lock);
    if (l->failed) {
        st = scfm_fail(err, l->error.status, "%s", l->error.message);
        scfm_loader_close(l);
        return st;
    }
    *out = l;
    return SCFM_OK;
}

int64_t scfm_loader_num_cells(const scfm_loader *l) { return l->n_cells; }
int scfm_loader_vocab_size(const scfm_loader *l) { return l->vocab_size; }
int scfm_loader_n_genes(const scfm_loader *l) { return l->n_genes; }
scfm_loader_position scfm_loader_get_position(const scfm_loader *l) { return l->consumed; }

scfm_status scfm_loader_next(scfm_loader *l, scfm_batch *b, uint32_t *epoch, scfm_error *err) {
    pthread_mutex_lock(&l->lock);
    while (l->count == 0 && !l->failed) pthread_cond_wait(&l->ready, &l->lock);
    if (l->count == 0) {
        pthread_mutex_unlock(&l->lock);
        return scfm_fail(err, l->error.status, "%s", l->error.message);
    }
    slot *s = &l->ring[l->head];
    scfm_batch mine = *b;
    *b = s->batch;
    s->batch = mine;
    *epoch = s->epoch;
    l->consumed = s->after;
    l->head = (l->head + 1) % l->depth;
    l->count--;
    pthread_cond_signal(&l->space);
    pthread_mutex_unlock(&l->lock);
    return SCFM_OK;
}

void scfm_loader_close(scfm_loader *l) {
    if (!l) return;
    pthread_mutex_lock(&l->lock);
    l->stopping = 1;
    pthread_cond_broadcast(&l->space);
    pthread_mutex_unlock(&l->lock);
    pthread_join(l->thread, NULL);
    free_loader(l);
}
