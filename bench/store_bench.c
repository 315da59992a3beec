/* store_bench — append throughput and latency of libmqchat_store.
 *
 * For 1:1 conversations (inbox fan-out 2) and 100-member groups (fan-out
 * 100), in each durability setup:
 *
 *   os           MQSTORE_DURABILITY_OS: durable when the call returns.
 *   sync/thread  MQSTORE_DURABILITY_SYNC + MQSTORE_SYNC_THREAD. Models
 *                mosquitto's single event-loop thread that never blocks: it
 *                keeps appending and notices durability by reading
 *                mqstore_durable() after each append (a store thread does
 *                the group-commit fsyncs).
 *   sync/manual  MQSTORE_DURABILITY_SYNC + MQSTORE_SYNC_MANUAL. Models one
 *                event-loop pass: K appends, then one mqstore_sync().
 *
 * Per append it records three latencies:
 *   call   the mqstore_append_msg() call itself;
 *   wait   from the call's return until durability was observed;
 *   total  from the call until durability was observed (the time an ACK
 *          would wait).
 * appends/s = appends / (time from the first call until the last append was
 * durable). Payload 300 bytes, a fresh client_msg_id per append (dedup on),
 * no push jobs. Every configuration gets a fresh store.
 *
 * It prints figures and asserts nothing about speed.
 *
 * Usage: store_bench [--seconds N] [--dir DIR] [--quick]
 *   --seconds N  measuring time per configuration (default 3; may be a
 *                fraction)
 *   --dir DIR    where the stores go (a fresh subdirectory of DIR, removed at
 *                the end); default a mkdtemp directory under /tmp
 *   --quick      0.5 s per configuration (unless --seconds is given)
 */
#include "mqstore.h"
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#define PAYLOAD_LEN 300
#define N_DM 256   /* 1:1 conversations, round-robin */
#define N_GROUPS 8 /* 100-member groups, round-robin */
#define GROUP_SIZE 100
#define WARMUP 500

static void die(const char *what, mqstore_err e, const char *detail)
{
    fprintf(stderr, "store_bench: %s: %s%s%s\n", what, mqstore_strerror(e), detail ? ": " : "",
            detail ? detail : "");
    exit(1);
}

/* ---- machine ----------------------------------------------------------------- */

static void cpu_model(char *buf, size_t cap)
{
    snprintf(buf, cap, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) == 0) {
            char *p = strchr(line, ':');
            if (p) {
                p++;
                while (*p == ' ' || *p == '\t')
                    p++;
                p[strcspn(p, "\n")] = '\0';
                snprintf(buf, cap, "%s", p);
            }
            break;
        }
    }
    fclose(f);
}

/* RocksDB writes its version into the OPTIONS-* file of every store. */
static void rocksdb_version(const char *storedir, char *buf, size_t cap)
{
    snprintf(buf, cap, "unknown");
    DIR *d = opendir(storedir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strncmp(de->d_name, "OPTIONS-", 8) != 0) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", storedir, de->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        char line[256];
        while (fgets(line, sizeof line, f)) {
            char *p = strstr(line, "rocksdb_version=");
            if (p) {
                p += strlen("rocksdb_version=");
                p[strcspn(p, "\r\n")] = '\0';
                snprintf(buf, cap, "%s", p);
                break;
            }
        }
        fclose(f);
        break;
    }
    closedir(d);
}

