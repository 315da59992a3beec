/* log — the writes that take a seq: message appends and membership changes.
 *
 * Each is one RocksDB WriteBatch, built while holding write_lock and written
 * once: the log entry, the dedup key, one inbox entry per member, outbox
 * jobs and the outbox counter, membership records (and, at creation, the
 * conversation's existence marker). Heads are not stored: they are the last
 * keys of the logs, kept with the member lists in the cache (cache.c), which
 * moves only after a batch was written, so a failed write leaves no state to
 * roll back.
 *
 * An edit (mqstore_append.replace_seq) rewrites an older message in the
 * batch of its event; mqstore_conv_delete range-deletes the log below its
 * event, which stays as the head so the seqs never repeat.
 */
#include "store_int.h"
#include "cache.h"
#include "codec.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

void mqstore_result_clear(mqstore_result *r)
{
    if (!r) return;
    free(r->fanout_user);
    free(r->fanout_inbox_seq);
    memset(r, 0, sizeof(*r));
}

void mqstore_member_list_free(mqstore_member_list *l)
{
    if (!l) return;
    free(l->items);
    memset(l, 0, sizeof(*l));
}

/* heads 'c' conv: the conversation's existence marker, and its cached head. */
static void conv_head_key(key *k, const char *conv)
{
    key_reset(k);
    key_tag(k, 'c');
    key_raw(k, conv);
}

/* heads 'n' conv: the conversation's title. */
static void conv_title_key(key *k, const char *conv)
{
    key_reset(k);
    key_tag(k, 'n');
    key_raw(k, conv);
}

/* An event's title change, into the batch. */
static void batch_title(mqstore *s, rocksdb_writebatch_t *b, const char *conv,
                        const mqstore_event *ev)
{
    if (!ev || !ev->title) return;
    key k;
    conv_title_key(&k, conv);
    if (ev->title[0])
        rocksdb_writebatch_put_cf(b, s->cf[CF_HEADS], k.buf, k.len, ev->title, strlen(ev->title));
    else
        rocksdb_writebatch_delete_cf(b, s->cf[CF_HEADS], k.buf, k.len);
}

mqstore_err mqstore_conv_title(mqstore *s, const char *conv, char *buf, size_t cap)
{
    if (!s || !buf || !cap || !mqc_id_valid(MQC_ID_KEY, conv)) return MQSTORE_ERR_INVAL;
    buf[0] = 0;
    key k;
    conv_title_key(&k, conv);
    char *val;
    size_t len;
    mqstore_err e = store_get(s, CF_HEADS, &k, &val, &len);
    if (e || !val) return e;
    size_t n = len < cap - 1 ? len : cap - 1;
    memcpy(buf, val, n);
    buf[n] = 0;
    rocksdb_free(val);
    return MQSTORE_OK;
}

/* msgs conv \0 be64(seq). */
static void msg_key(key *k, const char *conv, uint64_t seq)
{
    key_reset(k);
    key_id(k, conv);
    key_u64(k, seq);
}

/* 'i' user: the cache key of the user's inbox head (never stored). */
static void inbox_head_key(key *k, const char *user)
{
    key_reset(k);
    key_tag(k, 'i');
    key_raw(k, user);
}

/* members tag a \0 b: 'm' conv \0 user or 'u' user \0 conv. */
static void member_key(key *k, char tag, const char *a, const char *b)
{
    key_reset(k);
    key_tag(k, tag);
    key_id(k, a);
    key_raw(k, b);
}

/* Add a be64 value at k in cf to the batch. */
static void put_u64(rocksdb_writebatch_t *b, mqstore *s, int cf, const key *k, uint64_t v)
{
    char buf[8];
    put_be64(buf, v);
    rocksdb_writebatch_put_cf(b, s->cf[cf], k->buf, k->len, buf, 8);
}

/* members_load's scan: the list being filled, its capacity, and the length
 * of the 'm' conv \0 prefix. */
typedef struct members_scan {
    mqstore_member_list *out;
    size_t cap;
    size_t plen;
    size_t limit; /* stop after this many (SIZE_MAX: all) */
    int more;
} members_scan;

/* Append one 'm' conv \0 user row to the list (a store_scan callback). */
static int member_row(void *data, const char *k, size_t klen, const char *v, size_t vlen)
{
    members_scan *ms = data;
    mqstore_member_list *out = ms->out;
    if (out->n >= ms->limit) {
        ms->more = 1;
        return SCAN_STOP;
    }
    size_t ulen = klen - ms->plen;
    if (ulen < 1 || ulen > MQC_ID_MAX) return MQSTORE_ERR_CORRUPT;
    Mqstore__Rec__MemberRecord *m = codec_decode(REC_MEMBER, v, vlen);
    if (!m) return MQSTORE_ERR_CORRUPT;
    if (out->n == ms->cap) {
        size_t cap = ms->cap ? ms->cap * 2 : 16;
        mqstore_member *items = realloc(out->items, cap * sizeof(*items));
        if (!items) {
            codec_free(m);
            return MQSTORE_ERR_NOMEM;
        }
        out->items = items;
        ms->cap = cap;
    }
    mqstore_member *it = &out->items[out->n++];
    memcpy(it->user, k + ms->plen, ulen);
    it->user[ulen] = '\0';
    it->role = (mqstore_role)m->role;
    it->joined_seq = m->joined_seq;
    codec_free(m);
    return SCAN_NEXT;
}

/* Members from the members CF ('m' conv \0 user), sorted: a page after `after`
 * of at most `limit` (SIZE_MAX: all of them, members_load). */
static mqstore_err members_read(mqstore *s, const char *conv, const char *after, size_t limit,
                                mqstore_member_list *out, int *more)
{
    key lo, hi, from;
    key_page(&lo, &hi, &from, 'm', conv, after);
    members_scan ms = {out, 0, lo.len, limit, 0};
    mqstore_err e = store_scan(s, CF_MEMBERS, &lo, &hi, &from, SCAN_FORWARD, member_row, &ms);
    if (e) mqstore_member_list_free(out);
    *more = e ? 0 : ms.more;
    return e;
}

static mqstore_err members_load(mqstore *s, const char *conv, mqstore_member_list *out)
{
    int more;
    return members_read(s, conv, NULL, SIZE_MAX, out, &more);
}

