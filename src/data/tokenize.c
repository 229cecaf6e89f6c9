/* Tokenization: count matrices to token shards (docs/formats.md).
 *
 * The encoders are pure functions of one cell. The driver numbers the input
 * cells globally in input order and cuts them into shards of
 * cells_per_shard input cells, so shard boundaries and contents never depend
 * on the number of ranks. Each shard is filled in rounds: in a round every
 * rank encodes an even, consecutive share of the shard's next
 * ranks x ROUND_CELLS cells, and the shard writer appends the shares in rank
 * order with one collective transfer per dataset. A rank thus holds one
 * round of one shard at a time, whatever the size of the corpus. Counts
 * mode encodes nothing: a cell's tokens are the columns of a gene set where
 * it has a count, written with the raw counts and its library size. */
#define _GNU_SOURCE /* sched_getaffinity */
#include <math.h>
#include <omp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/matrix_impl.h"
#include "scfm/data.h"

#define ROUND_CELLS 8192        /* cells per rank per round */
#define STATS_READ_CELLS 4096   /* cells per read in the statistics pass */
#define SMALL_READ_CELLS 512    /* cells per read where reads may be small: the
                                   entries (about 4 MB at 20,000 genes) stay in
                                   cache until they are encoded */
#define MAX_BINS 256            /* bins fit the uint8 values */
/* Philox stream of the tokenizer's draws, after core.h's streams. */
#define STREAM_TOKENIZE 16
#define HVG_MEAN_BINS 20        /* scanpy's n_bins for flavor "seurat" */

/* ---- encoders ---- */

/* Sorts e[0, n) by key, ties by token, both ascending: a stable LSD radix
 * sort over the 12 bytes of (key, token), the token's bytes first, skipping
 * the bytes that every entry shares. tmp holds n entries. A cell of a few
 * thousand genes sorts several times faster than with qsort. */
static void sort_entries(scfm_cell_entry *e, scfm_cell_entry *tmp, int n) {
    enum { PASSES = 12 };
    uint32_t count[PASSES][256];
    memset(count, 0, sizeof count);
#define BYTE(x, p) ((p) < 4 ? ((uint32_t)(x).token >> (8 * (p))) & 255u : (uint32_t)((x).key >> (8 * ((p) - 4))) & 255u)
    for (int i = 0; i < n; i++)
        for (int p = 0; p < PASSES; p++) count[p][BYTE(e[i], p)]++;
    scfm_cell_entry *src = e, *dst = tmp;
    for (int p = 0; p < PASSES && n > 0; p++) {
        if (count[p][BYTE(src[0], p)] == (uint32_t)n) continue;
        uint32_t offset = 0;
        for (int b = 0; b < 256; b++) {
            uint32_t c = count[p][b];
            count[p][b] = offset;
            offset += c;
        }
        for (int i = 0; i < n; i++) dst[count[p][BYTE(src[i], p)]++] = src[i];
        scfm_cell_entry *swap = src;
        src = dst;
        dst = swap;
    }
#undef BYTE
    if (src != e) memcpy(e, src, sizeof *e * (size_t)n);
}

/* Keys that order non-negative doubles: their bit patterns, ascending or
 * (complemented) descending. */
static uint64_t ascending(double v) {
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    return bits;
}

static uint64_t descending(double v) { return ~ascending(v); }

/* Four lanes of doubles and of their keys (GCC vector extensions: AVX
 * where the target has it, pairs of SSE2 or NEON registers otherwise). */
typedef double value4 __attribute__((vector_size(32)));
typedef uint64_t key4 __attribute__((vector_size(32)));

/* Rank encoding sorts 8-byte words instead of 24-byte entries: a word holds
 * the cell's key less its smallest key, cut to what fits beside the
 * entry's index, and the index below them. Sorted words are in key order
 * except inside a run of equal cut keys, which rank_fix_runs puts in (key,
 * token) order; a run holds the true ties and, rarely, values that differ
 * only below the cut. The sort is one counting pass on the words' top bits
 * into about one bucket per entry, then each bucket that reaches the cut to
 * max_length on its own: by insertion when small, by LSD radix when large. */
enum {
    RANK_DIGIT = 11,            /* LSD radix digit of large buckets */
    RANK_BUCKETS = 1 << RANK_DIGIT,
    RANK_PASSES = 6,            /* 64 bits */
    RANK_TOP_BITS = 12,         /* at most 4,096 buckets in the first pass */
    RANK_SMALL = 32,            /* buckets up to this size sorted by insertion */
    RANK_COARSE_BITS = 8,       /* rank_sort_adaptive's coarse ranges */
    RANK_ADAPTIVE_MIN = 512,    /* words from which rank_sort adapts its buckets */
};

/* Sorts u[0, n) ascending; tmp holds n words; only the low `bits` bits may
 * differ. Passes whose digit is the same in every word are skipped. Returns
 * u or tmp, wherever the result is. */
static uint64_t *rank_radix(uint64_t *u, uint64_t *tmp, int n, int bits) {
    uint32_t count[RANK_PASSES][RANK_BUCKETS];
    const int passes = (bits + RANK_DIGIT - 1) / RANK_DIGIT;
    memset(count, 0, sizeof count[0] * (size_t)passes);
    for (int i = 0; i < n; i++)
        for (int p = 0; p < passes; p++) count[p][(u[i] >> (RANK_DIGIT * p)) & (RANK_BUCKETS - 1)]++;
    for (int p = 0; p < passes; p++) {
        const int shift = RANK_DIGIT * p;
        uint32_t *c = count[p];
        if (c[(u[0] >> shift) & (RANK_BUCKETS - 1)] == (uint32_t)n) continue;
        uint32_t offset = 0;
        for (int b = 0; b < RANK_BUCKETS; b++) {
            uint32_t k = c[b];
            c[b] = offset;
            offset += k;
        }
        for (int i = 0; i < n; i++) tmp[c[(u[i] >> shift) & (RANK_BUCKETS - 1)]++] = u[i];
        uint64_t *swap = u;
        u = tmp;
        tmp = swap;
    }
    return u;
}

static void insertion_sort(uint64_t *u, int n) {
    for (int i = 1; i < n; i++) {
        const uint64_t w = u[i];
        int j = i;
        for (; j > 0 && u[j - 1] > w; j--) u[j] = u[j - 1];
        u[j] = w;
    }
}

/* Sorts each bucket of out that begins before `keep`: bucket b is
 * out[start[b - 1], start[b]), the first from 0; only the low `bits` bits of
 * its words differ. word (as long as out) is the radix sort's scratch. */
static void sort_buckets(uint64_t *out, uint64_t *word, const uint32_t *start, uint32_t buckets, int keep,
                         int bits) {
    for (uint32_t b = 0, lo = 0; b < buckets && (int)lo < keep; lo = start[b++]) {
        const int size = (int)(start[b] - lo);
        if (size <= RANK_SMALL) insertion_sort(out + lo, size);
        else if (rank_radix(out + lo, word + lo, size, bits) != out + lo)
            memcpy(out + lo, word + lo, sizeof *out * (size_t)size);
    }
}

/* Sorts the first `keep` of the n words (`bits` low bits may differ) into
 * out, which gets all n words, those past keep in no particular order;
 * word's n words are scratch. The first pass spreads the words over the
 * buckets of their top bits. */
static void rank_sort_top(uint64_t *word, uint64_t *out, int n, int keep, int bits) {
    const int top = bits < RANK_TOP_BITS ? bits : RANK_TOP_BITS, shift = bits - top;
    uint32_t start[(1 << RANK_TOP_BITS) + 1];
    const int buckets = 1 << top;
    memset(start, 0, sizeof start[0] * (size_t)(buckets + 1));
    for (int i = 0; i < n; i++) start[(word[i] >> shift) + 1]++;
    for (int b = 0; b < buckets; b++) start[b + 1] += start[b];
    for (int i = 0; i < n; i++) out[start[word[i] >> shift]++] = word[i];
    /* start[b] is now where bucket b + 1 begins */
    sort_buckets(out, word, start, (uint32_t)buckets, keep, shift);
}

static int ceil_log2(uint32_t c) { return c > 1 ? 32 - __builtin_clz(c - 1) : 0; }

/* rank_sort_top for cells of RANK_ADAPTIVE_MIN words and more, with buckets
 * that follow the cell's values, which gather in a few narrow ranges (a few
 * distinct counts, over medians of similar size): a coarse pass counts the
 * words of each of 256 ranges of their top bits; a range of c words is then
 * cut into the power of two at or above c buckets by its next bits, so that
 * a bucket holds one or two words on average. The buckets keep the words'
 * order (words with equal keys are in index order already); one insertion
 * sort over the buckets up to the cut puts each in order, or where a bucket
 * is large, the radix sort. spare holds 5n 32-bit words. */
