/* erase — mqstore_user_erase: a user's data removed (GDPR erasure).
 *
 * What is the user's: the payloads of the messages they sent, and the
 * records keyed by them — inbox, inbox trim mark, cursors, positions,
 * dedup keys, push tokens, preferences, pull rows, receipts. The keyed
 * records go with range deletions of "user\0" (in the hinted inbox and
 * dedup column families too: a bare identifier is outside the hint domain,
 * INVARIANT in hint.cc) and a scan of the receipts (keyed conv \0 user).
 * The messages stay where they are, with their sender ids and envelopes —
 * seqs and history keep their shape — but their payload becomes the
 * caller's tombstone. There is no index by sender, so that is one pass over
 * the whole message log: the scan runs without the lock, collects up to
 * ERASE_BATCH candidates, and rewrites them under write_lock in one batch,
 * each re-read first (a concurrent mqstore_conv_delete may have deleted
 * it, and a put would bring it back); other writers get in between
 * batches.
 *
 * Precondition: the user is a member of no conversation (the caller
 * removes them first, with events), so nobody writes the user's records
 * meanwhile: the checks and counts before the deleting batch need no lock
 * held across them. */
#include "store_int.h"
#include "cache.h"
#include "codec.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define ERASE_BATCH 1000

/* The column families keyed user \0 ...: one range each. */
static const int by_user[] = {CF_INBOX, CF_CURSORS, CF_POSITIONS, CF_DEDUP, CF_TOKENS};
#define N_BY_USER (sizeof(by_user) / sizeof(by_user[0]))

/* [id\0, id\1): every key of a column family that starts with "id\0". */
static void id_range(key *lo, key *hi, const char *id)
{
    key_reset(lo);
    key_id(lo, id);
    key_prefix_end(lo, hi);
}

/* The whole key space of a column family (identifiers never start with
 * 0xff, and the outbox is not scanned here). */
static void all_range(key *lo, key *hi)
{
    key_reset(lo);
    key_reset(hi);
    hi->buf[hi->len++] = (char)0xff;
}

/* count_rows' scan. */
static int count_row(void *data, const char *k, size_t klen, const char *v, size_t vlen)
{
    (void)k, (void)klen, (void)v, (void)vlen;
    (*(uint64_t *)data)++;
    return SCAN_NEXT;
}

/* The number of keys in [lo, hi) of cf. */
static mqstore_err count_rows(mqstore *s, int cf, const key *lo, const key *hi, uint64_t *n)
{
    *n = 0;
    return store_scan(s, cf, lo, hi, lo, SCAN_FORWARD, count_row, n);
}

/* Whether the user is a member of some conversation ('u' user \0 rows). */
static int any_row(void *data, const char *k, size_t klen, const char *v, size_t vlen)
{
    *(int *)data = 1;
    return SCAN_STOP;
}

static mqstore_err is_member_anywhere(mqstore *s, const char *user, int *member)
{
    key lo, hi, from;
    key_page(&lo, &hi, &from, 'u', user, NULL);
    *member = 0;
    return store_scan(s, CF_MEMBERS, &lo, &hi, &from, SCAN_FORWARD, any_row, member);
}

/* ---- the user's keyed records ------------------------------------------- */

/* One batch deleting everything keyed by the user, written under
 * write_lock after checking the precondition again; the cached inbox head
 * goes with the inbox. */