mqstore_err mqstore_members_page(mqstore *s, const char *conv, const char *after, size_t limit,
                                 mqstore_member_list *out, int *more)
{
    if (!out) return MQSTORE_ERR_INVAL;
    memset(out, 0, sizeof(*out));
    if (!s || !mqc_id_valid(MQC_ID_KEY, conv) || limit < 1 || limit > 10000 || !more ||
        (after && after[0] && !mqc_id_valid(MQC_ID_KEY, after)))
        return MQSTORE_ERR_INVAL;
    return members_read(s, conv, after, limit, out, more);
}

/* Members from the cache, else from RocksDB (a writer then caches them). */
static mqstore_err members_get(mqstore *s, const char *conv, mqstore_member_list *out, int writer)
{
    memset(out, 0, sizeof(*out));
    int hit = cache_members_copy(s, conv, out);
    if (hit) return hit > 0 ? MQSTORE_OK : MQSTORE_ERR_NOMEM;
    mqstore_err e = members_load(s, conv, out);
    if (!e && writer) cache_members_set(s, conv, out);
    return e;
}

mqstore_err mqstore_members_list(mqstore *s, const char *conv, mqstore_member_list *out)
{
    if (!out) return MQSTORE_ERR_INVAL;
    memset(out, 0, sizeof(*out));
    if (!s || !mqc_id_valid(MQC_ID_KEY, conv)) return MQSTORE_ERR_INVAL;
    return members_get(s, conv, out, 0);
}

mqstore_err mqstore_member_get(mqstore *s, const char *conv, const char *user, mqstore_member *out)
{
    if (!s || !mqc_id_valid(MQC_ID_KEY, conv) || !mqc_id_valid(MQC_ID_KEY, user) || !out)
        return MQSTORE_ERR_INVAL;
    return member_lookup(s, conv, user, out);
}

/* last_seq's scan: the prefix length and the seq found. */
typedef struct last_scan {
    size_t plen;
    uint64_t seq;
} last_scan;

/* Take the be64 suffix of the first row and stop (a store_scan callback). */
static int last_row(void *data, const char *k, size_t klen, const char *v, size_t vlen)
{
    last_scan *ls = data;
    if (klen != ls->plen + 8) return MQSTORE_ERR_CORRUPT;
    ls->seq = get_be64(k + ls->plen);
    return SCAN_STOP;
}

/* The last key's big-endian suffix in [prefix, prefix_end): the highest
 * seq stored under a prefix (0 if none). */
static mqstore_err last_seq(mqstore *s, int cf, const key *prefix, uint64_t *seq)
{
    key hi, from = *prefix;
    key_prefix_end(prefix, &hi);
    key_u64(&from, UINT64_MAX);
    last_scan ls = {prefix->len, 0};
    mqstore_err e = store_scan(s, cf, prefix, &hi, &from, SCAN_BACKWARD, last_row, &ls);
    *seq = ls.seq;
    return e;
}

/* members_count's scan. */
static int count_row(void *data, const char *k, size_t klen, const char *v, size_t vlen)
{
    (void)k, (void)klen, (void)v, (void)vlen;
    (*(uint64_t *)data)++;
    return SCAN_NEXT;
}

/* The number of 'm' conv \0 user rows (stores written before ConvRecord). */
static mqstore_err members_count(mqstore *s, const char *conv, uint64_t *n)
{
    key lo, hi, from;
    key_page(&lo, &hi, &from, 'm', conv, NULL);
    *n = 0;
    return store_scan(s, CF_MEMBERS, &lo, &hi, &from, SCAN_FORWARD, count_row, n);
}

/* A conversation's state. The head is not stored: it is the highest seq in
 * the conversation's log (retention and mqstore_conv_delete never remove
 * the newest message). The rest is the ConvRecord at 'c' conv, whose
 * presence says the conversation exists. */
mqstore_err conv_state_get(mqstore *s, const char *conv, conv_state *cs, int writer)
{
    memset(cs, 0, sizeof(*cs));
    if (cache_conv_get(s, conv, cs)) return MQSTORE_OK;
    /* Every write to conv so far has a ticket up to this one (a writer
     * holds write_lock; a reader does not cache). */
    cs->ticket = atomic_load(&s->last_ticket);
    key k;
    conv_head_key(&k, conv);
    char *val;
    size_t len;
    mqstore_err e = store_get(s, CF_HEADS, &k, &val, &len);
    if (e || !val) return e;
    static const char legacy[8] = {0};
    if (len == 8 && memcmp(val, legacy, 8) == 0) {
        /* Written before conversations had a record: small, count members. */
        rocksdb_free(val);
        if ((e = members_count(s, conv, &cs->members))) return e;
    } else {
        Mqstore__Rec__ConvRecord *r = codec_decode(REC_CONV, val, len);
        rocksdb_free(val);
        if (!r) return MQSTORE_ERR_CORRUPT;
        cs->large = r->large;
        cs->members = r->members;
        cs->pull_end = r->pull_end;
        cs->flags = r->flags | (r->deleted ? MQSTORE_CONV_DELETED : 0);
        cs->keep_ms = r->retention_ms;
        cs->keep_count = r->retention_count;
        codec_free(r);
    }
    cs->exists = 1;
    key p;
    key_reset(&p);
    key_id(&p, conv);
    if ((e = last_seq(s, CF_MSGS, &p, &cs->head))) return e;
    if (writer) cache_conv_set(s, conv, cs);
    return MQSTORE_OK;
}

/* Add the conversation's record (everything of cs but the head) to the batch. */
void batch_conv(mqstore *s, rocksdb_writebatch_t *b, const char *conv, const conv_state *cs)
{
    Mqstore__Rec__ConvRecord r = MQSTORE__REC__CONV_RECORD__INIT;
    r.large = cs->large;
    r.members = cs->members;
    r.pull_end = cs->pull_end;
    r.flags = cs->flags & ~MQSTORE_CONV_DELETED;
    r.retention_ms = cs->keep_ms;
    r.retention_count = cs->keep_count;
    r.deleted = (cs->flags & MQSTORE_CONV_DELETED) != 0;
    uint8_t buf[96];
    /* The record fits buf: two bools and five varints. */
    assert(mqstore__rec__conv_record__get_packed_size(&r) <= sizeof(buf));
    size_t len = mqstore__rec__conv_record__pack(&r, buf);
    key k;
    conv_head_key(&k, conv);
    rocksdb_writebatch_put_cf(b, s->cf[CF_HEADS], k.buf, k.len, (const char *)buf, len);
}

