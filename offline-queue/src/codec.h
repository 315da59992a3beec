/* codec — encoding and decoding the store's records (records.proto) with
 * protobuf-c. Decoders never trust stored bytes: anything that does not
 * decode, or decodes to out-of-range values, is MQSTORE_ERR_CORRUPT. */
#ifndef MQSTORE_CODEC_H
#define MQSTORE_CODEC_H

#include "mqstore.h"
#include "records.pb-c.h"

#include <stddef.h>
#include <stdint.h>

/* Encode any record into a malloc'ed buffer. NULL on out of memory. */
uint8_t *codec_pack(const ProtobufCMessage *m, size_t *len);

/* Decode helpers; *out must be freed with the matching protobuf-c
 * __free_unpacked(out, NULL). */
mqstore_err codec_msg(const char *buf, size_t len, Mqstore__Rec__MsgRecord **out);
mqstore_err codec_dedup(const char *buf, size_t len, Mqstore__Rec__DedupRecord **out);
mqstore_err codec_inbox(const char *buf, size_t len, Mqstore__Rec__InboxEntry **out);
mqstore_err codec_member(const char *buf, size_t len, Mqstore__Rec__MemberRecord **out);
mqstore_err codec_cursor(const char *buf, size_t len, Mqstore__Rec__CursorRecord **out);
mqstore_err codec_receipt(const char *buf, size_t len, Mqstore__Rec__ReceiptRecord **out);

#endif
