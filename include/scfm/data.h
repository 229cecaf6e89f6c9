/* scfm data: token shards on disk, packed batches in memory, and the masking
 * of the masked-gene objective. */
#ifndef SCFM_DATA_H
#define SCFM_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "scfm/config.h"
#include "scfm/core.h"
#include "scfm/dist.h"
#include "scfm/io.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Special tokens, as in Geneformer's dictionary. */
#define SCFM_TOKEN_PAD 0
#define SCFM_TOKEN_MASK 1

/* Several cells packed into one token stream: cell c owns tokens
 * [cell_offsets[c], cell_offsets[c+1]) and attends only to them; positions
 * restart at 0 in every cell. No padding. */
typedef struct {
    int n_cells;
    int n_tokens;
    int32_t *tokens;        /* [n_tokens] model input (after masking) */
    int32_t *cell_offsets;  /* [n_cells + 1] */
    int64_t *cell_ids;      /* [n_cells] global cell ids (key the RNG) */
    int32_t *labels;        /* [n_cells] class of each cell for a classification head; -1: none */
    int n_targets;
    int32_t *target_index;  /* [n_targets] token index in the stream */
    int32_t *target_label;  /* [n_targets] the original token there */
    /* Expression values (bin shards; docs/objectives.md): every token's bin
     * as model input, value_bins (the model's B) where masked; 0 for cells
     * added without values. */
    int32_t *values;        /* [n_tokens] */
    int32_t *conditions;    /* [n_cells] code of the condition column; -1: none (left out) */
    int n_value_targets;
    int32_t *value_index;   /* [n_value_targets] token index of each masked value */
    int32_t *value_target;  /* [n_value_targets] its original bin */
    /* Count shards (mode "counts", docs/formats.md): each token is a column
     * of the shards' gene set (0 .. genes-1, no special tokens) and counts[t]
     * its raw count; library[c] is the cell's total count over all its genes
     * (before any gene subset). 0 for cells added without counts. */
    float *counts;          /* [n_tokens] */
    float *library;         /* [n_cells] */
    int cap_cells, cap_tokens;
} scfm_batch;

void scfm_batch_init(scfm_batch *b);
void scfm_batch_free(scfm_batch *b);
void scfm_batch_clear(scfm_batch *b);
/* Appends one cell (its original tokens, label -1, condition -1, values 0);
 * grows storage as needed. */
scfm_status scfm_batch_add_cell(scfm_batch *b, int64_t cell_id, const int32_t *tokens, int length,
                                scfm_error *err);
/* Sets the values of the last cell added (length of its tokens). */
void scfm_batch_set_values(scfm_batch *b, const uint8_t *values);
/* Sets the counts (length of its tokens) and library size of the last cell added. */
void scfm_batch_set_counts(scfm_batch *b, const float *counts, float library);

/* A count batch as the dense matrix x[n_cells, n_genes], row-major, in the
 * representation a count encoder reads (src/data/counts.c,
 * docs/formats.md): genes without a count are 0 in every representation.
 *   SCFM_COUNTS_LOG1P: log1p(count / library x 10,000);
 *   SCFM_COUNTS_RAW: the count;
 *   SCFM_COUNTS_RANK: with the cell's n genes that have a count ordered by
 *     count, descending, ties by column, the gene at place r (0, 1, ...)
 *     gets (n - r) / n: 1 for the highest, 1/n for the lowest;
 *   SCFM_COUNTS_BIN: the bin (as a float) that scfm_bin_encode gives the
 *     gene among the cell's log1p values, n_bins in [2, 256], ties on edges
 *     drawn with seed 0 and the batch's cell id.
 * SCFM_ERR_ARG for a token outside [0, n_genes) or, with log1p, a cell with
 * counts and no library; SCFM_ERR_NOMEM. */
scfm_status scfm_counts_dense(const scfm_batch *b, int n_genes, scfm_count_repr repr, int n_bins, float *x,
                              scfm_error *err);

