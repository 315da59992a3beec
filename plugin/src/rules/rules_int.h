/* rules_int — what the rule files share: refusals and membership. */
#ifndef MQC_RULES_INT_H
#define MQC_RULES_INT_H

#include "rules.h"

/* Fill *st (printf-style message) and return -1. */
int chat_fail(chat_status *st, wire_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Refuse because the store failed: the store's error mapped to a device
 * code (NOTFOUND becomes `notfound`), its message, and a retry delay for
 * UNAVAILABLE. Returns -1. */
int chat_store_fail(chat_status *st, mqstore_err e, wire_code notfound);

/* Map a store error to the code a device sees. */
wire_code chat_store_code(mqstore_err e, wire_code notfound);

/* The caller's membership of conv: 0 with *self set, or -1 with the
 * refusal. A 1:1 id that does not name the caller is NOT_MEMBER whether
 * or not the pair ever talked (anything else would tell a stranger that
 * they did); one that names the caller exists implicitly, so it is created
 * here on first use. */
int chat_require_member(chat *c, const chat_caller *who, const char *conv, mqstore_member *self,
                        chat_status *st);

/* Create the implicit 1:1 conversation conv = d:<ua>:<ub> if it does not
 * exist yet (no event; both users members; one member when ua == ub, the
 * user's notes to self). */
mqstore_err chat_ensure_direct(chat *c, const char *conv, const char *ua, const char *ub);

#endif