static void rank_sort_adaptive(uint64_t *word, uint64_t *out, int n, int keep, int bits, uint32_t *spare) {
    const int coarse = bits < RANK_COARSE_BITS ? bits : RANK_COARSE_BITS, shift = bits - coarse, ranges = 1 << coarse;
    uint32_t count[1 << RANK_COARSE_BITS], base[1 << RANK_COARSE_BITS], mask[1 << RANK_COARSE_BITS];
    uint8_t below[1 << RANK_COARSE_BITS];
    memset(count, 0, sizeof count[0] * (size_t)ranges);
    for (int i = 0; i < n; i++) count[word[i] >> shift]++;
    uint32_t buckets = 0;
    for (int r = 0; r < ranges; r++) {
        int sub = ceil_log2(count[r]);
        sub = sub < shift ? sub : shift;
        base[r] = buckets;
        below[r] = (uint8_t)(shift - sub);
        mask[r] = (1u << sub) - 1;
        buckets += 1u << sub;
    }
    /* buckets < 2n + 256: bucket[n], start[buckets + 1] fit in spare */
    uint32_t *bucket = spare, *start = spare + n;
    memset(start, 0, sizeof start[0] * (buckets + 1));
    for (int i = 0; i < n; i++) {
        const uint64_t w = word[i];
        const uint32_t r = (uint32_t)(w >> shift);
        bucket[i] = base[r] + ((uint32_t)(w >> below[r]) & mask[r]);
        start[bucket[i] + 1]++;
    }
    uint32_t largest = 0;
    for (uint32_t b = 0; b < buckets; b++) {
        largest = start[b + 1] > largest ? start[b + 1] : largest;
        start[b + 1] += start[b];
    }
    for (int i = 0; i < n; i++) out[start[bucket[i]]++] = word[i];
    /* start[b] is now where bucket b + 1 begins */
    if (largest <= RANK_SMALL) {
        /* the end of the bucket that holds the word at keep - 1 */
        uint32_t lo = 0, hi = buckets - 1;
        while (lo < hi) {
            const uint32_t mid = (lo + hi) / 2;
            if ((int)start[mid] >= keep) hi = mid;
            else lo = mid + 1;
        }
        insertion_sort(out, (int)start[lo]);
        return;
    }
    sort_buckets(out, word, start, buckets, keep, shift);
}

static void rank_sort(uint64_t *word, uint64_t *out, int n, int keep, int bits, uint32_t *spare) {
    if (n < RANK_ADAPTIVE_MIN) rank_sort_top(word, out, n, keep, bits);
    else rank_sort_adaptive(word, out, n, keep, bits, spare);
}

/* Puts each run of words with equal cut keys (u >> index_bits) that starts
 * before `keep` in (full key, token) order: an insertion sort, linear on the
 * usual runs, whose indices already follow the tokens. */
static void rank_fix_runs(uint64_t *u, int n, int keep, int index_bits, const uint64_t *key,
                          const int32_t *token) {
    const uint64_t index_mask = ((uint64_t)1 << index_bits) - 1;
    /* A run is found at its second word; most words are alone, so the test
     * that looks for one is rarely true. */
    for (int second = 1; second < n && second <= keep; second++) {
        if ((u[second] >> index_bits) != (u[second - 1] >> index_bits)) continue;
        const int lo = second - 1;
        int hi = second + 1;
        while (hi < n && (u[hi] >> index_bits) == (u[lo] >> index_bits)) hi++;
        for (int i = lo + 1; i < hi; i++) {
            const uint64_t w = u[i];
            const uint64_t k = key[w & index_mask];
            const int32_t tok = token[w & index_mask];
            int j = i;
            for (; j > lo; j--) {
                const uint64_t prev = u[j - 1] & index_mask;
                if (key[prev] < k || (key[prev] == k && token[prev] < tok)) break;
                u[j] = u[j - 1];
            }
            u[j] = w;
        }
        second = hi;
    }
}

int scfm_rank_encode(const scfm_rank_params *p, const int32_t *tokens, const float *counts, int n,
                     double total, scfm_cell_entry *scratch, int32_t *out) {
    /* scratch (48n bytes) is raw storage here: n keys, 2n words, n tokens,
     * 5n 32-bit words for the sort. */
    uint64_t *key = (uint64_t *)scratch, *word = key + n, *sorted = word + n;
    int32_t *token = (int32_t *)(sorted + n);
    const double target_sum = p->target_sum;
    /* Every entry first, four at a time in vectors (the compiler does not
     * vectorise the medians' gather by itself, and the two divisions are
     * most of the loop; each lane rounds as the scalar expression does); the
     * entries without a count (rare: the tokenizer passes none) are dropped
     * afterwards. Their tokens need not have a median: they read the first
     * gene's. */
    int m = 0, k = 0;
    const value4 total4 = {total, total, total, total}, target4 = {target_sum, target_sum, target_sum, target_sum};
    for (; k + 4 <= n; k += 4) {
        int at[4];
        for (int j = 0; j < 4; j++) {
            const int has_count = counts[k + j] > 0.0f;
            at[j] = has_count ? tokens[k + j] - p->first_gene : 0;
            token[k + j] = tokens[k + j];
            m += has_count;
        }
        const value4 c = {counts[k], counts[k + 1], counts[k + 2], counts[k + 3]};
        const value4 med = {p->medians[at[0]], p->medians[at[1]], p->medians[at[2]], p->medians[at[3]]};
        const value4 v = c / total4 * target4 / med;
        key4 bits;
        memcpy(&bits, &v, sizeof bits);
        bits = ~bits;
        memcpy(key + k, &bits, sizeof bits);
    }
    for (; k < n; k++) {
        const int has_count = counts[k] > 0.0f;
        const double median = p->medians[has_count ? tokens[k] - p->first_gene : 0];
        key[k] = descending((double)counts[k] / total * target_sum / median);
        token[k] = tokens[k];
        m += has_count;
    }
    if (m < n) {
        m = 0;
        for (int k = 0; k < n; k++)
            if (counts[k] > 0.0f) {
                key[m] = key[k];
                token[m++] = token[k];
            }
    }
    if (m == 0) return 0;
    /* Keys less the smallest: only the bits of their range remain. */
    uint64_t least = key[0], most = key[0];
    for (int k = 1; k < m; k++) {
        least = key[k] < least ? key[k] : least;
        most = key[k] > most ? key[k] : most;
    }
    const int varying = most > least ? 64 - __builtin_clzll(most - least) : 0;
    const int index_bits = m > 1 ? 32 - __builtin_clz((unsigned)(m - 1)) : 0;
    const int key_bits = varying < 64 - index_bits ? varying : 64 - index_bits, cut = varying - key_bits;
    for (int k = 0; k < m; k++) word[k] = ((key[k] - least) >> cut) << index_bits | (uint64_t)k;
    const int keep = p->max_length - (p->cls >= 0) - (p->eos >= 0);
    rank_sort(word, sorted, m, keep, key_bits + index_bits, (uint32_t *)(token + n));
    rank_fix_runs(sorted, m, keep, index_bits, key, token);
    const uint64_t index_mask = ((uint64_t)1 << index_bits) - 1;
    int len = 0;
    if (p->cls >= 0) out[len++] = p->cls;
    for (int k = 0; k < m && k < keep; k++) out[len++] = token[sorted[k] & index_mask];
    if (p->eos >= 0) out[len++] = p->eos;
    return len;
}

/* numpy.quantile(x, q) (method "linear") of the n ascending values x[i].value,
 * with numpy's operations in numpy's order. Contraction into fused
 * multiply-adds is off: it would round differently from numpy, and an edge
 * that should equal a value would miss it. */
__attribute__((optimize("fp-contract=off")))
static double quantile(const scfm_cell_entry *x, int n, double q) {
    double v = (double)(n - 1) * q;
    if (v >= (double)(n - 1)) return x[n - 1].value;
    double below = floor(v), t = v - below;
    double a = x[(int)below].value, b = x[(int)below + 1].value, d = b - a;
    return t >= 0.5 ? b - d * (1.0 - t) : a + d * t;
}

static void draw(uint64_t seed, int64_t cell_id, int32_t token, uint32_t r[4]) {
    uint32_t counter[4] = {(uint32_t)cell_id, (uint32_t)((uint64_t)cell_id >> 32), (uint32_t)token, STREAM_TOKENIZE};
    scfm_philox(seed, counter, r);
}

