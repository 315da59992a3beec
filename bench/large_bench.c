/* large_bench — what one message costs the store in small and large groups.
 *
 * A small group fans out on write: an inbox entry per member per message.
 * A large one (docs/PROTOCOL.md, "Large conversations") stores each
 * message once and its members pull it, so an append should cost the same
 * whatever the member count. This measures that, with the store API only
 * (offline-queue/include/mqstore.h), on a real RocksDB store in a fresh
 * temporary directory per group:
 *
 *   members  10, 256, 1,000, 10,000, 100,000 (--sizes): created small below
 *            --threshold (256, the plugin's large_group_members default)
 *            and large at or above it, by mqstore_event.mode =
 *            MQSTORE_MODE_LARGE in mqstore_conv_create(), as the plugin
 *            does for a group created that large;
 *   contrast the same append to a 1,000-member and a 10,000-member group
 *            forced small (--contrast), what those groups would cost
 *            without large mode.
 *
 * Per group: create it (one CREATED event of 64 bytes; the plugin's event
 * lists the members, at most 1,000 per request), append --warmup messages
 * that are not counted, then --messages messages (fewer for small groups of
 * 10,000 members or more: --small-big-messages), one at a time from member
 * 0 with a fresh client_msg_id each (dedup on), a 300-byte payload, no push
 * jobs. Per message it prints, from mqstore_stats_get() deltas over the
 * counted appends: write batches, keys put or deleted, bytes (keys, values,
 * batch framing), and the append call's time (mean, p50, p99, max, in us).
 *
 * Durability: MQSTORE_DURABILITY_OS (every write is in the WAL before the
 * call returns; no fsync), so the times are the store's CPU and RocksDB's
 * write path, not the disk's fsync. The stats count what the store writes,
 * not RocksDB's own flushes and compactions.
 *
 * It prints figures and asserts nothing about speed.
 *
 * Usage: large_bench [options]
 *   --messages N            counted appends per group (default 2000)
 *   --small-big-messages N  counted appends for small groups of >= 10,000
 *                           members (default 100)
 *   --warmup N              appends before counting (default 50)
 *   --sizes "A,B,..."       member counts (default 10,256,1000,10000,100000)
 *   --contrast "A,B,..."    member counts forced small (default 1000,10000;
 *                           "" for none)
 *   --threshold N           large from N members on (default 256)
 *   --dir DIR               where the stores go (a fresh subdirectory,
 *                           removed at the end; default under /tmp)
 *   --quick                 200 messages, 20 for big small groups, 20 warmup
 * Output: a table, then one line per group
 *   RESULT members=... mode=small|large keys_per_msg=... ...
 * for scripts. Exit status 0 unless the store failed.
 */
#include "mqstore.h"
#include "testutil.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PAYLOAD_LEN 300
#define EVENT_LEN 64
#define MAX_GROUPS 16

static void die(const char *what, mqstore_err e, const char *detail)
{
    fprintf(stderr, "large_bench: %s: %s%s%s\n", what, mqstore_strerror(e), detail ? ": " : "",
            detail ? detail : "");
    exit(1);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "large_bench: out of memory\n");
        exit(1);
    }
    return p;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t pct(const uint64_t *v, size_t n, double p)
{
    if (n == 0) return 0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i];
}

/* One group to measure. */
typedef struct group {
    size_t members;
    int large;  /* created with MQSTORE_MODE_LARGE */
    int forced; /* small although at or above the threshold (contrast) */
} group;

typedef struct result {
    size_t n;                        /* counted appends */
    double writes, keys, bytes;      /* per append */
    double mean_us;                  /* append call */
    uint64_t p50_ns, p99_ns, max_ns; /* append call */
    uint64_t c_keys, c_bytes, c_ns;  /* the creation */
    int large_after;                 /* result.large of the last append */
    int pulled;                      /* result.pulled of the last append */
    size_t fanout;                   /* result.n_fanout of the last append */
} result;

static void stats_delta(mqstore *s, const mqstore_stats *before, mqstore_stats *d)
{
    mqstore_stats now;
    mqstore_stats_get(s, &now);
    d->writes = now.writes - before->writes;
    d->keys = now.keys - before->keys;
    d->bytes = now.bytes - before->bytes;
}

