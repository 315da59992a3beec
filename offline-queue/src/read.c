/* read — pages of messages (inbox sync, history, single gets) and the
 * user's conversation list. Readers take no lock: RocksDB reads are
 * thread-safe and every page is built from one consistent iterator plus
 * point gets of message records. A message, once written at (conv, seq),
 * changes only as a whole: an edit replaces its payload, retention makes
 * it a stub or removes it, an erasure replaces its payload.
 *
 * A message retention removed (or mqstore_conv_delete deleted) is still
 * an item wherever something points at it — an inbox entry, a seq asked
 * for — marked expired, with no payload: devices track seqs, and a seq
 * that silently vanished would look like a lost message. */
#include "store_int.h"
#include "codec.h"

#include <stdlib.h>
#include <stdint.h>
#include <string.h>

void mqstore_page_free(mqstore_page *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->n; i++)
        free(p->items[i].payload);
    free(p->items);
    memset(p, 0, sizeof(*p));
}

mqstore_err conv_list_alloc(mqstore_conv_list *out, size_t limit)
{
    out->conv = malloc(limit * sizeof(*out->conv));
    out->role = malloc(limit * sizeof(*out->role));
    out->joined_seq = malloc(limit * sizeof(*out->joined_seq));
    if (out->conv && out->role && out->joined_seq) return MQSTORE_OK;
    mqstore_conv_list_free(out);
    return MQSTORE_ERR_NOMEM;
}

void mqstore_conv_list_free(mqstore_conv_list *l)
{
    if (!l) return;
    free(l->conv);
    free(l->role);
    free(l->joined_seq);
    memset(l, 0, sizeof(*l));
}

/* Make room for one more item in the page. */
mqstore_err page_grow(mqstore_page *p, size_t *cap)
{
    if (p->n < *cap) return MQSTORE_OK;
    size_t ncap = *cap ? *cap * 2 : 16;
    mqstore_msg *items = realloc(p->items, ncap * sizeof(*items));
    if (!items) return MQSTORE_ERR_NOMEM;
    p->items = items;
    *cap = ncap;
    return MQSTORE_OK;
}

/* Copy a decoded MsgRecord into page item `m` (conv and seq already set). */
static mqstore_err fill_msg(mqstore_msg *m, const Mqstore__Rec__MsgRecord *r)
{
    strcpy(m->sender_user, r->sender_user);
    strcpy(m->sender_device, r->sender_device);
    strcpy(m->client_msg_id, r->client_msg_id);
    m->server_time_ms = r->server_time_ms;
    m->kind = r->kind;
    m->expired = r->expired;
    m->payload_len = r->payload.len;
    m->payload = malloc(r->payload.len ? r->payload.len : 1);
    if (!m->payload) return MQSTORE_ERR_NOMEM;
    if (r->payload.len) memcpy(m->payload, r->payload.data, r->payload.len);
    return MQSTORE_OK;
}

/* Append message (conv, seq) to the page from its decoded record; the page
 * has room (page_grow). */
mqstore_err page_put(mqstore_page *p, const char *conv, uint64_t seq, uint64_t inbox_seq,
                     const Mqstore__Rec__MsgRecord *r)
{
    mqstore_msg *m = &p->items[p->n];
    memset(m, 0, sizeof(*m));
    strcpy(m->conv, conv);
    m->seq = seq;
    m->inbox_seq = inbox_seq;
    mqstore_err e = fill_msg(m, r);
    if (!e) p->n++;
    return e;
}

/* An expired item for message (conv, seq), which is gone: what points at
 * it (the inbox entry, if any) says when it was written. The page has
 * room (page_grow). */
static void page_put_gone(mqstore_page *p, const char *conv, uint64_t seq, uint64_t inbox_seq,
                          int64_t time_ms)
{
    mqstore_msg *m = &p->items[p->n++];
    memset(m, 0, sizeof(*m));
    strcpy(m->conv, conv);
    m->seq = seq;
    m->inbox_seq = inbox_seq;
    m->server_time_ms = time_ms;
    m->expired = 1;
}

/* msgs conv \0 be64(seq). */
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
    Mqstore__Rec__MsgRecord *r = codec_get(s, CF_MSGS, &k, REC_MSG, &e);
    if (!r) return e ? e : MQSTORE_ERR_NOTFOUND;
    e = page_put(p, conv, seq, inbox_seq, r);
    codec_free(r);
    return e;
}

