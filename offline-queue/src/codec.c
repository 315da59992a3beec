/* codec — stored records in and out of protobuf, validated on the way in. */
#include "codec.h"
#include "store_int.h"

#include <stdlib.h>
#include <string.h>

static const ProtobufCMessageDescriptor *const descriptors[REC_KINDS] = {
    [REC_MSG] = &mqstore__rec__msg_record__descriptor,
    [REC_DEDUP] = &mqstore__rec__dedup_record__descriptor,
    [REC_INBOX] = &mqstore__rec__inbox_entry__descriptor,
    [REC_MEMBER] = &mqstore__rec__member_record__descriptor,
    [REC_CURSOR] = &mqstore__rec__cursor_record__descriptor,
    [REC_RECEIPT] = &mqstore__rec__receipt_record__descriptor,
    [REC_CONV] = &mqstore__rec__conv_record__descriptor,
    [REC_PULL] = &mqstore__rec__pull_record__descriptor,
    [REC_TOKEN] = &mqstore__rec__token_record__descriptor,
};

/* Encode a record into a malloc'ed buffer; NULL on out of memory. */
uint8_t *codec_pack(const ProtobufCMessage *m, size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) return NULL;
    *len = protobuf_c_message_pack(m, buf);
    return buf;
}

/* 1 if s is an identifier or empty (optional string fields). */
static int id_ok_or_empty(const char *s)
{
    return s && (s[0] == '\0' || mqc_id_valid(MQC_ID_KEY, s));
}

/* 1 if a decoded record keeps the rules of its kind. */
static int rec_valid(rec_kind kind, const ProtobufCMessage *rec)
{
    switch (kind) {
    case REC_MSG: {
        const Mqstore__Rec__MsgRecord *m = (const Mqstore__Rec__MsgRecord *)rec;
        return mqc_id_valid(MQC_ID_KEY, m->sender_user) && id_ok_or_empty(m->sender_device) &&
               id_ok_or_empty(m->client_msg_id);
    }
    case REC_DEDUP: {
        const Mqstore__Rec__DedupRecord *d = (const Mqstore__Rec__DedupRecord *)rec;
        return mqc_id_valid(MQC_ID_KEY, d->conv) && d->seq != 0;
    }
    case REC_INBOX: {
        const Mqstore__Rec__InboxEntry *ie = (const Mqstore__Rec__InboxEntry *)rec;
        return mqc_id_valid(MQC_ID_KEY, ie->conv) && ie->seq != 0;
    }
    case REC_MEMBER: {
        const Mqstore__Rec__MemberRecord *m = (const Mqstore__Rec__MemberRecord *)rec;
        return m->role >= MQSTORE_ROLE_MEMBER && m->role <= MQSTORE_ROLE_OWNER;
    }
    case REC_CURSOR:
        return 1;
    case REC_RECEIPT: {
        const Mqstore__Rec__ReceiptRecord *r = (const Mqstore__Rec__ReceiptRecord *)rec;
        return r->read <= r->delivered;
    }
    case REC_CONV: {
        const Mqstore__Rec__ConvRecord *c = (const Mqstore__Rec__ConvRecord *)rec;
        return (c->flags & ~MQSTORE_CONV_FLAGS_ALL) == 0;
    }
    case REC_PULL: {
        const Mqstore__Rec__PullRecord *p = (const Mqstore__Rec__PullRecord *)rec;
        return p->left_seq == 0 || p->left_seq > p->from_seq;
    }
    case REC_TOKEN: {
        const Mqstore__Rec__TokenRecord *t = (const Mqstore__Rec__TokenRecord *)rec;
        size_t n = strlen(t->token);
        return n >= 1 && n <= MQSTORE_TOKEN_MAX && strlen(t->app) <= MQSTORE_APP_MAX;
    }
    case REC_KINDS:
        break;
    }
    return 0;
}

/* Decode and validate a stored value; NULL means corrupt (codec.h). */
void *codec_decode(rec_kind kind, const char *buf, size_t len)
{
    ProtobufCMessage *rec =
        protobuf_c_message_unpack(descriptors[kind], NULL, len, (const uint8_t *)buf);
    if (rec && !rec_valid(kind, rec)) {
        protobuf_c_message_free_unpacked(rec, NULL);
        rec = NULL;
    }
    return rec;
}

/* store_get and codec_decode in one: the record at k, or NULL (codec.h). */
void *codec_get(mqstore *s, int cf, const key *k, rec_kind kind, mqstore_err *err)
{
    char *val;
    size_t len;
    *err = store_get(s, cf, k, &val, &len);
    if (*err || !val) return NULL;
    void *rec = codec_decode(kind, val, len);
    rocksdb_free(val);
    if (!rec) *err = MQSTORE_ERR_CORRUPT;
    return rec;
}

/* Free a decoded record. */
void codec_free(void *rec)
{
    if (rec) protobuf_c_message_free_unpacked(rec, NULL);
}
