/* safetensors reader and writer: round trips, files from the Python writer,
 * and malformed files, each of which must give SCFM_ERR_FORMAT with a message
 * that names the file and the fault. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "scfm/io.h"

#define TMP_DIR SCFM_TEST_BINARY_DIR "/safetensors_tmp"

static const char *tmp_path(const char *name) { return scfm_test_tmp_path(TMP_DIR, name); }

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* A file with a hand-written header (no padding) and data bytes. */
static void write_raw(const char *path, const char *header, size_t header_len, const void *data,
                      size_t data_len) {
    FILE *fp = fopen(path, "wb");
    CU_ASSERT_FATAL(fp != NULL);
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)((uint64_t)header_len >> (8 * i));
    fwrite(len, 1, 8, fp);
    fwrite(header, 1, header_len, fp);
    if (data_len) fwrite(data, 1, data_len, fp);
    fclose(fp);
}

/* Opening path fails with status and a message containing the path and want. */
static void expect_open_error(const char *path, scfm_status status, const char *want) {
    scfm_error err;
    scfm_error_clear(&err);
    scfm_safetensors *f = (scfm_safetensors *)1;
    scfm_status s = scfm_safetensors_open(path, &f, &err);
    CU_ASSERT_EQUAL(s, status);
    CU_ASSERT_EQUAL(err.status, status);
    CU_ASSERT_PTR_NULL(f);
    int ok = strstr(err.message, path) != NULL && strstr(err.message, want) != NULL;
    if (!ok) fprintf(stderr, "\n  message \"%s\" lacks \"%s\"\n", err.message, want);
    CU_ASSERT(ok);
}

/* A header of len bytes followed by the 4 data bytes that T4 below describes. */
static void expect_header_error_n(const char *header, size_t len, const char *want) {
    const char *path = tmp_path("bad_header.safetensors");
    static const unsigned char data[4] = {0};
    write_raw(path, header, len, data, 4);
    expect_open_error(path, SCFM_ERR_FORMAT, want);
}

static void expect_header_error(const char *header, const char *want) {
    expect_header_error_n(header, strlen(header), want);
}

