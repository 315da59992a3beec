/* resume — what the store needs of RocksDB's C++ API to survive a failed
 * write (a full disk); see resume.cc. */
#ifndef MQSTORE_RESUME_H
#define MQSTORE_RESUME_H

#include <rocksdb/c.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* DB::Resume(): NULL when the database accepts writes again (or never
 * stopped), else the status as a malloc'ed string (free with rocksdb_free,
 * like the C API's errors); *busy = 1 when RocksDB refused because its own
 * recovery is under way (it retries by itself). */
char *db_resume(rocksdb_t *db, int *busy);

/* The number of the WAL file writes go to now; 0, or -1 if RocksDB cannot
 * tell. */
int db_current_wal(rocksdb_t *db, uint64_t *number);

/* Give opt an info logger that writes `dir`/LOG (the previous one renamed
 * LOG.old.<micros>, as RocksDB does) and ignores write errors. 0, or -1
 * (opt unchanged: RocksDB makes its own logger). */
int db_set_info_log(rocksdb_options_t *opt, const char *dir);

#ifdef __cplusplus
}
#endif

#endif
