#include "scfm/core.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

scfm_status scfm_fail(scfm_error *err, scfm_status s, const char *fmt, ...) {
    if (err && err->status == SCFM_OK) {
        err->status = s;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return s;
}

void scfm_error_clear(scfm_error *err) {
    err->status = SCFM_OK;
    err->message[0] = '\0';
}

const char *scfm_status_name(scfm_status s) {
    switch (s) {
    case SCFM_OK: return "ok";
    case SCFM_ERR_ARG: return "invalid argument";
    case SCFM_ERR_CONFIG: return "configuration error";
    case SCFM_ERR_IO: return "I/O error";
    case SCFM_ERR_FORMAT: return "format error";
    case SCFM_ERR_NOMEM: return "out of memory";
    case SCFM_ERR_NUMERIC: return "numeric error";
    case SCFM_ERR_INTERRUPTED: return "interrupted";
    }
    return "unknown error";
}