typedef struct {
    double mask_prob;          /* fraction of non-special tokens selected */
    double mask_token_prob;    /* of those, replaced by <mask> */
    double random_token_prob;  /* of those, replaced by a random gene */
    int first_gene_token;      /* tokens below this are special and never selected */
    int vocab_size;
} scfm_mask_config;

/* Selects and corrupts targets of every cell in b in place, from Philox keyed
 * by (seed, epoch, cell id, position): the same cell gets the same mask in any
 * batch, on any rank. Fills target_index/target_label. */
void scfm_batch_mask(scfm_batch *b, const scfm_mask_config *mc, uint64_t seed, uint32_t epoch);
/* Masks the values of a fraction `prob` of the gene tokens (ids >=
 * first_gene) of every cell: the input value becomes mask_bin and
 * value_index/value_target record the original. Philox keyed like
 * scfm_batch_mask on its own stream, so independent of the gene mask and of
 * packing. */
void scfm_batch_mask_values(scfm_batch *b, double prob, int first_gene, int32_t mask_bin, uint64_t seed,
                            uint32_t epoch);

/* The two views of the contrastive objective (src/data/views.c). Each gene
 * token (id >= first_gene) of each cell of `cells` draws u from Philox keyed
 * by (seed, epoch, cell id, position in the cell): u < fraction puts it in
 * view 0, u >= 1 - fraction in view 1 (fraction <= 0.5: disjoint; 0.5: a
 * split). Special tokens (<cls>, <eos>) go to both views, in place. A view
 * keeps its tokens' order and is renumbered from position 0, so a rank-encoded
 * gene's position is its rank among the view's genes. `views` gets the pairs
 * as adjacent cells 2k (view 0) and 2k + 1 (view 1) with cell ids 2 id and
 * 2 id + 1, which key their masks and dropout apart; the label and the
 * condition of the cell are copied to both, and every token keeps its value
 * (bin shards), so the views are to be value-masked, as they are gene-masked,
 * after the split. A cell whose draw leaves a view without genes is left out.
 * So the views depend on (seed, epoch, cell) only, never on packing or ranks. */
scfm_status scfm_batch_views(const scfm_batch *cells, scfm_batch *views, double fraction, int first_gene,
                             uint64_t seed, uint32_t epoch, scfm_error *err);

/* The views of a count encoder's contrastive objective (CLEAR): each cell of
 * `cells` twice, as adjacent cells 2k and 2k + 1 with cell ids 2 id and
 * 2 id + 1 and everything else (tokens, values, counts, library, label,
 * condition) the same; the model's augmentations, keyed by the cell id, make
 * the two differ. */
scfm_status scfm_batch_pairs(const scfm_batch *cells, scfm_batch *pairs, scfm_error *err);

/* A set of token shards: directory of shard_*.h5 (see docs/formats.md). The
 * accessors of format 2 (mode, vocabulary hash, cell ids, bin values) and the
 * writer are declared with the tokenizer below. */
typedef struct scfm_shards scfm_shards;

scfm_status scfm_shards_open(const char *dir, scfm_shards **out, scfm_error *err);
void scfm_shards_close(scfm_shards *s);
int64_t scfm_shards_num_cells(const scfm_shards *s);
int64_t scfm_shards_num_tokens(const scfm_shards *s);
int scfm_shards_vocab_size(const scfm_shards *s);
int scfm_shards_max_length(const scfm_shards *s);
/* Tokens of global cell i: *tokens points into storage owned by s, valid until
 * the next call. */
scfm_status scfm_shards_cell(scfm_shards *s, int64_t i, const int32_t **tokens, int *length,
                             scfm_error *err);

/* Writes a small set of token shards with known structure: n_types cell
 * types, each a noisy version of its own gene ranking, lengths in
 * [min_len, max_len]; reproducible from seed. */
scfm_status scfm_synthetic_tokens(const char *dir, int64_t n_cells, int n_genes, int n_types,
                                  int min_len, int max_len, uint64_t seed, scfm_error *err);

