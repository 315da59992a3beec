/* test_job — parsing and checking a stream entry (pushd/src/job.c), and the
 * UTF-8 helpers the previews rely on. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "job.h"

#define TOKEN "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

typedef struct fields {
    const char *n[32], *v[32];
    size_t nl[32], vl[32];
    size_t count;
} fields;

static void add(fields *f, const char *n, const char *v)
{
    f->n[f->count] = n;
    f->v[f->count] = v;
    f->nl[f->count] = strlen(n);
    f->vl[f->count] = strlen(v);
    f->count++;
}

/* A valid job, with field `skip` left out and `name` = `value` instead. */
static fields good(const char *name, const char *value, const char *skip)
{
    static const char *const base[][2] = {
        {"v", "1"},
        {"job", "n1:42"},
        {"platform", "apns"},
        {"token", TOKEN},
        {"app", ""},
        {"user", "alice"},
        {"device", "phone"},
        {"conv", "d:alice:bob"},
        {"seq", "17"},
        {"sender", "bob"},
        {"collapse", "d:alice:bob"},
        {"badge", "3"},
        {"ts", "1700000000123"},
        {"prio", "high"},
    };
    fields f = {.count = 0};
    int replaced = 0;
    for (size_t i = 0; i < sizeof base / sizeof base[0]; i++) {
        if (skip && strcmp(base[i][0], skip) == 0) continue;
        if (name && strcmp(base[i][0], name) == 0) {
            add(&f, name, value);
            replaced = 1;
        } else {
            add(&f, base[i][0], base[i][1]);
        }
    }
    if (name && !replaced) add(&f, name, value);
    return f;
}

static pd_job *parse(fields f)
{
    return pd_job_parse("1700000000123-0", f.count, f.n, f.nl, f.v, f.vl);
}

static void valid(void **state)
{
    pd_job *j = parse(good(NULL, NULL, NULL));
    assert_non_null(j);
    assert_false(j->bad);
    assert_string_equal(j->entry, "1700000000123-0");
    assert_string_equal(j->jobid, "n1:42");
    assert_int_equal(j->platform, PD_APNS);
    assert_string_equal(j->token, TOKEN);
    assert_string_equal(j->app, "");
    assert_string_equal(j->conv, "d:alice:bob");
    assert_string_equal(j->seq, "17");
    assert_int_equal(j->badge, 3);
    assert_int_equal(j->ts_ms, 1700000000123LL);
    assert_true(j->high);
    assert_null(j->preview);
    assert_int_equal(j->nfields, 14);
    pd_job_free(j);

    j = parse(good("badge", "", NULL));
    assert_false(j->bad);
    assert_int_equal(j->badge, -1);
    pd_job_free(j);
    j = parse(good("preview", "h\xc3\xa9llo \xf0\x9f\x91\x8b", NULL));
    assert_false(j->bad);
    assert_string_equal(j->preview, "h\xc3\xa9llo \xf0\x9f\x91\x8b");
    pd_job_free(j);
    j = parse(good("extra", "kept for the dead letter", NULL));
    assert_false(j->bad);
    assert_int_equal(j->nfields, 15);
    pd_job_free(j);
    fields f = good("platform", "fcm", NULL);
    f.v[3] = "dGVzdA:APA91bH-x_y.z";
    f.vl[3] = strlen(f.v[3]);
    j = parse(f);
    assert_false(j->bad);
    assert_int_equal(j->platform, PD_FCM);
    pd_job_free(j);
    j = parse(good("platform", "apns-sandbox", NULL));
    assert_int_equal(j->platform, PD_APNS_SANDBOX);
    pd_job_free(j);
    j = parse(good("prio", "normal", NULL));
    assert_false(j->high);
    pd_job_free(j);
}

/* Every rule of job.h, one broken field at a time: bad, with a reason that
 * names the field, and the raw fields kept. */
