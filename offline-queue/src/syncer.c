/* syncer — group commit for MQSTORE_DURABILITY_SYNC.
 *
 * Writers never fsync. Each write returns once its batch is in the WAL (the
 * OS has it) and gets a ticket. To make tickets durable, somebody reads
 * T = last_ticket, fsyncs the WAL, and then publishes durable = T: every
 * write with a ticket <= T had returned before the fsync began, so the fsync
 * covered it. Writes that land during the fsync wait for the next one, which
 * covers all of them at once — that is the group commit: the number of
 * fsyncs per second is bounded by the disk, not by the number of writes.
 *
 * Three drivers: a thread that loops "wait for undurable writes, fsync"
 * (MQSTORE_SYNC_THREAD); the same thread, but fsyncing only when the
 * caller asks with mqstore_sync_request() — once per event-loop pass, so
 * one fsync covers a whole pass and the loop is woken at most once per
 * pass (MQSTORE_SYNC_REQUEST); or the caller calling mqstore_sync(), which
 * blocks it for the fsync (MQSTORE_SYNC_MANUAL).
 */
#include "store_int.h"

#include <assert.h>
#include <sched.h>
#include <signal.h>
#include <time.h>

/* fsync the WAL and publish durable = the last ticket read before it.
 * Invariant: durable only grows, and only to a ticket whose write returned
 * before an fsync that then succeeded. fsync_lock (held by the caller)
 * serialises fsyncs. */
static mqstore_err sync_once(mqstore *s, uint64_t *covered)
{
    /* After a failed write or fsync the WAL writer keeps its error, and
     * RocksDB 7.8 (built with assertions) aborts if it is asked to sync
     * again: nothing is made durable until the store resumes (ops.c). A
     * write under way may be failing right now: wait for it to return
     * (it records a failure first), then look. What remains is a write
     * that starts after this look and fails before RocksDB's own check at
     * the start of its sync, microseconds later. */
    uint64_t w = atomic_load(&s->wal_writes);
    for (int spin = 0; (w & 1) && atomic_load(&s->wal_writes) == w; spin++) {
        struct timespec ts = {0, 20 * 1000};
        if (spin < 64)
            sched_yield(); /* most writes take microseconds */
        else
            nanosleep(&ts, NULL);
    }
    /* Stopped by the free-space reserve only: RocksDB is fine, fsync. */
    if (atomic_load(&s->write_failed) && !atomic_load(&s->soft_failed)) return MQSTORE_ERR_READONLY;
    uint64_t t = atomic_load(&s->last_ticket);
    char *err = NULL;
    rocksdb_flush_wal(s->db, 1, &err);
    if (err) {
        /* Not durable; RocksDB stopped writes too. */
        mqstore_err e = store_map_error(err);
        store_fail(s, e);
        return e;
    }
    uint64_t d = atomic_load(&s->durable);
    /* durable only grows: in SYNC mode only this function moves it (under
     * fsync_lock), to a last_ticket read earlier, so it is never past t. */
    assert(d <= t || s->opt.durability == MQSTORE_DURABILITY_OS);
    /* In OS mode writers move it too, between our load and our store: raise
     * it with a compare-and-swap so that it is never lowered. */
    while (d < t && !atomic_compare_exchange_weak(&s->durable, &d, t)) {
    }
    *covered = t;
    return MQSTORE_OK;
}

/* One fsync under fsync_lock; *covered (may be NULL) gets the last ticket
 * it covered. */
mqstore_err syncer_sync_now(mqstore *s, uint64_t *covered)
{
    uint64_t t = 0;
    pthread_mutex_lock(&s->fsync_lock);
    mqstore_err e = sync_once(s, &t);
    pthread_mutex_unlock(&s->fsync_lock);
    if (covered) *covered = t;
    return e;
}

/* Called by every writer after publishing its ticket. Lock-free unless the
 * syncer sleeps: the syncer sets `waiting` and then re-reads last_ticket,
 * the writer stores last_ticket and then reads `waiting` (both sequentially
 * consistent), so at least one of them sees the other and no wake-up is
 * lost; the signal is sent under sync_lock, which the syncer holds from
 * setting `waiting` until it sleeps. */
void syncer_kick(mqstore *s)
{
    /* Only the THREAD driver syncs because of writes; the REQUEST driver
     * waits for mqstore_sync_request(), and waking it here for nothing
     * cost a futex wake-up and a context switch per write (measured: 14k
     * wake-ups/s of the syncer, each preempting the event loop). */
    if (s->opt.sync_driver != MQSTORE_SYNC_THREAD) return;
    if (!atomic_load(&s->syncer_waiting)) return;
    pthread_mutex_lock(&s->sync_lock);
    pthread_cond_signal(&s->sync_cond);
    pthread_mutex_unlock(&s->sync_lock);
}

void mqstore_sync_request(mqstore *s)
{
    if (!s->syncer_running || s->opt.sync_driver != MQSTORE_SYNC_REQUEST) return;
    if (atomic_load(&s->last_ticket) <= atomic_load(&s->durable)) return;
    pthread_mutex_lock(&s->sync_lock);
    s->sync_requested = 1;
    pthread_cond_signal(&s->sync_cond);
    pthread_mutex_unlock(&s->sync_lock);
}

/* The syncer thread: wait until there is something to fsync (and, with the
 * REQUEST driver, until asked), fsync, tell on_durable; until stopped. */
static void *syncer_main(void *arg)
{
    mqstore *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->sync_lock);
        while (!s->syncer_stop) {
            atomic_store(&s->syncer_waiting, 1);
            int asked = s->opt.sync_driver == MQSTORE_SYNC_THREAD || s->sync_requested;
            if (asked && atomic_load(&s->last_ticket) > atomic_load(&s->durable)) break;
            pthread_cond_wait(&s->sync_cond, &s->sync_lock);
        }
        s->sync_requested = 0; /* this fsync serves every request so far */
        atomic_store(&s->syncer_waiting, 0);
        int stop = s->syncer_stop;
        pthread_mutex_unlock(&s->sync_lock);
        if (stop) break;
        /* The fsync runs without sync_lock: writers never wait for it.
         * Only this thread calls on_durable, so calls come in ticket order. */
        uint64_t t;
        if (syncer_sync_now(s, &t) == MQSTORE_OK) {
            if (s->opt.on_durable) s->opt.on_durable(s->opt.on_durable_data, t);
        } else {
            /* Nothing new is durable; callers see their tickets stay
             * undurable. Back off and retry. */
            struct timespec ts = {0, 100 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

/* Start the syncer thread with every signal blocked; 0 or an errno. */
int syncer_start(mqstore *s)
{
    /* The syncer must never take signals meant for the caller's threads
     * (mosquitto's plugin wakes its main loop with a real-time signal). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&s->syncer, NULL, syncer_main, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc == 0) s->syncer_running = 1;
    return rc;
}

/* Tell the syncer thread to stop and wait for it. */
void syncer_stop(mqstore *s)
{
    pthread_mutex_lock(&s->sync_lock);
    s->syncer_stop = 1;
    pthread_cond_signal(&s->sync_cond);
    pthread_mutex_unlock(&s->sync_lock);
    pthread_join(s->syncer, NULL);
    s->syncer_running = 0;
}
