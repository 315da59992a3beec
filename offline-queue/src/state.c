/* state — the small mutable records beside the logs: device cursors and
 * inbox trimming, receipt watermarks, and the push outbox queue.
 * Every write here takes write_lock (read-modify-write of one record) and
 * goes through store_write, so it gets a ticket like any other write. */
#include "store_int.h"
#include "codec.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* a \0 b: user \0 device (cursors) or conv \0 user (receipts). */
static void pair_key(key *k, const char *a, const char *b)
{
    key_reset(k);
    key_id(k, a);
    key_raw(k, b);
}

/* Write a batch that needs no read under the lock: take write_lock for the
 * write alone, then destroy the batch (store_int.h). */
mqstore_err write_batch_alone(mqstore *s, rocksdb_writebatch_t *b)
{
    uint64_t ticket;
    pthread_mutex_lock(&s->write_lock);
    mqstore_err e = store_write(s, b, &ticket);
    pthread_mutex_unlock(&s->write_lock);
    rocksdb_writebatch_destroy(b);
    return e;
}

/* ---- cursors -------------------------------------------------------------- */

/* A device's cursor record at k: acked inbox_seq and last seen time, all 0
 * and *found = 0 when it has none. */
static mqstore_err cursor_load(mqstore *s, const key *k, uint64_t *acked, int64_t *seen, int *found)
{
    mqstore_err e;
    Mqstore__Rec__CursorRecord *c = codec_get(s, CF_CURSORS, k, REC_CURSOR, &e);
    *acked = c ? c->acked : 0;
    *seen = c ? c->last_seen_ms : 0;
    *found = c != NULL;
    codec_free(c);
    return e;
}

/* Write one record at k in cf as a batch of its own (write_lock held). */
static mqstore_err write_one(mqstore *s, int cf, const key *k, const ProtobufCMessage *m)
{
    size_t len;
    uint8_t *buf = codec_pack(m, &len);
    if (!buf) return MQSTORE_ERR_NOMEM;
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    rocksdb_writebatch_put_cf(b, s->cf[cf], k->buf, k->len, (const char *)buf, len);
    uint64_t ticket;
    mqstore_err e = store_write(s, b, &ticket);
    rocksdb_writebatch_destroy(b);
    free(buf);
    return e;
}

mqstore_err mqstore_cursor_ack(mqstore *s, const char *user, const char *device, uint64_t inbox_seq,
                               uint64_t *stored)
{
    if (!s || !mqc_id_valid(MQC_ID_KEY, user) || !mqc_id_valid(MQC_ID_KEY, device))
        return MQSTORE_ERR_INVAL;
    pthread_mutex_lock(&s->write_lock);
    uint64_t head, acked;
    int64_t seen;
    int found;
    key k;
    pair_key(&k, user, device);
    mqstore_err e = inbox_head_get(s, user, &head, 1);
    if (!e && inbox_seq > head) e = MQSTORE_ERR_INVAL;
    if (!e) e = cursor_load(s, &k, &acked, &seen, &found);
    if (!e) {
        /* Monotonic: a late or replayed ack never moves the cursor back, but
         * still counts as a sign of life for the retention rule. */
        Mqstore__Rec__CursorRecord c = MQSTORE__REC__CURSOR_RECORD__INIT;
        c.acked = inbox_seq > acked ? inbox_seq : acked;
        /* A cursor only grows, and an ack never raises it past the head. */
        assert(c.acked >= acked && (c.acked == acked || c.acked <= head));
        c.last_seen_ms = store_now(s);
        e = write_one(s, CF_CURSORS, &k, &c.base);
        if (!e) acked = c.acked;
    }
    pthread_mutex_unlock(&s->write_lock);
    if (!e && stored) *stored = acked;
    return e;
}

/* A touch rewrites last_seen at most this often: well inside the
 * retention, so a device that keeps connecting never looks stale. */
static int64_t touch_interval(mqstore *s)
{
    int64_t quarter = s->opt.inbox_retention_ms / 4, hour = 3600 * 1000;
    return quarter < hour ? quarter : hour;
}

mqstore_err mqstore_device_touch(mqstore *s, const char *user, const char *device)
{
    if (!s || !mqc_id_valid(MQC_ID_KEY, user) || !mqc_id_valid(MQC_ID_KEY, device))
        return MQSTORE_ERR_INVAL;
    pthread_mutex_lock(&s->write_lock);
    uint64_t acked;
    int64_t seen, now = store_now(s);
    int found;
    key k;
    pair_key(&k, user, device);
    mqstore_err e = cursor_load(s, &k, &acked, &seen, &found);
    if (!e && (!found || seen < now - touch_interval(s))) {
        Mqstore__Rec__CursorRecord c = MQSTORE__REC__CURSOR_RECORD__INIT;
        c.acked = acked;
        c.last_seen_ms = now;
        e = write_one(s, CF_CURSORS, &k, &c.base);
    }
    pthread_mutex_unlock(&s->write_lock);
    return e;
}

