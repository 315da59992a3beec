/* mqc_id — the identifiers of mqchat, in one place.
 *
 * Every identifier a device, a token or the store handles is checked here,
 * by kind, so the store, the wire decoders, the topic parser and the JWT
 * verifier agree on what a valid id is. All ids are NUL-terminated ASCII of
 * at most MQC_ID_MAX bytes, so a fixed buffer of MQC_ID_BUF bytes holds any
 * of them.
 *
 *   kind            syntax                                used for
 *   MQC_ID_USER     1..128 of [A-Za-z0-9._-]              user ids (JWT sub)
 *   MQC_ID_DEVICE   1..128 of [A-Za-z0-9._-]              device ids (JWT did)
 *   MQC_ID_CLIENT   1..128 of [A-Za-z0-9._:-]             client message ids,
 *                                                         request ids
 *   MQC_ID_CONV     "d:<a>:<b>" (users a < b, bytewise)   1:1 conversations
 *                   "d:<a>:<a>"                           a user's notes to self
 *                   "g:" + 1..64 of [A-Za-z0-9]           groups
 *                   (128 bytes at most in all)
 *   MQC_ID_KEY      1..128 of [A-Za-z0-9._:-]             anything the store
 *                                                         keys by (a superset
 *                                                         of all the above)
 *
 * User and device ids never contain ':' or '/', so "<user>:<device>" (the
 * MQTT client id) and the topic levels split without escaping; store keys
 * never contain a NUL byte, which terminates them inside RocksDB keys.
 * Nothing here knows MQTT, RocksDB or the broker. */
#ifndef MQC_ID_H
#define MQC_ID_H

#include <stddef.h>

#define MQC_ID_MAX 128              /* bytes in the longest id */
#define MQC_ID_BUF (MQC_ID_MAX + 1) /* a buffer that holds any id */
#define MQC_GROUP_ID_MAX 64         /* bytes after "g:" in a group id */

typedef enum mqc_id_kind {
    MQC_ID_USER,
    MQC_ID_DEVICE,
    MQC_ID_CLIENT,
    MQC_ID_CONV,
    MQC_ID_KEY,
} mqc_id_kind;

/* 1 if s is a valid id of that kind, else 0. NULL -> 0. */
int mqc_id_valid(mqc_id_kind kind, const char *s);

/* For a valid 1:1 conversation id "d:<a>:<b>" (a <= b; a == b for notes
 * to self), copy its two users into a and b and return 0; -1 (a and b
 * undefined) for anything else. */
int mqc_conv_direct(const char *conv, char a[MQC_ID_BUF], char b[MQC_ID_BUF]);

/* 1 if an MQTT client id has the chat form "<user>:<device>" (a valid user
 * id, one ':', a valid device id): such ids belong to JWT-authenticated
 * devices only (docs/OPERATIONS.md, "Identity and tokens"). */
int mqc_client_id_is_chat(const char *client_id);

/* 1 if conv has the group form "g:..." (valid or not), else 0. */
int mqc_conv_is_group(const char *conv);

#endif
