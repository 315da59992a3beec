/* read — pages of messages (inbox sync, history, single gets) and the
 * user's conversation list. Readers take no lock: RocksDB reads are
 * thread-safe and every page is built from one consistent iterator plus
 * point gets of immutable message records (a message, once written at
 * (conv, seq), never changes). */
#include "store_int.h"
#include "codec.h"

#include <stdlib.h>
#include <string.h>

void mqstore_page_free(mqstore_page *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->n; i++)
        free(p->items[i].payload);
    free(p->items);
    memset(p, 0, sizeof(*p));
}

void mqstore_conv_list_free(mqstore_conv_list *l)
{
    if (!l) return;
    free(l->conv);
    free(l->role);
    memset(l, 0, sizeof(*l));
}

static mqstore_err page_grow(mqstore_page *p, size_t *cap)
{
    if (p->n < *cap) return MQSTORE_OK;
    size_t ncap = *cap ? *cap * 2 : 16;
    mqstore_msg *items = realloc(p->items, ncap * sizeof(*items));
    if (!items) return MQSTORE_ERR_NOMEM;
    p->items = items;
    *cap = ncap;
    return MQSTORE_OK;
}

/* Decode a MsgRecord into page item `m` (conv and seq already set). */
static mqstore_err fill_msg(mqstore_msg *m, const char *val, size_t len)
{
    Mqstore__Rec__MsgRecord *r;
    mqstore_err e = codec_msg(val, len, &r);
    if (e) return e;
    strcpy(m->sender_user, r->sender_user);
    strcpy(m->sender_device, r->sender_device);
    strcpy(m->client_msg_id, r->client_msg_id);
    m->server_time_ms = r->server_time_ms;
    m->kind = r->kind;
    m->payload_len = r->payload.len;
    m->payload = malloc(r->payload.len ? r->payload.len : 1);
    if (!m->payload)
        e = MQSTORE_ERR_NOMEM;
    else if (r->payload.len)
        memcpy(m->payload, r->payload.data, r->payload.len);
    mqstore__rec__msg_record__free_unpacked(r, NULL);
    return e;
}

static void msg_key(key *k, const char *conv, uint64_t seq)
{
    key_reset(k);
    key_id(k, conv);
    key_u64(k, seq);
}

/* Append message (conv, seq) to the page; NOTFOUND if it is not stored. */
static mqstore_err page_add(mqstore *s, mqstore_page *p, size_t *cap, const char *conv,
                            uint64_t seq, uint64_t inbox_seq)
{
    mqstore_err e = page_grow(p, cap);
    if (e) return e;
    key k;
    msg_key(&k, conv, seq);
    char *val;
    size_t len;
    if ((e = store_get(s, CF_MSGS, &k, &val, &len))) return e;
    if (!val) return MQSTORE_ERR_NOTFOUND;
    mqstore_msg *m = &p->items[p->n];
    memset(m, 0, sizeof(*m));
    strcpy(m->conv, conv);
    m->seq = seq;
    m->inbox_seq = inbox_seq;
    e = fill_msg(m, val, len);
    rocksdb_free(val);
    if (!e)
        p->n++;
    else
        free(m->payload);
    return e;
}

mqstore_err mqstore_msg_get(mqstore *s, const char *conv, uint64_t seq, mqstore_page *out)
{
    if (!out) return MQSTORE_ERR_INVAL;
    memset(out, 0, sizeof(*out));
    if (!s || !mqc_id_valid(MQC_ID_KEY, conv) || seq == 0) return MQSTORE_ERR_INVAL;
    size_t cap = 0;
    mqstore_err e = page_add(s, out, &cap, conv, seq, 0);
    if (e) mqstore_page_free(out);
    return e;
}

mqstore_err mqstore_inbox_read(mqstore *s, const char *user, uint64_t after, size_t limit,
                               size_t max_bytes, mqstore_page *out)
{
    if (!out) return MQSTORE_ERR_INVAL;
    memset(out, 0, sizeof(*out));
    if (!s || !mqc_id_valid(MQC_ID_KEY, user) || limit < 1 || limit > 10000 || after == UINT64_MAX)
        return MQSTORE_ERR_INVAL;
    key lo, hi, start;
    key_reset(&lo);
    key_id(&lo, user);
    key_prefix_end(&lo, &hi);
    start = lo;
    key_u64(&start, after + 1);
    range_iter r;
    range_open(s, CF_INBOX, &r, &lo, &hi);
    size_t cap = 0, bytes = 0;
    mqstore_err e = MQSTORE_OK;
    for (rocksdb_iter_seek(r.it, start.buf, start.len); rocksdb_iter_valid(r.it);
         rocksdb_iter_next(r.it)) {
        if (out->n >= limit || (out->n > 0 && bytes >= max_bytes)) {
            out->more = 1;
            break;
        }
        size_t klen, vlen;
        const char *k = rocksdb_iter_key(r.it, &klen);
        const char *v = rocksdb_iter_value(r.it, &vlen);
        if (klen != lo.len + 8) {
            e = MQSTORE_ERR_CORRUPT;
            break;
        }
        Mqstore__Rec__InboxEntry *ie;
        if ((e = codec_inbox(v, vlen, &ie))) break;
        e = page_add(s, out, &cap, ie->conv, ie->seq, get_be64(k + lo.len));
        mqstore__rec__inbox_entry__free_unpacked(ie, NULL);
        /* An inbox entry always points at a message written in the same
         * batch; a missing message means the store is damaged. */
        if (e == MQSTORE_ERR_NOTFOUND) e = MQSTORE_ERR_CORRUPT;
        if (e) break;
        bytes += out->items[out->n - 1].payload_len;
    }
    e = range_close(&r, e);
    if (e) mqstore_page_free(out);
    return e;
}