mqstore_err mqstore_msg_get(mqstore *s, const char *conv, uint64_t seq, mqstore_page *out)
{
    if (!out) return MQSTORE_ERR_INVAL;
    memset(out, 0, sizeof(*out));
    if (!s || !mqc_id_valid(MQC_ID_KEY, conv) || seq == 0) return MQSTORE_ERR_INVAL;
    size_t cap = 0;
    mqstore_err e = page_add(s, out, &cap, conv, seq, 0);
    if (e == MQSTORE_ERR_NOTFOUND) {
        /* Seqs have no holes: one at or below the head existed and is gone. */
        conv_state cs;
        mqstore_err ce = conv_state_get(s, conv, &cs, 0);
        if (ce)
            e = ce;
        else if (cs.exists && seq <= cs.head) {
            page_put_gone(out, conv, seq, 0, 0);
            e = MQSTORE_OK;
        }
    }
    if (e) mqstore_page_free(out);
    return e;
}

/* mqstore_inbox_read's scan: the page being filled and its limits. */
typedef struct inbox_scan {
    mqstore *s;
    mqstore_page *out;
    size_t cap, limit, max_bytes, bytes;
    size_t plen; /* user \0 */
} inbox_scan;

/* Add the message of one inbox row to the page, or stop at the page's
 * limits (a store_scan callback). */
static int inbox_row(void *data, const char *k, size_t klen, const char *v, size_t vlen)
{
    inbox_scan *is = data;
    mqstore_page *out = is->out;
    if (out->n >= is->limit || (out->n > 0 && is->bytes >= is->max_bytes)) {
        out->more = 1;
        return SCAN_STOP;
    }
    if (klen != is->plen + 8) return MQSTORE_ERR_CORRUPT;
    Mqstore__Rec__InboxEntry *ie = codec_decode(REC_INBOX, v, vlen);
    if (!ie) return MQSTORE_ERR_CORRUPT;
    uint64_t inbox_seq = get_be64(k + is->plen);
    mqstore_err e = page_add(is->s, out, &is->cap, ie->conv, ie->seq, inbox_seq);
    /* An inbox entry points at a message written in the same batch: if it
     * is missing, retention removed it or its conversation was deleted. */
    if (e == MQSTORE_ERR_NOTFOUND) {
        page_put_gone(out, ie->conv, ie->seq, inbox_seq, ie->time_ms);
        e = MQSTORE_OK;
    }
    codec_free(ie);
    if (e) return e;
    is->bytes += out->items[out->n - 1].payload_len;
    return SCAN_NEXT;
}

mqstore_err mqstore_inbox_read(mqstore *s, const char *user, uint64_t after, size_t limit,
                               size_t max_bytes, mqstore_page *out)
{
    if (!out) return MQSTORE_ERR_INVAL;
    memset(out, 0, sizeof(*out));
    if (!s || !mqc_id_valid(MQC_ID_KEY, user) || limit < 1 || limit > 10000 || after == UINT64_MAX)
        return MQSTORE_ERR_INVAL;
    key lo, hi, from;
    key_reset(&lo);
    key_id(&lo, user);
    key_prefix_end(&lo, &hi);
    from = lo;
    key_u64(&from, after + 1);
    inbox_scan is = {s, out, 0, limit, max_bytes, 0, lo.len};
    mqstore_err e = store_scan(s, CF_INBOX, &lo, &hi, &from, SCAN_FORWARD, inbox_row, &is);
    if (e) mqstore_page_free(out);
    return e;
}

mqstore_err mqstore_inbox_head(mqstore *s, const char *user, uint64_t *head)
{
    if (!s || !mqc_id_valid(MQC_ID_KEY, user) || !head) return MQSTORE_ERR_INVAL;
    return inbox_head_get(s, user, head, 0);
}

/* mqstore_history_read's scan: the page being filled, newest first. */
typedef struct history_scan {
    mqstore_page *out;
    size_t cap, limit, max_bytes, bytes;
    const char *conv;
    size_t plen; /* conv \0 */
} history_scan;

/* Add one log row to the page, or stop at the limit (a store_scan
 * callback). */
