/* Writes the built-in synthetic token set (scfm_synthetic_tokens, shard
 * format 2, docs/formats.md) that the training tests use without count
 * matrices:
 *   make_tokens DIR [CELLS] [GENES] [TYPES] [SEED] [MIN_LEN MAX_LEN]
 * Cell lengths are drawn in [MIN_LEN, MAX_LEN] (default: half of, and, the
 * smaller of GENES and 200); equal bounds give cells of one length. */
#include <stdio.h>
#include <stdlib.h>

#include "scfm/data.h"

int main(int argc, char **argv) {
    if (argc < 2 || argc > 8 || argc == 7) {
        fprintf(stderr, "usage: make_tokens DIR [CELLS=2000] [GENES=300] [TYPES=6] [SEED=1] [MIN_LEN MAX_LEN]\n");
        return 2;
    }
    long cells = argc > 2 ? atol(argv[2]) : 2000;
    int genes = argc > 3 ? atoi(argv[3]) : 300;
    int types = argc > 4 ? atoi(argv[4]) : 6;
    long seed = argc > 5 ? atol(argv[5]) : 1;
    int max_len = argc > 7 ? atoi(argv[7]) : genes < 200 ? genes : 200;
    int min_len = argc > 7 ? atoi(argv[6]) : max_len / 2;
    scfm_error err = {0};
    if (scfm_synthetic_tokens(argv[1], cells, genes, types, min_len, max_len, (uint64_t)seed, &err) != SCFM_OK) {
        fprintf(stderr, "make_tokens: %s\n", err.message);
        return 1;
    }
    printf("make_tokens: %ld cells of %d-%d tokens over %d genes in %s\n", cells, min_len, max_len, genes, argv[1]);
    return 0;
}