static const char *fs_name(const char *dir)
{
    struct statfs sf;
    if (statfs(dir, &sf) != 0) return "unknown";
    switch ((unsigned long)sf.f_type) {
    case 0xEF53:
        return "ext4/ext3";
    case 0x58465342:
        return "xfs";
    case 0x9123683E:
        return "btrfs";
    case 0x01021994:
        return "tmpfs (fsync is free: SYNC figures are meaningless)";
    case 0x794c7630:
        return "overlayfs";
    default:
        return "other";
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t pct(uint64_t *v, size_t n, double p)
{
    if (n == 0) return 0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i];
}

/* Raw cost of one small write + fdatasync in `dir`, median of 200. */
static double fsync_us(const char *dir)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/fsync-probe", dir);
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return -1;
    char buf[PAYLOAD_LEN];
    memset(buf, 'x', sizeof buf);
    uint64_t t[200];
    for (int i = 0; i < 200; i++) {
        uint64_t t0 = tu_now_ns();
        if (write(fd, buf, sizeof buf) != (ssize_t)sizeof buf || fdatasync(fd) != 0) {
            close(fd);
            unlink(path);
            return -1;
        }
        t[i] = tu_now_ns() - t0;
    }
    close(fd);
    unlink(path);
    qsort(t, 200, sizeof t[0], cmp_u64);
    return (double)t[100] / 1000.0;
}

/* ---- one configuration ---------------------------------------------------- */

typedef enum mode { MODE_OS, MODE_THREAD, MODE_MANUAL } mode;

typedef struct config {
    int group; /* 0: 1:1, 1: 100-member groups */
    mode m;
    unsigned k; /* appends per pass (MODE_MANUAL) */
} config;

typedef struct result {
    size_t n;
    double rate;
    uint64_t call50, call99, wait50, wait99, tot50, tot99;
    double batch;           /* appends per observed durability advance */
    unsigned long contract; /* durability not reached when the header says it is */
} result;

typedef struct pend {
    uint64_t ticket, t_call, t_ret;
} pend;

typedef struct lat {
    uint64_t *call, *wait, *tot;
    size_t n, cap;
    pend *q;
    size_t qh, qt, qcap;
    uint64_t last_durable, advances, t_last;
} lat;

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (!p) {
        fprintf(stderr, "store_bench: out of memory\n");
        exit(1);
    }
    return p;
}

static void push_pending(lat *l, uint64_t ticket, uint64_t t_call, uint64_t t_ret)
{
    if (l->qt == l->qcap) {
        if (l->qh > 0) {
            memmove(l->q, l->q + l->qh, (l->qt - l->qh) * sizeof *l->q);
            l->qt -= l->qh;
            l->qh = 0;
        } else {
            l->qcap = l->qcap ? l->qcap * 2 : 4096;
            l->q = xrealloc(l->q, l->qcap * sizeof *l->q);
        }
    }
    l->q[l->qt++] = (pend){ticket, t_call, t_ret};
}

/* Read mqstore_durable() and retire every pending append it covers. */
static void observe(lat *l, mqstore *s, int record)
{
    uint64_t d = mqstore_durable(s);
    if (d == l->last_durable || l->qh == l->qt) {
        l->last_durable = d > l->last_durable ? d : l->last_durable;
        return;
    }
    uint64_t now = tu_now_ns();
    int any = 0;
    while (l->qh < l->qt && l->q[l->qh].ticket <= d) {
        pend *p = &l->q[l->qh++];
        any = 1;
        if (!record) continue;
        if (l->n == l->cap) {
            l->cap = l->cap ? l->cap * 2 : 65536;
            l->call = xrealloc(l->call, l->cap * sizeof *l->call);
            l->wait = xrealloc(l->wait, l->cap * sizeof *l->wait);
            l->tot = xrealloc(l->tot, l->cap * sizeof *l->tot);
        }
        l->call[l->n] = p->t_ret - p->t_call;
        l->wait[l->n] = now - p->t_ret;
        l->tot[l->n] = now - p->t_call;
        l->n++;
    }
    if (any) {
        if (record) l->advances++;
        l->t_last = now;
    }
    l->last_durable = d;
}

typedef struct target {
    char conv[32];
    char users[2][32]; /* the senders we rotate through */
} target;