/* The training data loader (src/data/loader.c): a background thread streams
 * this rank's cells from the shards in a global per-epoch order, packs them
 * into masked micro-batches by token budget (or a number of cells) and keeps
 * up to `prefetch` of them ready. From count shards (mode "counts") every
 * cell comes with its counts and library size (scfm_batch.counts, .library),
 * cells without a count in the gene set included, and nothing is masked:
 * the tokens are columns of the gene set, not vocabulary tokens. */

/* The cell at sequence position p (0 <= p < n) of epoch `epoch`: a keyed
 * bijection of [0, n) (four Feistel rounds over Philox, walked until the
 * value lands in [0, n)), evaluated per position in O(1) memory. It depends
 * only on (seed, epoch, n), so every number of ranks sees the same order. */
int64_t scfm_shuffle_index(uint64_t seed, uint32_t epoch, int64_t n, int64_t p);

#define SCFM_LOADER_PREFETCH 4

typedef struct {
    uint64_t seed;              /* keys the order and the masks */
    int rank, world;            /* this rank reads positions rank, rank + world, ... */
    int max_len;                /* longer cells keep their first max_len tokens (not in counts mode, whose
                                   tokens are columns: a cell is never cut) */
    int64_t micro_batch_tokens; /* budget; a micro-batch holds at least one cell */
    int micro_batch_cells;      /* > 0: every micro-batch holds this many cells (the last of an epoch may
                                   hold fewer), whatever their tokens; micro_batch_tokens is not used */
    int prefetch;               /* ready micro-batches at most; 0: SCFM_LOADER_PREFETCH */
    scfm_mask_config mask;      /* vocab_size 0: the shards' vocabulary */
    const int32_t *labels;      /* NULL, or a class per cell of the shards: cells without one (-1) are
                                   skipped and every batch cell carries its label */
    double holdout_fraction;    /* cells held out for validation (scfm_holdout_cell) are skipped */
    int value_bins;             /* > 0: bin shards' values go into the batches, value_mask_prob of them
                                   masked to bin value_bins; 0: rank or bin shards, no values */
    double value_mask_prob;
    const int32_t *conditions;  /* NULL, or a condition code per cell of the shards (-1: none) */
} scfm_loader_config;

/* 1 when cell is among the `fraction` of the cells held out for validation:
 * a keyed draw per cell, so the split does not depend on the ranks. */
int scfm_holdout_cell(uint64_t seed, int64_t cell, double fraction);

/* Where a rank's stream stands: its next cell is at sequence position
 * `offset` (offset % world == rank, offset < number of cells) of epoch
 * `epoch`. A loader opened at a saved position gives exactly the micro-batches
 * that the saving loader would have given next. */
typedef struct {
    uint32_t epoch;
    int64_t offset;
} scfm_loader_position;

typedef struct scfm_loader scfm_loader;

/* Starts the producer thread on the shard directory `dir` at `start` (NULL:
 * the beginning of epoch 0) and returns once it has opened the shards, with
 * their error if it could not. From then on only the producer calls HDF5: the
 * caller must not use scfm_shards_* until scfm_loader_close. */
scfm_status scfm_loader_open(const char *dir, const scfm_loader_config *cfg,
                             const scfm_loader_position *start, scfm_loader **out, scfm_error *err);
int64_t scfm_loader_num_cells(const scfm_loader *l);
int scfm_loader_vocab_size(const scfm_loader *l);
/* Count shards: G, the columns of their gene set (the width of a dense count
 * vector); 0 for token shards. */
int scfm_loader_n_genes(const scfm_loader *l);
/* Waits for the next micro-batch and moves it into b by swapping storage
 * with it (b's old arrays go back to the loader for reuse; b starts
 * initialised or as a batch an earlier call filled, and its owner frees it
 * with scfm_batch_free). Every cell of it was drawn in *epoch, the epoch that
 * keys its mask and dropout; a micro-batch never spans two epochs, so the
 * last one of an epoch may be short. A failure of the producer (I/O, memory)
 * comes back here, after the micro-batches it finished before it. */
