/* mqchat-cli — a terminal chat client on libmqchat (clients/c-sdk).
 *
 * One process is one device of one user. The SDK runs in poll mode, so no
 * CLI code ever runs on an SDK thread (except the token provider): the one
 * loop below polls stdin and mqchat_fd(), takes the SDK's events and prints
 * them, and runs the commands typed or scripted.
 *
 * Two faces on the same commands (cli/README.md):
 *   - interactive (stdin a terminal): GNU readline's callback interface with
 *     history. An event is printed above the prompt by clearing the visible
 *     line, printing, and redrawing the prompt with what was being typed,
 *     so typing is never garbled. Lines starting with '/' are commands;
 *     other lines are sent to the open conversation.
 *   - scripted (--script): one command a line on stdin (the '/' optional),
 *     every SDK event and every command result one JSON object a line on
 *     stdout. wait-* commands hold the script until a condition holds (or
 *     a timeout: an error line), so tests need no sleeps. On EOF the CLI
 *     waits (bounded) until the outbox is empty and every request answered,
 *     then exits 0 (1 if that did not happen in time).
 *
 * A bad command is an error line (JSON in scripted mode), never an exit. */
#include "jwt.h"
#include "mqchat.h"

#include <cJSON.h>
#include <readline/history.h>
#include <readline/readline.h>

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <locale.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES (1024 * 1024) /* longest scripted command line */
#define TYPING_EVERY_MS 3000         /* interactive: typing "on" at most this often */

/* ---- Small utilities -------------------------------------------------- */

typedef struct buf {
    char *p;
    size_t n, cap;
} buf;

