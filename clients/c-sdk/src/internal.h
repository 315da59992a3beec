/* internal.h — SDK entry points for tests and the fuzzer, not public API. */
#ifndef MQCHAT_INTERNAL_H
#define MQCHAT_INTERNAL_H

#include "mqchat.h"

/* Feeds one packet as if it had arrived from the broker on topic: the
 * decoder and the delivery rules run exactly as for a real packet (what
 * they would publish is not sent while the client is not connected).
 * Returns 0, or -1 if the packet was refused (an ERROR event says why). */
int mqchat__handle_incoming(mqchat_client *c, const char *topic, const void *payload, size_t len);

/* Test hook: apply a packed SyncResponse as the answer to the client's own
 * sync (which a client that never connects cannot have asked). 0, or -1 if
 * it does not decode. */
int mqchat__handle_sync(mqchat_client *c, const void *payload, size_t len);

/* Test hook: drop the n-th (1-based) live inbox delivery that carries an
 * inbox_seq, as if the network had lost it. 0 turns it off. */
void mqchat__test_drop_live(mqchat_client *c, int n);

/* The topic the client receives its inbox / acks / responses on. */
const char *mqchat__topic(mqchat_client *c, const char *which);

#endif
