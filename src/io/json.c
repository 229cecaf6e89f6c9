#include "io/json.h"

#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(scfm_json *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(scfm_json *j, const char *fmt, ...) {
    if (j->message[0] == '\0') {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(j->message, sizeof j->message, fmt, ap);
        va_end(ap);
    }
    return 0;
}

void scfm_json_init(scfm_json *j, const char *text, size_t len) {
    j->begin = j->p = text;
    j->end = text + len;
    j->message[0] = '\0';
}

size_t scfm_json_offset(const scfm_json *j) { return (size_t)(j->p - j->begin); }

int scfm_json_peek(scfm_json *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
    return j->p < j->end ? (unsigned char)*j->p : -1;
}

/* Names the next byte for messages: "'x'", "byte 0x07" or "end of header". */
static const char *describe(const scfm_json *j, char buf[16]) {
    if (j->p >= j->end) return "end of header";
    unsigned char c = (unsigned char)*j->p;
    if (c >= 0x20 && c < 0x7f)
        snprintf(buf, 16, "'%c'", c);
    else
        snprintf(buf, 16, "byte 0x%02x", c);
    return buf;
}

int scfm_json_expect(scfm_json *j, char c) {
    if (scfm_json_peek(j) == (unsigned char)c) {
        j->p++;
        return 1;
    }
    char buf[16];
    return fail(j, "expected '%c', found %s", c, describe(j, buf));
}

int scfm_json_next(scfm_json *j, char closing) {
    int c = scfm_json_peek(j);
    if (c == ',' || c == closing) {
        j->p++;
        return c == ',';
    }
    char buf[16];
    fail(j, "expected ',' or '%c', found %s", closing, describe(j, buf));
    return -1;
}

static int hex4(scfm_json *j, unsigned *out) {
    if (j->end - j->p < 4) return fail(j, "truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = j->p[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else
            return fail(j, "invalid \\u escape");
        v = v * 16 + d;
    }
    j->p += 4;
    *out = v;
    return 1;
}

static char *put_utf8(char *o, unsigned cp) {
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xc0 | (cp >> 6));
        *o++ = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xe0 | (cp >> 12));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *o++ = (char)(0x80 | (cp & 0x3f));
    } else {
        *o++ = (char)(0xf0 | (cp >> 18));
        *o++ = (char)(0x80 | ((cp >> 12) & 0x3f));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *o++ = (char)(0x80 | (cp & 0x3f));
    }
    return o;
}

/* Length of the valid UTF-8 sequence at p (lead byte >= 0x80), or 0: rejects
 * overlong forms, surrogates and code points past U+10FFFF (RFC 3629). */
static int utf8_length(const unsigned char *p, const unsigned char *end) {
    unsigned char c = p[0];
    int n;
    unsigned lo = 0x80, hi = 0xbf;  /* allowed range of the second byte */
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else {
        return 0;
    }
    if (end - p < n) return 0;
    if (p[1] < lo || p[1] > hi) return 0;
    for (int i = 2; i < n; i++)
        if ((p[i] & 0xc0) != 0x80) return 0;
    return n;
}

int scfm_json_string(scfm_json *j, char **out) {
    *out = NULL;
    if (!scfm_json_expect(j, '"')) return 0;
    const char *start = j->p;
    const char *close = start;
    /* Find the closing quote first: the decoded text is never longer. */
    while (close < j->end && *close != '"') close += (*close == '\\' && close + 1 < j->end) ? 2 : 1;
    if (close >= j->end) return fail(j, "unterminated string");
    char *buf = malloc((size_t)(close - start) + 1);
    if (!buf) return fail(j, "out of memory");
    char *o = buf;
    while (j->p < close) {
        unsigned char c = (unsigned char)*j->p;
        if (c < 0x20) {
            free(buf);
            return fail(j, "control character 0x%02x in string", c);
        }
        if (c >= 0x80) {
            int n = utf8_length((const unsigned char *)j->p, (const unsigned char *)close);
            if (n == 0) {
                free(buf);
                return fail(j, "invalid UTF-8 in string");
            }
            memcpy(o, j->p, (size_t)n);
            o += n;
            j->p += n;
            continue;
        }
        j->p++;
        if (c != '\\') {
            *o++ = (char)c;
            continue;
        }
        char e = *j->p++;
        switch (e) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            unsigned cp = 0;
            if (!hex4(j, &cp)) break;
            if (cp >= 0xdc00 && cp <= 0xdfff) {
                fail(j, "unpaired low surrogate \\u%04x", cp);
                break;
            }
            if (cp >= 0xd800 && cp <= 0xdbff) {
                unsigned low = 0;
                if (close - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u') {
                    fail(j, "unpaired high surrogate \\u%04x", cp);
                    break;
                }
                j->p += 2;
                if (!hex4(j, &low)) break;
                if (low < 0xdc00 || low > 0xdfff) {
                    fail(j, "high surrogate \\u%04x followed by \\u%04x", cp, low);
                    break;
                }
                cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
            }
            if (cp == 0) {
                fail(j, "\\u0000 in string");
                break;
            }
            o = put_utf8(o, cp);
            break;
        }
        default:
            j->p--;
            if (e > 0x20 && e < 0x7f)
                fail(j, "invalid escape '\\%c'", e);
            else
                fail(j, "invalid escape: backslash before byte 0x%02x", (unsigned char)e);
            break;
        }
        if (j->message[0] != '\0') {
            free(buf);
            return 0;
        }
    }
    *o = '\0';
    j->p = close + 1;
    *out = buf;
    return 1;
}

