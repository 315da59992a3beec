/* wire — decoding and validating what devices send. Every upstream payload
 * passes through here before anything else looks at it: protobuf decoding
 * (protobuf-c) and then field checks (ids, sizes, enums). A function here
 * either returns a fully valid message or an error code and a message for
 * the device. Nothing here touches the broker or the store, so the fuzz
 * target (tests/fuzz/fuzz_wire.c) drives these functions directly. */
#ifndef MQC_WIRE_H
#define MQC_WIRE_H

#include <stddef.h>

#include "mqc_id.h"
#include "mqchat.pb-c.h"

#define EC(x) MQCHAT__V1__ERROR_CODE__ERROR_CODE_##x
typedef Mqchat__V1__ErrorCode wire_code;

typedef struct wire_err {
    wire_code code; /* 0 (UNSPECIFIED) when valid */
    char msg[160];
} wire_err;

#define WIRE_MAX_MEDIA 16
#define WIRE_MAX_CONTENT_TYPE 64
#define WIRE_MAX_TITLE 128
/* Users in one PresenceWatch (the presence_watch_max option is lower). */
#define WIRE_MAX_WATCH 1000
/* Push tokens (PushTokenRegister.token) and app ids. */
#define WIRE_MAX_PUSH_TOKEN 4096
#define WIRE_MAX_APP_ID 255
/* User ids in one membership request (GroupCreate, add, remove, roles). */
#define WIRE_MAX_BATCH 1000
/* Upstream payloads larger than max_body + this are refused undecoded
 * (requests: or than a full batch of the longest ids, if that is more). */
#define WIRE_ENVELOPE_SLACK 65536
/* Receipts are refused undecoded above WIRE_ENVELOPE_SLACK, typing
 * notices above this. */
#define WIRE_TYPING_MAX 4096

/* Ids (users, devices, conversations, client message and request ids) are
 * checked by mqc_id.h, which the store and the JWT verifier share. */

/* Each decoder returns the unpacked message (free with the matching
 * protobuf-c __free_unpacked(msg, NULL)) or NULL with *err set. For sends
 * and requests, *err may be set while a message is returned: then it
 * decoded but is invalid, and its client_msg_id / request_id (valid or not)
 * says whom to answer; the caller still frees it. */
Mqchat__V1__SendRequest *wire_send(const void *buf, size_t len, size_t max_body, wire_err *err);
/* max_members: the group member limit (group_max_members); one request
 * names at most min(max_members, WIRE_MAX_BATCH) users. */
Mqchat__V1__Request *wire_request(const void *buf, size_t len, size_t max_body, size_t max_members,
                                  wire_err *err);
Mqchat__V1__Receipt *wire_receipt(const void *buf, size_t len, wire_err *err);
Mqchat__V1__Typing *wire_typing(const void *buf, size_t len, wire_err *err);

/* Pack any message into a buffer from mosquitto_malloc-compatible `alloc`
 * (the broker frees published payloads itself). NULL on out of memory. */
void *wire_pack(const ProtobufCMessage *m, size_t *len, void *(*alloc)(size_t));

#endif
