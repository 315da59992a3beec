/* push — push tokens, and the push jobs a message writes (docs/PUSH.md).
 *
 * A device registers one token (APNs or FCM; core/wire.c checked its
 * syntax); a refresh replaces it, unregister removes it. When a message is
 * stored, chat_send asks chat_push_jobs for the jobs that go into the same
 * store batch: in a small conversation one per device of every other
 * member that has a token and is not connected here now; in a large one a
 * single job naming the conversation, which the plugin's drain thread
 * expands later, collapsed per member device (push/drain.c). So no push
 * is lost with the broker (the jobs are in the batch) and a large
 * conversation still writes nothing per member per message.
 *
 * A job is field\0value\0... pairs, the stream entry's fields; the store
 * appends the message's seq and time (mqstore_append.jobs_name_message)
 * and the drain thread adds the job id. Metadata only: the body goes into
 * `preview` only when the operator enabled previews and the message is
 * plain text (never for content types that say they are encrypted). */
#include "rules_int.h"
#include "job.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PREVIEW_MAX 120

int chat_push_register(chat *c, const chat_caller *who, const Mqchat__V1__PushTokenRegister *p,
                       chat_status *st)
{
    if (!who->device) return chat_fail(st, EC(INVALID_ARGUMENT), "a token belongs to a device");
    mqstore_err e = mqstore_push_token_put(c->store, who->user, who->device, (uint32_t)p->platform,
                                           p->token, p->app_id);
    return e ? chat_store_fail(st, e, EC(INTERNAL)) : 0;
}

int chat_push_unregister(chat *c, const chat_caller *who, chat_status *st)
{
    if (!who->device) return chat_fail(st, EC(INVALID_ARGUMENT), "a token belongs to a device");
    mqstore_err e = mqstore_push_token_delete(c->store, who->user, who->device, NULL, NULL);
    return e ? chat_store_fail(st, e, EC(INTERNAL)) : 0;
}

void chat_push_free(chat_push *p)
{
    for (size_t i = 0; i < p->n; i++)
        free((void *)p->jobs[i].data);
    free(p->jobs);
    memset(p, 0, sizeof(*p));
}

/* A growing field\0value\0 buffer. */
typedef struct job_buf {
    char *b;
    size_t len, cap;
    int oom;
} job_buf;

static void field(job_buf *j, const char *name, const char *value)
{
    size_t need = strlen(name) + strlen(value) + 2;
    if (j->len + need > j->cap) {
        size_t cap = (j->len + need) * 2;
        char *b = realloc(j->b, cap);
        if (!b) {
            j->oom = 1;
            return;
        }
        j->b = b;
        j->cap = cap;
    }
    memcpy(j->b + j->len, name, strlen(name) + 1);
    j->len += strlen(name) + 1;
    memcpy(j->b + j->len, value, strlen(value) + 1);
    j->len += strlen(value) + 1;
}

static int add_job(chat_push *out, job_buf *j)
{
    if (j->oom) {
        free(j->b);
        return -1;
    }
    mqstore_blob *jobs = realloc(out->jobs, (out->n + 1) * sizeof(*jobs));
    if (!jobs) {
        free(j->b);
        return -1;
    }
    out->jobs = jobs;
    out->jobs[out->n++] = (mqstore_blob){j->b, j->len};
    return 0;
}

/* One collapse key per conversation, at most 64 bytes (APNs' limit). */
static void collapse_key(const char *conv, char out[65])
{
    if (strlen(conv) <= 64) {
        snprintf(out, 65, "%s", conv);
        return;
    }
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)conv, strlen(conv), md);
    strcpy(out, "h:");
    for (int i = 0; i < 31; i++)
        snprintf(out + 2 + 2 * i, 3, "%02x", md[i]);
}

/* 1 if the n bytes are UTF-8 (no NUL). */
static int utf8_ok(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!c || !k || i + k > n) return 0;
        for (size_t j = 1; j < k; j++)
            if ((s[i + j] & 0xc0) != 0x80) return 0;
        i += k;
    }
    return 1;
}