mqstore_err member_lookup(mqstore *s, const char *conv, const char *user, mqstore_member *out)
{
    int hit = cache_member_find(s, conv, user, out);
    if (hit >= 0) return hit ? MQSTORE_OK : MQSTORE_ERR_NOTFOUND;
    key k;
    member_key(&k, 'm', conv, user);
    mqstore_err e;
    Mqstore__Rec__MemberRecord *m = codec_get(s, CF_MEMBERS, &k, REC_MEMBER, &e);
    if (!m) return e ? e : MQSTORE_ERR_NOTFOUND;
    strcpy(out->user, user);
    out->role = (mqstore_role)m->role;
    out->joined_seq = m->joined_seq;
    codec_free(m);
    return MQSTORE_OK;
}

/* A user's inbox head: the highest inbox_seq in the inbox, or how far it
 * was trimmed if that is higher (trimming may have emptied it), and at
 * least the restore floor - 1. */
mqstore_err inbox_head_get(mqstore *s, const char *user, uint64_t *head, int writer)
{
    key k;
    inbox_head_key(&k, user);
    if (cache_head_get(s, &k, head)) return MQSTORE_OK;
    key p, t;
    key_reset(&p);
    key_id(&p, user);
    key_reset(&t);
    key_tag(&t, 't');
    key_raw(&t, user);
    uint64_t last, trimmed;
    mqstore_err e = last_seq(s, CF_INBOX, &p, &last);
    if (!e) e = store_get_u64(s, CF_HEADS, &t, &trimmed, NULL);
    if (e) return e;
    *head = last > trimmed ? last : trimmed;
    /* A restored store's new entries start at its floor (restore.c). */
    if (s->restore_floor && *head < s->restore_floor - 1) *head = s->restore_floor - 1;
    if (writer) cache_head_set(s, &k, *head);
    return MQSTORE_OK;
}

int mqstore_conv_exists(mqstore *s, const char *conv, mqstore_err *err)
{
    conv_state cs = {0};
    mqstore_err e = MQSTORE_ERR_INVAL;
    if (s && mqc_id_valid(MQC_ID_KEY, conv)) e = conv_state_get(s, conv, &cs, 0);
    if (err) *err = e;
    return e ? 0 : cs.exists;
}

mqstore_err mqstore_conv_head(mqstore *s, const char *conv, uint64_t *head)
{
    if (!s || !mqc_id_valid(MQC_ID_KEY, conv) || !head) return MQSTORE_ERR_INVAL;
    conv_state cs;
    mqstore_err e = conv_state_get(s, conv, &cs, 0);
    *head = cs.head;
    return e;
}

mqstore_err mqstore_conv_large(mqstore *s, const char *conv, int *large)
{
    if (!s || !mqc_id_valid(MQC_ID_KEY, conv) || !large) return MQSTORE_ERR_INVAL;
    conv_state cs;
    mqstore_err e = conv_state_get(s, conv, &cs, 0);
    *large = cs.large;
    return e ? e : cs.exists ? MQSTORE_OK : MQSTORE_ERR_NOTFOUND;
}

mqstore_err mqstore_conv_info_get(mqstore *s, const char *conv, mqstore_conv_info *out)
{
    if (!out) return MQSTORE_ERR_INVAL;
    memset(out, 0, sizeof(*out));
    if (!s || !mqc_id_valid(MQC_ID_KEY, conv)) return MQSTORE_ERR_INVAL;
    conv_state cs;
    mqstore_err e = conv_state_get(s, conv, &cs, 0);
    if (e) return e;
    if (!cs.exists) return MQSTORE_ERR_NOTFOUND;
    out->head = cs.head;
    out->members = cs.members;
    out->large = cs.large;
    out->pull_end = conv_pull_end(&cs);
    out->flags = cs.flags;
    if (cs.head) {
        key k;
        key_reset(&k);
        key_id(&k, conv);
        key_u64(&k, cs.head);
        Mqstore__Rec__MsgRecord *r = codec_get(s, CF_MSGS, &k, REC_MSG, &e);
        if (!r) return e ? e : MQSTORE_ERR_CORRUPT;
        out->last_time_ms = r->server_time_ms;
        codec_free(r);
    }
    return MQSTORE_OK;
}

/* One log entry being written: the message record plus its fan-out. */
typedef struct entry {
    const char *conv;
    uint64_t seq;
    int64_t time_ms;
    const char *sender_user;
    const char *sender_device;
    const char *client_msg_id;
    uint32_t kind;
    const void *payload;
    size_t payload_len;
    int pulled; /* not in every member's inbox (a large conversation's) */
} entry;

/* Add to the batch: the message at (conv, seq) and an inbox entry for each
 * user in `users`. Fills the result's fan-out arrays and seq/time/inbox_seq
 * (the sender's); finish() moves the cached heads once the batch is
 * written. */