static void malformed(void **state)
{
    static const struct {
        const char *name, *value, *skip, *reason;
    } cases[] = {
        {"v", "2", NULL, "version"},
        {NULL, NULL, "v", "field v missing"},
        {NULL, NULL, "token", "field token missing"},
        {NULL, NULL, "ts", "field ts missing"},
        {"job", "", NULL, "field job"},
        {"job", "has space", NULL, "field job"},
        {"platform", "wns", NULL, "field platform"},
        {"token", "abc", NULL, "field token"},
        {"token", TOKEN "zz", NULL, "field token"},
        {"app", "com.example/app", NULL, "field app"},
        {"user", "al:ice", NULL, "field user"},
        {"device", "", NULL, "field device"},
        {"sender", "b b", NULL, "field sender"},
        {"conv", "x:alice", NULL, "field conv"},
        {"seq", "12a", NULL, "field seq"},
        {"seq", "", NULL, "field seq"},
        {"collapse", "two\nlines", NULL, "field collapse"},
        {"collapse", "0123456789012345678901234567890123456789012345678901234567890123456789", NULL,
         "field collapse"},
        {"badge", "-1", NULL, "field badge"},
        {"badge", "99999999999", NULL, "field badge"},
        {"preview", "\xc3\x28", NULL, "preview is not UTF-8"},
        {"preview", "\xed\xa0\x80", NULL, "preview is not UTF-8"},
        {"ts", "0", NULL, "field ts"},
        {"ts", "soon", NULL, "field ts"},
        {"prio", "urgent", NULL, "field prio"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pd_job *j = parse(good(cases[i].name, cases[i].value, cases[i].skip));
        assert_non_null(j);
        if (!j->bad || !strstr(j->reason, cases[i].reason))
            fail_msg("case %zu: bad=%d reason \"%s\", want \"%s\"", i, j->bad, j->reason,
                     cases[i].reason);
        pd_job_free(j);
    }
    /* A field given twice, and a NUL inside a value. */
    fields f = good("seq", "5", NULL);
    add(&f, "seq", "6");
    pd_job *j = parse(f);
    assert_true(j->bad);
    assert_non_null(strstr(j->reason, "given twice"));
    pd_job_free(j);
    f = good(NULL, NULL, NULL);
    f.v[5] = "ali\0ce";
    f.vl[5] = 6;
    j = parse(f);
    assert_true(j->bad);
    assert_non_null(strstr(j->reason, "NUL"));
    assert_int_equal(j->fields[5].value_len, 6); /* kept as received */
    pd_job_free(j);
    /* No fields at all. */
    j = pd_job_parse("1-1", 0, NULL, NULL, NULL, NULL);
    assert_true(j->bad);
    pd_job_free(j);
    /* An entry id that is not ms-seq: no job. */
    f = good(NULL, NULL, NULL);
    assert_null(pd_job_parse("nope", f.count, f.n, f.nl, f.v, f.vl));
    assert_null(pd_job_parse("1-", f.count, f.n, f.nl, f.v, f.vl));
}

static void utf8(void **state)
{
    assert_true(pd_utf8_valid("", 0));
    assert_true(pd_utf8_valid("abc", 3));
    assert_true(pd_utf8_valid("\xe2\x82\xac", 3));
    assert_false(pd_utf8_valid("\xe2\x82", 2));         /* cut */
    assert_false(pd_utf8_valid("\xc0\xaf", 2));         /* overlong */
    assert_false(pd_utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
    assert_false(pd_utf8_valid("\xff", 1));
    const char *s = "a\xe2\x82\xac"
                    "b"; /* a € b */
    assert_int_equal(pd_utf8_cut(s, 5, 10), 5);
    assert_int_equal(pd_utf8_cut(s, 5, 4), 4);
    assert_int_equal(pd_utf8_cut(s, 5, 3), 1);
    assert_int_equal(pd_utf8_cut(s, 5, 2), 1);
    assert_int_equal(pd_utf8_cut(s, 5, 1), 1);
    assert_int_equal(pd_utf8_cut(s, 5, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(valid),
        cmocka_unit_test(malformed),
        cmocka_unit_test(utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
