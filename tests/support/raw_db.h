/* raw_db — a closed store's directory opened with plain RocksDB, for tests
 * that write stored values behind the store's back (damaged records, the
 * layouts of older versions). The column families are the store's, in its
 * order (offline-queue/src/store.c); the key layouts are in
 * offline-queue/src/keys.h. Each call returns NULL, or a malloc'ed RocksDB
 * error the test reports and frees. */
#ifndef MQC_RAW_DB_H
#define MQC_RAW_DB_H

#include <rocksdb/c.h>
#include <stddef.h>

enum {
    RAW_DEFAULT,
    RAW_MSGS,
    RAW_HEADS,
    RAW_DEDUP,
    RAW_INBOX,
    RAW_MEMBERS,
    RAW_CURSORS,
    RAW_RECEIPTS,
    RAW_OUTBOX,
    RAW_POSITIONS,
    RAW_TOKENS,
    RAW_NCF
};

typedef struct raw_db {
    rocksdb_options_t *opt;
    rocksdb_writeoptions_t *wopt;
    rocksdb_t *db;
    rocksdb_column_family_handle_t *cf[RAW_NCF];
} raw_db;

char *raw_open(raw_db *r, const char *dir);
char *raw_put(raw_db *r, int cf, const char *k, size_t klen, const char *v, size_t vlen);
void raw_close(raw_db *r);

#endif