static int buf_grow(buf *b, size_t more)
{
    if (b->n + more + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + more + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static void buf_add(buf *b, const char *s, size_t n)
{
    if (buf_grow(b, n)) return; /* out of memory: the line is cut short */
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

__attribute__((format(printf, 2, 3))) static void buf_printf(buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || buf_grow(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)n;
}

static void buf_free(buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    size_t len;
    uint32_t cp;
    if (s[0] < 0x80) return 1;
    if ((s[0] & 0xe0) == 0xc0)
        len = 2, cp = s[0] & 0x1f;
    else if ((s[0] & 0xf0) == 0xe0)
        len = 3, cp = s[0] & 0x0f;
    else if ((s[0] & 0xf8) == 0xf0)
        len = 4, cp = s[0] & 0x07;
    else
        return 0;
    if (len > n) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return len;
}

/* A JSON string of n bytes: valid UTF-8 passes, invalid bytes become U+FFFD. */
static void j_strn(buf *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    buf_add(b, "\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned char ch = u[i];
        size_t l = utf8_len(u + i, n - i);
        if (l == 0) {
            buf_add(b, "\\ufffd", 6);
            i++;
        } else if (l > 1) {
            buf_add(b, s + i, l);
            i += l;
        } else {
            if (ch == '"' || ch == '\\') {
                char e[2] = {'\\', (char)ch};
                buf_add(b, e, 2);
            } else if (ch == '\n') {
                buf_add(b, "\\n", 2);
            } else if (ch < 0x20 || ch == 0x7f) {
                buf_printf(b, "\\u%04x", ch);
            } else {
                buf_add(b, s + i, 1);
            }
            i++;
        }
    }
    buf_add(b, "\"", 1);
}

/* ,"k":"v" */
static void j_str(buf *b, const char *k, const char *v)
{
    buf_printf(b, ",\"%s\":", k);
    j_strn(b, v ? v : "", v ? strlen(v) : 0);
}

/* Text for a terminal: control characters (C0, DEL, C1) and invalid UTF-8
 * become '?', so a message cannot move the cursor or retitle the window. */
static void t_strn(buf *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t l = utf8_len(u + i, n - i);
        if (l == 0 || (l == 1 && (u[i] < 0x20 || u[i] == 0x7f)) ||
            (l == 2 && u[i] == 0xc2 && u[i + 1] < 0xa0)) {
            buf_add(b, "?", 1);
            i += l ? l : 1;
        } else {
            buf_add(b, s + i, l);
            i += l;
        }
    }
}

static void t_str(buf *b, const char *s)
{
    if (s) t_strn(b, s, strlen(s));
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void hhmm(char out[8], int64_t ms)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (ms <= 0 || !localtime_r(&t, &tm))
        snprintf(out, 8, "--:--");
    else
        strftime(out, 8, "%H:%M", &tm);
}

/* A server error code's name as the CLI prints it: mqchat_strerror()'s,
 * lower case, without "E_" ("not_member"). */
static const char *ecode_name(int code)
{
    static char name[40];
    const char *n = mqchat_strerror(code);
    if (code <= 0 || strncmp(n, "E_", 2) != 0) return "unknown";
    size_t i = 0;
    for (n += 2; *n && i + 1 < sizeof(name); n++)
        name[i++] = (char)(*n >= 'A' && *n <= 'Z' ? *n - 'A' + 'a' : *n);
    name[i] = 0;
    return name;
}

static const char *ce_name(int t)
{
    static const char *names[] = {
        "",
        "created",
        "members_added",
        "members_removed",
        "member_left",
        "role_changed",
        "title_changed",
        "settings_changed",
        "message_edited",
        "message_deleted",
        "group_deleted",
    };
    return t > 0 && t < (int)(sizeof(names) / sizeof(names[0])) ? names[t] : "unknown";
}

static const char *conn_name(int s)
{
    static const char *names[] = {"",           "connecting",   "connected",
                                  "up_to_date", "disconnected", "taken_over"};
    return s > 0 && s < (int)(sizeof(names) / sizeof(names[0])) ? names[s] : "unknown";
}

static const char *presence_name(int s)
{
    return s == 1 ? "online" : s == 2 ? "offline" : "unknown";
}

/* ---- The CLI's state --------------------------------------------------- */

/* A request sent and not answered yet: what to do with the answer. */
typedef struct pending {
    char rid[MQCHAT_ID_BUF];
    char cmd[16];
    long n;                   /* the command's number (scripted mode) */
    char conv[MQCHAT_ID_BUF]; /* history / open / list: the conversation, or the page's after */
    unsigned limit;
    int open; /* history asked by /open: mark read after showing it */
} pending;

/* The newest seq the CLI knows of in a conversation (for /read). */
typedef struct known {
    char *conv;
    uint64_t seq;
} known;

enum wait_kind { W_NONE, W_UP_TO_DATE, W_SENT, W_REPLIES, W_EVENT, W_SLEEP, W_DRAIN };

static struct cli {
    mqchat_client *c;
    const char *user;
    int script;     /* --script: JSON lines */
    int strict;     /* --strict: exit 3 after any error, refusal or failed send */
    long failures;  /* error lines, refused requests, failed sends */
    int rl;         /* interactive with readline (stdin is a terminal) */
    int rl_active;  /* the readline handler is installed */
    int in_line;    /* in readline's line handler: the prompt is not shown */
    int quit;       /* /quit or EOF: drain (scripted) and leave */
    int eof;        /* stdin is at EOF */
    int up_to_date; /* the last CONNECTION event was UP_TO_DATE */
    int connected;  /* CONNECTED or UP_TO_DATE */
    long n;         /* commands run */
    unsigned history_n;
    int wait_timeout_ms;
    char open[MQCHAT_ID_BUF]; /* the open conversation (interactive), "" if none */
    char prompt[MQCHAT_ID_BUF + 8];
    int64_t last_typing_ms;
    char *history_file;

    pending *pend;
    size_t n_pend, cap_pend;
    known *known;
    size_t n_known, cap_known;

    /* a running wait-* command */
    enum wait_kind wait;
    long wait_n;
    char wait_cmd[24];
    char wait_type[24];
    int64_t wait_deadline;

    /* the token */
    const char *token;
    const char *token_file;
    unsigned char *secret;
    size_t secret_len;
    const char *iss, *aud, *device;
    long long ttl;
} S;

static volatile sig_atomic_t got_sigint, got_sigwinch;

/* Prints one finished line: above the prompt in interactive mode. */
static void out_line(const char *line)
{
    int redraw = S.rl && S.rl_active && !S.in_line;
    if (redraw) rl_clear_visible_line();
    fputs(line, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    if (redraw) rl_forced_update_display();
}

static void out_buf(buf *b)
{
    out_line(b->p ? b->p : "");
    buf_free(b);
}

/* A human line (interactive) or nothing (scripted). */
__attribute__((format(printf, 1, 2))) static void say(const char *fmt, ...)
{
    if (S.script) return;
    buf b = {0};
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || buf_grow(&b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b.p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    out_buf(&b);
}

/* A command's failure: {"type":"error",...} or "error: ..." */
__attribute__((format(printf, 2, 3))) static void cmd_error(const char *cmd, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    S.failures++;
    buf b = {0};
    if (S.script) {
        buf_printf(&b, "{\"type\":\"error\",\"n\":%ld", S.n);
        j_str(&b, "cmd", cmd);
        j_str(&b, "error", msg);
        buf_add(&b, "}", 1);
    } else {
        buf_add(&b, "error: ", 7);
        t_str(&b, msg);
    }
    out_buf(&b);
}

/* The start of a command's result line: {"type":"result","n":N,"cmd":C,"ok":true */
static void result_start(buf *b, const char *cmd)
{
    buf_printf(b, "{\"type\":\"result\",\"n\":%ld", S.n);
    j_str(b, "cmd", cmd);
    buf_add(b, ",\"ok\":true", 10);
}

static void result_ok(const char *cmd)
{
    if (!S.script) return;
    buf b = {0};
    result_start(&b, cmd);
    buf_add(&b, "}", 1);
    out_buf(&b);
}

static void known_update(const char *conv, uint64_t seq)
{
    for (size_t i = 0; i < S.n_known; i++) {
        if (strcmp(S.known[i].conv, conv) == 0) {
            if (seq > S.known[i].seq) S.known[i].seq = seq;
            return;
        }
    }
    if (S.n_known == S.cap_known) {
        size_t cap = S.cap_known ? S.cap_known * 2 : 16;
        known *k = realloc(S.known, cap * sizeof(*k));
        if (!k) return;
        S.known = k;
        S.cap_known = cap;
    }
    char *dup = strdup(conv);
    if (!dup) return;
    S.known[S.n_known].conv = dup;
    S.known[S.n_known].seq = seq;
    S.n_known++;
}

static uint64_t known_seq(const char *conv)
{
    for (size_t i = 0; i < S.n_known; i++)
        if (strcmp(S.known[i].conv, conv) == 0) return S.known[i].seq;
    return 0;
}

static pending *pend_add(const char *rid, const char *cmd, const char *conv)
{
    if (S.n_pend == S.cap_pend) {
        size_t cap = S.cap_pend ? S.cap_pend * 2 : 16;
        pending *p = realloc(S.pend, cap * sizeof(*p));
        if (!p) return NULL;
        S.pend = p;
        S.cap_pend = cap;
    }
    pending *p = &S.pend[S.n_pend++];
    memset(p, 0, sizeof(*p));
    snprintf(p->rid, sizeof(p->rid), "%s", rid);
    snprintf(p->cmd, sizeof(p->cmd), "%s", cmd);
    snprintf(p->conv, sizeof(p->conv), "%s", conv ? conv : "");
    p->n = S.n;
    return p;
}

/* Takes the pending request rid out into *out; 0 if there was none. */
static int pend_take(const char *rid, pending *out)
{
    for (size_t i = 0; i < S.n_pend; i++) {
        if (strcmp(S.pend[i].rid, rid) == 0) {
            *out = S.pend[i];
            S.pend[i] = S.pend[--S.n_pend];
            return 1;
        }
    }
    return 0;
}

/* ---- Events ------------------------------------------------------------ */

/* The fields of a message, "conv":... (no leading comma). */
static void json_message(buf *b, const mqchat_message *m)
{
    buf_add(b, "\"conv\":", 7);
    j_strn(b, m->conv, strlen(m->conv));
    buf_printf(b, ",\"seq\":%" PRIu64 ",\"inbox_seq\":%" PRIu64 ",\"time_ms\":%" PRId64, m->seq,
               m->inbox_seq, m->time_ms);
    j_str(b, "from", m->sender_user);
    j_str(b, "device", m->sender_device);
    j_str(b, "cmid", m->cmid);
    j_str(b, "kind", m->kind == MQCHAT_KIND_EVENT ? "event" : "user");
    if (m->kind == MQCHAT_KIND_EVENT) {
        j_str(b, "event", ce_name(m->event_type));
        j_str(b, "actor", m->actor);
        buf_add(b, ",\"users\":[", 10);
        for (size_t i = 0; i < m->n_users; i++) {
            if (i) buf_add(b, ",", 1);
            j_strn(b, m->users[i], strlen(m->users[i]));
        }
        buf_add(b, "]", 1);
        j_str(b, "title", m->title);
        if (m->target_seq) buf_printf(b, ",\"target_seq\":%" PRIu64, m->target_seq);
        if (m->mode) buf_printf(b, ",\"mode\":%d", m->mode);
    } else {
        j_str(b, "content_type", m->content_type);
        buf_add(b, ",\"body\":", 8);
        j_strn(b, (const char *)m->body, m->body_len);
    }
    if (m->reply_to_seq) buf_printf(b, ",\"reply_to_seq\":%" PRIu64, m->reply_to_seq);
    if (m->edited) buf_add(b, ",\"edited\":true", 14);
    if (m->deleted) buf_add(b, ",\"deleted\":true", 15);
    if (m->expired) buf_add(b, ",\"expired\":true", 15);
}

/* "[conv #seq 12:34] alice: hello" or "[conv #seq 12:34] * alice added bob" */
static void text_message(buf *b, const mqchat_message *m)
{
    char t[8];
    hhmm(t, m->time_ms);
    buf_add(b, "[", 1);
    t_str(b, m->conv);
    buf_printf(b, " #%" PRIu64 " %s] ", m->seq, t);
    if (m->kind == MQCHAT_KIND_EVENT) {
        buf_add(b, "* ", 2);
        t_str(b, m->actor[0] ? m->actor : m->sender_user);
        buf_printf(b, " %s", ce_name(m->event_type));
        for (size_t i = 0; i < m->n_users; i++) {
            buf_add(b, i ? ", " : " ", i ? 2 : 1);
            t_str(b, m->users[i]);
        }
        if (m->title[0]) {
            buf_add(b, " \"", 2);
            t_str(b, m->title);
            buf_add(b, "\"", 1);
        }
        if (m->target_seq) buf_printf(b, " (#%" PRIu64 ")", m->target_seq);
        return;
    }
    t_str(b, m->sender_user);
    buf_add(b, ": ", 2);
    if (m->deleted)
        buf_add(b, "(deleted)", 9);
    else if (m->expired)
        buf_add(b, "(expired)", 9);
    else if (strncmp(m->content_type, "text/", 5) == 0 || !m->content_type[0])
        t_strn(b, (const char *)m->body, m->body_len);
    else {
        buf_add(b, "(", 1);
        t_str(b, m->content_type);
        buf_printf(b, ", %zu bytes)", m->body_len);
    }
    if (m->edited) buf_add(b, " (edited)", 9);
}

static void wait_done(int ok, const char *why);

static void on_response(const mqchat_event *ev)
{
    pending p;
    int known_rid = pend_take(ev->response.request_id, &p);
    if (!known_rid) {
        memset(&p, 0, sizeof(p));
        snprintf(p.cmd, sizeof(p.cmd), "?");
    }
    for (size_t i = 0; i < ev->response.n_messages; i++)
        known_update(ev->response.messages[i].conv, ev->response.messages[i].seq);
    for (size_t i = 0; i < ev->response.n_conversations; i++)
        known_update(ev->response.conversations[i].conv, ev->response.conversations[i].head_seq);
    if (!ev->response.ok) S.failures++;
    if (ev->response.group_conv && ev->response.group_seq)
        known_update(ev->response.group_conv, ev->response.group_seq);

    buf b = {0};
    if (S.script) {
        buf_add(&b, "{\"type\":\"response\"", 18);
        j_str(&b, "rid", ev->response.request_id);
        j_str(&b, "cmd", p.cmd);
        if (known_rid) buf_printf(&b, ",\"n\":%ld", p.n);
        buf_printf(&b, ",\"ok\":%s", ev->response.ok ? "true" : "false");
        if (!ev->response.ok) {
            buf_printf(&b, ",\"code\":%d", ev->response.code);
            j_str(&b, "error", ecode_name(ev->response.code));
            j_str(&b, "message", ev->response.error_message);
        }
        if (ev->response.group_conv) {
            j_str(&b, "group", ev->response.group_conv);
            buf_printf(&b, ",\"group_seq\":%" PRIu64, ev->response.group_seq);
        }
        if (ev->response.messages) {
            buf_add(&b, ",\"messages\":[", 13);
            for (size_t i = 0; i < ev->response.n_messages; i++) { /* oldest first */
                buf_add(&b, i ? ",{" : "{", i ? 2 : 1);
                json_message(&b, &ev->response.messages[ev->response.n_messages - 1 - i]);
                buf_add(&b, "}", 1);
            }
            buf_add(&b, "]", 1);
        }
        if (ev->response.conversations) {
            buf_add(&b, ",\"conversations\":[", 18);
            for (size_t i = 0; i < ev->response.n_conversations; i++) {
                const mqchat_conversation *cv = &ev->response.conversations[i];
                buf_add(&b, i ? ",{" : "{", i ? 2 : 1);
                buf_add(&b, "\"conv\":", 7);
                j_strn(&b, cv->conv, strlen(cv->conv));
                buf_printf(&b,
                           ",\"unread\":%" PRIu64 ",\"head_seq\":%" PRIu64 ",\"read_seq\":%" PRIu64
                           ",\"last_activity_ms\":%" PRId64 ",\"mode\":%d,\"members\":%u"
                           ",\"group\":%s,\"role\":%d,\"last_seq\":%" PRIu64 ",\"title\":",
                           cv->unread, cv->head_seq, cv->read_seq, cv->last_activity_ms, cv->mode,
                           (unsigned)cv->member_count, cv->is_group ? "true" : "false", cv->role,
                           cv->last_message ? cv->last_message->seq : 0);
                j_strn(&b, cv->title ? cv->title : "", cv->title ? strlen(cv->title) : 0);
                buf_add(&b, "}", 1);
            }
            buf_add(&b, "]", 1);
        }
        if (ev->response.presence) {
            buf_add(&b, ",\"presence\":[", 13);
            for (size_t i = 0; i < ev->response.n_presence; i++) {
                buf_add(&b, i ? ",{" : "{", i ? 2 : 1);
                buf_add(&b, "\"user\":", 7);
                j_strn(&b, ev->response.presence[i].user, strlen(ev->response.presence[i].user));
                j_str(&b, "state", presence_name(ev->response.presence[i].state));
                buf_printf(&b, ",\"last_seen_ms\":%" PRId64 "}",
                           ev->response.presence[i].last_seen_ms);
            }
            buf_add(&b, "]", 1);
        }
        if (ev->response.messages || ev->response.conversations)
            buf_printf(&b, ",\"more\":%s", ev->response.more ? "true" : "false");
        buf_add(&b, "}", 1);
        out_buf(&b);
    } else if (!ev->response.ok) {
        buf_add(&b, "error: ", 7);
        t_str(&b, p.cmd);
        buf_printf(&b, ": %s", ecode_name(ev->response.code));
        if (ev->response.error_message && ev->response.error_message[0]) {
            buf_add(&b, ": ", 2);
            t_str(&b, ev->response.error_message);
        }
        out_buf(&b);
    } else if (strcmp(p.cmd, "list") == 0) {
        if (!p.conv[0])
            say("%-40s %6s %6s %5s %7s", "CONVERSATION", "UNREAD", "LAST", "SEQ", "MEMBERS");
        for (size_t i = 0; i < ev->response.n_conversations; i++) {
            const mqchat_conversation *cv = &ev->response.conversations[i];
            char t[8];
            hhmm(t, cv->last_activity_ms);
            buf_printf(&b, "%-40s %6" PRIu64 " %6s %5" PRIu64 " %7u", "", cv->unread, t,
                       cv->head_seq, (unsigned)cv->member_count);
            /* the id, sanitized, over the padding */
            buf id = {0};
            t_str(&id, cv->conv);
            memcpy(b.p, id.p, id.n < 40 ? id.n : 40);
            if (id.n > 40) memcpy(b.p + 37, "...", 3);
            buf_free(&id);
            out_buf(&b);
        }
        if (!ev->response.n_conversations && !p.conv[0]) say("(no conversations)");
    } else if (strcmp(p.cmd, "history") == 0 || strcmp(p.cmd, "open") == 0) {
        if (!ev->response.n_messages) say("(no history)");
        for (size_t i = ev->response.n_messages; i-- > 0;) {
            text_message(&b, &ev->response.messages[i]);
            out_buf(&b);
        }
    } else if (strcmp(p.cmd, "group") == 0) {
        buf_add(&b, "created group ", 14);
        t_str(&b, ev->response.group_conv);
        buf_add(&b, " (/open it)", 11);
        out_buf(&b);
    } else if (strcmp(p.cmd, "watch") == 0) {
        for (size_t i = 0; i < ev->response.n_presence; i++) {
            char t[8];
            hhmm(t, ev->response.presence[i].last_seen_ms);
            t_str(&b, ev->response.presence[i].user);
            buf_printf(&b, " is %s (last seen %s)", presence_name(ev->response.presence[i].state),
                       t);
            out_buf(&b);
        }
    } else {
        buf_printf(&b, "%s: ok", p.cmd);
        out_buf(&b);
    }

    /* After the answer: the next page of a list; read receipts for /open. */
    if (ev->response.ok && strcmp(p.cmd, "list") == 0 && ev->response.more &&
        ev->response.n_conversations) {
        char rid[MQCHAT_ID_BUF];
        const char *last = ev->response.conversations[ev->response.n_conversations - 1].conv;
        if (mqchat_list_conversations(S.c, last, p.limit, rid) == MQCHAT_OK) {
            pending *np = pend_add(rid, "list", last);
            if (np) np->n = p.n, np->limit = p.limit;
        }
    }
    if (ev->response.ok && p.open && strcmp(p.conv, S.open) == 0) {
        uint64_t s = known_seq(p.conv);
        if (s) mqchat_mark_read(S.c, p.conv, s, NULL);
    }
}

static void on_event(const mqchat_event *ev)
{
    buf b = {0};
    switch (ev->type) {
    case MQCHAT_EV_MESSAGE:
        known_update(ev->message.conv, ev->message.seq);
        if (S.script) {
            buf_add(&b, "{\"type\":\"message\",", 18);
            json_message(&b, &ev->message);
        } else {
            text_message(&b, &ev->message);
        }
        break;
    case MQCHAT_EV_SENT:
    case MQCHAT_EV_SEND_FAILED: {
        int ok = ev->type == MQCHAT_EV_SENT;
        if (!ok && !ev->sent.will_retry) S.failures++;
        if (ok) known_update(ev->sent.conv, ev->sent.seq);
        if (S.script) {
            buf_printf(&b, "{\"type\":\"%s\"", ok ? "sent" : "send_failed");
            j_str(&b, "cmid", ev->sent.cmid);
            j_str(&b, "conv", ev->sent.conv);
            buf_printf(&b, ",\"seq\":%" PRIu64 ",\"time_ms\":%" PRId64, ev->sent.seq,
                       ev->sent.time_ms);
            if (!ok) {
                buf_printf(&b, ",\"code\":%d", ev->sent.code);
                j_str(&b, "error", ecode_name(ev->sent.code));
                j_str(&b, "message", ev->sent.error_message);
                buf_printf(&b, ",\"will_retry\":%s", ev->sent.will_retry ? "true" : "false");
            }
        } else if (ok) {
            buf_add(&b, "[", 1);
            t_str(&b, ev->sent.conv);
            buf_printf(&b, " #%" PRIu64 "] sent", ev->sent.seq);
        } else {
            buf_add(&b, "[", 1);
            t_str(&b, ev->sent.conv);
            buf_printf(&b, "] send failed: %s", ecode_name(ev->sent.code));
            if (ev->sent.error_message && ev->sent.error_message[0]) {
                buf_add(&b, ": ", 2);
                t_str(&b, ev->sent.error_message);
            }
            if (ev->sent.will_retry) buf_add(&b, " (will retry)", 13);
        }
        break;
    }
    case MQCHAT_EV_RECEIPT:
        if (S.script) {
            buf_add(&b, "{\"type\":\"receipt\"", 17);
            j_str(&b, "conv", ev->receipt.conv);
            j_str(&b, "user", ev->receipt.user);
            buf_printf(
                &b, ",\"delivered_seq\":%" PRIu64 ",\"read_seq\":%" PRIu64 ",\"time_ms\":%" PRId64,
                ev->receipt.delivered_seq, ev->receipt.read_seq, ev->receipt.time_ms);
        } else {
            if (strcmp(ev->receipt.user, S.user) == 0) return; /* our own devices */
            buf_add(&b, "[", 1);
            t_str(&b, ev->receipt.conv);
            buf_add(&b, "] ", 2);
            t_str(&b, ev->receipt.user);
            buf_printf(&b, ": delivered #%" PRIu64 ", read #%" PRIu64, ev->receipt.delivered_seq,
                       ev->receipt.read_seq);
        }
        break;
    case MQCHAT_EV_TYPING:
        if (S.script) {
            buf_add(&b, "{\"type\":\"typing\"", 16);
            j_str(&b, "conv", ev->typing.conv);
            j_str(&b, "user", ev->typing.user);
            buf_printf(&b, ",\"on\":%s", ev->typing.on ? "true" : "false");
        } else {
            if (!ev->typing.on || strcmp(ev->typing.user, S.user) == 0) return;
            buf_add(&b, "[", 1);
            t_str(&b, ev->typing.conv);
            buf_add(&b, "] ", 2);
            t_str(&b, ev->typing.user);
            buf_add(&b, " is typing...", 13);
        }
        break;
    case MQCHAT_EV_PRESENCE:
        if (S.script) {
            buf_add(&b, "{\"type\":\"presence\"", 18);
            j_str(&b, "user", ev->presence.user);
            j_str(&b, "state", presence_name(ev->presence.state));
            buf_printf(&b, ",\"last_seen_ms\":%" PRId64, ev->presence.last_seen_ms);
        } else {
            t_str(&b, ev->presence.user);
            buf_printf(&b, " is %s", presence_name(ev->presence.state));
        }
        break;
    case MQCHAT_EV_CONNECTION: {
        int st = ev->connection.state;
        S.up_to_date = st == MQCHAT_CONN_UP_TO_DATE;
        S.connected = st == MQCHAT_CONN_CONNECTED || st == MQCHAT_CONN_UP_TO_DATE;
        if (S.script) {
            buf_add(&b, "{\"type\":\"connection\"", 20);
            j_str(&b, "state", conn_name(st));
            j_str(&b, "reason", ev->connection.reason);
        } else {
            if (st == MQCHAT_CONN_CONNECTING) return; /* every retry: too chatty */
            buf_printf(&b, "-- %s", st == MQCHAT_CONN_UP_TO_DATE ? "up to date" : conn_name(st));
            if (ev->connection.reason && ev->connection.reason[0]) {
                buf_add(&b, ": ", 2);
                t_str(&b, ev->connection.reason);
            }
            if (st == MQCHAT_CONN_TAKEN_OVER)
                buf_add(&b, " (another session took over; not reconnecting)", 46);
        }
        break;
    }
    case MQCHAT_EV_RESPONSE:
        on_response(ev);
        return;
    case MQCHAT_EV_ERROR:
        if (S.script) {
            buf_add(&b, "{\"type\":\"sdk_error\"", 19);
            j_str(&b, "message", ev->error.message);
        } else {
            buf_add(&b, "-- sdk error: ", 14);
            t_str(&b, ev->error.message);
        }
        break;
    default:
        if (S.script)
            buf_printf(&b, "{\"type\":\"unknown\",\"code\":%d", (int)ev->type);
        else
            buf_printf(&b, "-- unknown event %d", (int)ev->type);
        break;
    }
    if (S.script) buf_add(&b, "}", 1);
    out_buf(&b);
}

/* The names of events in JSON, for wait-event. */
static const char *event_type_name(const mqchat_event *ev)
{
    switch (ev->type) {
    case MQCHAT_EV_MESSAGE:
        return "message";
    case MQCHAT_EV_SENT:
        return "sent";
    case MQCHAT_EV_SEND_FAILED:
        return "send_failed";
    case MQCHAT_EV_RECEIPT:
        return "receipt";
    case MQCHAT_EV_TYPING:
        return "typing";
    case MQCHAT_EV_PRESENCE:
        return "presence";
    case MQCHAT_EV_CONNECTION:
        return "connection";
    case MQCHAT_EV_RESPONSE:
        return "response";
    case MQCHAT_EV_ERROR:
        return "sdk_error";
    }
    return "unknown";
}

/* Takes every queued event; after the batch, a delivered receipt for the
 * newest message of each conversation that had news (and a read receipt
 * for the open one, interactive). */
static void drain_events(void)
{
    mqchat_event *ev;
    char got[32][MQCHAT_ID_BUF];
    uint64_t got_seq[32];
    size_t n_got = 0;
    while ((ev = mqchat_next_event(S.c))) {
        on_event(ev);
        if (ev->type == MQCHAT_EV_MESSAGE && strcmp(ev->message.sender_user, S.user) != 0) {
            size_t i;
            for (i = 0; i < n_got && strcmp(got[i], ev->message.conv) != 0; i++)
                ;
            if (i == n_got && n_got < 32) {
                snprintf(got[n_got], MQCHAT_ID_BUF, "%s", ev->message.conv);
                got_seq[n_got++] = 0;
            }
            if (i < n_got && ev->message.seq > got_seq[i]) got_seq[i] = ev->message.seq;
        }
        if (S.wait == W_EVENT && strcmp(S.wait_type, event_type_name(ev)) == 0) wait_done(1, NULL);
        mqchat_event_free(ev); /* lets the SDK commit a MESSAGE as handed */
    }
    for (size_t i = 0; i < n_got; i++) {
        mqchat_mark_delivered(S.c, got[i], got_seq[i], NULL);
        if (!S.script && strcmp(got[i], S.open) == 0)
            mqchat_mark_read(S.c, got[i], got_seq[i], NULL);
    }
}

/* ---- Commands ---------------------------------------------------------- */

/* The next word of *p (double quotes group, backslash escapes inside
 * them), NUL-terminated in place; NULL at the end of the line. */
static char *word(char **p)
{
    char *s = *p;
    while (*s == ' ' || *s == '\t')
        s++;
    if (!*s) {
        *p = s;
        return NULL;
    }
    char *w = s, *o = s;
    if (*s == '"') {
        s++;
        while (*s && *s != '"') {
            if (*s == '\\' && s[1]) s++;
            *o++ = *s++;
        }
        if (*s == '"') s++;
    } else {
        while (*s && *s != ' ' && *s != '\t')
            *o++ = *s++;
    }
    if (*s == ' ' || *s == '\t') s++; /* the separator */
    *p = s;
    *o = 0;
    return w;
}

/* The rest of the line after the blanks. */
static char *rest(char **p)
{
    char *s = *p;
    while (*s == ' ' || *s == '\t')
        s++;
    *p = s + strlen(s);
    return s;
}

static int parse_uint(const char *s, unsigned long long max, unsigned long long *out)
{
    char *end;
    if (!s || !*s || *s == '-') return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > max) return -1;
    *out = v;
    return 0;
}

static int is_number(const char *s)
{
    unsigned long long v;
    return s && parse_uint(s, ULLONG_MAX, &v) == 0;
}

static const char *sdk_error(int rc)
{
    return rc == MQCHAT_ERR_OFFLINE ? "offline (not connected)"
           : rc == MQCHAT_ERR_STATE ? "the SQLite state failed"
                                    : "bad argument or SDK failure";
}

/* Collects the remaining words (at most 256) as a list of user ids. */
static size_t words(char **p, const char **out, size_t cap)
{
    size_t n = 0;
    char *w;
    while (n < cap && (w = word(p)))
        out[n++] = w;
    return n;
}

static void requested(const char *cmd, const char *rid, const char *conv, unsigned limit, int open)
{
    pending *p = pend_add(rid, cmd, conv);
    if (p) p->limit = limit, p->open = open;
    if (S.script) {
        buf b = {0};
        result_start(&b, cmd);
        j_str(&b, "rid", rid);
        buf_add(&b, "}", 1);
        out_buf(&b);
    }
}

static void set_prompt(void)
{
    snprintf(S.prompt, sizeof(S.prompt), "%s> ", S.open[0] ? S.open : "mqchat");
    if (S.rl_active) rl_set_prompt(S.prompt);
}

static void do_send(const char *cmd, const char *conv, const char *text)
{
    char cmid[MQCHAT_ID_BUF];
    int rc = mqchat_send(S.c, conv, "text/plain", text, strlen(text), cmid);
    if (rc != MQCHAT_OK) {
        cmd_error(cmd, "send failed: %s", sdk_error(rc));
        return;
    }
    if (S.script) {
        buf b = {0};
        result_start(&b, cmd);
        j_str(&b, "cmid", cmid);
        j_str(&b, "conv", conv);
        buf_add(&b, "}", 1);
        out_buf(&b);
    } else {
        buf b = {0};
        buf_add(&b, "[", 1);
        t_str(&b, conv);
        buf_add(&b, "] ", 2);
        t_str(&b, S.user);
        buf_add(&b, ": ", 2);
        t_str(&b, text);
        buf_add(&b, S.connected ? "" : " (queued, offline)", S.connected ? 0 : 18);
        out_buf(&b);
    }
}

static void help(void)
{
    static const char *lines[] = {
        "/list [N]                    conversations with unread counts (N a page)",
        "/open CONV [N]               open CONV: its last N messages; plain lines then send there",
        "/close                       close the open conversation",
        "/history [CONV] [N] [BEFORE] N messages (default 20) before seq BEFORE (default newest)",
        "/send CONV TEXT              send TEXT to CONV",
        "/read [CONV] [SEQ]           mark read up to SEQ (default: the newest known)",
        "/group TITLE USER...         create a group (quote a TITLE with spaces)",
        "/add CONV USER...            add members        /remove CONV USER...  remove members",
        "/leave CONV                  leave a group",
        "/watch USER...               presence of users, and live changes",
        "/typing [CONV] [on|off]      send a typing indicator (interactive: automatic)",
        "/status                      connection and outbox",
        "/wait-up-to-date [MS]  /wait-sent [MS]  /wait-replies [MS]  /wait-event TYPE [MS]",
        "/sleep MS                    hold the script for MS milliseconds",
        "/help  /quit",
    };
    if (S.script) {
        result_ok("help");
        return;
    }
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
        out_line(lines[i]);
}

static void start_wait(enum wait_kind k, const char *cmd, const char *type, const char *ms)
{
    unsigned long long v = (unsigned long long)S.wait_timeout_ms;
    if (ms && parse_uint(ms, 86400000ULL, &v)) {
        cmd_error(cmd, "bad milliseconds \"%s\"", ms);
        return;
    }
    S.wait = k;
    S.wait_n = S.n;
    snprintf(S.wait_cmd, sizeof(S.wait_cmd), "%s", cmd);
    snprintf(S.wait_type, sizeof(S.wait_type), "%s", type ? type : "");
    S.wait_deadline = now_ms() + (int64_t)v;
}

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        cmd_error(cmd, __VA_ARGS__);                                                               \
        return;                                                                                    \
    } while (0)

/* Runs one command line (without the leading '/'). */
static void command(char *line)
{
    char *p = line, *cmd = word(&p);
    char rid[MQCHAT_ID_BUF];
    const char *users[256];
    int rc;
    S.n++;
    if (!cmd) {
        cmd_error("", "empty command (/help lists them)");
        return;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "?") == 0) {
        help();
    } else if (strcmp(cmd, "quit") == 0 || strcmp(cmd, "exit") == 0) {
        S.quit = 1;
        result_ok(cmd);
    } else if (strcmp(cmd, "list") == 0) {
        char *l = word(&p);
        unsigned long long limit = 50;
        if (l && parse_uint(l, 1000, &limit)) FAIL("bad page size \"%s\"", l);
        if ((rc = mqchat_list_conversations(S.c, NULL, (unsigned)limit, rid)) != MQCHAT_OK)
            FAIL("%s", sdk_error(rc));
        requested(cmd, rid, "", (unsigned)limit, 0);
    } else if (strcmp(cmd, "open") == 0 || strcmp(cmd, "history") == 0) {
        int open = strcmp(cmd, "open") == 0;
        char *a = word(&p), *conv = S.open, *n = NULL, *before = NULL;
        if (open) {
            if (!a) FAIL("usage: /open CONV [N]");
            conv = a;
            n = word(&p);
        } else if (a && !is_number(a)) {
            conv = a;
            n = word(&p);
            before = word(&p);
        } else {
            n = a;
            before = word(&p);
        }
        if (!conv[0]) FAIL("no conversation open: /history CONV [N]");
        if (strlen(conv) >= MQCHAT_ID_BUF) FAIL("conversation id too long");
        unsigned long long limit = S.history_n, bseq = 0;
        if (n && parse_uint(n, 1000, &limit)) FAIL("bad count \"%s\"", n);
        if (before && parse_uint(before, ULLONG_MAX, &bseq)) FAIL("bad seq \"%s\"", before);
        char c[MQCHAT_ID_BUF];
        snprintf(c, sizeof(c), "%s", conv);
        if (open) {
            snprintf(S.open, sizeof(S.open), "%s", c);
            set_prompt();
            say("-- %s open; plain lines go there (/close to stop)", c);
        }
        if (limit == 0) {
            if (open) result_ok(cmd);
            return;
        }
        if ((rc = mqchat_history(S.c, c, bseq, (unsigned)limit, rid)) != MQCHAT_OK) {
            if (open && rc == MQCHAT_ERR_OFFLINE) {
                say("(offline: no history now)");
                result_ok(cmd);
                return;
            }
            FAIL("%s", sdk_error(rc));
        }
        requested(cmd, rid, c, (unsigned)limit, open);
    } else if (strcmp(cmd, "close") == 0) {
        S.open[0] = 0;
        set_prompt();
        result_ok(cmd);
    } else if (strcmp(cmd, "send") == 0) {
        char *conv = word(&p), *text = rest(&p);
        if (!conv || !*text) FAIL("usage: /send CONV TEXT");
        do_send(cmd, conv, text);
    } else if (strcmp(cmd, "read") == 0) {
        char *a = word(&p), *conv = S.open, *s = NULL;
        if (a && !is_number(a))
            conv = a, s = word(&p);
        else
            s = a;
        if (!conv[0]) FAIL("no conversation open: /read CONV [SEQ]");
        unsigned long long seq = 0;
        if (s && parse_uint(s, ULLONG_MAX, &seq)) FAIL("bad seq \"%s\"", s);
        if (!s) seq = known_seq(conv);
        if (!seq) FAIL("no message known in %s yet (/history it first)", conv);
        if ((rc = mqchat_mark_read(S.c, conv, seq, NULL)) != MQCHAT_OK) FAIL("%s", sdk_error(rc));
        if (S.script) {
            buf b = {0};
            result_start(&b, cmd);
            j_str(&b, "conv", conv);
            buf_printf(&b, ",\"seq\":%llu}", seq);
            out_buf(&b);
        } else {
            say("marked read up to #%llu", seq);
        }
    } else if (strcmp(cmd, "group") == 0) {
        char *title = word(&p);
        size_t n = words(&p, users, 256);
        if (!title) FAIL("usage: /group TITLE USER...");
        if ((rc = mqchat_group_create(S.c, title, users, n, rid)) != MQCHAT_OK)
            FAIL("%s", sdk_error(rc));
        requested(cmd, rid, "", 0, 0);
    } else if (strcmp(cmd, "add") == 0 || strcmp(cmd, "remove") == 0) {
        char *conv = word(&p);
        size_t n = words(&p, users, 256);
        if (!conv || !n) FAIL("usage: /%s CONV USER...", cmd);
        rc = cmd[0] == 'a' ? mqchat_group_add(S.c, conv, users, n, rid)
                           : mqchat_group_remove(S.c, conv, users, n, rid);
        if (rc != MQCHAT_OK) FAIL("%s", sdk_error(rc));
        requested(cmd, rid, conv, 0, 0);
    } else if (strcmp(cmd, "leave") == 0) {
        char *conv = word(&p);
        if (!conv) conv = S.open;
        if (!conv[0]) FAIL("usage: /leave CONV");
        if ((rc = mqchat_group_leave(S.c, conv, rid)) != MQCHAT_OK) FAIL("%s", sdk_error(rc));
        requested(cmd, rid, conv, 0, 0);
    } else if (strcmp(cmd, "watch") == 0) {
        size_t n = words(&p, users, 256);
        if (!n) FAIL("usage: /watch USER...");
        if ((rc = mqchat_presence_watch(S.c, users, n, rid)) != MQCHAT_OK)
            FAIL("%s", sdk_error(rc));
        requested(cmd, rid, "", 0, 0);
    } else if (strcmp(cmd, "typing") == 0) {
        char *a = word(&p), *conv = S.open, *state = NULL;
        if (a && strcmp(a, "on") != 0 && strcmp(a, "off") != 0)
            conv = a, state = word(&p);
        else
            state = a;
        if (!conv[0]) FAIL("no conversation open: /typing CONV [on|off]");
        if (state && strcmp(state, "on") != 0 && strcmp(state, "off") != 0)
            FAIL("usage: /typing [CONV] [on|off]");
        int on = !state || strcmp(state, "on") == 0;
        if ((rc = mqchat_typing(S.c, conv, on)) != MQCHAT_OK) FAIL("%s", sdk_error(rc));
        result_ok(cmd);
    } else if (strcmp(cmd, "status") == 0) {
        int ob = mqchat_outbox_count(S.c);
        if (S.script) {
            buf b = {0};
            result_start(&b, cmd);
            buf_printf(&b, ",\"connected\":%s,\"up_to_date\":%s,\"outbox\":%d,\"pending\":%zu}",
                       S.connected ? "true" : "false", S.up_to_date ? "true" : "false", ob,
                       S.n_pend);
            out_buf(&b);
        } else {
            say("%s, %d in the outbox, %zu requests unanswered",
                S.up_to_date  ? "up to date"
                : S.connected ? "connected (syncing)"
                              : "offline",
                ob, S.n_pend);
        }
    } else if (strcmp(cmd, "wait-up-to-date") == 0) {
        start_wait(W_UP_TO_DATE, cmd, NULL, word(&p));
    } else if (strcmp(cmd, "wait-sent") == 0) {
        start_wait(W_SENT, cmd, NULL, word(&p));
    } else if (strcmp(cmd, "wait-replies") == 0) {
        start_wait(W_REPLIES, cmd, NULL, word(&p));
    } else if (strcmp(cmd, "wait-event") == 0) {
        char *t = word(&p);
        if (!t) FAIL("usage: /wait-event TYPE [MS]");
        start_wait(W_EVENT, cmd, t, word(&p));
    } else if (strcmp(cmd, "sleep") == 0) {
        char *ms = word(&p);
        if (!ms) FAIL("usage: /sleep MS");
        start_wait(W_SLEEP, cmd, NULL, ms);
    } else {
        cmd_error(cmd, "unknown command (/help lists them)");
    }
}

/* A line typed or scripted. */
static void line(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = 0;
    char *p = s;
    while (*p == ' ' || *p == '\t')
        p++;
    if (!*p || (S.script && *p == '#')) return;
    if (*p == '/') {
        command(p + 1);
    } else if (S.script) {
        command(p);
    } else if (!S.open[0]) {
        S.n++;
        cmd_error("send", "no conversation open (/open CONV, or /help)");
    } else {
        S.n++;
        do_send("send", S.open, s);
    }
}

/* ---- Waits ------------------------------------------------------------- */

static void wait_done(int ok, const char *why)
{
    enum wait_kind k = S.wait;
    S.wait = W_NONE;
    if (k == W_DRAIN) return;
    long n = S.n;
    S.n = S.wait_n; /* the line names the wait command */
    if (ok)
        result_ok(S.wait_cmd);
    else
        cmd_error(S.wait_cmd, "%s", why);
    S.n = n;
}

/* 1 if the running wait is over (reporting it). */
static int wait_check(void)
{
    int ok = 0;
    switch (S.wait) {
    case W_NONE:
        return 1;
    case W_UP_TO_DATE:
        ok = S.up_to_date;
        break;
    case W_SENT:
        ok = mqchat_outbox_count(S.c) <= 0;
        break;
    case W_REPLIES:
        ok = S.n_pend == 0;
        break;
    case W_DRAIN:
        ok = S.n_pend == 0 && mqchat_outbox_count(S.c) <= 0;
        break;
    case W_EVENT:
    case W_SLEEP:
        break;
    }
    if (ok || (S.wait == W_SLEEP && now_ms() >= S.wait_deadline)) {
        wait_done(1, NULL);
        return 1;
    }
    if (now_ms() >= S.wait_deadline) {
        char why[128];
        snprintf(why, sizeof(why), "timed out (outbox %d, %zu requests unanswered, %s)",
                 mqchat_outbox_count(S.c), S.n_pend,
                 S.up_to_date  ? "up to date"
                 : S.connected ? "connected"
                               : "not connected");
        if (S.wait == W_DRAIN) {
            long n = S.n;
            S.n = 0;
            cmd_error("eof", "draining %s", why);
            S.n = n;
            S.wait = W_NONE;
            return -1;
        }
        wait_done(0, why);
        return 1;
    }
    return 0;
}

/* ---- The token --------------------------------------------------------- */

static int read_token_file(const char *path, char *out, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(out, 1, cap - 1, f);
    int full = n == cap - 1 && fgetc(f) != EOF;
    fclose(f);
    if (full) return -1;
    while (n && (out[n - 1] == '\n' || out[n - 1] == '\r' || out[n - 1] == ' '))
        n--;
    out[n] = 0;
    return n ? 0 : -1;
}

/* Mints an HS256 dev token as mqchat-token does: sub, did, iat, exp, and
 * iss / aud when given. */
static int mint(char *out, size_t cap)
{
    int rc = -1;
    char *claims = NULL, *token = NULL;
    time_t now = time(NULL);
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddStringToObject(o, "sub", S.user) ||
        !cJSON_AddStringToObject(o, "did", S.device) ||
        (S.iss && !cJSON_AddStringToObject(o, "iss", S.iss)) ||
        (S.aud && !cJSON_AddStringToObject(o, "aud", S.aud)) ||
        !cJSON_AddNumberToObject(o, "iat", (double)now) ||
        !cJSON_AddNumberToObject(o, "exp", (double)now + (double)S.ttl) ||
        !(claims = cJSON_PrintUnformatted(o)))
        goto out;
    if (mqjwt_sign_hs256(S.secret, S.secret_len, claims, &token) != MQJWT_OK) goto out;
    if (strlen(token) >= cap) goto out;
    memcpy(out, token, strlen(token) + 1);
    rc = 0;
out:
    cJSON_Delete(o);
    cJSON_free(claims);
    free(token);
    return rc;
}