static mqstore_err erase_keyed(mqstore *s, const char *user)
{
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    key lo, hi, k;
    id_range(&lo, &hi, user);
    /* The range deletions start at the bare "user\0", outside the hint
     * domains of the inbox and dedup CFs (INVARIANT in hint.cc). */
    assert(memchr(lo.buf, '\0', lo.len) == lo.buf + lo.len - 1);
    for (size_t i = 0; i < N_BY_USER; i++)
        rocksdb_writebatch_delete_range_cf(b, s->cf[by_user[i]], lo.buf, lo.len, hi.buf, hi.len);
    /* Pull rows: 'l' user \0 conv. */
    key plo, phi, from;
    key_page(&plo, &phi, &from, 'l', user, NULL);
    rocksdb_writebatch_delete_range_cf(b, s->cf[CF_MEMBERS], plo.buf, plo.len, phi.buf, phi.len);
    /* heads 't' user (trim mark) and 'p' user (preferences); not 'r' user. */
    static const char tags[] = {'t', 'p'};
    for (size_t i = 0; i < sizeof(tags); i++) {
        key_reset(&k);
        key_tag(&k, tags[i]);
        key_raw(&k, user);
        rocksdb_writebatch_delete_cf(b, s->cf[CF_HEADS], k.buf, k.len);
    }
    uint64_t ticket;
    int member;
    pthread_mutex_lock(&s->write_lock);
    mqstore_err e = is_member_anywhere(s, user, &member);
    if (!e && member) e = MQSTORE_ERR_EXISTS;
    if (!e) e = store_write(s, b, &ticket);
    if (!e) {
        /* The inbox is gone: its seqs start again from 1 (its cursors are
         * gone too). */
        key_reset(&k);
        key_tag(&k, 'i');
        key_raw(&k, user);
        cache_head_drop(s, &k);
    }
    pthread_mutex_unlock(&s->write_lock);
    rocksdb_writebatch_destroy(b);
    return e;
}

/* ---- receipts: conv \0 user ------------------------------------------------ */

typedef struct receipt_scan {
    mqstore *s;
    const char *user;
    size_t ulen;
    rocksdb_writebatch_t *b;
    size_t n;
} receipt_scan;

/* Delete one receipts row if it is the user's; write every ERASE_BATCH
 * (a store_scan callback). */
static int receipt_row(void *data, const char *k, size_t klen, const char *v, size_t vlen)
{
    receipt_scan *rs = data;
    const char *nul = memchr(k, '\0', klen);
    if (!nul || (size_t)(k + klen - (nul + 1)) != rs->ulen ||
        memcmp(nul + 1, rs->user, rs->ulen) != 0)
        return SCAN_NEXT;
    rocksdb_writebatch_delete_cf(rs->b, rs->s->cf[CF_RECEIPTS], k, klen);
    if (++rs->n < ERASE_BATCH) return SCAN_NEXT;
    mqstore_err e = write_batch_alone(rs->s, rs->b);
    rs->b = rocksdb_writebatch_create();
    rs->n = 0;
    return e;
}

static mqstore_err erase_receipts(mqstore *s, const char *user)
{
    key lo, hi;
    all_range(&lo, &hi);
    receipt_scan rs = {s, user, strlen(user), rocksdb_writebatch_create(), 0};
    mqstore_err e = store_scan(s, CF_RECEIPTS, &lo, &hi, &lo, SCAN_FORWARD, receipt_row, &rs);
    if (!e && rs.n) return write_batch_alone(s, rs.b);
    rocksdb_writebatch_destroy(rs.b);
    return e;
}

/* ---- messages -------------------------------------------------------------- */

typedef struct msg_scan {
    mqstore *s;
    const char *user;
    size_t ulen;
    const void *tomb;
    size_t tomb_len;
    uint32_t kind; /* 0: every kind */
    key *keys;     /* candidates, ERASE_BATCH of them at most */
    size_t n;
    uint64_t rewritten;
} msg_scan;

/* 1 if record r is the user's and still holds a payload other than the
 * tombstone. */
static int needs_tomb(const msg_scan *ms, const Mqstore__Rec__MsgRecord *r)
{
    if (r->expired || strcmp(r->sender_user, ms->user) != 0) return 0;
    if (ms->kind && r->kind != ms->kind) return 0;
    return r->payload.len != ms->tomb_len ||
           (ms->tomb_len && memcmp(r->payload.data, ms->tomb, ms->tomb_len) != 0);
}

/* Rewrite the collected candidates under write_lock in one batch, each
 * re-read first: what changed since the scan saw it (deleted, expired)
 * is left alone. */