scfm_status scfm_loader_next(scfm_loader *l, scfm_batch *b, uint32_t *epoch, scfm_error *err);
/* The position after the last micro-batch scfm_loader_next returned (the
 * start before the first): what a checkpoint saves. Call it on the thread
 * that calls scfm_loader_next. */
scfm_loader_position scfm_loader_get_position(const scfm_loader *l);
/* Stops the producer (after the cell it is reading) and frees everything. */
void scfm_loader_close(scfm_loader *l);

/* A synthetic atlas with known truth (src/data/simulate.c, docs/simulate.md):
 * negative-binomial counts from cell-type gene programmes, batch effects,
 * varied library sizes and dropout, written as an .h5ad with obs cell_type
 * and batch (categoricals), var index ENSG00000000000.., obs names cell_0..,
 * varm type_fold [genes, types] and batch_effect [genes, batches]. */
#define SCFM_SIMULATE_MAX_CELLS 10000000000LL
#define SCFM_SIMULATE_MAX_GENES 100000
#define SCFM_SIMULATE_MAX_TYPES 1000
#define SCFM_SIMULATE_MAX_BATCHES 1000

typedef struct {
    int64_t cells;
    int genes, types, batches;
    uint64_t seed;
    double library_mean;        /* mean counts per cell before batch shifts */
    double library_sdlog;       /* log-normal spread of library sizes */
    double baseline_sdlog;      /* log-normal spread of baseline gene expression */
    double type_sdlog;          /* log-normal spread of cell-type abundances */
    double marker_fraction;     /* chance that a gene is a marker of a type */
    double marker_fold_min, marker_fold_max; /* marker up-regulation, log-uniform */
    double batch_sdlog;         /* gene-wise batch effect, log-normal with mean 1 */
    double batch_library_sdlog; /* per-batch library-size factor, log-normal */
    double theta_min, theta_max; /* NB dispersion per gene, uniform; >= 1 */
    double dropout_max;         /* zero-inflation of the least expressed genes */
} scfm_simulate_options;

/* The documented defaults: 10,000 cells, 2,000 genes, 8 types, 2 batches. */
void scfm_simulate_defaults(scfm_simulate_options *o);

typedef struct {
    int64_t cells_done, cells;
    double elapsed_s, cells_per_s, eta_s;
} scfm_simulate_progress;

typedef void (*scfm_simulate_progress_fn)(const scfm_simulate_progress *p, void *user);

/* Simulates o->cells cells into the .h5ad at path, a chunk of cells at a time
 * (memory does not grow with the cell count), reporting after each chunk. The
 * file is the same for the same options whatever the thread count. An
 * existing path is an error (SCFM_ERR_ARG) unless force; the file appears
 * only when complete. */
scfm_status scfm_simulate(const scfm_simulate_options *o, const char *path, int force,
                          scfm_simulate_progress_fn progress, void *user, scfm_error *err);

/* ---- gene vocabulary (src/data/vocab.c; docs/formats.md) ----
 * <pad> = 0 and <mask> = 1, then <cls> and <eos> when chosen (Geneformer V2
 * has both, V1 neither), then the genes sorted by gene id, so a tie broken by
 * token id is a tie broken by gene id. Each gene carries the median of its
 * non-zero depth-normalised counts (count / cell total x target_sum) over the
 * corpus, estimated from a log-scale histogram (see docs/formats.md for the
 * error bound). The file's content hash identifies the vocabulary in every
 * shard made with it. */

#define SCFM_VOCAB_FILE "vocab.tsv"
#define SCFM_VOCAB_VERSION 1
#define SCFM_VOCAB_TARGET_SUM 10000.0

typedef struct scfm_gene_index scfm_gene_index;