static void test_round_trip(void) {
    const float f32[6] = {1.5f, -2.0f, 0.0f, 3.25f, 1e-30f, -7.0f};
    const int32_t i32[4] = {-1, 0, 1, INT32_MAX};
    const int64_t i64[2] = {INT64_MIN, 1234567890123LL};
    const uint16_t bf16[3] = {0x3f80, 0xbf00, 0x4040};
    const uint16_t f16[2] = {0x3c00, 0xc000};
    const uint8_t u8[5] = {0, 1, 2, 254, 255};
    const double f64[2] = {0.1, -1e300};
    const float scalar = 42.0f;
    /* u8 leaves the f64 after it misaligned in the file: the reader must
     * still hand out an 8-byte aligned pointer. */
    const scfm_st_tensor in[] = {
        {"weights", SCFM_DTYPE_F32, 2, {2, 3}, f32},
        {"ids", SCFM_DTYPE_I32, 1, {4}, i32},
        {"big", SCFM_DTYPE_I64, 1, {2}, i64},
        {"bf16", SCFM_DTYPE_BF16, 2, {3, 1}, bf16},
        {"f16", SCFM_DTYPE_F16, 1, {2}, f16},
        {"bytes", SCFM_DTYPE_U8, 1, {5}, u8},
        {"doubles", SCFM_DTYPE_F64, 1, {2}, f64},
        {"scalar", SCFM_DTYPE_F32, 0, {0}, &scalar},
        {"empty", SCFM_DTYPE_F32, 2, {0, 4}, NULL},
    };
    const int n = (int)(sizeof in / sizeof in[0]);
    const char *path = tmp_path("round_trip.safetensors");
    scfm_error err;
    scfm_error_clear(&err);
    CU_ASSERT_EQUAL_FATAL(scfm_safetensors_write(path, in, n, NULL, 0, &err), SCFM_OK);

    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CU_ASSERT_EQUAL(file_size(tmp), -1);
    FILE *fp = fopen(path, "rb");
    CU_ASSERT_FATAL(fp != NULL);
    unsigned char len[8];
    CU_ASSERT_EQUAL(fread(len, 1, 8, fp), 8);
    fclose(fp);
    CU_ASSERT_EQUAL(len[0] % 8, 0);  /* padded like the Python writer */

    scfm_safetensors *f;
    CU_ASSERT_EQUAL_FATAL(scfm_safetensors_open(path, &f, &err), SCFM_OK);
    CU_ASSERT_EQUAL(scfm_safetensors_count(f), n);
    CU_ASSERT_EQUAL(scfm_safetensors_meta_count(f), 0);
    CU_ASSERT_STRING_EQUAL(scfm_safetensors_path(f), path);
    for (int i = 0; i < n; i++) {
        const scfm_st_tensor *t = scfm_safetensors_find(f, in[i].name);
        CU_ASSERT_PTR_NOT_NULL_FATAL(t);
        CU_ASSERT_STRING_EQUAL(t->name, in[i].name);
        CU_ASSERT_EQUAL(t->dtype, in[i].dtype);
        CU_ASSERT_EQUAL(t->ndim, in[i].ndim);
        for (int d = 0; d < t->ndim; d++) CU_ASSERT_EQUAL(t->shape[d], in[i].shape[d]);
        size_t bytes = (size_t)scfm_st_tensor_numel(t) * scfm_dtype_size(t->dtype);
        if (bytes) CU_ASSERT_EQUAL(memcmp(t->data, in[i].data, bytes), 0);
        CU_ASSERT_EQUAL((uintptr_t)t->data % scfm_dtype_size(t->dtype), 0);
        /* Files scfm writes keep the given order. */
        CU_ASSERT_PTR_EQUAL(scfm_safetensors_at(f, i), t);
    }
    CU_ASSERT_EQUAL(scfm_st_tensor_numel(scfm_safetensors_find(f, "scalar")), 1);
    CU_ASSERT_EQUAL(scfm_st_tensor_numel(scfm_safetensors_find(f, "empty")), 0);
    CU_ASSERT_PTR_NULL(scfm_safetensors_find(f, "nope"));
    CU_ASSERT_PTR_NULL(scfm_safetensors_find(f, ""));
    CU_ASSERT_PTR_NULL(scfm_safetensors_at(f, n));
    scfm_safetensors_close(f);

    /* Zero tensors is a valid file too. */
    CU_ASSERT_EQUAL_FATAL(scfm_safetensors_write(path, NULL, 0, NULL, 0, &err), SCFM_OK);
    CU_ASSERT_EQUAL_FATAL(scfm_safetensors_open(path, &f, &err), SCFM_OK);
    CU_ASSERT_EQUAL(scfm_safetensors_count(f), 0);
    CU_ASSERT_PTR_NULL(scfm_safetensors_find(f, "weights"));
    scfm_safetensors_close(f);
}

static void test_metadata(void) {
    const float x[2] = {1, 2};
    const scfm_st_tensor t = {"x", SCFM_DTYPE_F32, 1, {2}, x};
    const scfm_st_meta meta[] = {
        {"step", "1200"},
        {"config", "model:\n{\n  hidden = 256;\t# \"quoted\" \\ back\x01slash\n};"},
        {"gène ✓", "ünïcode"},
        {"empty", ""},
    };
    const char *path = tmp_path("metadata.safetensors");
    scfm_error err;
    scfm_error_clear(&err);
    CU_ASSERT_EQUAL_FATAL(scfm_safetensors_write(path, &t, 1, meta, 4, &err), SCFM_OK);
    scfm_safetensors *f;
    CU_ASSERT_EQUAL_FATAL(scfm_safetensors_open(path, &f, &err), SCFM_OK);
    CU_ASSERT_EQUAL_FATAL(scfm_safetensors_meta_count(f), 4);
    for (int i = 0; i < 4; i++) {
        CU_ASSERT_STRING_EQUAL(scfm_safetensors_meta_at(f, i)->key, meta[i].key);
        CU_ASSERT_STRING_EQUAL(scfm_safetensors_meta_at(f, i)->value, meta[i].value);
        CU_ASSERT_STRING_EQUAL(scfm_safetensors_meta(f, meta[i].key), meta[i].value);
    }
    CU_ASSERT_PTR_NULL(scfm_safetensors_meta(f, "missing"));
    CU_ASSERT_PTR_NULL(scfm_safetensors_meta_at(f, 4));
    scfm_safetensors_close(f);
}