int scfm_bin_encode(const scfm_bin_params *p, int64_t cell_id, const int32_t *tokens, const float *counts,
                    int n, double total, scfm_cell_entry *scratch, int32_t *out_tokens, uint8_t *out_values) {
    int nonzero = 0;
    for (int k = 0; k < n; k++) {
        double c = counts[k] > 0.0f ? (double)counts[k] : 0.0;
        scratch[k].token = tokens[k];
        scratch[k].value = c > 0.0 && p->log1p ? log1p(c / total * p->target_sum) : c;
        scratch[k].key = ascending(scratch[k].value);
        nonzero += scratch[k].value > 0.0;
    }
    if (nonzero == 0) return 0;
    /* Edges: linspace(0, 1, B - 1) as numpy computes it (i * step, the last exactly 1). */
    sort_entries(scratch, scratch + n, n);
    const scfm_cell_entry *x = scratch + (n - nonzero);
    const int n_edges = p->n_bins - 1;
    const double step = n_edges > 1 ? 1.0 / (double)(n_edges - 1) : 0.0;
    double edges[MAX_BINS];
    for (int i = 0; i < n_edges; i++)
        edges[i] = quantile(x, nonzero, i == n_edges - 1 && n_edges > 1 ? 1.0 : (double)i * step);
    const int keep = p->max_length - (p->cls >= 0) - (p->eos >= 0);
    for (int k = 0; k < n; k++) {
        scfm_cell_entry *e = &scratch[k];
        uint32_t r[4] = {0, 0, 0, 0};
        if (n > keep) draw(p->seed, cell_id, e->token, r);
        e->key = ((uint64_t)r[1] << 32) | r[2]; /* the sampling key; 0 sorts by token alone */
        e->bin = 0;
        if (e->value == 0.0) continue;
        /* le: edges <= value (numpy's digitize), lt: edges < value */
        int le = 0, lt = 0;
        for (int lo = 0, hi = n_edges; lo < hi;) {
            int mid = (lo + hi) / 2;
            if (edges[mid] <= e->value) lo = le = mid + 1;
            else hi = mid;
        }
        for (int lo = 0, hi = n_edges; lo < hi;) {
            int mid = (lo + hi) / 2;
            if (edges[mid] < e->value) lo = lt = mid + 1;
            else hi = mid;
        }
        e->bin = le;
        if (le - lt >= 2) {
            if (n <= keep) draw(p->seed, cell_id, e->token, r);
            e->bin = lt + 1 + (int)(r[0] % (uint32_t)(le - lt));
        }
    }
    int m = n;
    if (n > keep) {
        sort_entries(scratch, scratch + n, n);
        m = keep;
        for (int k = 0; k < m; k++) scratch[k].key = 0;
    }
    sort_entries(scratch, scratch + n, m);
    int len = 0;
    if (p->cls >= 0) {
        out_tokens[len] = p->cls;
        out_values[len++] = 0;
    }
    for (int k = 0; k < m; k++) {
        out_tokens[len] = scratch[k].token;
        out_values[len++] = (uint8_t)scratch[k].bin;
    }
    if (p->eos >= 0) {
        out_tokens[len] = p->eos;
        out_values[len++] = 0;
    }
    return len;
}

/* ---- the driver ---- */

/* A categorical obs column across the inputs: the union of the inputs'
 * categories in order of first appearance, and each input's codes mapped
 * into it. */
typedef struct {
    char *name;
    int present;            /* inputs that have it so far */
    int n_categories;
    char **categories;
    int *sorted;            /* categories' indices in strcmp order, to find one */
    int32_t **map;          /* [input][local code] -> global code; NULL where absent */
    int *map_len;           /* [input] */
} obs_column;

/* One thread's buffers for the cell it encodes. */
typedef struct {
    int32_t *row_tokens;
    float *row_counts;
    scfm_cell_entry *entries;         /* twice cap: the encoders' scratch */
    float *dense;                     /* include_zeros: [vocab size] one cell's counts, zeros between cells */
    int64_t cap;
} cell_scratch;

/* What encoding one cell of a read leaves for adding it to the share. */
enum { CELL_FAILED, CELL_NOMEM, CELL_EMPTY, CELL_EMPTY_IN_VOCAB, CELL_ENCODED };
typedef struct {
    double total, outside;            /* its total; the sum of its counts outside the vocabulary */
    int64_t at;                       /* where in the share its tokens were written */
    int32_t len;
    uint8_t state, integers, has_outside, cut, zero_in_set;
} cell_result;

typedef struct {
    const scfm_vocab *vocab;
    const scfm_tokenize_options *opt;
    scfm_comm *comm;
    int rank, size;
    int n_inputs;
    scfm_corpus corpus;
    int n_obs;
    obs_column *obs;
    int obs_explicit;                 /* columns named by opt->obs */
    scfm_tokenize_input_report *inputs;
    double *counts_in;                /* [2 * n_inputs]: counts outside the vocabulary, all counts */
    uint8_t *in_set;                  /* [vocab size] the hvg set; NULL: every gene */
    int32_t *set_tokens;              /* include_zeros and counts mode: the set in token order */
    int n_set;
    int32_t *column;                  /* counts mode: [vocab size] a token's column in set_tokens, -1 outside */
    int32_t *gene_token;              /* the open input's columns: token, -1 outside, -2 ambiguous */
    scfm_cells_chunk chunk;
    /* the cells of one read */
    cell_scratch *scratch;            /* [n_scratch] one per thread */
    int n_scratch;
    cell_result *results;             /* [ROUND_CELLS] */
    /* this rank's share of a round */
    int64_t n_cells, n_tokens, cells_cap, tokens_cap;
    int64_t *offsets, *cell_ids;
    int32_t *tokens, **codes, *local_codes;
    scfm_cells_chunk next_chunk;      /* the read after t->chunk's, read while that one is encoded */
    int32_t *next_codes;              /* its obs codes, as local_codes */
    uint8_t *values;
    float *counts, *library;          /* counts mode */
    /* totals of this rank */
    int64_t cells_written, tokens_written, cells_empty, cells_empty_in_vocab, cells_cut, cells_zero_in_set, skipped;
} tokenizer;

static int resize(void *pp, size_t bytes) {
    void **p = pp, *q = realloc(*p, bytes ? bytes : 1);
    if (!q) return 0;
    *p = q;
    return 1;
}

static int64_t next_cap(int64_t cap, int64_t need) {
    cap = cap < 1024 ? 1024 : cap;
    while (cap < need) cap *= 2;
    return cap;
}

static int find_category(const obs_column *c, const char *name, int *where) {
    int lo = 0, hi = c->n_categories;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        int cmp = strcmp(c->categories[c->sorted[mid]], name);
        if (cmp == 0) return c->sorted[mid];
        if (cmp < 0) lo = mid + 1;
        else hi = mid;
    }
    *where = lo;
    return -1;
}

static obs_column *find_column(tokenizer *t, const char *name) {
    for (int i = 0; i < t->n_obs; i++)
        if (!strcmp(t->obs[i].name, name)) return &t->obs[i];
    return NULL;
}

static scfm_status add_column(tokenizer *t, const char *name, scfm_error *err) {
    obs_column *grown = realloc(t->obs, sizeof(obs_column) * (size_t)(t->n_obs + 1));
    if (!grown) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    t->obs = grown;
    obs_column *c = &t->obs[t->n_obs];
    memset(c, 0, sizeof *c);
    c->name = strdup(name);
    c->map = calloc((size_t)t->n_inputs, sizeof(int32_t *));
    c->map_len = calloc((size_t)t->n_inputs, sizeof(int));
    t->n_obs++;
    if (!c->name || !c->map || !c->map_len) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    return SCFM_OK;
}

/* Input k's categories of column c, merged into the union. */
static scfm_status merge_categories(obs_column *c, int k, scfm_matrix *m, scfm_error *err) {
    int n = 0;
    const char *const *cats = NULL;
    scfm_status st = scfm_matrix_obs_categories(m, c->name, &n, &cats, err);
    if (st != SCFM_OK) return st;
    c->present++;
    c->map[k] = malloc(sizeof(int32_t) * (size_t)(n + 1));
    char **names = realloc(c->categories, sizeof(char *) * (size_t)(c->n_categories + n + 1));
    if (names) c->categories = names;
    int *sorted = realloc(c->sorted, sizeof(int) * (size_t)(c->n_categories + n + 1));
    if (sorted) c->sorted = sorted;
    if (!c->map[k] || !names || !sorted) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    c->map_len[k] = n;
    for (int i = 0; i < n; i++) {
        int where = 0, code = find_category(c, cats[i], &where);
        if (code < 0) {
            code = c->n_categories;
            if (!(c->categories[code] = strdup(cats[i]))) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
            memmove(c->sorted + where + 1, c->sorted + where, sizeof(int) * (size_t)(code - where));
            c->sorted[where] = code;
            c->n_categories++;
        }
        c->map[k][i] = code;
    }
    return SCFM_OK;
}

