/* scfm data: token shards on disk, packed batches in memory, and the masking
 * of the masked-gene objective. */
#ifndef SCFM_DATA_H
#define SCFM_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "scfm/core.h"

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
    int n_targets;
    int32_t *target_index;  /* [n_targets] token index in the stream */
    int32_t *target_label;  /* [n_targets] the original token there */
    int cap_cells, cap_tokens;
} scfm_batch;

void scfm_batch_init(scfm_batch *b);
void scfm_batch_free(scfm_batch *b);
void scfm_batch_clear(scfm_batch *b);
/* Appends one cell (its original tokens); grows storage as needed. */
scfm_status scfm_batch_add_cell(scfm_batch *b, int64_t cell_id, const int32_t *tokens, int length,
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

/* A set of token shards: directory of shard_*.h5 (see docs/data-format.md). */
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

/* Writes one shard file of n_cells cells (used by fixtures and the tokenizer). */
scfm_status scfm_shard_write(const char *path, const int32_t *tokens, const int64_t *offsets,
                             int64_t n_cells, int vocab_size, scfm_error *err);

/* Writes a small set of token shards with known structure: n_types cell
 * types, each a noisy version of its own gene ranking, lengths in
 * [min_len, max_len]; reproducible from seed. */
scfm_status scfm_synthetic_tokens(const char *dir, int64_t n_cells, int n_genes, int n_types,
                                  int min_len, int max_len, uint64_t seed, scfm_error *err);

#ifdef __cplusplus
}
#endif
#endif