static void test_python_interop(void) {
    const char *path = SCFM_TEST_SOURCE_DIR "/fixtures/python_written.safetensors";
    scfm_error err;
    scfm_error_clear(&err);
    scfm_safetensors *f;
    CU_ASSERT_EQUAL_FATAL(scfm_safetensors_open(path, &f, &err), SCFM_OK);
    CU_ASSERT_EQUAL(scfm_safetensors_count(f), 11);
    CU_ASSERT_STRING_EQUAL(scfm_safetensors_meta(f, "format"), "pt");
    CU_ASSERT_STRING_EQUAL(scfm_safetensors_meta(f, "note"),
                           "tab\tquote\" backslash\\ newline\n gène ✓");
    CU_ASSERT_PTR_NOT_NULL(scfm_safetensors_meta(f, "generator"));

    const scfm_st_tensor *t;
    CU_ASSERT_EQUAL_FATAL(scfm_safetensors_expect(f, "f32", SCFM_DTYPE_F32, 2, (int64_t[]){2, 3}, &t, &err), SCFM_OK);
    for (int i = 0; i < 6; i++) CU_ASSERT_EQUAL(((const float *)t->data)[i], (float)i * 0.5f - 1.0f);
    CU_ASSERT_EQUAL_FATAL(scfm_safetensors_expect(f, "f64", SCFM_DTYPE_F64, 3, (int64_t[]){2, 2, 1}, &t, &err), SCFM_OK);
    for (int i = 0; i < 4; i++) CU_ASSERT_EQUAL(((const double *)t->data)[i], i / 8.0);
    CU_ASSERT_EQUAL_FATAL(scfm_safetensors_expect(f, "f16", SCFM_DTYPE_F16, 1, (int64_t[]){3}, &t, &err), SCFM_OK);
    const uint16_t f16[3] = {0x3800, 0xc000, 0x6400};  /* 0.5, -2, 1024 */
    CU_ASSERT_EQUAL(memcmp(t->data, f16, sizeof f16), 0);
    CU_ASSERT_EQUAL_FATAL(scfm_safetensors_expect(f, "bf16", SCFM_DTYPE_BF16, 1, (int64_t[]){3}, &t, &err), SCFM_OK);
    const uint16_t bf16[3] = {0x3f80, 0xbf00, 0x4040};  /* 1, -0.5, 3 */
    CU_ASSERT_EQUAL(memcmp(t->data, bf16, sizeof bf16), 0);
    CU_ASSERT_EQUAL_FATAL(scfm_safetensors_expect(f, "i32", SCFM_DTYPE_I32, 2, (int64_t[]){1, 3}, &t, &err), SCFM_OK);
    const int32_t i32[3] = {-7, 0, INT32_MAX};
    CU_ASSERT_EQUAL(memcmp(t->data, i32, sizeof i32), 0);
    CU_ASSERT_EQUAL_FATAL(scfm_safetensors_expect(f, "i64", SCFM_DTYPE_I64, 1, (int64_t[]){3}, &t, &err), SCFM_OK);
    const int64_t i64[3] = {-(1LL << 40), 3, 1LL << 62};
    CU_ASSERT_EQUAL(memcmp(t->data, i64, sizeof i64), 0);
    CU_ASSERT_EQUAL_FATAL(scfm_safetensors_expect(f, "u8", SCFM_DTYPE_U8, 1, (int64_t[]){5}, &t, &err), SCFM_OK);
    for (int i = 0; i < 5; i++) CU_ASSERT_EQUAL(((const uint8_t *)t->data)[i], 50 * i);
    CU_ASSERT_EQUAL_FATAL(scfm_safetensors_expect(f, "bool", SCFM_DTYPE_BOOL, 1, (int64_t[]){3}, &t, &err), SCFM_OK);
    const uint8_t flags[3] = {1, 0, 1};
    CU_ASSERT_EQUAL(memcmp(t->data, flags, 3), 0);
    CU_ASSERT_EQUAL_FATAL(scfm_safetensors_expect(f, "scalar", SCFM_DTYPE_F32, 0, NULL, &t, &err), SCFM_OK);
    CU_ASSERT_EQUAL(*(const float *)t->data, 3.25f);
    CU_ASSERT_EQUAL(scfm_safetensors_expect(f, "empty", SCFM_DTYPE_F32, 2, (int64_t[]){0, 4}, NULL, &err), SCFM_OK);
    CU_ASSERT_EQUAL_FATAL(scfm_safetensors_expect(f, "layer.0.\"quoted\"\\name", SCFM_DTYPE_I16, 1, (int64_t[]){1}, &t, &err), SCFM_OK);
    CU_ASSERT_EQUAL(*(const int16_t *)t->data, 42);
    scfm_safetensors_close(f);
}

