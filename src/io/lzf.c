/* LZF decompression as an HDF5 filter (id 32000), so that .h5ad files written
 * with anndata's compression="lzf" (h5py's own filter, which the HDF5 C
 * library does not have) read like any other. Decoding only: scfm writes no
 * LZF.
 *
 * The LZF stream is a sequence of items, each led by a control byte c:
 * c < 32 copies the next c + 1 bytes; otherwise the item repeats earlier
 * output: length c >> 5 (7 means 7 plus the next byte) plus 2, from
 * ((c & 31) << 8 | next byte) + 1 bytes back, possibly overlapping what it
 * writes (a run). h5py stores the chunk's uncompressed size in the third
 * filter parameter. */
#include <pthread.h>
#include <string.h>

#include "io/h5util.h"

enum { LZF_FILTER = 32000, LZF_MAX_GROWTHS = 8 };

typedef enum { LZF_OK = 0, LZF_SHORT, LZF_CORRUPT } lzf_result;

/* Decodes the n_in bytes of an LZF stream into out (cap bytes) and sets
 * *n_out: LZF_SHORT when out is too small, LZF_CORRUPT when the stream is
 * truncated or refers before its start. */
static lzf_result lzf_decode(const uint8_t *in, size_t n_in, uint8_t *out, size_t cap, size_t *n_out) {
    size_t i = 0, o = 0;
    while (i < n_in) {
        const unsigned c = in[i++];
        if (c < 32) {
            const size_t len = (size_t)c + 1;
            if (len > n_in - i) return LZF_CORRUPT;
            if (len > cap - o) return LZF_SHORT;
            memcpy(out + o, in + i, len);
            i += len;
            o += len;
            continue;
        }
        size_t len = c >> 5;
        if (len == 7) {
            if (i == n_in) return LZF_CORRUPT;
            len += in[i++];
        }
        if (i == n_in) return LZF_CORRUPT;
        const size_t back = ((size_t)(c & 31) << 8 | in[i++]) + 1;
        len += 2;
        if (back > o) return LZF_CORRUPT;
        if (len > cap - o) return LZF_SHORT;
        if (back >= len) {
            memcpy(out + o, out + o - back, len);
        } else {
            for (size_t k = 0; k < len; k++) out[o + k] = out[o + k - back];
        }
        o += len;
    }
    *n_out = o;
    return LZF_OK;
}

/* HDF5 calls this for every chunk read; 0 tells it the chunk is unreadable
 * (the read then fails and the reader names the dataset). */
static size_t lzf_filter(unsigned flags, size_t n_params, const unsigned params[], size_t n_bytes,
                         size_t *buf_size, void **buf) {
    if (!(flags & H5Z_FLAG_REVERSE)) return 0;
    size_t cap = n_params >= 3 && params[2] > 0 ? params[2] : 4 * n_bytes + 64;
    for (int growth = 0; growth < LZF_MAX_GROWTHS; growth++, cap *= 2) {
        uint8_t *out = H5allocate_memory(cap, 0);
        if (!out) return 0;
        size_t n_out = 0;
        const lzf_result r = lzf_decode(*buf, n_bytes, out, cap, &n_out);
        if (r == LZF_OK) {
            H5free_memory(*buf);
            *buf = out;
            *buf_size = cap;
            return n_out;
        }
        H5free_memory(out);
        if (r == LZF_CORRUPT) return 0;
    }
    return 0;
}

static void register_lzf(void) {
    static const H5Z_class2_t lzf = {
        .version = H5Z_CLASS_T_VERS,
        .id = LZF_FILTER,
        .encoder_present = 0,
        .decoder_present = 1,
        .name = "lzf (scfm, decoding only)",
        .filter = lzf_filter,
    };
    H5Zregister(&lzf);
}

void scfm_h5_register_filters(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, register_lzf);
}