static mqstore_err batch_entry(mqstore *s, rocksdb_writebatch_t *b, const entry *en,
                               const char *const *users, size_t n_users, mqstore_result *res)
{
    Mqstore__Rec__MsgRecord rec = MQSTORE__REC__MSG_RECORD__INIT;
    rec.sender_user = (char *)en->sender_user;
    rec.sender_device = (char *)(en->sender_device ? en->sender_device : "");
    rec.client_msg_id = (char *)(en->client_msg_id ? en->client_msg_id : "");
    rec.server_time_ms = en->time_ms;
    rec.kind = en->kind;
    rec.payload.data = (uint8_t *)en->payload;
    rec.payload.len = en->payload_len;
    rec.pulled = en->pulled;
    size_t vlen;
    uint8_t *val = codec_pack(&rec.base, &vlen);
    if (!val) return MQSTORE_ERR_NOMEM;
    key k;
    key_reset(&k);
    key_id(&k, en->conv);
    key_u64(&k, en->seq);
    rocksdb_writebatch_put_cf(b, s->cf[CF_MSGS], k.buf, k.len, (const char *)val, vlen);
    free(val);

    res->seq = en->seq;
    res->server_time_ms = en->time_ms;
    res->pulled = en->pulled;
    res->fanout_user = malloc((n_users ? n_users : 1) * sizeof(*res->fanout_user));
    res->fanout_inbox_seq = malloc((n_users ? n_users : 1) * sizeof(uint64_t));
    if (!res->fanout_user || !res->fanout_inbox_seq) return MQSTORE_ERR_NOMEM;

    Mqstore__Rec__InboxEntry ie = MQSTORE__REC__INBOX_ENTRY__INIT;
    ie.conv = (char *)en->conv;
    ie.seq = en->seq;
    ie.time_ms = en->time_ms;
    uint8_t ibuf[256];
    /* The entry fits ibuf: conv is at most MQC_ID_MAX bytes. */
    assert(mqstore__rec__inbox_entry__get_packed_size(&ie) <= sizeof(ibuf));
    size_t ilen = mqstore__rec__inbox_entry__pack(&ie, ibuf);
    for (size_t i = 0; i < n_users; i++) {
        uint64_t ih;
        mqstore_err e = inbox_head_get(s, users[i], &ih, 1);
        if (e) return e;
        ih++;
        key_reset(&k);
        key_id(&k, users[i]);
        key_u64(&k, ih);
        rocksdb_writebatch_put_cf(b, s->cf[CF_INBOX], k.buf, k.len, (const char *)ibuf, ilen);
        strcpy(res->fanout_user[i], users[i]);
        res->fanout_inbox_seq[i] = ih;
        res->n_fanout = i + 1;
        if (en->sender_user && strcmp(users[i], en->sender_user) == 0) res->inbox_seq = ih;
    }
    return MQSTORE_OK;
}

/* Validate an event: actor ids, payload size, mode and flags. */
static mqstore_err check_event(mqstore *s, const mqstore_event *ev)
{
    if (!mqc_id_valid(MQC_ID_KEY, ev->actor_user)) return MQSTORE_ERR_INVAL;
    if (ev->actor_device && !mqc_id_valid(MQC_ID_KEY, ev->actor_device)) return MQSTORE_ERR_INVAL;
    if (ev->payload_len && !ev->payload) return MQSTORE_ERR_INVAL;
    if (ev->mode != MQSTORE_MODE_KEEP && ev->mode != MQSTORE_MODE_SMALL &&
        ev->mode != MQSTORE_MODE_LARGE)
        return MQSTORE_ERR_INVAL;
    if (ev->set_flags && (ev->flags & ~MQSTORE_CONV_FLAGS_ALL)) return MQSTORE_ERR_INVAL;
    if (ev->payload_len > s->opt.max_payload) return MQSTORE_ERR_TOOBIG;
    if (ev->title && strlen(ev->title) > MQSTORE_TITLE_MAX) return MQSTORE_ERR_TOOBIG;
    return MQSTORE_OK;
}

/* The log entry of an event at (conv, seq). */
static void event_entry(entry *en, const char *conv, uint64_t seq, int64_t now,
                        const mqstore_event *ev, int pulled)
{
    en->conv = conv;
    en->seq = seq;
    en->time_ms = now;
    en->sender_user = ev->actor_user;
    en->sender_device = ev->actor_device;
    en->client_msg_id = NULL;
    en->kind = ev->kind;
    en->payload = ev->payload;
    en->payload_len = ev->payload_len;
    en->pulled = pulled;
}

/* qsort/bsearch order of C strings. */
static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A sorted copy of `users` (pointers into it); NULL on out of memory. */
static const char **sorted_copy(const char *const *users, size_t n)
{
    const char **sorted = malloc((n ? n : 1) * sizeof(*sorted));
    if (!sorted) return NULL;
    if (n) memcpy(sorted, users, n * sizeof(*sorted));
    qsort(sorted, n, sizeof(*sorted), cmp_str);
    return sorted;
}

/* 1 if user is in the sorted array. */
static int in_sorted(const char **sorted, size_t n, const char *user)
{
    return n && bsearch(&user, sorted, n, sizeof(*sorted), cmp_str) != NULL;
}

/* Valid ids, no duplicates, 1..100000 of them. */
static mqstore_err check_users(const char *const *users, size_t n)
{
    if (!users || n < 1 || n > 100000) return MQSTORE_ERR_INVAL;
    for (size_t i = 0; i < n; i++)
        if (!mqc_id_valid(MQC_ID_KEY, users[i])) return MQSTORE_ERR_INVAL;
    const char **sorted = sorted_copy(users, n);
    if (!sorted) return MQSTORE_ERR_NOMEM;
    mqstore_err e = MQSTORE_OK;
    for (size_t i = 1; i < n; i++)
        if (strcmp(sorted[i - 1], sorted[i]) == 0) e = MQSTORE_ERR_INVAL;
    free(sorted);
    return e;
}

/* Add both membership records of (conv, user) to the batch. */
static void batch_member(mqstore *s, rocksdb_writebatch_t *b, const char *conv, const char *user,
                         mqstore_role role, uint64_t joined)
{
    Mqstore__Rec__MemberRecord m = MQSTORE__REC__MEMBER_RECORD__INIT;
    m.role = role;
    m.joined_seq = joined;
    uint8_t buf[32];
    /* The record fits buf: two varints. */
    assert(mqstore__rec__member_record__get_packed_size(&m) <= sizeof(buf));
    size_t len = mqstore__rec__member_record__pack(&m, buf);
    key k;
    member_key(&k, 'm', conv, user);
    rocksdb_writebatch_put_cf(b, s->cf[CF_MEMBERS], k.buf, k.len, (const char *)buf, len);
    member_key(&k, 'u', user, conv);
    rocksdb_writebatch_put_cf(b, s->cf[CF_MEMBERS], k.buf, k.len, (const char *)buf, len);
}

/* 1 if r is one of the roles. */
static int role_valid(mqstore_role r)
{
    return r >= MQSTORE_ROLE_MEMBER && r <= MQSTORE_ROLE_OWNER;
}

