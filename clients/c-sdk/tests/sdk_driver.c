/* sdk_driver — a scripted libmqchat client for the integration tests
 * (tests/integration/test_sdk.py), and the seed of mqchat-cli's scripted
 * mode. Reads commands on stdin, one a line, prints every event as one
 * JSON object a line on stdout.
 *
 * Usage: sdk_driver --port N --user U --device D --state-dir DIR
 *                   --token-file F [--host H] [--v5] [--poll] [--drop-live N]
 *                   [--persist]
 * The token is read from F on every connect (so a test can replace it).
 * --drop-live N: the SDK drops the N-th live inbox delivery (test hook).
 * --persist: a persist hook stores every message in the table app_msgs of
 * the state file (exactly once); command `stored` prints that table.
 *
 * Commands: send CONV TEXT | reply CONV SEQ TEXT | edit CONV SEQ TEXT |
 *           delete CONV SEQ | history CONV BEFORE LIMIT |
 *           group-create TITLE USER,USER | members CONV [AFTER LIMIT] |
 *           set-role CONV USER,USER ROLE | posting CONV POLICY |
 *           read-state CONV SEQ | presence-settings HIDE VISIBILITY |
 *           push-unregister | read CONV SEQ | outbox | stored |
 *           connect | disconnect | quit */
#include "internal.h"
#include "mqchat.h"

#include <inttypes.h>
#include <poll.h>
#include <sqlite3.h>
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
    fprintf(f, ",\"edited\":%d,\"deleted\":%d,\"target_seq\":%" PRIu64 ",\"reply_to_seq\":%" PRIu64,
            m->edited, m->deleted, m->target_seq, m->reply_to_seq);
}

static const char *conn[] = {"",           "connecting",   "connected",
                             "up_to_date", "disconnected", "taken_over"};