static mqstore_err flush_msgs(msg_scan *ms)
{
    mqstore *s = ms->s;
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    uint64_t n = 0, ticket;
    mqstore_err e = MQSTORE_OK;
    pthread_mutex_lock(&s->write_lock);
    for (size_t i = 0; !e && i < ms->n; i++) {
        Mqstore__Rec__MsgRecord *r = codec_get(s, CF_MSGS, &ms->keys[i], REC_MSG, &e);
        if (r && needs_tomb(ms, r)) {
            /* Everything but the payload stays. */
            ProtobufCBinaryData was = r->payload;
            r->payload.data = (uint8_t *)ms->tomb;
            r->payload.len = ms->tomb_len;
            size_t vlen;
            uint8_t *val = codec_pack(&r->base, &vlen);
            r->payload = was; /* codec_free frees the decoded one */
            if (val) {
                rocksdb_writebatch_put_cf(b, s->cf[CF_MSGS], ms->keys[i].buf, ms->keys[i].len,
                                          (const char *)val, vlen);
                free(val);
                n++;
            } else {
                e = MQSTORE_ERR_NOMEM;
            }
        }
        codec_free(r);
    }
    if (!e && n) e = store_write(s, b, &ticket);
    pthread_mutex_unlock(&s->write_lock);
    rocksdb_writebatch_destroy(b);
    if (!e) ms->rewritten += n;
    ms->n = 0;
    return e;
}

/* Collect one message if the user sent it (a store_scan callback). */
static int msg_row(void *data, const char *k, size_t klen, const char *v, size_t vlen)
{
    msg_scan *ms = data;
    /* Most messages are someone else's: a record without the user's id
     * among its bytes cannot name them as its sender. */
    if (!memmem(v, vlen, ms->user, ms->ulen)) return SCAN_NEXT;
    if (klen > KEY_MAX) return MQSTORE_ERR_CORRUPT;
    Mqstore__Rec__MsgRecord *r = codec_decode(REC_MSG, v, vlen);
    if (!r) return MQSTORE_ERR_CORRUPT;
    int mine = needs_tomb(ms, r);
    codec_free(r);
    if (!mine) return SCAN_NEXT;
    key *c = &ms->keys[ms->n++];
    c->len = klen;
    memcpy(c->buf, k, klen);
    return ms->n < ERASE_BATCH ? SCAN_NEXT : flush_msgs(ms);
}

static mqstore_err erase_msgs(mqstore *s, const char *user, const void *tomb, size_t tomb_len,
                              uint32_t kind, uint64_t *rewritten)
{
    msg_scan ms = {s, user, strlen(user), tomb, tomb_len, kind, NULL, 0, 0};
    if (!(ms.keys = malloc(ERASE_BATCH * sizeof(*ms.keys)))) return MQSTORE_ERR_NOMEM;
    key lo, hi;
    all_range(&lo, &hi);
    mqstore_err e = store_scan(s, CF_MSGS, &lo, &hi, &lo, SCAN_FORWARD, msg_row, &ms);
    if (!e && ms.n) e = flush_msgs(&ms);
    free(ms.keys);
    *rewritten = ms.rewritten;
    return e;
}

mqstore_err mqstore_user_erase(mqstore *s, const char *user, const void *tomb, size_t tomb_len,
                               uint32_t kind, mqstore_erase_stats *out)
{
    mqstore_erase_stats st = {0};
    if (out) *out = st;
    if (!s || !mqc_id_valid(MQC_ID_KEY, user) || (tomb_len && !tomb)) return MQSTORE_ERR_INVAL;
    if (tomb_len > s->opt.max_payload) return MQSTORE_ERR_TOOBIG;
    int member;
    mqstore_err e = is_member_anywhere(s, user, &member);
    if (!e && member) e = MQSTORE_ERR_EXISTS;
    /* Counted before the deleting batch: nobody adds to them meanwhile. */
    key lo, hi;
    id_range(&lo, &hi, user);
    if (!e) e = count_rows(s, CF_INBOX, &lo, &hi, &st.inbox);
    if (!e) e = count_rows(s, CF_CURSORS, &lo, &hi, &st.devices);
    if (!e) e = count_rows(s, CF_TOKENS, &lo, &hi, &st.tokens);
    if (!e) e = erase_keyed(s, user);
    if (!e) e = erase_receipts(s, user);
    if (!e) e = erase_msgs(s, user, tomb, tomb_len, kind, &st.messages);
    if (e) return e;
    /* Deleted values linger in older files until compaction reaches them:
     * the user's own ranges are small, compact them now (the rewritten
     * messages are all over the log: mqstore_compact()). */
    for (size_t i = 0; i < N_BY_USER; i++)
        rocksdb_compact_range_cf(s->db, s->cf[by_user[i]], lo.buf, lo.len, hi.buf, hi.len);
    if (out) *out = st;
    return MQSTORE_OK;
}
