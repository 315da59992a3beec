/* fuzz_sdk — libFuzzer target for the SDK's decoder: every input is one
 * packet from the "broker". The first byte picks the topic (inbox, ack,
 * resp), the rest is the payload, fed to mqchat__handle_incoming() of a
 * client that never connects (state in a temporary directory), in poll
 * mode so every event is taken and freed. Whatever the bytes, the SDK must
 * not crash or leak: malformed input is an ERROR event. */
#include "internal.h"
#include "mqchat.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[] = "/tmp/mqchat-fuzz-sdk-XXXXXX";
static mqchat_client *client;

static int token(void *data, char *buf, size_t cap, int refresh)
{
    return -1;
}

static void cleanup(void)
{
    char path[256];
    mqchat_free(client);
    snprintf(path, sizeof(path), "%s/fuzz.dev.sqlite", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/fuzz.dev.sqlite-wal", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/fuzz.dev.sqlite-shm", dir);
    unlink(path);
    rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!client) {
        if (!mkdtemp(dir)) abort();
        mqchat_options o;
        mqchat_options_init(&o);
        o.user = "fuzz";
        o.device = "dev";
        o.state_dir = dir;
        o.token = token;
        o.poll_mode = 1;
        char *err = NULL;
        client = mqchat_new(&o, &err);
        if (!client) abort();
        atexit(cleanup);
    }
    if (size < 1) return 0;
    static const char *which[] = {"inbox", "ack", "resp"};
    mqchat__handle_incoming(client, mqchat__topic(client, which[data[0] % 3]), data + 1, size - 1);
    mqchat_event *ev;
    while ((ev = mqchat_next_event(client)))
        mqchat_event_free(ev);
    return 0;
}
