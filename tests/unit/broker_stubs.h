/* broker_stubs — the four broker functions the chat library (mqchat_chat:
 * plugin/src/rules/, plugin/src/device/) calls, defined for unit tests that
 * run without a broker, the way mosquitto's own test/unit/stubs.c does.
 *
 *   mosquitto_broker_publish  records each call (client id, topic, QoS,
 *                             retain, a copy of the payload) and, since the
 *                             broker owns the payload on success, frees it
 *   mosquitto_log_printf      records the level and the formatted line
 *   mosquitto_malloc / _free  malloc / free
 *
 * The definitions use the prototypes of <mosquitto_broker.h>, so a
 * signature that drifts from the broker's is a compile error. Single
 * threaded, like the broker's main thread the library runs on. */
#ifndef MQC_BROKER_STUBS_H
#define MQC_BROKER_STUBS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct stub_pub {
    char *client_id; /* NULL: to the topic's subscribers */
    char *topic;
    void *payload; /* a copy (malloc), len bytes */
    size_t len;
    int qos;
    bool retain;
    bool properties; /* a non-NULL property list was passed */
} stub_pub;

typedef struct stub_log {
    int level;
    char *line;
} stub_log;

/* What mosquitto_broker_publish returns (MOSQ_ERR_SUCCESS by default). A
 * failed publish is recorded all the same and keeps the caller's payload. */
extern int stub_publish_rc;

size_t stub_pub_count(void);
const stub_pub *stub_pub_get(size_t i);
size_t stub_log_count(void);
const stub_log *stub_log_get(size_t i);
/* Forget every recorded publish and log line; stub_publish_rc = success. */
void stub_reset(void);

#endif
