/* topics — parsing and building chat-namespace topics. See topics.h. */
#include "topics.h"

#include <stdio.h>
#include <string.h>

/* If `topic` is "{prefix}/rest", return rest; NULL otherwise. */
static const char *under_prefix(const char *prefix, const char *topic)
{
    size_t n = strlen(prefix);
    if (strncmp(topic, prefix, n) != 0) return NULL;
    if (topic[n] == '\0') return topic + n; /* the prefix itself */
    if (topic[n] != '/') return NULL;
    return topic + n + 1;
}

/* Copy the next level of *p (up to '/' or end) into dst; 0 if it is a
 * valid id. Advances *p past the level and its '/'. */
static int next_id(const char **p, char dst[MQC_ID_BUF])
{
    const char *s = *p;
    const char *e = strchr(s, '/');
    size_t n = e ? (size_t)(e - s) : strlen(s);
    if (n == 0 || n > MQC_ID_MAX) return -1;
    memcpy(dst, s, n);
    dst[n] = '\0';
    *p = e ? e + 1 : s + n;
    return mqc_id_valid(MQC_ID_USER, dst) ? 0 : -1;
}

static topic_leaf leaf_of(const char *s)
{
    static const struct {
        const char *name;
        topic_leaf leaf;
    } leaves[] = {{"send", LEAF_SEND},     {"req", LEAF_REQ}, {"receipt", LEAF_RECEIPT},
                  {"typing", LEAF_TYPING}, {"ack", LEAF_ACK}, {"resp", LEAF_RESP}};
    for (size_t i = 0; i < sizeof(leaves) / sizeof(leaves[0]); i++)
        if (strcmp(s, leaves[i].name) == 0) return leaves[i].leaf;
    return LEAF_UNKNOWN;
}

void topic_parse(const char *prefix, const char *topic, topic_info *out)
{
    memset(out, 0, sizeof(*out));
    const char *p = under_prefix(prefix, topic);
    if (!p) return; /* TOPIC_OUTSIDE */
    out->kind = TOPIC_INVALID;
    if (strchr(p, '+') || strchr(p, '#')) return;
    if (strncmp(p, "u/", 2) != 0) return;
    p += 2;
    if (next_id(&p, out->user)) return;
    if (strcmp(p, "inbox") == 0) {
        out->kind = TOPIC_INBOX;
        return;
    }
    if (strncmp(p, "d/", 2) != 0) return;
    p += 2;
    if (next_id(&p, out->device)) return;
    if (*p == '\0') {
        out->device[0] = '\0';
        return;
    }
    /* The leaf; anything deeper under a device is an unknown leaf of that
     * device (answered BAD_TOPIC), not a foreign topic. */
    out->kind = TOPIC_DEVICE;
    out->leaf = strchr(p, '/') ? LEAF_UNKNOWN : leaf_of(p);
}

static const char *strip_share(const char *filter)
{
    if (strncmp(filter, "$share/", 7) != 0) return filter;
    const char *rest = strchr(filter + 7, '/');
    return rest ? rest + 1 : filter + strlen(filter);
}

/* Level-by-level: could filter match some topic that starts with prefix?
 * Walk the prefix's levels against the filter's: '#' matches everything
 * below, '+' matches one level, anything else must be equal. */
int filter_touches_prefix(const char *prefix, const char *filter)
{
    const char *f = strip_share(filter);
    const char *p = prefix;
    for (;;) {
        const char *fe = strchr(f, '/');
        const char *pe = strchr(p, '/');
        size_t fl = fe ? (size_t)(fe - f) : strlen(f);
        size_t pl = pe ? (size_t)(pe - p) : strlen(p);
        if (fl == 1 && f[0] == '#') return 1;
        if (!(fl == 1 && f[0] == '+') && (fl != pl || strncmp(f, p, fl) != 0)) return 0;
        if (!pe) return 1; /* the filter reached the prefix's last level */
        if (!fe) return 0; /* the filter ends above the prefix */
        f = fe + 1;
        p = pe + 1;
    }
}

int filter_allowed(const char *prefix, const char *filter, const char *user, const char *device)
{
    if (strncmp(filter, "$share/", 7) == 0) return 0;
    static const char *const leaves[] = {"ack", "resp", "+", "#"};
    char buf[512];
    if (topic_inbox(buf, sizeof(buf), prefix, user) == 0 && strcmp(filter, buf) == 0) return 1;
    for (size_t i = 0; i < sizeof(leaves) / sizeof(leaves[0]); i++)
        if (topic_device(buf, sizeof(buf), prefix, user, device, leaves[i]) == 0 &&
            strcmp(filter, buf) == 0)
            return 1;
    return 0;
}

int topic_inbox(char *buf, size_t len, const char *prefix, const char *user)
{
    int n = snprintf(buf, len, "%s/u/%s/inbox", prefix, user);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

int topic_device(char *buf, size_t len, const char *prefix, const char *user, const char *device,
                 const char *leaf)
{
    int n = snprintf(buf, len, "%s/u/%s/d/%s/%s", prefix, user, device, leaf);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}
