/* mqstore-demo — a guided tour of the store, run by hand.
 *
 * Opens (or creates) a store in DIR in sync mode, makes a 1:1 conversation
 * and a group, sends a few messages (waiting for each to be durable, as the
 * broker waits before its ACK), retries one send to show dedup, then syncs
 * each user's inbox from its device cursor, acks it and trims. Run it twice
 * to see seqs continue where the last run stopped.
 *
 * Usage: mqstore-demo DIR
 */
#include "mqstore.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static int check(mqstore_err e, const char *what)
{
    if (e == MQSTORE_OK || e == MQSTORE_ERR_EXISTS) return 0;
    fprintf(stderr, "mqstore-demo: %s: %s\n", what, mqstore_strerror(e));
    return 1;
}

static void wait_durable(mqstore *s, uint64_t ticket)
{
    for (int i = 0; i < 5000 && mqstore_durable(s) < ticket; i++) {
        struct timespec ts = {0, 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static int send(mqstore *s, const char *conv, const char *user, const char *device,
                const char *cmid, const char *text)
{
    mqstore_append a = {.conv = conv,
                        .sender_user = user,
                        .sender_device = device,
                        .client_msg_id = cmid,
                        .kind = 1,
                        .payload = text,
                        .payload_len = strlen(text)};
    mqstore_result r;
    if (check(mqstore_append_msg(s, &a, &r), "append")) return 1;
    wait_durable(s, r.ticket);
    printf("  %-6s -> %-14s seq %-3llu %s%s\n", user, conv, (unsigned long long)r.seq, text,
           r.duplicate ? "   (retry: same seq, nothing stored)" : "");
    mqstore_result_clear(&r);
    return 0;
}

static int sync_user(mqstore *s, const char *user, const char *device)
{
    uint64_t cursor;
    if (check(mqstore_cursor_get(s, user, device, &cursor), "cursor")) return 1;
    mqstore_page p;
    if (check(mqstore_inbox_read(s, user, cursor, 100, 1 << 20, &p), "inbox")) return 1;
    printf("  %s/%s syncs after inbox seq %llu: %zu new\n", user, device,
           (unsigned long long)cursor, p.n);
    for (size_t i = 0; i < p.n; i++) {
        mqstore_msg *m = &p.items[i];
        printf("    inbox %-3llu %-14s seq %-3llu from %-6s %.*s\n",
               (unsigned long long)m->inbox_seq, m->conv, (unsigned long long)m->seq,
               m->sender_user, (int)m->payload_len, (const char *)m->payload);
    }
    uint64_t last = p.n ? p.items[p.n - 1].inbox_seq : cursor, trimmed;
    mqstore_page_free(&p);
    if (check(mqstore_cursor_ack(s, user, device, last, NULL), "cursor ack")) return 1;
    if (check(mqstore_inbox_trim(s, user, &trimmed), "trim")) return 1;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: mqstore-demo DIR\n");
        return 2;
    }
    mqstore_options opt;
    mqstore_options_init(&opt);
    mqstore *s;
    char *err = NULL;
    if (mqstore_open(argv[1], &opt, &s, &err) != MQSTORE_OK) {
        fprintf(stderr, "mqstore-demo: %s\n", err ? err : "cannot open");
        return 1;
    }
    const char *pair[] = {"alice", "bob"};
    const char *group[] = {"alice", "bob", "carol"};
    mqstore_role roles[] = {MQSTORE_ROLE_OWNER, MQSTORE_ROLE_MEMBER, MQSTORE_ROLE_MEMBER};
    mqstore_event ev = {.actor_user = "alice", .kind = 2, .payload = "created", .payload_len = 7};
    mqstore_result r;
    int rc = check(mqstore_conv_create(s, "d:alice:bob", pair, NULL, 2, NULL, &r), "create");
    mqstore_result_clear(&r);
    rc |= check(mqstore_conv_create(s, "g:demo", group, roles, 3, &ev, &r), "create group");
    mqstore_result_clear(&r);

    char id[64];
    snprintf(id, sizeof(id), "m%lld", (long long)time(NULL));
    printf("sending (sync mode: each send waits for its group-committed fsync)\n");
    rc |= send(s, "d:alice:bob", "alice", "phone", id, "hi bob");
    rc |= send(s, "d:alice:bob", "alice", "phone", id, "hi bob");
    rc |= send(s, "g:demo", "bob", "laptop", NULL, "hello group");
    rc |= send(s, "g:demo", "carol", "phone", NULL, "hey both");
    printf("syncing every device from its cursor\n");
    rc |= sync_user(s, "alice", "phone");
    rc |= sync_user(s, "bob", "laptop");
    rc |= sync_user(s, "carol", "phone");
    mqstore_free(s);
    return rc;
}