typedef struct {
    int n_special;         /* tokens before the first gene: 2, 3 or 4 */
    int32_t cls, eos;      /* token ids; -1 when absent */
    int64_t n_genes;       /* gene g has token n_special + g */
    char **gene_ids;       /* [n_genes], strictly increasing (strcmp) */
    char **symbols;        /* [n_genes] */
    double *medians;       /* [n_genes], > 0 */
    int64_t *n_nonzero;    /* [n_genes] cells in which the gene was counted */
    double target_sum;
    int64_t n_cells;       /* cells with at least one count behind the medians */
    uint64_t hash;         /* FNV-1a 64 of the file's content */
    scfm_gene_index *by_id, *by_symbol; /* lookups for scfm_vocab_find */
} scfm_vocab;

static inline int64_t scfm_vocab_size(const scfm_vocab *v) { return v->n_special + v->n_genes; }

/* A vocabulary from its parts (copied): gene ids distinct, without tabs or
 * line breaks; symbols NULL or empty take the gene id. Genes are sorted by id
 * and the hash is computed. */
scfm_status scfm_vocab_create(int cls, int eos, int64_t n_genes, const char *const *gene_ids,
                              const char *const *symbols, const double *medians, const int64_t *n_nonzero,
                              int64_t n_cells, scfm_vocab **out, scfm_error *err);
void scfm_vocab_free(scfm_vocab *v);
/* The token of a gene id (by_symbol 0) or symbol (1): -1 when absent, -2 when
 * the symbol names several genes of the vocabulary. */
int32_t scfm_vocab_find(const scfm_vocab *v, const char *name, int by_symbol);
/* The token of each gene (column) of m, matched by gene id or (by_symbol) by
 * symbol: -1 outside the vocabulary, -2 for a symbol that the file or the
 * vocabulary repeats (gene ids are unique: the readers check it).
 * gene_token has scfm_matrix_num_genes(m) entries. */
scfm_status scfm_vocab_map_genes(const scfm_vocab *v, const scfm_matrix *m, int by_symbol, int32_t *gene_token,
                                 scfm_error *err);
/* DIR/vocab.tsv, written into DIR.tmp and renamed; an existing DIR is an
 * error (SCFM_ERR_ARG) unless force. Reading checks the format and the hash. */
scfm_status scfm_vocab_write(const scfm_vocab *v, const char *dir, int force, scfm_error *err);
scfm_status scfm_vocab_read(const char *dir, scfm_vocab **out, scfm_error *err);

typedef struct {
    int cls, eos;                 /* add <cls>, <eos> */
    int64_t min_cells;            /* keep genes counted in at least this many cells (>= 1) */
    scfm_matrix_options matrix;
} scfm_vocab_options;

typedef struct {
    int64_t cells, cells_empty;   /* read; without any count (not in the medians) */
    int64_t genes_seen, genes_kept;
} scfm_vocab_report;

/* Collective over comm: every rank reads an even share of the inputs' cells;
 * the gene union and the medians are the same on every rank and do not
 * depend on the number of ranks. */
scfm_status scfm_vocab_build(scfm_comm *comm, const char *const *inputs, int n_inputs,
                             const scfm_vocab_options *opt, scfm_vocab **out, scfm_vocab_report *report,
                             scfm_error *err);

/* ---- the inputs as one sequence of cells (src/data/vocab.c) ----
 * Cells are numbered globally in input order (input 0's cells first). One
 * input is open at a time. */
typedef struct {
    int n_inputs;
    const char *const *paths;
    int64_t *first;               /* [n_inputs + 1]: global id of each input's first cell, then the total */
    scfm_matrix_options opt;
    int current;                  /* the input open in m; -1: none */
    scfm_matrix *m;
} scfm_corpus;

/* Opens every input once to count its cells, showing each to visit (when not
 * NULL) while it is open. */
scfm_status scfm_corpus_open(scfm_corpus *c, const char *const *paths, int n_inputs,
                             const scfm_matrix_options *opt,
                             scfm_status (*visit)(void *user, int input, scfm_matrix *m, scfm_error *err),
                             void *user, scfm_error *err);
