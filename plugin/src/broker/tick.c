/* tick — the end of every event-loop pass, and how other threads get one.
 *
 * TICK runs what worker threads posted (worker/wake.h), sends what became
 * durable (device/outq.c), and asks the syncer to fsync everything this
 * pass wrote (sync mode) — one fsync per pass at most, however many
 * messages the pass handled — and, every log_summary_interval_s, logs the
 * refusals it did not log one by one (device/refusals.c).
 *
 * The store's syncer calls on_durable on its own thread after each fsync.
 * When publishes wait, it sends the `durable` async: the loop wakes from
 * epoll_wait at once (instead of up to 100 ms later) and the pass's TICK
 * drains the queue. */
#include "broker.h"
#include "mqc_clock.h"

void on_durable(void *data, uint64_t ticket)
{
    mqc *m = data; /* syncer thread: an atomic load and a wake-up only */
    (void)ticket;
    if (dev_waiting(&m->dev)) mqc_async_send(m->durable);
}

void on_durable_main(void *data)
{
    mqc *m = data;
    out_drain(&m->dev);
}

int on_tick(int event, void *event_data, void *userdata)
{
    mqc *m = userdata;
    mqc_wake_run(m->wake);
    dev_tick(&m->dev); /* a new pass: the lane's budget, then what is durable */
    /* A broadcast the budget cut short continues next pass: make that pass
     * come at once, not after epoll_wait's 100 ms (worker/wake.h). */
    if (lane_more(&m->dev)) mqc_wake_kick(m->wake);
    mqstore_sync_request(m->store);
    int64_t now = mqc_mono_ms();
    refusals_tick(&m->dev, now);
    if (m->push) {
        /* New jobs this pass: the drain thread sends them now. */
        uint64_t last = mqstore_outbox_last(m->store);
        if (last != m->push_seen) {
            m->push_seen = last;
            mqc_push_kick(m->push);
        }
    }
    if (m->pres) {
        presence_tick(m->pres, now);
        mqc_redis_flush(m->redis); /* this pass's Redis writes, one pipeline */
    }
    return MOSQ_ERR_SUCCESS;
}
