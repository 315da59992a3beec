/* pull — reading large conversations, and how far members got.
 *
 * A large conversation stores each message once (log.c). Each of its
 * members has a pull row, 'l' user \0 conv in the members CF: their window
 * on the conversation's log, from after from_seq (when they joined it or it
 * became large) to before left_seq (when they left; 0 while a member). Each
 * device has a position per conversation (positions CF): every message up
 * to it is accounted for. What a device still has to pull from a
 * conversation is the messages marked pulled (MsgRecord.pulled: written
 * while the conversation was large) in (position, end], where end is the
 * conversation's pull end clipped to the window. The inbox has the rest.
 *
 * So catching up costs one row per large conversation of the user
 * (mqstore_positions) plus the pages of those with news, never a row per
 * member. Read state (who read up to seq) is computed from the receipt
 * watermarks on request, one scan of the members and the receipts.
 *
 * Retention never removes a pulled message: it leaves a stub (retention.c),
 * which a pull returns as an expired item, so a device still accounts for
 * every seq. After mqstore_conv_delete nothing is left below its event (in
 * every member's inbox): a pull finds nothing and its `through` reaches
 * the window's end.
 *
 * Readers take no lock; position_ack takes write_lock for its
 * read-modify-write, like the cursors in state.c. */
#include "store_int.h"
#include "codec.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* 'l' user \0 conv. */
static void pull_key(key *k, const char *user, const char *conv)
{
    key_reset(k);
    key_tag(k, 'l');
    key_id(k, user);
    key_raw(k, conv);
}

/* positions user \0 device \0 conv. */
static void position_key(key *k, const char *user, const char *device, const char *conv)
{
    key_reset(k);
    key_id(k, user);
    key_id(k, device);
    key_raw(k, conv);
}

mqstore_err pull_row_get(mqstore *s, const char *user, const char *conv, uint64_t *from,
                         uint64_t *left, int *found)
{
    key k;
    pull_key(&k, user, conv);
    mqstore_err e;
    Mqstore__Rec__PullRecord *r = codec_get(s, CF_MEMBERS, &k, REC_PULL, &e);
    *found = r != NULL;
    *from = r ? r->from_seq : 0;
    *left = r ? r->left_seq : 0;
    codec_free(r);
    return e;
}

void pull_row_put(mqstore *s, rocksdb_writebatch_t *b, const char *user, const char *conv,
                  uint64_t from, uint64_t left)
{
    assert(left == 0 || left > from);
    Mqstore__Rec__PullRecord r = MQSTORE__REC__PULL_RECORD__INIT;
    r.from_seq = from;
    r.left_seq = left;
    uint8_t buf[32];
    /* The record fits buf: two varints. */
    assert(mqstore__rec__pull_record__get_packed_size(&r) <= sizeof(buf));
    size_t len = mqstore__rec__pull_record__pack(&r, buf);
    key k;
    pull_key(&k, user, conv);
    rocksdb_writebatch_put_cf(b, s->cf[CF_MEMBERS], k.buf, k.len, (const char *)buf, len);
}

/* The window of `user` on conv: pulling covers (from, end]. NOTMEMBER if
 * the user has no pull row there. */
static mqstore_err window(mqstore *s, const char *user, const char *conv, uint64_t *from,
                          uint64_t *end, uint64_t *head, int *member)
{
    uint64_t left;
    int found;
    mqstore_err e = pull_row_get(s, user, conv, from, &left, &found);
    if (e) return e;
    if (!found) return MQSTORE_ERR_NOTMEMBER;
    conv_state cs;
    if ((e = conv_state_get(s, conv, &cs, 0))) return e;
    if (!cs.exists) return MQSTORE_ERR_CORRUPT; /* a pull row outlived its conversation */
    *end = conv_pull_end(&cs);
    if (left && *end >= left) *end = left - 1;
    *head = cs.head;
    *member = left == 0;
    return MQSTORE_OK;
}

/* The device's stored position in conv (0 if none). */
static mqstore_err position_get(mqstore *s, const char *user, const char *device, const char *conv,
                                uint64_t *pos)
{
    key k;
    position_key(&k, user, device, conv);
    return store_get_u64(s, CF_POSITIONS, &k, pos, NULL);
}

void mqstore_position_list_free(mqstore_position_list *l)
{
    if (!l) return;
    free(l->items);
    memset(l, 0, sizeof(*l));
}

/* mqstore_positions' scan over the user's pull rows. */
typedef struct positions_scan {
    mqstore *s;
    const char *user, *device;
    mqstore_position_list *out;
    size_t limit;
    size_t plen; /* 'l' user \0 */
} positions_scan;

