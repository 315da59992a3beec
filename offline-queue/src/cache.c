/* cache — in-memory heads and member lists. See cache.h for the rules. */
#include "cache.h"
#include "store_int.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

typedef struct head_ent {
    UT_hash_handle hh;
    uint64_t v;
    size_t klen;
    char k[];
} head_ent;

typedef struct conv_ent {
    UT_hash_handle hh;
    conv_state cs;
    char conv[MQC_ID_BUF];
} conv_ent;

typedef struct members_ent {
    UT_hash_handle hh;
    mqstore_member_list list;
    char conv[MQC_ID_BUF];
} members_ent;

void cache_init(mqstore *s)
{
    pthread_mutex_init(&s->cache_lock, NULL);
    s->heads = NULL;
    s->convs = NULL;
    s->members = NULL;
    s->n_heads = s->n_convs = s->n_member_rows = 0;
}

static void heads_clear(mqstore *s)
{
    head_ent *e, *t;
    HASH_ITER(hh, s->heads, e, t)
    {
        HASH_DEL(s->heads, e);
        free(e);
    }
    s->n_heads = 0;
}

static void convs_clear(mqstore *s)
{
    conv_ent *e, *t;
    HASH_ITER(hh, s->convs, e, t)
    {
        HASH_DEL(s->convs, e);
        free(e);
    }
    s->n_convs = 0;
}

static void members_free(members_ent *e)
{
    free(e->list.items);
    free(e);
}

/* Unlink a cached member list and free it (cache_lock held). */
static void members_remove(mqstore *s, members_ent *e)
{
    HASH_DEL(s->members, e);
    s->n_member_rows -= e->list.n;
    members_free(e);
}

static void members_clear(mqstore *s)
{
    members_ent *e, *t;
    HASH_ITER(hh, s->members, e, t)
    {
        members_remove(s, e);
    }
}

void cache_free(mqstore *s)
{
    heads_clear(s);
    convs_clear(s);
    members_clear(s);
    pthread_mutex_destroy(&s->cache_lock);
}

int cache_head_get(mqstore *s, const key *k, uint64_t *v)
{
    head_ent *e;
    pthread_mutex_lock(&s->cache_lock);
    HASH_FIND(hh, s->heads, k->buf, k->len, e);
    if (e) *v = e->v;
    pthread_mutex_unlock(&s->cache_lock);
    return e != NULL;
}

void cache_head_set(mqstore *s, const key *k, uint64_t v)
{
    /* Only a writer (write_lock held) changes the cache (cache.h). */
    assert(store_write_locked(s));
    head_ent *e;
    pthread_mutex_lock(&s->cache_lock);
    HASH_FIND(hh, s->heads, k->buf, k->len, e);
    if (e) {
        /* Heads only grow: seqs and inbox seqs are never reused. */
        assert(v >= e->v);
        e->v = v;
    } else {
        if (s->n_heads >= CACHE_MAX_HEADS) heads_clear(s);
        e = malloc(sizeof(*e) + k->len);
        if (e) {
            e->v = v;
            e->klen = k->len;
            memcpy(e->k, k->buf, k->len);
            HASH_ADD_KEYPTR(hh, s->heads, e->k, e->klen, e);
            s->n_heads++;
        }
    }
    pthread_mutex_unlock(&s->cache_lock);
}

void cache_head_drop(mqstore *s, const key *k)
{
    /* Only a writer (write_lock held) changes the cache (cache.h). */
    assert(store_write_locked(s));
    head_ent *e;
    pthread_mutex_lock(&s->cache_lock);
    HASH_FIND(hh, s->heads, k->buf, k->len, e);
    if (e) {
        HASH_DEL(s->heads, e);
        free(e);
        s->n_heads--;
    }
    pthread_mutex_unlock(&s->cache_lock);
}

