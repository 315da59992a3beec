/* tick — the end of every event-loop pass, and how other threads get one.
 *
 * TICK runs what worker threads posted (worker/wake.h), sends what became
 * durable (device/outq.c), and asks the syncer to fsync everything this
 * pass wrote (sync mode) — one fsync per pass at most, however many
 * messages the pass handled — and, every log_summary_interval_s, logs the
 * refusals it did not log one by one (device/refusals.c).
 *
 * Metrics (metrics/metrics.h): every MQC_METRICS_REFRESH_MS, while the
 * HTTP endpoint is on, TICK gathers every value into one snapshot and
 * copies it for the HTTP thread (a struct copy under a mutex; the thread
 * renders the text), and every sys_interval_s it publishes the values that
 * changed on retained $SYS/broker/mqchat/... topics, as mosquitto does its
 * own $SYS tree.
 *
 * The store's syncer calls on_durable on its own thread after each fsync.
 * When publishes wait, it sends the `durable` async: the loop wakes from
 * epoll_wait at once (instead of up to 100 ms later) and the pass's TICK
 * drains the queue. */
#include "broker.h"
#include "mqc_clock.h"

#include <ctype.h>
#include <string.h>

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

/* ---- metrics -------------------------------------------------------------- */

_Static_assert(MQC_REFUSAL_KINDS <= MQC_METRICS_REASONS, "every refusal kind has a slot");

/* The label of each refusal kind: its ErrorCode name in lower case
 * ("rate_limited"); the last kind, which also counts codes past it, is
 * "other" when the enum does not name it; code 0 (UNSPECIFIED) is never
 * a refusal and is not shown. */
static void reason_names(mqc_snapshot *s)
{
    static char names[MQC_METRICS_REASONS][MQC_METRICS_REASON_LEN];
    static int named;
    if (!named) {
        for (int k = 1; k < MQC_REFUSAL_KINDS; k++) {
            const ProtobufCEnumValue *v =
                protobuf_c_enum_descriptor_get_value(&mqchat__v1__error_code__descriptor, k);
            const char *n = "";
            if (v)
                n = v->name + strlen("ERROR_CODE_");
            else if (k == MQC_REFUSAL_KINDS - 1)
                n = "other";
            size_t i = 0;
            for (; n[i] && i + 1 < MQC_METRICS_REASON_LEN; i++)
                names[k][i] = (char)tolower((unsigned char)n[i]);
            names[k][i] = '\0';
        }
        named = 1;
    }
    memcpy(s->reason, names, sizeof(names));
}

void metrics_fill(mqc *m, mqc_snapshot *s)
{
    dev *d = &m->dev;
    memset(s, 0, sizeof(*s));
    s->devices_connected = HASH_COUNT(d->conns);
    s->messages_stored = d->msgs_stored;
    s->messages_duplicate = d->msgs_duplicate;
    s->delivered_live = d->delivered_live;
    s->delivered_sync = d->delivered_sync;
    reason_names(s);
    for (int k = 0; k < MQC_REFUSAL_KINDS; k++)
        s->refused[k] = d->refused_total[k];
    s->rate_limited = d->refused_total[EC(RATE_LIMITED)];
    s->outq_waiting = d->n_pending;
    s->lane_waiting = d->lane_len;
    s->store_write = d->store_write_time;
    s->durable_ack = d->durable_ack_time;
    mqstore_health h;
    mqstore_health_get(m->store, &h);
    s->store_writable = h.writable;
    s->store_failures = h.failures;
    s->store_resumes = h.resumes;
    mqstore_stats st;
    mqstore_stats_get(m->store, &st);
    s->store_writes = st.writes;
    s->store_keys = st.keys;
    s->store_bytes = st.bytes;
    uint64_t last = mqstore_last_ticket(m->store), durable = mqstore_durable(m->store);
    s->store_undurable = last > durable ? last - durable : 0;
    if (m->redis) {
        s->presence_on = 1;
        s->presence_up = mqc_redis_up(m->redis);
        s->presence_connects = mqc_redis_connects(m->redis);
    }
    if (m->push) {
        mqc_push_stats ps;
        mqc_push_stats_get(m->push, &ps);
        s->push_on = 1;
        s->push_up = ps.up;
        s->push_connects = ps.connects;
        s->push_outbox = ps.waiting;
        s->push_sent = ps.sent;
        s->push_expanded = ps.expanded;
        s->push_collapsed = ps.collapsed;
        s->push_removed = ps.removed;
        s->push_invalid = ps.invalid;
    }
}

/* A $SYS value, retained like mosquitto's own (clientid NULL: to every
 * subscriber the ACL checks let read it). Not mosquitto_broker_publish_copy:
 * 2.0.11 allocates its copy with plain calloc and breaks the broker's
 * memory accounting (docs/MOSQUITTO.md, "Publishing from the plugin"); the
 * broker frees a mosquitto_malloc'ed payload itself. */
static void sys_emit(void *data, const char *topic, const char *value)
{
    (void)data;
    size_t len = strlen(value);
    char *payload = mosquitto_malloc(len + 1);
    if (payload) memcpy(payload, value, len + 1);
    if (!payload ||
        mosquitto_broker_publish(NULL, topic, (int)len, payload, 0, true, NULL) != MOSQ_ERR_SUCCESS)
        mosquitto_log_printf(MOSQ_LOG_WARNING, "mqchat: could not publish %s", topic);
}

static void metrics_tick(mqc *m, int64_t now)
{
    int snap = m->metrics && now >= m->next_snapshot_ms;
    int sys = m->cfg.sys_interval_s > 0 && now >= m->next_sys_ms;
    if (!snap && !sys) return;
    mqc_snapshot s;
    metrics_fill(m, &s);
    if (snap) {
        mqc_metrics_set(m->metrics, &s);
        m->next_snapshot_ms = now + MQC_METRICS_REFRESH_MS;
    }
    if (sys) {
        mqc_sys_publish(&m->sys, &s, sys_emit, m);
        m->next_sys_ms = now + m->cfg.sys_interval_s * 1000;
    }
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
    metrics_tick(m, now);
    return MOSQ_ERR_SUCCESS;
}