/* The SDK's token provider (on its timer thread: touches only what main()
 * set before mqchat_connect()). */
static int token_fn(void *data, char *out, size_t cap, int refresh)
{
    if (S.secret) return mint(out, cap);
    if (S.token_file) return read_token_file(S.token_file, out, cap);
    if (!S.token || strlen(S.token) >= cap) return -1;
    memcpy(out, S.token, strlen(S.token) + 1);
    return 0;
}

/* ---- Main -------------------------------------------------------------- */

static void on_rl_line(char *s)
{
    if (!s) { /* Ctrl-D */
        S.quit = 1;
        S.eof = 1;
        rl_callback_handler_remove();
        S.rl_active = 0;
        fputc('\n', stdout);
        return;
    }
    if (*s) {
        HIST_ENTRY *h = history_length > 0 ? history_get(history_base + history_length - 1) : NULL;
        if (!h || strcmp(h->line, s) != 0) add_history(s);
    }
    S.in_line = 1; /* readline moved to a new line and shows the prompt after us */
    line(s);
    S.in_line = 0;
    free(s);
    if (S.quit) { /* no new prompt */
        rl_callback_handler_remove();
        S.rl_active = 0;
    }
}

static void on_signal(int sig)
{
    if (sig == SIGINT) got_sigint = 1;
    if (sig == SIGWINCH) got_sigwinch = 1;
}