static void run_group(const char *base, int idx, const group *g, size_t nmsg, size_t warmup,
                      result *r)
{
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/g%d", base, idx);
    mqstore_options opt;
    mqstore_options_init(&opt);
    opt.durability = MQSTORE_DURABILITY_OS;
    mqstore *s = NULL;
    char *em = NULL;
    mqstore_err e = mqstore_open(dir, &opt, &s, &em);
    if (e != MQSTORE_OK) die("open", e, em);

    /* Members "m0000000" ..., member 0 the owner and the sender. */
    char(*names)[24] = xmalloc(g->members * sizeof *names);
    const char **members = xmalloc(g->members * sizeof *members);
    mqstore_role *roles = xmalloc(g->members * sizeof *roles);
    for (size_t i = 0; i < g->members; i++) {
        snprintf(names[i], sizeof names[i], "m%07zu", i);
        members[i] = names[i];
        roles[i] = i == 0 ? MQSTORE_ROLE_OWNER : MQSTORE_ROLE_MEMBER;
    }
    uint8_t evp[EVENT_LEN];
    memset(evp, 'e', sizeof evp);
    mqstore_event ev = {.actor_user = members[0],
                        .actor_device = "d",
                        .kind = 2,
                        .payload = evp,
                        .payload_len = sizeof evp,
                        .mode = g->large ? MQSTORE_MODE_LARGE : MQSTORE_MODE_SMALL};
    char conv[32];
    snprintf(conv, sizeof conv, "g:bench%d", idx);
    mqstore_stats st0, d;
    mqstore_stats_get(s, &st0);
    mqstore_result res;
    memset(&res, 0, sizeof res);
    uint64_t t0 = tu_now_ns();
    e = mqstore_conv_create(s, conv, members, roles, g->members, &ev, &res);
    uint64_t t1 = tu_now_ns();
    if (e != MQSTORE_OK) die("conv_create", e, conv);
    if (res.large != g->large) die("conv_create: unexpected mode", MQSTORE_OK, conv);
    mqstore_result_clear(&res);
    stats_delta(s, &st0, &d);
    memset(r, 0, sizeof *r);
    r->c_keys = d.keys;
    r->c_bytes = d.bytes;
    r->c_ns = t1 - t0;

    uint8_t payload[PAYLOAD_LEN];
    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (uint8_t)('a' + i % 26);
    uint64_t *lat = xmalloc(nmsg * sizeof *lat);
    uint64_t sum = 0;
    char cid[32];
    for (size_t k = 0; k < warmup + nmsg; k++) {
        if (k == warmup) mqstore_stats_get(s, &st0);
        snprintf(cid, sizeof cid, "c%zu", k);
        memcpy(payload, &k, sizeof k);
        mqstore_append a = {.conv = conv,
                            .sender_user = members[0],
                            .sender_device = "d",
                            .client_msg_id = cid,
                            .kind = 1,
                            .payload = payload,
                            .payload_len = sizeof payload};
        memset(&res, 0, sizeof res);
        uint64_t a0 = tu_now_ns();
        e = mqstore_append_msg(s, &a, &res);
        uint64_t a1 = tu_now_ns();
        if (e != MQSTORE_OK) die("append_msg", e, cid);
        if (res.duplicate) die("append_msg: duplicate for a fresh id", MQSTORE_OK, cid);
        if (k >= warmup) {
            lat[k - warmup] = a1 - a0;
            sum += a1 - a0;
        }
        r->large_after = res.large;
        r->pulled = res.pulled;
        r->fanout = res.n_fanout;
        mqstore_result_clear(&res);
    }
    stats_delta(s, &st0, &d);
    r->n = nmsg;
    r->writes = (double)d.writes / (double)nmsg;
    r->keys = (double)d.keys / (double)nmsg;
    r->bytes = (double)d.bytes / (double)nmsg;
    r->mean_us = (double)sum / (double)nmsg / 1e3;
    qsort(lat, nmsg, sizeof *lat, cmp_u64);
    r->p50_ns = pct(lat, nmsg, 0.50);
    r->p99_ns = pct(lat, nmsg, 0.99);
    r->max_ns = lat[nmsg - 1];
    free(lat);
    free(names);
    free(members);
    free(roles);
    mqstore_free(s);
    tu_rm_rf(dir);
}

