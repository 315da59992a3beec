/* state — the small mutable records beside the logs: device cursors and
 * inbox trimming, receipt watermarks, and the push outbox queue.
 * Every write here takes write_lock (read-modify-write of one record) and
 * goes through store_write, so it gets a ticket like any other write. */
#include "store_int.h"
#include "codec.h"

#include <stdlib.h>
#include <string.h>

static void pair_key(key *k, const char *a, const char *b)
{
    key_reset(k);
    key_id(k, a);
    key_raw(k, b);
}

/* ---- cursors -------------------------------------------------------------- */

static mqstore_err cursor_load(mqstore *s, const key *k, uint64_t *acked, int64_t *seen, int *found)
{
    char *val;
    size_t len;
    *acked = 0;
    *seen = 0;
    *found = 0;
    mqstore_err e = store_get(s, CF_CURSORS, k, &val, &len);
    if (e || !val) return e;
    Mqstore__Rec__CursorRecord *c;
    e = codec_cursor(val, len, &c);
    rocksdb_free(val);
    if (e) return e;
    *acked = c->acked;
    *seen = c->last_seen_ms;
    *found = 1;
    mqstore__rec__cursor_record__free_unpacked(c, NULL);
    return MQSTORE_OK;
}

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
    if (!s || !mqc_id_valid(MQC_ID_KEY, user) || !mqc_id_valid(MQC_ID_KEY, device)) return MQSTORE_ERR_INVAL;
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
    if (!s || !mqc_id_valid(MQC_ID_KEY, user) || !mqc_id_valid(MQC_ID_KEY, device)) return MQSTORE_ERR_INVAL;
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
    if (!s || !mqc_id_valid(MQC_ID_KEY, user) || !mqc_id_valid(MQC_ID_KEY, device)) return MQSTORE_ERR_INVAL;
    key k;
    pair_key(&k, user, device);
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    rocksdb_writebatch_delete_cf(b, s->cf[CF_CURSORS], k.buf, k.len);
    uint64_t ticket;
    pthread_mutex_lock(&s->write_lock);
    mqstore_err e = store_write(s, b, &ticket);
    pthread_mutex_unlock(&s->write_lock);
    rocksdb_writebatch_destroy(b);
    return e;
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
    range_iter r;
    range_open(s, CF_CURSORS, &r, &lo, &hi);
    mqstore_err e = MQSTORE_OK;
    *any = 0;
    *min = 0;
    for (rocksdb_iter_seek(r.it, lo.buf, lo.len); rocksdb_iter_valid(r.it);
         rocksdb_iter_next(r.it)) {
        size_t vlen;
        const char *v = rocksdb_iter_value(r.it, &vlen);
        Mqstore__Rec__CursorRecord *c;
        if ((e = codec_cursor(v, vlen, &c))) break;
        if (c->last_seen_ms >= cutoff && (!*any || c->acked < *min)) {
            *min = c->acked;
            *any = 1;
        }
        mqstore__rec__cursor_record__free_unpacked(c, NULL);
    }
    e = range_close(&r, e);
    return e;
}

/* The highest inbox_seq of the user's entries written before `cutoff`
 * (entries are in time order, so a scan from the start stops early). */
static mqstore_err expired_upto(mqstore *s, const char *user, int64_t cutoff, uint64_t *upto)
{
    key lo, hi;
    key_reset(&lo);
    key_id(&lo, user);
    key_prefix_end(&lo, &hi);
    range_iter r;
    range_open(s, CF_INBOX, &r, &lo, &hi);
    mqstore_err e = MQSTORE_OK;
    *upto = 0;
    for (rocksdb_iter_seek(r.it, lo.buf, lo.len); rocksdb_iter_valid(r.it);
         rocksdb_iter_next(r.it)) {
        size_t klen, vlen;
        const char *k = rocksdb_iter_key(r.it, &klen);
        const char *v = rocksdb_iter_value(r.it, &vlen);
        if (klen != lo.len + 8) {
            e = MQSTORE_ERR_CORRUPT;
            break;
        }
        Mqstore__Rec__InboxEntry *ie;
        if ((e = codec_inbox(v, vlen, &ie))) break;
        int old = ie->time_ms < cutoff;
        mqstore__rec__inbox_entry__free_unpacked(ie, NULL);
        if (!old) break;
        *upto = get_be64(k + lo.len);
    }
    e = range_close(&r, e);
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
    if (!s || !mqc_id_valid(MQC_ID_KEY, conv) || !mqc_id_valid(MQC_ID_KEY, user) || !delivered || !read)
        return MQSTORE_ERR_INVAL;
    key k;
    pair_key(&k, conv, user);
    char *val;
    size_t len;
    *delivered = *read = 0;
    mqstore_err e = store_get(s, CF_RECEIPTS, &k, &val, &len);
    if (e || !val) return e;
    Mqstore__Rec__ReceiptRecord *r;
    e = codec_receipt(val, len, &r);
    rocksdb_free(val);
    if (e) return e;
    *delivered = r->delivered;
    *read = r->read;
    mqstore__rec__receipt_record__free_unpacked(r, NULL);
    return MQSTORE_OK;
}

mqstore_err mqstore_receipt_update(mqstore *s, const char *conv, const char *user,
                                   uint64_t delivered, uint64_t read, uint64_t *delivered_out,
                                   uint64_t *read_out, int *changed)
{
    if (!s || !mqc_id_valid(MQC_ID_KEY, conv) || !mqc_id_valid(MQC_ID_KEY, user)) return MQSTORE_ERR_INVAL;
    pthread_mutex_lock(&s->write_lock);
    uint64_t head, d = 0, r = 0;
    int moved = 0;
    mqstore_member m;
    mqstore_err e = mqstore_conv_head(s, conv, &head);
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
    range_iter r;
    range_open(s, CF_OUTBOX, &r, &lo, &hi);
    mqstore_err e = MQSTORE_OK;
    for (rocksdb_iter_seek(r.it, lo.buf, lo.len); rocksdb_iter_valid(r.it);
         rocksdb_iter_next(r.it)) {
        if (out->n >= limit) {
            out->more = 1;
            break;
        }
        size_t klen, vlen;
        const char *k = rocksdb_iter_key(r.it, &klen);
        const char *v = rocksdb_iter_value(r.it, &vlen);
        if (klen != 8) {
            e = MQSTORE_ERR_CORRUPT;
            break;
        }
        mqstore_job *j = &out->items[out->n];
        j->id = get_be64(k);
        j->len = vlen;
        j->data = malloc(vlen ? vlen : 1);
        if (!j->data) {
            e = MQSTORE_ERR_NOMEM;
            break;
        }
        memcpy(j->data, v, vlen);
        out->n++;
    }
    e = range_close(&r, e);
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
    uint64_t ticket;
    pthread_mutex_lock(&s->write_lock);
    mqstore_err e = store_write(s, b, &ticket);
    pthread_mutex_unlock(&s->write_lock);
    rocksdb_writebatch_destroy(b);
    return e;
}