static void print_event(const mqchat_event *ev)
{
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
        fprintf(f, ",\"seq\":%" PRIu64 ",\"code\":%d,\"retry\":%d,\"outbox_left\":%d", ev->sent.seq,
                ev->sent.code, ev->sent.will_retry, ev->sent.outbox_left);
        js(f, "code_name", mqchat_strerror(ev->sent.code));
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
        fprintf(f, ",\"more\":%d,\"group_seq\":%" PRIu64 ",\"members\":[", ev->response.more,
                ev->response.group_seq);
        for (size_t i = 0; i < ev->response.n_members; i++) {
            const mqchat_member *m = &ev->response.members[i];
            fprintf(f, "%s{\"user\":", i ? "," : "");
            jstr(f, m->user, strlen(m->user));
            fprintf(f, ",\"role\":%d,\"joined_seq\":%" PRIu64 "}", m->role, m->joined_seq);
        }
        fputc(']', f);
        if (ev->response.read_state) {
            const mqchat_read_result *rs = ev->response.read_state;
            fprintf(f,
                    ",\"read_state\":{\"seq\":%" PRIu64
                    ",\"members\":%u,\"delivered\":%u,\"read\":%u,\"readers\":[",
                    rs->seq, rs->members, rs->delivered, rs->read);
            for (size_t i = 0; i < rs->n_readers; i++) {
                if (i) fputc(',', f);
                jstr(f, rs->readers[i], strlen(rs->readers[i]));
            }
            fprintf(f, "]}");
        }
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

/* --persist: every message into app_msgs, in the SDK's transaction. */
static int persist(void *data, void *db, const mqchat_event *ev)
{
    sqlite3 *d = db;
    sqlite3_stmt *s;
    if (sqlite3_exec(d,
                     "CREATE TABLE IF NOT EXISTS app_msgs(conv TEXT, seq INTEGER, body BLOB, "
                     "kind INTEGER)",
                     NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(d, "INSERT INTO app_msgs VALUES(?, ?, ?, ?)", -1, &s, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(s, 1, ev->message.conv, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, (int64_t)ev->message.seq);
    sqlite3_bind_blob(s, 3, ev->message.body, (int)ev->message.body_len, SQLITE_STATIC);
    sqlite3_bind_int(s, 4, ev->message.kind);
    int rc = sqlite3_step(s);
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* `stored`: the app table, read through a connection of its own. */
static void print_stored(const char *path)
{
    sqlite3 *db;
    sqlite3_stmt *s = NULL;
    pthread_mutex_lock(&out_mu);
    printf("{\"ev\":\"stored\",\"rows\":[");
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, "SELECT conv, seq, body FROM app_msgs ORDER BY rowid", -1, &s,
                           NULL) == SQLITE_OK) {
        for (int i = 0; sqlite3_step(s) == SQLITE_ROW; i++) {
            printf("%s[", i ? "," : "");
            jstr(stdout, (const char *)sqlite3_column_text(s, 0),
                 (size_t)sqlite3_column_bytes(s, 0));
            printf(",%lld,", (long long)sqlite3_column_int64(s, 1));
            jstr(stdout, sqlite3_column_blob(s, 2) ? sqlite3_column_blob(s, 2) : "",
                 (size_t)sqlite3_column_bytes(s, 2));
            printf("]");
        }
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    printf("]}\n");
    fflush(stdout);
    pthread_mutex_unlock(&out_mu);
}

static char state_path[1024];

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
    if (strcmp(cmd, "reply") == 0 || strcmp(cmd, "edit") == 0) {
        char *conv = strtok_r(NULL, " \n", &save), *sq = strtok_r(NULL, " \n", &save),
             *text = strtok_r(NULL, "\n", &save);
        if (!conv || !sq) return 0;
        if (!text) text = "";
        uint64_t seq = strtoull(sq, NULL, 10);
        mqchat_send_options so = {.content_type = "text/plain", .reply_to_seq = seq};
        int rc = cmd[0] == 'r' ? mqchat_send_ex(c, conv, &so, text, strlen(text), rid)
                               : mqchat_edit(c, conv, seq, "text/plain", text, strlen(text), rid);
        if (rc == MQCHAT_OK)
            say("{\"ev\":\"queued\",\"cmid\":\"%s\"%s}\n", rid, "");
        else
            say("{\"ev\":\"cmd_failed\",\"cmd\":\"%s\"%s}\n", cmd, "");
        return 0;
    }
    if (strcmp(cmd, "delete") == 0) {
        char *conv = strtok_r(NULL, " \n", &save), *sq = strtok_r(NULL, " \n", &save);
        if (!conv || !sq) return 0;
        if (mqchat_delete(c, conv, strtoull(sq, NULL, 10), rid) == MQCHAT_OK)
            say("{\"ev\":\"queued\",\"cmid\":\"%s\"%s}\n", rid, "");
        else
            say("{\"ev\":\"cmd_failed\",\"cmd\":\"%s\"%s}\n", cmd, "");
        return 0;
    }
    if (strcmp(cmd, "stored") == 0) {
        print_stored(state_path);
        return 0;
    }
    int req = -2; /* the requests: MQCHAT_OK or an error; -2: not one */
    if (strcmp(cmd, "members") == 0) {
        char *conv = strtok_r(NULL, " \n", &save), *a = strtok_r(NULL, " \n", &save),
             *l = strtok_r(NULL, " \n", &save);
        req = conv ? mqchat_list_members(c, conv, a && strcmp(a, "-") ? a : "",
                                         l ? (unsigned)atoi(l) : 0, rid)
                   : MQCHAT_ERR;
    } else if (strcmp(cmd, "set-role") == 0) {
        char *conv = strtok_r(NULL, " \n", &save), *us = strtok_r(NULL, " \n", &save),
             *role = strtok_r(NULL, " \n", &save);
        const char *users[64];
        size_t n = 0;
        char *s2 = NULL;
        for (char *u = us ? strtok_r(us, ",", &s2) : NULL; u && n < 64;
             u = strtok_r(NULL, ",", &s2))
            users[n++] = u;
        req = conv && role ? mqchat_group_set_role(c, conv, users, n, atoi(role), rid) : MQCHAT_ERR;
    } else if (strcmp(cmd, "posting") == 0) {
        char *conv = strtok_r(NULL, " \n", &save), *p = strtok_r(NULL, " \n", &save);
        req = conv && p ? mqchat_group_settings(c, conv, atoi(p), rid) : MQCHAT_ERR;
    } else if (strcmp(cmd, "read-state") == 0) {
        char *conv = strtok_r(NULL, " \n", &save), *sq = strtok_r(NULL, " \n", &save);
        req = conv && sq ? mqchat_read_state(c, conv, strtoull(sq, NULL, 10), "", 0, rid)
                         : MQCHAT_ERR;
    } else if (strcmp(cmd, "presence-settings") == 0) {
        char *h = strtok_r(NULL, " \n", &save), *v = strtok_r(NULL, " \n", &save);
        req = mqchat_presence_settings(c, h ? atoi(h) : 0, v ? atoi(v) : 0, rid);
    } else if (strcmp(cmd, "push-unregister") == 0) {
        req = mqchat_push_unregister(c, rid);
    }
    if (req != -2) {
        if (req == MQCHAT_OK)
            say("{\"ev\":\"requested\",\"rid\":\"%s\"%s}\n", rid, "");
        else
            say("{\"ev\":\"cmd_failed\",\"cmd\":\"%s\"%s}\n", cmd, "");
        return 0;
    }
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
    } else if (strcmp(cmd, "conn-state") == 0) {
        say("{\"ev\":\"conn_state\",\"state\":\"%s\"%s}\n", conn[mqchat_connection_state(c)], "");
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
        } else if (strcmp(a, "--persist") == 0) {
            o.persist = persist;
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
    if (o.state_dir && o.user && o.device)
        snprintf(state_path, sizeof(state_path), "%s/%s.%s.sqlite", o.state_dir, o.user, o.device);
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