int scfm_json_uint(scfm_json *j, int64_t *out) {
    int c = scfm_json_peek(j);
    if (c == '-') return fail(j, "negative number");
    if (c < '0' || c > '9') {
        char buf[16];
        return fail(j, "expected a non-negative integer, found %s", describe(j, buf));
    }
    const char *start = j->p;
    int64_t v = 0;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
        int d = *j->p - '0';
        if (v > (INT64_MAX - d) / 10) return fail(j, "integer too large");
        v = v * 10 + d;
        j->p++;
    }
    if (*start == '0' && j->p - start > 1) {
        j->p = start;
        return fail(j, "integer with a leading zero");
    }
    if (j->p < j->end && (*j->p == '.' || *j->p == 'e' || *j->p == 'E'))
        return fail(j, "expected an integer, found a fraction or exponent");
    *out = v;
    return 1;
}

void scfm_strbuf_append(scfm_strbuf *b, const char *s, size_t n) {
    if (b->failed) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void scfm_strbuf_printf(scfm_strbuf *b, const char *fmt, ...) {
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = 1;
        return;
    }
    if ((size_t)n < sizeof small) {
        scfm_strbuf_append(b, small, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->failed = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    scfm_strbuf_append(b, big, (size_t)n);
    free(big);
}

void scfm_strbuf_json_string(scfm_strbuf *b, const char *s) {
    scfm_strbuf_append(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': scfm_strbuf_append(b, "\\\"", 2); break;
        case '\\': scfm_strbuf_append(b, "\\\\", 2); break;
        case '\n': scfm_strbuf_append(b, "\\n", 2); break;
        case '\r': scfm_strbuf_append(b, "\\r", 2); break;
        case '\t': scfm_strbuf_append(b, "\\t", 2); break;
        default:
            if (*p < 0x20)
                scfm_strbuf_printf(b, "\\u%04x", *p);
            else
                scfm_strbuf_append(b, (const char *)p, 1);
        }
    }
    scfm_strbuf_append(b, "\"", 1);
}

void scfm_strbuf_free(scfm_strbuf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    b->failed = 0;
}

int scfm_json_number(scfm_json *j, double *out) {
    int c = scfm_json_peek(j);
    const char *start = j->p, *q = j->p;
    if (c == '-') q++;
    /* RFC 8259: int (no leading zero), optional fraction, optional exponent;
     * strtod alone would also take "inf", hex and a leading '+'. */
    if (q >= j->end || *q < '0' || *q > '9') {
        char buf[16];
        return fail(j, "expected a number, found %s", describe(j, buf));
    }
    if (*q == '0' && q + 1 < j->end && q[1] >= '0' && q[1] <= '9') return fail(j, "number with a leading zero");
    while (q < j->end && *q >= '0' && *q <= '9') q++;
    if (q < j->end && *q == '.') {
        if (++q >= j->end || *q < '0' || *q > '9') return fail(j, "a fraction needs digits");
        while (q < j->end && *q >= '0' && *q <= '9') q++;
    }
    if (q < j->end && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < j->end && (*q == '+' || *q == '-')) q++;
        if (q >= j->end || *q < '0' || *q > '9') return fail(j, "an exponent needs digits");
        while (q < j->end && *q >= '0' && *q <= '9') q++;
    }
    char buf[64];
    if (q - start >= (ptrdiff_t)sizeof buf) return fail(j, "number too long");
    memcpy(buf, start, (size_t)(q - start));
    buf[q - start] = '\0';
    double v = strtod(buf, NULL);
    if (!isfinite(v)) return fail(j, "number out of range");
    j->p = q;
    *out = v;
    return 1;
}

static int literal(scfm_json *j, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, word, n) != 0) return 0;
    j->p += n;
    return 1;
}

int scfm_json_bool(scfm_json *j, int *out) {
    scfm_json_peek(j);
    if (literal(j, "true")) return *out = 1, 1;
    if (literal(j, "false")) return *out = 0, 1;
    char buf[16];
    return fail(j, "expected true or false, found %s", describe(j, buf));
}

static int skip_value(scfm_json *j, int depth) {
    if (depth > 64) return fail(j, "nested too deeply");
    int c = scfm_json_peek(j);
    if (c == '"') {
        char *s;
        if (!scfm_json_string(j, &s)) return 0;
        free(s);
        return 1;
    }
    if (c == '{' || c == '[') {
        char closing = c == '{' ? '}' : ']';
        j->p++;
        if (scfm_json_peek(j) == closing) return j->p++, 1;
        int more;
        do {
            if (c == '{') {
                char *key;
                if (!scfm_json_string(j, &key)) return 0;
                free(key);
                if (!scfm_json_expect(j, ':')) return 0;
            }
            if (!skip_value(j, depth + 1)) return 0;
        } while ((more = scfm_json_next(j, closing)) == 1);
        return more == 0;
    }
    if (literal(j, "true") || literal(j, "false") || literal(j, "null")) return 1;
    double ignored;
    return scfm_json_number(j, &ignored);
}

int scfm_json_skip(scfm_json *j) { return skip_value(j, 0); }