static int position_row(void *data, const char *k, size_t klen, const char *v, size_t vlen)
{
    positions_scan *ps = data;
    mqstore_position_list *out = ps->out;
    size_t clen = klen - ps->plen;
    if (clen < 1 || clen > MQC_ID_MAX) return MQSTORE_ERR_CORRUPT;
    Mqstore__Rec__PullRecord *r = codec_decode(REC_PULL, v, vlen);
    if (!r) return MQSTORE_ERR_CORRUPT;
    mqstore_position p;
    memcpy(p.conv, k + ps->plen, clen);
    p.conv[clen] = '\0';
    uint64_t from = r->from_seq, left = r->left_seq;
    codec_free(r);
    conv_state cs;
    mqstore_err e = conv_state_get(ps->s, p.conv, &cs, 0);
    if (e) return e;
    if (!cs.exists) return MQSTORE_ERR_CORRUPT;
    p.end = conv_pull_end(&cs);
    if (left && p.end >= left) p.end = left - 1;
    p.member = left == 0;
    uint64_t stored;
    if ((e = position_get(ps->s, ps->user, ps->device, p.conv, &stored))) return e;
    p.position = stored > from ? stored : from;
    if (p.end <= p.position) return SCAN_NEXT; /* nothing to pull here */
    if (out->n >= ps->limit) {
        out->more = 1;
        return SCAN_STOP;
    }
    /* limit <= 10000: the array was allocated for it. */
    out->items[out->n++] = p;
    return SCAN_NEXT;
}

mqstore_err mqstore_positions(mqstore *s, const char *user, const char *device, const char *after,
                              size_t limit, mqstore_position_list *out)
{
    if (!out) return MQSTORE_ERR_INVAL;
    memset(out, 0, sizeof(*out));
    if (!s || !mqc_id_valid(MQC_ID_KEY, user) || !mqc_id_valid(MQC_ID_KEY, device) || limit < 1 ||
        limit > 10000 || (after && after[0] && !mqc_id_valid(MQC_ID_KEY, after)))
        return MQSTORE_ERR_INVAL;
    if (!(out->items = malloc(limit * sizeof(*out->items)))) return MQSTORE_ERR_NOMEM;
    key lo, hi, from;
    key_page(&lo, &hi, &from, 'l', user, after);
    positions_scan ps = {s, user, device, out, limit, lo.len};
    mqstore_err e = store_scan(s, CF_MEMBERS, &lo, &hi, &from, SCAN_FORWARD, position_row, &ps);
    if (e) mqstore_position_list_free(out);
    return e;
}

/* mqstore_user_large_convs' scan over the user's pull rows. */
typedef struct large_scan {
    mqstore *s;
    mqstore_conv_list *out;
    size_t limit, plen;
} large_scan;

static int large_row(void *data, const char *k, size_t klen, const char *v, size_t vlen)
{
    large_scan *ls = data;
    mqstore_conv_list *out = ls->out;
    size_t clen = klen - ls->plen;
    if (clen < 1 || clen > MQC_ID_MAX) return MQSTORE_ERR_CORRUPT;
    Mqstore__Rec__PullRecord *r = codec_decode(REC_PULL, v, vlen);
    if (!r) return MQSTORE_ERR_CORRUPT;
    uint64_t left = r->left_seq;
    codec_free(r);
    if (left) return SCAN_NEXT; /* no longer a member */
    char conv[MQC_ID_BUF];
    memcpy(conv, k + ls->plen, clen);
    conv[clen] = '\0';
    conv_state cs;
    mqstore_err e = conv_state_get(ls->s, conv, &cs, 0);
    if (e) return e;
    if (!cs.large) return SCAN_NEXT;
    if (out->n >= ls->limit) {
        out->more = 1;
        return SCAN_STOP;
    }
    strcpy(out->conv[out->n], conv);
    out->role[out->n] = MQSTORE_ROLE_MEMBER; /* not looked up: see the member rows */
    out->joined_seq[out->n] = 0;
    out->n++;
    return SCAN_NEXT;
}

mqstore_err mqstore_user_large_convs(mqstore *s, const char *user, const char *after, size_t limit,
                                     mqstore_conv_list *out)
{
    if (!out) return MQSTORE_ERR_INVAL;
    memset(out, 0, sizeof(*out));
    if (!s || !mqc_id_valid(MQC_ID_KEY, user) || limit < 1 || limit > 10000 ||
        (after && after[0] && !mqc_id_valid(MQC_ID_KEY, after)))
        return MQSTORE_ERR_INVAL;
    mqstore_err e = conv_list_alloc(out, limit);
    if (e) return e;
    key lo, hi, from;
    key_page(&lo, &hi, &from, 'l', user, after);
    large_scan ls = {s, out, limit, lo.len};
    e = store_scan(s, CF_MEMBERS, &lo, &hi, &from, SCAN_FORWARD, large_row, &ls);
    if (e) mqstore_conv_list_free(out);
    return e;
}

