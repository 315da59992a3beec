/* sdk_driver — a scripted libmqchat client for the integration tests
 * (tests/integration/test_sdk.py), and the seed of mqchat-cli's scripted
 * mode. Reads commands on stdin, one a line, prints every event as one
 * JSON object a line on stdout.
 *
 * Usage: sdk_driver --port N --user U --device D --state-dir DIR
 *                   --token-file F [--host H] [--v5] [--poll] [--drop-live N]
 * The token is read from F on every connect (so a test can replace it).
 * --drop-live N: the SDK drops the N-th live inbox delivery (test hook).
 *
 * Commands: send CONV TEXT | history CONV BEFORE LIMIT |
 *           group-create TITLE USER,USER | read CONV SEQ | outbox |
 *           connect | disconnect | quit */
#include "internal.h"
#include "mqchat.h"

#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;
static const char *token_file;

static void jstr(FILE *f, const char *s, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20 || ch >= 0x7f)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static void js(FILE *f, const char *k, const char *v)
{
    fprintf(f, ",\"%s\":", k);
    jstr(f, v ? v : "", v ? strlen(v) : 0);
}

static void print_message(FILE *f, const mqchat_message *m)
{
    js(f, "conv", m->conv);
    fprintf(f, ",\"seq\":%" PRIu64 ",\"inbox_seq\":%" PRIu64 ",\"kind\":%d,\"event_type\":%d",
            m->seq, m->inbox_seq, m->kind, m->event_type);
    js(f, "from", m->sender_user);
    js(f, "device", m->sender_device);
    js(f, "cmid", m->cmid);
    js(f, "content_type", m->content_type);
    fprintf(f, ",\"body\":");
    jstr(f, (const char *)m->body, m->body_len);
}

static void print_event(const mqchat_event *ev)
{
    static const char *conn[] = {"",           "connecting",   "connected",
                                 "up_to_date", "disconnected", "taken_over"};
    pthread_mutex_lock(&out_mu);
    FILE *f = stdout;
    switch (ev->type) {
    case MQCHAT_EV_MESSAGE:
        fprintf(f, "{\"ev\":\"message\"");
        print_message(f, &ev->message);
        break;
    case MQCHAT_EV_SENT:
    case MQCHAT_EV_SEND_FAILED:
        fprintf(f, "{\"ev\":\"%s\"", ev->type == MQCHAT_EV_SENT ? "sent" : "send_failed");
        js(f, "cmid", ev->sent.cmid);
        js(f, "conv", ev->sent.conv);
        fprintf(f, ",\"seq\":%" PRIu64 ",\"code\":%d,\"retry\":%d", ev->sent.seq, ev->sent.code,
                ev->sent.will_retry);
        break;
    case MQCHAT_EV_RECEIPT:
        fprintf(f, "{\"ev\":\"receipt\"");
        js(f, "conv", ev->receipt.conv);
        js(f, "user", ev->receipt.user);
        fprintf(f, ",\"read\":%" PRIu64 ",\"delivered\":%" PRIu64, ev->receipt.read_seq,
                ev->receipt.delivered_seq);
        break;
    case MQCHAT_EV_TYPING:
        fprintf(f, "{\"ev\":\"typing\"");
        js(f, "conv", ev->typing.conv);
        js(f, "user", ev->typing.user);
        break;
    case MQCHAT_EV_PRESENCE:
        fprintf(f, "{\"ev\":\"presence\"");
        js(f, "user", ev->presence.user);
        fprintf(f, ",\"state\":%d", ev->presence.state);
        break;
    case MQCHAT_EV_CONNECTION:
        fprintf(f, "{\"ev\":\"connection\"");
        js(f, "state", conn[ev->connection.state]);
        js(f, "reason", ev->connection.reason);
        break;
    case MQCHAT_EV_RESPONSE:
        fprintf(f, "{\"ev\":\"response\"");
        js(f, "rid", ev->response.request_id);
        fprintf(f, ",\"ok\":%d,\"code\":%d", ev->response.ok, ev->response.code);
        js(f, "group", ev->response.group_conv);
        fprintf(f, ",\"messages\":[");
        for (size_t i = 0; i < ev->response.n_messages; i++) {
            fprintf(f, "%s{\"ev\":\"m\"", i ? "," : "");
            print_message(f, &ev->response.messages[i]);
            fputc('}', f);
        }
        fputc(']', f);
        break;
    case MQCHAT_EV_ERROR:
        fprintf(f, "{\"ev\":\"error\"");
        js(f, "message", ev->error.message);
        break;
    }
    fprintf(f, "}\n");
    fflush(f);
    pthread_mutex_unlock(&out_mu);
}

static void on_event(void *data, const mqchat_event *ev)
{
    print_event(ev);
}

static void say(const char *fmt, const char *a, const char *b)
{
    pthread_mutex_lock(&out_mu);
    printf(fmt, a, b);
    fflush(stdout);
    pthread_mutex_unlock(&out_mu);
}