static int mkdirs(const char *path)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s", path) >= (int)sizeof(tmp)) return -1;
    for (char *s = tmp + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(tmp, 0700) && errno != EEXIST) return -1;
        *s = '/';
    }
    if (mkdir(tmp, 0700) && errno != EEXIST) return -1;
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: mqchat-cli --user U [--device D] (--token T | --token-file F |\n"
               "                  --dev-secret-file F [--iss X] [--aud Y] [--ttl S])\n"
               "                  [--host H] [--port N] [--tls] [--cafile F] [--mqtt5]\n"
               "                  [--prefix P] [--state-dir DIR] [--script [--strict]]\n"
               "                  [--history N] [--wait-timeout MS]\n"
               "\n"
               "  --token T            the JWT (visible in ps; prefer --token-file)\n"
               "  --token-file F       read the JWT from F at every connect\n"
               "  --dev-secret-file F  mint an HS256 dev token from the shared secret in F\n"
               "  --iss X / --aud Y    the minted token's issuer / audience claims\n"
               "  --ttl S              the minted token's lifetime (default 3600 s)\n"
               "  --device D           device id (default \"cli\")\n"
               "  --state-dir DIR      the SDK's SQLite state and the line history\n"
               "                       (default $XDG_STATE_HOME/mqchat-cli or\n"
               "                       ~/.local/state/mqchat-cli)\n"
               "  --script             commands on stdin, events as JSON lines on stdout\n"
               "  --strict             exit 3 if a command failed, a request was refused\n"
               "                       or a send failed\n"
               "  --history N          messages /open shows (default 20)\n"
               "  --wait-timeout MS    default bound of wait-* and of the drain at EOF\n"
               "                       (default 10000)\n"
               "Type /help in the client for the commands (cli/README.md).\n");
}