/* mqstore_conv_pull's scan over the conversation's log. */
typedef struct pull_scan {
    mqstore_page *out;
    size_t cap, limit, max_bytes, bytes;
    size_t scanned, max_scan; /* rows looked at, fanned-out ones included */
    uint64_t end, through;
    const char *conv;
    size_t plen; /* conv \0 */
} pull_scan;

static int pull_msg_row(void *data, const char *k, size_t klen, const char *v, size_t vlen)
{
    pull_scan *ps = data;
    mqstore_page *out = ps->out;
    if (klen != ps->plen + 8) return MQSTORE_ERR_CORRUPT;
    uint64_t seq = get_be64(k + ps->plen);
    if (seq > ps->end) return SCAN_STOP;
    if (out->n >= ps->limit || (out->n > 0 && ps->bytes >= ps->max_bytes) ||
        ps->scanned >= ps->max_scan) {
        out->more = 1;
        return SCAN_STOP;
    }
    ps->scanned++;
    Mqstore__Rec__MsgRecord *r = codec_decode(REC_MSG, v, vlen);
    if (!r) return MQSTORE_ERR_CORRUPT;
    mqstore_err e = MQSTORE_OK;
    /* A message written while the conversation was small is in the inboxes. */
    if (r->pulled) {
        if (!(e = page_grow(out, &ps->cap))) e = page_put(out, ps->conv, seq, 0, r);
        if (!e) ps->bytes += out->items[out->n - 1].payload_len;
    }
    codec_free(r);
    if (!e) ps->through = seq;
    return e;
}

mqstore_err mqstore_conv_pull(mqstore *s, const char *conv, const char *user, uint64_t after,
                              size_t limit, size_t max_bytes, mqstore_page *out, uint64_t *through)
{
    if (!out) return MQSTORE_ERR_INVAL;
    memset(out, 0, sizeof(*out));
    if (!s || !mqc_id_valid(MQC_ID_KEY, conv) || !mqc_id_valid(MQC_ID_KEY, user) || limit < 1 ||
        limit > 10000 || !through || after == UINT64_MAX)
        return MQSTORE_ERR_INVAL;
    uint64_t from, end, head;
    int member;
    mqstore_err e = window(s, user, conv, &from, &end, &head, &member);
    if (e) return e;
    uint64_t lo_seq = after > from ? after : from;
    *through = lo_seq;
    if (lo_seq >= end) return MQSTORE_OK;
    key lo, hi, start;
    key_reset(&lo);
    key_id(&lo, conv);
    key_prefix_end(&lo, &hi);
    start = lo;
    key_u64(&start, lo_seq + 1);
    /* Skipping small-time messages costs a decode each: bound the rows a
     * page looks at, so a long small stretch takes several pages. */
    pull_scan ps = {out, 0, limit, max_bytes, 0, 0, limit * 8, end, lo_seq, conv, lo.len};
    e = store_scan(s, CF_MSGS, &lo, &hi, &start, SCAN_FORWARD, pull_msg_row, &ps);
    if (e) {
        mqstore_page_free(out);
        return e;
    }
    /* Nothing stopped the scan early: it accounted for the whole window. */
    if (!out->more) ps.through = end;
    *through = ps.through;
    return MQSTORE_OK;
}

mqstore_err mqstore_position_ack(mqstore *s, const char *user, const char *device, const char *conv,
                                 uint64_t seq, uint64_t *stored)
{
    if (!s || !mqc_id_valid(MQC_ID_KEY, user) || !mqc_id_valid(MQC_ID_KEY, device) ||
        !mqc_id_valid(MQC_ID_KEY, conv))
        return MQSTORE_ERR_INVAL;
    uint64_t from, end, head, pos;
    int member;
    mqstore_err e = window(s, user, conv, &from, &end, &head, &member);
    if (e) return e;
    if (seq > head) return MQSTORE_ERR_INVAL;
    key k;
    position_key(&k, user, device, conv);
    pthread_mutex_lock(&s->write_lock);
    e = store_get_u64(s, CF_POSITIONS, &k, &pos, NULL);
    if (!e && seq > pos) {
        /* Positions only grow (the read-modify-write is under write_lock). */
        char buf[8];
        put_be64(buf, seq);
        rocksdb_writebatch_t *b = rocksdb_writebatch_create();
        rocksdb_writebatch_put_cf(b, s->cf[CF_POSITIONS], k.buf, k.len, buf, 8);
        uint64_t ticket;
        e = store_write(s, b, &ticket);
        rocksdb_writebatch_destroy(b);
        if (!e) pos = seq;
    }
    pthread_mutex_unlock(&s->write_lock);
    if (!e && stored) *stored = pos;
    return e;
}

