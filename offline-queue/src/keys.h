// clang-format off
/* keys — how the store lays its records out in RocksDB.
 *
 * Every key is built from identifiers terminated by a NUL byte and big-endian
 * 64-bit integers. Identifiers never contain NUL, so "id\0" is prefix-free
 * and sorts exactly like the identifier itself ("a" < "ab" because '\0' sorts
 * first), and big-endian integers sort numerically. A range scan over
 * "conv\0" therefore returns a conversation's messages in seq order, and a
 * scan over "user\0" returns a user's inbox in inbox_seq order.
 *
 *   CF        key                           value
 *   default   "outbox_last"                 be64 last outbox job id
 *             "restore_floor"               be64 the inbox floor (restore.c)
 *   msgs      conv \0 be64(seq)             MsgRecord (retention may remove it, or leave a
 *                                           stub: never the conversation's last key)
 *   heads     'c' conv                      ConvRecord: the conversation exists (its head is
 *                                           the last seq in msgs, cached in memory)
 *             't' user                      be64 inbox trimmed up to (the inbox head is
 *                                           the higher of this and the last entry)
 *             'p' user                      opaque per-user preferences (mqstore_user_prefs_*)
 *             'r' user                      be64 ms: the user's tokens issued before are
 *                                           refused (mqstore_user_revoke_*, ops.c)
 *             'k' conv                      empty: conv's ConvRecord has a retention override
 *                                           (loaded at open, retention.c)
 *             'n' conv                      the conversation's title (mqstore_event.title)
 *   dedup     user \0 device \0 cmid        DedupRecord
 *   inbox     user \0 be64(inbox_seq)       InboxEntry
 *   members   'm' conv \0 user              MemberRecord
 *             'u' user \0 conv              MemberRecord
 *             'l' user \0 conv              PullRecord (large conversations, pull.c)
 *   cursors   user \0 device                CursorRecord
 *   receipts  conv \0 user                  ReceiptRecord
 *   positions user \0 device \0 conv        be64 the device's position in a large conversation
 *   tokens    user \0 device                TokenRecord (the device's push token, tokens.c)
 *   outbox    be64(id)                      job bytes
 *
 * msgs, inbox and dedup insert with a hint per conversation, inbox and
 * device (hint.cc); a range deletion there must start at a bare "id\0"
 * (the inbox trim, mqstore_conv_delete's log deletion and
 * mqstore_user_erase's inbox and dedup deletions do).
 */
// clang-format on
#ifndef MQSTORE_KEYS_H
#define MQSTORE_KEYS_H

#include "mqc_id.h"

#include <stddef.h>
#include <stdint.h>

/* Longest key we build: tag + three identifiers + their NULs + a be64. */
#define KEY_MAX (1 + 3 * (MQC_ID_MAX + 1) + 8)

typedef struct key {
    size_t len;
    char buf[KEY_MAX];
} key;

void key_reset(key *k);
void key_tag(key *k, char tag);
void key_id(key *k, const char *id);  /* id + NUL */
void key_raw(key *k, const char *id); /* id without NUL (last component) */
void key_u64(key *k, uint64_t v);     /* big-endian */
/* The smallest key greater than every key that starts with k: k with its
 * last byte incremented (used as an exclusive upper bound of a prefix). */
void key_prefix_end(const key *k, key *end);

/* A page of the rows under tag id \0 (members, pull rows, a user's
 * conversations): *lo and *hi bound them, *from is where a page after
 * `after` ("" or NULL: the first page) starts — after + '\0' sorts right
 * after every key equal to `after`, before any longer id. */
void key_page(key *lo, key *hi, key *from, char tag, const char *id, const char *after);

void put_be64(char *p, uint64_t v);
uint64_t get_be64(const char *p);

#endif