void scfm_corpus_close(scfm_corpus *c);
/* The input that holds global cell `cell`. */
int scfm_corpus_input(const scfm_corpus *c, int64_t cell);
/* Makes input k the open one; *opened = 1 when it was not open before. */
scfm_status scfm_corpus_select(scfm_corpus *c, int k, int *opened, scfm_error *err);
/* The total count of cell i of a chunk read from input k; a negative or
 * non-finite value is SCFM_ERR_FORMAT naming the input and the cell. */
scfm_status scfm_corpus_cell_total(const scfm_corpus *c, int k, const scfm_cells_chunk *chunk, int64_t i,
                                   double *total, scfm_error *err);

/* ---- output directories (src/data/shard_write.c) ----
 * A vocabulary or a shard set is written into DIR.tmp and renamed to DIR when
 * complete. begin refuses an existing DIR unless force (SCFM_ERR_ARG), clears
 * a stale DIR.tmp and creates it; commit replaces DIR (removing only the files
 * scfm writes there: vocab.tsv, shard_*.h5; anything else makes it fail);
 * discard removes DIR.tmp. One process calls them. */
scfm_status scfm_output_dir_begin(const char *dir, int force, scfm_error *err);
scfm_status scfm_output_dir_commit(const char *dir, scfm_error *err);
void scfm_output_dir_discard(const char *dir);

/* ---- token shards, format 2 (src/data/shard_write.c, shards.c; docs/formats.md) ---- */

#define SCFM_SHARD_VERSION 2

/* What every shard of a set records. */
typedef struct {
    const char *mode;                 /* "rank", "bin" or "counts" */
    int64_t vocab_size;
    uint64_t vocab_hash;
    int max_length;                   /* tokens per cell, <cls>/<eos> included */
    int n_bins;                       /* bin mode: values in [0, n_bins); 0 in rank mode */
    const char *normalisation;        /* how counts became tokens, in words */
    int shard_index, n_shards;
    int n_sources;                    /* the inputs, in the order of the global cell ids */
    const char *const *sources;
    const int64_t *source_cells;
    int n_obs;                        /* categorical obs columns */
    const char *const *obs_columns;
    const int *obs_n_categories;
    const char *const *const *obs_categories;
    /* counts mode: the gene set, column c being vocabulary token genes[c] (ascending) with gene id
     * gene_ids[c] */
    int n_genes;
    const int32_t *genes;
    const char *const *gene_ids;
} scfm_shard_meta;

/* One rank's next cells for a shard. */
typedef struct {
    int64_t n_cells;
    const int64_t *offsets;           /* [n_cells + 1] from 0: cell c owns tokens [offsets[c], offsets[c+1]) */
    const int32_t *tokens;
    const uint8_t *values;            /* bin mode: a value per token; NULL in rank mode */
    const int64_t *cell_ids;          /* [n_cells] index in the concatenated inputs */
    const int32_t *const *obs_codes;  /* [n_obs][n_cells], -1 = missing */
    const float *counts;              /* counts mode: each token's (column's) raw count; else NULL */
    const float *library;             /* counts mode: [n_cells] each cell's total count; else NULL */
} scfm_shard_cells;

typedef struct scfm_shard_writer scfm_shard_writer;

/* Creates the shard file. With comm, every rank calls create, append, finish
 * or abort together (parallel HDF5, collective transfers) and the cells of
 * one append follow in rank order; with comm NULL one process writes alone. */
scfm_status scfm_shard_create(scfm_comm *comm, const char *path, const scfm_shard_meta *meta,
                              scfm_shard_writer **out, scfm_error *err);
scfm_status scfm_shard_append(scfm_shard_writer *w, const scfm_shard_cells *cells, scfm_error *err);
/* Records skipped_cells (input cells of this shard that had no token) and
 * closes the file; frees w whatever the outcome. */
