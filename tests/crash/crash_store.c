/* crash_store — kill -9 the store under load, many times, and check what
 * survived.
 *
 * The parent forks a child that opens the store, creates a few conversations
 * (idempotently) and appends messages (and push jobs) in a tight loop. The
 * child reports a write to the parent through a pipe only once
 * mqstore_durable() >= the write's ticket. The parent kill -9s the child at a
 * random moment, starts a new child on the same store, and so on. At the end
 * the parent opens the store itself and checks, through the public API only:
 *
 *   - every reported write is present with the same seq, sender inbox_seq
 *     and payload;
 *   - per conversation, seqs are contiguous 1..head (no holes), in write order;
 *   - every message has an inbox entry for every member and nothing else
 *     (no half-applied batch), and its push jobs are all there;
 *   - per user, inbox seqs are contiguous 1..inbox head, in write order;
 *   - outbox job ids ascend in write order (also across restarts);
 *   - re-appending every message with its dedup key returns duplicate = 1
 *     with the same seq (so the dedup key went in with the message).
 *
 * Phase 1 runs in MQSTORE_DURABILITY_SYNC mode (syncer thread), phase 2,
 * shorter, in MQSTORE_DURABILITY_OS mode, each on its own store.
 *
 * Environment:
 *   MQCHAT_CRASH_SEED=N    replay a run (the seed is printed at the start)
 *   MQCHAT_CRASH_ROUNDS=N  kill rounds of the SYNC phase (default 25; the OS
 *                          phase runs 2/5 of that)
 *   MQCHAT_CRASH_KEEP=1    keep the store directory (path printed)
 *
 * Note: kill -9 does not drop the OS page cache, so this test checks the
 * process-crash promise of both modes; it cannot tell an fsync from a
 * write(). Power loss is not simulated.
 */
#include "mqstore.h"
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KIND_MSG 1u
#define KIND_EVENT 2u
#define N_USERS 20
#define MAX_MEMBERS 20
#define MAX_JOBS 2
#define TIME_BUDGET_S 40 /* no new round starts after this; checking follows */
#define WATCHDOG_S 58    /* hard stop */

#define MAGIC_REPORT 0x4d515250u /* "MQRP" */
#define MAGIC_READY 0x4d515244u  /* "MQRD" */

typedef struct conv_def {
    const char *id;
    unsigned n;
    unsigned members[MAX_MEMBERS];
    int with_event; /* created with a first event (seq 1) */
} conv_def;

static const conv_def CONVS[] = {
    {"dm.0", 2, {0, 1}, 0},
    {"dm.1", 2, {0, 2}, 0},
    {"dm.2", 2, {3, 4}, 0},
    {"grp.0", 20, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19}, 1},
};
#define N_CONVS (sizeof CONVS / sizeof CONVS[0])
#define GROUP_EVENT_PAYLOAD "E|create|grp.0"

/* One write the child saw become durable. 32 bytes: a pipe write of it is
 * atomic. */
typedef struct report {
    uint32_t magic;
    uint16_t conv;
    uint16_t sender;
    uint32_t round;
    uint32_t n;
    uint64_t seq;
    uint64_t inbox_seq;
} report;

/* ---- small helpers --------------------------------------------------------- */