/* Sees each input once: its genes against the vocabulary, its obs columns. */
static scfm_status scan_input(void *user, int k, scfm_matrix *m, scfm_error *err) {
    tokenizer *t = user;
    const int64_t n_genes = scfm_matrix_num_genes(m);
    int32_t *gene_token = malloc(sizeof(int32_t) * (size_t)(n_genes + 1));
    if (!gene_token) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    scfm_status st = scfm_vocab_map_genes(t->vocab, m, t->opt->match_symbol, gene_token, err);
    scfm_tokenize_input_report *r = &t->inputs[k];
    r->cells = scfm_matrix_num_cells(m);
    r->genes = n_genes;
    for (int64_t j = 0; j < n_genes; j++) {
        r->genes_outside += gene_token[j] == -1;
        r->genes_ambiguous += gene_token[j] == -2;
    }
    free(gene_token);
    if (st == SCFM_OK && r->genes_outside + r->genes_ambiguous == n_genes)
        st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: none of its %lld genes is in the vocabulary (matching by %s)",
                       scfm_matrix_path(m), (long long)n_genes, t->opt->match_symbol ? "symbol" : "gene id");
    /* Default columns: those of the first input that every later one has. */
    if (st == SCFM_OK && k == 0 && !t->obs_explicit)
        for (int i = 0; i < scfm_matrix_num_obs_columns(m) && st == SCFM_OK; i++)
            st = add_column(t, scfm_matrix_obs_column(m, i), err);
    for (int i = 0; i < t->n_obs && st == SCFM_OK; i++) {
        int found = 0;
        for (int j = 0; j < scfm_matrix_num_obs_columns(m) && !found; j++)
            found = !strcmp(scfm_matrix_obs_column(m, j), t->obs[i].name);
        if (found) st = merge_categories(&t->obs[i], k, m, err);
        else if (t->obs_explicit)
            st = scfm_fail(err, SCFM_ERR_ARG, "%s: has no categorical obs column '%s'", scfm_matrix_path(m),
                           t->obs[i].name);
    }
    return st;
}

static void free_column(obs_column *c, int n_inputs) {
    for (int i = 0; i < c->n_categories; i++) free(c->categories[i]);
    for (int k = 0; c->map && k < n_inputs; k++) free(c->map[k]);
    free(c->categories);
    free(c->sorted);
    free(c->map);
    free(c->map_len);
    free(c->name);
}

/* Keeps the columns every input has. */
static void drop_partial_columns(tokenizer *t) {
    int kept = 0;
    for (int i = 0; i < t->n_obs; i++) {
        if (t->obs[i].present == t->n_inputs) t->obs[kept++] = t->obs[i];
        else free_column(&t->obs[i], t->n_inputs);
    }
    t->n_obs = kept;
}

/* Opens the input that holds global cell `cell` and maps its genes. */
static scfm_status select_input(tokenizer *t, int64_t cell, int *k, scfm_error *err) {
    int opened = 0;
    *k = scfm_corpus_input(&t->corpus, cell);
    scfm_status st = scfm_corpus_select(&t->corpus, *k, &opened, err);
    if (st != SCFM_OK || !opened) return st;
    free(t->gene_token);
    t->gene_token = malloc(sizeof(int32_t) * (size_t)(scfm_matrix_num_genes(t->corpus.m) + 1));
    if (!t->gene_token) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    return scfm_vocab_map_genes(t->vocab, t->corpus.m, t->opt->match_symbol, t->gene_token, err);
}

/* ---- highly variable genes (scanpy's flavor "seurat") ----
 * Means and variances of the normalised counts x = count / total x 10^4 over
 * the cells with counts. The sums are exact (x and x^2 in fixed point with
 * 32 fractional bits, summed as 128-bit integers), so the set does not depend
 * on how the cells are spread over the ranks. */

typedef __int128 wide;
#define FIXED_ONE 4294967296.0 /* 2^32 */
#define LIMB_BITS 40

static wide to_fixed(double v) { return (wide)floor(v * FIXED_ONE + 0.5); }