/* "10,256,1000" -> sizes; -1 on a bad list. */
static int parse_sizes(const char *arg, size_t *v, int max)
{
    int n = 0;
    const char *p = arg;
    while (*p) {
        char *end = NULL;
        errno = 0;
        unsigned long long x = strtoull(p, &end, 10);
        if (end == p || errno || x < 2 || x > 100000 || n == max) return -1;
        v[n++] = (size_t)x;
        p = end;
        if (*p == ',')
            p++;
        else if (*p)
            return -1;
    }
    return n;
}

static void usage(void)
{
    fprintf(stderr, "usage: large_bench [--messages N] [--small-big-messages N] [--warmup N]\n"
                    "                   [--sizes A,B,...] [--contrast A,B,...] [--threshold N]\n"
                    "                   [--dir DIR] [--quick]\n");
    exit(2);
}

static size_t arg_size(const char *s, size_t lo, size_t hi)
{
    char *end = NULL;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (!end || *end || errno || x < lo || x > hi) usage();
    return (size_t)x;
}

int main(int argc, char **argv)
{
    size_t nmsg = 2000, nbig = 100, warmup = 50, threshold = 256;
    int nmsg_set = 0, nbig_set = 0, warmup_set = 0, quick = 0;
    const char *sizes_arg = "10,256,1000,10000,100000", *contrast_arg = "1000,10000";
    const char *dir_arg = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--quick") == 0) {
            quick = 1;
            continue;
        }
        if (!v) usage();
        i++;
        if (strcmp(a, "--messages") == 0) {
            nmsg = arg_size(v, 1, 10000000);
            nmsg_set = 1;
        } else if (strcmp(a, "--small-big-messages") == 0) {
            nbig = arg_size(v, 1, 10000000);
            nbig_set = 1;
        } else if (strcmp(a, "--warmup") == 0) {
            warmup = arg_size(v, 0, 10000000);
            warmup_set = 1;
        } else if (strcmp(a, "--sizes") == 0) {
            sizes_arg = v;
        } else if (strcmp(a, "--contrast") == 0) {
            contrast_arg = v;
        } else if (strcmp(a, "--threshold") == 0) {
            threshold = arg_size(v, 2, 100000);
        } else if (strcmp(a, "--dir") == 0) {
            dir_arg = v;
        } else {
            usage();
        }
    }
    if (quick) {
        if (!nmsg_set) nmsg = 200;
        if (!nbig_set) nbig = 20;
        if (!warmup_set) warmup = 20;
    }
    size_t sz[MAX_GROUPS], cz[MAX_GROUPS];
    int ns = parse_sizes(sizes_arg, sz, MAX_GROUPS), nc = parse_sizes(contrast_arg, cz, MAX_GROUPS);
    if (ns < 0 || nc < 0 || ns + nc > MAX_GROUPS) usage();
    group groups[MAX_GROUPS];
    int ng = 0;
    for (int i = 0; i < ns; i++)
        groups[ng++] = (group){sz[i], sz[i] >= threshold, 0};
    for (int i = 0; i < nc; i++)
        groups[ng++] = (group){cz[i], 0, cz[i] >= threshold};

    char base[4096];
    if (tu_mkdtemp(base, sizeof base, dir_arg, "large_bench.") != 0) {
        fprintf(stderr, "large_bench: mkdtemp %s: %s\n", base, strerror(errno));
        return 1;
    }
    char load[128] = "?";
    FILE *lf = fopen("/proc/loadavg", "r");
    if (lf) {
        if (fgets(load, sizeof load, lf)) load[strcspn(load, "\n")] = '\0';
        fclose(lf);
    }
    printf("large_bench: store in %s, durability os (WAL, no fsync), a fresh store per group; "
           "%ld cores; loadavg %s\n",
           base, sysconf(_SC_NPROCESSORS_ONLN), load);
    printf("large_bench: per group %zu warmup + %zu counted appends (%zu for small groups of "
           ">= 10,000), payload %d B, dedup on, no push jobs; large from %zu members on\n",
           warmup, nmsg, nbig, PAYLOAD_LEN, threshold);
    printf("large_bench: per message: write batches, keys, bytes (mqstore_stats_get deltas), "
           "append call us; create: the conv_create batch\n");
    printf("%9s %-14s %8s %7s %9s %9s %9s %9s %9s %7s | %9s %11s %9s\n", "members", "mode", "msgs",
           "writes", "keys", "bytes", "mean_us", "p50_us", "p99_us", "max_ms", "create_k",
           "create_MB", "create_ms");
    fflush(stdout);

    result res[MAX_GROUPS];
    for (int i = 0; i < ng; i++) {
        const group *g = &groups[i];
        size_t n = !g->large && g->members >= 10000 ? nbig : nmsg;
        run_group(base, i, g, n, warmup, &res[i]);
        const result *r = &res[i];
        const char *mode = g->large ? "large" : g->forced ? "small(forced)" : "small";
        printf("%9zu %-14s %8zu %7.2f %9.1f %9.0f %9.1f %9.1f %9.1f %7.2f | %9" PRIu64
               " %11.2f %9.1f%s\n",
               g->members, mode, r->n, r->writes, r->keys, r->bytes, r->mean_us,
               (double)r->p50_ns / 1e3, (double)r->p99_ns / 1e3, (double)r->max_ns / 1e6, r->c_keys,
               (double)r->c_bytes / 1e6, (double)r->c_ns / 1e6,
               r->large_after != g->large || r->pulled != g->large
                   ? "  (!) the store reports another mode"
                   : "");
        fflush(stdout);
    }
    tu_rm_rf(base);

    /* Constant above the threshold? Largest over smallest of the large rows. */
    double kmin = 0, kmax = 0, bmin = 0, bmax = 0, tmin = 0, tmax = 0;
    int nl = 0;
    for (int i = 0; i < ng; i++) {
        if (!groups[i].large) continue;
        const result *r = &res[i];
        double t = (double)r->p50_ns / 1e3;
        if (!nl++) {
            kmin = kmax = r->keys;
            bmin = bmax = r->bytes;
            tmin = tmax = t;
        }
        kmin = r->keys < kmin ? r->keys : kmin;
        kmax = r->keys > kmax ? r->keys : kmax;
        bmin = r->bytes < bmin ? r->bytes : bmin;
        bmax = r->bytes > bmax ? r->bytes : bmax;
        tmin = t < tmin ? t : tmin;
        tmax = t > tmax ? t : tmax;
    }
    if (nl)
        printf("large groups (%d sizes): keys/msg %.1f..%.1f, bytes/msg %.0f..%.0f, p50 "
               "%.1f..%.1f us (max/min %.2f)\n",
               nl, kmin, kmax, bmin, bmax, tmin, tmax, tmin > 0 ? tmax / tmin : 0);
    for (int i = 0; i < ng; i++) {
        if (!groups[i].forced) continue;
        for (int j = 0; j < ng; j++) {
            if (!groups[j].large || groups[j].members != groups[i].members) continue;
            const result *s = &res[i], *l = &res[j];
            printf("%zu members: small %.0f keys, %.0f B, %.1f us per message; large %.1f keys, "
                   "%.0f B, %.1f us: %.0fx fewer bytes, %.0fx faster (mean)\n",
                   groups[i].members, s->keys, s->bytes, s->mean_us, l->keys, l->bytes, l->mean_us,
                   l->bytes > 0 ? s->bytes / l->bytes : 0,
                   l->mean_us > 0 ? s->mean_us / l->mean_us : 0);
        }
    }
    for (int i = 0; i < ng; i++) {
        const result *r = &res[i];
        printf("RESULT members=%zu mode=%s msgs=%zu writes_per_msg=%.2f keys_per_msg=%.1f "
               "bytes_per_msg=%.0f mean_us=%.1f p50_us=%.1f p99_us=%.1f max_us=%.1f "
               "create_keys=%" PRIu64 " create_bytes=%" PRIu64 " create_ms=%.1f\n",
               groups[i].members, groups[i].large ? "large" : "small", r->n, r->writes, r->keys,
               r->bytes, r->mean_us, (double)r->p50_ns / 1e3, (double)r->p99_ns / 1e3,
               (double)r->max_ns / 1e3, r->c_keys, r->c_bytes, (double)r->c_ns / 1e6);
    }
    return 0;
}
