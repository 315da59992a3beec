/* refusals — logging what was refused without letting a client flood the
 * log. A hostile or broken device can be refused ~50 times a second per
 * connection at the default rate limit; logging each would let it write
 * the broker's log for it. So, per connection, the first refusal of each
 * kind (error code) is logged in full, later ones are only counted, and
 * every log_summary_interval_s one line per connection sums them up.
 * Refused connections (bad tokens) have no connection to count on: the
 * first MQC_CONNECT_LOG_BURST per interval are logged, the rest counted.
 * The totals per code stay in dev.refused_total for metrics.
 * Main thread only. */
#include "device.h"

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <stdio.h>
#include <string.h>
#include <utlist.h>

static const char *code_name(wire_code code)
{
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&mqchat__v1__error_code__descriptor, (int)code);
    /* "ERROR_CODE_RATE_LIMITED" -> "RATE_LIMITED" */
    return v ? v->name + strlen("ERROR_CODE_") : "UNKNOWN";
}

void refusal_note(dev *d, conn *c, wire_code code, const char *what, const char *detail)
{
    unsigned k = (unsigned)code < MQC_REFUSAL_KINDS ? (unsigned)code : MQC_REFUSAL_KINDS - 1;
    d->refused_total[k]++;
    if (!(c->refusals_logged & (1u << k))) {
        c->refusals_logged |= 1u << k;
        mosquitto_log_printf(MOSQ_LOG_NOTICE, "mqchat: refused %s from %s: %s (%s)", what,
                             c->client_id, detail, code_name(code));
        return;
    }
    c->suppressed[k]++;
    if (!c->dirty) {
        c->dirty = 1;
        DL_APPEND2(d->dirty, c, sum_prev, sum_next);
    }
}

int refusal_connect(dev *d)
{
    if (d->conn_refusals_logged < MQC_CONNECT_LOG_BURST) {
        d->conn_refusals_logged++;
        return 1;
    }
    d->conn_refusals_suppressed++;
    return 0;
}

/* One line: "alice:phone: 57 more refusals (RATE_LIMITED 50, MALFORMED 7)". */
static void summary_line(dev *d, conn *c, const char *when)
{
    char buf[512];
    size_t n = 0;
    unsigned long total = 0;
    for (unsigned k = 0; k < MQC_REFUSAL_KINDS; k++) {
        if (!c->suppressed[k]) continue;
        total += c->suppressed[k];
        int w = snprintf(buf + n, sizeof(buf) - n, "%s%s %u", n ? ", " : "", code_name(k),
                         c->suppressed[k]);
        if (w > 0 && (size_t)w < sizeof(buf) - n) n += (size_t)w;
        c->suppressed[k] = 0;
    }
    if (total)
        mosquitto_log_printf(MOSQ_LOG_NOTICE, "mqchat: %s: %lu more refusals %s (%s)", c->client_id,
                             total, when, buf);
    if (c->dirty) {
        DL_DELETE2(d->dirty, c, sum_prev, sum_next);
        c->dirty = 0;
    }
}

void refusals_flush(dev *d, conn *c)
{
    if (c->dirty) summary_line(d, c, "before it disconnected");
}

void refusals_tick(dev *d, int64_t now)
{
    if (now < d->next_summary_ms) return;
    int first = d->next_summary_ms == 0;
    d->next_summary_ms = now + d->cfg->log_summary_s * 1000;
    if (first) return; /* the first interval starts now */
    char when[64];
    snprintf(when, sizeof(when), "in the last %lld s", (long long)d->cfg->log_summary_s);
    while (d->dirty)
        summary_line(d, d->dirty, when);
    if (d->conn_refusals_suppressed)
        mosquitto_log_printf(MOSQ_LOG_NOTICE,
                             "mqchat: %lu more refused connections %s (only the first %d of "
                             "each interval are logged)",
                             d->conn_refusals_suppressed, when, MQC_CONNECT_LOG_BURST);
    d->conn_refusals_suppressed = 0;
    d->conn_refusals_logged = 0;
}