static int compare_desc(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

/* Sums 128-bit integers over the ranks in three 40-bit limbs (no carry is
 * lost for fewer than 2^23 ranks). */
static scfm_status sum_wide(scfm_comm *comm, wide *v, int64_t n, scfm_error *err) {
    int64_t *limbs = malloc(sizeof(int64_t) * 3 * (size_t)n);
    if (!limbs) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    const wide mask = ((wide)1 << LIMB_BITS) - 1;
    for (int64_t i = 0; i < n; i++)
        for (int l = 0; l < 3; l++) limbs[3 * i + l] = (int64_t)((v[i] >> (LIMB_BITS * l)) & mask);
    scfm_status st = scfm_comm_sum_i64(comm, limbs, 3 * (size_t)n, err);
    for (int64_t i = 0; i < n && st == SCFM_OK; i++)
        v[i] = (wide)limbs[3 * i] + ((wide)limbs[3 * i + 1] << LIMB_BITS) + ((wide)limbs[3 * i + 2] << (2 * LIMB_BITS));
    free(limbs);
    return st;
}

/* pandas.cut(x, n) edges for values in [lo, hi]: numpy.linspace(lo, hi,
 * n + 1) as numpy computes it, the first edge lowered by 0.1% of the range
 * (a single value widens the range by 0.1% each way instead). */
__attribute__((optimize("fp-contract=off")))
static void cut_edges(double lo, double hi, int n, double *edges) {
    const int widen = lo == hi;
    if (widen) {
        lo -= lo != 0.0 ? 0.001 * fabs(lo) : 0.001;
        hi += hi != 0.0 ? 0.001 * fabs(hi) : 0.001;
    }
    const double step = (hi - lo) / n;
    for (int i = 0; i < n; i++) edges[i] = (double)i * step + lo;
    edges[n] = hi;
    if (!widen) edges[0] -= (hi - lo) * 0.001;
}

/* scanpy's selection from the exact sums: dispersion var / mean of each
 * gene, its log normalised within 20 bins of log1p(mean) (a bin's mean and
 * standard deviation; a bin of one gene gives 1), then the genes whose
 * normalised dispersion reaches the hvg-th highest. */
__attribute__((optimize("fp-contract=off")))
static scfm_status choose_hvg(tokenizer *t, const wide *sums, int64_t n_cells, scfm_error *err) {
    const int64_t first = t->vocab->n_special, n_genes = t->vocab->n_genes;
    double *mean = malloc(sizeof(double) * (size_t)n_genes), *disp = malloc(sizeof(double) * (size_t)n_genes);
    int *bin = malloc(sizeof(int) * (size_t)n_genes);
    double *norm = malloc(sizeof(double) * (size_t)n_genes);
    if (!mean || !disp || !bin || !norm) {
        free(mean), free(disp), free(bin), free(norm);
        return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    }
    const double n = (double)n_cells;
    double lo = INFINITY, hi = -INFINITY;
    for (int64_t g = 0; g < n_genes; g++) {
        double m = (double)sums[2 * (first + g)] / FIXED_ONE / n;
        double var = (double)sums[2 * (first + g) + 1] / FIXED_ONE / n - m * m;
        if (n_cells > 1) var *= n / (n - 1.0);
        if (m == 0.0) m = 1e-12;
        disp[g] = var / m;
        disp[g] = disp[g] == 0.0 ? NAN : log(disp[g]);
        mean[g] = log1p(m);
        lo = fmin(lo, mean[g]);
        hi = fmax(hi, mean[g]);
    }
    double edges[HVG_MEAN_BINS + 1], avg[HVG_MEAN_BINS], dev[HVG_MEAN_BINS];
    int count[HVG_MEAN_BINS] = {0};
    cut_edges(lo, hi, HVG_MEAN_BINS, edges);
    for (int b = 0; b < HVG_MEAN_BINS; b++) avg[b] = dev[b] = 0.0;
    for (int64_t g = 0; g < n_genes; g++) {
        int b = 0; /* (edges below the mean) - 1, pandas' right-closed bins */
        while (b + 1 < HVG_MEAN_BINS && edges[b + 1] < mean[g]) b++;
        bin[g] = b;
        if (isnan(disp[g])) continue;
        count[b]++;
        avg[b] += disp[g];
    }
    for (int b = 0; b < HVG_MEAN_BINS; b++) avg[b] = count[b] ? avg[b] / count[b] : NAN;
    for (int64_t g = 0; g < n_genes; g++)
        if (!isnan(disp[g])) dev[bin[g]] += (disp[g] - avg[bin[g]]) * (disp[g] - avg[bin[g]]);
    for (int b = 0; b < HVG_MEAN_BINS; b++) {
        dev[b] = count[b] > 1 ? sqrt(dev[b] / (count[b] - 1)) : NAN;
        if (isnan(dev[b])) {
            dev[b] = avg[b];
            avg[b] = 0.0;
        }
    }
    int64_t n_norm = 0;
    for (int64_t g = 0; g < n_genes; g++) {
        double z = (disp[g] - avg[bin[g]]) / dev[bin[g]];
        if (!isnan(z)) norm[n_norm++] = z;
        mean[g] = z; /* reused: the gene's normalised dispersion */
    }
    scfm_status st = SCFM_OK;
    if (n_norm == 0) {
        st = scfm_fail(err, SCFM_ERR_ARG, "hvg: no gene of the vocabulary varies across the %lld cells",
                       (long long)n_cells);
    } else {
        qsort(norm, (size_t)n_norm, sizeof(double), compare_desc);
        double cut = norm[(t->opt->hvg < n_norm ? t->opt->hvg : n_norm) - 1];
        for (int64_t g = 0; g < n_genes; g++) {
            t->in_set[first + g] = !isnan(mean[g]) && mean[g] >= cut;
            t->n_set += t->in_set[first + g];
        }
    }
    free(mean);
    free(disp);
    free(bin);
    free(norm);
    return st;
}

/* The statistics pass over this rank's even share of all cells, then the
 * gene set on every rank. */
static scfm_status select_hvg(tokenizer *t, scfm_error *err) {
    const int64_t vocab_size = scfm_vocab_size(t->vocab), all = t->corpus.first[t->n_inputs];
    const int64_t lo = all * t->rank / t->size, hi = all * (t->rank + 1) / t->size;
    wide *sums = calloc(2 * (size_t)vocab_size, sizeof(wide));
    t->in_set = calloc((size_t)vocab_size, 1);
    int64_t n_cells = 0;
    scfm_status st = sums && t->in_set ? SCFM_OK : scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    for (int64_t cell = lo; cell < hi && st == SCFM_OK;) {
        int k = 0;
        if ((st = select_input(t, cell, &k, err)) != SCFM_OK) break;
        int64_t n = (hi < t->corpus.first[k + 1] ? hi : t->corpus.first[k + 1]) - cell;
        if (n > STATS_READ_CELLS) n = STATS_READ_CELLS;
        if ((st = scfm_matrix_read(t->corpus.m, cell - t->corpus.first[k], n, &t->chunk, err)) != SCFM_OK) break;
        for (int64_t i = 0; i < n && st == SCFM_OK; i++) {
            double total = 0.0;
            if ((st = scfm_corpus_cell_total(&t->corpus, k, &t->chunk, i, &total, err)) != SCFM_OK || total <= 0.0)
                continue;
            n_cells++;
            for (int64_t e = t->chunk.indptr[i]; e < t->chunk.indptr[i + 1]; e++) {
                int32_t token = t->gene_token[t->chunk.genes[e]];
                if (token < 0) continue;
                double x = (double)t->chunk.values[e] / total * SCFM_VOCAB_TARGET_SUM;
                sums[2 * token] += to_fixed(x);
                sums[2 * token + 1] += to_fixed(x * x);
            }
        }
        cell += n;
    }
    st = scfm_comm_agree(t->comm, st, err);
    if (st == SCFM_OK) st = sum_wide(t->comm, sums, 2 * vocab_size, err);
    if (st == SCFM_OK) st = scfm_comm_sum_i64(t->comm, &n_cells, 1, err);
    if (st == SCFM_OK) st = choose_hvg(t, sums, n_cells, err);
    free(sums);
    return st;
}

/* The gene set in token order (the hvg set, or every vocabulary gene), for
 * the modes that list it: include_zeros writes every gene of it, counts mode
 * numbers its columns. */
static scfm_status list_set(tokenizer *t, scfm_error *err) {
    const int64_t vocab_size = scfm_vocab_size(t->vocab);
    const int counts = t->opt->mode == SCFM_TOKENIZE_COUNTS;
    if (!counts && !t->opt->include_zeros) return SCFM_OK;
    t->set_tokens = malloc(sizeof(int32_t) * (size_t)vocab_size);
    if (counts) t->column = malloc(sizeof(int32_t) * (size_t)vocab_size);
    if (!t->set_tokens || (counts && !t->column))
        return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    t->n_set = 0;
    for (int64_t token = 0; token < vocab_size; token++) {
        const int in = token >= t->vocab->n_special && (!t->in_set || t->in_set[token]);
        if (counts) t->column[token] = in ? t->n_set : -1;
        if (in) t->set_tokens[t->n_set++] = (int32_t)token;
    }
    return SCFM_OK;
}

/* ---- encoding a round ---- */

/* Room for `cells` cells and `tokens` tokens in this rank's share. */
static int grow_round(tokenizer *t, int64_t cells, int64_t tokens) {
    if (cells + 1 > t->cells_cap) {
        int64_t cap = next_cap(t->cells_cap, cells + 1);
        int ok =
            resize(&t->offsets, sizeof(int64_t) * (size_t)cap) && resize(&t->cell_ids, sizeof(int64_t) * (size_t)cap);
        for (int c = 0; ok && c < t->n_obs; c++) ok = resize(&t->codes[c], sizeof(int32_t) * (size_t)cap);
        if (ok && t->column) ok = resize(&t->library, sizeof(float) * (size_t)cap);
        if (!ok) return 0;
        t->cells_cap = cap;
    }
    if (tokens > t->tokens_cap) {
        int64_t cap = next_cap(t->tokens_cap, tokens);
        if (!resize(&t->tokens, sizeof(int32_t) * (size_t)cap) || !resize(&t->values, (size_t)cap)) return 0;
        if (t->column && !resize(&t->counts, sizeof(float) * (size_t)cap)) return 0;
        t->tokens_cap = cap;
    }
    return 1;
}

/* Room for one cell of n entries in one thread's scratch. */
static int grow_scratch(cell_scratch *s, int64_t n) {
    if (n <= s->cap) return 1;
    int64_t cap = next_cap(s->cap, n);
    if (!resize(&s->row_tokens, sizeof(int32_t) * (size_t)cap) ||
        !resize(&s->row_counts, sizeof(float) * (size_t)cap) ||
        !resize(&s->entries, 2 * sizeof(scfm_cell_entry) * (size_t)cap))
        return 0;
    s->cap = cap;
    return 1;
}

/* Cell i's total, the double that scfm_corpus_cell_total sums in entry
 * order (and its error), found faster for the usual cell of integer counts
 * below 2^31 and fewer than 2^22 entries: every partial sum is then an
 * integer below 2^53, exact in double whatever the order, so an integer sum
 * that the compiler vectorises gives the same total (it vectorises the
 * comparisons only when told that no one reads floating-point exception
 * flags, true here). *integers says whether the cell is such a cell. */
__attribute__((optimize("no-trapping-math")))
static scfm_status cell_total(const tokenizer *t, int k, int64_t i, double *total, int *integers, scfm_error *err) {
    const scfm_cells_chunk *ch = &t->chunk;
    const float *v = ch->values + ch->indptr[i];
    const int64_t n = ch->indptr[i + 1] - ch->indptr[i];
    int whole = n < ((int64_t)1 << 22);
    for (int64_t e = 0; e < n; e++) whole &= (v[e] >= 0.0f) & (v[e] < 2147483648.0f) & (v[e] == truncf(v[e]));
    *integers = whole;
    if (!whole) return scfm_corpus_cell_total(&t->corpus, k, ch, i, total, err);
    int64_t sum = 0;
    for (int64_t e = 0; e < n; e++) sum += (int32_t)v[e];
    *total = (double)sum;
    return SCFM_OK;
}

/* Ends the cell being added (global id `cell`, row i of input k's chunk)
 * with its `len` tokens, and records its id and obs codes. */
static void close_cell(tokenizer *t, int k, int64_t cell, int64_t i, int len) {
    t->cell_ids[t->n_cells] = cell;
    for (int c = 0; c < t->n_obs; c++) {
        const obs_column *col = &t->obs[c];
        int32_t code = t->local_codes[(int64_t)c * ROUND_CELLS + i];
        t->codes[c][t->n_cells] = code >= 0 && code < col->map_len[k] ? col->map[k][code] : -1;
    }
    t->n_tokens += len;
    t->offsets[++t->n_cells] = t->n_tokens;
}

/* Counts mode: the cell's n genes of the set (vocabulary tokens, any order)
 * as columns in ascending order with their raw counts, from r->at. A cell
 * with a library but no count in the set is kept, all zeros: a count model
 * explains its zeros too. */
static void add_counts(const tokenizer *t, cell_scratch *s, const float *counts, int n, cell_result *r) {
    scfm_cell_entry *e = s->entries;
    int m = 0;
    for (int j = 0; j < n; j++) {
        if (!(counts[j] > 0.0f)) continue; /* a stored zero */
        e[m].token = t->column[s->row_tokens[j]];
        e[m].value = counts[j];
        e[m++].key = 0;
    }
    sort_entries(e, e + m, m);
    for (int j = 0; j < m; j++) {
        t->tokens[r->at + j] = e[j].token;
        t->counts[r->at + j] = (float)e[j].value;
    }
    r->zero_in_set = m == 0;
    r->len = m;
}

/* Encodes cell i of the chunk (global id `cell`, from input k) with one
 * thread's scratch into the share's tokens (and values or counts) from
 * r->at, and says in r what else it would add to the share. Touches nothing
 * else of t, so the cells of a read are encoded in parallel. */
static void encode_cell(const tokenizer *t, cell_scratch *s, int k, int64_t cell, int64_t i, cell_result *r) {
    const scfm_tokenize_options *o = t->opt;
    const scfm_vocab *v = t->vocab;
    const scfm_cells_chunk *ch = &t->chunk;
    double total = 0.0;
    int integers = 0;
    r->len = 0;
    r->outside = 0.0;
    r->has_outside = r->cut = r->zero_in_set = 0;
    r->state = CELL_FAILED;
    if (cell_total(t, k, i, &total, &integers, NULL) != SCFM_OK) return;
    r->total = total;
    r->integers = (uint8_t)integers;
    r->state = CELL_EMPTY;
    if (total <= 0.0) return;
    const int64_t nnz = ch->indptr[i + 1] - ch->indptr[i];
    r->state = CELL_NOMEM;
    if (!grow_scratch(s, nnz > t->n_set ? nnz : t->n_set)) return;
    const int32_t *genes = ch->genes + ch->indptr[i];
    const float *counts = ch->values + ch->indptr[i];
    int n = (int)nnz, outside = 0;
    /* The usual cell, every gene in the vocabulary and no gene set: its
     * tokens in one gather loop, its counts read where they are. */
    for (int e = 0; !t->in_set && e < n; e++) {
        s->row_tokens[e] = t->gene_token[genes[e]];
        outside |= s->row_tokens[e] < 0;
    }
    if (t->in_set || outside) {
        n = 0;
        for (int e = 0; e < (int)nnz; e++) {
            int32_t token = t->gene_token[genes[e]];
            if (token < 0) {
                r->outside += counts[e];
                r->has_outside = 1;
                continue;
            }
            if (t->in_set && !t->in_set[token]) continue;
            s->row_tokens[n] = token;
            s->row_counts[n++] = counts[e];
        }
        counts = s->row_counts;
    }
    const int nonzero = n;
    r->state = CELL_ENCODED;
    if (t->column) {
        add_counts(t, s, counts, n, r);
        return;
    }
    if (o->include_zeros && n > 0) {
        /* every gene of the set, in token order, zeros included */
        for (int j = 0; j < n; j++) s->dense[s->row_tokens[j]] = s->row_counts[j];
        for (n = 0; n < t->n_set; n++) {
            s->row_tokens[n] = t->set_tokens[n];
            s->row_counts[n] = s->dense[t->set_tokens[n]];
            s->dense[t->set_tokens[n]] = 0.0f;
        }
    }
    if (nonzero == 0) {
        r->state = CELL_EMPTY_IN_VOCAB;
        return;
    }
    const int specials = (v->cls >= 0) + (v->eos >= 0);
    if (o->mode == SCFM_TOKENIZE_RANK) {
        scfm_rank_params p = {v->medians, (int32_t)v->n_special, v->target_sum, o->max_length, v->cls, v->eos};
        r->len = scfm_rank_encode(&p, s->row_tokens, counts, n, total, s->entries, t->tokens + r->at);
    } else {
        scfm_bin_params p = {o->n_bins, o->log1p, v->target_sum, o->max_length, v->cls, v->eos, o->seed};
        r->len = scfm_bin_encode(&p, cell, s->row_tokens, counts, n, total, s->entries, t->tokens + r->at,
                                 t->values + r->at);
    }
    r->cut = n > o->max_length - specials;
}

/* Adds cell i's counts outside the vocabulary to input k's, as adding them
 * one by one does: the cell's own sum when that is the same double (integer
 * counts, and an integer sum that stays below 2^53: every partial sum is
 * exact), else one by one again. */
static void add_outside(tokenizer *t, int k, int64_t i, const cell_result *r) {
    double *sum = &t->counts_in[2 * k];
    if (r->integers && *sum == floor(*sum) && *sum + r->outside < 9007199254740992.0) {
        *sum += r->outside;
        return;
    }
    const scfm_cells_chunk *ch = &t->chunk;
    for (int64_t e = ch->indptr[i]; e < ch->indptr[i + 1]; e++)
        if (t->gene_token[ch->genes[e]] < 0) *sum += ch->values[e];
}

/* Cells [first, first + n) of the open input into chunk, and their obs codes. */
static scfm_status read_cells(tokenizer *t, int64_t first, int64_t n, scfm_cells_chunk *chunk, int32_t *codes,
                              scfm_error *err) {
    scfm_status st = scfm_matrix_read(t->corpus.m, first, n, chunk, err);
    for (int c = 0; c < t->n_obs && st == SCFM_OK; c++)
        st = scfm_matrix_obs_codes(t->corpus.m, t->obs[c].name, first, n, codes + (int64_t)c * ROUND_CELLS, err);
    return st;
}

/* The cells of a read from global cell `cell` of input k, in a round that
 * ends before hi. */
static int64_t read_size(const tokenizer *t, int k, int64_t cell, int64_t hi) {
    int64_t n = (hi < t->corpus.first[k + 1] ? hi : t->corpus.first[k + 1]) - cell;
    if (t->corpus.m->small_reads && n > SMALL_READ_CELLS) n = SMALL_READ_CELLS;
    return n;
}

/* The n cells of the chunk from global id `cell` (input k): each given room
 * for as many tokens as it can have, encoded in parallel, then added to the
 * share in cell order, where the counters and the first failing cell come
 * out as encoding them one after the other gives them. Tokens move down
 * only where a cell had fewer than its room (genes outside the vocabulary
 * or the set, stored zeros). Meanwhile the main thread (the only one that
 * calls HDF5 and MPI) reads the n_next cells of the input from next_first
 * into the next chunk; its status and error are *next_st and *next_err. */
static scfm_status encode_read(tokenizer *t, int k, int64_t cell, int64_t n, int64_t next_first, int64_t n_next,
                               scfm_status *next_st, scfm_error *next_err, scfm_error *err) {
    const scfm_tokenize_options *o = t->opt;
    const scfm_cells_chunk *ch = &t->chunk;
    const int specials = (t->vocab->cls >= 0) + (t->vocab->eos >= 0);
    int64_t at = t->n_tokens;
    for (int64_t i = 0; i < n; i++) {
        const int64_t rows = o->include_zeros ? t->n_set : ch->indptr[i + 1] - ch->indptr[i];
        t->results[i].at = at;
        if (t->column) at += rows < t->n_set ? rows : t->n_set;
        else at += rows + specials < o->max_length ? rows + specials : o->max_length;
    }
    if (!grow_round(t, t->n_cells + n, at)) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
#pragma omp parallel num_threads(t->n_scratch) if (t->n_scratch > 1 && n > 1)
    {
        if (n_next > 0 && omp_get_thread_num() == 0)
            *next_st = read_cells(t, next_first, n_next, &t->next_chunk, t->next_codes, next_err);
        cell_scratch *s = &t->scratch[omp_get_thread_num()];
#pragma omp for schedule(dynamic, 4) nowait
        for (int64_t i = 0; i < n; i++) encode_cell(t, s, k, cell + i, i, &t->results[i]);
    }
    for (int64_t i = 0; i < n; i++) {
        const cell_result *r = &t->results[i];
        if (r->state == CELL_FAILED) {
            /* it fails again, the same way, now with its message */
            double total = 0.0;
            int integers = 0;
            return cell_total(t, k, i, &total, &integers, err);
        }
        if (r->state == CELL_NOMEM) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
        /* All counts, summed per cell: the same sum as entry by entry for
         * integer counts, and only a reported share otherwise. */
        t->counts_in[2 * k + 1] += r->total;
        if (r->state == CELL_EMPTY) {
            t->cells_empty++;
            t->skipped++;
            continue;
        }
        if (r->has_outside) add_outside(t, k, i, r);
        if (r->state == CELL_EMPTY_IN_VOCAB) {
            t->cells_empty_in_vocab++;
            t->skipped++;
            continue;
        }
        t->cells_cut += r->cut;
        t->cells_zero_in_set += r->zero_in_set;
        if (r->at != t->n_tokens) {
            memmove(t->tokens + t->n_tokens, t->tokens + r->at, sizeof(int32_t) * (size_t)r->len);
            if (o->mode == SCFM_TOKENIZE_BIN) memmove(t->values + t->n_tokens, t->values + r->at, (size_t)r->len);
            if (t->column) memmove(t->counts + t->n_tokens, t->counts + r->at, sizeof(float) * (size_t)r->len);
        }
        if (t->column) t->library[t->n_cells] = (float)r->total;
        close_cell(t, k, cell + i, i, r->len);
    }
    return SCFM_OK;
}

/* Global cells [lo, hi) (at most ROUND_CELLS) into this rank's share. */
static scfm_status encode_range(tokenizer *t, int64_t lo, int64_t hi, scfm_error *err) {
    t->n_cells = t->n_tokens = 0;
    if (!grow_round(t, 1, 1)) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    t->offsets[0] = 0;
    scfm_status st = SCFM_OK;
    int64_t ready = -1; /* the first cell of what t->chunk holds, when read ahead */
    for (int64_t cell = lo; cell < hi && st == SCFM_OK;) {
        int k = 0;
        if ((st = select_input(t, cell, &k, err)) != SCFM_OK) break;
        const int64_t n = read_size(t, k, cell, hi), next = cell + n;
        if (ready != cell) st = read_cells(t, cell - t->corpus.first[k], n, &t->chunk, t->local_codes, err);
        /* With threads, the next read of the same input comes in while this
         * one is encoded. */
        const int64_t n_next =
            t->n_scratch > 1 && next < hi && next < t->corpus.first[k + 1] ? read_size(t, k, next, hi) : 0;
        scfm_status next_st = SCFM_OK;
        scfm_error next_err = {0};
        if (st == SCFM_OK)
            st = encode_read(t, k, cell, n, next - t->corpus.first[k], n_next, &next_st, &next_err, err);
        if (st == SCFM_OK && next_st != SCFM_OK) {
            *err = next_err;
            st = next_st;
        }
        if (n_next > 0) {
            const scfm_cells_chunk chunk = t->chunk;
            int32_t *codes = t->local_codes;
            t->chunk = t->next_chunk;
            t->next_chunk = chunk;
            t->local_codes = t->next_codes;
            t->next_codes = codes;
            ready = next;
        }
        cell = next;
    }
    return st;
}

/* One scratch per thread that may encode: OpenMP's thread count, but,
 * unless OpenMP binds its threads itself (OMP_PROC_BIND, which also narrows
 * this thread's mask to its place), no more threads than the CPUs the
 * process may run on: mpirun binds a rank to one core by default, where a
 * second thread only slows the first. */
static scfm_status make_scratch(tokenizer *t, scfm_error *err) {
    t->n_scratch = omp_get_max_threads();
    cpu_set_t cpus;
    if (omp_get_proc_bind() == omp_proc_bind_false && sched_getaffinity(0, sizeof cpus, &cpus) == 0 &&
        CPU_COUNT(&cpus) < t->n_scratch)
        t->n_scratch = CPU_COUNT(&cpus) > 0 ? CPU_COUNT(&cpus) : 1;
    t->scratch = calloc((size_t)t->n_scratch, sizeof *t->scratch);
    t->results = malloc(sizeof *t->results * ROUND_CELLS);
    if (!t->scratch || !t->results) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    for (int j = 0; j < t->n_scratch && t->opt->include_zeros; j++)
        if (!(t->scratch[j].dense = calloc((size_t)scfm_vocab_size(t->vocab), sizeof(float))))
            return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    return SCFM_OK;
}

/* ---- the whole run ---- */

static void tokenizer_free(tokenizer *t) {
    scfm_corpus_close(&t->corpus);
    for (int c = 0; c < t->n_obs; c++) {
        free_column(&t->obs[c], t->n_inputs);
        if (t->codes) free(t->codes[c]);
    }
    free(t->obs);
    free(t->codes);
    free(t->local_codes);
    free(t->next_codes);
    free(t->counts_in);
    free(t->in_set);
    free(t->set_tokens);
    free(t->column);
    free(t->counts);
    free(t->library);
    free(t->gene_token);
    scfm_cells_chunk_free(&t->chunk);
    scfm_cells_chunk_free(&t->next_chunk);
    for (int j = 0; t->scratch && j < t->n_scratch; j++) {
        free(t->scratch[j].row_tokens);
        free(t->scratch[j].row_counts);
        free(t->scratch[j].entries);
        free(t->scratch[j].dense);
    }
    free(t->scratch);
    free(t->results);
    free(t->offsets);
    free(t->cell_ids);
    free(t->tokens);
    free(t->values);
}

void scfm_tokenize_report_free(scfm_tokenize_report *r) {
    free(r->inputs);
    memset(r, 0, sizeof *r);
}

static scfm_status check_options(const scfm_tokenize_options *o, const scfm_vocab *v, scfm_error *err) {
    const int specials = (v->cls >= 0) + (v->eos >= 0);
    if (o->mode == SCFM_TOKENIZE_COUNTS && (o->include_zeros || o->log1p))
        return scfm_fail(err, SCFM_ERR_ARG, "zeros and log1p belong to bin mode (counts mode keeps raw counts)");
    if (o->hvg > v->n_genes)
        return scfm_fail(err, SCFM_ERR_ARG, "hvg %d: the vocabulary has only %lld genes", o->hvg,
                         (long long)v->n_genes);
    if (o->mode != SCFM_TOKENIZE_COUNTS && (o->max_length <= specials || o->max_length > (1 << 20)))
        return scfm_fail(err, SCFM_ERR_ARG, "max_length %d: must leave room for a gene after <cls>/<eos> and be at "
                         "most 1048576", o->max_length);
    if (o->cells_per_shard < 1) return scfm_fail(err, SCFM_ERR_ARG, "cells_per_shard must be at least 1");
    if (o->mode == SCFM_TOKENIZE_BIN && (o->n_bins < 2 || o->n_bins > MAX_BINS))
        return scfm_fail(err, SCFM_ERR_ARG, "bins %d: must be in [2, %d]", o->n_bins, MAX_BINS);
    if (o->mode == SCFM_TOKENIZE_RANK && (o->hvg || o->include_zeros || o->log1p))
        return scfm_fail(err, SCFM_ERR_ARG, "hvg, zeros and log1p do not apply to rank mode");
    if (o->hvg < 0 || (o->include_zeros && o->hvg == 0))
        return scfm_fail(err, SCFM_ERR_ARG, "including zero genes needs a highly-variable-gene set (hvg > 0)");
    return SCFM_OK;
}

/* The columns named in opt->obs, in that order. */
static scfm_status named_columns(tokenizer *t, scfm_error *err) {
    t->obs_explicit = t->opt->obs != NULL;
    if (!t->opt->obs || !t->opt->obs[0]) return SCFM_OK;
    char *list = strdup(t->opt->obs), *save = NULL;
    if (!list) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    scfm_status st = SCFM_OK;
    for (char *name = strtok_r(list, ",", &save); name && st == SCFM_OK; name = strtok_r(NULL, ",", &save))
        st = find_column(t, name) ? scfm_fail(err, SCFM_ERR_ARG, "obs column '%s' is named twice", name)
                                  : add_column(t, name, err);
    free(list);
    return st;
}

static void describe(const tokenizer *t, char *out, size_t cap) {
    const scfm_tokenize_options *o = t->opt;
    const char *match = o->match_symbol ? "symbol" : "gene id";
    if (o->mode == SCFM_TOKENIZE_RANK) {
        snprintf(out, cap, "rank: genes matched by %s; value = count / cell total x %g / gene median (vocabulary); "
                 "genes with a count by value, descending, ties by token id; at most %d tokens with <cls>/<eos>",
                 match, t->vocab->target_sum, o->max_length);
    } else if (o->mode == SCFM_TOKENIZE_COUNTS) {
        char hvg[96] = "all vocabulary genes";
        if (o->hvg) snprintf(hvg, sizeof hvg, "the %d most variable genes (scanpy seurat)", o->hvg);
        snprintf(out, cap, "counts: genes matched by %s; raw counts of %s (%d columns, ascending) and each cell's "
                 "library size, its total count over all genes of its input", match, hvg, t->n_set);
    } else {
        char hvg[96] = "all vocabulary genes";
        if (o->hvg) snprintf(hvg, sizeof hvg, "the %d most variable genes (scanpy seurat)%s", o->hvg,
                             o->include_zeros ? ", zeros included in bin 0" : "");
        snprintf(out, cap, "bin: genes matched by %s; %s of %s in %d quantile bins of the cell's non-zero values "
                 "(scGPT); sampled down to %d tokens with <cls>/<eos> by Philox keys, seed %llu", match,
                 o->log1p ? "log1p(count / cell total x 10000)" : "raw counts", hvg, o->n_bins, o->max_length,
                 (unsigned long long)o->seed);
    }
}

/* Every shard, in rounds; the caller has made out_dir.tmp. */
static scfm_status write_shards(tokenizer *t, const char *out_dir, scfm_shard_meta *meta, scfm_error *err) {
    const int64_t all = t->corpus.first[t->n_inputs], per = t->opt->cells_per_shard;
    scfm_status st = SCFM_OK;
    for (int s = 0; s < meta->n_shards && st == SCFM_OK; s++) {
        char path[4200];
        snprintf(path, sizeof path, "%s.tmp/shard_%05d.h5", out_dir, s);
        meta->shard_index = s;
        scfm_shard_writer *w = NULL;
        if ((st = scfm_shard_create(t->comm, path, meta, &w, err)) != SCFM_OK) break;
        const int64_t lo = s * per, hi = all < lo + per ? all : lo + per;
        int64_t skipped = t->skipped;
        for (int64_t b = lo; b < hi && st == SCFM_OK; b += (int64_t)t->size * ROUND_CELLS) {
            const int64_t n = hi - b < (int64_t)t->size * ROUND_CELLS ? hi - b : (int64_t)t->size * ROUND_CELLS;
            st = encode_range(t, b + n * t->rank / t->size, b + n * (t->rank + 1) / t->size, err);
            st = scfm_comm_agree(t->comm, st, err);
            if (st != SCFM_OK) break;
            scfm_shard_cells part = {t->n_cells, t->offsets, t->tokens, meta->n_bins ? t->values : NULL, t->cell_ids,
                                     (const int32_t *const *)t->codes, t->counts, t->library};
            st = scfm_shard_append(w, &part, err);
            t->cells_written += t->n_cells;
            t->tokens_written += t->n_tokens;
            if (st == SCFM_OK && t->rank == 0 && t->opt->progress) t->opt->progress(b + n, all, t->opt->progress_user);
        }
        skipped = t->skipped - skipped;
        if (st == SCFM_OK) st = scfm_comm_sum_i64(t->comm, &skipped, 1, err);
        if (st == SCFM_OK) st = scfm_shard_finish(w, skipped, err);
        else scfm_shard_abort(w);
    }
    return st;
}

scfm_status scfm_tokenize(scfm_comm *comm, const scfm_vocab *vocab, const char *const *inputs, int n_inputs,
                          const char *out_dir, const scfm_tokenize_options *opt, scfm_tokenize_report *report,
                          scfm_error *err) {
    memset(report, 0, sizeof *report);
    scfm_status st = check_options(opt, vocab, err);
    if (st != SCFM_OK) return st;
    tokenizer t = {.vocab = vocab, .opt = opt, .comm = comm, .n_inputs = n_inputs};
    t.rank = scfm_comm_rank(comm);
    t.size = scfm_comm_size(comm);
    report->n_inputs = n_inputs;
    report->inputs = t.inputs = calloc((size_t)n_inputs + 1, sizeof *t.inputs);
    t.counts_in = calloc(2 * (size_t)n_inputs + 1, sizeof(double));
    if (!report->inputs || !t.counts_in) st = scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    if (st == SCFM_OK) st = named_columns(&t, err);
    if (st == SCFM_OK) st = scfm_corpus_open(&t.corpus, inputs, n_inputs, &opt->matrix, scan_input, &t, err);
    if (st == SCFM_OK && !t.obs_explicit) drop_partial_columns(&t);
    const int64_t all = t.corpus.first ? t.corpus.first[n_inputs] : 0;
    if (st == SCFM_OK && all == 0) st = scfm_fail(err, SCFM_ERR_ARG, "the inputs hold no cells");
    const int64_t n_shards = all > 0 ? (all + opt->cells_per_shard - 1) / opt->cells_per_shard : 0;
    if (st == SCFM_OK && n_shards > 99999)
        st = scfm_fail(err, SCFM_ERR_ARG, "%lld shards: at most 99999 (raise cells_per_shard)", (long long)n_shards);
    if (st == SCFM_OK) {
        t.codes = calloc((size_t)t.n_obs + 1, sizeof(int32_t *));
        t.local_codes = malloc(sizeof(int32_t) * ROUND_CELLS * (size_t)(t.n_obs + 1));
        t.next_codes = malloc(sizeof(int32_t) * ROUND_CELLS * (size_t)(t.n_obs + 1));
        if (!t.codes || !t.local_codes || !t.next_codes) st = scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    }
    /* Nothing is created before every rank has read the inputs' descriptions. */
    st = scfm_comm_agree(comm, st, err);
    if (st == SCFM_OK && t.rank == 0) st = scfm_output_dir_begin(out_dir, opt->force, err);
    st = scfm_comm_agree(comm, st, err);
    if (st != SCFM_OK) {
        tokenizer_free(&t);
        return st;
    }
    if (opt->hvg > 0) st = select_hvg(&t, err);
    if (st == SCFM_OK) st = list_set(&t, err);
    if (st == SCFM_OK) st = make_scratch(&t, err);
    char normalisation[512];
    describe(&t, normalisation, sizeof normalisation);
    const char **obs_names = calloc((size_t)t.n_obs + 1, sizeof(char *));
    const char *const **obs_categories = calloc((size_t)t.n_obs + 1, sizeof(char **));
    int *obs_n = calloc((size_t)t.n_obs + 1, sizeof(int));
    int64_t *source_cells = malloc(sizeof(int64_t) * (size_t)n_inputs);
    const char **gene_ids = calloc((size_t)t.n_set + 1, sizeof(char *));
    if (!obs_names || !obs_categories || !obs_n || !source_cells || !gene_ids)
        st = scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    for (int c = 0; st == SCFM_OK && t.column && c < t.n_set; c++)
        gene_ids[c] = vocab->gene_ids[t.set_tokens[c] - vocab->n_special];
    for (int c = 0; st == SCFM_OK && c < t.n_obs; c++) {
        obs_names[c] = t.obs[c].name;
        obs_categories[c] = (const char *const *)t.obs[c].categories;
        obs_n[c] = t.obs[c].n_categories;
    }
    for (int k = 0; st == SCFM_OK && k < n_inputs; k++) source_cells[k] = t.corpus.first[k + 1] - t.corpus.first[k];
    static const char *const modes[] = {"rank", "bin", "counts"};
    scfm_shard_meta meta = {
        .mode = modes[opt->mode],
        .vocab_size = scfm_vocab_size(vocab),
        .vocab_hash = vocab->hash,
        .max_length = t.column ? t.n_set : opt->max_length,
        .n_bins = opt->mode == SCFM_TOKENIZE_BIN ? opt->n_bins : 0,
        .normalisation = normalisation,
        .n_shards = (int)n_shards,
        .n_sources = n_inputs,
        .sources = inputs,
        .source_cells = source_cells,
        .n_obs = t.n_obs,
        .obs_columns = obs_names,
        .obs_n_categories = obs_n,
        .obs_categories = obs_categories,
        .n_genes = t.column ? t.n_set : 0,
        .genes = t.column ? t.set_tokens : NULL,
        .gene_ids = t.column ? gene_ids : NULL,
    };
    st = scfm_comm_agree(comm, st, err);
    if (st == SCFM_OK) st = write_shards(&t, out_dir, &meta, err);
    if (st == SCFM_OK) st = scfm_comm_sum_f64(comm, t.counts_in, 2 * (size_t)n_inputs, err);
    if (st == SCFM_OK && t.rank == 0) st = scfm_output_dir_commit(out_dir, err);
    st = scfm_comm_agree(comm, st, err);
    if (st != SCFM_OK && t.rank == 0) scfm_output_dir_discard(out_dir);
    int64_t totals[6] = {t.cells_written, t.tokens_written, t.cells_empty, t.cells_empty_in_vocab, t.cells_cut,
                         t.cells_zero_in_set};
    if (st == SCFM_OK) st = scfm_comm_sum_i64(comm, totals, 6, err);
    if (st == SCFM_OK) {
        report->cells = all;
        report->cells_written = totals[0];
        report->tokens_written = totals[1];
        report->cells_empty = totals[2];
        report->cells_empty_in_vocab = totals[3];
        report->cells_cut = totals[4];
        report->cells_zero_in_set = totals[5];
        report->n_shards = (int)n_shards;
        report->hvg_genes = opt->hvg ? t.n_set : 0;
        for (int k = 0; k < n_inputs; k++)
            report->inputs[k].counts_outside =
                t.counts_in[2 * k + 1] > 0 ? t.counts_in[2 * k] / t.counts_in[2 * k + 1] : 0.0;
    }
    free(obs_names);
    free(obs_categories);
    free(obs_n);
    free(source_cells);
    free(gene_ids);
    tokenizer_free(&t);
    return st;
}
