/* member — refusals and membership checks every rule shares. */
#include "rules_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int chat_fail(chat_status *st, wire_code code, const char *fmt, ...)
{
    st->code = code;
    st->retry_ms = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->msg, sizeof(st->msg), fmt, ap);
    va_end(ap);
    return -1;
}

wire_code chat_store_code(mqstore_err e, wire_code notfound)
{
    switch (e) {
    case MQSTORE_OK:
        return EC(UNSPECIFIED);
    case MQSTORE_ERR_INVAL:
    case MQSTORE_ERR_EXISTS:
        return EC(INVALID_ARGUMENT);
    case MQSTORE_ERR_NOTFOUND:
        return notfound;
    case MQSTORE_ERR_NOTMEMBER:
        return EC(NOT_MEMBER);
    case MQSTORE_ERR_DENIED:
        return EC(PERMISSION_DENIED);
    case MQSTORE_ERR_TOOBIG:
        return EC(BODY_TOO_LARGE);
    case MQSTORE_ERR_IO:
    case MQSTORE_ERR_NOSPC:
    case MQSTORE_ERR_READONLY:
        return EC(UNAVAILABLE);
    case MQSTORE_ERR_CORRUPT:
    case MQSTORE_ERR_NOMEM:
        return EC(INTERNAL);
    }
    return EC(INTERNAL);
}

int chat_store_fail(chat_status *st, mqstore_err e, wire_code notfound)
{
    wire_code code = chat_store_code(e, notfound);
    chat_fail(st, code, "%s", mqstore_strerror(e));
    if (code == EC(UNAVAILABLE)) st->retry_ms = 1000;
    return -1;
}

mqstore_err chat_ensure_direct(chat *c, const char *conv, const char *ua, const char *ub)
{
    mqstore_err e;
    if (mqstore_conv_exists(c->store, conv, &e) || e) return e;
    const char *members[2] = {ua, ub};
    size_t n = strcmp(ua, ub) == 0 ? 1 : 2; /* d:<a>:<a>: notes to self */
    mqstore_result cr;
    e = mqstore_conv_create(c->store, conv, members, NULL, n, NULL, &cr);
    mqstore_result_clear(&cr);
    return e == MQSTORE_ERR_EXISTS ? MQSTORE_OK : e;
}

int chat_require_member(chat *c, const chat_caller *who, const char *conv, mqstore_member *self,
                        chat_status *st)
{
    char ua[MQC_ID_BUF], ub[MQC_ID_BUF];
    mqstore_err e;
    if (who->op) {
        /* An operator is no member: it acts with the owner's rights in a
         * conversation that exists (and creates no implicit 1:1). */
        if (!mqstore_conv_exists(c->store, conv, &e)) {
            if (e) return chat_store_fail(st, e, EC(INTERNAL));
            return chat_fail(st, EC(UNKNOWN_CONVERSATION), "no such conversation");
        }
        memset(self, 0, sizeof(*self));
        snprintf(self->user, sizeof(self->user), "%s", who->user);
        self->role = MQSTORE_ROLE_OWNER;
        return 0;
    }
    if (mqc_conv_direct(conv, ua, ub) == 0) {
        if (strcmp(who->user, ua) != 0 && strcmp(who->user, ub) != 0)
            return chat_fail(st, EC(NOT_MEMBER), "not a member of this conversation");
        if ((e = chat_ensure_direct(c, conv, ua, ub))) return chat_store_fail(st, e, EC(INTERNAL));
    } else if (!mqstore_conv_exists(c->store, conv, &e)) {
        if (e) return chat_store_fail(st, e, EC(INTERNAL));
        return chat_fail(st, EC(UNKNOWN_CONVERSATION), "no such conversation");
    }
    e = mqstore_member_get(c->store, conv, who->user, self);
    if (e == MQSTORE_ERR_NOTFOUND)
        return chat_fail(st, EC(NOT_MEMBER), "not a member of this conversation");
    if (e) return chat_store_fail(st, e, EC(INTERNAL));
    return 0;
}
