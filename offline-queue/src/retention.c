/* retention — messages expire by age or by distance from their
 * conversation's head, and compaction of the message log drops them.
 *
 * The rules (mqstore.h, "retention and erasure"): the store's options
 * retention_ms and retention_count, overridden per conversation by the
 * ConvRecord's retention fields. A compaction filter on the msgs CF
 * applies them as RocksDB rewrites the log's files, on RocksDB's own
 * threads. It must not read the database, so what it needs is in memory:
 * the overrides, in a table loaded at open (heads 'k' conv marks the
 * conversations that have one) and kept by mqstore_conv_retention_set
 * under keep_lock; and the heads, from the cache (cache.c).
 *
 * INVARIANT: a conversation's head is the last key of its log, so the
 * filter never removes a conversation's newest message — seqs would repeat
 * after a reopen. It removes an expired message only when the cache knows
 * a head above it whose write is durable (so a newer key exists and
 * survives a crash); an expired message that is, or may be, the head is
 * rewritten to a stub: the record without its payload, flagged expired.
 * A pulled message (large conversations) is always kept as a stub: pulls
 * find messages by scanning the log, and a removed one would be a hole
 * there, whereas a removed small-time message is still named by its inbox
 * entries. Count-based expiry needs the head: without a cached one, a
 * message does not expire by count. */
#include "store_int.h"
#include "cache.h"
#include "codec.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

typedef struct keep_ent {
    UT_hash_handle hh;
    int64_t age_ms; /* 0: the store's option; < 0: forever */
    uint64_t count; /* 0: the store's option; UINT64_MAX: all */
    char conv[MQC_ID_BUF];
} keep_ent;

/* heads 'k' conv: the conversation's ConvRecord holds a retention override. */
static void keep_key(key *k, const char *conv)
{
    key_reset(k);
    key_tag(k, 'k');
    key_raw(k, conv);
}

/* Put conv's override into the table, in entry `ne` (allocated by the
 * caller beforehand, so nothing fails once the override is written), or
 * drop it when both limits are the store's. Frees ne when unused. */
static void keep_install(mqstore *s, const char *conv, keep_ent *ne, int64_t age_ms, uint64_t count)
{
    keep_ent *e;
    pthread_mutex_lock(&s->keep_lock);
    HASH_FIND_STR(s->keeps, conv, e);
    if (e && !age_ms && !count) {
        HASH_DEL(s->keeps, e);
        free(e);
    } else if (e) {
        e->age_ms = age_ms;
        e->count = count;
    } else if (age_ms || count) {
        ne->age_ms = age_ms;
        ne->count = count;
        strcpy(ne->conv, conv);
        HASH_ADD_STR(s->keeps, conv, ne);
        ne = NULL;
    }
    pthread_mutex_unlock(&s->keep_lock);
    free(ne);
}

int retention_expired(mqstore *s, const char *conv, uint64_t seq, int64_t time_ms,
                      const conv_state *cs)
{
    int64_t age = s->opt.retention_ms;
    uint64_t count = s->opt.retention_count;
    keep_ent *e;
    pthread_mutex_lock(&s->keep_lock);
    HASH_FIND_STR(s->keeps, conv, e);
    if (e && e->age_ms) age = e->age_ms;
    if (e && e->count) count = e->count;
    pthread_mutex_unlock(&s->keep_lock);
    if (age > 0 && time_ms < store_now(s) - age) return 1;
    /* Not among the newest `count` seqs: seq <= head - count. */
    if (count && count != MQSTORE_KEEP_ALL && cs && cs->exists && cs->head >= count &&
        seq <= cs->head - count)
        return 1;
    return 0;
}

/* Room for a stub: the record's ids (at most MQC_ID_MAX bytes each), time,
 * kind and flags. Per thread: the C API copies the new value after the
 * filter returns and frees nothing. */
#define STUB_MAX (3 * (MQC_ID_MAX + 3) + 64)
static _Thread_local uint8_t stub_buf[STUB_MAX];

/* The msgs compaction filter: 1 removes the entry; *changed = 1 replaces
 * its value with *nv. */
