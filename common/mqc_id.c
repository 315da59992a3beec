/* mqc_id — identifier syntax. See mqc_id.h for the table of kinds. */
#include "mqc_id.h"

#include <string.h>

static int is_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* 1..max bytes, each alphanumeric or one of `extra`. */
static int plain(const char *s, size_t max, const char *extra)
{
    size_t n = 0;
    for (; s[n]; n++) {
        if (n >= max) return 0;
        if (!is_alnum(s[n]) && !strchr(extra, s[n])) return 0;
    }
    return n > 0;
}

int mqc_conv_direct(const char *conv, char a[MQC_ID_BUF], char b[MQC_ID_BUF])
{
    if (!conv || strncmp(conv, "d:", 2) != 0) return -1;
    const char *sep = strchr(conv + 2, ':');
    if (!sep) return -1;
    size_t na = (size_t)(sep - (conv + 2)), nb = strlen(sep + 1);
    if (na == 0 || na > MQC_ID_MAX || nb == 0 || nb > MQC_ID_MAX) return -1;
    memcpy(a, conv + 2, na);
    a[na] = '\0';
    memcpy(b, sep + 1, nb + 1);
    /* a == b is the user's notes-to-self conversation (one member). */
    if (!mqc_id_valid(MQC_ID_USER, a) || !mqc_id_valid(MQC_ID_USER, b) || strcmp(a, b) > 0)
        return -1;
    return 0;
}

int mqc_client_id_is_chat(const char *client_id)
{
    if (!client_id) return 0;
    const char *sep = strchr(client_id, ':');
    if (!sep || (size_t)(sep - client_id) > MQC_ID_MAX) return 0;
    char user[MQC_ID_BUF];
    memcpy(user, client_id, (size_t)(sep - client_id));
    user[sep - client_id] = '\0';
    return mqc_id_valid(MQC_ID_USER, user) && mqc_id_valid(MQC_ID_DEVICE, sep + 1);
}

int mqc_conv_is_group(const char *conv)
{
    return conv && strncmp(conv, "g:", 2) == 0;
}

int mqc_id_valid(mqc_id_kind kind, const char *s)
{
    char a[MQC_ID_BUF], b[MQC_ID_BUF];
    if (!s) return 0;
    switch (kind) {
    case MQC_ID_USER:
    case MQC_ID_DEVICE:
        return plain(s, MQC_ID_MAX, "._-");
    case MQC_ID_CLIENT:
    case MQC_ID_KEY:
        return plain(s, MQC_ID_MAX, "._:-");
    case MQC_ID_CONV:
        if (mqc_conv_is_group(s)) return plain(s + 2, MQC_GROUP_ID_MAX, "");
        /* Conversation ids are store keys: 128 bytes at most, so a 1:1 id
         * needs its two user ids to add up to 124 bytes or less. */
        return strlen(s) <= MQC_ID_MAX && mqc_conv_direct(s, a, b) == 0;
    }
    return 0;
}