mqstore_err mqstore_inbox_head(mqstore *s, const char *user, uint64_t *head)
{
    if (!s || !mqc_id_valid(MQC_ID_KEY, user) || !head) return MQSTORE_ERR_INVAL;
    return inbox_head_get(s, user, head, 0);
}

mqstore_err mqstore_history_read(mqstore *s, const char *conv, uint64_t before, size_t limit,
                                 mqstore_page *out)
{
    if (!out) return MQSTORE_ERR_INVAL;
    memset(out, 0, sizeof(*out));
    if (!s || !mqc_id_valid(MQC_ID_KEY, conv) || limit < 1 || limit > 10000) return MQSTORE_ERR_INVAL;
    if (before == 1) return MQSTORE_OK; /* nothing is below seq 1 */
    key lo, hi, start;
    key_reset(&lo);
    key_id(&lo, conv);
    key_prefix_end(&lo, &hi);
    start = lo;
    key_u64(&start, before ? before - 1 : UINT64_MAX);
    range_iter r;
    range_open(s, CF_MSGS, &r, &lo, &hi);
    size_t cap = 0;
    mqstore_err e = MQSTORE_OK;
    for (rocksdb_iter_seek_for_prev(r.it, start.buf, start.len); rocksdb_iter_valid(r.it);
         rocksdb_iter_prev(r.it)) {
        if (out->n >= limit) {
            out->more = 1;
            break;
        }
        size_t klen, vlen;
        const char *k = rocksdb_iter_key(r.it, &klen);
        const char *v = rocksdb_iter_value(r.it, &vlen);
        if (klen != lo.len + 8) {
            e = MQSTORE_ERR_CORRUPT;
            break;
        }
        if ((e = page_grow(out, &cap))) break;
        mqstore_msg *m = &out->items[out->n];
        memset(m, 0, sizeof(*m));
        strcpy(m->conv, conv);
        m->seq = get_be64(k + lo.len);
        if ((e = fill_msg(m, v, vlen))) {
            free(m->payload);
            break;
        }
        out->n++;
    }
    e = range_close(&r, e);
    if (e) mqstore_page_free(out);
    return e;
}

mqstore_err mqstore_user_convs(mqstore *s, const char *user, const char *after, size_t limit,
                               mqstore_conv_list *out)
{
    if (!out) return MQSTORE_ERR_INVAL;
    memset(out, 0, sizeof(*out));
    if (!s || !mqc_id_valid(MQC_ID_KEY, user) || limit < 1 || limit > 1000 ||
        (after && after[0] && !mqc_id_valid(MQC_ID_KEY, after)))
        return MQSTORE_ERR_INVAL;
    key lo, hi, start;
    key_reset(&lo);
    key_tag(&lo, 'u');
    key_id(&lo, user);
    key_prefix_end(&lo, &hi);
    start = lo;
    if (after && after[0]) {
        /* The first key after "after" itself: after + '\0' sorts right after
         * every key equal to `after`, before any longer id. */
        key_raw(&start, after);
        start.buf[start.len++] = '\0';
    }
    out->conv = malloc(limit * sizeof(*out->conv));
    out->role = malloc(limit * sizeof(*out->role));
    if (!out->conv || !out->role) {
        mqstore_conv_list_free(out);
        return MQSTORE_ERR_NOMEM;
    }
    range_iter r;
    range_open(s, CF_MEMBERS, &r, &lo, &hi);
    mqstore_err e = MQSTORE_OK;
    for (rocksdb_iter_seek(r.it, start.buf, start.len); rocksdb_iter_valid(r.it);
         rocksdb_iter_next(r.it)) {
        if (out->n >= limit) {
            out->more = 1;
            break;
        }
        size_t klen, vlen;
        const char *k = rocksdb_iter_key(r.it, &klen);
        const char *v = rocksdb_iter_value(r.it, &vlen);
        size_t clen = klen - lo.len;
        if (clen < 1 || clen > MQC_ID_MAX) {
            e = MQSTORE_ERR_CORRUPT;
            break;
        }
        Mqstore__Rec__MemberRecord *m;
        if ((e = codec_member(v, vlen, &m))) break;
        memcpy(out->conv[out->n], k + lo.len, clen);
        out->conv[out->n][clen] = '\0';
        out->role[out->n] = (mqstore_role)m->role;
        out->n++;
        mqstore__rec__member_record__free_unpacked(m, NULL);
    }
    e = range_close(&r, e);
    if (e) mqstore_conv_list_free(out);
    return e;
}