/* The preview of a plain-text body, cut at a character boundary; "" when
 * previews are off or the content is not plain text. */
static void preview_of(chat *c, const Mqchat__V1__SendRequest *req, char out[PREVIEW_MAX + 1])
{
    out[0] = '\0';
    const char *ct = req->content_type;
    if (!c->cfg->push_preview || strstr(ct, "encrypted") ||
        (strcmp(ct, "text/plain") != 0 && strncmp(ct, "text/plain;", 11) != 0))
        return;
    if (!utf8_ok(req->body.data, req->body.len)) return;
    size_t n = req->body.len < PREVIEW_MAX ? req->body.len : PREVIEW_MAX;
    while (n > 0 && n < req->body.len && (req->body.data[n] & 0xc0) == 0x80)
        n--; /* do not cut a character in two */
    memcpy(out, req->body.data, n);
    out[n] = '\0';
}

/* The common fields of a job about this message. */
static void message_fields(job_buf *j, const chat_caller *who, const char *conv,
                           const char *collapse, const char *preview)
{
    field(j, "v", "1");
    field(j, "conv", conv);
    field(j, "sender", who->user);
    field(j, "collapse", collapse);
    field(j, "badge", "");
    field(j, "prio", "high");
    if (preview[0]) field(j, "preview", preview);
}

/* Jobs for every device of `user` with a token that is not connected. */
static int user_jobs(chat *c, const chat_caller *who, const char *user, const char *conv,
                     const char *collapse, const char *preview, chat_push *out)
{
    mqstore_push_token_list l;
    if (mqstore_push_tokens(c->store, user, &l)) return -1;
    int rc = 0;
    for (size_t i = 0; !rc && i < l.n; i++) {
        const mqstore_push_token *t = &l.items[i];
        const char *platform = push_platform_name(t->platform);
        if (!platform || (c->online && c->online(c->online_data, user, t->device))) continue;
        job_buf j = {0};
        field(&j, "kind", "device");
        message_fields(&j, who, conv, collapse, preview);
        field(&j, "platform", platform);
        field(&j, "token", t->token);
        field(&j, "app", t->app);
        field(&j, "user", user);
        field(&j, "device", t->device);
        rc = add_job(out, &j);
    }
    mqstore_push_token_list_free(&l);
    return rc;
}

int chat_push_jobs(chat *c, const chat_caller *who, const Mqchat__V1__SendRequest *req,
                   chat_push *out)
{
    memset(out, 0, sizeof(*out));
    if (!c->push_on || (c->push_blocked && c->push_blocked(c->push_data))) return 0;
    const char *conv = req->conversation_id;
    char collapse[65], preview[PREVIEW_MAX + 1];
    collapse_key(conv, collapse);
    preview_of(c, req, preview);
    int large = 0;
    mqstore_err e = mqstore_conv_large(c->store, conv, &large);
    if (e && e != MQSTORE_ERR_NOTFOUND) return -1;
    if (!e && large) {
        /* One job for the whole conversation: expanded later, collapsed. */
        job_buf j = {0};
        field(&j, "kind", "large");
        message_fields(&j, who, conv, collapse, preview);
        return add_job(out, &j);
    }
    char ua[MQC_ID_BUF], ub[MQC_ID_BUF];
    int rc = 0;
    if (mqc_conv_direct(conv, ua, ub) == 0) {
        /* A 1:1 conversation (perhaps created by this very message). */
        const char *other = strcmp(who->user, ua) == 0 ? ub : ua;
        if (strcmp(other, who->user) != 0)
            rc = user_jobs(c, who, other, conv, collapse, preview, out);
    } else if (!e) {
        mqstore_member_list ml;
        if (mqstore_members_list(c->store, conv, &ml)) return -1;
        for (size_t i = 0; !rc && i < ml.n; i++)
            if (strcmp(ml.items[i].user, who->user) != 0)
                rc = user_jobs(c, who, ml.items[i].user, conv, collapse, preview, out);
        mqstore_member_list_free(&ml);
    }
    if (rc) chat_push_free(out);
    return rc;
}