static size_t setup_convs(mqstore *s, int group, target **out)
{
    size_t nt = group ? N_GROUPS : N_DM;
    target *t = calloc(nt, sizeof *t);
    if (!t) die("setup", MQSTORE_ERR_NOMEM, NULL);
    char names[GROUP_SIZE][32];
    const char *members[GROUP_SIZE];
    for (size_t i = 0; i < nt; i++) {
        mqstore_result res;
        memset(&res, 0, sizeof res);
        size_t nm = group ? GROUP_SIZE : 2;
        if (group) {
            snprintf(t[i].conv, sizeof t[i].conv, "grp.%zu", i);
            for (size_t j = 0; j < nm; j++)
                snprintf(names[j], sizeof names[j], "g%u.u%03u", (unsigned)(i % 1000),
                         (unsigned)(j % 1000));
        } else {
            snprintf(t[i].conv, sizeof t[i].conv, "dm.%zu", i);
            snprintf(names[0], sizeof names[0], "a%zu", i);
            snprintf(names[1], sizeof names[1], "b%zu", i);
        }
        for (size_t j = 0; j < nm; j++)
            members[j] = names[j];
        snprintf(t[i].users[0], sizeof t[i].users[0], "%s", names[0]);
        snprintf(t[i].users[1], sizeof t[i].users[1], "%s", names[1]);
        mqstore_err e = mqstore_conv_create(s, t[i].conv, members, NULL, nm, NULL, &res);
        if (e != MQSTORE_OK) die("conv_create", e, t[i].conv);
        mqstore_result_clear(&res);
    }
    *out = t;
    return nt;
}

static const char *mode_name(const config *c)
{
    switch (c->m) {
    case MODE_OS:
        return "os";
    case MODE_THREAD:
        return "sync/thread";
    default:
        return "sync/manual";
    }
}