mqstore_err mqstore_cursor_get(mqstore *s, const char *user, const char *device, uint64_t *cursor)
{
    if (!s || !mqc_id_valid(MQC_ID_KEY, user) || !mqc_id_valid(MQC_ID_KEY, device) || !cursor)
        return MQSTORE_ERR_INVAL;
    key k;
    pair_key(&k, user, device);
    int64_t seen;
    int found;
    return cursor_load(s, &k, cursor, &seen, &found);
}

mqstore_err mqstore_device_forget(mqstore *s, const char *user, const char *device)
{
    if (!s || !mqc_id_valid(MQC_ID_KEY, user) || !mqc_id_valid(MQC_ID_KEY, device))
        return MQSTORE_ERR_INVAL;
    key k;
    pair_key(&k, user, device);
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    rocksdb_writebatch_delete_cf(b, s->cf[CF_CURSORS], k.buf, k.len);
    /* Its positions in large conversations: user \0 device \0 *. */
    key lo, hi;
    key_reset(&lo);
    key_id(&lo, user);
    key_id(&lo, device);
    key_prefix_end(&lo, &hi);
    rocksdb_writebatch_delete_range_cf(b, s->cf[CF_POSITIONS], lo.buf, lo.len, hi.buf, hi.len);
    rocksdb_writebatch_delete_cf(b, s->cf[CF_TOKENS], k.buf, k.len);
    return write_batch_alone(s, b);
}

/* min_live_cursor's scan: the cutoff and the lowest live cursor so far. */
typedef struct cursor_scan {
    int64_t cutoff;
    uint64_t min;
    int any;
} cursor_scan;

/* Take one device's cursor into the minimum if the device was seen since
 * the cutoff (a store_scan callback). */
static int cursor_row(void *data, const char *k, size_t klen, const char *v, size_t vlen)
{
    cursor_scan *cs = data;
    Mqstore__Rec__CursorRecord *c = codec_decode(REC_CURSOR, v, vlen);
    if (!c) return MQSTORE_ERR_CORRUPT;
    if (c->last_seen_ms >= cs->cutoff && (!cs->any || c->acked < cs->min)) {
        cs->min = c->acked;
        cs->any = 1;
    }
    codec_free(c);
    return SCAN_NEXT;
}

/* The lowest cursor among the user's devices seen since `cutoff`.
 * *any = 0 when no device was seen since then. */
static mqstore_err min_live_cursor(mqstore *s, const char *user, int64_t cutoff, uint64_t *min,
                                   int *any)
{
    key lo, hi;
    key_reset(&lo);
    key_id(&lo, user);
    key_prefix_end(&lo, &hi);
    cursor_scan cs = {cutoff, 0, 0};
    mqstore_err e = store_scan(s, CF_CURSORS, &lo, &hi, &lo, SCAN_FORWARD, cursor_row, &cs);
    *min = cs.min;
    *any = cs.any;
    return e;
}

/* expired_upto's scan: the cutoff, the prefix length, the last old entry. */
typedef struct expired_scan {
    int64_t cutoff;
    size_t plen; /* user \0 */
    uint64_t upto;
} expired_scan;

/* Note one inbox row written before the cutoff, or stop at the first that
 * was not (a store_scan callback). */
static int expired_row(void *data, const char *k, size_t klen, const char *v, size_t vlen)
{
    expired_scan *es = data;
    if (klen != es->plen + 8) return MQSTORE_ERR_CORRUPT;
    Mqstore__Rec__InboxEntry *ie = codec_decode(REC_INBOX, v, vlen);
    if (!ie) return MQSTORE_ERR_CORRUPT;
    int old = ie->time_ms < es->cutoff;
    codec_free(ie);
    if (!old) return SCAN_STOP;
    es->upto = get_be64(k + es->plen);
    return SCAN_NEXT;
}

/* The highest inbox_seq of the user's entries written before `cutoff`
 * (entries are in time order, so a scan from the start stops early). */
static mqstore_err expired_upto(mqstore *s, const char *user, int64_t cutoff, uint64_t *upto)
{
    key lo, hi;
    key_reset(&lo);
    key_id(&lo, user);
    key_prefix_end(&lo, &hi);
    expired_scan es = {cutoff, lo.len, 0};
    mqstore_err e = store_scan(s, CF_INBOX, &lo, &hi, &lo, SCAN_FORWARD, expired_row, &es);
    *upto = es.upto;
    return e;
}

