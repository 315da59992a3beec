/* job — parse and check a stream entry (see job.h for the rules). */
#include "job.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mqc_id.h"

const char *const pd_platform_names[PD_NPLATFORMS] = {"apns", "apns-sandbox", "fcm"};

enum {
    F_V,
    F_JOB,
    F_PLATFORM,
    F_TOKEN,
    F_APP,
    F_USER,
    F_DEVICE,
    F_CONV,
    F_SEQ,
    F_SENDER,
    F_COLLAPSE,
    F_BADGE,
    F_PREVIEW,
    F_TS,
    F_PRIO,
    NF
};
static const char *const fnames[NF] = {"v",        "job",    "platform", "token", "app",
                                       "user",     "device", "conv",     "seq",   "sender",
                                       "collapse", "badge",  "preview",  "ts",    "prio"};
/* Required fields (preview is optional; app, collapse and badge may be empty). */
static const unsigned char required[NF] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1};

int pd_utf8_valid(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t k;
        unsigned min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            k = 1, min = 0x80, c &= 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            k = 2, min = 0x800, c &= 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            k = 3, min = 0x10000, c &= 0x07;
        } else {
            return 0;
        }
        if (n - i <= k) return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80) return 0;
            c = c << 6 | (s[i + j] & 0x3f);
        }
        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return 0;
        i += k + 1;
    }
    return 1;
}

size_t pd_utf8_cut(const char *str, size_t n, size_t max)
{
    const unsigned char *s = (const unsigned char *)str;
    if (n <= max) return n;
    size_t i = max;
    while (i > 0 && (s[i] & 0xc0) == 0x80) /* s[i] starts the first character left out */
        i--;
    return i;
}

static int all_in(const char *s, size_t n, const char *set)
{
    for (size_t i = 0; i < n; i++)
        if (!strchr(set, s[i]) || !s[i]) return 0;
    return 1;
}

static int digits(const char *s, size_t n, size_t maxlen)
{
    return n >= 1 && n <= maxlen && all_in(s, n, "0123456789");
}

static int printable(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e) return 0;
    return 1;
}

#define HEX "0123456789abcdefABCDEF"
#define FCM_TOKEN_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_:.-"
#define APP_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"

static int bad(pd_job *j, const char *fmt, const char *field)
{
    j->bad = 1;
    snprintf(j->reason, sizeof j->reason, fmt, field);
    return -1;
}