static void run_config(const char *base, int idx, const config *cfg, double seconds, result *r,
                       char *rocksver, size_t rvcap)
{
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/cfg%d", base, idx);
    mqstore_options opt;
    mqstore_options_init(&opt);
    opt.durability = cfg->m == MODE_OS ? MQSTORE_DURABILITY_OS : MQSTORE_DURABILITY_SYNC;
    opt.sync_driver = cfg->m == MODE_MANUAL ? MQSTORE_SYNC_MANUAL : MQSTORE_SYNC_THREAD;
    mqstore *s = NULL;
    char *em = NULL;
    mqstore_err e = mqstore_open(dir, &opt, &s, &em);
    if (e != MQSTORE_OK) die("open", e, em);
    if (rocksver && strcmp(rocksver, "unknown") == 0) rocksdb_version(dir, rocksver, rvcap);

    target *t = NULL;
    size_t nt = setup_convs(s, cfg->group, &t);
    e = mqstore_sync(s);
    if (e != MQSTORE_OK) die("sync", e, NULL);

    uint8_t payload[PAYLOAD_LEN];
    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (uint8_t)(i * 131u + 7u);
    char cid[32];
    lat l;
    memset(&l, 0, sizeof l);
    l.last_durable = mqstore_durable(s);
    memset(r, 0, sizeof *r);

    uint64_t seqno = 0;
    unsigned k = cfg->m == MODE_MANUAL ? cfg->k : 1;
    uint64_t t_begin = 0, t_end = 0;
    int measuring = 0;
    for (;;) {
        uint64_t now = tu_now_ns();
        if (!measuring && seqno >= WARMUP) {
            /* Warm-up done: settle it, then start the clock. */
            if (cfg->m == MODE_MANUAL) {
                if ((e = mqstore_sync(s)) != MQSTORE_OK) die("sync", e, NULL);
            }
            while (l.qh < l.qt) {
                observe(&l, s, 0);
                sched_yield();
            }
            measuring = 1;
            now = tu_now_ns();
            t_begin = now;
            t_end = now + (uint64_t)(seconds * 1e9);
            l.advances = 0;
        }
        if (measuring && now >= t_end) break;
        /* One pass: k appends (1 outside MANUAL), then observe / sync. */
        for (unsigned j = 0; j < k; j++) {
            const target *tg = &t[seqno % nt];
            const char *sender = tg->users[(seqno / nt) & 1];
            snprintf(cid, sizeof cid, "c%" PRIu64, seqno);
            memcpy(payload, &seqno, sizeof seqno);
            mqstore_append a = {.conv = tg->conv,
                                .sender_user = sender,
                                .sender_device = "dev1",
                                .client_msg_id = cid,
                                .kind = 1,
                                .payload = payload,
                                .payload_len = sizeof payload};
            mqstore_result res;
            memset(&res, 0, sizeof res);
            uint64_t t0 = tu_now_ns();
            e = mqstore_append_msg(s, &a, &res);
            uint64_t t1 = tu_now_ns();
            if (e != MQSTORE_OK) die("append_msg", e, cid);
            if (res.duplicate) die("append_msg: duplicate for a fresh id", MQSTORE_OK, cid);
            uint64_t ticket = res.ticket;
            push_pending(&l, ticket, t0, t1);
            mqstore_result_clear(&res);
            seqno++;
            if (cfg->m == MODE_OS && mqstore_durable(s) < ticket) r->contract++;
            if (cfg->m != MODE_MANUAL) observe(&l, s, measuring);
        }
        if (cfg->m == MODE_MANUAL) {
            if ((e = mqstore_sync(s)) != MQSTORE_OK) die("sync", e, NULL);
            if (mqstore_durable(s) < mqstore_last_ticket(s)) r->contract++;
            observe(&l, s, measuring);
        }
    }
    /* Drain: wait for the last appends to become durable (bounded). */
    uint64_t give_up = tu_now_ns() + 10 * TU_SEC_NS;
    while (l.qh < l.qt && tu_now_ns() < give_up) {
        observe(&l, s, 1);
        if (l.qh < l.qt) sched_yield();
    }
    if (l.qh < l.qt) {
        fprintf(stderr, "store_bench: %zu appends still not durable 10 s after the run\n",
                l.qt - l.qh);
        r->contract += l.qt - l.qh;
    }

    r->n = l.n;
    uint64_t span = (l.t_last > t_begin ? l.t_last : tu_now_ns()) - t_begin;
    r->rate = (double)l.n / ((double)span / 1e9);
    r->batch = l.advances ? (double)l.n / (double)l.advances : 0;
    qsort(l.call, l.n, sizeof *l.call, cmp_u64);
    qsort(l.wait, l.n, sizeof *l.wait, cmp_u64);
    qsort(l.tot, l.n, sizeof *l.tot, cmp_u64);
    r->call50 = pct(l.call, l.n, 0.50);
    r->call99 = pct(l.call, l.n, 0.99);
    r->wait50 = pct(l.wait, l.n, 0.50);
    r->wait99 = pct(l.wait, l.n, 0.99);
    r->tot50 = pct(l.tot, l.n, 0.50);
    r->tot99 = pct(l.tot, l.n, 0.99);
    free(l.call);
    free(l.wait);
    free(l.tot);
    free(l.q);
    free(t);
    mqstore_free(s);
    tu_rm_rf(dir);
}

static void print_row(const config *c, const result *r)
{
    char k[8];
    if (c->m == MODE_MANUAL)
        snprintf(k, sizeof k, "%u", c->k);
    else
        snprintf(k, sizeof k, "-");
    printf("%-8s %-12s %3s %10.0f %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f %8.1f %9zu%s\n",
           c->group ? "group100" : "1:1", mode_name(c), k, r->rate, (double)r->call50 / 1e3,
           (double)r->call99 / 1e3, (double)r->wait50 / 1e3, (double)r->wait99 / 1e3,
           (double)r->tot50 / 1e3, (double)r->tot99 / 1e3, r->batch, r->n,
           r->contract ? "  (!) durability not reached as documented" : "");
    fflush(stdout);
}

