/* control — the operator API: JSON commands on $CONTROL/mqchat/v1, in the
 * envelope of mosquitto's dynamic-security plugin (docs/OPERATIONS.md,
 * "The $CONTROL API").
 *
 * A request is {"commands":[{"command":"<name>", "correlationData":..., args}, ...]};
 * the answer, published to the requesting client on
 * $CONTROL/mqchat/v1/response once every command of the request is done,
 * is {"responses":[{"command":"<name>", "correlationData":..., "data":{...}}
 * or {..., "error":"<why>"}, ...]} in the same order. Only clients whose
 * username is in admin_users may publish commands or subscribe to the
 * responses (broker/acl.c); the command callback checks it again for every
 * request. A malformed or oversized request is answered with an error,
 * never a crash; nothing of a command that failed validation was done.
 *
 * Commands that take long (backup, compaction, store recovery, a user's
 * erasure) run on the control worker thread, one at a time; the request's
 * answer waits for them. Everything else runs on the main thread, through
 * the same rules devices use (plugin/src/rules/), with an operator caller.
 *
 * Threads: main thread, but for the worker's own jobs. */
#ifndef MQC_CONTROL_H
#define MQC_CONTROL_H

#define MQC_CONTROL_TOPIC "$CONTROL/mqchat/v1"
#define MQC_CONTROL_RESPONSE_TOPIC "$CONTROL/mqchat/v1/response"

struct mqc;
typedef struct mqc_control mqc_control;

/* Start the worker thread. NULL on failure, with a reason in err. */
mqc_control *mqc_control_new(struct mqc *m, char *err, size_t errlen);
/* Stop the worker (waits for a running job) and free every request still
 * in progress, unanswered. Before the store and the wake facility go. */
void mqc_control_free(mqc_control *ctl);

/* MOSQ_EVT_CONTROL for MQC_CONTROL_TOPIC (userdata: the mqc). */
int mqc_control_on_event(int event, void *event_data, void *userdata);

#endif
