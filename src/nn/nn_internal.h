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

#endif