scfm_status scfm_shard_finish(scfm_shard_writer *w, int64_t skipped_cells, scfm_error *err);
/* Closes the file without completing it and frees w (NULL is allowed). */
void scfm_shard_abort(scfm_shard_writer *w);

/* "rank", "bin" or "counts". */
const char *scfm_shards_mode(const scfm_shards *s);
/* Bin mode: the bins B (values in [0, B)) and how counts were binned, in
 * words (the first shard's; 0 and "" in rank mode). */
int scfm_shards_n_bins(const scfm_shards *s);
const char *scfm_shards_normalisation(const scfm_shards *s);
uint64_t scfm_shards_vocab_hash(const scfm_shards *s);
/* The index of cell i in the concatenated inputs the shards were made from. */
int64_t scfm_shards_cell_id(const scfm_shards *s, int64_t i);
/* Bin mode: the value of each token of cell i, like scfm_shards_cell. */
scfm_status scfm_shards_cell_values(scfm_shards *s, int64_t i, const uint8_t **values, int *length,
                                    scfm_error *err);
/* Counts mode: the gene set, the same in every shard: *n_genes columns, column
 * c being vocabulary token (*tokens)[c], ascending (storage owned by s).
 * *n_genes is 0 and *tokens NULL for token shards. */
void scfm_shards_gene_set(const scfm_shards *s, const int32_t **tokens, int *n_genes);
/* Counts mode: the raw count of each token (column) of cell i, like
 * scfm_shards_cell; SCFM_ERR_ARG for other shards. Reading checks that the
 * counts are finite and positive. */
scfm_status scfm_shards_cell_counts(scfm_shards *s, int64_t i, const float **counts, int *length,
                                    scfm_error *err);
/* Counts mode: cell i's library size, its total count over all genes of its
 * input (before the gene set was applied); 0 for other shards. */
float scfm_shards_cell_library(const scfm_shards *s, int64_t i);
/* The categorical obs column `column` of every shard: codes[cells] (-1:
 * missing; malloc'd) and its categories (the same in every shard;
 * scfm_free_strings). SCFM_ERR_CONFIG naming the columns present when a
 * shard lacks it. */
scfm_status scfm_shards_obs(scfm_shards *s, const char *column, int32_t **codes, char ***categories,
                            int *n_categories, scfm_error *err);
void scfm_free_strings(char **strings, int n);
/* SCFM_ERR_CONFIG naming both hashes when the shards were made with another
 * vocabulary than v. */
scfm_status scfm_shards_expect_vocab(const scfm_shards *s, const scfm_vocab *v, scfm_error *err);

/* ---- tokenization (src/data/tokenize.c) ----
 * The encoders work on one cell: its non-zero counts already mapped to
 * vocabulary tokens (distinct, any order) and its total count over all genes
 * of its file. */

typedef struct {
    double value;     /* what the cell is ordered or binned by */
    uint64_t key;     /* sort key */
    int32_t token;
    int32_t bin;
} scfm_cell_entry;

typedef struct {
    const double *medians;  /* medians[token - first_gene] */
    int32_t first_gene;
    double target_sum;
    int max_length;         /* <cls>/<eos> included */
    int32_t cls, eos;       /* -1: not added */
} scfm_rank_params;

/* Geneformer's rank-value encoding: value = count / total x target_sum /
 * median, in double, in that order; tokens by value, descending, ties by
 * token id; the first max_length (less <cls>/<eos>) kept, <cls> before and
 * <eos> after. Zero counts are ignored. Writes out (max_length tokens at most)
 * and returns the length, 0 for a cell without counts. scratch: 2n entries. */
int scfm_rank_encode(const scfm_rank_params *p, const int32_t *tokens, const float *counts, int n,
                     double total, scfm_cell_entry *scratch, int32_t *out);

typedef struct {
    int n_bins;             /* B: zero is bin 0, non-zero values bins 1..B-1 */
    int log1p;              /* bin log1p(count / total x target_sum), else the raw count */
    double target_sum;
    int max_length;
    int32_t cls, eos;
    uint64_t seed;
} scfm_bin_params;