static void usage(void)
{
    fprintf(stderr, "usage: store_bench [--seconds N] [--dir DIR] [--quick]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    double seconds = 3;
    int seconds_set = 0, quick = 0;
    const char *dir_arg = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
            char *end = NULL;
            seconds = strtod(argv[++i], &end);
            if (!end || *end || !(seconds > 0) || seconds > 3600) usage();
            seconds_set = 1;
        } else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
            dir_arg = argv[++i];
        } else if (strcmp(argv[i], "--quick") == 0) {
            quick = 1;
        } else {
            usage();
        }
    }
    if (quick && !seconds_set) seconds = 0.5;

    char base[4096];
    if (tu_mkdtemp(base, sizeof base, dir_arg, "store_bench.") != 0) {
        fprintf(stderr, "store_bench: mkdtemp %s: %s\n", base, strerror(errno));
        return 1;
    }

    /* Machine. */
    char cpu[256], rver[64] = "unknown", load[128] = "?";
    cpu_model(cpu, sizeof cpu);
    struct utsname un;
    if (uname(&un) != 0) snprintf(un.release, sizeof un.release, "?");
    FILE *lf = fopen("/proc/loadavg", "r");
    if (lf) {
        if (fgets(load, sizeof load, lf)) load[strcspn(load, "\n")] = '\0';
        fclose(lf);
    }
    {
        /* Open a scratch store once to learn the RocksDB version. */
        char probe[4200];
        snprintf(probe, sizeof probe, "%s/probe", base);
        mqstore_options opt;
        mqstore_options_init(&opt);
        opt.durability = MQSTORE_DURABILITY_OS;
        mqstore *s = NULL;
        char *em = NULL;
        if (mqstore_open(probe, &opt, &s, &em) == MQSTORE_OK) {
            rocksdb_version(probe, rver, sizeof rver);
            mqstore_free(s);
        } else {
            free(em);
        }
        tu_rm_rf(probe);
    }
    printf("store_bench: machine: nproc=%ld cpu=\"%s\" kernel=%s rocksdb=%s\n",
           sysconf(_SC_NPROCESSORS_ONLN), cpu, un.release, rver);
    printf("store_bench: dir=%s fs=%s fsync(300 B write + fdatasync) p50=%.0f us loadavg=%s\n",
           base, fs_name(base), fsync_us(base), load);
    printf("store_bench: %.1f s per configuration, payload %d B, 1:1 = %d conversations "
           "(fan-out 2), group100 = %d groups of %d (fan-out %d)\n",
           seconds, PAYLOAD_LEN, N_DM, N_GROUPS, GROUP_SIZE, GROUP_SIZE);
    printf("store_bench: latencies in us; call = append call, wait = return -> durable "
           "observed, total = call -> durable; batch = appends per observed durability advance\n");
    printf("%-8s %-12s %3s %10s %9s %9s %9s %9s %9s %9s %8s %9s\n", "shape", "mode", "K",
           "appends/s", "call_p50", "call_p99", "wait_p50", "wait_p99", "tot_p50", "tot_p99",
           "batch", "appends");

    static const config cfgs[] = {
        {0, MODE_OS, 0},      {0, MODE_THREAD, 0},  {0, MODE_MANUAL, 1}, {0, MODE_MANUAL, 16},
        {0, MODE_MANUAL, 64}, {1, MODE_OS, 0},      {1, MODE_THREAD, 0}, {1, MODE_MANUAL, 1},
        {1, MODE_MANUAL, 16}, {1, MODE_MANUAL, 64},
    };
    size_t ncfg = sizeof cfgs / sizeof cfgs[0];
    result res[sizeof cfgs / sizeof cfgs[0]];
    for (size_t i = 0; i < ncfg; i++) {
        run_config(base, (int)i, &cfgs[i], seconds, &res[i], rver, sizeof rver);
        print_row(&cfgs[i], &res[i]);
    }
    tu_rm_rf(base);

    double os = res[0].rate, th = res[1].rate, m64 = res[4].rate;
    printf("sync/os ratio for 1:1: %.2f (sync/thread %.0f/s vs os %.0f/s; sync/manual K=64: "
           "%.2f)\n",
           os > 0 ? th / os : 0, th, os, os > 0 ? m64 / os : 0);
    return 0;
}
