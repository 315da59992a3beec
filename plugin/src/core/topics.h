/* topics — the chat namespace. All MQTT topics mqchat owns live under one
 * prefix (default "mqchat/v1"):
 *
 *   {p}/u/{user}/inbox                 server -> the user's devices
 *   {p}/u/{user}/d/{device}/{leaf}     device <-> server; leaf is one of
 *                                      send req receipt typing (upstream)
 *                                      ack resp (downstream)
 *
 * This file only parses and classifies strings; it knows nothing of the
 * broker, so it is unit-tested and fuzzed directly. */
#ifndef MQC_TOPICS_H
#define MQC_TOPICS_H

#include <stddef.h>

#include "mqc_id.h"

typedef enum topic_kind {
    TOPIC_OUTSIDE = 0, /* not under the prefix: not ours, defer */
    TOPIC_INBOX,       /* {p}/u/{user}/inbox */
    TOPIC_DEVICE,      /* {p}/u/{user}/d/{device}/{leaf} */
    TOPIC_INVALID,     /* under the prefix but no topic of ours */
} topic_kind;

typedef enum topic_leaf {
    LEAF_NONE = 0,
    LEAF_SEND,
    LEAF_REQ,
    LEAF_RECEIPT,
    LEAF_TYPING,
    LEAF_ACK,
    LEAF_RESP,
    LEAF_UNKNOWN, /* a device topic with a leaf we do not know (BAD_TOPIC) */
} topic_leaf;

typedef struct topic_info {
    topic_kind kind;
    topic_leaf leaf;
    char user[MQC_ID_BUF];
    char device[MQC_ID_BUF];
} topic_info;

/* Classify a concrete topic (no wildcards expected; a topic containing '+'
 * or '#' under the prefix is TOPIC_INVALID). */
void topic_parse(const char *prefix, const char *topic, topic_info *out);

/* 1 if a subscription filter (may contain wildcards) could match any topic
 * under the prefix — after stripping a "$share/<group>/" head. */
int filter_touches_prefix(const char *prefix, const char *filter);

/* 1 if `filter` is one of the subscriptions a device (user, device) may
 * hold inside the namespace: its user's inbox, or its own ack, resp,
 * "+" or "#" device filter. Shared subscriptions are never allowed. */
int filter_allowed(const char *prefix, const char *filter, const char *user, const char *device);

/* Build "{p}/u/{user}/inbox" or "{p}/u/{user}/d/{device}/{leaf}" into buf.
 * Returns 0, or -1 if it does not fit. */
int topic_inbox(char *buf, size_t len, const char *prefix, const char *user);
int topic_device(char *buf, size_t len, const char *prefix, const char *user, const char *device,
                 const char *leaf);

#endif