/* Users of a member list as a pointer array (pointing into the list). */
static const char **member_names(const mqstore_member_list *l)
{
    const char **names = malloc((l->n ? l->n : 1) * sizeof(*names));
    if (names)
        for (size_t i = 0; i < l->n; i++)
            names[i] = l->items[i].user;
    return names;
}

/* Write the batch (unless e), release write_lock, and on success move the
 * cached state of conv to *ns and the heads of the fanned-out users, drop
 * conv's cached members if they changed, and advance the outbox id to
 * new_outbox_last (0: no jobs were added). */
static mqstore_err finish(mqstore *s, rocksdb_writebatch_t *b, mqstore_err e, mqstore_result *out,
                          const char *conv, const conv_state *ns, int members_changed,
                          uint64_t new_outbox_last)
{
    if (!e) e = store_write(s, b, &out->ticket);
    if (!e) {
        /* Written: now, and only now, the cached state moves with it. */
        if (new_outbox_last) s->outbox_last = new_outbox_last;
        assert(ns->exists && ns->head == out->seq);
        conv_state c = *ns;
        c.ticket = out->ticket;
        cache_conv_set(s, conv, &c);
        key k;
        for (size_t i = 0; i < out->n_fanout; i++) {
            inbox_head_key(&k, out->fanout_user[i]);
            cache_head_set(s, &k, out->fanout_inbox_seq[i]);
        }
        if (members_changed) cache_members_drop(s, conv);
        out->large = ns->large;
        out->members = ns->members;
    }
    pthread_mutex_unlock(&s->write_lock);
    rocksdb_writebatch_destroy(b);
    if (e) mqstore_result_clear(out);
    return e;
}

mqstore_err mqstore_conv_create(mqstore *s, const char *conv, const char *const *members,
                                const mqstore_role *roles, size_t n_members,
                                const mqstore_event *ev, mqstore_result *out)
{
    if (!out) return MQSTORE_ERR_INVAL;
    memset(out, 0, sizeof(*out));
    if (!s || !mqc_id_valid(MQC_ID_KEY, conv)) return MQSTORE_ERR_INVAL;
    mqstore_err e = check_users(members, n_members);
    if (e) return e;
    if (roles)
        for (size_t i = 0; i < n_members; i++)
            if (!role_valid(roles[i])) return MQSTORE_ERR_INVAL;
    if (ev && (e = check_event(s, ev))) return e;

    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    pthread_mutex_lock(&s->write_lock);
    conv_state cs;
    e = conv_state_get(s, conv, &cs, 1);
    if (!e && cs.exists) e = MQSTORE_ERR_EXISTS;
    uint64_t seq = ev ? 1 : 0;
    conv_state ns = {.exists = 1, .head = seq, .members = n_members};
    if (ev) {
        ns.large = ev->mode == MQSTORE_MODE_LARGE;
        if (ev->set_flags) ns.flags = ev->flags;
    }
    for (size_t i = 0; !e && i < n_members; i++) {
        batch_member(s, b, conv, members[i], roles ? roles[i] : MQSTORE_ROLE_MEMBER, seq);
        /* Large from the start: every member pulls what follows the creation. */
        if (ns.large) pull_row_put(s, b, members[i], conv, seq, 0);
    }
    if (!e) batch_conv(s, b, conv, &ns);
    if (!e) batch_title(s, b, conv, ev);
    if (!e && ev) {
        /* Everyone is added by the creation: it is in every inbox. */
        entry en;
        event_entry(&en, conv, 1, store_now(s), ev, 0);
        e = batch_entry(s, b, &en, members, n_members, out);
    }
    return finish(s, b, e, out, conv, &ns, 1, 0);
}

/* Shared by add / remove / set_role / update: under write_lock, check the
 * conversation and each user's membership, work out the mode after the
 * event, and write the event, the membership rows, the pull rows and the
 * conversation's record in one batch. */
enum change { ADD, REMOVE, SET_ROLE, UPDATE };

/* The pull rows a membership event writes (members CF 'l' user \0 conv).
 * `removed`: the users this event removes, sorted. */
static mqstore_err batch_pull_rows(mqstore *s, rocksdb_writebatch_t *b, const char *conv,
                                   const conv_state *cs, const conv_state *ns, uint64_t seq,
                                   enum change what, const char *const *users, size_t n,
                                   const mqstore_member_list *old, const char **removed,
                                   size_t n_removed)
{
    mqstore_err e = MQSTORE_OK;
    uint64_t from, left;
    int found;
    if (ns->large && !cs->large) {
        /* Small -> large: every member from now on pulls what follows this
         * event. A member who stayed through an earlier large time keeps
         * their row (what they have not pulled of it is still theirs). */
        for (size_t i = 0; !e && i < old->n; i++) {
            const char *u = old->items[i].user;
            if (in_sorted(removed, n_removed, u)) continue;
            if ((e = pull_row_get(s, u, conv, &from, &left, &found))) break;
            if (!found || left) pull_row_put(s, b, u, conv, seq, 0);
        }
        for (size_t i = 0; !e && what == ADD && i < n; i++)
            pull_row_put(s, b, users[i], conv, seq, 0);
    } else if (ns->large && what == ADD) {
        for (size_t i = 0; i < n; i++)
            pull_row_put(s, b, users[i], conv, seq, 0);
    }
    /* A removed user's window closes before this event, whatever the mode. */
    for (size_t i = 0; !e && i < n_removed; i++) {
        if ((e = pull_row_get(s, removed[i], conv, &from, &left, &found))) break;
        if (found && !left) pull_row_put(s, b, removed[i], conv, from, seq);
    }
    return e;
}

