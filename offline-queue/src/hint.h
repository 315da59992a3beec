/* hint — memtable insert hints per identifier; see hint.cc. */
#ifndef MQSTORE_HINT_H
#define MQSTORE_HINT_H

#include <rocksdb/c.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum hint_kind {
    HINT_LOG,    /* log keys "id\0" be64: one hint per conversation / inbox */
    HINT_DEVICE, /* dedup keys "user\0device\0cmid": one hint per device */
} hint_kind;

/* A copy of base with memtable_insert_with_hint_prefix_extractor set for
 * keys of the given kind. Returns NULL and sets *errptr (free with
 * rocksdb_free) if RocksDB refuses the option. */
rocksdb_options_t *hint_options(const rocksdb_options_t *base, hint_kind kind, char **errptr);

#ifdef __cplusplus
}
#endif

#endif
