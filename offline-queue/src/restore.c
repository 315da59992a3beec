/* restore — the inbox floor: what keeps a store restored from a backup from
 * handing out inbox seqs a device already saw.
 *
 * The idea. A checkpoint (mqstore_checkpoint, ops.c) gets a marker file,
 * RESTORE_MARK, in its directory. A store that opens a directory with the
 * marker is being restored: the inbox seqs it holds are a prefix of the
 * old store's, whose devices may have cursors beyond it (messages written
 * after the checkpoint, lost with it). So before anything else it raises
 * the store's inbox floor by RESTORE_JUMP, durably, and only then removes
 * the marker (a crash in between raises it once more, which is harmless);
 * and to at least the clock's milliseconds x 1024, so that restoring the
 * same checkpoint again later gives a floor above the first one's.
 * From then on every user's inbox head reads at least floor - 1
 * (inbox_head_get, log.c), so new inbox entries get seqs >= floor: above
 * every cursor a device of the old store can hold, as long as no user's
 * inbox grew by RESTORE_JUMP (2^40) entries between two restores. A device
 * then syncs from its own cursor and gets every new entry; none is
 * skipped, whenever it comes back. The floor is in SyncResponse
 * (restore_floor): a device that sees it change learns that conversation
 * seqs were reused
 * (docs/PROTOCOL.md, "A restored server").
 *
 * A copy made another way (a file-system snapshot of a stopped broker's
 * store) has no marker: create the file by hand before starting on it
 * (docs/OPERATIONS.md, "Backups"). */
#include "store_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#define RESTORE_MARK "MQSTORE-RESTORE"
#define RESTORE_JUMP (1ull << 40)
#define RESTORE_PER_MS 1024u

static int mark_path(char *buf, size_t cap, const char *dir)
{
    int n = snprintf(buf, cap, "%s/%s", dir, RESTORE_MARK);
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

/* fsyncs a directory (so a created or removed name is durable). */
static int sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int restore_mark(const char *dir)
{
    char p[4096];
    if (mark_path(p, sizeof(p), dir) != 0) return -1;
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    static const char text[] =
        "An mqchat store checkpoint. Opening this directory as a store raises its inbox\n"
        "floor (docs/OPERATIONS.md, \"Backups\") and removes this file.\n";
    int rc = write(fd, text, sizeof(text) - 1) == (ssize_t)(sizeof(text) - 1) ? 0 : -1;
    if (fsync(fd) != 0) rc = -1;
    close(fd);
    if (rc == 0) rc = sync_dir(dir);
    return rc;
}

mqstore_err restore_open(mqstore *s, const char *path)
{
    key k;
    key_reset(&k);
    key_raw(&k, "restore_floor");
    mqstore_err e = store_get_u64(s, CF_DEFAULT, &k, &s->restore_floor, NULL);
    if (e) return e;
    char p[4096];
    if (mark_path(p, sizeof(p), path) != 0) return MQSTORE_ERR_INVAL;
    if (access(p, F_OK) != 0) return errno == ENOENT ? MQSTORE_OK : MQSTORE_ERR_IO;
    /* Also at least the clock's ms x 1024: restoring the same checkpoint
     * twice (or an older one) must not give a floor the first restore
     * handed seqs above (no user's inbox grows by 1024 entries per ms).
     * Below 2^53 until the 23rd century: exact in JSON numbers too. */
    uint64_t floor = s->restore_floor + RESTORE_JUMP;
    uint64_t by_time = (uint64_t)store_now(s) * RESTORE_PER_MS;
    if (by_time > floor) floor = by_time;
    char v[8];
    put_be64(v, floor);
    rocksdb_writeoptions_t *w = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(w, 1); /* durable before the marker goes */
    char *err = NULL;
    rocksdb_put_cf(s->db, w, s->cf[CF_DEFAULT], k.buf, k.len, v, sizeof(v), &err);
    rocksdb_writeoptions_destroy(w);
    if (err) return store_map_error(err);
    s->restore_floor = floor;
    if (unlink(p) != 0 || sync_dir(path) != 0) return MQSTORE_ERR_IO;
    return MQSTORE_OK;
}

uint64_t mqstore_restore_floor(mqstore *s)
{
    return s ? s->restore_floor : 0;
}