int cache_conv_get(mqstore *s, const char *conv, conv_state *out)
{
    conv_ent *e;
    pthread_mutex_lock(&s->cache_lock);
    HASH_FIND_STR(s->convs, conv, e);
    if (e) *out = e->cs;
    pthread_mutex_unlock(&s->cache_lock);
    return e != NULL;
}

void cache_conv_set(mqstore *s, const char *conv, const conv_state *cs)
{
    /* Only a writer (write_lock held) changes the cache (cache.h). */
    assert(store_write_locked(s));
    conv_ent *e;
    pthread_mutex_lock(&s->cache_lock);
    HASH_FIND_STR(s->convs, conv, e);
    if (e) {
        /* Heads only grow: seqs are never reused. */
        assert(cs->head >= e->cs.head);
        e->cs = *cs;
    } else {
        if (s->n_convs >= CACHE_MAX_HEADS) convs_clear(s);
        e = malloc(sizeof(*e));
        if (e) {
            e->cs = *cs;
            strcpy(e->conv, conv);
            HASH_ADD_STR(s->convs, conv, e);
            s->n_convs++;
        }
    }
    pthread_mutex_unlock(&s->cache_lock);
}

static members_ent *find_members(mqstore *s, const char *conv)
{
    members_ent *e;
    HASH_FIND_STR(s->members, conv, e);
    return e;
}

int cache_members_copy(mqstore *s, const char *conv, mqstore_member_list *out)
{
    int rc = 0;
    pthread_mutex_lock(&s->cache_lock);
    members_ent *e = find_members(s, conv);
    if (e) {
        out->n = e->list.n;
        out->items = malloc((e->list.n ? e->list.n : 1) * sizeof(*out->items));
        if (out->items) {
            memcpy(out->items, e->list.items, e->list.n * sizeof(*out->items));
            rc = 1;
        } else {
            out->n = 0;
            rc = -1;
        }
    }
    pthread_mutex_unlock(&s->cache_lock);
    return rc;
}

static int cmp_member(const void *a, const void *b)
{
    return strcmp(((const mqstore_member *)a)->user, ((const mqstore_member *)b)->user);
}

int cache_member_find(mqstore *s, const char *conv, const char *user, mqstore_member *out)
{
    int rc = -1;
    pthread_mutex_lock(&s->cache_lock);
    members_ent *e = find_members(s, conv);
    if (e) {
        mqstore_member probe;
        strcpy(probe.user, user);
        const mqstore_member *m =
            bsearch(&probe, e->list.items, e->list.n, sizeof(probe), cmp_member);
        if (m) *out = *m;
        rc = m != NULL;
    }
    pthread_mutex_unlock(&s->cache_lock);
    return rc;
}

void cache_members_set(mqstore *s, const char *conv, const mqstore_member_list *l)
{
    /* Only a writer (write_lock held) changes the cache (cache.h). */
    assert(store_write_locked(s));
    members_ent *e = calloc(1, sizeof(*e));
    if (!e) return;
    e->list.n = l->n;
    e->list.items = malloc((l->n ? l->n : 1) * sizeof(*l->items));
    if (!e->list.items) {
        free(e);
        return;
    }
    /* An empty list (everyone left) may have no items array. */
    if (l->n) memcpy(e->list.items, l->items, l->n * sizeof(*l->items));
    strcpy(e->conv, conv);
    pthread_mutex_lock(&s->cache_lock);
    members_ent *old = find_members(s, conv);
    if (old) members_remove(s, old);
    if (s->n_member_rows + l->n > CACHE_MAX_MEMBER_ROWS) members_clear(s);
    HASH_ADD_STR(s->members, conv, e);
    s->n_member_rows += l->n;
    pthread_mutex_unlock(&s->cache_lock);
}

void cache_members_drop(mqstore *s, const char *conv)
{
    /* Only a writer (write_lock held) changes the cache (cache.h). */
    assert(store_write_locked(s));
    pthread_mutex_lock(&s->cache_lock);
    members_ent *e = find_members(s, conv);
    if (e) members_remove(s, e);
    pthread_mutex_unlock(&s->cache_lock);
}
