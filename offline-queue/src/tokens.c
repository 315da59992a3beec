/* tokens — push tokens, one per device (tokens CF: user \0 device ->
 * TokenRecord). A put replaces the device's token; a delete may be made
 * conditional on the token, so that a provider's "invalid token" report
 * about an old token cannot remove the one the device registered since.
 * Listing a user's tokens is one range scan (the send path uses it to
 * build push jobs). */
#include "store_int.h"
#include "codec.h"

#include <stdlib.h>
#include <string.h>

#define TOKENS_MAX 1000

static void token_key(key *k, const char *user, const char *device)
{
    key_reset(k);
    key_id(k, user);
    key_raw(k, device);
}

mqstore_err mqstore_push_token_put(mqstore *s, const char *user, const char *device,
                                   uint32_t platform, const char *token, const char *app)
{
    if (!s || !mqc_id_valid(MQC_ID_KEY, user) || !mqc_id_valid(MQC_ID_KEY, device) || !token ||
        !token[0] || strlen(token) > MQSTORE_TOKEN_MAX || (app && strlen(app) > MQSTORE_APP_MAX))
        return MQSTORE_ERR_INVAL;
    Mqstore__Rec__TokenRecord r = MQSTORE__REC__TOKEN_RECORD__INIT;
    r.platform = platform;
    r.token = (char *)token;
    r.app = (char *)(app ? app : "");
    r.updated_ms = store_now(s);
    size_t len;
    uint8_t *buf = codec_pack(&r.base, &len);
    if (!buf) return MQSTORE_ERR_NOMEM;
    key k;
    token_key(&k, user, device);
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    rocksdb_writebatch_put_cf(b, s->cf[CF_TOKENS], k.buf, k.len, (const char *)buf, len);
    free(buf);
    return write_batch_alone(s, b);
}

mqstore_err mqstore_push_token_delete(mqstore *s, const char *user, const char *device,
                                      const char *only_if_token, int *deleted)
{
    if (deleted) *deleted = 0;
    if (!s || !mqc_id_valid(MQC_ID_KEY, user) || !mqc_id_valid(MQC_ID_KEY, device))
        return MQSTORE_ERR_INVAL;
    key k;
    token_key(&k, user, device);
    mqstore_err e;
    /* Read and delete under one lock: a put between them would be lost. */
    pthread_mutex_lock(&s->write_lock);
    Mqstore__Rec__TokenRecord *r = codec_get(s, CF_TOKENS, &k, REC_TOKEN, &e);
    int match = r && (!only_if_token || strcmp(r->token, only_if_token) == 0);
    codec_free(r);
    if (!e && match) {
        rocksdb_writebatch_t *b = rocksdb_writebatch_create();
        rocksdb_writebatch_delete_cf(b, s->cf[CF_TOKENS], k.buf, k.len);
        uint64_t ticket;
        e = store_write(s, b, &ticket);
        rocksdb_writebatch_destroy(b);
        if (!e && deleted) *deleted = 1;
    }
    pthread_mutex_unlock(&s->write_lock);
    return e;
}

void mqstore_push_token_list_free(mqstore_push_token_list *l)
{
    if (!l) return;
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i].token);
    free(l->items);
    memset(l, 0, sizeof(*l));
}

typedef struct token_scan {
    mqstore_push_token_list *out;
    size_t cap, plen;
} token_scan;

static int token_row(void *data, const char *k, size_t klen, const char *v, size_t vlen)
{
    token_scan *ts = data;
    mqstore_push_token_list *out = ts->out;
    size_t dlen = klen - ts->plen;
    if (dlen < 1 || dlen > MQC_ID_MAX) return MQSTORE_ERR_CORRUPT;
    if (out->n >= TOKENS_MAX) return SCAN_STOP;
    Mqstore__Rec__TokenRecord *r = codec_decode(REC_TOKEN, v, vlen);
    if (!r) return MQSTORE_ERR_CORRUPT;
    if (out->n == ts->cap) {
        size_t cap = ts->cap ? ts->cap * 2 : 4;
        mqstore_push_token *items = realloc(out->items, cap * sizeof(*items));
        if (!items) {
            codec_free(r);
            return MQSTORE_ERR_NOMEM;
        }
        out->items = items;
        ts->cap = cap;
    }
    mqstore_push_token *t = &out->items[out->n];
    memcpy(t->device, k + ts->plen, dlen);
    t->device[dlen] = '\0';
    t->platform = r->platform;
    t->token = strdup(r->token);
    strcpy(t->app, r->app); /* validated: at most MQSTORE_APP_MAX */
    t->updated_ms = r->updated_ms;
    codec_free(r);
    if (!t->token) return MQSTORE_ERR_NOMEM;
    out->n++;
    return SCAN_NEXT;
}

mqstore_err mqstore_push_tokens(mqstore *s, const char *user, mqstore_push_token_list *out)
{
    if (!out) return MQSTORE_ERR_INVAL;
    memset(out, 0, sizeof(*out));
    if (!s || !mqc_id_valid(MQC_ID_KEY, user)) return MQSTORE_ERR_INVAL;
    key lo, hi;
    key_reset(&lo);
    key_id(&lo, user);
    key_prefix_end(&lo, &hi);
    token_scan ts = {out, 0, lo.len};
    mqstore_err e = store_scan(s, CF_TOKENS, &lo, &hi, &lo, SCAN_FORWARD, token_row, &ts);
    if (e) mqstore_push_token_list_free(out);
    return e;
}
