/* codec — encoding and decoding the store's records (records.proto) with
 * protobuf-c. Decoders never trust stored bytes: anything that does not
 * decode, or decodes to out-of-range values, is MQSTORE_ERR_CORRUPT. */
#ifndef MQSTORE_CODEC_H
#define MQSTORE_CODEC_H

#include "mqstore.h"
#include "keys.h"
#include "records.pb-c.h"

#include <stddef.h>
#include <stdint.h>

/* The kinds of stored record, one per message of records.proto. */
typedef enum rec_kind {
    REC_MSG,     /* Mqstore__Rec__MsgRecord */
    REC_DEDUP,   /* Mqstore__Rec__DedupRecord */
    REC_INBOX,   /* Mqstore__Rec__InboxEntry */
    REC_MEMBER,  /* Mqstore__Rec__MemberRecord */
    REC_CURSOR,  /* Mqstore__Rec__CursorRecord */
    REC_RECEIPT, /* Mqstore__Rec__ReceiptRecord */
    REC_CONV,    /* Mqstore__Rec__ConvRecord */
    REC_PULL,    /* Mqstore__Rec__PullRecord */
    REC_TOKEN,   /* Mqstore__Rec__TokenRecord */
    REC_KINDS
} rec_kind;

/* Encode any record into a malloc'ed buffer. NULL on out of memory. */
uint8_t *codec_pack(const ProtobufCMessage *m, size_t *len);

/* Decode a stored value as a record of that kind (the struct named above),
 * validated. NULL if it does not decode or breaks its record's rules: the
 * caller reports MQSTORE_ERR_CORRUPT. Free the record with codec_free(). */
void *codec_decode(rec_kind kind, const char *buf, size_t len);

/* Get the value at k in cf and decode it: the record (free it with
 * codec_free()), or NULL with *err = MQSTORE_OK when there is none, or NULL
 * with *err set on an error (MQSTORE_ERR_CORRUPT if it does not decode). */
void *codec_get(mqstore *s, int cf, const key *k, rec_kind kind, mqstore_err *err);

/* Free a record from codec_decode() or codec_get(); NULL is a no-op. */
void codec_free(void *rec);

#endif