static void expect_mismatch(const scfm_safetensors *f, const char *name, scfm_dtype dtype, int ndim,
                            const int64_t *shape, const char *want) {
    scfm_error err;
    scfm_error_clear(&err);
    const scfm_st_tensor *t = (const scfm_st_tensor *)1;
    CU_ASSERT_EQUAL(scfm_safetensors_expect(f, name, dtype, ndim, shape, &t, &err), SCFM_ERR_FORMAT);
    CU_ASSERT_PTR_NULL(t);
    int ok = strstr(err.message, scfm_safetensors_path(f)) && strstr(err.message, want);
    if (!ok) fprintf(stderr, "\n  message \"%s\" lacks \"%s\"\n", err.message, want);
    CU_ASSERT(ok);
}

static void test_expect(void) {
    const float x[8] = {0};
    const scfm_st_tensor t = {"w", SCFM_DTYPE_F32, 2, {2, 4}, x};
    const char *path = tmp_path("expect.safetensors");
    scfm_error err;
    scfm_error_clear(&err);
    CU_ASSERT_EQUAL_FATAL(scfm_safetensors_write(path, &t, 1, NULL, 0, &err), SCFM_OK);
    scfm_safetensors *f;
    CU_ASSERT_EQUAL_FATAL(scfm_safetensors_open(path, &f, &err), SCFM_OK);
    CU_ASSERT_EQUAL(scfm_safetensors_expect(f, "w", SCFM_DTYPE_F32, -1, NULL, NULL, &err), SCFM_OK);
    expect_mismatch(f, "v", SCFM_DTYPE_F32, -1, NULL, "tensor 'v' is missing");
    expect_mismatch(f, "w", SCFM_DTYPE_BF16, -1, NULL, "tensor 'w' is F32, expected BF16");
    expect_mismatch(f, "w", SCFM_DTYPE_F32, 2, (int64_t[]){4, 2}, "has shape [2, 4], expected [4, 2]");
    expect_mismatch(f, "w", SCFM_DTYPE_F32, 1, (int64_t[]){8}, "has shape [2, 4], expected [8]");
    scfm_safetensors_close(f);
}