int main(int argc, char **argv)
{
    mqchat_options o;
    mqchat_options_init(&o);
    const char *dev_secret = NULL, *state_dir = NULL;
    char state_buf[PATH_MAX];
    S.device = "cli";
    S.history_n = 20;
    S.wait_timeout_ms = 10000;
    S.ttl = 3600;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        unsigned long long n;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--script") == 0) {
            S.script = 1;
        } else if (strcmp(a, "--strict") == 0) {
            S.strict = 1;
        } else if (strcmp(a, "--tls") == 0) {
            o.use_tls = 1;
        } else if (strcmp(a, "--mqtt5") == 0) {
            o.mqtt_version = 5;
        } else if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "mqchat-cli: unexpected argument \"%s\" (--help)\n", a);
            return 2;
        } else if (!v) {
            fprintf(stderr, "mqchat-cli: %s needs a value (--help)\n", a);
            return 2;
        } else {
            i++;
            if (strcmp(a, "--host") == 0)
                o.host = v;
            else if (strcmp(a, "--port") == 0 && parse_uint(v, 65535, &n) == 0 && n)
                o.port = (int)n;
            else if (strcmp(a, "--user") == 0)
                S.user = v;
            else if (strcmp(a, "--device") == 0)
                S.device = v;
            else if (strcmp(a, "--token") == 0)
                S.token = v;
            else if (strcmp(a, "--token-file") == 0)
                S.token_file = v;
            else if (strcmp(a, "--dev-secret-file") == 0)
                dev_secret = v;
            else if (strcmp(a, "--iss") == 0)
                S.iss = v;
            else if (strcmp(a, "--aud") == 0)
                S.aud = v;
            else if (strcmp(a, "--ttl") == 0 && parse_uint(v, 10LL * 366 * 86400, &n) == 0 && n)
                S.ttl = (long long)n;
            else if (strcmp(a, "--state-dir") == 0)
                state_dir = v;
            else if (strcmp(a, "--cafile") == 0)
                o.ca_file = v;
            else if (strcmp(a, "--prefix") == 0)
                o.topic_prefix = v;
            else if (strcmp(a, "--history") == 0 && parse_uint(v, 1000, &n) == 0)
                S.history_n = (unsigned)n;
            else if (strcmp(a, "--wait-timeout") == 0 && parse_uint(v, 86400000, &n) == 0)
                S.wait_timeout_ms = (int)n;
            else {
                fprintf(stderr, "mqchat-cli: bad option %s %s (--help)\n", a, v);
                return 2;
            }
        }
    }
    if (!S.user) {
        fprintf(stderr, "mqchat-cli: --user is required (--help)\n");
        return 2;
    }
    if (!mqc_id_valid(MQC_ID_USER, S.user) || !mqc_id_valid(MQC_ID_USER, S.device)) {
        fprintf(stderr, "mqchat-cli: user and device are 1..%d characters of [A-Za-z0-9._-]\n",
                MQJWT_ID_MAX);
        return 2;
    }
    if (!!S.token + !!S.token_file + !!dev_secret != 1) {
        fprintf(stderr, "mqchat-cli: give exactly one of --token, --token-file and "
                        "--dev-secret-file\n");
        return 2;
    }
    if ((S.iss || S.aud) && !dev_secret) {
        fprintf(stderr, "mqchat-cli: --iss and --aud go with --dev-secret-file\n");
        return 2;
    }
    if (o.ca_file && !o.use_tls) {
        fprintf(stderr, "mqchat-cli: --cafile goes with --tls\n");
        return 2;
    }
    if (dev_secret) {
        char *err = NULL;
        int rc = mqjwt_load_secret_file(dev_secret, &S.secret, &S.secret_len, &err);
        if (rc != MQJWT_OK) {
            fprintf(stderr, "mqchat-cli: %s\n", err ? err : mqjwt_strerror(rc));
            free(err);
            return 1;
        }
        if (S.secret_len < MQJWT_HS256_MIN_SECRET_LEN) {
            fprintf(stderr, "mqchat-cli: the dev secret has %zu bytes; at least %d are needed\n",
                    S.secret_len, MQJWT_HS256_MIN_SECRET_LEN);
            mqjwt_secret_free(S.secret, S.secret_len);
            return 2;
        }
        char probe[4096];
        if (mint(probe, sizeof(probe))) {
            fprintf(stderr, "mqchat-cli: cannot mint a token\n");
            mqjwt_secret_free(S.secret, S.secret_len);
            return 1;
        }
    }
    if (!state_dir) {
        const char *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
        int w = xdg && xdg[0] ? snprintf(state_buf, sizeof(state_buf), "%s/mqchat-cli", xdg)
                : home ? snprintf(state_buf, sizeof(state_buf), "%s/.local/state/mqchat-cli", home)
                       : -1;
        if (w < 0 || w >= (int)sizeof(state_buf)) {
            fprintf(stderr, "mqchat-cli: no $HOME: give --state-dir\n");
            mqjwt_secret_free(S.secret, S.secret_len);
            return 2;
        }
        state_dir = state_buf;
    }
    if (mkdirs(state_dir)) {
        fprintf(stderr, "mqchat-cli: cannot create %s: %s\n", state_dir, strerror(errno));
        mqjwt_secret_free(S.secret, S.secret_len);
        return 1;
    }

    o.user = S.user;
    o.device = S.device;
    o.state_dir = state_dir;
    o.token = token_fn;
    o.poll_mode = 1;
    o.backoff_min_ms = 200;
    o.backoff_max_ms = 10000;
    char *err = NULL;
    S.c = mqchat_new(&o, &err);
    if (!S.c) {
        fprintf(stderr, "mqchat-cli: %s\n", err ? err : "cannot start the SDK");
        free(err);
        mqjwt_secret_free(S.secret, S.secret_len);
        return 1;
    }

    S.rl = !S.script && isatty(0) && isatty(1);
    if (S.rl) setlocale(LC_CTYPE, ""); /* readline: multibyte input in a UTF-8 terminal */
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGWINCH, &sa, NULL);
    set_prompt();
    if (S.rl) {
        rl_catch_signals = 0;
        rl_catch_sigwinch = 0;
        rl_readline_name = "mqchat-cli";
        using_history();
        if (asprintf(&S.history_file, "%s/history", state_dir) > 0) {
            read_history(S.history_file);
            stifle_history(1000);
        } else {
            S.history_file = NULL;
        }
        say("mqchat-cli: %s:%s on %s:%d (/help for commands)", S.user, S.device,
            o.host ? o.host : "127.0.0.1",
            o.port      ? o.port
            : o.use_tls ? 8883
                        : 1883);
        rl_callback_handler_install(S.prompt, on_rl_line);
        S.rl_active = 1;
    } else if (!S.script) {
        say("mqchat-cli: %s:%s (/help for commands)", S.user, S.device);
    }
    if (mqchat_connect(S.c) != MQCHAT_OK) {
        long n = S.n;
        S.n = 0;
        cmd_error("connect", "mqchat_connect failed");
        S.n = n;
    }

    buf in = {0}; /* scripted / non-terminal input not run yet */
    int status = 0, skipping = 0, drained = 0;
    for (;;) {
        /* Run what can run: the queued input lines, while no wait holds. */
        while (!S.rl && !S.quit && S.wait != W_DRAIN && wait_check() == 1) {
            char *nl = in.n ? memchr(in.p, '\n', in.n) : NULL;
            if (!nl) break;
            *nl = 0;
            size_t used = (size_t)(nl - in.p) + 1;
            if (!skipping) {
                char *l = strdup(in.p);
                if (l) line(l);
                free(l);
            }
            skipping = 0;
            memmove(in.p, in.p + used, in.n - used);
            in.n -= used;
        }
        if (S.rl && S.wait != W_NONE) wait_check();
        if ((S.eof || S.quit) && S.wait == W_NONE) {
            if (S.rl || drained) break;
            /* scripted or piped: drain (bounded), once */
            drained = 1;
            start_wait(W_DRAIN, "eof", NULL, NULL);
            if (S.wait != W_DRAIN) break;
        }
        if (S.wait == W_DRAIN) {
            int w = wait_check();
            if (w == 1) break;
            if (w == -1) {
                status = 1;
                break;
            }
        }

        /* While a wait holds with a line queued, stdin is left unread (the
         * script waits in the pipe, not in memory). */
        int want_in =
            !S.eof && !S.quit && (S.rl || S.wait == W_NONE || !in.n || !memchr(in.p, '\n', in.n));
        struct pollfd pf[2] = {{.fd = want_in ? 0 : -1, .events = POLLIN},
                               {.fd = mqchat_fd(S.c), .events = POLLIN}};
        int timeout = -1;
        if (S.wait != W_NONE) {
            int64_t left = S.wait_deadline - now_ms();
            timeout = left < 0 ? 0 : left > 1000 ? 1000 : (int)left;
            if (S.wait == W_SENT || S.wait == W_DRAIN) timeout = timeout > 100 ? 100 : timeout;
        }
        int r = poll(pf, 2, timeout);
        if (r < 0 && errno != EINTR) break;
        if (got_sigwinch) {
            got_sigwinch = 0;
            if (S.rl_active) rl_resize_terminal();
        }
        if (got_sigint) {
            got_sigint = 0;
            if (!S.rl_active) { /* scripted / piped: Ctrl-C leaves at once */
                status = 130;
                break;
            }
            rl_replace_line("", 0);
            rl_crlf();
            rl_on_new_line();
            rl_redisplay();
        }
        if (r <= 0) continue;
        if (pf[1].revents & POLLIN) drain_events();
        if (pf[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            if (S.rl) {
                rl_callback_read_char();
                if (S.rl_active && S.open[0] && rl_end > 0 &&
                    now_ms() - S.last_typing_ms >= TYPING_EVERY_MS && S.connected) {
                    S.last_typing_ms = now_ms();
                    mqchat_typing(S.c, S.open, 1);
                }
                continue;
            }
            if (buf_grow(&in, 65536)) break;
            ssize_t n = read(0, in.p + in.n, 65536);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                S.eof = 1;
                if (in.n && !skipping) { /* a last line without its newline */
                    buf_add(&in, "\n", 1);
                }
                continue;
            }
            in.n += (size_t)n;
            in.p[in.n] = 0;
            if (in.n > LINE_MAX_BYTES && !memchr(in.p, '\n', in.n)) {
                if (!skipping) { /* one error line for one long line */
                    S.n++;
                    cmd_error("?", "line longer than %d bytes: dropped", LINE_MAX_BYTES);
                }
                in.n = 0;
                skipping = 1; /* up to the next newline */
            }
        }
    }
    buf_free(&in);
    if (S.rl_active) rl_callback_handler_remove();
    if (S.history_file) {
        write_history(S.history_file);
        free(S.history_file);
    }
    if (!S.script) {
        int ob = mqchat_outbox_count(S.c);
        if (ob > 0)
            fprintf(stderr,
                    "mqchat-cli: %d message(s) still in the outbox; "
                    "they go out at the next start\n",
                    ob);
    }
    mqchat_free(S.c);
    for (size_t i = 0; i < S.n_known; i++)
        free(S.known[i].conv);
    free(S.known);
    free(S.pend);
    mqjwt_secret_free(S.secret, S.secret_len);
    if (S.strict && S.failures && status == 0) status = 3;
    return status;
}