static int history_row(void *data, const char *k, size_t klen, const char *v, size_t vlen)
{
    history_scan *hs = data;
    mqstore_page *out = hs->out;
    if (out->n >= hs->limit || (out->n > 0 && hs->bytes >= hs->max_bytes)) {
        out->more = 1;
        return SCAN_STOP;
    }
    if (klen != hs->plen + 8) return MQSTORE_ERR_CORRUPT;
    mqstore_err e = page_grow(out, &hs->cap);
    if (e) return e;
    Mqstore__Rec__MsgRecord *r = codec_decode(REC_MSG, v, vlen);
    if (!r) return MQSTORE_ERR_CORRUPT;
    e = page_put(out, hs->conv, get_be64(k + hs->plen), 0, r);
    codec_free(r);
    if (!e) hs->bytes += out->items[out->n - 1].payload_len;
    return e;
}

mqstore_err mqstore_history_read(mqstore *s, const char *conv, uint64_t before, size_t limit,
                                 mqstore_page *out)
{
    return mqstore_history_read_bytes(s, conv, before, limit, SIZE_MAX, out);
}

mqstore_err mqstore_history_read_bytes(mqstore *s, const char *conv, uint64_t before, size_t limit,
                                       size_t max_bytes, mqstore_page *out)
{
    if (!out) return MQSTORE_ERR_INVAL;
    memset(out, 0, sizeof(*out));
    if (!s || !mqc_id_valid(MQC_ID_KEY, conv) || limit < 1 || limit > 10000)
        return MQSTORE_ERR_INVAL;
    if (before == 1) return MQSTORE_OK; /* nothing is below seq 1 */
    key lo, hi, from;
    key_reset(&lo);
    key_id(&lo, conv);
    key_prefix_end(&lo, &hi);
    from = lo;
    key_u64(&from, before ? before - 1 : UINT64_MAX);
    history_scan hs = {out, 0, limit, max_bytes, 0, conv, lo.len};
    mqstore_err e = store_scan(s, CF_MSGS, &lo, &hi, &from, SCAN_BACKWARD, history_row, &hs);
    if (e) mqstore_page_free(out);
    return e;
}

/* mqstore_user_convs's scan: the list being filled. */
typedef struct convs_scan {
    mqstore_conv_list *out;
    size_t limit;
    size_t plen; /* 'u' user \0 */
} convs_scan;

/* Add one 'u' user \0 conv row to the list, or stop at the limit (a
 * store_scan callback). */
static int conv_row(void *data, const char *k, size_t klen, const char *v, size_t vlen)
{
    convs_scan *cs = data;
    mqstore_conv_list *out = cs->out;
    if (out->n >= cs->limit) {
        out->more = 1;
        return SCAN_STOP;
    }
    size_t clen = klen - cs->plen;
    if (clen < 1 || clen > MQC_ID_MAX) return MQSTORE_ERR_CORRUPT;
    Mqstore__Rec__MemberRecord *m = codec_decode(REC_MEMBER, v, vlen);
    if (!m) return MQSTORE_ERR_CORRUPT;
    memcpy(out->conv[out->n], k + cs->plen, clen);
    out->conv[out->n][clen] = '\0';
    out->role[out->n] = (mqstore_role)m->role;
    out->joined_seq[out->n] = m->joined_seq;
    out->n++;
    codec_free(m);
    return SCAN_NEXT;
}

mqstore_err mqstore_user_convs(mqstore *s, const char *user, const char *after, size_t limit,
                               mqstore_conv_list *out)
{
    if (!out) return MQSTORE_ERR_INVAL;
    memset(out, 0, sizeof(*out));
    if (!s || !mqc_id_valid(MQC_ID_KEY, user) || limit < 1 || limit > 1000 ||
        (after && after[0] && !mqc_id_valid(MQC_ID_KEY, after)))
        return MQSTORE_ERR_INVAL;
    mqstore_err e = conv_list_alloc(out, limit);
    if (e) return e;
    key lo, hi, from;
    key_page(&lo, &hi, &from, 'u', user, after);
    convs_scan cs = {out, limit, lo.len};
    e = store_scan(s, CF_MEMBERS, &lo, &hi, &from, SCAN_FORWARD, conv_row, &cs);
    if (e) mqstore_conv_list_free(out);
    return e;
}