static void test_writer_errors(void) {
    const float x[2] = {0};
    scfm_error err;
    const char *path = tmp_path("writer_errors.safetensors");
    unlink(path);
    const scfm_st_tensor dup[] = {{"a", SCFM_DTYPE_F32, 1, {2}, x}, {"a", SCFM_DTYPE_F32, 1, {1}, x}};
    scfm_error_clear(&err);
    CU_ASSERT_EQUAL(scfm_safetensors_write(path, dup, 2, NULL, 0, &err), SCFM_ERR_ARG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.message, "'a' is used twice"));

    const scfm_st_tensor reserved = {"__metadata__", SCFM_DTYPE_F32, 1, {2}, x};
    scfm_error_clear(&err);
    CU_ASSERT_EQUAL(scfm_safetensors_write(path, &reserved, 1, NULL, 0, &err), SCFM_ERR_ARG);

    const scfm_st_tensor negative = {"n", SCFM_DTYPE_F32, 1, {-2}, x};
    scfm_error_clear(&err);
    CU_ASSERT_EQUAL(scfm_safetensors_write(path, &negative, 1, NULL, 0, &err), SCFM_ERR_ARG);

    const scfm_st_tensor no_data = {"d", SCFM_DTYPE_F32, 1, {2}, NULL};
    scfm_error_clear(&err);
    CU_ASSERT_EQUAL(scfm_safetensors_write(path, &no_data, 1, NULL, 0, &err), SCFM_ERR_ARG);

    const scfm_st_meta meta[] = {{"k", "1"}, {"k", "2"}};
    scfm_error_clear(&err);
    CU_ASSERT_EQUAL(scfm_safetensors_write(path, dup, 1, meta, 2, &err), SCFM_ERR_ARG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.message, "'k' is used twice"));
    CU_ASSERT_EQUAL(file_size(path), -1);

    scfm_error_clear(&err);
    CU_ASSERT_EQUAL(scfm_safetensors_write(TMP_DIR "/no/such/dir/x.safetensors", dup, 1, NULL, 0, &err),
                    SCFM_ERR_IO);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.message, "no/such/dir/x.safetensors.tmp"));
}

/* A failed rewrite leaves the previous file intact. */
static void test_atomic_replace(void) {
    const float a[2] = {1, 2};
    const scfm_st_tensor t = {"a", SCFM_DTYPE_F32, 1, {2}, a};
    const char *path = tmp_path("atomic.safetensors");
    scfm_error err;
    scfm_error_clear(&err);
    CU_ASSERT_EQUAL_FATAL(scfm_safetensors_write(path, &t, 1, NULL, 0, &err), SCFM_OK);
    long before = file_size(path);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    /* A directory where the temporary file should go makes the write fail. */
    CU_ASSERT_EQUAL_FATAL(mkdir(tmp, 0755), 0);
    CU_ASSERT_EQUAL(scfm_safetensors_write(path, &t, 1, NULL, 0, &err), SCFM_ERR_IO);
    rmdir(tmp);
    CU_ASSERT_EQUAL(file_size(path), before);
    scfm_safetensors *f;
    scfm_error_clear(&err);
    CU_ASSERT_EQUAL_FATAL(scfm_safetensors_open(path, &f, &err), SCFM_OK);
    CU_ASSERT_EQUAL(((const float *)scfm_safetensors_find(f, "a")->data)[1], 2.0f);
    scfm_safetensors_close(f);
}

static void test_missing_file(void) {
    tmp_path("");
    expect_open_error(TMP_DIR "/does_not_exist.safetensors", SCFM_ERR_IO, "cannot open");
    expect_open_error(TMP_DIR, SCFM_ERR_IO, "not a regular file");
}

static void test_truncated(void) {
    const float x[16] = {0};
    const scfm_st_tensor t[] = {{"a", SCFM_DTYPE_F32, 2, {2, 4}, x}, {"b", SCFM_DTYPE_F32, 1, {8}, x}};
    const char *path = tmp_path("truncated.safetensors");
    scfm_error err;
    scfm_error_clear(&err);
    CU_ASSERT_EQUAL_FATAL(scfm_safetensors_write(path, t, 2, NULL, 0, &err), SCFM_OK);
    long size = file_size(path);
    CU_ASSERT_EQUAL_FATAL(truncate(path, size - 1), 0);
    expect_open_error(path, SCFM_ERR_FORMAT, "tensor 'b': data_offsets [32, 64) run past the end");
    /* Every shorter prefix fails cleanly too. */
    for (long len = size - 2; len >= 0; len--) {
        CU_ASSERT_EQUAL_FATAL(truncate(path, len), 0);
        scfm_safetensors *f;
        scfm_error_clear(&err);
        CU_ASSERT_EQUAL(scfm_safetensors_open(path, &f, &err), SCFM_ERR_FORMAT);
    }
    expect_open_error(path, SCFM_ERR_FORMAT, "file has 0 bytes");
}