static mqstore_err change_members(mqstore *s, const char *conv, const char *const *users,
                                  const mqstore_role *roles, size_t n, mqstore_role set_role,
                                  enum change what, const mqstore_event *ev, mqstore_result *out)
{
    if (!out) return MQSTORE_ERR_INVAL;
    memset(out, 0, sizeof(*out));
    if (!s || !mqc_id_valid(MQC_ID_KEY, conv) || !ev) return MQSTORE_ERR_INVAL;
    mqstore_err e = what == UPDATE ? MQSTORE_OK : check_users(users, n);
    if (e) return e;
    if (what == UPDATE) n = 0;
    if ((e = check_event(s, ev))) return e;
    if (what == ADD && roles)
        for (size_t i = 0; i < n; i++)
            if (!role_valid(roles[i])) return MQSTORE_ERR_INVAL;
    if (what == SET_ROLE && !role_valid(set_role)) return MQSTORE_ERR_INVAL;

    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    pthread_mutex_lock(&s->write_lock);
    conv_state cs, ns;
    mqstore_member_list old = {0};
    mqstore_member *self = calloc(n ? n : 1, sizeof(*self));
    const char **fanout = NULL, **removed = NULL, **names = NULL;
    size_t n_fanout = 0, n_removed = what == REMOVE ? n : 0;
    e = self ? conv_state_get(s, conv, &cs, 1) : MQSTORE_ERR_NOMEM;
    if (!e && (!cs.exists || (cs.flags & MQSTORE_CONV_DELETED))) e = MQSTORE_ERR_NOTFOUND;
    /* One lookup per named user, not a copy of a large member list. */
    for (size_t i = 0; !e && i < n; i++) {
        mqstore_err le = member_lookup(s, conv, users[i], &self[i]);
        if (le && le != MQSTORE_ERR_NOTFOUND)
            e = le;
        else if (!le && what == ADD)
            e = MQSTORE_ERR_EXISTS;
        else if (le && what != ADD)
            e = MQSTORE_ERR_NOTFOUND;
    }
    uint64_t seq = cs.head + 1;
    ns = cs;
    ns.head = seq;
    if (what == ADD) ns.members += n;
    if (what == REMOVE && !e) {
        /* Only once every user was found a member (a failed call, e.g. a
         * non-member named or no such conversation, may name more). */
        assert(ns.members >= n);
        ns.members -= n;
    }
    if (ev->mode != MQSTORE_MODE_KEEP) ns.large = ev->mode == MQSTORE_MODE_LARGE;
    if (ev->set_flags) ns.flags = ev->flags;
    /* Large -> small: what was written up to now is pulled, what follows
     * is in the inboxes again. */
    if (cs.large && !ns.large) ns.pull_end = cs.head;
    int fan_all = !ns.large || ns.large != cs.large;
    if (!e && !(removed = sorted_copy(users, n_removed))) e = MQSTORE_ERR_NOMEM;
    if (!e && (fan_all || (ns.large && !cs.large))) {
        /* Everyone who is a member before or after the change sees it. */
        e = members_get(s, conv, &old, 1);
        if (!e && !(names = member_names(&old))) e = MQSTORE_ERR_NOMEM;
    }
    if (!e && !(fanout = malloc((old.n + n + 1) * sizeof(*fanout)))) e = MQSTORE_ERR_NOMEM;
    if (!e && fan_all)
        for (size_t i = 0; i < old.n; i++)
            fanout[n_fanout++] = names[i];
    /* Added users are not in `old`; removed ones are. While the
     * conversation stays large only they get the event in their inbox. */
    for (size_t i = 0; !e && (what == ADD || (!fan_all && what == REMOVE)) && i < n; i++)
        fanout[n_fanout++] = users[i];
    for (size_t i = 0; !e && i < n; i++) {
        key mk;
        if (what == ADD) {
            batch_member(s, b, conv, users[i], roles ? roles[i] : MQSTORE_ROLE_MEMBER, seq);
        } else if (what == SET_ROLE) {
            batch_member(s, b, conv, users[i], set_role, self[i].joined_seq);
        } else {
            member_key(&mk, 'm', conv, users[i]);
            rocksdb_writebatch_delete_cf(b, s->cf[CF_MEMBERS], mk.buf, mk.len);
            member_key(&mk, 'u', users[i], conv);
            rocksdb_writebatch_delete_cf(b, s->cf[CF_MEMBERS], mk.buf, mk.len);
        }
    }
    if (!e)
        e = batch_pull_rows(s, b, conv, &cs, &ns, seq, what, users, n, &old, removed, n_removed);
    if (!e) {
        batch_conv(s, b, conv, &ns);
        batch_title(s, b, conv, ev);
        entry en;
        event_entry(&en, conv, seq, store_now(s), ev, !fan_all);
        e = batch_entry(s, b, &en, fanout, n_fanout, out);
    }
    free(fanout);
    free(names);
    free(removed);
    free(self);
    mqstore_err r = finish(s, b, e, out, conv, &ns, what != UPDATE, 0);
    mqstore_member_list_free(&old);
    return r;
}

mqstore_err mqstore_members_add(mqstore *s, const char *conv, const char *const *users,
                                const mqstore_role *roles, size_t n, const mqstore_event *ev,
                                mqstore_result *out)
{
    return change_members(s, conv, users, roles, n, 0, ADD, ev, out);
}

mqstore_err mqstore_members_remove(mqstore *s, const char *conv, const char *const *users, size_t n,
                                   const mqstore_event *ev, mqstore_result *out)
{
    return change_members(s, conv, users, NULL, n, 0, REMOVE, ev, out);
}

mqstore_err mqstore_members_set_role(mqstore *s, const char *conv, const char *const *users,
                                     size_t n, mqstore_role role, const mqstore_event *ev,
                                     mqstore_result *out)
{
    return change_members(s, conv, users, NULL, n, role, SET_ROLE, ev, out);
}

mqstore_err mqstore_conv_update(mqstore *s, const char *conv, const mqstore_event *ev,
                                mqstore_result *out)
{
    return change_members(s, conv, NULL, NULL, 0, 0, UPDATE, ev, out);
}

/* Delete the conversation for everyone (mqstore.h): its event in every
 * member's inbox, every member removed, the log below the event and the
 * receipts deleted, the record kept (flagged) so the seqs never repeat. */
