/* raw_db — plain RocksDB access to a closed store (raw_db.h). */
#include "raw_db.h"

static const char *const cf_names[RAW_NCF] = {"default", "msgs",      "heads",   "dedup",
                                              "inbox",   "members",   "cursors", "receipts",
                                              "outbox",  "positions", "tokens"};

char *raw_open(raw_db *r, const char *dir)
{
    const rocksdb_options_t *cfopt[RAW_NCF];
    char *err = NULL;
    r->opt = rocksdb_options_create();
    for (int i = 0; i < RAW_NCF; i++)
        cfopt[i] = r->opt;
    r->wopt = rocksdb_writeoptions_create();
    r->db = rocksdb_open_column_families(r->opt, dir, RAW_NCF, cf_names, cfopt, r->cf, &err);
    return err;
}

char *raw_put(raw_db *r, int cf, const char *k, size_t klen, const char *v, size_t vlen)
{
    char *err = NULL;
    rocksdb_put_cf(r->db, r->wopt, r->cf[cf], k, klen, v, vlen, &err);
    return err;
}

void raw_close(raw_db *r)
{
    for (int i = 0; i < RAW_NCF; i++)
        rocksdb_column_family_handle_destroy(r->cf[i]);
    rocksdb_close(r->db);
    rocksdb_writeoptions_destroy(r->wopt);
    rocksdb_options_destroy(r->opt);
}