static void test_bad_header_length(void) {
    const char *path = tmp_path("bad_length.safetensors");
    const char *header = "{}";
    /* Claims more header than the file has. */
    FILE *fp = fopen(path, "wb");
    CU_ASSERT_FATAL(fp != NULL);
    const unsigned char huge[8] = {0, 0, 0, 0, 0, 0, 0, 0x80};
    fwrite(huge, 1, 8, fp);
    fwrite(header, 1, 2, fp);
    fclose(fp);
    expect_open_error(path, SCFM_ERR_FORMAT, "header length 9223372036854775808 does not fit");

    write_raw(path, header, 0, NULL, 0);
    expect_open_error(path, SCFM_ERR_FORMAT, "header length 0");

    fp = fopen(path, "wb");
    CU_ASSERT_FATAL(fp != NULL);
    fwrite("\x02\0\0\0", 1, 4, fp);
    fclose(fp);
    expect_open_error(path, SCFM_ERR_FORMAT, "fewer than the 8-byte header length");

    /* A header length one byte too long swallows the first data byte. */
    const char *good = "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}";
    fp = fopen(path, "wb");
    CU_ASSERT_FATAL(fp != NULL);
    unsigned char len[8] = {(unsigned char)(strlen(good) + 1)};
    fwrite(len, 1, 8, fp);
    fwrite(good, 1, strlen(good), fp);
    fwrite("\x07", 1, 1, fp);
    fclose(fp);
    expect_open_error(path, SCFM_ERR_FORMAT, "unexpected bytes after the header object");
}

#define T4 "{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}"

static void test_bad_json(void) {
    expect_header_error("", "header length 0");
    expect_header_error("[]", "expected '{'");
    expect_header_error("{\"a\":" T4, "expected ',' or '}', found end of header");
    expect_header_error("{\"a\":" T4 ",}", "expected '\"', found '}'");
    expect_header_error("{\"a\":" T4 "} x", "unexpected bytes after the header object");
    expect_header_error_n("{\"a\":" T4 "}\0", sizeof("{\"a\":" T4 "}"), "unexpected bytes");
    expect_header_error("{\"a\" " T4 "}", "expected ':'");
    expect_header_error("{\"a:" T4 "}", "invalid header JSON");
    expect_header_error("{\"a\\q\":" T4 "}", "invalid escape '\\q'");
    expect_header_error("{\"a\\ud800\":" T4 "}", "unpaired high surrogate");
    expect_header_error("{\"a\\udc00\":" T4 "}", "unpaired low surrogate");
    expect_header_error("{\"a\\u00zz\":" T4 "}", "invalid \\u escape");
    expect_header_error("{\"a\\u0000\":" T4 "}", "\\u0000 in string");
    expect_header_error("{\"a\tb\":" T4 "}", "control character 0x09");
    expect_header_error("{\"a\xff\":" T4 "}", "invalid UTF-8");
    expect_header_error("{\"a\xc0\x80\":" T4 "}", "invalid UTF-8");       /* overlong NUL */
    expect_header_error("{\"a\xed\xa0\x80\":" T4 "}", "invalid UTF-8");   /* encoded surrogate */
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[01],\"data_offsets\":[0,4]}}", "leading zero");
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", "negative number");
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", "fraction or exponent");
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}",
                        "expected a non-negative integer");
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,4]}}",
                        "integer too large");
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,],\"data_offsets\":[0,4]}}",
                        "expected a non-negative integer, found ']'");
    expect_header_error("{\"a\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                        "tensor 'a': unknown dtype \"F33\"");
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}",
                        "tensor 'a': unknown field \"x\"");
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                        "tensor 'a': repeated field \"dtype\"");
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", "tensor 'a': missing field \"shape\"");
    expect_header_error("{\"a\":{}}", "tensor 'a': missing field \"dtype\"");
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}",
                        "tensor 'a': more than 8 dimensions");
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}",
                        "tensor 'a': data_offsets must be [begin, end]");
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}",
                        "tensor 'a': data_offsets must be [begin, end]");
    expect_header_error("{\"a\":[]}", "expected '{', found '['");
    expect_header_error("{\"a\":" T4 ",\"a\":" T4 "}", "overlap");
    expect_header_error("{\"__metadata__\":{\"k\":1},\"a\":" T4 "}", "metadata value of 'k' is not a string");
    expect_header_error("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"},\"a\":" T4 "}",
                        "metadata key 'k' appears twice");
    expect_header_error("{\"__metadata__\":{},\"__metadata__\":{},\"a\":" T4 "}", "\"__metadata__\" appears twice");
    expect_header_error("{\"__metadata__\":[],\"a\":" T4 "}", "expected '{'");
}