static unsigned char msgs_filter(void *state, int level, const char *k, size_t klen, const char *v,
                                 size_t vlen, char **nv, size_t *nvlen, unsigned char *changed)
{
    mqstore *s = state;
    /* Until the overrides are loaded nothing may go: one of them may say
     * "keep forever". */
    if (!atomic_load(&s->keeps_loaded)) return 0;
    pthread_mutex_lock(&s->keep_lock);
    int none = !s->opt.retention_ms && !s->opt.retention_count && !s->keeps;
    pthread_mutex_unlock(&s->keep_lock);
    if (none) return 0; /* no retention configured: no decode per message */
    const char *nul = memchr(k, '\0', klen);
    size_t clen = nul ? (size_t)(nul - k) : 0;
    if (clen < 1 || clen > MQC_ID_MAX || klen != clen + 9) return 0; /* keep what we cannot read */
    char conv[MQC_ID_BUF];
    memcpy(conv, k, clen);
    conv[clen] = '\0';
    uint64_t seq = get_be64(nul + 1);
    Mqstore__Rec__MsgRecord *r = codec_decode(REC_MSG, v, vlen);
    if (!r) return 0;
    conv_state cs;
    int known = cache_conv_get(s, conv, &cs) && cs.exists;
    unsigned char rc = 0;
    if (r->expired || retention_expired(s, conv, seq, r->server_time_ms, known ? &cs : NULL)) {
        /* A newer key exists and survives a crash: this one may go. */
        int below = known && seq < cs.head && cs.ticket <= atomic_load(&s->durable);
        if (below && !r->pulled) {
            rc = 1;
        } else if (!r->expired) {
            ProtobufCBinaryData was = r->payload;
            r->payload.data = NULL;
            r->payload.len = 0;
            r->expired = 1;
            size_t n = mqstore__rec__msg_record__get_packed_size(r);
            /* Validated ids keep a stub within STUB_MAX. */
            assert(n <= sizeof(stub_buf));
            if (n <= sizeof(stub_buf)) {
                *nvlen = mqstore__rec__msg_record__pack(r, stub_buf);
                *nv = (char *)stub_buf;
                *changed = 1;
            }
            r->payload = was; /* codec_free frees the decoded one */
        }
    }
    codec_free(r);
    return rc;
}

/* The filter's state is the store itself, which owns it: nothing to free. */
static void msgs_filter_destroy(void *state) {}

static const char *msgs_filter_name(void *state)
{
    return "mqstore.retention";
}

void retention_setup(mqstore *s, rocksdb_options_t *opt)
{
    pthread_mutex_init(&s->keep_lock, NULL);
    s->keeps = NULL;
    atomic_store(&s->keeps_loaded, 0);
    s->msgs_filter =
        rocksdb_compactionfilter_create(s, msgs_filter_destroy, msgs_filter, msgs_filter_name);
    rocksdb_options_set_compaction_filter(opt, s->msgs_filter);
}

/* retention_load's scan over the 'k' conv markers. */
typedef struct keep_scan {
    mqstore *s;
} keep_scan;

/* Load one conversation's override (a store_scan callback). A record that
 * cannot be read keeps everything: better too much than too little. */
static int keep_row(void *data, const char *k, size_t klen, const char *v, size_t vlen)
{
    keep_scan *ks = data;
    mqstore *s = ks->s;
    if (klen < 2 || klen - 1 > MQC_ID_MAX) return SCAN_NEXT;
    char conv[MQC_ID_BUF];
    memcpy(conv, k + 1, klen - 1);
    conv[klen - 1] = '\0';
    if (!mqc_id_valid(MQC_ID_KEY, conv)) return SCAN_NEXT;
    key ck;
    key_reset(&ck);
    key_tag(&ck, 'c');
    key_raw(&ck, conv);
    char *val;
    size_t len;
    mqstore_err e = store_get(s, CF_HEADS, &ck, &val, &len);
    if (e) return e;
    if (!val) return SCAN_NEXT; /* no conversation: nothing to keep */
    Mqstore__Rec__ConvRecord *r = codec_decode(REC_CONV, val, len);
    rocksdb_free(val);
    int64_t age = r ? r->retention_ms : MQSTORE_KEEP_FOREVER;
    uint64_t count = r ? r->retention_count : MQSTORE_KEEP_ALL;
    codec_free(r);
    keep_ent *ne = malloc(sizeof(*ne));
    if (!ne) return MQSTORE_ERR_NOMEM;
    keep_install(s, conv, ne, age, count);
    return SCAN_NEXT;
}

