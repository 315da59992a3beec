/* job — what a push job is, for both of its ends: rules/push.c writes jobs
 * into the store's outbox, push/drain.c turns them into stream entries
 * (docs/PUSH.md). A job is field \0 value \0 pairs; the store appends the
 * message's seq and time (MQSTORE_JOB_SUFFIX). */
#ifndef MQC_PUSH_JOB_H
#define MQC_PUSH_JOB_H

#include <stddef.h>
#include <stdint.h>

/* The stream's name of a token's platform (the store keeps the wire's
 * PushPlatform number: 1 APNs, 2 APNs sandbox, 3 FCM), or NULL. */
static inline const char *push_platform_name(uint32_t platform)
{
    switch (platform) {
    case 1:
        return "apns";
    case 2:
        return "apns-sandbox";
    case 3:
        return "fcm";
    }
    return NULL;
}

#endif