static void test_duplicate_names(void) {
    const char *path = tmp_path("duplicate.safetensors");
    const char *header = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                         "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}";
    static const unsigned char data[8] = {0};
    write_raw(path, header, strlen(header), data, 8);
    expect_open_error(path, SCFM_ERR_FORMAT, "tensor 'a' appears twice");
}

static void test_bad_offsets(void) {
    static const unsigned char data[64] = {0};
    const char *path = tmp_path("offsets.safetensors");
    const char *overlap = "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                          "\"y\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}";
    write_raw(path, overlap, strlen(overlap), data, 12);
    expect_open_error(path, SCFM_ERR_FORMAT, "tensor 'y': data_offsets [4, 12) overlap tensor 'x' [0, 8)");

    const char *gap = "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"y\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}";
    write_raw(path, gap, strlen(gap), data, 20);
    expect_open_error(path, SCFM_ERR_FORMAT, "data bytes [8, 12) before tensor 'y' belong to no tensor");

    const char *not_first = "{\"x\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}}";
    write_raw(path, not_first, strlen(not_first), data, 4);
    expect_open_error(path, SCFM_ERR_FORMAT, "data bytes [0, 2) before tensor 'x'");

    const char *mismatch = "{\"x\":{\"dtype\":\"F32\",\"shape\":[4,4],\"data_offsets\":[0,12]}}";
    write_raw(path, mismatch, strlen(mismatch), data, 12);
    expect_open_error(path, SCFM_ERR_FORMAT, "tensor 'x': data_offsets [0, 12) do not match shape [4, 4] of F32");

    const char *reversed = "{\"x\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}";
    write_raw(path, reversed, strlen(reversed), data, 8);
    expect_open_error(path, SCFM_ERR_FORMAT, "tensor 'x': data_offsets [8, 4) are reversed");

    const char *overflow = "{\"x\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904,4],"
                           "\"data_offsets\":[0,0]}}";
    write_raw(path, overflow, strlen(overflow), data, 0);
    expect_open_error(path, SCFM_ERR_FORMAT, "do not match shape [4611686018427387904, 4] of F64");

    const char *trailing = "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    write_raw(path, trailing, strlen(trailing), data, 11);
    expect_open_error(path, SCFM_ERR_FORMAT, "3 bytes after the last tensor belong to no tensor");

    /* Out of order in the header is fine when the ranges tile the data. */
    const char *unsorted = "{\"y\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[8,12]},"
                           "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]},"
                           "\"x\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}";
    const unsigned char bytes[12] = {0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 5, 0, 0, 0};
    write_raw(path, unsorted, strlen(unsorted), bytes, 12);
    scfm_safetensors *f;
    scfm_error err;
    scfm_error_clear(&err);
    CU_ASSERT_EQUAL_FATAL(scfm_safetensors_open(path, &f, &err), SCFM_OK);
    CU_ASSERT_STRING_EQUAL(scfm_safetensors_at(f, 0)->name, "x");
    CU_ASSERT_STRING_EQUAL(scfm_safetensors_at(f, 2)->name, "y");
    /* The header is not padded, so x sits at an odd address in the file. */
    CU_ASSERT_EQUAL(*(const double *)scfm_safetensors_find(f, "x")->data, 1.0);
    CU_ASSERT_EQUAL(*(const int32_t *)scfm_safetensors_find(f, "y")->data, 5);
    scfm_safetensors_close(f);
}