mqstore_err mqstore_conv_delete(mqstore *s, const char *conv, const mqstore_event *ev,
                                mqstore_result *out)
{
    if (!out) return MQSTORE_ERR_INVAL;
    memset(out, 0, sizeof(*out));
    if (!s || !mqc_id_valid(MQC_ID_KEY, conv) || !ev) return MQSTORE_ERR_INVAL;
    mqstore_err e = check_event(s, ev);
    if (e) return e;

    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    pthread_mutex_lock(&s->write_lock);
    conv_state cs, ns;
    mqstore_member_list old = {0};
    const char **names = NULL;
    e = conv_state_get(s, conv, &cs, 1);
    if (!e && (!cs.exists || (cs.flags & MQSTORE_CONV_DELETED))) e = MQSTORE_ERR_NOTFOUND;
    if (!e) e = members_get(s, conv, &old, 1);
    if (!e && !(names = member_names(&old))) e = MQSTORE_ERR_NOMEM;
    uint64_t seq = cs.head + 1;
    ns = cs;
    ns.head = seq;
    ns.members = 0;
    /* Nobody is left to pull: what was written while large ends here. */
    ns.large = 0;
    if (cs.large) ns.pull_end = cs.head;
    ns.flags |= MQSTORE_CONV_DELETED;
    /* Pull rows exist only if the conversation was ever large. */
    int pulls = cs.large || cs.pull_end;
    for (size_t i = 0; !e && i < old.n; i++) {
        key mk;
        member_key(&mk, 'm', conv, names[i]);
        rocksdb_writebatch_delete_cf(b, s->cf[CF_MEMBERS], mk.buf, mk.len);
        member_key(&mk, 'u', names[i], conv);
        rocksdb_writebatch_delete_cf(b, s->cf[CF_MEMBERS], mk.buf, mk.len);
        uint64_t from, left;
        int found = 0;
        /* Like a removal: the window closes before this event. */
        if (pulls && !(e = pull_row_get(s, names[i], conv, &from, &left, &found)) && found && !left)
            pull_row_put(s, b, names[i], conv, from, seq);
    }
    if (!e) {
        /* [conv\0, conv\0 be64(seq)): from the bare identifier, outside the
         * hint domain (INVARIANT in hint.cc): its only NUL is its last byte. */
        key lo, hi;
        key_reset(&lo);
        key_id(&lo, conv);
        assert(memchr(lo.buf, '\0', lo.len) == lo.buf + lo.len - 1);
        msg_key(&hi, conv, seq);
        rocksdb_writebatch_delete_range_cf(b, s->cf[CF_MSGS], lo.buf, lo.len, hi.buf, hi.len);
        /* The receipts: conv \0 user. */
        key_prefix_end(&lo, &hi);
        rocksdb_writebatch_delete_range_cf(b, s->cf[CF_RECEIPTS], lo.buf, lo.len, hi.buf, hi.len);
        batch_conv(s, b, conv, &ns);
        key tk;
        conv_title_key(&tk, conv);
        rocksdb_writebatch_delete_cf(b, s->cf[CF_HEADS], tk.buf, tk.len);
        /* Every member learns it from their inbox, whatever the mode. */
        entry en;
        event_entry(&en, conv, seq, store_now(s), ev, 0);
        e = batch_entry(s, b, &en, names, old.n, out);
    }
    free(names);
    e = finish(s, b, e, out, conv, &ns, 1, 0);
    mqstore_member_list_free(&old);
    return e;
}

/* dedup user \0 device \0 client_msg_id of an append. */
static void dedup_key(key *k, const mqstore_append *a)
{
    key_reset(k);
    key_id(k, a->sender_user);
    key_id(k, a->sender_device);
    key_raw(k, a->client_msg_id);
}

/* A live dedup record for this append, if any (expired ones do not count). */
/* A retry of the same send (same sender device and client message id)
 * within the retention: its first result, and *hit = 1. The same id for
 * another conversation is not a retry but a client bug: answering it as a
 * duplicate would acknowledge, for the new conversation, a seq that is not
 * the client's there, so it is MQSTORE_ERR_EXISTS and nothing is written. */
static mqstore_err dedup_lookup(mqstore *s, const key *k, const char *conv, mqstore_result *out,
                                int *hit)
{
    *hit = 0;
    mqstore_err e;
    Mqstore__Rec__DedupRecord *d = codec_get(s, CF_DEDUP, k, REC_DEDUP, &e);
    if (!d) return e;
    if (d->server_time_ms + s->opt.dedup_retention_ms >= store_now(s)) {
        if (strcmp(d->conv, conv) != 0) {
            codec_free(d);
            return MQSTORE_ERR_EXISTS;
        }
        *hit = 1;
        out->seq = d->seq;
        out->inbox_seq = d->inbox_seq;
        out->server_time_ms = d->server_time_ms;
        out->duplicate = 1;
        /* The original write may not be durable yet: the caller waits for
         * the newest ticket, which is at least the original's. */
        out->ticket = atomic_load(&s->last_ticket);
    }
    codec_free(d);
    return MQSTORE_OK;
}

mqstore_err mqstore_dedup_check(mqstore *s, const mqstore_append *a, mqstore_result *out, int *hit)
{
    if (!s || !a || !out || !hit) return MQSTORE_ERR_INVAL;
    memset(out, 0, sizeof(*out));
    *hit = 0;
    if (!a->client_msg_id) return MQSTORE_OK;
    if (!mqc_id_valid(MQC_ID_KEY, a->conv) || !mqc_id_valid(MQC_ID_KEY, a->sender_user) ||
        !mqc_id_valid(MQC_ID_KEY, a->sender_device) || !mqc_id_valid(MQC_ID_KEY, a->client_msg_id))
        return MQSTORE_ERR_INVAL;
    key dk;
    dedup_key(&dk, a);
    return dedup_lookup(s, &dk, a->conv, out, hit);
}

/* An edit's target: message seq of the conversation in state cs, which
 * must exist and not have expired. *old gets its record (codec_free it). */
static mqstore_err replace_target(mqstore *s, const char *conv, uint64_t seq, const conv_state *cs,
                                  Mqstore__Rec__MsgRecord **old)
{
    *old = NULL;
    if (seq > cs->head) return MQSTORE_ERR_INVAL;
    key k;
    msg_key(&k, conv, seq);
    mqstore_err e;
    Mqstore__Rec__MsgRecord *r = codec_get(s, CF_MSGS, &k, REC_MSG, &e);
    if (!r) return e ? e : MQSTORE_ERR_NOTFOUND;
    /* An expired message stays expired: a new payload would outlive it. */
    if (r->expired || retention_expired(s, conv, seq, r->server_time_ms, cs)) {
        codec_free(r);
        return MQSTORE_ERR_INVAL;
    }
    *old = r;
    return MQSTORE_OK;
}