/* Check the fields; sets j's views. 0, or -1 with j->bad and j->reason. */
static int check(pd_job *j)
{
    const pd_field *f[NF] = {0};
    for (size_t i = 0; i < j->nfields; i++) {
        const pd_field *x = &j->fields[i];
        for (int k = 0; k < NF; k++) {
            if (strlen(fnames[k]) == x->name_len && memcmp(fnames[k], x->name, x->name_len) == 0) {
                if (f[k]) return bad(j, "malformed: field %s given twice", fnames[k]);
                f[k] = x;
            }
        }
    }
    for (int k = 0; k < NF; k++) {
        if (!f[k] && required[k]) return bad(j, "malformed: field %s missing", fnames[k]);
        if (f[k] && memchr(f[k]->value, '\0', f[k]->value_len))
            return bad(j, "malformed: field %s holds a NUL byte", fnames[k]);
    }
#define V(k) (f[k]->value)
#define L(k) (f[k]->value_len)
    if (strcmp(V(F_V), "1") != 0) return bad(j, "malformed: unsupported format version%s", "");
    if (L(F_JOB) < 1 || L(F_JOB) > 128 || !printable(V(F_JOB), L(F_JOB)))
        return bad(j, "malformed: field %s", "job");
    j->jobid = V(F_JOB);
    int p;
    for (p = 0; p < PD_NPLATFORMS; p++)
        if (strcmp(V(F_PLATFORM), pd_platform_names[p]) == 0) break;
    if (p == PD_NPLATFORMS) return bad(j, "malformed: field %s", "platform");
    j->platform = (pd_platform)p;
    if (p == PD_FCM
            ? !(L(F_TOKEN) >= 1 && L(F_TOKEN) <= 4096 &&
                all_in(V(F_TOKEN), L(F_TOKEN), FCM_TOKEN_CHARS))
            : !(L(F_TOKEN) >= 64 && L(F_TOKEN) <= 200 && all_in(V(F_TOKEN), L(F_TOKEN), HEX)))
        return bad(j, "malformed: field %s", "token");
    j->token = V(F_TOKEN);
    if (L(F_APP) > 255 || !all_in(V(F_APP), L(F_APP), APP_CHARS))
        return bad(j, "malformed: field %s", "app");
    j->app = V(F_APP);
    if (!mqc_id_valid(MQC_ID_USER, V(F_USER))) return bad(j, "malformed: field %s", "user");
    if (!mqc_id_valid(MQC_ID_DEVICE, V(F_DEVICE))) return bad(j, "malformed: field %s", "device");
    if (!mqc_id_valid(MQC_ID_USER, V(F_SENDER))) return bad(j, "malformed: field %s", "sender");
    if (!mqc_id_valid(MQC_ID_CONV, V(F_CONV))) return bad(j, "malformed: field %s", "conv");
    j->user = V(F_USER);
    j->device = V(F_DEVICE);
    j->sender = V(F_SENDER);
    j->conv = V(F_CONV);
    if (!digits(V(F_SEQ), L(F_SEQ), 20)) return bad(j, "malformed: field %s", "seq");
    j->seq = V(F_SEQ);
    if (L(F_COLLAPSE) > 64 || !printable(V(F_COLLAPSE), L(F_COLLAPSE)))
        return bad(j, "malformed: field %s", "collapse");
    j->collapse = V(F_COLLAPSE);
    j->badge = -1;
    if (L(F_BADGE)) {
        if (!digits(V(F_BADGE), L(F_BADGE), 10)) return bad(j, "malformed: field %s", "badge");
        long long b = strtoll(V(F_BADGE), NULL, 10);
        if (b > 2147483647LL) return bad(j, "malformed: field %s", "badge");
        j->badge = (long)b;
    }
    if (f[F_PREVIEW]) {
        if (!pd_utf8_valid(V(F_PREVIEW), L(F_PREVIEW)))
            return bad(j, "malformed: field %s is not UTF-8", "preview");
        j->preview = V(F_PREVIEW);
    }
    if (!digits(V(F_TS), L(F_TS), 16)) return bad(j, "malformed: field %s", "ts");
    j->ts_ms = strtoll(V(F_TS), NULL, 10);
    if (j->ts_ms < 1 || j->ts_ms > (1LL << 53)) return bad(j, "malformed: field %s", "ts");
    if (strcmp(V(F_PRIO), "high") == 0)
        j->high = 1;
    else if (strcmp(V(F_PRIO), "normal") == 0)
        j->high = 0;
    else
        return bad(j, "malformed: field %s", "prio");
#undef V
#undef L
    return 0;
}

static int entry_id_ok(const char *s)
{
    size_t n = strlen(s);
    const char *dash = strchr(s, '-');
    return n > 0 && n < sizeof(((pd_job *)0)->entry) && dash && dash > s && dash[1] &&
           digits(s, (size_t)(dash - s), 20) && digits(dash + 1, strlen(dash + 1), 20);
}

pd_job *pd_job_parse(const char *entry, size_t n, const char *const *names, const size_t *name_lens,
                     const char *const *values, const size_t *value_lens)
{
    if (!entry || !entry_id_ok(entry)) return NULL;
    if (n > 1000) n = 1000; /* a job has 15 fields; keep at most this many */
    size_t bytes = sizeof(pd_job) + n * sizeof(pd_field);
    for (size_t i = 0; i < n; i++)
        bytes += name_lens[i] + value_lens[i] + 2;
    pd_job *j = calloc(1, bytes);
    if (!j) return NULL;
    strcpy(j->entry, entry);
    j->nfields = n;
    j->fields = (pd_field *)(j + 1);
    char *p = (char *)(j->fields + n);
    for (size_t i = 0; i < n; i++) {
        pd_field *f = &j->fields[i];
        memcpy(p, names[i], name_lens[i]);
        p[name_lens[i]] = '\0';
        f->name = p;
        f->name_len = name_lens[i];
        p += name_lens[i] + 1;
        memcpy(p, values[i], value_lens[i]);
        p[value_lens[i]] = '\0';
        f->value = p;
        f->value_len = value_lens[i];
        p += value_lens[i] + 1;
    }
    assert(p == (char *)j + bytes);
    if (check(j) == 0) assert(j->jobid && j->token && j->conv && j->seq && j->ts_ms > 0);
    if (j->bad) { /* the job id, if it is printable, for log lines */
        j->jobid = NULL;
        for (size_t i = 0; i < n; i++)
            if (strcmp(j->fields[i].name, "job") == 0 && j->fields[i].value_len <= 128 &&
                printable(j->fields[i].value, j->fields[i].value_len))
                j->jobid = j->fields[i].value;
    }
    return j;
}

void pd_job_free(pd_job *j)
{
    free(j);
}