static void test_json_escapes(void) {
    const char *path = tmp_path("escapes.safetensors");
    const char *header = " {\r\n\t\"__metadata__\" : {\"k\\u00e9\\ud83d\\ude00\\/\" : \"\\\"\\\\\\b\\f\\n\\r\\t\"},"
                         "\"w\\u00E9\":{\"shape\":[],\"dtype\":\"I32\",\"data_offsets\":[0,4]}\n}   ";
    const int32_t v = -3;
    write_raw(path, header, strlen(header), &v, 4);
    scfm_safetensors *f;
    scfm_error err;
    scfm_error_clear(&err);
    CU_ASSERT_EQUAL_FATAL(scfm_safetensors_open(path, &f, &err), SCFM_OK);
    CU_ASSERT_STRING_EQUAL(scfm_safetensors_meta_at(f, 0)->key, "k\xc3\xa9\xf0\x9f\x98\x80/");
    CU_ASSERT_STRING_EQUAL(scfm_safetensors_meta_at(f, 0)->value, "\"\\\b\f\n\r\t");
    const scfm_st_tensor *t = scfm_safetensors_find(f, "w\xc3\xa9");
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_EQUAL(t->ndim, 0);
    CU_ASSERT_EQUAL(*(const int32_t *)t->data, -3);
    scfm_safetensors_close(f);
}

/* Every single-byte corruption of a valid header either still parses to a
 * consistent file or fails with SCFM_ERR_FORMAT; none may crash. */
static void test_corrupt_header_bytes(void) {
    const float x[6] = {1, 2, 3, 4, 5, 6};
    const scfm_st_tensor t[] = {{"a", SCFM_DTYPE_F32, 2, {2, 2}, x}, {"b", SCFM_DTYPE_F32, 1, {2}, x}};
    const scfm_st_meta meta[] = {{"k", "v"}};
    const char *good = tmp_path("corrupt_src.safetensors");
    scfm_error err;
    scfm_error_clear(&err);
    CU_ASSERT_EQUAL_FATAL(scfm_safetensors_write(good, t, 2, meta, 1, &err), SCFM_OK);
    FILE *fp = fopen(good, "rb");
    CU_ASSERT_FATAL(fp != NULL);
    unsigned char buf[512];
    size_t size = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    size_t header_end = 8 + (size_t)buf[0];
    const char *path = tmp_path("corrupt.safetensors");
    static const unsigned char values[] = {0, '"', '\\', '{', '}', '[', ']', ',', ':', '0', '9', 0x80, 0xff};
    int failures = 0, opened = 0;
    for (size_t pos = 0; pos < header_end; pos++) {
        for (size_t v = 0; v < sizeof values; v++) {
            if (buf[pos] == values[v]) continue;
            unsigned char copy[512];
            memcpy(copy, buf, size);
            copy[pos] = values[v];
            fp = fopen(path, "wb");
            CU_ASSERT_FATAL(fp != NULL);
            fwrite(copy, 1, size, fp);
            fclose(fp);
            scfm_safetensors *f;
            scfm_error_clear(&err);
            scfm_status s = scfm_safetensors_open(path, &f, &err);
            if (s == SCFM_OK) {
                opened++;
                for (int i = 0; i < scfm_safetensors_count(f); i++)
                    CU_ASSERT_PTR_NOT_NULL(scfm_safetensors_at(f, i)->data);
                scfm_safetensors_close(f);
            } else {
                failures += s != SCFM_ERR_FORMAT || strstr(err.message, path) == NULL;
            }
        }
    }
    CU_ASSERT_EQUAL(failures, 0);
    CU_ASSERT(opened > 0);  /* e.g. a changed digit inside a metadata value */
}

static CU_TestInfo tests[] = {
    {"round trip", test_round_trip},
    {"metadata", test_metadata},
    {"python interop", test_python_interop},
    {"expect", test_expect},
    {"writer errors", test_writer_errors},
    {"atomic replace", test_atomic_replace},
    {"missing file", test_missing_file},
    {"truncated", test_truncated},
    {"bad header length", test_bad_header_length},
    {"bad json", test_bad_json},
    {"duplicate names", test_duplicate_names},
    {"bad offsets", test_bad_offsets},
    {"json escapes", test_json_escapes},
    {"corrupt header bytes", test_corrupt_header_bytes},
    CU_TEST_INFO_NULL,
};

int main(void) { return scfm_test_run("safetensors", tests); }