/* scGPT's value binning: the B - 1 edges are numpy's linear quantiles at
 * linspace(0, 1, B - 1) of the cell's non-zero values; a value v gets
 * digitize(v, edges) (the number of edges <= v); where v equals several
 * edges, a bin drawn uniformly from (number of edges < v, that number], as
 * scGPT's random side. Zero counts (entries for included zero genes) get bin
 * 0. More tokens than max_length (less <cls>/<eos>) are sampled down to it,
 * keeping the smallest Philox keys. Draws are keyed by (seed, cell_id, token).
 * Tokens come out in token order, <cls> first and <eos> last with value 0.
 * Returns the length, 0 for a cell without non-zero counts. scratch: 2n entries. */
int scfm_bin_encode(const scfm_bin_params *p, int64_t cell_id, const int32_t *tokens, const float *counts,
                    int n, double total, scfm_cell_entry *scratch, int32_t *out_tokens, uint8_t *out_values);

typedef enum { SCFM_TOKENIZE_RANK = 0, SCFM_TOKENIZE_BIN, SCFM_TOKENIZE_COUNTS } scfm_tokenize_mode;

typedef struct {
    scfm_tokenize_mode mode;
    int max_length;               /* tokens per cell, <cls>/<eos> included (not counts mode: a cell keeps
                                   * every gene of the set) */
    int match_symbol;             /* match genes to the vocabulary by symbol instead of id */
    int64_t cells_per_shard;      /* input cells per shard file */
    int n_bins;                   /* bin mode */
    int log1p;                    /* bin mode: bin log1p-normalised counts instead of raw ones */
    int hvg;                      /* bin and counts modes: keep the hvg most variable genes (at most the
                                   * vocabulary's genes); 0 keeps all */
    int include_zeros;            /* bin mode with hvg: every kept gene, zeros in bin 0 */
    uint64_t seed;
    const char *obs;              /* comma-separated obs columns; NULL: the categorical columns common to
                                   * all inputs; "": none */
    scfm_matrix_options matrix;
    int force;                    /* replace an existing output directory */
    void (*progress)(int64_t cells_done, int64_t cells_total, void *user); /* rank 0, after each round */
    void *progress_user;
} scfm_tokenize_options;

typedef struct {
    int64_t cells, genes;
    int64_t genes_outside;        /* not in the vocabulary */
    int64_t genes_ambiguous;      /* symbol matching: a symbol the file or the vocabulary repeats */
    double counts_outside;        /* share of the counts in those genes */
} scfm_tokenize_input_report;

typedef struct {
    int n_inputs;
    scfm_tokenize_input_report *inputs;
    int64_t cells;                /* input cells */
    int64_t cells_written, tokens_written;
    int64_t cells_empty;          /* no counts at all */
    int64_t cells_empty_in_vocab; /* counts only in genes outside the vocabulary (or the hvg set) */
    int64_t cells_cut;            /* more genes than max_length allows */
    int64_t cells_zero_in_set;    /* counts mode: written without a count in the gene set */
    int n_shards;
    int hvg_genes;                /* genes in the hvg set (ties at the cut-off included) */
} scfm_tokenize_report;

/* Collective over comm: tokenizes the inputs (cells numbered globally in
 * input order) into the shard set out_dir, written by all ranks with
 * parallel HDF5 into out_dir.tmp and renamed by rank 0. Shard boundaries and
 * contents do not depend on the number of ranks. On any rank's failure every
 * rank returns it and the temporary directory is removed. */
scfm_status scfm_tokenize(scfm_comm *comm, const scfm_vocab *vocab, const char *const *inputs, int n_inputs,
                          const char *out_dir, const scfm_tokenize_options *opt, scfm_tokenize_report *report,
                          scfm_error *err);
void scfm_tokenize_report_free(scfm_tokenize_report *r);

#ifdef __cplusplus
}
#endif
#endif
