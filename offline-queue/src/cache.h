/* cache — the store's in-memory copies of hot, small state: conversation
 * heads, inbox heads and member lists.
 *
 * The invariant that makes caching safe: only a writer holding write_lock
 * inserts or changes an entry, and it does so only after its batch was
 * written (so the cache never runs ahead of RocksDB, and a failed write
 * leaves it as it was). Readers on other threads may use a hit, but on a
 * miss they read RocksDB and do not insert: a reader's value could be stale
 * by the time it inserted it. cache_lock protects the hash tables
 * themselves; it is held only for a lookup or a copy.
 *
 * Bounded: past CACHE_MAX_HEADS heads (or conversation states) or CACHE_MAX_MEMBER_ROWS member rows
 * the table is emptied and refills from RocksDB on demand. */
#ifndef MQSTORE_CACHE_H
#define MQSTORE_CACHE_H

#include "mqstore.h"
#include "keys.h"

#define CACHE_MAX_HEADS 1000000
#define CACHE_MAX_MEMBER_ROWS 1000000

struct mqstore;
void cache_init(struct mqstore *s);
void cache_free(struct mqstore *s);

/* Conversation states (head, mode, member count, flags) by conversation
 * id. 1 on a hit. Retention's compaction filter reads them too, on
 * RocksDB's threads: a head it finds here is in RocksDB (the cache never
 * runs ahead of it). */
struct conv_state;
int cache_conv_get(struct mqstore *s, const char *conv, struct conv_state *out);
void cache_conv_set(struct mqstore *s, const char *conv,
                    const struct conv_state *cs); /* writers only */

/* Inbox heads, keyed by 'i' user (a key of the cache only). 1 on a hit. */
int cache_head_get(struct mqstore *s, const key *k, uint64_t *v);
void cache_head_set(struct mqstore *s, const key *k, uint64_t v); /* writers only */
/* Forget an inbox head whose inbox was erased (mqstore_user_erase: the
 * user's inbox seqs start again from 1). Writers only. */
void cache_head_drop(struct mqstore *s, const key *k);

/* Member lists by conversation (sorted by user id). cache_members_copy:
 * 1 and a malloc'ed copy on a hit, 0 on a miss, -1 out of memory.
 * cache_member_find: 1 found, 0 the conversation is cached and the user is
 * not a member, -1 not cached. */
int cache_members_copy(struct mqstore *s, const char *conv, mqstore_member_list *out);
int cache_member_find(struct mqstore *s, const char *conv, const char *user, mqstore_member *out);
void cache_members_set(struct mqstore *s, const char *conv, const mqstore_member_list *l);
void cache_members_drop(struct mqstore *s, const char *conv); /* writers only */

#endif