mqstore_err retention_load(mqstore *s)
{
    key lo, hi;
    key_reset(&lo);
    key_tag(&lo, 'k');
    key_prefix_end(&lo, &hi);
    keep_scan ks = {s};
    mqstore_err e = store_scan(s, CF_HEADS, &lo, &hi, &lo, SCAN_FORWARD, keep_row, &ks);
    if (!e) atomic_store(&s->keeps_loaded, 1);
    return e;
}

void retention_free(mqstore *s)
{
    if (!s->msgs_filter) return; /* retention_setup never ran */
    /* RocksDB is closed: no compaction runs the filter any more. */
    rocksdb_compactionfilter_destroy(s->msgs_filter);
    s->msgs_filter = NULL;
    keep_ent *e, *t;
    HASH_ITER(hh, s->keeps, e, t)
    {
        HASH_DEL(s->keeps, e);
        free(e);
    }
    pthread_mutex_destroy(&s->keep_lock);
}

mqstore_err mqstore_conv_retention_set(mqstore *s, const char *conv, int64_t max_age_ms,
                                       uint64_t max_count)
{
    if (!s || !mqc_id_valid(MQC_ID_KEY, conv)) return MQSTORE_ERR_INVAL;
    if (max_age_ms < 0) max_age_ms = MQSTORE_KEEP_FOREVER;
    keep_ent *ne = malloc(sizeof(*ne));
    if (!ne) return MQSTORE_ERR_NOMEM;
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    pthread_mutex_lock(&s->write_lock);
    conv_state cs;
    mqstore_err e = conv_state_get(s, conv, &cs, 1);
    if (!e && !cs.exists) e = MQSTORE_ERR_NOTFOUND;
    if (!e) {
        cs.keep_ms = max_age_ms;
        cs.keep_count = max_count;
        batch_conv(s, b, conv, &cs);
        key mk;
        keep_key(&mk, conv);
        if (max_age_ms || max_count)
            rocksdb_writebatch_put_cf(b, s->cf[CF_HEADS], mk.buf, mk.len, "", 0);
        else
            rocksdb_writebatch_delete_cf(b, s->cf[CF_HEADS], mk.buf, mk.len);
        uint64_t ticket;
        e = store_write(s, b, &ticket);
    }
    if (!e) {
        /* Written: the cache and the filter's table follow. */
        cache_conv_set(s, conv, &cs);
        keep_install(s, conv, ne, max_age_ms, max_count);
        ne = NULL;
    }
    pthread_mutex_unlock(&s->write_lock);
    rocksdb_writebatch_destroy(b);
    free(ne);
    return e;
}

mqstore_err mqstore_conv_retention_get(mqstore *s, const char *conv, int64_t *max_age_ms,
                                       uint64_t *max_count)
{
    if (!s || !mqc_id_valid(MQC_ID_KEY, conv) || !max_age_ms || !max_count)
        return MQSTORE_ERR_INVAL;
    conv_state cs;
    mqstore_err e = conv_state_get(s, conv, &cs, 0);
    if (e) return e;
    if (!cs.exists) return MQSTORE_ERR_NOTFOUND;
    *max_age_ms = cs.keep_ms;
    *max_count = cs.keep_count;
    return MQSTORE_OK;
}

mqstore_err mqstore_compact(mqstore *s)
{
    if (!s) return MQSTORE_ERR_INVAL;
    /* The whole log: RocksDB flushes the memtable first, and compacts the
     * bottommost level too because the column family has a filter. */
    rocksdb_compact_range_cf(s->db, s->cf[CF_MSGS], NULL, 0, NULL, 0);
    return MQSTORE_OK;
}