/* ---- read state ------------------------------------------------------------ */

void mqstore_read_state_free(mqstore_read_state *r)
{
    if (!r) return;
    free(r->readers);
    memset(r, 0, sizeof(*r));
}

/* mqstore_read_state_get's scan: receipts conv \0 user, merged with the
 * sorted member list. */
typedef struct rs_scan {
    const mqstore_member_list *members;
    size_t next; /* members[next..] are not yet passed */
    uint64_t seq;
    const char *exclude, *after;
    size_t limit;
    mqstore_read_state *out;
    size_t plen;
} rs_scan;

/* Whether a member counts for seq: joined at or before it, not excluded. */
static int counts(const rs_scan *rs, const mqstore_member *m)
{
    return m->joined_seq <= rs->seq && !(rs->exclude && strcmp(m->user, rs->exclude) == 0);
}

static int rs_row(void *data, const char *k, size_t klen, const char *v, size_t vlen)
{
    rs_scan *rs = data;
    size_t ulen = klen - rs->plen;
    if (ulen < 1 || ulen > MQC_ID_MAX) return MQSTORE_ERR_CORRUPT;
    char user[MQC_ID_BUF];
    memcpy(user, k + rs->plen, ulen);
    user[ulen] = '\0';
    /* Receipts are sorted like members: advance to this user. A receipt of
     * someone who is no longer a member does not count. */
    while (rs->next < rs->members->n && strcmp(rs->members->items[rs->next].user, user) < 0)
        rs->next++;
    if (rs->next >= rs->members->n || strcmp(rs->members->items[rs->next].user, user) != 0)
        return SCAN_NEXT;
    const mqstore_member *m = &rs->members->items[rs->next++];
    if (!counts(rs, m)) return SCAN_NEXT;
    Mqstore__Rec__ReceiptRecord *r = codec_decode(REC_RECEIPT, v, vlen);
    if (!r) return MQSTORE_ERR_CORRUPT;
    mqstore_read_state *out = rs->out;
    if (r->delivered >= rs->seq) out->delivered++;
    if (r->read >= rs->seq) {
        out->read++;
        if (!rs->after || strcmp(user, rs->after) > 0) {
            if (out->n < rs->limit)
                strcpy(out->readers[out->n++], user);
            else
                out->more = 1;
        }
    }
    codec_free(r);
    return SCAN_NEXT;
}

mqstore_err mqstore_read_state_get(mqstore *s, const char *conv, uint64_t seq, const char *exclude,
                                   const char *after, size_t limit, mqstore_read_state *out)
{
    if (!out) return MQSTORE_ERR_INVAL;
    memset(out, 0, sizeof(*out));
    if (!s || !mqc_id_valid(MQC_ID_KEY, conv) || seq == 0 || limit > 10000 ||
        (exclude && !mqc_id_valid(MQC_ID_KEY, exclude)) ||
        (after && after[0] && !mqc_id_valid(MQC_ID_KEY, after)))
        return MQSTORE_ERR_INVAL;
    conv_state cs;
    mqstore_err e = conv_state_get(s, conv, &cs, 0);
    if (e) return e;
    if (!cs.exists) return MQSTORE_ERR_NOTFOUND;
    if (seq > cs.head) return MQSTORE_ERR_INVAL;
    mqstore_member_list members;
    if ((e = mqstore_members_list(s, conv, &members))) return e;
    if (!(out->readers = malloc((limit ? limit : 1) * sizeof(*out->readers)))) {
        mqstore_member_list_free(&members);
        return MQSTORE_ERR_NOMEM;
    }
    rs_scan rs = {&members, 0, seq, exclude, after && after[0] ? after : NULL, limit, out, 0};
    for (size_t i = 0; i < members.n; i++)
        if (counts(&rs, &members.items[i])) out->members++;
    key lo, hi;
    key_reset(&lo);
    key_id(&lo, conv);
    key_prefix_end(&lo, &hi);
    rs.plen = lo.len;
    e = store_scan(s, CF_RECEIPTS, &lo, &hi, &lo, SCAN_FORWARD, rs_row, &rs);
    mqstore_member_list_free(&members);
    if (e) mqstore_read_state_free(out);
    return e;
}