mqstore_err mqstore_inbox_trim(mqstore *s, const char *user, uint64_t *trimmed_upto)
{
    if (!s || !mqc_id_valid(MQC_ID_KEY, user)) return MQSTORE_ERR_INVAL;
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    pthread_mutex_lock(&s->write_lock);
    int64_t cutoff = store_now(s) - s->opt.inbox_retention_ms;
    uint64_t min = 0, old = 0, done = 0;
    int any = 0;
    /* heads 't' user: how far the inbox was already trimmed, so a repeated
     * trim writes no new range tombstone. */
    key tk;
    key_reset(&tk);
    key_tag(&tk, 't');
    key_raw(&tk, user);
    mqstore_err e = store_get_u64(s, CF_HEADS, &tk, &done, NULL);
    if (!e) e = min_live_cursor(s, user, cutoff, &min, &any);
    if (!e) e = expired_upto(s, user, cutoff, &old);
    uint64_t upto = any && min > old ? min : old;
    if (!e && upto > done) {
        /* [user\0, user\0 be64(upto + 1)): from the bare identifier, not
         * from done + 1 (which is already gone), because a range deletion
         * must not start with a log key (INVARIANT in hint.cc). */
        key lo, hi;
        key_reset(&lo);
        key_id(&lo, user);
        /* The range deletion starts at a bare "user\0", outside the hint
         * domain (INVARIANT in hint.cc): its only NUL is its last byte. */
        assert(memchr(lo.buf, '\0', lo.len) == lo.buf + lo.len - 1);
        hi = lo;
        key_u64(&hi, upto + 1);
        rocksdb_writebatch_delete_range_cf(b, s->cf[CF_INBOX], lo.buf, lo.len, hi.buf, hi.len);
        char v[8];
        put_be64(v, upto);
        rocksdb_writebatch_put_cf(b, s->cf[CF_HEADS], tk.buf, tk.len, v, 8);
        uint64_t ticket;
        e = store_write(s, b, &ticket);
    } else {
        upto = 0;
    }
    pthread_mutex_unlock(&s->write_lock);
    rocksdb_writebatch_destroy(b);
    if (!e && trimmed_upto) *trimmed_upto = upto;
    return e;
}

/* ---- receipts ------------------------------------------------------------- */

mqstore_err mqstore_receipt_get(mqstore *s, const char *conv, const char *user, uint64_t *delivered,
                                uint64_t *read)
{
    if (!s || !mqc_id_valid(MQC_ID_KEY, conv) || !mqc_id_valid(MQC_ID_KEY, user) || !delivered ||
        !read)
        return MQSTORE_ERR_INVAL;
    key k;
    pair_key(&k, conv, user);
    mqstore_err e;
    Mqstore__Rec__ReceiptRecord *r = codec_get(s, CF_RECEIPTS, &k, REC_RECEIPT, &e);
    *delivered = r ? r->delivered : 0;
    *read = r ? r->read : 0;
    codec_free(r);
    return e;
}

mqstore_err mqstore_receipt_update(mqstore *s, const char *conv, const char *user,
                                   uint64_t delivered, uint64_t read, uint64_t *delivered_out,
                                   uint64_t *read_out, int *changed)
{
    if (!s || !mqc_id_valid(MQC_ID_KEY, conv) || !mqc_id_valid(MQC_ID_KEY, user))
        return MQSTORE_ERR_INVAL;
    pthread_mutex_lock(&s->write_lock);
    uint64_t head, d = 0, r = 0;
    int moved = 0;
    mqstore_member m;
    conv_state cs;
    mqstore_err e = conv_state_get(s, conv, &cs, 0);
    head = cs.head;
    /* A deleted conversation has no members and takes no receipts. */
    if (!e && (cs.flags & MQSTORE_CONV_DELETED)) e = MQSTORE_ERR_NOTFOUND;
    if (!e) {
        e = mqstore_member_get(s, conv, user, &m);
        if (e == MQSTORE_ERR_NOTFOUND) e = MQSTORE_ERR_NOTMEMBER;
    }
    if (!e && (delivered > head || read > head)) e = MQSTORE_ERR_INVAL;
    if (!e) e = mqstore_receipt_get(s, conv, user, &d, &r);
    if (!e) {
        /* Invariant: read <= delivered <= head, both only grow. Reading
         * implies delivery, so a read watermark raises delivered too. */
        uint64_t nd = d, nr = r;
        if (read > nr) nr = read;
        if (delivered > nd) nd = delivered;
        if (nr > nd) nd = nr;
        /* read <= delivered always; this call raises neither above head
         * (the checks above; a stored value is kept as it is). */
        assert(nr <= nd);
        assert((nd == d || nd <= head) && (nr == r || nr <= head));
        moved = nd != d || nr != r;
        if (moved) {
            Mqstore__Rec__ReceiptRecord rec = MQSTORE__REC__RECEIPT_RECORD__INIT;
            rec.delivered = nd;
            rec.read = nr;
            key k;
            pair_key(&k, conv, user);
            e = write_one(s, CF_RECEIPTS, &k, &rec.base);
        }
        if (!e) {
            d = nd;
            r = nr;
        }
    }
    pthread_mutex_unlock(&s->write_lock);
    if (e) return e;
    if (delivered_out) *delivered_out = d;
    if (read_out) *read_out = r;
    if (changed) *changed = moved;
    return MQSTORE_OK;
}