/* Add the edit to the batch: the target's record with the new payload. */
static mqstore_err batch_replace(mqstore *s, rocksdb_writebatch_t *b, const mqstore_append *a,
                                 Mqstore__Rec__MsgRecord *old)
{
    /* Everything but the payload stays (sender, time, kind, pulled, ...). */
    ProtobufCBinaryData was = old->payload;
    old->payload.data = (uint8_t *)a->replace_payload;
    old->payload.len = a->replace_len;
    size_t vlen;
    uint8_t *val = codec_pack(&old->base, &vlen);
    old->payload = was; /* codec_free frees the decoded one */
    if (!val) return MQSTORE_ERR_NOMEM;
    key k;
    msg_key(&k, a->conv, a->replace_seq);
    rocksdb_writebatch_put_cf(b, s->cf[CF_MSGS], k.buf, k.len, (const char *)val, vlen);
    free(val);
    return MQSTORE_OK;
}

mqstore_err mqstore_append_msg(mqstore *s, const mqstore_append *a, mqstore_result *out)
{
    if (!out) return MQSTORE_ERR_INVAL;
    memset(out, 0, sizeof(*out));
    if (!s || !a || !mqc_id_valid(MQC_ID_KEY, a->conv) ||
        !mqc_id_valid(MQC_ID_KEY, a->sender_user) || !mqc_id_valid(MQC_ID_KEY, a->sender_device) ||
        (a->client_msg_id && !mqc_id_valid(MQC_ID_KEY, a->client_msg_id)) ||
        (a->payload_len && !a->payload) || (a->n_jobs && !a->jobs) || a->n_jobs > 100000)
        return MQSTORE_ERR_INVAL;
    if (a->payload_len > s->opt.max_payload) return MQSTORE_ERR_TOOBIG;
    if (a->replace_seq && a->replace_len && !a->replace_payload) return MQSTORE_ERR_INVAL;
    if (a->replace_seq && a->replace_len > s->opt.max_payload) return MQSTORE_ERR_TOOBIG;
    for (size_t i = 0; i < a->n_jobs; i++) {
        if (a->jobs[i].len && !a->jobs[i].data) return MQSTORE_ERR_INVAL;
        if (a->jobs[i].len > s->opt.max_job) return MQSTORE_ERR_TOOBIG;
    }

    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    pthread_mutex_lock(&s->write_lock);
    key dk;
    int hit = 0;
    mqstore_err e = MQSTORE_OK;
    if (a->client_msg_id) {
        dedup_key(&dk, a);
        e = dedup_lookup(s, &dk, a->conv, out, &hit);
        if (e || hit) {
            pthread_mutex_unlock(&s->write_lock);
            rocksdb_writebatch_destroy(b);
            if (e) mqstore_result_clear(out);
            return e;
        }
    }
    conv_state cs, ns;
    key k;
    mqstore_member self;
    mqstore_member_list members = {0};
    const char **names = NULL;
    Mqstore__Rec__MsgRecord *old = NULL;
    e = conv_state_get(s, a->conv, &cs, 1);
    if (!e && (!cs.exists || (cs.flags & MQSTORE_CONV_DELETED))) e = MQSTORE_ERR_NOTFOUND;
    if (!e && (e = member_lookup(s, a->conv, a->sender_user, &self)) == MQSTORE_ERR_NOTFOUND)
        e = MQSTORE_ERR_NOTMEMBER;
    if (!e && (cs.flags & MQSTORE_CONV_ADMINS_POST) && self.role < MQSTORE_ROLE_ADMIN)
        e = MQSTORE_ERR_DENIED;
    if (!e && a->replace_seq && !(e = replace_target(s, a->conv, a->replace_seq, &cs, &old)))
        e = batch_replace(s, b, a, old);
    codec_free(old);
    /* Small: an inbox entry per member. Large: the message alone. */
    if (!e && !cs.large) e = members_get(s, a->conv, &members, 1);
    if (!e && !(names = member_names(&members))) e = MQSTORE_ERR_NOMEM;
    int64_t now = store_now(s);
    ns = cs;
    ns.head = cs.head + 1;
    if (!e) {
        entry en = {a->conv,          ns.head, now,        a->sender_user, a->sender_device,
                    a->client_msg_id, a->kind, a->payload, a->payload_len, cs.large};
        e = batch_entry(s, b, &en, names, members.n, out);
    }
    if (!e && a->client_msg_id) {
        Mqstore__Rec__DedupRecord d = MQSTORE__REC__DEDUP_RECORD__INIT;
        d.conv = (char *)a->conv;
        d.seq = out->seq;
        d.inbox_seq = out->inbox_seq;
        d.server_time_ms = now;
        uint8_t buf[256];
        /* The record fits buf: conv is at most MQC_ID_MAX bytes. */
        assert(mqstore__rec__dedup_record__get_packed_size(&d) <= sizeof(buf));
        size_t len = mqstore__rec__dedup_record__pack(&d, buf);
        rocksdb_writebatch_put_cf(b, s->cf[CF_DEDUP], dk.buf, dk.len, (const char *)buf, len);
    }
    uint64_t id = 0;
    if (!e && a->n_jobs) {
        id = s->outbox_last;
        char suffix[MQSTORE_JOB_SUFFIX];
        put_be64(suffix, out->seq);
        put_be64(suffix + 8, (uint64_t)now);
        for (size_t i = 0; i < a->n_jobs; i++) {
            key jk;
            key_reset(&jk);
            key_u64(&jk, ++id);
            /* The job, and where asked the message it names: one value. */
            const char *kparts[1] = {jk.buf};
            size_t klens[1] = {jk.len};
            const char *parts[2] = {a->jobs[i].len ? (const char *)a->jobs[i].data : "", suffix};
            size_t lens[2] = {a->jobs[i].len, a->jobs_name_message ? sizeof(suffix) : 0};
            rocksdb_writebatch_putv_cf(b, s->cf[CF_OUTBOX], 1, kparts, klens, 2, parts, lens);
        }
        key_reset(&k);
        key_raw(&k, "outbox_last");
        put_u64(b, s, CF_DEFAULT, &k, id);
    }
    e = finish(s, b, e, out, a->conv, &ns, 0, id);
    free(names);
    mqstore_member_list_free(&members);
    return e;
}
