/* Just enough JSON for the safetensors header and the Hugging Face files of
 * `scfm export`/`import`: a strict cursor-style reader (RFC 8259 strings,
 * numbers and literals; the caller walks the structure and skips what it
 * does not read) and a growable text buffer with string escaping for
 * writing. */
#ifndef SCFM_IO_JSON_H
#define SCFM_IO_JSON_H

#include <stddef.h>
#include <stdint.h>

#define SCFM_JSON_PRIVATE __attribute__((visibility("hidden")))

typedef struct {
    const char *begin, *p, *end;
    char message[128];  /* set by the first failure: what was wrong at p */
} scfm_json;

SCFM_JSON_PRIVATE void scfm_json_init(scfm_json *j, const char *text, size_t len);
/* Byte offset of the cursor (of the failure, after one). */
SCFM_JSON_PRIVATE size_t scfm_json_offset(const scfm_json *j);
/* Skips whitespace; the next byte, or -1 at the end of the text. */
SCFM_JSON_PRIVATE int scfm_json_peek(scfm_json *j);
/* Skips whitespace and consumes c. Returns 0 (and sets message) when the next
 * byte is something else. */
SCFM_JSON_PRIVATE int scfm_json_expect(scfm_json *j, char c);
/* After an element of an object or array: consumes ',' (returns 1) or the
 * closing bracket (returns 0); anything else is an error (returns -1). */
SCFM_JSON_PRIVATE int scfm_json_next(scfm_json *j, char closing);
/* A string, decoded to UTF-8 in a malloc'd buffer the caller frees. Rejects
 * control characters, invalid UTF-8, bad escapes, lone surrogates and \u0000
 * (the result is a C string). Returns 0 on failure (or when out of memory). */
SCFM_JSON_PRIVATE int scfm_json_string(scfm_json *j, char **out);
/* A non-negative integer without fraction or exponent, at most INT64_MAX. */
SCFM_JSON_PRIVATE int scfm_json_uint(scfm_json *j, int64_t *out);
/* Any RFC 8259 number (sign, fraction, exponent), finite as a double. */
SCFM_JSON_PRIVATE int scfm_json_number(scfm_json *j, double *out);
/* true or false. */
SCFM_JSON_PRIVATE int scfm_json_bool(scfm_json *j, int *out);
/* Consumes one value of any kind, checking its syntax (nesting at most 64
 * deep). */
SCFM_JSON_PRIVATE int scfm_json_skip(scfm_json *j);

typedef struct {
    char *data;  /* NUL-terminated while no append failed */
    size_t len, cap;
    int failed;  /* an allocation failed; later appends are ignored */
} scfm_strbuf;

SCFM_JSON_PRIVATE void scfm_strbuf_append(scfm_strbuf *b, const char *s, size_t n);
SCFM_JSON_PRIVATE void scfm_strbuf_printf(scfm_strbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Appends s as a quoted JSON string. */
SCFM_JSON_PRIVATE void scfm_strbuf_json_string(scfm_strbuf *b, const char *s);
SCFM_JSON_PRIVATE void scfm_strbuf_free(scfm_strbuf *b);

#endif
