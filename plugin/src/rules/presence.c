/* presence — who may see whose presence. A user's settings are a packed
 * PresenceSettings in the store's per-user preferences; "contacts" are
 * users who share a conversation. Redis and the live state are the
 * sessions layer's (plugin/src/sessions/); this file only decides. */
#include "rules_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VIS(x) MQCHAT__V1__PRESENCE_VISIBILITY__PRESENCE_VISIBILITY_##x

int chat_presence_prefs_get(chat *c, const char *user, chat_presence_prefs *out, chat_status *st)
{
    out->visibility = VIS(CONTACTS);
    out->hide_last_seen = 0;
    void *data;
    size_t len;
    mqstore_err e = mqstore_user_prefs_get(c->store, user, &data, &len);
    if (e == MQSTORE_ERR_NOTFOUND) return 0;
    if (e) return chat_store_fail(st, e, EC(INTERNAL));
    Mqchat__V1__PresenceSettings *ps = mqchat__v1__presence_settings__unpack(NULL, len, data);
    free(data);
    /* A record we wrote ourselves; if it does not decode, keep the
     * defaults rather than refuse every watcher. */
    if (!ps) return 0;
    if (ps->visibility >= VIS(EVERYONE) && ps->visibility <= VIS(NOBODY))
        out->visibility = ps->visibility;
    out->hide_last_seen = ps->hide_last_seen;
    mqchat__v1__presence_settings__free_unpacked(ps, NULL);
    return 0;
}

int chat_presence_settings(chat *c, const chat_caller *who, const Mqchat__V1__PresenceSettings *ps,
                           chat_presence_prefs *out, chat_status *st)
{
    if (chat_presence_prefs_get(c, who->user, out, st)) return -1;
    if (ps->visibility != VIS(UNSPECIFIED)) out->visibility = ps->visibility;
    out->hide_last_seen = ps->hide_last_seen != 0;
    Mqchat__V1__PresenceSettings rec = MQCHAT__V1__PRESENCE_SETTINGS__INIT;
    rec.visibility = out->visibility;
    rec.hide_last_seen = out->hide_last_seen;
    size_t len;
    void *buf = wire_pack(&rec.base, &len, malloc);
    if (!buf) return chat_fail(st, EC(INTERNAL), "out of memory");
    mqstore_err e = mqstore_user_prefs_put(c->store, who->user, buf, len);
    free(buf);
    return e ? chat_store_fail(st, e, EC(INTERNAL)) : 0;
}

int chat_contacts(chat *c, const char *a, const char *b)
{
    char conv[2 * MQC_ID_BUF + 4];
    mqstore_err e;
    if (strcmp(a, b) == 0) return 1;
    snprintf(conv, sizeof(conv), "d:%s:%s", strcmp(a, b) < 0 ? a : b, strcmp(a, b) < 0 ? b : a);
    /* A 1:1 conversation counts once it holds a message: the conversation
     * itself exists implicitly between any two users. */
    uint64_t head = 0;
    if (mqc_id_valid(MQC_ID_CONV, conv)) {
        if (mqstore_conv_head(c->store, conv, &head)) return -1;
        if (head > 0) return 1;
    }
    /* The groups of a, a page at a time: is b a member of one? */
    char after[MQC_ID_BUF] = "";
    for (;;) {
        mqstore_conv_list l;
        if (mqstore_user_convs(c->store, a, after, 1000, &l)) return -1;
        int found = 0;
        for (size_t i = 0; !found && i < l.n; i++) {
            mqstore_member m;
            if (!mqc_conv_is_group(l.conv[i])) continue;
            e = mqstore_member_get(c->store, l.conv[i], b, &m);
            if (e && e != MQSTORE_ERR_NOTFOUND) found = -1;
            if (!e) found = 1;
        }
        int more = l.more && l.n > 0;
        if (l.n) snprintf(after, sizeof(after), "%s", l.conv[l.n - 1]);
        mqstore_conv_list_free(&l);
        if (found || !more) return found;
    }
}

int chat_presence_may_watch(chat *c, const char *watcher, const char *target,
                            const chat_presence_prefs *p, int *allowed, chat_status *st)
{
    *allowed = 1;
    if (strcmp(watcher, target) == 0 || p->visibility != VIS(CONTACTS)) return 0;
    int k = chat_contacts(c, watcher, target);
    if (k < 0) return chat_fail(st, EC(UNAVAILABLE), "cannot read conversations; retry");
    *allowed = k;
    return 0;
}