static uint64_t splitmix(uint64_t *st)
{
    uint64_t z = (*st += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t mix2(uint64_t a, uint64_t b)
{
    uint64_t st = a * 0x100000001b3ull ^ (b + 0x51ed27u);
    splitmix(&st);
    return splitmix(&st);
}

static void user_name(char *buf, size_t cap, unsigned u)
{
    snprintf(buf, cap, "u%02u", u);
}

static void device_name(char *buf, size_t cap, unsigned u)
{
    snprintf(buf, cap, "dev.%02u", u);
}

/* The payload of message (round, n) in conversation `conv` from `sender`:
 * a readable header that names them, then 0..199 pseudo-random bytes derived
 * from (round, n). The checker regenerates it from the stored fields. */
static size_t make_payload(uint8_t *buf, size_t cap, const char *conv, uint32_t round, uint32_t n,
                           unsigned sender)
{
    int h =
        snprintf((char *)buf, cap, "P|%s|m%" PRIu32 ".%" PRIu32 "|u%02u|", conv, round, n, sender);
    uint64_t st = mix2(round, n);
    size_t fill = (size_t)(splitmix(&st) % 200);
    for (size_t i = 0; i < fill; i++)
        buf[(size_t)h + i] = (uint8_t)splitmix(&st);
    return (size_t)h + fill;
}

/* How many push jobs message (round, n) carries: 0 (4 in 6), 1 or 2. */
static unsigned job_count(uint32_t round, uint32_t n)
{
    unsigned r = (unsigned)(mix2(round ^ 0xabcdu, n) % 6);
    return r < 4 ? 0 : r - 3;
}

static size_t make_job(uint8_t *buf, size_t cap, unsigned conv, uint32_t round, uint32_t n,
                       unsigned j)
{
    int h = snprintf((char *)buf, cap, "J|%u|%" PRIu32 "|%" PRIu32 "|%u|", conv, round, n, j);
    uint64_t st = mix2(round + 77u * j, n ^ 0x5555u);
    size_t fill = (size_t)(splitmix(&st) % 40);
    for (size_t i = 0; i < fill; i++)
        buf[(size_t)h + i] = (uint8_t)splitmix(&st);
    return (size_t)h + fill;
}

static int conv_has(unsigned c, unsigned u)
{
    for (unsigned i = 0; i < CONVS[c].n; i++)
        if (CONVS[c].members[i] == u) return 1;
    return 0;
}

static uint32_t conv_mask(unsigned c)
{
    uint32_t m = 0;
    for (unsigned i = 0; i < CONVS[c].n; i++)
        m |= 1u << CONVS[c].members[i];
    return m;
}

static int conv_index(const char *id)
{
    for (unsigned c = 0; c < N_CONVS; c++)
        if (strcmp(CONVS[c].id, id) == 0) return (int)c;
    return -1;
}

/* ---- violations ------------------------------------------------------------ */

static unsigned long g_violations;

static void violation(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void violation(const char *fmt, ...)
{
    g_violations++;
    if (g_violations > 40) {
        if (g_violations == 41) fprintf(stderr, "crash_store: (further violations not shown)\n");
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "crash_store: VIOLATION: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ---- the child ------------------------------------------------------------- */

static int write_all(int fd, const void *p, size_t len)
{
    const char *c = p;
    while (len > 0) {
        ssize_t w = write(fd, c, len);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        c += w;
        len -= (size_t)w;
    }
    return 0;
}

typedef struct pending {
    report r;
    uint64_t ticket;
} pending;

static void child_fail(const char *what, mqstore_err e, const char *detail)
{
    fprintf(stderr, "crash_store child: %s: %s%s%s\n", what, mqstore_strerror(e),
            detail ? ": " : "", detail ? detail : "");
    _exit(11);
}

static void child_create_convs(mqstore *s)
{
    char names[MAX_MEMBERS][16];
    const char *members[MAX_MEMBERS];
    mqstore_role roles[MAX_MEMBERS];
    for (unsigned c = 0; c < N_CONVS; c++) {
        const conv_def *cd = &CONVS[c];
        for (unsigned i = 0; i < cd->n; i++) {
            user_name(names[i], sizeof names[i], cd->members[i]);
            members[i] = names[i];
            roles[i] = i == 0 ? MQSTORE_ROLE_OWNER : MQSTORE_ROLE_MEMBER;
        }
        mqstore_event ev = {.actor_user = members[0],
                            .actor_device = NULL,
                            .kind = KIND_EVENT,
                            .payload = GROUP_EVENT_PAYLOAD,
                            .payload_len = strlen(GROUP_EVENT_PAYLOAD)};
        mqstore_result res;
        memset(&res, 0, sizeof res);
        mqstore_err e = mqstore_conv_create(s, cd->id, members, roles, cd->n,
                                            cd->with_event ? &ev : NULL, &res);
        if (e == MQSTORE_OK) mqstore_result_clear(&res);
        if (e != MQSTORE_OK && e != MQSTORE_ERR_EXISTS) child_fail("conv_create", e, cd->id);
    }
}

/* Never returns. */
static void child_main(const char *dir, mqstore_durability dur, uint32_t round, uint64_t seed,
                       int wfd, pid_t parent)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(20);

    mqstore_options opt;
    mqstore_options_init(&opt);
    opt.durability = dur;
    opt.sync_driver = MQSTORE_SYNC_THREAD;
    mqstore *s = NULL;
    char *em = NULL;
    mqstore_err e = mqstore_open(dir, &opt, &s, &em);
    if (e != MQSTORE_OK) child_fail("open", e, em);

    child_create_convs(s);

    report ready = {.magic = MAGIC_READY, .round = round};
    if (write_all(wfd, &ready, sizeof ready) != 0) _exit(12);

    uint64_t rng = seed ^ (0x1234567ull * round);
    size_t cap = 4096, head = 0, tail = 0;
    pending *q = malloc(cap * sizeof *q);
    if (!q) _exit(13);
    char sender_name[16], device[16];
    char cid[32];
    uint8_t payload[512];
    uint8_t jobbuf[MAX_JOBS][96];
    mqstore_blob jobs[MAX_JOBS];
    uint64_t t_start = tu_now_ns();

    for (uint32_t n = 1;; n++) {
        uint64_t r = splitmix(&rng);
        unsigned c = (r % 10) < 6 ? (unsigned)((r >> 8) % 3) : 3; /* 60% 1:1, 40% group */
        const conv_def *cd = &CONVS[c];
        unsigned sender = cd->members[(r >> 20) % cd->n];
        user_name(sender_name, sizeof sender_name, sender);
        device_name(device, sizeof device, sender);
        snprintf(cid, sizeof cid, "m%" PRIu32 ".%" PRIu32, round, n);
        size_t plen = make_payload(payload, sizeof payload, cd->id, round, n, sender);
        unsigned nj = job_count(round, n);
        for (unsigned j = 0; j < nj; j++) {
            jobs[j].len = make_job(jobbuf[j], sizeof jobbuf[j], c, round, n, j);
            jobs[j].data = jobbuf[j];
        }
        mqstore_append a = {.conv = cd->id,
                            .sender_user = sender_name,
                            .sender_device = device,
                            .client_msg_id = cid,
                            .kind = KIND_MSG,
                            .payload = payload,
                            .payload_len = plen,
                            .jobs = nj ? jobs : NULL,
                            .n_jobs = nj};
        mqstore_result res;
        memset(&res, 0, sizeof res);
        e = mqstore_append_msg(s, &a, &res);
        if (e != MQSTORE_OK) child_fail("append_msg", e, cid);
        if (res.duplicate) {
            fprintf(stderr, "crash_store child: append %s: duplicate=1 for a new id\n", cid);
            _exit(14);
        }
        if (res.n_fanout != cd->n) {
            fprintf(stderr, "crash_store child: append %s: n_fanout %zu, conversation has %u\n",
                    cid, res.n_fanout, cd->n);
            _exit(15);
        }
        if (tail == cap) {
            if (head > 0) {
                memmove(q, q + head, (tail - head) * sizeof *q);
                tail -= head;
                head = 0;
            } else {
                cap *= 2;
                pending *nq = realloc(q, cap * sizeof *nq);
                if (!nq) _exit(13);
                q = nq;
            }
        }
        q[tail].r = (report){.magic = MAGIC_REPORT,
                             .conv = (uint16_t)c,
                             .sender = (uint16_t)sender,
                             .round = round,
                             .n = n,
                             .seq = res.seq,
                             .inbox_seq = res.inbox_seq};
        q[tail].ticket = res.ticket;
        tail++;
        mqstore_result_clear(&res);

        /* Report only what is durable. */
        uint64_t d = mqstore_durable(s);
        while (head < tail && q[head].ticket <= d) {
            if (write_all(wfd, &q[head].r, sizeof q[head].r) != 0) _exit(12);
            head++;
        }
        /* The parent always kills us well before this. */
        if ((n & 1023) == 0 && tu_now_ns() - t_start > 30 * TU_SEC_NS) {
            fprintf(stderr, "crash_store child: still running after 30 s\n");
            _exit(16);
        }
    }
}

/* ---- the parent: kill rounds ------------------------------------------------ */

typedef struct phase {
    const char *name;
    mqstore_durability dur;
    char dir[PATH_MAX];
    unsigned rounds_planned;
    unsigned rounds;
    unsigned killed_before_ready;
    report *reps;
    size_t nreps, caprep;
    size_t checked, messages, events, jobs, inbox_entries, dedup_checked;
} phase;

static volatile pid_t g_child = -1;
static char g_topdir[64];

static void watchdog(int sig)
{
    (void)sig;
    static const char msg[] = "crash_store: FAIL: watchdog: test exceeded its time bound\n";
    if (g_child > 0) kill(g_child, SIGKILL);
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    _exit(3);
}

static void add_report(phase *ph, const report *r)
{
    if (ph->nreps == ph->caprep) {
        ph->caprep = ph->caprep ? ph->caprep * 2 : 4096;
        ph->reps = realloc(ph->reps, ph->caprep * sizeof *ph->reps);
        if (!ph->reps) {
            fprintf(stderr, "crash_store: out of memory\n");
            exit(2);
        }
    }
    ph->reps[ph->nreps++] = *r;
}

/* One round: fork a child, kill -9 it after a random delay, collect its
 * reports. Returns 0, or -1 if the round could not run (fatal). */
static int run_round(phase *ph, uint32_t round, uint64_t seed, uint64_t *rng)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        perror("crash_store: pipe2");
        return -1;
    }
    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        perror("crash_store: fork");
        return -1;
    }
    if (pid == 0) {
        close(fds[0]);
        child_main(ph->dir, ph->dur, round, seed, fds[1], parent);
        _exit(0);
    }
    g_child = pid;
    close(fds[1]);

    /* One round in five measures the delay from the fork, so the kill may
     * land while the store opens (WAL recovery) or creates conversations. */
    int from_fork = splitmix(rng) % 5 == 0;
    uint64_t delay_ms = from_fork ? splitmix(rng) % 60 : 5 + splitmix(rng) % 146;
    uint64_t t0 = tu_now_ns();
    uint64_t deadline = t0 + (from_fork ? delay_ms * 1000000u : 10 * TU_SEC_NS);
    int ready = 0, killed = 0, eof = 0;
    uint8_t buf[4096];
    size_t have = 0;
    while (!eof) {
        int timeout = 5000;
        if (!killed) {
            uint64_t now = tu_now_ns();
            if (now >= deadline) {
                if (!from_fork && !ready)
                    violation("%s round %u: child did not open the store within 10 s", ph->name,
                              round);
                kill(pid, SIGKILL);
                killed = 1;
            } else {
                timeout = (int)((deadline - now + 999999u) / 1000000u);
            }
        }
        struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
        int pr = poll(&pfd, 1, timeout);
        if (pr < 0 && errno != EINTR) {
            perror("crash_store: poll");
            break;
        }
        if (pr == 0) {
            if (killed) {
                violation("%s round %u: pipe not closed 5 s after kill -9", ph->name, round);
                break;
            }
            continue;
        }
        if (pr < 0) continue;
        ssize_t r = read(fds[0], buf + have, sizeof buf - have);
        if (r < 0) {
            if (errno == EINTR) continue;
            perror("crash_store: read");
            break;
        }
        if (r == 0) {
            eof = 1;
            break;
        }
        have += (size_t)r;
        size_t off = 0;
        while (have - off >= sizeof(report)) {
            report rep;
            memcpy(&rep, buf + off, sizeof rep);
            off += sizeof rep;
            if (rep.magic == MAGIC_READY) {
                ready = 1;
                if (!from_fork) deadline = tu_now_ns() + delay_ms * 1000000u;
            } else if (rep.magic == MAGIC_REPORT && rep.round == round && rep.conv < N_CONVS) {
                add_report(ph, &rep);
            } else {
                violation("%s round %u: garbled report on the pipe", ph->name, round);
            }
        }
        memmove(buf, buf + off, have - off);
        have -= off;
    }
    if (have != 0) violation("%s round %u: partial report on the pipe", ph->name, round);
    close(fds[0]);

    int st = 0;
    if (!killed) kill(pid, SIGKILL); /* it closed the pipe on its own: make sure */
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    g_child = -1;
    if (WIFEXITED(st)) {
        violation("%s round %u: child exited on its own with status %d (see its message above)",
                  ph->name, round, WEXITSTATUS(st));
    } else if (WIFSIGNALED(st) && WTERMSIG(st) != SIGKILL) {
        violation("%s round %u: child died of signal %d", ph->name, round, WTERMSIG(st));
    }
    if (!ready) ph->killed_before_ready++;
    ph->rounds++;
    return 0;
}

/* ---- the parent: checking --------------------------------------------------- */

typedef struct msginfo {
    uint32_t round, n; /* 0, 0 for the creation event */
    uint8_t present;
    uint8_t is_event;
    uint8_t sender;
    uint8_t jobs_mask;
    uint32_t inbox_mask;
    uint64_t sender_inbox_seq;
} msginfo;

typedef struct hent {
    uint64_t key; /* round << 32 | n; 0 = empty */
    uint64_t seq;
    uint32_t conv;
} hent;

typedef struct htab {
    hent *t;
    size_t cap;
} htab;

static uint64_t mkey(uint32_t round, uint32_t n)
{
    return (uint64_t)round << 32 | n;
}

static hent *hfind(htab *h, uint64_t key, int insert)
{
    size_t i = (size_t)mix2(key, 7) & (h->cap - 1);
    for (;;) {
        if (h->t[i].key == key) return &h->t[i];
        if (h->t[i].key == 0) {
            if (!insert) return NULL;
            h->t[i].key = key;
            return &h->t[i];
        }
        i = (i + 1) & (h->cap - 1);
    }
}

/* Check one message read from the conversation log and record it. */
static void check_log_msg(phase *ph, unsigned c, const mqstore_msg *m, msginfo *info)
{
    const conv_def *cd = &CONVS[c];
    if (strcmp(m->conv, cd->id) != 0)
        violation("%s: history of %s returned a message of conversation '%s'", ph->name, cd->id,
                  m->conv);
    info->present = 1;
    if (m->kind == KIND_EVENT) {
        info->is_event = 1;
        ph->events++;
        if (!cd->with_event || m->seq != 1)
            violation("%s: %s seq %" PRIu64 ": unexpected event", ph->name, cd->id, m->seq);
        if (m->payload_len != strlen(GROUP_EVENT_PAYLOAD) ||
            memcmp(m->payload, GROUP_EVENT_PAYLOAD, m->payload_len) != 0)
            violation("%s: %s seq %" PRIu64 ": creation event payload differs", ph->name, cd->id,
                      m->seq);
        return;
    }
    ph->messages++;
    if (m->kind != KIND_MSG)
        violation("%s: %s seq %" PRIu64 ": kind %" PRIu32 ", expected %u", ph->name, cd->id, m->seq,
                  m->kind, KIND_MSG);
    uint32_t round = 0, n = 0;
    unsigned sender = 0;
    int used = 0;
    if (sscanf(m->client_msg_id, "m%" SCNu32 ".%" SCNu32 "%n", &round, &n, &used) != 2 ||
        m->client_msg_id[used] != '\0' || round == 0 || n == 0) {
        violation("%s: %s seq %" PRIu64 ": client_msg_id '%s' is not one of ours", ph->name, cd->id,
                  m->seq, m->client_msg_id);
        return;
    }
    if (sscanf(m->sender_user, "u%u%n", &sender, &used) != 1 || m->sender_user[used] != '\0' ||
        sender >= N_USERS || !conv_has(c, sender)) {
        violation("%s: %s seq %" PRIu64 ": sender '%s' is not a member", ph->name, cd->id, m->seq,
                  m->sender_user);
        return;
    }
    char dev[16];
    device_name(dev, sizeof dev, sender);
    if (strcmp(m->sender_device, dev) != 0)
        violation("%s: %s seq %" PRIu64 ": sender_device '%s', expected '%s'", ph->name, cd->id,
                  m->seq, m->sender_device, dev);
    uint8_t want[512];
    size_t wlen = make_payload(want, sizeof want, cd->id, round, n, sender);
    if (m->payload_len != wlen || memcmp(m->payload, want, wlen) != 0)
        violation("%s: %s seq %" PRIu64 " (%s): payload differs (%zu bytes, expected %zu)",
                  ph->name, cd->id, m->seq, m->client_msg_id, m->payload_len, wlen);
    info->round = round;
    info->n = n;
    info->sender = (uint8_t)sender;
}

static void check_members(phase *ph, mqstore *s, unsigned c)
{
    mqstore_member_list ml;
    memset(&ml, 0, sizeof ml);
    mqstore_err e = mqstore_members_list(s, CONVS[c].id, &ml);
    if (e != MQSTORE_OK) {
        violation("%s: members_list %s: %s", ph->name, CONVS[c].id, mqstore_strerror(e));
        return;
    }
    uint32_t got = 0;
    for (size_t i = 0; i < ml.n; i++) {
        unsigned u = 0;
        int used = 0;
        if (sscanf(ml.items[i].user, "u%u%n", &u, &used) != 1 || ml.items[i].user[used] != '\0' ||
            u >= N_USERS || (got & (1u << u)))
            violation("%s: %s: unexpected member '%s'", ph->name, CONVS[c].id, ml.items[i].user);
        else
            got |= 1u << u;
    }
    if (got != conv_mask(c) || ml.n != CONVS[c].n)
        violation("%s: %s: member set differs (%zu members, expected %u)", ph->name, CONVS[c].id,
                  ml.n, CONVS[c].n);
    mqstore_member_list_free(&ml);
}

static void check_phase(phase *ph)
{
    mqstore_options opt;
    mqstore_options_init(&opt);
    opt.durability = ph->dur;
    opt.sync_driver = MQSTORE_SYNC_THREAD;
    mqstore *s = NULL;
    char *em = NULL;
    mqstore_err e = mqstore_open(ph->dir, &opt, &s, &em);
    if (e != MQSTORE_OK) {
        violation("%s: final open: %s%s%s", ph->name, mqstore_strerror(e), em ? ": " : "",
                  em ? em : "");
        free(em);
        return;
    }

    msginfo *msgs[N_CONVS] = {0};
    uint64_t heads[N_CONVS] = {0};
    int exists[N_CONVS] = {0};
    size_t total = 0;

    /* 1. Conversation logs: contiguous 1..head, content as written. */
    for (unsigned c = 0; c < N_CONVS; c++) {
        const char *id = CONVS[c].id;
        e = MQSTORE_OK;
        exists[c] = mqstore_conv_exists(s, id, &e);
        if (e != MQSTORE_OK) violation("%s: conv_exists %s: %s", ph->name, id, mqstore_strerror(e));
        if (!exists[c]) continue;
        check_members(ph, s, c);
        e = mqstore_conv_head(s, id, &heads[c]);
        if (e != MQSTORE_OK) {
            violation("%s: conv_head %s: %s", ph->name, id, mqstore_strerror(e));
            heads[c] = 0;
        }
        msgs[c] = calloc(heads[c] + 1, sizeof(msginfo));
        if (!msgs[c]) {
            fprintf(stderr, "crash_store: out of memory\n");
            exit(2);
        }
        total += heads[c];
        uint64_t expect = heads[c], before = 0;
        while (expect > 0) {
            mqstore_page p;
            memset(&p, 0, sizeof p);
            e = mqstore_history_read(s, id, before, 1000, &p);
            if (e != MQSTORE_OK) {
                violation("%s: history_read %s before %" PRIu64 ": %s", ph->name, id, before,
                          mqstore_strerror(e));
                break;
            }
            if (p.n == 0) {
                violation("%s: %s: history ends before seq %" PRIu64 " (head %" PRIu64 "): hole",
                          ph->name, id, expect, heads[c]);
                mqstore_page_free(&p);
                break;
            }
            int bad = 0;
            for (size_t i = 0; i < p.n; i++) {
                const mqstore_msg *m = &p.items[i];
                if (m->seq != expect) {
                    violation("%s: %s: history gives seq %" PRIu64 " where %" PRIu64
                              " was expected (head %" PRIu64 "): hole or disorder",
                              ph->name, id, m->seq, expect, heads[c]);
                    bad = 1;
                    break;
                }
                check_log_msg(ph, c, m, &msgs[c][m->seq]);
                expect--;
            }
            before = p.items[p.n - 1].seq;
            mqstore_page_free(&p);
            if (bad) break;
        }
        /* Nothing beyond the head. */
        mqstore_page p;
        memset(&p, 0, sizeof p);
        e = mqstore_msg_get(s, id, heads[c] + 1, &p);
        if (e == MQSTORE_OK) {
            violation("%s: %s: a message exists at seq %" PRIu64 ", beyond head %" PRIu64, ph->name,
                      id, heads[c] + 1, heads[c]);
            mqstore_page_free(&p);
        } else if (e != MQSTORE_ERR_NOTFOUND) {
            violation("%s: msg_get %s %" PRIu64 ": %s, expected NOTFOUND", ph->name, id,
                      heads[c] + 1, mqstore_strerror(e));
        }
        /* Seq order is write order. */
        uint64_t last = 0;
        for (uint64_t q = 1; q <= heads[c]; q++) {
            const msginfo *mi = &msgs[c][q];
            if (!mi->present || mi->is_event || mi->round == 0) continue;
            uint64_t k = mkey(mi->round, mi->n);
            if (k <= last)
                violation("%s: %s seq %" PRIu64 " (m%" PRIu32 ".%" PRIu32
                          ") is ordered before an earlier write",
                          ph->name, id, q, mi->round, mi->n);
            last = k;
        }
    }
    for (size_t i = 0; i < ph->nreps; i++)
        if (!exists[ph->reps[i].conv]) {
            violation("%s: conversation %s is missing but had durable writes", ph->name,
                      CONVS[ph->reps[i].conv].id);
            break;
        }

    /* Index messages by client id; a client id twice is a dedup failure. */
    htab h = {0};
    h.cap = 1024;
    while (h.cap < 2 * total + 2)
        h.cap *= 2;
    h.t = calloc(h.cap, sizeof *h.t);
    if (!h.t) {
        fprintf(stderr, "crash_store: out of memory\n");
        exit(2);
    }
    for (unsigned c = 0; c < N_CONVS; c++)
        for (uint64_t q = 1; msgs[c] && q <= heads[c]; q++) {
            const msginfo *mi = &msgs[c][q];
            if (!mi->present || mi->is_event || mi->round == 0) continue;
            hent *he = hfind(&h, mkey(mi->round, mi->n), 1);
            if (he->seq != 0) {
                violation("%s: client id m%" PRIu32 ".%" PRIu32 " stored twice (%s %" PRIu64
                          " and %s %" PRIu64 ")",
                          ph->name, mi->round, mi->n, CONVS[he->conv].id, he->seq, CONVS[c].id, q);
                continue;
            }
            he->seq = q;
            he->conv = c;
        }

    /* 2. Inboxes: contiguous 1..inbox head, each entry points at a stored
     * message of a conversation the user belongs to, once per message. */
    for (unsigned u = 0; u < N_USERS; u++) {
        char user[16];
        user_name(user, sizeof user, u);
        uint64_t ih = 0;
        e = mqstore_inbox_head(s, user, &ih);
        if (e != MQSTORE_OK) {
            violation("%s: inbox_head %s: %s", ph->name, user, mqstore_strerror(e));
            continue;
        }
        uint64_t expect = 1, after = 0, lastkey = 0;
        for (;;) {
            mqstore_page p;
            memset(&p, 0, sizeof p);
            e = mqstore_inbox_read(s, user, after, 5000, 8u << 20, &p);
            if (e != MQSTORE_OK) {
                violation("%s: inbox_read %s after %" PRIu64 ": %s", ph->name, user, after,
                          mqstore_strerror(e));
                break;
            }
            for (size_t i = 0; i < p.n; i++) {
                const mqstore_msg *m = &p.items[i];
                ph->inbox_entries++;
                if (m->inbox_seq != expect) {
                    violation("%s: inbox %s: inbox_seq %" PRIu64 " where %" PRIu64
                              " was expected: hole or disorder",
                              ph->name, user, m->inbox_seq, expect);
                    expect = m->inbox_seq;
                }
                expect++;
                int c = conv_index(m->conv);
                if (c < 0) {
                    violation("%s: inbox %s #%" PRIu64 ": unknown conversation '%s'", ph->name,
                              user, m->inbox_seq, m->conv);
                    continue;
                }
                if (!conv_has((unsigned)c, u))
                    violation("%s: inbox %s #%" PRIu64 ": entry for %s, not a member", ph->name,
                              user, m->inbox_seq, m->conv);
                if (!exists[c] || m->seq == 0 || m->seq > heads[c]) {
                    violation("%s: inbox %s #%" PRIu64 ": points at %s seq %" PRIu64
                              ", which is not stored (head %" PRIu64 ")",
                              ph->name, user, m->inbox_seq, m->conv, m->seq, heads[c]);
                    continue;
                }
                msginfo *mi = &msgs[c][m->seq];
                if (!mi->present) continue; /* already reported as a hole */
                if (mi->inbox_mask & (1u << u))
                    violation("%s: inbox %s: two entries for %s seq %" PRIu64, ph->name, user,
                              m->conv, m->seq);
                mi->inbox_mask |= 1u << u;
                if (mi->is_event) continue;
                char cid[32];
                snprintf(cid, sizeof cid, "m%" PRIu32 ".%" PRIu32, mi->round, mi->n);
                if (strcmp(m->client_msg_id, cid) != 0 || m->kind != KIND_MSG)
                    violation("%s: inbox %s #%" PRIu64 ": %s seq %" PRIu64
                              " reads as '%s', the log has '%s'",
                              ph->name, user, m->inbox_seq, m->conv, m->seq, m->client_msg_id, cid);
                if (mi->sender == u) mi->sender_inbox_seq = m->inbox_seq;
                uint64_t k = mkey(mi->round, mi->n);
                if (k <= lastkey)
                    violation("%s: inbox %s #%" PRIu64 " (%s) is ordered before an earlier write",
                              ph->name, user, m->inbox_seq, cid);
                lastkey = k;
            }
            int more = p.more && p.n > 0;
            if (p.n > 0) after = p.items[p.n - 1].inbox_seq;
            mqstore_page_free(&p);
            if (!more) break;
        }
        if (expect - 1 != ih)
            violation("%s: inbox %s: entries end at %" PRIu64 ", inbox head is %" PRIu64, ph->name,
                      user, expect - 1, ih);
    }

    /* 3. All or nothing: every message has exactly its members' entries. */
    for (unsigned c = 0; c < N_CONVS; c++)
        for (uint64_t q = 1; msgs[c] && q <= heads[c]; q++) {
            const msginfo *mi = &msgs[c][q];
            if (mi->present && mi->inbox_mask != conv_mask(c))
                violation("%s: %s seq %" PRIu64 ": inbox entries for %d of %u members "
                          "(mask %#x, expected %#x): half-applied batch",
                          ph->name, CONVS[c].id, q, __builtin_popcount(mi->inbox_mask), CONVS[c].n,
                          mi->inbox_mask, conv_mask(c));
        }

    /* 4. Every reported (durable) write is there, as reported. */
    for (size_t i = 0; i < ph->nreps; i++) {
        const report *r = &ph->reps[i];
        ph->checked++;
        const char *id = CONVS[r->conv].id;
        if (r->seq == 0 || r->seq > heads[r->conv] || !msgs[r->conv]) {
            violation("%s: LOST: durable write m%" PRIu32 ".%" PRIu32 " (%s seq %" PRIu64
                      ") is missing (head %" PRIu64 ")",
                      ph->name, r->round, r->n, id, r->seq, heads[r->conv]);
            continue;
        }
        const msginfo *mi = &msgs[r->conv][r->seq];
        if (!mi->present || mi->round != r->round || mi->n != r->n) {
            violation("%s: durable write m%" PRIu32 ".%" PRIu32 " was %s seq %" PRIu64
                      ", that seq now holds m%" PRIu32 ".%" PRIu32,
                      ph->name, r->round, r->n, id, r->seq, mi->round, mi->n);
            continue;
        }
        if (mi->sender != r->sender)
            violation("%s: durable write m%" PRIu32 ".%" PRIu32 ": sender u%02u, reported u%02u",
                      ph->name, r->round, r->n, mi->sender, r->sender);
        if (mi->sender_inbox_seq != r->inbox_seq)
            violation("%s: durable write m%" PRIu32 ".%" PRIu32 ": sender inbox_seq %" PRIu64
                      ", reported %" PRIu64,
                      ph->name, r->round, r->n, mi->sender_inbox_seq, r->inbox_seq);
    }

    /* 5. Outbox: ids ascend in write order; jobs exactly those of stored
     * messages. */
    uint64_t after = 0, lastkey = 0;
    int first = 1;
    for (;;) {
        mqstore_job_list jl;
        memset(&jl, 0, sizeof jl);
        e = mqstore_outbox_read(s, after, 5000, &jl);
        if (e != MQSTORE_OK) {
            violation("%s: outbox_read after %" PRIu64 ": %s", ph->name, after,
                      mqstore_strerror(e));
            break;
        }
        for (size_t i = 0; i < jl.n; i++) {
            const mqstore_job *j = &jl.items[i];
            ph->jobs++;
            if (!first && j->id <= after)
                violation("%s: outbox: job id %" PRIu64 " after %" PRIu64 ": not ascending",
                          ph->name, j->id, after);
            first = 0;
            after = j->id;
            char txt[64];
            size_t tl = j->len < sizeof txt - 1 ? j->len : sizeof txt - 1;
            memcpy(txt, j->data, tl);
            txt[tl] = '\0';
            unsigned c = 0, jn = 0;
            uint32_t round = 0, n = 0;
            if (sscanf(txt, "J|%u|%" SCNu32 "|%" SCNu32 "|%u|", &c, &round, &n, &jn) != 4 ||
                c >= N_CONVS || jn >= MAX_JOBS) {
                violation("%s: outbox job %" PRIu64 " is not one of ours", ph->name, j->id);
                continue;
            }
            uint8_t want[96];
            size_t wl = make_job(want, sizeof want, c, round, n, jn);
            if (wl != j->len || memcmp(want, j->data, wl) != 0)
                violation("%s: outbox job %" PRIu64 " (m%" PRIu32 ".%" PRIu32
                          "/%u): content differs",
                          ph->name, j->id, round, n, jn);
            uint64_t k = mkey(round, n) * 4 + jn;
            if (k <= lastkey)
                violation("%s: outbox job %" PRIu64 " (m%" PRIu32 ".%" PRIu32
                          "/%u): id not in write order",
                          ph->name, j->id, round, n, jn);
            lastkey = k;
            hent *he = hfind(&h, mkey(round, n), 0);
            if (!he || he->seq == 0) {
                violation("%s: outbox job %" PRIu64 " belongs to m%" PRIu32 ".%" PRIu32
                          ", which is not stored: half-applied batch",
                          ph->name, j->id, round, n);
                continue;
            }
            if (he->conv != c)
                violation("%s: outbox job %" PRIu64 ": conversation differs", ph->name, j->id);
            msginfo *mi = &msgs[he->conv][he->seq];
            if (jn >= job_count(round, n) || (mi->jobs_mask & (1u << jn)))
                violation("%s: outbox job %" PRIu64 " (m%" PRIu32 ".%" PRIu32
                          "/%u): unexpected or twice",
                          ph->name, j->id, round, n, jn);
            mi->jobs_mask |= (uint8_t)(1u << jn);
        }
        int more = jl.more && jl.n > 0;
        mqstore_job_list_free(&jl);
        if (!more) break;
    }
    for (unsigned c = 0; c < N_CONVS; c++)
        for (uint64_t q = 1; msgs[c] && q <= heads[c]; q++) {
            const msginfo *mi = &msgs[c][q];
            if (!mi->present || mi->is_event || mi->round == 0) continue;
            unsigned want = (1u << job_count(mi->round, mi->n)) - 1;
            if (mi->jobs_mask != want)
                violation("%s: %s seq %" PRIu64 " (m%" PRIu32 ".%" PRIu32
                          "): push jobs mask %#x, expected %#x: half-applied batch",
                          ph->name, CONVS[c].id, q, mi->round, mi->n, mi->jobs_mask, want);
        }

    /* 6. Dedup keys: a retry of every stored message is a duplicate with
     * the first result. Last, because a missing key writes a new message. */
    for (unsigned c = 0; c < N_CONVS; c++)
        for (uint64_t q = 1; msgs[c] && q <= heads[c]; q++) {
            const msginfo *mi = &msgs[c][q];
            if (!mi->present || mi->is_event || mi->round == 0) continue;
            char user[16], dev[16], cid[32];
            uint8_t payload[512];
            user_name(user, sizeof user, mi->sender);
            device_name(dev, sizeof dev, mi->sender);
            snprintf(cid, sizeof cid, "m%" PRIu32 ".%" PRIu32, mi->round, mi->n);
            size_t plen =
                make_payload(payload, sizeof payload, CONVS[c].id, mi->round, mi->n, mi->sender);
            mqstore_append a = {.conv = CONVS[c].id,
                                .sender_user = user,
                                .sender_device = dev,
                                .client_msg_id = cid,
                                .kind = KIND_MSG,
                                .payload = payload,
                                .payload_len = plen};
            mqstore_result res;
            memset(&res, 0, sizeof res);
            e = mqstore_append_msg(s, &a, &res);
            ph->dedup_checked++;
            if (e != MQSTORE_OK) {
                violation("%s: retry of %s seq %" PRIu64 " (%s): %s", ph->name, CONVS[c].id, q, cid,
                          mqstore_strerror(e));
                continue;
            }
            if (!res.duplicate || res.seq != q)
                violation("%s: retry of %s seq %" PRIu64 " (%s): duplicate=%d seq %" PRIu64
                          ": dedup key missing (half-applied batch)",
                          ph->name, CONVS[c].id, q, cid, res.duplicate, res.seq);
            else if (res.inbox_seq != mi->sender_inbox_seq)
                violation("%s: retry of %s seq %" PRIu64 " (%s): inbox_seq %" PRIu64
                          ", the first result had %" PRIu64,
                          ph->name, CONVS[c].id, q, cid, res.inbox_seq, mi->sender_inbox_seq);
            else if (res.n_fanout != 0)
                violation("%s: retry of %s seq %" PRIu64 ": duplicate has %zu fan-out entries, "
                          "the header says empty",
                          ph->name, CONVS[c].id, q, res.n_fanout);
            mqstore_result_clear(&res);
        }
    for (unsigned c = 0; c < N_CONVS; c++) {
        uint64_t hd = 0;
        if (exists[c] && mqstore_conv_head(s, CONVS[c].id, &hd) == MQSTORE_OK && hd != heads[c])
            violation("%s: %s: head moved from %" PRIu64 " to %" PRIu64 " during the dedup check",
                      ph->name, CONVS[c].id, heads[c], hd);
    }

    for (unsigned c = 0; c < N_CONVS; c++)
        free(msgs[c]);
    free(h.t);
    mqstore_free(s);
}

/* ---- main -------------------------------------------------------------------- */

static unsigned env_uint(const char *name, unsigned dflt)
{
    const char *v = getenv(name);
    if (!v || !*v) return dflt;
    char *end = NULL;
    unsigned long x = strtoul(v, &end, 0);
    return (end && *end == '\0' && x > 0 && x < 100000) ? (unsigned)x : dflt;
}

static int run_phase(phase *ph, uint64_t seed, uint64_t t_start)
{
    uint64_t rng = seed ^ (ph->dur == MQSTORE_DURABILITY_SYNC ? 0x5ull : 0x0Full << 40);
    unsigned long v0 = g_violations;
    for (uint32_t r = 1; r <= ph->rounds_planned; r++) {
        if (tu_now_ns() - t_start > TIME_BUDGET_S * TU_SEC_NS) {
            printf("crash_store: %s: time budget reached after %u rounds\n", ph->name, ph->rounds);
            break;
        }
        if (run_round(ph, r, seed, &rng) != 0) return -1;
    }
    if (ph->nreps == 0)
        violation("%s: no write was ever reported durable in %u rounds", ph->name, ph->rounds);
    check_phase(ph);
    printf("crash_store: %s: rounds=%u (killed before ready: %u) writes_reported=%zu "
           "writes_checked=%zu messages=%zu events=%zu inbox_entries=%zu jobs=%zu "
           "dedup_retries=%zu violations=%lu\n",
           ph->name, ph->rounds, ph->killed_before_ready, ph->nreps, ph->checked, ph->messages,
           ph->events, ph->inbox_entries, ph->jobs, ph->dedup_checked, g_violations - v0);
    fflush(stdout);
    return 0;
}

int main(void)
{
    uint64_t t_start = tu_now_ns();
    uint64_t seed;
    const char *sv = getenv("MQCHAT_CRASH_SEED");
    if (sv && *sv) {
        seed = strtoull(sv, NULL, 0);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = ((uint64_t)ts.tv_sec * 1000003u) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
        seed &= 0xffffffffffffull;
    }
    unsigned rounds = env_uint("MQCHAT_CRASH_ROUNDS", 25);
    int keep = getenv("MQCHAT_CRASH_KEEP") && *getenv("MQCHAT_CRASH_KEEP") == '1';

    if (tu_mkdtemp(g_topdir, sizeof g_topdir, NULL, "mqchat-crash.") != 0) {
        perror("crash_store: mkdtemp");
        return 2;
    }
    printf("crash_store: seed=%" PRIu64 " (replay: MQCHAT_CRASH_SEED=%" PRIu64
           ") rounds=%u dir=%s\n",
           seed, seed, rounds, g_topdir);
    fflush(stdout);
    signal(SIGALRM, watchdog);
    signal(SIGPIPE, SIG_IGN);
    alarm(WATCHDOG_S);

    phase ph[2];
    memset(ph, 0, sizeof ph);
    ph[0].name = "sync";
    ph[0].dur = MQSTORE_DURABILITY_SYNC;
    ph[0].rounds_planned = rounds;
    ph[1].name = "os";
    ph[1].dur = MQSTORE_DURABILITY_OS;
    ph[1].rounds_planned = rounds * 2 / 5 ? rounds * 2 / 5 : 1;
    int rc = 0;
    for (int i = 0; i < 2 && rc == 0; i++) {
        snprintf(ph[i].dir, sizeof ph[i].dir, "%s/%s", g_topdir, ph[i].name);
        if (run_phase(&ph[i], seed, t_start) != 0) rc = 2;
        free(ph[i].reps);
    }
    alarm(0);
    double secs = (double)(tu_now_ns() - t_start) / 1e9;
    if (!keep) tu_rm_rf(g_topdir);
    if (rc == 0 && g_violations == 0) {
        printf("crash_store: PASS: rounds=%u+%u writes_reported=%zu writes_checked=%zu in %.1f s "
               "(seed %" PRIu64 ")\n",
               ph[0].rounds, ph[1].rounds, ph[0].nreps + ph[1].nreps, ph[0].checked + ph[1].checked,
               secs, seed);
        return 0;
    }
    fprintf(stderr,
            "crash_store: FAIL: %lu violation(s) in %.1f s; replay with MQCHAT_CRASH_SEED=%" PRIu64
            "%s%s\n",
            g_violations, secs, seed, keep ? "; store kept in " : "", keep ? g_topdir : "");
    return 1;
}