/* ---- push outbox ---------------------------------------------------------- */

void mqstore_job_list_free(mqstore_job_list *l)
{
    if (!l) return;
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i].data);
    free(l->items);
    memset(l, 0, sizeof(*l));
}

/* mqstore_outbox_read's scan: the list being filled. */
typedef struct outbox_scan {
    mqstore_job_list *out;
    size_t limit;
} outbox_scan;

/* Copy one job row into the list, or stop at the limit (a store_scan
 * callback). */
static int job_row(void *data, const char *k, size_t klen, const char *v, size_t vlen)
{
    outbox_scan *os = data;
    mqstore_job_list *out = os->out;
    if (out->n >= os->limit) {
        out->more = 1;
        return SCAN_STOP;
    }
    if (klen != 8) return MQSTORE_ERR_CORRUPT;
    mqstore_job *j = &out->items[out->n];
    j->id = get_be64(k);
    j->len = vlen;
    j->data = malloc(vlen ? vlen : 1);
    if (!j->data) return MQSTORE_ERR_NOMEM;
    memcpy(j->data, v, vlen);
    out->n++;
    return SCAN_NEXT;
}

uint64_t mqstore_outbox_last(mqstore *s)
{
    pthread_mutex_lock(&s->write_lock);
    uint64_t id = s->outbox_last;
    pthread_mutex_unlock(&s->write_lock);
    return id;
}

mqstore_err mqstore_outbox_read(mqstore *s, uint64_t after, size_t limit, mqstore_job_list *out)
{
    if (!out) return MQSTORE_ERR_INVAL;
    memset(out, 0, sizeof(*out));
    if (!s || limit < 1 || limit > 10000 || after == UINT64_MAX) return MQSTORE_ERR_INVAL;
    key lo, hi;
    key_reset(&lo);
    key_u64(&lo, after + 1);
    key_reset(&hi);
    key_u64(&hi, UINT64_MAX);
    out->items = malloc(limit * sizeof(*out->items));
    if (!out->items) return MQSTORE_ERR_NOMEM;
    outbox_scan os = {out, limit};
    mqstore_err e = store_scan(s, CF_OUTBOX, &lo, &hi, &lo, SCAN_FORWARD, job_row, &os);
    if (e) mqstore_job_list_free(out);
    return e;
}

mqstore_err mqstore_outbox_delete_upto(mqstore *s, uint64_t upto)
{
    if (!s || upto == UINT64_MAX) return MQSTORE_ERR_INVAL;
    key lo, hi;
    key_reset(&lo);
    key_u64(&lo, 0);
    key_reset(&hi);
    key_u64(&hi, upto + 1);
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    rocksdb_writebatch_delete_range_cf(b, s->cf[CF_OUTBOX], lo.buf, lo.len, hi.buf, hi.len);
    return write_batch_alone(s, b);
}

/* ---- per-user preferences ------------------------------------------------ */

static void prefs_key(key *k, const char *user)
{
    key_reset(k);
    key_tag(k, 'p');
    key_raw(k, user);
}

mqstore_err mqstore_user_prefs_put(mqstore *s, const char *user, const void *data, size_t len)
{
    if (!s || !mqc_id_valid(MQC_ID_KEY, user) || (!data && len) || len > MQSTORE_PREFS_MAX)
        return MQSTORE_ERR_INVAL;
    key k;
    prefs_key(&k, user);
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    rocksdb_writebatch_put_cf(b, s->cf[CF_HEADS], k.buf, k.len, data ? (const char *)data : "",
                              len);
    return write_batch_alone(s, b);
}

mqstore_err mqstore_user_prefs_get(mqstore *s, const char *user, void **data, size_t *len)
{
    if (data) *data = NULL;
    if (!s || !mqc_id_valid(MQC_ID_KEY, user) || !data || !len) return MQSTORE_ERR_INVAL;
    key k;
    prefs_key(&k, user);
    char *val;
    size_t n;
    mqstore_err e = store_get(s, CF_HEADS, &k, &val, &n);
    if (e) return e;
    if (!val) return MQSTORE_ERR_NOTFOUND;
    /* RocksDB's buffer is freed with rocksdb_free: hand out our own. */
    *data = malloc(n ? n : 1);
    if (*data) memcpy(*data, val, n);
    rocksdb_free(val);
    if (!*data) return MQSTORE_ERR_NOMEM;
    *len = n;
    return MQSTORE_OK;
}