static int token(void *data, char *buf, size_t cap, int refresh)
{
    if (refresh) say("{\"ev\":\"token\",\"refresh\":1%s%s}\n", "", "");
    FILE *f = fopen(token_file, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    buf[n] = 0;
    return n ? 0 : -1;
}

static int command(mqchat_client *c, char *line)
{
    char rid[MQCHAT_ID_BUF], *save = NULL;
    char *cmd = strtok_r(line, " \n", &save);
    if (!cmd) return 0;
    if (strcmp(cmd, "quit") == 0) return 1;
    if (strcmp(cmd, "send") == 0) {
        char *conv = strtok_r(NULL, " \n", &save), *text = strtok_r(NULL, "\n", &save);
        if (!conv) return 0;
        if (!text) text = "";
        int rc = mqchat_send(c, conv, "text/plain", text, strlen(text), rid);
        if (rc == MQCHAT_OK)
            say("{\"ev\":\"queued\",\"cmid\":\"%s\"%s}\n", rid, "");
        else
            say("{\"ev\":\"cmd_failed\",\"cmd\":\"%s\"%s}\n", cmd, "");
    } else if (strcmp(cmd, "history") == 0) {
        char *conv = strtok_r(NULL, " \n", &save), *b = strtok_r(NULL, " \n", &save),
             *l = strtok_r(NULL, " \n", &save);
        if (!conv) return 0;
        if (mqchat_history(c, conv, b ? strtoull(b, NULL, 10) : 0, l ? (unsigned)atoi(l) : 0,
                           rid) == MQCHAT_OK)
            say("{\"ev\":\"requested\",\"rid\":\"%s\"%s}\n", rid, "");
        else
            say("{\"ev\":\"cmd_failed\",\"cmd\":\"%s\"%s}\n", cmd, "");
    } else if (strcmp(cmd, "group-create") == 0) {
        char *title = strtok_r(NULL, " \n", &save), *ms = strtok_r(NULL, " \n", &save);
        const char *members[64];
        size_t n = 0;
        char *s2 = NULL;
        for (char *m = ms ? strtok_r(ms, ",", &s2) : NULL; m && n < 64;
             m = strtok_r(NULL, ",", &s2))
            members[n++] = m;
        if (mqchat_group_create(c, title, members, n, rid) == MQCHAT_OK)
            say("{\"ev\":\"requested\",\"rid\":\"%s\"%s}\n", rid, "");
        else
            say("{\"ev\":\"cmd_failed\",\"cmd\":\"%s\"%s}\n", cmd, "");
    } else if (strcmp(cmd, "read") == 0) {
        char *conv = strtok_r(NULL, " \n", &save), *s = strtok_r(NULL, " \n", &save);
        if (conv && s) mqchat_mark_read(c, conv, strtoull(s, NULL, 10), NULL);
    } else if (strcmp(cmd, "outbox") == 0) {
        char n[32];
        snprintf(n, sizeof(n), "%d", mqchat_outbox_count(c));
        say("{\"ev\":\"outbox\",\"count\":%s%s}\n", n, "");
    } else if (strcmp(cmd, "connect") == 0) {
        mqchat_connect(c);
    } else if (strcmp(cmd, "disconnect") == 0) {
        mqchat_disconnect(c);
    } else {
        say("{\"ev\":\"cmd_failed\",\"cmd\":\"%s\"%s}\n", cmd, "");
    }
    return 0;
}

int main(int argc, char **argv)
{
    mqchat_options o;
    mqchat_options_init(&o);
    o.backoff_min_ms = 100;
    o.backoff_max_ms = 1000;
    o.keepalive_s = 5;
    int drop = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--v5") == 0) {
            o.mqtt_version = 5;
        } else if (strcmp(a, "--poll") == 0) {
            o.poll_mode = 1;
        } else if (!v) {
            fprintf(stderr, "sdk_driver: %s needs a value\n", a);
            return 2;
        } else {
            i++;
            if (strcmp(a, "--host") == 0)
                o.host = v;
            else if (strcmp(a, "--port") == 0)
                o.port = atoi(v);
            else if (strcmp(a, "--user") == 0)
                o.user = v;
            else if (strcmp(a, "--device") == 0)
                o.device = v;
            else if (strcmp(a, "--state-dir") == 0)
                o.state_dir = v;
            else if (strcmp(a, "--token-file") == 0)
                token_file = v;
            else if (strcmp(a, "--drop-live") == 0)
                drop = atoi(v);
            else {
                fprintf(stderr, "sdk_driver: unknown option %s\n", a);
                return 2;
            }
        }
    }
    if (!token_file) {
        fprintf(stderr, "sdk_driver: --token-file is required\n");
        return 2;
    }
    o.token = token;
    if (!o.poll_mode) o.on_event = on_event;
    char *err = NULL;
    mqchat_client *c = mqchat_new(&o, &err);
    if (!c) {
        fprintf(stderr, "sdk_driver: %s\n", err ? err : "mqchat_new failed");
        free(err);
        return 1;
    }
    if (drop) mqchat__test_drop_live(c, drop);
    mqchat_connect(c);
    char line[65536];
    size_t have = 0;
    int done = 0;
    while (!done) {
        struct pollfd p[2] = {{.fd = 0, .events = POLLIN}, {.fd = mqchat_fd(c), .events = POLLIN}};
        int n = poll(p, o.poll_mode ? 2 : 1, 1000);
        if (n < 0) break;
        if (o.poll_mode && (p[1].revents & POLLIN)) {
            mqchat_event *ev;
            while ((ev = mqchat_next_event(c))) {
                print_event(ev);
                mqchat_event_free(ev);
            }
        }
        if (p[0].revents & (POLLIN | POLLHUP)) {
            ssize_t r = read(0, line + have, sizeof(line) - 1 - have);
            if (r <= 0) break;
            have += (size_t)r;
            char *nl;
            while (!done && (nl = memchr(line, '\n', have))) {
                *nl = 0;
                size_t used = (size_t)(nl - line) + 1;
                done = command(c, line);
                memmove(line, line + used, have - used);
                have -= used;
            }
            if (have == sizeof(line) - 1) have = 0; /* overlong line: dropped */
        }
    }
    mqchat_free(c);
    return 0;
}
