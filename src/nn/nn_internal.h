/* nn_internal.h — what the nn blocks' binders share: the module prefix of a
 * bind, formatted once. Not public API. */
#ifndef TDM_NN_INTERNAL_H
#define TDM_NN_INTERNAL_H

#include <stdarg.h>

#include "core/core.h"
#include "nn/weights.h"

#define TDM_NN_PREFIX_MAX 256

/* Formats fmt/ap into p (TDM_NN_PREFIX_MAX bytes); an error naming the model
 * when it does not fit. */
tdm_status tdm_nn_prefix(const tdm_weights_t *w, char *p, const char *fmt, va_list ap);

/* In a binder `(tdm_weights_t *w, ..., const char *fmt, ...)`: formats its
 * prefix into p (char[TDM_NN_PREFIX_MAX]), returning the error when it does
 * not fit. */
#define TDM_NN_PREFIX(w, p, fmt)                                     \
    do {                                                             \
        va_list ap_;                                                 \
        va_start(ap_, fmt);                                          \
        const tdm_status pst_ = tdm_nn_prefix(w, p, fmt, ap_);       \
        va_end(ap_);                                                 \
        if (pst_ != TDM_OK) return pst_;                             \
    } while (0)

#endif
